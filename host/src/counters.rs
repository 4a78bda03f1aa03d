//! What a job counts: per step, the windows, the dead letters and the sink. Each task keeps
//! its own counters on its record path and publishes a copy now and then (see
//! [`crate::status::JobStatus::publish`]); `status`, `/metrics` and the exit summary read
//! the sums.

use std::collections::BTreeMap;

/// Counters of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepStats {
    pub records_in: u64,
    pub rows_out: u64,
    pub rejected: u64,
    /// Calls on a whole batch that failed (its records were then isolated, or all
    /// rejected when the failure cannot be isolated).
    pub failed_batches: u64,
}

impl StepStats {
    pub fn add(&mut self, other: &StepStats) {
        self.records_in += other.records_in;
        self.rows_out += other.rows_out;
        self.rejected += other.rejected;
        self.failed_batches += other.failed_batches;
    }
}

/// Counters of the windowing step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WindowStats {
    pub rows: u64,
    pub late_updates: u64,
    pub too_late: u64,
    pub results: u64,
    /// Replayed records (after a restart) whose windows had already closed: counted before.
    pub replay_skipped: u64,
}

impl WindowStats {
    pub fn add(&mut self, other: &WindowStats) {
        self.rows += other.rows;
        self.late_updates += other.late_updates;
        self.too_late += other.too_late;
        self.results += other.results;
        self.replay_skipped += other.replay_skipped;
    }
}

/// How many recent dead letters a task keeps, and the job reports.
pub const RECENT_DEAD_LETTERS: usize = 10;

/// A recent dead letter: which stage refused what, and why (the payload is not kept).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecentDeadLetter {
    /// When it was refused (epoch milliseconds).
    pub at: i64,
    pub stage: String,
    pub error: String,
    /// `topic/partition@offset` of the source record (`-1`s for a derived row).
    pub source: String,
}

/// How many recent window results a task keeps, and the job reports.
pub const RECENT_RESULTS: usize = 10;

/// A recent window result: the result row as JSON (before the formatter).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecentResult {
    /// When it was sent (epoch milliseconds).
    pub at: i64,
    pub row: String,
}

/// The latest `keep` of `items`, oldest first, by `at` (stable: one task's items of the
/// same millisecond keep their order).
fn latest<T>(mut items: Vec<T>, keep: usize, at: impl Fn(&T) -> i64) -> Vec<T> {
    items.sort_by_key(|item| at(item));
    let excess = items.len().saturating_sub(keep);
    items.drain(..excess);
    items
}

/// One task's counters, as last published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskCounters {
    pub steps: BTreeMap<String, StepStats>,
    pub window: Option<WindowStats>,
    /// Dead letters per stage.
    pub dead_letters: BTreeMap<String, u64>,
    /// The combined event-time watermark (epoch milliseconds).
    pub watermark: Option<i64>,
    /// Results sent to the sink and acknowledged (the sink is shared by the tasks: every
    /// task reports the same sink).
    pub sink_sent: u64,
    pub sink_acked: u64,
    /// Its latest dead letters, oldest first (at most [`RECENT_DEAD_LETTERS`]).
    pub recent_dead_letters: Vec<RecentDeadLetter>,
    /// Its latest window results, oldest first (at most [`RECENT_RESULTS`]).
    pub recent_results: Vec<RecentResult>,
}

/// The job's counters: the sum over its tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct JobCounters {
    pub steps: BTreeMap<String, StepStats>,
    pub window: Option<WindowStats>,
    pub dead_letters: BTreeMap<String, u64>,
    /// The lowest watermark over the tasks that have one.
    pub watermark: Option<i64>,
    pub sink_sent: u64,
    pub sink_acked: u64,
    /// The job's latest dead letters, oldest first (at most [`RECENT_DEAD_LETTERS`]).
    pub recent_dead_letters: Vec<RecentDeadLetter>,
    /// The job's latest window results, oldest first (at most [`RECENT_RESULTS`]).
    pub recent_results: Vec<RecentResult>,
}

