//! Where results go: a Kafka topic, standard output or a file. Every sink numbers the
//! records it takes and knows which are safe (acknowledged, or flushed).

use crate::delivery::Acks;
use crate::kafka::sink::KafkaSink;
use crate::kafka::{KafkaConfig, KafkaError};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("cannot write {target}: {error}")]
    Io {
        target: String,
        error: std::io::Error,
    },
}

/// A line-oriented sink: each record's payload on one line; safe once flushed.
pub struct LineSink {
    target: String,
    out: Box<dyn Write + Send>,
    written: u64,
    acks: Acks,
}

impl LineSink {
    pub fn stdout() -> Self {
        LineSink {
            target: "standard output".into(),
            out: Box::new(std::io::stdout()),
            written: 0,
            acks: Acks::default(),
        }
    }

    pub fn file(path: &Path) -> Result<Self, SinkError> {
        let target = path.display().to_string();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Io {
                target: target.clone(),
                error: source,
            })?;
        Ok(LineSink {
            target,
            out: Box::new(std::io::BufWriter::new(file)),
            written: 0,
            acks: Acks::default(),
        })
    }

    /// Flushes; what was written is then safe.
    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|err| self.io(err))?;
        self.acks.ack_all();
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            target: self.target.clone(),
            error: source,
        }
    }
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

    /// Serves acknowledgements (Kafka) or flushes (lines).
    pub fn poll(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Kafka(kafka) => Ok(kafka.poll()?),
            Sink::Lines(lines) => lines.flush(),
        }
    }

    pub fn flush(&mut self, timeout: Duration) -> Result<(), SinkError> {
        match self {
            Sink::Kafka(kafka) => Ok(kafka.flush(timeout)?),
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
