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
use std::sync::atomic::{AtomicBool, Ordering};
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
    #[command(flatten)]
    ticker: super::ticker::TickerArgs,
    /// How many tasks (threads) run the job, each with a share of the input and its own
    /// stage instances (default: the spec's `parallelism`, else the number of cores).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Which process of the job this is, when several share its partitions
    /// (`delivery = "exactly-once"`: part of each task's transactional.id; a process
    /// started with the same instance fences the older one). Default: 0.
    #[arg(long, env = "RIVULET_INSTANCE", default_value = "0")]
    instance: String,
    /// Start this many processes of the job on this machine (each with its own control API
    /// on a free port and `--instance`), to try a fleet out.
    #[arg(long)]
    instances: Option<usize>,
    /// Run a candidate beside a stage's module from the first record, `STAGE=MODULE.wasm`
    /// (repeatable, one per stage): checked as a swap, compared for 5 minutes or until the
    /// input ends, its diff printed at the end; its output goes nowhere. Costs CPU.
    #[arg(long = "shadow", value_name = "STAGE=MODULE")]
    shadows: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Address of the control API (`rivulet swap`, `rivulet status`, `/metrics`); `off`
    /// disables it. On a loopback address reads are open; elsewhere everything needs the token.
    #[arg(long = "control", env = "RIVULET_CONTROL", default_value = DEFAULT_CONTROL)]
    pub addr: String,
    /// The bearer token swaps need (default: a new one per job, written to a file only you
    /// can read, where `rivulet swap` finds it).
    #[arg(
        long = "control-token",
        env = "RIVULET_CONTROL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// Where `rivulet run` serves its control API, and where `swap`/`status` look for it.
pub const DEFAULT_CONTROL: &str = "127.0.0.1:7787";

/// A job's control API, kept across the job's restarts (same address, same token). The
/// token file it wrote is removed when it is dropped (the process ends).
pub struct Control {
    target: Option<rivulet::http::Target>,
    token_file: Option<PathBuf>,
    /// Where it listens.
    bound: Option<std::net::SocketAddr>,
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(path) = &self.token_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Control {
    /// Binds the control API (unless `off`) and prints where it is and where its token is.
    pub fn start(args: &ControlArgs) -> anyhow::Result<Self> {
        if args.addr == "off" {
            return Ok(Control {
                target: None,
                token_file: None,
                bound: None,
            });
        }
        use rivulet::http::{Target, Token, token};
        let given = args.token.as_deref().map(Token::given).transpose()?;
        let token = match &given {
            Some(token) => token.clone(),
            None => Token::generate()?,
        };
        let target = Target::default();
        let bound = rivulet::http::serve(&args.addr, target.clone(), token.clone())
            .with_context(|| format!("starting the control API on {}", args.addr))?;
        let mut token_file = None;
        if given.is_none() {
            match token::path_for(&bound) {
                Some(path) => {
                    token.write(&path)?;
                    eprintln!("swap token in {} (readable by you only)", path.display());
                    token_file = Some(path);
                }
                None => eprintln!(
                    "no home directory for the swap token file: give one with --control-token to swap through the API"
                ),
            }
        }
        // Last: once this line is out, `rivulet swap` finds the token.
        eprintln!(
            "control API at http://{bound} (the dashboard in a browser; rivulet status --control {bound}; metrics at http://{bound}/metrics)"
        );
        Ok(Control {
            target: Some(target),
            token_file,
            bound: Some(bound),
        })
    }

    /// Points the control API at `job` and (with `watch`) watches its module files.
    pub fn attach(&self, job: &Job, watch: bool) -> anyhow::Result<()> {
        if let Some(target) = &self.target {
            target.set(job.status.clone(), job.swap_requests.clone());
        }
        if let Some(fleet) = &job.fleet {
            fleet.set_control(self.bound.map(|bound| bound.to_string()));
        }
        let Some(requests) = job.swap_requests.clone() else {
            return Ok(());
        };
        if watch {
            rivulet::watch::spawn(job.status.clone(), requests, job.stop.clone())
                .context("starting the file watcher")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
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

/// Ctrl-C and SIGTERM set the returned flag; a second one, while the first is still being
/// honoured (a flush waiting for an unreachable broker), exits at once with status 130.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first: it sees the flag as the earlier signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the signal handler")?;
    }
    Ok(stop)
}

/// Restarts in a row after which a failing job stops for good.
const RESTARTS: u32 = 5;

/// A job that ran at least this long before failing starts a new row of restarts.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Pause before a restart.
const RESTART_DELAY: Duration = Duration::from_secs(2);

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut spec = PipelineSpec::load(&args.spec)?;
    if args.parallelism.is_some() {
        spec.parallelism = args.parallelism;
    }
    if let Some(count) = args.instances.filter(|&n| n != 1) {
        anyhow::ensure!(count > 0, "--instances must be at least 1");
        return super::instances::run(&spec, count, args.control.addr == "off");
    }
    run_spec(
        spec,
        &RunSettings {
            kafka: &args.kafka,
            commit_every: args.commit_every,
            watch: args.watch,
            control: &args.control,
            ticker: args.ticker.ticker,
            instance: &args.instance,
            shadows: &args.shadows,
        },
    )
}

/// How `run` and `sql` run a job, besides its spec.
pub struct RunSettings<'a> {
    pub kafka: &'a KafkaArgs,
    pub commit_every: Duration,
    /// Swap in a stage's module whenever its file changes.
    pub watch: bool,
    pub control: &'a ControlArgs,
    /// The live progress line.
    pub ticker: super::ticker::TickerMode,
    /// Which process of the job this is (see `--instance`).
    pub instance: &'a str,
    /// Candidates to run beside stages from the start, `STAGE=MODULE` (see `--shadow`).
    pub shadows: &'a [String],
}

