//! Avro in Confluent's wire format through a whole job (the embedded mock cluster and the
//! development registry, in process): sums per store and minute written back as Avro with
//! registered schemas; a payload without the magic byte and an unknown schema id go to the
//! dead letters with the reason; a registry that is down stops the job from starting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use apache_avro::Schema;
use apache_avro::types::Value;
use common::kafka::{TestBroker, produce, read_until};
use rivulet::assemble::RunOptions;
use rivulet::format::avro;
use rivulet::pipeline::Pipeline;
use rivulet::registry::client::RegistryClient;
use rivulet::registry::server::RegistryServer;
use rivulet::spec::PipelineSpec;
use rivulet::udf::{ModuleCache, Runtime};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const SALE: &str = r#"{"type":"record","name":"StoreSale","fields":[{"name":"store_id","type":"string"},{"name":"sale_amount","type":"int"},{"name":"sale_ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
const T0: i64 = 1_700_000_040_000; // a minute boundary

fn spec(registry: &str, topic: &str, out: &str, dlq: &str) -> String {
    format!(
        r#"
name = "sales-avro"
[source]
kind = "kafka"
topic = "{topic}"
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
[aggregate]
builtin = [{{ name = "total", fn = "sum", field = "sale_amount" }}]
[sink]
kind = "kafka"
topic = "{out}"
format = "avro-confluent"
registry = "{registry}"
[dead_letters]
topic = "{dlq}"
"#
    )
}

fn run(spec: &str, brokers: &str) -> Result<(), String> {
    let spec = PipelineSpec::parse(spec, Path::new("test.toml")).map_err(|e| e.to_string())?;
    let options = RunOptions {
        brokers: Some(brokers.to_owned()),
        runtime: Runtime::new(ModuleCache::disabled()).expect("runtime"),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    };
    let mut pipeline = Pipeline::from_spec(&spec, &options).map_err(|e| e.to_string())?;
    pipeline.run().map_err(|e| e.to_string())
}

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    let Value::Record(fields) = record else {
        panic!("not a record: {record:?}")
    };
    let value = &fields.iter().find(|(n, _)| n == name).unwrap().1;
    match value {
        Value::Union(_, inner) => inner,
        other => other,
    }
}

