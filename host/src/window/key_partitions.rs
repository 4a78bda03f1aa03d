//! The check behind `window.exchange = "partitioned"`: every window key must come from one
//! source partition, or a process finishing its own partitions' windows would emit partial
//! results. [`KeyPartitions`] remembers the partition each key came from (shared by the
//! tasks of a process) and names the first key seen in two.

use rivulet_rows::Scalar;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// How many keys are remembered; past it, new keys go unchecked (said once in the log).
pub const KEYS_CHECKED: usize = 1 << 20;

/// A key that came from two partitions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "window key `{column}` = {key} came from partitions {first} and {second} of the source: the input is not partitioned by the window key, so `window.exchange = \"partitioned\"` would emit partial results; use `window.exchange = \"kafka\"` (partials merged over Kafka), or key the records by `{column}` when producing them"
)]
pub struct NotPartitioned {
    pub column: String,
    pub key: String,
    pub first: i32,
    pub second: i32,
}

/// The partition each window key came from, for the tasks of one process.
#[derive(Debug)]
pub struct KeyPartitions {
    column: String,
    seen: Mutex<HashMap<Scalar, i32>>,
}

impl KeyPartitions {
    /// A check of the keys in `column`.
    pub fn new(column: &str) -> Self {
        KeyPartitions {
            column: column.to_owned(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that `key` came from `partition`; an error if it came from another before.
    pub fn check(&self, key: &Scalar, partition: i32) -> Result<(), NotPartitioned> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.get(key) {
            Some(&first) if first != partition => Err(NotPartitioned {
                column: self.column.clone(),
                key: key.to_json().to_string(),
                first,
                second: partition,
            }),
            Some(_) => Ok(()),
            None if seen.len() < KEYS_CHECKED => {
                seen.insert(key.clone(), partition);
                Ok(())
            }
            None => {
                if seen.len() == KEYS_CHECKED {
                    tracing::info!(
                        keys = KEYS_CHECKED,
                        "window keys: {KEYS_CHECKED} distinct keys checked for coming from one partition each; later new keys are not checked"
                    );
                    // One entry past the limit marks the line as written.
                    seen.insert(key.clone(), partition);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_from_a_second_partition_is_named_with_both_partitions() {
        let keys = KeyPartitions::new("status");
        let new = Scalar::Text("NEW".into());
        let shipped = Scalar::Text("SHIPPED".into());
        keys.check(&new, 0).unwrap();
        keys.check(&shipped, 2).unwrap();
        keys.check(&new, 0).unwrap();
        let err = keys.check(&new, 2).unwrap_err();
        assert_eq!((err.key.as_str(), err.first, err.second), ("\"NEW\"", 0, 2));
        assert!(
            err.to_string().starts_with(
                "window key `status` = \"NEW\" came from partitions 0 and 2 of the source"
            ),
            "{err}"
        );
        keys.check(&shipped, 2).unwrap();
    }
}
