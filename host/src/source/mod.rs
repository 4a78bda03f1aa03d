//! Where records come from: a Kafka topic, or lines of a file or standard input (replays
//! and benchmarks; one record per line, offsets are line numbers, partition 0).

pub mod kafka;
pub mod lines;

pub use lines::{FileSplit, LineSource, reread, split_file};

use crate::delivery::PartitionState;
use crate::kafka::KafkaError;
use crate::source::kafka::{Assignment, KafkaSource};
use rivulet_rows::RawBatch;
use std::collections::BTreeMap;
use std::time::Duration;

/// A job's source.
pub enum Source {
    Kafka(Box<KafkaSource>),
    Lines(LineSource),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("cannot read {name}: {error}")]
    Io { name: String, error: std::io::Error },
}

impl Source {
    /// The topic (or file) records come from, for dead-letter headers.
    pub fn name(&self) -> &str {
        match self {
            Source::Kafka(kafka) => kafka.topic(),
            Source::Lines(lines) => &lines.name,
        }
    }

    pub fn poll(&mut self, max: usize, wait: Duration) -> Result<RawBatch, SourceError> {
        match self {
            Source::Kafka(kafka) => Ok(kafka.poll(max, wait)?),
            Source::Lines(lines) => lines.poll(max).map_err(|source| SourceError::Io {
                name: lines.name.clone(),
                error: source,
            }),
        }
    }

    pub fn at_end(&self) -> bool {
        match self {
            Source::Kafka(kafka) => kafka.at_end(),
            Source::Lines(lines) => lines.ended,
        }
    }

    /// Next offset to read, per partition.
    pub fn positions(&self) -> BTreeMap<i32, i64> {
        match self {
            Source::Kafka(kafka) => kafka.positions().clone(),
            Source::Lines(lines) => BTreeMap::from([(0, lines.next)]),
        }
    }

    /// Per partition, records past the read position (Kafka's consumer lag, as last
    /// reported; empty for other sources).
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        match self {
            Source::Kafka(kafka) => kafka.lag(),
            Source::Lines(_) => BTreeMap::new(),
        }
    }

    /// The partitions read, and their restart state (lines: one partition, from the start).
    pub fn assignment(&self) -> Assignment {
        match self {
            Source::Kafka(kafka) => kafka.assignment().clone(),
            Source::Lines(_) => Assignment {
                partitions: vec![0],
                ..Assignment::default()
            },
        }
    }

    /// The next change of partitions from the consumer group since the last call.
    pub fn take_rebalance(&mut self) -> Option<kafka::Rebalance> {
        match self {
            Source::Kafka(kafka) => kafka.take_rebalance(),
            Source::Lines(_) => None,
        }
    }

    /// Whether the consumer group revoked the partitions and waits for the job to commit
    /// what it did with them and [`Source::release`] them.
    pub fn revoked(&self) -> bool {
        match self {
            Source::Kafka(kafka) => kafka.revoked(),
            Source::Lines(_) => false,
        }
    }

    /// Lets revoked partitions go to the group's other members.
    pub fn release(&mut self) {
        if let Source::Kafka(kafka) = self {
            kafka.release();
        }
    }

    /// Releases the source (leaves a consumer group promptly).
    pub fn close(&mut self) {
        if let Source::Kafka(kafka) = self {
            kafka.close();
        }
    }

    /// Commits restart states (Kafka only; lines have nothing to commit).
    pub fn commit(
        &mut self,
        states: &BTreeMap<i32, PartitionState>,
        sync: bool,
    ) -> Result<usize, SourceError> {
        match self {
            Source::Kafka(kafka) => Ok(kafka.commit(states, sync)?),
            Source::Lines(_) => Ok(0),
        }
    }
}
