//! A shadow's thread: runs the candidate on each feed, compares its output with the live
//! module's, and stops at its bound, on a trap or limit, or when asked.

use super::diff::{Output, RecordDiff, WindowsDiff};
use super::feed::{Feed, Fired, Group, LiveRows};
use super::{Bound, Control, Report, ShadowBoard, State, lock};
use crate::stage::{AggregateStage, FormatStage, MapStage, ParseStage};
use rivulet_rows::{Batch, RawBatch, Scalar, WindowAcc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A checked candidate, started in its own store with the stage's limits.
pub enum ShadowStage {
    Parse(Box<dyn ParseStage>),
    Map(Box<dyn MapStage>),
    Format(Box<dyn FormatStage>),
    Aggregate {
        stage: Box<dyn AggregateStage>,
        /// `create()`'s result.
        empty: Vec<u8>,
    },
}

/// An aggregate shadow's own accumulators, per window start and key.
pub(super) struct Windows {
    accs: BTreeMap<i64, BTreeMap<Scalar, Vec<u8>>>,
    /// Windows that were open before the shadow started.
    partial: BTreeSet<i64>,
    /// What `accs` holds, in bytes (accumulators, plus [`ENTRY_OVERHEAD`] per entry).
    held: usize,
    /// The most `held` may reach before the shadow is dropped.
    cap: usize,
}

/// The most memory an aggregate shadow's accumulators may take (the live job's own are
/// not capped: they are the job's state). A candidate whose accumulators grow past it is
/// dropped, with the figure, before it can starve the process.
pub const SHADOW_ACCUMULATOR_CAP: usize = 64 << 20;

/// What a (window, key) entry costs besides its accumulator's bytes: the key and the map.
const ENTRY_OVERHEAD: usize = 64;

impl Default for Windows {
    fn default() -> Self {
        Windows::with_cap(SHADOW_ACCUMULATOR_CAP)
    }
}

impl Windows {
    pub(super) fn with_cap(cap: usize) -> Self {
        Windows {
            accs: BTreeMap::new(),
            partial: BTreeSet::new(),
            held: 0,
            cap,
        }
    }

    /// Keeps `acc` as the accumulator of `key` in the window at `start`; an error when the
    /// shadow's accumulators now take more than the cap.
    fn put(&mut self, start: i64, key: &Scalar, acc: Vec<u8>) -> Result<(), String> {
        let added = acc.len() + ENTRY_OVERHEAD;
        let keys = self.accs.entry(start).or_default();
        let old = keys.insert(key.clone(), acc);
        self.held = self.held + added - old.map_or(0, |old| old.len() + ENTRY_OVERHEAD);
        if self.held > self.cap {
            let entries: usize = self.accs.values().map(BTreeMap::len).sum();
            return Err(format!(
                "its accumulators took {} bytes ({entries} windows × keys), more than a shadow's cap of {} bytes",
                self.held, self.cap
            ));
        }
        Ok(())
    }

    /// Forgets the window at `start` (finished for good).
    fn remove(&mut self, start: i64) {
        if let Some(keys) = self.accs.remove(&start) {
            let freed: usize = keys.values().map(|acc| acc.len() + ENTRY_OVERHEAD).sum();
            self.held -= freed;
        }
        self.partial.remove(&start);
    }
}

pub(super) struct Runner {
    pub stage: String,
    pub candidate: ShadowStage,
    pub feeds: Receiver<Feed>,
    pub report: Arc<Mutex<Report>>,
    pub control: Arc<Control>,
    pub bound: Bound,
    pub board: Weak<ShadowBoard>,
    pub aggregate: Windows,
}

/// How often an idle shadow looks at its bound and its control.
const IDLE: Duration = Duration::from_millis(100);

pub(super) fn spawn(runner: Runner) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("rivulet-shadow-{}", runner.stage))
        .spawn(move || runner.run())
        .map(|_| ())
}

/// `partition/offset` of record `i` of `raw`.
fn record_at(raw: &RawBatch, i: u32) -> String {
    match raw.record(i as usize) {
        Some(record) => format!("{}/{}", record.partition, record.offset),
        None => format!("record {i}"),
    }
}

