//! A keyed window job run by several processes over Kafka (`window.exchange = "kafka"`):
//! each process pre-aggregates its share of the source partitions, partials meet in the
//! job's `<job>-partials` topic, and each (window, key) is finished once.
//!
//! The input has every status in every partition, so no process sees a whole window alone;
//! the results are checked against counts computed here from what was produced.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::kafka::{Read, TestBroker, produce, read_until, unique};
use common::{JobProcess, wasm};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const T0: i64 = 1_700_000_000_000;
const STATUSES: [&str; 5] = ["NEW", "PENDING", "SHIPPED", "DELIVERED", "CANCELLED"];
/// Windows of 10 s; orders 100 ms apart per partition: 100 orders per window and partition.
const WINDOW: i64 = 10_000;

fn spec(name: &str, topic: &str, out: &str, dlq: &str) -> String {
    format!(
        r#"
name = "{name}"
parallelism = 1
[source]
kind = "kafka"
topic = "{topic}"
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
idle_timeout = "120s"
exchange = "kafka"
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

/// A record to produce: partition, key, payload.
type Record = (i32, String, Vec<u8>);

/// `per_partition` orders on each of `partitions`, 100 ms apart, every status in every
/// partition, then one order an hour later per partition that closes every window before it.
/// Returns the records and the expected count per (window start, status).
fn orders(partitions: i32, per_partition: i64) -> (Vec<Record>, BTreeMap<(String, String), u64>) {
    let mut records = Vec::new();
    let mut expected = BTreeMap::new();
    for p in 0..partitions {
        for i in 0..per_partition {
            let ts = T0 + i * 100;
            let status = STATUSES[((i + i64::from(p) * 3) % 5) as usize];
            let payload = format!(
                r#"{{"customer":"c-{p}-{i}","status":"{status}","region":"eu-west","amount":1.50,"ts":"{}","tsMillis":{ts}}}"#,
                rivulet_sdk::time::iso8601(ts)
            );
            records.push((p, format!("c-{p}-{i}"), payload.into_bytes()));
            let window = rivulet_sdk::time::iso8601(ts - ts.rem_euclid(WINDOW));
            *expected.entry((window, status.to_owned())).or_insert(0) += 1;
        }
        let closing = T0 + 3_600_000;
        let payload = format!(
            r#"{{"customer":"closing-{p}","status":"NEW","region":"eu-west","amount":1.00,"ts":"{}","tsMillis":{closing}}}"#,
            rivulet_sdk::time::iso8601(closing)
        );
        records.push((p, format!("closing-{p}"), payload.into_bytes()));
    }
    (records, expected)
}

/// A `rivulet run` of `spec`, its stderr lines forwarded.
fn start(spec_path: &std::path::Path, brokers: &str) -> (JobProcess, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run"])
        .arg(spec_path)
        .args([
            "--brokers",
            brokers,
            "--control",
            "off",
            "--commit-every",
            "200ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rivulet run");
    let stderr = child.stderr.take().expect("stderr");
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("[job] {line}");
            let _ = send.send(line);
        }
    });
    (JobProcess(child), lines)
}

