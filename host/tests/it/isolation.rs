//! One poison record or window costs exactly one dead letter: a trapping batch is retried in
//! halves until the failure stands alone, `finish` runs in bounded chunks, and an
//! accumulator that would take the stage past its cap is refused for its key only.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::{load, runtime};
use rivulet::assemble::RunOptions;
use rivulet::pipeline::Pipeline;
use rivulet::spec::PipelineSpec;
use rivulet::stage::isolate;
use rivulet::stage::wasm::{WasmAggregate, WasmParse};
use rivulet::stage::{AggregateStage, ParseStage};
use rivulet::udf::{Limits, ModuleCache, Runtime};
use rivulet_rows::{RawBatch, Scalar, WindowAcc};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn batch(commands: &[String]) -> RawBatch {
    let mut batch = RawBatch::new();
    for (i, command) in commands.iter().enumerate() {
        batch.push(None, command.as_bytes(), 0, 0, i as i64, &[]);
    }
    batch
}

#[test]
fn a_parse_that_traps_on_one_record_of_1024_loses_only_that_record() {
    let runtime = runtime();
    let module = load(&runtime, "hostile_guest");
    let mut stage = WasmParse::new(&runtime, &module, "hostile", Limits::default()).unwrap();
    let commands: Vec<String> = (0..1024)
        .map(|i| {
            if i == 700 {
                "panic".to_owned()
            } else {
                format!("record-{i}")
            }
        })
        .collect();
    let calls_before = stage.sandbox().stats().calls;
    let contained = isolate::parse(&mut stage, &batch(&commands)).expect("isolated");
    assert!(contained.isolated, "the whole batch failed first");
    let out = contained.out;

    assert_eq!(out.errors.len(), 1, "{:?}", out.errors);
    assert_eq!(out.errors[0].index, 700);
    assert!(
        out.errors[0]
            .message
            .contains("hostile guest panics on purpose"),
        "{}",
        out.errors[0].message
    );
    let expected: Vec<u32> = (0..1024).filter(|&i| i != 700).collect();
    assert_eq!(out.origins, expected);
    assert_eq!(out.rows.len, 1023);
    let command = out.rows.column("command").unwrap();
    let outcome = out.rows.column("outcome").unwrap();
    for (row, &origin) in out.origins.iter().enumerate() {
        assert_eq!(
            command.text_at(row),
            Some(commands[origin as usize].as_str())
        );
        assert_eq!(outcome.text_at(row), Some("echo"));
    }
    // The first call, then at most two per halving (10 halvings for 1,024 records).
    let calls = stage.sandbox().stats().calls - calls_before;
    assert!(calls <= 1 + 2 * 10, "{calls} calls");
}

