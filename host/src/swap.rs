//! Hot swap. A candidate module is compiled, checked against its stage's world, started and
//! run over the stage's recent sample input on a worker thread — off the hot path. Only a
//! candidate that passes all of that reaches the pipeline, which installs it between two
//! batches. A rejected candidate changes nothing; the old module keeps running.

use crate::stage::wasm::{WasmAggregate, WasmFormat, WasmMap, WasmParse};
use crate::stage::{AggregateStage, FormatStage, MapStage, ParseStage};
use crate::status::{JobStatus, Sample, SwapEvent};
use crate::transform::Step;
use crate::udf::{Kind, Limits, Runtime, UdfModule};
use crate::window::Windowing;
use rivulet_rows::{Scalar, WindowAcc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

/// Asks for `bytes` to replace the module of `stage`.
pub struct SwapRequest {
    pub stage: String,
    pub bytes: Vec<u8>,
    /// Where the module came from, for logs and status (a path, or `control API`).
    pub origin: String,
    pub reply: Option<Sender<Result<SwapOutcome, String>>>,
    /// Another process's proposal to the job's fleet (None: asked of this process).
    pub fleet: Option<RemoteProposal>,
    /// Run the candidate as the stage's shadow instead of swapping it in (see
    /// [`crate::shadow`]); the answer goes to the shadow's reply, not `reply`.
    pub shadow: Option<ShadowAsk>,
}

/// A request to start a shadow: how long it runs, and where the answer goes.
pub struct ShadowAsk {
    pub bound: crate::shadow::Bound,
    pub reply: Sender<Result<crate::shadow::Report, String>>,
}

/// A swap another process of the job proposed (see [`crate::fleet`]).
#[derive(Debug, Clone)]
pub struct RemoteProposal {
    pub id: String,
    /// Whether the proposer waits for this process's vote (it was alive when proposed).
    pub voter: bool,
}

/// The other processes running the same job, asked between a swap's checks here and its
/// install (see [`crate::fleet`]).
pub trait FleetGate: Send + Sync {
    /// Ok once the fleet agreed to install `module`: every process checked it (a swap asked
    /// of this process), or the proposer decided so (another's proposal).
    fn agree(&self, request: &SwapRequest, module: &UdfModule) -> Result<(), String>;
    /// This process's checks refused the module.
    fn refused(&self, request: &SwapRequest, reason: &str);
    /// This process installed it (with its longest pause), or failed to; for a swap asked
    /// of this process, how the others' installs went.
    fn installed(
        &self,
        request: &SwapRequest,
        result: &Result<Duration, String>,
    ) -> Option<FleetInstalls>;
}

/// How a swap went on every process of the fleet.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct FleetInstalls {
    /// The processes that took part, this one included.
    pub processes: usize,
    /// Per process, when it had installed, in ms after the decision.
    pub installed_ms: BTreeMap<String, f64>,
    /// Processes whose install failed after they had accepted, and why.
    pub failed: BTreeMap<String, String>,
    /// Processes that did not report an install in time.
    pub missing: Vec<String>,
}

/// What a successful swap did.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SwapOutcome {
    pub stage: String,
    pub hash: String,
    pub previous_hash: Option<String>,
    pub state_version: Option<u32>,
    /// Whether open windows stay with the previous module (its state version differs).
    pub new_generation: bool,
    pub prepare_ms: f64,
    /// How long the record flow paused for the swap itself.
    pub pause_us: u64,
    /// A job's fleet: how the other processes installed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetInstalls>,
}

/// A started, checked module of one stage kind.
pub enum Candidate {
    Parse(Box<dyn ParseStage>),
    Map(Box<dyn MapStage>),
    Format(Box<dyn FormatStage>),
    Aggregate {
        stage: Box<dyn AggregateStage>,
        empty: Vec<u8>,
        state_version: u32,
    },
}

/// A replaced module, sent to the swap worker to be dropped there: freeing an instance's
/// memory takes a few hundred microseconds that the record flow should not wait for.
pub enum Retired {
    Parse(Box<dyn ParseStage>),
    Map(Box<dyn MapStage>),
    Format(Box<dyn FormatStage>),
    Aggregate(Box<dyn AggregateStage>),
}

