//! Hostile guests against the sandbox: every escape or blow-up is stopped with an error that
//! names the stage and the limit, and the same stage then processes the next batch correctly.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

mod common;

use common::{load, runtime};
use rivulet::stage::ParseStage;
use rivulet::stage::wasm::WasmParse;
use rivulet::udf::{LimitHit, Limits, UdfError};
use rivulet_rows::RawBatch;
use std::time::{Duration, Instant};

fn batch(commands: &[&str]) -> RawBatch {
    let mut batch = RawBatch::new();
    for (i, command) in commands.iter().enumerate() {
        batch.push(None, command.as_bytes(), 0, 0, i as i64, &[]);
    }
    batch
}

fn stage(limits: Limits) -> WasmParse {
    let runtime = runtime();
    let module = load(&runtime, "hostile_guest");
    WasmParse::new(&runtime, &module, "hostile", limits).expect("stage starts")
}

/// The outcomes of a batch that must succeed.
fn outcomes(stage: &mut WasmParse, commands: &[&str]) -> Vec<String> {
    let out = stage.parse(&batch(commands)).expect("batch succeeds");
    assert!(out.errors.is_empty(), "unexpected errors: {:?}", out.errors);
    let column = out.rows.column("outcome").expect("outcome column");
    (0..out.rows.len as usize)
        .map(|i| column.text_at(i).expect("text").to_owned())
        .collect()
}

/// The failure of a batch that must fail, then proof that the stage still works.
fn fails_then_recovers(stage: &mut WasmParse, command: &str) -> UdfError {
    let err = stage
        .parse(&batch(&["hello", command, "hello"]))
        .expect_err("hostile batch fails");
    assert_eq!(
        outcomes(stage, &["hello", "again"]),
        ["echo", "echo"],
        "stage recovers after {command}"
    );
    err
}

#[test]
fn runaway_loop_is_interrupted_at_its_deadline() {
    let deadline = Duration::from_millis(100);
    let mut stage = stage(Limits {
        cpu_per_batch: deadline,
        ..Limits::default()
    });
    let started = Instant::now();
    let err = stage.parse(&batch(&["loop"])).expect_err("interrupted");
    let took = started.elapsed();
    assert_eq!(err.limit(), Some(LimitHit::Deadline { limit: deadline }));
    assert!(took >= deadline, "interrupted early: {took:?}");
    // Generous bound: the point is that it stops, not how precisely (benchmarks measure that).
    assert!(took < deadline * 10, "not interrupted in time: {took:?}");
    assert!(err.to_string().contains("stage `hostile`"), "{err}");
    assert_eq!(outcomes(&mut stage, &["hello"]), ["echo"]);
}

#[test]
fn memory_bomb_is_stopped_at_the_cap() {
    let mut stage = stage(Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    });
    let err = fails_then_recovers(&mut stage, "bomb");
    match err.limit() {
        Some(LimitHit::Memory { limit, requested }) => {
            assert_eq!(limit, 16 << 20);
            assert!(requested > limit);
        }
        other => panic!("expected the memory limit, got {other:?} ({err})"),
    }
    assert!(
        err.to_string()
            .contains("memory limit of 16.0 MiB exceeded"),
        "{err}"
    );
}

#[test]
fn unbounded_recursion_traps_and_the_stage_recovers() {
    let mut stage = stage(Limits::default());
    let err = fails_then_recovers(&mut stage, "recurse");
    assert!(
        matches!(
            err,
            UdfError::Trap { .. }
                | UdfError::Limit {
                    limit: LimitHit::Stack,
                    ..
                }
        ),
        "{err}"
    );
}

#[test]
fn panic_is_reported_with_the_guests_message() {
    let mut stage = stage(Limits::default());
    let err = fails_then_recovers(&mut stage, "panic");
    let text = err.to_string();
    assert!(text.contains("stage `hostile`: UDF trapped"), "{text}");
    assert!(text.contains("hostile guest panics on purpose"), "{text}");
}

#[test]
fn guest_exit_is_a_trap_not_a_host_exit() {
    let mut stage = stage(Limits::default());
    let err = fails_then_recovers(&mut stage, "exit");
    assert!(err.to_string().contains("the guest called exit"), "{err}");
}

