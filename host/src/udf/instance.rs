//! One stage's sandboxed component: instantiated from its `InstancePre`, called under the
//! stage's limits, and dropped and re-created after any trap. Every call (and every
//! instantiation) runs on a small current-thread tokio runtime owned by the stage and is
//! bounded by the stage's time limit, including time the guest spends waiting inside a
//! WASI host call; a call abandoned at its deadline is a failure like a trap.

use super::bindings;
use super::deadline::{Interruption, bounded};
use super::error::UdfError;
use super::guest_log::GuestLog;
use super::limits::{LimitHit, Limits};
use super::lookup::Reads;
use super::module::{Kind, UdfModule, root_cause};
use super::runtime::Runtime;
use super::sandbox::{SandboxState, new_store};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use wasmtime::component::InstancePre;
use wasmtime::{Engine, Store, Trap};

/// The generated bindings of one world.
pub trait World: Sized + Send + 'static {
    const KIND: Kind;
    type Pre: Clone + Send;
    fn pre(instance_pre: InstancePre<SandboxState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<SandboxState>,
    ) -> impl Future<Output = wasmtime::Result<Self>>;
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
            ) -> impl Future<Output = wasmtime::Result<Self>> {
                pre.instantiate_async(store)
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
    /// Guest output lines not logged: over the stage's log rate, or the buffer was full.
    pub log_lines_dropped: u64,
    /// Bytes cut from guest output lines longer than the log's line limit.
    pub log_bytes_cut: u64,
}

/// Instantiating may take at least this long (a tight per-batch limit on a busy machine
/// must not fail the mostly host-side work of starting an instance).
const MIN_INSTANTIATE_TIME: Duration = Duration::from_secs(1);

/// How often a stage warns that its guest's output is being dropped.
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

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
    /// Drives calls and host-call futures; current-thread, with timers.
    executor: tokio::runtime::Runtime,
    /// The job's stop flag: set, it abandons the call in progress.
    stop: Option<Arc<AtomicBool>>,
    /// The reference tables the stage may read (`lookup`).
    reads: Reads,
    last_drop_warning: Option<Instant>,
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
        Self::reading(runtime, module, stage, limits, None)
    }

    /// [`Sandboxed::new`] for a stage that may read the tables of `reads`; a module that
    /// looks rows up is refused when the stage reads none.
    pub fn reading(
        runtime: &Runtime,
        module: &UdfModule,
        stage: &str,
        limits: Limits,
        reads: Reads,
    ) -> Result<Self, UdfError> {
        if reads.is_none() && module.reads_tables() {
            return Err(UdfError::TablesUndeclared {
                stage: stage.to_owned(),
                path: module.path.clone(),
            });
        }
        let pre = prepare::<W>(runtime, module, stage)?;
        let executor = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| {
                UdfError::Runtime(format!("cannot start the stage's executor: {err}"))
            })?;
        let mut sandboxed = Sandboxed {
            stage: stage.to_owned(),
            module: module.clone(),
            engine: runtime.engine().clone(),
            limits,
            pre,
            live: None,
            log: GuestLog::default(),
            stats: SandboxStats::default(),
            executor,
            stop: runtime.stop_flag().cloned(),
            reads,
            last_drop_warning: None,
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

    fn ensure_live(&mut self) -> Result<(), UdfError> {
        if self.live.is_some() {
            return Ok(());
        }
        let mut store = new_store(
            &self.engine,
            self.limits,
            &self.log,
            self.stop.clone(),
            self.reads.clone(),
        );
        let deadline = Instant::now() + self.limits.cpu_per_batch.max(MIN_INSTANTIATE_TIME);
        store.data_mut().clock.start(deadline);
        let result = self.executor.block_on(bounded(
            W::instantiate(&self.pre, &mut store),
            deadline,
            self.stop.as_deref(),
        ));
        self.stats.instantiations += 1;
        let state = store.data_mut();
        let hit = state.limiter.take_hit();
        let interrupted = state.clock.take_interruption();
        match result {
            Ok(Ok(bindings)) => {
                self.live = Some(Live { store, bindings });
                Ok(())
            }
            Ok(Err(err)) => {
                drop(store);
                self.flush_log(true);
                Err(self.failure(
                    classify(&err, hit, interrupted, self.limits),
                    |stage, reason| UdfError::Instantiate { stage, reason },
                ))
            }
            Err(why) => {
                drop(store);
                self.flush_log(true);
                Err(self.failure(Failure::Interrupted(why), |stage, reason| {
                    UdfError::Instantiate { stage, reason }
                }))
            }
        }
    }

    /// The error for a failure; `trap` builds it for a trap.
    fn failure(&self, failure: Failure, trap: fn(String, String) -> UdfError) -> UdfError {
        let stage = self.stage.clone();
        match failure {
            Failure::Limit(limit) => UdfError::Limit { stage, limit },
            Failure::Interrupted(Interruption::Deadline) => UdfError::Limit {
                stage,
                limit: LimitHit::Deadline {
                    limit: self.limits.cpu_per_batch,
                },
            },
            Failure::Interrupted(Interruption::Stopped) => UdfError::Stopped { stage },
            Failure::Trap(reason) => trap(stage, reason),
        }
    }

    /// Calls into the component, bounded by the stage's time limit (guest code and time
    /// waiting in host calls alike) and by the job's stop flag. On any failure the instance
    /// is dropped (a trapped or abandoned instance must not be entered again) and the next
    /// call starts a fresh one; the error names the stage and the limit or trap.
    pub fn call<R: OutputSize>(
        &mut self,
        f: impl AsyncFnOnce(&W, &mut Store<SandboxState>) -> wasmtime::Result<R>,
    ) -> Result<R, UdfError> {
        let limits = self.limits;
        self.stats.calls += 1;
        if let Err(err) = self.ensure_live() {
            self.stats.failures += 1;
            return Err(err);
        }
        let Some(live) = self.live.as_mut() else {
            return Err(UdfError::Runtime("instance vanished".into()));
        };
        let deadline = Instant::now() + limits.cpu_per_batch;
        live.store.data_mut().clock.start(deadline);
        let result = self.executor.block_on(bounded(
            f(&live.bindings, &mut live.store),
            deadline,
            self.stop.as_deref(),
        ));
        let state = live.store.data_mut();
        let hit = state.limiter.take_hit();
        let interrupted = state.clock.take_interruption();
        let failure = match result {
            Ok(Ok(output)) => {
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
                return Ok(output);
            }
            Ok(Err(err)) => classify(&err, hit, interrupted, self.limits),
            Err(why) => Failure::Interrupted(why),
        };
        self.stats.failures += 1;
        self.live = None;
        let tail = self.flush_log(true);
        let failure = match failure {
            Failure::Trap(reason) => match panic_message(&tail) {
                Some(panic) => Failure::Trap(format!("{reason}: {panic}")),
                None => Failure::Trap(reason),
            },
            other => other,
        };
        Err(self.failure(failure, |stage, reason| UdfError::Trap { stage, reason }))
    }

    /// Logs what the guest wrote, tagged with the stage, and counts what was dropped;
    /// returns the raw tail of the call's output.
    fn flush_log(&mut self, all: bool) -> String {
        let drained = self.log.drain(all);
        for line in &drained.lines {
            tracing::info!(target: "rivulet::guest", stage = %self.stage, "{line}");
        }
        if drained.dropped_lines > 0 || drained.cut_bytes > 0 {
            self.stats.log_lines_dropped += drained.dropped_lines;
            self.stats.log_bytes_cut += drained.cut_bytes;
            if self
                .last_drop_warning
                .is_none_or(|at| at.elapsed() >= DROP_WARNING_EVERY)
            {
                self.last_drop_warning = Some(Instant::now());
                tracing::warn!(
                    target: "rivulet::guest",
                    stage = %self.stage,
                    dropped_lines = self.stats.log_lines_dropped,
                    cut_bytes = self.stats.log_bytes_cut,
                    "guest output over the log limits ({} lines/s, {} bytes/line): the rest is dropped and counted",
                    super::guest_log::LINES_PER_SECOND,
                    super::guest_log::MAX_LINE,
                );
            }
        }
        drained.tail
    }
}

