//! What a job counts: per step, the windows, the dead letters and the sink. Each task keeps
//! its own counters on its record path and publishes a copy now and then (see
//! [`crate::status::JobStatus::publish`]); `status`, `/metrics` and the exit summary read
//! the sums.

use std::collections::BTreeMap;
use std::time::Duration;

/// Buckets of a [`Histogram`]: `count` values up to each bound (microseconds), and one
/// above them all.
const BUCKETS: usize = 14;

/// Upper bounds of the batch-latency buckets, in microseconds (50 µs … 1 s).
pub const BATCH_LATENCY_US: [u64; BUCKETS - 1] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Upper bounds of the window-fire-lateness buckets, in microseconds (1 ms … 10 min).
pub const FIRE_LATENESS_US: [u64; BUCKETS - 1] = [
    1_000,
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    600_000_000,
];

/// Durations counted into fixed buckets, with their sum: a task's histogram adds into the
/// job's (Prometheus histogram semantics; the bounds are given where it is recorded and
/// encoded, one of the constants above).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Histogram {
    /// `counts[i]`: values above bound `i - 1` and at most bound `i`; the last: above all.
    pub counts: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Histogram {
    pub fn record(&mut self, bounds: &[u64; BUCKETS - 1], value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let bucket = bounds.partition_point(|&bound| bound < us);
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Counters of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StepStats {
    pub records_in: u64,
    pub rows_out: u64,
    pub rejected: u64,
    /// Calls on a whole batch that failed (its records were then isolated, or all
    /// rejected when the failure cannot be isolated).
    pub failed_batches: u64,
    /// Time of each call on a batch, isolation included ([`BATCH_LATENCY_US`]).
    pub latency: Histogram,
}

impl StepStats {
    pub fn add(&mut self, other: &StepStats) {
        self.records_in += other.records_in;
        self.rows_out += other.rows_out;
        self.rejected += other.rejected;
        self.failed_batches += other.failed_batches;
        self.latency.add(&other.latency);
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
    /// How long after its end (wall clock) each window fired ([`FIRE_LATENESS_US`]): the
    /// out-of-orderness wait plus how far the job is behind.
    pub fire_lateness: Histogram,
    /// Windows held now (open, or fired and within their allowed lateness): a gauge.
    pub open_windows: u64,
    /// The end of the latest window fired (epoch milliseconds) and when it fired (wall
    /// clock).
    pub last_fire_end: Option<i64>,
    pub last_fire_at: Option<i64>,
}

impl WindowStats {
    pub fn add(&mut self, other: &WindowStats) {
        self.rows += other.rows;
        self.late_updates += other.late_updates;
        self.too_late += other.too_late;
        self.results += other.results;
        self.replay_skipped += other.replay_skipped;
        self.fire_lateness.add(&other.fire_lateness);
        self.open_windows += other.open_windows;
        self.last_fire_end = self.last_fire_end.max(other.last_fire_end);
        self.last_fire_at = self.last_fire_at.max(other.last_fire_at);
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

/// What a job knows of one source partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PartitionStats {
    /// Records in the partition past the job's read position, as the Kafka client last
    /// reported it (every second); `None` when unknown (not Kafka, or not reported yet).
    pub lag: Option<i64>,
    /// The partition's event-time watermark (epoch milliseconds).
    pub watermark: Option<i64>,
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
    /// Records each stage refused (per-record errors: dead-lettered or dropped).
    pub errors: BTreeMap<String, u64>,
    /// The combined event-time watermark (epoch milliseconds).
    pub watermark: Option<i64>,
    /// The source partitions this task reads.
    pub partitions: BTreeMap<i32, PartitionStats>,
    /// A job over Kafka: the partials partitions this task merges (stage 2).
    pub merging: BTreeMap<i32, PartitionStats>,
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
    /// Records each stage refused (per-record errors: dead-lettered or dropped).
    pub errors: BTreeMap<String, u64>,
    /// The lowest watermark over the tasks that have one.
    pub watermark: Option<i64>,
    /// Every source partition the tasks read.
    pub partitions: BTreeMap<i32, PartitionStats>,
    /// A job over Kafka: every partials partition the tasks merge.
    pub merging: BTreeMap<i32, PartitionStats>,
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
            for (stage, count) in &task.errors {
                *job.errors.entry(stage.clone()).or_default() += count;
            }
            // A partition is read by one task (a file's splits are its tasks' partitions).
            job.partitions
                .extend(task.partitions.iter().map(|(&p, &stats)| (p, stats)));
            job.merging
                .extend(task.merging.iter().map(|(&p, &stats)| (p, stats)));
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
            latency: Histogram::default(),
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
            partitions: [(
                0,
                PartitionStats {
                    lag: Some(7),
                    watermark: Some(500),
                },
            )]
            .into(),
            sink_sent: 4,
            sink_acked: 3,
            recent_dead_letters: (0..8).map(|i| letter(i * 2, "a")).collect(),
            recent_results: vec![RecentResult {
                at: 5,
                row: "a".into(),
            }],
            merging: BTreeMap::new(),
        };
        let b = TaskCounters {
            steps: [("parse".to_owned(), step(5))].into(),
            window: None,
            dead_letters: BTreeMap::new(),
            errors: [("format".to_owned(), 3)].into(),
            watermark: Some(300),
            partitions: [(2, PartitionStats::default())].into(),
            merging: [(0, PartitionStats::default())].into(),
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
                failed_batches: 0,
                latency: Histogram::default(),
            }
        );
        assert_eq!(job.window.map(|w| w.rows), Some(9));
        assert_eq!(job.dead_letters["parse"], 1);
        assert_eq!(
            job.errors,
            [("format".to_owned(), 5), ("parse".to_owned(), 1)].into()
        );
        assert_eq!(job.watermark, Some(300));
        assert_eq!(
            job.partitions.keys().copied().collect::<Vec<_>>(),
            [0, 2],
            "each task's partitions"
        );
        assert_eq!(job.partitions[&0].lag, Some(7));
        assert_eq!(
            job.merging.keys().copied().collect::<Vec<_>>(),
            [0],
            "partials partitions apart from the source's of the same number"
        );
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

    #[test]
    fn histogram_buckets_values_by_their_upper_bound_and_adds_up() {
        let mut a = Histogram::default();
        // 50 µs is at most the first bound; 51 µs the second bucket; 2 s above all.
        for us in [0, 50, 51, 1_000, 2_000_000] {
            a.record(&BATCH_LATENCY_US, Duration::from_micros(us));
        }
        let mut expected = [0u64; BUCKETS];
        expected[0] = 2;
        expected[1] = 1;
        expected[4] = 1;
        expected[BUCKETS - 1] = 1;
        assert_eq!(a.counts, expected);
        assert_eq!(a.sum_us, 2_001_101);
        let mut b = Histogram::default();
        b.record(&BATCH_LATENCY_US, Duration::from_micros(60));
        b.add(&a);
        assert_eq!(b.count(), 6);
        assert_eq!(b.counts[1], 2);
        assert_eq!(b.sum_us, 2_001_161);
    }
}
