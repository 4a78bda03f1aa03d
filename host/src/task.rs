//! A job as N tasks: threads, each with a share of the input (Kafka partitions, a split of
//! a file) and its own instance of every stage. Windows stay exact across tasks through
//! two-phase aggregation ([`crate::window::Exchange`]); the sinks are shared.

use crate::error::PipelineError;
use crate::pipeline::Pipeline;
use crate::status::JobStatus;
use crate::swap::SwapRequest;
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
    /// The other processes running this job, if it runs as a fleet.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl Job {
    /// A job of one task.
    pub fn single(task: Pipeline) -> Self {
        Job {
            name: task.name.clone(),
            status: task.status.clone(),
            swap_requests: task.swap_requests.clone(),
            stop: task.stop.clone(),
            fleet: None,
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
    /// the failure that stopped the job is returned (what the others then ran into is
    /// logged).
    pub fn run(&mut self) -> Result<(), PipelineError> {
        if let [task] = self.tasks.as_mut_slice() {
            return task.run();
        }
        let stop = &self.stop;
        // Per task: its outcome, and whether its failure was the one that stopped the job.
        let outcomes: Vec<(Result<(), PipelineError>, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .tasks
                .iter_mut()
                .enumerate()
                .map(|(index, task)| {
                    std::thread::Builder::new()
                        .name(format!("rivulet-task-{index}"))
                        .spawn_scoped(scope, move || {
                            let outcome = task.run();
                            let first = outcome.is_err() && !stop.swap(true, Ordering::Relaxed);
                            (outcome, first)
                        })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| match handle {
                    Ok(handle) => handle.join().unwrap_or_else(|_| {
                        let first = !stop.swap(true, Ordering::Relaxed);
                        (
                            Err(PipelineError::Config("a task panicked".to_owned())),
                            first,
                        )
                    }),
                    Err(err) => {
                        let first = !stop.swap(true, Ordering::Relaxed);
                        let err = PipelineError::Config(format!("cannot start a task: {err}"));
                        (Err(err), first)
                    }
                })
                .collect()
        });
        let mut cause = None;
        let mut others = Vec::new();
        for (task, (outcome, first)) in outcomes.into_iter().enumerate() {
            match outcome {
                Err(err) if first && cause.is_none() => cause = Some(err),
                Err(err) => others.push((task, err)),
                Ok(()) => {}
            }
        }
        for (task, err) in &others {
            tracing::warn!(task, "stopping, this task also failed: {err}");
        }
        match cause.or_else(|| others.into_iter().next().map(|(_, err)| err)) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
