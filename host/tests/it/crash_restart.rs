//! At-least-once across a crash: the `rivulet` process is SIGKILLed mid-run and restarted;
//! every window result is on the sink afterwards, exact (duplicates allowed, partial
//! results not).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::kafka::{Read, TestBroker, produce, read_until};
use common::{JobProcess, wasm};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;
const STATUSES: [&str; 5] = ["NEW", "PENDING", "SHIPPED", "DELIVERED", "CANCELLED"];

fn order(p: i32, i: i64, ts: i64, status: &str) -> Vec<u8> {
    format!(
        r#"{{"customer":"c-{p}-{i}","status":"{status}","region":"r","amount":1,"ts":"{}","tsMillis":{ts}}}"#,
        rivulet_sdk::time::iso8601(ts)
    )
    .into_bytes()
}

fn spawn(spec: &std::path::Path, brokers: &str) -> JobProcess {
    spawn_committing(spec, brokers, "100ms")
}

fn spawn_committing(spec: &std::path::Path, brokers: &str, every: &str) -> JobProcess {
    Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args([
            "run",
            spec.to_str().unwrap(),
            "--brokers",
            brokers,
            "--commit-every",
            every,
            // Killed jobs would leave a control token file behind in $HOME.
            "--control",
            "off",
        ])
        .env(
            "RUST_LOG",
            std::env::var("TEST_RUST_LOG").unwrap_or("warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map(JobProcess)
        .expect("start rivulet")
}

fn counts(records: &[Read]) -> BTreeMap<(String, String), Vec<u64>> {
    let mut out: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for r in records {
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        out.entry((
            v["window_start"].as_str().unwrap().to_owned(),
            v["status"].as_str().unwrap().to_owned(),
        ))
        .or_default()
        .push(v["order_count"].as_u64().unwrap());
    }
    out
}

#[test]
fn sigkill_mid_run_and_restart_loses_no_window_result() {
    let broker = TestBroker::embedded();
    let address = broker.address();
    broker.topic("orders", 3);
    broker.topic("counts", 1);
    broker.topic("dlq", 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "crash"
[source]
kind = "kafka"
topic = "orders"
assign = "all"
group = "crash-test"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[window]
key = "status"
size = "10s"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "1s"
idle_timeout = "60s"
[aggregate]
module = "{}"
[format]
module = "{}"
[sink]
kind = "kafka"
topic = "counts"
[dead_letters]
topic = "dlq"
[batch]
max_records = 32
max_wait = "20ms"
"#,
            wasm("udf_parse_orders").display(),
            wasm("udf_count_by_status").display(),
            wasm("udf_format_aggregate").display()
        ),
    )
    .unwrap();

    // 3 partitions × 3000 orders, 100 ms apart: 300 s of event time, 30 windows.
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut first = Vec::new();
    let mut second = Vec::new();
    for p in 0..3 {
        for i in 0..3000i64 {
            let ts = T0 + i * 100;
            let status = STATUSES[((i * 7 + p as i64) % 5) as usize];
            let record = (p, format!("k{p}"), order(p, i, ts, status));
            if i < 1500 {
                first.push(record)
            } else {
                second.push(record)
            }
            let start = ts - ts.rem_euclid(10_000);
            *expected
                .entry((rivulet_sdk::time::iso8601(start), status.to_owned()))
                .or_default() += 1;
        }
        // An order an hour later closes every window above (its own never closes).
        second.push((p, format!("k{p}"), order(p, 9999, T0 + 3_600_000, "NEW")));
    }
    produce(&address, "orders", &first);

    let mut child = spawn(&spec, &address);
    // Kill as soon as the first results are out: mid-run.
    let early = read_until(&address, "counts", 1, Duration::from_secs(60), |r| {
        !r.is_empty()
    });
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    assert!(
        !early.is_empty(),
        "the job produced results before the kill"
    );
    let done_before = counts(&early).len();
    assert!(
        done_before < expected.len(),
        "killed mid-run ({done_before} of {} results out)",
        expected.len()
    );

    let committed = committed_offsets(&address, "crash-test", "orders", 3);
    assert!(
        committed.iter().any(|&o| o > 0),
        "offsets were committed before the kill: {committed:?}"
    );
    assert!(
        committed.iter().all(|&o| o < 1500),
        "nothing past unsafe records was committed: {committed:?}"
    );

    produce(&address, "orders", &second);
    let mut child = spawn(&spec, &address);
    let all = read_until(&address, "counts", 1, Duration::from_secs(120), |r| {
        let got = counts(r);
        expected
            .iter()
            .all(|(k, n)| got.get(k).is_some_and(|v| v.contains(n)))
    });
    child.kill().expect("stop");
    child.wait().unwrap();

    let got = counts(&all);
    for (key, n) in &expected {
        let seen = got
            .get(key)
            .unwrap_or_else(|| panic!("window result {key:?} lost"));
        assert!(seen.contains(n), "{key:?}: expected {n}, saw {seen:?}");
        assert!(
            seen.iter().all(|c| c == n),
            "{key:?}: a partial result was emitted: {seen:?}"
        );
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "no result for a window that should not close"
    );
}

fn committed_offsets(address: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => -1,
        })
        .collect()
}