/// Runs `spec` until it ends or is stopped, restarting it after a Kafka failure from its
/// committed state (at most [`RESTARTS`] times in a row).
pub fn run_spec(spec: PipelineSpec, args: &RunSettings<'_>) -> anyhow::Result<()> {
    let signalled = stop_on_signals()?;
    let runtime = Runtime::new(ModuleCache::default_location())?;
    let control = Control::start(args.control)?;
    let ticker = super::ticker::Ticker::start(args.ticker);
    let mut restarts = 0;
    loop {
        // Each run of the job has its own stop flag: a signal sets it, and so does a task
        // that fails (stopping the others), which must not look like a signal.
        let stop = JobStop::new()?;
        let options = RunOptions {
            brokers: args.kafka.brokers.clone(),
            runtime: runtime.clone(),
            stop: stop.flag.clone(),
            connect_timeout: args.kafka.connect_timeout,
            commit_every: args.commit_every,
            swappable: args.watch || args.control.addr != "off" || !args.shadows.is_empty(),
            instance: args.instance.to_owned(),
        };
        let mut job = match Job::from_spec(&spec, &options) {
            Err(err) if interrupted(&err) => {
                tracing::info!(job = %spec.name, "stopped while waiting for Kafka");
                return Ok(());
            }
            other => other?,
        };
        control.attach(&job, args.watch)?;
        ticker.follow(job.status.clone());
        start_shadows(&job, args.shadows)?;
        let source = job.tasks.first().map(|t| t.source.name().to_owned());
        tracing::info!(job = %spec.name, source = source.unwrap_or_default(), sink = %job.sink().0, tasks = job.tasks.len(), "running");
        let started = std::time::Instant::now();
        let result = job.run();
        report(&job);
        report_shadows(&job);
        drop(stop);
        let err = match result {
            Ok(()) => return Ok(()),
            Err(err) if interrupted(&err) => return Ok(()),
            Err(err) => err,
        };
        if started.elapsed() >= HEALTHY_RUN {
            restarts = 0;
        }
        if !err.is_kafka_failure() || signalled.load(Ordering::Relaxed) || restarts >= RESTARTS {
            return Err(err.into());
        }
        restarts += 1;
        tracing::error!(
            job = %spec.name,
            attempt = restarts,
            of = RESTARTS,
            "the job failed: {err}; restarting from its committed state in {RESTART_DELAY:?} (what came after the last commit is read again)"
        );
        let deadline = std::time::Instant::now() + RESTART_DELAY;
        while std::time::Instant::now() < deadline {
            if signalled.load(Ordering::Relaxed) {
                return Err(err.into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts each `STAGE=MODULE` of `--shadow` beside its stage, before the first record.
fn start_shadows(job: &Job, shadows: &[String]) -> anyhow::Result<()> {
    for shadow in shadows {
        let (stage, module) = shadow.split_once('=').with_context(|| {
            format!("--shadow {shadow}: give the stage and the module, STAGE=MODULE.wasm")
        })?;
        let bytes = std::fs::read(module)
            .with_context(|| format!("--shadow {stage}: cannot read {module}"))?;
        let requests = job
            .swap_requests
            .as_ref()
            .context("--shadow: this job has no component stage")?;
        let (reply, answer) = std::sync::mpsc::channel();
        requests
            .send(rivulet::swap::SwapRequest {
                stage: stage.to_owned(),
                bytes,
                origin: module.to_owned(),
                reply: None,
                fleet: None,
                shadow: Some(rivulet::swap::ShadowAsk {
                    bound: rivulet::shadow::Bound::For(rivulet::shadow::DEFAULT_FOR),
                    reply,
                }),
            })
            .ok()
            .context("the swap worker has stopped")?;
        let report = answer
            .recv_timeout(Duration::from_secs(120))
            .context("no answer from the swap worker")?
            .map_err(|reason| anyhow::anyhow!("--shadow {stage}: {reason}"))?;
        tracing::info!(
            stage,
            module,
            hash = report.hash.get(..12).unwrap_or_default(),
            "shadow runs beside the stage from the first record (it costs CPU)"
        );
    }
    Ok(())
}

/// After the job: what each shadow saw (once it has caught up, up to 30 s).
fn report_shadows(job: &Job) {
    let board = &job.status.shadows;
    board.settle(Duration::from_secs(30));
    board.end("the job ended");
    for report in board.reports() {
        eprint!("{}", super::shadow::describe(&report));
    }
}

/// A stop flag for one run of a job, set by Ctrl-C and SIGTERM while it lives.
struct JobStop {
    flag: Arc<AtomicBool>,
    registered: Vec<signal_hook::SigId>,
}

impl JobStop {
    fn new() -> anyhow::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        let mut registered = Vec::new();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            registered.push(
                signal_hook::flag::register(signal, flag.clone())
                    .context("installing the signal handler")?,
            );
        }
        Ok(JobStop { flag, registered })
    }
}

impl Drop for JobStop {
    fn drop(&mut self) {
        for id in self.registered.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Whether a job failed only because it was asked to stop while waiting for Kafka: a
/// normal stop (exit 0), like stopping a running job.
pub fn interrupted(err: &PipelineError) -> bool {
    use rivulet::kafka::KafkaError::Interrupted;
    use rivulet::sink::SinkError;
    use rivulet::source::SourceError;
    match err {
        PipelineError::Table(table) => match &**table {
            rivulet::table::TableError::Kafka { error, .. } => matches!(**error, Interrupted),
            _ => false,
        },
        _ => matches!(
            err,
            PipelineError::Source(SourceError::Kafka(Interrupted))
                | PipelineError::Sink(SinkError::Kafka(Interrupted))
        ),
    }
}

/// Counters of a finished or stopped job, in the log.
pub fn report(job: &Job) {
    tracing::info!(job = %job.name, records = job.status.records(), tasks = job.tasks.len(), "stopped");
    // Every task published its final counters when it stopped.
    let counters = job.status.counters();
    for (stage, stats) in &counters.steps {
        tracing::info!(
            stage,
            records_in = stats.records_in,
            rows_out = stats.rows_out,
            rejected = stats.rejected,
            failed_batches = stats.failed_batches,
            "stage"
        );
    }
    if let Some(s) = counters.window {
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
    for (stage, count) in &counters.errors {
        tracing::info!(stage, count, "records refused");
    }
    for (stage, count) in &counters.dead_letters {
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
