//! Hot swap in a running job: many swaps mid-stream lose and duplicate nothing, broken
//! modules are rejected without touching the output, and an aggregate with a new state
//! version lets open windows finish with the old module.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::job::{Running, lines, module, producer, send, start};
use common::kafka::TestBroker;
use common::wasm;
use rdkafka::producer::Producer;
use rivulet::status::JobStatus;
use rivulet::swap::{SwapOutcome, SwapRequest};
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

const T0: i64 = 1_700_000_000_000;

impl Running {
    fn swap(&self, stage: &str, bytes: Vec<u8>) -> Result<SwapOutcome, String> {
        let (reply, answer) = channel();
        self.swaps
            .send(SwapRequest {
                stage: stage.into(),
                bytes,
                origin: format!("test:{stage}"),
                reply: Some(reply),
                fleet: None,
                shadow: None,
            })
            .unwrap();
        answer.recv_timeout(Duration::from_secs(60)).unwrap()
    }
}

fn parse_map_spec(topic: &str, out: &Path) -> String {
    format!(
        r#"
name = "swaps"
[source]
kind = "kafka"
topic = "{topic}"
assign = "all"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[[stages]]
name = "map"
kind = "map"
module = "{}"
[sink]
kind = "file"
path = "{}"
[batch]
max_records = 20
max_wait = "10ms"
"#,
        wasm("swap_parse_v1").display(),
        wasm("swap_map_v1").display(),
        out.display()
    )
}

