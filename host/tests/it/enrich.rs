//! `enrich` stages over `[[tables]]` read from files: the rows they give equal a join computed
//! here from the input (hits, and misses under each `on_miss` policy), a count per window
//! and region name, and a table that cannot be read stops the job at start with one line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::json_lines;

use rivulet::assemble::RunOptions;
use rivulet::spec::PipelineSpec;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The reference rows: key, name, country, zone (absent for one).
const REGIONS: [(&str, &str, &str, Option<i64>); 5] = [
    ("eu-west", "Europe (Ireland)", "Ireland", Some(1)),
    ("us-east", "US East (N. Virginia)", "United States", Some(2)),
    ("us-west", "US West (Oregon)", "United States", Some(3)),
    ("ap-south", "Asia Pacific (Mumbai)", "India", None),
    ("eu-central", "Europe (Frankfurt)", "Germany", Some(5)),
];

fn regions_jsonl() -> String {
    REGIONS
        .iter()
        .map(|(key, name, country, zone)| {
            let mut row = json!({"region": key, "name": name, "country": country});
            if let Some(zone) = zone {
                row["zone"] = json!(zone);
            }
            format!("{row}\n")
        })
        .collect()
}

/// Orders whose `region` is a known key, an unknown one (keys are case-sensitive), null or
/// absent.
fn orders() -> Vec<Value> {
    (0..240i64)
        .map(|i| {
            let ts = 1_716_467_700_000 + i * 500;
            let mut order =
                json!({"id": i, "amount": (i * 37 % 250) as f64 + 0.25, "tsMillis": ts});
            match i % 9 {
                0..=4 => order["region"] = json!(REGIONS[(i % 5) as usize].0),
                5 => order["region"] = json!("mars"),
                6 => order["region"] = Value::Null,
                7 => {}
                _ => order["region"] = json!("EU-WEST"),
            }
            order
        })
        .collect()
}

