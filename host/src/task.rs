//! A job as N tasks: threads, each with a share of the input (Kafka partitions, a split of
//! a file) and its own instance of every stage. Windows stay exact across tasks through
//! two-phase aggregation ([`crate::window::Exchange`]); the sinks are shared.

use crate::error::PipelineError;
use crate::pipeline::Pipeline;
use crate::status::JobStatus;
use crate::swap::SwapRequest;
use crate::transform::StepStats;
use crate::window::WindowStats;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

/// A job's tasks, built by [`Job::from_spec`](crate::assemble).
pub struct Job {
    pub name: String,
    pub tasks: Vec<Pipeline>,
    pub status: Arc<JobStatus>,
    /// Where to ask for a swap (it reaches every task).
    pub swap_requests: Option<Sender<SwapRequest>>,
    pub stop: Arc<AtomicBool>,
}

impl Job {
    /// A job of one task.
    pub fn single(task: Pipeline) -> Self {
        Job {
            name: task.name.clone(),
            status: task.status.clone(),
            swap_requests: task.swap_requests.clone(),
            stop: task.stop.clone(),
            tasks: vec![task],
        }
    }

    /// The results sink: what it is, and records sent and acknowledged.
    pub fn sink(&self) -> (String, (u64, u64)) {
        self.tasks.first().map_or_else(Default::default, |task| {
            let sink = task.emitter.sink.lock();
            (sink.describe(), sink.counts())
        })
    }

    /// Runs every task until stopped or its input ends. A task that fails stops the others;
    /// the first failure is returned.
    pub fn run(&mut self) -> Result<(), PipelineError> {
        if let [task] = self.tasks.as_mut_slice() {
            return task.run();
        }
        let stop = &self.stop;
        let outcomes: Vec<Result<(), PipelineError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .tasks
                .iter_mut()
                .enumerate()
                .map(|(index, task)| {
                    std::thread::Builder::new()
                        .name(format!("rivulet-task-{index}"))
                        .spawn_scoped(scope, move || {
                            let outcome = task.run();
                            if outcome.is_err() {
                                stop.store(true, Ordering::Relaxed);
                            }
                            outcome
                        })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| match handle {
                    Ok(handle) => handle.join().unwrap_or_else(|_| {
                        stop.store(true, Ordering::Relaxed);
                        Err(PipelineError::Config("a task panicked".to_owned()))
                    }),
                    Err(err) => {
                        stop.store(true, Ordering::Relaxed);
                        Err(PipelineError::Config(format!("cannot start a task: {err}")))
                    }
                })
                .collect()
        });
        outcomes.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }

    /// Per step, the counters summed over the tasks.
    pub fn step_stats(&self) -> BTreeMap<String, StepStats> {
        let mut sums: BTreeMap<String, StepStats> = BTreeMap::new();
        for task in &self.tasks {
            for (name, stats) in &task.transform.stats {
                let sum = sums.entry(name.clone()).or_default();
                sum.records_in += stats.records_in;
                sum.rows_out += stats.rows_out;
                sum.rejected += stats.rejected;
                sum.failed_batches += stats.failed_batches;
            }
        }
        sums
    }

    /// The windowing counters summed over the tasks (None: no windows).
    pub fn window_stats(&self) -> Option<WindowStats> {
        let mut windowed = self.tasks.iter().filter_map(|t| t.windowing.as_ref());
        let first = windowed.next()?.stats();
        Some(windowed.fold(first, |mut sum, w| {
            let s = w.stats();
            sum.rows += s.rows;
            sum.late_updates += s.late_updates;
            sum.too_late += s.too_late;
            sum.results += s.results;
            sum.replay_skipped += s.replay_skipped;
            sum
        }))
    }

    /// Dead letters per stage, summed over the tasks.
    pub fn dead_letters(&self) -> BTreeMap<String, u64> {
        let mut sums = BTreeMap::new();
        for task in &self.tasks {
            for (stage, count) in task.dead.counts() {
                *sums.entry(stage.clone()).or_default() += count;
            }
        }
        sums
    }
}
