//! `rivulet sql`'s expressions, WHERE and stateless queries (the built-in `filter` and
//! `project` stages), CREATE FUNCTION with a Wasm map, statement sets, the TOML stages, and
//! the interactive client driven through a pipe. Expected results are computed here from
//! the input, independently of the engine.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use rivulet::assemble::RunOptions;
use rivulet::sql::SqlJob;
use rivulet::task::Job;
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// One order: id, status, amount, quantity, region (None: absent).
#[derive(Debug, Clone)]
struct Order {
    id: i64,
    status: &'static str,
    amount: f64,
    qty: i64,
    region: Option<&'static str>,
}

fn orders() -> Vec<Order> {
    let statuses = ["new", "PENDING", " shipped ", "DELIVERED", "cancelled"];
    (0..60)
        .map(|i| Order {
            id: i,
            status: statuses[(i * 7 % 5) as usize],
            amount: (i * 37 % 250) as f64 + if i % 4 == 0 { 0.5 } else { 0.0 },
            qty: i % 6,
            region: match i % 3 {
                0 => None,
                1 => Some("eu-west"),
                _ => Some("us-east"),
            },
        })
        .collect()
}

fn write_orders(path: &Path) {
    let mut text = String::new();
    for o in orders() {
        let mut row = json!({"id": o.id, "status": o.status, "amount": o.amount, "qty": o.qty});
        if let Some(region) = o.region {
            row["region"] = region.into();
        }
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

const SOURCE: &str =
    "CREATE TABLE orders (id BIGINT, status STRING, amount DOUBLE, qty INT, region STRING)
WITH ('connector' = 'filesystem', 'path' = 'orders.jsonl', 'format' = 'json');
";

/// Plans `text` as the script `dir/job.sql` (its relative paths are relative to `dir`); an
/// error without the file name.
fn plan_in(dir: &Path, text: &str) -> Result<SqlJob, String> {
    let path = dir.join("job.sql");
    std::fs::write(&path, text).unwrap();
    rivulet::sql::load(&path).map_err(|e| {
        let message = e.to_string();
        let prefix = format!("{}:", path.display());
        message.strip_prefix(&prefix).unwrap_or(&message).to_owned()
    })
}

fn run(spec: &rivulet::spec::PipelineSpec) {
    let options = RunOptions {
        brokers: None,
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: Some(Duration::from_secs(5)),
        commit_every: Duration::from_millis(200),
        swappable: false,
        instance: Default::default(),
    };
    let mut job = Job::from_spec(spec, &options).unwrap();
    job.run().unwrap();
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

#[test]
fn a_stateless_query_filters_and_computes_each_expression_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(&dir.path().join("orders.jsonl"));
    let script = format!(
        "{SOURCE}CREATE TABLE shaped (id BIGINT, status STRING, band STRING, total DOUBLE, half BIGINT, code STRING,
  label STRING, len INT, is_eu BOOLEAN, region STRING, small BOOLEAN)
WITH ('connector' = 'filesystem', 'path' = 'out.jsonl', 'format' = 'json');
SET 'parallelism.default' = '1';
INSERT INTO shaped
SELECT id, UPPER(TRIM(status)) AS status,
  CASE WHEN amount >= 200 THEN 'premium' WHEN amount >= 50 THEN 'high' ELSE 'low' END,
  amount * qty, qty / 2, CAST(id AS STRING) || '-' || LOWER(SUBSTRING(TRIM(status) FROM 1 FOR 3)),
  CONCAT('order ', CAST(id AS STRING)), CHAR_LENGTH(status),
  region LIKE 'eu%', COALESCE(region, 'unknown'), amount BETWEEN 10 AND 20
FROM orders
WHERE (amount > 100 OR qty IN (0, 5)) AND status NOT LIKE '%cancel%' AND id % 2 = 0;"
    );
    let job = plan_in(dir.path(), &script).unwrap();
    run(&job.spec);

    let expected: Vec<Value> = orders()
        .into_iter()
        .filter(|o| {
            (o.amount > 100.0 || o.qty == 0 || o.qty == 5)
                && !o.status.contains("cancel")
                && o.id % 2 == 0
        })
        .map(|o| {
            let trimmed = o.status.trim_matches(' ');
            let band = if o.amount >= 200.0 {
                "premium"
            } else if o.amount >= 50.0 {
                "high"
            } else {
                "low"
            };
            let prefix: String = trimmed.chars().take(3).collect::<String>().to_lowercase();
            json!({
                "id": o.id,
                "status": trimmed.to_uppercase(),
                "band": band,
                "total": o.amount * o.qty as f64,
                "half": o.qty / 2,
                "code": format!("{}-{prefix}", o.id),
                "label": format!("order {}", o.id),
                "len": o.status.chars().count(),
                // NULL LIKE ... is NULL.
                "is_eu": o.region.map(|r| r.starts_with("eu")),
                "region": o.region.unwrap_or("unknown"),
                "small": (10.0..=20.0).contains(&o.amount),
            })
        })
        .collect();
    // The JSON sink leaves NULL columns out.
    let expected: Vec<Value> = expected
        .into_iter()
        .map(|mut row| {
            row.as_object_mut().unwrap().retain(|_, v| !v.is_null());
            row
        })
        .collect();
    assert!(expected.len() > 5, "the data exercises the filter");
    assert_eq!(rows(&dir.path().join("out.jsonl")), expected);
}

#[test]
fn where_follows_three_valued_logic_with_nulls() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(&dir.path().join("orders.jsonl"));
    type Keep = fn(&Order) -> bool;
    let cases: [(&str, Keep); 5] = [
        // region is NULL for a third of the orders: NOT (NULL = 'eu-west') is NULL, dropped.
        ("NOT (region = 'eu-west')", |o| {
            o.region.is_some_and(|r| r != "eu-west")
        }),
        ("region IS NULL", |o| o.region.is_none()),
        ("region <> 'x' OR qty > 3", |o| {
            o.region.is_some() || o.qty > 3
        }),
        ("region IN ('us-east', NULL) OR id < 3", |o| {
            o.region == Some("us-east") || o.id < 3
        }),
        ("NOT (region NOT IN ('eu-west'))", |o| {
            o.region == Some("eu-west")
        }),
    ];
    for (condition, keep) in cases {
        let script = format!(
            "{SOURCE}CREATE TABLE ids (id BIGINT) WITH ('connector' = 'filesystem', 'path' = 'ids.jsonl', 'format' = 'json');
SET 'parallelism.default' = '1';
INSERT INTO ids SELECT id FROM orders WHERE {condition};"
        );
        let _ = std::fs::remove_file(dir.path().join("ids.jsonl"));
        let job = plan_in(dir.path(), &script).unwrap();
        run(&job.spec);
        let got: Vec<i64> = rows(&dir.path().join("ids.jsonl"))
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        let expected: Vec<i64> = orders().iter().filter(|o| keep(o)).map(|o| o.id).collect();
        assert_eq!(got, expected, "{condition}");
    }
}

