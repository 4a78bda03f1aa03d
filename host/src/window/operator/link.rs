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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::aggregate::Aggregator;
    use crate::aggregate::builtin::Builtins;
    use crate::source::kafka::Assignment;
    use crate::spec::{BuiltinFn, BuiltinSpec, OnError, WindowSpec};
    use rivulet_rows::{Batch, RawBatch};
    use std::time::Duration;

    fn windowing(exchange: &Arc<Exchange<Acc>>, task: TaskId) -> Windowing {
        let spec = WindowSpec {
            key: Some("status".into()),
            size: Duration::from_secs(10),
            time: TimeDomain::Event,
            timestamp: Some("ts".into()),
            out_of_orderness: Duration::ZERO,
            allowed_lateness: Duration::ZERO,
            idle_timeout: Duration::from_secs(3600),
            late_topic: None,
            late_path: None,
            exchange: Default::default(),
            partials_partitions: None,
        };
        let count = Aggregator::Builtin(Builtins::new(vec![BuiltinSpec {
            name: "orders".into(),
            function: BuiltinFn::Count,
            field: None,
            input: None,
        }]));
        Windowing::new(spec, count, OnError::Dlq, false)
            .unwrap()
            .linked(TaskLink {
                exchange: exchange.clone(),
                task,
                splits: Arc::from(Vec::new()),
            })
    }

    /// Feeds rows `{status, ts}` read from `partition` at offsets 0, 1, …
    fn ingest(windowing: &mut Windowing, partition: i32, rows: &[(&str, i64)]) {
        let mut raw = RawBatch::new();
        let mut builder = rivulet_rows::BatchBuilder::new();
        for (i, (status, ts)) in rows.iter().enumerate() {
            raw.push(None, b"", 0, partition, i as i64, &[]);
            let row = serde_json::json!({"status": status, "ts": ts});
            builder.push(row.as_object().unwrap()).unwrap();
        }
        let origins: Vec<u32> = (0..rows.len() as u32).collect();
        let side = windowing.ingest(&raw, &builder.finish(), &origins).unwrap();
        assert!(side.is_empty(), "nothing late or refused");
    }

    fn counts(parts: &[Batch]) -> Vec<(String, String, i64)> {
        let mut out: Vec<_> = parts
            .iter()
            .flat_map(|batch| {
                (0..batch.len as usize).map(move |i| {
                    let row = crate::emit::row_object(batch, i);
                    (
                        row["window_start"].as_str().unwrap().to_owned(),
                        row["status"].as_str().unwrap().to_owned(),
                        row["orders"].as_i64().unwrap(),
                    )
                })
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_task_the_group_has_not_assigned_yet_holds_the_first_window_back() {
        let exchange = Arc::new(Exchange::new(
            2,
            10_000,
            0,
            0,
            false,
            Duration::from_secs(60),
        ));
        let (mut a, mut b) = (windowing(&exchange, 0), windowing(&exchange, 1));
        // Both tasks start before the group has assigned anything; task 0 gets partition 0
        // first and reads past the first window while task 1 still waits for partition 1.
        let waiting = Assignment {
            awaiting_group: true,
            ..Assignment::default()
        };
        a.restart(&waiting);
        b.restart(&waiting);
        a.restart(&Assignment {
            partitions: vec![0],
            ..Assignment::default()
        });
        ingest(
            &mut a,
            0,
            &[("new", 1_000), ("new", 2_000), ("paid", 25_000)],
        );
        b.restart(&waiting);
        for task in [&mut a, &mut b] {
            assert!(
                task.fire().unwrap().parts.is_empty(),
                "no window fires without partition 1's records"
            );
        }
        b.restart(&Assignment {
            partitions: vec![1],
            ..Assignment::default()
        });
        ingest(&mut b, 1, &[("new", 3_000), ("paid", 30_000)]);
        let mut parts = b.fire().unwrap().parts;
        parts.extend(a.fire().unwrap().parts);
        // The job's watermark is min(25 s, 30 s): [0 s, 10 s) and [10 s, 20 s) closed.
        let start = rivulet_rows::time::iso8601(0);
        assert_eq!(counts(&parts), vec![(start, "new".into(), 3)]);
    }
}
