//! Shadow swap: a candidate module runs beside a stage's live module on a copy of the
//! stage's live input, and what each made of it is compared ([`diff`]), until it is
//! promoted (a normal swap, see [`crate::swap`]), dropped, or its bound is reached.
//!
//! The tasks hand the shadow a copy of each batch's input and of the live module's output
//! ([`Tap`]); the shadow's own module runs on a thread of its own ([`runner`]), in its own
//! store with the stage's limits. Its output goes nowhere but the diff: never to the sink,
//! the dead letters or the late records. The record path pays the copies and a
//! non-blocking send per batch; a shadow that falls more than [`BEHIND`] batches behind is
//! dropped rather than slow the job, as is one that traps or hits a limit.
//!
//! An aggregate's shadow keeps accumulators of its own for the windows and keys the live
//! operator assigned rows to, and finishes them when the live module finishes its windows;
//! windows already open when it started are marked partial.

pub mod diff;
mod feed;
mod runner;

pub use feed::{Feed, Fired, Group, LiveRows, Tap};
pub use runner::ShadowStage;

use diff::{RecordDiff, WindowsDiff};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How many batches a shadow may have queued before it is dropped for falling behind.
pub const BEHIND: usize = 64;

/// How long a shadow runs when no bound is given.
pub const DEFAULT_FOR: Duration = Duration::from_secs(300);

/// How long a shadow runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// For this long.
    For(#[serde(with = "millis")] Duration),
    /// Until this many windows were compared (an aggregate).
    Windows(u32),
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bound::For(d) if d.as_secs() >= 60 && d.as_secs() % 60 == 0 => {
                write!(f, "for {}m", d.as_secs() / 60)
            }
            Bound::For(d) if d.subsec_millis() == 0 => write!(f, "for {}s", d.as_secs()),
            Bound::For(d) => write!(f, "for {}ms", d.as_millis()),
            Bound::Windows(n) => write!(f, "for {n} windows"),
        }
    }
}

/// Where a shadow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    /// Its bound was reached; the diff stays, and it can still be promoted.
    Finished,
    /// Dropped on request or on its own (see the reason).
    Dropped,
    /// Swapped in as the stage's module.
    Promoted,
}

/// One side's work on the input the shadow saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// Inputs handed to the module (records, rows, or an aggregate's rows).
    pub inputs: u64,
    /// Inputs it refused (per-record errors).
    pub errors: u64,
    /// Calls that trapped or hit a limit.
    pub traps: u64,
    /// Time in the module's calls, in total and per input.
    pub busy_us: u64,
    pub us_per_input: f64,
}

impl Cost {
    pub(crate) fn add(&mut self, inputs: u64, errors: u64, trapped: bool, busy: Duration) {
        self.inputs += inputs;
        self.errors += errors;
        self.traps += u64::from(trapped);
        self.busy_us += u64::try_from(busy.as_micros()).unwrap_or(u64::MAX);
        self.us_per_input = match self.inputs {
            0 => 0.0,
            n => self.busy_us as f64 / n as f64,
        };
    }
}

/// A shadow as `rivulet shadow status` and `/status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub stage: String,
    /// The stage's world: parse, map, aggregate or format.
    pub kind: String,
    /// Where the candidate came from, and its content hash.
    pub origin: String,
    pub hash: String,
    pub started_at: String,
    pub bound: Bound,
    pub state: State,
    /// Why it stopped (a bound reached, dropped, promoted, a trap, falling behind).
    pub reason: Option<String>,
    /// Batches the shadow processed, and how many waited for it at most.
    pub batches: u64,
    pub most_behind: usize,
    /// The bound on waiting batches, past which it is dropped.
    pub behind_bound: usize,
    /// The live module's work on the same input, and the shadow's.
    pub live: Cost,
    pub shadow: Cost,
    /// Parse, map, format: per-record differences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<RecordDiff>,
    /// Aggregate: per-window differences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<WindowsDiff>,
}

/// What starts a shadow: a checked candidate and where it came from.
pub struct Start {
    pub stage: String,
    pub kind: crate::udf::Kind,
    pub origin: String,
    pub hash: String,
    pub bytes: Vec<u8>,
    pub bound: Bound,
    pub candidate: ShadowStage,
}

/// What the board keeps of one stage's shadow.
struct Entry {
    control: Arc<Control>,
    report: Arc<Mutex<Report>>,
    /// The candidate, for a promotion.
    bytes: Arc<Vec<u8>>,
    origin: String,
    /// The running shadow's input (None once it stopped).
    sender: Option<std::sync::mpsc::SyncSender<Feed>>,
    epoch: u64,
}

