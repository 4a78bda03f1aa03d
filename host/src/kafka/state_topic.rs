//! The job's state topic: a small compacted topic holding each source partition's restart
//! state (see [`crate::delivery::restart`]), keyed `<topic>/<partition>`. Unlike commit
//! metadata, every Kafka-protocol broker keeps it. Everything lives in partition 0, whatever
//! partition count a broker gave the topic when it created it on its own.

use super::compacted::Compacted;
use super::{KafkaConfig, KafkaError};
use crate::delivery::PartitionState;
use std::collections::BTreeMap;

/// The state topic of a consumer group.
pub struct StateTopic {
    topic: Compacted,
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

/// The record (key, value) holding `state` of `topic`'s `partition`.
pub fn record(topic: &str, partition: i32, state: &PartitionState) -> (String, String) {
    (key(topic, partition), state.encode())
}

impl StateTopic {
    /// Connects to the state topic of `group`, creating it (compacted, one partition) if the
    /// broker serves topic creation; otherwise the first write creates it.
    pub fn open(config: &KafkaConfig, group: &str) -> Result<Self, KafkaError> {
        let topic = Compacted::open(config, &topic_name(group), "state topic")?;
        Ok(StateTopic { topic })
    }

    pub fn name(&self) -> &str {
        self.topic.name()
    }

    /// The newest state of each of `partitions` of `topic` (absent: none was written).
    pub fn read(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, PartitionState>, KafkaError> {
        let wanted: BTreeMap<String, i32> =
            partitions.iter().map(|&p| (key(topic, p), p)).collect();
        let mut found = BTreeMap::new();
        let name = self.name();
        self.topic.read_to_end(|entry| {
            let Some(&p) = wanted.get(&entry.key) else {
                return;
            };
            match entry.value.as_deref().map(std::str::from_utf8) {
                Some(Ok(text)) => match PartitionState::decode(text, None) {
                    Ok(state) => {
                        found.insert(p, state);
                    }
                    Err(err) => tracing::warn!(topic = %name, partition = p, "{err}"),
                },
                // A tombstone: the state was reset.
                None => {
                    found.remove(&p);
                }
                Some(Err(_)) => {
                    tracing::warn!(topic = %name, partition = p, "state is not UTF-8")
                }
            }
        })?;
        Ok(found)
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