fn retire(graveyard: &Option<Sender<Retired>>, old: Retired) {
    if let Some(graveyard) = graveyard {
        // If the worker is gone the module is simply dropped here.
        let _ = graveyard.send(old);
    }
}

/// A candidate ready to install in one task.
pub struct Prepared {
    pub stage: String,
    /// The swap's number in this job (a stage's change of output shape is logged once per
    /// swap, see [`crate::shape`]).
    pub swap: u64,
    pub candidate: Candidate,
    /// Where the task reports the install: whether windows stay with the previous module
    /// (a new generation), and how long its record flow paused.
    pub installed: Sender<Installed>,
}

/// One task's install of a swap.
pub type Installed = Result<(bool, Duration), String>;

/// How long the worker waits for a task to install a prepared module (a task installs
/// between two batches; a guest call is bounded by its stage's time limit).
const INSTALL_WAIT: Duration = Duration::from_secs(30);

/// A stage that can be swapped: what a new module for it must be and may use.
#[derive(Clone)]
pub struct SwapStage {
    pub kind: Kind,
    pub limits: Limits,
    /// The reference tables its `lookup` reads (map stages; a new module gets the same).
    pub reads: crate::udf::Reads,
}

/// The stages that can be swapped, by name.
pub type Swappable = BTreeMap<String, SwapStage>;

/// The job's ends of the swap worker's channels: one `prepared` per task.
pub struct SwapChannels {
    pub requests: Sender<SwapRequest>,
    pub prepared: Vec<Receiver<Prepared>>,
    pub retired: Sender<Retired>,
}

/// Starts the worker (and the thread that drops replaced modules) for a job of `tasks`
/// tasks: a checked candidate is started once per task, and the swap is done when every
/// task has installed it between two of its batches.
pub fn spawn(
    runtime: Runtime,
    status: Arc<JobStatus>,
    stages: Swappable,
    tasks: usize,
    fleet: Option<Arc<dyn FleetGate>>,
) -> std::io::Result<SwapChannels> {
    let (requests, incoming) = channel::<SwapRequest>();
    let (readies, prepared): (Vec<Sender<Prepared>>, Vec<Receiver<Prepared>>) =
        (0..tasks.max(1)).map(|_| channel::<Prepared>()).unzip();
    let (retired, graveyard) = channel::<Retired>();
    std::thread::Builder::new()
        .name("rivulet-retire".into())
        .spawn(move || graveyard.into_iter().for_each(drop))?;
    std::thread::Builder::new().name("rivulet-swap".into()).spawn(move || {
        for (swap, mut request) in (1u64..).zip(incoming) {
            if let Some(ask) = request.shadow.take() {
                let over_kafka = fleet.is_some();
                shadow(&runtime, &status, &stages, &request, ask, over_kafka);
                continue;
            }
            let started = Instant::now();
            match prepare(&runtime, &status, &stages, &request, readies.len()) {
                Ok((module, candidates)) => {
                    let prepared_in = started.elapsed();
                    if let Some(fleet) = &fleet
                        && let Err(reason) = fleet.agree(&request, &module)
                    {
                        rejected(&status, request, reason);
                        continue;
                    }
                    let new_version = match candidates.first() {
                        Some(Candidate::Aggregate { state_version, .. }) => Some(*state_version),
                        _ => None,
                    };
                    let installed =
                        install_everywhere(&readies, &request.stage, swap, candidates);
                    if installed == Err(STOPPED.to_owned()) {
                        return;
                    }
                    let report = fleet.as_ref().and_then(|fleet| {
                        fleet.installed(&request, &installed.clone().map(|(_, pause)| pause))
                    });
                    let outcome = installed.map(|(new_generation, pause)| {
                        let installed = Install {
                            prepared_in,
                            new_generation,
                            new_version,
                            pause,
                        };
                        SwapOutcome {
                            fleet: report,
                            ..outcome(&status, &request, &module, &installed)
                        }
                    });
                    match &outcome {
                        Ok(_) => runtime.swapped().record(
                            &status.job,
                            &request.stage,
                            &request.origin,
                            &request.bytes,
                        ),
                        Err(reason) => {
                            tracing::warn!(stage = %request.stage, "swap not installed: {reason}");
                        }
                    }
                    if let Some(reply) = request.reply {
                        let _ = reply.send(outcome);
                    }
                }
                Err(reason) => {
                    if let Some(fleet) = &fleet {
                        fleet.refused(&request, &reason);
                    }
                    rejected(&status, request, reason);
                }
            }
        }
    })?;
    Ok(SwapChannels {
        requests,
        prepared,
        retired,
    })
}

