//! What an `enrich` stage costs: per record on batches of parsed orders (all hits, all
//! misses kept with nulls, all misses refused), the same join as a Wasm map step calling
//! `lookup` once per record (`udfs/enrich-region`: hits, misses) beside a Wasm map of the
//! same orders that looks nothing up (`udfs/high-value`), per record of a whole file job (built-in
//! JSON parse → file sink) with and without the stage, and the memory a table takes per
//! 100k rows (live heap bytes, counted by this benchmark's allocator). Printed, never
//! asserted: the machine is shared, the timings are noisy (`cargo bench -p rivulet --bench
//! enrich_stage`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmarks fail loudly

use rivulet::assemble::RunOptions;
use rivulet::spec::{OnMiss, PipelineSpec, TableSource, TableSpec};
use rivulet::stage::MapStage;
use rivulet::stage::enrich::Enrich;
use rivulet::stage::wasm::WasmMap;
use rivulet::table::{TableHandle, Tables};
use rivulet::task::Job;
use rivulet::udf::{Limits, ModuleCache, Runtime, UdfModule};
use rivulet_rows::{Batch, BatchBuilder};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is
// updated besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's layout, as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const BATCH: usize = 1024;
const ROUNDS: usize = 500;
const STATUSES: [&str; 3] = ["NEW", "SHIPPED", "DELIVERED"];
const REGIONS: [&str; 5] = ["eu-west", "us-east", "us-west", "ap-south", "eu-central"];

fn orders(known: bool) -> Batch {
    let mut builder = BatchBuilder::new();
    for i in 0..BATCH {
        let region = match known {
            true => REGIONS[i % 5].to_owned(),
            false => format!("mars-{}", i % 5),
        };
        builder
            .push(&serde_json::json!({
                "customer": format!("customer-{:03}", i % 500),
                "status": STATUSES[i % 3],
                "region": region,
                "amount": (i * 37 % 900) as f64 + 0.25,
                "ts": rivulet_rows::time::iso8601(1_716_467_700_000i64 + i as i64),
                "tsMillis": 1_716_467_700_000i64 + i as i64,
            }))
            .unwrap();
    }
    builder.finish()
}

fn regions_table(dir: &Path) -> Arc<TableHandle> {
    let text: String = REGIONS
        .iter()
        .map(|r| format!("{}\n", serde_json::json!({"region": r, "name": format!("Region {r}"), "country": "Somewhere"})))
        .collect();
    let path = dir.join("regions.jsonl");
    std::fs::write(&path, text).unwrap();
    table(&path, "region")
}

fn table(path: &Path, key: &str) -> Arc<TableHandle> {
    let spec = TableSpec {
        name: "t".into(),
        key: key.into(),
        source: TableSource::File {
            path: path.to_owned(),
            format: None,
            columns: None,
        },
        types: BTreeMap::new(),
    };
    Tables::open(&[spec], None)
        .unwrap()
        .get("t")
        .unwrap()
        .clone()
}

/// The components `just udfs` builds.
fn wasm(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join(format!("wasm32-wasip2/wasm/{name}.wasm"))
}

/// The Wasm map steps: `udfs/enrich-region` reading `regions` (from `dir`) through
/// `lookup`, and `udfs/high-value`, which reads the same orders and looks nothing up.
fn wasm_stages(dir: &Path) -> (WasmMap, WasmMap) {
    let spec = TableSpec {
        name: "regions".into(),
        key: "region".into(),
        source: TableSource::File {
            path: dir.join("regions.jsonl"),
            format: None,
            columns: None,
        },
        types: BTreeMap::new(),
    };
    let tables = Tables::open(&[spec], None).unwrap();
    let reads = tables.reads("add-region", &["regions".to_owned()]).unwrap();
    let runtime = Runtime::new(ModuleCache::disabled()).unwrap();
    let load = |name: &str| {
        UdfModule::load(&runtime, &wasm(name)).unwrap_or_else(|err| panic!("{err} (just udfs)"))
    };
    let enrich = WasmMap::reading(
        &runtime,
        &load("udf_enrich_region"),
        "add-region",
        Limits::default(),
        reads,
    )
    .unwrap();
    let plain = WasmMap::new(
        &runtime,
        &load("udf_high_value"),
        "high-value",
        Limits::default(),
    )
    .unwrap();
    (enrich, plain)
}

/// Nanoseconds per record of `stage` over `batch`, best of three runs.
fn per_record(stage: &mut dyn MapStage, batch: &Batch) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..ROUNDS {
                std::hint::black_box(stage.map(batch).unwrap());
            }
            started.elapsed().as_nanos() as f64 / (ROUNDS * BATCH) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// A file job over `input` (with the enrich stage or not): seconds, best of three.
