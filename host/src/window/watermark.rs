//! Per-partition event-time watermarks with bounded out-of-orderness and idle partitions.
//!
//! Each partition's watermark is the largest event time seen on it minus the allowed
//! out-of-orderness. The combined watermark is the minimum over the partitions that are
//! active; a partition that has sent nothing for longer than the idle timeout is ignored
//! until it sends again. The combined watermark never goes backwards.
//!
//! Deterministic: every call that depends on time takes `now_ms` (a monotonic clock in
//! milliseconds) from the caller.

use std::collections::BTreeMap;

/// State of one partition.
#[derive(Debug, Clone, Copy)]
struct Partition {
    /// Max event time seen minus out-of-orderness (or restored), `None` if nothing yet.
    watermark: Option<i64>,
    /// When the partition last sent a record (or was assigned / restored).
    last_seen: i64,
}

/// Per-partition event-time watermarks combined into one monotonic watermark.
#[derive(Debug, Clone)]
pub struct Watermarks {
    out_of_orderness_ms: i64,
    idle_timeout_ms: i64,
    partitions: BTreeMap<i32, Partition>,
    /// The last combined watermark returned by [`Watermarks::current`] (or forced by
    /// [`Watermarks::finish`]).
    last: Option<i64>,
}

impl Watermarks {
    /// Creates watermarks tolerating `out_of_orderness_ms` of disorder, treating a
    /// partition as idle after `idle_timeout_ms` without records. Negative values are
    /// treated as 0.
    pub fn new(out_of_orderness_ms: i64, idle_timeout_ms: i64) -> Self {
        Watermarks {
            out_of_orderness_ms: out_of_orderness_ms.max(0),
            idle_timeout_ms: idle_timeout_ms.max(0),
            partitions: BTreeMap::new(),
            last: None,
        }
    }

    /// Sets the partitions this consumer reads: partitions no longer listed are forgotten,
    /// new ones start "not seen yet" as of `now_ms`, kept ones are unchanged.
    ///
    /// The combined watermark already returned is kept (it never goes backwards).
    pub fn assign(&mut self, partitions: &[i32], now_ms: i64) {
        self.partitions.retain(|p, _| partitions.contains(p));
        for &p in partitions {
            self.partitions.entry(p).or_insert(Partition {
                watermark: None,
                last_seen: now_ms,
            });
        }
    }

    /// A record with event time `ts` arrived on `partition` (unknown partitions are added).
    pub fn observe(&mut self, partition: i32, ts: i64, now_ms: i64) {
        self.advance_partition(
            partition,
            ts.saturating_sub(self.out_of_orderness_ms),
            now_ms,
        );
    }

    /// Restores `partition`'s watermark after a restart (e.g. from commit metadata), as if a
    /// record at `watermark + out_of_orderness` had been seen at `now_ms`. Never lowers a
    /// watermark already known.
    pub fn restore(&mut self, partition: i32, watermark: i64, now_ms: i64) {
        self.advance_partition(partition, watermark, now_ms);
    }

    /// Raises `partition`'s watermark to at least `watermark` and marks it seen at `now_ms`.
    fn advance_partition(&mut self, partition: i32, watermark: i64, now_ms: i64) {
        let state = self.partitions.entry(partition).or_insert(Partition {
            watermark: None,
            last_seen: now_ms,
        });
        state.watermark = Some(state.watermark.map_or(watermark, |wm| wm.max(watermark)));
        state.last_seen = state.last_seen.max(now_ms);
    }

