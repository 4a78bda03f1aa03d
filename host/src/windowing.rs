//! A windowed job's middle: key each row, find its event (or processing) time, put it in
//! its tumbling window's accumulator, and turn fired windows into result rows.

use crate::aggregate::{Acc, AccBudget, Aggregator};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::delivery::PartitionState;
use crate::error::PipelineError;
use crate::kafka::source::now_millis;
use crate::sink::Sink;
use crate::spec::{OnError, TimeDomain, WindowSpec};
use crate::stage::isolate;
use crate::window::{Assignment, Firing, TumblingWindows, Watermarks};
use rivulet_rows::{Batch, BatchBuilder, RawBatch, Scalar, WindowAcc};
use rivulet_sdk::time::{iso8601, parse_iso8601};
use std::collections::{BTreeMap, HashMap};
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
    late: Option<Sink>,
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
        late: Option<Sink>,
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
        })
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

    pub fn late_sink(&mut self) -> Option<&mut Sink> {
        self.late.as_mut()
    }

    pub fn late_sink_ref(&self) -> Option<&Sink> {
        self.late.as_ref()
    }

    /// Per partition, the lowest offset an open window still needs.
    pub fn needed(&self) -> BTreeMap<i32, i64> {
        self.windows.min_offsets()
    }

    /// The combined event-time watermark (windows ending at or before it have fired).
    pub fn combined_watermark(&self) -> Option<i64> {
        match self.spec.time {
            TimeDomain::Event => self.watermarks.combined(),
            TimeDomain::Processing => None,
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
        let watermark = if event {
            self.watermarks.current(mono)
        } else {
            None
        };
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
            if event {
                self.watermarks.observe(origin.partition(), ts, mono);
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
                Assignment::Open { start } => {
                    selected.push(row as u32);
                    targets.push((start, key, origin.partition(), origin.offset()));
                }
                Assignment::Late { start } => {
                    self.stats.late_updates += 1;
                    selected.push(row as u32);
                    targets.push((start, key, origin.partition(), origin.offset()));
                }
                Assignment::TooLate { .. } => {
                    self.stats.too_late += 1;
                    if let Some(late) = &mut self.late {
                        let record = raw.record(origin.index);
                        let payload = record.as_ref().map_or(&[][..], |r| r.payload);
                        let key = record.as_ref().and_then(|r| r.key);
                        late.send(key, payload, &[])?;
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
    pub fn fire(&mut self, topic: &str, dead: &mut DeadLetters) -> Result<Results, PipelineError> {
        let watermark = match self.spec.time {
            TimeDomain::Event => {
                let mono = self.mono();
                self.watermarks.current(mono)
            }
            TimeDomain::Processing => Some(now_millis()),
        };
        let firings = match watermark {
            Some(wm) => self.windows.advance(wm),
            None => Vec::new(),
        };
        self.finish(firings, topic, dead)
    }

    /// Fires everything (end of a bounded input).
    pub fn drain(&mut self, topic: &str, dead: &mut DeadLetters) -> Result<Results, PipelineError> {
        self.watermarks.finish();
        let firings = self.windows.drain();
        self.finish(firings, topic, dead)
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
