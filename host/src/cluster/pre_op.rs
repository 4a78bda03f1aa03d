//! Stage 1's operator: keys and times each row, judges it per source partition
//! ([`SourceWindows`]), adds it with the job's aggregate, and turns fired windows into
//! partials-topic records — each partial to the partition of its key, then a marker of every
//! source partition's watermark to every partials partition.

use super::pre::{Placed, SourceWindows};
use super::wire::{Exchanged, partition_of};
use crate::aggregate::dispatch::{AGGREGATE, Dispatch};
use crate::aggregate::{Acc, Aggregator};
use crate::error::PipelineError;
use crate::side_output::SideOutputs;
use crate::source::kafka::now_millis;
use crate::spec::{OnError, TimeDomain, WindowSpec};
use crate::window::Targets;
use crate::window::operator::row::{Origin, Stamps};
use rivulet_rows::{Batch, RawBatch};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Markers go out at least this often, so a merge stage that restarts (and forgot them)
/// hears from every source partition again soon.
pub const MARKER_EVERY: Duration = Duration::from_millis(500);

/// A record of the partials topic, for one partition of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub partition: i32,
    pub payload: Vec<u8>,
}

/// Counts of what stage 1 did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreStats {
    pub rows: u64,
    pub too_late: u64,
    pub replay_skipped: u64,
    pub partials: u64,
    pub markers: u64,
}

pub struct PreAggregate {
    spec: WindowSpec,
    dispatch: Dispatch,
    policy: OnError,
    windows: SourceWindows<Acc>,
    /// Partitions of the partials topic.
    partials: i32,
    clock: Instant,
    last_markers: Option<Instant>,
    stats: PreStats,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PreAggregate {
    pub fn new(
        spec: WindowSpec,
        aggregator: Aggregator,
        policy: OnError,
        partials: i32,
    ) -> Result<Self, PipelineError> {
        let windows = SourceWindows::new(
            millis(spec.size),
            millis(spec.allowed_lateness),
            millis(spec.out_of_orderness),
            millis(spec.idle_timeout),
        )
        .map_err(|err| PipelineError::Config(err.to_string()))?;
        Ok(PreAggregate {
            spec,
            dispatch: Dispatch::new(aggregator, policy),
            policy,
            windows,
            partials: partials.max(1),
            clock: Instant::now(),
            last_markers: None,
            stats: PreStats::default(),
        })
    }

    fn mono(&self) -> i64 {
        millis(self.clock.elapsed())
    }

    /// Takes up a source partition (start or rebalance), as its restart state says.
    pub fn take_up(&mut self, partition: i32, read: i64, watermark: Option<i64>) {
        let now = self.mono();
        self.windows.take_up(partition, read, watermark, now);
        self.last_markers = None;
    }

    /// New source partitions (start or rebalance): all state goes, and each partition is
    /// rebuilt by replaying it from its committed offset, as its restart state says.
    pub fn restart(&mut self, assignment: &crate::source::kafka::Assignment) {
        self.windows.clear();
        self.dispatch.clear();
        self.take_up_all(assignment);
    }

    /// Takes up each partition of `assignment` as its restart state says (the partitions
    /// read already keep their state).
    pub fn take_up_all(&mut self, assignment: &crate::source::kafka::Assignment) {
        for &p in &assignment.partitions {
            let state = assignment.states.get(&p);
            let read = state.map_or(0, |s| s.read);
            self.take_up(p, read, state.and_then(|s| s.watermark));
        }
    }

    /// Whether a partition is still replaying what it processed before a restart.
    pub fn replaying(&self) -> bool {
        self.windows.any_replaying()
    }

    /// Up to [`crate::status::ACC_SAMPLE`] of the open windows' accumulators, over every
    /// source partition, that the aggregate module in service holds (those a swap with the
    /// same state version takes over).
    pub fn live_accumulators(&mut self) -> Vec<rivulet_rows::WindowAcc> {
        let mut live = Vec::new();
        if let Some(current) = self.dispatch.current_generation() {
            for p in self.windows.partitions() {
                if let Some(windows) = self.windows.windows_mut(p) {
                    crate::window::operator::live_accumulators(windows, current, &mut live);
                }
            }
        }
        live
    }

    /// Gives up a revoked source partition.
    pub fn give_up(&mut self, partition: i32) {
        self.windows.give_up(partition);
    }

    /// Adds a batch of rows (`origins[i]` is row i's record in `raw`); returns what it set
    /// aside: rows without a key or an event time, rows the aggregate refused, and records
    /// too late for their window.
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
        let key_name = self.spec.key.as_deref();
        let key_column = key_name.and_then(|k| rows.column(k));
        let stamps = Stamps::of(self.spec.timestamp.as_deref(), rows);
        let mut targets: BTreeMap<i32, Targets> = BTreeMap::new();
        for (row, &origin_index) in origins.iter().enumerate().take(rows.len as usize) {
            let origin = Origin {
                raw,
                index: origin_index as usize,
            };
            let (partition, offset) = (origin.partition(), origin.offset());
            let ts = match event {
                true => match stamps.at(row, &origin) {
                    Ok(ts) => ts,
                    Err(error) => {
                        side.refuse_record(origin.index, AGGREGATE, &error, self.policy);
                        continue;
                    }
                },
                false => now,
            };
            let part = targets.entry(partition).or_default();
            let key = match key_name {
                None => part.key_of(None, row),
                Some(_) => key_column.and_then(|column| part.key_of(Some(column), row)),
            };
            let Some(key) = key else {
                let error = format!(
                    "no key: field `{}` is missing or null",
                    key_name.unwrap_or_default()
                );
                side.refuse_record(origin.index, AGGREGATE, &error, self.policy);
                continue;
            };
            match self.windows.place(partition, offset, ts, mono) {
                Placed::Window { start, .. } => {
                    part.push(row as u32, start, key, partition, offset)
                }
                Placed::TooLate => {
                    self.stats.too_late += 1;
                    side.late.push(origin.index);
                }
                Placed::Counted => self.stats.replay_skipped += 1,
            }
        }
        for (partition, targets) in &targets {
            self.stats.rows += targets.len() as u64;
            let Some(windows) = self.windows.windows_mut(*partition) else {
                continue;
            };
            for (row, error) in self.dispatch.add(windows, rows, targets)? {
                let index = origins.get(row as usize).copied().unwrap_or(0) as usize;
                side.refuse_record(index, AGGREGATE, &error, self.policy);
            }
        }
        Ok(side)
    }

