//! `rivulet run --instances N`: N processes of one job on this machine, to try a fleet out
//! (each with its own control API on a free port, `--instance i`, and its log lines
//! prefixed with `[i]`). On many machines, start one `rivulet run` per machine instead.

use anyhow::Context;
use rivulet::spec::{AssignMode, PipelineSpec, SourceSpec};
use std::ffi::OsString;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The flags each process gets its own value of (dropped from the parent's arguments).
const OWN: [&str; 4] = ["--instances", "--instance", "--control", "--ticker"];

/// The parent's arguments without [`OWN`] flags (`--flag value` and `--flag=value`).
fn shared_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if OWN.contains(&text.as_ref()) {
            skip_value = true;
            continue;
        }
        if OWN.iter().any(|flag| text.starts_with(&format!("{flag}="))) {
            continue;
        }
        kept.push(arg);
    }
    kept
}

/// Starts `count` processes of `spec`'s job and waits for all of them; Ctrl-C or SIGTERM
/// stops them all.
pub fn run(spec: &PipelineSpec, count: usize, control_off: bool) -> anyhow::Result<()> {
    match &spec.source {
        SourceSpec::Kafka {
            assign: AssignMode::Group,
            bounded: false,
            ..
        } => {}
        _ => anyhow::bail!(
            "--instances needs a Kafka source read through a consumer group (assign = \"group\", not bounded): each process takes a share of its partitions; this spec's processes would each read all of its input"
        ),
    }
    let exe = std::env::current_exe().context("finding the rivulet binary")?;
    let args = shared_args(std::env::args_os().skip(1));
    let stop = super::run::stop_on_signals()?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for instance in 0..count {
        let mut child = Command::new(&exe)
            .args(&args)
            .args(["--instance", &instance.to_string(), "--ticker", "never"])
            .args(["--control", if control_off { "off" } else { "127.0.0.1:0" }])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting process {instance}"))?;
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    eprintln!("[{instance}] {line}");
                }
            });
        }
        children.push((instance, child));
    }
    eprintln!(
        "started {count} processes of job `{}` (rivulet status --job {} lists them)",
        spec.name, spec.name
    );
    let mut failed = Vec::new();
    let mut signalled = false;
    while !children.is_empty() {
        if stop.load(Ordering::Relaxed) && !signalled {
            signalled = true;
            for (_, child) in &children {
                // Each stops as on Ctrl-C: commits what it may and leaves the fleet.
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            }
        }
        let mut running = Vec::new();
        for (instance, mut child) in children {
            match child.try_wait() {
                Ok(Some(status)) => {
                    if !status.success() {
                        eprintln!("[{instance}] ended with {status}");
                        failed.push(instance);
                    }
                }
                Ok(None) => running.push((instance, child)),
                Err(err) => {
                    eprintln!("[{instance}] cannot be waited for: {err}");
                    failed.push(instance);
                }
            }
        }
        children = running;
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::ensure!(
        failed.is_empty(),
        "process(es) {failed:?} of job `{}` failed (their lines above say why)",
        spec.name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_gets_its_own_instance_control_and_ticker_and_shares_the_rest() {
        let args = [
            "run",
            "job.toml",
            "--instances",
            "3",
            "--control=127.0.0.1:7787",
            "--brokers",
            "k:9092",
            "--instance",
            "7",
            "--ticker",
            "always",
            "--watch",
        ]
        .map(OsString::from);
        let kept: Vec<String> = shared_args(args)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept, ["run", "job.toml", "--brokers", "k:9092", "--watch"]);
    }
}
