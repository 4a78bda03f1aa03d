//! What a restart needs, per source partition, and how it is written down.
//!
//! A committed [`PartitionState`] says where to read again (`committed`), how far the job
//! had read (`read`: records between the two were processed before and only rebuild open
//! windows), and the watermarks that decide which windows had already closed. It is kept in
//! two places: the consumer group's commit metadata, and the job's state topic (some
//! Kafka-protocol brokers drop commit metadata). [`Restored::choose`] picks the newest.

use serde::{Deserialize, Serialize};

/// Version of the encoding below.
const VERSION: u32 = 1;

/// One partition's committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Where a restart reads from: the lowest offset an open window still needed.
    pub committed: i64,
    /// Next offset the job had read: records in `committed..read` were processed.
    pub read: i64,
    /// This partition's event-time watermark.
    #[serde(rename = "wm", default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<i64>,
    /// The job's combined watermark: windows it had closed for good are not reopened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub combined: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Encoded {
    v: u32,
    #[serde(flatten)]
    state: PartitionState,
}

/// A state record that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RestartStateError {
    #[error("restart state `{text}` is not valid: {reason}")]
    Invalid { text: String, reason: String },
    #[error("restart state version {found} is newer than this rivulet understands ({VERSION})")]
    Version { found: u32 },
}

impl PartitionState {
    /// The text kept in commit metadata and in the state topic.
    pub fn encode(&self) -> String {
        let encoded = Encoded {
            v: VERSION,
            state: *self,
        };
        serde_json::to_string(&encoded).unwrap_or_default()
    }

    /// Reads [`PartitionState::encode`]'s text. `committed` is the group's committed offset,
    /// used for the first release's metadata (`wm=<watermark>`, no read position).
    pub fn decode(text: &str, committed: Option<i64>) -> Result<Self, RestartStateError> {
        if let Some(wm) = text.strip_prefix("wm=")
            && let (Ok(wm), Some(committed)) = (wm.parse::<i64>(), committed)
        {
            return Ok(PartitionState {
                committed,
                read: committed,
                watermark: Some(wm),
                combined: Some(wm),
            });
        }
        let encoded: Encoded =
            serde_json::from_str(text).map_err(|err| RestartStateError::Invalid {
                text: text.chars().take(200).collect(),
                reason: err.to_string(),
            })?;
        if encoded.v > VERSION {
            return Err(RestartStateError::Version { found: encoded.v });
        }
        Ok(encoded.state)
    }
}

/// Where one partition restarts, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Offset to read from (`None`: nothing committed; the source's start policy applies).
    pub start: Option<i64>,
    /// The committed state, if any was found.
    pub state: Option<PartitionState>,
    /// Where the state came from, for the log.
    pub from: &'static str,
}

impl Restored {
    /// Picks a partition's restart point from the group's committed offset and the states
    /// found in commit metadata and in the state topic: the newest state wins (both are
    /// written only once everything before them was delivered).
    pub fn choose(
        group_offset: Option<i64>,
        metadata: Option<PartitionState>,
        state_topic: Option<PartitionState>,
    ) -> Self {
        let newest = |s: &(PartitionState, &'static str)| (s.0.read, s.0.committed);
        let best = [
            metadata.map(|s| (s, "commit metadata")),
            state_topic.map(|s| (s, "state topic")),
        ]
        .into_iter()
        .flatten()
        .max_by_key(newest);
        match (best, group_offset) {
            (Some((state, from)), _) => Restored {
                start: Some(state.committed),
                state: Some(state),
                from,
            },
            (None, Some(offset)) => Restored {
                start: Some(offset),
                state: None,
                from: "committed offset only",
            },
            (None, None) => Restored {
                start: None,
                state: None,
                from: "nothing committed",
            },
        }
    }

    /// The state an exactly-once transaction committed with its offsets.
    pub fn pinned(state: PartitionState) -> Self {
        Restored {
            start: Some(state.committed),
            state: Some(state),
            from: "state topic, pinned by the committed offsets",
        }
    }

    /// A committed offset without the state that goes with it: windows that had already
    /// fired may reopen on replayed records.
    pub fn is_missing_state(&self) -> bool {
        self.start.is_some() && self.state.is_none()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn state(committed: i64, read: i64) -> PartitionState {
        PartitionState {
            committed,
            read,
            watermark: Some(5),
            combined: Some(4),
        }
    }

    #[test]
    fn state_round_trips_through_its_text() {
        let s = state(3, 9);
        let text = s.encode();
        assert_eq!(
            text,
            r#"{"v":1,"committed":3,"read":9,"wm":5,"combined":4}"#
        );
        assert_eq!(PartitionState::decode(&text, None).unwrap(), s);
        let bare = PartitionState {
            watermark: None,
            combined: None,
            ..s
        };
        assert_eq!(PartitionState::decode(&bare.encode(), None).unwrap(), bare);
    }

    #[test]
    fn first_release_metadata_is_read_as_a_watermark_at_the_committed_offset() {
        let s = PartitionState::decode("wm=1700", Some(42)).unwrap();
        assert_eq!(
            s,
            PartitionState {
                committed: 42,
                read: 42,
                watermark: Some(1700),
                combined: Some(1700)
            }
        );
    }

    #[test]
    fn unreadable_or_newer_state_is_an_error_naming_it() {
        let err = PartitionState::decode("garbage", None).unwrap_err();
        assert!(err.to_string().contains("`garbage` is not valid"), "{err}");
        let err = PartitionState::decode(r#"{"v":7,"committed":1,"read":1}"#, None).unwrap_err();
        assert!(err.to_string().contains("version 7"), "{err}");
    }

    #[test]
    fn the_newest_state_wins_wherever_it_was_found() {
        let older = state(10, 20);
        let newer = state(15, 30);
        let r = Restored::choose(Some(10), Some(older), Some(newer));
        assert_eq!(
            (r.start, r.state, r.from),
            (Some(15), Some(newer), "state topic")
        );
        let r = Restored::choose(Some(15), Some(newer), Some(older));
        assert_eq!(r.from, "commit metadata");
        // The broker dropped the metadata: the state topic still has it.
        let r = Restored::choose(Some(15), None, Some(newer));
        assert_eq!(r.state, Some(newer));
        assert!(!r.is_missing_state());
    }

    #[test]
    fn a_committed_offset_without_state_is_flagged() {
        let r = Restored::choose(Some(7), None, None);
        assert_eq!((r.start, r.state), (Some(7), None));
        assert!(r.is_missing_state());
        let fresh = Restored::choose(None, None, None);
        assert_eq!(fresh.start, None);
        assert!(!fresh.is_missing_state());
    }
}