    /// Watermark of one partition: max event time seen minus out-of-orderness, `None` if
    /// nothing was seen or restored (or the partition is unknown).
    pub fn partition(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).and_then(|p| p.watermark)
    }

    /// The combined watermark at `now_ms`.
    ///
    /// A partition is idle when `now_ms - last_seen > idle_timeout` (a never-seen
    /// partition's `last_seen` is when it was assigned). The result is the minimum
    /// watermark over active partitions; an active partition that has seen nothing holds it
    /// back (`None`). If every partition is idle, it is the maximum of their watermarks
    /// (`None` if none has one). The result never goes backwards: it is the maximum of this
    /// and every earlier result.
    pub fn current(&mut self, now_ms: i64) -> Option<i64> {
        let computed = self.compute(now_ms);
        // `None < Some(_)`: a remembered value always wins over "no watermark".
        let combined = self.last.max(computed);
        self.last = combined;
        combined
    }

    /// The combined watermark at `now_ms`, ignoring earlier results.
    fn compute(&self, now_ms: i64) -> Option<i64> {
        let idle_timeout = self.idle_timeout_ms;
        let is_active = |p: &Partition| now_ms.saturating_sub(p.last_seen) <= idle_timeout;
        let mut active = self.partitions.values().filter(|p| is_active(p)).peekable();
        if active.peek().is_some() {
            // Some(min) if every active partition has a watermark, None otherwise.
            active.map(|p| p.watermark).min().flatten()
        } else {
            self.partitions.values().filter_map(|p| p.watermark).max()
        }
    }

    /// Restores the combined watermark after a restart: it never falls below `floor` (the
    /// combined watermark committed before), even if a partition's own watermark is lower.
    pub fn restore_combined(&mut self, floor: i64) {
        self.last = self.last.max(Some(floor));
    }

    /// The combined watermark last returned by [`Watermarks::current`] (or restored). After
    /// [`Watermarks::finish`], what the data said: the smallest partition watermark — the
    /// forced `i64::MAX` would close every window for good, including those of records
    /// that arrive after a bounded read.
    pub fn combined(&self) -> Option<i64> {
        match self.last {
            Some(i64::MAX) => self.partitions.values().filter_map(|p| p.watermark).min(),
            last => last,
        }
    }

    /// Forces the combined watermark to `i64::MAX` (end of a bounded input): every later
    /// [`Watermarks::current`] returns `Some(i64::MAX)`.
    pub fn finish(&mut self) {
        self.last = Some(i64::MAX);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn after_finish_the_committed_combined_watermark_is_what_the_data_said() {
        let mut w = Watermarks::new(100, 10_000);
        w.assign(&[0, 1], 0);
        w.observe(0, 5_000, 1);
        w.observe(1, 3_000, 1);
        assert_eq!(w.current(2), Some(2_900));
        w.finish();
        assert_eq!(w.current(3), Some(i64::MAX));
        assert_eq!(w.combined(), Some(2_900));
    }

    #[test]
    fn partition_watermark_is_max_seen_minus_out_of_orderness() {
        let mut w = Watermarks::new(100, 10_000);
        w.assign(&[0], 0);
        assert_eq!(w.partition(0), None);
        w.observe(0, 1_000, 1);
        assert_eq!(w.partition(0), Some(900));
        // Out-of-order records never lower it.
        w.observe(0, 950, 2);
        assert_eq!(w.partition(0), Some(900));
        w.observe(0, 1_500, 3);
        assert_eq!(w.partition(0), Some(1_400));
        assert_eq!(w.current(3), Some(1_400));
        assert_eq!(w.partition(7), None);
    }

    #[test]
    fn combined_watermark_is_min_across_partitions() {
        let mut w = Watermarks::new(0, 10_000);
        w.assign(&[0, 1, 2], 0);
        w.observe(0, 500, 1);
        w.observe(1, 300, 1);
        // Partition 2 has seen nothing and is not idle: it holds the watermark back.
        assert_eq!(w.current(2), None);
        w.observe(2, 800, 3);
        assert_eq!(w.current(3), Some(300));
        w.observe(1, 900, 4);
        assert_eq!(w.current(4), Some(500));
    }

    #[test]
    fn slow_partition_holds_back_until_idle_timeout_then_is_ignored() {
        let mut w = Watermarks::new(0, 1_000);
        w.assign(&[0, 1], 0);
        w.observe(0, 5_000, 100);
        w.observe(1, 2_000, 100);
        assert_eq!(w.current(100), Some(2_000));
        w.observe(0, 6_000, 1_000);
        // Partition 1 last seen at 100: still active at 1_100, idle after.
        assert_eq!(w.current(1_100), Some(2_000));
        assert_eq!(w.current(1_101), Some(6_000));
    }

    #[test]
    fn never_seen_partition_becomes_idle_after_timeout_from_assignment() {
        let mut w = Watermarks::new(0, 1_000);
        w.assign(&[0, 1], 0);
        w.observe(0, 5_000, 10);
        assert_eq!(w.current(1_000), None);
        assert_eq!(w.current(1_001), Some(5_000));
    }

    #[test]
    fn idle_partition_rejoins_when_it_sends_data_but_combined_never_regresses() {
        let mut w = Watermarks::new(0, 1_000);
        w.assign(&[0, 1], 0);
        w.observe(0, 5_000, 0);
        w.observe(1, 1_000, 0);
        w.observe(0, 8_000, 1_500);
        assert_eq!(w.current(1_500), Some(8_000));

        // Partition 1 comes back, behind: it is active again but cannot pull the
        // combined watermark back.
        w.observe(1, 2_000, 1_600);
        assert_eq!(w.current(1_600), Some(8_000));
        // It holds the watermark until it catches up.
        w.observe(0, 20_000, 1_700);
        w.observe(1, 9_000, 1_700);
        assert_eq!(w.current(1_700), Some(9_000));
        w.observe(1, 30_000, 1_800);
        assert_eq!(w.current(1_800), Some(20_000));
    }

    #[test]
    fn all_partitions_idle_uses_max_watermark() {
        let mut w = Watermarks::new(10, 1_000);
        w.assign(&[0, 1, 2], 0);
        w.observe(0, 500, 0);
        w.observe(1, 700, 0);
        assert_eq!(w.current(5_000), Some(690));

        let mut none = Watermarks::new(10, 1_000);
        none.assign(&[0, 1], 0);
        assert_eq!(none.current(5_000), None);
        assert_eq!(Watermarks::new(0, 0).current(0), None);
    }

    #[test]
    fn restore_sets_watermark_as_if_record_seen() {
        let mut w = Watermarks::new(100, 1_000);
        w.assign(&[0, 1], 0);
        w.restore(0, 5_000, 0);
        w.restore(1, 3_000, 0);
        assert_eq!(w.partition(0), Some(5_000));
        assert_eq!(w.current(0), Some(3_000));
        // Later records behave as if a record at 3_100 was seen on partition 1.
        w.observe(1, 3_050, 1);
        assert_eq!(w.partition(1), Some(3_000));
        w.observe(1, 3_200, 2);
        assert_eq!(w.partition(1), Some(3_100));
        // Restore never lowers a known watermark, and works near i64::MAX.
        w.restore(1, 0, 3);
        assert_eq!(w.partition(1), Some(3_100));
        w.restore(0, i64::MAX, 3);
        assert_eq!(w.partition(0), Some(i64::MAX));
    }

    #[test]
    fn finish_forces_watermark_to_max() {
        let mut w = Watermarks::new(0, 1_000);
        w.assign(&[0, 1], 0);
        w.observe(0, 10, 0);
        assert_eq!(w.current(0), None);
        w.finish();
        assert_eq!(w.current(0), Some(i64::MAX));
        w.observe(1, 5, 1);
        assert_eq!(w.current(1), Some(i64::MAX));
    }

    #[test]
    fn unknown_partition_is_auto_added() {
        let mut w = Watermarks::new(0, 1_000);
        w.assign(&[0], 0);
        w.observe(0, 100, 0);
        w.observe(3, 50, 0);
        assert_eq!(w.partition(3), Some(50));
        assert_eq!(w.current(0), Some(50));
        // Without any assignment at all.
        let mut fresh = Watermarks::new(0, 1_000);
        fresh.observe(9, 42, 0);
        assert_eq!(fresh.current(0), Some(42));
    }

    #[test]
    fn assign_forgets_revoked_partitions_and_adds_new_ones_unseen() {
        let mut w = Watermarks::new(0, 1_000);
        w.assign(&[0, 1], 0);
        w.observe(0, 100, 0);
        w.observe(1, 200, 0);
        assert_eq!(w.current(0), Some(100));

        w.assign(&[1, 2], 10);
        assert_eq!(w.partition(0), None);
        assert_eq!(w.partition(1), Some(200));
        // Partition 2 is unseen and holds back; the earlier result is kept.
        assert_eq!(w.current(10), Some(100));
        w.observe(2, 150, 20);
        assert_eq!(w.current(20), Some(150));
    }

    #[test]
    fn event_times_near_i64_min_do_not_overflow() {
        let mut w = Watermarks::new(i64::MAX, 1_000);
        w.observe(0, i64::MIN + 5, 0);
        assert_eq!(w.partition(0), Some(i64::MIN));
        assert_eq!(w.current(i64::MAX), Some(i64::MIN));
        let mut w = Watermarks::new(0, 1_000);
        w.observe(0, 1, i64::MIN);
        assert_eq!(w.current(i64::MAX), Some(1));
    }
}
