//! One stage's sandboxed component: instantiated from its `InstancePre`, called under the
//! stage's limits, and dropped and re-created after any trap.

use super::bindings;
use super::error::UdfError;
use super::limits::{LimitHit, Limits};
use super::module::{Kind, UdfModule, root_cause};
use super::runtime::{Runtime, deadline_ticks};
use super::sandbox::{GuestLog, SandboxState, new_store};
use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store, Trap};

/// The generated bindings of one world.
pub trait World: Sized + Send + 'static {
    const KIND: Kind;
    type Pre: Clone + Send;
    fn pre(instance_pre: InstancePre<SandboxState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(pre: &Self::Pre, store: &mut Store<SandboxState>) -> wasmtime::Result<Self>;
}

macro_rules! world {
    ($bindings:ty, $pre:ty, $kind:expr) => {
        impl World for $bindings {
            const KIND: Kind = $kind;
            type Pre = $pre;
            fn pre(instance_pre: InstancePre<SandboxState>) -> wasmtime::Result<Self::Pre> {
                <$pre>::new(instance_pre)
            }
            fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<SandboxState>,
            ) -> wasmtime::Result<Self> {
                pre.instantiate(store)
            }
        }
    };
}

world!(
    bindings::parse::Parse,
    bindings::parse::ParsePre<SandboxState>,
    Kind::Parse
);
world!(
    bindings::map::Map,
    bindings::map::MapPre<SandboxState>,
    Kind::Map
);
world!(
    bindings::aggregate::Aggregate,
    bindings::aggregate::AggregatePre<SandboxState>,
    Kind::Aggregate
);
world!(
    bindings::format::Format,
    bindings::format::FormatPre<SandboxState>,
    Kind::Format
);

/// Checks `module` against world `W` as every stage does before it starts (and as `rivulet udf
/// inspect` does): its kind, its imports against what the sandbox's linker provides, and its
/// exports' names and types against the world.
pub fn prepare<W: World>(
    runtime: &Runtime,
    module: &UdfModule,
    stage: &str,
) -> Result<W::Pre, UdfError> {
    if module.kind != W::KIND {
        return Err(UdfError::WrongWorld {
            path: module.path.clone(),
            stage: stage.to_owned(),
            expected: W::KIND.name(),
            found: module.kind.name(),
        });
    }
    let mismatch = |err: wasmtime::Error| UdfError::Mismatch {
        path: module.path.clone(),
        world: W::KIND.name(),
        reason: root_cause(&err),
    };
    let instance_pre = runtime
        .linker()
        .instantiate_pre(&module.component)
        .map_err(mismatch)?;
    W::pre(instance_pre).map_err(mismatch)
}

/// [`prepare`] for the world `module` claims by its export names.
pub fn type_check(runtime: &Runtime, module: &UdfModule) -> Result<(), UdfError> {
    let stage = "inspect";
    match module.kind {
        Kind::Parse => prepare::<bindings::parse::Parse>(runtime, module, stage).map(drop),
        Kind::Map => prepare::<bindings::map::Map>(runtime, module, stage).map(drop),
        Kind::Aggregate => {
            prepare::<bindings::aggregate::Aggregate>(runtime, module, stage).map(drop)
        }
        Kind::Format => prepare::<bindings::format::Format>(runtime, module, stage).map(drop),
    }
}

struct Live<W> {
    store: Store<SandboxState>,
    bindings: W,
}

/// Counters of one sandboxed stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxStats {
    pub calls: u64,
    pub failures: u64,
    pub instantiations: u64,
}

/// A stage's component, ready to call.
pub struct Sandboxed<W: World> {
    stage: String,
    module: UdfModule,
    engine: Engine,
    limits: Limits,
    pre: W::Pre,
    live: Option<Live<W>>,
    log: GuestLog,
    stats: SandboxStats,
}

