//! A small compacted topic of one partition, written a few records at a time with the
//! broker's acknowledgement and read from the beginning: the job's state topic
//! ([`super::state_topic`]) and its fleet's control topic ([`crate::fleet`]). Everything
//! lives in partition 0, whatever partition count a broker gave the topic when it created it
//! on its own.

use super::{KafkaConfig, KafkaError, LogContext};
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);

/// How long reading the topic to its end may take.
const READ_WAIT: Duration = Duration::from_secs(30);

/// The largest record the topic takes (a fleet's control topic carries Wasm modules).
pub const MAX_RECORD: usize = 8 * 1024 * 1024;

/// One compacted topic, written with acknowledgement.
pub struct Compacted {
    name: String,
    config: KafkaConfig,
    /// Replaced after a write the broker refused: some brokers, restarted, refuse every
    /// later record of a producer id they knew before (Tansu 0.6 answers "unknown error"),
    /// and a new producer gets a new id.
    producer: Mutex<BaseProducer<WriteContext>>,
    /// Its partition count when opened.
    partitions: i32,
}

/// A producer for topic `name`.
fn producer(config: &KafkaConfig, name: &str) -> Result<BaseProducer<WriteContext>, KafkaError> {
    config
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        // One record per batch: some brokers report a partition's end as the start of
        // its last batch + 1, and a reader must not stop inside a batch.
        .set("batch.num.messages", "1")
        // In order, one at a time: a few records per write, and some brokers mishandle
        // several in-flight batches to one partition.
        .set("max.in.flight.requests.per.connection", "1")
        .set("message.timeout.ms", "10000")
        .set("message.max.bytes", (MAX_RECORD + 64 * 1024).to_string())
        .create_with_context(WriteContext::default())
        .map_err(KafkaError::client(format!(
            "creating the producer for `{name}`"
        )))
}

/// Logs like every client, and keeps the first delivery failure of a write.
#[derive(Default)]
struct WriteContext {
    log: LogContext,
    failure: Mutex<Option<String>>,
}

impl ClientContext for WriteContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ProducerContext for WriteContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, _)) = result {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            failure.get_or_insert_with(|| err.to_string());
        }
    }
}

/// A record of the topic: its key, and its value (None: a tombstone).
pub struct Entry {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub partition: i32,
    pub offset: i64,
}

impl Compacted {
    /// Connects to `name`, creating it (compacted, one partition) if the broker serves
    /// topic creation; otherwise the first write creates it. `what` names it in logs.
    /// `partitions`: how many it is created with (grown to, if it has fewer); the records
    /// written with [`Compacted::write`] all go to partition 0.
    pub fn open(
        config: &KafkaConfig,
        name: &str,
        what: &str,
        partitions: i32,
    ) -> Result<Self, KafkaError> {
        let mut topic = Compacted::existing(config, name)?;
        let wanted = partitions.max(1);
        let found = (topic.partitions > 0).then_some(topic.partitions);
        if found.is_none_or(|n| n < wanted) {
            topic.create(what, wanted, found);
            topic.partitions = topic.partition_count().unwrap_or(1);
        }
        Ok(topic)
    }

