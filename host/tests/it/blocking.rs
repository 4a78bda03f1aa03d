//! Guests that block inside WASI host calls (`std::thread::sleep`, a pollable's `block`,
//! `wasi:io/poll.poll`, a pollable that never fires) in every world, run as jobs over a
//! file: each blocked call is abandoned at the stage's time limit, its records are
//! dead-lettered once with the limit as the reason, and every other record comes out
//! exactly. A job whose guest blocks forever stops promptly on SIGINT and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use rivulet::assemble::RunOptions;
use rivulet::pipeline::Pipeline;
use rivulet::spec::PipelineSpec;
use rivulet::udf::{ModuleCache, Runtime};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const LIMIT_REASON: &str = "time limit of 200 ms per batch exceeded";

/// Runs `spec` (with `input` as in.jsonl) to the end of its input; returns the sink's
/// lines, the dead letters and how long it took.
fn run_job(dir: &Path, spec: &str, input: &str) -> (Vec<String>, Vec<Value>, Duration) {
    std::fs::write(dir.join("in.jsonl"), input).unwrap();
    let spec_path = dir.join("job.toml");
    std::fs::write(&spec_path, spec).unwrap();
    let spec = PipelineSpec::load(&spec_path).unwrap();
    let options = RunOptions {
        brokers: None,
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: None,
        commit_every: Duration::from_secs(1),
        swappable: false,
        instance: Default::default(),
    };
    let started = Instant::now();
    Pipeline::from_spec(&spec, &options).unwrap().run().unwrap();
    let took = started.elapsed();
    let out = std::fs::read_to_string(dir.join("out.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let dead = std::fs::read_to_string(dir.join("dlq.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out, dead, took)
}

const ENDS: &str = r#"
[batch]
max_records = 1
max_wait = "100ms"
[sink]
kind = "file"
path = "out.jsonl"
[dead_letters]
path = "dlq.jsonl"
"#;

const BLOCKING: [&str; 4] = ["sleep:3000", "block:3000", "poll:3000", "forever"];

/// Commands, blocking ones between harmless ones: `a`, `sleep:3000`, `b`, `block:3000`...
fn commands() -> Vec<&'static str> {
    let mut commands = vec!["a"];
    for (blocking, next) in BLOCKING.iter().zip(["b", "c", "d", "e"]) {
        commands.push(blocking);
        commands.push(next);
    }
    commands
}

fn assert_blocked_letters(dead: &[Value], stage: &str, payloads: &[String]) {
    let got: Vec<&str> = dead
        .iter()
        .map(|l| l["payload"].as_str().unwrap())
        .collect();
    assert_eq!(got, payloads, "{dead:?}");
    for letter in dead {
        assert_eq!(letter["stage"], stage, "{letter}");
        let error = letter["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("stage `{stage}`: {LIMIT_REASON}")),
            "{error}"
        );
    }
}

