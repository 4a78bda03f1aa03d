//! The contract check at the Wasm boundary, for every world: components written against the
//! raw WIT (`host/tests/guests/breach`) break each rule on command, and the host fails the
//! whole call naming the breach, dead-letters its records once, and carries on exactly.
//! The SDK's own batches (short null bitmaps included) pass whole.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use crate::common;

use common::{limits, load, runtime};
use rivulet::assemble::RunOptions;
use rivulet::pipeline::Pipeline;
use rivulet::spec::PipelineSpec;
use rivulet::stage::wasm::{WasmAggregate, WasmFormat, WasmMap, WasmParse};
use rivulet::stage::{AggregateStage, FormatStage, MapStage, ParseStage};
use rivulet::udf::{ModuleCache, Runtime, UdfError};
use rivulet_rows::{Batch, BatchBuilder, RawBatch, RowsOut, Scalar, WindowAcc};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn raw(payloads: &[&str]) -> RawBatch {
    let mut batch = RawBatch::new();
    for (i, p) in payloads.iter().enumerate() {
        batch.push(None, p.as_bytes(), 0, 0, i as i64, &[]);
    }
    batch
}

fn commands(commands: &[&str]) -> Batch {
    let mut builder = BatchBuilder::new();
    for c in commands {
        builder.push(&json!({ "command": c })).unwrap();
    }
    builder.finish()
}

fn texts(out: &RowsOut) -> Vec<String> {
    let column = out.rows.column("command").expect("command column");
    (0..out.rows.len as usize)
        .map(|i| column.text_at(i).expect("text").to_owned())
        .collect()
}

/// The contract breach a call must fail with.
fn breach<T: std::fmt::Debug>(result: Result<T, UdfError>) -> String {
    match result {
        Err(UdfError::Contract { stage, reason }) => {
            assert_eq!(stage, "breach");
            reason
        }
        other => panic!("expected a contract breach, got {other:?}"),
    }
}

/// Breaches common to parse and map: one command among echoed ones, and the reason.
const ROW_BREACHES: [(&str, &str); 7] = [
    (
        "offset-past",
        "column `command`: offset 3 (114) is past the end of the data (14 bytes)",
    ),
    (
        "offset-back",
        "column `command`: offset 3 (1) is less than the one before it (2)",
    ),
    (
        "bad-utf8",
        "column `command`: row 2 is not valid UTF-8 text",
    ),
    (
        "bad-json",
        "column `doc`: row 2 is not valid JSON (EOF while parsing a value at line 1 column 5)",
    ),
    ("dup-column", "column name `command` appears more than once"),
    ("row-and-error", "record 2 has both output and an error"),
    ("two-errors", "reported more than one error for record 2"),
];

#[test]
fn a_parse_component_that_breaks_the_contract_fails_the_call_and_the_next_call_is_exact() {
    let runtime = runtime();
    let module = load(&runtime, "breach_guest_parse");
    let mut stage = WasmParse::new(&runtime, &module, "breach", limits()).unwrap();
    for (command, reason) in ROW_BREACHES {
        let err = breach(stage.parse(&raw(&["a", "b", command, "c"])));
        let expected = reason.replace("(14 bytes)", &format!("({} bytes)", 3 + command.len()));
        let expected = expected.replace("(114)", &format!("({})", 103 + command.len()));
        assert_eq!(err, expected, "{command}");
        let out = stage.parse(&raw(&["x", "fail", "y"])).unwrap();
        assert_eq!(texts(&out), ["x", "y"], "after {command}");
        assert_eq!(out.origins, [0, 2]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].index, 1);
    }
}

#[test]
fn a_map_component_that_breaks_the_contract_fails_the_call_and_the_next_call_is_exact() {
    let runtime = runtime();
    let module = load(&runtime, "breach_guest_map");
    let mut stage = WasmMap::new(&runtime, &module, "breach", limits()).unwrap();
    for (command, reason) in ROW_BREACHES {
        let err = breach(stage.map(&commands(&["a", "b", command, "c"])));
        let expected = reason.replace("(14 bytes)", &format!("({} bytes)", 3 + command.len()));
        let expected = expected.replace("(114)", &format!("({})", 103 + command.len()));
        assert_eq!(err, expected, "{command}");
        let out = stage.map(&commands(&["x", "y"])).unwrap();
        assert_eq!(texts(&out), ["x", "y"], "after {command}");
        assert_eq!(out.origins, [0, 1]);
    }
}

