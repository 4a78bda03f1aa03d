//! Stage 1 of a job over Kafka: pre-aggregation per source partition.
//!
//! [`SourceWindows`] keeps one set of tumbling windows per source partition, with that
//! partition's own event-time watermark (the largest event time it has shown, less the
//! bounded out-of-orderness). Lateness is judged per partition, so what a partition's
//! records add up to does not depend on how fast other partitions are read, on which
//! process reads them, or on a rebalance: a partition replayed from its committed offset
//! by a new owner yields the same partials, which stage 2 then recognises as repeats.
//!
//! A window fires for a partition when that partition's watermark passes its end (its
//! partial goes to stage 2, whole); a record within the allowed lateness fires it again
//! (the whole, updated partial). After a restart, records below the committed read position
//! only rebuild windows that were still open, and a partition's windows do not fire while
//! it replays (they would fire with part of their records).
//!
//! Pure and deterministic: every time is passed in by the caller.

use crate::window::{Assignment, Firing, TumblingWindows, WindowError};
use std::collections::BTreeMap;

/// One source partition's windows and progress.
#[derive(Debug)]
struct Part<A> {
    windows: TumblingWindows<A>,
    /// Largest event time seen less the out-of-orderness (or restored).
    watermark: Option<i64>,
    /// When a record last came (monotonic milliseconds).
    last_seen: i64,
    /// Records below this offset were processed before the restart.
    read: i64,
    /// The watermark restored at the restart: windows it had closed stay closed.
    restored: Option<i64>,
    /// The next offset to read (what the source reported last).
    position: i64,
    /// When `position` last moved (monotonic milliseconds).
    moved_at: i64,
}

/// Where a record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Into the window starting at `start` (`late`: it had fired: an update follows).
    Window { start: i64, late: bool },
    /// Past its window's allowed lateness: a late record.
    TooLate,
    /// Processed before the restart, its window closed then: already counted.
    Counted,
}

/// A source partition's progress, for markers and restart state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub watermark: Option<i64>,
    pub idle: bool,
}

/// Tumbling windows per source partition.
#[derive(Debug)]
pub struct SourceWindows<A> {
    lateness_ms: i64,
    out_of_orderness_ms: i64,
    idle_timeout_ms: i64,
    /// Empty windows of the job's size, copied for each partition taken up.
    empty: TumblingWindows<A>,
    parts: BTreeMap<i32, Part<A>>,
}

impl<A: Clone> SourceWindows<A> {
    pub fn new(
        size_ms: i64,
        lateness_ms: i64,
        out_of_orderness_ms: i64,
        idle_timeout_ms: i64,
    ) -> Result<Self, WindowError> {
        Ok(SourceWindows {
            empty: TumblingWindows::new(size_ms, lateness_ms)?,
            lateness_ms: lateness_ms.max(0),
            out_of_orderness_ms: out_of_orderness_ms.max(0),
            idle_timeout_ms: idle_timeout_ms.max(0),
            parts: BTreeMap::new(),
        })
    }

    /// Takes up `partition` (start or rebalance), fresh or as its restart state says:
    /// `read`, the next offset processed before, and `watermark`, its watermark then.
    pub fn take_up(&mut self, partition: i32, read: i64, watermark: Option<i64>, now: i64) {
        self.parts.insert(
            partition,
            Part {
                windows: self.empty.clone(),
                watermark,
                last_seen: now,
                read,
                restored: watermark,
                position: read,
                moved_at: now,
            },
        );
    }

    /// Gives up `partition` (revoked): its state goes, its next owner rebuilds it.
    pub fn give_up(&mut self, partition: i32) {
        self.parts.remove(&partition);
    }

    pub fn partitions(&self) -> Vec<i32> {
        self.parts.keys().copied().collect()
    }