#[test]
fn avro_sales_are_summed_per_store_and_minute_and_written_as_registered_avro() {
    let registry = RegistryServer::start("127.0.0.1:0").unwrap();
    let url = registry.url();
    let broker = TestBroker::embedded();
    let address = broker.address();
    for topic in ["sales", "sales-per-store", "sales-dlq"] {
        broker.topic(topic, 1);
    }
    let mut writer = RegistryClient::new(&url);
    let schema = Schema::parse_str(SALE).unwrap();
    let id = writer.register("sales-value", &schema).unwrap();
    let mut records = Vec::new();
    let mut expected: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for i in 0..150i64 {
        let store = format!("store-{}", i % 3 + 1);
        let amount = (i * 37 % 500 + 1) as i32;
        let ts = T0 + i * 1_000;
        *expected
            .entry((ts - ts % 60_000, store.clone()))
            .or_default() += i64::from(amount);
        let value = Value::Record(vec![
            ("store_id".into(), Value::String(store.clone())),
            ("sale_amount".into(), Value::Int(amount)),
            ("sale_ts".into(), Value::TimestampMillis(ts)),
        ]);
        let body = apache_avro::to_avro_datum(&schema, value).unwrap();
        records.push((0, store, avro::frame(id, &body)));
    }
    // Bad input: JSON (no magic byte), and a schema id the registry does not have.
    records.insert(
        10,
        (0, "store-1".into(), br#"{"store_id":"store-1"}"#.to_vec()),
    );
    records.insert(20, (0, "store-2".into(), avro::frame(999, &[2, b'x'])));
    produce(&address, "sales", &records);

    run(
        &spec(&url, "sales", "sales-per-store", "sales-dlq"),
        &address,
    )
    .unwrap();

    let out = read_until(
        &address,
        "sales-per-store",
        1,
        Duration::from_secs(30),
        |r| r.len() >= expected.len(),
    );
    let mut reader = RegistryClient::new(&url);
    let mut got: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for record in &out {
        let (value_id, body) = avro::split(&record.payload).unwrap();
        let value_schema = reader.schema(value_id).unwrap();
        let value = apache_avro::from_avro_datum(&value_schema, &mut &body[..], None).unwrap();
        let Value::String(start) = field(&value, "window_start") else {
            panic!("{value:?}")
        };
        let Value::String(store) = field(&value, "store_id") else {
            panic!("{value:?}")
        };
        let Value::Long(total) = field(&value, "total") else {
            panic!("{value:?}")
        };
        let key = record.key.as_deref().unwrap();
        let (key_id, key_body) = avro::split(key).unwrap();
        assert_eq!(*reader.schema(key_id).unwrap(), Schema::String);
        let key = apache_avro::from_avro_datum(&Schema::String, &mut &key_body[..], None).unwrap();
        assert_eq!(key, Value::String(store.clone()));
        let start = rivulet_sdk::time::parse_iso8601(start).unwrap();
        assert!(got.insert((start, store.clone()), *total).is_none());
    }
    assert_eq!(got, expected);
    // The value schema is registered under <topic>-value, the key's under <topic>-key.
    let subjects = ureq::get(&format!("{url}/subjects"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let subjects: Vec<String> = serde_json::from_str(&subjects).unwrap();
    assert_eq!(
        subjects,
        [
            "sales-per-store-key",
            "sales-per-store-value",
            "sales-value"
        ]
    );
    let dead = read_until(&address, "sales-dlq", 1, Duration::from_secs(30), |r| {
        r.len() >= 2
    });
    let reasons: Vec<&str> = dead
        .iter()
        .map(|r| r.headers["rivulet.error"].as_str())
        .collect();
    assert_eq!(
        reasons,
        [
            "not Avro in Confluent's wire format: no magic byte 0 (the payload starts with 0x7b)",
            &*format!("schema id 999 is not in the schema registry at {url}"),
        ]
    );
    assert_eq!(dead[0].payload, br#"{"store_id":"store-1"}"#);
    assert_eq!(dead[1].payload, avro::frame(999, &[2, b'x']));
}

#[test]
fn a_registry_that_is_down_stops_the_job_from_starting_with_the_reason() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let broker = TestBroker::embedded();
    let err = run(&spec(&url, "sales", "out", "dlq"), &broker.address()).unwrap_err();
    assert!(
        err.contains(&format!(
            "cannot start: the schema registry at {url} is unreachable: "
        )),
        "{err}"
    );
}

#[test]
fn seed_sales_in_avro_registers_store_sale_and_writes_framed_records_keyed_by_store() {
    let registry = RegistryServer::start("127.0.0.1:0").unwrap();
    let url = registry.url();
    let broker = TestBroker::embedded();
    let address = broker.address();
    broker.topic("sales", 1);
    let seed = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
            .args(["seed", "sales", "--brokers", &address, "--rate", "0"])
            .args(args)
            .output()
            .unwrap()
    };
    let refused = seed(&["--format", "avro", "--count", "1"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--format avro needs --registry URL"),
        "{stderr}"
    );

    let done = seed(&[
        "--format",
        "avro",
        "--registry",
        &url,
        "--count",
        "9",
        "--seed",
        "3",
    ]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let records = read_until(&address, "sales", 1, Duration::from_secs(30), |r| {
        r.len() >= 9
    });
    assert_eq!(records.len(), 9);
    let mut reader = RegistryClient::new(&url);
    let mut stores = std::collections::BTreeSet::new();
    for record in &records {
        let (id, body) = avro::split(&record.payload).unwrap();
        let schema = reader.schema(id).unwrap();
        assert_eq!(*schema, Schema::parse_str(SALE).unwrap());
        let value = avro::decode(&schema, id, body).unwrap();
        let Value::String(store) = field(&value, "store_id") else {
            panic!("{value:?}")
        };
        assert_eq!(record.key.as_deref(), Some(store.as_bytes()));
        assert!(matches!(field(&value, "sale_amount"), Value::Int(1..=500)));
        assert!(matches!(
            field(&value, "sale_ts"),
            Value::TimestampMillis(_)
        ));
        stores.insert(store.clone());
    }
    assert!(stores.len() > 1, "{stores:?}");
    // Registered under TopicNameStrategy's subject.
    let latest = ureq::get(&format!("{url}/subjects/sales-value/versions/latest"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(latest.contains("\"id\":1"), "{latest}");
}