#[test]
fn a_format_component_with_bad_payload_offsets_or_errors_fails_the_call() {
    let runtime = runtime();
    let module = load(&runtime, "breach_guest_format");
    let mut stage = WasmFormat::new(&runtime, &module, "breach", limits()).unwrap();
    let cases = [
        (
            "payload-past",
            "payloads: offset 3 (115) is past the end of the data (15 bytes)",
        ),
        (
            "payload-back",
            "payloads: offset 3 (1) is less than the one before it (2)",
        ),
        ("row-and-error", "row 2 failed but has a non-empty payload"),
        ("two-errors", "reported more than one error for record 2"),
    ];
    for (command, reason) in cases {
        let err = breach(stage.format(&commands(&["a", "b", command, "c"])));
        assert_eq!(err, reason, "{command}");
        let out = stage.format(&commands(&["x", "fail", "yz"])).unwrap();
        let payloads: Vec<&[u8]> = out.payloads.iter().collect();
        assert_eq!(payloads, [&b"x"[..], b"", b"yz"], "after {command}");
        assert_eq!(out.errors.len(), 1);
    }
}

fn window(key: &str, acc: &[u8]) -> WindowAcc {
    WindowAcc {
        key: Scalar::Text(key.to_owned()),
        window_start: 0,
        window_end: 1000,
        acc: acc.to_vec(),
    }
}

#[test]
fn an_aggregate_must_answer_each_window_once_and_each_row_with_one_error_at_most() {
    let runtime = runtime();
    let module = load(&runtime, "breach_guest_aggregate");
    let mut stage = WasmAggregate::new(&runtime, &module, "breach", limits()).unwrap();

    let err = breach(stage.add(
        vec![b"0".to_vec()],
        &commands(&["a", "b", "two-errors"]),
        &[0, 0, 0],
    ));
    assert_eq!(err, "reported more than one error for record 2");
    let added = stage
        .add(
            vec![b"1".to_vec(), b"0".to_vec()],
            &commands(&["a", "fail", "b"]),
            &[0, 1, 1],
        )
        .unwrap();
    assert_eq!(added.accs, [b"2".to_vec(), b"1".to_vec()]);
    assert_eq!(added.errors.len(), 1);

    let cases = [
        (
            vec![
                window("a", b"2"),
                window("finish-all-to-first", b"1"),
                window("c", b"3"),
            ],
            "window 0 has more than one result",
        ),
        (
            vec![
                window("a", b"2"),
                window("finish-skip", b"1"),
                window("c", b"3"),
            ],
            "window 1 got neither a result nor an error",
        ),
        (
            vec![window("a", b"2"), window("row-and-error", b"1")],
            "record 1 has both output and an error",
        ),
    ];
    for (windows, reason) in cases {
        assert_eq!(breach(stage.finish(windows)), reason);
    }
    let out = stage
        .finish(vec![
            window("a", b"2"),
            window("fail", b"0"),
            window("c", b"3"),
        ])
        .unwrap();
    assert_eq!(out.origins, [0, 2]);
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].index, 1);
    let rows: Vec<Value> = (0..out.rows.len as usize)
        .map(|i| Value::Object(out.rows.row_json(i)))
        .collect();
    assert_eq!(
        rows,
        [
            json!({"key": "a", "count": 2}),
            json!({"key": "c", "count": 3})
        ]
    );
}

