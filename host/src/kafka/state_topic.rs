//! The job's state topic: a small compacted topic holding each source partition's restart
//! state (see [`crate::delivery::restart`]), keyed `<topic>/<partition>`. Unlike commit
//! metadata, every Kafka-protocol broker keeps it.
//!
//! At-least-once jobs write it in partition 0 and a restore takes the newest state found
//! there. Exactly-once jobs write each source partition's state in the transaction that
//! commits its offsets, into the state partition of the same number, and commit with those
//! offsets the offset after that record ("pinned"): a restore reads exactly that record.
//! Newer records may belong to aborted transactions, which some brokers (Tansu 0.6, the
//! embedded one) show to every reader; a committed offset is never one of them. A source
//! partition beyond the topic's partition count (a broker that cannot add partitions) falls
//! back to partition 0 and the newest state.

use super::compacted::Compacted;
use super::{KafkaConfig, KafkaError};
use crate::delivery::PartitionState;
use std::collections::BTreeMap;

/// The state topic of a consumer group.
pub struct StateTopic {
    topic: Compacted,
    /// Whether states are pinned by committed offsets (exactly-once).
    pinned: bool,
}

/// A state record to write in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    /// The state topic's partition it goes to.
    pub partition: i32,
    pub key: String,
    pub value: String,
    /// Whether the transaction's offsets pin it (see the module's documentation).
    pub pinned: bool,
}

/// The state topic's name for a consumer group: `<group>-state`, with characters Kafka does
/// not allow in topic names replaced by `_`.
pub fn topic_name(group: &str) -> String {
    let clean: String = group
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    format!("{clean}-state")
}

fn key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

impl StateTopic {
    /// Connects to the state topic of `group`, creating it (compacted) if the broker serves
    /// topic creation; otherwise the first write creates it. `pinned`: the source's
    /// partition count, for an exactly-once job, which the topic is given (or grown to).
    pub fn open(
        config: &KafkaConfig,
        group: &str,
        pinned: Option<i32>,
    ) -> Result<Self, KafkaError> {
        let topic = Compacted::open(
            config,
            &topic_name(group),
            "state topic",
            pinned.unwrap_or(1),
        )?;
        if let Some(wanted) = pinned
            && topic.partitions() < wanted
        {
            tracing::warn!(
                topic = %topic.name(),
                partitions = topic.partitions(),
                wanted,
                "the state topic has fewer partitions than the source: the restart state of the source partitions beyond them is not pinned by the committed offsets, and a broker that shows aborted records to every reader may restore theirs from an aborted transaction"
            );
        }
        Ok(StateTopic {
            topic,
            pinned: pinned.is_some(),
        })
    }

    pub fn name(&self) -> &str {
        self.topic.name()
    }

    /// Whether the restart state of source partition `partition` is pinned by committed
    /// offsets: it lives in the state partition of the same number.
    pub fn pins(&self, partition: i32) -> bool {
        self.pinned && (0..self.topic.partitions()).contains(&partition)
    }

    /// The record holding `state` of `topic`'s `partition`, for a transaction.
    pub fn record(&self, topic: &str, partition: i32, state: &PartitionState) -> StateRecord {
        let pinned = self.pins(partition);
        StateRecord {
            partition: if pinned { partition } else { 0 },
            key: key(topic, partition),
            value: state.encode(),
            pinned,
        }
    }

    /// The pinned state of each of `topic`'s partitions in `pins` (partition → the offset
    /// committed with its state): the record before the pin in its state partition.
    /// `None`: that record is gone (compacted away) or is not this partition's.
    pub fn read_pinned(
        &self,
        topic: &str,
        pins: &BTreeMap<i32, i64>,
    ) -> Result<BTreeMap<i32, Option<PartitionState>>, KafkaError> {
        let places = pins.iter().map(|(&p, &pin)| (p, pin - 1)).collect();
        let mut states = BTreeMap::new();
        for (p, entry) in self.topic.read_at(&places)? {
            let value = entry
                .filter(|entry| entry.key == key(topic, p))
                .and_then(|entry| entry.value);
            let state = match value {
                None => None,
                Some(value) => Some(
                    PartitionState::decode(&String::from_utf8_lossy(&value), None).map_err(
                        |err| KafkaError::Restore {
                            reason: format!("state topic `{}`: {err}", self.name()),
                        },
                    )?,
                ),
            };
            states.insert(p, state);
        }
        Ok(states)
    }

    /// The newest state of each of `partitions` of `topic` (absent: none was written):
    /// the last one in its state partition, and of those in different state partitions
    /// (partition 0, and its own when pinned), the one that had read furthest.
    pub fn read(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, PartitionState>, KafkaError> {
        let wanted: BTreeMap<String, i32> =
            partitions.iter().map(|&p| (key(topic, p), p)).collect();
        // By state partition, then source partition: the last state (None: a tombstone).
        let mut found: BTreeMap<(i32, i32), Option<PartitionState>> = BTreeMap::new();
        let name = self.name();
        let state_partitions: Vec<i32> = (0..self.topic.partitions()).collect();
        self.topic
            .read_partitions_to_end(&state_partitions, |entry| {
                let Some(&p) = wanted.get(&entry.key) else {
                    return;
                };
                let state = match entry.value.as_deref().map(std::str::from_utf8) {
                    Some(Ok(text)) => match PartitionState::decode(text, None) {
                        Ok(state) => Some(state),
                        Err(err) => {
                            tracing::warn!(topic = %name, partition = p, "{err}");
                            return;
                        }
                    },
                    // A tombstone: the state was reset.
                    None => None,
                    Some(Err(_)) => {
                        tracing::warn!(topic = %name, partition = p, "state is not UTF-8");
                        return;
                    }
                };
                found.insert((entry.partition, p), state);
            })?;
        let mut newest: BTreeMap<i32, PartitionState> = BTreeMap::new();
        for ((_, p), state) in found {
            if let Some(state) = state
                && newest
                    .get(&p)
                    .is_none_or(|n| (n.read, n.committed) < (state.read, state.committed))
            {
                newest.insert(p, state);
            }
        }
        Ok(newest)
    }

    /// Writes `states` of `topic`'s partitions and waits until the broker has them.
    pub fn write(
        &self,
        topic: &str,
        states: &BTreeMap<i32, PartitionState>,
    ) -> Result<(), KafkaError> {
        let records: Vec<(String, String)> = states
            .iter()
            .map(|(&p, state)| (key(topic, p), state.encode()))
            .collect();
        let records: Vec<(&str, Option<&[u8]>)> = records
            .iter()
            .map(|(key, value)| (key.as_str(), Some(value.as_bytes())))
            .collect();
        self.topic.write(&records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_topic_names_are_valid_kafka_names() {
        assert_eq!(topic_name("rivulet-orders"), "rivulet-orders-state");
        assert_eq!(topic_name("team a/orders"), "team_a_orders-state");
    }
}
