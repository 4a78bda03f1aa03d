//! Exactly-once delivery (`delivery = "exactly-once"`): one transactional producer per task.
//!
//! Every record the task writes — window results, dead letters, late records, partials to
//! the job's internal topic, restart state to the state topic — goes through its
//! [`Transaction`]'s producer, inside the open Kafka transaction. Each commit interval the
//! consumed offsets (with the restart state as commit metadata) join the transaction and it
//! commits: the outputs and the input position become visible together, to `read_committed`
//! readers, or not at all. A crash leaves the open transaction to be aborted by the broker
//! (or by the restarted task's `init_transactions`, which also fences the old instance), and
//! the restart replays from the committed position.

use crate::kafka::{KafkaConfig, KafkaError};
use crate::sink::kafka::{KafkaSink, SharedProducer, SinkContext};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;
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
pub struct Transaction {
    producer: SharedProducer,
    id: String,
    /// The job's state topic, written in the transaction (restart state that survives a
    /// broker that drops commit metadata).
    state: Option<KafkaSink>,
    /// A transaction is open.
    open: bool,
}

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
        let state = state_topic.map(|topic| KafkaSink::on(&producer, topic));
        let mut transaction = Transaction {
            producer,
            id: id.to_owned(),
            state,
            open: false,
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
        &self.id
    }

    /// A sink to `topic` whose records go into this task's transactions.
    pub fn sink(&self, topic: &str) -> KafkaSink {
        KafkaSink::on(&self.producer, topic)
    }

    /// Whether the producer was fenced (or failed for good): it cannot write any more.
    pub fn fenced(&self) -> Option<TransactionError> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| TransactionError::Fenced {
                id: self.id.clone(),
                reason: format!("{code:?}: {reason}"),
            })
    }

    fn begin(&mut self) -> Result<(), TransactionError> {
        self.producer
            .begin_transaction()
            .map_err(|err| self.failed("beginning a transaction", err))?;
        self.open = true;
        Ok(())
    }

    /// Commits the open transaction with `offsets` (the consumed offsets of `group`, with
    /// their restart state as metadata) and `states` (records for the state topic: key,
    /// value), then begins the next one. On failure the transaction is aborted (unless the
    /// producer was fenced) and the error says which.
    pub fn commit(
        &mut self,
        offsets: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>,
        states: &[(String, String)],
    ) -> Result<(), TransactionError> {
        if !self.open {
            self.begin()?;
        }
        if let Some(state) = &mut self.state {
            for (key, value) in states {
                if let Err(err) =
                    state.send_to(Some(0), Some(key.as_bytes()), value.as_bytes(), &[])
                {
                    return Err(self.abort_after("writing restart state", err.to_string()));
                }
            }
        }
        if let Some((offsets, group)) = offsets
            && offsets.count() > 0
            && let Err(err) =
                self.producer
                    .send_offsets_to_transaction(offsets, group, OPERATION_TIMEOUT)
        {
            return Err(self.abort_on("sending the offsets", err));
        }
        if let Err(err) = self.producer.commit_transaction(OPERATION_TIMEOUT) {
            return Err(self.abort_on("committing", err));
        }
        self.open = false;
        if let Some(state) = &mut self.state {
            // Its delivery reports came before the commit returned.
            let _ = state.poll();
        }
        self.begin()
    }

    /// Aborts the open transaction (a stop that cannot commit): nothing of it becomes
    /// visible. A fenced producer has nothing to abort.
    pub fn abort(&mut self) {
        if !self.open || self.fenced().is_some() {
            return;
        }
        self.open = false;
        if let Err(err) = self.producer.abort_transaction(OPERATION_TIMEOUT) {
            tracing::warn!(transactional_id = %self.id, "aborting the transaction failed ({err}); the broker aborts it when it times out or when this task restarts");
        }
    }

    /// Begins a transaction after an [`Transaction::abort`] (the task goes on writing).
    pub fn restart(&mut self) -> Result<(), TransactionError> {
        match self.open {
            true => Ok(()),
            false => self.begin(),
        }
    }

    /// The error for a failed operation: fenced, or aborted after it.
    fn abort_on(
        &mut self,
        what: &'static str,
        err: rdkafka::error::KafkaError,
    ) -> TransactionError {
        match self.failed(what, err) {
            fenced @ TransactionError::Fenced { .. } => fenced,
            TransactionError::Aborted { reason, .. } => self.abort_after(what, reason),
        }
    }

    fn abort_after(&mut self, what: &'static str, reason: String) -> TransactionError {
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
