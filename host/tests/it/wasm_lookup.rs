//! Wasm map steps reading reference tables through `lookup` (`rivulet:udf/lookup`): the
//! workshop's `udfs/enrich-region` gives the join computed here (hits, and misses as dead
//! letters with the reason); a stage that does not list the tables its component reads is
//! refused at start; a table the stage may not read is the record's error naming it; a
//! compacted-topic table's updates and tombstones are seen by the step for the records
//! after them; a module that looks rows up can be swapped into a running stage.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::kafka::{Read, TestBroker, produce, read_until, tombstone};
use common::{json_lines, wait_for_table, wasm};
use rivulet::assemble::RunOptions;
use rivulet::pipeline::Pipeline;
use rivulet::spec::PipelineSpec;
use rivulet::swap::SwapRequest;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The reference rows: key, name, country.
const REGIONS: [(&str, &str, &str); 5] = [
    ("eu-west", "Europe (Ireland)", "Ireland"),
    ("us-east", "US East (N. Virginia)", "United States"),
    ("us-west", "US West (Oregon)", "United States"),
    ("ap-south", "Asia Pacific (Mumbai)", "India"),
    ("eu-central", "Europe (Frankfurt)", "Germany"),
];

fn regions_jsonl() -> String {
    REGIONS
        .iter()
        .map(|(key, name, country)| {
            format!(
                "{}\n",
                json!({"region": key, "name": name, "country": country})
            )
        })
        .collect()
}

/// An order as `udfs/enrich-region` reads it; `customer` carries the id.
fn order(id: i64, region: &str) -> Value {
    let ts = 1_716_467_700_000 + id * 500;
    let status = ["NEW", "SHIPPED", "DELIVERED"][(id % 3) as usize];
    json!({
        "customer": format!("customer-{id:03}"),
        "status": status,
        "region": region,
        "amount": (id * 37 % 250) as f64 + 0.25,
        "ts": rivulet_rows::time::iso8601(ts),
        "tsMillis": ts,
    })
}

/// Orders whose region is a key of the table, an unknown one, or one that differs only in
/// case (keys are case-sensitive).
fn orders() -> Vec<Value> {
    (0..240i64)
        .map(|i| {
            let region = match i % 7 {
                0..=4 => REGIONS[(i % 5) as usize].0,
                5 => "mars",
                _ => "EU-WEST",
            };
            order(i, region)
        })
        .collect()
}

/// The join, computed here: the order with its region's name and country, or None.
fn joined(order: &Value) -> Option<Value> {
    let key = order["region"].as_str().unwrap();
    let (_, name, country) = REGIONS.iter().find(|r| r.0 == key)?;
    let mut row = order.clone();
    row["region_name"] = json!(name);
    row["country"] = json!(country);
    Some(row)
}

fn by_customer(rows: impl IntoIterator<Item = Value>) -> BTreeMap<String, Value> {
    rows.into_iter()
        .map(|r| (r["customer"].as_str().unwrap().to_owned(), r))
        .collect()
}

fn options(brokers: Option<String>, stop: Arc<AtomicBool>, swappable: bool) -> RunOptions {
    RunOptions {
        brokers,
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop,
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_millis(200),
        swappable,
        instance: Default::default(),
    }
}

fn file_options() -> RunOptions {
    options(None, Arc::new(AtomicBool::new(false)), false)
}

/// A job's spec: `source` (with the job's settings), built-in JSON parse, `stage`, the
/// table `regions` read from `regions` (and what follows it), the sink `sink`.
fn spec_text(source: &str, stage: &str, regions: &str, sink: &str) -> String {
    format!(
        "name = \"wasm-lookup\"\n{source}\n[[stages]]\nname = \"parse\"\nkind = \"parse\"\nbuiltin = \"json\"\n{stage}\n[[tables]]\nname = \"regions\"\nkey = \"region\"\nsource = {regions}\n[sink]\n{sink}\n"
    )
}

