//! Dead letters: records a stage rejected or trapped on, sent on with headers saying which
//! stage, why, and where the record came from.

use crate::counters::{RECENT_DEAD_LETTERS, RecentDeadLetter};
use crate::sink::{SharedSink, Sink, SinkError};
use crate::spec::OnError;
use rivulet_rows::RawBatch;
use std::collections::{BTreeMap, VecDeque};

/// Header names on dead-letter records.
pub const STAGE: &str = "rivulet.stage";
pub const ERROR: &str = "rivulet.error";
pub const SOURCE_TOPIC: &str = "rivulet.source.topic";
pub const SOURCE_PARTITION: &str = "rivulet.source.partition";
pub const SOURCE_OFFSET: &str = "rivulet.source.offset";

/// A record that failed, and where it came from.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub stage: &'a str,
    pub error: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl<'a> DeadLetter<'a> {
    /// Record `index` of `raw`, rejected by `stage`.
    pub fn of_record(
        raw: &'a RawBatch,
        index: usize,
        stage: &'a str,
        error: &'a str,
        topic: &'a str,
    ) -> Self {
        let record = raw.record(index);
        DeadLetter {
            stage,
            error,
            topic,
            partition: record.as_ref().map_or(0, |r| r.partition),
            offset: record.as_ref().map_or(-1, |r| r.offset),
            key: record.as_ref().and_then(|r| r.key),
            payload: record.as_ref().map_or(&[][..], |r| r.payload),
        }
    }

    /// A derived row (a window result, a row to format) that failed: no single source record.
    pub fn derived(stage: &'a str, error: &'a str, topic: &'a str, payload: &'a [u8]) -> Self {
        DeadLetter {
            stage,
            error,
            topic,
            partition: -1,
            offset: -1,
            key: None,
            payload,
        }
    }
}

/// The policy in force and where dead letters go; counts per stage.
pub struct DeadLetters {
    sink: Option<SharedSink>,
    counts: BTreeMap<String, u64>,
    dropped: BTreeMap<String, u64>,
    /// Records each stage refused, whatever the policy did with them.
    errors: BTreeMap<String, u64>,
    /// After a restart, per partition, the offset up to which records were processed
    /// before: their dead letters were already delivered and are not sent again.
    replayed: BTreeMap<i32, i64>,
    /// Dead letters not sent again for that reason.
    resent_skipped: u64,
    /// The latest few, for the control API.
    recent: VecDeque<RecentDeadLetter>,
}