/// The panic a Rust guest printed before trapping: `panicked at <where>: <message>`.
fn panic_message(tail: &str) -> Option<String> {
    let lines: Vec<&str> = tail.lines().filter(|l| !l.trim().is_empty()).collect();
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
    Interrupted(Interruption),
    Trap(String),
}

fn classify(
    err: &wasmtime::Error,
    hit: Option<LimitHit>,
    interrupted: Option<Interruption>,
    limits: Limits,
) -> Failure {
    if let Some(hit) = hit {
        return Failure::Limit(hit);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            Failure::Interrupted(interrupted.unwrap_or(Interruption::Deadline))
        }
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
                return Failure::Trap(exit_reason(exit.0));
            }
            let message = err.chain().last().map(ToString::to_string).unwrap_or_else(|| root_cause(err));
            // wasmtime's error when lifting a result (or a guest's host-call argument)
            // would copy more than the store's hostcall fuel, `Limits::copy_budget`.
            if message.contains("fuel allocated for hostcalls has been exhausted") {
                return Failure::Limit(LimitHit::OutputUncopied {
                    limit: limits.output_bytes,
                    copied: limits.copy_budget(),
                });
            }
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

/// What a guest's `exit` means. WASI 0.2's `exit(result)` carries only success or failure
/// (wasi-libc, and so Rust's `std::process::exit(n)`, sends failure for any `n` ≠ 0, which
/// wasmtime reports as 1); `exit-with-code` carries the real code.
fn exit_reason(code: i32) -> String {
    match code {
        1 => "the guest called exit with a failure status (code 1, or a nonzero code WASI 0.2's `exit` cannot carry: use `exit-with-code` to report it)".to_owned(),
        code => format!("the guest called exit({code})"),
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
