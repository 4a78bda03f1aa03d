//! The shipped pipeline specs are valid, and a file-source job gives exact results.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use rivulet::assemble::RunOptions;
use rivulet::pipeline::Pipeline;
use rivulet::spec::PipelineSpec;
use rivulet::udf::{ModuleCache, Runtime};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[test]
fn every_shipped_spec_parses_and_names_existing_modules() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let spec = PipelineSpec::load(&path).unwrap_or_else(|err| panic!("{err}"));
        let modules = spec
            .stages
            .iter()
            .filter_map(|s| s.module.clone())
            .chain(spec.aggregate.as_ref().and_then(|a| a.module.clone()))
            .chain(spec.format.as_ref().map(|f| f.module.clone()));
        for module in modules {
            assert!(
                module.is_file(),
                "{}: {} is missing (run `just udfs`)",
                path.display(),
                module.display()
            );
        }
        count += 1;
    }
    assert!(count >= 6, "found {count} specs");
}

#[test]
fn file_source_job_counts_every_window_and_dead_letters_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let mut lines = String::new();
    for i in 0..100i64 {
        let ts = 1_716_467_700_000 + i * 1000; // 100 s from a window boundary
        let status = ["NEW", "SHIPPED"][(i % 2) as usize];
        lines.push_str(&format!(
            r#"{{"customer":"c{i}","status":"{status}","region":"r","amount":2.5,"ts":"{}","tsMillis":{ts}}}"#,
            rivulet_sdk::time::iso8601(ts)
        ));
        lines.push('\n');
        if i % 25 == 0 {
            lines.push_str("{broken\n");
        }
    }
    std::fs::write(&input, lines).unwrap();
    let spec = format!(
        r#"
name = "replay"
[source]
kind = "file"
path = "orders.jsonl"
[[stages]]
name = "parse-orders"
kind = "parse"
module = "{}"
[window]
key = "status"
size = "30s"
time = "event"
timestamp = "tsMillis"
[aggregate]
builtin = [{{ name = "order_count", fn = "count" }}, {{ name = "total", fn = "sum", field = "amount" }}]
[sink]
kind = "file"
path = "out.jsonl"
[dead_letters]
path = "dlq.jsonl"
"#,
        common::wasm("udf_parse_orders").display()
    );
    let spec_path = dir.path().join("job.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let spec = PipelineSpec::load(&spec_path).unwrap();
    let options = RunOptions {
        brokers: None,
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: None,
        commit_every: Duration::from_secs(1),
        swappable: false,
        instance: Default::default(),
    };
    Pipeline::from_spec(&spec, &options).unwrap().run().unwrap();

    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let expected = [
        r#"{"window_start":"2024-05-23T12:35:00Z","window_end":"2024-05-23T12:35:30Z","status":"NEW","order_count":15,"total":37.5}"#,
        r#"{"window_start":"2024-05-23T12:35:00Z","window_end":"2024-05-23T12:35:30Z","status":"SHIPPED","order_count":15,"total":37.5}"#,
        r#"{"window_start":"2024-05-23T12:35:30Z","window_end":"2024-05-23T12:36:00Z","status":"NEW","order_count":15,"total":37.5}"#,
        r#"{"window_start":"2024-05-23T12:35:30Z","window_end":"2024-05-23T12:36:00Z","status":"SHIPPED","order_count":15,"total":37.5}"#,
        r#"{"window_start":"2024-05-23T12:36:00Z","window_end":"2024-05-23T12:36:30Z","status":"NEW","order_count":15,"total":37.5}"#,
        r#"{"window_start":"2024-05-23T12:36:00Z","window_end":"2024-05-23T12:36:30Z","status":"SHIPPED","order_count":15,"total":37.5}"#,
        r#"{"window_start":"2024-05-23T12:36:30Z","window_end":"2024-05-23T12:37:00Z","status":"NEW","order_count":5,"total":12.5}"#,
        r#"{"window_start":"2024-05-23T12:36:30Z","window_end":"2024-05-23T12:37:00Z","status":"SHIPPED","order_count":5,"total":12.5}"#,
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);

    let dlq = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap();
    let letters: Vec<serde_json::Value> = dlq
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 4);
    for (letter, line) in letters.iter().zip([1, 27, 53, 79]) {
        assert_eq!(letter["stage"], "parse-orders");
        assert_eq!(letter["payload"], "{broken");
        assert_eq!(letter["source"]["offset"], line);
        assert!(
            letter["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON")
        );
    }
}

