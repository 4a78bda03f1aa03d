//! The Kafka source: reads batches of raw records, remembers how far it has handed records
//! out per partition, restores each assigned partition's restart state (from the state
//! topic and the commit metadata, the newest wins) and commits the snapshots the pipeline
//! hands it to both.

use crate::delivery::{PartitionState, Restored};
use crate::kafka::state_topic::StateTopic;
use crate::kafka::{KafkaConfig, KafkaError, LogContext};
use crate::spec::{AssignMode, StartAt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, TopicPartitionList as Tpl};
use rivulet_rows::RawBatch;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Partitions assigned to this source, and where each restarts.
#[derive(Debug, Clone, Default)]
pub struct Assignment {
    pub partitions: Vec<i32>,
    /// Offset to read next, per partition.
    pub positions: BTreeMap<i32, i64>,
    /// Committed restart state, per partition that has one.
    pub states: BTreeMap<i32, PartitionState>,
    /// The largest closed watermark committed for any partition the job's tasks read
    /// together (every partition, with `assign = "all"`): windows closing at or before it
    /// were emitted with every task's records (see [`crate::window::Exchange`]).
    pub job_closed: Option<i64>,
    /// The source joined a consumer group that has not assigned it anything yet: it will
    /// own partitions, it just does not know which. Until it does, a task holds windows
    /// shared with other tasks back (they would fire without its partitions' records).
    pub awaiting_group: bool,
}

/// Consumer context: logs, restores the state of partitions the group assigns (applying the
/// start position, earliest/latest, to the first assignment), and notes it for the pipeline.
#[derive(Default)]
pub struct SourceContext {
    log: LogContext,
    /// What the group callbacks decided, in order, until the source's poll takes it.
    rebalanced: Mutex<VecDeque<Rebalanced>>,
    /// Offset to start from on the first assignment (None: the committed offsets).
    first_start: Mutex<Option<Offset>>,
    /// Where restart state is kept besides commit metadata.
    state: Mutex<Option<Arc<StateTopic>>>,
    /// Consumer lag per partition, from the client's last statistics.
    lag: Mutex<BTreeMap<i32, i64>>,
    /// The source is being dropped: no pipeline will commit and release a revocation, so
    /// the callback releases at once (the client's close waits for it).
    closing: AtomicBool,
}

/// What a group callback decided.
enum Rebalanced {
    /// New partitions, restored: the whole assignment (eager), or partitions added to it
    /// (cooperative, `incremental`).
    Assigned {
        assignment: Assignment,
        incremental: bool,
    },
    /// The group takes partitions away. They are still assigned: the pipeline commits what
    /// it did with them, then releases them ([`KafkaSource::release`]); the group waits
    /// for that before handing them to another member. Cooperative: only these.
    Revoked {
        partitions: Vec<i32>,
        incremental: bool,
    },
    /// Partitions lost without a revocation (an error from the group): already released.
    Lost,
    /// Assigned partitions whose restart state could not be read: the job stops.
    Failed(String),
}

impl SourceContext {
    fn note(&self, rebalanced: Rebalanced) {
        self.rebalanced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(rebalanced);
    }

    fn take_noted(&self) -> Option<Rebalanced> {
        self.rebalanced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error(error, reason);
    }

    /// The client's statistics (every [`STATISTICS_EVERY_MS`]): each partition's lag.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag: BTreeMap<i32, i64> = statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.iter())
            .filter(|(p, partition)| **p >= 0 && partition.consumer_lag >= 0)
            .map(|(p, partition)| (*p, partition.consumer_lag))
            .collect();
        *self.lag.lock().unwrap_or_else(PoisonError::into_inner) = lag;
    }
}

