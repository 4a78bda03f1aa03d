//! Kafka helpers for the pipeline tests: a broker (embedded, or external from
//! `RIVULET_TEST_BROKERS`), producing to chosen partitions, reading a topic back.

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rivulet::kafka::broker::EmbeddedBroker;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Prints librdkafka's log lines (with `RIVULET_TEST_KAFKA_DEBUG`, its debug contexts).
struct Printed;

impl rdkafka::ClientContext for Printed {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        eprintln!("rdkafka {level:?} {fac}: {message}");
    }
}

impl rdkafka::producer::ProducerContext for Printed {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((err, _)) = result {
            eprintln!("rdkafka delivery failed: {err}");
        }
    }
}

/// A name no earlier test run used (external brokers keep the topics of earlier runs).
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A broker for one test.
pub enum TestBroker {
    Embedded(EmbeddedBroker),
    External(String),
}

impl TestBroker {
    pub fn embedded() -> Self {
        TestBroker::Embedded(EmbeddedBroker::start(1).expect("mock cluster"))
    }

    /// The broker `RIVULET_TEST_BROKERS` names (`just test-tansu`), else an embedded one.
    pub fn from_env() -> Self {
        match std::env::var("RIVULET_TEST_BROKERS") {
            Ok(address) => TestBroker::External(address),
            Err(_) => TestBroker::embedded(),
        }
    }

    pub fn address(&self) -> String {
        match self {
            TestBroker::Embedded(b) => b.bootstrap_servers(),
            TestBroker::External(a) => a.clone(),
        }
    }

    /// Creates a topic (external brokers: by producing to every partition is not possible,
    /// so they must auto-create or have it created by the script).
    pub fn topic(&self, name: &str, partitions: i32) {
        match self {
            TestBroker::Embedded(b) => b.create_topic(name, partitions).expect("create topic"),
            TestBroker::External(address) => create_external_topic(address, name, partitions),
        }
    }
}

fn create_external_topic(address: &str, name: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", address)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let future = admin.create_topics([&topic], &AdminOptions::new());
    let results = futures_lite_block_on(future).expect("create topics");
    for result in results {
        if let Err((topic, code)) = result {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "creating {topic}"
            );
        }
    }
}

/// Polls a future on this thread (the admin client resolves it from its own thread).
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop(_: *const ()) {}
    fn clone(_: *const ()) -> RawWaker {
        RawWaker::new(std::ptr::null(), &VTABLE)
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: the vtable's functions do nothing and never dereference the data pointer.
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Produces `(partition, key, payload)` records, in order, and waits for them.
pub fn produce(address: &str, topic: &str, records: &[(i32, String, Vec<u8>)]) {
    produce_with(address, topic, records, true)
}

/// [`produce`] without an idempotent producer (one request in flight keeps the order).
/// Tansu 0.6 with sqlite storage can panic checking an idempotent producer's sequence
/// after a restart; a feeder that is not under test stays out of that.
pub fn produce_plain(address: &str, topic: &str, records: &[(i32, String, Vec<u8>)]) {
    produce_with(address, topic, records, false)
}

fn produce_with(address: &str, topic: &str, records: &[(i32, String, Vec<u8>)], idempotent: bool) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", address)
        .set("enable.idempotence", idempotent.to_string())
        .set("acks", "all");
    if !idempotent {
        config.set("max.in.flight.requests.per.connection", "1");
    }
    if let Ok(debug) = std::env::var("RIVULET_TEST_KAFKA_DEBUG") {
        config.set("debug", debug);
    }
    let producer: BaseProducer<Printed> = config.create_with_context(Printed).expect("producer");
    for (partition, key, payload) in records {
        let mut record = BaseRecord::to(topic)
            .partition(*partition)
            .key(key.as_bytes())
            .payload(payload.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(20));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

/// A tombstone on partition 0 of `topic`: `key` without a value.
pub fn tombstone(address: &str, topic: &str, key: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .create()
        .expect("producer");
    producer
        .send(BaseRecord::<str, [u8]>::to(topic).partition(0).key(key))
        .map_err(|(err, _)| err)
        .expect("tombstone queued");
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Reads `topic` from the beginning until `done` says the records are complete (then one
/// more second, to catch anything extra), or until `timeout`.
pub fn read_until(
    address: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
    done: impl Fn(&[Read]) -> bool,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("group.id", format!("test-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let mut out = Vec::new();
    let mut done_at: Option<Instant> = None;
    while started.elapsed() < timeout
        && done_at.is_none_or(|at| at.elapsed() < Duration::from_secs(1))
    {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(err)) => panic!("reading {topic}: {err}"),
            None => {}
        }
        if done_at.is_none() && done(&out) {
            done_at = Some(Instant::now());
        }
    }
    out
}
