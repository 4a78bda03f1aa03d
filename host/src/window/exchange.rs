//! Two-phase aggregation across the tasks of a job.
//!
//! Each task keeps partial accumulators per (window, key) for its share of the input. When a
//! window fires for a task, the task deposits its partials here; the window is merged (the
//! aggregate's `merge`) and finished once, when every task has passed it. Results therefore
//! equal one task's: a window is emitted once, with every task's records.
//!
//! Two kinds of shares:
//! - **Independent** (Kafka partitions): the job's watermark is the minimum over the tasks'
//!   watermarks, and every task judges lateness against it.
//! - **Ordered** (consecutive splits of one file): one reader would have seen split `k`
//!   after splits `0..k`, so a record of split `k` is too late if its window had closed
//!   for good given the largest event time of the earlier splits (`P_k`) or of the records
//!   before it in its own split. The task knows the second at once; the first only once
//!   the earlier splits are read. So a task adds records its own split does not make too
//!   late, notes their line numbers per window, and the exchange decides per (task,
//!   window): if `P_k` closed the window, the partial is dropped and its lines go to the
//!   late records instead. A lower bound of `P_k` (the earlier tasks' progress) decides
//!   early; "not late" is known once every earlier split is read.
//!
//! The exchange also decides what a commit may say about closed windows. A window emitted
//! for good counts as closed in a task's commit ([`Exchange::closed_through`]) only once its
//! results were sent and every task that contributed to it has committed a snapshot taken
//! after its last deposit (or is committing one now). Until then the window's lowest offsets
//! stay needed ([`Exchange::needed`]). So any committed state that calls a window closed
//! implies that every task's committed read position lies past its records in that window:
//! a restart may take the largest closed watermark any partition committed.

use rivulet_rows::Scalar;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A task's place in the exchange.
pub type TaskId = usize;

/// One (window, key)'s partials, by task.
pub type Partials<A> = BTreeMap<TaskId, A>;

/// Line numbers kept as runs of consecutive lines: a split's records of one window mostly
/// are, so a window of thousands of records takes a few runs, not 8 bytes each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineRuns(Vec<(i64, u32)>);

impl LineRuns {
    pub fn push(&mut self, line: i64) {
        match self.0.last_mut() {
            Some((start, len))
                if start.saturating_add(i64::from(*len)) == line && *len < u32::MAX =>
            {
                *len += 1;
            }
            _ => self.0.push((line, 1)),
        }
    }