/// How often the consumer reports its statistics (the lag in `/metrics`), in ms.
const STATISTICS_EVERY_MS: &str = "1000";

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr;
        // Cooperative (incremental) rebalancing: the callback names only the partitions
        // added or taken away; the others stay assigned, their state kept.
        let incremental = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            // Cooperative: the rebalance added nothing here.
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
                if incremental && tpl.count() == 0 =>
            {
                if let Err(err) = consumer.incremental_assign(tpl) {
                    tracing::warn!("assigning partitions failed: {err}");
                }
                // Said once this process holds nothing (more members than partitions).
                if consumer.assignment().is_ok_and(|held| held.count() == 0) {
                    tracing::info!(
                        partitions = "[]",
                        "partitions assigned by the consumer group: none, its other members read every partition"
                    );
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let first = self
                    .first_start
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                let state = self
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let topic = tpl
                    .elements()
                    .first()
                    .map(|e| e.topic().to_owned())
                    .unwrap_or_default();
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                let start = match first {
                    Some(Offset::End) => StartAt::Latest,
                    Some(_) => StartAt::Earliest,
                    None => StartAt::Committed,
                };
                // The group's partitions may come from other processes, whose windows are
                // their own: each partition's own closed watermark decides.
                match restore(consumer, &topic, &partitions, &[], state.as_deref(), start) {
                    Ok((assignment, offsets)) => {
                        let assigned = match incremental {
                            true => consumer.incremental_assign(&offsets),
                            false => consumer.assign(&offsets),
                        };
                        if let Err(err) = assigned {
                            tracing::warn!("assigning partitions failed: {err}");
                        }
                        tracing::info!(
                            topic,
                            ?partitions,
                            incremental,
                            "partitions assigned by the consumer group"
                        );
                        self.note(Rebalanced::Assigned {
                            assignment,
                            incremental,
                        });
                    }
                    Err(err) => {
                        // Reading from the committed offsets without their state could
                        // reopen closed windows: the job stops with the reason instead (a
                        // restart retries), and its partitions go to the group's others.
                        // (Cooperative: nothing was added, nothing to release.)
                        let released = match incremental {
                            true => Ok(()),
                            false => consumer.unassign(),
                        };
                        if let Err(err) = released {
                            tracing::warn!("releasing partitions failed: {err}");
                        }
                        self.note(Rebalanced::Failed(format!(
                            "cannot restore partitions {partitions:?} of `{topic}`: {err}"
                        )));
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS
                if self.closing.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                let released = match incremental {
                    true => consumer.incremental_unassign(tpl),
                    false => consumer.unassign(),
                };
                if let Err(err) = released {
                    tracing::warn!("releasing partitions on close failed: {err}");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                let topic = tpl
                    .elements()
                    .first()
                    .map(|e| e.topic().to_owned())
                    .unwrap_or_default();
                tracing::info!(
                    topic,
                    ?partitions,
                    incremental,
                    "partitions revoked by the consumer group; committing before letting go"
                );
                self.note(Rebalanced::Revoked {
                    partitions,
                    incremental,
                });
            }
            err => {
                let released = match incremental {
                    true => consumer.incremental_unassign(tpl),
                    false => consumer.unassign(),
                };
                if let Err(err) = released {
                    tracing::warn!("releasing partitions failed: {err}");
                }
                tracing::warn!("partitions lost ({err:?})");
                self.note(Rebalanced::Lost);
            }
        }
    }
}

/// Where each of `partitions` of `topic` restarts: the committed offsets, and the restart
/// state found in commit metadata and in the state topic (the newest wins), unless `start`
/// says to read from the beginning or the end. `job`: the partitions the job's tasks read
/// together (a superset of `partitions`, or none), whose largest committed closed watermark
/// holds for all of them. Returns the assignment and the offsets to assign.
fn restore<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
    job: &[i32],
    state: Option<&StateTopic>,
    start: StartAt,
) -> Result<(Assignment, TopicPartitionList), KafkaError> {
    let mut tpl = Tpl::new();
    for &p in partitions.iter().chain(job).collect::<BTreeSet<_>>() {
        tpl.add_partition(topic, p);
    }
    let mut committed: BTreeMap<i32, (Option<i64>, Option<PartitionState>)> = BTreeMap::new();
    // Exactly-once: the offset committed after each partition's restart state record.
    let mut pins: BTreeMap<i32, i64> = BTreeMap::new();
    if start == StartAt::Committed {
        let mut asked = tpl.clone();
        if let Some(state) = state {
            for p in tpl_partitions(&tpl) {
                if state.pins(p) {
                    asked.add_partition(state.name(), p);
                }
            }
        }
        let offsets = consumer
            .committed_offsets(asked, METADATA_TIMEOUT)
            .map_err(KafkaError::client("reading committed offsets"))?;
        for elem in offsets.elements() {
            if elem.topic() != topic {
                if let Offset::Offset(pin) = elem.offset() {
                    pins.insert(elem.partition(), pin);
                }
                continue;
            }
            let offset = match elem.offset() {
                Offset::Offset(n) => Some(n),
                _ => None,
            };
            let metadata = match elem.metadata() {
                "" => None,
                text => match PartitionState::decode(text, offset) {
                    Ok(state) => Some(state),
                    Err(err) => {
                        tracing::warn!(
                            topic,
                            partition = elem.partition(),
                            "commit metadata: {err}"
                        );
                        None
                    }
                },
            };
            committed.insert(elem.partition(), (offset, metadata));
        }
    }
    let from_topic = match (state, start) {
        (Some(state), StartAt::Committed) => match state.read(topic, &tpl_partitions(&tpl)) {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(
                    state_topic = state.name(),
                    "cannot read restart state, using commit metadata only: {err}"
                );
                BTreeMap::new()
            }
        },
        _ => BTreeMap::new(),
    };
    // The states committed transactions pinned, read together.
    let pinned: Option<BTreeMap<i32, Option<PartitionState>>> = match state {
        Some(state) if !pins.is_empty() => match state.read_pinned(topic, &pins) {
            Ok(read) => Some(read),
            Err(err) => {
                tracing::warn!(
                    topic,
                    state_topic = state.name(),
                    "cannot read the committed restart state ({err}); using the newest state found"
                );
                None
            }
        },
        _ => None,
    };
    // Each partition's restart point: the pinned state, else the newest found.
    let restored_of = |p: i32| {
        let (group_offset, metadata) = committed.get(&p).copied().unwrap_or((None, None));
        let pinned = match (state, pinned.as_ref().and_then(|read| read.get(&p))) {
            (Some(state), Some(&read)) => pinned_state(state, topic, p, read, group_offset),
            _ => None,
        };
        match pinned {
            Some(state) => Restored::pinned(state),
            None => Restored::choose(group_offset, metadata, from_topic.get(&p).copied()),
        }
    };
    let restored: BTreeMap<i32, Restored> = tpl_partitions(&tpl)
        .into_iter()
        .map(|p| (p, restored_of(p)))
        .collect();
    let job_closed = job
        .iter()
        .filter_map(|p| restored.get(p).and_then(|r| r.state))
        .filter_map(|state| state.combined)
        .max();
    let mut assignment = Assignment {
        partitions: partitions.to_vec(),
        job_closed,
        ..Assignment::default()
    };
    let mut offsets = TopicPartitionList::new();
    for &p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, METADATA_TIMEOUT)
            .map_err(KafkaError::client(format!(
                "reading the offsets of partition {p}"
            )))?;
        let restored = restored.get(&p).cloned().unwrap_or_else(|| restored_of(p));
        if restored.is_missing_state() {
            tracing::warn!(
                topic,
                partition = p,
                offset = ?restored.start,
                state_topic = state.map(StateTopic::name),
                "committed offset without restart state (none in the state topic or the commit metadata): windows that fired before the restart may reopen and be emitted again with partial counts"
            );
        }
        // Not clamped to the reported end: some brokers report the start of the last batch
        // + 1 there. An offset past the real end is handled by `auto.offset.reset`.
        let from = match (start, restored.start) {
            (StartAt::Committed, Some(n)) => n.max(low),
            (StartAt::Committed | StartAt::Earliest, _) => low,
            (StartAt::Latest, _) => high,
        };
        if let Some(mut state) = restored.state {
            if state.committed < low {
                tracing::warn!(
                    topic,
                    partition = p,
                    committed = state.committed,
                    earliest = low,
                    "records needed by open windows were deleted by retention; those windows restart incomplete"
                );
            }
            state.read = state.read.max(from);
            tracing::info!(
                topic,
                partition = p,
                from,
                replay_to = state.read,
                source = restored.from,
                "restored"
            );
            assignment.states.insert(p, state);
        }
        assignment.positions.insert(p, from);
        offsets
            .add_partition_offset(topic, p, Offset::Offset(from))
            .map_err(KafkaError::client("building the assignment"))?;
    }
    Ok((assignment, offsets))
}

