//! The Kafka source: reads batches of raw records, remembers how far it has handed records
//! out per partition, and commits only the offsets the pipeline says are safe, with each
//! partition's event-time watermark in the commit metadata.

use super::{KafkaConfig, KafkaError, LogContext};
use crate::spec::{AssignMode, StartAt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, TopicPartitionList as Tpl};
use rivulet_rows::RawBatch;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Consumer context: logs, notes group rebalances for the pipeline, and applies the start
/// position (earliest/latest) to the first assignment of a group consumer.
#[derive(Default)]
pub struct SourceContext {
    log: LogContext,
    assigned: Mutex<Option<Vec<i32>>>,
    /// Offset to start from on the first assignment (None: the committed offsets).
    first_start: Mutex<Option<Offset>>,
}

impl ClientContext for SourceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr;
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(start) = self
                    .first_start
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    && let Err(err) = tpl.set_all_offsets(start)
                {
                    tracing::warn!("cannot apply the start position: {err}");
                }
                if let Err(err) = consumer.assign(tpl) {
                    tracing::warn!("assigning partitions failed: {err}");
                }
                Rebalance::Assign(tpl)
            }
            _ => {
                if let Err(err) = consumer.unassign() {
                    tracing::warn!("releasing partitions failed: {err}");
                }
                Rebalance::Revoke(tpl)
            }
        };
        self.post_rebalance(consumer, &rebalance);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = match rebalance {
            Rebalance::Assign(tpl) => tpl.elements().iter().map(|e| e.partition()).collect(),
            Rebalance::Revoke(_) => Vec::new(),
            Rebalance::Error(err) => {
                tracing::warn!("rebalance failed: {err}");
                return;
            }
        };
        tracing::info!(?partitions, "partitions assigned by the consumer group");
        *self.assigned.lock().unwrap_or_else(PoisonError::into_inner) = Some(partitions);
    }
}

/// A topic being read.
pub struct KafkaSource {
    consumer: BaseConsumer<SourceContext>,
    topic: String,
    /// Next offset to hand out, per partition.
    positions: BTreeMap<i32, i64>,
    /// Bounded reads stop at these offsets.
    ends: Option<BTreeMap<i32, i64>>,
    committed: BTreeMap<i32, i64>,
    /// Event-time watermarks read back from commit metadata.
    restored: BTreeMap<i32, i64>,
    partitions: Vec<i32>,
    /// The first group assignment starts at earliest/latest: commit metadata does not apply.
    reread_from_start: bool,
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
}

