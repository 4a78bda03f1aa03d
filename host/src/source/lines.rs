//! Lines of a file or of standard input as records: one record per line, offsets are line
//! numbers, partition 0. A file can be cut into splits, one per task.

use crate::source::kafka::now_millis;
use rivulet_rows::RawBatch;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One task's share of a file: bytes `start..end`, beginning at a line start whose line
/// number (the record's offset) is `first_line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSplit {
    pub path: PathBuf,
    pub start: u64,
    pub end: u64,
    pub first_line: i64,
}

/// Cuts a file into at most `n` shares of about equal size, on line boundaries, each
/// knowing the number of its first line (so offsets are the same as one reader's).
pub fn split_file(path: &Path, n: usize) -> Result<Vec<FileSplit>, std::io::Error> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut starts = vec![0u64];
    for i in 1..n.max(1) as u64 {
        let target = (size / n as u64)
            .saturating_mul(i)
            .max(starts[starts.len() - 1]);
        // The next line starts after the first line break at or after `target - 1`.
        file.seek(SeekFrom::Start(target.saturating_sub(1)))?;
        let mut reader = std::io::BufReader::with_capacity(64 << 10, &mut file);
        let mut skipped = Vec::new();
        let read = reader.read_until(b'\n', &mut skipped)? as u64;
        let start = target.saturating_sub(1) + read;
        if start < size && start > starts[starts.len() - 1] {
            starts.push(start);
        }
    }
    // Line numbers: the line breaks before each start.
    file.seek(SeekFrom::Start(0))?;
    let mut first_lines = Vec::with_capacity(starts.len());
    let mut buf = vec![0u8; 1 << 20];
    let (mut at, mut lines) = (0u64, 0i64);
    for &start in &starts {
        while at < start {
            let want = usize::try_from(start - at)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let got = file.read(&mut buf[..want])?;
            if got == 0 {
                break;
            }
            lines += memchr::memchr_iter(b'\n', &buf[..got]).count() as i64;
            at += got as u64;
        }
        first_lines.push(lines);
    }
    let ends = starts.iter().skip(1).copied().chain([size]);
    Ok(starts
        .iter()
        .zip(ends)
        .zip(first_lines)
        .map(|((&start, end), first_line)| FileSplit {
            path: path.to_owned(),
            start,
            end,
            first_line,
        })
        .collect())
}

/// Lines of `split` by number (sorted), read again: for records whose fate was decided
/// after they went by (see [`crate::window::exchange`]).
pub fn reread(split: &FileSplit, wanted: &[i64]) -> Result<Vec<(i64, Vec<u8>)>, std::io::Error> {
    let mut source = LineSource::split(split)?;
    let mut found = Vec::with_capacity(wanted.len());
    let mut line = Vec::new();
    for &number in wanted {
        while source.next <= number {
            if !source.read_line(&mut line)? {
                return Ok(found);
            }
            if source.next - 1 == number {
                found.push((number, line.clone()));
            }
        }
    }
    Ok(found)
}

/// Lines of a file or of standard input.
pub struct LineSource {
    pub(super) name: String,
    reader: Box<dyn BufRead + Send>,
    pub(super) next: i64,
    pub(super) ended: bool,
}

impl LineSource {
    pub fn file(path: &std::path::Path) -> Result<Self, std::io::Error> {
        let file = std::fs::File::open(path)?;
        Ok(LineSource {
            name: path.display().to_string(),
            reader: Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
            next: 0,
            ended: false,
        })
    }

    /// One share of a file (see [`split_file`]).
    pub fn split(split: &FileSplit) -> Result<Self, std::io::Error> {
        let mut file = std::fs::File::open(&split.path)?;
        file.seek(SeekFrom::Start(split.start))?;
        let share = file.take(split.end.saturating_sub(split.start));
        Ok(LineSource {
            name: split.path.display().to_string(),
            reader: Box::new(std::io::BufReader::with_capacity(1 << 20, share)),
            next: split.first_line,
            ended: false,
        })
    }

    /// Reads the next line into `line` (without its line break); false at the end.
    fn read_line(&mut self, line: &mut Vec<u8>) -> Result<bool, std::io::Error> {
        line.clear();
        if self.reader.read_until(b'\n', line)? == 0 {
            self.ended = true;
            return Ok(false);
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        self.next += 1;
        Ok(true)
    }

    pub fn stdin() -> Self {
        LineSource {
            name: "stdin".into(),
            reader: Box::new(std::io::BufReader::new(std::io::stdin())),
            next: 0,
            ended: false,
        }
    }

    pub(super) fn poll(&mut self, max: usize) -> Result<RawBatch, std::io::Error> {
        let mut batch = RawBatch::new();
        let mut line = Vec::new();
        let now = now_millis();
        while (batch.len as usize) < max && !self.ended {
            if !self.read_line(&mut line)? {
                break;
            }
            batch.push(None, &line, now, 0, self.next - 1, &[]);
        }
        Ok(batch)
    }
}