/// The restart state a committed transaction pinned for `partition` (see
/// [`crate::kafka::state_topic`]; `read`: the record found there), if it goes with the
/// group's committed offset; otherwise the newest state found is used, as for an
/// at-least-once job.
fn pinned_state(
    state: &StateTopic,
    topic: &str,
    partition: i32,
    read: Option<PartitionState>,
    group_offset: Option<i64>,
) -> Option<PartitionState> {
    match read {
        Some(pinned) if Some(pinned.committed) == group_offset => Some(pinned),
        // An at-least-once run committed after the exactly-once one that pinned it.
        Some(_) => None,
        None => {
            tracing::warn!(
                topic,
                partition,
                state_topic = state.name(),
                "the committed restart state record is not in the state topic (compacted away?); using the newest state found"
            );
            None
        }
    }
}

/// The partitions of a partition list.
fn tpl_partitions(tpl: &Tpl) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// A change of the partitions a source reads, for the pipeline to apply to its state.
#[derive(Debug, Clone)]
pub enum Rebalance {
    /// A new assignment replaces the old one (eager rebalancing, or none left): all state
    /// goes and is rebuilt by replaying each partition from its committed offset.
    Whole(Assignment),
    /// Partitions added to those read (cooperative rebalancing): only they are rebuilt.
    Added(Assignment),
    /// Partitions taken away (cooperative rebalancing), after their commit: their state goes.
    Removed(Vec<i32>),
}

/// A topic being read.
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    topic: String,
    /// Next offset to hand out, per partition.
    positions: BTreeMap<i32, i64>,
    /// Where a bounded read stops.
    ends: Option<BoundedEnd>,
    /// The current assignment (where it started, and its restart state).
    assignment: Assignment,
    /// Where restart state is kept besides commit metadata.
    state: Option<Arc<StateTopic>>,
    /// Group (re)assignments seen while polling, not yet taken by the pipeline.
    rebalanced: VecDeque<Rebalance>,
    /// The group revoked partitions (`Some`; cooperative: these, else all); they are
    /// released once the pipeline committed.
    revoked: Option<Revoking>,
}