    /// Judges a record of `partition` at `offset` with event time `ts`, seen at `now`, and
    /// moves the partition's watermark past it.
    pub fn place(&mut self, partition: i32, offset: i64, ts: i64, now: i64) -> Placed {
        let ooo = self.out_of_orderness_ms;
        let lateness = self.lateness_ms;
        let empty = &self.empty;
        let part = self.parts.entry(partition).or_insert_with(|| Part {
            windows: empty.clone(),
            watermark: None,
            last_seen: now,
            read: 0,
            restored: None,
            position: 0,
            moved_at: now,
        });
        let replayed = offset < part.read;
        let start = part.windows.window_start(ts);
        let end = part.windows.window_end(start);
        let closed_before = part
            .restored
            .is_some_and(|wm| end.saturating_add(lateness) <= wm);
        // Judged against the records before it, then it moves the watermark.
        let assignment = part.windows.assign(ts, part.watermark);
        part.watermark = part.watermark.max(Some(ts.saturating_sub(ooo)));
        part.last_seen = now;
        if closed_before && replayed {
            return Placed::Counted;
        }
        match assignment {
            Assignment::Open { start } => Placed::Window { start, late: false },
            Assignment::Late { start } => Placed::Window { start, late: true },
            // Its window was still open before the restart: it is rebuilt.
            Assignment::TooLate { start } if replayed && !closed_before => {
                Placed::Window { start, late: true }
            }
            Assignment::TooLate { .. } => Placed::TooLate,
        }
    }

    /// The windows of `partition`, to add placed records to.
    pub fn windows_mut(&mut self, partition: i32) -> Option<&mut TumblingWindows<A>> {
        self.parts.get_mut(&partition).map(|p| &mut p.windows)
    }

    /// The source reports how far it has read, at `now`.
    pub fn positions(&mut self, positions: &BTreeMap<i32, i64>, now: i64) {
        for (p, &position) in positions {
            if let Some(part) = self.parts.get_mut(p)
                && part.position != position
            {
                part.position = position;
                part.moved_at = now;
            }
        }
    }

    /// Partitions whose replay has not moved for `stall_ms` (its records below the
    /// committed read position are gone from the broker, or the broker's offsets moved):
    /// they stop replaying, so their windows fire without what is missing. Returns each
    /// with the position it stalled at and the read position it gave up.
    pub fn stalled(&mut self, now: i64, stall_ms: i64) -> Vec<(i32, i64, i64)> {
        let mut stalled = Vec::new();
        for (&p, part) in &mut self.parts {
            if part.position < part.read && now - part.moved_at > stall_ms {
                stalled.push((p, part.position, part.read));
                part.read = part.position;
            }
        }
        stalled
    }

    /// Whether `partition` is still replaying what it processed before a restart.
    pub fn replaying(&self, partition: i32) -> bool {
        self.parts
            .get(&partition)
            .is_some_and(|p| p.position < p.read)
    }

    /// Whether any partition is still replaying.
    pub fn any_replaying(&self) -> bool {
        self.parts.values().any(|p| p.position < p.read)
    }

    /// Drops every partition (a restart takes them up again).
    pub fn clear(&mut self) {
        self.parts.clear();
    }

    /// Fires what each partition's watermark has closed (partitions that replay wait).
    /// Processing time: `clock` is the watermark of every partition.
    pub fn fire(&mut self, clock: Option<i64>) -> Vec<(i32, Firing<A>)> {
        let mut fired = Vec::new();
        for (&p, part) in &mut self.parts {
            if part.position < part.read {
                continue;
            }
            if let Some(wm) = clock.or(part.watermark) {
                fired.extend(part.windows.advance(wm).into_iter().map(|f| (p, f)));
            }
        }
        fired
    }

    /// Fires every window of every partition (the end of a bounded input).
    pub fn drain(&mut self) -> Vec<(i32, Firing<A>)> {
        let mut fired = Vec::new();
        for (&p, part) in &mut self.parts {
            fired.extend(part.windows.drain().into_iter().map(|f| (p, f)));
            part.watermark = Some(i64::MAX);
        }
        fired
    }