/// A file job: JSON orders through the map stage `stage` (TOML), two tasks; the sink's
/// rows and the dead letters.
fn run_file_job(input: &[Value], stage: &str) -> Result<(Vec<Value>, Vec<Value>), String> {
    let dir = tempfile::tempdir().unwrap();
    let text: String = input.iter().map(|o| format!("{o}\n")).collect();
    std::fs::write(dir.path().join("orders.jsonl"), text).unwrap();
    std::fs::write(dir.path().join("regions.jsonl"), regions_jsonl()).unwrap();
    std::fs::write(
        dir.path().join("tiers.jsonl"),
        "{\"tier\":\"gold\",\"name\":\"Gold\"}\n",
    )
    .unwrap();
    let spec = spec_text(
        "parallelism = 2\n[source]\nkind = \"file\"\npath = \"orders.jsonl\"",
        stage,
        "{ kind = \"file\", path = \"regions.jsonl\" }\n[[tables]]\nname = \"tiers\"\nkey = \"tier\"\nsource = { kind = \"file\", path = \"tiers.jsonl\" }\n[batch]\nmax_records = 16",
        "kind = \"file\"\npath = \"out.jsonl\"\n[dead_letters]\npath = \"dlq.jsonl\"",
    );
    std::fs::write(dir.path().join("job.toml"), spec).unwrap();
    let spec = PipelineSpec::load(&dir.path().join("job.toml")).map_err(|e| e.to_string())?;
    let mut job = Job::from_spec(&spec, &file_options()).map_err(|e| e.to_string())?;
    assert_eq!(job.tasks.len(), 2, "two tasks share the table");
    job.run().map_err(|e| e.to_string())?;
    Ok((
        json_lines(&dir.path().join("out.jsonl")),
        json_lines(&dir.path().join("dlq.jsonl")),
    ))
}

fn enrich_region_stage(tables: &str) -> String {
    format!(
        r#"
[[stages]]
name = "add-region"
kind = "map"
module = "{}"
{tables}
"#,
        wasm("udf_enrich_region").display()
    )
}

