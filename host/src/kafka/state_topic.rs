//! The job's state topic: a small compacted topic holding each source partition's restart
//! state (see [`crate::delivery::restart`]), keyed `<topic>/<partition>`. Unlike commit
//! metadata, every Kafka-protocol broker keeps it. Everything lives in partition 0, whatever
//! partition count a broker gave the topic when it created it on its own.

use super::{KafkaConfig, KafkaError, LogContext};
use crate::delivery::PartitionState;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The state topic of a consumer group.
pub struct StateTopic {
    name: String,
    config: KafkaConfig,
    /// Replaced after a write the broker refused: some brokers, restarted, refuse every
    /// later record of a producer id they knew before (Tansu 0.6 answers "unknown error"),
    /// and a new producer gets a new id.
    producer: Mutex<BaseProducer<StateContext>>,
}

/// A producer for the state topic `name`.
fn producer(config: &KafkaConfig, name: &str) -> Result<BaseProducer<StateContext>, KafkaError> {
    config
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        // One record per batch: some brokers report a partition's end as the start of
        // its last batch + 1, and a reader must not stop inside a batch.
        .set("batch.num.messages", "1")
        // In order, one at a time: a few records per commit, and some brokers mishandle
        // several in-flight batches to one partition.
        .set("max.in.flight.requests.per.connection", "1")
        .set("message.timeout.ms", "10000")
        .create_with_context(StateContext::default())
        .map_err(KafkaError::client(format!(
            "creating the producer for `{name}`"
        )))
}

/// Logs like every client, and keeps the first delivery failure of a write.
#[derive(Default)]
struct StateContext {
    log: LogContext,
    failure: Mutex<Option<String>>,
}

impl ClientContext for StateContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.log.error(error, reason);
    }
}

impl ProducerContext for StateContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(message) = result {
            tracing::debug!(
                key = ?message.key().map(String::from_utf8_lossy),
                offset = message.offset(),
                "state written"
            );
        }
        if let Err((err, _)) = result {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            failure.get_or_insert_with(|| err.to_string());
        }
    }
}

/// The state topic's name for a consumer group: `<group>-state`, with characters Kafka does
/// not allow in topic names replaced by `_`.
pub fn topic_name(group: &str) -> String {
    let clean: String = group
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    format!("{clean}-state")
}

fn key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// The record (key, value) holding `state` of `topic`'s `partition`.
pub fn record(topic: &str, partition: i32, state: &PartitionState) -> (String, String) {
    (key(topic, partition), state.encode())
}

impl StateTopic {
    /// Connects to the state topic of `group`, creating it (compacted, one partition) if the
    /// broker serves topic creation; otherwise the first write creates it.
    pub fn open(config: &KafkaConfig, group: &str) -> Result<Self, KafkaError> {
        let name = topic_name(group);
        let state = StateTopic {
            producer: Mutex::new(producer(config, &name)?),
            name,
            config: config.clone(),
        };
        state.create();
        Ok(state)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the topic if it is missing (compacted, one partition). A broker without the
    /// admin API (the embedded one) creates it on demand instead, with its own defaults.
    fn create(&self) {
        if self.exists() {
            return;
        }
        let producer = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        // librdkafka's mock cluster (the embedded broker) leaves admin requests unanswered.
        let embedded = producer
            .client()
            .fetch_cluster_id(TIMEOUT)
            .is_some_and(|id| id.starts_with("mockCluster"));
        if !embedded && let Err(reason) = self.create_with_admin() {
            tracing::warn!(topic = %self.name, "cannot create the state topic compacted ({reason}); the broker creates it with its defaults");
        }
        if !self.exists() {
            // Producers' metadata requests ask the broker to create missing topics.
            let _ = producer.client().fetch_metadata(Some(&self.name), TIMEOUT);
        }
    }

    /// Whether the topic exists (asked without creating it).
    fn exists(&self) -> bool {
        let probe: Result<BaseConsumer<LogContext>, _> = self
            .config
            .client()
            .set("group.id", format!("{}-reader", self.name))
            .set("allow.auto.create.topics", "false")
            .create_with_context(LogContext);
        probe.is_ok_and(|probe| {
            probe
                .fetch_metadata(Some(&self.name), TIMEOUT)
                .is_ok_and(|m| {
                    m.topics().iter().any(|t| {
                        t.name() == self.name && t.error().is_none() && !t.partitions().is_empty()
                    })
                })
        })
    }

    fn create_with_admin(&self) -> Result<(), String> {
        let admin: AdminClient<LogContext> = self
            .config
            .client()
            .create_with_context(LogContext)
            .map_err(|err| err.to_string())?;
        let topic = NewTopic::new(&self.name, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
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
                Ok(name) => tracing::info!(topic = %name, "created the job's state topic"),
                Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(code.to_string()),
            }
        }
        Ok(())
    }

