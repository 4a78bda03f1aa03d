//! What the record path hands a shadow: a copy of a batch's input with the live module's
//! output, sent without blocking ([`Tap::send`]).

use super::{BEHIND, Control, State};
use rivulet_rows::{Batch, Encoded, RawBatch, RecordError, Scalar};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

/// The live module's output for one batch.
pub struct LiveRows {
    pub rows: Batch,
    pub origins: Vec<u32>,
    pub errors: Vec<RecordError>,
    /// The call on the whole batch trapped or hit a limit (its inputs were isolated).
    pub trapped: bool,
}

impl LiveRows {
    /// A copy of a live call's output.
    pub fn of(out: &rivulet_rows::RowsOut, trapped: bool) -> Self {
        LiveRows {
            rows: out.rows.clone(),
            origins: out.origins.clone(),
            errors: out.errors.clone(),
            trapped,
        }
    }

    /// A live call that failed as a whole: every input refused with `message`.
    pub fn failed(inputs: u32, message: &str) -> Self {
        LiveRows {
            rows: Batch::default(),
            origins: Vec::new(),
            errors: (0..inputs)
                .map(|index| RecordError {
                    index,
                    message: message.to_owned(),
                })
                .collect(),
            trapped: true,
        }
    }
}

/// Rows the live window operator added to one window and key.
pub struct Group {
    pub start: i64,
    pub end: i64,
    pub key: Scalar,
    /// Rows of the feed's batch.
    pub rows: Vec<u32>,
}

/// One window and key the live module finished.
pub struct Fired {
    pub start: i64,
    pub end: i64,
    /// The window's last firing (its accumulators are let go of).
    pub is_final: bool,
    pub key: Scalar,
    /// The live result row, or why the live module refused the window.
    pub result: Result<serde_json::Value, String>,
}

/// A copy of one batch of a stage's live work.
pub enum Feed {
    Parse {
        input: RawBatch,
        live: LiveRows,
        busy: Duration,
    },
    Map {
        input: Batch,
        live: LiveRows,
        busy: Duration,
    },
    Format {
        input: Batch,
        live: Encoded,
        trapped: bool,
        busy: Duration,
    },
    /// An aggregate's `add`: the rows the live operator assigned, grouped by window and
    /// key. `open` (sent once per task) lists the windows already open when the shadow
    /// started: it sees only part of them.
    Add {
        rows: Batch,
        groups: Vec<Group>,
        open: Option<Vec<i64>>,
        errors: u64,
        busy: Duration,
    },
    /// Windows the live module finished.
    Fired { windows: Vec<Fired>, busy: Duration },
}

/// A task's end of a running shadow's input.
#[derive(Clone)]
pub struct Tap {
    pub(super) sender: SyncSender<Feed>,
    pub(super) control: Arc<Control>,
    pub(super) epoch: u64,
}

impl Tap {
    /// Which shadow this is (a new shadow of the same stage has a new one).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Hands the shadow a feed without waiting: a shadow with [`BEHIND`] batches waiting is
    /// dropped instead (the live job is not slowed down for it).
    pub fn send(&self, feed: Feed) {
        if self.control.stopped() {
            return;
        }
        match self.sender.try_send(feed) {
            Ok(()) => {
                self.control.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => self.control.stop(
                State::Dropped,
                format!(
                    "fell behind the live stage by more than {BEHIND} batches (the shadow is slower than the live module)"
                ),
            ),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Feed {
    /// What a shadow of the aggregate gets of one `add`: the rows, grouped by window and key.
    pub fn of_add(
        rows: &Batch,
        targets: &crate::window::Targets<'_>,
        size_ms: i64,
        open: Option<Vec<i64>>,
        errors: u64,
        busy: std::time::Duration,
    ) -> crate::shadow::Feed {
        // Groups are per partition: one per window and key for the shadow.
        let mut members: BTreeMap<(i64, u32), Vec<u32>> = BTreeMap::new();
        let groups = targets.groups();
        for &(row, group) in targets.rows() {
            if let Some(group) = groups.get(group as usize) {
                members
                    .entry((group.start, group.key))
                    .or_default()
                    .push(row);
            }
        }
        let groups = members
            .into_iter()
            .map(|((start, key), rows)| Group {
                start,
                end: start.saturating_add(size_ms),
                key: targets.key(key).clone(),
                rows,
            })
            .collect();
        Feed::Add {
            rows: rows.clone(),
            groups,
            open,
            errors,
            busy,
        }
    }
}

impl Fired {
    /// The live results of one `finish` call, per window and key, for a shadow.
    pub fn of_finish(
        identities: &[(i64, i64, Scalar)],
        outcome: &Result<rivulet_rows::RowsOut, String>,
        finals: &std::collections::BTreeSet<i64>,
    ) -> Vec<Fired> {
        let fired = |index: usize, result: Result<serde_json::Value, String>| {
            identities.get(index).map(|(start, end, key)| Fired {
                start: *start,
                end: *end,
                is_final: finals.contains(start),
                key: key.clone(),
                result,
            })
        };
        match outcome {
            Ok(out) => {
                let rows = out.origins.iter().enumerate().take(out.rows.len as usize);
                let results = rows.filter_map(|(row, &origin)| {
                    let value =
                        serde_json::Value::Object(crate::format::json::row_object(&out.rows, row));
                    fired(origin as usize, Ok(value))
                });
                let errors = out
                    .errors
                    .iter()
                    .filter_map(|e| fired(e.index as usize, Err(e.message.clone())));
                results.chain(errors).collect()
            }
            Err(error) => (0..identities.len())
                .filter_map(|i| fired(i, Err(error.clone())))
                .collect(),
        }
    }
}