#[test]
fn a_batch_whose_call_failed_counts_as_failed_even_when_isolation_saves_its_other_records() {
    use rivulet::spec::OnError;
    use rivulet::transform::{Step, Transform};
    let runtime = runtime();
    let module = load(&runtime, "hostile_guest");
    let stage = WasmParse::new(&runtime, &module, "hostile", Limits::default()).unwrap();
    let mut transform = Transform {
        parse: Step {
            name: "parse".into(),
            policy: OnError::Drop,
            stage: Box::new(stage),
            shape: Default::default(),
        },
        maps: Vec::new(),
        stats: Default::default(),
        samples: None,
    };
    let clean: Vec<String> = (0..16).map(|i| format!("record-{i}")).collect();
    let mut poisoned = clean.clone();
    poisoned[9] = "panic".to_owned();
    let mut refused = Vec::new();
    for commands in [&clean, &poisoned, &clean] {
        let transformed = transform.run(&batch(commands)).unwrap();
        refused.extend(transformed.side.refused);
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(matches!(
        refused[0].what,
        rivulet::side_output::RefusedInput::Record(9)
    ));
    let stats = transform.stats["parse"];
    assert_eq!(
        (
            stats.records_in,
            stats.rows_out,
            stats.rejected,
            stats.failed_batches
        ),
        (48, 47, 1, 1)
    );
}

#[test]
fn isolation_keeps_per_record_errors_and_separates_several_poison_records() {
    let runtime = runtime();
    let module = load(&runtime, "hostile_guest");
    let mut stage = WasmParse::new(&runtime, &module, "hostile", Limits::default()).unwrap();
    let commands: Vec<String> = (0..100)
        .map(|i| match i {
            3 | 64 => "panic".to_owned(),
            10 => "fail".to_owned(),
            _ => format!("r{i}"),
        })
        .collect();
    let out = isolate::parse(&mut stage, &batch(&commands)).unwrap().out;
    let errors: Vec<(u32, bool)> = out
        .errors
        .iter()
        .map(|e| (e.index, e.message.contains("panics on purpose")))
        .collect();
    assert_eq!(errors, [(3, true), (10, false), (64, true)]);
    assert_eq!(out.errors[1].message, "refused on purpose");
    assert_eq!(out.rows.len, 97);
}

#[test]
fn a_stage_that_cannot_be_isolated_still_fails_whole_when_called_directly() {
    // Direct calls (a swap candidate's trial) keep failing the batch as a whole.
    let runtime = runtime();
    let module = load(&runtime, "hostile_guest");
    let mut stage = WasmParse::new(&runtime, &module, "hostile", Limits::default()).unwrap();
    let commands = vec!["a".to_owned(), "panic".to_owned()];
    assert!(stage.parse(&batch(&commands)).is_err());
}

fn window(key: &str, acc: Vec<u8>) -> WindowAcc {
    WindowAcc {
        key: Scalar::Text(key.to_owned()),
        window_start: 0,
        window_end: 60_000,
        acc,
    }
}

#[test]
fn finish_panicking_for_one_key_among_600_fails_only_that_window() {
    let runtime = runtime();
    let module = load(&runtime, "hostile_aggregate");
    let mut stage = WasmAggregate::new(&runtime, &module, "aggregate", Limits::default()).unwrap();
    let empty = stage.create().unwrap();
    // 600 windows: three chunks of at most 256; the poison window is in the second.
    let keys: Vec<String> = (0..600)
        .map(|i| {
            if i == 400 {
                "poison".to_owned()
            } else {
                format!("k{i}")
            }
        })
        .collect();
    let windows = keys.iter().map(|k| window(k, empty.clone())).collect();
    let out = isolate::finish(&mut stage, windows, (&Limits::default()).into()).unwrap();
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].index, 400);
    assert!(
        out.errors[0]
            .message
            .contains("hostile aggregate panics in finish on purpose"),
        "{}",
        out.errors[0].message
    );
    let expected: Vec<u32> = (0..600).filter(|&i| i != 400).collect();
    assert_eq!(out.origins, expected);
    let key = out.rows.column("key").unwrap();
    for (row, &origin) in out.origins.iter().enumerate() {
        assert_eq!(key.text_at(row), Some(keys[origin as usize].as_str()));
    }
}