#[test]
fn parse_blocked_in_host_calls_dead_letters_those_records_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        r#"name = "blocking-parse"
[source]
kind = "file"
path = "in.jsonl"
[[stages]]
name = "hostile"
kind = "parse"
module = "{}"
[stages.limits]
cpu_per_batch = 200
{ENDS}"#,
        common::wasm("hostile_guest").display()
    );
    let input: String = commands().iter().map(|c| format!("{c}\n")).collect();
    let (out, dead, took) = run_job(dir.path(), &spec, &input);
    let expected: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|c| format!(r#"{{"command":"{c}","outcome":"echo"}}"#))
        .collect();
    assert_eq!(out, expected);
    let blocked: Vec<String> = BLOCKING.iter().map(|c| c.to_string()).collect();
    assert_blocked_letters(&dead, "hostile", &blocked);
    // Four blocked calls at 200 ms each, not 3 × 3 s plus forever.
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

fn json_commands() -> String {
    commands()
        .iter()
        .map(|c| format!("{{\"command\":\"{c}\"}}\n"))
        .collect()
}

fn json_blocked() -> Vec<String> {
    BLOCKING
        .iter()
        .map(|c| format!("{{\"command\":\"{c}\"}}"))
        .collect()
}

#[test]
fn map_blocked_in_host_calls_dead_letters_those_records_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        r#"name = "blocking-map"
[source]
kind = "file"
path = "in.jsonl"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[[stages]]
name = "hostile"
kind = "map"
module = "{}"
[stages.limits]
cpu_per_batch = 200
{ENDS}"#,
        common::wasm("hostile_guest_map").display()
    );
    let (out, dead, took) = run_job(dir.path(), &spec, &json_commands());
    let expected: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|c| format!(r#"{{"command":"{c}","outcome":"echo"}}"#))
        .collect();
    assert_eq!(out, expected);
    assert_blocked_letters(&dead, "hostile", &json_blocked());
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn format_blocked_in_host_calls_dead_letters_those_rows_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        r#"name = "blocking-format"
[source]
kind = "file"
path = "in.jsonl"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[format]
module = "{}"
[format.limits]
cpu_per_batch = 200
{ENDS}"#,
        common::wasm("hostile_guest_format").display()
    );
    let (out, dead, took) = run_job(dir.path(), &spec, &json_commands());
    assert_eq!(out, ["a=echo", "b=echo", "c=echo", "d=echo", "e=echo"]);
    assert_blocked_letters(&dead, "format", &json_blocked());
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn aggregate_blocked_in_add_or_finish_dead_letters_those_rows_and_windows_only() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        r#"name = "blocking-aggregate"
[source]
kind = "file"
path = "in.jsonl"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[window]
key = "key"
size = "10s"
time = "event"
timestamp = "ts"
[aggregate]
module = "{}"
[aggregate.limits]
cpu_per_batch = 200
{ENDS}"#,
        common::wasm("hostile_guest_aggregate").display()
    );
    // One key per 10 s window; each window fires alone when the next one's first row
    // arrives. Window 1's and 3's blocking rows fail in `add`; window 2 blocks in `finish`
    // (after two rows), window 4 in `finish` on a pollable that never fires.
    let windows: [(&str, &[&str]); 6] = [
        ("k0", &["x", "x"]),
        ("k1", &["x", "add:sleep:3000", "x"]),
        ("k2", &["finish:block:3000", "x"]),
        ("k3", &["add:poll:3000", "x", "add:forever", "x", "x"]),
        ("k4", &["x", "finish:forever"]),
        ("k5", &["x", "x", "x"]),
    ];
    let mut input = String::new();
    for (w, (key, commands)) in windows.iter().enumerate() {
        for (i, command) in commands.iter().enumerate() {
            let ts = w as i64 * 10_000 + i as i64;
            input.push_str(&format!(
                "{{\"key\":\"{key}\",\"ts\":{ts},\"command\":\"{command}\"}}\n"
            ));
        }
    }
    let (out, dead, took) = run_job(dir.path(), &spec, &input);
    let counts: Vec<(String, u64)> = out
        .iter()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            (
                row["key"].as_str().unwrap().to_owned(),
                row["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [("k0", 2), ("k1", 2), ("k3", 3), ("k5", 3)]
        .iter()
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
    assert_eq!(counts, expected);
    assert_eq!(dead.len(), 5, "{dead:?}");
    for letter in &dead {
        assert_eq!(letter["stage"], "aggregate", "{letter}");
        let error = letter["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("stage `aggregate`: {LIMIT_REASON}")),
            "{error}"
        );
    }
    let payloads: Vec<String> = dead
        .iter()
        .map(|l| l["payload"].as_str().unwrap().to_owned())
        .collect();
    // Rows whose `add` blocked, as read; windows whose `finish` blocked, by key.
    let (windows, rows): (Vec<&String>, Vec<&String>) =
        payloads.iter().partition(|p| p.contains("window_start"));
    assert_eq!(
        rows,
        [
            r#"{"key":"k1","ts":10001,"command":"add:sleep:3000"}"#,
            r#"{"key":"k3","ts":30000,"command":"add:poll:3000"}"#,
            r#"{"key":"k3","ts":30002,"command":"add:forever"}"#,
        ]
    );
    assert_eq!(windows.len(), 2, "{windows:?}");
    assert!(windows[0].contains(r#""key":"k2""#), "{}", windows[0]);
    assert!(windows[1].contains(r#""key":"k4""#), "{}", windows[1]);
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

/// Starts `rivulet run` on a file job whose guest blocks forever on its second record,
/// under a one-hour time limit (so only the stop can end the call); waits until the
/// first record is out, sends `signal`, and returns how long the job took to exit after
/// it, its exit status, its output and its dead letters.
fn stop_blocked_job(signal: &str) -> (Duration, std::process::ExitStatus, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), "a\nforever\nb\n").unwrap();
    let spec = format!(
        r#"name = "blocked-forever"
[source]
kind = "file"
path = "in.jsonl"
[[stages]]
name = "hostile"
kind = "parse"
module = "{}"
[stages.limits]
cpu_per_batch = 3600000
{ENDS}"#,
        common::wasm("hostile_guest").display()
    );
    std::fs::write(dir.path().join("job.toml"), spec).unwrap();
    let log = std::fs::File::create(dir.path().join("log.txt")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rivulet"))
        // One task: the second record waits behind the blocked first (a second task
        // would read it from its own split of the file).
        .args(["run", "job.toml", "--control", "off", "--parallelism", "1"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let out_path = dir.path().join("out.jsonl");
    let started = Instant::now();
    while !std::fs::read_to_string(&out_path)
        .unwrap_or_default()
        .contains("echo")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the job never wrote its first record"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The file sink writes the first record before the second batch starts; give the
    // guest time to block on the second.
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the job ended early");
    let signalled = Instant::now();
    let sent = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("the job ignored {signal} for 10 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = signalled.elapsed();
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let dead = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap_or_default();
    let log = std::fs::read_to_string(dir.path().join("log.txt")).unwrap_or_default();
    assert!(status.success(), "{signal}: {status:?}\n{log}");
    eprintln!("{signal}: stopped {took:?} after the signal");
    (took, status, out, dead)
}

#[test]
fn sigint_stops_a_job_whose_guest_blocks_forever_within_two_seconds() {
    let (took, status, out, dead) = stop_blocked_job("-INT");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(status.code(), Some(0));
    assert_eq!(out, "{\"command\":\"a\",\"outcome\":\"echo\"}\n");
    assert_eq!(dead, "", "an abandoned call is not the record's fault");
}

#[test]
fn sigterm_stops_a_job_whose_guest_blocks_forever_within_two_seconds() {
    let (took, status, out, dead) = stop_blocked_job("-TERM");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(status.code(), Some(0));
    assert_eq!(out, "{\"command\":\"a\",\"outcome\":\"echo\"}\n");
    assert_eq!(dead, "");
}