/// The join, computed here: the order with region_name, country and zone of its region's
/// row, or None when its region is not a key of the table.
fn joined(order: &Value) -> Option<Value> {
    let key = match &order["region"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (_, name, country, zone) = REGIONS.iter().find(|r| r.0 == key)?;
    let mut row = order.clone();
    row["region_name"] = json!(name);
    row["country"] = json!(country);
    if let Some(zone) = zone {
        row["zone"] = json!(zone);
    }
    Some(row)
}

/// A row without its null fields (the JSON sink leaves them out).
fn without_nulls(row: &Value) -> Value {
    let map: Map<String, Value> = row
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(map)
}

fn by_id(rows: impl IntoIterator<Item = Value>) -> BTreeMap<i64, Value> {
    rows.into_iter()
        .map(|r| (r["id"].as_i64().unwrap(), without_nulls(&r)))
        .collect()
}

fn options() -> RunOptions {
    RunOptions {
        brokers: None,
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(5)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    }
}

/// Writes `spec` (TOML) as `dir/job.toml` and loads it.
fn spec_in(dir: &Path, spec: &str) -> PipelineSpec {
    try_spec_in(dir, spec).unwrap()
}

/// [`spec_in`], with the error a spec that doesn't load gives.
fn try_spec_in(dir: &Path, spec: &str) -> Result<PipelineSpec, String> {
    std::fs::write(dir.join("job.toml"), spec).unwrap();
    PipelineSpec::load(&dir.join("job.toml")).map_err(|e| e.to_string())
}

/// Runs the orders through an `enrich` stage with `on_miss`, in two tasks; returns the
/// sink's rows, the dead letters and the errors counted per stage.
fn enrich_orders(on_miss: &str) -> (Vec<Value>, Vec<Value>, BTreeMap<String, u64>) {
    let dir = tempfile::tempdir().unwrap();
    let input: String = orders().iter().map(|o| format!("{o}\n")).collect();
    std::fs::write(dir.path().join("orders.jsonl"), input).unwrap();
    std::fs::write(dir.path().join("regions.jsonl"), regions_jsonl()).unwrap();
    let spec = spec_in(
        dir.path(),
        &format!(
            r#"
name = "enrich-{on_miss}"
parallelism = 2
[source]
kind = "file"
path = "orders.jsonl"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[[stages]]
name = "add-region"
kind = "enrich"
table = "regions"
on = "region"
columns = ["name", "country", "zone"]
rename = {{ name = "region_name" }}
on_miss = "{on_miss}"
[[tables]]
name = "regions"
key = "region"
source = {{ kind = "file", path = "regions.jsonl" }}
[batch]
max_records = 16
[sink]
kind = "file"
path = "out.jsonl"
[dead_letters]
path = "dlq.jsonl"
"#
        ),
    );
    let mut job = Job::from_spec(&spec, &options()).unwrap();
    assert_eq!(job.tasks.len(), 2, "two tasks share the table");
    job.run().unwrap();
    let errors = job.status.counters().errors;
    (
        json_lines(&dir.path().join("out.jsonl")),
        json_lines(&dir.path().join("dlq.jsonl")),
        errors,
    )
}

#[test]
fn enriched_rows_equal_the_join_and_misses_keep_nulls_under_on_miss_null() {
    let (out, dead, errors) = enrich_orders("null");
    let expected = by_id(
        orders()
            .iter()
            .map(|o| joined(o).unwrap_or_else(|| o.clone())),
    );
    assert_eq!(by_id(out), expected);
    assert!(dead.is_empty(), "{dead:?}");
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn misses_are_dropped_and_counted_under_on_miss_drop() {
    let (out, dead, errors) = enrich_orders("drop");
    let expected = by_id(orders().iter().filter_map(joined));
    let misses = orders().len() - expected.len();
    assert!(misses > 0 && misses < orders().len(), "{misses}");
    assert_eq!(by_id(out), expected);
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(
        errors,
        BTreeMap::from([("add-region".to_owned(), misses as u64)])
    );
}

#[test]
fn misses_go_to_the_dead_letters_with_the_reason_under_on_miss_dlq() {
    let (out, dead, _) = enrich_orders("dlq");
    assert_eq!(by_id(out), by_id(orders().iter().filter_map(joined)));
    let mut expected: Vec<(String, String)> = orders()
        .iter()
        .filter(|o| joined(o).is_none())
        .map(|o| {
            let reason = match &o["region"] {
                Value::String(r) => format!("no row in table `regions` for region {r:?}"),
                Value::Null => "cannot look up table `regions`: its `region` is null".to_owned(),
                _ => unreachable!(),
            };
            (o.to_string(), reason)
        })
        .collect();
    // An order without the field at all: null in a batch where others have it, or no
    // field in a batch where none has it.
    let mut got: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            assert_eq!(d["stage"], "add-region");
            let error = d["error"].as_str().unwrap().to_owned();
            let error = match error.as_str() {
                "cannot look up table `regions`: the row has no field `region`" => {
                    "cannot look up table `regions`: its `region` is null".to_owned()
                }
                _ => error,
            };
            (d["payload"].as_str().unwrap().to_owned(), error)
        })
        .collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn orders_are_counted_per_window_and_region_name() {
    let dir = tempfile::tempdir().unwrap();
    let input: String = orders().iter().map(|o| format!("{o}\n")).collect();
    std::fs::write(dir.path().join("orders.jsonl"), input).unwrap();
    // The same table as CSV, its zone read as an integer.
    let mut csv = String::from("region,name,country,zone\n");
    for (key, name, country, zone) in REGIONS {
        let zone = zone.map(|z| z.to_string()).unwrap_or_default();
        csv.push_str(&format!("{key},\"{name}\",{country},{zone}\n"));
    }
    std::fs::write(dir.path().join("regions.csv"), csv).unwrap();
    let spec = spec_in(
        dir.path(),
        r#"
name = "per-region"
parallelism = 1
[source]
kind = "file"
path = "orders.jsonl"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[[stages]]
name = "add-region"
kind = "enrich"
table = "regions"
on = "region"
rename = { name = "region_name" }
on_miss = "drop"
[[tables]]
name = "regions"
key = "region"
source = { kind = "file", path = "regions.csv" }
types = { zone = "BIGINT" }
[window]
key = "region_name"
size = "10s"
time = "event"
timestamp = "tsMillis"
[aggregate]
builtin = [{ name = "order_count", fn = "count" }, { name = "zones", fn = "sum", field = "zone", type = "BIGINT" }]
[sink]
kind = "file"
path = "out.jsonl"
"#,
    );
    Job::from_spec(&spec, &options()).unwrap().run().unwrap();
    // (window start, region name) → (count, sum of zones).
    let mut expected: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    for order in orders() {
        let Some(row) = joined(&order) else { continue };
        let start = row["tsMillis"].as_i64().unwrap() / 10_000 * 10_000;
        let name = row["region_name"].as_str().unwrap().to_owned();
        let entry = expected.entry((start, name)).or_default();
        entry.0 += 1;
        entry.1 += row["zone"].as_i64().unwrap_or(0);
    }
    let got: BTreeMap<(i64, String), (i64, i64)> = json_lines(&dir.path().join("out.jsonl"))
        .into_iter()
        .map(|r| {
            let start = r["window_start"].as_str().unwrap();
            let start = rivulet_sdk::time::parse_iso8601(start).unwrap();
            let name = r["region_name"].as_str().unwrap().to_owned();
            let count = r["order_count"].as_i64().unwrap();
            ((start, name), (count, r["zones"].as_i64().unwrap_or(0)))
        })
        .collect();
    assert_eq!(got, expected);
}

/// The error `Job::from_spec` gives for a job whose table is `table` (a file's text, or
/// None: no file), named `name`.
fn start_error(name: &str, table: Option<&str>) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.jsonl"), "").unwrap();
    if let Some(text) = table {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let spec = spec_in(
        dir.path(),
        &format!(
            r#"
name = "bad-table"
[source]
kind = "file"
path = "orders.jsonl"
[[stages]]
name = "add-region"
kind = "enrich"
table = "regions"
on = "region"
[[tables]]
name = "regions"
key = "region"
source = {{ kind = "file", path = "{name}" }}
types = {{ zone = "BIGINT" }}
[sink]
kind = "stdout"
"#
        ),
    );
    let path = dir.path().join(name).display().to_string();
    match Job::from_spec(&spec, &options()) {
        Ok(_) => panic!("{name}: the job started"),
        Err(err) => (err.to_string(), path),
    }
}

#[test]
fn a_table_that_cannot_be_read_or_parsed_stops_the_job_at_start_naming_file_and_line() {
    let (err, path) = start_error("missing.jsonl", None);
    assert_eq!(
        err,
        format!("table `regions`: cannot read {path}: No such file or directory (os error 2)")
    );
    let rows = "{\"region\":\"a\",\"zone\":1}\n\n{\"region\":\"b\",\"zone\":2}\n";
    let cases: [(&str, String, String); 6] = [
        (
            "array.jsonl",
            format!("{rows}[1, 2]\n"),
            "4: a row is a JSON object, not an array".to_owned(),
        ),
        (
            "twice.jsonl",
            format!("{rows}{{\"region\":\"a\"}}\n"),
            "4: the key \"a\" is already the row of line 1".to_owned(),
        ),
        (
            "nokey.jsonl",
            format!("{rows}{{\"zone\":3}}\n"),
            "4: the key column `region` is missing or null".to_owned(),
        ),
        (
            "typed.jsonl",
            format!("{rows}{{\"region\":\"c\",\"zone\":\"three\"}}\n"),
            "4: column `zone` is BIGINT, not \"three\"".to_owned(),
        ),
        (
            "short.csv",
            "region,zone\na,1\nb\n".to_owned(),
            "3: 1 field(s), the header has 2".to_owned(),
        ),
        (
            "notint.csv",
            "region,zone\na,1\nb,2.5\n".to_owned(),
            "3: column `zone`: \"2.5\" is not a BIGINT".to_owned(),
        ),
    ];
    for (name, text, message) in cases {
        let (err, path) = start_error(name, Some(&text));
        assert_eq!(err, format!("table `regions`: {path}:{message}"), "{name}");
    }
    let (err, path) = start_error(
        "broken.jsonl",
        Some(&format!("{rows}{{\"region\": \"c\",\n")),
    );
    let prefix = format!("table `regions`: {path}:4: invalid JSON: EOF while parsing");
    assert!(err.starts_with(&prefix), "{err}");
    let (err, path) = start_error("nokey.csv", Some("id,zone\na,1\n"));
    assert_eq!(
        err,
        format!(
            "table `regions`: {path}:1: the header has no key column `region` (it has id, zone)"
        )
    );
}

/// A spec whose table `regions` is the file `name` (written with `text`) in `format`, its
/// fields named by `columns` (a CSV file without a header row); orders of regions `a`, `b` and `c` are
/// enriched into `out.jsonl`.
fn headerless_spec(
    dir: &Path,
    (name, format): (&str, &str),
    text: &str,
    columns: &str,
) -> Result<PipelineSpec, String> {
    let orders = ["a", "b", "c"].map(|r| json!({"region": r}).to_string() + "\n");
    std::fs::write(dir.join("orders.jsonl"), orders.concat()).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
    let spec = format!(
        r#"
name = "headerless"
[source]
kind = "file"
path = "orders.jsonl"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[[stages]]
name = "add-region"
kind = "enrich"
table = "regions"
on = "region"
[[tables]]
name = "regions"
key = "region"
source = {{ kind = "file", path = "{name}", format = "{format}", columns = {columns} }}
types = {{ zone = "BIGINT" }}
[sink]
kind = "file"
path = "out.jsonl"
"#
    );
    try_spec_in(dir, &spec)
}

#[test]
fn a_csv_table_without_a_header_row_is_read_by_the_columns_the_spec_names() {
    let dir = tempfile::tempdir().unwrap();
    let columns = r#"["region", "name", "zone"]"#;
    let text = "a,\"Alpha, A\",1\nb,Beta,2\n";
    let spec = headerless_spec(dir.path(), ("regions.csv", "csv"), text, columns).unwrap();
    Job::from_spec(&spec, &options()).unwrap().run().unwrap();
    // The job's tasks (one per core) each write their share of the orders.
    let mut rows = json_lines(&dir.path().join("out.jsonl"));
    rows.sort_by_key(|row| row["region"].as_str().map(str::to_owned));
    assert_eq!(
        rows,
        [
            json!({"region": "a", "name": "Alpha, A", "zone": 1}),
            json!({"region": "b", "name": "Beta", "zone": 2}),
            // A miss keeps the order; the JSON sink leaves the null columns out.
            json!({"region": "c"}),
        ],
        "the first line is a row, not a header"
    );

    let short = "a,Alpha,1\nb,Beta\n";
    let spec = headerless_spec(dir.path(), ("short.csv", "csv"), short, columns).unwrap();
    let err = match Job::from_spec(&spec, &options()) {
        Ok(_) => panic!("the job started"),
        Err(err) => err.to_string(),
    };
    assert_eq!(
        err,
        format!(
            "table `regions`: {}:2: 2 fields, but the table has 3 columns (region, name, zone)",
            dir.path().join("short.csv").display()
        )
    );
    let json = headerless_spec(dir.path(), ("regions.jsonl", "json"), "", columns).unwrap_err();
    assert!(
        json.contains("tables[0].source.columns")
            && json.contains("a CSV file without a header row"),
        "{json}"
    );
    let keyless = r#"["name", "zone"]"#;
    let keyless = headerless_spec(dir.path(), ("regions.csv", "csv"), "", keyless).unwrap_err();
    assert!(keyless.contains("has no key column `region`"), "{keyless}");
}

#[test]
fn a_missing_table_file_fails_rivulet_run_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.jsonl"), "{\"region\":\"a\"}\n").unwrap();
    let spec = r#"
name = "bad-table"
[source]
kind = "file"
path = "orders.jsonl"
[[stages]]
name = "add-region"
kind = "enrich"
table = "regions"
on = "region"
[[tables]]
name = "regions"
key = "region"
source = { kind = "file", path = "regions.jsonl" }
[sink]
kind = "stdout"
"#;
    std::fs::write(dir.path().join("job.toml"), spec).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", "--control", "off"])
        .arg(dir.path().join("job.toml"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(
        errors,
        [format!(
            "error: table `regions`: cannot read {}: No such file or directory (os error 2)",
            dir.path().join("regions.jsonl").display()
        )],
        "{stderr}"
    );
}

#[test]
fn an_enrich_stage_naming_what_is_not_there_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("regions.jsonl"), regions_jsonl()).unwrap();
    let job = |stage: &str| {
        format!(
            "name = \"j\"\n[source]\nkind = \"stdin\"\n[[stages]]\nname = \"e\"\nkind = \"enrich\"\n{stage}\n[[tables]]\nname = \"regions\"\nkey = \"region\"\nsource = {{ kind = \"file\", path = \"regions.jsonl\" }}\n[sink]\nkind = \"stdout\"\n"
        )
    };
    let refused = |stage: &str| {
        PipelineSpec::parse(&job(stage), Path::new("job.toml"))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refused("table = \"zones\"\non = \"region\""),
        "pipeline spec job.toml: `stages[0].table`: no table `zones` (the spec declares regions)"
    );
    assert_eq!(
        refused("table = \"regions\""),
        "pipeline spec job.toml: `stages[0].on`: an `enrich` stage needs the row field matched with the table's key `region`"
    );
    assert_eq!(
        refused(
            "table = \"regions\"\non = \"region\"\ncolumns = [\"name\"]\nrename = { country = \"c\" }"
        ),
        "pipeline spec job.toml: `stages[0].rename.country`: `country` is not one of the `columns` added"
    );
    assert_eq!(
        refused("table = \"regions\"\non = \"region\"\non_error = \"fail\""),
        "pipeline spec job.toml: `stages[0].on_error`: an `enrich` stage refuses only rows whose key is not in the table: say what happens to them with `on_miss` (\"null\", \"drop\" or \"dlq\")"
    );
    // A column the file's rows do not have: at start.
    let spec = spec_in(
        dir.path(),
        &job("table = \"regions\"\non = \"region\"\ncolumns = [\"nmae\"]"),
    );
    let err = Job::from_spec(&spec, &options()).err().unwrap().to_string();
    assert_eq!(
        err,
        "stage `e`: table `regions` has no column `nmae` (it has region, name, country, zone)"
    );
}
