//! `/metrics` after a deterministic run: the text parses as the Prometheus exposition format
//! and every counter equals what the input makes it, computed here from the input.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use rivulet::assemble::RunOptions;
use rivulet::spec::PipelineSpec;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;
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
    };
    let mut job = Job::from_spec(&spec, &options).unwrap();
    job.run().unwrap();

    let text = rivulet::http::metrics::encode(&job.status).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).unwrap();
    let mut got: BTreeMap<String, f64> = BTreeMap::new();
    for sample in &scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("unexpected sample {sample:?}"),
        };
        let labels = sample.labels.to_string();
        let labels = match labels.is_empty() {
            true => labels,
            false => format!("{{{labels}}}"),
        };
        got.insert(format!("{}{labels}", sample.metric), value);
    }
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
    // The job's watermark: the lowest over its tasks, each what its records said (the
    // largest event time it read, less the out-of-orderness).
    let watermark = got["rivulet_event_time_watermark_seconds"];
    let whole_input = (T0 + 999 * 100 - 1_000) as f64 / 1000.0;
    assert!(
        watermark > T0 as f64 / 1000.0 && watermark <= whole_input,
        "watermark {watermark}"
    );
}
