//! Per-record cost of the built-in `filter` + `project` stages against a Wasm map doing the
//! same work (`udf_high_value`: keep orders of at least 50.00, tag each with a price band),
//! over batches of parsed orders. Printed, never asserted: the machine is shared with other
//! builds, so the figures are noisy (run with `cargo bench -p rivulet --bench expr_stage`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmarks fail loudly

use rivulet::expr::program::compile_stage;
use rivulet::spec::{PipelineSpec, StageSpec};
use rivulet::stage::MapStage;
use rivulet::stage::filter::Filter;
use rivulet::stage::project::Project;
use rivulet::stage::wasm::WasmMap;
use rivulet::udf::{Limits, ModuleCache, Runtime, UdfModule};
use rivulet_rows::{Batch, BatchBuilder};
use std::path::{Path, PathBuf};
use std::time::Instant;

const BATCH: usize = 1024;
const ROUNDS: usize = 300;

fn orders() -> Batch {
    let mut builder = BatchBuilder::new();
    for i in 0..BATCH {
        let status = ["NEW", "SHIPPED", "DELIVERED"][i % 3];
        let region = ["eu-west", "us-east"][i % 2];
        builder
            .push(&serde_json::json!({
                "customer": format!("customer-{:03}", i % 500),
                "status": status,
                "region": region,
                "amount": (i * 37 % 900) as f64 + 0.25,
                "tsMillis": 1_716_467_700_000i64 + i as i64,
            }))
            .unwrap();
    }
    builder.finish()
}

fn stages() -> (Box<dyn MapStage>, Box<dyn MapStage>) {
    let spec = PipelineSpec::parse(
        r#"
name = "bench"
[source]
kind = "stdin"
[[stages]]
name = "keep"
kind = "filter"
where = "amount >= 50"
[[stages]]
name = "band"
kind = "project"
select = "customer, status, region, amount, tsMillis, CASE WHEN amount >= 500 THEN 'premium' ELSE 'high' END AS band"
[sink]
kind = "stdout"
"#,
        Path::new("bench.toml"),
    )
    .unwrap();
    let compiled = |stage: &StageSpec| compile_stage(stage).unwrap();
    let filter = Filter::new(compiled(&spec.stages[0]), Vec::new()).unwrap();
    let project = Project::new(compiled(&spec.stages[1]), Vec::new());
    (Box::new(filter), Box::new(project))
}

/// Nanoseconds per input record: the median of `ROUNDS` batches.
fn per_record(mut run: impl FnMut() -> usize) -> (f64, usize) {
    let mut times = Vec::with_capacity(ROUNDS);
    let mut out = 0;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        out = run();
        times.push(started.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    times.sort_by(f64::total_cmp);
    (times[ROUNDS / 2], out)
}

fn main() {
    let batch = orders();
    let (mut filter, mut project) = stages();
    let (builtin, kept_builtin) = per_record(|| {
        let kept = filter.map(&batch).unwrap();
        project.map(&kept.rows).unwrap().rows.len as usize
    });
    let (filter_only, _) = per_record(|| filter.map(&batch).unwrap().rows.len as usize);

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("wasm32-wasip2/wasm/udf_high_value.wasm");
    let runtime = Runtime::new(ModuleCache::disabled()).unwrap();
    let module = UdfModule::load(&runtime, &path).expect("udf_high_value.wasm (just udfs)");
    let mut wasm = WasmMap::new(&runtime, &module, "high-value", Limits::default()).unwrap();
    let (wasm_ns, kept_wasm) = per_record(|| wasm.map(&batch).unwrap().rows.len as usize);
    assert_eq!(kept_builtin, kept_wasm, "both keep the same orders");

    println!("per input record, batches of {BATCH}, median of {ROUNDS} (noisy: shared machine):");
    println!("  built-in filter alone              {filter_only:8.1} ns");
    println!("  built-in filter + project (band)   {builtin:8.1} ns");
    println!("  Wasm map udf_high_value            {wasm_ns:8.1} ns");
    println!(
        "  built-in / Wasm                    {:8.2}",
        builtin / wasm_ns
    );
}
