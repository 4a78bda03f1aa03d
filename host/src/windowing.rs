//! A windowed job's middle: key each row, find its event (or processing) time, put it in
//! its tumbling window's accumulator, and turn fired windows into result rows.

use crate::aggregate::{Acc, AccBudget, Aggregator};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::delivery::PartitionState;
use crate::error::PipelineError;
use crate::kafka::source::now_millis;
use crate::sink::SharedSink;
use crate::source::FileSplit;
use crate::spec::{OnError, TimeDomain, WindowSpec};
use crate::stage::isolate;
use crate::window::exchange::{Partials, Ready};
use crate::window::{Assignment, Exchange, Firing, TaskId, TumblingWindows, Watermarks};
use rivulet_rows::{Batch, BatchBuilder, RawBatch, Scalar, WindowAcc};
use rivulet_sdk::time::{iso8601, parse_iso8601};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Name of the aggregate step in dead letters and logs.
pub const AGGREGATE: &str = "aggregate";

/// Counters of the windowing step.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowStats {
    pub rows: u64,
    pub late_updates: u64,
    pub too_late: u64,
    pub results: u64,
    /// Replayed records (after a restart) whose windows had already closed: counted before.
    pub replay_skipped: u64,
}

/// Rows produced by fired windows: one part per aggregate module generation (their rows may
/// differ in shape).
#[derive(Default)]
pub struct Results {
    pub parts: Vec<Batch>,
    /// Merged windows' offsets stay needed until these results are sent (see
    /// [`Windowing::results_sent`]).
    pub ticket: Option<u64>,
}

/// One task's link to the other tasks of its job.
pub struct TaskLink {
    pub exchange: Arc<Exchange<Acc>>,
    pub task: TaskId,
    /// Ordered splits of one file: every task's split (to read late lines again).
    pub splits: Arc<[FileSplit]>,
}

/// How long a replay may make no progress before windows fire without it.
const REPLAY_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// What a restart restored for one partition.
#[derive(Debug, Clone, Copy)]
struct Replay {
    /// Records below this offset were processed before the restart.
    read: i64,
    /// Windows ending at or before `combined - allowed lateness` had closed for good.
    combined: Option<i64>,
}

pub struct Windowing {
    spec: WindowSpec,
    windows: TumblingWindows<Acc>,
    watermarks: Watermarks,
    aggregator: Aggregator,
    policy: OnError,
    late: Option<SharedSink>,
    clock: Instant,
    stats: WindowStats,
    /// Wasm aggregates: the module generation each open window started with.
    window_generation: BTreeMap<i64, u32>,
    /// Per partition, what the last restart restored (empty: a fresh start).
    replay: BTreeMap<i32, Replay>,
    /// Replay progress: positions last seen moving, and when.
    replay_progress: (BTreeMap<i32, i64>, Instant),
    /// Where the aggregate's recent input is kept for trying swapped-in modules.
    pub samples: Option<std::sync::Arc<crate::status::JobStatus>>,
    /// Several tasks: where this task's partials go (two-phase aggregation).
    link: Option<TaskLink>,
    /// The partitions this task reads (since the last restart).
    partitions: Vec<i32>,
    /// Ordered splits, tasks after the first: the lines added to each window, until the
    /// exchange knows whether the earlier splits had closed it.
    lines: BTreeMap<i64, Vec<i64>>,
    /// The largest event time seen (ordered splits publish it).
    max_seen: Option<i64>,
}

/// Where a row's source record is, for dead letters and holds.
struct Origin<'a> {
    raw: &'a RawBatch,
    index: usize,
}

