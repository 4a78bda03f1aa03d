//! The workshop's UDFs, as components, against golden inputs (good, malformed, empty,
//! wrong-typed and huge), and against the same functions run natively.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use crate::common;

use common::{limits, load, runtime};
use rivulet::stage::wasm::{WasmAggregate, WasmFormat, WasmMap, WasmParse};
use rivulet::stage::{AggregateStage, FormatStage, MapStage, ParseStage};
use rivulet_native_udfs as native;
use rivulet_rows::{Batch, BatchBuilder, RawBatch, RowsOut, Scalar, WindowAcc};
use serde_json::{Value, json};

fn golden(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read(&path).expect("golden file");
    let text = text.strip_suffix(b"\n").unwrap_or(&text);
    text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

fn raw(payloads: &[Vec<u8>]) -> RawBatch {
    let mut batch = RawBatch::new();
    for (i, payload) in payloads.iter().enumerate() {
        batch.push(None, payload, 1_000, 0, i as i64, &[]);
    }
    batch
}

fn rows_json(out: &RowsOut) -> Vec<Value> {
    (0..out.rows.len as usize)
        .map(|i| Value::Object(out.rows.row_json(i)))
        .collect()
}

fn rows(values: &[Value]) -> Batch {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(value).expect("row");
    }
    builder.finish()
}

fn parse_orders_wasm() -> WasmParse {
    let runtime = runtime();
    WasmParse::new(
        &runtime,
        &load(&runtime, "udf_parse_orders"),
        "parse",
        limits(),
    )
    .expect("stage")
}

#[test]
fn parse_orders_keeps_good_orders_and_names_why_bad_ones_fail() {
    let input = golden("orders.jsonl");
    assert_eq!(input.len(), 14);
    let out = parse_orders_wasm().parse(&raw(&input)).expect("parse");
    assert_eq!(out.origins, [0, 1, 2, 13]);
    assert_eq!(
        rows_json(&out),
        [
            json!({"customer":"customer-042","status":"SHIPPED","region":"eu-west","amount":88.4,"ts":"2024-05-23T12:34:56Z","tsMillis":1716467696000i64}),
            json!({"customer":"customer-007","status":"PENDING","region":"us-east","amount":12.0,"ts":"2024-05-23T12:35:01Z","tsMillis":1716467701000i64}),
            json!({"customer":"customer-013","status":"SHIPPED","region":"ap-south","amount":640.15,"ts":"2024-05-23T14:35:07+02:00","tsMillis":1716467707000i64}),
            json!({"customer":"customer-042","status":"DELIVERED","region":"eu-west","amount":55.0,"ts":"2024-05-23T12:35:31Z","tsMillis":1716467731000i64}),
        ]
    );
    let errors: Vec<(u32, &str)> = out
        .errors
        .iter()
        .map(|e| (e.index, e.message.as_str()))
        .collect();
    let expected: [(u32, &str); 10] = [
        (3, "invalid JSON: EOF while parsing an object"),
        (4, "empty payload"),
        (
            5,
            "invalid JSON: invalid type: string \"lots\", expected f64",
        ),
        (6, "field `amount` must be a non-negative number, got -3"),
        (7, "field `status` is empty"),
        (8, "\"yesterday\" is not an ISO-8601 timestamp"),
        (9, "disagree"),
        (10, "unknown field `extra`"),
        (
            11,
            "invalid JSON: invalid type: integer `1`, expected a string",
        ),
        (12, "invalid JSON: invalid type: null"),
    ];
    assert_eq!(errors.len(), expected.len(), "{errors:?}");
    for ((index, message), (want_index, want)) in errors.iter().zip(expected) {
        assert_eq!(*index, want_index);
        assert!(
            message.contains(want),
            "record {index}: {message:?} should contain {want:?}"
        );
    }
}

