//! Stage 2 of a job over Kafka: one partials partition's windows, merged.
//!
//! [`MergeWindows`] keeps, per (window, key), the latest partial of each source partition
//! (a partial is a source partition's whole accumulator, so a newer one replaces the older,
//! and a replayed copy changes nothing). It fires a window once every source partition's
//! marker in this partials partition has passed the window's end — a marker follows the
//! partials it vouches for, so at that point the window is complete. Source partitions
//! idle past their idle timeout are not waited for; with all of them idle, the most
//! advanced one decides. Partials arriving for a window that has fired but is within the
//! allowed lateness re-fire its changed keys as updates; once the watermark passes the
//! window's end plus the allowed lateness it is dropped, and a partial for it later on
//! (a replay after a restart of stage 1) is ignored.
//!
//! Pure and deterministic: no I/O, no clock.

use crate::window::exchange::{Merged, Partials};
use rivulet_rows::Scalar;
use std::collections::{BTreeMap, BTreeSet};

/// What a source partition's markers said last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    watermark: Option<i64>,
    idle: bool,
}

#[derive(Debug)]
struct Window<A> {
    end: i64,
    groups: BTreeMap<Scalar, BTreeMap<i32, A>>,
    dirty: BTreeSet<Scalar>,
    fired: bool,
    /// The lowest offset (in this partials partition) of a partial it holds.
    min_offset: i64,
}

/// What became of a partial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Kept (new, or different from the one it replaces).
    Kept,
    /// The same as the partial it would replace (a replay).
    Unchanged,
    /// Its window closed for good before: nothing to do.
    Closed,
}

/// One partials partition's windows.
#[derive(Debug)]
pub struct MergeWindows<A> {
    lateness_ms: i64,
    /// Source partitions: `0..sources` must all have reported before anything fires.
    sources: i32,
    marks: BTreeMap<i32, Mark>,
    windows: BTreeMap<i64, Window<A>>,
    /// Windows ending at or before `closed - lateness` are gone for good.
    closed: Option<i64>,
}

impl<A: Clone + PartialEq> MergeWindows<A> {
    /// Windows with `lateness_ms` of allowed lateness, fed by `sources` source partitions.
    pub fn new(lateness_ms: i64, sources: i32) -> Self {
        MergeWindows {
            lateness_ms: lateness_ms.max(0),
            sources,
            marks: BTreeMap::new(),
            windows: BTreeMap::new(),
            closed: None,
        }
    }

    /// After a restart: windows this watermark had closed for good stay closed.
    pub fn restore(&mut self, closed: i64) {
        self.closed = self.closed.max(Some(closed));
    }

    /// The source topic gained partitions.
    pub fn set_sources(&mut self, sources: i32) {
        self.sources = sources;
    }

    /// The watermark that decided which windows closed for good (for restart state).
    pub fn closed(&self) -> Option<i64> {
        self.closed
    }

    fn closed_for_good(&self, end: i64) -> bool {
        self.closed
            .is_some_and(|closed| end.saturating_add(self.lateness_ms) <= closed)
    }

    /// A partial read at `offset` of this partials partition.
    pub fn partial(
        &mut self,
        source: i32,
        start: i64,
        end: i64,
        key: Scalar,
        acc: A,
        offset: i64,
    ) -> Taken {
        if self.closed_for_good(end) {
            return Taken::Closed;
        }
        let window = self.windows.entry(start).or_insert_with(|| Window {
            end,
            groups: BTreeMap::new(),
            dirty: BTreeSet::new(),
            fired: false,
            min_offset: offset,
        });
        window.min_offset = window.min_offset.min(offset);
        let group = window.groups.entry(key.clone()).or_default();
        if group.get(&source) == Some(&acc) {
            return Taken::Unchanged;
        }
        group.insert(source, acc);
        window.dirty.insert(key);
        Taken::Kept
    }

    /// A marker: `source`'s watermark has reached `watermark` (never lowered).
    pub fn marker(&mut self, source: i32, watermark: Option<i64>, idle: bool) {
        let mark = self.marks.entry(source).or_insert(Mark {
            watermark: None,
            idle,
        });
        mark.watermark = mark.watermark.max(watermark);
        mark.idle = idle;
    }

    /// The watermark every source partition has passed, if each has reported.
    pub fn watermark(&self) -> Option<i64> {
        let reported = (0..self.sources).all(|s| self.marks.contains_key(&s));
        if !reported {
            return None;
        }
        let current = || {
            self.marks
                .iter()
                .filter(|(s, _)| (0..self.sources).contains(*s))
                .map(|(_, m)| m)
        };
        let mut active = current().filter(|m| !m.idle).peekable();
        let computed = if active.peek().is_some() {
            active.map(|m| m.watermark).min().flatten()
        } else {
            current().filter_map(|m| m.watermark).max()
        };
        computed.max(self.closed)
    }

