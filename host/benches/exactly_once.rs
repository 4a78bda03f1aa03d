//! What exactly-once costs, printed (run with `just bench-eos`):
//!
//! * throughput: the same job (built-in JSON parse → 30 s event-time windows by status →
//!   count → Kafka topic, dead letters to a topic) reading a backlog at-least-once and
//!   exactly-once: wall time, records/s, CPU per record;
//! * latency: a live exactly-once job (1 s windows, records stamped with the wall clock every
//!   5 ms): from a window's end to its result being visible to a `read_committed` reader,
//!   p50 / p99 / max, at the default commit interval (100 ms) — and at-least-once for
//!   comparison (visible once acknowledged).
//!
//! Broker: `RIVULET_BENCH_BROKERS` (or `RIVULET_TEST_BROKERS`, which `scripts/with-tansu`
//! sets), else the embedded broker with a smaller backlog. `RIVULET_BENCH_RECORDS` sets the
//! backlog (default 1,000,000 on an external broker). Runs are interleaved; medians printed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmarks fail loudly

mod common;

use common::cpu_time;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rivulet::assemble::RunOptions;
use rivulet::kafka::broker::EmbeddedBroker;
use rivulet::seed::Orders;
use rivulet::spec::PipelineSpec;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;
const T0: i64 = 1_716_467_700_000;

