//! A job over Kafka in two stages, so that many processes run one keyed window job
//! exactly (the Kafka Streams model: partitions, group rebalancing, an internal topic).
//!
//! 1. **Pre-aggregation** ([`pre`]): each process reads its share of the source partitions,
//!    runs the stages, and keeps accumulators per (source partition, window, key). When a
//!    partition's watermark passes a window, the partition's whole accumulator for each key
//!    goes to the internal topic `<job>-partials`, to the partition of its key
//!    ([`wire::partition_of`]), followed by a marker of the partition's watermark in every
//!    partials partition.
//! 2. **Merge** ([`merge`]): each process reads its share of the partials partitions and
//!    fires a window once every source partition's marker has passed it, merging the
//!    partials with the aggregate's `merge` and finishing each (window, key) once.
//!
//! Partials are whole and per source partition, so a replay (after a crash or a rebalance)
//! re-sends equal partials that replace, never add to, what stage 2 holds.

pub mod merge;
pub mod merge_op;
pub mod pre;
pub mod pre_op;
pub mod wire;