/// Waits until every process has been assigned partitions and no assignment has changed
/// for `quiet`.
fn settled(processes: &[&Receiver<String>], quiet: Duration, timeout: Duration) {
    let started = Instant::now();
    let mut assigned = vec![0; processes.len()];
    let mut last_change = Instant::now();
    while started.elapsed() < timeout {
        for (i, lines) in processes.iter().enumerate() {
            while let Ok(line) = lines.try_recv() {
                if line.contains("partitions assigned by the consumer group")
                    || line.contains("partitions revoked")
                {
                    assigned[i] += 1;
                    last_change = Instant::now();
                }
            }
        }
        if assigned.iter().all(|&n| n >= 1) && last_change.elapsed() >= quiet {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the processes did not settle on an assignment: {assigned:?}");
}

/// Results read back: (window start, status) → counts, in the order they came.
fn results(records: &[Read]) -> BTreeMap<(String, String), Vec<u64>> {
    let mut out: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for r in records {
        let v: Value = serde_json::from_slice(&r.payload).expect("result is JSON");
        let key = (
            v["window_start"].as_str().unwrap().to_owned(),
            v["status"].as_str().unwrap().to_owned(),
        );
        out.entry(key)
            .or_default()
            .push(v["order_count"].as_u64().unwrap());
    }
    out
}

/// A broker, the job's topics (source with `partitions`, results and dead letters with one)
/// and its spec written to a file.
struct Cluster {
    broker: TestBroker,
    address: String,
    topic: String,
    out: String,
    dlq: String,
    name: String,
    dir: tempfile::TempDir,
    spec_path: std::path::PathBuf,
}

impl Cluster {
    fn new(job: &str, partitions: i32) -> Self {
        let broker = TestBroker::from_env();
        let address = broker.address();
        let (topic, out, dlq, name) = (
            unique("orders"),
            unique("counts"),
            unique("dlq"),
            unique(job),
        );
        broker.topic(&topic, partitions);
        broker.topic(&out, 1);
        broker.topic(&dlq, 1);
        let dir = tempfile::tempdir().unwrap();
        let spec_path = dir.path().join("job.toml");
        std::fs::write(&spec_path, spec(&name, &topic, &out, &dlq)).unwrap();
        Cluster {
            broker,
            address,
            topic,
            out,
            dlq,
            name,
            dir,
            spec_path,
        }
    }
}

#[test]
fn processes_sharing_a_job_over_kafka_emit_each_window_and_status_once_with_exact_counts() {
    let job = Cluster::new("cluster-job", 3);
    let Cluster {
        broker: _broker,
        address,
        out,
        dlq,
        name,
        topic,
        spec_path,
        dir: _dir,
    } = job;

    let (mut a, a_lines) = start(&spec_path, &address);
    let (mut b, b_lines) = start(&spec_path, &address);
    settled(
        &[&a_lines, &b_lines],
        Duration::from_secs(4),
        Duration::from_secs(90),
    );

    let (records, expected) = orders(3, 1_000);
    let records_in = records.len();
    produce(&address, &topic, &records);
    let got = read_until(&address, &out, 1, Duration::from_secs(120), |read| {
        results(read).len() >= expected.len()
    });
    for job in [&mut a, &mut b] {
        assert!(
            job.try_wait().unwrap().is_none(),
            "a process stopped by itself"
        );
    }
    let got = results(&got);
    let want: BTreeMap<(String, String), Vec<u64>> = expected
        .iter()
        .map(|(k, &n)| (k.clone(), vec![n]))
        .collect();
    assert_eq!(
        got, want,
        "each (window, status) once, with every partition's orders"
    );
    let dead = read_until(&address, &dlq, 1, Duration::from_secs(2), |_| false);
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    // The figure for the closing note: what the exchange costs on the wire.
    let partials = format!("{name}-partials");
    let count = partition_count(&address, &partials);
    let written = read_until(&address, &partials, count, Duration::from_secs(3), |_| {
        false
    });
    let bytes: usize = written.iter().map(|r| r.payload.len()).sum();
    eprintln!(
        "partials topic: {} records, {bytes} bytes over {count} partitions: {:.2} bytes per input record",
        written.len(),
        bytes as f64 / records_in as f64
    );
}

/// `per_status` orders of each status, 100 ms apart, each status always in the same one of
/// 3 partitions (status i in partition i % 3: the input is partitioned by the window key),
/// then one order an hour later per partition that closes every window before it.
/// Returns the records and the expected count per (window start, status).
fn orders_keyed_by_status(per_status: i64) -> (Vec<Record>, BTreeMap<(String, String), u64>) {
    let mut records = Vec::new();
    let mut expected = BTreeMap::new();
    let partition_of = |s: usize| (s % 3) as i32;
    for i in 0..per_status * 5 {
        let s = (i % 5) as usize;
        let (status, ts) = (STATUSES[s], T0 + i * 100);
        let payload = format!(
            r#"{{"customer":"c-{i}","status":"{status}","region":"eu-west","amount":1.50,"ts":"{}","tsMillis":{ts}}}"#,
            rivulet_sdk::time::iso8601(ts)
        );
        records.push((partition_of(s), status.to_owned(), payload.into_bytes()));
        let window = rivulet_sdk::time::iso8601(ts - ts.rem_euclid(WINDOW));
        *expected.entry((window, status.to_owned())).or_insert(0) += 1;
    }
    let closing = T0 + 3_600_000;
    for (s, status) in STATUSES.iter().enumerate().take(3) {
        let payload = format!(
            r#"{{"customer":"closing-{s}","status":"{status}","region":"eu-west","amount":1.00,"ts":"{}","tsMillis":{closing}}}"#,
            rivulet_sdk::time::iso8601(closing)
        );
        records.push((partition_of(s), (*status).to_owned(), payload.into_bytes()));
    }
    (records, expected)
}

/// The topics the broker has.
fn topics(address: &str) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", address)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect()
}

#[test]
fn processes_over_input_partitioned_by_the_key_emit_each_window_once_with_no_partials_topic() {
    let job = Cluster::new("cluster-partitioned", 3);
    let text = std::fs::read_to_string(&job.spec_path).unwrap();
    std::fs::write(
        &job.spec_path,
        text.replace("exchange = \"kafka\"", "exchange = \"partitioned\""),
    )
    .unwrap();
    let (mut a, a_lines) = start(&job.spec_path, &job.address);
    let (mut b, b_lines) = start(&job.spec_path, &job.address);
    settled(
        &[&a_lines, &b_lines],
        Duration::from_secs(4),
        Duration::from_secs(90),
    );
    let (records, expected) = orders_keyed_by_status(400);
    produce(&job.address, &job.topic, &records);
    read_until(
        &job.address,
        &job.out,
        1,
        Duration::from_secs(120),
        |read| results(read).len() >= expected.len(),
    );
    // Anything a process would emit after (a second, partial result) comes within this.
    std::thread::sleep(Duration::from_secs(2));
    let got = results(&read_until(
        &job.address,
        &job.out,
        1,
        Duration::from_secs(2),
        |_| false,
    ));
    for process in [&mut a, &mut b] {
        assert!(
            process.try_wait().unwrap().is_none(),
            "a process stopped by itself"
        );
    }
    let want: BTreeMap<(String, String), Vec<u64>> = expected
        .iter()
        .map(|(k, &n)| (k.clone(), vec![n]))
        .collect();
    assert_eq!(got, want, "each (window, status) once, exact");
    let partials = format!("{}-partials", job.name);
    assert!(
        !topics(&job.address).contains(&partials),
        "no partials topic: {partials}"
    );
    let dead = read_until(&job.address, &job.dlq, 1, Duration::from_secs(2), |_| false);
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
}

#[test]
fn a_partitioned_job_over_input_not_partitioned_by_its_key_stops_naming_the_key() {
    let job = Cluster::new("cluster-not-partitioned", 3);
    let text = std::fs::read_to_string(&job.spec_path).unwrap();
    std::fs::write(
        &job.spec_path,
        text.replace("exchange = \"kafka\"", "exchange = \"partitioned\""),
    )
    .unwrap();
    let (mut process, lines) = start(&job.spec_path, &job.address);
    // Every status in every partition.
    let (records, _) = orders(3, 50);
    produce(&job.address, &job.topic, &records);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = process.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the job kept running over input that is not partitioned by its key"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "it exits with an error");
    let stderr: Vec<String> = lines.try_iter().collect();
    assert!(
        stderr
            .iter()
            .any(|line| line.contains("window key `status` = \"")
                && line.contains("came from partitions")
                && line.contains("use `window.exchange = \"kafka\"`")),
        "{stderr:#?}"
    );
    let got = read_until(&job.address, &job.out, 1, Duration::from_secs(2), |_| false);
    assert!(got.is_empty(), "no result was emitted: {got:?}");
}

fn partition_count(address: &str, topic: &str) -> i32 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", address)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata.topics()[0].partitions().len() as i32
}

