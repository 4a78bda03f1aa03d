//! The window operator: key each row, find its event (or processing) time, judge it on
//! time, late or too late against the watermark, hand it to the aggregate
//! ([`crate::aggregate::dispatch`]) for its window, fire windows as the watermark passes
//! them, and rebuild open windows after a restart. With several tasks, fired windows go
//! through the [`super::Exchange`] ([`link`]).

mod link;
pub(crate) mod row;

pub use link::TaskLink;

use crate::aggregate::dispatch::{AGGREGATE, Dispatch, Results};
use crate::aggregate::{Acc, Aggregator};
use crate::error::PipelineError;
use crate::side_output::SideOutputs;
use crate::source::kafka::Assignment as Restart;
use crate::source::kafka::now_millis;
use crate::spec::{OnError, TimeDomain, WindowSpec};
use crate::window::exchange::LineRuns;
use crate::window::targets::Targets;
use crate::window::{Assignment, Firing, KeyPartitions, TumblingWindows, Watermarks};
use rivulet_rows::{Batch, RawBatch};
use row::{Origin, Stamps};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::counters::WindowStats;

/// How long a replay may make no progress before windows fire without it.
pub(crate) const REPLAY_STALL: std::time::Duration = std::time::Duration::from_secs(30);

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
    /// The aggregate: adds, merges, finishes.
    dispatch: Dispatch,
    policy: OnError,
    /// The job keeps too-late records (a late topic or file), so ordered splits read them
    /// again.
    keeps_late: bool,
    clock: Instant,
    stats: WindowStats,
    /// Per partition, what the last restart restored (empty: a fresh start).
    replay: BTreeMap<i32, Replay>,
    /// Windows closing at or before this had closed for good before the restart, for every
    /// partition (see [`crate::source::kafka::Assignment::job_closed`]).
    job_closed: Option<i64>,
    /// Replay progress: positions last seen moving, and when.
    replay_progress: (BTreeMap<i32, i64>, Instant),
    /// Several tasks: where this task's partials go (two-phase aggregation).
    link: Option<TaskLink>,
    /// The partitions this task reads (since the last restart).
    partitions: Vec<i32>,
    /// Ordered splits, tasks after the first: the lines added to each window, until the
    /// exchange knows whether the earlier splits had closed it.
    lines: BTreeMap<i64, LineRuns>,
    /// The largest event time seen (ordered splits publish it).
    max_seen: Option<i64>,
    /// `window.exchange = "partitioned"`: every key must come from one partition.
    key_partitions: Option<Arc<KeyPartitions>>,
}

/// Watermarks as the spec configures them, with nothing seen yet.
fn fresh_watermarks(spec: &WindowSpec) -> Watermarks {
    let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Watermarks::new(millis(spec.out_of_orderness), millis(spec.idle_timeout))
}

/// Adds to `live`, up to [`crate::status::ACC_SAMPLE`], the accumulators of `windows` that
/// the aggregate module generation `current` holds.
pub fn live_accumulators(
    windows: &mut TumblingWindows<Acc>,
    current: u32,
    live: &mut Vec<rivulet_rows::WindowAcc>,
) {
    let size = windows.size_ms();
    windows.for_each_mut(|start, key, acc| {
        if let Acc::Bytes { generation, bytes } = acc
            && *generation == current
            && live.len() < crate::status::ACC_SAMPLE
        {
            live.push(rivulet_rows::WindowAcc {
                key: key.clone(),
                window_start: start,
                window_end: start.saturating_add(size),
                acc: bytes.clone(),
            });
        }
    });
}

