//! SQL joins with a reference table: Flink's lookup join (`FOR SYSTEM_TIME AS OF
//! o.proc_time`) and a plain JOIN against a filesystem table plan to an `enrich` stage and
//! give the join computed here from the input; other joins are refused, named; the
//! workshop's `pipelines/orders-per-region.sql` plans.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use rivulet::assemble::RunOptions;
use rivulet::spec::{OnMiss, StageKind, TableSource, TopicKeyFormat};
use rivulet::sql::SqlJob;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const REGIONS: [(&str, &str, &str); 4] = [
    ("eu-west", "Europe (Ireland)", "Ireland"),
    ("us-east", "US East (N. Virginia)", "United States"),
    ("us-west", "US West (Oregon)", "United States"),
    ("ap-south", "Asia Pacific (Mumbai)", "India"),
];

/// Orders over known regions, an unknown one and none.
fn orders() -> Vec<(i64, Option<&'static str>, i64)> {
    let regions = [
        Some("eu-west"),
        Some("us-east"),
        Some("mars"),
        Some("us-west"),
        None,
        Some("ap-south"),
        Some("eu-west"),
    ];
    (0..150i64)
        .map(|i| (i, regions[(i % 7) as usize], 1_716_467_700_000 + i * 300))
        .collect()
}

fn name_of(region: Option<&str>) -> Option<(&'static str, &'static str)> {
    let region = region?;
    REGIONS.iter().find(|r| r.0 == region).map(|r| (r.1, r.2))
}

const TABLES: &str = "CREATE TABLE orders (id BIGINT, region STRING, tsMillis BIGINT,
  proc_time AS PROCTIME(), ts AS TO_TIMESTAMP_LTZ(tsMillis, 3),
  WATERMARK FOR ts AS ts - INTERVAL '0' SECOND)
WITH ('connector' = 'filesystem', 'path' = 'orders.jsonl', 'format' = 'json');
CREATE TABLE regions (region STRING, name STRING, country STRING, PRIMARY KEY (region) NOT ENFORCED)
WITH ('connector' = 'filesystem', 'path' = 'regions.jsonl', 'format' = 'json');
SET 'parallelism.default' = '2';
";

/// A scratch folder with the orders and the region table.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for (id, region, ts) in orders() {
        let mut row = json!({"id": id, "tsMillis": ts});
        if let Some(region) = region {
            row["region"] = json!(region);
        }
        text.push_str(&format!("{row}\n"));
    }
    std::fs::write(dir.path().join("orders.jsonl"), text).unwrap();
    let regions: String = REGIONS
        .iter()
        .map(|(r, n, c)| format!("{}\n", json!({"region": r, "name": n, "country": c})))
        .collect();
    std::fs::write(dir.path().join("regions.jsonl"), regions).unwrap();
    dir
}

fn plan_in(dir: &Path, text: &str) -> Result<SqlJob, String> {
    let path = dir.join("job.sql");
    std::fs::write(&path, text).unwrap();
    rivulet::sql::load(&path).map_err(|e| {
        let message = e.to_string();
        let prefix = format!("{}:", path.display());
        message.strip_prefix(&prefix).unwrap_or(&message).to_owned()
    })
}

fn run(job: &SqlJob) {
    let options = RunOptions {
        brokers: None,
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(5)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    };
    Job::from_spec(&job.spec, &options).unwrap().run().unwrap();
}

fn rows(path: &Path) -> Vec<Value> {
    let mut rows: Vec<Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.sort_by_key(|r| r["id"].as_i64());
    rows
}

/// Runs `SELECT o.id, r.name, r.country FROM orders AS o <join> ON o.region = r.region`.
fn enriched(join: &str) -> (SqlJob, Vec<Value>) {
    let dir = scratch();
    let script = format!(
        "{TABLES}CREATE TABLE enriched (id BIGINT, name STRING, country STRING)
WITH ('connector' = 'filesystem', 'path' = 'out.jsonl', 'format' = 'json');
INSERT INTO enriched
SELECT o.id, r.name, r.country
FROM orders AS o {join} ON o.region = r.region;"
    );
    let job = plan_in(dir.path(), &script).unwrap();
    run(&job);
    let out = rows(&dir.path().join("out.jsonl"));
    (job, out)
}