#[test]
fn parse_orders_rejects_huge_and_binary_payloads_and_handles_empty_batches() {
    let mut stage = parse_orders_wasm();
    let huge = format!(
        r#"{{"customer":"{}","status":"NEW","region":"r","amount":1,"ts":"2024-05-23T12:35:20Z"}}"#,
        "c".repeat(200_000)
    );
    let out = stage
        .parse(&raw(&[
            huge.into_bytes(),
            vec![0xff, 0xfe, 0x00, 0x7b],
            b"{}".to_vec(),
        ]))
        .expect("parse");
    assert_eq!(out.rows.len, 0);
    let messages: Vec<&str> = out.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        messages[0].contains("exceeds the 65536-byte limit"),
        "{messages:?}"
    );
    assert!(messages[1].starts_with("invalid JSON"), "{messages:?}");
    assert!(
        messages[2].contains("missing field `customer`"),
        "{messages:?}"
    );

    let empty = stage.parse(&RawBatch::new()).expect("empty batch");
    assert_eq!((empty.rows.len, empty.errors.len()), (0, 0));
}

#[test]
fn parse_orders_component_matches_the_native_function() {
    let input = golden("orders.jsonl");
    let batch = raw(&input);
    let wasm = parse_orders_wasm().parse(&batch).expect("wasm");
    let native = native::parse_orders().parse(&batch).expect("native");
    assert_eq!(wasm, native);
}

/// A producer stamping real clock time: `tsMillis` in milliseconds, `ts` formatted to the
/// second (as `strftime("%Y-%m-%dT%H:%M:%SZ")` does).
fn clock_stamped_orders(count: i64) -> (Vec<Vec<u8>>, Vec<i64>) {
    let statuses = ["NEW", "PENDING", "SHIPPED", "DELIVERED", "CANCELLED"];
    let millis: Vec<i64> = (0..count)
        .map(|i| 1_716_467_640_000 + i * 1_337 + (i * 389) % 1000)
        .collect();
    let payloads = millis
        .iter()
        .enumerate()
        .map(|(i, &ms)| {
            format!(
                r#"{{"customer":"customer-{:03}","status":"{}","region":"eu-west","amount":{}.25,"ts":"{}","tsMillis":{ms}}}"#,
                i % 100,
                statuses[i % statuses.len()],
                10 + i,
                rivulet_sdk::time::iso8601(ms - ms.rem_euclid(1000))
            )
            .into_bytes()
        })
        .collect();
    (payloads, millis)
}

#[test]
fn parse_orders_keeps_clock_stamped_orders_and_their_precise_millis() {
    let (payloads, millis) = clock_stamped_orders(200);
    assert_eq!(millis.iter().filter(|ms| *ms % 1000 != 0).count(), 199);
    let batch = raw(&payloads);
    let out = parse_orders_wasm().parse(&batch).expect("parse");
    assert!(out.errors.is_empty(), "{:?}", &out.errors[..1]);
    assert_eq!(out.origins, (0..200).collect::<Vec<u32>>());
    let kept: Vec<i64> = (0..200)
        .map(
            |i| match out.rows.column("tsMillis").and_then(|c| c.scalar(i)) {
                Some(Scalar::Integer(ms)) => ms,
                other => panic!("row {i}: {other:?}"),
            },
        )
        .collect();
    assert_eq!(kept, millis);
    assert_eq!(out, native::parse_orders().parse(&batch).expect("native"));
}

