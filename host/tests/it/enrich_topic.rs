//! A reference table from a Kafka topic (the embedded broker): read to its end before the
//! job takes a record, then followed while it runs. A record enriched after an update has
//! the new value and one enriched before it the old; a tombstone removes a key; a record
//! that is no row is refused and counted; `status` and `/metrics` show the table.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::kafka::{Read, TestBroker, produce, read_until, tombstone};
use common::wait_for_table;
use rivulet::assemble::RunOptions;
use rivulet::spec::PipelineSpec;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A table row: key, and the value as JSON.
fn row(region: &str, name: &str) -> (i32, String, Vec<u8>) {
    (
        0,
        region.to_owned(),
        json!({ "name": name }).to_string().into_bytes(),
    )
}

fn order(id: i64, region: &str) -> (i32, String, Vec<u8>) {
    let payload = json!({ "id": id, "region": region }).to_string();
    (0, id.to_string(), payload.into_bytes())
}

/// The `n` enriched rows of `topic`, as (id, name or null), once they are there.
fn enriched(address: &str, topic: &str, n: usize) -> Vec<(i64, Value)> {
    let records: Vec<Read> =
        read_until(address, topic, 1, Duration::from_secs(30), |r| r.len() >= n);
    assert_eq!(records.len(), n, "{records:?}");
    records
        .iter()
        .map(|r| {
            let row: Value = serde_json::from_slice(&r.payload).unwrap();
            (row["id"].as_i64().unwrap(), row["name"].clone())
        })
        .collect()
}

