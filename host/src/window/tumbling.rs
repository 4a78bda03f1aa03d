//! Keyed tumbling windows with allowed lateness.
//!
//! A window of size `size_ms` covers `[start, start + size_ms)` where
//! `start = ts - ts.rem_euclid(size_ms)`. Each window holds one accumulator per key.
//!
//! Life of a window, driven by the watermark `wm` passed to [`TumblingWindows::advance`]:
//!
//! 1. **Open** while `end > wm`: records are added to it.
//! 2. **Fired** once `end <= wm`: all its groups are emitted (`update = false`). Its state
//!    is kept while `end + allowed_lateness > wm`; late records that land in it mark their
//!    keys dirty and the next `advance` re-emits just those keys (`update = true`).
//! 3. **Final** once `end + allowed_lateness <= wm`: a last firing (`is_final = true`)
//!    emits whatever was not emitted yet and the window is dropped, releasing its offsets.
//!
//! Arithmetic near `i64::MIN` / `i64::MAX` saturates: the window holding `i64::MIN` starts
//! at `i64::MIN`, and a window whose end would exceed `i64::MAX` ends at `i64::MAX`.

use std::collections::{BTreeMap, BTreeSet};

use rivulet_rows::Scalar;
use thiserror::Error;

/// Invalid window parameters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowError {
    /// The window size is zero or negative.
    #[error("window size must be positive, got {size_ms} ms")]
    NonPositiveSize {
        /// The rejected size.
        size_ms: i64,
    },
    /// The allowed lateness is negative.
    #[error("allowed lateness must not be negative, got {allowed_lateness_ms} ms")]
    NegativeLateness {
        /// The rejected lateness.
        allowed_lateness_ms: i64,
    },
}

/// Where a record goes, given the current watermark (see [`TumblingWindows::assign`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Assignment {
    /// The window has not fired yet (`end > watermark`, or no watermark yet).
    Open {
        /// Start of the record's window.
        start: i64,
    },
    /// The window already fired but is within its allowed lateness: its state is kept and
    /// adding the record makes the next [`TumblingWindows::advance`] re-emit its key.
    Late {
        /// Start of the record's window.
        start: i64,
    },
    /// The window is past its allowed lateness and its state is gone: the record belongs on
    /// the late-data path.
    TooLate {
        /// Start of the record's window.
        start: i64,
    },
}

impl Assignment {
    /// Start of the record's window, whatever the assignment.
    pub fn start(&self) -> i64 {
        match *self {
            Assignment::Open { start }
            | Assignment::Late { start }
            | Assignment::TooLate { start } => start,
        }
    }
}

/// One emission of a window (see [`TumblingWindows::advance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing<A> {
    /// Window start (inclusive).
    pub start: i64,
    /// Window end (exclusive; saturated at `i64::MAX`).
    pub end: i64,
    /// The emitted groups, in key order: all groups on a window's first firing, only the
    /// keys changed since the previous firing otherwise (possibly none).
    pub groups: Vec<(Scalar, A)>,
    /// The window is past its allowed lateness and has been dropped: this is its last
    /// firing, and its offsets are released.
    pub is_final: bool,
    /// The window fired before: `groups` replace earlier results for the same keys.
    pub update: bool,
    /// Smallest contributing offset per partition of this window.
    pub min_offsets: BTreeMap<i32, i64>,
}

/// State of one window.
#[derive(Debug, Clone)]
struct Window<A> {
    /// One accumulator per key.
    groups: BTreeMap<Scalar, A>,
    /// Keys changed since the window last fired.
    dirty: BTreeSet<Scalar>,
    /// The window has fired at least once.
    fired: bool,
    /// Smallest offset per partition of the records added to this window.
    min_offsets: BTreeMap<i32, i64>,
}

impl<A> Default for Window<A> {
    fn default() -> Self {
        Window {
            groups: BTreeMap::new(),
            dirty: BTreeSet::new(),
            fired: false,
            min_offsets: BTreeMap::new(),
        }
    }
}

