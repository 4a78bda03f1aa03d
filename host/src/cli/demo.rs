//! `rivulet demo`: the workshop on one machine. An embedded broker, the order seeder, step
//! 3+4 (parse → count per status in tumbling windows → format → `flink-aggregates`) as
//! sandboxed components, and a tail of `flink-aggregates` printing results as they fire.

use super::run::{duration, report, stop_on_signals};
use anyhow::Context;
use clap::Args;
use rivulet::assemble::RunOptions;
use rivulet::kafka::KafkaConfig;
use rivulet::kafka::broker::EmbeddedBroker;
use rivulet::pipeline::Pipeline;
use rivulet::seed::Orders;
use rivulet::sink::kafka::KafkaSink;
use rivulet::spec::PipelineSpec;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop seeding after this long, e.g. "60s" (default: at Ctrl-C); the open windows then
    /// fire and every result is printed before the demo exits.
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Tumbling window of step 3, e.g. "30s" (the workshop's).
    #[arg(long, default_value = "10s", value_parser = duration)]
    window: Duration,
    /// Orders per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Where `just udfs` put the components.
    #[arg(long, default_value = "target/wasm32-wasip2/wasm")]
    udf_dir: PathBuf,
    /// Do not swap in rebuilt components automatically.
    #[arg(long)]
    no_watch: bool,
    /// Where the embedded broker takes clients (`--brokers` of `rivulet seed`, `consume`,
    /// `run` in another terminal; the default is theirs).
    #[arg(long, default_value = super::broker::LISTEN)]
    listen: String,
    #[command(flatten)]
    control: super::run::ControlArgs,
    #[command(flatten)]
    ticker: super::ticker::TickerArgs,
}

fn step34(udfs: &Path, window: Duration) -> String {
    let module = |name: &str| {
        udfs.join(format!("{name}.wasm"))
            .display()
            .to_string()
            .replace('\\', "/")
    };
    format!(
        r#"
name = "demo-count-by-status"
[source]
kind = "kafka"
topic = "partitioned-topic"
assign = "all"
[[stages]]
name = "parse-orders"
kind = "parse"
module = "{}"
[window]
key = "status"
size = "{}ms"
[aggregate]
module = "{}"
[format]
module = "{}"
[sink]
kind = "kafka"
topic = "flink-aggregates"
[dead_letters]
topic = "orders-dlq"
"#,
        module("udf_parse_orders"),
        window.as_millis(),
        module("udf_count_by_status"),
        module("udf_format_aggregate"),
    )
}