/// Stops a shadow, once, with the reason.
#[derive(Debug, Default)]
pub(crate) struct Control {
    stopped: AtomicBool,
    /// Feeds sent and not yet taken.
    pub(crate) queued: std::sync::atomic::AtomicUsize,
    why: Mutex<Option<(State, String)>>,
}

impl Control {
    /// Asks the shadow to stop; the first reason given wins.
    pub(crate) fn stop(&self, state: State, reason: String) {
        let mut why = lock(&self.why);
        if why.is_none() {
            *why = Some((state, reason));
        }
        self.stopped.store(true, Ordering::Release);
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn reason(&self) -> Option<(State, String)> {
        lock(&self.why).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Errors of the shadow commands.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShadowError {
    #[error("stage `{0}` already has a shadow running (one per stage): promote or drop it first")]
    Busy(String),
    #[error(
        "stage `{0}` has no shadow (start one with `rivulet swap --shadow --stage {0} <module>`)"
    )]
    NoShadow(String),
    #[error("no shadow is running or kept{0}")]
    NoneAtAll(String),
    #[error("several stages have a shadow ({0}): name one with --stage")]
    Ambiguous(String),
    #[error("the shadow of stage `{stage}` was {state}; nothing to {action}")]
    Gone {
        stage: String,
        state: String,
        action: &'static str,
    },
    #[error(
        "--windows counts an aggregate's windows; stage `{stage}` is a {kind} stage: use --for"
    )]
    WindowsOfRecordStage { stage: String, kind: String },
    #[error("cannot start the shadow's thread: {0}")]
    Thread(String),
}

/// The job's shadows, one per stage at most, shared by the tasks (which feed them), the swap
/// worker (which starts them) and the control API.
#[derive(Default)]
pub struct ShadowBoard {
    /// Whether any shadow runs: the record path pays one atomic load per batch otherwise.
    active: AtomicBool,
    epochs: AtomicU64,
    shadows: Mutex<BTreeMap<String, Entry>>,
}

