//! Kafka plumbing: client configuration, the source, the sink, and the embedded dev broker.

pub mod broker;
pub mod state_topic;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use std::collections::BTreeMap;

/// Where Kafka is and how every client is configured.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Extra librdkafka properties, applied last.
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            properties: BTreeMap::new(),
        }
    }

    /// A client config with the brokers, quiet logging routed to `tracing`, and the extras.
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.connection.setup.timeout.ms", "5000")
            .set("reconnect.backoff.max.ms", "2000")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// A Kafka operation that failed, with what rivulet was doing.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error(
        "cannot reach Kafka at {brokers} for topic `{topic}` after {attempts} attempts: {reason}"
    )]
    Unreachable {
        brokers: String,
        topic: String,
        attempts: u32,
        reason: String,
    },
    #[error("Kafka {what}: {error}")]
    Client {
        what: String,
        error: rdkafka::error::KafkaError,
    },
    #[error("delivery to topic `{topic}` failed: {reason}")]
    Delivery { topic: String, reason: String },
    #[error("interrupted")]
    Interrupted,
    #[error("{reason}")]
    Restore { reason: String },
}

impl KafkaError {
    pub(crate) fn client(
        what: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let what = what.into();
        move |error| KafkaError::Client { what, error }
    }
}

/// Routes librdkafka's own logs and errors to `tracing`.
#[derive(Debug, Default, Clone)]
pub struct LogContext;

impl rdkafka::consumer::ConsumerContext for LogContext {}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "rivulet::kafka", "{fac}: {log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "rivulet::kafka", "{fac}: {log_message}")
            }
            _ => tracing::debug!(target: "rivulet::kafka", "{fac}: {log_message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(target: "rivulet::kafka", "{error}: {reason}");
    }
}