impl Runner {
    fn run(mut self) {
        let started = Instant::now();
        let outcome = loop {
            if let Some(why) = self.control.reason() {
                break why;
            }
            if let Bound::For(limit) = self.bound
                && started.elapsed() >= limit
            {
                break (State::Finished, format!("ran {}", self.bound));
            }
            match self.feeds.recv_timeout(IDLE) {
                Ok(feed) => {
                    let waiting = self.control.queued.load(Ordering::Relaxed);
                    let taken = self.take(feed, waiting);
                    // Taken only now: `settle` waits for the last feed's comparison too.
                    self.control.queued.fetch_sub(1, Ordering::Relaxed);
                    if let Err(reason) = taken {
                        break (State::Dropped, reason);
                    }
                    if let (Bound::Windows(n), Some(windows)) =
                        (self.bound, &lock(&self.report).windows)
                        && windows.compared >= u64::from(n)
                    {
                        break (State::Finished, format!("compared {n} windows"));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    break (State::Finished, "the job stopped".to_owned());
                }
            }
        };
        self.control.stop(outcome.0, outcome.1.clone());
        let (state, reason) = self.control.reason().unwrap_or(outcome);
        {
            let mut report = lock(&self.report);
            if matches!(report.state, State::Running) {
                report.state = state;
                report.reason = Some(reason.clone());
            }
        }
        match state {
            State::Dropped => {
                tracing::warn!(stage = %self.stage, "shadow dropped: {reason}; the live module keeps running")
            }
            _ => tracing::info!(stage = %self.stage, "shadow stopped: {reason}"),
        }
        // The candidate's instance goes with this thread.
        drop(self.candidate);
        if let Some(board) = self.board.upgrade() {
            board.closed(&self.stage);
        }
    }

    /// Runs the candidate on one feed and adds the comparison to the report. An error is
    /// why the shadow must stop.
    fn take(&mut self, feed: Feed, waiting: usize) -> Result<(), String> {
        {
            let mut report = lock(&self.report);
            report.batches += 1;
            report.most_behind = report.most_behind.max(waiting);
        }
        let trapped =
            |err: crate::udf::UdfError| format!("the shadow trapped or hit a limit: {err}");
        match (&mut self.candidate, feed) {
            (ShadowStage::Parse(stage), Feed::Parse { input, live, busy }) => {
                let live_side = (live.errors.len(), live.trapped, busy);
                let (mut report, out) = called(
                    &self.report,
                    input.len,
                    live_side,
                    || stage.parse(&input),
                    |o| o.errors.len(),
                )?;
                let records = report.records.get_or_insert_with(RecordDiff::default);
                compare_rows(records, input.len, &live, &out, |i| record_at(&input, i));
            }
            (ShadowStage::Map(stage), Feed::Map { input, live, busy }) => {
                let live_side = (live.errors.len(), live.trapped, busy);
                let (mut report, out) = called(
                    &self.report,
                    input.len,
                    live_side,
                    || stage.map(&input),
                    |o| o.errors.len(),
                )?;
                let seen = report.live.inputs - u64::from(input.len);
                let records = report.records.get_or_insert_with(RecordDiff::default);
                compare_rows(records, input.len, &live, &out, |i| {
                    format!("row {}", seen + u64::from(i))
                });
            }
            (
                ShadowStage::Format(stage),
                Feed::Format {
                    input,
                    live,
                    trapped,
                    busy,
                },
            ) => {
                let live_side = (live.errors.len(), trapped, busy);
                let (mut report, out) = called(
                    &self.report,
                    input.len,
                    live_side,
                    || stage.format(&input),
                    |o| o.errors.len(),
                )?;
                let records = report.records.get_or_insert_with(RecordDiff::default);
                records.payloads(input.len, &live, &out);
            }
            (
                ShadowStage::Aggregate { stage, empty },
                Feed::Add {
                    rows,
                    groups,
                    open,
                    errors,
                    busy,
                },
            ) => {
                if let Some(open) = open {
                    self.aggregate.partial.extend(open);
                }
                let (took, out) = add(&mut **stage, empty, &mut self.aggregate, &rows, &groups);
                let inputs: u64 = groups.iter().map(|g| g.rows.len() as u64).sum();
                let mut report = lock(&self.report);
                report.live.add(inputs, errors, false, busy);
                let (shadow_errors, trap) = match out {
                    Ok(Added::Kept(errors)) => (errors, None),
                    Ok(Added::OverCap(why)) => {
                        report.shadow.add(inputs, 0, false, took);
                        return Err(why);
                    }
                    Err(err) => (0, Some(err)),
                };
                report
                    .shadow
                    .add(inputs, shadow_errors, trap.is_some(), took);
                if let Some(err) = trap {
                    return Err(trapped(err));
                }
            }
            (ShadowStage::Aggregate { stage, .. }, Feed::Fired { windows, busy }) => {
                let called = Instant::now();
                let compared = finish(&mut **stage, &mut self.aggregate, windows);
                let took = called.elapsed();
                let mut report = lock(&self.report);
                report.live.add(0, 0, false, busy);
                let compared = match compared {
                    Ok(compared) => compared,
                    Err(err) => {
                        report.shadow.add(0, 0, true, took);
                        return Err(trapped(err));
                    }
                };
                report.shadow.add(0, 0, false, took);
                let diff = report.windows.get_or_insert_with(WindowsDiff::default);
                for (start, end, partial, results) in compared {
                    diff.window(start, end, partial, results);
                }
            }
            // A feed of another kind cannot reach this shadow (the tap is per stage).
            _ => {}
        }
        Ok(())
    }
}

/// Calls the candidate on a record stage's batch of `inputs` and counts both sides'
/// work (`live`: its errors, whether it trapped, its time). Returns the report, locked,
/// and the candidate's output; an error is why the shadow must stop.
fn called<'r, T>(
    report: &'r Mutex<Report>,
    inputs: u32,
    live: (usize, bool, Duration),
    call: impl FnOnce() -> Result<T, crate::udf::UdfError>,
    errors: impl Fn(&T) -> usize,
) -> Result<(std::sync::MutexGuard<'r, Report>, T), String> {
    let called = Instant::now();
    let out = call();
    let took = called.elapsed();
    let mut report = lock(report);
    let (live_errors, live_trapped, busy) = live;
    report
        .live
        .add(u64::from(inputs), live_errors as u64, live_trapped, busy);
    match out {
        Ok(out) => {
            report
                .shadow
                .add(u64::from(inputs), errors(&out) as u64, false, took);
            Ok((report, out))
        }
        Err(err) => {
            report.shadow.add(u64::from(inputs), 0, true, took);
            Err(format!("the shadow trapped or hit a limit: {err}"))
        }
    }
}

