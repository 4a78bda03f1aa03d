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
    /// The job's control API.
    #[arg(long, env = "RIVULET_CONTROL", default_value = DEFAULT_CONTROL)]
    control: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job's control API.
    #[arg(long, env = "RIVULET_CONTROL", default_value = DEFAULT_CONTROL)]
    control: String,
}

pub fn swap(args: SwapArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("cannot read {}", args.module.display()))?;
    let path = format!("/stages/{}/module", args.stage);
    let (code, body) = rivulet::control::request(&args.control, "POST", &path, &bytes)
        .with_context(|| {
            format!(
                "no rivulet job answers at {} (is `rivulet run` running?)",
                args.control
            )
        })?;
    match code {
        200 => {
            let outcome: rivulet::swap::SwapOutcome =
                serde_json::from_str(&body).context("reading the job's answer")?;
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
            anyhow::bail!("swap rejected, the current module keeps running: {message}")
        }
    }
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (code, body) = rivulet::control::request(&args.control, "GET", "/status", &[])
        .with_context(|| {
            format!(
                "no rivulet job answers at {} (is `rivulet run` running?)",
                args.control
            )
        })?;
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
    }
    Ok(())
}
