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

/// One task's counters, as last published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskCounters {
    pub steps: BTreeMap<String, StepStats>,
    pub window: Option<WindowStats>,
    /// Dead letters per stage.
    pub dead_letters: BTreeMap<String, u64>,
    /// Records each stage refused (per-record errors: dead-lettered or dropped).
    pub errors: BTreeMap<String, u64>,
    /// The combined event-time watermark (epoch milliseconds).
    pub watermark: Option<i64>,
    /// Results sent to the sink and acknowledged (the sink is shared by the tasks: every
    /// task reports the same sink).
    pub sink_sent: u64,
    pub sink_acked: u64,
}

/// The job's counters: the sum over its tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct JobCounters {
    pub steps: BTreeMap<String, StepStats>,
    pub window: Option<WindowStats>,
    pub dead_letters: BTreeMap<String, u64>,
    /// Records each stage refused (per-record errors: dead-lettered or dropped).
    pub errors: BTreeMap<String, u64>,
    /// The lowest watermark over the tasks that have one.
    pub watermark: Option<i64>,
    pub sink_sent: u64,
    pub sink_acked: u64,
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
            for (stage, count) in &task.errors {
                *job.errors.entry(stage.clone()).or_default() += count;
            }
            job.sink_sent = job.sink_sent.max(task.sink_sent);
            job.sink_acked = job.sink_acked.max(task.sink_acked);
            job.watermark = match (job.watermark, task.watermark) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_counters_sum_the_tasks_and_take_the_lowest_watermark() {
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
            errors: [("parse".to_owned(), 1), ("format".to_owned(), 2)].into(),
            watermark: Some(500),
            sink_sent: 4,
            sink_acked: 3,
        };
        let b = TaskCounters {
            steps: [("parse".to_owned(), step(5))].into(),
            window: None,
            dead_letters: BTreeMap::new(),
            errors: [("format".to_owned(), 3)].into(),
            watermark: Some(300),
            sink_sent: 4,
            sink_acked: 4,
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
        assert_eq!(
            job.errors,
            [("format".to_owned(), 5), ("parse".to_owned(), 1)].into()
        );
        assert_eq!(job.watermark, Some(300));
        assert_eq!((job.sink_sent, job.sink_acked), (4, 4), "one shared sink");
    }
}