/// Keyed tumbling windows holding an accumulator `A` per (window, key), with allowed
/// lateness. See the [module documentation](self) for the life of a window.
///
/// Used for event time (pass watermarks) and processing time (pass the wall clock as the
/// watermark).
#[derive(Debug, Clone)]
pub struct TumblingWindows<A> {
    size_ms: i64,
    allowed_lateness_ms: i64,
    /// Windows by start.
    windows: BTreeMap<i64, Window<A>>,
}

impl<A> TumblingWindows<A> {
    /// Creates empty windows of `size_ms` (> 0) with `allowed_lateness_ms` (>= 0).
    pub fn new(size_ms: i64, allowed_lateness_ms: i64) -> Result<Self, WindowError> {
        if size_ms <= 0 {
            return Err(WindowError::NonPositiveSize { size_ms });
        }
        if allowed_lateness_ms < 0 {
            return Err(WindowError::NegativeLateness {
                allowed_lateness_ms,
            });
        }
        Ok(TumblingWindows {
            size_ms,
            allowed_lateness_ms,
            windows: BTreeMap::new(),
        })
    }

    /// The window size in milliseconds.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The allowed lateness in milliseconds.
    pub fn allowed_lateness_ms(&self) -> i64 {
        self.allowed_lateness_ms
    }

    /// Start of the window holding `ts`: `ts - ts.rem_euclid(size_ms)` (saturating at
    /// `i64::MIN`).
    pub fn window_start(&self, ts: i64) -> i64 {
        ts.saturating_sub(ts.rem_euclid(self.size_ms))
    }

    /// End (exclusive) of the window holding `ts`, saturating at `i64::MAX`.
    ///
    /// Computed from the unsaturated start so that the window clamped to `i64::MIN` still
    /// ends on a window boundary.
    pub fn window_end(&self, ts: i64) -> i64 {
        window_end(self.size_ms, ts)
    }

    /// Where a record at `ts` goes given the current watermark (`None`: no watermark yet,
    /// everything is [`Assignment::Open`]).
    ///
    /// - [`Assignment::Open`]: window end > watermark (not fired yet).
    /// - [`Assignment::Late`]: end <= watermark < end + allowed lateness (already fired,
    ///   state still kept: adding the record re-emits its key).
    /// - [`Assignment::TooLate`]: end + allowed lateness <= watermark (state gone).
    pub fn assign(&self, ts: i64, watermark: Option<i64>) -> Assignment {
        let start = self.window_start(ts);
        let Some(wm) = watermark else {
            return Assignment::Open { start };
        };
        let end = self.window_end(start);
        if end > wm {
            Assignment::Open { start }
        } else if end.saturating_add(self.allowed_lateness_ms) > wm {
            Assignment::Late { start }
        } else {
            Assignment::TooLate { start }
        }
    }

    /// The accumulator of `key` in the window starting at `start` (normalised to a window
    /// start), created with `init` if absent.
    ///
    /// Marks the key dirty (so an already-fired window re-emits it) and records
    /// `(partition, offset)` as a contributor: the window's minimum offset for `partition`
    /// becomes `min(existing, offset)`.
    pub fn accumulator(
        &mut self,
        start: i64,
        key: &Scalar,
        partition: i32,
        offset: i64,
        init: impl FnOnce() -> A,
    ) -> &mut A {
        let start = self.window_start(start);
        let window = self.windows.entry(start).or_default();
        window
            .min_offsets
            .entry(partition)
            .and_modify(|min| *min = (*min).min(offset))
            .or_insert(offset);
        if !window.dirty.contains(key) {
            window.dirty.insert(key.clone());
        }
        window.groups.entry(key.clone()).or_insert_with(init)
    }

    /// Smallest contributing offset per partition over all windows still held: offsets
    /// below these may be committed.
    pub fn min_offsets(&self) -> BTreeMap<i32, i64> {
        let mut mins = BTreeMap::new();
        for window in self.windows.values() {
            for (&partition, &offset) in &window.min_offsets {
                mins.entry(partition)
                    .and_modify(|min: &mut i64| *min = (*min).min(offset))
                    .or_insert(offset);
            }
        }
        mins
    }