/// The job that enriches `orders` (JSON, from the start) with the table `regions` read from
/// `table` (a TOML source) into the topic `enriched`; and the flag that stops it.
fn enriching_job(address: &str, name: &str, table: &str) -> (Job, Arc<AtomicBool>) {
    let spec = PipelineSpec::parse(
        &format!(
            r#"
name = "{name}"
parallelism = 1
[source]
kind = "kafka"
topic = "orders"
assign = "all"
start = "earliest"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[[stages]]
name = "add-region"
kind = "enrich"
table = "regions"
on = "region"
columns = ["name"]
[[tables]]
name = "regions"
key = "region"
source = {table}
[sink]
kind = "kafka"
topic = "enriched"
[batch]
max_wait = "20ms"
"#
        ),
        Path::new("job.toml"),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let options = RunOptions {
        brokers: Some(address.to_owned()),
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: stop.clone(),
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    };
    (Job::from_spec(&spec, &options).unwrap(), stop)
}

#[test]
fn a_topic_table_is_read_before_the_first_record_and_followed_while_the_job_runs() {
    let broker = TestBroker::embedded();
    let address = broker.address();
    for topic in ["regions", "orders", "enriched"] {
        broker.topic(topic, 1);
    }
    produce(
        &address,
        "regions",
        &[
            row("eu-west", "Europe (Ireland)"),
            row("us-east", "US East (N. Virginia)"),
            (0, "broken".to_owned(), b"not json".to_vec()),
            row("eu-west", "Europe (Dublin)"),
        ],
    );
    let (mut job, stop) = enriching_job(
        &address,
        "enrich-from-topic",
        r#"{ kind = "kafka", topic = "regions" }"#,
    );
    let status = job.status.clone();
    // Read to its end before the job starts: the last value of a key won, the broken
    // record was refused.
    let table = status.snapshot().tables.remove(0);
    assert_eq!(table.name, "regions");
    assert_eq!(table.source, "Kafka topic regions");
    assert_eq!((table.rows, table.updates, table.rejected), (2, 3, 1));
    assert_eq!(
        table.last_rejection.as_deref(),
        Some("record regions/0@2: the value is not JSON: expected ident at line 1 column 2")
    );
    let loaded_at = table.updated_at_ms;
    let running = std::thread::spawn(move || job.run().map_err(|e| e.to_string()));

    produce(
        &address,
        "orders",
        &[order(1, "eu-west"), order(2, "us-east")],
    );
    assert_eq!(
        enriched(&address, "enriched", 2),
        [
            (1, json!("Europe (Dublin)")),
            (2, json!("US East (N. Virginia)"))
        ]
    );

    // An update while the job runs: used for the records after it.
    produce(&address, "regions", &[row("eu-west", "EU West (Dublin)")]);
    wait_for_table(&status, "after the update", |t| t.updates == 4);
    produce(
        &address,
        "orders",
        &[order(3, "eu-west"), order(4, "us-east")],
    );
    let rows = enriched(&address, "enriched", 4);
    assert_eq!(
        rows[2..],
        [
            (3, json!("EU West (Dublin)")),
            (4, json!("US East (N. Virginia)"))
        ]
    );
    assert_eq!(rows[0], (1, json!("Europe (Dublin)")), "not rewritten");

    // A tombstone removes the key: a miss (on_miss = "null": no name).
    tombstone(&address, "regions", "us-east");
    wait_for_table(&status, "after the tombstone", |t| t.deletes == 1);
    produce(
        &address,
        "orders",
        &[order(5, "us-east"), order(6, "eu-west")],
    );
    let rows = enriched(&address, "enriched", 6);
    assert_eq!(
        rows[4..],
        [(5, Value::Null), (6, json!("EU West (Dublin)"))]
    );

    let table = status.snapshot().tables.remove(0);
    assert_eq!((table.rows, table.updates, table.deletes), (1, 4, 1));
    assert_eq!((table.hits, table.misses), (5, 1));
    assert!(table.updated_at_ms >= loaded_at);
    let metrics = rivulet::http::metrics::encode(&status).unwrap();
    for line in [
        "rivulet_table_rows{table=\"regions\"} 1.0",
        "rivulet_table_updates_total{table=\"regions\"} 4",
        "rivulet_table_deletes_total{table=\"regions\"} 1",
        "rivulet_table_rejected_updates_total{table=\"regions\"} 1",
        "rivulet_table_lookup_hits_total{table=\"regions\"} 5",
        "rivulet_table_lookup_misses_total{table=\"regions\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let updated = format!(
        "rivulet_table_last_update_seconds{{table=\"regions\"}} {}",
        table.updated_at_ms as f64 / 1000.0
    );
    assert!(
        metrics.lines().any(|l| l == updated),
        "{updated} in\n{metrics}"
    );

    stop.store(true, Ordering::Relaxed);
    running.join().unwrap().unwrap();
}

/// Flink's upsert-kafka writes a JSON key (`'key.format' = 'json'`): an object holding the
/// key column. With `key_format = "json"` the row's key is that column (or a bare JSON
/// value); a key that is no JSON, or lacks the column, is refused and counted; a tombstone
/// with a JSON key deletes its row.
#[test]
fn a_topic_table_with_json_keys_is_keyed_by_the_key_column_inside_them() {
    let broker = TestBroker::embedded();
    let address = broker.address();
    for topic in ["regions", "orders", "enriched"] {
        broker.topic(topic, 1);
    }
    let keyed = |key: &str, name: &str| {
        (
            0,
            key.to_owned(),
            json!({ "name": name }).to_string().into_bytes(),
        )
    };
    produce(
        &address,
        "regions",
        &[
            keyed(r#"{"region":"eu-west"}"#, "Europe (Ireland)"),
            keyed(r#""us-east""#, "US East (N. Virginia)"),
            keyed(r#"{"region":"ap-south"}"#, "Asia Pacific (Mumbai)"),
            keyed("us-west", "not JSON"),
            keyed(r#"{"zone":"us-west"}"#, "no region in the key"),
        ],
    );
    tombstone(&address, "regions", r#"{"region":"ap-south"}"#);
    let (mut job, stop) = enriching_job(
        &address,
        "enrich-json-keys",
        r#"{ kind = "kafka", topic = "regions", key_format = "json" }"#,
    );
    let status = job.status.clone();
    let table = status.snapshot().tables.remove(0);
    assert_eq!(
        (table.rows, table.updates, table.deletes, table.rejected),
        (2, 3, 1, 2)
    );
    assert_eq!(
        table.last_rejection.as_deref(),
        Some("record regions/0@4: the JSON key has no `region`")
    );
    let running = std::thread::spawn(move || job.run().map_err(|e| e.to_string()));
    produce(
        &address,
        "orders",
        &[
            order(1, "eu-west"),
            order(2, "us-east"),
            order(3, "ap-south"),
            order(4, "us-west"),
        ],
    );
    assert_eq!(
        enriched(&address, "enriched", 4),
        [
            (1, json!("Europe (Ireland)")),
            (2, json!("US East (N. Virginia)")),
            (3, Value::Null),
            (4, Value::Null),
        ]
    );
    stop.store(true, Ordering::Relaxed);
    running.join().unwrap().unwrap();
}

#[test]
fn a_table_topic_that_does_not_exist_stops_the_job_at_start() {
    let broker = TestBroker::embedded();
    broker.topic("orders", 1);
    let spec = PipelineSpec::parse(
        r#"
name = "no-table"
[source]
kind = "kafka"
topic = "orders"
assign = "all"
[[stages]]
name = "add-region"
kind = "enrich"
table = "regions"
on = "region"
[[tables]]
name = "regions"
key = "region"
source = { kind = "kafka", topic = "no-such-topic" }
[sink]
kind = "stdout"
"#,
        Path::new("job.toml"),
    )
    .unwrap();
    let options = RunOptions {
        brokers: Some(broker.address()),
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(2)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    };
    let err = Job::from_spec(&spec, &options).err().unwrap().to_string();
    assert!(
        err.starts_with("table `regions`: topic `no-such-topic` does not exist on Kafka at "),
        "{err}"
    );
}
