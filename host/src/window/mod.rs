//! Windows. [`operator`] is the window operator of a job; the rest are its building blocks,
//! pure, deterministic state machines with no I/O:
//!
//! - [`tumbling`]: [`TumblingWindows`] keeps one accumulator per (tumbling window, key),
//!   decides where a record goes given the current watermark ([`Assignment`]), and fires
//!   windows as the watermark passes their end ([`Firing`]), re-emitting updated keys for
//!   records that arrive within the allowed lateness. It also tracks, per source
//!   partition, the smallest offset that still contributes to held state, so callers know
//!   which offsets are safe to commit. It works for event time (the caller passes
//!   watermarks) and processing time (the caller passes the wall clock as the watermark).
//! - [`watermark`]: [`Watermarks`] derives an event-time watermark per source partition
//!   (max event time seen minus the bounded out-of-orderness) and combines them into one
//!   monotonic watermark, ignoring partitions that have been idle for too long.
//! - [`targets`]: [`Targets`] groups the rows of a batch by (window, key, partition) for
//!   the aggregate.
//! - [`key_partitions`]: [`KeyPartitions`] checks that every key comes from one source
//!   partition, which `window.exchange = "partitioned"` relies on.
//! - [`exchange`]: [`Exchange`] merges the partial accumulators of a job's tasks (two-phase
//!   aggregation), so a window is finished once, with every task's records.
//!
//! All times are `i64` milliseconds; every clock reading is passed in by the caller.

pub mod exchange;
pub mod key_partitions;
pub mod operator;
pub mod targets;
pub mod tumbling;
pub mod watermark;

pub use exchange::{Exchange, TaskId};
pub use key_partitions::KeyPartitions;
pub use operator::{TaskLink, WindowStats, Windowing};
pub use targets::Targets;
pub use tumbling::{Assignment, Firing, TumblingWindows, WindowError};
pub use watermark::Watermarks;