/// Compares the live module's rows with the candidate's.
fn compare_rows(
    records: &mut RecordDiff,
    inputs: u32,
    live: &LiveRows,
    out: &rivulet_rows::RowsOut,
    at: impl Fn(u32) -> String,
) {
    records.rows(
        inputs,
        &Output {
            rows: &live.rows,
            origins: &live.origins,
            errors: &live.errors,
        },
        &Output {
            rows: &out.rows,
            origins: &out.origins,
            errors: &out.errors,
        },
        at,
    );
}

/// Adds the rows of `groups` to the shadow's own accumulators; the rows it refused.
fn add(
    stage: &mut dyn AggregateStage,
    empty: &[u8],
    windows: &mut Windows,
    rows: &Batch,
    groups: &[Group],
) -> (Duration, Result<Added, crate::udf::UdfError>) {
    let mut selected = Vec::new();
    let mut group_of = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        for &row in &group.rows {
            selected.push(row);
            group_of.push(index as u32);
        }
    }
    if selected.is_empty() {
        return (Duration::ZERO, Ok(Added::Kept(0)));
    }
    // The rows in the order of their groups, each with its group.
    let input = rows.select(&selected);
    let accs: Vec<Vec<u8>> = groups
        .iter()
        .map(|g| {
            windows
                .accs
                .get(&g.start)
                .and_then(|keys| keys.get(&g.key))
                .cloned()
                .unwrap_or_else(|| empty.to_vec())
        })
        .collect();
    let called = Instant::now();
    let added = stage.add(accs, &input, &group_of);
    let took = called.elapsed();
    let added = match added {
        Ok(added) => added,
        Err(err) => return (took, Err(err)),
    };
    for (group, acc) in groups.iter().zip(added.accs) {
        if let Err(over) = windows.put(group.start, &group.key, acc) {
            return (took, Ok(Added::OverCap(over)));
        }
    }
    (took, Ok(Added::Kept(added.errors.len() as u64)))
}