fn run_file_job(dir: &Path, on_error: &str) -> Result<(), String> {
    std::fs::write(dir.join("in.jsonl"), "{\"customer\":\"c\",\"status\":\"NEW\",\"region\":\"r\",\"amount\":1,\"ts\":\"2024-05-23T12:35:00Z\"}\nnot an order\n").unwrap();
    let spec = format!(
        "name = \"policy\"\n[source]\nkind = \"file\"\npath = \"in.jsonl\"\n[[stages]]\nname = \"parse-orders\"\nkind = \"parse\"\nmodule = \"{}\"\non_error = \"{on_error}\"\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n[dead_letters]\npath = \"dlq.jsonl\"\n",
        common::wasm("udf_parse_orders").display()
    );
    std::fs::write(dir.join("job.toml"), spec).unwrap();
    let spec = PipelineSpec::load(&dir.join("job.toml")).unwrap();
    let options = RunOptions {
        brokers: None,
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: None,
        commit_every: Duration::from_secs(1),
        swappable: false,
        instance: Default::default(),
    };
    let mut pipeline = Pipeline::from_spec(&spec, &options).unwrap();
    let result = pipeline.run().map_err(|e| e.to_string());
    if on_error == "drop" {
        assert_eq!(pipeline.dead.dropped().get("parse-orders"), Some(&1));
    }
    result
}

#[test]
fn drop_policy_counts_and_drops_rejected_records() {
    let dir = tempfile::tempdir().unwrap();
    run_file_job(dir.path(), "drop").unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    assert!(
        std::fs::read_to_string(dir.path().join("dlq.jsonl"))
            .unwrap_or_default()
            .is_empty()
    );
}

#[test]
fn fail_policy_stops_the_job_naming_the_stage_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_file_job(dir.path(), "fail").unwrap_err();
    assert!(
        err.starts_with("stage `parse-orders` rejected record"),
        "{err}"
    );
    assert!(
        err.contains("@1 and its policy is `fail`: invalid JSON"),
        "{err}"
    );
}

/// Runs a file-source job (`stages` and `format` as TOML) over `input`; returns the sink's
/// lines and the dead letters.
fn run_file_spec(extra: &str, input: &str) -> (Vec<String>, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
    let spec = format!(
        "name = \"file-job\"\n[source]\nkind = \"file\"\npath = \"in.jsonl\"\n{extra}\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n[dead_letters]\npath = \"dlq.jsonl\"\n"
    );
    std::fs::write(dir.path().join("job.toml"), spec).unwrap();
    let spec = PipelineSpec::load(&dir.path().join("job.toml")).unwrap();
    let options = RunOptions {
        brokers: None,
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: None,
        commit_every: Duration::from_secs(1),
        swappable: false,
        instance: Default::default(),
    };
    Pipeline::from_spec(&spec, &options).unwrap().run().unwrap();
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap_or_default();
    let dlq = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap_or_default();
    (
        out.lines().map(str::to_owned).collect(),
        dlq.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

#[test]
fn builtin_json_parse_gives_each_row_only_its_own_fields() {
    let input = "{\"a\":1}\n{\"b\":\"x\"}\n{\"a\":2,\"b\":\"y\"}\n{\"a\":null,\"c\":true}\n{}\n";
    let stage = "[[stages]]\nname = \"json\"\nkind = \"parse\"\nbuiltin = \"json\"";
    let (out, dead) = run_file_spec(stage, input);
    assert_eq!(
        out,
        [
            r#"{"a":1}"#,
            r#"{"b":"x"}"#,
            r#"{"a":2,"b":"y"}"#,
            r#"{"c":true}"#,
            r#"{}"#,
        ]
    );
    assert!(dead.is_empty(), "{dead:?}");
    // The same rows one per batch: the same output, whatever the batch-mates.
    let one_per_batch = format!("{stage}\n[batch]\nmax_records = 1\nmax_wait = \"10ms\"");
    let (alone, _) = run_file_spec(&one_per_batch, input);
    assert_eq!(alone, out);
}

#[test]
fn line_sink_dead_letters_a_formatted_record_with_a_line_break_instead_of_forging_one() {
    // `\n` in a customer name becomes a real line break in order-summary's text.
    let order = |customer: &str| {
        format!(
            r#"{{"customer":"{customer}","status":"NEW","region":"eu-west","amount":5,"ts":"2024-05-23T12:35:00Z"}}"#
        )
    };
    let input = [
        order("customer-1"),
        order(r"customer-2\n2024-05-23T12:35:00Z forged SHIPPED eu-west 999.00"),
        order("customer-3"),
    ]
    .join("\n");
    let stages = format!(
        "[[stages]]\nname = \"parse\"\nkind = \"parse\"\nmodule = \"{}\"\n[format]\nmodule = \"{}\"",
        common::wasm("udf_parse_orders").display(),
        common::wasm("udf_order_summary").display()
    );
    let (out, dead) = run_file_spec(&stages, &input);
    assert_eq!(
        out,
        [
            "2024-05-23T12:35:00Z customer-1 NEW eu-west 5.00",
            "2024-05-23T12:35:00Z customer-3 NEW eu-west 5.00",
        ]
    );
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["stage"], "format");
    assert_eq!(
        dead[0]["payload"],
        "2024-05-23T12:35:00Z customer-2\n2024-05-23T12:35:00Z forged SHIPPED eu-west 999.00 NEW eu-west 5.00"
    );
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.ends_with(&format!("out.jsonl: {}", rivulet::sink::LINE_BREAK)),
        "{error}"
    );
}