#[test]
fn a_wasm_step_looking_up_regions_gives_the_join_and_misses_go_to_the_dead_letters() {
    let (out, dead) = run_file_job(&orders(), &enrich_region_stage(r#"tables = ["regions"]"#))
        .expect("the job runs");
    let expected = by_customer(orders().iter().filter_map(joined));
    // i % 7 is 5 or 6 for 68 of the 240 orders.
    assert_eq!(expected.len(), 240 - 68, "hits and misses both");
    assert_eq!(by_customer(out), expected);
    let mut got: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            assert_eq!(d["stage"], "add-region");
            (
                d["payload"].as_str().unwrap().to_owned(),
                d["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut want: Vec<(String, String)> = orders()
        .iter()
        .filter(|o| joined(o).is_none())
        .map(|o| {
            let region = o["region"].as_str().unwrap();
            (
                o.to_string(),
                format!("no row in table `regions` for region {region:?}"),
            )
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn a_stage_whose_component_looks_rows_up_without_listing_tables_is_refused_at_start() {
    let err = run_file_job(&orders(), &enrich_region_stage("")).unwrap_err();
    assert_eq!(
        err,
        format!(
            "stage `add-region`: {} looks rows up in reference tables (it imports rivulet:udf/lookup), but the stage names no tables it may read: add `tables = [\"<table>\", ...]` to the stage",
            wasm("udf_enrich_region").display()
        )
    );
}

#[test]
fn a_parse_step_that_looks_rows_up_is_refused_at_start_as_only_map_steps_read_tables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"id\":1,\"table\":\"regions\",\"key\":\"eu-west\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("regions.jsonl"), regions_jsonl()).unwrap();
    let module = wasm("lookup_probe_parse");
    std::fs::write(
        dir.path().join("job.toml"),
        format!(
            "name = \"parse-lookup\"\n[source]\nkind = \"file\"\npath = \"in.jsonl\"\n[[stages]]\nname = \"probe\"\nkind = \"parse\"\nmodule = \"{}\"\n[[tables]]\nname = \"regions\"\nkey = \"region\"\nsource = {{ kind = \"file\", path = \"regions.jsonl\" }}\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n",
            module.display()
        ),
    )
    .unwrap();
    let spec = PipelineSpec::load(&dir.path().join("job.toml")).unwrap();
    let err = Job::from_spec(&spec, &file_options())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(&format!(
            "{} is a parse step but imports rivulet:udf/lookup: only map steps may look rows up in reference tables",
            module.display()
        )),
        "{err}"
    );
    assert!(!dir.path().join("out.jsonl").exists(), "nothing ran");
}

#[test]
fn a_stage_listing_a_table_the_spec_does_not_declare_is_refused_before_anything_runs() {
    let err = run_file_job(
        &orders(),
        &enrich_region_stage(r#"tables = ["regions", "countries"]"#),
    )
    .unwrap_err();
    assert!(
        err.ends_with(
            "`stages[1].tables`: no table `countries` (the spec declares regions, tiers)"
        ),
        "{err}"
    );
    let err = run_file_job(
        &orders(),
        r#"
[[stages]]
name = "add-region"
kind = "enrich"
table = "regions"
on = "region"
tables = ["regions"]
"#,
    )
    .unwrap_err();
    assert!(
        err.ends_with(
            "`stages[1].tables`: an `enrich` stage names its one table with `table`; `tables` is for Wasm `map` stages"
        ),
        "{err}"
    );
}

#[test]
fn a_table_the_stage_may_not_read_or_that_does_not_exist_is_the_records_error_naming_it() {
    let probes = [
        json!({"id": 1, "table": "regions", "key": "eu-west"}),
        json!({"id": 2, "table": "tiers", "key": "gold"}),
        json!({"id": 3, "table": "countries", "key": "IE"}),
        json!({"id": 4, "table": "regions", "key": "mars"}),
    ];
    let stage = format!(
        r#"
[[stages]]
name = "probe"
kind = "map"
module = "{}"
tables = ["regions"]
"#,
        wasm("lookup_probe").display()
    );
    let (out, dead) = run_file_job(&probes, &stage).expect("the job runs");
    let mut out: Vec<Value> = out;
    out.sort_by_key(|r| r["id"].as_i64());
    assert_eq!(
        out,
        [
            json!({"id": 1, "table": "regions", "key": "eu-west", "name": "Europe (Ireland)"}),
            json!({"id": 4, "table": "regions", "key": "mars"}),
        ]
    );
    let mut dead: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            (
                d["payload"].as_str().unwrap().to_owned(),
                d["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        [
            (
                probes[1].to_string(),
                "stage `probe` may not read table `tiers`: add it to the stage's `tables` (it reads regions)".to_owned()
            ),
            (
                probes[2].to_string(),
                "no table `countries` (stage `probe` reads regions)".to_owned()
            ),
        ]
    );
}

fn region_row(region: &str, name: &str, country: &str) -> (i32, String, Vec<u8>) {
    let value = json!({ "name": name, "country": country }).to_string();
    (0, region.to_owned(), value.into_bytes())
}

fn order_record(id: i64, region: &str) -> (i32, String, Vec<u8>) {
    (
        0,
        id.to_string(),
        order(id, region).to_string().into_bytes(),
    )
}

/// The first `n` records of `topic` as (customer, region_name), once they are there.
fn named(address: &str, topic: &str, n: usize) -> Vec<(String, Value)> {
    let records: Vec<Read> =
        read_until(address, topic, 1, Duration::from_secs(30), |r| r.len() >= n);
    assert_eq!(records.len(), n, "{records:?}");
    records
        .iter()
        .map(|r| {
            let row: Value = serde_json::from_slice(&r.payload).unwrap();
            (
                row["customer"].as_str().unwrap().to_owned(),
                row["region_name"].clone(),
            )
        })
        .collect()
}

/// The embedded broker with the job's topics, `regions` holding `rows`; and its address.
fn broker_with_regions(rows: &[(i32, String, Vec<u8>)]) -> (TestBroker, String) {
    let broker = TestBroker::embedded();
    let address = broker.address();
    for topic in ["regions", "orders", "enriched", "dead"] {
        broker.topic(topic, 1);
    }
    produce(&address, "regions", rows);
    (broker, address)
}

fn kafka_spec(stage: &str) -> PipelineSpec {
    let text = spec_text(
        "parallelism = 1\n[source]\nkind = \"kafka\"\ntopic = \"orders\"\nassign = \"all\"\nstart = \"earliest\"",
        stage,
        "{ kind = \"kafka\", topic = \"regions\" }\n[batch]\nmax_wait = \"20ms\"",
        "kind = \"kafka\"\ntopic = \"enriched\"\n[dead_letters]\ntopic = \"dead\"",
    );
    PipelineSpec::parse(&text, Path::new("job.toml")).unwrap()
}

#[test]
fn a_wasm_step_sees_a_topic_tables_update_and_tombstone_for_the_records_after_them() {
    let (_broker, address) = broker_with_regions(&[
        region_row("eu-west", "Europe (Ireland)", "Ireland"),
        region_row("us-east", "US East (N. Virginia)", "United States"),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let spec = kafka_spec(&enrich_region_stage(r#"tables = ["regions"]"#));
    let mut job = Job::from_spec(&spec, &options(Some(address.clone()), stop.clone(), false))
        .expect("the job starts");
    let status = job.status.clone();
    let running = std::thread::spawn(move || job.run().map_err(|e| e.to_string()));

    produce(
        &address,
        "orders",
        &[order_record(1, "eu-west"), order_record(2, "us-east")],
    );
    assert_eq!(
        named(&address, "enriched", 2),
        [
            ("customer-001".to_owned(), json!("Europe (Ireland)")),
            ("customer-002".to_owned(), json!("US East (N. Virginia)")),
        ]
    );

    // An update while the job runs: the records after it get the new name.
    produce(
        &address,
        "regions",
        &[region_row("eu-west", "EU West (Dublin)", "Ireland")],
    );
    wait_for_table(&status, "after the update", |t| t.updates == 3);
    produce(&address, "orders", &[order_record(3, "eu-west")]);
    let rows = named(&address, "enriched", 3);
    assert_eq!(
        rows[2],
        ("customer-003".to_owned(), json!("EU West (Dublin)"))
    );
    assert_eq!(
        rows[0],
        ("customer-001".to_owned(), json!("Europe (Ireland)")),
        "not rewritten"
    );

    // A tombstone removes the key: the next us-east order is a miss (a dead letter).
    tombstone(&address, "regions", "us-east");
    wait_for_table(&status, "after the tombstone", |t| t.deletes == 1);
    produce(
        &address,
        "orders",
        &[order_record(4, "us-east"), order_record(5, "eu-west")],
    );
    let rows = named(&address, "enriched", 4);
    assert_eq!(
        rows[3],
        ("customer-005".to_owned(), json!("EU West (Dublin)"))
    );
    let dead: Vec<Read> = read_until(&address, "dead", 1, Duration::from_secs(30), |r| {
        !r.is_empty()
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].headers.get("rivulet.error").map(String::as_str),
        Some("no row in table `regions` for region \"us-east\"")
    );
    assert_eq!(
        dead[0].payload,
        order(4, "us-east").to_string().into_bytes()
    );
    let table = status.snapshot().tables.remove(0);
    assert_eq!((table.hits, table.misses), (4, 1), "lookups are counted");

    stop.store(true, Ordering::Relaxed);
    running.join().unwrap().unwrap();
}

#[test]
fn a_module_that_looks_rows_up_is_swapped_into_a_running_stage_that_lists_the_table() {
    let (_broker, address) =
        broker_with_regions(&[region_row("eu-west", "Europe (Ireland)", "Ireland")]);
    // The stage starts with a module that reads no table (orders of at least 50 pass).
    let stage = format!(
        r#"
[[stages]]
name = "add-region"
kind = "map"
module = "{}"
tables = ["regions"]
"#,
        wasm("udf_high_value").display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut pipeline = Pipeline::from_spec(
        &kafka_spec(&stage),
        &options(Some(address.clone()), stop.clone(), true),
    )
    .expect("the job starts");
    let swaps = pipeline.swap_requests.clone().expect("swappable");
    let running = std::thread::spawn(move || pipeline.run().map_err(|e| e.to_string()));
    // 88.25 (id 1 has amount 37.25: dropped by high-value; id 2: 74.25).
    produce(&address, "orders", &[order_record(2, "eu-west")]);
    let first: Vec<Read> = read_until(&address, "enriched", 1, Duration::from_secs(30), |r| {
        !r.is_empty()
    });
    let row: Value = serde_json::from_slice(&first[0].payload).unwrap();
    assert_eq!(row["band"], "high");
    assert_eq!(row.get("region_name"), None);

    let (reply, answer) = std::sync::mpsc::channel();
    swaps
        .send(SwapRequest {
            stage: "add-region".into(),
            bytes: std::fs::read(wasm("udf_enrich_region")).unwrap(),
            origin: "test:enrich-region".into(),
            reply: Some(reply),
            fleet: None,
            shadow: None,
        })
        .unwrap();
    answer
        .recv_timeout(Duration::from_secs(60))
        .unwrap()
        .expect("the swap is installed (its trial looks rows up)");
    produce(&address, "orders", &[order_record(3, "eu-west")]);
    let rows = named(&address, "enriched", 2);
    assert_eq!(
        rows[1],
        ("customer-003".to_owned(), json!("Europe (Ireland)"))
    );
    stop.store(true, Ordering::Relaxed);
    running.join().unwrap().unwrap();
}

/// Answers `regions` from [`REGIONS`] and counts what it was asked, by key.
struct CountingReader {
    asked: std::sync::Mutex<BTreeMap<String, usize>>,
}

impl rivulet::udf::TableReader for CountingReader {
    fn lookup(&self, table: &str, key: &str) -> Result<Option<rivulet_rows::Batch>, String> {
        assert_eq!(table, "regions");
        *self
            .asked
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
        Ok(REGIONS
            .iter()
            .find(|r| r.0 == key)
            .map(|(key, name, country)| {
                let mut row = rivulet_rows::BatchBuilder::new();
                row.push(&json!({"region": key, "name": name, "country": country}))
                    .unwrap();
                row.finish()
            }))
    }
}

#[test]
fn a_wasm_step_asks_the_host_once_per_key_in_a_batch_and_again_in_the_next_batch() {
    use rivulet::stage::MapStage;
    let reader = Arc::new(CountingReader {
        asked: Default::default(),
    });
    let runtime = Runtime::new(ModuleCache::disabled()).unwrap();
    let module = rivulet::udf::UdfModule::load(&runtime, &wasm("udf_enrich_region")).unwrap();
    let mut stage = rivulet::stage::wasm::WasmMap::reading(
        &runtime,
        &module,
        "add-region",
        rivulet::udf::Limits::default(),
        Some(reader.clone() as Arc<dyn rivulet::udf::TableReader>),
    )
    .unwrap();
    // 240 orders over 5 known regions, "mars" and "EU-WEST": 7 distinct keys.
    let input = orders();
    let mut batch = rivulet_rows::BatchBuilder::new();
    for order in &input {
        batch.push(order).unwrap();
    }
    let batch = batch.finish();
    let distinct: std::collections::BTreeSet<&str> = input
        .iter()
        .map(|o| o["region"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), 7);

    for round in 1..=2usize {
        let out = stage.map(&batch).unwrap();
        // Every record still gets its own answer: hits joined, misses its error.
        let got: Vec<Value> = (0..out.rows.len)
            .map(|i| Value::Object(out.rows.row_json(i as usize)))
            .collect();
        assert_eq!(
            by_customer(got),
            by_customer(input.iter().filter_map(joined))
        );
        assert_eq!(out.errors.len(), 68);
        let asked = reader.asked.lock().unwrap().clone();
        let want: BTreeMap<String, usize> =
            distinct.iter().map(|k| ((*k).to_owned(), round)).collect();
        assert_eq!(asked, want, "after batch {round}");
    }
}
