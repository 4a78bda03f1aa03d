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

    /// Creates a topic (the mock cluster does not serve the admin API).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .map_err(KafkaError::client(format!("creating topic `{topic}`")))
    }
}
