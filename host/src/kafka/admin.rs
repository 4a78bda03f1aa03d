//! Deleting what a job left on Kafka (its internal topics, its consumer groups' committed
//! offsets), for `rivulet reset`.

use super::{KafkaConfig, KafkaError, LogContext};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to one topic or group.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// There was none.
    Absent,
    Failed(String),
}

/// Whether the broker is librdkafka's mock cluster (`rivulet broker`), which answers no
/// admin requests.
pub fn embedded(config: &KafkaConfig) -> Result<bool, KafkaError> {
    let probe: BaseConsumer<LogContext> = config
        .client()
        .set("group.id", "rivulet-metadata")
        .create_with_context(LogContext)
        .map_err(KafkaError::client("creating a metadata client"))?;
    Ok(probe
        .client()
        .fetch_cluster_id(TIMEOUT)
        .is_some_and(|id| id.starts_with("mockCluster")))
}

fn admin(
    config: &KafkaConfig,
) -> Result<(AdminClient<LogContext>, tokio::runtime::Runtime), KafkaError> {
    let admin = config
        .client()
        .create_with_context(LogContext)
        .map_err(KafkaError::client("creating an admin client"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|err| KafkaError::Restore {
            reason: format!("cannot start the admin client's runtime: {err}"),
        })?;
    Ok((admin, runtime))
}

/// The topics among `names` that exist.
fn existing(config: &KafkaConfig, names: &[String]) -> Result<Vec<String>, KafkaError> {
    let probe: BaseConsumer<LogContext> = config
        .client()
        .set("group.id", "rivulet-metadata")
        .set("allow.auto.create.topics", "false")
        .create_with_context(LogContext)
        .map_err(KafkaError::client("creating a metadata client"))?;
    let metadata = probe
        .fetch_metadata(None, TIMEOUT)
        .map_err(KafkaError::client("reading the broker's topics"))?;
    Ok(names
        .iter()
        .filter(|name| {
            metadata
                .topics()
                .iter()
                .any(|t| t.name() == name.as_str() && t.error().is_none())
        })
        .cloned()
        .collect())
}

/// Deletes the topics of `names` that exist.
pub fn delete_topics(
    config: &KafkaConfig,
    names: &[String],
) -> Result<Vec<(String, Deleted)>, KafkaError> {
    let present = existing(config, names)?;
    let mut outcome: Vec<(String, Deleted)> = names
        .iter()
        .filter(|n| !present.contains(n))
        .map(|n| (n.clone(), Deleted::Absent))
        .collect();
    if present.is_empty() {
        return Ok(outcome);
    }
    let (admin, runtime) = admin(config)?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let refs: Vec<&str> = present.iter().map(String::as_str).collect();
    let results = runtime
        .block_on(async {
            tokio::time::timeout(TIMEOUT, admin.delete_topics(&refs, &options)).await
        })
        .map_err(|_| KafkaError::Restore {
            reason: format!("deleting topics timed out after {TIMEOUT:?}"),
        })?
        .map_err(KafkaError::client("deleting topics"))?;
    for result in results {
        outcome.push(match result {
            Ok(name) => (name, Deleted::Deleted),
            Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => (name, Deleted::Absent),
            Err((name, code)) => (name, Deleted::Failed(code.to_string())),
        });
    }
    Ok(outcome)
}

/// Deletes consumer groups (with their committed offsets).
pub fn delete_groups(
    config: &KafkaConfig,
    groups: &[String],
) -> Result<Vec<(String, Deleted)>, KafkaError> {
    let (admin, runtime) = admin(config)?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let results = runtime
        .block_on(async {
            tokio::time::timeout(TIMEOUT, admin.delete_groups(&refs, &options)).await
        })
        .map_err(|_| KafkaError::Restore {
            reason: format!("deleting consumer groups timed out after {TIMEOUT:?}"),
        })?
        .map_err(KafkaError::client("deleting consumer groups"))?;
    Ok(results
        .into_iter()
        .map(|result| match result {
            Ok(name) => (name, Deleted::Deleted),
            Err((name, RDKafkaErrorCode::GroupIdNotFound)) => (name, Deleted::Absent),
            Err((name, code)) => (name, Deleted::Failed(code.to_string())),
        })
        .collect())
}
