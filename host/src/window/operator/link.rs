//! One task among several: this task's fired windows go to the [`Exchange`], and what
//! every task has passed comes back merged, finished once (two-phase aggregation). Ordered
//! file splits also send back the lines that earlier splits made too late.

use super::Windowing;
use crate::aggregate::Acc;
use crate::aggregate::dispatch::{AGGREGATE, Results};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::error::PipelineError;
use crate::source::FileSplit;
use crate::spec::TimeDomain;
use crate::window::exchange::Ready;
use crate::window::{Exchange, Firing, TaskId};
use rivulet_sdk::time::iso8601;
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
    pub(super) fn fire_linked(
        &mut self,
        own: Option<i64>,
        topic: &str,
        dead: &mut DeadLetters,
    ) -> Result<Results, PipelineError> {
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
        self.finish_merged(ready, topic, dead)
    }

    /// The end of this task's input: its part of every window goes to the exchange; the
    /// last task to finish emits what is left.
    pub(super) fn drain_linked(
        &mut self,
        firings: Vec<Firing<Acc>>,
        topic: &str,
        dead: &mut DeadLetters,
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
        self.finish_merged(ready, topic, dead)
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

    /// Merges every task's partials of the windows the exchange released, finishes them,
    /// and sends the lines of ordered splits that turned out too late to the late records.
    fn finish_merged(
        &mut self,
        ready: Ready<Acc>,
        topic: &str,
        dead: &mut DeadLetters,
    ) -> Result<Results, PipelineError> {
        self.send_late_lines(&ready.late_lines)?;
        let mut firings = Vec::with_capacity(ready.windows.len());
        for window in ready.windows {
            let mut groups = Vec::with_capacity(window.groups.len());
            for (key, partials) in window.groups {
                match self.dispatch.merge(partials) {
                    Ok(acc) => groups.push((key, acc)),
                    Err(error) => {
                        let payload = format!(
                            r#"{{"window_start":"{}","window_end":"{}","key":{}}}"#,
                            iso8601(window.start),
                            iso8601(window.end),
                            key.to_json()
                        );
                        tracing::warn!(stage = AGGREGATE, "{error}");
                        dead.handle(
                            self.policy,
                            &DeadLetter::derived(AGGREGATE, &error, topic, payload.as_bytes()),
                        )?;
                    }
                }
            }
            firings.push(Firing {
                start: window.start,
                end: window.end,
                groups,
                is_final: window.is_final,
                update: window.update,
                min_offsets: BTreeMap::new(),
            });
        }
        let mut results = self.finish(firings, topic, dead)?;
        results.ticket = Some(ready.ticket);
        Ok(results)
    }

    /// Ordered splits: records another task added that the earlier splits had made too
    /// late, read again from their split and sent to the late records.
    fn send_late_lines(&mut self, late: &BTreeMap<TaskId, Vec<i64>>) -> Result<(), PipelineError> {
        let Some(link) = &self.link else {
            return Ok(());
        };
        for (&task, lines) in late {
            self.stats.too_late += lines.len() as u64;
            let (Some(sink), Some(split)) = (&self.late, link.splits.get(task)) else {
                continue;
            };
            let found = crate::source::reread(split, lines).map_err(|error| {
                PipelineError::Source(crate::source::SourceError::Io {
                    name: split.path.display().to_string(),
                    error,
                })
            })?;
            let mut sink = sink.lock();
            for (_, payload) in found {
                sink.send(None, &payload, &[])?;
            }
        }
        Ok(())
    }
}