/// A Kafka-to-Kafka job asking for exactly-once, with `extra` lines and `replace`d parts.
fn exactly_once_spec(replace: &[(&str, &str)]) -> Result<rivulet::spec::PipelineSpec, String> {
    let mut text = r#"
name = "eos"
delivery = "exactly-once"
[source]
kind = "kafka"
topic = "orders"
[window]
key = "status"
size = "10s"
[aggregate]
builtin = [{ name = "n", fn = "count" }]
[sink]
kind = "kafka"
topic = "counts"
"#
    .to_owned();
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replacen(from, to, 1);
    }
    rivulet::spec::PipelineSpec::parse(&text, Path::new("eos.toml")).map_err(|e| e.to_string())
}

#[test]
fn exactly_once_is_refused_where_a_transaction_cannot_take_back_what_was_written() {
    let spec = exactly_once_spec(&[]).unwrap();
    assert_eq!(spec.delivery, rivulet::spec::Delivery::ExactlyOnce);
    assert_eq!(spec.commit_interval, None);
    let why = "delivery = \"exactly-once\" commits outputs and offsets in Kafka transactions";
    let cases: [(&[(&str, &str)], String); 5] = [
        (
            &[("kind = \"kafka\"\ntopic = \"orders\"", "kind = \"stdin\"")],
            format!("pipeline spec eos.toml: `source`: {why}: it needs a Kafka source"),
        ),
        (
            &[("kind = \"kafka\"\ntopic = \"counts\"", "kind = \"stdout\"")],
            format!(
                "pipeline spec eos.toml: `sink`: {why}: it needs a Kafka sink (a file or standard output cannot take back what an aborted transaction wrote)"
            ),
        ),
        (
            &[("[sink]", "[dead_letters]\npath = \"dlq.jsonl\"\n[sink]")],
            format!(
                "pipeline spec eos.toml: `dead_letters.path`: {why}: dead letters must go to a topic (`dead_letters.topic`), not a file"
            ),
        ),
        (
            &[(
                "size = \"10s\"",
                "size = \"10s\"\nlate_path = \"late.jsonl\"",
            )],
            format!(
                "pipeline spec eos.toml: `window.late_path`: {why}: late records must go to a topic (`late_topic`), not a file"
            ),
        ),
        (
            &[("delivery", "parallelism = 2\ndelivery")],
            format!(
                "pipeline spec eos.toml: `parallelism`: {why}: a window over several tasks of one process hands windows between tasks outside any transaction; run parallelism = 1 per process (more processes share the partitions through the consumer group), or exchange the windows over Kafka (`window.exchange = \"kafka\"`)"
            ),
        ),
    ];
    for (replace, expected) in cases {
        assert_eq!(exactly_once_spec(replace).unwrap_err(), expected);
    }
    // Over the partials topic, windows cross tasks and processes inside the transactions.
    let exchanged = exactly_once_spec(&[
        ("delivery", "parallelism = 2\ndelivery"),
        ("size = \"10s\"", "size = \"10s\"\nexchange = \"kafka\""),
    ]);
    assert!(exchanged.is_ok(), "{exchanged:?}");
    // Without a window, tasks share nothing: any parallelism.
    let stateless = exactly_once_spec(&[
        ("delivery", "parallelism = 2\ndelivery"),
        (
            "[window]\nkey = \"status\"\nsize = \"10s\"\n[aggregate]\nbuiltin = [{ name = \"n\", fn = \"count\" }]\n",
            "",
        ),
    ]);
    assert!(stateless.is_ok(), "{stateless:?}");
}

#[test]
fn commit_interval_is_a_duration_of_at_least_a_millisecond() {
    let spec = exactly_once_spec(&[("delivery", "commit_interval = \"250ms\"\ndelivery")]).unwrap();
    assert_eq!(spec.commit_interval, Some(Duration::from_millis(250)));
    assert_eq!(
        exactly_once_spec(&[("delivery", "commit_interval = \"0ms\"\ndelivery")]).unwrap_err(),
        "pipeline spec eos.toml: `commit_interval`: must be at least 1ms"
    );
    let bare = exactly_once_spec(&[("delivery", "commit_interval = 100\ndelivery")]).unwrap_err();
    assert!(
        bare.contains("a duration needs a unit: write \"100s\""),
        "{bare}"
    );
    let unknown = exactly_once_spec(&[("\"exactly-once\"", "\"twice\"")]).unwrap_err();
    assert!(
        unknown.contains("unknown variant `twice`, expected `at-least-once` or `exactly-once`"),
        "{unknown}"
    );
}