#[test]
fn division_by_zero_is_a_dead_letter_with_the_reason_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(&dir.path().join("orders.jsonl"));
    let script = format!(
        "{SOURCE}CREATE TABLE unit (id BIGINT, unit_price DOUBLE, safe DOUBLE)
WITH ('connector' = 'filesystem', 'path' = 'out.jsonl', 'format' = 'json');
SET 'parallelism.default' = '1';
SET 'rivulet.dead-letters.path' = 'dead.jsonl';
INSERT INTO unit SELECT id, amount / qty, CASE WHEN qty = 0 THEN NULL ELSE amount / qty END FROM orders;"
    );
    let job = plan_in(dir.path(), &script).unwrap();
    run(&job.spec);
    let out = rows(&dir.path().join("out.jsonl"));
    let dead: Vec<Value> = std::fs::read_to_string(dir.path().join("dead.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let zero: Vec<i64> = orders()
        .iter()
        .filter(|o| o.qty == 0)
        .map(|o| o.id)
        .collect();
    assert_eq!(out.len() + dead.len(), orders().len(), "nothing is lost");
    assert_eq!(dead.len(), zero.len());
    for letter in &dead {
        assert_eq!(letter["stage"], "select");
        assert_eq!(letter["error"], "division by zero");
        let payload: Value = serde_json::from_str(letter["payload"].as_str().unwrap()).unwrap();
        assert!(zero.contains(&payload["id"].as_i64().unwrap()));
    }
    for row in &out {
        let o = &orders()[row["id"].as_i64().unwrap() as usize];
        let price = o.amount / o.qty as f64;
        assert_eq!(row["unit_price"].as_f64().unwrap(), price);
        assert_eq!(row["safe"].as_f64().unwrap(), price);
    }
}

#[test]
fn expression_mistakes_and_unsupported_constructs_are_named_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let sink = "CREATE TABLE o (a STRING) WITH ('connector' = 'print');\n";
    let cases = [
        (
            "SELECT UPPER(colour) FROM orders",
            "4:28: table `orders` has no column `colour` (it has id, status, amount, qty, region)",
        ),
        (
            "SELECT SHOUT(status) FROM orders",
            "4:22: unknown function `SHOUT` (built in: UPPER, LOWER, CONCAT, TRIM, CHAR_LENGTH, SUBSTRING, COALESCE, ABS; or CREATE FUNCTION SHOUT AS 'udf.wasm' LANGUAGE WASM)",
        ),
        (
            "SELECT UPPER(amount) FROM orders",
            "4:28: UPPER needs a STRING, but this is DOUBLE",
        ),
        (
            "SELECT status FROM orders WHERE status + 1 > 2",
            "4:47: `+` needs numbers, but this is STRING",
        ),
        (
            "SELECT status FROM orders WHERE amount = 'ten'",
            "4:47: cannot compare DOUBLE with STRING",
        ),
        (
            "SELECT status FROM orders WHERE amount",
            "4:47: WHERE needs a BOOLEAN condition, but `amount` is DOUBLE",
        ),
        (
            "SELECT CAST(amount AS DECIMAL(10, 2)) FROM orders",
            "4:27: CAST to DECIMAL(10,2) is not supported yet",
        ),
        (
            "SELECT status FROM orders WHERE EXISTS (SELECT 1)",
            "4:55: the expression `EXISTS (SELECT 1)` is not supported yet",
        ),
        (
            "SELECT amount * 2 FROM orders",
            "4:22: column `a` of `o` is STRING, but the SELECT list gives it DOUBLE (`amount * 2`)",
        ),
    ];
    for (select, expected) in cases {
        let script = format!("{SOURCE}{sink}INSERT INTO o {select};");
        let err = plan_in(dir.path(), &script).expect_err(select);
        assert_eq!(err, expected, "{select}");
    }
}

