//! Hostile guests against the sandbox: every escape or blow-up is stopped with an error that
//! names the stage and the limit, and the same stage then processes the next batch correctly.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use crate::common;

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
    // `std::process::exit(3)`: wasi-libc passes WASI 0.2's `exit(err)`, which has no code.
    let err = fails_then_recovers(&mut stage, "exit");
    assert!(
        err.to_string()
            .contains("the guest called exit with a failure status"),
        "{err}"
    );
    assert!(!err.to_string().contains("exit(1)"), "{err}");
}

#[test]
fn guest_exit_with_code_reports_the_real_code() {
    let mut stage = stage(Limits::default());
    let err = fails_then_recovers(&mut stage, "exit-code:3");
    assert_eq!(
        err.to_string(),
        "stage `hostile`: UDF trapped: the guest called exit(3)"
    );
    let err = fails_then_recovers(&mut stage, "exit-code:42");
    assert!(
        err.to_string().ends_with("the guest called exit(42)"),
        "{err}"
    );
}

/// Each way of blocking in a WASI call is abandoned at the 200 ms limit (not after the
/// guest's 3 s, or never), reported as the time limit, and the stage then works.
#[test]
fn blocking_host_calls_are_abandoned_at_the_time_limit() {
    let limit = Duration::from_millis(200);
    let mut stage = stage(Limits {
        cpu_per_batch: limit,
        ..Limits::default()
    });
    for command in ["sleep:3000", "block:3000", "poll:3000", "forever"] {
        let started = Instant::now();
        let err = stage
            .parse(&batch(&["hello", command]))
            .expect_err("abandoned");
        let took = started.elapsed();
        assert_eq!(
            err.limit(),
            Some(LimitHit::Deadline { limit }),
            "{command}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with("stage `hostile`: time limit of 200 ms per batch exceeded"),
            "{err}"
        );
        assert!(took >= limit, "{command}: abandoned early: {took:?}");
        assert!(took < Duration::from_secs(2), "{command}: took {took:?}");
        eprintln!("{command}: contained in {took:?}");
        assert_eq!(
            outcomes(&mut stage, &["hello"]),
            ["echo"],
            "after {command}"
        );
    }
    // A short wait within the limit is fine.
    assert_eq!(outcomes(&mut stage, &["sleep:20"]), ["slept"]);
}