impl<W: World> Sandboxed<W> {
    /// Checks `module` against the world and starts one instance (so a module that traps
    /// at start is rejected here, not on the first batch).
    pub fn new(
        runtime: &Runtime,
        module: &UdfModule,
        stage: &str,
        limits: Limits,
    ) -> Result<Self, UdfError> {
        let pre = prepare::<W>(runtime, module, stage)?;
        let mut sandboxed = Sandboxed {
            stage: stage.to_owned(),
            module: module.clone(),
            engine: runtime.engine().clone(),
            limits,
            pre,
            live: None,
            log: GuestLog::default(),
            stats: SandboxStats::default(),
        };
        sandboxed.ensure_live()?;
        Ok(sandboxed)
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn module(&self) -> &UdfModule {
        &self.module
    }

    pub fn stats(&self) -> SandboxStats {
        self.stats
    }

    fn ensure_live(&mut self) -> Result<&mut Live<W>, UdfError> {
        if self.live.is_none() {
            let mut store = new_store(&self.engine, self.limits, &self.log);
            store.set_epoch_deadline(deadline_ticks(self.limits.cpu_per_batch));
            let result = W::instantiate(&self.pre, &mut store);
            self.stats.instantiations += 1;
            match result {
                Ok(bindings) => self.live = Some(Live { store, bindings }),
                Err(err) => {
                    let hit = store.data_mut().limiter.take_hit();
                    self.flush_log(true);
                    return Err(match classify(&err, hit, self.limits) {
                        Failure::Limit(limit) => UdfError::Limit {
                            stage: self.stage.clone(),
                            limit,
                        },
                        Failure::Trap(reason) => UdfError::Instantiate {
                            stage: self.stage.clone(),
                            reason,
                        },
                    });
                }
            }
        }
        self.live
            .as_mut()
            .ok_or_else(|| UdfError::Runtime("instance vanished".into()))
    }

    /// Calls into the component with the stage's CPU deadline. On any failure the instance
    /// is dropped (a trapped instance must not be entered again) and the next call starts a
    /// fresh one; the error names the stage and the limit or trap.
    pub fn call<R: OutputSize>(
        &mut self,
        f: impl FnOnce(&W, &mut Store<SandboxState>) -> wasmtime::Result<R>,
    ) -> Result<R, UdfError> {
        let limits = self.limits;
        self.stats.calls += 1;
        let live = match self.ensure_live() {
            Ok(live) => live,
            Err(err) => {
                self.stats.failures += 1;
                return Err(err);
            }
        };
        live.store
            .set_epoch_deadline(deadline_ticks(limits.cpu_per_batch));
        let result = f(&live.bindings, &mut live.store);
        let hit = live.store.data_mut().limiter.take_hit();
        match result {
            Ok(output) => {
                self.flush_log(false);
                let produced = output.output_size();
                if produced > limits.output_bytes {
                    self.stats.failures += 1;
                    return Err(UdfError::Limit {
                        stage: self.stage.clone(),
                        limit: LimitHit::Output {
                            limit: limits.output_bytes,
                            produced,
                        },
                    });
                }
                Ok(output)
            }
            Err(err) => {
                self.stats.failures += 1;
                self.live = None;
                let last_lines = self.flush_log(true);
                Err(match classify(&err, hit, limits) {
                    Failure::Limit(limit) => UdfError::Limit {
                        stage: self.stage.clone(),
                        limit,
                    },
                    Failure::Trap(mut reason) => {
                        if let Some(panic) = panic_message(&last_lines) {
                            reason = format!("{reason}: {panic}");
                        }
                        UdfError::Trap {
                            stage: self.stage.clone(),
                            reason,
                        }
                    }
                })
            }
        }
    }

    /// Logs what the guest wrote, tagged with the stage; returns the lines.
    fn flush_log(&mut self, all: bool) -> Vec<String> {
        let (lines, dropped) = self.log.drain(all);
        for line in &lines {
            tracing::info!(target: "rivulet::guest", stage = %self.stage, "{line}");
        }
        if dropped > 0 {
            tracing::warn!(target: "rivulet::guest", stage = %self.stage, dropped, "guest output dropped: it wrote too much");
        }
        lines
    }
}

/// The panic a Rust guest printed before trapping: `panicked at <where>: <message>`.
fn panic_message(lines: &[String]) -> Option<String> {
    let start = lines.iter().rposition(|l| l.contains("panicked at"))?;
    let text: Vec<&str> = lines[start..]
        .iter()
        .map(|l| l.trim())
        .take_while(|l| !l.starts_with("note: run with"))
        .collect();
    let joined = text.join(" ");
    let from = joined.find("panicked at").unwrap_or(0);
    Some(joined[from..].to_owned())
}

enum Failure {
    Limit(LimitHit),
    Trap(String),
}

fn classify(err: &wasmtime::Error, hit: Option<LimitHit>, limits: Limits) -> Failure {
    if let Some(hit) = hit {
        return Failure::Limit(hit);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Failure::Limit(LimitHit::Deadline {
            limit: limits.cpu_per_batch,
        }),
        Some(Trap::StackOverflow) => Failure::Limit(LimitHit::Stack),
        Some(Trap::UnreachableCodeReached) => {
            Failure::Trap("the guest panicked or aborted (wasm `unreachable`)".to_owned())
        }
        Some(Trap::MemoryOutOfBounds) => Failure::Trap(
            "out-of-bounds memory access (a Rust guest's stack overflow from unbounded recursion shows up this way)"
                .to_owned(),
        ),
        Some(trap) => Failure::Trap(trap.to_string()),
        None => {
            if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
                return Failure::Trap(format!("the guest called exit({})", exit.0));
            }
            let message = err.chain().last().map(ToString::to_string).unwrap_or_else(|| root_cause(err));
            if message.contains("count too high") || message.contains("instance count") {
                Failure::Limit(LimitHit::Instances {
                    limit: limits.instances,
                })
            } else {
                Failure::Trap(message)
            }
        }
    }
}

/// Bytes a call's result occupies, checked against the output limit.
pub trait OutputSize {
    fn output_size(&self) -> usize;
}

impl OutputSize for u32 {
    fn output_size(&self) -> usize {
        4
    }
}

impl OutputSize for Vec<u8> {
    fn output_size(&self) -> usize {
        self.len()
    }
}

impl OutputSize for Vec<Vec<u8>> {
    fn output_size(&self) -> usize {
        self.iter().map(Vec::len).sum()
    }
}

impl<T: OutputSize> OutputSize for Result<T, String> {
    fn output_size(&self) -> usize {
        match self {
            Ok(value) => value.output_size(),
            Err(message) => message.len(),
        }
    }
}