#[test]
fn a_lookup_join_plans_to_an_enrich_stage_and_gives_the_inner_join() {
    let (job, out) = enriched("JOIN regions FOR SYSTEM_TIME AS OF o.proc_time AS r");
    let stage = &job.spec.stages[1];
    assert_eq!(stage.kind, StageKind::Enrich);
    assert_eq!(stage.table.as_deref(), Some("regions"));
    assert_eq!(stage.on.as_deref(), Some("region"));
    assert_eq!(stage.on_miss, Some(OnMiss::Drop));
    assert_eq!(job.spec.tables.len(), 1);
    assert_eq!(job.spec.tables[0].key, "region");
    assert!(
        matches!(&job.spec.tables[0].source, TableSource::File { path, .. } if path.ends_with("regions.jsonl"))
    );
    let expected: Vec<Value> = orders()
        .into_iter()
        .filter_map(|(id, region, _)| {
            let (name, country) = name_of(region)?;
            Some(json!({"id": id, "name": name, "country": country}))
        })
        .collect();
    assert!(expected.len() < orders().len(), "some orders miss");
    assert_eq!(out, expected);
}

#[test]
fn a_left_lookup_join_keeps_the_orders_without_a_region_row() {
    let (job, out) = enriched("LEFT JOIN regions FOR SYSTEM_TIME AS OF o.proc_time AS r");
    assert_eq!(job.spec.stages[1].on_miss, Some(OnMiss::Null));
    let expected: Vec<Value> = orders()
        .into_iter()
        .map(|(id, region, _)| match name_of(region) {
            Some((name, country)) => json!({"id": id, "name": name, "country": country}),
            // The JSON sink leaves NULL columns out.
            None => json!({"id": id}),
        })
        .collect();
    assert_eq!(out, expected);
}

/// `r.region` is the table's key: null where a LEFT JOIN found no row, while `o.region`
/// and `region` are the order's.
#[test]
fn in_a_left_join_the_tables_key_is_null_on_a_miss_and_the_sources_column_is_kept() {
    let dir = scratch();
    let script = format!(
        "{TABLES}CREATE TABLE keys (id BIGINT, order_region STRING, plain_region STRING, table_region STRING, known BOOLEAN)
WITH ('connector' = 'filesystem', 'path' = 'out.jsonl', 'format' = 'json');
INSERT INTO keys
SELECT o.id, o.region, region, r.region, r.region IS NOT NULL
FROM orders AS o LEFT JOIN regions FOR SYSTEM_TIME AS OF o.proc_time AS r ON o.region = r.region;"
    );
    let job = plan_in(dir.path(), &script).unwrap();
    run(&job);
    let expected: Vec<Value> = orders()
        .into_iter()
        .map(|(id, region, _)| {
            // The JSON sink leaves NULL columns out.
            let mut row = json!({"id": id, "known": name_of(region).is_some()});
            if let Some(region) = region {
                row["order_region"] = json!(region);
                row["plain_region"] = json!(region);
                if name_of(Some(region)).is_some() {
                    row["table_region"] = json!(region);
                }
            }
            row
        })
        .collect();
    assert!(
        expected
            .iter()
            .any(|r| r.get("order_region").is_some() && r.get("table_region").is_none()),
        "a miss with a region"
    );
    assert_eq!(rows(&dir.path().join("out.jsonl")), expected);
}

/// Flink's `csv` format has no header row: the fields are the table's columns in order
/// (here with a number column typed by its declaration, and a quoted comma).
#[test]
fn a_csv_lookup_table_is_read_by_its_declared_columns_in_order_and_typed() {
    let dir = scratch();
    let csv: String = REGIONS
        .iter()
        .enumerate()
        .map(|(i, (r, n, c))| format!("{r},\"{n}, {c}\",{}\n", 10 * i))
        .collect();
    std::fs::write(dir.path().join("regions.csv"), csv).unwrap();
    let script = format!(
        "{TABLES}CREATE TABLE zones (region STRING, label STRING, zone INT, PRIMARY KEY (region) NOT ENFORCED)
WITH ('connector' = 'filesystem', 'path' = 'regions.csv', 'format' = 'csv', 'csv.field-delimiter' = ',');
CREATE TABLE enriched (id BIGINT, label STRING, zone INT)
WITH ('connector' = 'filesystem', 'path' = 'out.jsonl', 'format' = 'json');
INSERT INTO enriched
SELECT o.id, z.label, z.zone
FROM orders AS o JOIN zones FOR SYSTEM_TIME AS OF o.proc_time AS z ON o.region = z.region;"
    );
    let job = plan_in(dir.path(), &script).unwrap();
    let table = &job.spec.tables[0];
    assert!(
        matches!(&table.source, TableSource::File { columns: Some(c), .. } if c == &["region", "label", "zone"]),
        "{:?}",
        table.source
    );
    run(&job);
    let expected: Vec<Value> = orders()
        .into_iter()
        .filter_map(|(id, region, _)| {
            let i = REGIONS.iter().position(|r| Some(r.0) == region)?;
            let (_, name, country) = REGIONS[i];
            Some(json!({"id": id, "label": format!("{name}, {country}"), "zone": 10 * i}))
        })
        .collect();
    assert_eq!(rows(&dir.path().join("out.jsonl")), expected);
}