fn order(i: usize, coupon: bool) -> String {
    let ts = 1_716_467_696_000 + i as i64 * 1000;
    let coupon = if coupon { r#""coupon":"SPRING","# } else { "" };
    format!(
        r#"{{{coupon}"customer":"customer-{i:04}","status":"NEW","region":"eu-west","amount":{i}.5,"ts":"{}","tsMillis":{ts}}}"#,
        rivulet_sdk::time::iso8601(ts)
    )
}

#[test]
fn a_batch_of_1024_orders_where_a_field_appears_at_order_500_passes_whole() {
    let runtime = runtime();
    let module = load(&runtime, "udf_parse_orders");
    let mut stage = WasmParse::new(&runtime, &module, "parse-orders", limits()).unwrap();
    let orders: Vec<String> = (0..1024).map(|i| order(i, i >= 500)).collect();
    let payloads: Vec<&str> = orders.iter().map(String::as_str).collect();
    let out = stage.parse(&raw(&payloads)).unwrap();
    assert!(out.errors.is_empty(), "{:?}", &out.errors[..1]);
    assert_eq!(out.rows.len, 1024);
    assert_eq!(out.origins, (0..1024).collect::<Vec<u32>>());
    let coupon = out.rows.column("coupon").expect("coupon column");
    assert_eq!(
        coupon.nulls.len(),
        63,
        "the SDK's bitmap stops at the last null"
    );
    for i in 0..1024 {
        let expected = (i >= 500).then_some("SPRING");
        assert_eq!(coupon.text_at(i), expected, "order {i}");
        assert_eq!(coupon.is_null(i), i < 500, "order {i}");
    }
    let amount = out.rows.column("amount").unwrap();
    assert_eq!(amount.f64_at(1023), Some(1023.5));
}

/// Runs a job over `lines` from a file, `max_records` per batch; returns the sink's lines
/// and the dead letters.
fn run_job(stages: &str, lines: &[&str], max_records: usize) -> (Vec<String>, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), lines.join("\n") + "\n").unwrap();
    let spec = format!(
        "name = \"contract\"\n[source]\nkind = \"file\"\npath = \"in.txt\"\n{stages}\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n[dead_letters]\npath = \"dlq.jsonl\"\n[batch]\nmax_records = {max_records}\nmax_wait = \"1s\"\n"
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
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let out = read("out.jsonl").lines().map(str::to_owned).collect();
    let dlq = read("dlq.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, dlq)
}

fn module_path(name: &str) -> String {
    common::wasm(name).display().to_string()
}

fn stage_toml(name: &str, kind: &str, module: &str) -> String {
    format!(
        "[[stages]]\nname = \"{name}\"\nkind = \"{kind}\"\nmodule = \"{}\"\n",
        module_path(module)
    )
}

/// The dead letters' (stage, offset, payload, error), in order.
fn letters(dlq: &[Value]) -> Vec<(String, i64, String, String)> {
    dlq.iter()
        .map(|l| {
            (
                l["stage"].as_str().unwrap().to_owned(),
                l["source"]["offset"].as_i64().unwrap(),
                l["payload"].as_str().unwrap().to_owned(),
                l["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn echoed(commands: &[&str]) -> Vec<String> {
    commands
        .iter()
        .map(|c| json!({ "command": c }).to_string())
        .collect()
}

#[test]
fn a_job_dead_letters_each_record_of_a_breaching_parse_call_once_and_keeps_going() {
    let input = [
        "a1", "a2", "a3", "a4", "b1", "bad-utf8", "b3", "b4", "c1", "c2", "fail", "c4",
    ];
    let (out, dlq) = run_job(
        &stage_toml("breach", "parse", "breach_guest_parse"),
        &input,
        4,
    );
    assert_eq!(
        out,
        echoed(&["a1", "a2", "a3", "a4", "b1", "b3", "b4", "c1", "c2", "c4"]),
        "every other record is exact: the breaching call is isolated to its one record"
    );
    // Isolated: the breaching record alone fails (row 0 of the call that held only it).
    let reason =
        "stage `breach`: UDF broke the contract: column `command`: row 0 is not valid UTF-8 text";
    let expected: Vec<(String, i64, String, String)> = vec![
        (
            "breach".to_owned(),
            5,
            "bad-utf8".to_owned(),
            reason.to_owned(),
        ),
        (
            "breach".to_owned(),
            10,
            "fail".to_owned(),
            "refused on purpose".to_owned(),
        ),
    ];
    assert_eq!(letters(&dlq), expected);
}

#[test]
fn a_job_dead_letters_a_map_call_that_returns_a_row_and_an_error_for_one_record_once() {
    let commands = ["a1", "a2", "a3", "row-and-error", "c1", "c2"];
    let lines = echoed(&commands);
    let input: Vec<&str> = lines.iter().map(String::as_str).collect();
    let stages = "[[stages]]\nname = \"json\"\nkind = \"parse\"\nbuiltin = \"json\"\n".to_owned()
        + &stage_toml("breach", "map", "breach_guest_map");
    let (out, dlq) = run_job(&stages, &input, 2);
    assert_eq!(out, echoed(&["a1", "a2", "a3", "c1", "c2"]));
    let reason = "stage `breach`: UDF broke the contract: record 0 has both output and an error";
    assert_eq!(
        letters(&dlq),
        [("breach".to_owned(), 3, lines[3].clone(), reason.to_owned())]
    );
}

#[test]
fn a_formatter_with_bad_payload_offsets_writes_no_empty_lines_and_dead_letters_that_row_once() {
    let input = ["a1", "a2", "payload-past", "b2", "c1", "c2"];
    let stages = stage_toml("echo", "parse", "breach_guest_parse")
        + &format!(
            "[format]\nmodule = \"{}\"\n",
            module_path("breach_guest_format")
        );
    let (out, dlq) = run_job(&stages, &input, 2);
    assert_eq!(out, ["a1", "a2", "b2", "c1", "c2"]);
    let reason = "stage `format`: UDF broke the contract: payloads: offset 1 (112) is past the end of the data (12 bytes)";
    let got: Vec<(String, String)> = dlq
        .iter()
        .map(|l| {
            (
                l["payload"].as_str().unwrap().to_owned(),
                l["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(
            json!({"command": "payload-past"}).to_string(),
            reason.to_owned()
        ),]
    );
}

#[test]
fn inspect_refuses_what_run_refuses() {
    let runtime = runtime();
    let dir = tempfile::tempdir().unwrap();
    // Right export name, wrong type.
    let wrong_types = wat::parse_str(
        r#"(component
            (core module $m (func (export "f") (param i32) (result i32) local.get 0))
            (core instance $i (instantiate $m))
            (func (export "parse") (param "input" u32) (result u32) (canon lift (core func $i "f"))))"#,
    )
    .unwrap();
    // A WASI interface the sandbox does not provide.
    let unprovided = wat::parse_str(
        r#"(component
            (import "wasi:http/outgoing-handler@0.2.0" (instance (export "ping" (func))))
            (core module $m (func (export "f") (param i32) (result i32) local.get 0))
            (core instance $i (instantiate $m))
            (func (export "parse") (param "input" u32) (result u32) (canon lift (core func $i "f"))))"#,
    )
    .unwrap();
    for (name, bytes, says) in [
        (
            "wrong-types.wasm",
            wrong_types,
            "does not match the rivulet:udf@0.1.0 parse world",
        ),
        (
            "wasi-http.wasm",
            unprovided,
            "wasi:http/outgoing-handler@0.2.0",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let module = rivulet::udf::UdfModule::load(&runtime, &path).expect("loads: the names fit");
        let checked = rivulet::udf::instance::type_check(&runtime, &module).unwrap_err();
        let started = WasmParse::new(&runtime, &module, "inspect", limits())
            .err()
            .expect("run refuses it");
        assert_eq!(checked.to_string(), started.to_string(), "{name}");
        assert!(checked.to_string().contains(says), "{checked}");

        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args(["udf", "inspect"])
            .arg(&path)
            .env("RIVULET_CACHE_DIR", dir.path().join("cache"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: inspect accepted it");
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert!(
            output.stdout.is_empty(),
            "{name}: printed {:?}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    // And a real component still inspects.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["udf", "inspect"])
        .arg(common::wasm("udf_parse_orders"))
        .env("RIVULET_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("kind     parse"));
}
