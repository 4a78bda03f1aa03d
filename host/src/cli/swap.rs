//! `rivulet swap` and `rivulet status`: talk to a running job's control API.

use super::run::DEFAULT_CONTROL;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct SwapArgs {
    /// The stage whose module to replace (see `rivulet status`).
    #[arg(long)]
    stage: String,
    /// The new component.
    module: PathBuf,
    /// Run it beside the live module on a copy of its input instead, and compare (see
    /// `rivulet shadow`); nothing reaches the sink from it.
    #[arg(long)]
    shadow: bool,
    /// With --shadow: how long it runs (default 5m).
    #[arg(long = "for", requires = "shadow", conflicts_with = "windows")]
    for_: Option<String>,
    /// With --shadow, for an aggregate: how many windows it compares.
    #[arg(long, requires = "shadow")]
    windows: Option<u32>,
    /// The job's control API.
    #[arg(long, env = "RIVULET_CONTROL", default_value = DEFAULT_CONTROL)]
    control: String,
    /// The job's swap token (default: the token file the job wrote for this address).
    #[arg(
        long = "control-token",
        env = "RIVULET_CONTROL_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job's control API.
    #[arg(long, env = "RIVULET_CONTROL", default_value = DEFAULT_CONTROL)]
    control: String,
    /// Every process of a job run over Kafka (`window.exchange = "kafka"`), from its
    /// control topic `<job>-control`, instead of one process's control API.
    #[arg(long)]
    job: Option<String>,
    /// Kafka, for `--job`.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = rivulet::assemble::DEFAULT_BROKERS)]
    brokers: String,
    /// For `--job`: the processes as JSON.
    #[arg(long)]
    json: bool,
}

pub fn swap(args: SwapArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("cannot read {}", args.module.display()))?;
    let file = args
        .module
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let token = args
        .token
        .clone()
        .or_else(|| rivulet::http::token::read_for(&args.control));
    if args.shadow {
        return super::shadow::start(
            &args.control,
            token.as_deref(),
            &args.stage,
            &file,
            &bytes,
            (args.for_.as_deref(), args.windows),
        );
    }
    let path = format!(
        "/stages/{}/module?file={}",
        rivulet::http::client::percent_encode(&args.stage),
        rivulet::http::client::percent_encode(&file)
    );
    let (code, body) =
        rivulet::http::client::request(&args.control, "POST", &path, &bytes, token.as_deref())?;
    match code {
        200 => {
            let outcome: rivulet::swap::SwapOutcome =
                serde_json::from_str(&body).context("reading the job's answer")?;
            if let Some(fleet) = &outcome.fleet {
                print_fleet(fleet);
            }
            println!(
                "swapped stage `{}`: {} → {} (prepared in {:.1} ms, record flow paused {} µs{})",
                outcome.stage,
                outcome
                    .previous_hash
                    .as_deref()
                    .and_then(|h| h.get(..12))
                    .unwrap_or("-"),
                outcome.hash.get(..12).unwrap_or(&outcome.hash),
                outcome.prepare_ms,
                outcome.pause_us,
                if outcome.new_generation {
                    "; open windows finish with the previous module (new state version)"
                } else {
                    ""
                }
            );
            Ok(())
        }
        _ => {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(body);
            match code {
                401 => anyhow::bail!(
                    "swap refused ({message}); the current module keeps running. Pass --control-token or run on the machine whose job wrote the token file"
                ),
                _ => anyhow::bail!("swap rejected, the current module keeps running: {message}"),
            }
        }
    }
}

/// How every process of a fleet installed a swap.
fn print_fleet(fleet: &rivulet::swap::FleetInstalls) {
    let slowest = fleet.installed_ms.values().copied().fold(0.0, f64::max);
    println!(
        "installed on {} of {} processes of the fleet (the last {slowest:.0} ms after the fleet's decision)",
        fleet.installed_ms.len(),
        fleet.processes
    );
    for (process, reason) in &fleet.failed {
        println!("  process {process} accepted it but failed to install it: {reason}");
    }
    for process in &fleet.missing {
        println!("  process {process} did not report its install in time");
    }
}

