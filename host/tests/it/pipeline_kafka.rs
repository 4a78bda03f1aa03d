//! Whole jobs against a Kafka-protocol broker (the embedded mock cluster; with
//! `RIVULET_TEST_BROKERS` set, an external broker such as Tansu — see `just test-tansu`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::kafka::{Read, TestBroker, produce, read_until, unique};
use common::wasm;
use rivulet::assemble::RunOptions;
use rivulet::pipeline::Pipeline;
use rivulet::spec::PipelineSpec;
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const T0: i64 = 1_700_000_000_000;
const SECOND: i64 = 1000;
const STATUSES: [&str; 5] = ["NEW", "PENDING", "SHIPPED", "DELIVERED", "CANCELLED"];

fn order(p: i32, i: i64, ts: i64, status: &str) -> String {
    format!(
        r#"{{"customer":"customer-{p}{i:03}","status":"{status}","region":"eu-west","amount":{}.50,"ts":"{}","tsMillis":{ts}}}"#,
        i % 90 + 1,
        rivulet_sdk::time::iso8601(ts)
    )
}

/// A running job and its stop flag.
struct Job {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<(), String>>,
}

impl Job {
    fn start(spec: &str, brokers: &str) -> Job {
        let spec = PipelineSpec::parse(spec, Path::new("test.toml")).expect("spec");
        let stop = Arc::new(AtomicBool::new(false));
        let options = RunOptions {
            brokers: Some(brokers.to_owned()),
            runtime: Runtime::new(ModuleCache::disabled()).expect("runtime"),
            stop: stop.clone(),
            connect_timeout: Some(Duration::from_secs(30)),
            commit_every: Duration::from_millis(200),
            swappable: false,
            instance: Default::default(),
        };
        let handle = std::thread::spawn(move || {
            let mut pipeline = Pipeline::from_spec(&spec, &options).map_err(|e| e.to_string())?;
            pipeline.run().map_err(|e| e.to_string())
        });
        Job { stop, handle }
    }

    /// Panics with the job's error if it has stopped by itself.
    fn assert_running(self) -> Self {
        if self.handle.is_finished() {
            let result = self.handle.join().expect("job thread");
            panic!("the job stopped by itself: {result:?}");
        }
        self
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .expect("job thread")
            .expect("job ran cleanly");
    }
}

fn event_time_spec(topic: &str, out: &str, dlq: &str, late: &str) -> String {
    format!(
        r#"
name = "event-time-counts"
[source]
kind = "kafka"
topic = "{topic}"
assign = "all"
start = "earliest"
[[stages]]
name = "parse-orders"
kind = "parse"
module = "{parse}"
[window]
key = "status"
size = "10s"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "2s"
allowed_lateness = "3s"
idle_timeout = "60s"
late_topic = "{late}"
[aggregate]
module = "{count}"
[format]
module = "{format}"
[sink]
kind = "kafka"
topic = "{out}"
[dead_letters]
topic = "{dlq}"
[batch]
max_records = 64
max_wait = "50ms"
"#,
        parse = wasm("udf_parse_orders").display(),
        count = wasm("udf_count_by_status").display(),
        format = wasm("udf_format_aggregate").display(),
    )
}

/// Window results read back: (window_start, status) → counts in the order they arrived.
fn results(records: &[Read]) -> BTreeMap<(String, String), Vec<u64>> {
    let mut out: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for r in records {
        let v: Value = serde_json::from_slice(&r.payload).expect("result is JSON");
        let key = (
            v["window_start"].as_str().unwrap().to_owned(),
            v["status"].as_str().unwrap().to_owned(),
        );
        assert_eq!(
            r.key.as_deref(),
            Some(key.1.as_bytes()),
            "results are keyed by status"
        );
        out.entry(key)
            .or_default()
            .push(v["order_count"].as_u64().unwrap());
    }
    out
}

fn window_of(ts: i64) -> String {
    rivulet_sdk::time::iso8601(ts - ts.rem_euclid(10 * SECOND))
}