const STOPPED: &str = "the job has stopped";

/// A swap that is not installed: logged, counted, remembered and answered.
fn rejected(status: &JobStatus, request: SwapRequest, reason: String) {
    tracing::warn!(stage = %request.stage, origin = %request.origin, "swap rejected, the current module keeps running: {reason}");
    let hash = request
        .bytes
        .starts_with(b"\0asm")
        .then(|| crate::udf::cache::content_hash(&request.bytes));
    status.update_stage(&request.stage, |info| {
        info.rejected += 1;
        info.last_rejection = Some(reason.clone());
        info.remember(SwapEvent {
            at: crate::status::now_iso(),
            origin: request.origin.clone(),
            hash,
            swapped: false,
            pause_us: None,
            rejection: Some(reason.clone()),
        });
    });
    if let Some(reply) = request.reply {
        let _ = reply.send(Err(reason));
    }
}

/// Checks a candidate as a swap would and starts it as the stage's shadow; the answer goes
/// to `ask.reply`.
fn shadow(
    runtime: &Runtime,
    status: &JobStatus,
    stages: &Swappable,
    request: &SwapRequest,
    ask: ShadowAsk,
    over_kafka: bool,
) {
    let started = (|| {
        if status.shadows.running(&request.stage) {
            return Err(crate::shadow::ShadowError::Busy(request.stage.clone()).to_string());
        }
        if over_kafka && stages.get(&request.stage).map(|stage| stage.kind) == Some(Kind::Aggregate)
        {
            return Err(format!(
                "stage `{}`: a shadow of the aggregate of a job over the partials topic is not supported (its windows finish in other processes); shadow it in a single-process run of the job",
                request.stage
            ));
        }
        let (module, mut candidates) = prepare(runtime, status, stages, request, 1)?;
        let candidate = match candidates.pop() {
            Some(Candidate::Parse(stage)) => crate::shadow::ShadowStage::Parse(stage),
            Some(Candidate::Map(stage)) => crate::shadow::ShadowStage::Map(stage),
            Some(Candidate::Format(stage)) => crate::shadow::ShadowStage::Format(stage),
            Some(Candidate::Aggregate { stage, empty, .. }) => {
                crate::shadow::ShadowStage::Aggregate { stage, empty }
            }
            None => return Err("the candidate did not start".to_owned()),
        };
        status
            .shadows
            .start(crate::shadow::Start {
                stage: request.stage.clone(),
                kind: module.kind,
                origin: request.origin.clone(),
                hash: module.hash.clone(),
                bytes: request.bytes.clone(),
                bound: ask.bound,
                candidate,
            })
            .map_err(|err| err.to_string())
    })();
    if let Err(reason) = &started {
        tracing::warn!(stage = %request.stage, origin = %request.origin, "shadow not started, nothing changed: {reason}");
    }
    let _ = ask.reply.send(started);
}

/// Swaps in the candidate of a stage's shadow (`stage`, or the only stage with one) exactly
/// as a normal swap does — the same checks, installed between two batches in every task —
/// and stops the shadow. Blocks until the swap is done or rejected (the shadow then keeps
/// running).
pub fn promote(
    requests: &Sender<SwapRequest>,
    status: &JobStatus,
    stage: Option<&str>,
) -> Result<SwapOutcome, String> {
    let board = &status.shadows;
    let stage = board.which(stage).map_err(|err| err.to_string())?;
    let (bytes, origin) = board.candidate(&stage).map_err(|err| err.to_string())?;
    let (reply, answer) = channel();
    requests
        .send(SwapRequest {
            stage: stage.clone(),
            bytes: bytes.to_vec(),
            origin: format!("promoted shadow ({origin})"),
            reply: Some(reply),
            fleet: None,
            shadow: None,
        })
        .map_err(|_| STOPPED.to_owned())?;
    let outcome = answer
        .recv_timeout(INSTALL_WAIT * 4)
        .map_err(|_| "no answer from the swap worker".to_owned())??;
    board.promoted(&stage);
    Ok(outcome)
}

