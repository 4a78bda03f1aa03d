//! `rivulet run <pipeline.toml>`: runs one job until Ctrl-C (or the end of a bounded input).

use anyhow::Context;
use clap::Args;
use rivulet::assemble::RunOptions;
use rivulet::pipeline::PipelineError;
use rivulet::spec::PipelineSpec;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job's spec (see `pipelines/`).
    spec: PathBuf,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Commit offsets at most this often (a duration with its unit: "500ms", "1s").
    #[arg(long, default_value = "1s", value_parser = duration)]
    commit_every: Duration,
    /// Swap in a stage's module whenever its file changes.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    control: ControlArgs,
    /// How many tasks (threads) run the job, each with a share of the input and its own
    /// stage instances (default: the spec's `parallelism`, else the number of cores).
    #[arg(long)]
    parallelism: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Local address of the control API (`rivulet swap`, `rivulet status`); `off` disables it.
    #[arg(long = "control", env = "RIVULET_CONTROL", default_value = DEFAULT_CONTROL)]
    pub addr: String,
}

/// Where `rivulet run` serves its control API, and where `swap`/`status` look for it.
pub const DEFAULT_CONTROL: &str = "127.0.0.1:7787";

/// Starts the control API and (with `watch`) the file watcher for a job.
pub fn start_control(job: &Job, control: &ControlArgs, watch: bool) -> anyhow::Result<()> {
    let Some(requests) = job.swap_requests.clone() else {
        return Ok(());
    };
    if control.addr != "off" {
        let bound = rivulet::control::serve(&control.addr, job.status.clone(), requests.clone())
            .with_context(|| format!("starting the control API on {}", control.addr))?;
        eprintln!("control API at http://{bound} (rivulet status --control {bound})");
    }
    if watch {
        rivulet::watch::spawn(job.status.clone(), requests, job.stop.clone())
            .context("starting the file watcher")?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (the workshop's: localhost:9094 from the host, kafka1:9092 in compose).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub brokers: Option<String>,
    /// Give up when Kafka stays unreachable this long, e.g. "30s" (default: keep retrying).
    #[arg(long, value_parser = duration)]
    pub connect_timeout: Option<Duration>,
}

pub fn duration(text: &str) -> Result<Duration, String> {
    rivulet::spec::parse_duration(text)
}

/// Ctrl-C and SIGTERM set the returned flag.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the signal handler")?;
    }
    Ok(stop)
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut spec = PipelineSpec::load(&args.spec)?;
    if args.parallelism.is_some() {
        spec.parallelism = args.parallelism;
    }
    let options = RunOptions {
        brokers: args.kafka.brokers,
        runtime: Runtime::new(ModuleCache::default_location())?,
        stop: stop_on_signals()?,
        connect_timeout: args.kafka.connect_timeout,
        commit_every: args.commit_every,
        swappable: args.watch || args.control.addr != "off",
    };
    let mut job = match Job::from_spec(&spec, &options) {
        Err(err) if interrupted(&err) => {
            tracing::info!(job = %spec.name, "stopped while waiting for Kafka");
            return Ok(());
        }
        other => other?,
    };
    start_control(&job, &args.control, args.watch)?;
    let source = job.tasks.first().map(|t| t.source.name().to_owned());
    tracing::info!(job = %spec.name, source = source.unwrap_or_default(), sink = %job.sink().0, tasks = job.tasks.len(), "running");
    let result = job.run();
    report(&job);
    match result {
        Err(err) if interrupted(&err) => Ok(()),
        other => Ok(other?),
    }
}

/// Whether a job failed only because it was asked to stop while waiting for Kafka: a
/// normal stop (exit 0), like stopping a running job.
pub fn interrupted(err: &PipelineError) -> bool {
    use rivulet::kafka::KafkaError::Interrupted;
    use rivulet::sink::SinkError;
    use rivulet::source::SourceError;
    matches!(
        err,
        PipelineError::Source(SourceError::Kafka(Interrupted))
            | PipelineError::Sink(SinkError::Kafka(Interrupted))
    )
}

/// Counters of a finished or stopped job, in the log.
pub fn report(job: &Job) {
    tracing::info!(job = %job.name, records = job.status.records(), tasks = job.tasks.len(), "stopped");
    for (stage, stats) in &job.step_stats() {
        tracing::info!(
            stage,
            records_in = stats.records_in,
            rows_out = stats.rows_out,
            rejected = stats.rejected,
            failed_batches = stats.failed_batches,
            "stage"
        );
    }
    if let Some(s) = job.window_stats() {
        tracing::info!(
            rows = s.rows,
            results = s.results,
            late_updates = s.late_updates,
            too_late = s.too_late,
            replay_skipped = s.replay_skipped,
            "windows"
        );
    }
    let (sink, (sent, acked)) = job.sink();
    tracing::info!(sink = %sink, sent, acked, "sink");
    for (stage, count) in job.dead_letters() {
        tracing::info!(stage, count, "dead letters");
    }
    let resent: u64 = job.tasks.iter().map(|t| t.dead.resent_skipped()).sum();
    if resent > 0 {
        tracing::info!(
            count = resent,
            "dead letters of replayed records not sent again"
        );
    }
    let mut pauses: Vec<u128> = job
        .tasks
        .iter()
        .flat_map(|t| t.swap_pauses.iter().map(|d| d.as_micros()))
        .collect();
    pauses.sort();
    if let (Some(p50), Some(max)) = (pauses.get(pauses.len() / 2), pauses.last()) {
        tracing::info!(
            swaps = pauses.len(),
            p50_us = p50,
            max_us = max,
            "swap pauses"
        );
    }
}
