//! `/metrics` after a deterministic run: the text parses as the Prometheus exposition format
//! and every counter equals what the input makes it, computed here from the input. Per-record
//! errors are counted per stage and logged as a bounded number of WARNs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use rivulet::assemble::RunOptions;
use rivulet::spec::PipelineSpec;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;

/// `/metrics` as text, and each sample by its name and labels.
fn scrape(status: &Arc<rivulet::status::JobStatus>) -> (String, BTreeMap<String, f64>) {
    let text = rivulet::http::metrics::encode(status).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).unwrap();
    let mut got: BTreeMap<String, f64> = BTreeMap::new();
    for sample in &scrape.samples {
        let labels = sample.labels.to_string();
        let labels = match labels.is_empty() {
            true => labels,
            false => format!("{{{labels}}}"),
        };
        match &sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => {
                got.insert(format!("{}{labels}", sample.metric), *v);
            }
            // A histogram's buckets (cumulative), one sample per upper bound.
            prometheus_parse::Value::Histogram(buckets) => {
                for bucket in buckets {
                    let name = format!("{}{labels}", sample.metric);
                    got.insert(format!("{name} le={}", bucket.less_than), bucket.count);
                }
            }
            _ => panic!("unexpected sample {sample:?}"),
        }
    }
    (text, got)
}

fn options(dir: &std::path::Path) -> RunOptions {
    RunOptions {
        brokers: None,
        runtime: Runtime::new(ModuleCache::at(dir.join("cache"))).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(5)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    }
}
const STATUSES: [&str; 5] = ["NEW", "PENDING", "SHIPPED", "DELIVERED", "CANCELLED"];