    /// End of the earliest window that has not fired yet (when a processing-time timer
    /// should fire), or `None`.
    pub fn next_fire_at(&self) -> Option<i64> {
        self.windows
            .iter()
            .find(|(_, window)| !window.fired)
            .map(|(&start, _)| self.window_end(start))
    }

    /// Number of windows held (open, or fired and within their allowed lateness).
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Total number of keys over all windows held.
    pub fn groups(&self) -> usize {
        self.windows.values().map(|w| w.groups.len()).sum()
    }

    /// Drops all state (e.g. on a rebalance).
    pub fn clear(&mut self) {
        self.windows.clear();
    }

    /// Calls `f(start, key, accumulator)` for every accumulator, in window then key order
    /// (e.g. to convert accumulators to another representation). Does not mark keys dirty.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(i64, &Scalar, &mut A)) {
        for (&start, window) in &mut self.windows {
            for (key, acc) in &mut window.groups {
                f(start, key, acc);
            }
        }
    }
}

impl<A: Clone> TumblingWindows<A> {
    /// Fires windows for watermark `wm`, in window order, and clears their dirty keys.
    ///
    /// - A window with `end <= wm` that has not fired emits all its groups
    ///   (`update = false`).
    /// - An already-fired window with dirty keys emits just those keys (`update = true`).
    /// - A window with `end + allowed_lateness <= wm` is final: its firing has
    ///   `is_final = true` and the window is dropped. A window firing for the first time
    ///   and already past its lateness yields one firing (`is_final = true`,
    ///   `update = false`); an already-fired window becoming final with no dirty keys
    ///   yields a firing with empty groups (`is_final = true`, `update = true`) so the
    ///   caller learns its offsets are released.
    pub fn advance(&mut self, wm: i64) -> Vec<Firing<A>> {
        self.fire(Some(wm))
    }

    /// Fires everything as if the watermark were +infinity (end of a bounded input): every
    /// window fires as final and all state is dropped.
    pub fn drain(&mut self) -> Vec<Firing<A>> {
        self.fire(None)
    }

    /// Fires for watermark `wm` (`None`: +infinity).
    fn fire(&mut self, wm: Option<i64>) -> Vec<Firing<A>> {
        let lateness = self.allowed_lateness_ms;
        let mut firings = Vec::new();
        let mut finished = Vec::new();
        for (&start, window) in &mut self.windows {
            let end = window_end(self.size_ms, start);
            let is_final = match wm {
                None => true,
                // Ends grow with starts: no later window is due either.
                Some(wm) if end > wm => break,
                Some(wm) => end.saturating_add(lateness) <= wm,
            };
            let update = window.fired;
            if update && window.dirty.is_empty() && !is_final {
                continue;
            }
            let dirty = std::mem::take(&mut window.dirty);
            window.fired = true;
            if is_final {
                finished.push(start);
                let all = std::mem::take(&mut window.groups);
                let groups = if update {
                    all.into_iter().filter(|(k, _)| dirty.contains(k)).collect()
                } else {
                    all.into_iter().collect()
                };
                firings.push(Firing {
                    start,
                    end,
                    groups,
                    is_final,
                    update,
                    min_offsets: std::mem::take(&mut window.min_offsets),
                });
            } else {
                let groups = if update {
                    dirty
                        .into_iter()
                        .filter_map(|k| window.groups.get(&k).cloned().map(|a| (k, a)))
                        .collect()
                } else {
                    window
                        .groups
                        .iter()
                        .map(|(k, a)| (k.clone(), a.clone()))
                        .collect()
                };
                firings.push(Firing {
                    start,
                    end,
                    groups,
                    is_final,
                    update,
                    min_offsets: window.min_offsets.clone(),
                });
            }
        }
        for start in finished {
            self.windows.remove(&start);
        }
        firings
    }
}