    pub fn append(&mut self, other: LineRuns) {
        for (start, len) in other.0 {
            match self.0.last_mut() {
                Some((last, n))
                    if last.saturating_add(i64::from(*n)) == start
                        && n.checked_add(len).is_some() =>
                {
                    *n += len;
                }
                _ => self.0.push((start, len)),
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every line, in the order noted.
    pub fn lines(&self) -> impl Iterator<Item = i64> + '_ {
        self.0
            .iter()
            .flat_map(|&(start, len)| start..start.saturating_add(i64::from(len)))
    }
}

impl FromIterator<i64> for LineRuns {
    fn from_iter<I: IntoIterator<Item = i64>>(iter: I) -> Self {
        let mut runs = LineRuns::default();
        for line in iter {
            runs.push(line);
        }
        runs
    }
}

/// A window ready to be merged and finished: like [`super::Firing`], with every task's
/// partial per key.
#[derive(Debug)]
pub struct Merged<A> {
    pub start: i64,
    pub end: i64,
    pub groups: Vec<(Scalar, Partials<A>)>,
    pub is_final: bool,
    pub update: bool,
}

/// What [`Exchange::take_ready`] hands the caller: windows to merge and finish, lines of
/// ordered splits that turned out too late, and a ticket to return once the results are
/// sent (until then, their offsets stay needed).
#[derive(Debug)]
pub struct Ready<A> {
    pub windows: Vec<Merged<A>>,
    /// Per task, line numbers (sorted) of records that are too late after all.
    pub late_lines: BTreeMap<TaskId, Vec<i64>>,
    pub ticket: u64,
}

struct Window<A> {
    end: i64,
    groups: BTreeMap<Scalar, Partials<A>>,
    dirty: BTreeSet<Scalar>,
    fired: bool,
    /// Per task, the lowest offset per partition of the records in its partials.
    min_offsets: BTreeMap<TaskId, BTreeMap<i32, i64>>,
    /// Ordered splits: lines each task added to this window.
    lines: BTreeMap<TaskId, LineRuns>,
    /// Per task, its deposit count at its last deposit to this window.
    deposits: BTreeMap<TaskId, u64>,
}

/// A window emitted for good that a commit may not yet call closed.
struct Closing {
    /// The results' ticket ([`Exchange::sent`]).
    ticket: u64,
    sent: bool,
    /// Window end + allowed lateness.
    closed: i64,
    /// The lowest offset per partition of its records.
    offsets: BTreeMap<i32, i64>,
    /// Per contributing task, the deposit count its commit must have reached.
    deposits: BTreeMap<TaskId, u64>,
}

impl Closing {
    /// Whether a commit may call this window closed: its results were sent, and every
    /// contributor committed after its last deposit (`task`: the one committing now).
    fn settled(&self, tasks: &[Progress], task: Option<TaskId>) -> bool {
        self.sent
            && self.deposits.iter().all(|(&t, &needed)| {
                Some(t) == task || tasks.get(t).is_some_and(|p| p.committed >= needed)
            })
    }
}

#[derive(Debug, Clone, Default)]
struct Progress {
    /// Owns input (a share of a file, or partitions).
    active: bool,
    /// Its own combined watermark.
    watermark: Option<i64>,
    /// It has deposited every window ending at or before this (`i64::MAX`: all).
    advanced: Option<i64>,
    /// Ordered splits: the largest event time it has seen, and whether it read its split
    /// to the end.
    max_seen: Option<i64>,
    finished: bool,
    /// How many deposits it made (never reset: a restart keeps counting).
    deposits: u64,
    /// Its deposit count when it took the snapshot it committed last.
    committed: u64,
}

/// Who reads a partition (independent shares).
#[derive(Debug, Clone, Copy)]
struct Owner {
    task: Option<TaskId>,
    /// When it lost its reader (a rebalance moves it between tasks).
    since: Instant,
}

struct State<A> {
    windows: BTreeMap<i64, Window<A>>,
    tasks: Vec<Progress>,
    /// Independent shares: every partition a task has read, and who reads it now.
    partitions: BTreeMap<i32, Owner>,
    /// Windows emitted for good that a commit may not yet call closed.
    closings: Vec<Closing>,
    next_ticket: u64,
    /// Every window closing (end + allowed lateness) at or before this has been emitted
    /// for good.
    emitted_through: Option<i64>,
}

impl<A> State<A> {
    /// Drops the closings every task may now call closed.
    fn settle(&mut self) {
        let tasks = &self.tasks;
        self.closings.retain(|c| !c.settled(tasks, None));
    }
}

/// The exchange of one windowed job with several tasks.
pub struct Exchange<A> {
    state: Mutex<State<A>>,
    size_ms: i64,
    lateness_ms: i64,
    out_of_orderness_ms: i64,
    ordered: bool,
    /// How long a partition without a reader holds the job back (a rebalance moving it
    /// between tasks; after that it is treated like an idle partition).
    unowned_grace: Duration,
}

impl<A> Exchange<A> {
    /// An exchange for `tasks` tasks over windows of `size_ms` with `lateness_ms` allowed
    /// lateness; `ordered`: the tasks read consecutive splits of one input.
    pub fn new(
        tasks: usize,
        size_ms: i64,
        lateness_ms: i64,
        out_of_orderness_ms: i64,
        ordered: bool,
        unowned_grace: Duration,
    ) -> Self {
        Exchange {
            state: Mutex::new(State {
                windows: BTreeMap::new(),
                // Every task holds the job back until it says what it reads (a task
                // that starts a moment after the others must not find its windows gone).
                tasks: vec![
                    Progress {
                        active: true,
                        ..Progress::default()
                    };
                    tasks
                ],
                partitions: BTreeMap::new(),
                closings: Vec::new(),
                next_ticket: 0,
                emitted_through: None,
            }),
            size_ms: size_ms.max(1),
            lateness_ms: lateness_ms.max(0),
            out_of_orderness_ms: out_of_orderness_ms.max(0),
            ordered,
            unowned_grace,
        }
    }

    /// Whether a partition moved between tasks lately has no reader yet: until it has (or
    /// the grace passes), nothing is judged late and no window is emitted, since its next
    /// reader will add to them.
    fn held_back(&self, state: &State<A>) -> bool {
        state
            .partitions
            .values()
            .any(|owner| owner.task.is_none() && owner.since.elapsed() < self.unowned_grace)
    }

    fn lock(&self) -> MutexGuard<'_, State<A>> {
        // Deposits are whole before the lock is released; a panicking task leaves none half done.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_ordered(&self) -> bool {
        self.ordered
    }

    /// A task (re)starts with `partitions` (none: it holds nothing back). What it deposited
    /// before and was not yet emitted is dropped: it rebuilds that by replay.
    pub fn restart(&self, task: TaskId, partitions: &[i32]) {
        let mut state = self.lock();
        let Some(progress) = state.tasks.get_mut(task) else {
            return;
        };
        *progress = Progress {
            active: !partitions.is_empty(),
            deposits: progress.deposits,
            committed: progress.committed,
            ..Progress::default()
        };
        if !self.ordered {
            let now = Instant::now();
            for owner in state.partitions.values_mut() {
                if owner.task == Some(task) {
                    *owner = Owner {
                        task: None,
                        since: now,
                    };
                }
            }
            for &p in partitions {
                state.partitions.insert(
                    p,
                    Owner {
                        task: Some(task),
                        since: now,
                    },
                );
            }
        }
        for window in state.windows.values_mut() {
            for partials in window.groups.values_mut() {
                partials.remove(&task);
            }
            window.groups.retain(|_, partials| !partials.is_empty());
            window.lines.remove(&task);
            window.min_offsets.remove(&task);
            window.deposits.remove(&task);
        }
    }

    /// A task's progress after a batch: its own combined watermark, and (ordered splits)
    /// the largest event time it has seen.
    pub fn publish(&self, task: TaskId, watermark: Option<i64>, max_seen: Option<i64>) {
        let mut state = self.lock();
        if let Some(progress) = state.tasks.get_mut(task) {
            progress.watermark = progress.watermark.max(watermark);
            progress.max_seen = progress.max_seen.max(max_seen);
        }
    }

    /// The job's watermark: the minimum over the tasks that own input (`None` while one of
    /// them has none, or none owns input).
    pub fn watermark(&self) -> Option<i64> {
        let state = self.lock();
        if self.held_back(&state) {
            return None;
        }
        let mut active = state.tasks.iter().filter(|t| t.active).peekable();
        active.peek()?;
        active.map(|t| t.watermark).min().flatten()
    }

    /// Ordered splits: a lower bound of the largest event time before `task`'s split.
    pub fn prefix_floor(&self, task: TaskId) -> Option<i64> {
        let state = self.lock();
        state
            .tasks
            .iter()
            .take(task)
            .filter_map(|t| t.max_seen)
            .max()
    }

    /// What task `task`'s commit, of a snapshot taken now, may call closed: every window
    /// closing at or before this was emitted for good, its results sent, and every other
    /// contributor committed after its last deposit.
    pub fn closed_through(&self, task: TaskId) -> Option<i64> {
        let state = self.lock();
        let unsettled = state
            .closings
            .iter()
            .filter(|c| !c.settled(&state.tasks, Some(task)))
            .map(|c| c.closed.saturating_sub(1))
            .min();
        match unsettled {
            Some(before) => state.emitted_through.map(|e| e.min(before)),
            None => state.emitted_through,
        }
    }

    /// Per partition of `partitions`, the lowest offset that task `task`'s commit, of a
    /// snapshot taken now, must keep: records of deposited windows, and of emitted ones that
    /// commit may not call closed yet.
    pub fn needed(&self, task: TaskId, partitions: &[i32]) -> BTreeMap<i32, i64> {
        let state = self.lock();
        let mut needed: BTreeMap<i32, i64> = BTreeMap::new();
        let held = state.windows.values().flat_map(|w| w.min_offsets.values());
        let closing = state
            .closings
            .iter()
            .filter(|c| !c.settled(&state.tasks, Some(task)))
            .map(|c| &c.offsets);
        for offsets in held.chain(closing) {
            for (&p, &offset) in offsets {
                if partitions.contains(&p) {
                    needed
                        .entry(p)
                        .and_modify(|min| *min = (*min).min(offset))
                        .or_insert(offset);
                }
            }
        }
        needed
    }

    /// How many deposits `task` has made (a snapshot notes it; see [`Exchange::committed`]).
    pub fn deposits(&self, task: TaskId) -> u64 {
        self.lock().tasks.get(task).map_or(0, |p| p.deposits)
    }

    /// `task` committed a snapshot taken when it had made `deposits` deposits.
    pub fn committed(&self, task: TaskId, deposits: u64) {
        let mut state = self.lock();
        if let Some(progress) = state.tasks.get_mut(task) {
            progress.committed = progress.committed.max(deposits);
        }
        state.settle();
    }

    /// A task's firing: its partials for window `start` (all keys on a first firing, the
    /// changed ones after), the lowest offsets of a window it let go of for good, and
    /// (ordered splits) the lines it added to it.
    pub fn deposit(
        &self,
        task: TaskId,
        start: i64,
        groups: Vec<(Scalar, A)>,
        min_offsets: BTreeMap<i32, i64>,
        lines: LineRuns,
    ) {
        let end = start.saturating_add(self.size_ms);
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(progress) = state.tasks.get_mut(task) else {
            return;
        };
        progress.deposits += 1;
        let count = progress.deposits;
        let window = state.windows.entry(start).or_insert_with(|| Window {
            end,
            groups: BTreeMap::new(),
            dirty: BTreeSet::new(),
            fired: false,
            min_offsets: BTreeMap::new(),
            lines: BTreeMap::new(),
            deposits: BTreeMap::new(),
        });
        window.deposits.insert(task, count);
        for (key, acc) in groups {
            window.dirty.insert(key.clone());
            window.groups.entry(key).or_default().insert(task, acc);
        }
        let held = window.min_offsets.entry(task).or_default();
        for (p, offset) in min_offsets {
            held.entry(p)
                .and_modify(|min| *min = (*min).min(offset))
                .or_insert(offset);
        }
        if !lines.is_empty() {
            window.lines.entry(task).or_default().append(lines);
        }
    }

    /// A task has deposited every window ending at or before `watermark`.
    pub fn advanced(&self, task: TaskId, watermark: i64) {
        let mut state = self.lock();
        if let Some(progress) = state.tasks.get_mut(task) {
            progress.advanced = Some(progress.advanced.map_or(watermark, |a| a.max(watermark)));
        }
    }

    /// A task read its share to the end and deposited everything.
    pub fn finished(&self, task: TaskId) {
        let mut state = self.lock();
        if let Some(progress) = state.tasks.get_mut(task) {
            progress.finished = true;
            progress.advanced = Some(i64::MAX);
        }
    }

    /// The results from [`Exchange::take_ready`] with this ticket were sent.
    pub fn sent(&self, ticket: u64) {
        let mut state = self.lock();
        for closing in &mut state.closings {
            if closing.ticket == ticket {
                closing.sent = true;
            }
        }
        state.settle();
    }
}

/// Whether task `k`'s partial of a window ending at `end` is too late after all, given
/// the earlier splits: `Some(true)` too late, `Some(false)` not, `None` not yet known.
fn ordered_verdict(tasks: &[Progress], k: TaskId, threshold: i64) -> Option<bool> {
    let earlier = tasks.get(..k).unwrap_or_default();
    let floor = earlier.iter().filter_map(|t| t.max_seen).max();
    if floor.is_some_and(|p| p >= threshold) {
        Some(true)
    } else if earlier.iter().all(|t| t.finished) {
        Some(false)
    } else {
        None
    }
}

impl<A: Clone> Exchange<A> {
    /// Windows every task has passed, with their partials; lines of ordered splits that
    /// are too late after all. Mirrors one task's firing: a window's first firing carries
    /// every key, later ones (allowed lateness) the keys changed since, the last one is
    /// final and drops the window.
    pub fn take_ready(&self) -> Ready<A> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut ready = Ready {
            windows: Vec::new(),
            late_lines: BTreeMap::new(),
            ticket: state.next_ticket,
        };
        state.next_ticket += 1;
        if self.held_back(state) {
            return ready;
        }
        let mut active = state.tasks.iter().filter(|t| t.active).peekable();
        if active.peek().is_none() {
            return ready;
        }
        let Some(mut through) = active.map(|t| t.advanced).min().flatten() else {
            return ready;
        };
        if self.ordered {
            // Decide what can be decided; a window with an undecided partial waits, and so
            // does every later one (windows fire in order).
            let slack = self.lateness_ms.saturating_add(self.out_of_orderness_ms);
            for window in state.windows.values_mut() {
                if window.end > through {
                    break;
                }
                let threshold = window.end.saturating_add(slack);
                let contributors: BTreeSet<TaskId> = window
                    .lines
                    .keys()
                    .copied()
                    .chain(window.groups.values().flat_map(|p| p.keys().copied()))
                    .filter(|&k| k > 0)
                    .collect();
                let mut undecided = false;
                for k in contributors {
                    match ordered_verdict(&state.tasks, k, threshold) {
                        Some(true) => {
                            for partials in window.groups.values_mut() {
                                partials.remove(&k);
                            }
                            window.groups.retain(|_, partials| !partials.is_empty());
                            window.dirty.retain(|key| window.groups.contains_key(key));
                            if let Some(lines) = window.lines.remove(&k) {
                                ready.late_lines.entry(k).or_default().extend(lines.lines());
                            }
                        }
                        Some(false) => {
                            window.lines.remove(&k);
                        }
                        None => undecided = true,
                    }
                }
                if undecided {
                    through = through.min(window.end.saturating_sub(1));
                    break;
                }
            }
            for lines in ready.late_lines.values_mut() {
                lines.sort_unstable();
            }
        }
        let lateness = self.lateness_ms;
        let mut finished = Vec::new();
        for (&start, window) in state.windows.iter_mut() {
            if window.end > through {
                break;
            }
            let is_final = through == i64::MAX || window.end.saturating_add(lateness) <= through;
            let update = window.fired;
            if update && window.dirty.is_empty() && !is_final {
                continue;
            }
            let dirty = std::mem::take(&mut window.dirty);
            window.fired = true;
            let groups: Vec<(Scalar, Partials<A>)> = if update {
                dirty
                    .into_iter()
                    .filter_map(|k| window.groups.get(&k).cloned().map(|p| (k, p)))
                    .collect()
            } else {
                window
                    .groups
                    .iter()
                    .map(|(k, p)| (k.clone(), p.clone()))
                    .collect()
            };
            if is_final {
                finished.push(start);
            }
            ready.windows.push(Merged {
                start,
                end: window.end,
                groups,
                is_final,
                update,
            });
        }
        for start in finished {
            let Some(window) = state.windows.remove(&start) else {
                continue;
            };
            let closed = window.end.saturating_add(lateness);
            state.emitted_through = state.emitted_through.max(Some(closed));
            let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
            for (&p, &offset) in window.min_offsets.values().flatten() {
                offsets
                    .entry(p)
                    .and_modify(|min| *min = (*min).min(offset))
                    .or_insert(offset);
            }
            state.closings.push(Closing {
                ticket: ready.ticket,
                sent: false,
                closed,
                offsets,
                deposits: window.deposits,
            });
        }
        ready
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    fn key(k: &str) -> Scalar {
        Scalar::Text(k.into())
    }

