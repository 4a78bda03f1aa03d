//! The store every component runs in: WASI with nothing granted (no filesystem, network,
//! environment, arguments or inherited stdio), its stdout/stderr captured for the host's
//! logs, the resource limiter of its stage, the clock that bounds each call, and the
//! reference tables its stage may read (see [`super::lookup`]).

use super::deadline::CallClock;
use super::guest_log::{GuestLog, Stream};
use super::limits::{Limiter, Limits};
use super::lookup::Reads;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// What a store holds: the guest's WASI context (granting nothing), its resources, its
/// limiter, its call clock and the tables it may read.
pub struct SandboxState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) clock: CallClock,
    pub(crate) reads: Reads,
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A fresh store for one instance of a stage's component. Guest code is checked against
/// the call's deadline (and the stop flag) at every epoch tick.
pub fn new_store(
    engine: &Engine,
    limits: Limits,
    log: &GuestLog,
    stop: Option<Arc<AtomicBool>>,
    reads: Reads,
) -> Store<SandboxState> {
    let wasi = WasiCtxBuilder::new()
        .stdout(log.stream(Stream::Stdout))
        .stderr(log.stream(Stream::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build();
    let mut store = Store::new(
        engine,
        SandboxState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter::new(limits),
            clock: CallClock::new(stop),
            reads,
        },
    );
    store.limiter(|state| &mut state.limiter);
    // wasmtime counts the bytes of every list and string it lifts out of the guest and
    // refuses to copy past this budget: an output far over the limit is never copied whole.
    store.set_hostcall_fuel(limits.copy_budget());
    store.epoch_deadline_callback(|mut ctx| {
        Ok(match ctx.data_mut().clock.check(Instant::now()) {
            Some(_) => UpdateDeadline::Interrupt,
            None => UpdateDeadline::Continue(1),
        })
    });
    store.set_epoch_deadline(1);
    store
}