fn producer(address: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

fn send(producer: &BaseProducer, topic: &str, partition: i32, payload: &[u8]) {
    let mut record = BaseRecord::to(topic)
        .partition(partition)
        .payload(payload)
        .key("k");
    while let Err((_, back)) = producer.send(record) {
        record = back;
        producer.poll(Duration::from_millis(10));
    }
}

fn backlog(address: &str, topic: &str, records: i64) {
    let producer = producer(address);
    let mut generator = Orders::new(1, 0.0);
    for i in 0..records {
        let payload = generator.next(T0 + i * 10).payload;
        send(
            &producer,
            topic,
            (i % i64::from(PARTITIONS)) as i32,
            &payload,
        );
    }
    producer.flush(Duration::from_secs(300)).unwrap();
}

fn spec(topic: &str, group: &str, delivery: &str, size: &str, ooo: &str) -> PipelineSpec {
    let text = format!(
        r#"
name = "{group}"
delivery = "{delivery}"
parallelism = 1
[source]
kind = "kafka"
topic = "{topic}"
assign = "all"
group = "{group}"
[window]
key = "status"
size = "{size}"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "{ooo}"
[aggregate]
builtin = [{{ name = "order_count", fn = "count" }}]
[sink]
kind = "kafka"
topic = "{group}-out"
[dead_letters]
topic = "{group}-dlq"
"#
    );
    PipelineSpec::parse(&text, Path::new("bench.toml")).unwrap()
}

fn options(address: &str) -> RunOptions {
    RunOptions {
        brokers: Some(address.to_owned()),
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_secs(1),
        swappable: false,
        instance: Default::default(),
    }
}

/// The job over the backlog, stopped once every record was read: (wall s, CPU s).
fn drain(address: &str, topic: &str, records: i64, delivery: &str, run: usize) -> (f64, f64) {
    let group = format!("bench-eos-{delivery}-{run}-{}", std::process::id());
    let spec = spec(topic, &group, delivery, "30s", "2s");
    let options = options(address);
    let stop = options.stop.clone();
    let mut job = Job::from_spec(&spec, &options).unwrap();
    let status = job.status.clone();
    let watcher = std::thread::spawn(move || {
        while status.records() < records as u64 {
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (wall, cpu) = (Instant::now(), cpu_time());
    job.run().unwrap();
    watcher.join().unwrap();
    (
        wall.elapsed().as_secs_f64(),
        (cpu_time() - cpu).as_secs_f64(),
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A live job for `seconds`: per window result, ms from the window's end until a
/// `read_committed` reader has it.
fn latency(
    address: &str,
    embedded: Option<&EmbeddedBroker>,
    delivery: &str,
    seconds: u64,
) -> Vec<i64> {
    let group = format!("bench-eos-live-{delivery}-{}", std::process::id());
    let topic = format!("{group}-in");
    create(address, &topic, PARTITIONS, embedded);
    create(address, &format!("{group}-out"), 1, embedded);
    let spec = spec(&topic, &group, delivery, "1s", "0s");
    let options = options(address);
    let stop = options.stop.clone();
    let mut job = Job::from_spec(&spec, &options).unwrap();
    let runner = std::thread::spawn(move || job.run().unwrap());
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (address, topic, feeding) = (address.to_owned(), topic.clone(), feeding.clone());
        std::thread::spawn(move || {
            let producer = producer(&address);
            let mut generator = Orders::new(7, 0.0);
            let mut i = 0;
            while feeding.load(Ordering::Relaxed) {
                let payload = generator.next(now_ms()).payload;
                send(&producer, &topic, i % PARTITIONS, &payload);
                producer.poll(Duration::ZERO);
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            producer.flush(Duration::from_secs(10)).unwrap();
        })
    };
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", format!("{group}-reader"))
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&format!("{group}-out"), 0, Offset::Beginning)
        .unwrap();
    reader.assign(&tpl).unwrap();
    let mut samples = Vec::new();
    let started = Instant::now();
    // The first seconds warm up (group, producer ids, the first windows).
    let warm = Duration::from_secs(3);
    while started.elapsed() < Duration::from_secs(seconds) + warm {
        if let Some(Ok(message)) = reader.poll(Duration::from_millis(20)) {
            let seen = now_ms();
            let value: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
            let end = value["window_end"]
                .as_i64()
                .or_else(|| value["window_end"].as_str().and_then(iso_ms))
                .unwrap();
            if started.elapsed() > warm {
                samples.push(seen - end);
            }
        }
    }
    feeding.store(false, Ordering::Relaxed);
    feeder.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    runner.join().unwrap();
    samples.sort_unstable();
    samples
}

/// Milliseconds of an ISO-8601 UTC text like `2024-05-23T12:35:00Z` (or with millis).
fn iso_ms(text: &str) -> Option<i64> {
    let digits: Vec<i64> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let [y, mo, d, h, mi, s, rest @ ..] = digits.as_slice() else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if *mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (*y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = rest.first().copied().unwrap_or(0);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000 + ms)
}

fn create(address: &str, topic: &str, partitions: i32, embedded: Option<&EmbeddedBroker>) {
    if let Some(embedded) = embedded {
        embedded.create_topic(topic, partitions).unwrap();
        return;
    }
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", address)
            .create()
            .unwrap();
    let new = rdkafka::admin::NewTopic::new(
        topic,
        partitions,
        rdkafka::admin::TopicReplication::Fixed(1),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Already there (the embedded broker creates on demand): fine.
    let _ = runtime.block_on(admin.create_topics([&new], &rdkafka::admin::AdminOptions::new()));
}

fn median(mut v: Vec<(f64, f64)>) -> (f64, f64) {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v[v.len() / 2]
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let external = std::env::var("RIVULET_BENCH_BROKERS")
        .or_else(|_| std::env::var("RIVULET_TEST_BROKERS"))
        .ok();
    let embedded = match &external {
        Some(_) => None,
        None => Some(EmbeddedBroker::start(1).unwrap()),
    };
    let (address, records) = match (&external, &embedded) {
        (Some(address), _) => (address.clone(), 1_000_000),
        (None, Some(broker)) => (broker.bootstrap_servers(), 60_000),
        (None, None) => unreachable!("an embedded broker was started"),
    };
    let records: i64 = std::env::var("RIVULET_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(records);
    let topic = format!("bench-eos-orders-{}", std::process::id());
    create(&address, &topic, PARTITIONS, embedded.as_ref());
    let produced = Instant::now();
    backlog(&address, &topic, records);
    println!(
        "{records} orders on {address} ({}), produced in {:.1} s",
        if external.is_some() {
            "external broker"
        } else {
            "embedded broker"
        },
        produced.elapsed().as_secs_f64()
    );
    let (mut alo, mut eos) = (Vec::new(), Vec::new());
    for run in 0..3 {
        alo.push(drain(&address, &topic, records, "at-least-once", run));
        eos.push(drain(&address, &topic, records, "exactly-once", run));
    }
    println!(
        "{:<16} {:>8} {:>12} {:>8} {:>14}",
        "delivery", "wall s", "records/s", "CPU s", "CPU µs/record"
    );
    let (alo_wall, alo_cpu) = median(alo);
    let (eos_wall, eos_cpu) = median(eos);
    for (label, wall, cpu) in [
        ("at-least-once", alo_wall, alo_cpu),
        ("exactly-once", eos_wall, eos_cpu),
    ] {
        println!(
            "{label:<16} {wall:>8.2} {:>12.0} {cpu:>8.2} {:>14.2}",
            records as f64 / wall,
            cpu * 1e6 / records as f64
        );
    }
    println!(
        "exactly-once costs {:+.1} % wall, {:+.1} % CPU",
        (eos_wall / alo_wall - 1.0) * 100.0,
        (eos_cpu / alo_cpu - 1.0) * 100.0
    );
    let seconds = std::env::var("RIVULET_BENCH_LIVE_SECONDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    println!(
        "window end → visible to a read_committed reader ({seconds} s live, 1 s windows, a record every 5 ms):"
    );
    for delivery in ["at-least-once", "exactly-once"] {
        let samples = latency(&address, embedded.as_ref(), delivery, seconds);
        println!(
            "  {delivery:<14} {} results: p50 {} ms, p99 {} ms, max {} ms",
            samples.len(),
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            samples.last().copied().unwrap_or(-1)
        );
    }
}
