//! Figures for the UDF runtime, printed as a table (run with `just bench`):
//!
//! * per-record cost of the parse-orders step as a component, in batches of 1, 256 and
//!   4096 records, against the same function compiled natively (ratio in the same run);
//! * the same for the count-by-status aggregate's `add`;
//! * compiled-module load time, cache miss vs hit; instance re-creation time;
//! * the cost of isolating one poison record in a batch of 1,024, and the pipeline's
//!   no-trap path (through `isolate::parse`) against calling the stage directly;
//! * the size of every UDF component.
//!
//! Timings are medians of several rounds; the machine's other load shows up in them, the
//! ratios much less.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use rivulet::stage::isolate;
use rivulet::stage::wasm::{WasmAggregate, WasmParse};
use rivulet::stage::{AggregateStage, ParseStage};
use rivulet::udf::{Limits, ModuleCache, Runtime, UdfModule};
use rivulet_native_udfs as native;
use rivulet_rows::{Batch, RawBatch};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const STATUSES: [&str; 5] = ["NEW", "PENDING", "SHIPPED", "DELIVERED", "CANCELLED"];
const REGIONS: [&str; 4] = ["eu-west", "us-east", "us-west", "ap-south"];
const ROUNDS: usize = 7;

fn wasm_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("wasm32-wasip2/wasm")
}

fn order(i: u64) -> String {
    let ts = 1_716_467_696_000 + i as i64 * 37;
    format!(
        r#"{{"customer":"customer-{:03}","status":"{}","region":"{}","amount":{}.{:02},"ts":"{}","tsMillis":{ts}}}"#,
        i % 1000,
        STATUSES[(i % 5) as usize],
        REGIONS[(i % 4) as usize],
        (i * 7) % 900,
        i % 100,
        rivulet_sdk::time::iso8601(ts),
    )
}