    /// Each partition's watermark, and whether it has been idle for the idle timeout.
    /// Processing time: `clock` for every partition.
    pub fn progress(&self, now: i64, clock: Option<i64>) -> BTreeMap<i32, Progress> {
        self.parts
            .iter()
            .map(|(&p, part)| {
                let idle = now.saturating_sub(part.last_seen) > self.idle_timeout_ms;
                let watermark = match part.position < part.read {
                    // Replaying: say no more than the restart state did.
                    true => part.restored,
                    false => clock.or(part.watermark),
                };
                (
                    p,
                    Progress {
                        watermark,
                        idle: idle && clock.is_none(),
                    },
                )
            })
            .collect()
    }

    /// Per partition, the lowest offset an open window still needs.
    pub fn needed(&self) -> BTreeMap<i32, i64> {
        let mut needed = BTreeMap::new();
        for part in self.parts.values() {
            needed.extend(part.windows.min_offsets());
        }
        needed
    }

    /// Open windows and groups over all partitions.
    pub fn open(&self) -> (usize, usize) {
        self.parts.values().fold((0, 0), |(w, g), p| {
            (w + p.windows.open_windows(), g + p.windows.groups())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_rows::Scalar;

    /// 10 ms windows, 5 ms lateness, 2 ms out-of-orderness, 100 ms idle timeout; counts.
    fn windows() -> SourceWindows<u64> {
        SourceWindows::new(10, 5, 2, 100).unwrap()
    }

    /// Places a record and counts it under key "k", as the operator would.
    fn add(w: &mut SourceWindows<u64>, p: i32, offset: i64, ts: i64) -> Placed {
        let placed = w.place(p, offset, ts, 0);
        if let Placed::Window { start, .. } = placed {
            *w.windows_mut(p)
                .unwrap()
                .accumulator(start, &Scalar::from("k"), p, offset, || 0) += 1;
        }
        placed
    }

    fn counts(fired: &[(i32, Firing<u64>)]) -> Vec<(i32, i64, u64, bool)> {
        fired
            .iter()
            .flat_map(|(p, f)| {
                f.groups
                    .iter()
                    .map(move |(_, n)| (*p, f.start, *n, f.update))
            })
            .collect()
    }

    #[test]
    fn lateness_is_judged_per_partition_whatever_the_others_have_read() {
        let mut w = windows();
        w.take_up(0, 0, None, 0);
        w.take_up(1, 0, None, 0);
        // Partition 0 is read far ahead; partition 1's old record is not late for it.
        add(&mut w, 0, 0, 100);
        assert_eq!(
            add(&mut w, 1, 0, 3),
            Placed::Window {
                start: 0,
                late: false
            }
        );
        assert_eq!(counts(&w.fire(None)), vec![]);
        add(&mut w, 1, 1, 12);
        assert_eq!(counts(&w.fire(None)), vec![(1, 0, 1, false)]);
    }

    #[test]
    fn a_partition_fires_its_whole_partial_then_updates_then_drops_the_too_late() {
        let mut w = windows();
        w.take_up(0, 0, None, 0);
        for (offset, ts) in [(0, 1), (1, 4), (2, 9)] {
            add(&mut w, 0, offset, ts);
        }
        assert_eq!(w.needed(), BTreeMap::from([(0, 0)]));
        add(&mut w, 0, 3, 13); // watermark 11: window [0, 10) fires
        assert_eq!(counts(&w.fire(None)), vec![(0, 0, 3, false)]);
        // Within the lateness: the whole partial again, updated.
        assert_eq!(
            add(&mut w, 0, 4, 2),
            Placed::Window {
                start: 0,
                late: true
            }
        );
        assert_eq!(counts(&w.fire(None)), vec![(0, 0, 4, true)]);
        add(&mut w, 0, 5, 18); // watermark 16: window [0, 10) closes for good
        let last = w.fire(None);
        assert!(last.iter().any(|(_, f)| f.start == 0 && f.is_final));
        assert_eq!(w.needed(), BTreeMap::from([(0, 3)]));
        assert_eq!(add(&mut w, 0, 6, 5), Placed::TooLate);
    }

    #[test]
    fn a_restart_skips_what_closed_rebuilds_what_was_open_and_fires_after_the_replay() {
        let mut w = windows();
        // Before: read up to offset 10, watermark 16: window [0, 10) closed (16 >= 10 + 5),
        // window [10, 20) open.
        w.take_up(0, 10, Some(16), 0);
        w.positions(&BTreeMap::from([(0, 4)]), 0);
        assert_eq!(add(&mut w, 0, 4, 3), Placed::Counted);
        assert_eq!(
            add(&mut w, 0, 5, 11),
            Placed::Window {
                start: 10,
                late: false
            }
        );
        assert!(w.replaying(0));
        assert_eq!(
            w.progress(0, None)[&0].watermark,
            Some(16),
            "a replaying partition says what its restart state said"
        );
        add(&mut w, 0, 6, 19);
        assert!(w.fire(None).is_empty(), "no firing while replaying");
        w.positions(&BTreeMap::from([(0, 10)]), 0);
        assert!(!w.replaying(0));
        assert_eq!(counts(&w.fire(None)), vec![]);
        add(&mut w, 0, 10, 23);
        assert_eq!(counts(&w.fire(None)), vec![(0, 10, 2, false)]);
        // A new record for the closed window is late, as it was before the restart.
        assert_eq!(add(&mut w, 0, 11, 2), Placed::TooLate);
    }

    #[test]
    fn a_replay_that_cannot_reach_its_read_position_stops_after_the_stall_and_windows_fire() {
        let mut w = windows();
        // Processed up to offset 10 before the restart, but the broker now ends at 6.
        w.take_up(0, 10, None, 0);
        w.positions(&BTreeMap::from([(0, 4)]), 1_000);
        add(&mut w, 0, 4, 3);
        add(&mut w, 0, 5, 23);
        w.positions(&BTreeMap::from([(0, 6)]), 2_000);
        assert!(w.stalled(31_000, 30_000).is_empty(), "moved 29 s ago");
        assert!(w.replaying(0));
        assert!(w.fire(None).is_empty(), "no firing while replaying");
        // Nothing more for over 30 s: it stops replaying at 6, not at 10.
        w.positions(&BTreeMap::from([(0, 6)]), 32_001);
        assert_eq!(w.stalled(32_001, 30_000), vec![(0, 6, 10)]);
        assert!(!w.replaying(0));
        assert_eq!(counts(&w.fire(None)), vec![(0, 0, 1, false)]);
        assert!(w.stalled(90_000, 30_000).is_empty(), "said once");
    }

    #[test]
    fn a_partition_with_nothing_new_for_the_idle_timeout_is_reported_idle() {
        let mut w = windows();
        w.take_up(0, 0, None, 0);
        w.take_up(1, 0, None, 0);
        w.place(0, 0, 50, 150);
        let progress = w.progress(150, None);
        assert_eq!(
            progress[&0],
            Progress {
                watermark: Some(48),
                idle: false
            }
        );
        assert_eq!(
            progress[&1],
            Progress {
                watermark: None,
                idle: true
            }
        );
        // Processing time: the clock is everyone's watermark and nobody is idle.
        let progress = w.progress(150, Some(1_000));
        assert_eq!(
            progress[&1],
            Progress {
                watermark: Some(1_000),
                idle: false
            }
        );
    }

    #[test]
    fn giving_a_partition_up_drops_its_state_and_its_offsets() {
        let mut w = windows();
        w.take_up(0, 0, None, 0);
        w.take_up(1, 0, None, 0);
        add(&mut w, 0, 7, 1);
        add(&mut w, 1, 9, 1);
        w.give_up(0);
        assert_eq!(w.partitions(), vec![1]);
        assert_eq!(w.needed(), BTreeMap::from([(1, 9)]));
        assert_eq!(w.open(), (1, 1));
        let drained = w.drain();
        assert_eq!(counts(&drained), vec![(1, 0, 1, false)]);
    }
}