/// Partitions the group revoked, waiting for the pipeline's commit.
struct Revoking {
    partitions: Vec<i32>,
    incremental: bool,
}

/// A commit in a transaction: see [`KafkaSource::transactional_commit`].
pub struct TransactionalCommit {
    pub offsets: TopicPartitionList,
    /// The consumer group's metadata (fences a member of an older generation).
    pub group: Option<rdkafka::consumer::ConsumerGroupMetadata>,
    /// State topic records.
    pub states: Vec<crate::kafka::state_topic::StateRecord>,
}

/// How to open a [`KafkaSource`].
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub topic: String,
    pub group: String,
    pub start: StartAt,
    pub assign: AssignMode,
    pub bounded: bool,
    /// Give up connecting after this long (None: keep retrying until stopped).
    pub connect_timeout: Option<Duration>,
    /// With `assign = "all"`, this task's share of the partitions: `(task, tasks)` reads
    /// the partitions whose index is `task` modulo `tasks`.
    pub share: (usize, usize),
    /// Whether the job keeps its state per partition, so that the group may move single
    /// partitions (cooperative-sticky assignment: a join or a leave moves only what it
    /// must, and the other members read on). Otherwise every rebalance replays all.
    pub cooperative: bool,
    /// Exactly-once: the restart state is pinned by the offsets each transaction commits.
    pub exactly_once: bool,
}