/// How long a swap waits for the stage's next input to try the candidate on (an idle job:
/// the latest sample instead).
const FRESH_SAMPLE_WAIT: Duration = Duration::from_millis(500);

/// How long a swap waits for every task to offer its open windows' accumulators (each
/// answers between two batches, so a task in a long poll or commit answers late).
const LIVE_ACCUMULATORS_WAIT: Duration = Duration::from_secs(3);

/// Hands one candidate to each task and waits for every install: whether windows stay
/// with the previous module, and the longest pause.
fn install_everywhere(
    readies: &[Sender<Prepared>],
    stage: &str,
    swap: u64,
    candidates: Vec<Candidate>,
) -> Result<(bool, Duration), String> {
    let (installed, reports) = channel::<Installed>();
    let mut sent = 0;
    for (ready, candidate) in readies.iter().zip(candidates) {
        let prepared = Prepared {
            stage: stage.to_owned(),
            swap,
            candidate,
            installed: installed.clone(),
        };
        if ready.send(prepared).is_ok() {
            sent += 1;
        }
    }
    if sent == 0 {
        return Err(STOPPED.to_owned());
    }
    let (mut new_generation, mut pause) = (false, Duration::ZERO);
    for _ in 0..sent {
        match reports.recv_timeout(INSTALL_WAIT) {
            Ok(Ok((generation, paused))) => {
                new_generation |= generation;
                pause = pause.max(paused);
            }
            Ok(Err(reason)) => return Err(reason),
            Err(_) => {
                return Err(format!(
                    "not every task installed it within {} s (a task stopped or is stuck)",
                    INSTALL_WAIT.as_secs()
                ));
            }
        }
    }
    Ok((new_generation, pause))
}

/// How a swap went in every task.
struct Install {
    prepared_in: Duration,
    new_generation: bool,
    /// An aggregate's state version.
    new_version: Option<u32>,
    /// The longest pause of a task's record flow.
    pause: Duration,
}

/// Records a swap every task installed: status, log line, and the reply.
fn outcome(
    status: &JobStatus,
    request: &SwapRequest,
    module: &UdfModule,
    installed: &Install,
) -> SwapOutcome {
    let previous = status.stage(&request.stage).and_then(|s| s.hash);
    let outcome = SwapOutcome {
        stage: request.stage.clone(),
        hash: module.hash.clone(),
        previous_hash: previous,
        state_version: installed.new_version,
        new_generation: installed.new_generation,
        prepare_ms: installed.prepared_in.as_secs_f64() * 1e3,
        pause_us: installed.pause.as_micros() as u64,
        fleet: None,
    };
    status.update_stage(&request.stage, |info| {
        info.origin = Some(request.origin.clone());
        info.hash = Some(module.hash.clone());
        info.size = module.size;
        info.load_ms = outcome.prepare_ms;
        info.loaded_at = rivulet_rows::time::iso8601(crate::source::kafka::now_millis());
        info.swaps += 1;
        info.last_swap_pause_us = Some(outcome.pause_us);
        info.swap_pauses.record(
            &crate::counters::BATCH_LATENCY_US,
            Duration::from_micros(outcome.pause_us),
        );
        if installed.new_version.is_some() {
            info.state_version = installed.new_version;
        }
        info.remember(SwapEvent {
            at: info.loaded_at.clone(),
            origin: request.origin.clone(),
            hash: Some(module.hash.clone()),
            swapped: true,
            pause_us: Some(outcome.pause_us),
            rejection: None,
        });
    });
    tracing::info!(
        stage = %request.stage,
        origin = %request.origin,
        hash = module.short_hash(),
        previous = outcome.previous_hash.as_deref().and_then(|h| h.get(..12)).unwrap_or("-"),
        new_generation = outcome.new_generation,
        prepare_ms = format!("{:.1}", outcome.prepare_ms),
        pause_us = outcome.pause_us,
        "swapped in a new module"
    );
    outcome
}

