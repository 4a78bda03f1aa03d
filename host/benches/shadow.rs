//! Shadow-swap figures, printed (run with `just bench-shadow`; the throughput figures are
//! `scripts/bench-shadow`'s): from `promote` to the first result of the promoted module,
//! over 20 rounds of shadow → promote while records stream (a parse stage; each round's
//! candidate flips `status` between as-sent and lower case, so the first row of the new
//! module is recognisable on the sink).
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmarks fail loudly

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rivulet::assemble::RunOptions;
use rivulet::kafka::broker::EmbeddedBroker;
use rivulet::pipeline::Pipeline;
use rivulet::shadow::Bound;
use rivulet::spec::PipelineSpec;
use rivulet::swap::{ShadowAsk, SwapRequest};
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

/// The whole lines of `path` from byte `from` on, and the byte after the last of them.
fn lines_from(path: &Path, from: usize) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail = text.get(from..).unwrap_or_default();
    let whole = tail.rfind('\n').map_or(0, |i| i + 1);
    let lines = tail[..whole].lines().map(str::to_owned).collect();
    (from + whole, lines)
}

fn main() {
    let broker = EmbeddedBroker::start(1).unwrap();
    broker.create_topic("orders", 1).unwrap();
    let address = broker.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let spec = format!(
        "name = \"bench-shadow\"\n[source]\nkind = \"kafka\"\ntopic = \"orders\"\nassign = \"all\"\n[[stages]]\nname = \"parse\"\nkind = \"parse\"\nmodule = \"{}\"\n[sink]\nkind = \"file\"\npath = \"{}\"\n[batch]\nmax_records = 50\nmax_wait = \"5ms\"\n",
        wasm("shadow_parse_v1").display(),
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
    let status = pipeline.status.clone();
    let job = std::thread::spawn(move || {
        pipeline.run().unwrap();
        pipeline
    });
    // About 2000 orders/s, status in upper case.
    let feeding = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &address)
                .set("linger.ms", "1")
                .create()
                .unwrap();
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..2 {
                    let payload = format!(r#"{{"id":{id},"status":"OPEN"}}"#);
                    let mut record = BaseRecord::<(), _>::to("orders")
                        .partition(0)
                        .payload(&payload);
                    while let Err((_, back)) = producer.send(record) {
                        record = back;
                        producer.poll(Duration::from_millis(1));
                    }
                    id += 1;
                }
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(1));
            }
            producer.flush(Duration::from_secs(10)).unwrap();
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let (mut to_first, mut calls) = (Vec::new(), Vec::new());
    for round in 0..20 {
        let (name, expect) = match round % 2 {
            0 => ("shadow_parse_lower", "open"),
            _ => ("shadow_parse_v1", "OPEN"),
        };
        let (reply, answer) = channel();
        requests
            .send(SwapRequest {
                stage: "parse".into(),
                bytes: std::fs::read(wasm(name)).unwrap(),
                origin: name.into(),
                reply: None,
                fleet: None,
                shadow: Some(ShadowAsk {
                    bound: Bound::For(Duration::from_secs(60)),
                    reply,
                }),
            })
            .unwrap();
        answer
            .recv_timeout(Duration::from_secs(60))
            .unwrap()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let (from, _) = lines_from(&out, 0);
        let asked = Instant::now();
        rivulet::swap::promote(&requests, &status, Some("parse")).unwrap();
        calls.push(asked.elapsed());
        let mut seen = from;
        let first = loop {
            let (end, lines) = lines_from(&out, seen);
            seen = end;
            if lines
                .iter()
                .any(|l| l.contains(&format!(r#""status":"{expect}""#)))
            {
                break asked.elapsed();
            }
            assert!(asked.elapsed() < Duration::from_secs(30), "no new result");
            std::thread::sleep(Duration::from_micros(500));
        };
        to_first.push(first);
    }
    stop.store(true, Ordering::Relaxed);
    feeding.join().unwrap();
    job.join().unwrap();
    let show = |name: &str, mut v: Vec<Duration>| {
        v.sort();
        println!(
            "{name}: p50 {:.1} ms, max {:.1} ms over {} promotes",
            v[v.len() / 2].as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3,
            v.len()
        );
    };
    show("promote call (checks + install in every task)", calls);
    show(
        "promote → first result of the new module on the sink (2000 records/s, batches of ≤ 50 or 5 ms)",
        to_first,
    );
}
