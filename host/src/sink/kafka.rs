//! The Kafka sink: an idempotent producer (acks=all) that numbers every record and tracks
//! which ones the broker acknowledged (see [`crate::delivery::Acks`]). Under exactly-once,
//! the sinks of a task share one transactional producer ([`KafkaSink::on`]).

use crate::delivery::Acks;
use crate::kafka::{KafkaConfig, KafkaError, LogContext};
use rdkafka::ClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Delivery outcomes by record id, filled by librdkafka's callback.
type Outcomes = Arc<Mutex<Vec<(u64, Result<(), String>)>>>;

/// Producer context: collects delivery outcomes by sink and record id (the sinks sharing
/// a producer each have a slot).
#[derive(Default)]
pub struct SinkContext {
    log: LogContext,
    slots: Mutex<Vec<Outcomes>>,
}

impl SinkContext {
    /// A new slot for a sink, and where its outcomes arrive.
    fn slot(&self) -> (usize, Outcomes) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let outcomes = Outcomes::default();
        slots.push(outcomes.clone());
        (slots.len() - 1, outcomes)
    }
}

/// A producer that several sinks share (a task's transactional producer).
pub type SharedProducer = Arc<BaseProducer<SinkContext>>;

/// Whether a client's message is about its producer being fenced: the task says that in
/// one line of its own (see [`crate::delivery::TransactionError::Fenced`]).
fn is_fencing(message: &str) -> bool {
    message.contains("fenced by a newer instance")
        || message.contains("which fences the current one")
}

impl ClientContext for SinkContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if is_fencing(message) {
            tracing::debug!(target: "rivulet::kafka", "{fac}: {message}");
            return;
        }
        self.log.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if is_fencing(reason) {
            tracing::debug!(target: "rivulet::kafka", "{error}: {reason}");
            return;
        }
        self.log.error(error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<(usize, u64)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (slot, id) = *opaque;
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((err, _)) => Err(err.to_string()),
        };
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(outcomes) = slots.get(slot) {
            outcomes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((id, outcome));
        }
    }
}

/// A topic being written.
pub struct KafkaSink {
    producer: SharedProducer,
    /// This sink's slot in the producer's context.
    slot: usize,
    topic: String,
    acks: Acks,
    outcomes: Outcomes,
    sent: u64,
    acked: u64,
}

impl KafkaSink {
    pub fn open(config: &KafkaConfig, topic: &str) -> Result<Self, KafkaError> {
        let producer: BaseProducer<SinkContext> = config
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "300000")
            .create_with_context(SinkContext::default())
            .map_err(KafkaError::client(format!(
                "creating the producer for `{topic}`"
            )))?;
        Ok(KafkaSink::on(&Arc::new(producer), topic))
    }

    /// A sink to `topic` through `producer`, which other sinks may share (its delivery
    /// reports are sorted out per sink).
    pub fn on(producer: &SharedProducer, topic: &str) -> Self {
        let (slot, outcomes) = producer.context().slot();
        KafkaSink {
            producer: producer.clone(),
            slot,
            topic: topic.to_owned(),
            acks: Acks::default(),
            outcomes,
            sent: 0,
            acked: 0,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Waits for the broker to answer (the topic may not exist yet: writing creates it on
    /// brokers that allow it), as a source does; see [`crate::kafka::wait_for_kafka`].
    pub fn wait_for_broker(
        &self,
        config: &KafkaConfig,
        timeout: Option<std::time::Duration>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(), KafkaError> {
        crate::kafka::wait_for_kafka(
            self.producer.client(),
            config,
            &self.topic,
            false,
            timeout,
            stop,
        )
        .map(|_| ())
    }

    /// Queues a record (to the partition the client's partitioner picks).
    pub fn send(
        &mut self,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), KafkaError> {
        self.send_to(None, key, payload, headers)
    }

    /// Queues a record to `partition` (`None`: the partitioner picks).
    pub fn send_to(
        &mut self,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), KafkaError> {
        let id = self.acks.mark();
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (key, value) in headers {
            owned = owned.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let topic = self.topic.clone();
        let mut record =
            BaseRecord::with_opaque_to(&topic, Box::new((self.slot, id))).payload(payload);
        if !headers.is_empty() {
            record = record.headers(owned);
        }
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(50));
                    self.collect()?;
                }
                Err((err, _)) => {
                    return Err(KafkaError::Delivery {
                        topic: self.topic.clone(),
                        reason: err.to_string(),
                    });
                }
            }
        }
        self.acks.send();
        self.sent += 1;
        Ok(())
    }

    fn collect(&mut self) -> Result<(), KafkaError> {
        let outcomes =
            std::mem::take(&mut *self.outcomes.lock().unwrap_or_else(PoisonError::into_inner));
        for (id, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    self.acks.ack(id);
                    self.acked += 1;
                }
                Err(reason) => {
                    return Err(KafkaError::Delivery {
                        topic: self.topic.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// Serves delivery reports; a record the producer gave up on is an error (at-least-once
    /// cannot drop it: the pipeline stops and its offsets stay uncommitted).
    pub fn poll(&mut self) -> Result<(), KafkaError> {
        self.producer.poll(Duration::ZERO);
        self.collect()
    }

    /// Waits until everything sent is acknowledged, or `timeout`, or (with `stall`) until no
    /// acknowledgement came for that long.
    pub fn flush(&mut self, timeout: Duration, stall: Option<Duration>) -> Result<(), KafkaError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let (mut pending, mut progress) = (self.acks.pending(), Instant::now());
        while self.acks.pending() > 0 && Instant::now() < deadline {
            let _ = self.producer.flush(Duration::from_millis(100));
            self.poll()?;
            if self.acks.pending() < pending {
                (pending, progress) = (self.acks.pending(), Instant::now());
            } else if stall.is_some_and(|stall| progress.elapsed() >= stall) {
                break;
            }
        }
        let pending = self.acks.pending();
        if pending == 0 {
            Ok(())
        } else {
            Err(KafkaError::Delivery {
                topic: self.topic.clone(),
                reason: format!(
                    "{pending} records unacknowledged after {:?}",
                    started.elapsed()
                ),
            })
        }
    }

    /// Which records the broker acknowledged.
    pub fn acks(&self) -> &Acks {
        &self.acks
    }

    /// (sent, acknowledged)
    pub fn counts(&self) -> (u64, u64) {
        (self.sent, self.acked)
    }
}