/// Starts an instance of a module for a stage; `failed` words an error of the aggregate's
/// first calls (`create`, `state_version`).
fn instance(
    runtime: &Runtime,
    module: &UdfModule,
    stage: &str,
    swappable: &SwapStage,
    failed: impl Fn(crate::udf::UdfError) -> String,
) -> Result<Candidate, String> {
    let start = |err: crate::udf::UdfError| err.to_string();
    let limits = swappable.limits;
    Ok(match swappable.kind {
        Kind::Parse => Candidate::Parse(Box::new(
            WasmParse::new(runtime, module, stage, limits).map_err(start)?,
        )),
        Kind::Map => Candidate::Map(Box::new(
            WasmMap::reading(runtime, module, stage, limits, swappable.reads.clone())
                .map_err(start)?,
        )),
        Kind::Format => Candidate::Format(Box::new(
            WasmFormat::new(runtime, module, stage, limits).map_err(start)?,
        )),
        Kind::Aggregate => {
            let mut new = WasmAggregate::new(runtime, module, stage, limits).map_err(start)?;
            let empty = new.create().map_err(&failed)?;
            let state_version = new.state_version().map_err(&failed)?;
            Candidate::Aggregate {
                stage: Box::new(new),
                empty,
                state_version,
            }
        }
    })
}

fn prepare(
    runtime: &Runtime,
    status: &JobStatus,
    stages: &Swappable,
    request: &SwapRequest,
    tasks: usize,
) -> Result<(UdfModule, Vec<Candidate>), String> {
    let Some(swappable) = stages.get(&request.stage) else {
        let names: Vec<String> = stages.keys().cloned().collect();
        return Err(format!(
            "no swappable stage `{}` (this job's component stages: {})",
            request.stage,
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ));
    };
    let module = UdfModule::from_bytes(runtime, Path::new(&request.origin), &request.bytes)
        .map_err(|e| e.to_string())?;
    if module.kind != swappable.kind {
        return Err(format!(
            "{} implements the {} world, but stage `{}` needs the {} world",
            request.origin, module.kind, request.stage, swappable.kind
        ));
    }
    let stage = &request.stage;
    // Samples are taken only while a swap is prepared (and at the start).
    let sample = status.fresh_sample(stage, FRESH_SAMPLE_WAIT);
    let trapped = |err: crate::udf::UdfError| {
        format!("the new module failed on the stage's sample input: {err}")
    };
    let mut candidate = instance(runtime, &module, stage, swappable, trapped)?;
    match (&mut candidate, &sample) {
        (Candidate::Parse(new), Some(Sample::Raw(raw))) => {
            new.parse(raw).map_err(trapped)?;
        }
        (Candidate::Map(new), Some(Sample::Rows(rows))) => {
            new.map(rows).map_err(trapped)?;
        }
        (Candidate::Format(new), Some(Sample::Rows(rows))) => {
            new.format(rows).map_err(trapped)?;
        }
        (
            Candidate::Aggregate {
                stage: new, empty, ..
            },
            Some(Sample::Rows(rows)),
        ) => {
            let groups = vec![0; rows.len as usize];
            let added = new
                .add(vec![empty.clone()], rows, &groups)
                .map_err(trapped)?;
            let acc = added
                .accs
                .into_iter()
                .next()
                .unwrap_or_else(|| empty.clone());
            let window = WindowAcc {
                key: Scalar::Null,
                window_start: 0,
                window_end: 0,
                acc,
            };
            new.finish(vec![window]).map_err(trapped)?;
        }
        _ => {}
    }
    if let Candidate::Aggregate {
        stage: new,
        empty,
        state_version,
    } = &mut candidate
    {
        let current = status.stage(stage).and_then(|info| info.state_version);
        if current == Some(*state_version) {
            // It takes over the open windows' accumulators: it must read them.
            let live = status.live_accumulators(tasks, LIVE_ACCUMULATORS_WAIT);
            takes_over(&mut **new, empty, *state_version, &live)
                .map_err(|reason| format!("stage `{stage}`: {reason}"))?;
        }
    }
    // The checked instance goes to the first task; the others get fresh ones.
    let mut candidates = vec![candidate];
    for _ in 1..tasks {
        let started = |err: crate::udf::UdfError| format!("starting the new module: {err}");
        candidates.push(instance(runtime, &module, stage, swappable, started)?);
    }
    Ok((module, candidates))
}

