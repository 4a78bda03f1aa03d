//! What can stop a job.

use crate::dead_letter::DeadLetterError;
use crate::sink::SinkError;
use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error(transparent)]
    Udf(#[from] crate::udf::UdfError),
    #[error(transparent)]
    Transaction(#[from] crate::delivery::TransactionError),
    /// `window.exchange = "partitioned"` over input that is not.
    #[error(transparent)]
    NotPartitioned(#[from] crate::window::key_partitions::NotPartitioned),
    /// Boxed: a table's errors are large and rare (only at start).
    #[error(transparent)]
    Table(Box<crate::table::TableError>),
}

impl From<crate::table::TableError> for PipelineError {
    fn from(err: crate::table::TableError) -> Self {
        PipelineError::Table(Box::new(err))
    }
}

impl PipelineError {
    /// Whether Kafka refused or lost something the job needs (a record the broker would
    /// not take, a partition it could not restore): a restart from the committed state
    /// recovers, as after a crash. Not: a broker unreachable for longer than the job was
    /// told to wait, or a stop request.
    pub fn is_kafka_failure(&self) -> bool {
        use crate::dead_letter::DeadLetterError;
        use crate::kafka::KafkaError;
        let kafka = match self {
            // Aborted: a restart replays from the last commit. Fenced: not a failure to
            // restart from (a newer instance carries on).
            PipelineError::Transaction(err) => return !err.is_fenced(),
            PipelineError::Source(SourceError::Kafka(err))
            | PipelineError::Sink(SinkError::Kafka(err))
            | PipelineError::DeadLetter(DeadLetterError::Sink(SinkError::Kafka(err))) => err,
            _ => return false,
        };
        !matches!(
            kafka,
            KafkaError::Interrupted | KafkaError::Unreachable { .. } | KafkaError::NoTopic { .. }
        )
    }
}
