//! Exactly-once delivery (`delivery = "exactly-once"`): one transactional producer per task.
//!
//! Every record the task writes — window results, dead letters, late records, partials to
//! the job's internal topic, restart state to the state topic — goes through its
//! [`Transaction`]'s producer, inside the open Kafka transaction. Each commit interval the
//! consumed offsets (with the restart state as commit metadata) join the transaction and it
//! commits: the outputs and the input position become visible together, to `read_committed`
//! readers, or not at all. The offsets also pin the restart state the transaction wrote
//! (see [`crate::kafka::state_topic`]): a restore reads that record, never one of an
//! aborted transaction, even from a broker that shows aborted records to every reader. The
//! commit's round trips run on a thread of their own while the task processes the next
//! interval, whose records its sinks hold until the next transaction has begun. A crash leaves the open transaction to be aborted by the broker
//! (or by the restarted task's `init_transactions`, which also fences the old instance), and
//! the restart replays from the committed position.

use crate::kafka::state_topic::StateRecord;
use crate::kafka::{KafkaConfig, KafkaError};
use crate::sink::kafka::{KafkaSink, PLACED, SharedProducer, SinkContext};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// How long a transaction may stay open before the broker aborts it: ten commit intervals,
/// within these bounds. Short, because until then `read_committed` readers (a restore of
/// the state topic among them) wait behind what a killed task left open — unless it
/// restarts, which aborts it at once.
const TRANSACTION_TIMEOUT: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(900));

/// How long `init_transactions` and a commit may take (a broker that answers in time).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one wait for delivery reports takes, while a commit flushes its records.
const FLUSH_STEP: Duration = Duration::from_millis(1);

/// A failed transactional operation.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// A newer instance with the same `transactional.id` started: this one must stop.
    #[error(
        "fenced: another instance started with transactional.id `{id}` ({reason}); this task stops, the newer one carries on from the last commit"
    )]
    Fenced { id: String, reason: String },
    /// The transaction could not commit (broker slow or down, a record refused): it was
    /// aborted, and nothing of it is visible.
    #[error("transaction `{id}`: {what} failed: {reason}; aborted")]
    Aborted {
        id: String,
        what: &'static str,
        reason: String,
    },
}

impl TransactionError {
    pub fn is_fenced(&self) -> bool {
        matches!(self, TransactionError::Fenced { .. })
    }
}

/// A task's transactional producer and its open transaction.
///
/// A commit runs beside the record flow ([`Transaction::start_commit`]): while it is in
/// flight the task goes on processing, and its sinks hold what it sends (see
/// [`crate::sink::kafka::KafkaSink`]) until the next transaction has begun. So a commit's
/// round trips to the broker cost the task no time, only the records it holds meanwhile.
pub struct Transaction {
    producer: TaskProducer,
    /// The job's state topic, written in the transaction (restart state that survives a
    /// broker that drops commit metadata).
    state_topic: Option<String>,
    /// A transaction is open (or a commit in flight will begin the next one).
    open: bool,
    /// The commit in flight, if any.
    in_flight: Option<InFlight>,
}

/// The producer and its `transactional.id`: what a commit in flight needs.
#[derive(Clone)]
struct TaskProducer {
    producer: SharedProducer,
    id: String,
}

/// A commit running on its own thread.
struct InFlight {
    done: std::thread::JoinHandle<Result<(), TransactionError>>,
    /// What the caller noted with it, handed back when it completes.
    deposits: Option<u64>,
}

/// A commit that completed: the next transaction is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// What [`Transaction::start_commit`] was given with it.
    pub deposits: Option<u64>,
}

/// The consumed offsets a commit carries, with the group they are committed to.
pub type Offsets = (TopicPartitionList, ConsumerGroupMetadata);

/// The `transactional.id` of a task: stable across restarts of the same task, distinct
/// between the tasks and processes (`instance`) of a job, so that a restarted task fences
/// its zombie and nothing else.
pub fn transactional_id(job: &str, instance: &str, stage: &str, task: usize) -> String {
    format!("rivulet.{job}.{instance}.{stage}-{task}")
}