impl Windowing {
    pub fn new(
        spec: WindowSpec,
        aggregator: Aggregator,
        policy: OnError,
        keeps_late: bool,
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
            dispatch: Dispatch::new(aggregator, policy),
            policy,
            keeps_late,
            clock: Instant::now(),
            stats: WindowStats::default(),
            replay: BTreeMap::new(),
            job_closed: None,
            replay_progress: (BTreeMap::new(), Instant::now()),
            link: None,
            partitions: Vec::new(),
            lines: BTreeMap::new(),
            max_seen: None,
            key_partitions: None,
        })
    }

    /// Checks, from now on, that every key comes from one source partition (shared by the
    /// process's tasks): the input is partitioned by the window key.
    pub fn check_key_partitions(&mut self, keys: Arc<KeyPartitions>) {
        self.key_partitions = Some(keys);
    }

    /// Keeps the aggregate's recent input in `status`, for trying swapped-in modules.
    pub fn sample_into(&mut self, status: Option<Arc<crate::status::JobStatus>>) {
        self.dispatch.samples = status;
    }

    fn mono(&self) -> i64 {
        i64::try_from(self.clock.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// New partitions (start or rebalance): drop all state; watermarks and closed windows
    /// restart from what the commits recorded, and records the job had processed before
    /// (below each partition's `read`) only rebuild the windows that were still open.
    pub fn restart(&mut self, assignment: &Restart) {
        let (partitions, restored) = (&assignment.partitions, &assignment.states);
        self.windows.clear();
        self.dispatch.clear();
        self.lines.clear();
        self.max_seen = None;
        self.partitions = partitions.to_vec();
        // A task the group has not assigned yet keeps holding the job back: marking it
        // as reading nothing would let the other tasks fire the first windows without
        // the records of the partitions it is about to get.
        if let Some(link) = &self.link
            && !assignment.awaiting_group
        {
            link.exchange.restart(link.task, partitions);
        }
        self.watermarks = fresh_watermarks(&self.spec);
        let now = self.mono();
        self.watermarks.assign(partitions, now);
        self.replay.clear();
        let event = self.spec.time == TimeDomain::Event;
        self.job_closed = assignment.job_closed.filter(|_| event);
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

    /// Whether `start`'s window had closed for good before the restart, per `replay` and
    /// what the job's tasks together committed.
    fn closed_before(&self, replay: Option<&Replay>, start: i64) -> bool {
        let lateness = self.windows.allowed_lateness_ms();
        let closed = replay.and_then(|r| r.combined).max(self.job_closed);
        closed
            .is_some_and(|closed| self.windows.window_end(start).saturating_add(lateness) <= closed)
    }

    /// Puts a new aggregate module in service (see [`Dispatch::swap`]).
    #[allow(clippy::type_complexity)]
    pub fn swap_aggregate(
        &mut self,
        stage: Box<dyn crate::stage::AggregateStage>,
        empty: Vec<u8>,
        state_version: u32,
        swap: u64,
    ) -> Result<(bool, Option<Box<dyn crate::stage::AggregateStage>>), String> {
        self.dispatch.swap(stage, empty, state_version, swap)
    }

    /// Up to [`crate::status::ACC_SAMPLE`] of the open windows' accumulators that the
    /// aggregate module in service holds (those a swap with the same state version takes
    /// over).
    pub fn live_accumulators(&mut self) -> Vec<rivulet_rows::WindowAcc> {
        let mut live = Vec::new();
        if let Some(current) = self.dispatch.current_generation() {
            live_accumulators(&mut self.windows, current, &mut live);
        }
        live
    }

    /// Finishes fired windows into result rows.
    pub(super) fn finish(&mut self, firings: Vec<Firing<Acc>>) -> Result<Results, PipelineError> {
        let now = now_millis();
        if let Some(end) = firings.iter().filter(|f| !f.update).map(|f| f.end).max() {
            self.stats.last_fire_end = self.stats.last_fire_end.max(Some(end));
            self.stats.last_fire_at = Some(now);
        }
        for firing in firings.iter().filter(|f| !f.update && f.end <= now) {
            let late = Duration::from_millis(u64::try_from(now - firing.end).unwrap_or(0));
            self.stats
                .fire_lateness
                .record(&crate::counters::FIRE_LATENESS_US, late);
        }
        let results = self.dispatch.finish(firings, self.spec.key.as_deref())?;
        self.stats.results += results.rows();
        Ok(results)
    }

    pub fn stats(&self) -> WindowStats {
        WindowStats {
            open_windows: self.windows.open_windows() as u64,
            ..self.stats
        }
    }

    /// Per partition, the lowest offset an open window (or, with several tasks, a window
    /// deposited but not yet emitted) still needs.
    pub fn needed(&self) -> BTreeMap<i32, i64> {
        let mut needed = self.windows.min_offsets();
        if let Some(link) = &self.link {
            for (p, offset) in link.exchange.needed(link.task, &self.partitions) {
                needed
                    .entry(p)
                    .and_modify(|min| *min = (*min).min(offset))
                    .or_insert(offset);
            }
        }
        needed
    }

    /// Event-time watermark of one of this task's partitions, if it has one.
    pub fn partition_watermark(&self, partition: i32) -> Option<i64> {
        match self.spec.time {
            TimeDomain::Event => self.watermarks.partition(partition),
            TimeDomain::Processing => None,
        }
    }

    /// This task's event-time watermark (`i64::MAX` once a bounded input ended).
    pub fn watermark(&self) -> Option<i64> {
        match self.spec.time {
            TimeDomain::Event => self.watermarks.combined(),
            TimeDomain::Processing => None,
        }
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
                    .min(link.exchange.closed_through(link.task)),
            },
            TimeDomain::Processing => None,
        }
    }

    /// With several tasks, how many windows this task has handed over so far (a snapshot
    /// notes it; see [`Windowing::committed`]).
    pub fn deposits(&self) -> Option<u64> {
        self.link.as_ref().map(|l| l.exchange.deposits(l.task))
    }

    /// A snapshot taken after `deposits` hand-overs was committed: windows this task
    /// contributed to before it may now count as closed in the other tasks' commits.
    pub fn committed(&self, deposits: u64) {
        if let Some(link) = &self.link {
            link.exchange.committed(link.task, deposits);
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

    /// Adds a batch of rows (`origins[i]` is row i's record in `raw`). Returns what it set
    /// aside: rows without a key or an event time, rows the aggregate refused (for the dead
    /// letters), and records too late for their window.
    pub fn ingest(
        &mut self,
        raw: &RawBatch,
        rows: &Batch,
        origins: &[u32],
    ) -> Result<SideOutputs, PipelineError> {
        let mut side = SideOutputs::default();
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
        let key_name = self.spec.key.as_deref();
        let key_column = key_name.and_then(|k| rows.column(k));
        let stamps = Stamps::of(self.spec.timestamp.as_deref(), rows);
        let mut targets = Targets::with_capacity(rows.len as usize);
        for (row, &origin_index) in origins.iter().enumerate().take(rows.len as usize) {
            let origin = Origin {
                raw,
                index: origin_index as usize,
            };
            let key = match key_name {
                None => targets.key_of(None, row),
                Some(_) => key_column.and_then(|column| targets.key_of(Some(column), row)),
            };
            let Some(key) = key else {
                let name = key_name.unwrap_or_default();
                let error = format!("no key: field `{name}` is missing or null");
                side.refuse_record(origin.index, AGGREGATE, &error, self.policy);
                continue;
            };
            let ts = if event {
                match stamps.at(row, &origin) {
                    Ok(ts) => ts,
                    Err(error) => {
                        side.refuse_record(origin.index, AGGREGATE, &error, self.policy);
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
                    targets.push(row as u32, start, key, origin.partition(), origin.offset());
                }
                Assignment::TooLate { .. } => {
                    self.stats.too_late += 1;
                    side.late.push(origin.index);
                }
            }
        }
        if let Some(keys) = &self.key_partitions {
            for group in targets.groups() {
                keys.check(targets.key(group.key), group.partition)?;
            }
        }
        self.stats.rows += targets.len() as u64;
        for (row, error) in self.dispatch.add(&mut self.windows, rows, &targets)? {
            let index = origins.get(row as usize).copied().unwrap_or(0) as usize;
            side.refuse_record(index, AGGREGATE, &error, self.policy);
        }
        Ok(side)
    }

    /// Fires what the watermark (event time) or the clock (processing time) has closed.
    /// With several tasks, this task's closed windows go to the exchange, and what every
    /// task has passed comes back merged.
    pub fn fire(&mut self) -> Result<Results, PipelineError> {
        let own = match self.spec.time {
            TimeDomain::Event => {
                let mono = self.mono();
                self.watermarks.current(mono)
            }
            TimeDomain::Processing => Some(now_millis()),
        };
        if self.link.is_some() {
            return self.fire_linked(own);
        }
        let firings = match own {
            Some(wm) => self.windows.advance(wm),
            None => Vec::new(),
        };
        self.finish(firings)
    }

    /// Fires everything (end of a bounded input). With several tasks, this task's part of
    /// every window goes to the exchange; the last task to finish emits what is left.
    pub fn drain(&mut self) -> Result<Results, PipelineError> {
        self.watermarks.finish();
        let firings = self.windows.drain();
        if self.link.is_some() {
            return self.drain_linked(firings);
        }
        self.finish(firings)
    }
}