/// What adding a batch to an aggregate shadow's accumulators came to.
#[derive(Debug, PartialEq)]
enum Added {
    /// Kept, with this many rows the candidate refused.
    Kept(u64),
    /// The accumulators outgrew the cap: why the shadow must stop.
    OverCap(String),
}

/// A compared window: start, end, whether the shadow saw only part of it, and per key (as
/// JSON text) the key, the live result and the shadow's.
type Compared = (
    i64,
    i64,
    bool,
    BTreeMap<String, (Value, Option<Value>, Option<Value>)>,
);

/// Finishes the shadow's accumulators of the windows the live module finished, and pairs
/// each key's results.
fn finish(
    stage: &mut dyn AggregateStage,
    windows: &mut Windows,
    fired: Vec<Fired>,
) -> Result<Vec<Compared>, crate::udf::UdfError> {
    let mut by_start: BTreeMap<i64, (i64, bool, Vec<Fired>)> = BTreeMap::new();
    for window in fired {
        let entry = by_start
            .entry(window.start)
            .or_insert((window.end, false, Vec::new()));
        entry.1 |= window.is_final;
        entry.2.push(window);
    }
    let mut compared = Vec::with_capacity(by_start.len());
    for (start, (end, is_final, live)) in by_start {
        let own: Vec<WindowAcc> = windows
            .accs
            .get(&start)
            .map(|keys| {
                keys.iter()
                    .map(|(key, acc)| WindowAcc {
                        key: key.clone(),
                        window_start: start,
                        window_end: end,
                        acc: acc.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut results: BTreeMap<String, (Value, Option<Value>, Option<Value>)> = BTreeMap::new();
        for window in live {
            let key = window.key.to_json();
            results.insert(key.to_string(), (key, window.result.ok(), None));
        }
        if !own.is_empty() {
            let keys: Vec<Value> = own.iter().map(|w| w.key.to_json()).collect();
            let out = stage.finish(own)?;
            for (row, &origin) in out.origins.iter().enumerate().take(out.rows.len as usize) {
                let Some(key) = keys.get(origin as usize) else {
                    continue;
                };
                let value = Value::Object(crate::format::json::row_object(&out.rows, row));
                results
                    .entry(key.to_string())
                    .or_insert_with(|| (key.clone(), None, None))
                    .2 = Some(value);
            }
        }
        let partial = windows.partial.contains(&start);
        if is_final {
            windows.remove(start);
        }
        compared.push((start, end, partial, results));
    }
    Ok(compared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shadow_whose_accumulators_outgrow_the_cap_is_told_why_and_finished_windows_free_theirs() {
        let acc = |n: usize| vec![7u8; n];
        let mut windows = Windows::with_cap(3 * (100 + ENTRY_OVERHEAD));
        let (a, b) = (Scalar::Text("a".into()), Scalar::Text("b".into()));
        windows.put(0, &a, acc(100)).unwrap();
        windows.put(0, &b, acc(100)).unwrap();
        // Replacing an accumulator counts its new size only.
        windows.put(0, &a, acc(100)).unwrap();
        assert_eq!(windows.held, 2 * (100 + ENTRY_OVERHEAD));
        windows.remove(0);
        assert_eq!(windows.held, 0);
        windows.put(10, &a, acc(100)).unwrap();
        windows.put(10, &b, acc(100)).unwrap();
        windows.put(20, &a, acc(100)).unwrap();
        let over = windows.put(20, &b, acc(100)).unwrap_err();
        assert_eq!(
            over,
            format!(
                "its accumulators took {} bytes (4 windows × keys), more than a shadow's cap of {} bytes",
                4 * (100 + ENTRY_OVERHEAD),
                3 * (100 + ENTRY_OVERHEAD)
            )
        );
    }
}
