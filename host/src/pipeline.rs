//! One streaming job, as data flows through it:
//!
//! source → parse → map… → (key → window → aggregate → fire) → format → sink,
//! with rejected records to the dead letters, too-late records to the late topic, and
//! snapshots committed once every sink has what came before them (at-least-once; see
//! [`crate::delivery`]) or, exactly-once, in the task's transaction with everything it
//! wrote ([`crate::delivery::transaction`]).

use crate::cluster::ClusterStep;
use crate::counters::{PartitionStats, TaskCounters};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::delivery::{OffsetTracker, Snapshot, Transaction, TransactionError};
use crate::emit::Emitter;
pub use crate::error::PipelineError;
use crate::side_output::{RefusedInput, SideOutputs};
use crate::sink::SharedSink;
use crate::source::Source;
use crate::source::kafka::{Assignment, Rebalance};
use crate::spec::BatchSpec;
use crate::status::JobStatus;
use crate::swap::{Prepared, Retired, Slots};
use crate::transform::Transform;
use crate::window::Windowing;
use rivulet_rows::RawBatch;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// A stop (Ctrl-C, SIGTERM) gives up waiting for the sinks after this long without a
/// delivery.
const STOP_STALL: Duration = Duration::from_secs(2);

/// How often a task publishes its counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

pub struct Pipeline {
    pub name: String,
    /// This task's number in its job (0 for a job of one task).
    pub task: usize,
    pub source: Source,
    pub transform: Transform,
    pub windowing: Option<Windowing>,
    /// A job over Kafka: this task pre-aggregates (stage 1, instead of `windowing`) or
    /// merges the partials topic (stage 2, its source) — see [`crate::cluster`].
    pub cluster: Option<ClusterStep>,
    pub emitter: Emitter,
    /// Where refused records go (a side output of every step).
    pub dead: DeadLetters,
    /// Where records too late for their window go (a side output of the window operator).
    pub late: Option<SharedSink>,
    pub batch: BatchSpec,
    /// How often a snapshot is taken for committing.
    pub commit_every: Duration,
    /// Snapshots waiting for their sinks; what may be committed.
    pub tracker: OffsetTracker,
    pub stop: Arc<AtomicBool>,
    pub status: Arc<JobStatus>,
    /// Swaps prepared off the hot path, installed between batches.
    pub swaps: Option<Receiver<Prepared>>,
    /// Where to ask for a swap (the control API and the watcher use it).
    pub swap_requests: Option<std::sync::mpsc::Sender<crate::swap::SwapRequest>>,
    /// How long each swap paused the record flow.
    pub swap_pauses: Vec<Duration>,
    /// Replaced modules, dropped on the swap worker (not on the hot path).
    pub retired: Option<std::sync::mpsc::Sender<Retired>>,
    /// Exactly-once: the task's transactional producer, through which its sinks write.
    pub transaction: Option<Transaction>,
    /// When stopped, fire the open windows first, as the end of a bounded input does (the
    /// demo's `--duration`); otherwise they stay open for the next run to finish.
    pub drain_on_stop: bool,
}

impl Pipeline {
    /// Runs until stopped, or until a bounded source is exhausted and every window fired.
    pub fn run(&mut self) -> Result<(), PipelineError> {
        let flowed = self.flow();
        self.publish();
        // What the rate limit held back is logged now.
        self.status.warnings.flush();
        // No more swaps for this task (the swap worker stops waiting for it).
        self.swaps = None;
        let ended = match flowed {
            Ok(()) => self.shutdown(),
            Err(PipelineError::Udf(err)) if err.is_stopped() => self.abandon(&err),
            Err(err) => Err(err),
        };
        match (
            ended,
            self.transaction.as_ref().and_then(Transaction::fenced),
        ) {
            // Fenced: whatever failed after it failed because of it. One line, and the task
            // stops; the newer instance carries on from the last commit.
            (Err(PipelineError::Transaction(fenced @ TransactionError::Fenced { .. })), _)
            | (Err(_), Some(fenced)) => {
                tracing::error!(job = %self.name, task = self.task, "{fenced}");
                self.source.close();
                Ok(())
            }
            (Err(err), _) => {
                if let Some(transaction) = &mut self.transaction {
                    transaction.abort();
                }
                Err(err)
            }
            (ended, _) => ended,
        }
    }

