//! The job's internal topic over Kafka: `<job>-partials`, created with the partition count
//! the job asks for (or the source topic's), and the partition counts both stages plan with.

use crate::kafka::{KafkaConfig, KafkaError, LogContext, wait_for_kafka};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The internal topic of job `job`.
pub fn partials_topic(job: &str) -> String {
    format!("{job}-partials")
}

/// The control topic of job `job`'s fleet (see [`crate::fleet`]).
pub fn control_topic(job: &str) -> String {
    format!("{job}-control")
}

/// The partitions of `topic` (waiting for Kafka and the topic as a source does).
pub fn partitions(
    config: &KafkaConfig,
    topic: &str,
    connect_timeout: Option<Duration>,
    stop: &AtomicBool,
) -> Result<Vec<i32>, KafkaError> {
    let probe: BaseConsumer<LogContext> = config
        .client()
        .set("group.id", "rivulet-metadata")
        .create_with_context(LogContext)
        .map_err(KafkaError::client("creating a metadata client"))?;
    wait_for_kafka(probe.client(), config, topic, true, connect_timeout, stop)
}

/// The partitions of `topic` if it exists (asked without creating it).
fn existing(config: &KafkaConfig, topic: &str) -> Option<Vec<i32>> {
    let probe: BaseConsumer<LogContext> = config
        .client()
        .set("group.id", "rivulet-metadata")
        .set("allow.auto.create.topics", "false")
        .create_with_context(LogContext)
        .ok()?;
    let metadata = probe.fetch_metadata(Some(topic), TIMEOUT).ok()?;
    let found = metadata.topics().iter().find(|t| t.name() == topic)?;
    if found.error().is_some() || found.partitions().is_empty() {
        return None;
    }
    Some(found.partitions().iter().map(|p| p.id()).collect())
}

/// Creates `topic` with `partitions` partitions unless it exists, then returns its
/// partitions as the broker has them (an existing topic keeps its own count; the caller
/// plans with what is there).
pub fn ensure(
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
    connect_timeout: Option<Duration>,
    stop: &AtomicBool,
) -> Result<Vec<i32>, KafkaError> {
    if let Some(found) = existing(config, topic) {
        return Ok(found);
    }
    let probe: BaseConsumer<LogContext> = config
        .client()
        .set("group.id", "rivulet-metadata")
        .create_with_context(LogContext)
        .map_err(KafkaError::client("creating a metadata client"))?;
    // librdkafka's mock cluster (the embedded broker) leaves admin requests unanswered; it
    // creates a topic a client asks about, with its default partition count.
    let embedded = probe
        .client()
        .fetch_cluster_id(TIMEOUT)
        .is_some_and(|id| id.starts_with("mockCluster"));
    if embedded {
        let creator: BaseConsumer<LogContext> = config
            .client()
            .set("group.id", "rivulet-metadata")
            .set("allow.auto.create.topics", "true")
            .create_with_context(LogContext)
            .map_err(KafkaError::client("creating a metadata client"))?;
        let _ = creator.fetch_metadata(Some(topic), TIMEOUT);
        return self::partitions(config, topic, connect_timeout, stop);
    }
    let admin: AdminClient<LogContext> = config
        .client()
        .create_with_context(LogContext)
        .map_err(KafkaError::client("creating an admin client"))?;
    let new = NewTopic::new(topic, partitions.max(1), TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|err| KafkaError::Restore {
            reason: format!("cannot start the admin client's runtime: {err}"),
        })?;
    let created = runtime
        .block_on(async { tokio::time::timeout(TIMEOUT, admin.create_topics([&new], &options)).await })
        .map_err(|_| KafkaError::Restore {
            reason: format!(
                "creating topic `{topic}` timed out after {TIMEOUT:?}; create it with {partitions} partitions and start the job again"
            ),
        })?
        .map_err(KafkaError::client(format!("creating topic `{topic}`")))?;
    for result in created {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, partitions, "created the job's partials topic")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(KafkaError::Restore {
                    reason: format!("cannot create topic `{topic}`: {code}"),
                });
            }
        }
    }
    let found = self::partitions(config, topic, connect_timeout, stop)?;
    if i32::try_from(found.len()).ok() != Some(partitions) {
        tracing::info!(
            topic,
            partitions = found.len(),
            asked = partitions,
            "the partials topic exists with another partition count; using it as it is"
        );
    }
    Ok(found)
}