    fn counts(ready: &Ready<u64>) -> Vec<(i64, String, u64)> {
        let mut out = Vec::new();
        for w in &ready.windows {
            for (k, partials) in &w.groups {
                out.push((w.start, k.to_string(), partials.values().sum()));
            }
        }
        out
    }

    #[test]
    fn consecutive_lines_take_one_run_and_come_back_in_order() {
        let mut runs: LineRuns = [5, 6, 7, 9, 10, 3].into_iter().collect();
        runs.append([11, 12, 20].into_iter().collect());
        assert_eq!(runs.0, vec![(5, 3), (9, 2), (3, 1), (11, 2), (20, 1)]);
        let lines: Vec<i64> = runs.lines().collect();
        assert_eq!(lines, vec![5, 6, 7, 9, 10, 3, 11, 12, 20]);
        let mut joined: LineRuns = [1, 2].into_iter().collect();
        joined.append([3, 4].into_iter().collect());
        assert_eq!(joined.0, vec![(1, 4)]);
    }

    #[test]
    fn a_window_is_merged_once_every_task_has_passed_it() {
        let x: Exchange<u64> = Exchange::new(2, 10, 0, 0, false, GRACE);
        x.restart(0, &[0]);
        x.restart(1, &[1]);
        x.deposit(
            0,
            0,
            vec![(key("a"), 2), (key("b"), 1)],
            [(0, 5)].into(),
            LineRuns::default(),
        );
        x.advanced(0, 10);
        assert!(
            x.take_ready().windows.is_empty(),
            "task 1 has not passed it"
        );
        assert_eq!(x.needed(0, &[0, 1]), BTreeMap::from([(0, 5)]));
        x.deposit(
            1,
            0,
            vec![(key("a"), 3)],
            [(1, 7)].into(),
            LineRuns::default(),
        );
        x.advanced(1, 12);
        let ready = x.take_ready();
        assert_eq!(counts(&ready), vec![(0, "a".into(), 5), (0, "b".into(), 1)]);
        assert!(ready.windows[0].is_final);
        // Until the results are reported sent, their offsets stay needed.
        assert_eq!(x.needed(0, &[0, 1]), BTreeMap::from([(0, 5), (1, 7)]));
        assert_eq!(x.closed_through(0), Some(9), "not sent yet");
        x.sent(ready.ticket);
        // Sent, but a commit may call it closed only once every contributor committed a
        // snapshot taken after its deposit (the committing task counts its own).
        assert_eq!(x.needed(0, &[0, 1]), BTreeMap::from([(0, 5), (1, 7)]));
        assert_eq!(x.closed_through(0), Some(9));
        x.committed(1, x.deposits(1));
        assert!(x.needed(0, &[0, 1]).is_empty());
        assert_eq!(x.closed_through(0), Some(10));
        assert_eq!(x.closed_through(1), Some(9), "task 0 has not committed");
        x.committed(0, x.deposits(0));
        assert_eq!(x.closed_through(1), Some(10));
        assert!(x.needed(1, &[0, 1]).is_empty());
    }