fn file_job(dir: &Path, enrich: bool) -> Duration {
    let stage = match enrich {
        true => {
            "[[stages]]\nname = \"add-region\"\nkind = \"enrich\"\ntable = \"regions\"\non = \"region\"\ncolumns = [\"name\", \"country\"]\n"
        }
        false => "",
    };
    let text = format!(
        "name = \"bench\"\nparallelism = 1\n[source]\nkind = \"file\"\npath = \"orders.jsonl\"\n[[stages]]\nname = \"parse\"\nkind = \"parse\"\nbuiltin = \"json\"\n{stage}[[tables]]\nname = \"regions\"\nkey = \"region\"\nsource = {{ kind = \"file\", path = \"regions.jsonl\" }}\n[sink]\nkind = \"file\"\npath = \"out.jsonl\"\n"
    );
    std::fs::write(dir.join("job.toml"), text).unwrap();
    let spec = PipelineSpec::load(&dir.join("job.toml")).unwrap();
    (0..3)
        .map(|_| {
            let _ = std::fs::remove_file(dir.join("out.jsonl"));
            let options = RunOptions {
                brokers: None,
                runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
                stop: Arc::new(AtomicBool::new(false)),
                connect_timeout: None,
                commit_every: Duration::from_secs(1),
                swappable: false,
                instance: Default::default(),
            };
            let mut job = Job::from_spec(&spec, &options).unwrap();
            let started = Instant::now();
            job.run().unwrap();
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let regions = regions_table(dir.path());
    let columns = Some(vec!["name".to_owned(), "country".to_owned()]);
    let stage = |on_miss| {
        Enrich::new(
            regions.clone(),
            "region".into(),
            columns.clone(),
            BTreeMap::new(),
            on_miss,
        )
        .unwrap()
    };
    let (known, unknown) = (orders(true), orders(false));
    println!("enrich stage, batches of {BATCH} orders, 2 columns added (ns per record):");
    println!(
        "  hits:                 {:6.1}",
        per_record(&mut stage(OnMiss::Null), &known)
    );
    println!(
        "  misses, kept (null):  {:6.1}",
        per_record(&mut stage(OnMiss::Null), &unknown)
    );
    println!(
        "  misses, refused (dlq):{:6.1}",
        per_record(&mut stage(OnMiss::Dlq), &unknown)
    );

    let (mut wasm_enrich, mut wasm_plain) = wasm_stages(dir.path());
    let hits = wasm_enrich.map(&known).unwrap();
    assert_eq!((hits.rows.len as usize, hits.errors.len()), (BATCH, 0));
    let misses = wasm_enrich.map(&unknown).unwrap();
    assert_eq!((misses.rows.len, misses.errors.len()), (0, BATCH));
    println!("Wasm map step, the same join with one `lookup` per record (ns per record):");
    println!(
        "  hits:                 {:6.1}",
        per_record(&mut wasm_enrich, &known)
    );
    println!(
        "  misses (errors):      {:6.1}",
        per_record(&mut wasm_enrich, &unknown)
    );
    println!(
        "  no lookup (high-value, same orders): {:6.1}",
        per_record(&mut wasm_plain, &known)
    );

    const JOB_ORDERS: usize = 200_000;
    let mut text = String::with_capacity(JOB_ORDERS * 120);
    for i in 0..JOB_ORDERS {
        text.push_str(&format!(
            "{{\"customer\":\"customer-{:03}\",\"status\":\"SHIPPED\",\"region\":\"{}\",\"amount\":{}.25,\"tsMillis\":{}}}\n",
            i % 500,
            REGIONS[i % 5],
            i % 900,
            1_716_467_700_000i64 + i as i64
        ));
    }
    std::fs::write(dir.path().join("orders.jsonl"), text).unwrap();
    let without = file_job(dir.path(), false);
    let with = file_job(dir.path(), true);
    let ns = |d: Duration| d.as_nanos() as f64 / JOB_ORDERS as f64;
    println!("file job of {JOB_ORDERS} orders, parse → file sink, one task (ns per record):");
    println!("  without enrich:       {:6.1}", ns(without));
    println!("  with enrich (hits):   {:6.1}", ns(with));
    println!("  enrich's share:       {:6.1}", ns(with) - ns(without));

    for rows in [100_000usize] {
        let mut text = String::with_capacity(rows * 90);
        for i in 0..rows {
            text.push_str(&format!(
                "{{\"customer\":\"customer-{i:06}\",\"name\":\"Customer {i}\",\"tier\":\"{}\",\"since\":{}}}\n",
                ["gold", "silver", "bronze"][i % 3],
                2000 + i % 25
            ));
        }
        let path = dir.path().join("customers.jsonl");
        std::fs::write(&path, &text).unwrap();
        drop(text);
        let before = LIVE.load(Ordering::Relaxed);
        let handle = table(&path, "customer");
        let after = LIVE.load(Ordering::Relaxed);
        let bytes = after - before;
        println!(
            "table of {rows} rows (4 columns: key, name, tier, since): {:.1} MiB live heap, {} bytes per row",
            bytes as f64 / (1024.0 * 1024.0),
            bytes / rows as isize
        );
        drop(handle);
    }
}