    /// Connects to `name` without creating it (reading a missing topic reads nothing).
    pub fn existing(config: &KafkaConfig, name: &str) -> Result<Self, KafkaError> {
        let mut topic = Compacted {
            producer: Mutex::new(producer(config, name)?),
            name: name.to_owned(),
            config: config.clone(),
            partitions: 0,
        };
        topic.partitions = topic.partition_count().unwrap_or(0);
        Ok(topic)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's partition count when it was opened (0: it did not exist).
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Creates the topic if it is missing (`found`: its partition count; compacted,
    /// `partitions` partitions), or adds partitions up to `partitions`. A broker without the
    /// admin API (the embedded one) creates it on demand instead, with its own defaults.
    fn create(&self, what: &str, partitions: i32, found: Option<i32>) {
        let producer = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        // librdkafka's mock cluster (the embedded broker) leaves admin requests unanswered.
        let embedded = producer
            .client()
            .fetch_cluster_id(TIMEOUT)
            .is_some_and(|id| id.starts_with("mockCluster"));
        if !embedded {
            let done = match found {
                None => self.create_with_admin(what, partitions),
                Some(_) => self.grow_with_admin(what, partitions),
            };
            if let Err(reason) = done {
                match found {
                    None => {
                        tracing::warn!(topic = %self.name, "cannot create the {what} compacted ({reason}); the broker creates it with its defaults")
                    }
                    Some(n) => {
                        tracing::warn!(topic = %self.name, "cannot add partitions to the {what} ({n} of {partitions}): {reason}")
                    }
                }
            }
        }
        if self.partition_count().is_none() {
            // Producers' metadata requests ask the broker to create missing topics.
            let _ = producer.client().fetch_metadata(Some(&self.name), TIMEOUT);
        }
    }

    /// A client that only reads, by manual assignment (it never joins or commits), what
    /// was committed.
    fn reader(&self) -> Result<BaseConsumer<LogContext>, KafkaError> {
        self.reader_at("read_committed")
    }

    /// A reader with the given `isolation.level`.
    fn reader_at(&self, isolation: &str) -> Result<BaseConsumer<LogContext>, KafkaError> {
        self.config
            .client()
            .set("isolation.level", isolation)
            .set("group.id", format!("{}-reader", self.name))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("allow.auto.create.topics", "false")
            // Never jump: some brokers (Tansu, just restarted) answer an offset they hold as
            // out of range for a moment, and a reset to the end would skip records. The
            // readers below assign the offset again instead.
            .set("auto.offset.reset", "error")
            .set(
                "fetch.message.max.bytes",
                (MAX_RECORD + 64 * 1024).to_string(),
            )
            .create_with_context(LogContext)
            .map_err(KafkaError::client(format!("reading `{}`", self.name)))
    }

    /// The topic's partition count (None: it does not exist), asked without creating it.
    fn partition_count(&self) -> Option<i32> {
        let probe = self.reader().ok()?;
        partitions_of(&probe, &self.name).ok().flatten()
    }

    /// Runs one admin request, bounded by [`TIMEOUT`].
    fn admin<T>(
        &self,
        request: impl AsyncFnOnce(&AdminClient<LogContext>, &AdminOptions) -> T,
    ) -> Result<T, String> {
        let admin: AdminClient<LogContext> = self
            .config
            .client()
            .create_with_context(LogContext)
            .map_err(|err| err.to_string())?;
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|err| err.to_string())?;
        runtime
            .block_on(async { tokio::time::timeout(TIMEOUT, request(&admin, &options)).await })
            .map_err(|_| "timed out".to_owned())
    }

    fn grow_with_admin(&self, what: &str, partitions: i32) -> Result<(), String> {
        let grow = NewPartitions::new(&self.name, partitions as usize);
        let results = self
            .admin(async |admin, options| admin.create_partitions([&grow], options).await)?
            .map_err(|err| err.to_string())?;
        for result in results {
            match result {
                Ok(name) => {
                    tracing::info!(topic = %name, partitions, "added partitions to the job's {what}")
                }
                Err((_, code)) => return Err(code.to_string()),
            }
        }
        Ok(())
    }

    fn create_with_admin(&self, what: &str, partitions: i32) -> Result<(), String> {
        let max = (MAX_RECORD + 64 * 1024).to_string();
        let topic = NewTopic::new(&self.name, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", &max);
        let results = self
            .admin(async |admin, options| admin.create_topics([&topic], options).await)?
            .map_err(|err| err.to_string())?;
        for result in results {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created the job's {what}"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(code.to_string()),
            }
        }
        Ok(())
    }

    /// Reads every record of partition 0 from the beginning to the end the broker reports,
    /// oldest first, and returns the offset after the last one (where [`Compacted::tail`]
    /// goes on).
    pub fn read_to_end(&self, each: impl FnMut(Entry)) -> Result<i64, KafkaError> {
        let ends = self.read_partitions_to_end(&[0], each)?;
        Ok(ends.get(&0).copied().unwrap_or(0))
    }

    /// Reads every record of `partitions` from the beginning to the end the broker
    /// reports, each partition's oldest first, and returns each one's offset after its last.
    pub fn read_partitions_to_end(
        &self,
        partitions: &[i32],
        mut each: impl FnMut(Entry),
    ) -> Result<BTreeMap<i32, i64>, KafkaError> {
        let consumer = self.reader()?;
        if partitions_of(&consumer, &self.name)?.is_none() {
            return Ok(BTreeMap::new());
        }
        // Per partition: the end the broker reports, and the next offset to read.
        let mut reading: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        let mut ends = BTreeMap::new();
        for &partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(&self.name, partition, TIMEOUT)
                .map_err(KafkaError::client(format!(
                    "reading the end of `{}` [{partition}]",
                    self.name
                )))?;
            match high > low {
                true => {
                    reading.insert(partition, (high, low));
                }
                false => {
                    ends.insert(partition, high.max(0));
                }
            }
        }
        if reading.is_empty() {
            return Ok(ends);
        }
        let starts: Vec<(i32, Offset)> = reading.keys().map(|&p| (p, Offset::Beginning)).collect();
        assign(&consumer, &self.name, &starts)?;
        let deadline = Instant::now() + READ_WAIT;
        let mut take = |message: &rdkafka::message::BorrowedMessage<'_>,
                        reading: &mut BTreeMap<i32, (i64, i64)>| {
            if let Some((_, next)) = reading.get_mut(&message.partition()) {
                *next = message.offset() + 1;
            }
            if let Some(entry) = entry(message) {
                each(entry);
            }
        };
        let unread = |reading: &BTreeMap<i32, (i64, i64)>| {
            reading
                .iter()
                .filter(|(_, (high, next))| next < high)
                .map(|(&p, &(high, next))| (p, high, next))
                .collect::<Vec<_>>()
        };
        while let Some(&(partition, high, next)) = unread(&reading).first() {
            if Instant::now() >= deadline {
                return Err(KafkaError::Delivery {
                    topic: self.name.clone(),
                    reason: format!(
                        "read partition {partition} only up to offset {next} of {high} in {} s",
                        READ_WAIT.as_secs()
                    ),
                });
            }
            let polled = consumer.poll(Duration::from_millis(200));
            // Transaction markers take offsets but are never handed out: the position
            // moves past them.
            if let Ok(positions) = consumer.position() {
                for (&p, (_, next)) in reading.iter_mut() {
                    if let Some(position) = positions
                        .find_partition(&self.name, p)
                        .and_then(|e| e.offset().to_raw())
                    {
                        *next = (*next).max(position);
                    }
                }
            }
            match polled {
                None => {}
                Some(Ok(message)) => take(&message, &mut reading),
                Some(Err(err)) => {
                    tracing::debug!(topic = %self.name, "reading: {err}");
                    if out_of_range(&err) {
                        std::thread::sleep(RETRY);
                        let again: Vec<(i32, Offset)> = unread(&reading)
                            .into_iter()
                            .map(|(p, _, next)| (p, Offset::Offset(next)))
                            .collect();
                        assign(&consumer, &self.name, &again)?;
                    }
                }
            }
        }
        // Some brokers (Tansu) report the end as the start of the last batch + 1, and a
        // transaction writes several records in one batch: the rest of that batch came in
        // the same fetch, and is taken from what the client holds already.
        while let Some(Ok(message)) = consumer.poll(Duration::ZERO) {
            take(&message, &mut reading);
        }
        ends.extend(reading.into_iter().map(|(p, (_, next))| (p, next)));
        Ok(ends)
    }