/// Tries an aggregate candidate with the state version in service on `live` accumulators of
/// open windows, as it would use them once swapped in: each merged with an empty one, and
/// finished. An error says which window's accumulator it cannot read, and why.
pub fn takes_over(
    new: &mut dyn AggregateStage,
    empty: &[u8],
    state_version: u32,
    live: &[WindowAcc],
) -> Result<(), String> {
    if live.is_empty() {
        return Ok(());
    }
    let cannot = |what: &str, why: String| {
        format!(
            "the new module keeps state version {state_version} but cannot {what} the accumulators of the open windows it would take over ({} tried): {why}; if the accumulator's layout changed, give the module a new STATE_VERSION (open windows then finish with the module in service)",
            live.len()
        )
    };
    let pairs = live
        .iter()
        .map(|window| (window.acc.clone(), empty.to_vec()))
        .collect();
    // A guest's `Err` arrives as a trap of the stage; the caller names the stage.
    let reason = |err: crate::udf::UdfError| match err {
        crate::udf::UdfError::Trap { reason, .. } => reason,
        other => other.to_string(),
    };
    new.merge(pairs)
        .map_err(|err| cannot("merge", reason(err)))?;
    let finished = new
        .finish(live.to_vec())
        .map_err(|err| cannot("finish", reason(err)))?;
    if let Some(error) = finished.errors.first() {
        let window = live.get(error.index as usize);
        let which = window.map_or_else(String::new, |w| {
            format!(
                "{} of them fail, e.g. the window starting {} with key {}: ",
                finished.errors.len(),
                rivulet_rows::time::iso8601(w.window_start),
                w.key.to_json()
            )
        });
        return Err(cannot("finish", format!("{which}{}", error.message)));
    }
    Ok(())
}

/// The stages of one task a swap can replace.
pub struct Slots<'a> {
    pub parse: &'a mut Step<dyn ParseStage>,
    pub maps: &'a mut [Step<dyn MapStage>],
    pub format: Option<&'a mut Step<dyn FormatStage>>,
    pub windowing: Option<&'a mut Windowing>,
    /// A job over Kafka: the stage that holds this task's aggregate.
    pub cluster: Option<&'a mut crate::cluster::ClusterStep>,
}

/// Installs a prepared module into its slot (call between two batches, so no record sees
/// two modules) and reports the install to the swap worker. Returns the record-flow pause
/// when it was installed.
pub fn install(
    slots: Slots<'_>,
    swap: Prepared,
    graveyard: &Option<Sender<Retired>>,
) -> Option<Duration> {
    let started = Instant::now();
    let installed: Result<bool, String> = match swap.candidate {
        Candidate::Parse(stage) if slots.parse.name == swap.stage => {
            let old = std::mem::replace(&mut slots.parse.stage, stage);
            slots.parse.shape.swapped(swap.swap);
            retire(graveyard, Retired::Parse(old));
            Ok(false)
        }
        Candidate::Map(stage) => match slots.maps.iter_mut().find(|m| m.name == swap.stage) {
            Some(map) => {
                retire(
                    graveyard,
                    Retired::Map(std::mem::replace(&mut map.stage, stage)),
                );
                map.shape.swapped(swap.swap);
                Ok(false)
            }
            None => Err(format!("no map stage `{}`", swap.stage)),
        },
        Candidate::Format(stage) => match slots.format.filter(|f| f.name == swap.stage) {
            Some(format) => {
                let old = std::mem::replace(&mut format.stage, stage);
                format.shape.swapped(swap.swap);
                retire(graveyard, Retired::Format(old));
                Ok(false)
            }
            None => Err(format!("no format stage `{}`", swap.stage)),
        },
        Candidate::Aggregate {
            stage,
            empty,
            state_version,
        } => {
            let swapped = match (slots.windowing, slots.cluster) {
                (Some(windowing), _) => {
                    windowing.swap_aggregate(stage, empty, state_version, swap.swap)
                }
                (None, Some(cluster)) => {
                    cluster.swap_aggregate(stage, empty, state_version, swap.swap)
                }
                (None, None) => Err("this job has no aggregate".to_owned()),
            };
            swapped.map(|(new_generation, old)| {
                if let Some(old) = old {
                    retire(graveyard, Retired::Aggregate(old));
                }
                new_generation
            })
        }
        Candidate::Parse(_) => Err(format!("no parse stage `{}`", swap.stage)),
    };
    let pause = started.elapsed();
    let ok = installed.is_ok();
    let _ = swap
        .installed
        .send(installed.map(|new_generation| (new_generation, pause)));
    ok.then_some(pause)
}
