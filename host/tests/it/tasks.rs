//! A job run by several tasks: the same results, late records and dead letters as one task
//! (checked against a count computed here, independently), each window once, and hot swaps
//! that reach every task.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::kafka::{TestBroker, produce, read_until};
use common::wasm;
use rivulet::assemble::RunOptions;
use rivulet::spec::PipelineSpec;
use rivulet::swap::SwapRequest;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const T0: i64 = 1_700_000_000_000;
const STATUSES: [&str; 5] = ["PENDING", "SHIPPED", "DELIVERED", "CANCELLED", "RETURNED"];
const SIZE: i64 = 10_000;
const OOO: i64 = 2_000;

/// A deterministic pseudo-random sequence (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One line of the order file: its text, and (for a well-formed order) event time, status
/// and amount in cents.
struct Line {
    text: String,
    order: Option<(i64, &'static str, i64)>,
}

/// 30,000 orders 10 ms apart with up to 1.9 s of disorder; every 97th is 15–45 s late;
/// stretches around a third, half and two thirds of the file are 40 s behind (so a split
/// that starts inside one is late only because of what the splits before it saw); every
/// 499th line is truncated.
fn order_lines() -> Vec<Line> {
    let mut rng = Rng(0x5eed_1234_abcd);
    let n: i64 = 30_000;
    let behind = |i: i64| {
        [n / 3, n / 2, 2 * n / 3]
            .iter()
            .any(|&c| (i - c).abs() < 900)
    };
    (0..n)
        .map(|i| {
            let mut ts = T0 + i * 10 - (rng.next() % 1_900) as i64;
            if i % 97 == 0 {
                ts -= 15_000 + (rng.next() % 30_000) as i64;
            }
            if behind(i) {
                ts -= 40_000;
            }
            let status = STATUSES[(rng.next() % 5) as usize];
            let cents = 100 + (rng.next() % 49_900) as i64;
            let text = format!(
                r#"{{"customer":"customer-{:03}","status":"{status}","region":"eu-west","amount":{}.{:02},"ts":"{}","tsMillis":{ts}}}"#,
                rng.next() % 1000,
                cents / 100,
                cents % 100,
                rivulet_sdk::time::iso8601(ts)
            );
            if i % 499 == 0 {
                let cut = text.len() / 2;
                return Line {
                    text: text[..cut].to_owned(),
                    order: None,
                };
            }
            Line {
                text,
                order: Some((ts, status, cents)),
            }
        })
        .collect()
}

/// What one reader of the file must produce, computed from the lines: per (window start,
/// status) the count and the sum in cents, the late lines, the line numbers of the
/// malformed ones. A record is too late when its window ended (plus the allowed lateness)
/// at or before the watermark the records before it made (their largest event time minus
/// the out-of-orderness).
struct Truth {
    windows: BTreeMap<(i64, String), (u64, i64)>,
    late: BTreeSet<String>,
    malformed: BTreeSet<i64>,
}

fn truth(lines: &[Line], lateness: i64) -> Truth {
    let mut truth = Truth {
        windows: BTreeMap::new(),
        late: BTreeSet::new(),
        malformed: BTreeSet::new(),
    };
    let mut max: Option<i64> = None;
    for (i, line) in lines.iter().enumerate() {
        let Some((ts, status, cents)) = line.order else {
            truth.malformed.insert(i as i64);
            continue;
        };
        let start = ts - ts.rem_euclid(SIZE);
        let too_late = max.is_some_and(|m| start + SIZE + lateness <= m - OOO);
        max = max.max(Some(ts));
        if too_late {
            truth.late.insert(line.text.clone());
        } else {
            let slot = truth.windows.entry((start, status.to_owned())).or_default();
            slot.0 += 1;
            slot.1 += cents;
        }
    }
    truth
}

/// Lines of `lines` that are too late only because of the splits before theirs, when the
/// file is cut into `tasks` splits as the job cuts it.
fn late_only_by_earlier_splits(path: &Path, lines: &[Line], tasks: usize, lateness: i64) -> usize {
    let splits = rivulet::source::split_file(path, tasks).unwrap();
    assert_eq!(splits.len(), tasks);
    let mut count = 0;
    let mut max: Option<i64> = None;
    for split in &splits {
        let end = splits
            .iter()
            .find(|s| s.first_line > split.first_line)
            .map_or(lines.len() as i64, |s| s.first_line);
        let mut local: Option<i64> = None;
        for line in &lines[split.first_line as usize..end as usize] {
            let Some((ts, ..)) = line.order else { continue };
            let closed = |m: Option<i64>| {
                m.is_some_and(|m| ts - ts.rem_euclid(SIZE) + SIZE + lateness <= m - OOO)
            };
            if closed(max.max(local)) && !closed(local) {
                count += 1;
            }
            local = local.max(Some(ts));
        }
        max = max.max(local);
    }
    count
}

fn spec(dir: &Path, parse: &str, aggregate: &str, lateness: i64) -> String {
    format!(
        r#"
name = "tasks"
[source]
kind = "file"
path = "{input}"
[[stages]]
name = "parse"
kind = "parse"
{parse}
[window]
key = "status"
size = "10s"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "2s"
allowed_lateness = "{lateness}ms"
late_path = "{late}"
[aggregate]
{aggregate}
[sink]
kind = "file"
path = "{out}"
[dead_letters]
path = "{dlq}"
[batch]
max_records = 256
max_wait = "50ms"
"#,
        input = dir.join("orders.jsonl").display(),
        late = dir.join("late.jsonl").display(),
        out = dir.join("out.jsonl").display(),
        dlq = dir.join("dlq.jsonl").display(),
    )
}

/// What a run wrote: the newest result per (window start, status) as (count, cents), the
/// late lines, the dead letters' line numbers.
struct Written {
    windows: BTreeMap<(i64, String), (u64, i64)>,
    late: BTreeSet<String>,
    dead: BTreeSet<i64>,
}

/// `text` without its terminal colour codes.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_code = false;
    for c in text.chars() {
        match (in_code, c) {
            (false, '\u{1b}') => in_code = true,
            (true, 'm') => in_code = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn run(dir: &Path, tasks: usize) -> Written {
    for file in ["out.jsonl", "late.jsonl", "dlq.jsonl"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", "job.toml", "--control", "off", "--parallelism"])
        .arg(tasks.to_string())
        .current_dir(dir)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{tasks} tasks: {log}");
    assert!(plain(&log).contains(&format!("tasks={tasks}")), "{log}");
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    let mut windows = BTreeMap::new();
    for line in read("out.jsonl").lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let start = match &row["window_start"] {
            Value::String(iso) => rivulet_sdk::time::parse_iso8601(iso).unwrap(),
            other => other.as_i64().unwrap(),
        };
        let count = row["n"].as_u64().or(row["order_count"].as_u64()).unwrap();
        let cents = row["total"]
            .as_f64()
            .map_or(-1, |t| (t * 100.0).round() as i64);
        // A later line for the same key replaces an earlier one (allowed lateness).
        windows.insert(
            (start, row["status"].as_str().unwrap().to_owned()),
            (count, cents),
        );
    }
    let late = read("late.jsonl").lines().map(str::to_owned).collect();
    let dead = read("dlq.jsonl")
        .lines()
        .map(|l| {
            let letter: Value = serde_json::from_str(l).unwrap();
            letter["source"]["offset"].as_i64().unwrap()
        })
        .collect();
    Written {
        windows,
        late,
        dead,
    }
}

fn check(written: &Written, truth: &Truth, with_sums: bool, what: &str) {
    let expected: BTreeMap<(i64, String), (u64, i64)> = truth
        .windows
        .iter()
        .map(|(k, &(n, cents))| (k.clone(), (n, if with_sums { cents } else { -1 })))
        .collect();
    if written.windows != expected {
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(k, v)| written.windows.get(*k) != Some(*v))
            .take(5)
            .map(|(k, v)| format!("{k:?}: expected {v:?}, got {:?}", written.windows.get(k)))
            .collect();
        panic!(
            "{what}: {} of {} window results differ (and {} extra), e.g. {wrong:?}",
            wrong.len(),
            expected.len(),
            written.windows.len().saturating_sub(expected.len())
        );
    }
    assert_eq!(written.late.len(), truth.late.len(), "{what}: late records");
    assert!(
        written.late == truth.late,
        "{what}: the late records differ"
    );
    assert_eq!(written.dead, truth.malformed, "{what}: dead letters");
}

fn equal_to_one_reader(parse: &str, aggregate: &str, lateness: i64, with_sums: bool) {
    let dir = tempfile::tempdir().unwrap();
    let lines = order_lines();
    let mut text: String = lines.iter().map(|l| format!("{}\n", l.text)).collect();
    text.pop(); // no line break after the last line: it is still a record
    std::fs::write(dir.path().join("orders.jsonl"), text).unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        spec(dir.path(), parse, aggregate, lateness),
    )
    .unwrap();
    let truth = truth(&lines, lateness);
    assert!(truth.late.len() > 1_000 && truth.malformed.len() > 50);
    for tasks in [1, 2, 3] {
        if tasks > 1 {
            let exercised = late_only_by_earlier_splits(
                &dir.path().join("orders.jsonl"),
                &lines,
                tasks,
                lateness,
            );
            assert!(
                exercised > 100,
                "the data must make records late only through earlier splits ({exercised})"
            );
        }
        let written = run(dir.path(), tasks);
        check(&written, &truth, with_sums, &format!("{tasks} tasks"));
    }
}

#[test]
fn n_tasks_equal_one_reader_on_a_file_with_disorder_and_lateness_builtin_aggregates() {
    equal_to_one_reader(
        r#"builtin = "json""#,
        r#"builtin = [{ name = "n", fn = "count" }, { name = "total", fn = "sum", field = "amount" }]"#,
        0,
        true,
    );
}

#[test]
fn n_tasks_equal_one_reader_with_allowed_lateness_and_a_wasm_parse_and_aggregate() {
    equal_to_one_reader(
        &format!(r#"module = "{}""#, wasm("udf_parse_orders").display()),
        &format!(r#"module = "{}""#, wasm("udf_count_by_status").display()),
        5_000,
        false,
    );
}

fn options(brokers: &str, stop: &Arc<AtomicBool>, cache: &Path) -> RunOptions {
    RunOptions {
        brokers: Some(brokers.to_owned()),
        runtime: Runtime::new(ModuleCache::at(cache)).unwrap(),
        stop: stop.clone(),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_millis(200),
        swappable: true,
        instance: Default::default(),
    }
}

#[test]
fn a_keyed_job_over_three_partitions_with_two_tasks_emits_each_window_and_key_once() {
    let broker = TestBroker::embedded();
    let address = broker.address();
    broker.topic("orders", 3);
    broker.topic("counts", 1);
    let dir = tempfile::tempdir().unwrap();
    // Every status in every partition; in order per partition, so nothing is late.
    let mut records = Vec::new();
    let mut expected: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for i in 0..6_000i64 {
        let p = (i % 3) as i32;
        let ts = T0 + i * 7;
        let status = STATUSES[((i / 3) % 5) as usize];
        let payload = format!(r#"{{"status":"{status}","tsMillis":{ts}}}"#);
        records.push((p, format!("k{i}"), payload.into_bytes()));
        *expected
            .entry((ts - ts.rem_euclid(SIZE), status.to_owned()))
            .or_default() += 1;
    }
    produce(&address, "orders", &records);
    let mut spec = PipelineSpec::parse(
        &format!(
            r#"
name = "three-partitions"
[source]
kind = "kafka"
topic = "orders"
assign = "all"
bounded = true
start = "earliest"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[window]
key = "status"
size = "10s"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "1s"
[aggregate]
module = "{}"
[sink]
kind = "kafka"
topic = "counts"
"#,
            wasm("udf_count_by_status").display()
        ),
        Path::new("job.toml"),
    )
    .unwrap();
    spec.parallelism = Some(2);
    let stop = Arc::new(AtomicBool::new(false));
    let mut job = Job::from_spec(&spec, &options(&address, &stop, dir.path())).unwrap();
    assert_eq!(job.tasks.len(), 2);
    job.run().unwrap();

    let results = read_until(&address, "counts", 1, Duration::from_secs(30), |r| {
        r.len() >= expected.len()
    });
    let mut seen: BTreeMap<(i64, String), Vec<u64>> = BTreeMap::new();
    for r in &results {
        let row: Value = serde_json::from_slice(&r.payload).unwrap();
        seen.entry((
            row["window_start"].as_i64().unwrap(),
            row["status"].as_str().unwrap().to_owned(),
        ))
        .or_default()
        .push(row["order_count"].as_u64().unwrap());
    }
    let expected: BTreeMap<(i64, String), Vec<u64>> =
        expected.into_iter().map(|(k, n)| (k, vec![n])).collect();
    assert_eq!(
        seen, expected,
        "each (window, status) once, with every partition's orders"
    );
}

#[test]
fn a_swap_while_two_tasks_run_reaches_both_and_no_record_is_lost_or_parsed_twice() {
    let broker = TestBroker::embedded();
    let address = broker.address();
    broker.topic("ids", 2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let mut spec = PipelineSpec::parse(
        &format!(
            r#"
name = "swap-tasks"
[source]
kind = "kafka"
topic = "ids"
assign = "all"
start = "earliest"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[sink]
kind = "file"
path = "{}"
[batch]
max_records = 20
max_wait = "10ms"
"#,
            wasm("swap_parse_v1").display(),
            out.display()
        ),
        Path::new("job.toml"),
    )
    .unwrap();
    spec.parallelism = Some(2);
    let stop = Arc::new(AtomicBool::new(false));
    let mut job = Job::from_spec(&spec, &options(&address, &stop, dir.path())).unwrap();
    let swaps = job.swap_requests.clone().unwrap();
    let status = job.status.clone();
    let running = std::thread::spawn(move || {
        job.run().unwrap();
        job
    });
    // Even ids to partition 0 (task 0), odd ids to partition 1 (task 1), in chunks.
    const N: i64 = 3_000;
    let feeder = {
        let address = address.clone();
        std::thread::spawn(move || {
            for chunk in 0..N / 100 {
                let records: Vec<_> = (chunk * 100..(chunk + 1) * 100)
                    .map(|id| {
                        (
                            (id % 2) as i32,
                            format!("k{id}"),
                            format!(r#"{{"id":{id}}}"#).into_bytes(),
                        )
                    })
                    .collect();
                produce(&address, "ids", &records);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    while status.records() < 500 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job reads nothing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (reply, answer) = std::sync::mpsc::channel();
    swaps
        .send(SwapRequest {
            stage: "parse".into(),
            bytes: std::fs::read(wasm("swap_parse_v2")).unwrap(),
            origin: "test".into(),
            reply: Some(reply),
            fleet: None,
            shadow: None,
        })
        .unwrap();
    let outcome = answer
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap();
    assert_eq!(outcome.stage, "parse");
    feeder.join().unwrap();
    while status.records() < N as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the job read {} of {N}",
            status.records()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let job = running.join().unwrap();
    assert_eq!(job.tasks.len(), 2);
    assert!(
        job.tasks.iter().all(|t| t.swap_pauses.len() == 1),
        "both tasks installed it"
    );

    let text = std::fs::read_to_string(&out).unwrap();
    let mut by_partition: BTreeMap<i64, Vec<(i64, String)>> = BTreeMap::new();
    for line in text.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let id = row["id"].as_i64().unwrap();
        let parsed_by = row["parsed_by"].as_str().unwrap().to_owned();
        let factor = if parsed_by == "v2" { 10 } else { 1 };
        assert_eq!(
            row["value"].as_i64(),
            Some(id * factor),
            "{row}: parsed as its module says"
        );
        by_partition
            .entry(id % 2)
            .or_default()
            .push((id, parsed_by));
    }
    let mut ids: Vec<i64> = by_partition.values().flatten().map(|(id, _)| *id).collect();
    ids.sort();
    assert_eq!(ids, (0..N).collect::<Vec<_>>(), "every record exactly once");
    for (partition, mut rows) in by_partition {
        rows.sort();
        // One cut per task: v1 up to a batch boundary, v2 after.
        let cut = rows
            .iter()
            .position(|(_, by)| by == "v2")
            .unwrap_or_else(|| panic!("partition {partition}: its task never used the new module"));
        assert!(cut > 0, "partition {partition}: v1 parsed nothing");
        assert!(
            rows[..cut].iter().all(|(_, by)| by == "v1")
                && rows[cut..].iter().all(|(_, by)| by == "v2"),
            "partition {partition}: each record parsed by one module, switching once"
        );
    }
}