/// `rivulet status --job`: every process of a fleet.
fn fleet_status(job: &str, brokers: &str, json: bool) -> anyhow::Result<()> {
    let kafka = rivulet::kafka::KafkaConfig::new(brokers);
    let members = rivulet::fleet::members(&kafka, job)
        .with_context(|| format!("reading the control topic of job `{job}`"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&members)?);
        return Ok(());
    }
    let alive = members.iter().filter(|m| m.alive).count();
    println!("job {job}: {alive} process(es) alive");
    if members.is_empty() {
        println!("(no process has run this job over Kafka at {brokers})");
    }
    for member in &members {
        let beat = &member.heartbeat;
        let partitions: Vec<String> = beat
            .partitions
            .iter()
            .map(|(p, lag)| match lag {
                Some(lag) => format!("{p} (lag {lag})"),
                None => p.to_string(),
            })
            .collect();
        println!(
            "{} {}  pid {} on {}  control {}  records {}  {}",
            if member.alive { "●" } else { "○" },
            beat.id,
            beat.pid,
            beat.host,
            beat.control.as_deref().unwrap_or("off"),
            beat.records,
            if member.alive {
                format!("heard from {} ms ago", member.silent_ms)
            } else {
                format!("silent for {} s: gone", member.silent_ms / 1000)
            }
        );
        println!("    reads partitions: {}", partitions.join(", "));
        let merging: Vec<String> = beat.merging.iter().map(i32::to_string).collect();
        println!("    merges partials partitions: {}", merging.join(", "));
        for (stage, hash) in &beat.modules {
            println!("    {stage:<16} {}", hash.get(..12).unwrap_or(hash));
        }
    }
    Ok(())
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    if let Some(job) = &args.job {
        return fleet_status(job, &args.brokers, args.json);
    }
    let token = rivulet::http::token::read_for(&args.control);
    let (code, body) =
        rivulet::http::client::request(&args.control, "GET", "/status", &[], token.as_deref())?;
    anyhow::ensure!(code == 200, "the job answered {code}: {body}");
    let status: serde_json::Value =
        serde_json::from_str(&body).context("reading the job's answer")?;
    println!(
        "job {}  records {}",
        status["job"].as_str().unwrap_or("?"),
        status["records"]
    );
    println!(
        "{:<16} {:<10} {:<14} {:>7} {:>9} {:>6} {:>9}  origin",
        "stage", "kind", "hash", "state v", "load ms", "swaps", "rejected"
    );
    for stage in status["stages"].as_array().into_iter().flatten() {
        let hash = stage["hash"]
            .as_str()
            .map(|h| h.get(..12).unwrap_or(h))
            .unwrap_or("builtin");
        println!(
            "{:<16} {:<10} {:<14} {:>7} {:>9.1} {:>6} {:>9}  {}",
            stage["name"].as_str().unwrap_or("?"),
            stage["kind"].as_str().unwrap_or("?"),
            hash,
            stage["state_version"]
                .as_u64()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            stage["load_ms"].as_f64().unwrap_or(0.0),
            stage["swaps"],
            stage["rejected"],
            stage["origin"].as_str().unwrap_or("-")
        );
        if let Some(reason) = stage["last_rejection"].as_str() {
            println!("{:<16} last rejection: {reason}", "");
        }
        if let Some(change) = stage["last_shape_change"].as_str() {
            println!(
                "{:<16} output changed shape after {} swap(s), last: {change}",
                "", stage["shape_changes"]
            );
        }
    }
    for shadow in status["shadows"].as_array().into_iter().flatten() {
        match serde_json::from_value::<rivulet::shadow::Report>(shadow.clone()) {
            Ok(report) => println!(
                "shadow of `{}` ({:?}): live {:.2} µs per input, shadow {:.2} µs per input (a shadow costs CPU; `rivulet shadow status` shows its diff)",
                report.stage, report.state, report.live.us_per_input, report.shadow.us_per_input
            ),
            Err(err) => println!("a shadow the job reported cannot be read: {err}"),
        }
    }
    let counters = &status["counters"];
    println!(
        "{:<16} {:>10} {:>10} {:>9} {:>14}",
        "step", "in", "out", "rejected", "failed batches"
    );
    for (name, step) in counters["steps"].as_object().into_iter().flatten() {
        println!(
            "{:<16} {:>10} {:>10} {:>9} {:>14}",
            name, step["records_in"], step["rows_out"], step["rejected"], step["failed_batches"]
        );
    }
    let window = &counters["window"];
    if window.is_object() {
        println!(
            "windows: rows {}  results {}  late updates {}  too late {}  watermark {}",
            window["rows"],
            window["results"],
            window["late_updates"],
            window["too_late"],
            counters["watermark"]
                .as_i64()
                .map(rivulet_rows::time::iso8601)
                .unwrap_or_else(|| "-".to_owned())
        );
    }
    let time = |v: &serde_json::Value| {
        v.as_i64()
            .map(rivulet_rows::time::iso8601)
            .unwrap_or_else(|| "-".to_owned())
    };
    if window.is_object() {
        println!(
            "windows open {}  last fire: the window ending {}",
            window["open_windows"],
            time(&window["last_fire_end"])
        );
    }
    for (partition, stats) in counters["partitions"].as_object().into_iter().flatten() {
        println!(
            "partition {partition}: lag {}  watermark {}",
            stats["lag"]
                .as_i64()
                .map(|lag| lag.to_string())
                .unwrap_or_else(|| "-".to_owned()),
            time(&stats["watermark"])
        );
    }
    for (partition, stats) in counters["merging"].as_object().into_iter().flatten() {
        println!(
            "partials partition {partition} (merged here): lag {}",
            stats["lag"]
                .as_i64()
                .map(|lag| lag.to_string())
                .unwrap_or_else(|| "-".to_owned())
        );
    }
    println!(
        "sink: sent {}  acknowledged {}",
        counters["sink_sent"], counters["sink_acked"]
    );
    for (stage, count) in counters["errors"].as_object().into_iter().flatten() {
        println!("errors (records refused) in {stage}: {count}");
    }
    for (stage, count) in counters["dead_letters"].as_object().into_iter().flatten() {
        println!("dead letters from {stage}: {count}");
    }
    for table in status["tables"].as_array().into_iter().flatten() {
        println!(
            "table {} (key {}, {}): {} rows, last update {}; lookups {} found, {} missed; updates {}, deletes {}, refused {}",
            table["name"].as_str().unwrap_or("?"),
            table["key"].as_str().unwrap_or("?"),
            table["source"].as_str().unwrap_or("?"),
            table["rows"],
            table["updated_at"].as_str().unwrap_or("-"),
            table["hits"],
            table["misses"],
            table["updates"],
            table["deletes"],
            table["rejected"],
        );
        if let Some(reason) = table["last_rejection"].as_str() {
            println!("  last refused update: {reason}");
        }
    }
    Ok(())
}
