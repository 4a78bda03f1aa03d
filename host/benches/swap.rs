//! Hot-swap figures, printed (run with `just bench-swap`):
//!
//! * the pause of the record flow per swap (the install between two batches), p50/p99
//!   over 100 swaps while records stream;
//! * from a rebuilt module landing on disk to the first output of its new logic, with the
//!   job watching the file (what a participant waits for after `just udf <name>`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmarks fail loudly

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rivulet::assemble::RunOptions;
use rivulet::kafka::broker::EmbeddedBroker;
use rivulet::pipeline::Pipeline;
use rivulet::spec::PipelineSpec;
use rivulet::swap::SwapRequest;
use rivulet::udf::{ModuleCache, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

fn wasm(name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join(format!("wasm32-wasip2/wasm/{name}.wasm"))
}

fn main() {
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("ids", 1).unwrap();
    let address = broker.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("parse.wasm");
    std::fs::copy(wasm("swap_parse_v1"), &watched).unwrap();
    let out = dir.path().join("out.jsonl");
    let spec = format!(
        "name = \"bench-swap\"\n[source]\nkind = \"kafka\"\ntopic = \"ids\"\nassign = \"all\"\n[[stages]]\nname = \"parse\"\nkind = \"parse\"\nmodule = \"{}\"\n[sink]\nkind = \"file\"\npath = \"{}\"\n[batch]\nmax_records = 50\nmax_wait = \"5ms\"\n",
        watched.display(),
        out.display()
    );
    let spec = PipelineSpec::parse(&spec, Path::new("bench.toml")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        brokers: Some(address.clone()),
        runtime: Runtime::new(ModuleCache::at(dir.path().join("cache"))).unwrap(),
        stop: stop.clone(),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_secs(1),
        swappable: true,
        instance: Default::default(),
    };
    let mut pipeline = Pipeline::from_spec(&spec, &options).unwrap();
    let requests = pipeline.swap_requests.clone().unwrap();
    rivulet::watch::spawn(pipeline.status.clone(), requests.clone(), stop.clone()).unwrap();
    let job = std::thread::spawn(move || {
        pipeline.run().unwrap();
        pipeline
    });

    // A steady stream of ids: 2000/s.
    let feeding_stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = feeding_stop.clone();
        let address = address.clone();
        std::thread::spawn(move || {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &address)
                .set("linger.ms", "1")
                .create()
                .unwrap();
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..10 {
                    let payload = format!(r#"{{"id":{id}}}"#);
                    let mut record = BaseRecord::to("ids")
                        .partition(0)
                        .payload(&payload)
                        .key("k");
                    while let Err((_, back)) = producer.send(record) {
                        record = back;
                        producer.poll(Duration::from_millis(1));
                    }
                    id += 1;
                }
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(5));
            }
            producer.flush(Duration::from_secs(10)).unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // 100 swaps through the API, alternating two modules (compiled once, then cached).
    let modules = [
        std::fs::read(wasm("swap_parse_v2")).unwrap(),
        std::fs::read(wasm("swap_parse_v1")).unwrap(),
    ];
    for i in 0..100 {
        let (reply, answer) = channel();
        requests
            .send(SwapRequest {
                stage: "parse".into(),
                bytes: modules[i % 2].clone(),
                origin: "bench".into(),
                reply: Some(reply),
                fleet: None,
                shadow: None,
            })
            .unwrap();
        answer
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }

    // Rebuild-to-output: overwrite the watched file, wait for the first row of the new logic.
    let mut latencies = Vec::new();
    for (round, variant) in ["v2", "v1", "v2", "v1", "v2"].iter().enumerate() {
        let before = std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count();
        let started = Instant::now();
        std::fs::copy(wasm(&format!("swap_parse_{variant}")), &watched).unwrap();
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let seen = text
                .lines()
                .skip(before)
                .any(|l| l.contains(&format!("\"parsed_by\":\"{variant}\"")));
            if seen {
                latencies.push(started.elapsed());
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "round {round}: new logic never showed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    feeding_stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let pipeline = job.join().unwrap();

    let mut pauses: Vec<u128> = pipeline
        .swap_pauses
        .iter()
        .map(Duration::as_micros)
        .collect();
    pauses.sort();
    let pct = |p: f64| pauses[((pauses.len() - 1) as f64 * p) as usize];
    println!(
        "swap pause of the record flow over {} swaps: p50 {} µs, p99 {} µs, max {} µs",
        pauses.len(),
        pct(0.5),
        pct(0.99),
        pauses[pauses.len() - 1]
    );
    latencies.sort();
    println!(
        "module file rewritten → first output of the new logic (watching: inotify, read after 150 ms without an event): median {} ms, max {} ms",
        latencies[latencies.len() / 2].as_millis(),
        latencies[latencies.len() - 1].as_millis()
    );
}