impl KafkaSource {
    /// Connects (retrying with backoff while the broker is unreachable or the topic is
    /// missing) and takes the topic's partitions.
    pub fn open(
        config: &KafkaConfig,
        options: &SourceOptions,
        stop: &AtomicBool,
    ) -> Result<Self, KafkaError> {
        let reset = match options.start {
            StartAt::Latest => "latest",
            StartAt::Committed | StartAt::Earliest => "earliest",
        };
        // `fetch.queue.backoff.ms`: once a partition's prefetch queue is full, librdkafka
        // waits this long before fetching again (default 1 s). A job slower than the fetch
        // drains the queue well within that and then sits idle: at 1 s the job read a
        // backlog at a third of the speed it reaches with 10 ms.
        let mut client = config.client();
        if options.cooperative {
            client.set("partition.assignment.strategy", "cooperative-sticky");
        }
        let consumer: BaseConsumer<SourceContext> = client
            .set("group.id", &options.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", reset)
            .set("enable.partition.eof", "false")
            // A crashed or restarted member is replaced in seconds, not the default 45 s.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000")
            .set("fetch.queue.backoff.ms", "10")
            // A fetch waits for records up to this long (default 500 ms). Kafka answers it
            // as soon as records arrive; some brokers (Tansu) only when the wait runs out,
            // which put ~130 ms (p99 ~250 ms) between a record's arrival and the job
            // reading it. An idle partition costs 20 fetches a second at this setting.
            .set("fetch.wait.max.ms", "50")
            .set("statistics.interval.ms", STATISTICS_EVERY_MS)
            // Records of aborted transactions (an exactly-once job upstream, or the job's
            // own partials) are never read.
            .set("isolation.level", "read_committed")
            .create_with_context(SourceContext::default())
            .map_err(KafkaError::client("creating the consumer"))?;
        let partitions = crate::kafka::wait_for_kafka(
            consumer.client(),
            config,
            &options.topic,
            true,
            options.connect_timeout,
            stop,
        )?;
        let pinned = options
            .exactly_once
            .then(|| partitions.iter().max().map_or(1, |p| p + 1));
        let state = match StateTopic::open(config, &options.group, pinned) {
            Ok(state) => Some(Arc::new(state)),
            Err(err) => {
                tracing::warn!(group = %options.group, "no state topic, restart state only in commit metadata: {err}");
                None
            }
        };
        let mut source = KafkaSource {
            consumer,
            topic: options.topic.clone(),
            positions: BTreeMap::new(),
            ends: None,
            // Nothing until assigned (by `assign_all`, or by the group): a partition taken
            // up before the group assigns it would look idle to the job's other processes.
            assignment: Assignment::default(),
            state: state.clone(),
            rebalanced: VecDeque::new(),
            revoked: None,
        };
        let (task, tasks) = options.share;
        let job = partitions.clone();
        let partitions: Vec<i32> = match options.assign {
            AssignMode::All => partitions
                .iter()
                .enumerate()
                .filter(|(i, _)| i % tasks.max(1) == task)
                .map(|(_, &p)| p)
                .collect(),
            AssignMode::Group => partitions,
        };
        match options.assign {
            AssignMode::All => source.assign_all(&partitions, &job, options.start)?,
            AssignMode::Group => {
                let first = match options.start {
                    StartAt::Committed => None,
                    StartAt::Earliest => Some(Offset::Beginning),
                    StartAt::Latest => Some(Offset::End),
                };
                *source
                    .consumer
                    .context()
                    .state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = state;
                *source
                    .consumer
                    .context()
                    .first_start
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = first;
                source.assignment.awaiting_group = true;
                source
                    .consumer
                    .subscribe(&[&options.topic])
                    .map_err(KafkaError::client(format!(
                        "subscribing to `{}`",
                        options.topic
                    )))?
            }
        }
        if options.bounded {
            let started = now_millis();
            let mut ends = BTreeMap::new();
            for &p in &partitions {
                let (_, high) = source
                    .consumer
                    .fetch_watermarks(&options.topic, p, METADATA_TIMEOUT)
                    .map_err(KafkaError::client(format!(
                        "reading the end of partition {p}"
                    )))?;
                ends.insert(p, high);
                tracing::debug!(partition = p, end = high, "bounded read");
            }
            source.ends = Some(BoundedEnd::new(ends, started));
        }
        Ok(source)
    }

    /// Assigns `partitions`, this task's share of `job` (every partition of the topic).
    fn assign_all(
        &mut self,
        partitions: &[i32],
        job: &[i32],
        start: StartAt,
    ) -> Result<(), KafkaError> {
        let (assignment, offsets) = restore(
            &self.consumer,
            &self.topic,
            partitions,
            job,
            self.state.as_deref(),
            start,
        )?;
        self.positions = assignment.positions.clone();
        self.assignment = assignment;
        tracing::info!(topic = %self.topic, positions = ?self.positions, "reading every partition");
        self.consumer
            .assign(&offsets)
            .map_err(KafkaError::client("assigning partitions"))
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partitions this source reads, and their restart state.
    pub fn assignment(&self) -> &Assignment {
        &self.assignment
    }

    /// Next offset to read per partition (only partitions read from or assigned).
    /// Consumer lag of each partition this source reads, as the client last reported it.
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        let lag = self
            .consumer
            .context()
            .lag
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        lag.into_iter()
            .filter(|(p, _)| self.positions.contains_key(p))
            .collect()
    }

    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    /// The next change of partitions since the last call, in order. Added or whole:
    /// reading restarts from each new partition's committed offset, so the caller rebuilds
    /// its state by replay. With a whole assignment, the batch [`KafkaSource::poll`]
    /// returned with it holds only records of the new assignment.
    pub fn take_rebalance(&mut self) -> Option<Rebalance> {
        self.rebalanced.pop_front()
    }

    /// Whether the group revoked partitions of this source: the caller commits what it did
    /// with them, then calls [`KafkaSource::release`]. No more records come until then.
    pub fn revoked(&self) -> bool {
        self.revoked.is_some()
    }

    /// Lets the revoked partitions go to the group (after the caller committed them):
    /// eager, the source is left without partitions until the group assigns new ones;
    /// cooperative, it reads on from the others.
    pub fn release(&mut self) {
        let Some(revoking) = self.revoked.take() else {
            return;
        };
        if !revoking.incremental {
            if let Err(err) = self.consumer.unassign() {
                tracing::warn!(topic = %self.topic, "releasing partitions failed: {err}");
            }
            self.none_assigned();
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &revoking.partitions {
            tpl.add_partition(&self.topic, p);
        }
        if let Err(err) = self.consumer.incremental_unassign(&tpl) {
            tracing::warn!(topic = %self.topic, partitions = ?revoking.partitions, "releasing partitions failed: {err}");
        }
        for p in &revoking.partitions {
            self.positions.remove(p);
            self.assignment.positions.remove(p);
            self.assignment.states.remove(p);
        }
        self.assignment
            .partitions
            .retain(|p| !revoking.partitions.contains(p));
        self.rebalanced
            .push_back(Rebalance::Removed(revoking.partitions));
    }

    /// The partitions are gone: nothing read, nothing to replay.
    fn none_assigned(&mut self) {
        self.positions.clear();
        self.assignment = Assignment::default();
        self.rebalanced
            .push_back(Rebalance::Whole(Assignment::default()));
    }

    /// Partitions the group added (cooperative): read from where each restarts, beside
    /// those read already.
    fn added(
        positions: &mut BTreeMap<i32, i64>,
        assignment: &mut Assignment,
        rebalanced: &mut VecDeque<Rebalance>,
        added: Assignment,
    ) {
        positions.extend(&added.positions);
        assignment.positions.extend(&added.positions);
        assignment
            .states
            .extend(added.states.iter().map(|(&p, &s)| (p, s)));
        for &p in &added.partitions {
            if !assignment.partitions.contains(&p) {
                assignment.partitions.push(p);
            }
        }
        assignment.partitions.sort_unstable();
        rebalanced.push_back(Rebalance::Added(added));
    }

    /// Whether a bounded source has read everything that was in the topic at its start.
    pub fn at_end(&self) -> bool {
        self.ends
            .as_ref()
            .is_some_and(|ends| ends.reached(&self.positions))
    }

    /// Up to `max` records, waiting at most `wait` for the first. Stops early when the group
    /// revokes the partitions ([`KafkaSource::revoked`]).
    pub fn poll(&mut self, max: usize, wait: Duration) -> Result<RawBatch, KafkaError> {
        let mut batch = RawBatch::new();
        if self.revoked() {
            return Ok(batch);
        }
        let deadline = Instant::now() + wait;
        // The partition and next offset of the latest record, noted in `positions` when
        // the partition changes and at the end (records come in runs per partition).
        let mut last: Option<(i32, i64)> = None;
        let mut lost = false;
        while (batch.len as usize) < max {
            // Wait (up to `wait`) for the first record only; after that take what the
            // client has fetched already, so the job works while the next fetch is on its way.
            let timeout = match batch.len {
                0 => deadline.saturating_duration_since(Instant::now()),
                _ => Duration::ZERO,
            };
            let polled = self.consumer.poll(timeout);
            match self.consumer.context().take_noted() {
                Some(Rebalanced::Failed(reason)) => return Err(KafkaError::Restore { reason }),
                Some(Rebalanced::Assigned {
                    assignment,
                    incremental: false,
                }) => {
                    // Records read so far belong to the old assignment, whose state the
                    // pipeline drops: their partitions are replayed by whoever owns them now.
                    batch = RawBatch::new();
                    last = None;
                    self.positions = assignment.positions.clone();
                    self.assignment = assignment.clone();
                    self.rebalanced = VecDeque::from([Rebalance::Whole(assignment)]);
                }
                // Records read so far are of partitions still read: they stay.
                Some(Rebalanced::Assigned {
                    assignment,
                    incremental: true,
                }) => {
                    if let Some((p, next)) = last.take() {
                        self.positions.insert(p, next);
                    }
                    Self::added(
                        &mut self.positions,
                        &mut self.assignment,
                        &mut self.rebalanced,
                        assignment,
                    );
                }
                // Records read so far belong to partitions that are gone.
                Some(Rebalanced::Lost) => {
                    lost = true;
                    break;
                }
                // Records read so far are still ours: the batch ends here, and the pipeline
                // processes and commits it before releasing the partitions.
                Some(Rebalanced::Revoked {
                    partitions,
                    incremental,
                }) => {
                    self.revoked = Some(Revoking {
                        partitions,
                        incremental,
                    })
                }
                None => {}
            }
            let Some(result) = polled else {
                break;
            };
            let message = match result {
                Ok(message) => message,
                Err(err) => {
                    if let Some(line) = crate::kafka::collapsed(&format!("consumer: {err}")) {
                        tracing::warn!(topic = %self.topic, "{line}");
                    }
                    if self.revoked() {
                        break;
                    }
                    continue;
                }
            };
            let partition = message.partition();
            let offset = message.offset();
            // Behind what was handed out already: the client went back. It resets a position
            // the broker calls out of range to the partition's start, and some brokers (Tansu,
            // just restarted) say that of offsets they hold. Those records were processed.
            // (Not before the first record since the assignment: a committed offset past
            // the partition's end — a recreated topic — reads from its start.)
            let expected = match last {
                Some((p, next)) if p == partition => next,
                _ => self.positions.get(&partition).copied().unwrap_or(0),
            };
            if offset < expected
                && self
                    .assignment
                    .positions
                    .get(&partition)
                    .is_some_and(|&start| expected > start)
            {
                if let Some(line) = crate::kafka::collapsed(&format!(
                    "partition {partition}: the client went back to records already processed (its position was reset); they are skipped"
                )) {
                    tracing::warn!(topic = %self.topic, offset, expected, "{line}");
                }
                if self.revoked() {
                    break;
                }
                continue;
            }
            let timestamp = message.timestamp().to_millis().unwrap_or_else(now_millis);
            if let Some(ends) = self.ends.as_mut()
                && !ends.admits(partition, offset, timestamp)
            {
                // Bounded: written after the start; it is not ours to read.
                if self.revoked() {
                    break;
                }
                continue;
            }
            let headers: Vec<(&str, &[u8])> = message
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key, h.value.unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            batch.push(
                message.key(),
                message.payload().unwrap_or_default(),
                timestamp,
                partition,
                offset,
                &headers,
            );
            if let Some((p, next)) = last
                && p != partition
            {
                self.positions.insert(p, next);
            }
            last = Some((partition, offset + 1));
            // The clock is read every 256 records: a read costs more than a record here.
            if self.revoked() || batch.len.is_multiple_of(256) && Instant::now() >= deadline {
                break;
            }
        }
        if lost {
            self.none_assigned();
            return Ok(RawBatch::new());
        }
        if let Some((p, next)) = last {
            self.positions.insert(p, next);
        }
        if let Some(ends) = self.ends.as_mut() {
            ends.quiet = batch.len == 0;
        }
        Ok(batch)
    }

    /// Leaves the consumer group at once (instead of after the session timeout), so a
    /// restarted job gets its partitions back quickly.
    pub fn close(&mut self) {
        if self.consumer.subscription().is_ok_and(|s| s.count() > 0) {
            self.consumer.unsubscribe();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                let idle = self.consumer.poll(Duration::from_millis(100)).is_none();
                // What was done is committed already (or is replayed by the next owner).
                if let Some(Rebalanced::Revoked {
                    partitions,
                    incremental,
                }) = self.consumer.context().take_noted()
                {
                    self.revoked = Some(Revoking {
                        partitions,
                        incremental,
                    });
                    self.release();
                }
                if idle && self.consumer.assignment().is_ok_and(|a| a.count() == 0) {
                    break;
                }
            }
        }
    }

    /// What committing `states` in a transaction takes (exactly-once): the offsets with
    /// the restart state as commit metadata, the group they are committed to, and the
    /// state topic's records. Partitions no longer assigned are skipped.
    pub fn transactional_commit(
        &self,
        states: &BTreeMap<i32, PartitionState>,
    ) -> Result<TransactionalCommit, KafkaError> {
        let mut commit = TransactionalCommit {
            offsets: TopicPartitionList::new(),
            group: self.consumer.group_metadata(),
            states: Vec::new(),
        };
        for (&p, state) in states {
            if !self.assignment.partitions.contains(&p) {
                continue;
            }
            commit
                .offsets
                .add_partition_offset(&self.topic, p, Offset::Offset(state.committed))
                .map_err(KafkaError::client("building the commit"))?;
            if let Some(elem) = commit.offsets.find_partition(&self.topic, p).as_mut() {
                elem.set_metadata(state.encode());
            }
            if let Some(topic) = &self.state {
                commit.states.push(topic.record(&self.topic, p, state));
            }
        }
        Ok(commit)
    }

    /// The state topic's name, if the job has one.
    pub fn state_topic(&self) -> Option<&str> {
        self.state.as_deref().map(StateTopic::name)
    }

    /// Commits partitions' restart states: first to the state topic (so a broker that drops
    /// commit metadata still has them), then as the group's offsets with the state as
    /// metadata. Partitions no longer assigned are skipped.
    pub fn commit(
        &mut self,
        states: &BTreeMap<i32, PartitionState>,
        sync: bool,
    ) -> Result<usize, KafkaError> {
        let owned: BTreeMap<i32, PartitionState> = states
            .iter()
            .filter(|(p, _)| self.assignment.partitions.contains(p))
            .map(|(&p, &s)| (p, s))
            .collect();
        if owned.is_empty() {
            return Ok(0);
        }
        if let Some(state) = &self.state {
            state.write(&self.topic, &owned)?;
        }
        let mut tpl = TopicPartitionList::new();
        for (&p, state) in &owned {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(state.committed))
                .map_err(KafkaError::client("building the commit"))?;
            if let Some(elem) = tpl.find_partition(&self.topic, p).as_mut() {
                elem.set_metadata(state.encode());
            }
        }
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        match self.consumer.commit(&tpl, mode) {
            // Some brokers refuse a commit while the group rebalances (Kafka accepts it
            // from a member of the current generation); the state topic has it already.
            Err(err) if self.revoked() && self.state.is_some() => {
                tracing::info!(topic = %self.topic, "the group refused the commit of revoked partitions ({err}); their next owner restores them from the state topic");
            }
            committed => committed.map_err(KafkaError::client("committing offsets"))?,
        }
        tracing::debug!(topic = %self.topic, ?owned, "committed");
        Ok(owned.len())
    }
}

