//! The offset tracker: the one place that decides what may be committed.
//!
//! Sinks number the records they send and report acknowledgements ([`Acks`]); the window
//! operator reports the lowest offset its open windows need; the source reports how far it
//! has read. [`OffsetTracker`] turns these into [`Snapshot`]s and hands a snapshot out for
//! committing only once every sink has acknowledged everything sent before it, so a restart
//! from a committed snapshot never misses a result, a dead letter or a late record.

use super::restart::PartitionState;
use std::collections::{BTreeMap, VecDeque};

/// Acknowledgement bookkeeping of one sink: records are numbered in send order and may be
/// acknowledged in any order; [`Acks::frontier`] is the number of the first record not yet
/// acknowledged (everything below it is safe). Memory is one flag per record in flight.
#[derive(Debug, Default, Clone)]
pub struct Acks {
    /// Number of the first record not yet acknowledged.
    base: u64,
    /// Acknowledged flags of records `base..base + len`.
    in_flight: VecDeque<bool>,
}

impl Acks {
    /// Numbers a record about to be sent.
    pub fn send(&mut self) -> u64 {
        let id = self.base + self.in_flight.len() as u64;
        self.in_flight.push_back(false);
        id
    }

    /// Marks record `id` acknowledged (unknown or repeated ids are ignored).
    pub fn ack(&mut self, id: u64) {
        let Some(index) = id.checked_sub(self.base) else {
            return;
        };
        if let Some(flag) = self.in_flight.get_mut(index as usize) {
            *flag = true;
        }
        while self.in_flight.front() == Some(&true) {
            self.in_flight.pop_front();
            self.base += 1;
        }
    }

    /// Marks every record sent so far acknowledged (a line sink after a flush).
    pub fn ack_all(&mut self) {
        self.base += self.in_flight.len() as u64;
        self.in_flight.clear();
    }

    /// Number the next record will get: a snapshot taken now waits until the frontier
    /// reaches it.
    pub fn mark(&self) -> u64 {
        self.base + self.in_flight.len() as u64
    }

    /// Every record numbered below this is acknowledged.
    pub fn frontier(&self) -> u64 {
        self.base
    }

    /// Records sent and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.in_flight.iter().filter(|acked| !**acked).count()
    }
}

/// What one commit records: per partition its [`PartitionState`], and per sink the
/// [`Acks::mark`] every record before which must be acknowledged first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub partitions: BTreeMap<i32, PartitionState>,
    pub marks: Vec<u64>,
    /// With several tasks, how many windows the task had handed over when it was taken
    /// (see [`crate::window::Exchange::committed`]).
    pub deposits: Option<u64>,
}

impl Snapshot {
    /// A snapshot of partitions read up to `positions` (next offset to read), where open
    /// windows still need the offsets in `needed` (lowest per partition), with the job's
    /// per-partition `watermarks` and `combined` watermark, and the sinks' `marks`.
    pub fn take(
        positions: &BTreeMap<i32, i64>,
        needed: &BTreeMap<i32, i64>,
        watermarks: &BTreeMap<i32, i64>,
        combined: Option<i64>,
        marks: Vec<u64>,
    ) -> Self {
        let partitions = positions
            .iter()
            .map(|(&p, &read)| {
                let committed = needed.get(&p).map_or(read, |&n| n.min(read));
                let state = PartitionState {
                    committed,
                    read,
                    watermark: watermarks.get(&p).copied(),
                    combined,
                };
                (p, state)
            })
            .collect();
        Snapshot {
            partitions,
            marks,
            deposits: None,
        }
    }

    /// Whether every sink acknowledged everything sent before this snapshot (`frontiers[i]`
    /// is sink i's [`Acks::frontier`]).
    pub fn is_safe(&self, frontiers: &[u64]) -> bool {
        self.marks.len() == frontiers.len()
            && self.marks.iter().zip(frontiers).all(|(mark, f)| f >= mark)
    }
}

/// Snapshots waiting for their sinks, and what was committed last.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// The oldest snapshot not yet committed. A newer one is only taken once it is
    /// committed: while a broker is down, the oldest snapshot is the one that becomes safe
    /// first.
    pending: Option<Snapshot>,
    /// What was committed last, per partition.
    committed: BTreeMap<i32, PartitionState>,
}

impl OffsetTracker {
    /// Offers a new snapshot; ignored while an older one still waits for its sinks.
    pub fn offer(&mut self, snapshot: Snapshot) {
        if self.pending.is_none() {
            self.pending = Some(snapshot);
        }
    }

    /// The waiting snapshot's partitions that moved since the last commit, once it is safe
    /// (`frontiers`: the sinks' acknowledgement frontiers). The caller commits them and then
    /// calls [`OffsetTracker::committed`].
    pub fn ready(&self, frontiers: &[u64]) -> Option<BTreeMap<i32, PartitionState>> {
        let snapshot = self.pending.as_ref()?;
        if !snapshot.is_safe(frontiers) {
            return None;
        }
        Some(
            snapshot
                .partitions
                .iter()
                .filter(|(p, state)| self.committed.get(p) != Some(state))
                .map(|(&p, &state)| (p, state))
                .collect(),
        )
    }

    /// The waiting snapshot was committed; returns it.
    pub fn committed(&mut self) -> Option<Snapshot> {
        let snapshot = self.pending.take()?;
        self.committed.extend(snapshot.partitions.clone());
        Some(snapshot)
    }

    /// Partitions were revoked (or reassigned): the waiting snapshot describes state that is
    /// gone, and another consumer may own them now. Nothing about them is committed again
    /// until they are assigned back.
    pub fn forget_all(&mut self) {
        self.pending = None;
        self.committed.clear();
    }