#[test]
fn a_set_stop_flag_abandons_a_blocked_call_as_stopped_not_as_a_limit() {
    let runtime = runtime();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = runtime.stopped_by(stop.clone());
    let module = load(&runtime, "hostile_guest");
    let mut stage = WasmParse::new(
        &stopping,
        &module,
        "hostile",
        Limits {
            cpu_per_batch: Duration::from_secs(3600),
            ..Limits::default()
        },
    )
    .expect("stage starts");
    let setter = stop.clone();
    let flipper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        setter.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let started = Instant::now();
    let err = stage.parse(&batch(&["forever"])).expect_err("abandoned");
    flipper.join().unwrap();
    assert!(err.is_stopped(), "{err}");
    assert_eq!(
        err.to_string(),
        "stage `hostile`: call abandoned because the job is stopping"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // A runaway loop is stopped by the flag too.
    let err = stage.parse(&batch(&["loop"])).expect_err("abandoned");
    assert!(err.is_stopped(), "{err}");
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
fn output_far_past_the_limit_is_refused_before_it_is_copied() {
    // Memory lets the guest build 30 MB; the output limit is 1 MiB, so the host stops
    // copying at its budget (twice the limit plus 1 MiB) instead of lifting all 30 MB.
    let limits = Limits {
        output_bytes: 1 << 20,
        memory_bytes: 256 << 20,
        ..Limits::default()
    };
    assert_eq!(limits.copy_budget(), 3 << 20);
    let mut stage = stage(limits);
    let err = fails_then_recovers(&mut stage, "huge:30000000");
    assert_eq!(
        err.limit(),
        Some(LimitHit::OutputUncopied {
            limit: 1 << 20,
            copied: 3 << 20
        }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("output limit of 1.0 MiB per batch exceeded (more than 3.0 MiB produced; the host stopped copying it there)"),
        "{err}"
    );
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

/// The log lines of `stage` captured while `f` runs.
fn logged(f: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

/// A 70 KB stderr line without a newline used to fill the capture buffer: the instance's
/// later output was dropped and a later panic lost its message.
#[test]
fn a_long_line_without_newline_neither_silences_the_log_nor_hides_a_later_panic() {
    let mut stage = stage(Limits::default());
    let mut err = None;
    let log = logged(|| {
        assert_eq!(
            outcomes(&mut stage, &["longline:71680"]),
            ["long line written"]
        );
        assert_eq!(outcomes(&mut stage, &["say:after the long line"]), ["said"]);
        err = stage.parse(&batch(&["panic"])).err();
    });
    let err = err.expect("panics").to_string();
    assert!(err.contains("hostile guest panics on purpose"), "{err}");
    assert!(log.contains("stdout: after the long line"), "{log}");
    // The long stderr line (continued by the next call's stderr text) is logged cut,
    // saying how much was cut.
    let cut = 71680 + "stderr: after the long line".len() - rivulet::udf::guest_log::MAX_LINE;
    assert!(
        log.contains(&format!("[line cut: {cut} more bytes]")),
        "{}",
        &log[..log.len().min(2000)]
    );
    assert_eq!(stage.sandbox().stats().log_bytes_cut, cut as u64);
}

/// 300 records printing 3,000 lines each: the stage logs at most its burst plus its rate,
/// and counts every line it drops.
#[test]
fn guest_log_output_is_rate_limited_per_stage_and_drops_are_counted() {
    use rivulet::udf::guest_log::{LINE_BURST, LINES_PER_SECOND};
    // 30,000 lines per call take a while on a busy machine; this test is about the log.
    let mut stage = stage(Limits {
        cpu_per_batch: Duration::from_secs(30),
        ..Limits::default()
    });
    let started = Instant::now();
    let log = logged(|| {
        for _ in 0..30 {
            let commands = ["spam:3000"; 10];
            assert_eq!(outcomes(&mut stage, &commands), ["spammed"; 10]);
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let logged_lines = log.lines().filter(|l| l.contains("spam line")).count() as u64;
    let dropped = stage.sandbox().stats().log_lines_dropped;
    assert_eq!(
        logged_lines + dropped,
        300 * 3000,
        "every line logged or counted"
    );
    let allowed = (LINE_BURST + LINES_PER_SECOND * elapsed).ceil() as u64;
    assert!(
        logged_lines <= allowed,
        "{logged_lines} lines logged in {elapsed:.2} s (allowed {allowed})"
    );
    assert!(logged_lines >= LINE_BURST as u64, "{logged_lines}");
    assert!(
        log.contains("guest output over the log limits"),
        "the drop is reported"
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

/// A hand-written component of the parse world whose `parse` runs `body` (a core function
/// body with `$n`, the batch's record count, in a local) and returns no rows. `extra`
/// declares more core items (memories, tables) beside memory 0.
fn parse_component(extra: &str, body: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  (core module $m
    (memory (export "memory") 1)
    {extra}
    (global $bump (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and
        (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $bump) (i32.mul (memory.size 0) (i32.const 65536)))
        (then (if (i32.eq (memory.grow 0 (i32.add (i32.const 1) (i32.shr_u (global.get $bump) (i32.const 16))))
                          (i32.const -1))
          (then unreachable))))
      (local.get $p))
    (func (export "post-return") (param i32)
      (global.set $bump (i32.const 1024)))
    ;; Returns a pointer to 28 zero bytes: a rows-out with no rows, origins or errors.
    (func (export "parse") (param $arg i32) (result i32)
      (local $n i32)
      (local.set $n (i32.load (local.get $arg)))
      {body}
      (i32.const 16)))
  (core instance $i (instantiate $m))
  (type $packed' (record (field "data" (list u8)) (field "offsets" (list u32))))
  (export $packed "packed" (type $packed'))
  (type $header' (record (field "record" u32) (field "key" string) (field "value" (list u8))))
  (export $header "header" (type $header'))
  (type $raw-batch' (record
    (field "len" u32) (field "keys" $packed) (field "key-nulls" (list u8))
    (field "payloads" $packed) (field "timestamps" (list s64)) (field "partitions" (list s32))
    (field "offsets" (list s64)) (field "headers" (list $header))))
  (export $raw-batch "raw-batch" (type $raw-batch'))
  (type $values' (variant
    (case "boolean" (list bool)) (case "integer" (list s64)) (case "float" (list f64))
    (case "text" $packed) (case "binary" $packed) (case "json" $packed)))
  (export $values "values" (type $values'))
  (type $column' (record (field "name" string) (field "nulls" (list u8)) (field "values" $values)))
  (export $column "column" (type $column'))
  (type $batch' (record (field "len" u32) (field "columns" (list $column))))
  (export $batch "batch" (type $batch'))
  (type $record-error' (record (field "index" u32) (field "message" string)))
  (export $record-error "record-error" (type $record-error'))
  (type $rows-out' (record
    (field "rows" $batch) (field "origins" (list u32)) (field "errors" (list $record-error))))
  (export $rows-out "rows-out" (type $rows-out'))
  (func (export "parse") (param "input" $raw-batch) (result $rows-out)
    (canon lift (core func $i "parse") (memory $i "memory")
      (realloc (func $i "realloc")) (post-return (func $i "post-return")))))"#
    );
    wat::parse_str(text).expect("the test component is valid WAT")
}

fn wat_stage(bytes: &[u8], limits: Limits) -> WasmParse {
    let runtime = runtime();
    let module =
        rivulet::udf::UdfModule::from_bytes(&runtime, std::path::Path::new("hostile.wat"), bytes)
            .expect("module loads");
    WasmParse::new(&runtime, &module, "hostile", limits).expect("stage starts")
}

/// 16 linear memories; `parse` grows each by one 64 KiB page per record, and traps if a
/// growth is refused.
fn many_memories() -> Vec<u8> {
    let extra: String = (1..16).map(|i| format!("(memory $m{i} 0)\n")).collect();
    let body: String = (0..16)
        .map(|i| {
            format!(
                "(if (i32.eq (memory.grow {i} (local.get $n)) (i32.const -1)) (then unreachable))\n"
            )
        })
        .collect();
    parse_component(&extra, &body)
}

#[test]
fn memory_limit_is_the_sum_over_all_memories() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let mut stage = wat_stage(&many_memories(), limits);
    // 2 records: 16 memories of 128 KiB more each, 2 MiB in all: within the limit.
    let out = stage.parse(&batch(&["a", "b"])).expect("within the limit");
    assert_eq!(out.rows.len, 0);
    // 32 records: each memory grows by 2 MiB (under 16 MiB on its own), 32 MiB together.
    let records: Vec<String> = (0..32).map(|i| i.to_string()).collect();
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let err = stage.parse(&batch(&records)).expect_err("over the limit");
    // Held already: memory 0's first page and the first batch's 16 × 128 KiB; then the
    // 7th growth of 2 MiB is the one refused.
    assert_eq!(
        err.limit(),
        Some(LimitHit::Memory {
            limit: 16 << 20,
            requested: (64 << 10) + 16 * (128 << 10) + 7 * (2 << 20)
        }),
        "{err}"
    );
    assert!(
        err.to_string().contains(
            "memory limit of 16.0 MiB exceeded (the guest asked for 16.1 MiB over all its memories and tables)"
        ),
        "{err}"
    );
    // A fresh instance takes the next batch.
    stage.parse(&batch(&["a"])).expect("recovers");
    // With room for it, the same batch passes: the limit, not the guest, refused it.
    let mut roomy = wat_stage(
        &many_memories(),
        Limits {
            memory_bytes: 40 << 20,
            ..Limits::default()
        },
    );
    roomy
        .parse(&batch(&records))
        .expect("within a 40 MiB limit");
}

/// 15 tables of funcrefs; `parse` grows each by 65,536 elements per record, and traps if a
/// growth is refused.
fn large_tables() -> Vec<u8> {
    let extra: String = (0..15)
        .map(|i| format!("(table $t{i} 0 funcref)\n"))
        .collect();
    let body: String = (0..15)
        .map(|i| {
            format!(
                "(if (i32.eq (table.grow $t{i} (ref.null func) (i32.mul (local.get $n) (i32.const 65536))) (i32.const -1)) (then unreachable))\n"
            )
        })
        .collect();
    parse_component(&extra, &body)
}

#[test]
fn tables_count_toward_the_memory_limit_at_their_host_size() {
    let element = rivulet::udf::limits::TABLE_ELEMENT_BYTES;
    let limits = Limits {
        memory_bytes: 16 << 20,
        ..Limits::default()
    };
    let mut stage = wat_stage(&large_tables(), limits);
    // 1 record: 15 tables of 65,536 elements, 7.5 MiB on the host: within the limit.
    stage.parse(&batch(&["a"])).expect("within the limit");
    // 4 more records (on a fresh instance after a trap, or on top): 262,144 elements per
    // table, 2 MiB each, far under any per-table cap, but 15 of them are 30 MiB.
    let err = stage
        .parse(&batch(&["a", "b", "c", "d"]))
        .expect_err("over the limit");
    match err.limit() {
        Some(LimitHit::Table {
            limit,
            requested,
            elements,
        }) => {
            assert_eq!(limit, 16 << 20);
            assert!(requested > limit, "{requested}");
            // The first table to cross the line: its new size is 65,536 + 4 × 65,536
            // elements on the first call's instance.
            assert_eq!(elements, 5 * 65536, "{err}");
            assert_eq!(element, 8);
        }
        other => panic!("expected the table limit, got {other:?} ({err})"),
    }
    assert!(
        err.to_string().contains(
            "memory limit of 16.0 MiB exceeded by a table of 327680 elements (8 B each on the host"
        ),
        "{err}"
    );
    stage.parse(&batch(&["a"])).expect("recovers");
}
