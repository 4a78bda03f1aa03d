//! The Kafka sink: an idempotent producer (acks=all) that numbers every record and tracks
//! which ones the broker acknowledged (see [`crate::delivery::Acks`]). Under exactly-once,
//! the sinks of a task share one transactional producer ([`KafkaSink::on`]); while its
//! commit is in flight they hold what is sent, and send it into the next transaction.

use crate::delivery::Acks;
use crate::kafka::{KafkaConfig, KafkaError, LogContext};
use rdkafka::ClientContext;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A sink holding this many records while a commit is in flight waits for the commit
/// (memory stays bounded when the broker is slow).
const MAX_HELD: usize = 200_000;

/// Delivery outcomes by record id, filled by librdkafka's callback.
type Outcomes = Arc<Mutex<Vec<(u64, Result<(), String>)>>>;

/// Producer context: collects delivery outcomes by sink and record id (the sinks sharing
/// a producer each have a slot).
#[derive(Default)]
pub struct SinkContext {
    log: LogContext,
    slots: Mutex<Vec<Outcomes>>,
    gate: Gate,
    /// Where the broker put the records sent with [`PLACED`] as their slot: (partition,
    /// offset), in the order of their reports.
    placed: Mutex<Vec<(i32, i64)>>,
}

/// The delivery slot of records whose place in the log the sender needs (the transaction's
/// restart state, pinned by the offsets it commits): see [`SinkContext::take_placed`].
pub const PLACED: usize = usize::MAX;

/// Whether the producer takes records now: not while its transaction commits (or after
/// that failed), when its sinks hold them. Counts aborted transactions, so that records
/// held for one are dropped with it.
#[derive(Default)]
struct Gate {
    state: AtomicU8,
    aborts: AtomicU64,
}

const OPEN: u8 = 0;
const COMMITTING: u8 = 1;
const FAILED: u8 = 2;

impl SinkContext {
    /// A commit starts: the sinks hold what is sent until [`SinkContext::release`].
    pub fn hold(&self) {
        self.gate.state.store(COMMITTING, Ordering::Release);
    }

    /// A transaction is open: the sinks send what they held, and what comes.
    pub fn release(&self) {
        self.gate.state.store(OPEN, Ordering::Release);
    }

    /// The commit failed: the sinks hold on (the task stops, or aborts and begins anew).
    pub fn fail(&self) {
        self.gate.state.store(FAILED, Ordering::Release);
    }

    /// The open transaction was aborted: what the sinks held for it is dropped.
    pub fn aborted(&self) {
        self.gate.aborts.fetch_add(1, Ordering::AcqRel);
    }

    fn gate(&self) -> u8 {
        self.gate.state.load(Ordering::Acquire)
    }

    fn aborts(&self) -> u64 {
        self.gate.aborts.load(Ordering::Acquire)
    }

    /// Where the records sent with slot [`PLACED`] were written, since the last call.
    pub fn take_placed(&self) -> Vec<(i32, i64)> {
        std::mem::take(&mut *self.placed.lock().unwrap_or_else(PoisonError::into_inner))
    }

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
        if slot == PLACED {
            // A failure fails the transaction's commit.
            if let Ok(message) = result {
                self.placed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((message.partition(), message.offset()));
            }
            return;
        }
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

/// A record a sink holds while its producer's transaction commits.
struct Held {
    id: u64,
    /// [`SinkContext::aborts`] when it was sent: it belongs to the transaction after.
    aborts: u64,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
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
    /// Records sent while a commit was in flight, oldest first.
    held: VecDeque<Held>,
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
            held: VecDeque::new(),
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