    #[test]
    fn a_task_without_input_holds_nothing_back_and_a_restart_drops_its_deposits() {
        let x: Exchange<u64> = Exchange::new(3, 10, 0, 0, false, GRACE);
        x.restart(0, &[0]);
        x.restart(1, &[1]);
        x.restart(2, &[]);
        x.deposit(
            0,
            0,
            vec![(key("a"), 2)],
            [(0, 1)].into(),
            LineRuns::default(),
        );
        x.deposit(
            1,
            0,
            vec![(key("a"), 4)],
            [(1, 1)].into(),
            LineRuns::default(),
        );
        // Task 1 loses its partition (a rebalance): it will replay, so its deposit goes,
        // and while partition 1 has no reader nothing is emitted or judged late.
        x.restart(1, &[]);
        x.advanced(0, 10);
        x.publish(0, Some(10), None);
        assert!(x.take_ready().windows.is_empty());
        assert_eq!(x.watermark(), None);
        // Task 2 takes it over and catches up.
        x.restart(2, &[1]);
        x.publish(2, Some(12), None);
        assert_eq!(x.watermark(), Some(10));
        x.deposit(
            2,
            0,
            vec![(key("a"), 4)],
            [(1, 1)].into(),
            LineRuns::default(),
        );
        x.advanced(2, 12);
        assert_eq!(counts(&x.take_ready()), vec![(0, "a".into(), 6)]);
    }