/// Runs a file job: JSON lines in, the hostile aggregate keyed by `k` over one minute of
/// event time, results and dead letters out.
fn run_aggregate_job(lines: &[Value], aggregate_limits: &str) -> (Vec<Value>, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
    let spec = format!(
        r#"
name = "hostile-aggregate"
[source]
kind = "file"
path = "in.jsonl"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[window]
key = "k"
size = "60s"
time = "event"
timestamp = "ts"
[aggregate]
module = "{}"
[aggregate.limits]
{aggregate_limits}
[sink]
kind = "file"
path = "out.jsonl"
[dead_letters]
path = "dlq.jsonl"
"#,
        common::wasm("hostile_aggregate").display()
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
    (
        read_json_lines(&dir.path().join("out.jsonl")),
        read_json_lines(&dir.path().join("dlq.jsonl")),
    )
}

fn read_json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const T0: i64 = 1_716_467_700_000; // 2024-05-23T12:35:00Z, a minute boundary

#[test]
fn finish_panicking_for_one_key_among_100_dead_letters_one_window_and_finishes_99() {
    let mut lines = Vec::new();
    for i in 0..100 {
        let key = if i == 37 {
            "poison".to_owned()
        } else {
            format!("k{i:02}")
        };
        // Key i gets i % 3 + 1 rows.
        for j in 0..(i % 3 + 1) {
            lines.push(json!({"k": key, "ts": T0 + i * 100 + j}));
        }
    }
    let (out, dlq) = run_aggregate_job(&lines, "");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["stage"], "aggregate");
    let error = dlq[0]["error"].as_str().unwrap();
    assert!(
        error.contains("hostile aggregate panics in finish on purpose"),
        "{error}"
    );
    assert!(
        dlq[0]["payload"]
            .as_str()
            .unwrap()
            .contains(r#""key":"poison""#)
    );
    let mut got: Vec<(String, u64)> = out
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut expected: Vec<(String, u64)> = (0..100)
        .filter(|&i| i != 37)
        .map(|i| (format!("k{i:02}"), i % 3 + 1))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}

#[test]
fn add_panicking_on_one_row_dead_letters_that_row_only() {
    let mut lines = Vec::new();
    for i in 0..300i64 {
        let mut line = json!({"k": format!("k{}", i % 10), "ts": T0 + i});
        if i == 123 {
            line["cmd"] = json!("panic");
        }
        lines.push(line);
    }
    let (out, dlq) = run_aggregate_job(&lines, "");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["source"]["offset"], 123);
    assert!(
        dlq[0]["error"]
            .as_str()
            .unwrap()
            .contains("hostile aggregate panics in add on purpose"),
        "{}",
        dlq[0]["error"]
    );
    let mut got: Vec<(String, u64)> = out
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    // 30 rows per key; key k3 (row 123's) lost one.
    let expected: Vec<(String, u64)> = (0..10)
        .map(|k| (format!("k{k}"), if k == 3 { 29 } else { 30 }))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn an_accumulator_growing_past_the_stage_cap_is_refused_for_its_key_only() {
    const GROW: usize = 256 << 10;
    let mut lines = Vec::new();
    // `big` grows by 256 KiB per row, 5 rows; ten small keys add a row each around them.
    for i in 0..5i64 {
        lines.push(json!({"k": "big", "ts": T0 + i * 10, "grow": GROW}));
        for s in 0..2 {
            lines.push(
                json!({"k": format!("s{}", (i * 2 + s)), "ts": T0 + i * 10 + s + 1, "grow": 10}),
            );
        }
    }
    // Cap 896 KiB (3.5 rows of `big`): `big` keeps 3 rows, its 4th and 5th are refused.
    // The time limit is generous: this is about bytes, on a machine of any speed.
    let (out, dlq) = run_aggregate_job(
        &lines,
        "accumulator_bytes = 917504\nmemory_bytes = 67108864\ncpu_per_batch = 10000",
    );
    let offsets: Vec<u64> = dlq
        .iter()
        .map(|l| l["source"]["offset"].as_u64().unwrap())
        .collect();
    // Lines 0, 3, 6, 9, 12 are `big`'s rows.
    assert_eq!(offsets, [9, 12], "{dlq:?}");
    for letter in &dlq {
        assert_eq!(letter["stage"], "aggregate");
        let error = letter["error"].as_str().unwrap();
        assert!(
            error.starts_with(
                r#"accumulator limit of 896.0 KiB exceeded: the accumulator of key "big" in the window starting 2024-05-23T12:35:00Z would grow to 1.0 MiB"#
            ),
            "{error}"
        );
    }
    let mut got: Vec<(String, u64, u64)> = out
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap(),
                r["grown"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut expected = vec![("big".to_owned(), 3, 3 * GROW as u64)];
    expected.extend((0..10).map(|s| (format!("s{s}"), 1, 10)));
    expected.sort();
    assert_eq!(got, expected);
}
