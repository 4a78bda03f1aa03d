//! The sales workshop's SQL job (`pipelines/sales-per-store.sql`): Avro in through the
//! schema registry, 60 s event-time windows, an `upsert-kafka` table out with Avro keys and
//! values — planned (golden EXPLAIN), run on the embedded mock cluster with the development
//! registry and checked against sums computed here; DECIMAL sums and integer AVG as Flink
//! computes them; and the errors for what cannot run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use apache_avro::Schema;
use apache_avro::types::Value;
use common::kafka::{Read, TestBroker, produce, read_until, unique};
use rivulet::assemble::RunOptions;
use rivulet::format::avro;
use rivulet::registry::client::RegistryClient;
use rivulet::registry::server::RegistryServer;
use rivulet::sql::{SqlJob, plan_script};
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const SALES_SQL: &str = include_str!("../../../pipelines/sales-per-store.sql");
const SALE: &str = r#"{"type":"record","name":"StoreSale","fields":[{"name":"store_id","type":"string"},{"name":"sale_amount","type":"int"},{"name":"sale_ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
const T0: i64 = 1_700_000_040_000; // a minute boundary
const DEV_REGISTRY: &str = "http://127.0.0.1:8081";

fn plan(text: &str) -> SqlJob {
    plan_script(text, Path::new("job.sql")).expect("the script plans")
}

fn plan_error(text: &str) -> String {
    plan_script(text, Path::new("job.sql"))
        .expect_err("the script is refused")
        .to_string()
}

fn run_to_end(job: &SqlJob, brokers: Option<String>) -> Result<(), String> {
    let options = RunOptions {
        brokers,
        runtime: Runtime::new(ModuleCache::disabled()).expect("runtime"),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    };
    let mut job = Job::from_spec(&job.spec, &options).map_err(|e| e.to_string())?;
    job.run().map_err(|e| e.to_string())
}

/// The workshop script against a test registry, reading the topic to its end.
fn bounded(script: &str, registry: &str) -> String {
    script.replace(DEV_REGISTRY, registry).replace(
        "'scan.startup.mode' = 'earliest-offset',",
        "'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset',",
    )
}

