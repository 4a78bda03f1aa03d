//! The shipped pipeline specs are valid, and a file-source job gives exact results.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

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
