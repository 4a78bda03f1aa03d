//! The engine every stage shares: compiled with epoch interruption and async support,
//! ticked by one thread, with a linker that offers WASI (granting nothing) and the
//! read-only table `lookup` ([`super::lookup`]), nothing else. Guests run on fibers, so a call blocked in a WASI host function (a sleep, a
//! `poll`, a pollable's `block`) can be abandoned at its deadline like a runaway loop.

use super::cache::ModuleCache;
use super::error::UdfError;
use super::sandbox::SandboxState;
use super::swapped::Swapped;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine};

/// How often the epoch advances; CPU deadlines are rounded up to whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Compiles and links UDF components. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Linker<SandboxState>,
    cache: ModuleCache,
    /// Modules swapped into the jobs this runtime runs (a restarted job starts with them).
    swapped: Swapped,
    /// When set, every guest call in progress is abandoned (the job is stopping).
    stop: Option<Arc<AtomicBool>>,
}

impl Runtime {
    /// A runtime whose compiled modules are cached in `cache`.
    pub fn new(cache: ModuleCache) -> Result<Self, UdfError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Deep but bounded guest recursion; overflowing it is a `Stack` limit hit.
        config.max_wasm_stack(1 << 20);
        // `RIVULET_PERF_MAP=1`: name compiled guest code in /tmp/perf-<pid>.map, so `perf
        // report` shows guest functions (build the component unstripped to get their names).
        if std::env::var_os("RIVULET_PERF_MAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|err| UdfError::Runtime(format!("{err:#}")))?;
        let mut linker = Linker::new(&engine);
        // Async host functions: a guest waiting in one is a pending future the stage can
        // abandon at its deadline. (WASI 0.2.12 includes `exit-with-code`.)
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|err| UdfError::Runtime(format!("cannot link WASI: {err:#}")))?;
        super::lookup::add_to_linker(&mut linker)
            .map_err(|err| UdfError::Runtime(format!("cannot link `lookup`: {err:#}")))?;
        start_epoch_ticker(&engine)?;
        Ok(Runtime {
            engine,
            linker,
            cache,
            swapped: Swapped::default(),
            stop: None,
        })
    }

    /// The same runtime, whose stages abandon any guest call in progress once `stop` is
    /// set (the job's Ctrl-C/SIGTERM flag): stopping never waits for a guest.
    pub fn stopped_by(&self, stop: Arc<AtomicBool>) -> Self {
        Runtime {
            stop: Some(stop),
            ..self.clone()
        }
    }

    /// The flag that abandons guest calls, if any.
    pub fn stop_flag(&self) -> Option<&Arc<AtomicBool>> {
        self.stop.as_ref()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<SandboxState> {
        &self.linker
    }

    pub fn cache(&self) -> &ModuleCache {
        &self.cache
    }

    /// The modules swapped into the jobs this runtime runs.
    pub fn swapped(&self) -> &Swapped {
        &self.swapped
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) -> Result<(), UdfError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("rivulet-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
        .map_err(|err| UdfError::Runtime(format!("cannot start the epoch thread: {err}")))
}