/// The workshop's event-time job over deterministic input on three partitions: records out
/// of order within the bound, some late within the allowed lateness (the window's result is
/// re-emitted), some later than that (late topic), some malformed (dead letters). The sink
/// must hold exactly the results computed here independently.
fn event_time_job_produces_exact_results(broker: &TestBroker) {
    let address = broker.address();
    let (topic, out, dlq, late) = (
        unique("orders"),
        unique("counts"),
        unique("dlq"),
        unique("late"),
    );
    broker.topic(&topic, 3);
    for t in [&out, &dlq, &late] {
        broker.topic(t, 1);
    }

    // Ground truth, built alongside the input.
    let mut first: BTreeMap<(String, String), u64> = BTreeMap::new(); // on-time counts
    let mut late_updates: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut malformed: Vec<(i32, i64, Vec<u8>)> = Vec::new();
    let mut too_late: Vec<Vec<u8>> = Vec::new();
    let mut phase1 = Vec::new();
    let mut offsets = [0i64; 3];
    let mut push = |records: &mut Vec<(i32, String, Vec<u8>)>, p: i32, payload: String| {
        records.push((p, format!("k{p}"), payload.into_bytes()));
        offsets[p as usize] += 1;
        offsets[p as usize] - 1
    };
    for p in 0..3 {
        for i in 0..58 {
            // Every 5th record is 1.5 s behind its predecessor: out of order, within the 2 s bound.
            let ts = T0 + i * 700 - if i % 5 == 4 { 1500 } else { 0 };
            let status = STATUSES[((p as i64 + i * 3) % 5) as usize];
            if i % 11 == 5 {
                let payload = match i % 3 {
                    0 => "{\"customer\":".to_owned(),
                    1 => {
                        order(p, i, ts, status).replace("\"amount\":", "\"amount\":\"x\",\"was\":")
                    }
                    _ => String::new(),
                };
                let offset = push(&mut phase1, p, payload.clone());
                malformed.push((p, offset, payload.into_bytes()));
                continue;
            }
            push(&mut phase1, p, order(p, i, ts, status));
            *first.entry((window_of(ts), status.to_owned())).or_default() += 1;
        }
        // The last record of phase 1 on every partition: watermark T0 + 40.5 s everywhere.
        let ts = T0 + 42_500;
        push(&mut phase1, p, order(p, 99, ts, "SHIPPED"));
        *first
            .entry((window_of(ts), "SHIPPED".to_owned()))
            .or_default() += 1;
    }
    produce(&address, &topic, &phase1);

    let job = Job::start(&event_time_spec(&topic, &out, &dlq, &late), &address);
    // Windows up to [T0+30 s, T0+40 s) fire once every partition's watermark passes T0+40 s.
    let fired_in_phase1: Vec<&(String, String)> = first
        .keys()
        .filter(|(w, _)| *w < window_of(T0 + 40 * SECOND))
        .collect();
    let seen = read_until(&address, &out, 1, Duration::from_secs(60), |r| {
        let got = results(r);
        fired_in_phase1.iter().all(|k| got.contains_key(*k))
    });
    assert_eq!(
        results(&seen).len(),
        fired_in_phase1.len(),
        "only closed windows fired in phase 1"
    );

    // Phase 2, per partition: a record late within the lateness (window [30 s, 40 s) has
    // fired, and 40 s + 3 s > watermark), one later than that ([20 s, 30 s) is gone), one
    // malformed, then a record an hour ahead to close everything.
    let mut phase2 = Vec::new();
    for p in 0..3 {
        let ts = T0 + 39 * SECOND;
        push(&mut phase2, p, order(p, 200, ts, "NEW"));
        *late_updates
            .entry((window_of(ts), "NEW".to_owned()))
            .or_default() += 1;
        let gone = order(p, 201, T0 + 25 * SECOND, "PENDING");
        push(&mut phase2, p, gone.clone());
        too_late.push(gone.into_bytes());
        let offset = push(&mut phase2, p, "not json".to_owned());
        malformed.push((p, offset, b"not json".to_vec()));
        push(&mut phase2, p, order(p, 202, T0 + 3_600 * SECOND, "NEW"));
    }
    produce(&address, &topic, &phase2);

    let mut last: BTreeMap<(String, String), u64> = first.clone();
    for (key, n) in &late_updates {
        *last.entry(key.clone()).or_default() += n;
    }
    let sink = read_until(&address, &out, 1, Duration::from_secs(60), |r| {
        let got = results(r);
        last.iter()
            .all(|(k, n)| got.get(k).and_then(|v| v.last()) == Some(n))
    });
    let dead = read_until(&address, &dlq, 1, Duration::from_secs(30), |r| {
        r.len() >= malformed.len()
    });
    let late_records = read_until(&address, &late, 1, Duration::from_secs(30), |r| {
        r.len() >= too_late.len()
    });
    job.stop();

    let got = results(&sink);
    let final_counts: BTreeMap<_, _> = got
        .iter()
        .map(|(k, v)| (k.clone(), *v.last().unwrap()))
        .collect();
    assert_eq!(
        final_counts, last,
        "the last result of every window is exact, and no other window fired"
    );
    for (key, counts) in &got {
        assert_eq!(
            counts[0], first[key],
            "first result of {key:?} counts the on-time records"
        );
        assert!(
            counts.windows(2).all(|w| w[0] < w[1]),
            "re-emissions only add late records: {key:?} {counts:?}"
        );
        assert_eq!(
            counts.len() > 1,
            late_updates.contains_key(key),
            "{key:?} re-emitted iff it got late records"
        );
    }

    let mut late_payloads: Vec<Vec<u8>> = late_records.iter().map(|r| r.payload.clone()).collect();
    late_payloads.sort();
    too_late.sort();
    assert_eq!(
        late_payloads, too_late,
        "exactly the records later than the lateness are on the late topic"
    );

    let mut dead_letters: Vec<(i32, i64, Vec<u8>)> = dead
        .iter()
        .map(|r| {
            assert_eq!(r.headers["rivulet.stage"], "parse-orders");
            assert_eq!(r.headers["rivulet.source.topic"], topic);
            assert!(!r.headers["rivulet.error"].is_empty());
            (
                r.headers["rivulet.source.partition"].parse().unwrap(),
                r.headers["rivulet.source.offset"].parse().unwrap(),
                r.payload.clone(),
            )
        })
        .collect();
    dead_letters.sort();
    malformed.sort();
    assert_eq!(
        dead_letters, malformed,
        "exactly the malformed records are dead letters, with their origin"
    );
}