/// A consumer that joins the job's group, takes some partitions for a while without
/// reading them, and leaves: the job's partitions are revoked and reassigned twice.
fn intrude(address: &str, group: &str, topic: &str, hold: Duration, strategy: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        // The group's members must agree on the protocol: the job's.
        .set("partition.assignment.strategy", strategy)
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let started = std::time::Instant::now();
    let mut taken = 0;
    while started.elapsed() < Duration::from_secs(60) {
        let _ = consumer.poll(Duration::from_millis(100));
        taken = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if taken > 0 {
            break;
        }
    }
    let held = std::time::Instant::now();
    while held.elapsed() < hold {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer.unsubscribe();
    for _ in 0..20 {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    taken
}

#[test]
fn partitions_revoked_and_reassigned_mid_run_lose_no_open_window_and_resend_no_late_order() {
    let broker = TestBroker::embedded();
    let address = broker.address();
    broker.topic("orders", 3);
    broker.topic("counts", 1);
    broker.topic("late", 1);
    broker.topic("dlq", 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "rebalance"
[source]
kind = "kafka"
topic = "orders"
group = "rebalance-test"
start = "earliest"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[window]
key = "status"
size = "10s"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "1s"
idle_timeout = "120s"
late_topic = "late"
[aggregate]
module = "{}"
[format]
module = "{}"
[sink]
kind = "kafka"
topic = "counts"
[dead_letters]
topic = "dlq"
"#,
            wasm("udf_parse_orders").display(),
            wasm("udf_count_by_status").display(),
            wasm("udf_format_aggregate").display()
        ),
    )
    .unwrap();

    // 3 partitions × 3000 orders, 100 ms apart, up to 0.9 s out of order; every 101st
    // order of the second half is an hour late.
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut late_expected = std::collections::BTreeSet::new();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for p in 0..3 {
        for i in 0..3000i64 {
            let status = STATUSES[((i * 7 + p as i64) % 5) as usize];
            let half = if i < 1500 { &mut first } else { &mut second };
            if i >= 1500 && i % 101 == 0 {
                half.push((p, format!("k{p}"), order(p, i, T0 - 3_600_000, status)));
                late_expected.insert(format!("c-{p}-{i}"));
                continue;
            }
            let ts = T0 + i * 100 - (i * 37 + p as i64 * 11) % 900;
            half.push((p, format!("k{p}"), order(p, i, ts, status)));
            let start = ts - ts.rem_euclid(10_000);
            *expected
                .entry((rivulet_sdk::time::iso8601(start), status.to_owned()))
                .or_default() += 1;
        }
        second.push((p, format!("k{p}"), order(p, 9999, T0 + 3_600_000, "NEW")));
    }
    produce(&address, "orders", &first);
    let mut child = spawn(&spec, &address);
    // The first half is read when windows up to 140 s have results.
    let last_closed = rivulet_sdk::time::iso8601(T0 - T0.rem_euclid(10_000) + 130_000);
    read_until(&address, "counts", 1, Duration::from_secs(90), |r| {
        counts(r).keys().any(|(w, _)| *w >= last_closed)
    });
    // A window exchanged in the process: eager rebalancing.
    let taken = intrude(
        &address,
        "rebalance-test",
        "orders",
        Duration::from_secs(3),
        "range,roundrobin",
    );
    assert!(
        taken > 0,
        "the intruder got partitions: a rebalance happened"
    );
    produce(&address, "orders", &second);
    let all = read_until(&address, "counts", 1, Duration::from_secs(120), |r| {
        let got = counts(r);
        expected
            .iter()
            .all(|(k, n)| got.get(k).is_some_and(|v| v.contains(n)))
    });
    let late = read_until(&address, "late", 1, Duration::from_secs(10), |r| {
        r.len() >= late_expected.len()
    });
    child.kill().expect("stop");
    child.wait().unwrap();

    let got = counts(&all);
    for (key, n) in &expected {
        let seen = got
            .get(key)
            .unwrap_or_else(|| panic!("window result {key:?} lost"));
        assert!(
            seen.iter().all(|c| c == n),
            "{key:?}: expected {n}, saw {seen:?} (a partial result)"
        );
    }
    let late_seen: std::collections::BTreeSet<String> = late
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.payload).unwrap();
            v["customer"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        late_seen, late_expected,
        "exactly the too-late orders on `late`"
    );
    assert_eq!(late.len(), late_expected.len(), "each late order once");
}

