//! The Kafka path, printed (run with `just bench-kafka`): how fast rivulet reads a backlog
//! compared with a plain librdkafka consumer draining the same topic, in one run.
//!
//! * raw drain: a `BaseConsumer` assigned every partition, polling until it has every record;
//! * rivulet source: the job's Kafka source alone (batches handed out, positions tracked);
//! * rivulet job: built-in JSON parse → 30 s event-time windows by status → count → file.
//!
//! Broker: `RIVULET_BENCH_BROKERS` (e.g. a Tansu started by `scripts/with-tansu`, which sets
//! `RIVULET_TEST_BROKERS`), else the embedded broker with a smaller backlog (its log per
//! partition is bounded). `RIVULET_BENCH_RECORDS` sets the backlog (default 1,000,000 on an
//! external broker). Each variant runs 3 times interleaved; medians are printed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmarks fail loudly

mod common;

use common::cpu_time;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rivulet::assemble::RunOptions;
use rivulet::kafka::KafkaConfig;
use rivulet::kafka::broker::EmbeddedBroker;
use rivulet::seed::Orders;
use rivulet::source::kafka::{KafkaSource, SourceOptions};
use rivulet::spec::{AssignMode, PipelineSpec, StartAt};
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;
const T0: i64 = 1_716_467_700_000;

fn produce(address: &str, topic: &str, records: i64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut generator = Orders::new(1, 0.0);
    for i in 0..records {
        let payload = generator.next(T0 + i * 10).payload;
        let mut record = BaseRecord::to(topic)
            .partition((i % i64::from(PARTITIONS)) as i32)
            .payload(payload.as_slice())
            .key("k");
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(300)).unwrap();
}

/// A plain librdkafka consumer draining the topic: (seconds, CPU seconds).
fn raw_drain(address: &str, topic: &str, records: i64) -> (f64, f64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let (wall, cpu) = (Instant::now(), cpu_time());
    let (mut got, mut bytes) = (0i64, 0usize);
    while got < records {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            got += 1;
            bytes += m.payload().map_or(0, <[u8]>::len);
        }
    }
    assert!(bytes > 0);
    (
        wall.elapsed().as_secs_f64(),
        (cpu_time() - cpu).as_secs_f64(),
    )
}

/// rivulet's Kafka source alone, bounded.
fn source_drain(address: &str, topic: &str, records: i64, run: usize) -> (f64, f64) {
    let options = SourceOptions {
        topic: topic.to_owned(),
        group: format!("bench-source-{run}"),
        start: StartAt::Earliest,
        assign: AssignMode::All,
        // Not bounded: some brokers (Tansu) report a partition's end as the start of its
        // last batch + 1, so a bounded read would stop short. Counted instead.
        bounded: false,
        connect_timeout: Some(Duration::from_secs(30)),
        share: (0, 1),
        cooperative: false,
        exactly_once: false,
    };
    let stop = AtomicBool::new(false);
    let mut source = KafkaSource::open(&KafkaConfig::new(address), &options, &stop).unwrap();
    let (wall, cpu) = (Instant::now(), cpu_time());
    let mut got = 0i64;
    while got < records {
        got += i64::from(source.poll(1024, Duration::from_millis(100)).unwrap().len);
    }
    assert_eq!(got, records);
    (
        wall.elapsed().as_secs_f64(),
        (cpu_time() - cpu).as_secs_f64(),
    )
}

/// The whole job (built-in parse, windows, count, file sink) as `tasks` tasks, stopped once
/// every record was read.
fn job(
    address: &str,
    topic: &str,
    records: i64,
    run: usize,
    tasks: usize,
    out: &Path,
) -> (f64, f64) {
    let spec = format!(
        r#"
name = "bench-kafka"
[source]
kind = "kafka"
topic = "{topic}"
assign = "all"
start = "earliest"
group = "bench-job-{run}-{tasks}"
[window]
key = "status"
size = "30s"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "2s"
[aggregate]
builtin = [{{ name = "order_count", fn = "count" }}]
[sink]
kind = "file"
path = "{}"
"#,
        out.display()
    );
    let mut spec = PipelineSpec::parse(&spec, Path::new("bench.toml")).unwrap();
    spec.parallelism = Some(tasks);
    let options = RunOptions {
        brokers: Some(address.to_owned()),
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_secs(1),
        swappable: false,
        instance: Default::default(),
    };
    let stop = options.stop.clone();
    let mut job = Job::from_spec(&spec, &options).unwrap();
    let status = job.status.clone();
    // Unbounded (see `source_drain`): stopped once every record was read.
    let watcher = std::thread::spawn(move || {
        while status.records() < records as u64 {
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let (wall, cpu) = (Instant::now(), cpu_time());
    job.run().unwrap();
    watcher.join().unwrap();
    assert_eq!(job.status.records(), records as u64);
    (
        wall.elapsed().as_secs_f64(),
        (cpu_time() - cpu).as_secs_f64(),
    )
}

fn median(mut v: Vec<(f64, f64)>) -> (f64, f64, f64, f64) {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (min, max) = (v[0].0, v[v.len() - 1].0);
    let (wall, cpu) = v[v.len() / 2];
    (wall, cpu, min, max)
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
    let records = std::env::var("RIVULET_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(records);
    let topic = format!("bench-orders-{}", std::process::id());
    if let Some(embedded) = &embedded {
        embedded.create_topic(&topic, PARTITIONS).unwrap();
    } else {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            ClientConfig::new()
                .set("bootstrap.servers", &address)
                .create()
                .unwrap();
        let new = rdkafka::admin::NewTopic::new(
            &topic,
            PARTITIONS,
            rdkafka::admin::TopicReplication::Fixed(1),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(admin.create_topics([&new], &rdkafka::admin::AdminOptions::new()))
            .unwrap();
    }
    let produced = Instant::now();
    produce(&address, &topic, records);
    println!(
        "{records} orders on {} ({}), produced in {:.1} s",
        address,
        if external.is_some() {
            "external broker"
        } else {
            "embedded broker"
        },
        produced.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let (mut raw, mut source, mut whole, mut whole2) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..3 {
        raw.push(raw_drain(&address, &topic, records));
        source.push(source_drain(&address, &topic, records, run));
        whole.push(job(&address, &topic, records, run, 1, &out));
        whole2.push(job(&address, &topic, records, run, 2, &out));
    }
    println!(
        "{:<16} {:>10} {:>12} {:>10} {:>16}",
        "variant", "wall s", "records/s", "CPU s", "wall range s"
    );
    let raw_wall = median(raw.clone()).0;
    for (label, runs) in [
        ("raw drain", raw),
        ("rivulet source", source),
        ("rivulet job", whole),
        ("job, 2 tasks", whole2),
    ] {
        let (wall, cpu, min, max) = median(runs);
        println!(
            "{label:<16} {wall:>10.2} {:>12.0} {cpu:>10.2} {min:>7.2}–{max:<7.2}  ({:.2}x raw)",
            records as f64 / wall,
            raw_wall / wall
        );
    }
}