impl Transaction {
    /// Creates the producer, registers its `transactional.id` with the broker (which
    /// aborts what an earlier instance left open and fences it) and begins a transaction.
    pub fn open(
        config: &KafkaConfig,
        id: &str,
        state_topic: Option<&str>,
        commit_every: Duration,
    ) -> Result<Self, KafkaError> {
        let millis = |d: Duration| d.as_millis().to_string();
        let timeout = (commit_every * 10).clamp(TRANSACTION_TIMEOUT.0, TRANSACTION_TIMEOUT.1);
        let producer: BaseProducer<SinkContext> = config
            .client()
            .set("transactional.id", id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("transaction.timeout.ms", millis(timeout))
            // A record not delivered in time fails its transaction (which is retried).
            .set(
                "message.timeout.ms",
                millis(timeout - Duration::from_secs(1)),
            )
            .create_with_context(SinkContext::default())
            .map_err(KafkaError::client(format!(
                "creating the transactional producer `{id}`"
            )))?;
        producer
            .init_transactions(OPERATION_TIMEOUT)
            .map_err(KafkaError::client(format!(
                "registering transactional.id `{id}` (does the broker support transactions?)"
            )))?;
        let producer = Arc::new(producer);
        let mut transaction = Transaction {
            producer: TaskProducer {
                producer,
                id: id.to_owned(),
            },
            state_topic: state_topic.map(str::to_owned),
            open: false,
            in_flight: None,
        };
        transaction.begin().map_err(|err| KafkaError::Restore {
            reason: err.to_string(),
        })?;
        tracing::info!(
            transactional_id = id,
            "exactly-once: transactional producer ready"
        );
        Ok(transaction)
    }

    pub fn id(&self) -> &str {
        &self.producer.id
    }

    /// A sink to `topic` whose records go into this task's transactions.
    pub fn sink(&self, topic: &str) -> KafkaSink {
        KafkaSink::on(&self.producer.producer, topic)
    }

    /// Whether the producer was fenced (or failed for good): it cannot write any more.
    pub fn fenced(&self) -> Option<TransactionError> {
        self.producer.fenced()
    }

    fn begin(&mut self) -> Result<(), TransactionError> {
        self.producer.begin()?;
        self.producer.context().release();
        self.open = true;
        Ok(())
    }

    /// Starts committing the open transaction with `offsets` (the consumed offsets, with
    /// their restart state as metadata) and `states` (the same state for the state topic),
    /// on a thread of its own that begins the next transaction after it. Until then the
    /// task's sinks hold what is sent. A commit still in flight is waited for first (its
    /// outcome is returned, as [`Transaction::settle`] does); `deposits` comes back with
    /// this one's.
    pub fn start_commit(
        &mut self,
        offsets: Option<Offsets>,
        states: Vec<StateRecord>,
        deposits: Option<u64>,
    ) -> Result<Option<Committed>, TransactionError> {
        let previous = self.settle()?;
        if !self.open {
            self.begin()?;
        }
        let states = self
            .state_topic
            .as_ref()
            .map(|topic| (topic.clone(), states));
        let producer = self.producer.clone();
        producer.context().hold();
        let done = std::thread::Builder::new()
            .name("rivulet-commit".into())
            .spawn(move || {
                let committed = producer.commit(offsets, states);
                match &committed {
                    Ok(()) => producer.context().release(),
                    // The sinks keep holding: the task stops at the error, and nothing
                    // held may go out of a transaction.
                    Err(_) => producer.context().fail(),
                }
                committed
            });
        let done = match done {
            Ok(done) => done,
            Err(err) => {
                self.producer.context().release();
                let err = self
                    .producer
                    .abort_after("starting the commit", err.to_string());
                self.open = false;
                return Err(err);
            }
        };
        self.in_flight = Some(InFlight { done, deposits });
        Ok(previous)
    }

    /// The commit in flight, if it completed (without waiting): `Some` once it did.
    pub fn poll(&mut self) -> Result<Option<Committed>, TransactionError> {
        match &self.in_flight {
            Some(in_flight) if in_flight.done.is_finished() => self.settle(),
            _ => Ok(None),
        }
    }

    /// Waits for the commit in flight, if any. On failure the transaction was aborted
    /// (unless the producer was fenced) and the error says which.
    pub fn settle(&mut self) -> Result<Option<Committed>, TransactionError> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(None);
        };
        let outcome = in_flight.done.join().unwrap_or_else(|_| {
            Err(TransactionError::Aborted {
                id: self.producer.id.clone(),
                what: "committing",
                reason: "the commit thread panicked".into(),
            })
        });
        self.open = outcome.is_ok();
        outcome.map(|()| {
            Some(Committed {
                deposits: in_flight.deposits,
            })
        })
    }

    /// Aborts the open transaction (a stop that cannot commit): nothing of it becomes
    /// visible. A fenced producer has nothing to abort.
    pub fn abort(&mut self) {
        // A commit in flight ends first; if it failed it aborted already.
        let _ = self.settle();
        // What the sinks hold belongs to the aborted transaction.
        self.producer.context().aborted();
        if !self.open || self.fenced().is_some() {
            return;
        }
        self.open = false;
        self.producer.abort();
    }

    /// Begins a transaction after an [`Transaction::abort`] (the task goes on writing).
    pub fn restart(&mut self) -> Result<(), TransactionError> {
        self.settle()?;
        match self.open {
            true => Ok(()),
            false => self.begin(),
        }
    }
}

impl TaskProducer {
    fn context(&self) -> &SinkContext {
        self.producer.context()
    }

