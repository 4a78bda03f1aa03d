//! Loading UDF files: clear errors for everything that is not a rivulet component, the
//! right kind detected for those that are, and the compiled-module cache.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks fail loudly

use crate::common;

use common::{limits, load, runtime, wasm};
use rivulet::stage::wasm::{WasmAggregate, WasmParse};
use rivulet::udf::{CacheOutcome, Kind, ModuleCache, Runtime, UdfError, UdfModule};

#[test]
fn missing_file_names_the_path() {
    let err = UdfModule::load(&runtime(), "no/such/udf.wasm".as_ref()).expect_err("missing");
    assert!(matches!(err, UdfError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read UDF module no/such/udf.wasm"),
        "{err}"
    );
}

#[test]
fn core_module_is_told_to_build_a_component() {
    let core = b"\0asm\x01\0\0\0";
    let err = UdfModule::from_bytes(&runtime(), "core.wasm".as_ref(), core).expect_err("core");
    assert!(matches!(err, UdfError::CoreModule { .. }));
    assert!(err.to_string().contains("--target wasm32-wasip2"), "{err}");
}

#[test]
fn corrupt_files_are_rejected_with_the_reason() {
    let runtime = runtime();
    let text =
        UdfModule::from_bytes(&runtime, "notes.wasm".as_ref(), b"hello, world").expect_err("text");
    assert!(
        text.to_string().contains("not a WebAssembly file"),
        "{text}"
    );
    let empty = UdfModule::from_bytes(&runtime, "empty.wasm".as_ref(), b"").expect_err("empty");
    assert!(matches!(empty, UdfError::Corrupt { .. }));
    let good = std::fs::read(wasm("udf_parse_orders")).expect("read");
    let truncated = &good[..good.len() / 2];
    let err =
        UdfModule::from_bytes(&runtime, "half.wasm".as_ref(), truncated).expect_err("truncated");
    assert!(matches!(err, UdfError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("half.wasm is not a valid WebAssembly component"),
        "{err}"
    );
}

#[test]
fn each_workshop_udf_is_recognised_as_its_kind() {
    let runtime = runtime();
    for (name, kind) in [
        ("udf_parse_orders", Kind::Parse),
        ("udf_parse_sales", Kind::Parse),
        ("udf_high_value", Kind::Map),
        ("udf_count_by_status", Kind::Aggregate),
        ("udf_avg_amount", Kind::Aggregate),
        ("udf_sum_sales", Kind::Aggregate),
        ("udf_order_summary", Kind::Format),
        ("udf_format_aggregate", Kind::Format),
    ] {
        let module = load(&runtime, name);
        assert_eq!(module.kind, kind, "{name}");
        assert_eq!(module.hash.len(), 64);
        assert!(
            module
                .imports
                .iter()
                .all(|i| i.starts_with("wasi:") || i.starts_with("rivulet:udf/types@"))
        );
    }
}

#[test]
fn component_of_the_wrong_world_is_refused_by_the_stage() {
    let runtime = runtime();
    let parse = load(&runtime, "udf_parse_orders");
    let err = WasmAggregate::new(&runtime, &parse, "count", limits())
        .err()
        .expect("wrong world");
    assert!(matches!(err, UdfError::WrongWorld { .. }));
    assert!(
        err.to_string()
            .ends_with("implements the parse world, but stage `count` needs the aggregate world"),
        "{err}"
    );
    let count = load(&runtime, "udf_count_by_status");
    assert!(WasmParse::new(&runtime, &count, "parse", limits()).is_err());
}

#[test]
fn compiled_modules_are_cached_by_content_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Runtime::new(ModuleCache::at(dir.path())).expect("runtime");
    let path = wasm("udf_parse_orders");
    let first = UdfModule::load(&runtime, &path).expect("load");
    assert_eq!(first.cache, CacheOutcome::Miss);
    let second = UdfModule::load(&runtime, &path).expect("load");
    assert_eq!(second.cache, CacheOutcome::Hit);
    assert_eq!(first.hash, second.hash);
    // The cached module runs.
    let mut stage = WasmParse::new(&runtime, &second, "parse", limits()).expect("stage");
    let mut batch = rivulet_rows::RawBatch::new();
    batch.push(
        None,
        br#"{"customer":"c","status":"NEW","region":"r","amount":1,"ts":"1970-01-01T00:00:01Z"}"#,
        0,
        0,
        0,
        &[],
    );
    use rivulet::stage::ParseStage;
    assert_eq!(stage.parse(&batch).expect("parse").rows.len, 1);
}

#[test]
fn a_damaged_cache_entry_costs_a_compile_not_a_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Runtime::new(ModuleCache::at(dir.path())).expect("runtime");
    let path = wasm("udf_count_by_status");
    UdfModule::load(&runtime, &path).expect("load");
    for entry in std::fs::read_dir(dir.path()).expect("cache dir") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("damage");
    }
    let again = UdfModule::load(&runtime, &path).expect("load despite damage");
    assert_eq!(again.cache, CacheOutcome::Miss);
    assert_eq!(
        UdfModule::load(&runtime, &path).expect("load").cache,
        CacheOutcome::Hit
    );
}
