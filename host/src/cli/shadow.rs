//! `rivulet swap --shadow` and `rivulet shadow status|promote|drop`: run a candidate beside
//! a stage's live module in a running job, see the difference, then promote or drop it.

use super::run::DEFAULT_CONTROL;
use anyhow::Context;
use clap::{Args, Subcommand};
use rivulet::http::client::{percent_encode, request};
use rivulet::shadow::{Report, State};

#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// The shadows' differences from the live modules, and what they cost.
    Status(ShadowArgs),
    /// Swap the shadow's candidate in, exactly as `rivulet swap` does, and stop the shadow.
    Promote(ShadowArgs),
    /// Discard the shadow; the live module was never touched.
    Drop(ShadowArgs),
}

#[derive(Debug, Args)]
pub struct ShadowArgs {
    /// The stage whose shadow (needed when several stages have one).
    #[arg(long)]
    stage: Option<String>,
    /// Print the JSON the job answered.
    #[arg(long)]
    json: bool,
    /// The job's control API.
    #[arg(long, env = "RIVULET_CONTROL", default_value = DEFAULT_CONTROL)]
    control: String,
    /// The job's token (default: the token file the job wrote for this address).
    #[arg(
        long = "control-token",
        env = "RIVULET_CONTROL_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

/// The job's refusal, from its JSON error body.
fn refusal(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

/// `rivulet swap --shadow`: starts `bytes` as the shadow of `stage`.
pub fn start(
    control: &str,
    token: Option<&str>,
    stage: &str,
    file: &str,
    bytes: &[u8],
    bound: (Option<&str>, Option<u32>),
) -> anyhow::Result<()> {
    let mut path = format!(
        "/stages/{}/shadow?file={}",
        percent_encode(stage),
        percent_encode(file)
    );
    match bound {
        (Some(time), _) => path.push_str(&format!("&for={}", percent_encode(time))),
        (None, Some(windows)) => path.push_str(&format!("&windows={windows}")),
        (None, None) => {}
    }
    let (code, body) = request(control, "POST", &path, bytes, token)?;
    anyhow::ensure!(
        code == 200,
        "shadow not started, nothing changed: {}",
        refusal(&body)
    );
    let report: Report = serde_json::from_str(&body).context("reading the job's answer")?;
    println!(
        "shadow of stage `{}` started ({}): {} runs beside the live module on a copy of its input; its output goes nowhere but the diff.",
        report.stage,
        report.bound,
        report.hash.get(..12).unwrap_or(&report.hash)
    );
    println!(
        "It costs CPU while it runs (its own module on every batch). See `rivulet shadow status`; then `rivulet shadow promote` or `rivulet shadow drop`."
    );
    Ok(())
}

pub fn run(command: ShadowCommand) -> anyhow::Result<()> {
    match command {
        ShadowCommand::Status(args) => status(&args),
        ShadowCommand::Promote(args) => promote(&args),
        ShadowCommand::Drop(args) => drop_shadow(&args),
    }
}

fn token(args: &ShadowArgs) -> Option<String> {
    args.token
        .clone()
        .or_else(|| rivulet::http::token::read_for(&args.control))
}

fn stage_query(args: &ShadowArgs) -> String {
    args.stage
        .as_deref()
        .map(|s| format!("?stage={}", percent_encode(s)))
        .unwrap_or_default()
}

fn status(args: &ShadowArgs) -> anyhow::Result<()> {
    let (code, body) = request(
        &args.control,
        "GET",
        "/shadows",
        &[],
        token(args).as_deref(),
    )?;
    anyhow::ensure!(code == 200, "the job answered {code}: {}", refusal(&body));
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let reports: Vec<Report> = serde_json::from_str(&body).context("reading the job's answer")?;
    let shown: Vec<&Report> = reports
        .iter()
        .filter(|r| args.stage.as_deref().is_none_or(|s| s == r.stage))
        .collect();
    if shown.is_empty() {
        println!("no shadow (start one with `rivulet swap --shadow --stage <name> <module.wasm>`)");
    }
    for report in shown {
        print!("{}", describe(report));
    }
    Ok(())
}

/// A report as text: state, costs, and the differences.
pub fn describe(report: &Report) -> String {
    let mut out = String::new();
    let state = match report.state {
        State::Running => "running".to_owned(),
        other => format!(
            "{} ({})",
            format!("{other:?}").to_lowercase(),
            report.reason.as_deref().unwrap_or("-")
        ),
    };
    out.push_str(&format!(
        "stage `{}` ({}): shadow {} from {}, started {} ({}) — {state}\n",
        report.stage,
        report.kind,
        report.hash.get(..12).unwrap_or(&report.hash),
        report.origin,
        report.started_at,
        report.bound,
    ));
    out.push_str(&format!(
        "  batches {}  most waiting {} (dropped past {})\n",
        report.batches, report.most_behind, report.behind_bound
    ));
    for (side, cost) in [("live", &report.live), ("shadow", &report.shadow)] {
        out.push_str(&format!(
            "  {side:<6} inputs {:>9}  errors {:>6}  traps {:>3}  {:>8.2} µs per input\n",
            cost.inputs, cost.errors, cost.traps, cost.us_per_input
        ));
    }
    if let Some(records) = &report.records {
        out.push_str(&format!(
            "  records compared {}  same {}  changed {}  only in old {}  only in new {}\n",
            records.compared, records.same, records.changed, records.only_old, records.only_new
        ));
        for (field, n) in &records.fields {
            out.push_str(&format!("    field {field}: {n} changed\n"));
        }
        for example in &records.examples {
            let show = |v: &Option<serde_json::Value>| {
                v.as_ref().map_or_else(|| "-".to_owned(), |v| v.to_string())
            };
            out.push_str(&format!(
                "    {} {}: {} → {}\n",
                example.input,
                example.kind,
                show(&example.old),
                show(&example.new)
            ));
        }
    }
    if let Some(windows) = &report.windows {
        out.push_str(&format!(
            "  windows compared {} ({} partial)  differing {}  keys {} (differing {})\n",
            windows.compared,
            windows.partial,
            windows.differing,
            windows.keys,
            windows.differing_keys
        ));
        for window in &windows.recent {
            out.push_str(&format!(
                "    window {} .. {}{}: {} of {} keys differ\n",
                rivulet_rows::time::iso8601(window.window_start),
                rivulet_rows::time::iso8601(window.window_end),
                if window.partial {
                    " (partial: open when the shadow started)"
                } else {
                    ""
                },
                window.differing,
                window.keys.len()
            ));
            for key in window.keys.iter().filter(|k| !k.fields.is_empty()).take(5) {
                let show = |v: &Option<serde_json::Value>| {
                    v.as_ref().map_or_else(|| "-".to_owned(), |v| v.to_string())
                };
                out.push_str(&format!(
                    "      key {}: {} → {}\n",
                    key.key,
                    show(&key.old),
                    show(&key.new)
                ));
            }
        }
    }
    out
}

fn promote(args: &ShadowArgs) -> anyhow::Result<()> {
    let path = format!("/shadows/promote{}", stage_query(args));
    let (code, body) = request(&args.control, "POST", &path, &[], token(args).as_deref())?;
    anyhow::ensure!(
        code == 200,
        "not promoted, the live module keeps running: {}",
        refusal(&body)
    );
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let outcome: rivulet::swap::SwapOutcome =
        serde_json::from_str(&body).context("reading the job's answer")?;
    println!(
        "promoted the shadow of stage `{}`: {} → {} (record flow paused {} µs{})",
        outcome.stage,
        outcome
            .previous_hash
            .as_deref()
            .and_then(|h| h.get(..12))
            .unwrap_or("-"),
        outcome.hash.get(..12).unwrap_or(&outcome.hash),
        outcome.pause_us,
        if outcome.new_generation {
            "; open windows finish with the previous module (new state version)"
        } else {
            ""
        }
    );
    Ok(())
}

fn drop_shadow(args: &ShadowArgs) -> anyhow::Result<()> {
    let path = format!("/shadows/drop{}", stage_query(args));
    let (code, body) = request(&args.control, "POST", &path, &[], token(args).as_deref())?;
    anyhow::ensure!(code == 200, "{}", refusal(&body));
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let report: Report = serde_json::from_str(&body).context("reading the job's answer")?;
    println!(
        "dropped the shadow of stage `{}`; the live module was never touched",
        report.stage
    );
    print!("{}", describe(&report));
    Ok(())
}