#[test]
fn a_windowed_query_applies_where_before_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_700_000_000_000i64;
    let mut text = String::new();
    for o in orders() {
        let row =
            json!({"id": o.id, "status": o.status, "amount": o.amount, "ts": t0 + o.id * 1000});
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(dir.path().join("orders.jsonl"), text).unwrap();
    let script = "CREATE TABLE orders (id BIGINT, status STRING, amount DOUBLE, ts BIGINT,
  t AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR t AS t)
WITH ('connector' = 'filesystem', 'path' = 'orders.jsonl', 'format' = 'json');
CREATE TABLE counts (window_start TIMESTAMP(3), window_end TIMESTAMP(3), status STRING, n BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'counts.jsonl', 'format' = 'json');
SET 'parallelism.default' = '1';
INSERT INTO counts SELECT window_start, window_end, status, COUNT(*)
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(t), INTERVAL '20' SECOND))
WHERE amount >= 100 AND status <> 'new'
GROUP BY window_start, window_end, status;";
    let job = plan_in(dir.path(), script).unwrap();
    assert_eq!(
        job.spec.stages[1].condition.as_deref(),
        Some("amount >= 100 AND status <> 'new'")
    );
    run(&job.spec);
    let mut expected = std::collections::BTreeMap::new();
    for o in orders()
        .iter()
        .filter(|o| o.amount >= 100.0 && o.status != "new")
    {
        let ts = t0 + o.id * 1000;
        *expected
            .entry((ts - ts.rem_euclid(20_000), o.status.to_owned()))
            .or_insert(0u64) += 1;
    }
    let mut got = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(dir.path().join("counts.jsonl"))
        .unwrap()
        .lines()
    {
        let row: Value = serde_json::from_str(line).unwrap();
        let start =
            rivulet_sdk::time::parse_iso8601(row["window_start"].as_str().unwrap()).unwrap();
        got.insert(
            (start, row["status"].as_str().unwrap().to_owned()),
            row["n"].as_u64().unwrap(),
        );
    }
    assert_eq!(got, expected);
}