const TAIL: &str = r#"
name = "demo-tail"
[source]
kind = "kafka"
topic = "flink-aggregates"
assign = "all"
[sink]
kind = "stdout"
"#;

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let step34 = PipelineSpec::parse(&step34(&args.udf_dir, args.window), Path::new("demo"))?;
    let tail = PipelineSpec::parse(TAIL, Path::new("demo-tail"))?;
    if !args.udf_dir.join("udf_parse_orders.wasm").is_file() {
        anyhow::bail!(
            "no components in {}: build them with `just udfs` (or run `just demo`)",
            args.udf_dir.display()
        );
    }
    let broker = EmbeddedBroker::start(1)?;
    for (topic, partitions) in [
        ("partitioned-topic", 3),
        ("flink-aggregates", 1),
        ("orders-dlq", 1),
    ] {
        broker.create_topic(topic, partitions)?;
    }
    let forwarder = broker.listen(&args.listen)?;
    // The demo's own clients go to the broker directly.
    let brokers = broker.bootstrap_servers();
    eprintln!(
        "rivulet demo: embedded broker at {} (development only); orders at {}/s, 5% malformed",
        forwarder.address(),
        args.rate
    );
    eprintln!(
        "step 3+4: parse-orders → count per status, {}s tumbling windows → format → flink-aggregates",
        args.window.as_secs_f64()
    );
    eprintln!(
        "results appear below as windows fire; Ctrl-C stops{}",
        args.duration
            .map(|d| format!(" (or after {}s)", d.as_secs()))
            .unwrap_or_default()
    );

    // Ctrl-C, SIGTERM or the end of `--duration` stop the seeder; the job then reads what
    // was seeded, fires its open windows (as the end of a bounded input does) and stops; the
    // printer prints every result, then stops. So no seeded order is left uncounted.
    let signalled = stop_on_signals()?;
    // Seeding stops on a signal or at the end of `--duration`; only a signal abandons guest
    // calls in progress (the duration's end lets the job fire its last windows).
    let seeding = Arc::new(AtomicBool::new(false));
    {
        let (signalled, seeding) = (signalled.clone(), seeding.clone());
        std::thread::spawn(move || {
            while !signalled.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
            seeding.store(true, Ordering::Relaxed);
        });
    }
    let job_stop = Arc::new(AtomicBool::new(false));
    let printer_stop = Arc::new(AtomicBool::new(false));
    let runtime = Runtime::new(ModuleCache::default_location())?.stopped_by(signalled.clone());
    let options = |stop: &Arc<AtomicBool>| RunOptions {
        brokers: Some(brokers.clone()),
        runtime: runtime.clone(),
        stop: stop.clone(),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_secs(1),
        swappable: true,
        instance: Default::default(),
    };
    let mut job = Job::single(Pipeline::from_spec(&step34, &options(&job_stop))?);
    for task in &mut job.tasks {
        task.drain_on_stop = true;
    }
    let mut printer = Pipeline::from_spec(&tail, &options(&printer_stop))?;
    // Rebuild a step (`just udf parse-orders`) and the running demo picks it up.
    let control = super::run::Control::start(&args.control)?;
    control.attach(&job, !args.no_watch)?;
    let ticker = super::ticker::Ticker::start(args.ticker.ticker);
    ticker.follow(job.status.clone());
    // `--duration` counts from here: the components are loaded, seeding starts.
    if let Some(limit) = args.duration {
        let seeding = seeding.clone();
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            seeding.store(true, Ordering::Relaxed);
        });
    }

    let seeder = {
        let seeding = seeding.clone();
        let config = KafkaConfig::new(brokers.clone());
        let rate = args.rate;
        let job_read = job.status.clone();
        let job_stop = job_stop.clone();
        std::thread::spawn(move || -> anyhow::Result<(u64, u64)> {
            let seeded = (|| {
                let mut sink = KafkaSink::open(&config, "partitioned-topic")?;
                let mut orders = Orders::new(42, 0.05);
                let counts = rivulet::seed::write(&mut sink, rate.max(0.1), 0, &seeding, |ts| {
                    Ok(orders.next(ts))
                })?;
                anyhow::Ok(counts)
            })();
            let target = seeded.as_ref().map_or(0, |(written, _)| *written);
            wait_until(|| job_read.records() >= target);
            job_stop.store(true, Ordering::Relaxed);
            seeded
        })
    };
    let printer_read = printer.status.clone();
    let printing = std::thread::spawn(move || {
        let result = printer.run();
        (printer, result)
    });
    let result = job.run();
    job_stop.store(true, Ordering::Relaxed);
    seeding.store(true, Ordering::Relaxed);
    let (written, malformed) = seeder
        .join()
        .map_err(|_| anyhow::anyhow!("the seeder panicked"))??;
    let (_, (results, _)) = job.sink();
    wait_until(|| printer_read.records() >= results);
    printer_stop.store(true, Ordering::Relaxed);
    let (_printer, printed) = printing
        .join()
        .map_err(|_| anyhow::anyhow!("the printer panicked"))?;
    drop(ticker);
    eprintln!("seeded {written} orders ({malformed} malformed)");
    report(&job);
    result.context("step 3+4")?;
    printed.context("printer")?;
    Ok(())
}

/// Waits (up to 10 s) for `done`: another pipeline catching up with what was written.
fn wait_until(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
