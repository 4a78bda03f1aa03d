//! Pipeline figures, printed (run with `just bench-pipeline`):
//!
//! * step 3 (parse-orders component → 30 s event-time windows → count) over 200 000 orders:
//!   records/s and CPU µs per record, from a file and from the embedded broker, with the
//!   parse step as a component and as the same function natively (ratio in the same run);
//! * window-fire lateness (result's Kafka timestamp − window end) of 1 s processing-time
//!   windows under a steady 2 000 orders/s, p50 and p99.
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
use rivulet::pipeline::Pipeline;
use rivulet::seed::Orders;
use rivulet::spec::PipelineSpec;
use rivulet::udf::{ModuleCache, Runtime};
use rivulet_native_udfs as native;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RECORDS: i64 = 200_000;
const T0: i64 = 1_716_467_700_000;

fn wasm(name: &str) -> String {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target
        .join(format!("wasm32-wasip2/wasm/{name}.wasm"))
        .display()
        .to_string()
}

fn options(brokers: Option<String>) -> RunOptions {
    RunOptions {
        brokers,
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_secs(1),
        swappable: false,
        instance: Default::default(),
    }
}

fn step3(source: &str, sink: &Path) -> String {
    format!(
        r#"
name = "bench-step3"
{source}
[[stages]]
name = "parse-orders"
kind = "parse"
module = "{}"
[window]
key = "status"
size = "30s"
time = "event"
timestamp = "tsMillis"
[aggregate]
builtin = [{{ name = "order_count", fn = "count" }}]
[sink]
kind = "file"
path = "{}"
[dead_letters]
path = "{}"
"#,
        wasm("udf_parse_orders"),
        sink.display(),
        sink.with_extension("dlq").display()
    )
}

/// Runs the job; returns (records/s, CPU µs per record).
fn measure(spec: &str, brokers: Option<String>, native_parse: bool, records: i64) -> (f64, f64) {
    let spec = PipelineSpec::parse(spec, Path::new("bench.toml")).unwrap();
    let mut pipeline = Pipeline::from_spec(&spec, &options(brokers)).unwrap();
    if native_parse {
        pipeline.transform.parse.stage = Box::new(native::parse_orders());
    }
    let (wall, cpu) = (Instant::now(), cpu_time());
    pipeline.run().unwrap();
    let (wall, cpu) = (wall.elapsed(), cpu_time() - cpu);
    assert_eq!(
        pipeline.status.records(),
        records as u64,
        "positions at end: {:?}",
        pipeline.source.positions()
    );
    (
        records as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / records as f64,
    )
}

fn orders(count: i64) -> Vec<String> {
    let mut generator = Orders::new(1, 0.0);
    (0..count)
        .map(|i| String::from_utf8_lossy(&generator.next(T0 + i * 10).payload).into_owned())
        .collect()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    std::fs::write(&input, orders(RECORDS).join("\n") + "\n").unwrap();
    let sink = dir.path().join("out.jsonl");

    println!("step 3 (parse → 30 s event-time windows → count), {RECORDS} orders, one core");
    println!(
        "{:<26} {:>12} {:>14}",
        "source / parse", "records/s", "CPU µs/record"
    );
    let file_source = format!("[source]\nkind = \"file\"\npath = \"{}\"", input.display());
    // Alternate wasm and native runs, five each, and report medians.
    let mut runs: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (i, native_parse) in [false, true].into_iter().enumerate() {
            runs[i].push(measure(
                &step3(&file_source, &sink),
                None,
                native_parse,
                RECORDS,
            ));
        }
    }
    let median = |v: &mut Vec<(f64, f64)>| {
        v.sort_by(|a, b| a.1.total_cmp(&b.1));
        v[v.len() / 2]
    };
    let rows: Vec<f64> = runs
        .iter_mut()
        .zip(["file / wasm", "file / native"])
        .map(|(v, label)| {
            let (rate, cpu) = median(v);
            println!("{label:<26} {rate:>12.0} {cpu:>14.2}");
            cpu
        })
        .collect();
    println!(
        "wasm pipeline speed vs native, per CPU: {:.2}x",
        rows[1] / rows[0]
    );

    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("orders", 3).unwrap();
    let address = broker.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    // The mock cluster keeps a bounded log per partition: stay well inside it.
    let on_broker = 60_000;
    println!(
        "(the embedded broker runs take {on_broker} orders: its log per partition is bounded)"
    );
    for (i, payload) in orders(on_broker).iter().enumerate() {
        let mut record = BaseRecord::to("orders")
            .partition((i % 3) as i32)
            .payload(payload.as_bytes())
            .key("k");
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    for native_parse in [false, true] {
        let kafka_source = format!(
            "[source]\nkind = \"kafka\"\ntopic = \"orders\"\nassign = \"all\"\nstart = \"earliest\"\nbounded = true\ngroup = \"bench-{native_parse}\""
        );
        let (rate, cpu) = measure(
            &step3(&kafka_source, &sink),
            Some(address.clone()),
            native_parse,
            on_broker,
        );
        let label = format!(
            "mock broker / {}",
            if native_parse { "native" } else { "wasm" }
        );
        println!("{label:<26} {rate:>12.0} {cpu:>14.2}");
    }

    fire_lateness(&broker);
}

/// Lateness of processing-time window results under steady input.
fn fire_lateness(broker: &EmbeddedBroker) {
    broker.create_topic("steady", 3).unwrap();
    broker.create_topic("steady-counts", 1).unwrap();
    let address = broker.bootstrap_servers();
    let spec = format!(
        r#"
name = "bench-lateness"
[source]
kind = "kafka"
topic = "steady"
assign = "all"
[[stages]]
name = "parse-orders"
kind = "parse"
module = "{}"
[window]
key = "status"
size = "1s"
[aggregate]
builtin = [{{ name = "order_count", fn = "count" }}]
[sink]
kind = "kafka"
topic = "steady-counts"
"#,
        wasm("udf_parse_orders")
    );
    let spec = PipelineSpec::parse(&spec, Path::new("bench.toml")).unwrap();
    let options = options(Some(address.clone()));
    let stop = options.stop.clone();
    let mut pipeline = Pipeline::from_spec(&spec, &options).unwrap();
    let job = std::thread::spawn(move || pipeline.run().unwrap());
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut generator = Orders::new(2, 0.0);
    let started = Instant::now();
    let seconds = 15;
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        while sent < (started.elapsed().as_secs_f64() * 2000.0) as u64 {
            let order = generator.next(rivulet::source::kafka::now_millis());
            let mut record = BaseRecord::to("steady")
                .partition((sent % 3) as i32)
                .payload(order.payload.as_slice())
                .key("k");
            while let Err((_, back)) = producer.send(record) {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            sent += 1;
        }
        producer.poll(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(2));
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    job.join().unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("group.id", "bench-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("steady-counts", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut lateness = Vec::new();
    while let Some(Ok(m)) = consumer.poll(Duration::from_secs(2)) {
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
        let end = rivulet_sdk::time::parse_iso8601(v["window_end"].as_str().unwrap()).unwrap();
        if let Some(at) = m.timestamp().to_millis() {
            lateness.push(at - end);
        }
    }
    lateness.sort();
    let pct = |p: f64| {
        lateness
            .get(((lateness.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "\nwindow-fire lateness (1 s processing-time windows, 2000 orders/s, {sent} orders, {} results): p50 {} ms, p99 {} ms, max {} ms",
        lateness.len(),
        pct(0.5),
        pct(0.99),
        lateness.last().copied().unwrap_or(-1)
    );
}