#[test]
fn event_time_job_produces_exact_window_results_dead_letters_and_late_records() {
    event_time_job_produces_exact_results(&TestBroker::from_env());
}

#[test]
fn processing_time_windows_fire_on_the_clock_without_new_input() {
    let broker = TestBroker::from_env();
    let address = broker.address();
    let (topic, out) = (unique("orders"), unique("counts"));
    broker.topic(&topic, 1);
    broker.topic(&out, 1);
    let spec = format!(
        r#"
name = "processing-time"
[source]
kind = "kafka"
topic = "{topic}"
assign = "all"
[[stages]]
name = "parse"
kind = "parse"
module = "{parse}"
[window]
key = "status"
size = "1s"
[aggregate]
builtin = [{{ name = "order_count", fn = "count" }}]
[sink]
kind = "kafka"
topic = "{out}"
"#,
        parse = wasm("udf_parse_orders").display()
    );
    let mut job = Job::start(&spec, &address);
    let total = |records: &[Read]| -> u64 {
        records
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.payload).unwrap()["order_count"]
                    .as_u64()
                    .unwrap()
            })
            .sum()
    };
    for (round, n) in [(0, 7i64), (1, 5)] {
        let batch: Vec<_> = (0..n)
            .map(|i| (0, "k".to_owned(), order(0, i, T0, "NEW").into_bytes()))
            .collect();
        produce(&address, &topic, &batch);
        // No further input: the window must still close on the clock.
        let expected = if round == 0 { 7 } else { 12 };
        let got = read_until(&address, &out, 1, Duration::from_secs(20), |r| {
            total(r) >= expected
        });
        job = job.assert_running();
        assert_eq!(total(&got), expected, "round {round}");
        for r in &got {
            let v: Value = serde_json::from_slice(&r.payload).unwrap();
            let start =
                rivulet_sdk::time::parse_iso8601(v["window_start"].as_str().unwrap()).unwrap();
            let end = rivulet_sdk::time::parse_iso8601(v["window_end"].as_str().unwrap()).unwrap();
            assert_eq!(end - start, 1000);
            assert_eq!(v["status"], "NEW");
        }
    }
    job.stop();
}

