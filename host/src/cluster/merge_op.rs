//! Stage 2's operator: reads the partials topic, keeps [`MergeWindows`] per partials
//! partition, and finishes each (window, key) once with the job's aggregate.
//!
//! A record that does not decode, or whose accumulator this process's aggregate cannot
//! read (another spec, another state version), goes to the dead letters with the reason;
//! nothing else is held back by it.

use super::merge::{MergeWindows, Taken};
use super::wire::Exchanged;
use crate::aggregate::dispatch::{Dispatch, Results};
use crate::aggregate::{Acc, Aggregator};
use crate::error::PipelineError;
use crate::side_output::SideOutputs;
use crate::source::kafka::Assignment as Restart;
use crate::spec::OnError;
use rivulet_rows::RawBatch;
use std::collections::BTreeMap;

/// Name of this step in dead letters and logs.
pub const MERGE: &str = "merge";

/// Counts of what stage 2 read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub partials: u64,
    /// Partials equal to the one they would replace (replays).
    pub repeats: u64,
    /// Partials for windows closed for good before (replays after a restart).
    pub closed: u64,
    pub markers: u64,
    pub refused: u64,
    pub results: u64,
}

pub struct MergeOperator {
    dispatch: Dispatch,
    /// The job's window size: a partial of another size comes from another spec.
    size_ms: i64,
    key_name: Option<String>,
    lateness_ms: i64,
    /// Partitions of the source topic: each one's markers are waited for.
    sources: i32,
    policy: OnError,
    /// Per partials partition read.
    parts: BTreeMap<i32, MergeWindows<Acc>>,
    stats: MergeStats,
}

impl MergeOperator {
    pub fn new(
        aggregator: Aggregator,
        size_ms: i64,
        key_name: Option<String>,
        lateness_ms: i64,
        sources: i32,
        policy: OnError,
    ) -> Self {
        MergeOperator {
            dispatch: Dispatch::new(aggregator, policy),
            size_ms,
            key_name,
            lateness_ms,
            sources,
            policy,
            parts: BTreeMap::new(),
            stats: MergeStats::default(),
        }
    }

    /// New partials partitions (start or rebalance): windows closed before stay closed;
    /// open ones are rebuilt from the partials read again.
    pub fn restart(&mut self, assignment: &Restart) {
        self.parts.clear();
        self.dispatch.clear();
        self.take_up(assignment);
    }

    /// Gives up a partials partition (a cooperative rebalance moved it): its windows go,
    /// its next owner rebuilds them.
    pub fn give_up(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }

    /// Takes up the partials partitions of `assignment`, windows closed before staying
    /// closed (the partitions read already keep their state).
    pub fn take_up(&mut self, assignment: &Restart) {
        for &p in &assignment.partitions {
            let mut windows = MergeWindows::new(self.lateness_ms, self.sources);
            // Stage 2 keeps its closed watermark in the restart state's watermark.
            if let Some(closed) = assignment.states.get(&p).and_then(|s| s.watermark) {
                windows.restore(closed);
            }
            self.parts.insert(p, windows);
        }
    }

