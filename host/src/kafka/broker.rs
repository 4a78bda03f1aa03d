//! The embedded broker: librdkafka's in-process mock cluster on loopback. Dev and demo
//! only: no persistence, no security, and large backlogs may stall it.

use super::KafkaError;
use super::forward::{ForwardError, Forwarder};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// A running mock cluster; dropped, it stops.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    /// Starts `brokers` mock brokers.
    pub fn start(brokers: i32) -> Result<Self, KafkaError> {
        let cluster = MockCluster::new(brokers)
            .map_err(KafkaError::client("starting the embedded broker"))?;
        Ok(EmbeddedBroker { cluster })
    }

    /// The address clients connect to.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Relays connections on `listen` (`host:port`) to the broker, so clients can bootstrap
    /// there (the workshop's address, 127.0.0.1:9094); the forwarder stops when dropped.
    pub fn listen(&self, listen: &str) -> Result<Forwarder, ForwardError> {
        let bootstrap = self.bootstrap_servers();
        let first = bootstrap.split(',').next().unwrap_or_default();
        Forwarder::start(listen, first)
    }

    /// Fails the next requests of kind `api`, one with each of `errors` in turn (tests: a
    /// broker that refuses a commit).
    pub fn fail_next(
        &self,
        api: rdkafka::types::RDKafkaApiKey,
        errors: &[rdkafka::types::RDKafkaRespErr],
    ) {
        self.cluster.request_errors(api, errors);
    }

    /// Delays every answer of the broker by `delay` (tests: a slow broker, whose commits
    /// are in flight while the job goes on).
    pub fn round_trip(&self, delay: std::time::Duration) -> Result<(), KafkaError> {
        self.cluster
            .broker_round_trip_time(1, delay)
            .map_err(KafkaError::client("slowing the embedded broker"))
    }

    /// Creates a topic (the mock cluster does not serve the admin API).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .map_err(KafkaError::client(format!("creating topic `{topic}`")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::time::{Duration, Instant};

    #[test]
    fn a_client_bootstrapping_at_the_forwarder_produces_and_consumes() {
        let broker = EmbeddedBroker::start(1).unwrap();
        broker.create_topic("forwarded", 1).unwrap();
        let forwarder = broker.listen("127.0.0.1:0").unwrap();
        let bootstrap = forwarder.address().to_string();
        assert_ne!(bootstrap, broker.bootstrap_servers());

        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        for i in 0..3 {
            let payload = format!("record-{i}");
            producer
                .send(BaseRecord::<(), _>::to("forwarded").payload(&payload))
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "forwarded-test")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let mut partitions = rdkafka::TopicPartitionList::new();
        partitions
            .add_partition_offset("forwarded", 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&partitions).unwrap();
        let mut got = Vec::new();
        let started = Instant::now();
        while got.len() < 3 && started.elapsed() < Duration::from_secs(60) {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.unwrap();
                got.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
            }
        }
        assert_eq!(got, ["record-0", "record-1", "record-2"]);
    }
}
