//! Delivery: what may be committed, what a restart needs, and (exactly-once) the
//! transactions that commit outputs and offsets together ([`transaction`]).
//!
//! The job commits *snapshots* ([`tracker`]): at a batch boundary it notes, per source
//! partition, the next offset to read, the lowest offset an open window still needs, and the
//! watermarks; and, per sink, how many records it had sent. Once every sink has acknowledged
//! every record sent before the snapshot, the snapshot is committed — to the consumer
//! group's offsets (with the state as commit metadata) and to the job's state topic, which
//! does not depend on any optional broker feature ([`restart`]). A restart reads from the
//! committed offset and replays up to the snapshot's read position: records there rebuild the
//! windows that were still open and nothing else (their side outputs were already delivered).

pub mod restart;
pub mod tracker;
pub mod transaction;

pub use restart::{PartitionState, Restored};
pub use tracker::{Acks, OffsetTracker, Snapshot};
pub use transaction::{Transaction, TransactionError};