    /// Reads a batch of the partials topic.
    pub fn ingest(&mut self, raw: &RawBatch) -> SideOutputs {
        let mut side = SideOutputs::default();
        for (index, record) in raw.iter().enumerate() {
            let windows = self
                .parts
                .entry(record.partition)
                .or_insert_with(|| MergeWindows::new(self.lateness_ms, self.sources));
            match Exchanged::decode(record.payload) {
                Ok(Exchanged::Marker {
                    source,
                    watermark,
                    idle,
                }) => {
                    self.stats.markers += 1;
                    windows.marker(source, watermark, idle);
                }
                Ok(Exchanged::Partial {
                    source,
                    start,
                    end,
                    key,
                    acc,
                }) => {
                    self.stats.partials += 1;
                    if end.saturating_sub(start) != self.size_ms {
                        self.stats.refused += 1;
                        let error = format!(
                            "a partial of a {} ms window; this job's windows are {} ms: the processes run different specs",
                            end.saturating_sub(start),
                            self.size_ms
                        );
                        side.refuse_record(index, MERGE, &error, self.policy);
                        continue;
                    }
                    let acc = match self.dispatch.from_wire(acc) {
                        Ok(acc) => acc,
                        Err(error) => {
                            self.stats.refused += 1;
                            side.refuse_record(index, MERGE, &error, self.policy);
                            continue;
                        }
                    };
                    match windows.partial(source, start, end, key, acc, record.offset) {
                        Taken::Kept => {}
                        Taken::Unchanged => self.stats.repeats += 1,
                        Taken::Closed => self.stats.closed += 1,
                    }
                }
                Err(error) => {
                    self.stats.refused += 1;
                    side.refuse_record(index, MERGE, &error.to_string(), self.policy);
                }
            }
        }
        side
    }

    /// Merges and finishes what the markers closed.
    pub fn fire(&mut self) -> Result<Results, PipelineError> {
        let fired: Vec<_> = self.parts.values_mut().flat_map(|w| w.advance()).collect();
        self.finish(fired)
    }

    /// Fires every open window (the end of a bounded run).
    pub fn drain(&mut self) -> Result<Results, PipelineError> {
        let fired: Vec<_> = self.parts.values_mut().flat_map(|w| w.drain()).collect();
        self.finish(fired)
    }

    fn finish(
        &mut self,
        fired: Vec<crate::window::exchange::Merged<Acc>>,
    ) -> Result<Results, PipelineError> {
        let (firings, mut refused) = self.dispatch.merge_windows(fired, MERGE, self.policy);
        let mut results = self.dispatch.finish(firings, self.key_name.as_deref())?;
        self.stats.results += results.rows();
        refused.append(std::mem::take(&mut results.side));
        results.side = refused;
        Ok(results)
    }

    /// Per partials partition, the lowest offset an open window still needs.
    pub fn needed(&self) -> BTreeMap<i32, i64> {
        self.parts
            .iter()
            .filter_map(|(&p, w)| Some((p, w.needed()?)))
            .collect()
    }

    /// Per partials partition, the watermark that closed windows for good (restart state).
    pub fn closed(&self) -> BTreeMap<i32, i64> {
        self.parts
            .iter()
            .filter_map(|(&p, w)| Some((p, w.closed()?)))
            .collect()
    }

    /// Source partitions each partials partition still waits to hear from.
    pub fn waiting_for(&self) -> BTreeMap<i32, Vec<i32>> {
        self.parts
            .iter()
            .map(|(&p, w)| (p, w.waiting_for()))
            .filter(|(_, waiting)| !waiting.is_empty())
            .collect()
    }

    /// The aggregate (to swap its module).
    pub fn dispatch_mut(&mut self) -> &mut Dispatch {
        &mut self.dispatch
    }

    pub fn stats(&self) -> MergeStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::builtin::{BuiltinAcc, Builtins, Num};
    use crate::cluster::wire::WireAcc;
    use crate::spec::{BuiltinFn, BuiltinSpec};
    use rivulet_rows::Scalar;

    fn operator(sources: i32) -> MergeOperator {
        let specs = vec![
            BuiltinSpec {
                name: "orders".into(),
                function: BuiltinFn::Count,
                field: None,
                input: None,
            },
            BuiltinSpec {
                name: "total".into(),
                function: BuiltinFn::Sum,
                field: Some("amount".into()),
                input: None,
            },
        ];
        MergeOperator::new(
            Aggregator::Builtin(Builtins::new(specs)),
            30_000,
            Some("status".into()),
            0,
            sources,
            OnError::Dlq,
        )
    }

