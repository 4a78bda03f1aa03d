//! One task among several: this task's fired windows go to the [`Exchange`], and what
//! every task has passed comes back merged, finished once (two-phase aggregation). Ordered
//! file splits also get back the lines that earlier splits made too late.

use super::Windowing;
use crate::aggregate::Acc;
use crate::aggregate::dispatch::{AGGREGATE, Results};
use crate::error::PipelineError;
use crate::source::FileSplit;
use crate::spec::TimeDomain;
use crate::window::exchange::Ready;
use crate::window::{Exchange, Firing, TaskId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One task's link to the other tasks of its job.
pub struct TaskLink {
    pub exchange: Arc<Exchange<Acc>>,
    pub task: TaskId,
    /// Ordered splits of one file: every task's split (to read late lines again).
    pub splits: Arc<[FileSplit]>,
}

impl Windowing {
    /// Makes this the windowing of one task among several (see [`Exchange`]).
    pub fn linked(mut self, link: TaskLink) -> Self {
        self.link = Some(link);
        self
    }

    /// Whether to note the lines added to each window (ordered splits after the first).
    pub(super) fn notes_lines(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.exchange.is_ordered() && l.task > 0)
    }

    /// Publishes this task's watermark (`own`), deposits the windows the job's watermark
    /// closed, and finishes what every task has passed.
    pub(super) fn fire_linked(&mut self, own: Option<i64>) -> Result<Results, PipelineError> {
        let Some(link) = &self.link else {
            return Ok(Results::default());
        };
        let exchange = link.exchange.clone();
        let task = link.task;
        exchange.publish(task, own, self.max_seen);
        let watermark = match self.spec.time {
            TimeDomain::Event if !exchange.is_ordered() => exchange.watermark(),
            _ => own,
        };
        if let Some(wm) = watermark {
            let firings = self.windows.advance(wm);
            self.deposit(&exchange, task, firings);
            exchange.advanced(task, wm);
        }
        let ready = exchange.take_ready();
        self.finish_merged(ready)
    }

    /// The end of this task's input: its part of every window goes to the exchange; the
    /// last task to finish emits what is left.
    pub(super) fn drain_linked(
        &mut self,
        firings: Vec<Firing<Acc>>,
    ) -> Result<Results, PipelineError> {
        let Some(link) = &self.link else {
            return Ok(Results::default());
        };
        let exchange = link.exchange.clone();
        let task = link.task;
        exchange.publish(task, None, self.max_seen);
        self.deposit(&exchange, task, firings);
        exchange.finished(task);
        let ready = exchange.take_ready();
        self.finish_merged(ready)
    }

    /// Hands this task's fired windows to the exchange.
    fn deposit(&mut self, exchange: &Exchange<Acc>, task: TaskId, firings: Vec<Firing<Acc>>) {
        for firing in firings {
            if firing.is_final {
                self.dispatch.closed(firing.start);
            }
            let lines = if firing.is_final {
                self.lines.remove(&firing.start).unwrap_or_default()
            } else {
                self.lines
                    .get_mut(&firing.start)
                    .map(std::mem::take)
                    .unwrap_or_default()
            };
            exchange.deposit(task, firing.start, firing.groups, firing.min_offsets, lines);
        }
        self.dispatch.retire_unused();
    }

    /// Merges every task's partials of the windows the exchange released and finishes them;
    /// the lines of ordered splits that turned out too late come with the results.
    fn finish_merged(&mut self, ready: Ready<Acc>) -> Result<Results, PipelineError> {
        let late_payloads = self.late_lines(&ready.late_lines)?;
        let (firings, mut refused) =
            self.dispatch
                .merge_windows(ready.windows, AGGREGATE, self.policy);
        let mut results = self.finish(firings)?;
        results.ticket = Some(ready.ticket);
        refused.late_payloads = late_payloads;
        // Merge failures first: they come before the windows' own finish errors.
        refused.append(std::mem::take(&mut results.side));
        results.side = refused;
        Ok(results)
    }

    /// Ordered splits: records another task added that the earlier splits had made too
    /// late, read again from their split (when the job keeps late records).
    fn late_lines(
        &mut self,
        late: &BTreeMap<TaskId, Vec<i64>>,
    ) -> Result<Vec<Vec<u8>>, PipelineError> {
        let mut payloads = Vec::new();
        let Some(link) = &self.link else {
            return Ok(payloads);
        };
        for (&task, lines) in late {
            self.stats.too_late += lines.len() as u64;
            let Some(split) = link.splits.get(task).filter(|_| self.keeps_late) else {
                continue;
            };
            let found = crate::source::reread(split, lines).map_err(|error| {
                PipelineError::Source(crate::source::SourceError::Io {
                    name: split.path.display().to_string(),
                    error,
                })
            })?;
            payloads.extend(found.into_iter().map(|(_, payload)| payload));
        }
        Ok(payloads)
    }
}