    #[test]
    fn a_partition_left_without_a_reader_stops_holding_back_after_the_grace() {
        let x: Exchange<u64> = Exchange::new(2, 10, 0, 0, false, Duration::from_millis(50));
        x.restart(0, &[0]);
        x.restart(1, &[1]);
        x.restart(1, &[]);
        x.publish(0, Some(20), None);
        x.deposit(
            0,
            0,
            vec![(key("a"), 2)],
            BTreeMap::new(),
            LineRuns::default(),
        );
        x.advanced(0, 20);
        assert!(x.take_ready().windows.is_empty());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(x.watermark(), Some(20));
        assert_eq!(counts(&x.take_ready()), vec![(0, "a".into(), 2)]);
    }

    #[test]
    fn a_task_that_has_not_started_yet_holds_the_job_back() {
        let x: Exchange<u64> = Exchange::new(2, 10, 0, 0, false, GRACE);
        x.restart(0, &[0, 2]);
        x.publish(0, Some(50), None);
        x.deposit(
            0,
            0,
            vec![(key("a"), 2)],
            BTreeMap::new(),
            LineRuns::default(),
        );
        x.advanced(0, 50);
        assert_eq!(x.watermark(), None);
        assert!(
            x.take_ready().windows.is_empty(),
            "task 1 has not said what it reads"
        );
        x.restart(1, &[1]);
        x.publish(1, Some(40), None);
        x.deposit(
            1,
            0,
            vec![(key("a"), 3)],
            BTreeMap::new(),
            LineRuns::default(),
        );
        x.advanced(1, 40);
        assert_eq!(counts(&x.take_ready()), vec![(0, "a".into(), 5)]);
    }

