//! A job run in the test's process over a Kafka broker, fed by a producer, its file sink
//! read back: the set-up of the swap and shadow tests.

use super::wasm;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord};
use rivulet::assemble::RunOptions;
use rivulet::pipeline::Pipeline;
use rivulet::spec::PipelineSpec;
use rivulet::status::JobStatus;
use rivulet::swap::SwapRequest;
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A job running on a thread of the test, with its swap requests.
pub struct Running {
    pub stop: Arc<AtomicBool>,
    pub status: Arc<JobStatus>,
    pub swaps: Sender<SwapRequest>,
    pub handle: JoinHandle<Pipeline>,
}

/// Starts the job of `spec` over the broker at `brokers`, swappable, its modules cached
/// in `cache`.
pub fn start(spec: &str, brokers: &str, cache: &Path) -> Running {
    let spec = PipelineSpec::parse(spec, Path::new("swap.toml")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        brokers: Some(brokers.to_owned()),
        runtime: Runtime::new(ModuleCache::at(cache)).unwrap(),
        stop: stop.clone(),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_millis(200),
        swappable: true,
        instance: Default::default(),
    };
    let mut pipeline = Pipeline::from_spec(&spec, &options).unwrap();
    let status = pipeline.status.clone();
    let swaps = pipeline.swap_requests.clone().expect("swappable");
    let handle = std::thread::spawn(move || {
        pipeline.run().unwrap();
        pipeline
    });
    Running {
        stop,
        status,
        swaps,
        handle,
    }
}

impl Running {
    /// Waits until the job has read `n` records (a failure after 60 s).
    pub fn wait_records(&self, n: u64) {
        let started = Instant::now();
        while self.status.records.load(Ordering::Relaxed) < n {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the job read {} of {n} records",
                self.status.records.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the job and returns its pipeline.
    pub fn stop(self) -> Pipeline {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

pub fn producer(address: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("linger.ms", "2")
        .create()
        .unwrap()
}

/// Sends `payload` to partition 0 of `topic` (key `k`), with timestamp `ts` if given.
pub fn send(producer: &BaseProducer, topic: &str, payload: &str, ts: Option<i64>) {
    send_to(producer, topic, 0, payload, ts);
}

/// Like [`send`], to partition `partition`.
pub fn send_to(
    producer: &BaseProducer,
    topic: &str,
    partition: i32,
    payload: &str,
    ts: Option<i64>,
) {
    let mut record = BaseRecord::to(topic)
        .partition(partition)
        .payload(payload)
        .key("k");
    if let Some(ts) = ts {
        record = record.timestamp(ts);
    }
    while let Err((_, back)) = producer.send(record) {
        record = back;
        producer.poll(Duration::from_millis(5));
    }
}

/// The bytes of a built component.
pub fn module(name: &str) -> Vec<u8> {
    std::fs::read(wasm(name)).unwrap()
}

/// The JSON lines of `path`, once it has at least `at_least` (or after 60 s).
pub fn lines(path: &PathBuf, at_least: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= at_least || started.elapsed() > Duration::from_secs(60) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
