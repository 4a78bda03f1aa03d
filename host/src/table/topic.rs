//! A table from a Kafka topic (compacted, typically; Kafka Streams' GlobalKTable): every
//! partition is read from the beginning to the end it had at start before the job takes its
//! first record, then a thread follows the topic while the job runs. The record key is the
//! row's key (its text, or with `key_format = "json"` the key column of a JSON key), the
//! value a JSON object of its columns; the last value of a key wins, and a record without
//! a value (a tombstone) deletes the key. A record that is no row (no key, a JSON key
//! without the key column, not a JSON object) is refused, counted and logged; the row
//! before it stays.

use super::contents::Contents;
use super::{Table, TableContext, TableError, TableHandle};
use crate::kafka::KafkaError;
use crate::spec::{TableSpec, TopicKeyFormat};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long one metadata or watermark request may take.
const ASK: Duration = Duration::from_secs(10);

/// Reads `topic` into the table `spec` (its record keys written as `key_format` says) and
/// starts following it.
pub fn follow(
    spec: &TableSpec,
    topic: &str,
    key_format: TopicKeyFormat,
    context: &TableContext<'_>,
) -> Result<TableHandle, TableError> {
    let fail = |error: KafkaError| TableError::Kafka {
        table: spec.name.clone(),
        error: Box::new(error),
    };
    let consumer: BaseConsumer = context
        .kafka
        .client()
        .set(
            "group.id",
            format!("rivulet-{}-table-{}", context.job, spec.name),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .map_err(|e| fail(KafkaError::client("creating the table's consumer")(e)))?;
    let partitions = crate::kafka::wait_for_kafka(
        consumer.client(),
        context.kafka,
        topic,
        true,
        context.connect_timeout,
        context.stop,
    )
    .map_err(fail)?;
    // Where each partition ends now: the table is complete once read that far.
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, ASK).map_err(|e| {
            fail(KafkaError::client(format!(
                "reading the end of {topic}/{p}"
            ))(e))
        })?;
        if high > low {
            ends.insert(p, high);
        }
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| fail(KafkaError::client("assigning the table's partitions")(e)))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| fail(KafkaError::client("assigning the table's partitions")(e)))?;
    let table = Arc::new(Table::new(
        &spec.name,
        &spec.key,
        format!("Kafka topic {topic}"),
        Contents::new(&spec.types),
    ));
    let follower = Follower {
        consumer,
        table: table.clone(),
        key: spec.key.clone(),
        key_format,
    };
    let started = Instant::now();
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        if context.stop.load(Ordering::Relaxed) {
            return Err(fail(KafkaError::Interrupted));
        }
        if let Some(limit) = context.connect_timeout
            && last_progress.elapsed() > limit
        {
            let behind: Vec<String> = ends
                .iter()
                .map(|(p, end)| format!("{p} (to {end})"))
                .collect();
            return Err(TableError::Invalid {
                table: spec.name.clone(),
                message: format!(
                    "reading topic `{topic}` to its end: nothing came for {:.0?} from partition(s) {} (read for {:.1?})",
                    limit,
                    behind.join(", "),
                    started.elapsed()
                ),
            });
        }
        match follower.consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_progress = Instant::now();
                let (partition, offset) = (message.partition(), message.offset());
                follower.apply(&message);
                if ends.get(&partition).is_some_and(|&end| offset + 1 >= end) {
                    ends.remove(&partition);
                }
            }
            Some(Err(err)) => {
                if let Some(line) = crate::kafka::collapsed(&format!(
                    "table `{}`: reading {topic}: {err}",
                    spec.name
                )) {
                    tracing::warn!("{line}");
                }
            }
            None => {}
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let follower_stop = stop.clone();
    std::thread::Builder::new()
        .name(format!("rivulet-table-{}", spec.name))
        .spawn(move || follower.run(&follower_stop))
        .map_err(|err| TableError::Invalid {
            table: spec.name.clone(),
            message: format!("cannot start the thread following topic `{topic}`: {err}"),
        })?;
    Ok(TableHandle {
        table,
        follower_stop: Some(stop),
    })
}

/// Applies a topic's records to its table.
struct Follower {
    consumer: BaseConsumer,
    table: Arc<Table>,
    key: String,
    key_format: TopicKeyFormat,
}

impl Follower {
    /// The row key a record's key names: its text, or the key column of a JSON key (an
    /// object holding it, or a bare value).
    fn key_of(&self, key: &[u8]) -> Result<String, String> {
        let text = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8 text".to_owned())?;
        if self.key_format == TopicKeyFormat::Text {
            return Ok(text.to_owned());
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|err| format!("the key is not JSON: {err}"))?;
        match value {
            serde_json::Value::Object(mut fields) => match fields.remove(&self.key) {
                Some(value) => super::contents::key_text(Some(&value), &self.key),
                None => Err(format!("the JSON key has no `{}`", self.key)),
            },
            value => super::contents::key_text(Some(&value), &self.key),
        }
    }

    /// Follows the topic until `stop`.
    fn run(self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => self.apply(&message),
                Some(Err(err)) => {
                    if let Some(line) = crate::kafka::collapsed(&format!(
                        "table `{}`: reading its topic: {err}",
                        self.table.name
                    )) {
                        tracing::warn!("{line}");
                    }
                }
                None => {}
            }
        }
    }

    fn apply(&self, message: &BorrowedMessage<'_>) {
        let at = format!(
            "{}/{}@{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        let key = match message.key().map(|key| self.key_of(key)) {
            Some(Ok(key)) => key,
            Some(Err(reason)) => return self.table.reject(format!("record {at}: {reason}")),
            None => {
                return self
                    .table
                    .reject(format!("record {at} has no key (a table row needs one)"));
            }
        };
        let key = key.as_str();
        let Some(payload) = message.payload() else {
            return self.table.delete(key);
        };
        let mut row = match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(serde_json::Value::Object(row)) => row,
            Ok(_) => {
                return self
                    .table
                    .reject(format!("record {at}: the value is not a JSON object"));
            }
            Err(err) => {
                return self
                    .table
                    .reject(format!("record {at}: the value is not JSON: {err}"));
            }
        };
        match row.get(&self.key) {
            None | Some(serde_json::Value::Null) => {
                row.insert(self.key.clone(), serde_json::Value::String(key.to_owned()));
            }
            Some(value) => match super::contents::key_text(Some(value), &self.key) {
                Ok(text) if text == key => {}
                Ok(text) => {
                    return self.table.reject(format!(
                        "record {at}: its `{}` {text:?} is not its key {key:?}",
                        self.key
                    ));
                }
                Err(reason) => return self.table.reject(format!("record {at}: {reason}")),
            },
        }
        self.table.upsert(key, row);
    }
}