    /// The same for some partitions (a cooperative rebalance moved them): the others'
    /// bookkeeping stays.
    pub fn forget(&mut self, partitions: &[i32]) {
        if let Some(pending) = &mut self.pending {
            pending.partitions.retain(|p, _| !partitions.contains(p));
        }
        self.committed.retain(|p, _| !partitions.contains(p));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn state(committed: i64, read: i64) -> PartitionState {
        PartitionState {
            committed,
            read,
            watermark: None,
            combined: None,
        }
    }

    #[test]
    fn acks_frontier_waits_for_the_oldest_record_acknowledged_out_of_order() {
        let mut acks = Acks::default();
        let ids: Vec<u64> = (0..5).map(|_| acks.send()).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4]);
        acks.ack(3);
        acks.ack(1);
        assert_eq!(acks.frontier(), 0);
        assert_eq!(acks.pending(), 3);
        acks.ack(0);
        assert_eq!(acks.frontier(), 2);
        acks.ack(2);
        assert_eq!(acks.frontier(), 4);
        acks.ack(2); // repeated
        acks.ack(99); // unknown
        assert_eq!(acks.frontier(), 4);
        acks.ack(4);
        assert_eq!((acks.frontier(), acks.mark(), acks.pending()), (5, 5, 0));
    }

    #[test]
    fn ack_all_releases_everything_sent() {
        let mut acks = Acks::default();
        for _ in 0..3 {
            acks.send();
        }
        acks.ack_all();
        assert_eq!((acks.frontier(), acks.mark()), (3, 3));
        assert_eq!(acks.send(), 3);
    }

    #[test]
    fn snapshot_commits_the_lowest_offset_an_open_window_needs() {
        let positions = BTreeMap::from([(0, 100), (1, 50), (2, 7)]);
        let needed = BTreeMap::from([(0, 40), (1, 60)]);
        let watermarks = BTreeMap::from([(0, 1_000)]);
        let s = Snapshot::take(&positions, &needed, &watermarks, Some(900), vec![3]);
        assert_eq!(
            s.partitions[&0],
            PartitionState {
                committed: 40,
                read: 100,
                watermark: Some(1_000),
                combined: Some(900)
            }
        );
        // A hold beyond the read position never raises the commit past what was read.
        assert_eq!(s.partitions[&1].committed, 50);
        assert_eq!(s.partitions[&2].committed, 7);
        assert_eq!(s.partitions[&2].watermark, None);
    }

    #[test]
    fn a_snapshot_is_ready_only_once_every_sink_acknowledged_what_was_sent_before_it() {
        let mut tracker = OffsetTracker::default();
        let mut results = Acks::default();
        let mut dead = Acks::default();
        let a = results.send();
        let b = results.send();
        let d = dead.send();
        let positions = BTreeMap::from([(0, 10)]);
        tracker.offer(Snapshot::take(
            &positions,
            &BTreeMap::new(),
            &BTreeMap::new(),
            None,
            vec![results.mark(), dead.mark()],
        ));
        // Sent after the snapshot: not waited for.
        let later = results.send();
        results.ack(later);
        results.ack(b);
        assert_eq!(tracker.ready(&[results.frontier(), dead.frontier()]), None);
        results.ack(a);
        assert_eq!(tracker.ready(&[results.frontier(), dead.frontier()]), None);
        dead.ack(d);
        let ready = tracker
            .ready(&[results.frontier(), dead.frontier()])
            .unwrap();
        assert_eq!(ready, BTreeMap::from([(0, state(10, 10))]));
        tracker.committed();
        // Nothing waits any more; the same state is not committed again.
        assert_eq!(tracker.ready(&[results.frontier(), dead.frontier()]), None);
        tracker.offer(Snapshot::take(
            &positions,
            &BTreeMap::new(),
            &BTreeMap::new(),
            None,
            vec![results.mark(), dead.mark()],
        ));
        assert_eq!(
            tracker.ready(&[results.frontier(), dead.frontier()]),
            Some(BTreeMap::new())
        );
    }

    #[test]
    fn the_oldest_waiting_snapshot_is_kept_while_sinks_lag() {
        let mut tracker = OffsetTracker::default();
        let take = |read| {
            Snapshot::take(
                &BTreeMap::from([(0, read)]),
                &BTreeMap::new(),
                &BTreeMap::new(),
                None,
                vec![5],
            )
        };
        tracker.offer(take(10));
        tracker.offer(take(20));
        let ready = tracker.ready(&[5]).unwrap();
        assert_eq!(ready[&0].read, 10);
    }

    #[test]
    fn unchanged_partitions_are_not_committed_again() {
        let mut tracker = OffsetTracker::default();
        let take = |a, b| {
            Snapshot::take(
                &BTreeMap::from([(0, a), (1, b)]),
                &BTreeMap::new(),
                &BTreeMap::new(),
                None,
                vec![],
            )
        };
        tracker.offer(take(10, 10));
        assert_eq!(tracker.ready(&[]).unwrap().len(), 2);
        tracker.committed();
        tracker.offer(take(10, 12));
        let ready = tracker.ready(&[]).unwrap();
        assert_eq!(ready.keys().copied().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn revocation_drops_the_waiting_snapshot_and_what_was_committed() {
        let mut tracker = OffsetTracker::default();
        let snapshot = Snapshot::take(
            &BTreeMap::from([(0, 10)]),
            &BTreeMap::new(),
            &BTreeMap::new(),
            None,
            vec![1],
        );
        tracker.offer(snapshot.clone());
        tracker.forget_all();
        assert_eq!(tracker.ready(&[1]), None);
        // Assigned back later: committed again even if unchanged.
        tracker.offer(snapshot);
        assert_eq!(tracker.ready(&[1]).unwrap().len(), 1);
    }
}