/// The same job with the time attribute computed from epoch milliseconds, the other form
/// Flink accepts.
fn computed_time(script: &str) -> String {
    script
        .replace(
            "sale_ts TIMESTAMP(3),\n  WATERMARK FOR sale_ts AS sale_ts - INTERVAL '5' SECOND",
            "sale_ts BIGINT,\n  ts AS TO_TIMESTAMP_LTZ(sale_ts, 3),\n  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND",
        )
        .replace("DESCRIPTOR(sale_ts)", "DESCRIPTOR(ts)")
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
fn sales_script_explains_as_the_golden_plan() {
    let job = plan(SALES_SQL);
    let golden = std::fs::read_to_string(format!(
        "{}/tests/golden/sales-per-store-sql.explain",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(rivulet::sql::explain::explain(&job, 1), golden);
    // Kafka in, Kafka out: EXACTLY_ONCE runs the job in transactions, without a warning.
    assert!(job.warnings.is_empty(), "{:?}", job.warnings);
    assert_eq!(job.spec.delivery, rivulet::spec::Delivery::ExactlyOnce);
}

#[test]
fn sales_script_plans_avro_in_and_an_upsert_table_keyed_by_store_out() {
    use rivulet::spec::{BuiltinFn, KeyFields, KeyFormat, SinkFormat, SinkSpec, TimeDomain};
    let spec = plan(SALES_SQL).spec;
    assert_eq!(spec.name, "sales-per-store-sql");
    assert_eq!(spec.stages[0].builtin.as_deref(), Some("avro-confluent"));
    assert_eq!(spec.stages[0].registry.as_deref(), Some(DEV_REGISTRY));
    let window = spec.window.unwrap();
    assert_eq!(window.key.as_deref(), Some("store_id"));
    assert_eq!(window.size, Duration::from_secs(60));
    assert_eq!(window.time, TimeDomain::Event);
    assert_eq!(window.timestamp.as_deref(), Some("sale_ts"));
    assert_eq!(window.out_of_orderness, Duration::from_secs(5));
    let builtin = &spec.aggregate.unwrap().builtin;
    assert_eq!(builtin[0].function, BuiltinFn::Sum);
    assert_eq!(builtin[0].input.unwrap().to_string(), "INT");
    let SinkSpec::Kafka {
        topic,
        key,
        format,
        registry,
        key_format,
        columns,
        ..
    } = &spec.sink
    else {
        panic!("{:?}", spec.sink)
    };
    assert_eq!(topic, "sales-per-store-sql");
    assert_eq!(key, &Some(KeyFields(vec!["store_id".into()])));
    assert_eq!(*format, SinkFormat::AvroConfluent);
    assert_eq!(*key_format, Some(KeyFormat::AvroConfluent));
    assert_eq!(registry.as_deref(), Some(DEV_REGISTRY));
    let types: Vec<String> = columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.ty))
        .collect();
    assert_eq!(
        types,
        [
            "store_id STRING NOT NULL",
            "window_start TIMESTAMP(3)",
            "window_end TIMESTAMP(3)",
            "total_sales INT"
        ]
    );
    // The computed-column form plans the same window over the same field.
    let computed = plan(&computed_time(SALES_SQL)).spec;
    assert_eq!(
        computed.window.unwrap().timestamp.as_deref(),
        Some("sale_ts")
    );
}

/// StoreSale records over four minutes and their sums per (window start, store),
/// computed here; plus a JSON payload and a record of an unknown schema id.
/// Records to produce: (partition, key, payload).
type Records = Vec<(i32, String, Vec<u8>)>;
/// Sums per (window start, store).
type Sums = BTreeMap<(i64, String), i64>;

fn sales(schema: &Schema, id: u32) -> (Records, Sums) {
    let mut records = Vec::new();
    let mut expected = Sums::new();
    for i in 0..240i64 {
        let store = format!("store-{}", (i * 7) % 3 + 1);
        let amount = (i * 37 % 500 + 1) as i32;
        // Out of order by up to 3 s (the watermark allows 5 s).
        let ts = T0 + i * 1_000 - (i % 4) * 1_000;
        *expected
            .entry((ts - ts.rem_euclid(60_000), store.clone()))
            .or_default() += i64::from(amount);
        let value = Value::Record(vec![
            ("store_id".into(), Value::String(store.clone())),
            ("sale_amount".into(), Value::Int(amount)),
            ("sale_ts".into(), Value::TimestampMillis(ts)),
        ]);
        let body = apache_avro::to_avro_datum(schema, value).unwrap();
        records.push((0, store, avro::frame(id, &body)));
    }
    (records, expected)
}

/// The Avro string `text` in Confluent's wire format with schema id `id`, byte by byte:
/// magic 0, the id big-endian, the zig-zag varint length, the bytes.
fn confluent_avro_string_record(id: u32, text: &str) -> Vec<u8> {
    assert!(text.len() < 64, "one-byte length");
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push((text.len() as u8) << 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

fn sums_from_upsert_topic(
    out: &[Read],
    url: &str,
) -> (
    BTreeMap<(i64, String), i64>,
    std::collections::BTreeSet<u32>,
) {
    let mut reader = RegistryClient::new(url);
    let mut got = BTreeMap::new();
    let mut key_ids = std::collections::BTreeSet::new();
    for record in out {
        let (value_id, body) = avro::split(&record.payload).unwrap();
        let schema = reader.schema(value_id).unwrap();
        let value = apache_avro::from_avro_datum(&schema, &mut &body[..], None).unwrap();
        let Value::String(store) = field(&value, "store_id") else {
            panic!("{value:?}")
        };
        let Value::TimestampMillis(start) = field(&value, "window_start") else {
            panic!("{value:?}")
        };
        let Value::TimestampMillis(end) = field(&value, "window_end") else {
            panic!("{value:?}")
        };
        assert_eq!(end - start, 60_000);
        let Value::Int(total) = field(&value, "total_sales") else {
            panic!("{value:?}")
        };
        // The key: Flink's key record {store_id} in Confluent's wire format.
        let key = record.key.as_deref().expect("an upsert record has a key");
        let (key_id, _) = avro::split(key).unwrap();
        key_ids.insert(key_id);
        assert_eq!(
            key,
            confluent_avro_string_record(key_id, store),
            "a record of one string field is that string's Avro bytes"
        );
        assert!(
            got.insert((*start, store.clone()), i64::from(*total))
                .is_none(),
            "one result per window and store"
        );
    }
    (got, key_ids)
}

#[test]
fn sales_script_writes_each_window_and_store_sum_to_the_upsert_topic_keyed_by_avro_store_id() {
    let registry = RegistryServer::start("127.0.0.1:0").unwrap();
    let url = registry.url();
    let broker = TestBroker::from_env();
    let address = broker.address();
    let (input, output, name) = (
        unique("sales"),
        unique("sales-per-store-sql"),
        unique("sales-sql"),
    );
    for topic in [&input, &output, &format!("{name}-dlq")] {
        broker.topic(topic, 1);
    }
    let schema = Schema::parse_str(SALE).unwrap();
    let id = RegistryClient::new(&url)
        .register(&format!("{input}-value"), &schema)
        .unwrap();
    let (records, expected) = sales(&schema, id);
    produce(&address, &input, &records);

    // Both forms of the time attribute, one after the other, into the same topic.
    let script = bounded(SALES_SQL, &url)
        .replace("'topic' = 'sales'", &format!("'topic' = '{input}'"))
        .replace(
            "'topic' = 'sales-per-store-sql'",
            &format!("'topic' = '{output}'"),
        )
        .replace(
            "SET 'pipeline.name' = 'sales-per-store-sql'",
            &format!("SET 'pipeline.name' = '{name}'"),
        );
    run_to_end(&plan(&script), Some(address.clone())).unwrap();
    let out = read_until(&address, &output, 1, Duration::from_secs(30), |r| {
        r.len() >= expected.len()
    });
    let (got, key_ids) = sums_from_upsert_topic(&out, &url);
    assert_eq!(got, expected);
    assert_eq!(key_ids.len(), 1);

    // The key and value schemas, as Flink derives them, under TopicNameStrategy's subjects.
    let mut reader = RegistryClient::new(&url);
    let key_id = *key_ids.first().unwrap();
    let key_schema: serde_json::Value =
        serde_json::to_value(&*reader.schema(key_id).unwrap()).unwrap();
    assert_eq!(
        key_schema,
        serde_json::json!({"type":"record","name":"record","namespace":"org.apache.flink.avro.generated",
            "fields":[{"name":"store_id","type":"string"}]})
    );
    let (value_id, _) = avro::split(&out[0].payload).unwrap();
    let value_schema: serde_json::Value =
        serde_json::to_value(&*reader.schema(value_id).unwrap()).unwrap();
    let millis = serde_json::json!({"type":"long","logicalType":"timestamp-millis"});
    assert_eq!(
        value_schema,
        serde_json::json!({"type":"record","name":"record","namespace":"org.apache.flink.avro.generated",
            "fields":[
                {"name":"store_id","type":"string"},
                {"name":"window_start","type":["null",millis],"default":null},
                {"name":"window_end","type":["null",millis],"default":null},
                {"name":"total_sales","type":["null","int"],"default":null}]})
    );
    let subjects: Vec<String> = serde_json::from_str(
        &ureq::get(&format!("{url}/subjects"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        subjects,
        [
            format!("{input}-value"),
            format!("{output}-key"),
            format!("{output}-value"),
        ]
    );

    // The computed time attribute: the same sums, written again (upserts of the same keys).
    let again = computed_time(&script).replace(
        "'properties.group.id' = 'sales-per-store-sql'",
        "'properties.group.id' = 'sales-per-store-sql-2'",
    );
    run_to_end(&plan(&again), Some(address.clone())).unwrap();
    let out = read_until(&address, &output, 1, Duration::from_secs(30), |r| {
        r.len() >= 2 * expected.len()
    });
    assert_eq!(out.len(), 2 * expected.len());
    let (got, _) = sums_from_upsert_topic(&out[expected.len()..], &url);
    assert_eq!(got, expected);
}

#[test]
fn bad_avro_records_go_to_the_dead_letters_with_the_reason() {
    let registry = RegistryServer::start("127.0.0.1:0").unwrap();
    let url = registry.url();
    let broker = TestBroker::embedded();
    let address = broker.address();
    for topic in ["sales", "sales-per-store-sql", "sales-dlq"] {
        broker.topic(topic, 1);
    }
    let schema = Schema::parse_str(SALE).unwrap();
    let id = RegistryClient::new(&url)
        .register("sales-value", &schema)
        .unwrap();
    let (mut records, expected) = sales(&schema, id);
    records.insert(
        5,
        (0, "store-1".into(), br#"{"store_id":"store-1"}"#.to_vec()),
    );
    records.insert(9, (0, "store-2".into(), avro::frame(777, &[2, b'x'])));
    produce(&address, "sales", &records);
    let script = format!(
        "SET 'rivulet.dead-letters.topic' = 'sales-dlq';\n{}",
        bounded(SALES_SQL, &url)
    );
    run_to_end(&plan(&script), Some(address.clone())).unwrap();
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
            &*format!("schema id 777 is not in the schema registry at {url}"),
        ]
    );
    let out = read_until(
        &address,
        "sales-per-store-sql",
        1,
        Duration::from_secs(30),
        |r| r.len() >= expected.len(),
    );
    assert_eq!(sums_from_upsert_topic(&out, &url).0, expected);
    // Without a dead-letter setting the job stops at the first bad record, naming it (as
    // Flink fails on a record it cannot deserialize).
    let err = run_to_end(&plan(&bounded(SALES_SQL, &url)), Some(address.clone())).unwrap_err();
    assert!(
        err.contains("not Avro in Confluent's wire format: no magic byte 0"),
        "{err}"
    );
}

#[test]
fn a_registry_that_is_down_stops_the_sales_job_from_starting() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let broker = TestBroker::embedded();
    let err = run_to_end(&plan(&bounded(SALES_SQL, &url)), Some(broker.address())).unwrap_err();
    assert!(
        err.contains(&format!(
            "cannot start: the schema registry at {url} is unreachable: "
        )),
        "{err}"
    );
}

const UPSERT_SINK: &str = "CREATE TABLE out (store_id STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), total INT{pk}) WITH ('connector' = 'upsert-kafka', 'topic' = 'out', 'key.format' = 'avro-confluent', 'key.avro-confluent.url' = 'http://r', 'value.format' = 'avro-confluent', 'value.avro-confluent.url' = 'http://r'{extra});
INSERT INTO out SELECT store_id, window_start, window_end, SUM(sale_amount) FROM TABLE(TUMBLE(TABLE sales, DESCRIPTOR(sale_ts), INTERVAL '60' SECOND)) GROUP BY window_start, window_end, store_id;";

fn upsert_script(pk: &str, extra: &str) -> String {
    let sales = "CREATE TABLE sales (store_id STRING, sale_amount INT, sale_ts TIMESTAMP(3), WATERMARK FOR sale_ts AS sale_ts - INTERVAL '5' SECOND) WITH ('connector' = 'kafka', 'topic' = 'sales', 'format' = 'avro-confluent', 'avro-confluent.url' = 'http://r');\n";
    format!(
        "{sales}{}",
        UPSERT_SINK.replace("{pk}", pk).replace("{extra}", extra)
    )
}

/// `line:column` (from 1) of the first `needle` in `script`.
fn at(script: &str, needle: &str) -> String {
    let offset = script.find(needle).expect("the needle is in the script");
    let line = script[..offset].matches('\n').count() + 1;
    let column = offset - script[..offset].rfind('\n').map_or(0, |n| n + 1) + 1;
    format!("{line}:{column}")
}

#[test]
fn scripts_that_cannot_run_are_refused_naming_the_construct_and_position() {
    let pk = ", PRIMARY KEY (store_id) NOT ENFORCED";
    plan(&upsert_script(pk, ""));
    let script = upsert_script("", "");
    assert_eq!(
        plan_error(&script),
        format!(
            "{}: table `out`: 'upsert-kafka' tables require to define a PRIMARY KEY constraint (it names the columns written to the Kafka record key, and the key each update overwrites)",
            at(&script, "out (")
        )
    );
    let script = upsert_script(pk, ", 'value.avro-confluent.colour' = 'red'");
    assert_eq!(
        plan_error(&script),
        format!(
            "{}: table `out`: unknown option 'value.avro-confluent.colour' for the format 'avro-confluent'",
            at(&script, "'value.avro-confluent.colour'")
        )
    );
    let script = upsert_script(", PRIMARY KEY (store_id)", "");
    assert_eq!(
        plan_error(&script),
        format!(
            "{}: a PRIMARY KEY must be NOT ENFORCED: the data is not owned by the job, so the only supported mode is NOT ENFORCED (as in Flink)",
            at(&script, "PRIMARY KEY")
        )
    );
    let script = upsert_script(", PRIMARY KEY (shop) NOT ENFORCED", "");
    assert_eq!(
        plan_error(&script),
        format!(
            "{}: PRIMARY KEY: table `out` has no column `shop`",
            at(&script, "shop)")
        )
    );
    let script = upsert_script(pk, "").replace(", 'key.avro-confluent.url' = 'http://r'", "");
    assert_eq!(
        plan_error(&script),
        format!(
            "{}: table `out`: the format 'avro-confluent' needs the option 'key.avro-confluent.url' (the schema registry)",
            at(&script, "'key.format'")
        )
    );
    let script =
        upsert_script(pk, "").replace("'format' = 'avro-confluent'", "'format' = 'protobuf'");
    assert_eq!(
        plan_error(&script),
        format!(
            "{}: the format 'protobuf' is not supported yet (json, avro-confluent and csv are)",
            at(&script, "'format' = 'protobuf'")
        )
    );
}

#[test]
fn decimal_sums_are_exact_and_written_as_json_numbers_and_avg_of_int_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    // 1 000 prices of 0.10 and, per row, a quantity: the f64 sum of the prices drifts.
    let mut lines = String::new();
    let mut float_total = 0.0f64;
    let mut quantity_total = 0i64;
    for i in 0..1000i64 {
        let quantity = if i == 7 {
            "null".to_owned()
        } else {
            (i % 4).to_string()
        };
        if i != 7 {
            quantity_total += i % 4;
        }
        float_total += 0.1;
        lines.push_str(&format!(
            "{{\"shop\":\"s\",\"price\":0.1,\"quantity\":{quantity},\"ts\":{}}}\n",
            T0 + i
        ));
    }
    assert_ne!(float_total, 100.0, "the f64 sum drifts");
    std::fs::write(&input, lines).unwrap();
    let script = format!(
        "CREATE TABLE sales (shop STRING, price DECIMAL(10, 2), quantity INT, ts BIGINT,
           t AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR t AS t)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json');
         CREATE TABLE totals (window_start TIMESTAMP(3), window_end TIMESTAMP(3), shop STRING,
           revenue DECIMAL(12, 2), mean_price DECIMAL(38, 6), mean_quantity INT, sold BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'json',
           'json.timestamp-format.standard' = 'ISO-8601');
         INSERT INTO totals SELECT window_start, window_end, shop, SUM(price), AVG(price),
           AVG(quantity), COUNT(quantity)
         FROM TABLE(TUMBLE(TABLE sales, DESCRIPTOR(t), INTERVAL '1' MINUTE))
         GROUP BY window_start, window_end, shop;",
        input.display(),
        output.display()
    );
    run_to_end(&plan(&script), None).unwrap();
    let written = std::fs::read_to_string(&output).unwrap();
    // AVG(quantity) over 999 non-null quantities: truncated to an INT, as Flink does; the
    // null quantity is skipped by AVG and COUNT(quantity).
    let mean_quantity = quantity_total / 999;
    assert_eq!(
        written,
        format!(
            "{{\"window_start\":\"2023-11-14T22:14:00Z\",\"window_end\":\"2023-11-14T22:15:00Z\",\"shop\":\"s\",\"revenue\":100.00,\"mean_price\":0.100000,\"mean_quantity\":{mean_quantity},\"sold\":999}}\n"
        )
    );
}
