//! The engine every stage shares: compiled with epoch interruption, ticked by one thread,
//! with a linker that offers WASI (granting nothing) and nothing else.

use super::cache::ModuleCache;
use super::error::UdfError;
use super::sandbox::SandboxState;
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
}

impl Runtime {
    /// A runtime whose compiled modules are cached in `cache`.
    pub fn new(cache: ModuleCache) -> Result<Self, UdfError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Deep but bounded guest recursion; overflowing it is a `Stack` limit hit.
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).map_err(|err| UdfError::Runtime(format!("{err:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|err| UdfError::Runtime(format!("cannot link WASI: {err:#}")))?;
        start_epoch_ticker(&engine)?;
        Ok(Runtime {
            engine,
            linker,
            cache,
        })
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

/// Epoch ticks that cover `deadline` (at least one whole tick more than it).
pub fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_micros().max(1);
    u64::try_from(deadline.as_micros().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}