    /// The source's read positions (replays hold a partition's windows back).
    pub fn positions(&mut self, positions: &BTreeMap<i32, i64>) {
        let now = self.mono();
        self.windows.positions(positions, now);
        let stall = millis(crate::window::operator::REPLAY_STALL);
        for (partition, position, read) in self.windows.stalled(now, stall) {
            tracing::warn!(
                partition,
                position,
                read,
                "replay stalled below the committed read position (records gone from the broker?); windows fire without them"
            );
        }
    }

    /// The partials and markers due: windows each partition's watermark closed, then (when
    /// something fired, or every [`MARKER_EVERY`]) every partition's watermark.
    pub fn fire(&mut self) -> Result<(Vec<Outgoing>, SideOutputs), PipelineError> {
        let clock = (self.spec.time == TimeDomain::Processing).then(now_millis);
        let fired = self.windows.fire(clock);
        self.emit(fired, clock)
    }

    /// Every window of every partition, and markers at the end of time (a bounded run).
    pub fn drain(&mut self) -> Result<(Vec<Outgoing>, SideOutputs), PipelineError> {
        let fired = self.windows.drain();
        self.last_markers = None;
        self.emit(fired, None)
    }

    fn emit(
        &mut self,
        fired: Vec<(i32, crate::window::Firing<Acc>)>,
        clock: Option<i64>,
    ) -> Result<(Vec<Outgoing>, SideOutputs), PipelineError> {
        let mut out = Vec::new();
        let mut side = SideOutputs::default();
        let any = !fired.is_empty();
        for (source, firing) in fired {
            for (key, acc) in &firing.groups {
                match self.dispatch.to_wire(acc) {
                    Ok(acc) => out.push(Outgoing {
                        partition: partition_of(key, self.partials),
                        payload: Exchanged::Partial {
                            source,
                            start: firing.start,
                            end: firing.end,
                            key: key.clone(),
                            acc,
                        }
                        .encode(),
                    }),
                    Err(error) => {
                        let payload = format!(
                            r#"{{"window_start":{},"key":{},"partition":{source}}}"#,
                            firing.start,
                            key.to_json()
                        );
                        side.refuse_derived(payload.into_bytes(), AGGREGATE, &error, self.policy);
                    }
                }
            }
        }
        self.stats.partials += out.len() as u64;
        let due = self
            .last_markers
            .is_none_or(|at| at.elapsed() >= MARKER_EVERY);
        if any || due {
            let mono = self.mono();
            for (source, progress) in self.windows.progress(mono, clock) {
                let marker = Exchanged::Marker {
                    source,
                    watermark: progress.watermark,
                    idle: progress.idle,
                }
                .encode();
                for partition in 0..self.partials {
                    out.push(Outgoing {
                        partition,
                        payload: marker.clone(),
                    });
                    self.stats.markers += 1;
                }
            }
            self.last_markers = Some(Instant::now());
        }
        Ok((out, side))
    }

