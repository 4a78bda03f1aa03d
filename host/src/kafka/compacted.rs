//! A small compacted topic of one partition, written a few records at a time with the
//! broker's acknowledgement and read from the beginning: the job's state topic
//! ([`super::state_topic`]) and its fleet's control topic ([`crate::fleet`]). Everything
//! lives in partition 0, whatever partition count a broker gave the topic when it created it
//! on its own.

use super::{KafkaConfig, KafkaError, LogContext};
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
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
    pub offset: i64,
}

impl Compacted {
    /// Connects to `name`, creating it (compacted, one partition) if the broker serves
    /// topic creation; otherwise the first write creates it. `what` names it in logs.
    pub fn open(config: &KafkaConfig, name: &str, what: &str) -> Result<Self, KafkaError> {
        let topic = Compacted::existing(config, name)?;
        topic.create(what);
        Ok(topic)
    }

    /// Connects to `name` without creating it (reading a missing topic reads nothing).
    pub fn existing(config: &KafkaConfig, name: &str) -> Result<Self, KafkaError> {
        Ok(Compacted {
            producer: Mutex::new(producer(config, name)?),
            name: name.to_owned(),
            config: config.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the topic if it is missing (compacted, one partition). A broker without the
    /// admin API (the embedded one) creates it on demand instead, with its own defaults.
    fn create(&self, what: &str) {
        if self.exists() {
            return;
        }
        let producer = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        // librdkafka's mock cluster (the embedded broker) leaves admin requests unanswered.
        let embedded = producer
            .client()
            .fetch_cluster_id(TIMEOUT)
            .is_some_and(|id| id.starts_with("mockCluster"));
        if !embedded && let Err(reason) = self.create_with_admin(what) {
            tracing::warn!(topic = %self.name, "cannot create the {what} compacted ({reason}); the broker creates it with its defaults");
        }
        if !self.exists() {
            // Producers' metadata requests ask the broker to create missing topics.
            let _ = producer.client().fetch_metadata(Some(&self.name), TIMEOUT);
        }
    }

    /// A client that only reads, by manual assignment (it never joins or commits).
    fn reader(&self) -> Result<BaseConsumer<LogContext>, KafkaError> {
        self.config
            .client()
            .set("group.id", format!("{}-reader", self.name))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("allow.auto.create.topics", "false")
            .set(
                "fetch.message.max.bytes",
                (MAX_RECORD + 64 * 1024).to_string(),
            )
            .create_with_context(LogContext)
            .map_err(KafkaError::client(format!("reading `{}`", self.name)))
    }

    /// Whether the topic exists (asked without creating it).
    fn exists(&self) -> bool {
        self.reader().is_ok_and(|probe| {
            probe
                .fetch_metadata(Some(&self.name), TIMEOUT)
                .is_ok_and(|m| {
                    m.topics().iter().any(|t| {
                        t.name() == self.name && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
        })
    }

    fn create_with_admin(&self, what: &str) -> Result<(), String> {
        let admin: AdminClient<LogContext> = self
            .config
            .client()
            .create_with_context(LogContext)
            .map_err(|err| err.to_string())?;
        let max = (MAX_RECORD + 64 * 1024).to_string();
        let topic = NewTopic::new(&self.name, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact")
            .set("max.message.bytes", &max);
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|err| err.to_string())?;
        let results = runtime
            .block_on(async {
                tokio::time::timeout(TIMEOUT, admin.create_topics([&topic], &options)).await
            })
            .map_err(|_| "timed out".to_owned())?
            .map_err(|err| err.to_string())?;
        for result in results {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created the job's {what}"),
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(code.to_string()),
            }
        }
        Ok(())
    }

    /// Reads every record from the beginning to the end the broker reports, oldest first,
    /// and returns the offset after the last one (where [`Compacted::tail`] goes on).
    pub fn read_to_end(&self, mut each: impl FnMut(Entry)) -> Result<i64, KafkaError> {
        let consumer = self.reader()?;
        let metadata = consumer
            .fetch_metadata(Some(&self.name), TIMEOUT)
            .map_err(KafkaError::client(format!("reading `{}`", self.name)))?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == self.name && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Ok(0);
        }
        let (low, high) =
            consumer
                .fetch_watermarks(&self.name, 0, TIMEOUT)
                .map_err(KafkaError::client(format!(
                    "reading the end of `{}`",
                    self.name
                )))?;
        if high <= low {
            return Ok(high.max(0));
        }
        assign(&consumer, &self.name, Offset::Beginning)?;
        let deadline = Instant::now() + READ_WAIT;
        let mut next = low;
        while next < high {
            if Instant::now() >= deadline {
                return Err(KafkaError::Delivery {
                    topic: self.name.clone(),
                    reason: format!(
                        "read only up to offset {next} of {high} in {} s",
                        READ_WAIT.as_secs()
                    ),
                });
            }
            let polled = consumer.poll(Duration::from_millis(200));
            // Transaction markers take offsets but are never handed out: the position
            // moves past them.
            if let Some(position) = consumer.position().ok().and_then(|tpl| {
                tpl.find_partition(&self.name, 0)
                    .and_then(|e| e.offset().to_raw())
            }) {
                next = next.max(position);
            }
            let Some(result) = polled else {
                continue;
            };
            match result {
                Ok(message) => {
                    next = message.offset() + 1;
                    if let Some(entry) = entry(&message) {
                        each(entry);
                    }
                }
                Err(err) => tracing::debug!(topic = %self.name, "reading: {err}"),
            }
        }
        Ok(next)
    }

    /// A reader of the records from `offset` on, as they come.
    pub fn tail(&self, offset: i64) -> Result<Tail, KafkaError> {
        let consumer = self.reader()?;
        assign(&consumer, &self.name, Offset::Offset(offset))?;
        Ok(Tail { consumer })
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
    offset: Offset,
) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(name, 0, offset)
        .map_err(KafkaError::client(format!("assigning `{name}`")))?;
    consumer
        .assign(&tpl)
        .map_err(KafkaError::client(format!("reading `{name}`")))
}

fn entry(message: &rdkafka::message::BorrowedMessage<'_>) -> Option<Entry> {
    let key = std::str::from_utf8(message.key()?).ok()?.to_owned();
    Some(Entry {
        key,
        value: message.payload().map(<[u8]>::to_vec),
        offset: message.offset(),
    })
}

/// The records of a compacted topic as they come.
pub struct Tail {
    consumer: BaseConsumer<LogContext>,
}

impl Tail {
    /// The next record, waiting at most `wait` (None: none came, or a transient error).
    pub fn next(&self, wait: Duration) -> Option<Entry> {
        match self.consumer.poll(wait)? {
            Ok(message) => entry(&message),
            Err(err) => {
                tracing::debug!("reading a compacted topic: {err}");
                None
            }
        }
    }
}