#[test]
fn metrics_after_a_file_run_count_exactly_what_the_input_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let mut groups = BTreeSet::new();
    let (mut valid, mut malformed) = (0u64, 0u64);
    for i in 0..1000i64 {
        let status = STATUSES[(i % 5) as usize];
        let ts = T0 + i * 100;
        if i % 100 == 37 {
            lines.push(format!(r#"{{"status":"{status}","tsMillis":"#));
            malformed += 1;
        } else {
            lines.push(format!(r#"{{"status":"{status}","tsMillis":{ts}}}"#));
            groups.insert((ts - ts.rem_euclid(10_000), status));
            valid += 1;
        }
    }
    std::fs::write(dir.path().join("orders.jsonl"), lines.join("\n") + "\n").unwrap();
    let spec = format!(
        r#"
name = "metrics"
parallelism = 2
[source]
kind = "file"
path = "{input}"
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
builtin = [{{ name = "n", fn = "count" }}]
[sink]
kind = "file"
path = "{out}"
[dead_letters]
path = "{dlq}"
"#,
        input = dir.path().join("orders.jsonl").display(),
        out = dir.path().join("out.jsonl").display(),
        dlq = dir.path().join("dlq.jsonl").display(),
    );
    let spec = PipelineSpec::parse(&spec, &dir.path().join("job.toml")).unwrap();
    let options = RunOptions {
        brokers: None,
        runtime: Runtime::new(ModuleCache::at(dir.path().join("cache"))).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(5)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    };
    let mut job = Job::from_spec(&spec, &options).unwrap();
    job.run().unwrap();

    let (text, got) = scrape(&job.status);
    let results = groups.len() as f64;
    let expected: BTreeMap<String, f64> = [
        ("rivulet_source_records_total", 1000.0),
        (r#"rivulet_stage_records_in_total{stage="parse"}"#, 1000.0),
        (
            r#"rivulet_stage_rows_out_total{stage="parse"}"#,
            valid as f64,
        ),
        (
            r#"rivulet_stage_rejected_total{stage="parse"}"#,
            malformed as f64,
        ),
        (r#"rivulet_stage_failed_batches_total{stage="parse"}"#, 0.0),
        (
            r#"rivulet_dead_letters_total{stage="parse"}"#,
            malformed as f64,
        ),
        (
            r#"rivulet_stage_errors_total{stage="parse"}"#,
            malformed as f64,
        ),
        ("rivulet_window_rows_total", valid as f64),
        ("rivulet_window_late_updates_total", 0.0),
        ("rivulet_window_too_late_total", 0.0),
        ("rivulet_window_results_total", results),
        ("rivulet_window_replay_skipped_total", 0.0),
        ("rivulet_sink_sent_total", results),
        ("rivulet_sink_acked_total", results),
        (r#"rivulet_stage_swaps_total{stage="parse"}"#, 0.0),
        (r#"rivulet_stage_swap_rejections_total{stage="parse"}"#, 0.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (name, value) in &expected {
        assert_eq!(
            got.get(name),
            Some(value),
            "{name} in:\n{text}\nparsed: {got:?}"
        );
    }
    // Every call of the parse step is timed: as many in the histogram's last (unbounded)
    // bucket as it counts, and at least one call per task.
    let calls = got[r#"rivulet_stage_batch_duration_seconds_count{stage="parse"}"#];
    assert!(calls >= 2.0, "{text}");
    assert_eq!(
        got.get(r#"rivulet_stage_batch_duration_seconds{stage="parse"} le=inf"#),
        Some(&calls),
        "{text}"
    );
    assert!(got[r#"rivulet_stage_batch_duration_seconds_sum{stage="parse"}"#] > 0.0);
    // Each window fired once, and long after its end (the input is from 2023): every one
    // is above the last bound (10 min).
    let windows: BTreeSet<i64> = groups.iter().map(|(start, _)| *start).collect();
    let windows = windows.len() as f64;
    assert_eq!(
        got.get("rivulet_window_fire_lateness_seconds_count"),
        Some(&windows),
        "{text}"
    );
    assert_eq!(
        got.get("rivulet_window_fire_lateness_seconds le=600"),
        Some(&0.0),
        "{text}"
    );
    // Each partition's watermark is exported too (a file is partition 0 of its tasks).
    assert!(
        got.contains_key(r#"rivulet_event_time_partition_watermark_seconds{partition="0"}"#),
        "{text}"
    );
    // The job's watermark: the lowest over its tasks, each what its records said (the
    // largest event time it read, less the out-of-orderness).
    let watermark = got["rivulet_event_time_watermark_seconds"];
    let whole_input = (T0 + 999 * 100 - 1_000) as f64 / 1000.0;
    assert!(
        watermark > T0 as f64 / 1000.0 && watermark <= whole_input,
        "watermark {watermark}"
    );
}

/// The log lines written while the tests run (one subscriber for the test binary).
fn captured() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Writer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Writer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || Writer(writer.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
    .clone()
}

/// The per-record-error WARNs of `stage` in the log: the count each carries.
fn warned_counts(log: &str, stage: &str) -> Vec<u64> {
    let field = format!(" stage={stage} errors=");
    log.lines()
        .filter(|line| line.contains(" WARN ") && line.contains(&field))
        .map(|line| {
            let rest = &line[line.find(&field).unwrap() + field.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap()
        })
        .collect()
}

/// Parse errors (malformed JSON), the aggregate's `add` errors (an order without an
/// amount) and the formatter's (a row without the fields it needs) in two file jobs of two
/// tasks: each stage's errors are counted exactly in `/metrics` and the status, and logged as
/// at most one WARN per stage per 10 s plus one per task at its end, whose counts add up to
/// the stage's errors, each with an example reason.
#[test]
fn per_record_errors_are_counted_per_stage_and_logged_as_bounded_warnings() {
    let log = captured();
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (mut malformed, mut bad_amount) = (0u64, 0u64);
    let mut orders = Vec::new();
    for i in 0..2000i64 {
        let status = STATUSES[(i % 5) as usize];
        let ts = T0 + i * 50;
        orders.push(match i % 40 {
            7 => {
                malformed += 1;
                format!(r#"{{"status":"{status}","tsMillis":{ts},"amount":"#)
            }
            23 => {
                bad_amount += 1;
                format!(r#"{{"status":"{status}","tsMillis":{ts}}}"#)
            }
            _ => format!(
                r#"{{"status":"{status}","tsMillis":{ts},"amount":{}.5}}"#,
                i % 100
            ),
        });
    }
    std::fs::write(dir.path().join("orders.jsonl"), orders.join("\n") + "\n").unwrap();
    let spec = format!(
        r#"
name = "loud-aggregate"
parallelism = 2
[source]
kind = "file"
path = "{input}"
[[stages]]
name = "orders"
kind = "parse"
builtin = "json"
[window]
key = "status"
size = "10s"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "1s"
[aggregate]
module = "{avg}"
[sink]
kind = "file"
path = "{out}"
[dead_letters]
path = "{dlq}"
"#,
        input = dir.path().join("orders.jsonl").display(),
        avg = common::wasm("udf_avg_amount").display(),
        out = dir.path().join("out.jsonl").display(),
        dlq = dir.path().join("dlq.jsonl").display(),
    );
    let spec = PipelineSpec::parse(&spec, &dir.path().join("aggregate.toml")).unwrap();
    let mut job = Job::from_spec(&spec, &options(dir.path())).unwrap();
    job.run().unwrap();
    let (text, got) = scrape(&job.status);
    assert_eq!(
        got.get(r#"rivulet_stage_errors_total{stage="orders"}"#),
        Some(&(malformed as f64)),
        "{text}"
    );
    assert_eq!(
        got.get(r#"rivulet_stage_errors_total{stage="aggregate"}"#),
        Some(&(bad_amount as f64)),
        "{text}"
    );
    assert_eq!(
        job.status.snapshot().counters.errors["aggregate"],
        bad_amount
    );

    // The formatter: order summaries need a region; every 10th row has none.
    let mut rows = Vec::new();
    let mut no_region = 0u64;
    for i in 0..500 {
        let region = match i % 10 {
            3 => {
                no_region += 1;
                String::new()
            }
            _ => r#","region":"eu-west""#.to_owned(),
        };
        rows.push(format!(
            r#"{{"customer":"c-{i}","status":"NEW","amount":{i}.25,"ts":"2024-05-23T12:34:56Z"{region}}}"#
        ));
    }
    std::fs::write(dir.path().join("rows.jsonl"), rows.join("\n") + "\n").unwrap();
    let spec = format!(
        r#"
name = "loud-format"
parallelism = 2
[source]
kind = "file"
path = "{input}"
[[stages]]
name = "rows"
kind = "parse"
builtin = "json"
[format]
module = "{summary}"
[sink]
kind = "file"
path = "{out}"
[dead_letters]
path = "{dlq}"
"#,
        input = dir.path().join("rows.jsonl").display(),
        summary = common::wasm("udf_order_summary").display(),
        out = dir.path().join("summaries.txt").display(),
        dlq = dir.path().join("format-dlq.jsonl").display(),
    );
    let spec = PipelineSpec::parse(&spec, &dir.path().join("format.toml")).unwrap();
    let mut job = Job::from_spec(&spec, &options(dir.path())).unwrap();
    job.run().unwrap();
    let (text, got) = scrape(&job.status);
    assert_eq!(
        got.get(r#"rivulet_stage_errors_total{stage="format"}"#),
        Some(&(no_region as f64)),
        "{text}"
    );
    assert_eq!(got.get(r#"rivulet_stage_errors_total{stage="rows"}"#), None);
    let summaries = std::fs::read_to_string(dir.path().join("summaries.txt")).unwrap();
    assert_eq!(summaries.lines().count() as u64, 500 - no_region);

    let elapsed = started.elapsed();
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    // At most one per 10 s since the first, and one more as each of the 2 tasks ends.
    let bound = 1 + 2 + elapsed.as_secs() as usize / 10;
    for (stage, errors, reason) in [
        ("orders", malformed, "EOF while parsing"),
        ("aggregate", bad_amount, "amount"),
        ("format", no_region, "region"),
    ] {
        let counts = warned_counts(&log, stage);
        eprintln!(
            "stage {stage}: {errors} errors in {} WARN lines {counts:?}",
            counts.len()
        );
        assert!(
            !counts.is_empty() && counts.len() <= bound,
            "{stage}: {} WARNs (bound {bound}) in {elapsed:?}:\n{log}",
            counts.len()
        );
        assert_eq!(counts.iter().sum::<u64>(), errors, "{stage}:\n{log}");
        let example = log
            .lines()
            .find(|line| line.contains(&format!(" stage={stage} errors=")))
            .unwrap();
        assert!(example.contains(reason), "{example}");
    }
}

/// A Kafka source's partitions each get their consumer lag (as the client reports it every
/// second, against the committed position): 0 once the job has read and committed all.
#[test]
fn kafka_source_lag_is_exported_per_partition() {
    use common::kafka::{TestBroker, produce};
    let broker = TestBroker::embedded();
    let address = broker.address();
    broker.topic("lag-in", 2);
    let records: Vec<(i32, String, Vec<u8>)> = (0..50)
        .map(|i| {
            (
                i % 2,
                format!("k{i}"),
                format!(r#"{{"n":{i}}}"#).into_bytes(),
            )
        })
        .collect();
    produce(&address, "lag-in", &records);
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        r#"
name = "lag"
parallelism = 1
[source]
kind = "kafka"
topic = "lag-in"
assign = "all"
group = "lag"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[sink]
kind = "file"
path = "{out}"
"#,
        out = dir.path().join("out.jsonl").display(),
    );
    let spec = PipelineSpec::parse(&spec, &dir.path().join("job.toml")).unwrap();
    let mut options = options(dir.path());
    options.brokers = Some(address.clone());
    let stop = options.stop.clone();
    let mut job = Job::from_spec(&spec, &options).unwrap();
    let status = job.status.clone();
    let running = std::thread::spawn(move || job.run().map_err(|e| e.to_string()));
    let lag = |p: i32| format!(r#"rivulet_source_partition_lag{{partition="{p}"}}"#);
    let started = std::time::Instant::now();
    let (text, got) = loop {
        let (text, got) = scrape(&status);
        let done = got.get("rivulet_source_records_total") == Some(&50.0)
            && [0, 1].iter().all(|&p| got.get(&lag(p)) == Some(&0.0));
        if done || started.elapsed() > Duration::from_secs(30) {
            break (text, got);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    running.join().unwrap().unwrap();
    assert_eq!(got.get(&lag(0)), Some(&0.0), "{text}");
    assert_eq!(got.get(&lag(1)), Some(&0.0), "{text}");
    assert!(!got.contains_key(&lag(2)), "{text}");
}

/// A backlog shows as lag: records of a window still open are read but not committed (a
/// restart reads them again), so each partition's lag is the number of its records from the
/// first one in an open window on — computed here from the input — not 0.
#[test]
fn kafka_source_lag_counts_the_records_an_open_window_still_holds_per_partition() {
    use common::kafka::{TestBroker, produce};
    let broker = TestBroker::embedded();
    let address = broker.address();
    broker.topic("backlog-in", 2);
    // Partition 0: 5 records in [T0, T0+10 s), then 7 in [T0+20 s, T0+30 s); partition 1: 4
    // in [T0+20 s, T0+30 s). Each partition's watermark passes T0+20 s (no out-of-orderness):
    // the first window fires, the second stays open.
    let times: [Vec<i64>; 2] = [
        (0..5)
            .map(|i| T0 + i * 100)
            .chain((0..7).map(|i| T0 + 20_000 + i * 100))
            .collect(),
        (0..4).map(|i| T0 + 20_000 + i * 100).collect(),
    ];
    let records: Vec<(i32, String, Vec<u8>)> = times
        .iter()
        .enumerate()
        .flat_map(|(p, times)| {
            times.iter().map(move |ts| {
                (
                    p as i32,
                    format!("k{p}"),
                    format!(r#"{{"key":"k","ts":{ts}}}"#).into_bytes(),
                )
            })
        })
        .collect();
    produce(&address, "backlog-in", &records);
    let watermark = times
        .iter()
        .map(|t| *t.iter().max().unwrap())
        .min()
        .unwrap();
    let window_end = |ts: i64| ts - ts.rem_euclid(10_000) + 10_000;
    let backlog: Vec<f64> = times
        .iter()
        .map(|times| {
            let first_open = times
                .iter()
                .position(|&ts| window_end(ts) > watermark)
                .unwrap();
            (times.len() - first_open) as f64
        })
        .collect();
    assert_eq!(backlog, [7.0, 4.0], "the input is as described");
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        r#"
name = "backlog"
parallelism = 1
[source]
kind = "kafka"
topic = "backlog-in"
assign = "all"
group = "backlog"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[window]
key = "key"
size = "10s"
time = "event"
timestamp = "ts"
out_of_orderness = "0s"
[aggregate]
builtin = [{{ name = "n", fn = "count" }}]
[sink]
kind = "file"
path = "{out}"
"#,
        out = dir.path().join("out.jsonl").display(),
    );
    let spec = PipelineSpec::parse(&spec, &dir.path().join("job.toml")).unwrap();
    let mut options = options(dir.path());
    options.brokers = Some(address.clone());
    let stop = options.stop.clone();
    let mut job = Job::from_spec(&spec, &options).unwrap();
    let status = job.status.clone();
    let running = std::thread::spawn(move || job.run().map_err(|e| e.to_string()));
    let lag = |p: i32| format!(r#"rivulet_source_partition_lag{{partition="{p}"}}"#);
    let started = std::time::Instant::now();
    let (text, got) = loop {
        let (text, got) = scrape(&status);
        let done = got.get("rivulet_source_records_total") == Some(&16.0)
            && got.get("rivulet_window_results_total") == Some(&1.0)
            && [0, 1]
                .iter()
                .all(|&p| got.get(&lag(p)) == Some(&backlog[p as usize]));
        if done || started.elapsed() > Duration::from_secs(30) {
            break (text, got);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    running.join().unwrap().unwrap();
    assert_eq!(
        got.get("rivulet_source_records_total"),
        Some(&16.0),
        "{text}"
    );
    assert_eq!(got.get(&lag(0)), Some(&backlog[0]), "{text}");
    assert_eq!(got.get(&lag(1)), Some(&backlog[1]), "{text}");
}