    fn partial(source: i32, key: &str, count: u64, sum: f64) -> Vec<u8> {
        Exchanged::Partial {
            source,
            start: 0,
            end: 30_000,
            key: Scalar::from(key),
            acc: WireAcc::Builtin(vec![
                BuiltinAcc::Count(count),
                BuiltinAcc::Sum(Some(Num::Float(sum))),
            ]),
        }
        .encode()
    }

    fn marker(source: i32, watermark: i64) -> Vec<u8> {
        Exchanged::Marker {
            source,
            watermark: Some(watermark),
            idle: false,
        }
        .encode()
    }

    fn batch(partition: i32, payloads: &[Vec<u8>]) -> RawBatch {
        let mut raw = RawBatch::new();
        for (offset, payload) in payloads.iter().enumerate() {
            raw.push(None, payload, 0, partition, offset as i64, &[]);
        }
        raw
    }

    fn rows(results: &Results) -> Vec<serde_json::Value> {
        results
            .parts
            .iter()
            .flat_map(|b| (0..b.len as usize).map(|i| crate::emit::row_object(b, i).into()))
            .collect()
    }

    #[test]
    fn partials_of_every_source_merge_into_one_result_per_window_and_key() {
        let mut op = operator(2);
        let side = op.ingest(&batch(
            3,
            &[
                partial(0, "shipped", 2, 10.5),
                partial(1, "shipped", 3, 1.25),
                partial(1, "pending", 1, 4.0),
                marker(0, 30_000),
                // A replay of source 0's partial: it replaces, it does not add.
                partial(0, "shipped", 2, 10.5),
            ],
        ));
        assert!(side.is_empty());
        assert!(
            rows(&op.fire().unwrap()).is_empty(),
            "source 1 has not passed the window"
        );
        assert_eq!(op.waiting_for(), BTreeMap::from([(3, vec![1])]));
        op.ingest(&batch(3, &[marker(1, 31_000)]));
        let results = op.fire().unwrap();
        let got = rows(&results);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["status"], "pending");
        assert_eq!(got[0]["orders"], 1);
        assert_eq!(got[1]["status"], "shipped");
        assert_eq!(got[1]["orders"], 5);
        assert_eq!(got[1]["total"], 11.75);
        assert_eq!(op.stats().repeats, 1);
        assert!(op.needed().is_empty());
        assert_eq!(op.closed(), BTreeMap::from([(3, 30_000)]));
    }

    #[test]
    fn a_record_that_does_not_decode_or_fit_goes_to_the_dead_letters_with_the_reason() {
        let mut op = operator(1);
        let foreign = Exchanged::Partial {
            source: 0,
            start: 0,
            end: 30_000,
            key: Scalar::from("x"),
            acc: WireAcc::Bytes {
                state_version: 1,
                bytes: vec![1],
            },
        }
        .encode();
        let other_size = Exchanged::Partial {
            source: 0,
            start: 0,
            end: 20_000,
            key: Scalar::from("x"),
            acc: WireAcc::Builtin(vec![
                BuiltinAcc::Count(1),
                BuiltinAcc::Sum(Some(Num::Float(1.0))),
            ]),
        }
        .encode();
        let side = op.ingest(&batch(
            0,
            &[b"{\"status\":\"x\"}".to_vec(), foreign, other_size],
        ));
        let reasons: Vec<&str> = side.refused.iter().map(|r| r.error.as_str()).collect();
        assert_eq!(reasons.len(), 3);
        assert!(
            reasons[0].contains("not a rivulet partials record"),
            "{reasons:?}"
        );
        assert!(reasons[1].contains("Wasm aggregate"), "{reasons:?}");
        assert_eq!(
            reasons[2],
            "a partial of a 20000 ms window; this job's windows are 30000 ms: the processes run different specs"
        );
        assert_eq!(op.stats().refused, 3);
        op.ingest(&batch(0, &[marker(0, 40_000)]));
        assert!(
            rows(&op.fire().unwrap()).is_empty(),
            "nothing refused was counted"
        );
    }
}
