//! The dashboard at the control address, in headless Chromium (chromedriver, driven with
//! fantoccini) against a running `rivulet run`: the job graph is drawn with live counts, the
//! stages show their modules, window results and dead letters (with their reasons) are
//! listed, a module swapped through the page's form runs and the graph names it; each
//! source partition of a Kafka job is listed with its lag and watermark. Saves `target/test-artifacts/dashboard.png` and prints the page's
//! weight and first paint (`--nocapture`).
//!
//! Skipped, saying so, only when chromedriver is absent and `RIVULET_REQUIRE_BROWSER` is not
//! set; CI sets it (`.ci/run` installs chromium and chromium-driver).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::{JobProcess, wasm};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "dashboard-test-token";

/// chromedriver on PATH, if any.
fn chromedriver() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("chromedriver"))
        .find(|path| path.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts chromedriver and waits until it takes connections.
fn start_chromedriver(path: &Path) -> (JobProcess, String) {
    let port = free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = JobProcess(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "chromedriver did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, format!("http://127.0.0.1:{port}"))
}

async fn browser(webdriver: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({ "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1400"] }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(webdriver)
        .await
        .unwrap()
}

/// Runs `script` until it returns something other than null, or fails after 60 s.
async fn wait_for(client: &Client, what: &str, script: &str) -> Value {
    let started = Instant::now();
    loop {
        let value = client.execute(script, vec![]).await.unwrap();
        if !value.is_null() {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the page never showed {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hash(name: &str) -> String {
    rivulet::udf::cache::content_hash(&std::fs::read(wasm(name)).unwrap())
}

/// A job on standard input: parse (the swap test's v1), dead letters to a file, counts per
/// `parsed_by` in 1 s processing-time windows, results to a file. Fed ids (and every tenth
/// line malformed) until dropped.
struct FedJob {
    job: JobProcess,
    control: String,
    feeding: Arc<AtomicBool>,
    out: PathBuf,
}

impl Drop for FedJob {
    fn drop(&mut self) {
        self.feeding.store(false, Ordering::Relaxed);
    }
}

fn start_job(dir: &Path) -> FedJob {
    let spec = dir.join("job.toml");
    let out = dir.join("out.jsonl");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "dashboard"
[source]
kind = "stdin"
[[stages]]
name = "parse"
kind = "parse"
module = "{module}"
[window]
key = "parsed_by"
size = "1s"
[aggregate]
builtin = [{{ name = "n", fn = "count" }}]
[sink]
kind = "file"
path = "{out}"
[dead_letters]
path = "{dlq}"
[batch]
max_records = 50
max_wait = "20ms"
"#,
            module = wasm("swap_parse_v1").display(),
            out = out.display(),
            dlq = dir.join("dlq.jsonl").display(),
        ),
    )
    .unwrap();
    fed_job(dir, &spec, out, |id| match id % 10 {
        9 => format!("{{\"id\":{id}\n"),
        _ => format!("{{\"id\":{id}}}\n"),
    })
}

/// Runs the job of `spec` on standard input, fed `line(0)`, `line(1)`, … every 5 ms until
/// dropped.
fn fed_job(dir: &Path, spec: &Path, out: PathBuf, line: fn(u64) -> String) -> FedJob {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", spec.to_str().unwrap(), "--control", "127.0.0.1:0"])
        .args(["--control-token", TOKEN])
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeding = Arc::new(AtomicBool::new(true));
    {
        let feeding = feeding.clone();
        std::thread::spawn(move || {
            let mut id = 0u64;
            while feeding.load(Ordering::Relaxed) {
                if stdin
                    .write_all(line(id).as_bytes())
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    return;
                }
                id += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }
    let (job, _lines, control) = common::with_control(child);
    FedJob {
        job,
        control,
        feeding,
        out,
    }
}

/// chromedriver, or None (saying so) when the test is to be skipped.
fn chromedriver_or_skip(test: &str) -> Option<PathBuf> {
    let found = chromedriver();
    if found.is_none() {
        assert!(
            std::env::var_os("RIVULET_REQUIRE_BROWSER").is_none(),
            "RIVULET_REQUIRE_BROWSER is set but chromedriver is not on PATH (apt-get install chromium chromium-driver)"
        );
        println!(
            "SKIPPED {test}: no chromedriver on PATH (apt-get install chromium chromium-driver; set RIVULET_REQUIRE_BROWSER=1 to make this a failure)"
        );
    }
    found
}

/// Runs `checks` with a browser; pass or fail, the browser is closed after (chromedriver's
/// end does not end the browser it started).
async fn with_browser<F>(chromedriver: &Path, checks: impl FnOnce(Client) -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (_driver, webdriver) = start_chromedriver(chromedriver);
    let client = browser(&webdriver).await;
    let outcome = tokio::spawn(checks(client.clone())).await;
    let _ = client.close().await;
    if let Err(failed) = outcome {
        match failed.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(failed) => panic!("the checks did not finish: {failed}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_draws_the_live_graph_and_swaps_a_module_through_its_form() {
    let Some(chromedriver) =
        chromedriver_or_skip("dashboard_draws_the_live_graph_and_swaps_a_module_through_its_form")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let job = start_job(dir.path());
    let control = job.control.clone();

    // The page: served as is, without a token, from the binary.
    let (code, page) = rivulet::http::client::request(&control, "GET", "/", &[], None).unwrap();
    assert_eq!(code, 200);
    assert_eq!(page, rivulet::http::DASHBOARD);

    with_browser(&chromedriver, |client| check_the_page(client, job, page)).await;
}

const T0: i64 = 1_700_000_000_000;

/// A Kafka job over two partitions with event-time windows: partition 0 holds 5 records of
/// a window that fires and 7 of one that stays open, partition 1 holds 4 of the open one.
/// The page lists each partition with its lag (the records of the open window: read, not
/// committed) and its watermark (its largest event time, no out-of-orderness), both
/// computed here from the input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_lists_each_source_partition_with_its_lag_and_watermark() {
    use common::kafka::{TestBroker, produce};
    let Some(chromedriver) =
        chromedriver_or_skip("dashboard_lists_each_source_partition_with_its_lag_and_watermark")
    else {
        return;
    };
    let broker = TestBroker::embedded();
    broker.topic("partitions-in", 2);
    let times: [Vec<i64>; 2] = [
        (0..5)
            .map(|i| T0 + i * 100)
            .chain((0..7).map(|i| T0 + 20_000 + i * 150))
            .collect(),
        (0..4).map(|i| T0 + 20_000 + i * 100).collect(),
    ];
    let records: Vec<(i32, String, Vec<u8>)> = times
        .iter()
        .enumerate()
        .flat_map(|(p, times)| {
            times.iter().map(move |ts| {
                let payload = format!(r#"{{"key":"k","ts":{ts}}}"#);
                (p as i32, format!("k{p}"), payload.into_bytes())
            })
        })
        .collect();
    produce(&broker.address(), "partitions-in", &records);
    let combined = times
        .iter()
        .map(|t| *t.iter().max().unwrap())
        .min()
        .unwrap();
    let open_from = |ts: i64| ts - ts.rem_euclid(10_000) + 10_000 > combined;
    let iso = |ms: i64| rivulet_sdk::time::iso8601(ms).replace(".000Z", "Z");
    let expected: Vec<Vec<String>> = times
        .iter()
        .enumerate()
        .map(|(p, times)| {
            let backlog = times.len() - times.iter().position(|&ts| open_from(ts)).unwrap();
            let watermark = *times.iter().max().unwrap();
            vec![p.to_string(), backlog.to_string(), iso(watermark)]
        })
        .collect();
    assert_eq!(expected[0][1], "7");
    assert_eq!(expected[1][1], "4");

    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "partitions"
parallelism = 1
[source]
kind = "kafka"
topic = "partitions-in"
assign = "all"
group = "partitions"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[window]
key = "key"
size = "10s"
time = "event"
timestamp = "ts"
out_of_orderness = "0s"
[aggregate]
builtin = [{{ name = "n", fn = "count" }}]
[sink]
kind = "file"
path = "{out}"
"#,
            out = dir.path().join("out.jsonl").display(),
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", spec.to_str().unwrap(), "--control", "127.0.0.1:0"])
        .args(["--brokers", &broker.address(), "--control-token", TOKEN])
        .env("HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (job, _lines, control) = common::with_control(child);
    with_browser(&chromedriver, move |client| async move {
        let _job = job;
        client.goto(&format!("http://{control}/")).await.unwrap();
        let want = serde_json::to_value(&expected).unwrap();
        let script = format!(
            "const rows = [...document.querySelectorAll('#partitions tr[data-partition]')].map(r => [...r.cells].map(c => c.textContent)); return JSON.stringify(rows) === JSON.stringify({want}) ? rows : null;"
        );
        let rows = wait_for(&client, "each partition's lag and watermark", &script).await;
        assert_eq!(rows, want);
    })
    .await;
}

async fn check_the_page(client: Client, mut job: FedJob, page: String) {
    let control = job.control.clone();
    client.goto(&format!("http://{control}/")).await.unwrap();

    // The graph: every operator, and counts on the edges once records flow.
    let labels = wait_for(
        &client,
        "the graph",
        "const n = [...document.querySelectorAll('#graph g.node title')].map(t => t.textContent); return n.length ? n : null;",
    )
    .await;
    assert_eq!(
        labels,
        json!([
            "standard input",
            "file dlq.jsonl",
            "parse parse: swap_parse_v1.wasm",
            "tumbling window 1 s, key parsed_by, processing time",
            "aggregate: count as n",
            "format: JSON",
            "file out.jsonl"
        ])
    );
    let counts = wait_for(
        &client,
        "non-zero counts on the source, rejected and sink edges",
        r#"const c = {};
           for (const t of document.querySelectorAll('#graph text.count')) c[t.dataset.from + '>' + t.dataset.to] = t.textContent;
           const n = (s) => Number((s || '').replace(/^.*: /, '').replace(/,/g, ''));
           return n(c['n0>n2']) > 0 && n(c['n2>n1']) > 0 && n(c['n5>n6']) > 0 ? c : null;"#,
    )
    .await;
    assert!(
        counts["n2>n1"].as_str().unwrap().starts_with("rejected: "),
        "{counts}"
    );
    // The stage's module and a dead letter's reason.
    let stage = client
        .find(Locator::Css("tr[data-stage='parse']"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v1 = hash("swap_parse_v1");
    assert!(stage.contains(&v1[..12]), "{stage}");
    let dead = client
        .find(Locator::Css("#dead tr td:nth-child(4)"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(dead.contains("EOF while parsing"), "{dead}");
    // A window result: the count of v1's records in a one-second window.
    let result = client
        .find(Locator::Css("#results tr td:nth-child(2)"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["parsed_by"], "v1", "{result}");
    assert!(result["n"].as_u64().unwrap() > 0, "{result}");
    let bound =
        |name: &str| rivulet_sdk::time::parse_iso8601(result[name].as_str().unwrap()).unwrap();
    assert_eq!(
        bound("window_end") - bound("window_start"),
        1000,
        "{result}"
    );

    // A swap with a wrong token is refused, and changes nothing.
    // Chrome takes only a canonical path for an upload.
    let v2_path = wasm("swap_parse_v2").canonicalize().unwrap();
    let swap = async |token: &str| -> String {
        client
            .find(Locator::Id("swap-file"))
            .await
            .unwrap()
            .send_keys(v2_path.to_str().unwrap())
            .await
            .unwrap();
        let field = client.find(Locator::Id("swap-token")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(token).await.unwrap();
        client
            .execute(
                "document.getElementById('swap-result').textContent = '';",
                vec![],
            )
            .await
            .unwrap();
        client
            .find(Locator::Id("swap-submit"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(
            &client,
            "the swap's answer",
            "const t = document.getElementById('swap-result').textContent; return t && !t.endsWith('…') ? t : null;",
        )
        .await
        .as_str()
        .unwrap()
        .to_owned()
    };
    let refused = swap("not-the-token").await;
    assert_eq!(refused, "refused (401): wrong token");
    let v2 = hash("swap_parse_v2");
    let swapped = swap(TOKEN).await;
    assert!(
        swapped.starts_with(&format!("swapped parse: {} → {} ", &v1[..12], &v2[..12])),
        "{swapped}"
    );
    // The page shows the new module and the swap in the stage's history.
    let history = wait_for(
        &client,
        "the swap in the stage's history",
        &format!(
            "const r = document.querySelector(\"tr[data-stage='parse']\"); return r && r.textContent.includes('{}') && r.textContent.includes('uploaded swap_parse_v2.wasm') ? r.textContent : null;",
            &v2[..12]
        ),
    )
    .await;
    assert!(
        history.as_str().unwrap().contains("1 (0 refused)"),
        "{history}"
    );
    // The graph names the module the stage runs now, on the page and at `/graph`.
    let relabelled = wait_for(
        &client,
        "the swapped module in the graph",
        "const t = [...document.querySelectorAll('#graph g.node title')].map(t => t.textContent); return t.includes('parse parse: uploaded swap_parse_v2.wasm') ? t : null;",
    )
    .await;
    assert!(
        !relabelled.to_string().contains("swap_parse_v1.wasm"),
        "{relabelled}"
    );
    let (code, mermaid) =
        rivulet::http::client::request(&control, "GET", "/graph", &[], None).unwrap();
    assert_eq!(code, 200);
    assert!(
        mermaid.contains(r#"n2["parse parse: uploaded swap_parse_v2.wasm"]"#),
        "{mermaid}"
    );
    // The module swapped in through the page runs: windows now count v2's records.
    let started = Instant::now();
    while !std::fs::read_to_string(&job.out)
        .unwrap_or_default()
        .contains(r#""parsed_by":"v2""#)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no window of v2's records"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let paint = client
        .execute(
            "return performance.getEntriesByType('paint').map(e => [e.name, e.startTime]);",
            vec![],
        )
        .await
        .unwrap();
    client
        .execute("window.scrollTo(0, 0);", vec![])
        .await
        .unwrap();
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("dashboard.png"), &png).unwrap();
    println!(
        "dashboard: page {} bytes; paint timings (ms) {paint}; screenshot {}",
        page.len(),
        artifacts.join("dashboard.png").display()
    );
    job.feeding.store(false, Ordering::Relaxed);
    job.job.kill().unwrap();
}

/// A stdin job counting orders per status in 1 s processing-time windows with a Wasm
/// aggregate, and a shadow of it that doubles the counts, started over the control API.
/// The page shows a table per window: every key's count cells marked as differing, the new
/// count twice the old one, and the window open when the shadow started marked partial.
/// Saves `target/test-artifacts/dashboard-shadow.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_an_aggregate_shadow_per_window_with_the_differing_cells_marked() {
    let Some(chromedriver) = chromedriver_or_skip(
        "dashboard_shows_an_aggregate_shadow_per_window_with_the_differing_cells_marked",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "dashboard-shadow"
[source]
kind = "stdin"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[window]
key = "status"
size = "1s"
[aggregate]
module = "{}"
[sink]
kind = "file"
path = "{}"
[batch]
max_records = 50
max_wait = "20ms"
"#,
            wasm("shadow_parse_v1").display(),
            wasm("shadow_aggregate_v1").display(),
            dir.path().join("out.jsonl").display(),
        ),
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let mut fed = fed_job(dir.path(), &spec, out, |id| {
        let status = ["OPEN", "SHIPPED", "NEW"][(id % 3) as usize];
        format!("{{\"id\":{id},\"status\":\"{status}\"}}\n")
    });
    let control = fed.control.clone();
    let double = std::fs::read(wasm("shadow_aggregate_double")).unwrap();
    // The control API answers 503 until the job is attached to it.
    let started = Instant::now();
    let (code, body) = loop {
        let answer = rivulet::http::client::request(
            &control,
            "POST",
            "/stages/aggregate/shadow?for=10m&file=double.wasm",
            &double,
            Some(TOKEN),
        )
        .unwrap();
        if answer.0 != 503 || started.elapsed() > Duration::from_secs(30) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 200, "{body}");

    with_browser(&chromedriver, move |client| async move {
        client.goto(&format!("http://{control}/")).await.unwrap();
        // Two compared windows: the first (partial) and a whole one.
        let tables = wait_for(
            &client,
            "two windows of the shadow",
            r#"const hs = [...document.querySelectorAll('[data-shadow="aggregate"] h3')].slice(1);
               return hs.length >= 2 ? hs.map(h => h.textContent) : null;"#,
        )
        .await;
        let headings: Vec<&str> = tables
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        // Latest first: the oldest shown is the partial one.
        assert!(
            headings.last().unwrap().contains("(partial: open when the shadow started)"),
            "{headings:?}"
        );
        assert!(!headings[0].contains("partial"), "{headings:?}");
        // The latest whole window's table: per key, count (old) and count (new), both marked.
        let cells = client
            .execute(
                r#"const t = document.querySelector('[data-shadow="aggregate"] table:nth-of-type(1)');
                   return [...t.querySelectorAll('tbody tr')].map(tr =>
                     [...tr.children].map(td => [td.textContent, td.classList.contains('diff')]));"#,
                vec![],
            )
            .await
            .unwrap();
        let head = client
            .execute(
                r#"const t = document.querySelector('[data-shadow="aggregate"] table:nth-of-type(1)');
                   return [...t.querySelectorAll('th')].map(th => th.textContent);"#,
                vec![],
            )
            .await
            .unwrap();
        let head: Vec<&str> = head
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        let old = head.iter().position(|h| *h == "count (old)").unwrap();
        let new = head.iter().position(|h| *h == "count (new)").unwrap();
        let key = head.iter().position(|h| *h == "key (old)").unwrap();
        let rows = cells.as_array().unwrap();
        assert!(!rows.is_empty());
        for row in rows {
            let cell = |i: usize| (row[i][0].as_str().unwrap(), row[i][1].as_bool().unwrap());
            let (old_count, old_marked) = cell(old);
            let (new_count, new_marked) = cell(new);
            let old_count: u64 = old_count.parse().unwrap();
            let new_count: u64 = new_count.parse().unwrap();
            assert_eq!(new_count, 2 * old_count, "{row:?}");
            assert!(old_marked && new_marked, "the count cells are marked: {row:?}");
            let (_, key_marked) = cell(key);
            assert!(!key_marked, "the key is the same on both sides: {row:?}");
        }
        client
            .execute("document.querySelector('[data-shadow]').scrollIntoView();", vec![])
            .await
            .unwrap();
        let png = client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        std::fs::write(artifacts.join("dashboard-shadow.png"), &png).unwrap();
        fed.feeding.store(false, Ordering::Relaxed);
        fed.job.kill().unwrap();
    })
    .await;
}
