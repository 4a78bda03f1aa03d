//! The `rivulet` command line as a user meets it: `udf test` windows and inputs, the crates'
//! "Try it" lines, waiting for Kafka (timeout, interruption) and the demo's last window.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn rivulet() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rivulet"));
    command
        .current_dir(workspace())
        .env("RUST_LOG", "warn")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS");
    command
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn udf_test(args: &[&str]) -> Output {
    rivulet()
        .args(["udf", "test"])
        .args(args)
        .output()
        .expect("run rivulet")
}

#[test]
fn udf_test_with_a_window_adds_only_the_rows_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.jsonl");
    // 12:34:56 and 12:35:31 are outside [12:35:00, 12:35:30); 12:35:29.999 is inside.
    let rows = [
        ("SHIPPED", "2024-05-23T12:34:56Z", 1_716_467_696_123i64),
        ("PENDING", "2024-05-23T12:35:01Z", 1_716_467_701_950),
        ("SHIPPED", "2024-05-23T12:35:07Z", 1_716_467_707_004),
        ("SHIPPED", "2024-05-23T12:35:29Z", 1_716_467_729_999),
        ("DELIVERED", "2024-05-23T12:35:31Z", 1_716_467_731_562),
    ];
    let lines: Vec<String> = rows
        .iter()
        .map(|(status, ts, ms)| format!(r#"{{"status":"{status}","ts":"{ts}","tsMillis":{ms}}}"#))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let module = common::wasm("udf_count_by_status");
    let out = udf_test(&[
        module.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--key",
        "status",
        "--timestamp",
        "tsMillis",
        "--window-start",
        "2024-05-23T12:35:00Z",
        "--window-end",
        "1716467730000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (start, end) = (1_716_467_700_000i64, 1_716_467_730_000i64);
    let expected = format!(
        "1: outside the window, not added\n\
         5: outside the window, not added\n\
         result [PENDING]: {{\"window_start\":{start},\"window_end\":{end},\"status\":\"PENDING\",\"order_count\":1}}\n\
         result [SHIPPED]: {{\"window_start\":{start},\"window_end\":{end},\"status\":\"SHIPPED\",\"order_count\":2}}\n\
         -- 5 records in, 2 outputs, 0 errors, 2 outside the window\n"
    );
    assert_eq!(text(&out.stdout), expected);

    // The same by ISO-8601 text in `ts`.
    let by_text = udf_test(&[
        module.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--key",
        "status",
        "--timestamp",
        "ts",
        "--window-start",
        "1716467700000",
        "--window-end",
        "2024-05-23T12:35:30Z",
    ]);
    assert_eq!(text(&by_text.stdout), expected);
}

#[test]
fn udf_test_window_bounds_need_a_timestamp_field() {
    let module = common::wasm("udf_count_by_status");
    let input = workspace().join("samples/order-rows.jsonl");
    let out = udf_test(&[
        module.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--window-start",
        "0",
        "--window-end",
        "1000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("--timestamp <TIMESTAMP>"), "{err}");
}

#[test]
fn udf_test_refuses_a_json_array_file_saying_one_value_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let order =
        r#"{"customer":"c","status":"NEW","region":"r","amount":1,"ts":"2024-05-23T12:35:00Z"}"#;
    let pretty = dir.path().join("orders.json");
    std::fs::write(&pretty, format!("[\n  {order},\n  {order}\n]\n")).unwrap();
    let one_line = dir.path().join("rows.json");
    std::fs::write(&one_line, format!("[{order},{order}]")).unwrap();
    for (module, input) in [("udf_parse_orders", &pretty), ("udf_high_value", &one_line)] {
        let out = udf_test(&[
            common::wasm(module).to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{module}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "{} is one JSON array, but `rivulet udf test` reads one JSON value per line",
                input.display()
            )),
            "{module}: {err}"
        );
        assert!(out.stdout.is_empty(), "{module}: {}", text(&out.stdout));
    }
}

#[test]
fn udf_test_of_a_step_that_looks_rows_up_needs_its_tables_and_reads_them() {
    let module = common::wasm("udf_enrich_region");
    let input = workspace().join("samples/order-rows.jsonl");
    let out = udf_test(&[module.to_str().unwrap(), "--input", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "error: {} looks rows up in reference tables: give it each table it reads with --table NAME:KEY=FILE (e.g. --table regions:region=samples/regions.jsonl)",
            module.display()
        )
    );
    let regions = workspace().join("samples/regions.jsonl");
    let out = udf_test(&[
        module.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--table",
        &format!("regions:region={}", regions.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The first order (eu-west) with the region's name and country from the table.
    let first = text(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let row: serde_json::Value = serde_json::from_str(first.strip_prefix("1: ").unwrap()).unwrap();
    assert_eq!(
        (
            row["region"].as_str(),
            row["region_name"].as_str(),
            row["country"].as_str()
        ),
        (Some("eu-west"), Some("Europe (Ireland)"), Some("Ireland"))
    );
}

/// Every `rivulet udf test` command in the `udfs/*` crate headers (the "Try it" lines).
fn try_it_commands() -> Vec<(PathBuf, Vec<String>)> {
    let mut commands = Vec::new();
    for entry in std::fs::read_dir(workspace().join("udfs")).unwrap() {
        let lib = entry.unwrap().path().join("src/lib.rs");
        let source = std::fs::read_to_string(&lib).unwrap();
        for line in source.lines().take_while(|l| l.starts_with("//!")) {
            let Some((_, command)) = line.split_once("rivulet udf test ") else {
                continue;
            };
            let command = command.split('`').next().unwrap();
            let args = command.split_whitespace().map(str::to_owned).collect();
            commands.push((lib.clone(), args));
        }
    }
    commands
}

#[test]
fn every_try_it_line_of_the_udf_crates_names_an_existing_sample_and_runs() {
    let commands = try_it_commands();
    assert_eq!(commands.len(), 9, "{commands:?}");
    for (lib, args) in commands {
        let input = args
            .iter()
            .skip_while(|a| *a != "--input")
            .nth(1)
            .unwrap_or_else(|| panic!("{}: no --input in {args:?}", lib.display()));
        assert!(
            workspace().join(input).is_file(),
            "{}: {input} does not exist",
            lib.display()
        );
        // Run it, with the component where the tests find the built ones.
        let module = Path::new(&args[0]).file_stem().unwrap().to_str().unwrap();
        let mut args = args.clone();
        args[0] = common::wasm(module).display().to_string();
        let out = udf_test(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            out.status.success(),
            "{}: {}",
            lib.display(),
            text(&out.stderr)
        );
        let stdout = text(&out.stdout);
        let summary = stdout.lines().last().unwrap_or_default();
        assert!(
            summary.starts_with("-- ") && !summary.contains(" 0 outputs"),
            "{}: {stdout}",
            lib.display()
        );
    }
}

#[test]
fn every_duration_flag_needs_a_unit_and_says_which_text_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let spec = kafka_job(dir.path());
    let spec = spec.to_str().unwrap();
    let module = common::wasm("udf_parse_orders");
    let module = module.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["demo", "--duration", "5"], "5"),
        (&["demo", "--window", "30"], "30"),
        (&["run", spec, "--commit-every", "1"], "1"),
        (&["run", spec, "--connect-timeout", "30"], "30"),
        (
            &["udf", "test", module, "--input", "-", "--cpu-limit", "200"],
            "200",
        ),
    ];
    for (args, number) in cases {
        let out = rivulet().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "a duration needs a unit: write \"{number}s\" (or \"{number}ms\", \"{number}m\"), not {number}"
            )),
            "{args:?}: {err}"
        );
    }
}

fn kafka_job(dir: &Path) -> PathBuf {
    let spec = dir.join("job.toml");
    std::fs::write(
        &spec,
        "name = \"wait\"\n[source]\nkind = \"kafka\"\ntopic = \"orders\"\nassign = \"all\"\n[sink]\nkind = \"stdout\"\n",
    )
    .unwrap();
    spec
}

/// A local address where nothing listens.
fn nobody_listening() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

#[test]
fn connect_timeout_gives_up_at_the_timeout_not_before() {
    let dir = tempfile::tempdir().unwrap();
    let spec = kafka_job(dir.path());
    let started = Instant::now();
    let out = rivulet()
        .args(["run", spec.to_str().unwrap(), "--control", "off"])
        .args(["--brokers", &nobody_listening(), "--connect-timeout", "5s"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("cannot reach Kafka at"), "{err}");
    assert!(took >= Duration::from_secs(5), "gave up after {took:?}");
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");
}

#[test]
fn stopping_a_job_while_it_waits_for_kafka_exits_0() {
    for signal in ["-INT", "-TERM"] {
        let dir = tempfile::tempdir().unwrap();
        let spec = kafka_job(dir.path());
        let mut child = rivulet()
            .args(["run", spec.to_str().unwrap(), "--control", "off"])
            .args(["--brokers", &nobody_listening()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(child.try_wait().unwrap().is_none(), "still waiting");
        let killed = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{signal}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn demo_duration_fires_the_last_window_so_every_seeded_order_is_counted() {
    let cache = tempfile::tempdir().unwrap();
    let out = rivulet()
        .args([
            "demo",
            "--duration",
            "3s",
            "--window",
            "1s",
            "--rate",
            "200",
        ])
        .args(["--no-watch", "--control", "off", "--listen", "127.0.0.1:0"])
        .arg("--udf-dir")
        .arg(common::wasm_dir())
        .env("RIVULET_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let seeded = stderr
        .lines()
        .find_map(|l| l.strip_prefix("seeded "))
        .unwrap_or_else(|| panic!("no seeding summary: {stderr}"));
    let (written, rest) = seeded.split_once(" orders (").unwrap();
    let malformed = rest.strip_suffix(" malformed)").unwrap();
    let good = written.parse::<u64>().unwrap() - malformed.parse::<u64>().unwrap();
    assert!(good > 100, "{seeded}");
    let counted: u64 = text(&out.stdout)
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            row["order_count"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(counted, good, "{stderr}");
}

#[test]
fn broker_on_a_taken_port_says_so_and_exits_with_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = rivulet()
        .args(["broker", "--listen", &address])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on {address} for the embedded broker: the port is taken"
        )) && stderr.contains("pass --listen with another address"),
        "{stderr}"
    );
    assert_eq!(text(&out.stdout), "", "no address printed");
}

#[test]
fn udf_test_reports_only_the_record_that_traps_and_parses_its_batch_mates() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("commands.txt");
    let commands: Vec<String> = (0..40)
        .map(|i| {
            if i == 25 {
                "panic".to_owned()
            } else {
                format!("record-{i}")
            }
        })
        .collect();
    std::fs::write(&input, commands.join("\n") + "\n").unwrap();
    let out = udf_test(&[
        common::wasm("hostile_guest").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let errors: Vec<&str> = stdout.lines().filter(|l| l.contains(": error:")).collect();
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(
        errors[0].starts_with("26: ") && errors[0].contains("hostile guest panics on purpose"),
        "{stdout}"
    );
    for i in (0..40).filter(|&i| i != 25) {
        assert!(
            stdout.contains(&format!("\"record-{i}\"")),
            "record-{i}: {stdout}"
        );
    }
    assert!(
        stdout.ends_with("-- 40 records in, 39 outputs, 1 errors\n"),
        "{stdout}"
    );
}

#[test]
fn check_accepts_a_runnable_spec_and_names_what_would_stop_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    std::fs::write(&input, "{}\n").unwrap();
    let spec = |parse_module: &str, input: &Path| {
        format!(
            r#"
name = "checked"
parallelism = 1
[source]
kind = "file"
path = "{}"
[[stages]]
name = "parse-orders"
kind = "parse"
module = "{}"
[sink]
kind = "stdout"
"#,
            input.display(),
            common::wasm(parse_module).display()
        )
    };
    let run_check = |text: String| {
        let path = dir.path().join("job.toml");
        std::fs::write(&path, text).unwrap();
        rivulet()
            .args(["check", path.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let ok = run_check(spec("udf_parse_orders", &input));
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).ends_with(": ok — job `checked`, 1 stage(s), 1 task(s)\n"),
        "{}",
        text(&ok.stdout)
    );
    // A map component where a parse step belongs.
    let wrong = run_check(spec("udf_high_value", &input));
    assert!(!wrong.status.success());
    let err = text(&wrong.stderr);
    assert!(err.contains("does not run") && err.contains("map"), "{err}");
    // An input file that is not there.
    let missing = run_check(spec("udf_parse_orders", &dir.path().join("gone.jsonl")));
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("gone.jsonl"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn graph_prints_the_workshop_job_as_mermaid_and_dot() {
    let spec = workspace().join("pipelines/step4-aggregates-to-kafka.toml");
    let mermaid = rivulet()
        .args(["graph", spec.to_str().unwrap(), "--parallelism", "1"])
        .output()
        .unwrap();
    assert!(mermaid.status.success());
    let out = text(&mermaid.stdout);
    assert!(out.starts_with("flowchart LR\n  %% 1 task\n"), "{out}");
    assert!(
        out.contains("[(\"Kafka topic partitioned-topic\")]"),
        "{out}"
    );
    assert!(out.contains(" -. rejected .-> "), "{out}");
    let dot = rivulet()
        .args(["graph", spec.to_str().unwrap(), "--format", "dot"])
        .output()
        .unwrap();
    assert!(
        text(&dot.stdout).starts_with("digraph job {"),
        "{}",
        text(&dot.stdout)
    );
}

/// `rivulet run` writes a swap token only its user can read; `rivulet swap` finds it by the
/// control address, a wrong token is refused (nothing changes), and `rivulet status` shows
/// the module swapped in and the job's counters.
#[test]
fn swapping_through_the_control_api_needs_the_token_the_job_wrote() {
    let broker = common::kafka::TestBroker::embedded();
    broker.topic("ids", 1);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
name = "tokens"
[source]
kind = "kafka"
topic = "ids"
assign = "all"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[sink]
kind = "file"
path = "{}"
"#,
            common::wasm("swap_parse_v1").display(),
            dir.path().join("out.jsonl").display()
        ),
    )
    .unwrap();
    let child = rivulet()
        .args(["run", spec.to_str().unwrap(), "--control", "127.0.0.1:0"])
        .args(["--brokers", &broker.address()])
        .env("HOME", &home)
        .env_remove("RIVULET_CONTROL_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut job, _lines, control) = common::with_control(child);
    let port = control.rsplit(':').next().unwrap();
    let token_file = home.join(format!(".cache/rivulet/control/127.0.0.1_{port}.token"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", token_file.display());
    }
    let swap = |extra: &[&str]| {
        rivulet()
            .args(["swap", "--control", &control, "--stage", "parse"])
            .arg(common::wasm("swap_parse_v2"))
            .args(extra)
            .env("HOME", &home)
            .env_remove("RIVULET_CONTROL_TOKEN")
            .output()
            .unwrap()
    };
    // The API answers 503 until the job is built (it waits for Kafka first).
    let status = || {
        let started = Instant::now();
        loop {
            let out = rivulet()
                .args(["status", "--control", &control])
                .env("HOME", &home)
                .output()
                .unwrap();
            if out.status.success() {
                return text(&out.stdout);
            }
            let error = text(&out.stderr);
            assert!(
                error.contains("503") && started.elapsed() < Duration::from_secs(60),
                "{error}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let before = status();
    let refused = swap(&["--control-token", "not-the-token"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("wrong token"),
        "{}",
        text(&refused.stderr)
    );
    let after_refusal = status();
    assert_eq!(
        before.lines().nth(2),
        after_refusal.lines().nth(2),
        "a refused swap changes nothing"
    );
    let swapped = swap(&[]);
    assert!(swapped.status.success(), "{}", text(&swapped.stderr));
    assert!(
        text(&swapped.stdout).contains("swapped stage `parse`"),
        "{}",
        text(&swapped.stdout)
    );
    let after = status();
    assert!(after.contains("parse"), "{after}");
    assert!(after.contains("step"), "the counters: {after}");
    assert_ne!(
        before.lines().nth(2),
        after.lines().nth(2),
        "{before}\n{after}"
    );
    job.kill().unwrap();
    job.wait().unwrap();
}

/// Runs a Kafka job that reads 10 records, then idles for `idle` until Ctrl-C; returns its
/// stderr (logs at info).
fn running_job_stderr(dir: &Path, extra: &[&str], idle: Duration) -> String {
    use common::kafka::{TestBroker, produce};
    let broker = TestBroker::embedded();
    broker.topic("ticks", 1);
    let records: Vec<(i32, String, Vec<u8>)> = (0..10)
        .map(|id| (0, "k".to_owned(), format!(r#"{{"id":{id}}}"#).into_bytes()))
        .collect();
    produce(&broker.address(), "ticks", &records);
    let spec = dir.join("job.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"ticking\"\nparallelism = 1\n[source]\nkind = \"kafka\"\ntopic = \"ticks\"\nassign = \"all\"\nstart = \"earliest\"\n[[stages]]\nname = \"parse\"\nkind = \"parse\"\nbuiltin = \"json\"\n[sink]\nkind = \"file\"\npath = \"{}\"\n",
            dir.join("out.jsonl").display()
        ),
    )
    .unwrap();
    let child = rivulet()
        .args(["run", spec.to_str().unwrap(), "--control", "off"])
        .args(["--brokers", &broker.address()])
        .args(extra)
        .env("RUST_LOG", "info")
        .env("HOME", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(idle);
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stderr)
}

/// With standard error not a terminal (a pipe here), nothing of the ticker and no colour:
/// not one escape character.
#[test]
fn with_stderr_not_a_terminal_no_ticker_and_no_ansi_colour_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let err = running_job_stderr(dir.path(), &[], Duration::from_millis(3000));
    assert!(err.contains("INFO"), "logs at info: {err}");
    assert!(!err.contains('\u{1b}'), "an escape sequence: {err:?}");
    assert!(!err.contains(" · out "), "a ticker line: {err:?}");
}

/// `--ticker always` draws the progress line into the pipe too: each drawing erases the
/// line and writes the figures (records in and their rate, results out), and every log
/// line is written on an erased line (the ticker's drawn line erased first), never after
/// the ticker's text.
#[test]
fn the_ticker_line_counts_records_in_and_out_and_never_shares_a_line_with_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let err = running_job_stderr(
        dir.path(),
        &["--ticker", "always"],
        Duration::from_millis(4000),
    );
    const ERASE: &str = "\r\u{1b}[2K";
    let drawn: Vec<&str> = err
        .split(ERASE)
        .skip(1)
        .map(|part| part.split('\n').next().unwrap_or(""))
        .filter(|line| !line.is_empty())
        .collect();
    assert!(
        drawn
            .iter()
            .any(|line| line.starts_with("in 10 (") && line.contains("/s) · out 10")),
        "no ticker line with the 10 records: {drawn:?}"
    );
    // On the terminal, what follows the last erasure of a line is what stays visible.
    for line in err.split('\n').filter(|l| l.contains("INFO")) {
        let log = line.rsplit(ERASE).next().unwrap_or(line);
        assert!(
            log.starts_with(|c: char| c.is_ascii_digit()),
            "a log line after something else: {line:?}"
        );
    }
    // Erased at the end: the last thing written is a log line or the erasure.
    assert!(err.ends_with('\n') || err.ends_with(ERASE), "{err:?}");
}

/// A source topic the broker does not have is named as such, not as a broker outage: the
/// broker answers, the topic is missing.
#[test]
fn a_missing_source_topic_is_reported_as_missing_not_as_kafka_unreachable() {
    let broker = common::kafka::TestBroker::embedded();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("job.toml");
    std::fs::write(
        &spec,
        "name = \"missing\"\n[source]\nkind = \"kafka\"\ntopic = \"no-such-source-topic\"\nassign = \"all\"\n[sink]\nkind = \"stdout\"\n",
    )
    .unwrap();
    let out = rivulet()
        .args(["run", spec.to_str().unwrap(), "--control", "off"])
        .args(["--brokers", &broker.address(), "--connect-timeout", "3s"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "topic `no-such-source-topic` does not exist on Kafka at {}",
            broker.address()
        )),
        "{err}"
    );
    assert!(!err.contains("cannot reach Kafka"), "{err}");
}