impl std::fmt::Debug for ShadowBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowBoard")
            .field("stages", &lock(&self.shadows).keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ShadowBoard {
    /// Whether `stage` has a shadow running.
    pub fn running(&self, stage: &str) -> bool {
        lock(&self.shadows)
            .get(stage)
            .is_some_and(|entry| !entry.control.stopped())
    }

    /// Starts a checked candidate as `stage`'s shadow.
    pub fn start(self: &Arc<Self>, start: Start) -> Result<Report, ShadowError> {
        if let Bound::Windows(_) = start.bound
            && start.kind != crate::udf::Kind::Aggregate
        {
            return Err(ShadowError::WindowsOfRecordStage {
                stage: start.stage,
                kind: start.kind.to_string(),
            });
        }
        let mut shadows = lock(&self.shadows);
        if shadows
            .get(&start.stage)
            .is_some_and(|entry| !entry.control.stopped())
        {
            return Err(ShadowError::Busy(start.stage));
        }
        let aggregate = start.kind == crate::udf::Kind::Aggregate;
        let report = Report {
            stage: start.stage.clone(),
            kind: start.kind.to_string(),
            origin: start.origin.clone(),
            hash: start.hash.clone(),
            started_at: rivulet_rows::time::iso8601(crate::source::kafka::now_millis()),
            bound: start.bound,
            state: State::Running,
            reason: None,
            batches: 0,
            most_behind: 0,
            behind_bound: BEHIND,
            live: Cost::default(),
            shadow: Cost::default(),
            records: (!aggregate).then(RecordDiff::default),
            windows: aggregate.then(WindowsDiff::default),
        };
        let shared = Arc::new(Mutex::new(report.clone()));
        let control = Arc::new(Control::default());
        let (sender, feeds) = std::sync::mpsc::sync_channel(BEHIND);
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        runner::spawn(runner::Runner {
            stage: start.stage.clone(),
            candidate: start.candidate,
            feeds,
            report: shared.clone(),
            control: control.clone(),
            bound: start.bound,
            board: Arc::downgrade(self),
            aggregate: runner::Windows::default(),
        })
        .map_err(|err| ShadowError::Thread(err.to_string()))?;
        shadows.insert(
            start.stage.clone(),
            Entry {
                control,
                report: shared,
                bytes: Arc::new(start.bytes),
                origin: start.origin,
                sender: Some(sender),
                epoch,
            },
        );
        self.active.store(true, Ordering::Release);
        tracing::info!(stage = %start.stage, bound = %start.bound, "shadow started beside the live module");
        Ok(report)
    }

    /// The running shadow's tap of `stage`, if it has one. One atomic load when no shadow
    /// runs.
    pub fn tap(&self, stage: &str) -> Option<Tap> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let shadows = lock(&self.shadows);
        let entry = shadows.get(stage)?;
        if entry.control.stopped() {
            return None;
        }
        Some(Tap {
            sender: entry.sender.clone()?,
            control: entry.control.clone(),
            epoch: entry.epoch,
        })
    }

    /// A runner has stopped: its input is closed.
    fn closed(&self, stage: &str) {
        let mut shadows = lock(&self.shadows);
        if let Some(entry) = shadows.get_mut(stage)
            && entry.control.stopped()
        {
            entry.sender = None;
        }
        let any = shadows.values().any(|e| !e.control.stopped());
        self.active.store(any, Ordering::Release);
    }

    /// Waits (up to `limit`) until every running shadow has taken what it was sent.
    pub fn settle(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            let busy = lock(&self.shadows)
                .values()
                .any(|e| !e.control.stopped() && e.control.queued.load(Ordering::Relaxed) > 0);
            if !busy {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The job ended: every running shadow finishes with `reason` (its diff stays).
    pub fn end(&self, reason: &str) {
        let stages: Vec<String> = {
            let shadows = lock(&self.shadows);
            for entry in shadows.values().filter(|e| !e.control.stopped()) {
                entry.control.stop(State::Finished, reason.to_owned());
                let mut report = lock(&entry.report);
                report.state = State::Finished;
                report.reason = Some(reason.to_owned());
            }
            shadows.keys().cloned().collect()
        };
        for stage in stages {
            self.closed(&stage);
        }
    }

    /// The shadows' reports (running and kept), by stage.
    pub fn reports(&self) -> Vec<Report> {
        lock(&self.shadows)
            .values()
            .map(|entry| lock(&entry.report).clone())
            .collect()
    }

    /// The stage a command means: `stage` if given, else the only stage with a shadow.
    pub fn which(&self, stage: Option<&str>) -> Result<String, ShadowError> {
        let shadows = lock(&self.shadows);
        match stage {
            Some(stage) if shadows.contains_key(stage) => Ok(stage.to_owned()),
            Some(stage) => Err(ShadowError::NoShadow(stage.to_owned())),
            None => {
                let names: Vec<&String> = shadows.keys().collect();
                match names.as_slice() {
                    [one] => Ok((*one).clone()),
                    [] => Err(ShadowError::NoneAtAll(String::new())),
                    many => Err(ShadowError::Ambiguous(
                        many.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    )),
                }
            }
        }
    }

    /// Drops `stage`'s shadow with `reason`; its diff stays for status.
    pub fn drop_shadow(&self, stage: &str, reason: &str) -> Result<Report, ShadowError> {
        let report = {
            let shadows = lock(&self.shadows);
            let entry = shadows
                .get(stage)
                .ok_or_else(|| ShadowError::NoShadow(stage.to_owned()))?;
            let mut report = lock(&entry.report);
            if let State::Dropped | State::Promoted = report.state {
                // Already over (promoted, or dropped on its own or on request): nothing
                // changes, and the caller hears so rather than a report that looks dropped.
                return Err(ShadowError::Gone {
                    stage: stage.to_owned(),
                    state: format!("{:?}", report.state).to_lowercase(),
                    action: "drop",
                });
            }
            entry.control.stop(State::Dropped, reason.to_owned());
            report.state = State::Dropped;
            report.reason = Some(reason.to_owned());
            report.clone()
        };
        self.closed(stage);
        Ok(report)
    }

    /// The candidate of `stage`'s shadow, to be swapped in: its bytes and origin.
    pub fn candidate(&self, stage: &str) -> Result<(Arc<Vec<u8>>, String), ShadowError> {
        let shadows = lock(&self.shadows);
        let entry = shadows
            .get(stage)
            .ok_or_else(|| ShadowError::NoShadow(stage.to_owned()))?;
        let state = lock(&entry.report).state;
        match state {
            State::Running | State::Finished => Ok((entry.bytes.clone(), entry.origin.clone())),
            State::Dropped | State::Promoted => Err(ShadowError::Gone {
                stage: stage.to_owned(),
                state: format!("{state:?}").to_lowercase(),
                action: "promote",
            }),
        }
    }

    /// `stage`'s shadow was swapped in: it stops, marked promoted.
    pub fn promoted(&self, stage: &str) {
        {
            let shadows = lock(&self.shadows);
            if let Some(entry) = shadows.get(stage) {
                entry.control.stop(
                    State::Promoted,
                    "promoted: swapped in as the stage's module".into(),
                );
                let mut report = lock(&entry.report);
                report.state = State::Promoted;
                report.reason = Some("promoted: swapped in as the stage's module".into());
            }
        }
        self.closed(stage);
    }
}