fn batches(total: u64, size: u64) -> Vec<RawBatch> {
    (0..total / size)
        .map(|b| {
            let mut batch = RawBatch::new();
            for i in b * size..(b + 1) * size {
                batch.push(None, order(i).as_bytes(), 0, (i % 3) as i32, i as i64, &[]);
            }
            batch
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn pass(stage: &mut dyn ParseStage, batches: &[RawBatch]) -> Duration {
    let started = Instant::now();
    for batch in batches {
        let out = stage.parse(batch).expect("parse");
        assert_eq!(out.rows.len, batch.len);
    }
    started.elapsed()
}

/// Median ns per record of `a` and of `b` over all `batches`, and the median of the
/// per-round ratios a/b. Rounds alternate a and b so the machine's load hits both alike.
fn compare(
    a: &mut dyn ParseStage,
    b: &mut dyn ParseStage,
    batches: &[RawBatch],
) -> (f64, f64, f64) {
    let records = batches.iter().map(|b| u64::from(b.len)).sum::<u64>() as f64;
    pass(a, batches);
    pass(b, batches);
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let x = pass(a, batches);
        let y = pass(b, batches);
        ratios.push(x.as_secs_f64() / y.as_secs_f64());
        ta.push(x);
        tb.push(y);
    }
    ratios.sort_by(f64::total_cmp);
    let per = |d: Duration| d.as_nanos() as f64 / records;
    (per(median(ta)), per(median(tb)), ratios[ratios.len() / 2])
}

fn main() {
    let runtime = Runtime::new(ModuleCache::disabled()).expect("runtime");
    let dir = wasm_dir();
    let parse_path = dir.join("udf_parse_orders.wasm");
    let module = UdfModule::load(&runtime, &parse_path)
        .unwrap_or_else(|err| panic!("{err} (run `just udfs` first)"));

    println!("parse-orders, per record (median of {ROUNDS} rounds over 16384 records)");
    println!(
        "{:>8} {:>12} {:>12} {:>12}",
        "batch", "wasm ns", "native ns", "wasm/native"
    );
    let sizes: Vec<u64> = std::env::var("BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 256, 4096]);
    let mut wasm_per_record = Vec::new();
    for size in sizes {
        let input = batches(16_384, size);
        let mut wasm =
            WasmParse::new(&runtime, &module, "parse", Limits::default()).expect("stage");
        let mut native = native::parse_orders();
        let (w, n, ratio) = compare(&mut wasm, &mut native, &input);
        println!("{size:>8} {w:>12.0} {n:>12.0} {ratio:>12.2}");
        wasm_per_record.push((size, w));
    }

    // The contract check's share of a Wasm call: the same outputs checked again, alone.
    let mut wasm = WasmParse::new(&runtime, &module, "parse", Limits::default()).expect("stage");
    println!("\ncontract check of parse-orders output (part of each Wasm call above)");
    for (size, w) in wasm_per_record {
        let outs: Vec<(rivulet_rows::RowsOut, u32)> = batches(16_384, size)
            .iter()
            .map(|b| (wasm.parse(b).expect("parse"), b.len))
            .collect();
        let run = || {
            let started = Instant::now();
            for (out, len) in &outs {
                out.check(*len).expect("valid output");
            }
            started.elapsed()
        };
        run();
        let c = median((0..ROUNDS).map(|_| run()).collect()).as_nanos() as f64 / 16_384.0;
        println!(
            "{size:>8} {c:>8.1} ns per record ({:.2} % of the Wasm call)",
            c / w * 100.0
        );
    }

    // The aggregate's add over parsed rows, 5 groups per batch.
    let parsed: Vec<(Batch, Vec<u32>)> = batches(16_384, 4096)
        .iter()
        .map(|b| {
            let rows = native::parse_orders().parse(b).expect("parse").rows;
            let status = rows.column("status").expect("status");
            let groups = (0..rows.len as usize)
                .map(|i| {
                    STATUSES
                        .iter()
                        .position(|s| Some(*s) == status.text_at(i))
                        .unwrap_or(0) as u32
                })
                .collect();
            (rows, groups)
        })
        .collect();
    let count =
        UdfModule::load(&runtime, &dir.join("udf_count_by_status.wasm")).expect("count module");
    let mut wasm = WasmAggregate::new(&runtime, &count, "count", Limits::default()).expect("stage");
    let mut native = native::count_by_status();
    let add = |stage: &mut dyn AggregateStage| {
        let empty = stage.create().expect("create");
        let run = |stage: &mut dyn AggregateStage| {
            let started = Instant::now();
            for (rows, groups) in &parsed {
                stage
                    .add(vec![empty.clone(); 5], rows, groups)
                    .expect("add");
            }
            started.elapsed()
        };
        run(stage);
        median((0..ROUNDS).map(|_| run(stage)).collect()).as_nanos() as f64 / 16_384.0
    };
    let (w, n) = (add(&mut wasm), add(&mut native));
    println!(
        "\ncount-by-status add, per row (batches of 4096): wasm {w:.0} ns, native {n:.0} ns, ratio {:.2}",
        w / n
    );

    // Compiled-module cache: a fresh directory each miss round.
    let bytes = std::fs::read(&parse_path).expect("read");
    let mut misses = Vec::new();
    let mut hits = Vec::new();
    for _ in 0..5 {
        let cache_dir = tempfile::tempdir().expect("tempdir");
        let cached = Runtime::new(ModuleCache::at(cache_dir.path())).expect("runtime");
        let started = Instant::now();
        UdfModule::from_bytes(&cached, &parse_path, &bytes).expect("miss");
        misses.push(started.elapsed());
        let started = Instant::now();
        UdfModule::from_bytes(&cached, &parse_path, &bytes).expect("hit");
        hits.push(started.elapsed());
    }
    let (miss, hit) = (median(misses), median(hits));
    println!(
        "\nmodule load (parse-orders): cache miss {:.1} ms, cache hit {:.2} ms ({:.0}x faster)",
        miss.as_secs_f64() * 1e3,
        hit.as_secs_f64() * 1e3,
        miss.as_secs_f64() / hit.as_secs_f64()
    );

    // Re-creating an instance from its InstancePre, as after a trap.
    let samples: Vec<Duration> = (0..20)
        .map(|_| {
            let started = Instant::now();
            WasmParse::new(&runtime, &module, "parse", Limits::default()).expect("stage");
            started.elapsed()
        })
        .collect();
    println!(
        "new stage instance (instantiate + first start): {:.2} ms",
        median(samples).as_secs_f64() * 1e3
    );

    isolation(&runtime, &dir, &module);

    println!("\ncomponent sizes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("wasm dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort_by_key(|e| e.file_name());
    for entry in files {
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        println!(
            "  {:<28} {:>8} bytes ({:.0} KiB)",
            entry.file_name().to_string_lossy(),
            size,
            size as f64 / 1024.0
        );
    }
}

/// Median time of `f` over [`ROUNDS`] rounds (after one warm-up).
fn timed(mut f: impl FnMut()) -> Duration {
    f();
    median(
        (0..ROUNDS)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .collect(),
    )
}

/// What isolating a trap costs, and what the pipeline's call costs when nothing traps.
fn isolation(runtime: &Runtime, dir: &std::path::Path, parse: &UdfModule) {
    // The no-trap path: the pipeline calls `isolate::parse`, which calls the stage once.
    let input = batches(16_384, 1024);
    let mut stage = WasmParse::new(runtime, parse, "parse", Limits::default()).expect("stage");
    let (mut direct, mut isolated, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    pass(&mut stage, &input);
    for _ in 0..ROUNDS {
        let a = pass(&mut stage, &input);
        let started = Instant::now();
        for batch in &input {
            let out = isolate::parse(&mut stage, batch).expect("parse").out;
            assert_eq!(out.rows.len, batch.len);
        }
        let b = started.elapsed();
        ratios.push(b.as_secs_f64() / a.as_secs_f64());
        direct.push(a);
        isolated.push(b);
    }
    ratios.sort_by(f64::total_cmp);
    let per = |d: Duration| d.as_nanos() as f64 / 16_384.0;
    println!(
        "\nno-trap path, parse-orders in batches of 1024, per record: stage.parse {:.0} ns, isolate::parse {:.0} ns (ratio {:.3})",
        per(median(direct)),
        per(median(isolated)),
        ratios[ratios.len() / 2]
    );

    // One poison record (a guest panic) in 1,024, against the same batch without it.
    let hostile = UdfModule::load(runtime, &dir.join("hostile_guest.wasm"))
        .unwrap_or_else(|err| panic!("{err} (run `just udfs` first)"));
    let mut stage = WasmParse::new(runtime, &hostile, "hostile", Limits::default()).expect("stage");
    let make = |poison: Option<usize>| {
        let mut batch = RawBatch::new();
        for i in 0..1024 {
            let command = if Some(i) == poison {
                "panic".to_owned()
            } else {
                format!("record-{i}")
            };
            batch.push(None, command.as_bytes(), 0, 0, i as i64, &[]);
        }
        batch
    };
    let (clean, poisoned) = (make(None), make(Some(700)));
    let clean_time = timed(|| {
        isolate::parse(&mut stage, &clean).expect("parse");
    });
    let calls_before = stage.sandbox().stats().calls;
    let instances_before = stage.sandbox().stats().instantiations;
    let poisoned_time = timed(|| {
        let out = isolate::parse(&mut stage, &poisoned).expect("parse").out;
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.rows.len, 1023);
    });
    let rounds = (ROUNDS + 1) as u64;
    let stats = stage.sandbox().stats();
    println!(
        "one poison record in 1024 (hostile guest): clean batch {:.2} ms, with the poison {:.2} ms ({:.1}x), {} calls and {} new instances per batch",
        clean_time.as_secs_f64() * 1e3,
        poisoned_time.as_secs_f64() * 1e3,
        poisoned_time.as_secs_f64() / clean_time.as_secs_f64(),
        (stats.calls - calls_before) / rounds,
        (stats.instantiations - instances_before) / rounds,
    );
}