impl JobCounters {
    pub fn sum<'a>(tasks: impl IntoIterator<Item = &'a TaskCounters>) -> Self {
        let mut job = JobCounters::default();
        for task in tasks {
            for (name, stats) in &task.steps {
                job.steps.entry(name.clone()).or_default().add(stats);
            }
            if let Some(window) = &task.window {
                job.window
                    .get_or_insert_with(WindowStats::default)
                    .add(window);
            }
            for (stage, count) in &task.dead_letters {
                *job.dead_letters.entry(stage.clone()).or_default() += count;
            }
            job.sink_sent = job.sink_sent.max(task.sink_sent);
            job.sink_acked = job.sink_acked.max(task.sink_acked);
            job.watermark = match (job.watermark, task.watermark) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            job.recent_dead_letters
                .extend(task.recent_dead_letters.iter().cloned());
            job.recent_results
                .extend(task.recent_results.iter().cloned());
        }
        job.recent_dead_letters = latest(
            std::mem::take(&mut job.recent_dead_letters),
            RECENT_DEAD_LETTERS,
            |letter| letter.at,
        );
        job.recent_results = latest(
            std::mem::take(&mut job.recent_results),
            RECENT_RESULTS,
            |result| result.at,
        );
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(at: i64, task: &str) -> RecentDeadLetter {
        RecentDeadLetter {
            at,
            stage: "parse".to_owned(),
            error: task.to_owned(),
            source: format!("t/0@{at}"),
        }
    }

    #[test]
    fn job_counters_sum_the_tasks_take_the_lowest_watermark_and_the_latest_dead_letters() {
        let step = |n| StepStats {
            records_in: n,
            rows_out: n - 1,
            rejected: 1,
            failed_batches: 0,
        };
        let a = TaskCounters {
            steps: [("parse".to_owned(), step(10))].into(),
            window: Some(WindowStats {
                rows: 9,
                ..WindowStats::default()
            }),
            dead_letters: [("parse".to_owned(), 1)].into(),
            watermark: Some(500),
            sink_sent: 4,
            sink_acked: 3,
            recent_dead_letters: (0..8).map(|i| letter(i * 2, "a")).collect(),
            recent_results: vec![RecentResult {
                at: 5,
                row: "a".into(),
            }],
        };
        let b = TaskCounters {
            steps: [("parse".to_owned(), step(5))].into(),
            window: None,
            dead_letters: BTreeMap::new(),
            watermark: Some(300),
            sink_sent: 4,
            sink_acked: 4,
            recent_dead_letters: (0..8).map(|i| letter(i * 2 + 1, "b")).collect(),
            recent_results: vec![RecentResult {
                at: 4,
                row: "b".into(),
            }],
        };
        let job = JobCounters::sum([&a, &b]);
        assert_eq!(
            job.steps["parse"],
            StepStats {
                records_in: 15,
                rows_out: 13,
                rejected: 2,
                failed_batches: 0
            }
        );
        assert_eq!(job.window.map(|w| w.rows), Some(9));
        assert_eq!(job.dead_letters["parse"], 1);
        assert_eq!(job.watermark, Some(300));
        assert_eq!((job.sink_sent, job.sink_acked), (4, 4), "one shared sink");
        let recent: Vec<(i64, &str)> = job
            .recent_dead_letters
            .iter()
            .map(|l| (l.at, l.error.as_str()))
            .collect();
        assert_eq!(
            recent,
            (6..16)
                .map(|at| (at, if at % 2 == 0 { "a" } else { "b" }))
                .collect::<Vec<_>>(),
            "the latest ten of both tasks, oldest first"
        );
        let rows: Vec<&str> = job.recent_results.iter().map(|r| r.row.as_str()).collect();
        assert_eq!(rows, ["b", "a"]);
    }
}