#[test]
fn parse_orders_rejects_millis_outside_the_second_ts_names() {
    let order = |ts: &str, ms: i64| {
        format!(r#"{{"customer":"c","status":"NEW","region":"r","amount":1,"ts":"{ts}","tsMillis":{ms}}}"#)
            .into_bytes()
    };
    let out = parse_orders_wasm()
        .parse(&raw(&[
            order("2024-05-23T12:34:56Z", 1_716_467_696_999),
            order("2024-05-23T12:34:56Z", 1_716_467_697_000),
            order("2024-05-23T12:34:56Z", 1_716_467_695_999),
            order("2024-05-23T12:34:56.5Z", 1_716_467_696_600),
            order("2024-05-23T14:34:56.250+02:00", 1_716_467_696_250),
        ]))
        .expect("parse");
    assert_eq!(out.origins, [0, 4]);
    let errors: Vec<(u32, &str)> = out
        .errors
        .iter()
        .map(|e| (e.index, e.message.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (
                1,
                "fields `ts` (2024-05-23T12:34:56Z) and `tsMillis` (1716467697000) disagree: at the precision of `ts` (1000 ms) `tsMillis` must be in [1716467696000, 1716467697000)"
            ),
            (
                2,
                "fields `ts` (2024-05-23T12:34:56Z) and `tsMillis` (1716467695999) disagree: at the precision of `ts` (1000 ms) `tsMillis` must be in [1716467696000, 1716467697000)"
            ),
            (
                3,
                "fields `ts` (2024-05-23T12:34:56.5Z) and `tsMillis` (1716467696600) disagree: at the precision of `ts` (100 ms) `tsMillis` must be in [1716467696500, 1716467696600)"
            ),
        ]
    );
}

fn parsed_orders() -> Batch {
    let out = parse_orders_wasm()
        .parse(&raw(&golden("orders.jsonl")))
        .expect("parse");
    out.rows
}

/// Groups rows by `key` the way the pipeline does and runs add + finish.
fn aggregate(
    stage: &mut dyn AggregateStage,
    rows: &Batch,
    key: &str,
    window: (i64, i64),
) -> Vec<Value> {
    let column = rows.column(key).expect("key column");
    let mut keys: Vec<Scalar> = Vec::new();
    let groups: Vec<u32> = (0..rows.len as usize)
        .map(|i| {
            let k = column.scalar(i).expect("key");
            let pos = keys.iter().position(|x| *x == k).unwrap_or_else(|| {
                keys.push(k);
                keys.len() - 1
            });
            pos as u32
        })
        .collect();
    let empty = stage.create().expect("create");
    let accs = vec![empty; keys.len()];
    let added = stage.add(accs, rows, &groups).expect("add");
    assert!(added.errors.is_empty(), "{:?}", added.errors);
    let windows = keys
        .into_iter()
        .zip(added.accs)
        .map(|(key, acc)| WindowAcc {
            key,
            window_start: window.0,
            window_end: window.1,
            acc,
        })
        .collect();
    let out = stage.finish(windows).expect("finish");
    assert!(out.errors.is_empty());
    rows_json(&out)
}

const WINDOW: (i64, i64) = (1_716_467_670_000, 1_716_467_700_000);

#[test]
fn count_by_status_counts_each_status() {
    let runtime = runtime();
    let mut stage = WasmAggregate::new(
        &runtime,
        &load(&runtime, "udf_count_by_status"),
        "count",
        limits(),
    )
    .expect("stage");
    assert_eq!(stage.state_version().expect("version"), 1);
    let got = aggregate(&mut stage, &parsed_orders(), "status", WINDOW);
    assert_eq!(
        got,
        [
            json!({"window_start":WINDOW.0,"window_end":WINDOW.1,"status":"SHIPPED","order_count":2}),
            json!({"window_start":WINDOW.0,"window_end":WINDOW.1,"status":"PENDING","order_count":1}),
            json!({"window_start":WINDOW.0,"window_end":WINDOW.1,"status":"DELIVERED","order_count":1}),
        ]
    );
    assert_eq!(
        got,
        aggregate(
            &mut native::count_by_status(),
            &parsed_orders(),
            "status",
            WINDOW
        )
    );
}

#[test]
fn count_by_status_merges_partial_counts() {
    let runtime = runtime();
    let mut stage = WasmAggregate::new(
        &runtime,
        &load(&runtime, "udf_count_by_status"),
        "count",
        limits(),
    )
    .expect("stage");
    let merged = stage
        .merge(vec![
            (b"2".to_vec(), b"3".to_vec()),
            (b"0".to_vec(), b"1".to_vec()),
        ])
        .expect("merge");
    assert_eq!(merged, [b"5".to_vec(), b"1".to_vec()]);
    let err = stage
        .merge(vec![(b"2".to_vec(), b"not a count".to_vec())])
        .expect_err("bad state");
    assert!(
        err.to_string()
            .contains("merge failed: accumulator is not valid JSON (11 bytes): "),
        "{err}"
    );
}

#[test]
fn avg_amount_averages_per_status() {
    let runtime = runtime();
    let mut stage =
        WasmAggregate::new(&runtime, &load(&runtime, "udf_avg_amount"), "avg", limits())
            .expect("stage");
    let got = aggregate(&mut stage, &parsed_orders(), "status", WINDOW);
    assert_eq!(got[0]["avg_amount"], json!(364.28));
    assert_eq!(got[0]["order_count"], json!(2));
    assert_eq!(got[1]["avg_amount"], json!(12.0));
    assert_eq!(got[2]["avg_amount"], json!(55.0));
}

#[test]
fn aggregate_reports_rows_of_the_wrong_type_and_keeps_counting() {
    let runtime = runtime();
    let mut stage =
        WasmAggregate::new(&runtime, &load(&runtime, "udf_avg_amount"), "avg", limits())
            .expect("stage");
    // A null amount cannot be added; the other rows still count.
    let batch = rows(&[
        json!({"amount": 10.0}),
        json!({"amount": null}),
        json!({"amount": 30}),
    ]);
    let empty = stage.create().expect("create");
    let added = stage
        .add(vec![empty.clone()], &batch, &[0, 0, 0])
        .expect("add");
    assert_eq!(added.errors.len(), 1);
    assert_eq!(added.errors[0].index, 1);
    assert!(
        added.errors[0].message.contains("missing field \"amount\""),
        "{}",
        added.errors[0].message
    );
    let acc: Value = serde_json::from_slice(&added.accs[0]).expect("json acc");
    assert_eq!(acc, json!({"sum": 40.0, "count": 2}));
    // Text where a number belongs: every row of the batch is reported, none counts.
    let text = rows(&[json!({"amount": "ten"}), json!({"amount": "eleven"})]);
    let added = stage
        .add(vec![empty.clone(), empty], &text, &[0, 1])
        .expect("add");
    assert_eq!(
        added.errors.iter().map(|e| e.index).collect::<Vec<_>>(),
        [0, 1]
    );
    assert!(
        added.errors[0]
            .message
            .contains("field \"amount\": expected a number, found text"),
        "{}",
        added.errors[0].message
    );
    let untouched: Value = serde_json::from_slice(&added.accs[0]).expect("json acc");
    assert_eq!(untouched, json!({"sum": 0.0, "count": 0}));
}

#[test]
fn format_aggregate_writes_the_flink_sink_record() {
    let runtime = runtime();
    let mut stage = WasmFormat::new(
        &runtime,
        &load(&runtime, "udf_format_aggregate"),
        "format",
        limits(),
    )
    .expect("stage");
    let millis = rows(&[
        json!({"window_start":WINDOW.0,"window_end":WINDOW.1,"status":"SHIPPED","order_count":2}),
        json!({"window_start":WINDOW.0,"window_end":WINDOW.1,"status":"NEW","order_count":null}),
    ]);
    let out = stage.format(&millis).expect("format");
    assert_eq!(
        out.payloads.get(0).expect("payload"),
        br#"{"window_start":"2024-05-23T12:34:30Z","window_end":"2024-05-23T12:35:00Z","status":"SHIPPED","order_count":2}"#
    );
    assert_eq!(
        out.payloads.get(1),
        Some(&b""[..]),
        "a failed row keeps an empty slot"
    );
    assert_eq!(
        out.keys.as_ref().and_then(|k| k.get(0)),
        Some(&b"SHIPPED"[..])
    );
    assert_eq!(out.errors.iter().map(|e| e.index).collect::<Vec<_>>(), [1]);
    assert!(
        out.errors[0].message.contains("order_count"),
        "{}",
        out.errors[0].message
    );
    assert_eq!(
        out,
        native::format_aggregate().format(&millis).expect("native")
    );

    let text = rows(&[
        json!({"window_start":"2024-05-23T14:34:30+02:00","window_end":"2024-05-23T12:35:00Z","status":"NEW","order_count":7}),
        json!({"window_start":"soon","window_end":"2024-05-23T12:35:00Z","status":"NEW","order_count":1}),
    ]);
    let out = stage.format(&text).expect("format");
    assert_eq!(
        out.payloads.get(0).expect("payload"),
        br#"{"window_start":"2024-05-23T12:34:30Z","window_end":"2024-05-23T12:35:00Z","status":"NEW","order_count":7}"#
    );
    assert_eq!(out.errors.iter().map(|e| e.index).collect::<Vec<_>>(), [1]);
    assert!(
        out.errors[0]
            .message
            .contains("\"soon\" is not an ISO-8601 timestamp"),
        "{}",
        out.errors[0].message
    );
}

#[test]
fn order_summary_prints_one_line_per_order() {
    let runtime = runtime();
    let mut stage = WasmFormat::new(
        &runtime,
        &load(&runtime, "udf_order_summary"),
        "summary",
        limits(),
    )
    .expect("stage");
    let out = stage.format(&parsed_orders()).expect("format");
    let lines: Vec<&str> = out
        .payloads
        .iter()
        .map(|p| std::str::from_utf8(p).expect("utf8"))
        .collect();
    assert_eq!(
        lines,
        [
            "2024-05-23T12:34:56Z customer-042 SHIPPED eu-west 88.40",
            "2024-05-23T12:35:01Z customer-007 PENDING us-east 12.00",
            "2024-05-23T14:35:07+02:00 customer-013 SHIPPED ap-south 640.15",
            "2024-05-23T12:35:31Z customer-042 DELIVERED eu-west 55.00",
        ]
    );
    assert!(out.keys.is_none());
}

#[test]
fn high_value_filters_and_tags_orders() {
    let runtime = runtime();
    let mut stage =
        WasmMap::new(&runtime, &load(&runtime, "udf_high_value"), "map", limits()).expect("stage");
    let out = stage.map(&parsed_orders()).expect("map");
    assert_eq!(out.origins, [0, 2, 3]);
    let bands: Vec<&str> = (0..3)
        .map(|i| {
            out.rows
                .column("band")
                .and_then(|c| c.text_at(i))
                .expect("band")
        })
        .collect();
    assert_eq!(bands, ["high", "premium", "high"]);
    let wrong = stage.map(&rows(&[json!({"customer": 1})])).expect("map");
    assert_eq!(wrong.errors.len(), 1);
}

#[test]
fn sales_job_sums_per_store() {
    let runtime = runtime();
    let mut parse = WasmParse::new(
        &runtime,
        &load(&runtime, "udf_parse_sales"),
        "sales",
        limits(),
    )
    .expect("stage");
    let input: Vec<Vec<u8>> = [
        r#"{"store_id":"store-1","sale_amount":10.10,"sale_ts":1716467671000}"#,
        r#"{"store_id":"store-2","sale_amount":5,"sale_ts":"2024-05-23T12:34:32Z"}"#,
        r#"{"store_id":"store-1","sale_amount":0.2,"sale_ts":1716467673000}"#,
        r#"{"store_id":3,"sale_amount":1,"sale_ts":1716467673000}"#,
        r#"{"store_id":"store-1","sale_amount":"x","sale_ts":1716467673000}"#,
        r#"{"store_id":"","sale_amount":1,"sale_ts":1716467673000}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let parsed = parse.parse(&raw(&input)).expect("parse");
    assert_eq!(parsed.origins, [0, 1, 2, 3]);
    assert_eq!(
        parsed.errors.iter().map(|e| e.index).collect::<Vec<_>>(),
        [4, 5]
    );
    let mut sum = WasmAggregate::new(&runtime, &load(&runtime, "udf_sum_sales"), "sum", limits())
        .expect("stage");
    let got = aggregate(
        &mut sum,
        &parsed.rows,
        "store_id",
        (1_716_467_640_000, 1_716_467_700_000),
    );
    let totals: Vec<(String, f64, u64)> = got
        .iter()
        .map(|r| {
            (
                r["store_id"].as_str().unwrap_or_default().to_owned(),
                r["total_sales"].as_f64().unwrap_or(-1.0),
                r["sale_count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        totals,
        [
            ("store-1".to_owned(), 10.3, 2),
            ("store-2".to_owned(), 5.0, 1),
            ("3".to_owned(), 1.0, 1)
        ]
    );
}