impl<'a> Origin<'a> {
    fn letter(&self, stage: &'a str, error: &'a str, topic: &'a str) -> DeadLetter<'a> {
        DeadLetter::of_record(self.raw, self.index, stage, error, topic)
    }

    fn partition(&self) -> i32 {
        self.raw.partitions.get(self.index).copied().unwrap_or(0)
    }

    fn offset(&self) -> i64 {
        self.raw.offsets.get(self.index).copied().unwrap_or(-1)
    }
}

/// Watermarks as the spec configures them, with nothing seen yet.
fn fresh_watermarks(spec: &WindowSpec) -> Watermarks {
    let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Watermarks::new(millis(spec.out_of_orderness), millis(spec.idle_timeout))
}

impl Windowing {
    pub fn new(
        spec: WindowSpec,
        aggregator: Aggregator,
        policy: OnError,
        late: Option<SharedSink>,
    ) -> Result<Self, PipelineError> {
        let size = i64::try_from(spec.size.as_millis()).unwrap_or(i64::MAX);
        let lateness = i64::try_from(spec.allowed_lateness.as_millis()).unwrap_or(i64::MAX);
        let windows = TumblingWindows::new(size, lateness)
            .map_err(|err| PipelineError::Config(err.to_string()))?;
        let watermarks = fresh_watermarks(&spec);
        Ok(Windowing {
            spec,
            windows,
            watermarks,
            aggregator,
            policy,
            late,
            clock: Instant::now(),
            stats: WindowStats::default(),
            window_generation: BTreeMap::new(),
            replay: BTreeMap::new(),
            replay_progress: (BTreeMap::new(), Instant::now()),
            samples: None,
            link: None,
            partitions: Vec::new(),
            lines: BTreeMap::new(),
            max_seen: None,
        })
    }

    /// Makes this the windowing of one task among several (see [`Exchange`]).
    pub fn linked(mut self, link: TaskLink) -> Self {
        self.link = Some(link);
        self
    }

    /// Whether to note the lines added to each window (ordered splits after the first).
    fn notes_lines(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.exchange.is_ordered() && l.task > 0)
    }