#[test]
fn csv_is_refused_outside_a_filesystem_lookup_table_and_with_another_delimiter() {
    let dir = scratch();
    std::fs::write(dir.path().join("orders.csv"), "1,eu-west,1716467700000\n").unwrap();
    let csv_source = plan_in(
        dir.path(),
        "CREATE TABLE orders (id BIGINT, region STRING, tsMillis BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'orders.csv', 'format' = 'csv');
CREATE TABLE out (id BIGINT) WITH ('connector' = 'print');
INSERT INTO out SELECT id FROM orders;",
    )
    .unwrap_err();
    assert!(
        csv_source.contains("the CSV table `orders` read by the query")
            && csv_source.contains("a CSV file is read as a lookup table"),
        "{csv_source}"
    );
    let csv_topic = plan_in(
        dir.path(),
        "CREATE TABLE orders (id BIGINT) WITH ('connector' = 'kafka', 'topic' = 'orders',
  'properties.bootstrap.servers' = 'localhost:9092', 'format' = 'csv');
CREATE TABLE out (id BIGINT) WITH ('connector' = 'print');
INSERT INTO out SELECT id FROM orders;",
    )
    .unwrap_err();
    assert!(
        csv_topic.contains("the format 'csv' on the kafka table `orders`"),
        "{csv_topic}"
    );
    let semicolons = plan_in(
        dir.path(),
        &format!(
            "{TABLES}CREATE TABLE zones (region STRING, label STRING, PRIMARY KEY (region) NOT ENFORCED)
WITH ('connector' = 'filesystem', 'path' = 'regions.csv', 'format' = 'csv', 'csv.field-delimiter' = ';');
CREATE TABLE out (id BIGINT, label STRING) WITH ('connector' = 'print');
INSERT INTO out SELECT o.id, z.label
FROM orders AS o JOIN zones FOR SYSTEM_TIME AS OF o.proc_time AS z ON o.region = z.region;"
        ),
    )
    .unwrap_err();
    assert!(
        semicolons.contains("'csv.field-delimiter' = ';'")
            && semicolons.contains("CSV files are read comma-separated"),
        "{semicolons}"
    );
}

#[test]
fn a_plain_join_with_a_filesystem_table_is_a_broadcast_lookup() {
    let (_, lookup) = enriched("JOIN regions FOR SYSTEM_TIME AS OF o.proc_time AS r");
    let (job, plain) = enriched("JOIN regions AS r");
    assert_eq!(job.spec.stages[1].kind, StageKind::Enrich);
    assert_eq!(plain, lookup);
}

