//! Interoperability with a client rivulet did not write: Confluent's Python client
//! (`confluent_kafka`'s AvroSerializer and SchemaRegistryClient) produces StoreSale records
//! through `rivulet registry`; a rivulet job (avro-confluent parse → 60 s event-time windows
//! keyed by store → sum → Kafka sink in avro-confluent) reads them; the Python client reads
//! the results back with AvroDeserializer, and every (window, store) sum must be exact.
//!
//! Needs the virtualenv at `~/.cache/rivulet/venv` with confluent-kafka and fastavro (CI
//! sets `RIVULET_REQUIRE_PYTHON`, so there a missing venv fails the test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::kafka::TestBroker;
use common::registry::registry;
use rivulet::assemble::RunOptions;
use rivulet::pipeline::Pipeline;
use rivulet::spec::PipelineSpec;
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const SALES: usize = 200;
const START_MS: i64 = 1_700_000_030_000; // 50 s into a minute: 200 s of sales span 5 windows

/// The venv's Python, or None (with the reason printed) when the test may be skipped.
fn python() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let python = home.join(".cache/rivulet/venv/bin/python");
    if python.is_file() {
        return Some(python);
    }
    assert!(
        std::env::var_os("RIVULET_REQUIRE_PYTHON").is_none(),
        "RIVULET_REQUIRE_PYTHON is set but {} is missing (create it: python3 -m venv ~/.cache/rivulet/venv && ~/.cache/rivulet/venv/bin/pip install confluent-kafka fastavro requests attrs cachetools httpx authlib certifi)",
        python.display()
    );
    println!(
        "SKIPPED: {} is missing (set RIVULET_REQUIRE_PYTHON to make this a failure)",
        python.display()
    );
    None
}

fn script(python: &Path, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/store_sales.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "store_sales.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn spec(registry: &str) -> String {
    format!(
        r#"
name = "sales-per-store-avro"
[source]
kind = "kafka"
topic = "sales-avro"
assign = "all"
start = "earliest"
bounded = true
[[stages]]
name = "parse-sales"
kind = "parse"
builtin = "avro-confluent"
registry = "{registry}"
[window]
key = "store_id"
size = "60s"
time = "event"
timestamp = "sale_ts"
out_of_orderness = "5s"
[aggregate]
builtin = [{{ name = "total_sales", fn = "sum", field = "sale_amount" }}]
[sink]
kind = "kafka"
topic = "sales-per-store-avro"
format = "avro-confluent"
registry = "{registry}"
"#
    )
}

#[test]
fn confluents_python_serializer_in_rivulet_sums_out_confluents_deserializer_reads_them() {
    let Some(python) = python() else { return };
    let (_registry, url, _) = registry();
    let broker = TestBroker::embedded();
    let address = broker.address();
    broker.topic("sales-avro", 1);
    broker.topic("sales-per-store-avro", 1);
    broker.topic("sales-per-store-avro-dlq", 1);

    let produced = script(
        &python,
        &[
            "produce",
            &address,
            &url,
            "sales-avro",
            &SALES.to_string(),
            &START_MS.to_string(),
        ],
    );
    let mut expected = BTreeMap::new();
    for line in produced.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = (
            v["window_start_ms"].as_i64().unwrap(),
            v["store_id"].as_str().unwrap().to_owned(),
        );
        expected.insert(key, v["total"].as_i64().unwrap());
    }
    assert_eq!(expected.len(), 5 * 3, "{produced}");

    let spec = PipelineSpec::parse(&spec(&url), Path::new("sales-avro.toml")).unwrap();
    let options = RunOptions {
        brokers: Some(address.clone()),
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    };
    Pipeline::from_spec(&spec, &options).unwrap().run().unwrap();

    let consumed = script(
        &python,
        &[
            "consume",
            &address,
            &url,
            "sales-per-store-avro",
            &expected.len().to_string(),
        ],
    );
    let mut got = BTreeMap::new();
    for line in consumed.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let value = &v["value"];
        let store = value["store_id"].as_str().unwrap().to_owned();
        assert_eq!(v["key"], store, "{line}");
        let start =
            rivulet_sdk::time::parse_iso8601(value["window_start"].as_str().unwrap()).unwrap();
        let end = rivulet_sdk::time::parse_iso8601(value["window_end"].as_str().unwrap()).unwrap();
        assert_eq!(end - start, 60_000, "{line}");
        let previous = got.insert((start, store), value["total_sales"].as_i64().unwrap());
        assert!(previous.is_none(), "a window twice: {line}");
    }
    assert_eq!(got, expected);
}

const SALES_SQL: &str = include_str!("../../../pipelines/sales-per-store.sql");

/// The workshop's SQL job as written (upsert-kafka, Avro key and value), against the test's
/// registry and bounded: Confluent's AvroDeserializer reads back both the key (Flink's key
/// record `{store_id}`) and the value of every result.
#[test]
fn confluents_deserializer_reads_the_sql_jobs_upsert_keys_and_values() {
    let Some(python) = python() else { return };
    let (_registry, url, _) = registry();
    let broker = TestBroker::embedded();
    let address = broker.address();
    for topic in ["sales", "sales-per-store-sql", "sales-per-store-sql-dlq"] {
        broker.topic(topic, 1);
    }
    let produced = script(
        &python,
        &[
            "produce",
            &address,
            &url,
            "sales",
            &SALES.to_string(),
            &START_MS.to_string(),
        ],
    );
    let mut expected = BTreeMap::new();
    for line in produced.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let key = (
            v["window_start_ms"].as_i64().unwrap(),
            v["store_id"].as_str().unwrap().to_owned(),
        );
        expected.insert(key, v["total"].as_i64().unwrap());
    }
    let sql = SALES_SQL.replace("http://127.0.0.1:8081", &url).replace(
        "'scan.startup.mode' = 'earliest-offset',",
        "'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',",
    );
    let job = rivulet::sql::plan_script(&sql, Path::new("sales-per-store.sql")).unwrap();
    let options = RunOptions {
        brokers: Some(address.clone()),
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    };
    rivulet::task::Job::from_spec(&job.spec, &options)
        .unwrap()
        .run()
        .unwrap();

    let consumed = script(
        &python,
        &[
            "consume",
            &address,
            &url,
            "sales-per-store-sql",
            &expected.len().to_string(),
        ],
    );
    let mut got = BTreeMap::new();
    for line in consumed.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let value = &v["value"];
        let store = value["store_id"].as_str().unwrap().to_owned();
        assert_eq!(v["key"], serde_json::json!({ "store_id": store }), "{line}");
        let start = value["window_start"].as_i64().unwrap();
        assert_eq!(
            value["window_end"].as_i64().unwrap() - start,
            60_000,
            "{line}"
        );
        let previous = got.insert((start, store), value["total_sales"].as_i64().unwrap());
        assert!(previous.is_none(), "a window twice: {line}");
    }
    assert_eq!(got, expected);
}