    fn mono(&self) -> i64 {
        i64::try_from(self.clock.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// New partitions (start or rebalance): drop all state; watermarks and closed windows
    /// restart from what the commits recorded, and records the job had processed before
    /// (below each partition's `read`) only rebuild the windows that were still open.
    pub fn restart(&mut self, partitions: &[i32], restored: &BTreeMap<i32, PartitionState>) {
        self.windows.clear();
        self.window_generation.clear();
        self.lines.clear();
        self.max_seen = None;
        self.partitions = partitions.to_vec();
        if let Some(link) = &self.link {
            link.exchange.restart(link.task, partitions);
        }
        self.watermarks = fresh_watermarks(&self.spec);
        let now = self.mono();
        self.watermarks.assign(partitions, now);
        self.replay.clear();
        let event = self.spec.time == TimeDomain::Event;
        let mut floor: Option<i64> = None;
        for (&p, state) in restored {
            if event && let Some(wm) = state.watermark {
                self.watermarks.restore(p, wm, now);
            }
            if event && let Some(combined) = state.combined {
                floor = Some(floor.map_or(combined, |f| f.min(combined)));
            }
            let combined = if event { state.combined } else { None };
            self.replay.insert(
                p,
                Replay {
                    read: state.read,
                    combined,
                },
            );
        }
        if let Some(floor) = floor {
            self.watermarks.restore_combined(floor);
        }
    }

    /// Whether records processed before a restart are still being replayed (`positions`:
    /// next offset to read per partition). Windows do not fire meanwhile: they would fire
    /// with part of their records.
    ///
    /// A partition whose replay makes no progress for [`REPLAY_STALL`] (its records below
    /// the committed read position are gone from the broker) stops holding windows back.
    pub fn replaying(&mut self, positions: &BTreeMap<i32, i64>) -> bool {
        let behind = |replay: &BTreeMap<i32, Replay>, p: &i32| {
            replay
                .get(p)
                .is_some_and(|r| positions.get(p).is_some_and(|&position| position < r.read))
        };
        if !self.replay.keys().any(|p| behind(&self.replay, p)) {
            return false;
        }
        if self.replay_progress.0 != *positions {
            self.replay_progress = (positions.clone(), Instant::now());
        } else if self.replay_progress.1.elapsed() > REPLAY_STALL {
            for (p, r) in &mut self.replay {
                if let Some(&position) = positions.get(p)
                    && position < r.read
                {
                    tracing::warn!(
                        partition = p,
                        position,
                        read = r.read,
                        "replay stalled below the committed read position (records gone from the broker?); windows fire without them"
                    );
                    r.read = position;
                }
            }
            return false;
        }
        true
    }

    /// Whether `start`'s window had closed for good before the restart, per `replay`.
    fn closed_before(&self, replay: Option<&Replay>, start: i64) -> bool {
        let lateness = self.windows.allowed_lateness_ms();
        replay.and_then(|r| r.combined).is_some_and(|combined| {
            self.windows.window_end(start).saturating_add(lateness) <= combined
        })
    }

    /// Puts a new aggregate module in service; `Ok((true, _))` when its state version differs
    /// (windows already open finish with the previous module). Also returns the module it
    /// replaced outright (same state version), to be dropped off the hot path.
    #[allow(clippy::type_complexity)]
    pub fn swap_aggregate(
        &mut self,
        stage: Box<dyn crate::stage::AggregateStage>,
        empty: Vec<u8>,
        state_version: u32,
    ) -> Result<(bool, Option<Box<dyn crate::stage::AggregateStage>>), String> {
        match &mut self.aggregator {
            Aggregator::Wasm(generations) => {
                let outcome = generations.install(stage, empty, state_version);
                self.retire_unused();
                Ok(outcome)
            }
            Aggregator::Builtin(_) => {
                Err("this job's aggregate is built in, not a component".to_owned())
            }
        }
    }

    pub fn stats(&self) -> WindowStats {
        self.stats
    }

    pub fn late_sink(&self) -> Option<&SharedSink> {
        self.late.as_ref()
    }

    /// Per partition, the lowest offset an open window (or, with several tasks, a window
    /// deposited but not yet emitted) still needs.
    pub fn needed(&self) -> BTreeMap<i32, i64> {
        let mut needed = self.windows.min_offsets();
        if let Some(link) = &self.link {
            for (p, offset) in link.exchange.needed(&self.partitions) {
                needed
                    .entry(p)
                    .and_modify(|min| *min = (*min).min(offset))
                    .or_insert(offset);
            }
        }
        needed
    }

    /// The combined event-time watermark (windows ending at or before it have fired; with
    /// several tasks, those the job has emitted).
    pub fn combined_watermark(&self) -> Option<i64> {
        match self.spec.time {
            TimeDomain::Event => match &self.link {
                None => self.watermarks.combined(),
                Some(link) => self
                    .watermarks
                    .combined()
                    .min(link.exchange.closed_through()),
            },
            TimeDomain::Processing => None,
        }
    }

    /// The results of [`Windowing::fire`] or [`Windowing::drain`] were sent: what merged
    /// windows held back may be committed.
    pub fn results_sent(&self, results: &Results) {
        if let (Some(link), Some(ticket)) = (&self.link, results.ticket) {
            link.exchange.sent(ticket);
        }
    }

    /// Watermark per partition (committed as metadata).
    pub fn partition_watermarks(&self, partitions: &[i32]) -> std::collections::BTreeMap<i32, i64> {
        partitions
            .iter()
            .filter_map(|&p| self.watermarks.partition(p).map(|wm| (p, wm)))
            .collect()
    }

    /// Milliseconds until the next processing-time window closes.
    pub fn next_timer_ms(&self) -> Option<i64> {
        match self.spec.time {
            TimeDomain::Processing => self.windows.next_fire_at().map(|at| at - now_millis()),
            TimeDomain::Event => None,
        }
    }

    fn event_time(&self, rows: &Batch, row: usize, origin: &Origin<'_>) -> Result<i64, String> {
        let field = self.spec.timestamp.as_deref().unwrap_or("kafka");
        if field == "kafka" {
            return origin
                .raw
                .timestamps
                .get(origin.index)
                .copied()
                .ok_or_else(|| "the record has no Kafka timestamp".to_owned());
        }
        let column = rows
            .column(field)
            .ok_or_else(|| format!("no event time: field `{field}` is missing"))?;
        if column.is_null(row) {
            return Err(format!("no event time: field `{field}` is null"));
        }
        match column.scalar(row) {
            Some(Scalar::Integer(ms)) => Ok(ms),
            Some(Scalar::Float(ms)) if ms.is_finite() => Ok(ms as i64),
            Some(Scalar::Text(text)) => {
                parse_iso8601(&text).map_err(|err| format!("no event time: field `{field}`: {err}"))
            }
            _ => Err(format!(
                "no event time: field `{field}` is not a number of milliseconds or ISO-8601 text"
            )),
        }
    }

    /// Adds a batch of rows (`origins[i]` is row i's record in `raw`).
    pub fn ingest(
        &mut self,
        raw: &RawBatch,
        rows: &Batch,
        origins: &[u32],
        topic: &str,
        dead: &mut DeadLetters,
    ) -> Result<(), PipelineError> {
        let now = now_millis();
        let mono = self.mono();
        let event = self.spec.time == TimeDomain::Event;
        // Lateness is judged per record, against the records before it: with several
        // independent tasks, against the job's watermark; with ordered splits, the earlier
        // splits' progress raises this task's.
        let shared = match &self.link {
            Some(link) if !link.exchange.is_ordered() => Some(link.exchange.watermark()),
            _ => None,
        };
        if let Some(link) = &self.link
            && link.exchange.is_ordered()
            && let Some(floor) = link.exchange.prefix_floor(link.task)
        {
            let ooo = i64::try_from(self.spec.out_of_orderness.as_millis()).unwrap_or(i64::MAX);
            self.watermarks.restore_combined(floor.saturating_sub(ooo));
        }
        let notes_lines = self.notes_lines();
        let key_column = self.spec.key.as_deref().map(|k| (k, rows.column(k)));
        let mut selected: Vec<u32> = Vec::with_capacity(rows.len as usize);
        let mut targets: Vec<(i64, Scalar, i32, i64)> = Vec::with_capacity(rows.len as usize);
        for (row, &origin_index) in origins.iter().enumerate().take(rows.len as usize) {
            let origin = Origin {
                raw,
                index: origin_index as usize,
            };
            let key = match key_column {
                None => Scalar::Null,
                Some((name, column)) => match column.and_then(|c| c.scalar(row)) {
                    Some(Scalar::Null) | None => {
                        let error = format!("no key: field `{name}` is missing or null");
                        dead.handle(self.policy, &origin.letter(AGGREGATE, &error, topic))?;
                        continue;
                    }
                    Some(key) => key,
                },
            };
            let ts = if event {
                match self.event_time(rows, row, &origin) {
                    Ok(ts) => ts,
                    Err(error) => {
                        dead.handle(self.policy, &origin.letter(AGGREGATE, &error, topic))?;
                        continue;
                    }
                }
            } else {
                now
            };
            let watermark = match shared {
                _ if !event => None,
                Some(shared) => shared,
                None => self.watermarks.current(mono),
            };
            if event {
                self.watermarks.observe(origin.partition(), ts, mono);
                self.max_seen = self.max_seen.max(Some(ts));
            }
            let replay = self.replay.get(&origin.partition());
            let replayed = replay.is_some_and(|r| origin.offset() < r.read);
            let mut assignment = self.windows.assign(ts, watermark);
            if self.closed_before(replay, assignment.start()) {
                if replayed {
                    // Counted in a result (or sent late) before the restart.
                    self.stats.replay_skipped += 1;
                    continue;
                }
                assignment = Assignment::TooLate {
                    start: assignment.start(),
                };
            } else if replayed && let Assignment::TooLate { start } = assignment {
                // Its window was still open before the restart: it is rebuilt.
                assignment = Assignment::Late { start };
            }
            match assignment {
                Assignment::Open { start } | Assignment::Late { start } => {
                    if matches!(assignment, Assignment::Late { .. }) {
                        self.stats.late_updates += 1;
                    }
                    if notes_lines {
                        self.lines.entry(start).or_default().push(origin.offset());
                    }
                    selected.push(row as u32);
                    targets.push((start, key, origin.partition(), origin.offset()));
                }
                Assignment::TooLate { .. } => {
                    self.stats.too_late += 1;
                    if let Some(late) = &self.late {
                        let record = raw.record(origin.index);
                        let payload = record.as_ref().map_or(&[][..], |r| r.payload);
                        let key = record.as_ref().and_then(|r| r.key);
                        late.lock().send(key, payload, &[])?;
                    }
                }
            }
        }
        self.stats.rows += selected.len() as u64;
        self.add(raw, rows, origins, &selected, &targets, topic, dead)
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        raw: &RawBatch,
        rows: &Batch,
        origins: &[u32],
        selected: &[u32],
        targets: &[(i64, Scalar, i32, i64)],
        topic: &str,
        dead: &mut DeadLetters,
    ) -> Result<(), PipelineError> {
        let origin_of = |row: u32| Origin {
            raw,
            index: origins.get(row as usize).copied().unwrap_or(0) as usize,
        };
        match &mut self.aggregator {
            Aggregator::Builtin(builtins) => {
                let empty = builtins.create();
                for (&row, (start, key, p, offset)) in selected.iter().zip(targets) {
                    let acc = self
                        .windows
                        .accumulator(*start, key, *p, *offset, || Acc::Builtin(empty.clone()));
                    if let Acc::Builtin(accs) = acc
                        && let Err(error) = builtins.add(accs, rows, row as usize)
                    {
                        dead.handle(
                            self.policy,
                            &origin_of(row).letter(AGGREGATE, &error, topic),
                        )?;
                    }
                }
                Ok(())
            }
            Aggregator::Wasm(generations) => {
                if selected.is_empty() {
                    return Ok(());
                }
                // Each window stays with the module generation it was opened with.
                let mut by_generation: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
                for (i, (start, ..)) in targets.iter().enumerate() {
                    let generation = *self
                        .window_generation
                        .entry(*start)
                        .or_insert(generations.current.id);
                    by_generation.entry(generation).or_default().push(i);
                }
                let cap = generations.accumulator_bytes;
                for (generation_id, members) in by_generation {
                    let Some(generation) = generations.get_mut(generation_id) else {
                        continue;
                    };
                    let mut group_of: HashMap<(i64, Scalar), (u32, i32, i64)> = HashMap::new();
                    let mut accs: Vec<Vec<u8>> = Vec::new();
                    let mut groups: Vec<u32> = Vec::with_capacity(members.len());
                    let mut rows_of_call: Vec<u32> = Vec::with_capacity(members.len());
                    for &i in &members {
                        let (start, key, p, offset) = &targets[i];
                        let empty = &generation.empty;
                        let acc =
                            self.windows
                                .accumulator(*start, key, *p, *offset, || Acc::Bytes {
                                    generation: generation_id,
                                    bytes: empty.clone(),
                                });
                        let next = accs.len() as u32;
                        let (group, ..) =
                            *group_of.entry((*start, key.clone())).or_insert_with(|| {
                                accs.push(match acc {
                                    Acc::Bytes { bytes, .. } => bytes.clone(),
                                    Acc::Builtin(_) => empty.clone(),
                                });
                                (next, *p, *offset)
                            });
                        groups.push(group);
                        rows_of_call.push(selected[i]);
                    }
                    let subset = rows.select(&rows_of_call);
                    if let Some(samples) = &self.samples {
                        samples.sample_rows(AGGREGATE, &subset);
                    }
                    // Refuse (per key) growth past the stage's accumulator cap.
                    let mut keys = vec![(0, Scalar::Null); accs.len()];
                    for ((start, key), (group, ..)) in &group_of {
                        if let Some(slot) = keys.get_mut(*group as usize) {
                            *slot = (*start, key.clone());
                        }
                    }
                    let mut budget = AccBudget::of(cap, &mut self.windows);
                    let mut admit = |group: u32, old: usize, new: usize| {
                        budget.admit(old, new).map_err(|total| {
                            let (start, key) = keys
                                .get(group as usize)
                                .cloned()
                                .unwrap_or((0, Scalar::Null));
                            budget.refusal(&key, start, new, total)
                        })
                    };
                    match isolate::add(&mut *generation.stage, accs, &subset, &groups, &mut admit) {
                        Ok(out) => {
                            for ((start, key), (group, p, offset)) in group_of {
                                if let Some(bytes) = out.accs.get(group as usize) {
                                    *self.windows.accumulator(start, &key, p, offset, || {
                                        Acc::Builtin(Vec::new())
                                    }) = Acc::Bytes {
                                        generation: generation_id,
                                        bytes: bytes.clone(),
                                    };
                                }
                            }
                            for error in &out.errors {
                                if let Some(&row) = rows_of_call.get(error.index as usize) {
                                    dead.handle(
                                        self.policy,
                                        &origin_of(row).letter(AGGREGATE, &error.message, topic),
                                    )?;
                                }
                            }
                        }
                        Err(err) if err.is_stopped() => return Err(err.into()),
                        Err(err) => {
                            let error = err.to_string();
                            tracing::warn!(stage = AGGREGATE, rows = rows_of_call.len(), "{error}");
                            for &row in &rows_of_call {
                                dead.handle(
                                    self.policy,
                                    &origin_of(row).letter(AGGREGATE, &error, topic),
                                )?;
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Fires what the watermark (event time) or the clock (processing time) has closed.
    /// With several tasks, this task's closed windows go to the exchange, and what every
    /// task has passed comes back merged.
    pub fn fire(&mut self, topic: &str, dead: &mut DeadLetters) -> Result<Results, PipelineError> {
        let own = match self.spec.time {
            TimeDomain::Event => {
                let mono = self.mono();
                self.watermarks.current(mono)
            }
            TimeDomain::Processing => Some(now_millis()),
        };
        let Some(link) = &self.link else {
            let firings = match own {
                Some(wm) => self.windows.advance(wm),
                None => Vec::new(),
            };
            return self.finish(firings, topic, dead);
        };
        let exchange = link.exchange.clone();
        let task = link.task;
        exchange.publish(task, own, self.max_seen);
        let watermark = match self.spec.time {
            TimeDomain::Event if !exchange.is_ordered() => exchange.watermark(),
            _ => own,
        };
        if let Some(wm) = watermark {
            let firings = self.windows.advance(wm);
            self.deposit(&exchange, task, firings);
            exchange.advanced(task, wm);
        }
        let ready = exchange.take_ready();
        self.finish_merged(ready, topic, dead)
    }

    /// Fires everything (end of a bounded input). With several tasks, this task's part of
    /// every window goes to the exchange; the last task to finish emits what is left.
    pub fn drain(&mut self, topic: &str, dead: &mut DeadLetters) -> Result<Results, PipelineError> {
        self.watermarks.finish();
        let firings = self.windows.drain();
        let Some(link) = &self.link else {
            return self.finish(firings, topic, dead);
        };
        let exchange = link.exchange.clone();
        let task = link.task;
        exchange.publish(task, None, self.max_seen);
        self.deposit(&exchange, task, firings);
        exchange.finished(task);
        let ready = exchange.take_ready();
        self.finish_merged(ready, topic, dead)
    }

    /// Hands this task's fired windows to the exchange.
    fn deposit(&mut self, exchange: &Exchange<Acc>, task: TaskId, firings: Vec<Firing<Acc>>) {
        for firing in firings {
            if firing.is_final {
                self.window_generation.remove(&firing.start);
            }
            let lines = if firing.is_final {
                self.lines.remove(&firing.start).unwrap_or_default()
            } else {
                self.lines
                    .get_mut(&firing.start)
                    .map(std::mem::take)
                    .unwrap_or_default()
            };
            exchange.deposit(task, firing.start, firing.groups, firing.min_offsets, lines);
        }
        self.retire_unused();
    }

    /// Merges every task's partials of the windows the exchange released, finishes them,
    /// and sends the lines of ordered splits that turned out too late to the late records.
    fn finish_merged(
        &mut self,
        ready: Ready<Acc>,
        topic: &str,
        dead: &mut DeadLetters,
    ) -> Result<Results, PipelineError> {
        self.send_late_lines(&ready.late_lines)?;
        let mut firings = Vec::with_capacity(ready.windows.len());
        for window in ready.windows {
            let mut groups = Vec::with_capacity(window.groups.len());
            for (key, partials) in window.groups {
                match self.merge(partials) {
                    Ok(acc) => groups.push((key, acc)),
                    Err(error) => {
                        let payload = format!(
                            r#"{{"window_start":"{}","window_end":"{}","key":{}}}"#,
                            iso8601(window.start),
                            iso8601(window.end),
                            key.to_json()
                        );
                        tracing::warn!(stage = AGGREGATE, "{error}");
                        dead.handle(
                            self.policy,
                            &DeadLetter::derived(AGGREGATE, &error, topic, payload.as_bytes()),
                        )?;
                    }
                }
            }
            firings.push(Firing {
                start: window.start,
                end: window.end,
                groups,
                is_final: window.is_final,
                update: window.update,
                min_offsets: BTreeMap::new(),
            });
        }
        let mut results = self.finish(firings, topic, dead)?;
        results.ticket = Some(ready.ticket);
        Ok(results)
    }

    /// One accumulator from every task's partial of a (window, key).
    fn merge(&mut self, partials: Partials<Acc>) -> Result<Acc, String> {
        let mut partials = partials.into_values();
        let Some(mut merged) = partials.next() else {
            return Err("a window key with no accumulator".to_owned());
        };
        for next in partials {
            merged = match (&mut self.aggregator, merged, next) {
                (Aggregator::Builtin(builtins), Acc::Builtin(mut a), Acc::Builtin(b)) => {
                    builtins.merge(&mut a, &b);
                    Acc::Builtin(a)
                }
                (
                    Aggregator::Wasm(generations),
                    Acc::Bytes { generation, bytes },
                    Acc::Bytes {
                        generation: other,
                        bytes: more,
                    },
                ) if generation == other => {
                    let stage = generations.get_mut(generation).ok_or_else(|| {
                        format!("aggregate module generation {generation} is gone")
                    })?;
                    let mut out = stage
                        .stage
                        .merge(vec![(bytes, more)])
                        .map_err(|err| format!("merging the tasks' accumulators: {err}"))?;
                    if out.len() != 1 {
                        return Err(format!(
                            "merge returned {} accumulators for 1 pair (contract breach)",
                            out.len()
                        ));
                    }
                    Acc::Bytes {
                        generation,
                        bytes: out.remove(0),
                    }
                }
                (
                    _,
                    Acc::Bytes { generation, .. },
                    Acc::Bytes {
                        generation: other, ..
                    },
                ) => {
                    return Err(format!(
                        "the tasks hold this window in two aggregate module generations ({generation} and {other}: a swap with a new state version landed while it opened); they cannot be merged"
                    ));
                }
                _ => return Err("accumulators of different kinds".to_owned()),
            };
        }
        Ok(merged)
    }

    /// Ordered splits: records another task added that the earlier splits had made too
    /// late, read again from their split and sent to the late records.
    fn send_late_lines(&mut self, late: &BTreeMap<TaskId, Vec<i64>>) -> Result<(), PipelineError> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        for (&task, lines) in late {
            self.stats.too_late += lines.len() as u64;
            let (Some(sink), Some(split)) = (&self.late, link.splits.get(task)) else {
                continue;
            };
            let found = crate::source::reread(split, lines).map_err(|error| {
                PipelineError::Source(crate::source::SourceError::Io {
                    name: split.path.display().to_string(),
                    error,
                })
            })?;
            let mut sink = sink.lock();
            for (_, payload) in found {
                sink.send(None, &payload, &[])?;
            }
        }
        Ok(())
    }

    fn finish(
        &mut self,
        firings: Vec<Firing<Acc>>,
        topic: &str,
        dead: &mut DeadLetters,
    ) -> Result<Results, PipelineError> {
        let mut results = Results::default();
        for firing in firings.iter().filter(|f| f.is_final) {
            self.window_generation.remove(&firing.start);
        }
        if firings.iter().all(|f| f.groups.is_empty()) {
            self.retire_unused();
            return Ok(results);
        }
        let key_name = self.spec.key.clone();
        match &mut self.aggregator {
            Aggregator::Builtin(builtins) => {
                let mut builder = BatchBuilder::new();
                for firing in &firings {
                    for (key, acc) in &firing.groups {
                        let Acc::Builtin(accs) = acc else { continue };
                        let mut row = serde_json::Map::new();
                        row.insert("window_start".into(), iso8601(firing.start).into());
                        row.insert("window_end".into(), iso8601(firing.end).into());
                        if let Some(name) = &key_name {
                            row.insert(name.clone(), key.to_json());
                        }
                        row.extend(builtins.finish(accs));
                        match builder.push(&row) {
                            Ok(()) => {}
                            Err(err) => {
                                let error = format!("window result cannot be stored: {err}");
                                let payload = serde_json::Value::Object(row).to_string();
                                dead.handle(
                                    self.policy,
                                    &DeadLetter::derived(
                                        AGGREGATE,
                                        &error,
                                        topic,
                                        payload.as_bytes(),
                                    ),
                                )?;
                            }
                        }
                    }
                }
                results.parts.push(builder.finish());
            }
            Aggregator::Wasm(generations) => {
                // One finish call per module generation, in window order within each.
                let mut calls: BTreeMap<u32, Vec<WindowAcc>> = BTreeMap::new();
                for firing in &firings {
                    for (key, acc) in &firing.groups {
                        let Acc::Bytes { generation, bytes } = acc else {
                            continue;
                        };
                        calls.entry(*generation).or_default().push(WindowAcc {
                            key: key.clone(),
                            window_start: firing.start,
                            window_end: firing.end,
                            acc: bytes.clone(),
                        });
                    }
                }
                for (generation_id, windows) in calls {
                    let described: Vec<String> = windows
                        .iter()
                        .map(|w| {
                            format!(
                                r#"{{"window_start":"{}","window_end":"{}","key":{}}}"#,
                                iso8601(w.window_start),
                                iso8601(w.window_end),
                                w.key.to_json()
                            )
                        })
                        .collect();
                    let outcome = match generations.get_mut(generation_id) {
                        Some(generation) => {
                            match isolate::finish(&mut *generation.stage, windows) {
                                Err(err) if err.is_stopped() => return Err(err.into()),
                                outcome => outcome.map_err(|err| err.to_string()),
                            }
                        }
                        None => Err(format!(
                            "aggregate module generation {generation_id} is gone"
                        )),
                    };
                    match outcome {
                        Ok(out) => {
                            for error in &out.errors {
                                let index = error.index as usize;
                                let payload = described.get(index).map_or("", String::as_str);
                                dead.handle(
                                    self.policy,
                                    &DeadLetter::derived(
                                        AGGREGATE,
                                        &error.message,
                                        topic,
                                        payload.as_bytes(),
                                    ),
                                )?;
                            }
                            results.parts.push(out.rows);
                        }
                        Err(error) => {
                            tracing::warn!(stage = AGGREGATE, windows = described.len(), "{error}");
                            for payload in &described {
                                dead.handle(
                                    self.policy,
                                    &DeadLetter::derived(
                                        AGGREGATE,
                                        &error,
                                        topic,
                                        payload.as_bytes(),
                                    ),
                                )?;
                            }
                        }
                    }
                }
            }
        }
        self.retire_unused();
        self.stats.results += results
            .parts
            .iter()
            .map(|rows| u64::from(rows.len))
            .sum::<u64>();
        Ok(results)
    }
}

impl Windowing {
    /// Drops aggregate module generations that no open window uses.
    fn retire_unused(&mut self) {
        if let Aggregator::Wasm(generations) = &mut self.aggregator {
            let in_use: std::collections::BTreeSet<u32> =
                self.window_generation.values().copied().collect();
            generations.retire_unused(|id| in_use.contains(&id));
        }
    }
}