#[test]
fn unreachable_broker_is_retried_then_reported_clearly() {
    let spec = PipelineSpec::parse(
        "name = \"x\"\n[source]\nkind = \"kafka\"\ntopic = \"t\"\nassign = \"all\"\n[sink]\nkind = \"stdout\"\n",
        Path::new("x.toml"),
    )
    .unwrap();
    let options = RunOptions {
        brokers: Some("127.0.0.1:1".into()),
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(6)),
        commit_every: Duration::from_secs(1),
        swappable: false,
        instance: Default::default(),
    };
    let started = Instant::now();
    let err = Pipeline::from_spec(&spec, &options)
        .err()
        .expect("unreachable")
        .to_string();
    assert!(
        err.contains("cannot reach Kafka at 127.0.0.1:1 for topic `t`"),
        "{err}"
    );
    let attempts: u32 = err
        .split(" after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(attempts >= 2, "retried: {err}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn group_consumer_honours_earliest_and_committed_start_positions() {
    let broker = TestBroker::from_env();
    let address = broker.address();
    let topic = unique("group-orders");
    broker.topic(&topic, 2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let group = unique("group");
    let spec = |start: &str| {
        format!(
            "name = \"group\"\n[source]\nkind = \"kafka\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\nstart = \"{start}\"\n[sink]\nkind = \"file\"\npath = \"{}\"\n",
            out.display()
        )
    };
    let lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let wait_lines = |n: usize| {
        let started = Instant::now();
        while lines() < n && started.elapsed() < Duration::from_secs(90) {
            std::thread::sleep(Duration::from_millis(100));
        }
        lines()
    };
    let batch = |from: i64, to: i64| -> Vec<(i32, String, Vec<u8>)> {
        (from..to)
            .map(|i| {
                (
                    (i % 2) as i32,
                    "k".to_owned(),
                    format!(r#"{{"n":{i}}}"#).into_bytes(),
                )
            })
            .collect()
    };
    produce(&address, &topic, &batch(0, 5));
    // earliest: everything, even after a run of the same group committed it.
    for round in 1..=2 {
        let job = Job::start(&spec("earliest"), &address);
        assert_eq!(wait_lines(5 * round), 5 * round, "round {round}");
        job.assert_running().stop();
    }
    // committed: only what came after the last commit.
    let job = Job::start(&spec("committed"), &address);
    produce(&address, &topic, &batch(5, 8));
    assert_eq!(wait_lines(13), 13);
    std::thread::sleep(Duration::from_secs(1));
    job.assert_running().stop();
    assert_eq!(lines(), 13, "nothing read twice under `committed`");
}

#[test]
fn consume_prints_what_was_produced_with_keys_and_headers() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let broker = TestBroker::from_env();
    let address = broker.address();
    let topic = format!("consumed-{}", std::process::id());
    broker.topic(&topic, 1);
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &address)
        .create()
        .unwrap();
    let dead_letter = OwnedHeaders::new()
        .insert(Header {
            key: "rivulet.stage",
            value: Some("parse-orders"),
        })
        .insert(Header {
            key: "rivulet.error",
            value: Some("expected value at line 1 column 1"),
        });
    let records: [(&str, &[u8], Option<OwnedHeaders>); 3] = [
        ("k1", br#"{"status":"NEW","order_count":3}"#, None),
        ("k2", b"not json", Some(dead_letter)),
        ("k3", b"two\nlines \xff", None),
    ];
    for (key, payload, headers) in records {
        let mut record = BaseRecord::to(&topic)
            .key(key)
            .payload(payload)
            .partition(0);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "consume",
            &topic,
            "--from-beginning",
            "--max",
            "3",
            "--headers",
        ])
        .args(["--brokers", &address, "--timeout", "60s"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        concat!(
            "{\"status\":\"NEW\",\"order_count\":3}\n",
            "  partition 0, offset 0, key k1\n",
            "not json\n",
            "  partition 0, offset 1, key k2\n",
            "  rivulet.stage: parse-orders\n",
            "  rivulet.error: expected value at line 1 column 1\n",
            "two\\nlines \\xff\n",
            "  partition 0, offset 2, key k3\n",
        )
    );

    // Without --from-beginning only new records come: nothing within the timeout. (Tansu
    // reports a partition's end as its last batch's start + 1, so there "the end" lies
    // inside the last batch and its tail is printed: checked on the embedded broker only.)
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["consume", &topic, "--timeout", "2s", "--brokers", &address])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    if std::env::var("RIVULET_TEST_BROKERS").is_err() {
        assert_eq!(String::from_utf8(output.stdout).unwrap(), "");
    }

    // In a group, a second run continues where the first stopped.
    let values = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args([
                "consume",
                &topic,
                "--group",
                "consume-test",
                "--timeout",
                "60s",
            ])
            .args(["--brokers", &address])
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(
        values(&["--from-beginning", "--max", "2"]),
        "{\"status\":\"NEW\",\"order_count\":3}\nnot json\n"
    );
    assert_eq!(values(&["--max", "1"]), "two\\nlines \\xff\n");

    // A topic that doesn't exist is named in the error.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["consume", "no-such-topic-here", "--connect-timeout", "3s"])
        .args(["--brokers", &address])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("no-such-topic-here"), "{err}");
}

#[test]
fn seed_gives_up_at_its_connect_timeout_and_reports_what_was_delivered() {
    // Nothing listens on port 1: the seeder waits for Kafka no longer than it was told.
    let started = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "seed",
            "orders",
            "--brokers",
            "127.0.0.1:1",
            "--count",
            "10",
        ])
        .args(["--connect-timeout", "2s"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:1"), "{err}");
    assert!(took < Duration::from_secs(20), "gave up after {took:?}");

    // With a broker, the log says how many the broker acknowledged.
    let broker = TestBroker::from_env();
    let address = broker.address();
    let topic = format!("seeded-{}", std::process::id());
    broker.topic(&topic, 1);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["seed", "orders", "--brokers", &address, "--topic", &topic])
        .args(["--count", "25", "--rate", "0", "--connect-timeout", "30s"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("delivered=25"), "{err}");
    let read = read_until(&address, &topic, 1, Duration::from_secs(30), |r| {
        r.len() >= 25
    });
    assert_eq!(read.len(), 25);
}