#[test]
fn orders_are_counted_per_event_time_window_and_region_name_after_the_lookup() {
    let dir = scratch();
    let script = format!(
        "{TABLES}CREATE TABLE per_region (window_start TIMESTAMP(3), window_end TIMESTAMP(3), name STRING, order_count BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'out.jsonl', 'format' = 'json');
SET 'parallelism.default' = '1';
INSERT INTO per_region
SELECT window_start, window_end, r.name, COUNT(*) AS order_count
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '10' SECOND)) AS o
JOIN regions FOR SYSTEM_TIME AS OF o.proc_time AS r ON o.region = r.region
GROUP BY window_start, window_end, r.name;"
    );
    let job = plan_in(dir.path(), &script).unwrap();
    run(&job);
    let mut expected: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for (_, region, ts) in orders() {
        if let Some((name, _)) = name_of(region) {
            *expected
                .entry((ts / 10_000 * 10_000, name.to_owned()))
                .or_default() += 1;
        }
    }
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let got: BTreeMap<(i64, String), i64> = text
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            let start = rivulet_sdk::time::parse_iso8601(r["window_start"].as_str().unwrap());
            (
                (start.unwrap(), r["name"].as_str().unwrap().to_owned()),
                r["order_count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn other_joins_are_refused_naming_the_join() {
    let dir = scratch();
    let upsert = "CREATE TABLE live (region STRING, label STRING, PRIMARY KEY (region) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = 'regions', 'key.format' = 'raw', 'value.format' = 'json');
CREATE TABLE twin (region STRING, id BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'regions.jsonl', 'format' = 'json');
";
    let query = |from: &str| {
        let script = format!(
            "{TABLES}{upsert}CREATE TABLE enriched (id BIGINT, name STRING)
WITH ('connector' = 'filesystem', 'path' = 'out.jsonl', 'format' = 'json');
INSERT INTO enriched SELECT o.id, r.name
FROM {from};"
        );
        let err = plan_in(dir.path(), &script).err().unwrap();
        // Without the position (line:column).
        err.split_once(": ")
            .map(|(_, m)| m.to_owned())
            .unwrap_or(err)
    };
    let lookup_hint = "a join here is a lookup join: [LEFT] JOIN t FOR SYSTEM_TIME AS OF o.proc_time AS r ON o.column = r.key, or a [LEFT] JOIN with a filesystem table";
    assert_eq!(
        query("orders AS o RIGHT JOIN regions AS r ON o.region = r.region"),
        format!("RIGHT JOIN is not supported yet ({lookup_hint})")
    );
    assert_eq!(
        query("orders AS o FULL OUTER JOIN regions AS r ON o.region = r.region"),
        format!("FULL OUTER JOIN is not supported yet ({lookup_hint})")
    );
    assert_eq!(
        query("orders AS o JOIN regions FOR SYSTEM_TIME AS OF o.ts AS r ON o.region = r.region"),
        "FOR SYSTEM_TIME AS OF `ts` (not the processing-time attribute) is not supported yet (a lookup join reads the table as of each row's processing time: name the source's `AS PROCTIME()` column)"
    );
    assert_eq!(
        query("orders AS o JOIN live AS r ON o.region = r.region"),
        "a regular JOIN with the unbounded table `live` is not supported yet (join it as a lookup table: JOIN live FOR SYSTEM_TIME AS OF <the source's PROCTIME() column> AS ...)"
    );
    assert_eq!(
        query("orders AS o JOIN regions AS r ON o.region <> r.region"),
        "the join condition o.region <> r.region is not supported yet (a lookup join matches one source column with the table's key: ON o.column = r.key)"
    );
    assert_eq!(
        query("orders AS o JOIN regions AS r ON o.region = r.name"),
        "a lookup on `name` instead of the PRIMARY KEY of `regions` (region) is not supported yet (a lookup table is read by its key)"
    );
    assert_eq!(
        query("orders AS o JOIN twin AS r ON o.region = r.region"),
        "a join of tables that both have a column `id` (`orders` and `twin`) is not supported yet (name the lookup table's columns apart from the source's)"
    );
    assert_eq!(
        query(
            "orders AS o JOIN regions AS r ON o.region = r.region JOIN regions AS q ON o.region = q.region"
        ),
        "a second JOIN is not supported yet"
    );
}

#[test]
fn an_upsert_kafka_lookup_table_reads_raw_or_json_keys_and_refuses_avro_keys() {
    let dir = scratch();
    let plan = |key_format: &str| {
        plan_in(
            dir.path(),
            &format!(
                "{TABLES}CREATE TABLE live (region STRING, label STRING, PRIMARY KEY (region) NOT ENFORCED)
WITH ('connector' = 'upsert-kafka', 'topic' = 'regions', 'properties.bootstrap.servers' = 'localhost:9092',
  {key_format}, 'value.format' = 'json');
CREATE TABLE enriched (id BIGINT, label STRING)
WITH ('connector' = 'filesystem', 'path' = 'out.jsonl', 'format' = 'json');
INSERT INTO enriched SELECT o.id, r.label
FROM orders AS o JOIN live FOR SYSTEM_TIME AS OF o.proc_time AS r ON o.region = r.region;"
            ),
        )
    };
    for (given, read) in [
        ("'key.format' = 'raw'", TopicKeyFormat::Text),
        ("'key.format' = 'json'", TopicKeyFormat::Json),
    ] {
        let job = plan(given).unwrap();
        assert!(
            matches!(&job.spec.tables[0].source, TableSource::Kafka { topic, key_format } if topic == "regions" && *key_format == read),
            "{given}: {:?}",
            job.spec.tables[0].source
        );
    }
    let avro =
        plan("'key.format' = 'avro-confluent', 'key.avro-confluent.url' = 'http://localhost:8081'")
            .unwrap_err();
    assert!(
        avro.contains("the lookup table `live` with this key format")
            && avro.contains("'key.format' = 'json'"),
        "{avro}"
    );
}

#[test]
fn the_workshop_script_plans_a_lookup_join_and_a_count_per_region_name() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/orders-per-region.sql");
    let job = rivulet::sql::load(&path).unwrap();
    let spec = &job.spec;
    let kinds: Vec<StageKind> = spec.stages.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [StageKind::Parse, StageKind::Enrich]);
    assert_eq!(spec.window.as_ref().unwrap().key.as_deref(), Some("name"));
    assert_eq!(spec.window.as_ref().unwrap().size, Duration::from_secs(30));
    let table = &spec.tables[0];
    let TableSource::File { path, .. } = &table.source else {
        panic!("{table:?}")
    };
    assert!(path.is_file(), "{}", path.display());
    assert_eq!(table.key, "region");
}