/// A stage's policy said `fail`.
#[derive(Debug, thiserror::Error)]
#[error(
    "stage `{stage}` rejected record {topic}/{partition}@{offset} and its policy is `fail`: {error}"
)]
pub struct FailPolicy {
    pub stage: String,
    pub error: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Fail(#[from] FailPolicy),
    #[error("dead-letter sink: {0}")]
    Sink(#[from] SinkError),
}

impl DeadLetters {
    pub fn new(sink: Option<SharedSink>) -> Self {
        DeadLetters {
            sink,
            counts: BTreeMap::new(),
            dropped: BTreeMap::new(),
            errors: BTreeMap::new(),
            replayed: BTreeMap::new(),
            resent_skipped: 0,
            recent: VecDeque::with_capacity(RECENT_DEAD_LETTERS),
        }
    }

    /// Records of partition p below `read[p]` are being replayed after a restart.
    pub fn replaying(&mut self, read: BTreeMap<i32, i64>) {
        self.replayed = read;
    }

    /// The same for partitions added to those read (the others' replay goes on).
    pub fn also_replaying(&mut self, read: BTreeMap<i32, i64>) {
        self.replayed.extend(read);
    }

    /// Partitions no longer read.
    pub fn not_replaying(&mut self, partitions: &[i32]) {
        self.replayed.retain(|p, _| !partitions.contains(p));
    }

    /// Dead letters of replayed records that were not sent again.
    pub fn resent_skipped(&self) -> u64 {
        self.resent_skipped
    }

    fn already_delivered(&self, letter: &DeadLetter<'_>) -> bool {
        letter.offset >= 0
            && self
                .replayed
                .get(&letter.partition)
                .is_some_and(|&read| letter.offset < read)
    }

    /// Handles one failed record under `policy`. Returns whether it was counted as a new
    /// error (not the replay of one handled before a restart).
    pub fn handle(
        &mut self,
        policy: OnError,
        letter: &DeadLetter<'_>,
    ) -> Result<bool, DeadLetterError> {
        if policy != OnError::Fail && self.already_delivered(letter) {
            self.resent_skipped += 1;
            return Ok(false);
        }
        *self.errors.entry(letter.stage.to_owned()).or_default() += 1;
        match policy {
            OnError::Fail => Err(FailPolicy {
                stage: letter.stage.to_owned(),
                error: letter.error.to_owned(),
                topic: letter.topic.to_owned(),
                partition: letter.partition,
                offset: letter.offset,
            }
            .into()),
            OnError::Drop => {
                *self.dropped.entry(letter.stage.to_owned()).or_default() += 1;
                Ok(true)
            }
            OnError::Dlq => {
                *self.counts.entry(letter.stage.to_owned()).or_default() += 1;
                self.remember(letter);
                let mut sink = self.sink.as_ref().map(SharedSink::lock);
                match sink.as_deref_mut() {
                    Some(sink @ Sink::Lines(_)) => {
                        let line = serde_json::json!({
                            "stage": letter.stage,
                            "error": letter.error,
                            "source": {"topic": letter.topic, "partition": letter.partition, "offset": letter.offset},
                            "key": letter.key.map(String::from_utf8_lossy),
                            "payload": String::from_utf8_lossy(letter.payload),
                        });
                        sink.send(None, line.to_string().as_bytes(), &[])?;
                    }
                    Some(sink) => {
                        let partition = letter.partition.to_string();
                        let offset = letter.offset.to_string();
                        let headers: [(&str, &[u8]); 5] = [
                            (STAGE, letter.stage.as_bytes()),
                            (ERROR, letter.error.as_bytes()),
                            (SOURCE_TOPIC, letter.topic.as_bytes()),
                            (SOURCE_PARTITION, partition.as_bytes()),
                            (SOURCE_OFFSET, offset.as_bytes()),
                        ];
                        sink.send(letter.key, letter.payload, &headers)?;
                    }
                    // The log is where it goes: one INFO line each (the stage's WARNs
                    // are rate-limited, see `crate::error_report`).
                    None => tracing::info!(
                        stage = letter.stage,
                        source = format!("{}/{}@{}", letter.topic, letter.partition, letter.offset),
                        "dead letter (no dead-letter topic configured): {}",
                        letter.error
                    ),
                }
                Ok(true)
            }
        }
    }

    fn remember(&mut self, letter: &DeadLetter<'_>) {
        if self.recent.len() == RECENT_DEAD_LETTERS {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentDeadLetter {
            at: crate::source::kafka::now_millis(),
            stage: letter.stage.to_owned(),
            error: letter.error.to_owned(),
            source: format!("{}/{}@{}", letter.topic, letter.partition, letter.offset),
        });
    }

    /// The latest dead letters, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &RecentDeadLetter> {
        self.recent.iter()
    }

    pub fn sink(&self) -> Option<&SharedSink> {
        self.sink.as_ref()
    }

    /// Dead letters per stage.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// Records each stage refused (dead-lettered or dropped).
    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    /// Dropped records per stage (policy `drop`).
    pub fn dropped(&self) -> &BTreeMap<String, u64> {
        &self.dropped
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_ten_dead_letters_are_kept_with_stage_reason_and_source() {
        let mut dead = DeadLetters::new(None);
        for offset in 0..12 {
            let letter = DeadLetter {
                stage: "parse",
                error: &format!("bad record {offset}"),
                topic: "orders",
                partition: 1,
                offset,
                key: None,
                payload: b"{",
            };
            dead.handle(OnError::Dlq, &letter).unwrap();
        }
        dead.handle(
            OnError::Drop,
            &DeadLetter::derived("format", "dropped", "orders", b"x"),
        )
        .unwrap();
        let recent: Vec<(&str, &str, &str)> = dead
            .recent()
            .map(|l| (l.stage.as_str(), l.error.as_str(), l.source.as_str()))
            .collect();
        assert_eq!(recent.len(), 10);
        assert_eq!(recent[0], ("parse", "bad record 2", "orders/1@2"));
        assert_eq!(recent[9], ("parse", "bad record 11", "orders/1@11"));
        assert_eq!(dead.counts()["parse"], 12);
    }
}