    /// Queues a record to `partition` (`None`: the partitioner picks). While the
    /// producer's transaction commits the record is held, and sent after it.
    pub fn send_to(
        &mut self,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), KafkaError> {
        while self.held.len() >= MAX_HELD && self.producer.context().gate() == COMMITTING {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.release()?;
        if self.producer.context().gate() != OPEN {
            self.held.push_back(Held {
                id: self.acks.send(),
                aborts: self.producer.context().aborts(),
                partition,
                key: key.map(<[u8]>::to_vec),
                payload: payload.to_vec(),
                headers: headers
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), value.to_vec()))
                    .collect(),
            });
            self.sent += 1;
            return Ok(());
        }
        let id = self.acks.mark();
        self.produce(id, partition, key, payload, headers)?;
        self.acks.send();
        self.sent += 1;
        Ok(())
    }

    /// Sends what was held, once the producer takes records again. Records held for an
    /// aborted transaction are dropped with it.
    fn release(&mut self) -> Result<(), KafkaError> {
        if self.held.is_empty() || self.producer.context().gate() != OPEN {
            return Ok(());
        }
        let aborts = self.producer.context().aborts();
        while let Some(held) = self.held.pop_front() {
            if held.aborts != aborts {
                self.acks.ack(held.id);
                self.acked += 1;
                continue;
            }
            let headers: Vec<(&str, &[u8])> = held
                .headers
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_slice()))
                .collect();
            self.produce(
                held.id,
                held.partition,
                held.key.as_deref(),
                &held.payload,
                &headers,
            )?;
        }
        Ok(())
    }

    /// Hands record `id` to the producer (waiting while its queue is full).
    fn produce(
        &mut self,
        id: u64,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), KafkaError> {
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
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
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
        self.release()?;
        self.producer.poll(Duration::ZERO);
        self.collect()
    }

    /// Waits until everything sent is acknowledged, or `timeout`, or (with `stall`) until no
    /// acknowledgement came for that long.
    pub fn flush(&mut self, timeout: Duration, stall: Option<Duration>) -> Result<(), KafkaError> {
        self.release()?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::kafka::broker::EmbeddedBroker;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;

    /// The payloads of `topic`'s partition 0: once `count` arrived, what came until nothing
    /// more did for 500 ms (or 10 s passed).
    fn read(brokers: &str, topic: &str, count: usize) -> Vec<Vec<u8>> {
        let consumer: BaseConsumer = KafkaConfig::new(brokers)
            .client()
            .set("group.id", "held-reader")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let (mut got, started, mut last) = (Vec::new(), Instant::now(), Instant::now());
        while started.elapsed() < Duration::from_secs(10)
            && (got.len() < count || last.elapsed() < Duration::from_millis(500))
        {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                got.push(message.payload().unwrap_or_default().to_vec());
                last = Instant::now();
            }
        }
        got
    }

    #[test]
    fn records_sent_while_a_commit_is_in_flight_wait_for_it_in_order_and_go_with_an_abort() {
        let broker = EmbeddedBroker::start(1).unwrap();
        broker.create_topic("held", 1).unwrap();
        let brokers = broker.bootstrap_servers();
        let mut sink = KafkaSink::open(&KafkaConfig::new(brokers.as_str()), "held").unwrap();
        let gate = |sink: &KafkaSink| sink.producer.clone();
        sink.send_to(Some(0), None, b"1", &[]).unwrap();
        gate(&sink).context().hold();
        sink.send_to(Some(0), Some(b"k"), b"2", &[("h", b"v")])
            .unwrap();
        sink.send_to(Some(0), None, b"3", &[]).unwrap();
        sink.poll().unwrap();
        // Held: numbered and counted as sent, not handed to the producer.
        assert_eq!(sink.counts().0, 3);
        assert_eq!(sink.held.len(), 2);
        assert_eq!(sink.acks().mark(), 3);
        gate(&sink).context().release();
        sink.send_to(Some(0), None, b"4", &[]).unwrap();
        sink.flush(Duration::from_secs(10), None).unwrap();
        assert_eq!(sink.counts(), (4, 4));
        assert_eq!(sink.acks().frontier(), 4);
        // Held for a transaction that is then aborted: dropped, never sent.
        gate(&sink).context().hold();
        sink.send_to(Some(0), None, b"aborted", &[]).unwrap();
        gate(&sink).context().aborted();
        gate(&sink).context().release();
        sink.send_to(Some(0), None, b"5", &[]).unwrap();
        sink.flush(Duration::from_secs(10), None).unwrap();
        assert_eq!(sink.acks().frontier(), 6);
        let expected: Vec<Vec<u8>> = ["1", "2", "3", "4", "5"]
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        assert_eq!(read(&brokers, "held", 5), expected);
    }
}