    /// The newest state of each of `partitions` of `topic` (absent: none was written).
    pub fn read(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, PartitionState>, KafkaError> {
        let consumer: BaseConsumer<LogContext> = self
            .config
            .client()
            // Manual assignment only; never joins or commits for this group.
            .set("group.id", format!("{}-reader", self.name))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            // Under exactly-once the state is written in transactions: only committed ones.
            .set("isolation.level", "read_committed")
            .create_with_context(LogContext)
            .map_err(KafkaError::client(format!("reading `{}`", self.name)))?;
        let wanted: BTreeMap<String, i32> =
            partitions.iter().map(|&p| (key(topic, p), p)).collect();
        let mut found = BTreeMap::new();
        let metadata = consumer
            .fetch_metadata(Some(&self.name), TIMEOUT)
            .map_err(KafkaError::client(format!("reading `{}`", self.name)))?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == self.name && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Ok(found);
        }
        let (low, high) =
            consumer
                .fetch_watermarks(&self.name, 0, TIMEOUT)
                .map_err(KafkaError::client(format!(
                    "reading the end of `{}`",
                    self.name
                )))?;
        if high <= low {
            return Ok(found);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.name, 0, Offset::Beginning)
            .map_err(KafkaError::client("building the state assignment"))?;
        consumer
            .assign(&tpl)
            .map_err(KafkaError::client(format!("reading `{}`", self.name)))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut next = low;
        while next < high {
            if Instant::now() >= deadline {
                return Err(KafkaError::Delivery {
                    topic: self.name.clone(),
                    reason: format!("read only up to offset {next} of {high} in 30 s"),
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
            let message = match result {
                Ok(message) => message,
                Err(err) => {
                    tracing::debug!(topic = %self.name, "reading state: {err}");
                    continue;
                }
            };
            next = message.offset() + 1;
            let Some(&p) = message
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| wanted.get(k))
            else {
                continue;
            };
            match message.payload().map(std::str::from_utf8) {
                Some(Ok(text)) => match PartitionState::decode(text, None) {
                    Ok(state) => {
                        found.insert(p, state);
                    }
                    Err(err) => tracing::warn!(topic = %self.name, partition = p, "{err}"),
                },
                // A tombstone: the state was reset.
                None => {
                    found.remove(&p);
                }
                Some(Err(_)) => {
                    tracing::warn!(topic = %self.name, partition = p, "state is not UTF-8")
                }
            }
        }
        Ok(found)
    }

    /// Writes `states` of `topic`'s partitions and waits until the broker has them.
    pub fn write(
        &self,
        topic: &str,
        states: &BTreeMap<i32, PartitionState>,
    ) -> Result<(), KafkaError> {
        let mut producer = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        // A failure reported after an earlier write gave up belongs to that write.
        producer
            .context()
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for (&p, state) in states {
            let key = key(topic, p);
            let value = state.encode();
            let record = BaseRecord::<str, str>::to(&self.name)
                .partition(0)
                .key(&key)
                .payload(&value);
            producer
                .send(record)
                .map_err(|(err, _)| KafkaError::Delivery {
                    topic: self.name.clone(),
                    reason: err.to_string(),
                })?;
        }
        let failed = |reason: String| KafkaError::Delivery {
            topic: self.name.clone(),
            reason,
        };
        // Served in polls that return as soon as the acknowledgement comes (a flush waits in
        // 100 ms steps, and this is on the record path); not shorter, or a broker outage
        // turns this wait into a spin.
        let deadline = Instant::now() + TIMEOUT;
        while producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "{} state records unacknowledged after {TIMEOUT:?}",
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
                    Err(err) => tracing::debug!("keeping the state producer: {err}"),
                }
                Err(failed(reason))
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_topic_names_are_valid_kafka_names() {
        assert_eq!(topic_name("rivulet-orders"), "rivulet-orders-state");
        assert_eq!(topic_name("team a/orders"), "team_a_orders-state");
    }
}
