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
pub mod topics;
pub mod wire;

/// A task's part in a job over Kafka: stage 1 or stage 2.
pub enum ClusterStep {
    Pre(Box<pre_op::PreAggregate>),
    Merge(Box<merge_op::MergeOperator>),
}

impl ClusterStep {
    /// New partitions (start or rebalance); see each stage's `restart`.
    pub fn restart(&mut self, assignment: &crate::source::kafka::Assignment) {
        match self {
            ClusterStep::Pre(pre) => pre.restart(assignment),
            ClusterStep::Merge(merge) => merge.restart(assignment),
        }
    }

    /// Source or partials partitions added by a cooperative rebalance: each is rebuilt from
    /// its restart state, the others' state stays.
    pub fn take_up(&mut self, added: &crate::source::kafka::Assignment) {
        match self {
            ClusterStep::Pre(pre) => pre.take_up_all(added),
            ClusterStep::Merge(merge) => merge.take_up(added),
        }
    }

    /// Partitions taken away by a cooperative rebalance: their state goes.
    pub fn give_up(&mut self, partitions: &[i32]) {
        for &p in partitions {
            match self {
                ClusterStep::Pre(pre) => pre.give_up(p),
                ClusterStep::Merge(merge) => merge.give_up(p),
            }
        }
    }

    /// Whether a snapshot must wait (stage 1 replaying what it processed before).
    pub fn replaying(&self) -> bool {
        match self {
            ClusterStep::Pre(pre) => pre.replaying(),
            ClusterStep::Merge(_) => false,
        }
    }

    /// Per partition read, the lowest offset still needed.
    pub fn needed(&self) -> std::collections::BTreeMap<i32, i64> {
        match self {
            ClusterStep::Pre(pre) => pre.needed(),
            ClusterStep::Merge(merge) => merge.needed(),
        }
    }

    /// Puts a new aggregate module in service (see [`crate::aggregate::dispatch::Dispatch::swap`]).
    /// Its partials carry its state version: a process still on another one dead-letters
    /// them with the reason until it is swapped too.
    #[allow(clippy::type_complexity)]
    pub fn swap_aggregate(
        &mut self,
        stage: Box<dyn crate::stage::AggregateStage>,
        empty: Vec<u8>,
        state_version: u32,
        swap: u64,
    ) -> Result<(bool, Option<Box<dyn crate::stage::AggregateStage>>), String> {
        match self {
            ClusterStep::Pre(pre) => pre.dispatch_mut().swap(stage, empty, state_version, swap),
            ClusterStep::Merge(merge) => {
                merge.dispatch_mut().swap(stage, empty, state_version, swap)
            }
        }
    }

    /// The window counters this task adds to the job's: stage 1 counts rows, late records
    /// and replay skips; stage 2 counts results.
    pub fn stats(&self) -> crate::counters::WindowStats {
        let mut stats = crate::counters::WindowStats::default();
        match self {
            ClusterStep::Pre(pre) => {
                let pre = pre.stats();
                stats.rows = pre.rows;
                stats.too_late = pre.too_late;
                stats.replay_skipped = pre.replay_skipped;
            }
            ClusterStep::Merge(merge) => stats.results = merge.stats().results,
        }
        stats
    }

    /// Per partition read, the watermark a restart needs: stage 1's source partition
    /// watermarks, stage 2's closed watermark per partials partition.
    pub fn watermarks(&self) -> std::collections::BTreeMap<i32, i64> {
        match self {
            ClusterStep::Pre(pre) => pre.watermarks(),
            ClusterStep::Merge(merge) => merge.closed(),
        }
    }
}