#[test]
fn a_toml_spec_runs_the_filter_and_project_stages() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(&dir.path().join("orders.jsonl"));
    let spec = r#"
name = "shaped"
parallelism = 1
[source]
kind = "file"
path = "orders.jsonl"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[[stages]]
name = "big"
kind = "filter"
where = "amount > 100 AND region IS NOT NULL"
[[stages]]
name = "shape"
kind = "project"
select = "id, UPPER(TRIM(status)) AS status, amount / 2 AS half, qty * 10 AS tens"
types = { amount = "DOUBLE" }
[sink]
kind = "file"
path = "out.jsonl"
"#;
    std::fs::write(dir.path().join("job.toml"), spec).unwrap();
    let spec = rivulet::spec::PipelineSpec::load(&dir.path().join("job.toml")).unwrap();
    run(&spec);
    let expected: Vec<Value> = orders()
        .into_iter()
        .filter(|o| o.amount > 100.0 && o.region.is_some())
        .map(|o| json!({"id": o.id, "status": o.status.trim().to_uppercase(), "half": o.amount / 2.0, "tens": o.qty * 10}))
        .collect();
    assert_eq!(rows(&dir.path().join("out.jsonl")), expected);

    // A mistake in a stage's expression is refused when the spec is read, naming the field.
    let bad = std::fs::read_to_string(dir.path().join("job.toml"))
        .unwrap()
        .replace("amount > 100", "amount >");
    let err = rivulet::spec::PipelineSpec::parse(&bad, Path::new("job.toml"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "pipeline spec job.toml: `stages[1].where`: 1:14: unexpected `region` after the expression"
    );
    let bad = std::fs::read_to_string(dir.path().join("job.toml"))
        .unwrap()
        .replace("UPPER(TRIM(status))", "UPPER(amount)");
    let err = rivulet::spec::PipelineSpec::parse(&bad, Path::new("job.toml"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "pipeline spec job.toml: `stages[2].select`: 1:11: UPPER needs a STRING, but this is DOUBLE"
    );
}

fn wasm(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/wasm32-wasip2/wasm/{name}.wasm"))
}

#[test]
fn create_function_calls_a_wasm_map_as_a_scalar_function() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for o in orders() {
        let row = json!({"customer": format!("c{}", o.id), "status": o.status, "region": o.region.unwrap_or("none"), "amount": o.amount, "tsMillis": o.id});
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::write(dir.path().join("orders.jsonl"), text).unwrap();
    let module = wasm("udf_high_value");
    let script = format!(
        "CREATE TEMPORARY FUNCTION high_value AS '{}' LANGUAGE WASM;
CREATE TABLE orders (customer STRING, status STRING, region STRING, amount DOUBLE, tsMillis BIGINT)
WITH ('connector' = 'filesystem', 'path' = 'orders.jsonl', 'format' = 'json');
CREATE TABLE out (tsMillis BIGINT, big_customer STRING)
WITH ('connector' = 'filesystem', 'path' = 'out.jsonl', 'format' = 'json');
SET 'parallelism.default' = '1';
INSERT INTO out SELECT tsMillis, high_value(customer, status, region, amount, tsMillis) FROM orders;",
        module.display()
    );
    let job = plan_in(dir.path(), &script).unwrap();
    run(&job.spec);
    let mut got: Vec<Value> = std::fs::read_to_string(dir.path().join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    got.sort_by_key(|r| r["tsMillis"].as_i64());
    // high-value keeps orders of at least 50.00 (the first output column is the customer);
    // a row it drops gives NULL.
    let expected: Vec<Value> = orders()
        .iter()
        .map(|o| match o.amount >= 50.0 {
            true => json!({"tsMillis": o.id, "big_customer": format!("c{}", o.id)}),
            // NULL: left out by the JSON sink.
            false => json!({"tsMillis": o.id}),
        })
        .collect();
    assert_eq!(got, expected);

    // A component that is not there, or not a map, is refused at the statement.
    let missing = script.replace("udf_high_value.wasm", "udf_nope.wasm");
    let err = plan_in(dir.path(), &missing).unwrap_err();
    assert!(
        err.starts_with("1:1: CREATE FUNCTION high_value: no file '"),
        "{err}"
    );
    let parse = script.replace("udf_high_value.wasm", "udf_parse_orders.wasm");
    let err = plan_in(dir.path(), &parse).unwrap_err();
    assert!(
        err.ends_with("is a parse component; a function is a map component (#[rivulet_sdk::map])"),
        "{err}"
    );
    let java = script.replace("LANGUAGE WASM", "LANGUAGE JAVA");
    assert_eq!(
        plan_in(dir.path(), &java).unwrap_err(),
        format!(
            "1:{}: LANGUAGE JAVA is not supported yet (functions are Wasm map components: LANGUAGE WASM)",
            53 + module.display().to_string().len()
        )
    );
}

fn rivulet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rivulet"))
}

#[test]
fn a_statement_set_writes_two_sinks_from_one_script() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(&dir.path().join("orders.jsonl"));
    let script = format!(
        "{SOURCE}CREATE TABLE big (id BIGINT) WITH ('connector' = 'filesystem', 'path' = 'big.jsonl', 'format' = 'json');
CREATE TABLE eu (id BIGINT, region STRING) WITH ('connector' = 'filesystem', 'path' = 'eu.jsonl', 'format' = 'json');
ADD JAR 'flink-connector-kafka.jar';
SET 'parallelism.default' = '1';
BEGIN STATEMENT SET;
INSERT INTO big SELECT id FROM orders WHERE amount > 150;
INSERT INTO eu SELECT id, region FROM orders WHERE region = 'eu-west';
END;"
    );
    std::fs::write(dir.path().join("set.sql"), &script).unwrap();
    let out = rivulet()
        .args(["sql", "--control", "off", "-f"])
        .arg(dir.path().join("set.sql"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = |file: &str| -> Vec<i64> {
        rows(&dir.path().join(file))
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let big: Vec<i64> = orders()
        .iter()
        .filter(|o| o.amount > 150.0)
        .map(|o| o.id)
        .collect();
    let eu: Vec<i64> = orders()
        .iter()
        .filter(|o| o.region == Some("eu-west"))
        .map(|o| o.id)
        .collect();
    assert_eq!(ids("big.jsonl"), big);
    assert_eq!(ids("eu.jsonl"), eu);
    // EXECUTE STATEMENT SET BEGIN ... END plans the same two jobs.
    let execute = script
        .replace("BEGIN STATEMENT SET;", "EXECUTE STATEMENT SET BEGIN")
        .replace("ADD JAR 'flink-connector-kafka.jar';\n", "");
    let job = plan_in(dir.path(), &execute).unwrap();
    assert_eq!(job.spec.name, "big");
    assert_eq!(
        job.also.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["eu"]
    );
}

#[test]
fn the_client_reads_statements_from_a_pipe_and_prints_rows_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    write_orders(&dir.path().join("orders.jsonl"));
    let input = format!(
        "{SOURCE}SHOW TABLES;
DESCRIBE orders;
SET 'parallelism.default' = '1';
SELECT id,
  UPPER(TRIM(status)) AS status
FROM orders WHERE amount > 200;
DROP TABLE orders;
SHOW TABLES;
"
    );
    let mut child = rivulet()
        .arg("sql")
        .current_dir(dir.path())
        .env("XDG_CACHE_HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let tables = "+------------+\n| table name |\n+------------+\n| orders     |\n+------------+\n1 row in set\n";
    assert!(stdout.contains(tables), "{stdout}");
    assert!(stdout.contains("| amount | DOUBLE |"), "{stdout}");
    let mut expected = String::from(
        "+----+--------------+--------------+\n|  op |           id |       status |\n+----+--------------+--------------+\n",
    );
    expected = expected.replace("|  op |", "| op |");
    let big: Vec<Order> = orders().into_iter().filter(|o| o.amount > 200.0).collect();
    for o in &big {
        expected.push_str(&format!(
            "| +I | {:>12} | {:>12} |\n",
            o.id,
            o.status.trim().to_uppercase()
        ));
    }
    expected.push_str(&format!(
        "+----+--------------+--------------+\nReceived a total of {} rows\n",
        big.len()
    ));
    assert!(
        stdout.contains(&expected),
        "{stdout}\n--- expected ---\n{expected}"
    );
    assert!(
        stdout.ends_with(
            "+------------+\n| table name |\n+------------+\n+------------+\n0 rows in set\n"
        ),
        "{stdout}"
    );
}