    /// The record flow, until stopped or the end of a bounded source.
    fn flow(&mut self) -> Result<(), PipelineError> {
        let topic = self.source.name().to_owned();
        self.restart(&self.source.assignment());
        let mut last_snapshot = Instant::now();
        let mut last_publish = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            self.offer_accumulators();
            self.install_swaps();
            let raw = self.source.poll(self.batch.max_records, self.poll_wait())?;
            while let Some(change) = self.source.take_rebalance() {
                match change {
                    Rebalance::Whole(assignment) => self.restart(&assignment),
                    Rebalance::Added(added) => self.take_up(&added),
                    Rebalance::Removed(partitions) => self.give_up(&partitions),
                }
            }
            self.status.count(u64::from(raw.len));
            if raw.len > 0
                && let Some(ClusterStep::Merge(merge)) = &mut self.cluster
            {
                let side = merge.ingest(&raw);
                self.route(Some(&raw), &topic, side)?;
            } else if raw.len > 0 {
                let transformed = self.transform.run(&raw)?;
                self.route(Some(&raw), &topic, transformed.side)?;
                let (rows, origins) = (transformed.rows, transformed.origins);
                let side = match (&mut self.windowing, &mut self.cluster) {
                    (Some(windowing), _) => windowing.ingest(&raw, &rows, &origins)?,
                    (None, Some(ClusterStep::Pre(pre))) => pre.ingest(&raw, &rows, &origins)?,
                    _ => self.emitter.emit(&rows)?,
                };
                self.route(Some(&raw), &topic, side)?;
            }
            let replaying = self.replaying();
            if !replaying || self.cluster.is_some() {
                // Stage 1 holds back only the partitions that replay.
                self.fire(&topic, false)?;
            }
            self.serve_sinks()?;
            if self.transaction.is_some() {
                // Exactly-once: a transaction per interval, with the offsets of a snapshot
                // (never during a replay: what it rebuilds was committed before). The
                // commit runs beside the next interval's records.
                self.transaction_committed()?;
                if last_snapshot.elapsed() >= self.commit_every && !replaying {
                    self.snapshot();
                    self.commit_transaction(false)?;
                    last_snapshot = Instant::now();
                }
            } else {
                self.commit_ready(false);
                if last_snapshot.elapsed() >= self.commit_every && !replaying {
                    self.snapshot();
                    last_snapshot = Instant::now();
                }
            }
            if last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish();
                last_publish = Instant::now();
            }
            if self.source.revoked() {
                // The group moves partitions: what was done with them is committed first,
                // so their next owner replays as little as possible.
                self.commit_all(None)?;
                self.source.release();
            }
            if self.source.at_end() {
                self.drain(&topic)?;
                break;
            }
        }
        if self.drain_on_stop {
            self.drain(&topic)?;
        }
        Ok(())
    }

    /// Fires every window (the end of a bounded input, or a draining stop).
    fn drain(&mut self, topic: &str) -> Result<(), PipelineError> {
        self.fire(topic, true)
    }

    /// Fires what the watermark closed (`all`: every window), sends the results, and routes
    /// what firing and formatting set aside.
    fn fire(&mut self, topic: &str, all: bool) -> Result<(), PipelineError> {
        let mut results = match (&mut self.windowing, &mut self.cluster) {
            (Some(windowing), _) if all => windowing.drain()?,
            (Some(windowing), _) => windowing.fire()?,
            (None, Some(ClusterStep::Pre(_))) => return self.send_partials(topic, all),
            (None, Some(ClusterStep::Merge(merge))) if all => merge.drain()?,
            (None, Some(ClusterStep::Merge(merge))) => merge.fire()?,
            (None, None) => return Ok(()),
        };
        let side = std::mem::take(&mut results.side);
        self.route(None, topic, side)?;
        let side = self.emitter.emit_all(&results)?;
        self.route(None, topic, side)?;
        if let Some(windowing) = &self.windowing {
            windowing.results_sent(&results);
        }
        Ok(())
    }

    /// Stage 1 of a job over Kafka: sends the partials and markers due to the partials
    /// topic (`all`: every window, the end of a bounded input or a draining stop).
    fn send_partials(&mut self, topic: &str, all: bool) -> Result<(), PipelineError> {
        let positions = self.source.positions();
        let Some(ClusterStep::Pre(pre)) = &mut self.cluster else {
            return Ok(());
        };
        pre.positions(&positions);
        let (outgoing, side) = match all {
            true => pre.drain()?,
            false => pre.fire()?,
        };
        if !outgoing.is_empty() {
            let mut sink = self.emitter.sink.lock();
            for record in &outgoing {
                sink.send_to(record.partition, &record.payload)?;
            }
        }
        self.route(None, topic, side)
    }

    /// Sends what a step set aside: refused records to the dead letters (per the step's
    /// policy; `fail` stops the job here), too-late records to the late records. `raw` is
    /// the batch that record indices refer to.
    fn route(
        &mut self,
        raw: Option<&RawBatch>,
        topic: &str,
        side: SideOutputs,
    ) -> Result<(), PipelineError> {
        if side.is_empty() {
            return Ok(());
        }
        // Per stage: new errors in this batch, and the first one's reason (for the WARN).
        let mut noted: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
        for refused in &side.refused {
            let letter = match (&refused.what, raw) {
                (RefusedInput::Record(index), Some(raw)) => {
                    DeadLetter::of_record(raw, *index, &refused.stage, &refused.error, topic)
                }
                (RefusedInput::Record(_), None) => {
                    DeadLetter::derived(&refused.stage, &refused.error, topic, &[])
                }
                (RefusedInput::Derived(payload), _) => {
                    DeadLetter::derived(&refused.stage, &refused.error, topic, payload)
                }
            };
            if self.dead.handle(refused.policy, &letter)? {
                let stage = noted
                    .entry(refused.stage.as_str())
                    .or_insert((0, refused.error.as_str()));
                stage.0 += 1;
            }
        }
        for (stage, (count, example)) in noted {
            self.status.warnings.note(stage, count, example);
        }
        let Some(late) = &self.late else {
            return Ok(());
        };
        let mut late = late.lock();
        if let Some(raw) = raw {
            for &index in &side.late {
                if let Some(record) = raw.record(index) {
                    late.send(record.key, record.payload, &[])?;
                }
            }
        }
        for payload in &side.late_payloads {
            late.send(None, payload, &[])?;
        }
        Ok(())
    }

    /// This task's counters.
    pub fn counters(&self) -> TaskCounters {
        let (sink_sent, sink_acked) = self.emitter.sink.lock().counts();
        // Stage 2 of a job over Kafka reads partials partitions, not source partitions.
        let merging = matches!(self.cluster, Some(ClusterStep::Merge(_)));
        let stats = self.partition_stats();
        TaskCounters {
            sink_sent,
            sink_acked,
            steps: self.transform.stats.clone(),
            window: match (&self.windowing, &self.cluster) {
                (Some(windowing), _) => Some(windowing.stats()),
                (None, cluster) => cluster.as_ref().map(ClusterStep::stats),
            },
            dead_letters: self.dead.counts().clone(),
            errors: self.dead.errors().clone(),
            recent_dead_letters: self.dead.recent().cloned().collect(),
            recent_results: self.emitter.recent.iter().cloned().collect(),
            watermark: self.windowing.as_ref().and_then(Windowing::watermark),
            partitions: if merging {
                BTreeMap::new()
            } else {
                stats.clone()
            },
            merging: if merging { stats } else { BTreeMap::new() },
        }
    }

    /// Lag and watermark of each partition this task reads.
    fn partition_stats(&self) -> BTreeMap<i32, PartitionStats> {
        let lag = self.source.lag();
        // A job over Kafka: stage 1 keeps a watermark per source partition, stage 2 the
        // watermark that closed its windows per partials partition.
        let pre = self
            .cluster
            .as_ref()
            .map(ClusterStep::watermarks)
            .unwrap_or_default();
        self.source
            .positions()
            .into_keys()
            .map(|p| {
                let stats = PartitionStats {
                    lag: lag.get(&p).copied(),
                    watermark: self
                        .windowing
                        .as_ref()
                        .and_then(|w| w.partition_watermark(p))
                        .or_else(|| pre.get(&p).copied()),
                };
                (p, stats)
            })
            .collect()
    }

    /// Publishes this task's counters (for `status` and `/metrics`).
    fn publish(&self) {
        self.status.publish(self.task, self.counters());
    }

    /// Answers a swap's request for live accumulators (see
    /// [`JobStatus::live_accumulators`]).
    fn offer_accumulators(&mut self) {
        let request = self.status.accumulators_wanted(self.task);
        if request == 0 {
            return;
        }
        let live = match (&mut self.windowing, &mut self.cluster) {
            (Some(windowing), _) => windowing.live_accumulators(),
            (None, Some(ClusterStep::Pre(pre))) => pre.live_accumulators(),
            // Stage 2 holds partials, which every stage 1 offered already.
            _ => Vec::new(),
        };
        self.status.offer_accumulators(request, self.task, live);
    }

    /// Installs every prepared swap (see [`crate::swap::install`]).
    fn install_swaps(&mut self) {
        let prepared: Vec<Prepared> = match &self.swaps {
            Some(swaps) => swaps.try_iter().collect(),
            None => return,
        };
        for swap in prepared {
            let slots = Slots {
                parse: &mut self.transform.parse,
                maps: &mut self.transform.maps,
                format: self.emitter.format.as_mut(),
                windowing: self.windowing.as_mut(),
                cluster: self.cluster.as_mut(),
            };
            if let Some(pause) = crate::swap::install(slots, swap, &self.retired) {
                self.swap_pauses.push(pause);
            }
        }
    }

    /// Stops after a signal abandoned a guest call mid-batch: flushes what the sinks hold
    /// but commits nothing more, so the interrupted batch is read again on restart.
    fn abandon(&mut self, err: &crate::udf::UdfError) -> Result<(), PipelineError> {
        tracing::info!(job = %self.name, "stopping: {err}; the interrupted batch is not committed");
        if let Some(transaction) = &mut self.transaction {
            transaction.abort();
            self.source.close();
            return Ok(());
        }
        for sink in self.sinks() {
            sink.lock().flush(Duration::from_secs(30), None)?;
        }
        self.source.close();
        Ok(())
    }

    /// New partitions (start or rebalance): state built from the old ones is dropped and
    /// rebuilt by replaying each partition from its committed offset.
    fn restart(&mut self, assignment: &Assignment) {
        self.tracker.forget_all();
        let read: BTreeMap<i32, i64> = assignment
            .states
            .iter()
            .map(|(&p, state)| (p, state.read))
            .collect();
        self.dead.replaying(read);
        if let Some(windowing) = &mut self.windowing {
            windowing.restart(assignment);
        }
        if let Some(cluster) = &mut self.cluster {
            cluster.restart(assignment);
        }
    }

    /// Partitions added by a cooperative rebalance (the job's state is per partition: its
    /// source is cooperative only then): each is rebuilt by replay from its committed
    /// offset, the others read on.
    fn take_up(&mut self, added: &Assignment) {
        self.tracker.forget(&added.partitions);
        let read: BTreeMap<i32, i64> = added
            .states
            .iter()
            .map(|(&p, state)| (p, state.read))
            .collect();
        self.dead.also_replaying(read);
        if let Some(cluster) = &mut self.cluster {
            cluster.take_up(added);
        }
    }

    /// Partitions taken away by a cooperative rebalance, after their commit: their state
    /// goes (their next owner rebuilds it).
    fn give_up(&mut self, partitions: &[i32]) {
        self.tracker.forget(partitions);
        self.dead.not_replaying(partitions);
        if let Some(cluster) = &mut self.cluster {
            cluster.give_up(partitions);
        }
    }

    /// Whether records processed before a restart are still being replayed.
    fn replaying(&mut self) -> bool {
        let positions = self.source.positions();
        if let Some(ClusterStep::Pre(pre)) = &mut self.cluster {
            pre.positions(&positions);
        }
        self.cluster.as_ref().is_some_and(ClusterStep::replaying)
            || self
                .windowing
                .as_mut()
                .is_some_and(|windowing| windowing.replaying(&positions))
    }

    /// How long to wait for input: the batch wait, shortened to the next window timer.
    fn poll_wait(&self) -> Duration {
        let timer = self.windowing.as_ref().and_then(Windowing::next_timer_ms);
        match timer {
            Some(ms) => self
                .batch
                .max_wait
                .min(Duration::from_millis(ms.max(0) as u64)),
            None => self.batch.max_wait,
        }
    }

    /// The sinks this task sends to (shared with the job's other tasks).
    fn sinks(&self) -> impl Iterator<Item = &SharedSink> {
        std::iter::once(&self.emitter.sink)
            .chain(self.dead.sink())
            .chain(self.late.as_ref())
    }

    fn serve_sinks(&mut self) -> Result<(), PipelineError> {
        for sink in self.sinks() {
            sink.lock().poll()?;
        }
        Ok(())
    }

    /// Notes, for committing once the sinks have everything sent so far: how far each
    /// partition was read, what open windows still need, and the watermarks.
    fn snapshot(&mut self) {
        let positions = self.source.positions();
        let (needed, watermarks, combined) = match (&self.windowing, &self.cluster) {
            (None, Some(cluster)) => (cluster.needed(), cluster.watermarks(), None),
            (Some(windowing), _) => {
                let partitions: Vec<i32> = positions.keys().copied().collect();
                (
                    windowing.needed(),
                    windowing.partition_watermarks(&partitions),
                    windowing.combined_watermark(),
                )
            }
            (None, None) => Default::default(),
        };
        // After `needed` (a merged window leaves it only once its results are sent): what
        // was sent before these marks is all this snapshot waits for.
        let marks = self.sinks().map(|sink| sink.lock().acks().mark()).collect();
        let mut snapshot = Snapshot::take(&positions, &needed, &watermarks, combined, marks);
        snapshot.deposits = self.windowing.as_ref().and_then(Windowing::deposits);
        self.tracker.offer(snapshot);
    }

    /// Commits the waiting snapshot if every sink has what was sent before it. A failed
    /// commit only delays progress: the snapshot stays and is retried.
    fn commit_ready(&mut self, sync: bool) -> bool {
        let frontiers: Vec<u64> = self
            .sinks()
            .map(|sink| sink.lock().acks().frontier())
            .collect();
        let Some(states) = self.tracker.ready(&frontiers) else {
            return false;
        };
        if !states.is_empty()
            && let Err(err) = self.source.commit(&states, sync)
        {
            // One line per kind per 30 s: a broker outage fails every attempt.
            if let Some(line) =
                crate::kafka::collapsed(&format!("commit failed, will retry: {err}"))
            {
                tracing::warn!(job = %self.name, "{line}");
            }
            return false;
        }
        let deposits = self.tracker.committed().and_then(|s| s.deposits);
        if let (Some(windowing), Some(deposits)) = (&self.windowing, deposits) {
            windowing.committed(deposits);
        }
        true
    }

    /// Exactly-once: commits the task's open transaction — everything it wrote since the
    /// last one, and the waiting snapshot's offsets and restart state — and begins the
    /// next, after the commit still in flight. `wait`: until it is done; otherwise the
    /// commit runs beside the record flow and [`Pipeline::transaction_committed`] sees it
    /// end. A failure aborts it (nothing of it is visible) and stops the task; the job
    /// restarts from the last commit.
    fn commit_transaction(&mut self, wait: bool) -> Result<(), PipelineError> {
        // The commit in flight ends first; then what the sinks held meanwhile goes into
        // the transaction it began, before the snapshot's offsets do.
        if let Some(transaction) = &mut self.transaction {
            let previous = transaction.settle()?;
            self.committed(previous);
        }
        self.serve_sinks()?;
        // Everything sent is in the transaction: the commit delivers all of it or nothing.
        let marks: Vec<u64> = self.sinks().map(|sink| sink.lock().acks().mark()).collect();
        let states = self.tracker.ready(&marks).unwrap_or_default();
        let deposits = self.tracker.committed().and_then(|s| s.deposits);
        let commit = match &self.source {
            crate::source::Source::Kafka(kafka) => Some(
                kafka
                    .transactional_commit(&states)
                    .map_err(crate::source::SourceError::from)?,
            ),
            _ => None,
        };
        let (offsets, records) = match commit {
            Some(commit) => match (commit.group, commit.offsets.count()) {
                (_, 0) => (None, commit.states),
                (Some(group), _) => (Some((commit.offsets, group)), commit.states),
                (None, _) => {
                    return Err(PipelineError::Config(format!(
                        "exactly-once: the consumer of `{}` has no group metadata to commit offsets with",
                        self.source.name()
                    )));
                }
            },
            None => (None, Vec::new()),
        };
        let Some(transaction) = &mut self.transaction else {
            return Ok(());
        };
        let previous = transaction.start_commit(offsets, records, deposits)?;
        self.committed(previous);
        if wait {
            let Some(transaction) = &mut self.transaction else {
                return Ok(());
            };
            let done = transaction.settle()?;
            self.committed(done);
        }
        Ok(())
    }

    /// Exactly-once: whether the commit in flight ended (without waiting); its failure
    /// stops the task.
    fn transaction_committed(&mut self) -> Result<(), PipelineError> {
        let Some(transaction) = &mut self.transaction else {
            return Ok(());
        };
        let done = transaction.poll()?;
        self.committed(done);
        Ok(())
    }

    /// A transaction committed: the windows handed over before its snapshot are durable.
    fn committed(&self, done: Option<crate::delivery::transaction::Committed>) {
        let deposits = done.and_then(|done| done.deposits);
        if let (Some(windowing), Some(deposits)) = (&self.windowing, deposits) {
            windowing.committed(deposits);
        }
    }

    /// Flushes every sink and commits what was read. Asked to stop, it gives up once
    /// nothing was delivered for [`STOP_STALL`]: what was not delivered is not committed,
    /// and is read again on the next start.
    fn shutdown(&mut self) -> Result<(), PipelineError> {
        if self.transaction.is_some() {
            let committed = self.commit_all(None);
            self.source.close();
            return committed;
        }
        let stall = self.stop.load(Ordering::Relaxed).then_some(STOP_STALL);
        match self.commit_all(stall) {
            Err(PipelineError::Sink(err)) if stall.is_some() => tracing::warn!(
                job = %self.name,
                "stopping without committing the rest: {err}; it is read again on the next start"
            ),
            other => other?,
        }
        self.source.close();
        Ok(())
    }

    /// Flushes every sink (up to 30 s; with `stall`, until nothing was delivered for that
    /// long), then commits everything read that open windows don't need (after a replay is
    /// done: a snapshot during replay would commit what it rebuilds).
    fn commit_all(&mut self, stall: Option<Duration>) -> Result<(), PipelineError> {
        if self.transaction.is_some() {
            if self.replaying() {
                // A replay is rebuilding what was committed: nothing new to commit, and
                // what it sent is dropped with the state it belongs to.
                if let Some(transaction) = &mut self.transaction {
                    transaction.abort();
                    transaction.restart()?;
                }
                return Ok(());
            }
            self.snapshot();
            return self.commit_transaction(true);
        }
        for sink in self.sinks() {
            sink.lock().flush(Duration::from_secs(30), stall)?;
        }
        // An older snapshot may still wait; then the newest one.
        self.commit_ready(true);
        if !self.replaying() {
            self.snapshot();
            self.commit_ready(true);
        }
        Ok(())
    }
}