    /// Source partitions whose markers have not come yet (why nothing fires).
    pub fn waiting_for(&self) -> Vec<i32> {
        (0..self.sources)
            .filter(|s| !self.marks.contains_key(s))
            .collect()
    }

    /// Fires what the markers have closed: a window's first firing has every key, later
    /// ones the keys whose partials changed. Windows past the allowed lateness go.
    pub fn advance(&mut self) -> Vec<Merged<A>> {
        let Some(wm) = self.watermark() else {
            return Vec::new();
        };
        let lateness = self.lateness_ms;
        let mut fired = Vec::new();
        let mut gone = Vec::new();
        for (&start, window) in self.windows.iter_mut() {
            if window.end > wm {
                break;
            }
            let is_final = window.end.saturating_add(lateness) <= wm;
            let keys: Vec<Scalar> = match window.fired {
                false => window.groups.keys().cloned().collect(),
                true => window.dirty.iter().cloned().collect(),
            };
            window.dirty.clear();
            let update = window.fired;
            window.fired = true;
            if is_final {
                gone.push(start);
            }
            if keys.is_empty() && !is_final {
                continue;
            }
            let groups = keys
                .into_iter()
                .filter_map(|key| {
                    let partials = window.groups.get(&key)?;
                    let partials: Partials<A> = partials
                        .iter()
                        .map(|(&source, acc)| (usize::try_from(source).unwrap_or(0), acc.clone()))
                        .collect();
                    Some((key, partials))
                })
                .collect();
            fired.push(Merged {
                start,
                end: window.end,
                groups,
                is_final,
                update,
            });
        }
        for start in gone {
            self.windows.remove(&start);
        }
        self.closed = self.closed.max(Some(wm));
        fired
    }

    /// Every open window, fired as if complete (the end of a bounded run).
    pub fn drain(&mut self) -> Vec<Merged<A>> {
        let marks: Vec<i32> = (0..self.sources).collect();
        for source in marks {
            self.marker(source, Some(i64::MAX), false);
        }
        self.advance()
    }

    /// The lowest offset of this partials partition a restart must read again (`None`:
    /// no open window holds a partial).
    pub fn needed(&self) -> Option<i64> {
        self.windows.values().map(|w| w.min_offset).min()
    }

