//! Where results go: a Kafka topic, standard output or a file. Every sink numbers the
//! records it takes and knows which are safe (acknowledged, or flushed).

pub mod kafka;
pub mod lines;

use lines::has_line_break;
pub use lines::{LINE_BREAK, LineSink};

use crate::delivery::Acks;
use crate::kafka::{KafkaConfig, KafkaError};
use crate::sink::kafka::KafkaSink;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("{target}: {LINE_BREAK}")]
    LineBreak { target: String },
    #[error("cannot write {target}: {error}")]
    Io {
        target: String,
        error: std::io::Error,
    },
}

/// One of the sinks.
pub enum Sink {
    Kafka(KafkaSink),
    Lines(LineSink),
}

impl Sink {
    pub fn kafka(config: &KafkaConfig, topic: &str) -> Result<Self, SinkError> {
        Ok(Sink::Kafka(KafkaSink::open(config, topic)?))
    }

    /// Why this sink cannot take `payload` as one record, if it cannot: a line sink refuses
    /// a line break. The caller dead-letters such a record with this reason.
    pub fn refusal(&self, payload: &[u8]) -> Option<String> {
        match self {
            Sink::Lines(lines) if has_line_break(payload) => {
                Some(format!("{}: {LINE_BREAK}", lines.target))
            }
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Sink::Kafka(k) => format!("topic `{}`", k.topic()),
            Sink::Lines(l) => l.target.clone(),
        }
    }

    pub fn send(
        &mut self,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), SinkError> {
        match self {
            Sink::Kafka(kafka) => Ok(kafka.send(key, payload, headers)?),
            Sink::Lines(lines) => {
                if has_line_break(payload) {
                    return Err(SinkError::LineBreak {
                        target: lines.target.clone(),
                    });
                }
                let result = lines
                    .out
                    .write_all(payload)
                    .and_then(|()| lines.out.write_all(b"\n"));
                result.map_err(|err| lines.io(err))?;
                lines.written += 1;
                lines.acks.send();
                Ok(())
            }
        }
    }

    /// Sends to one partition of a Kafka topic (a job's internal topic). A line sink has no
    /// partitions: it writes the payload as any other.
    pub fn send_to(&mut self, partition: i32, payload: &[u8]) -> Result<(), SinkError> {
        match self {
            Sink::Kafka(kafka) => Ok(kafka.send_to(Some(partition), None, payload, &[])?),
            Sink::Lines(_) => self.send(None, payload, &[]),
        }
    }

    /// Serves acknowledgements (Kafka) or flushes (lines).
    pub fn poll(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Kafka(kafka) => Ok(kafka.poll()?),
            Sink::Lines(lines) => lines.flush(),
        }
    }

    /// Waits until everything sent is safe, or `timeout`, or (with `stall`) until nothing
    /// more became safe for that long.
    pub fn flush(&mut self, timeout: Duration, stall: Option<Duration>) -> Result<(), SinkError> {
        match self {
            Sink::Kafka(kafka) => Ok(kafka.flush(timeout, stall)?),
            Sink::Lines(lines) => lines.flush(),
        }
    }

    /// Which records are safe: acknowledged by the broker, or flushed.
    pub fn acks(&self) -> &Acks {
        match self {
            Sink::Kafka(kafka) => kafka.acks(),
            Sink::Lines(lines) => &lines.acks,
        }
    }

    /// Records written (and, for Kafka, acknowledged).
    pub fn counts(&self) -> (u64, u64) {
        match self {
            Sink::Kafka(kafka) => kafka.counts(),
            Sink::Lines(lines) => (lines.written, lines.written),
        }
    }
}

/// A sink the tasks of a job share: every task sends through it, and its numbering and
/// acknowledgements are the job's (a snapshot waits for what any task sent before it).
#[derive(Clone)]
pub struct SharedSink(Arc<Mutex<Sink>>);

impl SharedSink {
    pub fn new(sink: Sink) -> Self {
        SharedSink(Arc::new(Mutex::new(sink)))
    }

    /// The sink, for one batch of sends. A task that panicked while holding it left no
    /// half-written record behind (sends are whole), so the lock is taken over.
    pub fn lock(&self) -> MutexGuard<'_, Sink> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_sink_refuses_a_payload_with_a_line_break_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = Sink::Lines(LineSink::file(&path).unwrap());
        let target = path.display().to_string();
        for forged in [&b"{\"a\":1}\n{\"a\":2}"[..], b"x\ry", b"\n"] {
            assert_eq!(
                sink.refusal(forged),
                Some(format!("{target}: {LINE_BREAK}"))
            );
            let err = sink.send(None, forged, &[]).unwrap_err();
            assert_eq!(err.to_string(), format!("{target}: {LINE_BREAK}"));
        }
        let escaped = br#"{"a":"one\ntwo"}"#;
        assert_eq!(sink.refusal(escaped), None);
        sink.send(None, escaped, &[]).unwrap();
        sink.flush(Duration::from_secs(1), None).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, "{\"a\":\"one\\ntwo\"}\n");
        assert_eq!(sink.counts(), (1, 1));
    }
}
