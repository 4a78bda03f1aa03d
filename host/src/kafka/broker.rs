//! The embedded broker: librdkafka's in-process mock cluster on loopback. Dev and demo
//! only: no persistence, no security, and large backlogs may stall it.

use super::KafkaError;
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

    /// Creates a topic (the mock cluster does not serve the admin API).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaError> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .map_err(KafkaError::client(format!("creating topic `{topic}`")))
    }
}
