//! A line-oriented sink (standard output or a file): one record's payload per line.

use super::SinkError;
use crate::delivery::Acks;
use std::io::Write;
use std::path::Path;

/// Why a line sink refuses a payload with a line break in it (it never escapes one).
pub const LINE_BREAK: &str = "the payload contains a line break (\\n or \\r), which would split it into two records on a line sink (one record per line); it is refused, not escaped";

/// Whether `payload` would not stay one line.
pub(super) fn has_line_break(payload: &[u8]) -> bool {
    payload.iter().any(|&b| b == b'\n' || b == b'\r')
}

/// A line-oriented sink: each record's payload on one line; safe once flushed. A payload
/// with a line break is refused (see [`Sink::refusal`]), so no record is split or forged.
pub struct LineSink {
    pub(super) target: String,
    pub(super) out: Box<dyn Write + Send>,
    pub(super) written: u64,
    pub(super) acks: Acks,
}

impl LineSink {
    pub fn stdout() -> Self {
        LineSink {
            target: "standard output".into(),
            // Results on a terminal erase the progress ticker's line first.
            out: Box::new(crate::console::Erasing(std::io::stdout())),
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
    pub(super) fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|err| self.io(err))?;
        self.acks.ack_all();
        Ok(())
    }

    pub(super) fn io(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            target: self.target.clone(),
            error: source,
        }
    }
}