#[test]
fn oversized_output_is_rejected() {
    let mut stage = stage(Limits {
        output_bytes: 1 << 20,
        ..Limits::default()
    });
    let err = fails_then_recovers(&mut stage, "huge:3000000");
    match err.limit() {
        Some(LimitHit::Output { limit, produced }) => {
            assert_eq!(limit, 1 << 20);
            assert!(produced >= 3_000_000, "{produced}");
        }
        other => panic!("expected the output limit, got {other:?}"),
    }
}

#[test]
fn reading_host_files_is_denied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "top secret").expect("write");
    let mut stage = stage(Limits::default());
    let file = format!("file:{}", secret.display());
    let list = format!("list:{}", dir.path().display());
    let got = outcomes(&mut stage, &[&file, &list, "list:/", "list:."]);
    for outcome in &got {
        assert!(outcome.starts_with("denied:"), "{got:?}");
        assert!(!outcome.contains("top secret"));
    }
    assert_eq!(outcomes(&mut stage, &["hello"]), ["echo"]);
}

#[test]
fn environment_and_arguments_are_not_inherited() {
    // The test process has PATH and HOME; the guest must see neither, nor any argument.
    assert!(std::env::var_os("PATH").is_some());
    let mut stage = stage(Limits::default());
    let got = outcomes(&mut stage, &["env:PATH", "env:HOME", "args"]);
    assert!(got[0].starts_with("denied:"), "{got:?}");
    assert!(got[1].starts_with("denied:"), "{got:?}");
    assert_eq!(got[2], "0 args");
}

#[test]
fn opening_a_socket_is_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let mut stage = stage(Limits::default());
    let got = outcomes(&mut stage, &[&format!("connect:{addr}")]);
    assert!(got[0].starts_with("denied:"), "{got:?}");
    assert!(
        listener.accept().is_err(),
        "the guest reached the host's listener"
    );
}

#[test]
fn a_record_error_is_not_a_batch_failure() {
    let mut stage = stage(Limits::default());
    let out = stage
        .parse(&batch(&["hello", "fail", "hello"]))
        .expect("batch succeeds");
    assert_eq!(out.origins, [0, 2]);
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].index, 1);
    assert_eq!(out.errors[0].message, "refused on purpose");
}

#[test]
fn every_hostile_command_in_turn_leaves_the_stage_working() {
    let mut stage = stage(Limits {
        cpu_per_batch: Duration::from_millis(50),
        memory_bytes: 8 << 20,
        output_bytes: 1 << 20,
        ..Limits::default()
    });
    for command in ["loop", "bomb", "recurse", "panic", "exit", "huge:1500000"] {
        fails_then_recovers(&mut stage, command);
    }
    let stats = stage.sandbox().stats();
    assert_eq!(stats.failures, 6);
    assert_eq!(
        stats.instantiations, 6,
        "one fresh instance per trap (not for the output limit), plus the first"
    );
}

/// Collects formatted log lines for one test.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn guest_stdout_and_stderr_go_to_the_log_tagged_with_the_stage() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let mut stage = stage(Limits::default());
    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(
            outcomes(&mut stage, &["say:hello from the guest"]),
            ["said"]
        );
        stage.parse(&batch(&["panic"])).expect_err("panics");
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stdout: hello from the guest") && l.contains("stage=hostile")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stderr: hello from the guest") && l.contains("stage=hostile")),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("hostile guest panics on purpose")),
        "{log}"
    );
}

#[test]
fn instance_limit_is_enforced_and_named() {
    let runtime = runtime();
    let module = load(&runtime, "hostile_guest");
    let err = WasmParse::new(
        &runtime,
        &module,
        "hostile",
        Limits {
            instances: 1,
            ..Limits::default()
        },
    )
    .err()
    .expect("a Rust component needs more than one core instance");
    assert_eq!(err.limit(), Some(LimitHit::Instances { limit: 1 }), "{err}");
    assert!(
        err.to_string()
            .contains("instance limit of 1 per component exceeded"),
        "{err}"
    );
}