/// A source dropped without [`KafkaSource::close`] (a job that failed) leaves its group
/// all the same: the client's close waits for the group's revocation to be released,
/// which no pipeline is left to do.
impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.consumer
            .context()
            .closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.close();
    }
}

/// Where a bounded read ends: everything the topic held when the job started.
///
/// The end offsets the broker reports at the start are not enough: some brokers (Tansu)
/// report the start of a partition's last batch + 1 there, so the rest of that batch lies
/// past the reported end although it was written before the start. Records past the
/// reported end are read while they were written before the start (by their timestamp); a
/// partition is done at the first one written after it, or when a poll finds nothing more.
#[derive(Debug)]
struct BoundedEnd {
    /// The end offset each partition reported at the start.
    reported: BTreeMap<i32, i64>,
    /// When the read started (epoch ms).
    started: i64,
    /// Partitions that gave a record written after the start: nothing more is theirs.
    passed: BTreeSet<i32>,
    /// Whether the latest poll found no record to hand out.
    quiet: bool,
}

impl BoundedEnd {
    fn new(reported: BTreeMap<i32, i64>, started: i64) -> Self {
        BoundedEnd {
            reported,
            started,
            passed: BTreeSet::new(),
            quiet: false,
        }
    }

    /// Whether the record at `offset` of `partition`, written at `timestamp`, is part of the
    /// bounded read (noting the partition as passed when it isn't).
    fn admits(&mut self, partition: i32, offset: i64, timestamp: i64) -> bool {
        let Some(&end) = self.reported.get(&partition) else {
            return false;
        };
        if offset < end {
            return true;
        }
        if self.passed.contains(&partition) || timestamp > self.started {
            self.passed.insert(partition);
            return false;
        }
        true
    }