/// Every expected (window, status) present, and every result of it whole: a repeat is
/// allowed after a crash (at-least-once), a partial count never.
fn assert_whole(
    got: &BTreeMap<(String, String), Vec<u64>>,
    expected: &BTreeMap<(String, String), u64>,
) {
    for (key, &want) in expected {
        let counts = got
            .get(key)
            .unwrap_or_else(|| panic!("no result for {key:?}"));
        assert!(
            counts.iter().all(|&n| n == want),
            "{key:?}: results {counts:?}, expected only whole counts of {want}"
        );
    }
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        extra.is_empty(),
        "results for windows that should not have closed: {extra:?}"
    );
}

#[test]
fn a_process_killed_mid_run_loses_no_window_and_emits_no_partial_count() {
    let job = Cluster::new("cluster-kill", 6);
    let Cluster {
        broker: _broker,
        address,
        out,
        name: _name,
        topic,
        spec_path,
        dir: _dir,
        ..
    } = job;

    let (mut a, a_lines) = start(&spec_path, &address);
    let (b, b_lines) = start(&spec_path, &address);
    let (mut c, c_lines) = start(&spec_path, &address);
    settled(
        &[&a_lines, &b_lines, &c_lines],
        Duration::from_secs(4),
        Duration::from_secs(120),
    );

    // The first half of every partition, then a kill -9 once results flow.
    let (records, expected) = orders(6, 1_000);
    let (closing, orders): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|(_, key, _)| key.starts_with("closing"));
    let (first, second): (Vec<_>, Vec<_>) = orders.into_iter().partition(|(_, key, _)| {
        key.rsplit('-').next().and_then(|i| i.parse::<i64>().ok()) < Some(500)
    });
    produce(&address, &topic, &first);
    read_until(&address, &out, 1, Duration::from_secs(60), |read| {
        read.len() >= 5
    });
    let mut b = b;
    b.0.kill().expect("kill -9");
    b.wait().expect("killed");
    let (mut d, _d_lines) = start(&spec_path, &address);
    produce(&address, &topic, &second);
    produce(&address, &topic, &closing);
    let got = read_until(&address, &out, 1, Duration::from_secs(180), |read| {
        let got = results(read);
        expected.keys().all(|k| got.contains_key(k))
    });
    for job in [&mut a, &mut c, &mut d] {
        assert!(
            job.try_wait().unwrap().is_none(),
            "a process stopped by itself"
        );
    }
    let got = results(&got);
    let repeats: usize = got.values().map(|v| v.len() - 1).sum();
    eprintln!(
        "{} (window, status) results, {repeats} whole repeats",
        got.len()
    );
    assert_whole(&got, &expected);
}

