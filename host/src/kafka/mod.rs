//! Kafka plumbing: client configuration, the source, the sink, and the embedded dev broker.

pub mod admin;
pub mod broker;
pub mod compacted;
pub mod forward;
pub mod state_topic;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

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
    /// The broker answers, but has no such topic (nor created it on asking).
    #[error(
        "topic `{topic}` does not exist on Kafka at {brokers} (the broker answered {attempts} times without it): create it, or check the spec's topic name"
    )]
    NoTopic {
        brokers: String,
        topic: String,
        attempts: u32,
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

/// The partitions of `topic`, once the broker answers (`need_topic`: and has the topic; a
/// producer's broker may create it on the first write, then the list may be empty);
/// retries with backoff (0.5 s doubling to 10 s), logging each failure, until `timeout` or
/// `stop`.
pub fn wait_for_kafka<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    config: &KafkaConfig,
    topic: &str,
    need_topic: bool,
    timeout: Option<Duration>,
    stop: &AtomicBool,
) -> Result<Vec<i32>, KafkaError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut attempts = 0;
    let left = || timeout.map(|t| t.saturating_sub(started.elapsed()));
    loop {
        attempts += 1;
        let ask = left().map_or(Duration::from_secs(2), |l| {
            l.clamp(Duration::from_millis(100), Duration::from_secs(2))
        });
        // Whether the broker answered without the topic (not an outage).
        let mut missing = false;
        let reason = match client.fetch_metadata(Some(topic), ask) {
            Ok(metadata) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    return Ok(t.partitions().iter().map(|p| p.id()).collect());
                }
                _ if !need_topic => return Ok(Vec::new()),
                Some(t) => match t.error() {
                    Some(
                        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
                    ) => {
                        missing = true;
                        format!("topic `{topic}` does not exist")
                    }
                    Some(err) => format!("topic `{topic}`: {:?}", err),
                    None => format!("topic `{topic}` has no partitions"),
                },
                None => {
                    missing = true;
                    format!("topic `{topic}` does not exist")
                }
            },
            Err(err) => err.to_string(),
        };
        if stop.load(Ordering::Relaxed) {
            return Err(KafkaError::Interrupted);
        }
        // Give up at the timeout, not before: the last wait is cut to what is left.
        if left().is_some_and(|l| l.is_zero()) {
            if missing {
                return Err(KafkaError::NoTopic {
                    brokers: config.brokers.clone(),
                    topic: topic.to_owned(),
                    attempts,
                });
            }
            return Err(KafkaError::Unreachable {
                brokers: config.brokers.clone(),
                topic: topic.to_owned(),
                attempts,
                reason,
            });
        }
        let pause = left().map_or(backoff, |l| backoff.min(l));
        match missing {
            true => {
                tracing::warn!(brokers = %config.brokers, "{reason} (the broker answers); asking again in {:.1}s", pause.as_secs_f64())
            }
            false => {
                tracing::warn!(brokers = %config.brokers, "Kafka not ready ({reason}); retrying in {:.1}s", pause.as_secs_f64())
            }
        }
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return Err(KafkaError::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
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
                if let Some(line) = REPEATS.admit(&format!("{fac}: {log_message}"), Instant::now())
                {
                    tracing::error!(target: "rivulet::kafka", "{line}")
                }
            }
            RDKafkaLogLevel::Warning => {
                if let Some(line) = REPEATS.admit(&format!("{fac}: {log_message}"), Instant::now())
                {
                    tracing::warn!(target: "rivulet::kafka", "{line}")
                }
            }
            _ => tracing::debug!(target: "rivulet::kafka", "{fac}: {log_message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Some(line) = REPEATS.admit(&format!("{error}: {reason}"), Instant::now()) {
            tracing::warn!(target: "rivulet::kafka", "{line}");
        }
    }
}

/// `line`, unless a line of its kind went out within the last 30 s (then `None`, and it is
/// counted into the next one that goes out): for what a broker outage repeats.
pub fn collapsed(line: &str) -> Option<String> {
    REPEATS.admit(line, Instant::now())
}

/// Every client of the process (source, sinks, state topic) reports a broker outage, every
/// few hundred milliseconds: one WARN per kind of message per [`Repeats::QUIET`], with the
/// count of what was held back.
static REPEATS: Repeats = Repeats::new();

/// Collapses repeated log lines: a line is let through when it was not seen within the
/// last [`Repeats::QUIET`], with how many like it were held back since it last went out.
/// Lines that differ only in their numbers (timings, counts) are alike.
struct Repeats {
    seen: Mutex<BTreeMap<String, (Instant, u64)>>,
}

impl Repeats {
    const QUIET: Duration = Duration::from_secs(30);
    /// Kinds of lines remembered at most (then forgotten all at once).
    const KINDS: usize = 256;

    const fn new() -> Self {
        Repeats {
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// The line to log for `line` at `now`, or `None` to hold it back.
    fn admit(&self, line: &str, now: Instant) -> Option<String> {
        // Numbers, and librdkafka's own count of what it held back, make no new kind.
        let kind: String = line
            .replace(" identical error(s) suppressed", "")
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect::<String>()
            .replace(", )", ")");
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= Self::KINDS && !seen.contains_key(&kind) {
            seen.clear();
        }
        match seen.get_mut(&kind) {
            Some((last, held)) if now.saturating_duration_since(*last) < Self::QUIET => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let line = match std::mem::take(held) {
                    0 => line.to_owned(),
                    n => format!(
                        "{line} ({n} more like it in the last {} s)",
                        now.saturating_duration_since(*last).as_secs()
                    ),
                };
                *last = now;
                Some(line)
            }
            None => {
                seen.insert(kind, (now, 0));
                Some(line.to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_line_goes_out_once_per_quiet_period_with_the_count_held_back() {
        let repeats = Repeats::new();
        let t0 = Instant::now();
        let down = "Global error: AllBrokersDown: 1/1 brokers are down";
        assert_eq!(repeats.admit(down, t0).as_deref(), Some(down));
        // The same line, and one that differs only in a number: held back.
        assert_eq!(repeats.admit(down, t0 + Duration::from_millis(300)), None);
        let connect = "FAIL: Connect to ipv4#127.0.0.1:1 failed (after 0ms in state CONNECT)";
        assert!(repeats.admit(connect, t0).is_some());
        let suppressed = "FAIL: Connect to ipv4#127.0.0.1:1 failed (after 0ms in state CONNECT, 1 identical error(s) suppressed)";
        assert_eq!(repeats.admit(suppressed, t0), None);
        assert_eq!(
            repeats.admit(
                "Global error: AllBrokersDown: 2/2 brokers are down",
                t0 + Duration::from_secs(1)
            ),
            None
        );
        // Another kind of line goes out at once.
        assert!(
            repeats
                .admit("Delivery failed", t0 + Duration::from_secs(2))
                .is_some()
        );
        let later = repeats.admit(down, t0 + Duration::from_secs(31)).unwrap();
        assert_eq!(later, format!("{down} (2 more like it in the last 31 s)"));
        assert!(
            repeats
                .admit(suppressed, t0 + Duration::from_secs(31))
                .is_some()
        );
        assert_eq!(repeats.admit(down, t0 + Duration::from_secs(32)), None);
    }
}