    /// The record at each (partition, offset) of `places`, read uncommitted (the caller
    /// knows they were committed), with one client. `None`: the partition has none there
    /// (compacted away).
    pub fn read_at(
        &self,
        places: &BTreeMap<i32, i64>,
    ) -> Result<BTreeMap<i32, Option<Entry>>, KafkaError> {
        let mut found = BTreeMap::new();
        if places.is_empty() {
            return Ok(found);
        }
        let consumer = self.reader_at("read_uncommitted")?;
        let wanted = |found: &BTreeMap<i32, Option<Entry>>| -> Vec<(i32, Offset)> {
            places
                .iter()
                .filter(|(p, _)| !found.contains_key(*p))
                .map(|(&p, &offset)| (p, Offset::Offset(offset)))
                .collect()
        };
        assign(&consumer, &self.name, &wanted(&found))?;
        let deadline = Instant::now() + READ_WAIT;
        while found.len() < places.len() && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                // A fetch from inside a batch hands out the records from `offset` on.
                Some(Ok(message)) => {
                    let partition = message.partition();
                    if let Some(&offset) = places.get(&partition)
                        && !found.contains_key(&partition)
                    {
                        let at = (message.offset() == offset).then(|| entry(&message));
                        found.insert(partition, at.flatten());
                    }
                }
                Some(Err(err)) => {
                    tracing::debug!(topic = %self.name, "reading: {err}");
                    if out_of_range(&err) {
                        std::thread::sleep(RETRY);
                        assign(&consumer, &self.name, &wanted(&found))?;
                    }
                }
            }
        }
        if found.len() < places.len() {
            let missing: Vec<i32> = wanted(&found).iter().map(|(p, _)| *p).collect();
            return Err(KafkaError::Delivery {
                topic: self.name.clone(),
                reason: format!(
                    "the records of partitions {missing:?} not read in {} s",
                    READ_WAIT.as_secs()
                ),
            });
        }
        Ok(found)
    }

    /// A reader of the records from `offset` on, as they come.
    pub fn tail(&self, offset: i64) -> Result<Tail, KafkaError> {
        let consumer = self.reader()?;
        assign(&consumer, &self.name, &[(0, Offset::Offset(offset))])?;
        Ok(Tail {
            consumer,
            name: self.name.clone(),
            next: AtomicI64::new(offset),
        })
    }

    /// Writes `records` (a `None` value: a tombstone) and waits until the broker has them.
    pub fn write(&self, records: &[(&str, Option<&[u8]>)]) -> Result<(), KafkaError> {
        let mut producer = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        // A failure reported after an earlier write gave up belongs to that write.
        producer
            .context()
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let failed = |reason: String| KafkaError::Delivery {
            topic: self.name.clone(),
            reason,
        };
        for (key, value) in records {
            let mut record = BaseRecord::<str, [u8]>::to(&self.name)
                .partition(0)
                .key(key);
            if let Some(value) = value {
                record = record.payload(value);
            }
            producer
                .send(record)
                .map_err(|(err, _)| failed(err.to_string()))?;
        }
        // Served in polls that return as soon as the acknowledgement comes (a flush waits in
        // 100 ms steps, and the state topic is on the record path); not shorter, or a broker
        // outage turns this wait into a spin.
        let deadline = Instant::now() + TIMEOUT;
        while producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "{} records unacknowledged after {TIMEOUT:?}",
                    producer.in_flight_count()
                )));
            }
            producer.poll(Duration::from_millis(10));
        }
        let failure = producer
            .context()
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match failure {
            Some(reason) => {
                // Refused by the broker, not lost in an outage: the next write gets a new
                // producer (and producer id).
                match self::producer(&self.config, &self.name) {
                    Ok(fresh) => *producer = fresh,
                    Err(err) => tracing::debug!("keeping the producer of `{}`: {err}", self.name),
                }
                Err(failed(reason))
            }
            None => Ok(()),
        }
    }
}