fn parse_metadata(text: &str) -> Option<i64> {
    text.strip_prefix("wm=")?.parse().ok()
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
        let consumer: BaseConsumer<SourceContext> = config
            .client()
            .set("group.id", &options.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", reset)
            .set("enable.partition.eof", "false")
            // A crashed or restarted member is replaced in seconds, not the default 45 s.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000")
            .create_with_context(SourceContext::default())
            .map_err(KafkaError::client("creating the consumer"))?;
        let partitions = wait_for_topic(
            &consumer,
            config,
            &options.topic,
            options.connect_timeout,
            stop,
        )?;
        let mut source = KafkaSource {
            consumer,
            topic: options.topic.clone(),
            positions: BTreeMap::new(),
            ends: None,
            committed: BTreeMap::new(),
            restored: BTreeMap::new(),
            partitions: partitions.clone(),
            reread_from_start: false,
        };
        match options.assign {
            AssignMode::All => source.assign_all(&partitions, options.start)?,
            AssignMode::Group => {
                let first = match options.start {
                    StartAt::Committed => None,
                    StartAt::Earliest => Some(Offset::Beginning),
                    StartAt::Latest => Some(Offset::End),
                };
                source.reread_from_start = first.is_some();
                *source
                    .consumer
                    .context()
                    .first_start
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = first;
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
            source.ends = Some(ends);
        }
        Ok(source)
    }

    fn assign_all(&mut self, partitions: &[i32], start: StartAt) -> Result<(), KafkaError> {
        let mut tpl = Tpl::new();
        for &p in partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = self
            .consumer
            .committed_offsets(tpl.clone(), METADATA_TIMEOUT)
            .map_err(KafkaError::client("reading committed offsets"))?;
        let mut assignment = TopicPartitionList::new();
        for elem in committed.elements() {
            let p = elem.partition();
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p, METADATA_TIMEOUT)
                .map_err(KafkaError::client(format!(
                    "reading the offsets of partition {p}"
                )))?;
            let committed = match elem.offset() {
                Offset::Offset(n) => Some(n),
                _ => None,
            };
            if let Some(n) = committed {
                self.committed.insert(p, n);
                if let Some(wm) = parse_metadata(elem.metadata()) {
                    self.restored.insert(p, wm);
                }
            }
            let from = match (start, committed) {
                (StartAt::Committed, Some(n)) => n.clamp(low, high),
                (StartAt::Committed | StartAt::Earliest, _) => low,
                (StartAt::Latest, _) => high,
            };
            if start != StartAt::Committed {
                self.restored.clear();
            }
            self.positions.insert(p, from);
            assignment
                .add_partition_offset(&self.topic, p, Offset::Offset(from))
                .map_err(KafkaError::client("building the assignment"))?;
        }
        tracing::info!(topic = %self.topic, positions = ?self.positions, "reading every partition");
        self.consumer
            .assign(&assignment)
            .map_err(KafkaError::client("assigning partitions"))
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partitions known to this source.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Watermarks found in commit metadata at start (or after a rebalance).
    pub fn restored_watermarks(&self) -> &BTreeMap<i32, i64> {
        &self.restored
    }

    /// Next offset to read per partition (only partitions read from or assigned).
    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    /// If the group reassigned partitions since the last call: the new partitions. Reading
    /// restarts from committed offsets, so the caller drops its state.
    pub fn take_rebalance(&mut self) -> Option<Vec<i32>> {
        let assigned = self
            .consumer
            .context()
            .assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        self.positions.clear();
        self.restored.clear();
        self.committed.clear();
        let reread = std::mem::take(&mut self.reread_from_start);
        if let Ok(committed) = self.consumer.committed(METADATA_TIMEOUT) {
            for elem in committed.elements() {
                if let Offset::Offset(n) = elem.offset() {
                    self.committed.insert(elem.partition(), n);
                    if !reread {
                        self.positions.insert(elem.partition(), n);
                        if let Some(wm) = parse_metadata(elem.metadata()) {
                            self.restored.insert(elem.partition(), wm);
                        }
                    }
                }
            }
        }
        self.partitions = assigned.clone();
        Some(assigned)
    }

    /// Whether a bounded source has read everything up to its end offsets.
    pub fn at_end(&self) -> bool {
        self.ends.as_ref().is_some_and(|ends| {
            ends.iter()
                .all(|(p, &end)| self.positions.get(p).copied().unwrap_or(0) >= end)
        })
    }

    /// Up to `max` records, waiting at most `wait` for the first.
    pub fn poll(&mut self, max: usize, wait: Duration) -> RawBatch {
        let mut batch = RawBatch::new();
        let deadline = Instant::now() + wait;
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        while (batch.len as usize) < max {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let Some(result) = self.consumer.poll(timeout) else {
                break;
            };
            let message = match result {
                Ok(message) => message,
                Err(err) => {
                    tracing::warn!(topic = %self.topic, "consumer: {err}");
                    continue;
                }
            };
            let partition = message.partition();
            let offset = message.offset();
            if let Some(end) = self.ends.as_ref().and_then(|ends| ends.get(&partition))
                && offset >= *end
            {
                // Bounded: past the end seen at start; it is not ours to read.
                continue;
            }
            headers.clear();
            if let Some(hs) = message.headers() {
                for h in hs.iter() {
                    headers.push((h.key.to_owned(), h.value.unwrap_or_default().to_vec()));
                }
            }
            let header_refs: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            let timestamp = message.timestamp().to_millis().unwrap_or_else(now_millis);
            batch.push(
                message.key(),
                message.payload().unwrap_or_default(),
                timestamp,
                partition,
                offset,
                &header_refs,
            );
            self.positions.insert(partition, offset + 1);
            if Instant::now() >= deadline {
                break;
            }
        }
        batch
    }

    /// Leaves the consumer group at once (instead of after the session timeout), so a
    /// restarted job gets its partitions back quickly.
    pub fn close(&mut self) {
        if self.consumer.subscription().is_ok_and(|s| s.count() > 0) {
            self.consumer.unsubscribe();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if self.consumer.poll(Duration::from_millis(100)).is_none()
                    && self.consumer.assignment().is_ok_and(|a| a.count() == 0)
                {
                    break;
                }
            }
        }
    }

    /// Commits `offsets` (next offset to read, per partition) where they moved forward,
    /// with each partition's watermark as metadata.
    pub fn commit(
        &mut self,
        offsets: &BTreeMap<i32, i64>,
        watermarks: &BTreeMap<i32, i64>,
        sync: bool,
    ) -> Result<usize, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (&p, &offset) in offsets {
            if self.committed.get(&p).is_some_and(|&c| c >= offset) {
                continue;
            }
            let mut elem = tpl
                .add_partition_offset(&self.topic, p, Offset::Offset(offset))
                .map(|()| tpl.find_partition(&self.topic, p))
                .map_err(KafkaError::client("building the commit"))?;
            if let (Some(elem), Some(wm)) = (elem.as_mut(), watermarks.get(&p)) {
                elem.set_metadata(format!("wm={wm}"));
            }
            moved.push((p, offset));
        }
        if moved.is_empty() {
            return Ok(0);
        }
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        self.consumer
            .commit(&tpl, mode)
            .map_err(KafkaError::client("committing offsets"))?;
        for (p, offset) in &moved {
            self.committed.insert(*p, *offset);
        }
        tracing::debug!(topic = %self.topic, ?moved, "committed");
        Ok(moved.len())
    }
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The topic's partitions, once the broker answers; retries with backoff (0.5 s doubling to
/// 10 s), logging each failure, until `timeout` or `stop`.
fn wait_for_topic<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    config: &KafkaConfig,
    topic: &str,
    timeout: Option<Duration>,
    stop: &AtomicBool,
) -> Result<Vec<i32>, KafkaError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut attempts = 0;
    let left = || timeout.map(|t| t.saturating_sub(started.elapsed()));
    loop {
        attempts += 1;
        let ask = left().map_or(Duration::from_secs(2), |l| {
            l.clamp(Duration::from_millis(100), Duration::from_secs(2))
        });
        let reason = match consumer.fetch_metadata(Some(topic), ask) {
            Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    return Ok(t.partitions().iter().map(|p| p.id()).collect());
                }
                Some(t) => match t.error() {
                    Some(err) => format!("topic `{topic}`: {:?}", err),
                    None => format!("topic `{topic}` has no partitions"),
                },
                None => format!("topic `{topic}` does not exist"),
            },
            Err(err) => err.to_string(),
        };
        if stop.load(Ordering::Relaxed) {
            return Err(KafkaError::Interrupted);
        }
        // Give up at the timeout, not before: the last wait is cut to what is left.
        if left().is_some_and(|l| l.is_zero()) {
            return Err(KafkaError::Unreachable {
                brokers: config.brokers.clone(),
                topic: topic.to_owned(),
                attempts,
                reason,
            });
        }
        let pause = left().map_or(backoff, |l| backoff.min(l));
        tracing::warn!(brokers = %config.brokers, "Kafka not ready ({reason}); retrying in {:.1}s", pause.as_secs_f64());
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return Err(KafkaError::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