    /// Whether every partition is read to its end, given the next offset of each.
    fn reached(&self, positions: &BTreeMap<i32, i64>) -> bool {
        self.reported.iter().all(|(p, &end)| {
            positions.get(p).copied().unwrap_or(0) >= end && (self.quiet || self.passed.contains(p))
        })
    }
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_000_000;

    #[test]
    fn a_bounded_read_takes_the_rest_of_a_last_batch_the_broker_reported_as_one_record() {
        // The broker said partition 0 ends at 5, but offsets 5..8 were in the same batch.
        let mut end = BoundedEnd::new(BTreeMap::from([(0, 5)]), START);
        for offset in 0..8 {
            assert!(end.admits(0, offset, START - 10), "offset {offset}");
        }
        let read_to_reported = BTreeMap::from([(0, 5)]);
        assert!(
            !end.reached(&read_to_reported),
            "the rest of the batch may still come"
        );
        end.quiet = true;
        assert!(end.reached(&BTreeMap::from([(0, 8)])));
    }

    #[test]
    fn a_bounded_read_stops_a_partition_at_its_first_record_written_after_the_start() {
        let mut end = BoundedEnd::new(BTreeMap::from([(0, 2), (1, 0)]), START);
        assert!(
            end.admits(0, 1, START + 50),
            "before the reported end: ours"
        );
        assert!(end.admits(0, 2, START));
        assert!(!end.admits(0, 3, START + 1));
        assert!(
            !end.admits(0, 4, START - 1),
            "nothing after the first later record"
        );
        assert!(!end.admits(2, 0, START - 1), "a partition not read");
        let positions = BTreeMap::from([(0, 3), (1, 0)]);
        assert!(!end.reached(&positions), "partition 1 has said nothing yet");
        assert!(!end.admits(1, 0, START + 1));
        assert!(end.reached(&positions));
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn records_the_client_goes_back_to_after_handing_them_out_are_skipped() {
        use crate::kafka::broker::EmbeddedBroker;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

        let broker = EmbeddedBroker::start(1).unwrap();
        broker.create_topic("rewound", 1).unwrap();
        let config = KafkaConfig::new(broker.bootstrap_servers().as_str());
        let producer: BaseProducer = config.client().create().unwrap();
        let produce = |range: std::ops::Range<i32>| {
            for n in range {
                let payload = n.to_string();
                producer
                    .send(BaseRecord::<(), str>::to("rewound").payload(&payload))
                    .unwrap();
            }
            producer.flush(Duration::from_secs(10)).unwrap();
        };
        let options = SourceOptions {
            topic: "rewound".into(),
            group: "rewound".into(),
            start: StartAt::Earliest,
            assign: AssignMode::All,
            bounded: false,
            connect_timeout: Some(Duration::from_secs(10)),
            share: (0, 1),
            cooperative: false,
            exactly_once: false,
        };
        let mut source = KafkaSource::open(&config, &options, &AtomicBool::new(false)).unwrap();
        let read = |source: &mut KafkaSource, count: usize| {
            let mut offsets = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while offsets.len() < count && Instant::now() < deadline {
                let batch = source.poll(100, Duration::from_millis(100)).unwrap();
                offsets.extend(batch.offsets.iter().copied());
            }
            // Nothing more comes.
            let batch = source.poll(100, Duration::from_millis(300)).unwrap();
            offsets.extend(batch.offsets.iter().copied());
            offsets
        };
        produce(0..10);
        assert_eq!(read(&mut source, 10), (0..10).collect::<Vec<i64>>());
        // The client goes back to the partition's start (as after a reset).
        let mut start = TopicPartitionList::new();
        start
            .add_partition_offset("rewound", 0, Offset::Beginning)
            .unwrap();
        source.consumer.assign(&start).unwrap();
        produce(10..13);
        assert_eq!(read(&mut source, 3), vec![10, 11, 12]);
        assert_eq!(source.positions(), &BTreeMap::from([(0, 13)]));
    }
}