fn assign(
    consumer: &BaseConsumer<LogContext>,
    name: &str,
    partitions: &[(i32, Offset)],
) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for &(partition, offset) in partitions {
        tpl.add_partition_offset(name, partition, offset)
            .map_err(KafkaError::client(format!("assigning `{name}`")))?;
    }
    consumer
        .assign(&tpl)
        .map_err(KafkaError::client(format!("reading `{name}`")))
}

/// The partition count of topic `name` (None: it does not exist), as `client` sees it.
fn partitions_of(client: &BaseConsumer<LogContext>, name: &str) -> Result<Option<i32>, KafkaError> {
    let metadata = client
        .fetch_metadata(Some(name), TIMEOUT)
        .map_err(KafkaError::client(format!("reading `{name}`")))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// How long a reader waits before asking again for an offset the broker called out of range.
const RETRY: Duration = Duration::from_millis(100);

/// The broker called the offset asked for out of range (`auto.offset.reset = error`).
fn out_of_range(err: &rdkafka::error::KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
    )
}

fn entry(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<Entry> {
    let key = std::str::from_utf8(message.key()?).ok()?.to_owned();
    Some(Entry {
        key,
        value: message.payload().map(<[u8]>::to_vec),
        partition: message.partition(),
        offset: message.offset(),
    })
}

/// The records of a compacted topic as they come.
pub struct Tail {
    consumer: BaseConsumer<LogContext>,
    name: String,
    /// The offset after the last record handed out, where a reader called out of range
    /// goes on.
    next: AtomicI64,
}

impl Tail {
    /// The next record, waiting at most `wait` (None: none came, or a transient error).
    pub fn next(&self, wait: Duration) -> Option<Entry> {
        match self.consumer.poll(wait)? {
            Ok(message) => {
                self.next.store(message.offset() + 1, Ordering::Relaxed);
                entry(&message)
            }
            Err(err) => {
                tracing::debug!(topic = %self.name, "reading: {err}");
                if out_of_range(&err) {
                    std::thread::sleep(RETRY);
                    let next = Offset::Offset(self.next.load(Ordering::Relaxed));
                    if let Err(err) = assign(&self.consumer, &self.name, &[(0, next)]) {
                        tracing::warn!(topic = %self.name, "{err}");
                    }
                }
                None
            }
        }
    }
}