    /// Open windows and (window, key) groups.
    pub fn open(&self) -> (usize, usize) {
        let groups = self.windows.values().map(|w| w.groups.len()).sum();
        (self.windows.len(), groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Scalar {
        Scalar::from(s)
    }

    /// Windows of 10 ms; results as (start, key, partials by source, update, final).
    type Seen = Vec<(i64, String, Vec<(usize, u64)>, bool, bool)>;

    fn seen(fired: Vec<Merged<u64>>) -> Seen {
        let mut out = Vec::new();
        for window in fired {
            for (key, partials) in window.groups {
                out.push((
                    window.start,
                    key.to_string(),
                    partials.into_iter().collect(),
                    window.update,
                    window.is_final,
                ));
            }
        }
        out
    }

    #[test]
    fn a_window_fires_once_every_source_has_passed_it_with_every_sources_partial() {
        let mut m = MergeWindows::new(0, 2);
        assert_eq!(m.partial(0, 0, 10, key("a"), 3, 100), Taken::Kept);
        m.marker(0, Some(10), false);
        // Source 1 has not reported: nothing fires, and the reason is known.
        assert!(m.advance().is_empty());
        assert_eq!(m.waiting_for(), vec![1]);
        assert_eq!(m.partial(1, 0, 10, key("a"), 4, 101), Taken::Kept);
        assert_eq!(m.partial(1, 0, 10, key("b"), 1, 102), Taken::Kept);
        m.marker(1, Some(9), false);
        assert!(
            m.advance().is_empty(),
            "source 1 is still inside the window"
        );
        m.marker(1, Some(10), false);
        assert_eq!(
            seen(m.advance()),
            vec![
                (0, "a".into(), vec![(0, 3), (1, 4)], false, true),
                (0, "b".into(), vec![(1, 1)], false, true),
            ]
        );
        assert_eq!(m.needed(), None);
        assert!(m.advance().is_empty());
    }

    #[test]
    fn a_replayed_partial_replaces_and_an_identical_one_changes_nothing() {
        let mut m = MergeWindows::new(0, 1);
        assert_eq!(m.partial(0, 0, 10, key("a"), 3, 5), Taken::Kept);
        assert_eq!(m.partial(0, 0, 10, key("a"), 3, 9), Taken::Unchanged);
        assert_eq!(m.partial(0, 0, 10, key("a"), 5, 12), Taken::Kept);
        m.marker(0, Some(20), false);
        assert_eq!(
            seen(m.advance()),
            vec![(0, "a".into(), vec![(0, 5)], false, true)]
        );
        // After it closed for good, a replayed partial is ignored.
        assert_eq!(m.partial(0, 0, 10, key("a"), 5, 13), Taken::Closed);
        assert!(m.advance().is_empty());
    }

    #[test]
    fn within_the_allowed_lateness_changed_keys_fire_again_as_updates() {
        let mut m = MergeWindows::new(5, 1);
        m.partial(0, 0, 10, key("a"), 1, 0);
        m.partial(0, 0, 10, key("b"), 1, 1);
        m.marker(0, Some(10), false);
        assert_eq!(
            seen(m.advance()),
            vec![
                (0, "a".into(), vec![(0, 1)], false, false),
                (0, "b".into(), vec![(0, 1)], false, false),
            ]
        );
        assert_eq!(
            m.needed(),
            Some(0),
            "its partials are needed until it closes"
        );
        m.partial(0, 0, 10, key("b"), 2, 7);
        m.partial(0, 0, 10, key("a"), 1, 8);
        m.marker(0, Some(12), false);
        assert_eq!(
            seen(m.advance()),
            vec![(0, "b".into(), vec![(0, 2)], true, false)]
        );
        m.marker(0, Some(15), false);
        let last = m.advance();
        assert_eq!(last.len(), 1);
        assert!(last[0].is_final && last[0].groups.is_empty());
        assert_eq!(m.needed(), None);
    }

    #[test]
    fn idle_sources_are_not_waited_for_and_all_idle_lets_the_furthest_decide() {
        let mut m = MergeWindows::new(0, 3);
        m.partial(0, 0, 10, key("a"), 1, 0);
        m.partial(0, 10, 20, key("a"), 1, 1);
        m.marker(0, Some(25), false);
        m.marker(1, None, true);
        m.marker(2, Some(12), false);
        assert_eq!(
            seen(m.advance()).len(),
            1,
            "window 0 only: source 2 is at 12"
        );
        m.marker(2, Some(12), true);
        assert_eq!(
            seen(m.advance()),
            vec![(10, "a".into(), vec![(0, 1)], false, true)]
        );
        // A source that comes back is waited for again, from where it is.
        m.partial(0, 20, 30, key("a"), 1, 2);
        m.marker(2, Some(14), false);
        m.marker(0, Some(40), false);
        assert!(m.advance().is_empty());
    }

    #[test]
    fn a_marker_never_lowers_a_sources_watermark() {
        let mut m = MergeWindows::new(0, 1);
        m.partial(0, 0, 10, key("a"), 1, 0);
        m.marker(0, Some(15), false);
        // A new owner of the source partition replays from an older position.
        m.marker(0, Some(3), false);
        assert_eq!(m.watermark(), Some(15));
        assert_eq!(seen(m.advance()).len(), 1);
    }

    #[test]
    fn after_a_restart_windows_closed_before_stay_closed_and_open_ones_rebuild() {
        let mut m = MergeWindows::new(0, 1);
        m.restore(10);
        assert_eq!(m.partial(0, 0, 10, key("a"), 1, 0), Taken::Closed);
        assert_eq!(m.partial(0, 10, 20, key("a"), 2, 1), Taken::Kept);
        assert_eq!(m.watermark(), None, "markers are needed again");
        m.marker(0, Some(8), false);
        assert_eq!(m.watermark(), Some(10), "never below what closed");
        m.marker(0, Some(20), false);
        assert_eq!(
            seen(m.advance()),
            vec![(10, "a".into(), vec![(0, 2)], false, true)]
        );
    }

    #[test]
    fn draining_fires_every_open_window() {
        let mut m = MergeWindows::new(1000, 2);
        m.partial(1, 0, 10, key("a"), 1, 0);
        m.partial(0, 30, 40, key("b"), 2, 1);
        let fired = seen(m.drain());
        assert_eq!(
            fired,
            vec![
                (0, "a".into(), vec![(1, 1)], false, true),
                (30, "b".into(), vec![(0, 2)], false, true),
            ]
        );
        assert_eq!(m.open(), (0, 0));
    }
}