/// A `rivulet run` of `spec` with its control API on a free port: the process, its stderr
/// lines, and the control address.
fn start_controlled(
    spec_path: &std::path::Path,
    brokers: &str,
) -> (JobProcess, Receiver<String>, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run"])
        .arg(spec_path)
        .args([
            "--brokers",
            brokers,
            "--control",
            "127.0.0.1:0",
            "--commit-every",
            "200ms",
            "--ticker",
            "never",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rivulet run");
    let (job, said, control) = common::with_control(child);
    let (send, lines) = std::sync::mpsc::channel();
    let tag = control.clone();
    std::thread::spawn(move || {
        for line in said {
            eprintln!("[job {tag}] {line}");
            let _ = send.send(line);
        }
    });
    (job, lines, control)
}

/// `rivulet status --job <name> --json`: the fleet's processes as their heartbeats say.
fn fleet(address: &str, job: &str) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["status", "--job", job, "--brokers", address, "--json"])
        .output()
        .expect("rivulet status");
    assert!(
        out.status.success(),
        "status --job failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let members: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    members.into_iter().filter(|m| m["alive"] == true).collect()
}

/// Waits until `check` holds for the fleet's live processes.
fn fleet_until(
    address: &str,
    job: &str,
    timeout: Duration,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let members = fleet(address, job);
        if check(&members) {
            return members;
        }
        assert!(
            started.elapsed() < timeout,
            "the fleet did not get there in {timeout:?}: {members:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `rivulet swap` against one process: exit status, stdout and stderr.
fn swap(control: &str, stage: &str, module: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["swap", "--stage", stage, "--control", control])
        .arg(module)
        .output()
        .expect("rivulet swap");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Three controlled processes of `job`, settled on an assignment, with results flowing
/// from 200 orders on each of its `partitions`.
fn three_processes_with_results(
    job: &Cluster,
    partitions: i32,
) -> Vec<(JobProcess, Receiver<String>, String)> {
    let processes: Vec<_> = (0..3)
        .map(|_| start_controlled(&job.spec_path, &job.address))
        .collect();
    let lines: Vec<&Receiver<String>> = processes.iter().map(|(_, l, _)| l).collect();
    settled(&lines, Duration::from_secs(4), Duration::from_secs(120));
    let (records, _) = orders(partitions, 200);
    produce(&job.address, &job.topic, &records);
    read_until(&job.address, &job.out, 1, Duration::from_secs(60), |read| {
        !read.is_empty()
    });
    processes
}

fn module_of(member: &Value, stage: &str) -> String {
    member["modules"][stage].as_str().unwrap_or("-").to_owned()
}

#[test]
fn a_swap_asked_of_one_process_is_installed_by_every_process_of_the_fleet() {
    let job = Cluster::new("fleet-swap", 3);
    let (address, name) = (job.address.clone(), job.name.clone());
    let processes = three_processes_with_results(&job, 3);
    let old = rivulet::udf::cache::content_hash(&std::fs::read(wasm("udf_parse_orders")).unwrap());
    fleet_until(&address, &name, Duration::from_secs(20), |m| {
        m.len() == 3 && m.iter().all(|m| module_of(m, "parse-orders") == old)
    });

    // The same parse step with a custom section appended: another module (hash), same work.
    let mut bytes = std::fs::read(wasm("udf_parse_orders")).unwrap();
    bytes.extend_from_slice(&[0x00, 15, 12]);
    bytes.extend_from_slice(b"rivulet-testv2");
    let new = rivulet::udf::cache::content_hash(&bytes);
    let path = job.dir.path().join("parse_orders_v2.wasm");
    std::fs::write(&path, &bytes).unwrap();
    let (ok, stdout, stderr) = swap(&processes[1].2, "parse-orders", &path);
    assert!(ok, "the swap went through: {stdout}{stderr}");
    assert!(
        stdout.contains("installed on 3 of 3 processes of the fleet"),
        "every process installed it: {stdout}"
    );
    eprintln!("fleet swap: {stdout}");
    fleet_until(&address, &name, Duration::from_secs(10), |m| {
        m.len() == 3 && m.iter().all(|m| module_of(m, "parse-orders") == new)
    });

    // A process that joins later starts with the fleet's module, not its spec's file.
    let (_late, late_lines, late_control) = start_controlled(&job.spec_path, &address);
    let late = fleet_until(&address, &name, Duration::from_secs(30), |m| {
        m.iter()
            .any(|m| m["control"].as_str() == Some(late_control.as_str()))
    });
    let joined = late
        .iter()
        .find(|m| m["control"].as_str() == Some(late_control.as_str()))
        .unwrap();
    assert_eq!(module_of(joined, "parse-orders"), new, "{joined:#}");
    let said: Vec<String> = late_lines.try_iter().collect();
    assert!(
        said.iter()
            .any(|l| l.contains("starting with the module the running fleet has in this stage")),
        "the joining process says so: {said:#?}"
    );
}

/// The parse step with a custom section named `name` appended: another module (hash),
/// the same work. Written into `dir`; returns its path and hash.
fn parse_variant(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let mut bytes = std::fs::read(wasm("udf_parse_orders")).unwrap();
    bytes.extend_from_slice(&[0x00, name.len() as u8 + 1, name.len() as u8]);
    bytes.extend_from_slice(name.as_bytes());
    let path = dir.join(format!("parse_orders_{name}.wasm"));
    std::fs::write(&path, &bytes).unwrap();
    (path, rivulet::udf::cache::content_hash(&bytes))
}

#[test]
fn two_swaps_proposed_at_once_are_ordered_one_goes_through_and_the_other_is_told_to_ask_again() {
    let job = Cluster::new("fleet-race", 3);
    let (address, name) = (job.address.clone(), job.name.clone());
    let processes = three_processes_with_results(&job, 3);
    let controls = [processes[0].2.clone(), processes[1].2.clone()];
    // Two swaps asked of two processes at the same moment, until they overlap (one that
    // finished before the other began would show nothing).
    for round in 0..4 {
        let variants = [
            parse_variant(job.dir.path(), &format!("race-a-{round}")),
            parse_variant(job.dir.path(), &format!("race-b-{round}")),
        ];
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let outcomes: Vec<(bool, String, String)> = std::thread::scope(|scope| {
            let handles: Vec<_> = controls
                .iter()
                .zip(&variants)
                .map(|(control, (path, _))| {
                    let barrier = barrier.clone();
                    scope.spawn(move || {
                        barrier.wait();
                        swap(control, "parse-orders", path)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (ok, stdout, stderr) in &outcomes {
            assert!(
                *ok || stderr.contains("the proposal with the smaller id goes first"),
                "a swap refused for another reason than giving way (a timeout would be the deadlock): {stdout}{stderr}"
            );
        }
        let went: Vec<usize> = (0..2).filter(|&i| outcomes[i].0).collect();
        assert!(
            !went.is_empty(),
            "one of the two swaps goes through: {outcomes:#?}"
        );
        if went.len() == 1 {
            // Every process runs the one that went through.
            let hash = variants[went[0]].1.clone();
            fleet_until(&address, &name, Duration::from_secs(10), |m| {
                m.len() == 3 && m.iter().all(|m| module_of(m, "parse-orders") == hash)
            });
            return;
        }
        eprintln!("round {round}: the two swaps did not overlap; again");
    }
    panic!("the two swaps never overlapped in 4 rounds");
}

#[test]
fn a_module_one_process_refuses_is_installed_by_no_process_of_the_fleet() {
    // Two source partitions for three processes: one reads none, so it has no input to
    // try a module on; the two that read try it on theirs, where it traps, and refuse it.
    let job = Cluster::new("fleet-refuse", 2);
    let (address, name) = (job.address.clone(), job.name.clone());
    let _processes = three_processes_with_results(&job, 2);
    let old = rivulet::udf::cache::content_hash(&std::fs::read(wasm("udf_parse_orders")).unwrap());
    let members = fleet_until(&address, &name, Duration::from_secs(20), |m| {
        m.len() == 3
            && m.iter()
                .filter(|m| m["partitions"].as_object().is_some_and(|p| p.is_empty()))
                .count()
                == 1
    });
    let idle = members
        .iter()
        .find(|m| m["partitions"].as_object().is_some_and(|p| p.is_empty()))
        .unwrap();
    let control = idle["control"]
        .as_str()
        .expect("a control address")
        .to_owned();

    // While the swap is checked, every partition keeps getting records the hostile guest
    // panics on (the job's parse step dead-letters them as malformed): the fresh input the
    // reading processes try it on.
    let poisoning = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poisoner = {
        let (poisoning, address, topic) = (poisoning.clone(), address.clone(), job.topic.clone());
        std::thread::spawn(move || {
            use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
            let producer: BaseProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &address)
                .set("linger.ms", "0")
                .create()
                .expect("producer");
            while poisoning.load(std::sync::atomic::Ordering::Relaxed) {
                for p in 0..2 {
                    let record = BaseRecord::to(&topic)
                        .partition(p)
                        .key("poison")
                        .payload("panic");
                    let _ = producer.send(record);
                }
                producer.poll(Duration::from_millis(50));
            }
            let _ = producer.flush(Duration::from_secs(10));
        })
    };
    // Poison flowing steadily before the swap (a broker may take a while to hand it out).
    std::thread::sleep(Duration::from_secs(3));
    let (ok, stdout, stderr) = swap(&control, "parse-orders", &wasm("hostile_guest"));
    poisoning.store(false, std::sync::atomic::Ordering::Relaxed);
    poisoner.join().unwrap();
    assert!(!ok, "the fleet refused it: {stdout}");
    assert!(
        stderr.contains("the fleet refused it, no process installed it: process")
            && stderr.contains("failed on the stage's sample input"),
        "the refusal names the process and its reason: {stderr}"
    );
    // No process installed it, the asking one included.
    std::thread::sleep(Duration::from_secs(2));
    let members = fleet(&address, &name);
    assert_eq!(members.len(), 3);
    for member in &members {
        assert_eq!(module_of(member, "parse-orders"), old, "{member:#}");
    }
}

#[test]
fn a_process_whose_spec_differs_from_the_running_fleets_is_refused_with_the_difference() {
    let job = Cluster::new("fleet-spec", 1);
    let (address, name) = (job.address.clone(), job.name.clone());
    let (_a, _a_lines) = start(&job.spec_path, &address);
    fleet_until(&address, &name, Duration::from_secs(60), |m| m.len() == 1);
    let other = job.dir.path().join("other.toml");
    let text = std::fs::read_to_string(&job.spec_path).unwrap();
    std::fs::write(&other, text.replace("size = \"10s\"", "size = \"20s\"")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run"])
        .arg(&other)
        .args([
            "--brokers",
            &address,
            "--control",
            "off",
            "--ticker",
            "never",
        ])
        .output()
        .expect("rivulet run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(
        stderr.contains(&format!(
            "job `{name}` already runs on other processes with another spec"
        )) && stderr.contains("window size 10 s, this spec's 20 s"),
        "the error says what differs: {stderr}"
    );
}

#[test]
fn run_with_instances_starts_that_many_processes_of_the_job_and_stops_them_together() {
    let job = Cluster::new("fleet-instances", 2);
    let (address, name) = (job.address.clone(), job.name.clone());
    let parent = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run"])
        .arg(&job.spec_path)
        .args(["--brokers", &address, "--instances", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rivulet run --instances");
    let mut parent = JobProcess(parent);
    // (A process's first heartbeat may come before its control API is attached.)
    let members = fleet_until(&address, &name, Duration::from_secs(60), |m| {
        m.len() == 2 && m.iter().all(|m| m["control"].is_string())
    });
    let instances: Vec<&str> = members
        .iter()
        .map(|m| m["control"].as_str().expect("each has its control API"))
        .collect();
    assert_ne!(instances[0], instances[1], "each its own control port");

    let stopped = Command::new("kill")
        .args(["-TERM", &parent.0.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let started = Instant::now();
    while parent.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the processes stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each left the fleet (a tombstone), not only went silent.
    assert!(fleet(&address, &name).is_empty());
}

#[test]
fn reset_deletes_a_stopped_jobs_internal_topics_and_refuses_a_running_one() {
    let job = Cluster::new("fleet-reset", 2);
    let (address, name) = (job.address.clone(), job.name.clone());
    let reset = || {
        Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args(["reset", &name, "--brokers", &address])
            .output()
            .expect("rivulet reset")
    };
    let (mut running, _lines) = start(&job.spec_path, &address);
    fleet_until(&address, &name, Duration::from_secs(60), |m| m.len() == 1);
    let out = reset();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    if matches!(job.broker, TestBroker::External(_)) {
        assert!(
            stderr.contains(&format!("job `{name}` is running on 1 process(es)")),
            "{stderr}"
        );
    } else {
        // The embedded broker answers no admin requests: said before anything else.
        assert!(stderr.contains("is the embedded one"), "{stderr}");
        return;
    }
    Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status()
        .unwrap();
    running.wait().unwrap();
    let out = reset();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for topic in [format!("{name}-partials"), format!("{name}-control")] {
        assert!(
            stdout.contains(&format!("deleted topic {topic}")),
            "{stdout}"
        );
    }
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &address)
        .set("allow.auto.create.topics", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let left: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|t| t.starts_with(&name))
        .collect();
    assert!(left.is_empty(), "the job's topics are gone: {left:?}");
}

/// Asks a process to stop (SIGTERM) and waits for it: it commits what it did first.
fn stop(job: &mut JobProcess) {
    let status = Command::new("kill")
        .args(["-TERM", &job.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(job.wait().unwrap().success(), "stops cleanly on SIGTERM");
}

#[test]
fn a_process_stopped_and_started_again_emits_no_window_twice() {
    let job = Cluster::new("cluster-restart", 3);
    // From the committed offsets (the shared spec reads from the beginning on every start).
    let spec = std::fs::read_to_string(&job.spec_path)
        .unwrap()
        .replace("start = \"earliest\"\n", "");
    std::fs::write(&job.spec_path, spec).unwrap();
    let (records, expected) = orders(3, 600);
    let (closing, orders): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|(_, key, _)| key.starts_with("closing"));
    // The first 30 s of every partition: the first two windows close before the stop (the
    // third stays open across it).
    let (first, second): (Vec<_>, Vec<_>) = orders.into_iter().partition(|(_, key, _)| {
        key.rsplit('-').next().and_then(|i| i.parse::<i64>().ok()) < Some(300)
    });
    let closed_before: usize = expected
        .keys()
        .filter(|(window, _)| {
            window.as_str() < rivulet_sdk::time::iso8601(T0 + 2 * WINDOW).as_str()
        })
        .count();
    let (mut a, a_lines) = start(&job.spec_path, &job.address);
    settled(&[&a_lines], Duration::from_secs(2), Duration::from_secs(90));
    produce(&job.address, &job.topic, &first);
    read_until(&job.address, &job.out, 1, Duration::from_secs(60), |read| {
        results(read).len() >= closed_before
    });
    stop(&mut a);

    let (mut b, _b_lines) = start(&job.spec_path, &job.address);
    produce(&job.address, &job.topic, &second);
    produce(&job.address, &job.topic, &closing);
    let got = read_until(
        &job.address,
        &job.out,
        1,
        Duration::from_secs(120),
        |read| {
            let got = results(read);
            expected.keys().all(|k| got.contains_key(k))
        },
    );
    // Anything emitted twice would come right after the restart: a moment for stragglers.
    std::thread::sleep(Duration::from_secs(2));
    let got = results(&read_until(
        &job.address,
        &job.out,
        1,
        Duration::from_secs(3),
        |read| read.len() > got.len(),
    ));
    assert!(
        b.try_wait().unwrap().is_none(),
        "the process stopped by itself"
    );
    let want: BTreeMap<(String, String), Vec<u64>> = expected
        .iter()
        .map(|(k, &n)| (k.clone(), vec![n]))
        .collect();
    assert_eq!(
        got, want,
        "each (window, status) once across a clean restart, with every order"
    );
}

/// The partitions of `topic` a process's log says the group assigned (`assigned`) or
/// revoked, in the order it said so.
fn rebalances(lines: &[String], topic: &str, what: &str) -> Vec<Vec<i32>> {
    lines
        .iter()
        .filter(|line| line.contains(&format!("partitions {what} by the consumer group")))
        .filter(|line| line.contains(&format!("topic=\"{topic}\" ")))
        .map(|line| {
            let list = line
                .split("partitions=[")
                .nth(1)
                .and_then(|rest| rest.split(']').next())
                .unwrap_or_else(|| panic!("no partitions in {line}"));
            list.split(", ")
                .filter(|p| !p.is_empty())
                .map(|p| p.parse().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn a_process_joining_a_running_job_takes_only_its_share_and_each_window_comes_out_once() {
    let job = Cluster::new("cluster-join", 6);
    let (records, expected) = orders(6, 600);
    let (closing, orders): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|(_, key, _)| key.starts_with("closing"));
    let (first, second): (Vec<_>, Vec<_>) = orders.into_iter().partition(|(_, key, _)| {
        key.rsplit('-').next().and_then(|i| i.parse::<i64>().ok()) < Some(300)
    });
    let (mut a, a_lines) = start(&job.spec_path, &job.address);
    let mut a_said = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while rebalances(&a_said, &job.topic, "assigned").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first process got no partitions"
        );
        if let Ok(line) = a_lines.recv_timeout(Duration::from_millis(200)) {
            a_said.push(line);
        }
    }
    produce(&job.address, &job.topic, &first);
    read_until(&job.address, &job.out, 1, Duration::from_secs(60), |read| {
        !read.is_empty()
    });

    // A second process joins while the first reads.
    let (mut b, b_lines) = start(&job.spec_path, &job.address);
    let mut b_said = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while rebalances(&b_said, &job.topic, "assigned").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the joining process got no partitions"
        );
        if let Ok(line) = b_lines.recv_timeout(Duration::from_millis(200)) {
            b_said.push(line);
        }
    }
    produce(&job.address, &job.topic, &second);
    produce(&job.address, &job.topic, &closing);
    let got = read_until(
        &job.address,
        &job.out,
        1,
        Duration::from_secs(120),
        |read| {
            let got = results(read);
            expected.keys().all(|k| got.contains_key(k))
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let got = results(&read_until(
        &job.address,
        &job.out,
        1,
        Duration::from_secs(3),
        |read| read.len() > got.len(),
    ));
    for job in [&mut a, &mut b] {
        assert!(
            job.try_wait().unwrap().is_none(),
            "a process stopped by itself"
        );
    }
    a_said.extend(a_lines.try_iter());

    // Cooperative: the first process gave up only what the second took, once, and was
    // never handed its whole assignment again.
    let a_assigned: Vec<Vec<i32>> = rebalances(&a_said, &job.topic, "assigned")
        .into_iter()
        .filter(|partitions| !partitions.is_empty())
        .collect();
    let a_revoked = rebalances(&a_said, &job.topic, "revoked");
    let b_assigned: Vec<i32> = rebalances(&b_said, &job.topic, "assigned").concat();
    assert_eq!(
        a_assigned,
        vec![(0..6).collect::<Vec<i32>>()],
        "{a_said:#?}"
    );
    assert_eq!(a_revoked.len(), 1, "one revocation: {a_revoked:?}");
    let mut moved = a_revoked[0].clone();
    moved.sort_unstable();
    let mut taken = b_assigned.clone();
    taken.sort_unstable();
    assert_eq!(
        moved, taken,
        "the first gave up exactly what the second took"
    );
    assert!(
        !taken.is_empty() && taken.len() < 6,
        "the second took a share: {taken:?}"
    );
    let want: BTreeMap<(String, String), Vec<u64>> = expected
        .iter()
        .map(|(k, &n)| (k.clone(), vec![n]))
        .collect();
    assert_eq!(
        got, want,
        "each (window, status) once across the join, with every order"
    );
}

#[test]
fn an_aggregate_that_cannot_read_stage_ones_open_accumulators_is_refused() {
    let broker = TestBroker::from_env();
    let address = broker.address();
    let (topic, out) = (unique("events"), unique("out"));
    broker.topic(&topic, 2);
    broker.topic(&out, 1);
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("job.toml");
    std::fs::write(
        &spec_path,
        format!(
            r#"
name = "{name}"
parallelism = 1
[source]
kind = "kafka"
topic = "{topic}"
[[stages]]
name = "parse"
kind = "parse"
module = "{parse}"
[window]
size = "10s"
time = "event"
timestamp = "kafka"
idle_timeout = "120s"
exchange = "kafka"
[aggregate]
module = "{aggregate}"
[sink]
kind = "kafka"
topic = "{out}"
"#,
            name = unique("cluster-acc"),
            parse = wasm("swap_parse_v1").display(),
            aggregate = wasm("swap_aggregate_v1").display(),
        ),
    )
    .unwrap();
    let (_job, lines, control) = start_controlled(&spec_path, &address);
    settled(&[&lines], Duration::from_secs(2), Duration::from_secs(90));
    // Records in W1 = [10 s, 20 s) of both partitions: open windows with accumulators.
    let producer: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &address)
        .create()
        .unwrap();
    for i in 0..20 {
        let payload = format!(r#"{{"id":{i}}}"#);
        let mut record = rdkafka::producer::BaseRecord::to(&topic)
            .partition(i % 2)
            .key("k")
            .payload(&payload)
            .timestamp(T0 + 15_000);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(5));
        }
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
    let started = Instant::now();
    loop {
        let (_, body) =
            rivulet::http::client::request(&control, "GET", "/status", &[], None).unwrap();
        let status: Value = serde_json::from_str(&body).unwrap();
        if status["counters"]["window"]["rows"].as_u64() >= Some(20) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (ok, _, err) = swap(&control, "aggregate", &wasm("swap_aggregate_v4"));
    assert!(!ok, "refused");
    assert!(
        err.contains(
            "the new module keeps state version 1 but cannot merge the accumulators of the open windows it would take over (2 tried): merge failed: accumulator does not fit `swap_aggregate::Rows`: missing field `rows`"
        ),
        "{err}"
    );
    // A module that reads them is taken.
    let (ok, said, err) = swap(&control, "aggregate", &wasm("swap_aggregate_v2"));
    assert!(ok, "{said}{err}");
}

/// With a short idle timeout, a process must only ever speak for the partitions it reads: a
/// partition it never read (or gave up) must not look idle to the merge, or windows fire
/// without another process's orders. Two processes, orders flowing into every partition
/// (none is ever idle while its reader lives), then one process killed: its partitions wait
/// for their next owner, and every window comes out whole.
#[test]
fn a_short_idle_timeout_never_fires_a_window_without_another_processs_partitions() {
    let job = Cluster::new("cluster-idle", 4);
    let spec = std::fs::read_to_string(&job.spec_path)
        .unwrap()
        .replace("idle_timeout = \"120s\"", "idle_timeout = \"2s\"");
    std::fs::write(&job.spec_path, spec).unwrap();
    let (records, expected) = orders(4, 1_000);
    let (closing, orders): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|(_, key, _)| key.starts_with("closing"));
    let index = |key: &str| -> i64 { key.rsplit('-').next().unwrap().parse().unwrap() };
    let (mut a, a_lines) = start(&job.spec_path, &job.address);
    let (b, b_lines) = start(&job.spec_path, &job.address);
    settled(
        &[&a_lines, &b_lines],
        Duration::from_secs(4),
        Duration::from_secs(120),
    );
    // A second of event time per partition every 100 ms.
    let mut b = Some(b);
    for chunk in 0..100 {
        let part: Vec<_> = orders
            .iter()
            .filter(|(_, key, _)| index(key) / 10 == chunk)
            .cloned()
            .collect();
        produce(&job.address, &job.topic, &part);
        if chunk == 30
            && let Some(mut b) = b.take()
        {
            b.0.kill().expect("kill -9");
            b.wait().expect("killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    produce(&job.address, &job.topic, &closing);
    let got = read_until(
        &job.address,
        &job.out,
        1,
        Duration::from_secs(180),
        |read| {
            let got = results(read);
            expected.keys().all(|k| got.contains_key(k))
        },
    );
    assert!(a.try_wait().unwrap().is_none(), "the survivor stopped");
    assert_whole(&results(&got), &expected);
}