#[test]
fn a_rebalance_resends_nothing_processed_before_the_partitions_were_revoked() {
    let broker = TestBroker::embedded();
    let address = broker.address();
    broker.topic("orders", 3);
    broker.topic("parsed", 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "revoke"
parallelism = 1
[source]
kind = "kafka"
topic = "orders"
group = "revoke-test"
start = "earliest"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[sink]
kind = "kafka"
topic = "parsed"
"#,
            wasm("udf_parse_orders").display(),
        ),
    )
    .unwrap();
    let batch = |from: i64, to: i64| {
        let mut records = Vec::new();
        for p in 0..3 {
            for i in from..to {
                records.push((p, format!("k{p}"), order(p, i, T0 + i * 100, "NEW")));
            }
        }
        records
    };
    let (first, second) = (batch(0, 300), batch(300, 310));
    produce(&address, "orders", &first);
    // Commits every hour: within this test only a revocation commits. Without that, the
    // partitions come back with nothing committed and are read again from the start.
    let mut child = spawn_committing(&spec, &address, "1h");
    read_until(&address, "parsed", 1, Duration::from_secs(60), |r| {
        r.len() >= first.len()
    });
    // No window: the job rebalances cooperatively.
    let taken = intrude(
        &address,
        "revoke-test",
        "orders",
        Duration::from_secs(1),
        "cooperative-sticky",
    );
    assert!(
        taken > 0,
        "the intruder got partitions: a rebalance happened"
    );
    produce(&address, "orders", &second);
    let expected = first.len() + second.len();
    let parsed = read_until(&address, "parsed", 1, Duration::from_secs(60), |r| {
        r.len() >= expected
    });
    // Anything re-sent would come within a moment of the new records.
    std::thread::sleep(Duration::from_secs(2));
    let parsed = read_until(&address, "parsed", 1, Duration::from_secs(5), |r| {
        r.len() > parsed.len()
    });
    child.kill().expect("stop");
    child.wait().unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &parsed {
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        *seen
            .entry(v["customer"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "{} orders sent again after the rebalance, e.g. {:?}",
        repeated.len(),
        repeated.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(seen.len(), expected, "every order parsed once");
}

/// Two tasks commit their partitions' restart state at different moments: one task's last
/// commit can still call a window open after the job emitted it (the other task's commit
/// calls it closed). A restart must take the job's word: the window stays closed, and the
/// lagging partition's replayed records neither reopen it (a partial result) nor go late.
#[test]
fn a_restart_keeps_a_window_closed_when_any_partition_committed_it_closed() {
    let broker = TestBroker::embedded();
    let address = broker.address();
    broker.topic("orders", 2);
    broker.topic("counts", 1);
    broker.topic("late", 1);
    broker.topic("dlq", 1);
    broker.topic("lagging-state", 1);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "lagging"
parallelism = 2
[source]
kind = "kafka"
topic = "orders"
assign = "all"
group = "lagging"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[window]
key = "status"
size = "10s"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "1s"
idle_timeout = "60s"
late_topic = "late"
[aggregate]
module = "{}"
[format]
module = "{}"
[sink]
kind = "kafka"
topic = "counts"
[dead_letters]
topic = "dlq"
"#,
            wasm("udf_parse_orders").display(),
            wasm("udf_count_by_status").display(),
            wasm("udf_format_aggregate").display()
        ),
    )
    .unwrap();
    // Per partition: offsets 0..10 in window W0 = [T0, T0+10s), 10..20 in W1, then one
    // order an hour later that closes W1.
    let mut records = Vec::new();
    let mut w1: BTreeMap<String, u64> = BTreeMap::new();
    for p in 0..2 {
        for i in 0..20i64 {
            let ts = T0 + i * 1_000;
            let status = STATUSES[(i % 5) as usize];
            if i >= 10 {
                *w1.entry(status.to_owned()).or_default() += 1;
            }
            records.push((p, format!("k{p}"), order(p, i, ts, status)));
        }
        records.push((p, format!("k{p}"), order(p, 99, T0 + 3_600_000, "NEW")));
    }
    produce(&address, "orders", &records);
    // What the killed run had committed. Partition 0 (task 0, committed after W0 was
    // emitted): W0 closed, its records no longer needed. Partition 1 (task 1, committed
    // before): W0 still open and needed from offset 0. Both had read offsets 0..20.
    let state = |committed: i64, combined: i64| {
        format!(
            r#"{{"v":1,"committed":{committed},"read":20,"wm":{combined},"combined":{combined}}}"#
        )
        .into_bytes()
    };
    produce(
        &address,
        "lagging-state",
        &[
            (0, "orders/0".to_owned(), state(10, T0 + 10_000)),
            (0, "orders/1".to_owned(), state(0, T0 + 5_000)),
        ],
    );

    let mut child = spawn(&spec, &address);
    let w1_start = rivulet_sdk::time::iso8601(T0 + 10_000);
    let all = read_until(&address, "counts", 1, Duration::from_secs(60), |r| {
        let got = counts(r);
        w1.iter().all(|(status, n)| {
            got.get(&(w1_start.clone(), status.clone()))
                .is_some_and(|v| v.contains(n))
        })
    });
    child.kill().expect("stop");
    child.wait().unwrap();

    let got = counts(&all);
    let w0_start = rivulet_sdk::time::iso8601(T0);
    let reopened: Vec<_> = got.keys().filter(|(start, _)| *start == w0_start).collect();
    assert!(
        reopened.is_empty(),
        "W0 was emitted before the restart; it came out again, partial: {:?}",
        got.iter()
            .filter(|((start, _), _)| *start == w0_start)
            .collect::<Vec<_>>()
    );
    for (status, n) in &w1 {
        let seen = &got[&(w1_start.clone(), status.clone())];
        assert!(
            seen.iter().all(|c| c == n),
            "W1 {status}: expected {n}, saw {seen:?}"
        );
    }
    let late = read_until(&address, "late", 1, Duration::from_secs(2), |_| false);
    assert!(
        late.is_empty(),
        "records counted before the restart were sent late: {} of them",
        late.len()
    );
}