    #[test]
    fn the_job_watermark_is_the_slowest_task_with_input() {
        let x: Exchange<u64> = Exchange::new(3, 10, 0, 0, false, GRACE);
        assert_eq!(x.watermark(), None);
        x.restart(0, &[0]);
        x.restart(1, &[1]);
        x.restart(2, &[]);
        x.publish(0, Some(50), None);
        assert_eq!(x.watermark(), None, "task 1 has no watermark yet");
        x.publish(1, Some(30), None);
        assert_eq!(x.watermark(), Some(30));
    }

    #[test]
    fn allowed_lateness_fires_first_then_changed_keys_then_final() {
        let x: Exchange<u64> = Exchange::new(2, 10, 5, 0, false, GRACE);
        x.restart(0, &[0]);
        x.restart(1, &[1]);
        x.deposit(
            0,
            0,
            vec![(key("a"), 1), (key("b"), 1)],
            BTreeMap::new(),
            LineRuns::default(),
        );
        x.deposit(
            1,
            0,
            vec![(key("a"), 1)],
            BTreeMap::new(),
            LineRuns::default(),
        );
        x.advanced(0, 10);
        x.advanced(1, 10);
        let first = x.take_ready();
        assert_eq!(counts(&first), vec![(0, "a".into(), 2), (0, "b".into(), 1)]);
        assert!(!first.windows[0].update && !first.windows[0].is_final);
        // A late record on task 1 for key b.
        x.deposit(
            1,
            0,
            vec![(key("b"), 1)],
            [(1, 9)].into(),
            LineRuns::default(),
        );
        x.advanced(0, 15);
        x.advanced(1, 15);
        let last = x.take_ready();
        assert_eq!(counts(&last), vec![(0, "b".into(), 2)]);
        assert!(last.windows[0].update && last.windows[0].is_final);
    }