    /// Per source partition, the lowest offset an open window still needs.
    pub fn needed(&self) -> BTreeMap<i32, i64> {
        self.windows.needed()
    }

    /// Per source partition, its watermark (restart state).
    pub fn watermarks(&self) -> BTreeMap<i32, i64> {
        self.windows
            .progress(self.mono(), None)
            .into_iter()
            .filter_map(|(p, progress)| Some((p, progress.watermark?)))
            .collect()
    }

    /// The aggregate (to swap its module).
    pub fn dispatch_mut(&mut self) -> &mut Dispatch {
        &mut self.dispatch
    }

    pub fn stats(&self) -> PreStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::builtin::Builtins;
    use crate::cluster::merge_op::MergeOperator;
    use crate::spec::{BuiltinFn, BuiltinSpec};

    fn builtins() -> Aggregator {
        Aggregator::Builtin(Builtins::new(vec![BuiltinSpec {
            name: "orders".into(),
            function: BuiltinFn::Count,
            field: None,
            input: None,
        }]))
    }

    fn spec() -> WindowSpec {
        WindowSpec {
            key: Some("status".into()),
            size: Duration::from_secs(10),
            time: TimeDomain::Event,
            timestamp: Some("ts".into()),
            out_of_orderness: Duration::ZERO,
            allowed_lateness: Duration::ZERO,
            idle_timeout: Duration::from_secs(3600),
            late_topic: None,
            late_path: None,
            exchange: Default::default(),
            partials_partitions: None,
        }
    }

    /// Rows `{status, ts}` read from `partition` at consecutive offsets from `first`.
    fn input(partition: i32, first: i64, rows: &[(&str, i64)]) -> (RawBatch, Batch, Vec<u32>) {
        let mut raw = RawBatch::new();
        let mut builder = rivulet_rows::BatchBuilder::new();
        for (i, (status, ts)) in rows.iter().enumerate() {
            raw.push(None, b"", 0, partition, first + i as i64, &[]);
            let row = serde_json::json!({"status": status, "ts": ts});
            builder.push(row.as_object().unwrap()).unwrap();
        }
        let origins = (0..rows.len() as u32).collect();
        (raw, builder.finish(), origins)
    }

    fn counts(batch: &rivulet_rows::Batch) -> Vec<(String, String, i64)> {
        (0..batch.len as usize)
            .map(|i| {
                let row = crate::emit::row_object(batch, i);
                (
                    row["window_start"].as_str().unwrap().to_owned(),
                    row["status"].as_str().unwrap().to_owned(),
                    row["orders"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn two_processes_partials_through_the_topic_merge_into_exact_counts() {
        // Two "processes", each with one source partition, and one merge stage reading all
        // 2 partials partitions: the counts are those of all the input.
        let mut a = PreAggregate::new(spec(), builtins(), OnError::Dlq, 2).unwrap();
        let mut b = PreAggregate::new(spec(), builtins(), OnError::Dlq, 2).unwrap();
        a.take_up(0, 0, None);
        b.take_up(1, 0, None);
        let (raw, rows, origins) = input(0, 0, &[("new", 1_000), ("paid", 2_000), ("new", 12_000)]);
        assert!(a.ingest(&raw, &rows, &origins).unwrap().is_empty());
        let (raw, rows, origins) = input(1, 0, &[("new", 3_000), ("new", 9_999), ("paid", 15_000)]);
        assert!(b.ingest(&raw, &rows, &origins).unwrap().is_empty());
        let mut topic: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
        for op in [&mut a, &mut b] {
            let (out, side) = op.fire().unwrap();
            assert!(side.is_empty());
            for record in out {
                topic
                    .entry(record.partition)
                    .or_default()
                    .push(record.payload);
            }
        }
        let mut merge = MergeOperator::new(
            builtins(),
            10_000,
            Some("status".into()),
            0,
            2,
            OnError::Dlq,
        );
        for (partition, payloads) in &topic {
            let mut raw = RawBatch::new();
            for (offset, payload) in payloads.iter().enumerate() {
                raw.push(None, payload, 0, *partition, offset as i64, &[]);
            }
            assert!(merge.ingest(&raw).is_empty());
        }
        let results = merge.fire().unwrap();
        let mut got: Vec<_> = results.parts.iter().flat_map(counts).collect();
        got.sort();
        let start = rivulet_rows::time::iso8601(0);
        assert_eq!(
            got,
            vec![(start.clone(), "new".into(), 3), (start, "paid".into(), 1)]
        );
        // Window [10 s, 20 s) is still open in both partitions: nothing of it yet, and its
        // records are still needed.
        assert_eq!(a.needed(), BTreeMap::from([(0, 2)]));
        assert_eq!(b.needed(), BTreeMap::from([(1, 2)]));
    }
}