/// The broker refuses a result record for good (a non-retriable produce error): the job
/// fails, restarts on its own from its committed state, and every window result ends up on
/// the sink, exact.
#[test]
fn a_record_the_broker_refuses_restarts_the_job_and_loses_no_result() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    let address = cluster.bootstrap_servers();
    cluster.create_topic("orders", 1, 1).unwrap();
    cluster.create_topic("counts", 1, 1).unwrap();
    cluster.create_topic("dlq", 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "refused"
parallelism = 1
[source]
kind = "kafka"
topic = "orders"
assign = "all"
group = "refused"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[window]
key = "status"
size = "10s"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "1s"
idle_timeout = "60s"
[aggregate]
module = "{}"
[format]
module = "{}"
[sink]
kind = "kafka"
topic = "counts"
[dead_letters]
topic = "dlq"
"#,
            wasm("udf_parse_orders").display(),
            wasm("udf_count_by_status").display(),
            wasm("udf_format_aggregate").display()
        ),
    )
    .unwrap();
    let mut records = Vec::new();
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for i in 0..300i64 {
        let ts = T0 + i * 100;
        let status = STATUSES[(i % 5) as usize];
        records.push((0, "k".to_owned(), order(0, i, ts, status)));
        let start = ts - ts.rem_euclid(10_000);
        *expected
            .entry((rivulet_sdk::time::iso8601(start), status.to_owned()))
            .or_default() += 1;
    }
    records.push((0, "k".to_owned(), order(0, 999, T0 + 3_600_000, "NEW")));
    produce(&address, "orders", &records);
    // From now on, the next produce requests are refused for good: the job's first
    // results (and its state writes) fail.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 3],
    );
    let log = dir.path().join("job.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", spec.to_str().unwrap(), "--brokers", &address])
        .args(["--control", "off", "--commit-every", "100ms"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map(JobProcess)
        .unwrap();
    let all = read_until(&address, "counts", 1, Duration::from_secs(90), |r| {
        let got = counts(r);
        expected
            .iter()
            .all(|(k, n)| got.get(k).is_some_and(|v| v.contains(n)))
    });
    let running = child.0.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(running, "the job kept running: {log}");
    assert!(
        log.contains("restarting from its committed state"),
        "the refusal was hit and the job restarted: {log}"
    );
    let got = counts(&all);
    for (key, n) in &expected {
        let seen = got
            .get(key)
            .unwrap_or_else(|| panic!("{key:?} lost: {log}"));
        assert!(
            seen.iter().all(|c| c == n),
            "{key:?}: expected {n}, saw {seen:?}"
        );
    }
}

/// A job whose sink the broker takes nothing from: it has sent 20 copies, none is
/// acknowledged. Returns the job (killed on drop), its stderr lines, and the cluster.
fn stuck_job() -> (
    JobProcess,
    std::sync::mpsc::Receiver<String>,
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use std::time::Instant;
    let cluster = MockCluster::new(1).unwrap();
    let address = cluster.bootstrap_servers();
    cluster.create_topic("ids", 1, 1).unwrap();
    cluster.create_topic("copies", 1, 1).unwrap();
    let records: Vec<_> = (0..20)
        .map(|i| (0, "k".to_owned(), format!(r#"{{"id":{i}}}"#).into_bytes()))
        .collect();
    produce(&address, "ids", &records);
    // From now on the broker answers produce requests with a retriable error: what the
    // job sends stays unacknowledged.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5000],
    );
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        r#"
name = "patience"
parallelism = 1
[source]
kind = "kafka"
topic = "ids"
assign = "all"
start = "earliest"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[sink]
kind = "kafka"
topic = "copies"
"#,
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", spec.to_str().unwrap(), "--brokers", &address])
        .args(["--control", "127.0.0.1:0", "--control-token", "t"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (child, said, control) = common::with_control(child);
    // Wait until the job has sent copies that the broker does not acknowledge.
    let started = Instant::now();
    loop {
        let answer = rivulet::http::client::request(&control, "GET", "/status", &[], None).unwrap();
        if answer.0 == 200 {
            let status: Value = serde_json::from_str(&answer.1).unwrap();
            let counters = &status["counters"];
            if counters["sink_sent"].as_u64() == Some(20) {
                assert_eq!(counters["sink_acked"].as_u64(), Some(0), "{status}");
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log: Vec<String> = said.iter().collect();
            panic!("{answer:?}\n{}", log.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, said, cluster)
}

fn interrupt(job: &JobProcess) {
    Command::new("kill")
        .args(["-INT", &job.0.id().to_string()])
        .status()
        .unwrap();
}

/// Waits up to `limit` for the job to exit.
fn exit_within(job: &mut JobProcess, limit: Duration) -> std::process::ExitStatus {
    let since = std::time::Instant::now();
    loop {
        if let Some(status) = job.0.try_wait().unwrap() {
            return status;
        }
        assert!(since.elapsed() < limit, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ctrl-C while the broker takes nothing: the job stops within seconds, exit 0, saying
/// what it did not commit (it is read again on the next start).
#[test]
fn ctrl_c_stops_within_seconds_when_the_broker_takes_nothing() {
    let (mut job, said, _cluster) = stuck_job();
    interrupt(&job);
    let status = exit_within(&mut job, Duration::from_secs(6));
    let log: Vec<String> = said.iter().collect();
    assert!(status.success(), "{status:?}: {}", log.join("\n"));
    assert!(
        log.iter()
            .any(|l| l.contains("stopping without committing the rest")),
        "{}",
        log.join("\n")
    );
}

/// Kafka goes down under a running job: librdkafka reports it from every client every few
/// hundred milliseconds, but the log gets one line per kind of message (not hundreds), and
/// Ctrl-C still stops the job within 2 s (exit 0; nothing was left undelivered).
#[test]
fn a_broker_outage_logs_a_few_lines_and_ctrl_c_still_stops_within_2_s() {
    use rdkafka::mocking::MockCluster;
    use std::time::Instant;
    let cluster = MockCluster::new(1).unwrap();
    let address = cluster.bootstrap_servers();
    cluster.create_topic("ids", 1, 1).unwrap();
    let records: Vec<_> = (0..20)
        .map(|i| (0, "k".to_owned(), format!(r#"{{"id":{i}}}"#).into_bytes()))
        .collect();
    produce(&address, "ids", &records);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    let out = dir.path().join("out.jsonl");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "outage"
parallelism = 1
[source]
kind = "kafka"
topic = "ids"
assign = "all"
start = "earliest"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[sink]
kind = "file"
path = "{}"
"#,
            out.display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", spec.to_str().unwrap(), "--brokers", &address])
        .args(["--control", "127.0.0.1:0", "--control-token", "t"])
        .args(["--commit-every", "200ms"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut job, said, _control) = common::with_control(child);
    let started = Instant::now();
    while std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .count()
        < 20
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job read nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let a commit of all 20 go out, then take the broker down for 8 s.
    std::thread::sleep(Duration::from_millis(600));
    let before: Vec<String> = said.try_iter().collect();
    cluster.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    interrupt(&job);
    let interrupted = Instant::now();
    let status = exit_within(&mut job, Duration::from_secs(10));
    let took = interrupted.elapsed();
    let during: Vec<String> = said.iter().collect();
    assert!(status.success(), "{status:?}: {}", during.join("\n"));
    let outage: Vec<&String> = during
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    eprintln!(
        "outage: {} warnings and errors in 8 s, {} lines in all; stopped {took:?} after Ctrl-C",
        outage.len(),
        during.len()
    );
    assert!(
        took <= Duration::from_secs(2),
        "stopped {took:?} after Ctrl-C:\n{}",
        during.join("\n")
    );
    // Each kind of message once (consumer, bootstrap, group coordinator; not one per retry).
    assert!(
        outage.len() <= 12,
        "{} warnings and errors during an 8 s outage (before it: {} lines):\n{}",
        outage.len(),
        before.len(),
        during.join("\n")
    );
}

/// While the first Ctrl-C waits for the sink, a second one exits at once, with status 130.
#[test]
fn a_second_ctrl_c_exits_at_once_while_the_first_waits_for_the_broker() {
    let (mut job, _said, _cluster) = stuck_job();
    interrupt(&job);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        job.0.try_wait().unwrap().is_none(),
        "the first Ctrl-C waits for the sink"
    );
    interrupt(&job);
    let status = exit_within(&mut job, Duration::from_secs(1));
    assert_eq!(status.code(), Some(130));
}

/// A module swapped in through the control API keeps running after the job restarts on
/// its own (here: the broker refuses a result): the restart loads the swapped module, not
/// the spec's file, so records read again after the restart are not parsed by the old one.
#[test]
fn a_restart_keeps_the_module_swapped_in_before_it() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    let address = cluster.bootstrap_servers();
    for topic in ["in", "out", "dlq"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "swap-restart"
parallelism = 1
[source]
kind = "kafka"
topic = "in"
assign = "all"
group = "swap-restart"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[window]
key = "parsed_by"
size = "3s"
time = "processing"
[aggregate]
builtin = [{{ name = "n", fn = "count" }}]
[sink]
kind = "kafka"
topic = "out"
[dead_letters]
topic = "dlq"
"#,
            wasm("swap_parse_v1").display()
        ),
    )
    .unwrap();
    let batch = |from: i64| -> Vec<(i32, String, Vec<u8>)> {
        (from..from + 20)
            .map(|id| (0, "k".to_owned(), format!(r#"{{"id":{id}}}"#).into_bytes()))
            .collect()
    };
    // Sums of `n` per variant that parsed the records.
    let per_variant = |records: &[Read]| -> BTreeMap<String, u64> {
        let mut sums = BTreeMap::new();
        for r in records {
            let v: Value = serde_json::from_slice(&r.payload).unwrap();
            *sums
                .entry(v["parsed_by"].as_str().unwrap().to_owned())
                .or_default() += v["n"].as_u64().unwrap();
        }
        sums
    };
    produce(&address, "in", &batch(0));
    let home = dir.path().join("home");
    let child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", spec.to_str().unwrap(), "--brokers", &address])
        // Rare commits: the refused produce requests meet the window result, not a
        // write of the job's restart state.
        .args(["--control", "127.0.0.1:0", "--commit-every", "30s"])
        .env("HOME", &home)
        .env_remove("RIVULET_CONTROL_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut job, said, control) = common::with_control(child);
    // The first 20 records are counted by v1.
    read_until(&address, "out", 1, Duration::from_secs(60), |r| {
        per_variant(r).get("v1") == Some(&20)
    });
    let swapped = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["swap", "--control", &control, "--stage", "parse"])
        .arg(wasm("swap_parse_v2"))
        .env("HOME", &home)
        .env_remove("RIVULET_CONTROL_TOKEN")
        .output()
        .unwrap();
    assert!(
        swapped.status.success(),
        "{}",
        String::from_utf8_lossy(&swapped.stderr)
    );
    // The next 20 arrive early in a 3 s window, and the broker then refuses the produce
    // requests that follow: that window's result fails and the job restarts, reading them
    // again.
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 3000
        > 300
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    produce(&address, "in", &batch(100));
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 3],
    );
    let all = read_until(&address, "out", 1, Duration::from_secs(60), |r| {
        per_variant(r).get("v2").is_some_and(|&n| n >= 20)
    });
    job.kill().unwrap();
    job.wait().unwrap();
    let log: Vec<String> = said.iter().collect();
    let log = log.join("\n");
    assert!(
        log.contains("restarting from its committed state"),
        "the refusal was hit and the job restarted: {log}"
    );
    assert!(
        log.contains("loaded the module swapped in before the restart"),
        "{log}"
    );
    let sums = per_variant(&all);
    assert_eq!(
        sums.get("v1"),
        Some(&20),
        "only the records before the swap are counted by v1: {sums:?}\n{log}"
    );
    assert!(sums.get("v2").is_some_and(|&n| n >= 20), "{sums:?}");
}