    #[test]
    fn an_ordered_split_partial_closed_by_the_earlier_splits_becomes_late_lines() {
        // Out-of-orderness 0, lateness 0: window [0,10) of split 1 is too late once split 0
        // saw event time 10.
        let x: Exchange<u64> = Exchange::new(2, 10, 0, 0, true, GRACE);
        x.restart(0, &[0]);
        x.restart(1, &[0]);
        // Split 1 starts with two records of window 0 (lines 100, 101) and moves on.
        x.deposit(
            1,
            0,
            vec![(key("a"), 2)],
            BTreeMap::new(),
            [101, 100].into_iter().collect(),
        );
        x.deposit(
            1,
            10,
            vec![(key("a"), 5)],
            BTreeMap::new(),
            [102].into_iter().collect(),
        );
        x.advanced(1, 30);
        x.publish(0, Some(4), Some(4));
        x.deposit(
            0,
            0,
            vec![(key("a"), 1)],
            BTreeMap::new(),
            LineRuns::default(),
        );
        x.advanced(0, 5);
        assert!(
            x.take_ready().windows.is_empty(),
            "split 0 is still in window 0"
        );
        // Split 0 sees event time 12: window 0 had closed before split 1's first record.
        x.publish(0, Some(12), Some(12));
        x.advanced(0, 12);
        let ready = x.take_ready();
        assert_eq!(counts(&ready), vec![(0, "a".into(), 1)]);
        assert_eq!(ready.late_lines, BTreeMap::from([(1, vec![100, 101])]));
        // Window 10: split 0 is not done and saw less than 10 + 10: undecided... until
        // split 0 finishes (its largest event time was 12 < 20: not late).
        x.deposit(
            0,
            10,
            vec![(key("a"), 1)],
            BTreeMap::new(),
            LineRuns::default(),
        );
        x.finished(0);
        x.finished(1);
        let ready = x.take_ready();
        assert_eq!(counts(&ready), vec![(10, "a".into(), 6)]);
        assert!(ready.late_lines.is_empty());
    }
}