    fn fenced(&self) -> Option<TransactionError> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| TransactionError::Fenced {
                id: self.id.clone(),
                reason: format!("{code:?}: {reason}"),
            })
    }

    fn begin(&self) -> Result<(), TransactionError> {
        self.producer
            .begin_transaction()
            .map_err(|err| self.failed("beginning a transaction", err))
    }

    /// Writes the restart `states` to the state topic, sends the offsets (with the state
    /// records they pin) to the open transaction, commits it and begins the next one.
    fn commit(
        &self,
        offsets: Option<Offsets>,
        states: Option<(String, Vec<StateRecord>)>,
    ) -> Result<(), TransactionError> {
        if let Some((topic, records)) = &states {
            self.context().take_placed();
            for record in records {
                self.write_state(topic, record)?;
            }
        }
        self.flush()?;
        if let Some((mut offsets, group)) = offsets
            && offsets.count() > 0
        {
            if let Some((topic, records)) = &states {
                // Each pinned record's place: the offset after it, committed with the
                // transaction, says which record of its state partition is the committed one.
                for (partition, offset) in self.context().take_placed() {
                    if records.iter().any(|r| r.pinned && r.partition == partition) {
                        let _ = offsets.add_partition_offset(
                            topic,
                            partition,
                            Offset::Offset(offset + 1),
                        );
                    }
                }
            }
            if let Err(err) =
                self.producer
                    .send_offsets_to_transaction(&offsets, &group, OPERATION_TIMEOUT)
            {
                return Err(self.abort_on("sending the offsets", err));
            }
        }
        if let Err(err) = self.producer.commit_transaction(OPERATION_TIMEOUT) {
            return Err(self.abort_on("committing", err));
        }
        self.begin()
    }

    /// Sends one restart state record into the open transaction (its place is reported
    /// to [`SinkContext::take_placed`]).
    fn write_state(&self, topic: &str, state: &StateRecord) -> Result<(), TransactionError> {
        let mut record = BaseRecord::with_opaque_to(topic, Box::new((PLACED, 0)))
            .partition(state.partition)
            .key(state.key.as_bytes())
            .payload(state.value.as_bytes());
        let deadline = std::time::Instant::now() + OPERATION_TIMEOUT;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) if std::time::Instant::now() < deadline => {
                    record = back;
                    self.producer.poll(FLUSH_STEP);
                }
                Err((err, _)) => return Err(self.abort_on("writing restart state", err)),
            }
        }
    }

    /// Waits until every record of the transaction is delivered, its report served (here
    /// or by the task's poll). The client's own commit flushes too, but serves reports in
    /// waits of 100 ms that always run to their end: 100 ms per commit, however fast the
    /// broker.
    fn flush(&self) -> Result<(), TransactionError> {
        let deadline = std::time::Instant::now() + OPERATION_TIMEOUT;
        loop {
            match self.producer.flush(FLUSH_STEP) {
                Ok(()) => return Ok(()),
                Err(_) if std::time::Instant::now() < deadline => {}
                Err(err) => return Err(self.abort_on("delivering its records", err)),
            }
        }
    }

    fn abort(&self) {
        if let Err(err) = self.producer.abort_transaction(OPERATION_TIMEOUT) {
            tracing::warn!(transactional_id = %self.id, "aborting the transaction failed ({err}); the broker aborts it when it times out or when this task restarts");
        }
    }

    /// The error for a failed operation: fenced, or aborted after it.
    fn abort_on(&self, what: &'static str, err: rdkafka::error::KafkaError) -> TransactionError {
        match self.failed(what, err) {
            fenced @ TransactionError::Fenced { .. } => fenced,
            TransactionError::Aborted { reason, .. } => self.abort_after(what, reason),
        }
    }

    fn abort_after(&self, what: &'static str, reason: String) -> TransactionError {
        if let Some(fenced) = self.fenced() {
            return fenced;
        }
        self.abort();
        TransactionError::Aborted {
            id: self.id.clone(),
            what,
            reason,
        }
    }

    /// Classifies a failed operation: a fatal error (fenced by a newer instance) or one
    /// the transaction can be aborted after.
    fn failed(&self, what: &'static str, err: rdkafka::error::KafkaError) -> TransactionError {
        let fatal = match &err {
            rdkafka::error::KafkaError::Transaction(err) => err.is_fatal(),
            _ => false,
        };
        if let Some(fenced) = self.fenced() {
            return fenced;
        }
        if fatal {
            return TransactionError::Fenced {
                id: self.id.clone(),
                reason: err.to_string(),
            };
        }
        TransactionError::Aborted {
            id: self.id.clone(),
            what,
            reason: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_ids_differ_by_task_stage_and_instance_only() {
        assert_eq!(
            transactional_id("sales", "a", "task", 0),
            "rivulet.sales.a.task-0"
        );
        assert_eq!(
            transactional_id("sales", "a", "merge", 1),
            "rivulet.sales.a.merge-1"
        );
        assert_ne!(
            transactional_id("sales", "a", "task", 0),
            transactional_id("sales", "b", "task", 0)
        );
    }
}