/// End (exclusive) of the window holding `ts`; see [`TumblingWindows::window_end`].
fn window_end(size_ms: i64, ts: i64) -> i64 {
    let aligned = i128::from(ts) - i128::from(ts.rem_euclid(size_ms));
    i64::try_from(aligned + i128::from(size_ms)).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn key(s: &str) -> Scalar {
        Scalar::from(s)
    }

    /// Adds `n` to `k`'s count in the window of `ts`.
    fn add(w: &mut TumblingWindows<i64>, ts: i64, k: &str, partition: i32, offset: i64) {
        let start = w.window_start(ts);
        *w.accumulator(start, &key(k), partition, offset, || 0) += 1;
    }

    fn groups(f: &Firing<i64>) -> Vec<(String, i64)> {
        f.groups.iter().map(|(k, a)| (k.to_string(), *a)).collect()
    }

    #[test]
    fn new_rejects_non_positive_size_and_negative_lateness() {
        assert_eq!(
            TumblingWindows::<i64>::new(0, 0).unwrap_err(),
            WindowError::NonPositiveSize { size_ms: 0 }
        );
        assert!(TumblingWindows::<i64>::new(-5, 0).is_err());
        let err = TumblingWindows::<i64>::new(10, -1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "allowed lateness must not be negative, got -1 ms"
        );
        let w = TumblingWindows::<i64>::new(10, 0).unwrap();
        assert_eq!(w.size_ms(), 10);
        assert_eq!(w.allowed_lateness_ms(), 0);
    }

    #[test]
    fn window_start_rounds_down_for_negative_and_positive_timestamps() {
        let w = TumblingWindows::<i64>::new(10, 0).unwrap();
        assert_eq!(w.window_start(0), 0);
        assert_eq!(w.window_start(9), 0);
        assert_eq!(w.window_start(25), 20);
        assert_eq!(w.window_start(-1), -10);
        assert_eq!(w.window_start(-10), -10);
        assert_eq!(w.window_start(-11), -20);
        assert_eq!(w.window_end(-1), 0);
        assert_eq!(w.window_end(25), 30);
    }

    #[test]
    fn record_at_exact_end_belongs_to_next_window() {
        let w = TumblingWindows::<i64>::new(10, 0).unwrap();
        assert_eq!(w.assign(10, None), Assignment::Open { start: 10 });
        assert_eq!(w.assign(9, None), Assignment::Open { start: 0 });
        // Watermark 10 closes [0, 10) but not [10, 20).
        assert_eq!(w.assign(10, Some(10)), Assignment::Open { start: 10 });
        assert_eq!(w.assign(9, Some(10)), Assignment::TooLate { start: 0 });
    }

    #[test]
    fn assign_without_watermark_is_always_open() {
        let w = TumblingWindows::<i64>::new(10, 5).unwrap();
        assert_eq!(
            w.assign(i64::MIN, None),
            Assignment::Open { start: i64::MIN }
        );
        assert_eq!(w.assign(-3, None).start(), -10);
    }

    #[test]
    fn assign_classifies_open_late_and_too_late_by_watermark() {
        let w = TumblingWindows::<i64>::new(10, 5).unwrap();
        // Window [0, 10): open while wm < 10, late while wm < 15, too late after.
        assert_eq!(w.assign(3, Some(9)), Assignment::Open { start: 0 });
        assert_eq!(w.assign(3, Some(10)), Assignment::Late { start: 0 });
        assert_eq!(w.assign(3, Some(14)), Assignment::Late { start: 0 });
        assert_eq!(w.assign(3, Some(15)), Assignment::TooLate { start: 0 });
    }

    #[test]
    fn first_firing_emits_all_keys_in_key_order() {
        let mut w = TumblingWindows::new(10, 5).unwrap();
        add(&mut w, 1, "b", 0, 1);
        add(&mut w, 2, "a", 0, 2);
        add(&mut w, 3, "c", 1, 7);
        add(&mut w, 4, "a", 0, 3);
        add(&mut w, 12, "z", 0, 4); // next window, not due yet
        assert!(w.advance(9).is_empty());

        let firings = w.advance(10);
        assert_eq!(firings.len(), 1);
        let f = &firings[0];
        assert_eq!(
            (f.start, f.end, f.update, f.is_final),
            (0, 10, false, false)
        );
        assert_eq!(
            groups(f),
            vec![("a".into(), 2), ("b".into(), 1), ("c".into(), 1)]
        );
        assert_eq!(f.min_offsets, BTreeMap::from([(0, 1), (1, 7)]));
        // Nothing changed since: nothing more to fire.
        assert!(w.advance(10).is_empty());
        assert_eq!(w.open_windows(), 2);
    }

    #[test]
    fn late_record_within_lateness_reemits_only_its_key_as_update() {
        let mut w = TumblingWindows::new(10, 5).unwrap();
        add(&mut w, 1, "a", 0, 1);
        add(&mut w, 2, "b", 0, 2);
        w.advance(10);

        let Assignment::Late { start } = w.assign(5, Some(12)) else {
            panic!("expected late");
        };
        *w.accumulator(start, &key("b"), 0, 3, || 0) += 1;
        let firings = w.advance(12);
        assert_eq!(firings.len(), 1);
        let f = &firings[0];
        assert_eq!((f.start, f.update, f.is_final), (0, true, false));
        assert_eq!(groups(f), vec![("b".into(), 2)]);
        assert!(w.advance(13).is_empty());
    }

    #[test]
    fn record_after_lateness_is_too_late() {
        let mut w = TumblingWindows::new(10, 5).unwrap();
        add(&mut w, 1, "a", 0, 1);
        w.advance(10);
        w.advance(15);
        assert_eq!(w.open_windows(), 0);
        assert_eq!(w.assign(9, Some(15)), Assignment::TooLate { start: 0 });
        assert_eq!(
            w.assign(0, Some(i64::MAX)),
            Assignment::TooLate { start: 0 }
        );
    }

    #[test]
    fn final_firing_with_no_dirty_keys_returns_empty_groups_and_releases_offsets() {
        let mut w = TumblingWindows::new(10, 5).unwrap();
        add(&mut w, 1, "a", 2, 40);
        w.advance(10);
        assert_eq!(w.min_offsets(), BTreeMap::from([(2, 40)]));

        let firings = w.advance(15);
        assert_eq!(firings.len(), 1);
        let f = &firings[0];
        assert!(f.is_final);
        assert!(f.update);
        assert!(f.groups.is_empty());
        assert_eq!(f.min_offsets, BTreeMap::from([(2, 40)]));
        assert_eq!(w.open_windows(), 0);
        assert!(w.min_offsets().is_empty());
    }

    #[test]
    fn fired_window_with_dirty_keys_becoming_final_emits_them_in_its_final_firing() {
        let mut w = TumblingWindows::new(10, 5).unwrap();
        add(&mut w, 1, "a", 0, 1);
        add(&mut w, 2, "b", 0, 2);
        w.advance(10);
        add(&mut w, 3, "a", 0, 3);

        let firings = w.advance(20);
        assert_eq!(firings.len(), 1);
        let f = &firings[0];
        assert_eq!((f.update, f.is_final), (true, true));
        assert_eq!(groups(f), vec![("a".into(), 2)]);
    }

    #[test]
    fn late_record_for_window_without_state_fires_as_first_firing() {
        let mut w = TumblingWindows::new(10, 5).unwrap();
        add(&mut w, 25, "x", 0, 9);
        w.advance(12);
        // [0, 10) had no state when it became due; a record within lateness creates it.
        assert_eq!(w.assign(4, Some(12)), Assignment::Late { start: 0 });
        add(&mut w, 4, "a", 0, 10);
        let firings = w.advance(12);
        assert_eq!(firings.len(), 1);
        assert_eq!((firings[0].update, firings[0].is_final), (false, false));
        assert_eq!(groups(&firings[0]), vec![("a".into(), 1)]);
    }

    #[test]
    fn min_offsets_tracks_minimum_per_partition_across_windows_and_drops_released_windows() {
        let mut w = TumblingWindows::new(10, 0).unwrap();
        add(&mut w, 1, "a", 0, 10);
        add(&mut w, 2, "b", 0, 5);
        add(&mut w, 3, "a", 1, 100);
        add(&mut w, 11, "a", 0, 7);
        add(&mut w, 12, "a", 1, 50);
        add(&mut w, 13, "a", 2, 3);
        assert_eq!(w.min_offsets(), BTreeMap::from([(0, 5), (1, 50), (2, 3)]));

        let firings = w.advance(10);
        assert_eq!(firings[0].min_offsets, BTreeMap::from([(0, 5), (1, 100)]));
        assert_eq!(w.min_offsets(), BTreeMap::from([(0, 7), (1, 50), (2, 3)]));
        w.advance(20);
        assert!(w.min_offsets().is_empty());
    }

    #[test]
    fn drain_emits_everything_in_window_order_as_final() {
        let mut w = TumblingWindows::new(10, 100).unwrap();
        add(&mut w, 35, "c", 0, 3);
        add(&mut w, 5, "a", 0, 1);
        add(&mut w, 15, "b", 0, 2);
        w.advance(10); // [0, 10) fired, kept for lateness
        add(&mut w, 6, "a", 0, 4);

        let firings = w.drain();
        let summary: Vec<_> = firings
            .iter()
            .map(|f| (f.start, f.update, f.is_final, groups(f)))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, true, true, vec![("a".into(), 2)]),
                (10, false, true, vec![("b".into(), 1)]),
                (30, false, true, vec![("c".into(), 1)]),
            ]
        );
        assert_eq!(w.open_windows(), 0);
        assert!(w.drain().is_empty());
    }

    #[test]
    fn next_fire_at_is_end_of_earliest_unfired_window() {
        let mut w = TumblingWindows::new(10, 50).unwrap();
        assert_eq!(w.next_fire_at(), None);
        add(&mut w, 25, "a", 0, 1);
        add(&mut w, 3, "a", 0, 2);
        assert_eq!(w.next_fire_at(), Some(10));
        w.advance(10);
        // [0, 10) fired but is kept for lateness; it no longer needs a timer.
        assert_eq!(w.open_windows(), 2);
        assert_eq!(w.next_fire_at(), Some(30));
        w.advance(30);
        assert_eq!(w.next_fire_at(), None);
    }

    #[test]
    fn zero_lateness_fires_and_finalises_at_once() {
        let mut w = TumblingWindows::new(10, 0).unwrap();
        add(&mut w, 1, "a", 0, 1);
        add(&mut w, 11, "b", 0, 2);
        let firings = w.advance(10);
        assert_eq!(firings.len(), 1);
        let f = &firings[0];
        assert_eq!((f.start, f.update, f.is_final), (0, false, true));
        assert_eq!(groups(f), vec![("a".into(), 1)]);
        assert_eq!(w.open_windows(), 1);
        assert_eq!(w.assign(1, Some(10)), Assignment::TooLate { start: 0 });
    }

    #[test]
    fn watermark_jumping_past_several_windows_fires_them_in_order() {
        let mut w = TumblingWindows::new(10, 5).unwrap();
        add(&mut w, 21, "c", 0, 3);
        add(&mut w, 1, "a", 0, 1);
        add(&mut w, 11, "b", 0, 2);
        let firings = w.advance(27);
        let summary: Vec<_> = firings
            .iter()
            .map(|f| (f.start, f.end, f.update, f.is_final))
            .collect();
        // [20, 30) is still open at 27: only the first two fire, both past their lateness.
        assert_eq!(summary, vec![(0, 10, false, true), (10, 20, false, true)]);
        assert_eq!(w.next_fire_at(), Some(30));
    }

    #[test]
    fn windows_near_i64_max_fire_and_drain_without_overflow() {
        let mut w = TumblingWindows::new(1_000, i64::MAX).unwrap();
        let ts = i64::MAX - 1;
        let start = w.window_start(ts);
        assert_eq!(start, i64::MAX - i64::MAX.rem_euclid(1_000));
        assert_eq!(w.window_end(ts), i64::MAX);
        assert_eq!(w.assign(ts, Some(i64::MAX - 2)), Assignment::Open { start });
        assert_eq!(w.assign(ts, Some(i64::MAX)), Assignment::TooLate { start });
        add(&mut w, ts, "a", 0, 1);
        add(&mut w, i64::MAX - 5_000, "b", 0, 2);

        // Huge lateness: windows fire but end + lateness saturates, so they are kept.
        let firings = w.advance(i64::MAX - 1);
        assert_eq!(firings.len(), 1);
        assert!(!firings[0].is_final);
        assert_eq!(w.next_fire_at(), Some(i64::MAX));

        let firings = w.drain();
        assert_eq!(firings.len(), 2);
        assert_eq!(firings[1].start, start);
        assert_eq!(firings[1].end, i64::MAX);
        assert!(firings.iter().all(|f| f.is_final));
        assert_eq!(w.open_windows(), 0);

        let mut w = TumblingWindows::new(i64::MAX, 10).unwrap();
        add(&mut w, i64::MAX - 1, "a", 0, 1);
        let firings = w.advance(i64::MAX);
        assert_eq!(firings.len(), 1);
        assert!(firings[0].is_final);
    }

    #[test]
    fn windows_near_i64_min_saturate_start_and_keep_boundaries() {
        let w = TumblingWindows::<i64>::new(3, 0).unwrap();
        // i64::MIN is not a multiple of 3: its window is clamped at i64::MIN but still
        // ends on the boundary shared with the next window.
        let start = w.window_start(i64::MIN);
        assert_eq!(start, i64::MIN);
        let end = w.window_end(i64::MIN);
        assert_eq!(w.window_start(end), end);
        assert_eq!(w.window_start(end - 1), i64::MIN);
        assert_eq!(w.window_end(start), end);
        assert_eq!(
            w.assign(i64::MIN, Some(i64::MIN)),
            Assignment::Open { start }
        );
        assert_eq!(w.assign(i64::MIN, Some(end)), Assignment::TooLate { start });
    }

    #[test]
    fn accumulator_normalises_start_and_reuses_existing_group() {
        let mut w = TumblingWindows::new(10, 0).unwrap();
        *w.accumulator(3, &key("a"), 0, 5, || 100) += 1;
        *w.accumulator(0, &key("a"), 0, 6, || panic!("already exists")) += 1;
        assert_eq!(w.open_windows(), 1);
        assert_eq!(w.groups(), 1);
        let firings = w.advance(10);
        assert_eq!(groups(&firings[0]), vec![("a".into(), 102)]);
    }

    #[test]
    fn counts_clear_and_for_each_mut_cover_all_windows() {
        let mut w = TumblingWindows::new(10, 0).unwrap();
        add(&mut w, 1, "a", 0, 1);
        add(&mut w, 2, "b", 0, 2);
        add(&mut w, 15, "a", 0, 3);
        assert_eq!((w.open_windows(), w.groups()), (2, 3));

        let mut seen = Vec::new();
        w.for_each_mut(|start, k, acc| {
            seen.push((start, k.to_string()));
            *acc *= 10;
        });
        assert_eq!(
            seen,
            vec![(0, "a".into()), (0, "b".into()), (10, "a".into())]
        );
        let firings = w.advance(10);
        assert_eq!(
            groups(&firings[0]),
            vec![("a".into(), 10), ("b".into(), 10)]
        );

        w.clear();
        assert_eq!((w.open_windows(), w.groups()), (0, 0));
        assert!(w.min_offsets().is_empty());
        assert!(w.drain().is_empty());
    }
}