#[test]
fn twenty_four_swaps_mid_stream_lose_nothing_and_process_nothing_twice() {
    let broker = TestBroker::embedded();
    broker.topic("ids", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let job = start(&parse_map_spec("ids", &out), &broker.address(), dir.path());
    const N: i64 = 4000;
    let address = broker.address();
    let feeding = std::thread::spawn(move || {
        let producer = producer(&address);
        for chunk in 0..N / 40 {
            for id in chunk * 40..(chunk + 1) * 40 {
                send(&producer, "ids", &format!(r#"{{"id":{id}}}"#), None);
            }
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_millis(30));
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    });
    job.wait_records(100);
    // Behaviour-changing and identical swaps of both stages, while records flow.
    let plan = [
        ("parse", "swap_parse_v2"),
        ("map", "swap_map_v2"),
        ("parse", "swap_parse_v2"),
        ("map", "swap_map_v1"),
        ("parse", "swap_parse_v1"),
        ("map", "swap_map_v1"),
        ("parse", "swap_parse_v2"),
        ("map", "swap_map_v2"),
        ("parse", "swap_parse_v1"),
        ("map", "swap_map_v2"),
        ("parse", "swap_parse_v1"),
        ("map", "swap_map_v1"),
        ("parse", "swap_parse_v2"),
        ("map", "swap_map_v2"),
        ("parse", "swap_parse_v2"),
        ("map", "swap_map_v1"),
        ("parse", "swap_parse_v1"),
        ("map", "swap_map_v2"),
        ("parse", "swap_parse_v2"),
        ("map", "swap_map_v2"),
        ("parse", "swap_parse_v1"),
        ("map", "swap_map_v1"),
        ("parse", "swap_parse_v2"),
        ("map", "swap_map_v1"),
    ];
    for (stage, name) in plan {
        let outcome = job
            .swap(stage, module(name))
            .unwrap_or_else(|e| panic!("{stage} ← {name}: {e}"));
        assert_eq!(outcome.stage, stage);
        std::thread::sleep(Duration::from_millis(60));
    }
    feeding.join().unwrap();
    let rows = lines(&out, N as usize);
    let pipeline = job.stop();

    assert_eq!(rows.len(), N as usize, "every record came out exactly once");
    let mut ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, (0..N).collect::<Vec<_>>());
    let (mut parsers, mut mappers) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for r in &rows {
        let id = r["id"].as_i64().unwrap();
        let parsed_by = r["parsed_by"].as_str().unwrap();
        let mapped_by = r["mapped_by"].as_str().unwrap();
        let value = id * if parsed_by == "v2" { 10 } else { 1 };
        assert_eq!(
            r["value"].as_i64(),
            Some(value),
            "{r}: parsed as its module says"
        );
        assert_eq!(
            r["value2"].as_i64(),
            Some(value + if mapped_by == "v2" { 1000 } else { 0 }),
            "{r}"
        );
        parsers.insert(parsed_by.to_owned());
        mappers.insert(mapped_by.to_owned());
    }
    assert_eq!(parsers.len(), 2, "both parse variants processed records");
    assert_eq!(mappers.len(), 2, "both map variants processed records");
    let status = pipeline.status.snapshot();
    let swaps: u64 = status.stages.iter().map(|s| s.swaps).sum();
    assert_eq!(swaps, 24);
    let mut pauses: Vec<u128> = pipeline
        .swap_pauses
        .iter()
        .map(Duration::as_micros)
        .collect();
    pauses.sort();
    eprintln!(
        "swap pause over {} swaps: p50 {} µs, max {} µs",
        pauses.len(),
        pauses[pauses.len() / 2],
        pauses[pauses.len() - 1]
    );
}

#[test]
fn broken_modules_are_rejected_and_the_output_is_unaffected() {
    let broker = TestBroker::embedded();
    broker.topic("ids", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let job = start(&parse_map_spec("ids", &out), &broker.address(), dir.path());
    let producer = producer(&broker.address());
    for id in 0..300 {
        send(&producer, "ids", &format!(r#"{{"id":{id}}}"#), None);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    job.wait_records(300);

    let good = module("swap_parse_v2");
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "parse",
            module("swap_map_v1"),
            "implements the map world, but stage `parse` needs the parse world",
        ),
        (
            "parse",
            module("swap_parse_trap"),
            "failed on the stage's sample input",
        ),
        (
            "parse",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module, not a component",
        ),
        (
            "parse",
            b"definitely not wasm".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "parse",
            good[..good.len() / 3].to_vec(),
            "is not a valid WebAssembly component",
        ),
        ("nope", good.clone(), "no swappable stage `nope`"),
    ];
    for (stage, bytes, expected) in cases {
        let err = job.swap(stage, bytes).expect_err("rejected");
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }
    for id in 300..600 {
        send(&producer, "ids", &format!(r#"{{"id":{id}}}"#), None);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let rows = lines(&out, 600);
    let pipeline = job.stop();
    assert_eq!(rows.len(), 600);
    assert!(
        rows.iter()
            .all(|r| r["parsed_by"] == "v1" && r["mapped_by"] == "v1"),
        "only the original modules ran"
    );
    let parse = pipeline.status.stage("parse").unwrap();
    assert_eq!((parse.swaps, parse.rejected), (0, 5));
    assert!(
        parse
            .last_rejection
            .unwrap()
            .contains("is not a valid WebAssembly component")
    );
}

fn aggregate_spec(out: &Path) -> String {
    format!(
        r#"
name = "agg-swaps"
[source]
kind = "kafka"
topic = "events"
assign = "all"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[window]
size = "10s"
time = "event"
timestamp = "kafka"
idle_timeout = "60s"
[aggregate]
module = "{}"
[sink]
kind = "file"
path = "{}"
"#,
        wasm("swap_parse_v1").display(),
        wasm("swap_aggregate_v1").display(),
        out.display()
    )
}

#[test]
fn aggregate_with_a_new_state_version_lets_open_windows_finish_with_the_old_module() {
    let broker = TestBroker::embedded();
    broker.topic("events", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let job = start(&aggregate_spec(&out), &broker.address(), dir.path());
    let producer = producer(&broker.address());
    let mut sent = 0u64;
    let mut emit = |ts: i64, n: u64| {
        for _ in 0..n {
            send(
                &producer,
                "events",
                &format!(r#"{{"id":{sent}}}"#),
                Some(ts),
            );
            sent += 1;
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        sent
    };
    // 30 records in W0 = [0 s, 10 s) and 30 in W1 = [10 s, 20 s): W0 closes, W1 stays open.
    emit(T0 + 5_000, 30);
    let n = emit(T0 + 19_000, 30);
    job.wait_records(n);
    // Same state version: v2 takes over W1's accumulator.
    let same = job.swap("aggregate", module("swap_aggregate_v2")).unwrap();
    assert!(!same.new_generation);
    let n = emit(T0 + 19_100, 10);
    job.wait_records(n);
    // New state version: W1 finishes with the module it was opened with (v2); W2 uses v3.
    let new = job.swap("aggregate", module("swap_aggregate_v3")).unwrap();
    assert!(new.new_generation);
    assert_eq!(new.state_version, Some(2));
    emit(T0 + 19_500, 5);
    emit(T0 + 25_000, 20);
    emit(T0 + 100_000, 1);
    let rows = lines(&out, 3);
    let pipeline = job.stop();
    let by_window: std::collections::BTreeMap<i64, &Value> = rows
        .iter()
        .map(|r| (r["window_start"].as_i64().unwrap(), r))
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(by_window[&T0]["counts"], serde_json::json!({"v1": 30}));
    assert_eq!(by_window[&T0]["finished_by"], "v1");
    assert_eq!(
        by_window[&(T0 + 10_000)]["counts"],
        serde_json::json!({"v1": 30, "v2": 15}),
        "W1 kept its state across both swaps"
    );
    assert_eq!(by_window[&(T0 + 10_000)]["finished_by"], "v2");
    assert_eq!(
        by_window[&(T0 + 20_000)]["counts"],
        serde_json::json!({"plain": 20})
    );
    assert_eq!(by_window[&(T0 + 20_000)]["finished_by"], "v3");
    assert_eq!(
        pipeline.status.stage("aggregate").unwrap().state_version,
        Some(2)
    );
}

/// `swap_aggregate_v4` changed its accumulator's layout but kept state version 1, so it
/// would take over open windows whose accumulators it cannot read (each would end as a dead
/// letter instead of a result). The swap check tries it on the live accumulators and refuses
/// it, naming the stage and the decode failure; the job's results stay exact.
#[test]
fn aggregate_that_cannot_read_the_open_windows_accumulators_is_refused_and_results_stay_exact() {
    let broker = TestBroker::embedded();
    broker.topic("events", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let job = start(&aggregate_spec(&out), &broker.address(), dir.path());
    let producer = producer(&broker.address());
    let mut sent = 0u64;
    // Per window start, the records sent into it (the expected counts).
    let mut expected: std::collections::BTreeMap<i64, u64> = Default::default();
    let mut emit = |ts: i64, n: u64| {
        for _ in 0..n {
            send(
                &producer,
                "events",
                &format!(r#"{{"id":{sent}}}"#),
                Some(ts),
            );
            sent += 1;
        }
        *expected
            .entry(ts - (ts - T0).rem_euclid(10_000))
            .or_default() += n;
        producer.flush(Duration::from_secs(30)).unwrap();
        sent
    };
    // W0 = [0 s, 10 s) closes; W1 = [10 s, 20 s) stays open.
    emit(T0 + 5_000, 30);
    let n = emit(T0 + 19_000, 30);
    job.wait_records(n);

    let err = job
        .swap("aggregate", module("swap_aggregate_v4"))
        .expect_err("a module that cannot read the open windows is refused");
    assert!(
        err.starts_with(
            "stage `aggregate`: the new module keeps state version 1 but cannot merge the accumulators of the open windows it would take over (1 tried): merge failed: accumulator does not fit `swap_aggregate::Rows`: missing field `rows`"
        ),
        "{err}"
    );
    assert!(
        err.ends_with(
            "if the accumulator's layout changed, give the module a new STATE_VERSION (open windows then finish with the module in service)"
        ),
        "{err}"
    );

    emit(T0 + 19_500, 7);
    emit(T0 + 100_000, 1);
    let rows = lines(&out, 2);
    let pipeline = job.stop();
    let got: std::collections::BTreeMap<i64, (Value, Value)> = rows
        .iter()
        .map(|r| {
            let start = r["window_start"].as_i64().unwrap();
            (start, (r["counts"].clone(), r["finished_by"].clone()))
        })
        .collect();
    let want: std::collections::BTreeMap<i64, (Value, Value)> = expected
        .iter()
        .filter(|(start, _)| **start < T0 + 100_000)
        .map(|(start, n)| (*start, (serde_json::json!({ "v1": n }), "v1".into())))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        got, want,
        "every window finished by v1 with all its records"
    );
    assert_eq!(
        want[&(T0 + 10_000)].0,
        serde_json::json!({"v1": 37}),
        "the window open during the refused swap"
    );
    let aggregate = pipeline.status.stage("aggregate").unwrap();
    assert_eq!((aggregate.swaps, aggregate.rejected), (0, 1));
    assert_eq!(aggregate.last_rejection.as_deref(), Some(err.as_str()));
    let counters = pipeline.status.counters();
    assert_eq!(
        counters.errors.get("aggregate"),
        None,
        "no window dead-lettered"
    );
}

/// A swap whose module produces other columns than the stage ever produced is announced
/// once: counted in the stage's status (and in `/metrics`) with the difference. A swap that
/// keeps the shape is not, nor one back to a shape the stage produced before.
#[test]
fn a_swap_that_changes_the_output_shape_is_counted_with_the_difference() {
    let broker = TestBroker::embedded();
    broker.topic("ids", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let job = start(&parse_map_spec("ids", &out), &broker.address(), dir.path());
    let producer = producer(&broker.address());
    let mut next = 0;
    let mut feed = |n: i64| {
        for id in next..next + n {
            send(&producer, "ids", &format!(r#"{{"id":{id}}}"#), None);
        }
        next += n;
        producer.flush(Duration::from_secs(30)).unwrap();
        lines(&out, next as usize)
    };
    feed(50);
    job.swap("parse", module("swap_parse_v2")).unwrap();
    feed(50);
    job.swap("map", module("swap_map_v3")).unwrap();
    let rows = feed(50);
    assert_eq!(
        rows[149]["value2"], "1490",
        "v3's text value2: {}",
        rows[149]
    );
    let map = job.status.stage("map").unwrap();
    assert_eq!(map.shape_changes, 1);
    assert_eq!(
        map.last_shape_change.as_deref(),
        Some("added note (text); retyped value2 integer → text")
    );
    job.swap("map", module("swap_map_v1")).unwrap();
    let rows = feed(50);
    let pipeline = job.stop();
    assert_eq!(rows.len(), 200);
    assert_eq!(rows[199]["value2"], 1990, "v1 again: {}", rows[199]);
    let status = &pipeline.status;
    let parse = status.stage("parse").unwrap();
    assert_eq!(
        (parse.swaps, parse.shape_changes, parse.last_shape_change),
        (1, 0, None),
        "v1 and v2 of parse produce the same columns"
    );
    let map = status.stage("map").unwrap();
    assert_eq!(
        (map.swaps, map.shape_changes),
        (2, 1),
        "back to v1's shape, which went downstream before: not new"
    );
    let metrics = rivulet::http::metrics::encode(status).unwrap();
    assert!(
        metrics.contains(r#"rivulet_stage_shape_changes_total{stage="map"} 1"#)
            && metrics.contains(r#"rivulet_stage_shape_changes_total{stage="parse"} 0"#),
        "{metrics}"
    );
}

/// Every batch's shape is checked, not only the first after a swap: `swap_map_v4` keeps
/// v1's columns for ids below 100 and switches to v3's from id 100 on. Its first batches
/// are not announced; the later batch with the new shape is, once (more batches of it, and
/// several batches in between, change nothing).
#[test]
fn a_new_output_shape_on_a_later_batch_after_a_swap_is_announced_once() {
    let broker = TestBroker::embedded();
    broker.topic("ids", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let job = start(&parse_map_spec("ids", &out), &broker.address(), dir.path());
    let producer = producer(&broker.address());
    let mut next = 0;
    let mut feed = |n: i64| {
        for id in next..next + n {
            send(&producer, "ids", &format!(r#"{{"id":{id}}}"#), None);
        }
        next += n;
        producer.flush(Duration::from_secs(30)).unwrap();
        lines(&out, next as usize)
    };
    feed(40);
    job.swap("map", module("swap_map_v4")).unwrap();
    // Ids 40..100: v4 with v1's columns, in batches of at most 20 (the spec's).
    let rows = feed(60);
    assert_eq!(rows[99]["mapped_by"], "v4");
    assert_eq!(rows[99]["value2"], 99, "v1's shape below id 100");
    let map = job.status.stage("map").unwrap();
    assert_eq!(
        (map.swaps, map.shape_changes),
        (1, 0),
        "v4's batches so far all have v1's shape"
    );
    let rows = feed(60);
    assert_eq!(rows[100]["value2"], "100", "v3's shape from id 100");
    assert_eq!(rows[100]["note"], "reshaped");
    let pipeline = job.stop();
    let map = pipeline.status.stage("map").unwrap();
    assert_eq!(map.shape_changes, 1, "three batches of the new shape: once");
    assert_eq!(
        map.last_shape_change.as_deref(),
        Some("added note (text); retyped value2 integer → text")
    );
}

#[test]
fn control_api_reports_status_and_swaps_over_http() {
    let broker = TestBroker::embedded();
    broker.topic("ids", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let job = start(&parse_map_spec("ids", &out), &broker.address(), dir.path());
    let target = rivulet::http::Target::default();
    target.set(job.status.clone(), Some(job.swaps.clone()));
    let token = rivulet::http::Token::generate().unwrap();
    let addr = rivulet::http::serve("127.0.0.1:0", target, token.clone())
        .unwrap()
        .to_string();
    let request = |method: &str, path: &str, body: &[u8], token: Option<&str>| {
        rivulet::http::client::request(&addr, method, path, body, token).unwrap()
    };

    // Reads are open on loopback.
    let (code, body) = request("GET", "/status", &[], None);
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["job"], "swaps");
    let stages: Vec<&str> = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["map", "parse"]);
    let before = status["stages"][1]["hash"].as_str().unwrap().to_owned();
    assert_eq!(before.len(), 64);

    // A swap without the token, or with a wrong one, is refused and changes nothing.
    let v2 = module("swap_parse_v2");
    let (code, body) = request("POST", "/stages/parse/module", &v2, None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = request("POST", "/stages/parse/module", &v2, Some("not-the-token"));
    assert_eq!(code, 401, "{body}");
    assert_eq!(body, r#"{"error":"wrong token"}"#);
    assert_eq!(
        job.status.stage("parse").unwrap().hash.as_deref(),
        Some(before.as_str()),
        "a refused swap changes nothing"
    );

    let (code, body) = request("POST", "/stages/parse/module", &v2, Some(token.as_str()));
    assert_eq!(code, 200, "{body}");
    let outcome: SwapOutcome = serde_json::from_str(&body).unwrap();
    assert_eq!(outcome.stage, "parse");
    assert_eq!(
        Some(outcome.hash.clone()),
        job.status.stage("parse").unwrap().hash
    );
    assert_ne!(outcome.hash, before);

    let (code, body) = request(
        "POST",
        "/stages/parse/module",
        b"garbage",
        Some(token.as_str()),
    );
    assert_eq!(code, 422);
    assert!(body.contains("not a WebAssembly file"), "{body}");
    let (code, _) = request("POST", "/stages/parse/module", &[], Some(token.as_str()));
    assert_eq!(code, 400);
    let (code, _) = request("GET", "/nothing", &[], None);
    assert_eq!(code, 404);
    let (code, metrics) = request("GET", "/metrics", &[], None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains(r#"rivulet_stage_swaps_total{stage="parse"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"rivulet_stage_swap_rejections_total{stage="parse"} 1"#),
        "the garbage module: {metrics}"
    );

    let producer = producer(&broker.address());
    send(&producer, "ids", r#"{"id":7}"#, None);
    producer.flush(Duration::from_secs(10)).unwrap();
    let rows = lines(&out, 1);
    job.stop();
    assert_eq!(
        rows[0]["parsed_by"], "v2",
        "the module swapped in over HTTP is running"
    );
    assert_eq!(rows[0]["value"], 70);
}

#[test]
fn watched_module_file_is_swapped_in_when_rewritten_and_a_broken_rewrite_is_ignored() {
    let broker = TestBroker::embedded();
    broker.topic("ids", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let watched = dir.path().join("parse.wasm");
    std::fs::copy(wasm("swap_parse_v1"), &watched).unwrap();
    let spec = parse_map_spec("ids", &out).replace(
        &wasm("swap_parse_v1").display().to_string(),
        &watched.display().to_string(),
    );
    let job = start(&spec, &broker.address(), dir.path());
    rivulet::watch::spawn(job.status.clone(), job.swaps.clone(), job.stop.clone()).unwrap();
    let producer = producer(&broker.address());
    let mut next = 0;
    let mut feed_until = |variant: &str, rows_before: usize| -> Vec<Value> {
        let started = Instant::now();
        loop {
            send(&producer, "ids", &format!(r#"{{"id":{next}}}"#), None);
            next += 1;
            producer.flush(Duration::from_secs(10)).unwrap();
            let rows = lines(&out, next as usize);
            if rows[rows_before..]
                .iter()
                .any(|r| r["parsed_by"] == variant)
            {
                return rows;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{variant} never ran"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    feed_until("v1", 0);
    std::fs::write(&watched, b"half-written garbage").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let rejected = job.status.stage("parse").unwrap();
    assert_eq!(
        (rejected.swaps, rejected.rejected),
        (0, 1),
        "the garbage was rejected"
    );
    std::fs::copy(wasm("swap_parse_v2"), &watched).unwrap();
    let rows = feed_until("v2", 1);
    job.stop();
    assert_eq!(rows.len(), next as usize, "no record lost across the swaps");
}

/// A build that writes the module in several steps: the first half of a component is not
/// tried (it would be rejected), the whole one, once written, is swapped in.
#[test]
fn a_half_written_module_is_not_tried_and_the_completed_one_is_swapped_in() {
    use std::io::Write;
    let broker = TestBroker::embedded();
    broker.topic("ids", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let watched = dir.path().join("parse.wasm");
    std::fs::copy(wasm("swap_parse_v1"), &watched).unwrap();
    let spec = parse_map_spec("ids", &out).replace(
        &wasm("swap_parse_v1").display().to_string(),
        &watched.display().to_string(),
    );
    let job = start(&spec, &broker.address(), dir.path());
    rivulet::watch::spawn(job.status.clone(), job.swaps.clone(), job.stop.clone()).unwrap();
    let v2 = module("swap_parse_v2");
    let (first, rest) = v2.split_at(v2.len() / 2);
    let mut file = std::fs::File::create(&watched).unwrap();
    file.write_all(first).unwrap();
    file.flush().unwrap();
    // Well past the quiet period: the watcher has looked at the half-written file.
    std::thread::sleep(rivulet::watch::QUIET * 4);
    let parse = job.status.stage("parse").unwrap();
    assert_eq!(
        (parse.swaps, parse.rejected),
        (0, 0),
        "the half-written module was not tried"
    );
    file.write_all(rest).unwrap();
    drop(file);
    let started = Instant::now();
    let v2_hash = rivulet::udf::cache::content_hash(&v2);
    while job.status.stage("parse").unwrap().hash.as_deref() != Some(v2_hash.as_str()) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the completed module was not swapped in"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let parse = job.status.stage("parse").unwrap();
    job.stop();
    assert_eq!((parse.swaps, parse.rejected), (1, 0));
}

/// Editors and `cargo build` replace a file by renaming a new one over it: each of ten such
/// replacements (v1 and v2 in turn, while records flow) is swapped in, and the stage then
/// runs exactly the renamed file. Prints the median time from the rename to the swap being
/// applied (`--nocapture`).
#[test]
fn module_file_replaced_by_rename_is_swapped_in_each_time() {
    let broker = TestBroker::embedded();
    broker.topic("ids", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    let watched = modules.join("parse.wasm");
    std::fs::copy(wasm("swap_parse_v1"), &watched).unwrap();
    let spec = parse_map_spec("ids", &out).replace(
        &wasm("swap_parse_v1").display().to_string(),
        &watched.display().to_string(),
    );
    let job = start(&spec, &broker.address(), dir.path());
    rivulet::watch::spawn(job.status.clone(), job.swaps.clone(), job.stop.clone()).unwrap();
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (address, feeding) = (broker.address(), feeding.clone());
        std::thread::spawn(move || {
            let producer = producer(&address);
            let mut id = 0;
            while feeding.load(Ordering::Relaxed) {
                send(&producer, "ids", &format!(r#"{{"id":{id}}}"#), None);
                id += 1;
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(5));
            }
            // One more, sent after the last swap was applied.
            send(&producer, "ids", &format!(r#"{{"id":{id}}}"#), None);
            producer.flush(Duration::from_secs(10)).unwrap();
            id + 1
        })
    };
    job.wait_records(50);
    let hash = |name: &str| rivulet::udf::cache::content_hash(&module(name));
    let (mut took, mut preparing) = (Vec::new(), Vec::new());
    for round in 0..10 {
        let variant = ["swap_parse_v2", "swap_parse_v1"][round % 2];
        let staged = modules.join(".parse.wasm.partial");
        std::fs::copy(wasm(variant), &staged).unwrap();
        let renamed = Instant::now();
        std::fs::rename(&staged, &watched).unwrap();
        let expected = Some(hash(variant));
        while job.status.stage("parse").unwrap().hash != expected {
            assert!(
                renamed.elapsed() < Duration::from_secs(30),
                "round {round}: {variant} was not swapped in"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        took.push(renamed.elapsed());
        preparing.push(job.status.stage("parse").unwrap().load_ms);
    }
    feeding.store(false, Ordering::Relaxed);
    let sent = feeder.join().unwrap();
    let rows = lines(&out, sent as usize);
    let parse = job.status.stage("parse").unwrap();
    job.stop();
    assert_eq!((parse.swaps, parse.rejected), (10, 0));
    assert_eq!(
        parse.origin.as_deref(),
        Some(watched.display().to_string().as_str())
    );
    assert_eq!(
        rows.last().unwrap()["parsed_by"],
        "v1",
        "the last file renamed in runs the record sent after its swap"
    );
    assert_eq!(rows.len(), sent as usize, "no record lost across the swaps");
    took.sort();
    preparing.sort_by(f64::total_cmp);
    println!(
        "rename to swap applied, 10 replacements: median {:.0} ms (min {:.0}, max {:.0}), of which the swap's preparation (compile, trial on fresh input) median {:.0} ms",
        took[5].as_secs_f64() * 1e3,
        took[0].as_secs_f64() * 1e3,
        took[9].as_secs_f64() * 1e3,
        preparing[5],
    );
}

/// A candidate that blocks in a WASI call (a one-hour sleep) during its trial on the
/// stage's sample is rejected at the stage's time limit, and the worker then still
/// prepares the next swap: it never waits on a candidate unbounded.
#[test]
fn a_candidate_blocking_in_its_trial_is_rejected_at_the_limit_and_later_swaps_answer() {
    use rivulet::swap::{SwapStage, Swappable};
    use rivulet::udf::{Kind, Limits};
    let limit = Duration::from_millis(200);
    let status = Arc::new(JobStatus::new("blocking-trial"));
    let mut sample = rivulet_rows::RawBatch::new();
    for id in 0..3 {
        sample.push(None, format!(r#"{{"id":{id}}}"#).as_bytes(), T0, 0, id, &[]);
    }
    status.sample_raw("parse", &sample);
    status.set_stage(rivulet::status::StageInfo::builtin("parse", Kind::Parse));
    let mut stages = Swappable::new();
    stages.insert(
        "parse".to_owned(),
        SwapStage {
            kind: Kind::Parse,
            limits: Limits {
                cpu_per_batch: limit,
                ..Limits::default()
            },
            reads: None,
        },
    );
    let runtime = Runtime::new(ModuleCache::disabled()).unwrap();
    let channels = rivulet::swap::spawn(runtime, status.clone(), stages, 1, None).unwrap();
    let request = |name: &str| {
        let (reply, answer) = channel();
        channels
            .requests
            .send(SwapRequest {
                stage: "parse".into(),
                bytes: module(name),
                origin: name.to_owned(),
                reply: Some(reply),
                fleet: None,
                shadow: None,
            })
            .unwrap();
        answer
    };

    let started = Instant::now();
    let answer = request("swap_parse_sleep");
    let rejection = answer
        .recv_timeout(Duration::from_secs(10))
        .expect("the worker answers")
        .expect_err("a blocking candidate is rejected");
    let took = started.elapsed();
    assert!(
        rejection.contains("the new module failed on the stage's sample input")
            && rejection.contains("time limit of 200 ms per batch exceeded"),
        "{rejection}"
    );
    assert!(
        took < Duration::from_secs(2),
        "rejected after {took:?}, limit {limit:?}"
    );
    assert_eq!(status.stage("parse").map(|s| s.rejected), Some(1));

    // The worker is free: the next candidate is tried and handed over for installation.
    let _answer = request("swap_parse_v2");
    let prepared = channels.prepared[0]
        .recv_timeout(Duration::from_secs(10))
        .expect("the next swap is prepared");
    assert_eq!(prepared.stage, "parse");
    assert!(matches!(
        prepared.candidate,
        rivulet::swap::Candidate::Parse(_)
    ));
}
