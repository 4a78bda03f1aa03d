//! Watches each stage's module file (inotify, through `notify`) and asks for a swap when it
//! changes. The watch is on the file's directory, not the file: editors and `cargo build`
//! replace a file by renaming a new one over it, which a watch on the old file would miss.
//! A burst of events (a build writes in several steps) is debounced: the file is read once
//! it has had no event for [`QUIET`], and only if it is a complete WebAssembly file (its
//! sections fill it exactly), so a half-written build is never picked up.

use crate::status::JobStatus;
use crate::swap::SwapRequest;
use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// How long a file must go without an event before it is read.
pub const QUIET: Duration = Duration::from_millis(150);

/// How often the watcher looks at the stop flag when nothing happens.
const STOP_CHECK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path}: it names no file")]
    NoFileName { path: PathBuf },
    #[error("cannot watch the directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot watch the directory {dir}: {source}")]
    Notify { dir: PathBuf, source: notify::Error },
    #[error("cannot start the file watcher: {0}")]
    Start(#[from] notify::Error),
    #[error("cannot start the file watcher thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// A watched file: the stages whose module it is, under the path the spec gave.
type Stages = Vec<(String, PathBuf)>;

/// The path events name a file by: its directory, resolved, joined with its name.
fn event_path(path: &Path) -> Result<PathBuf, WatchError> {
    let name = path.file_name().ok_or_else(|| WatchError::NoFileName {
        path: path.to_owned(),
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = dir.canonicalize().map_err(|source| WatchError::Dir {
        dir: dir.to_owned(),
        source,
    })?;
    Ok(dir.join(name))
}

/// Whether an event may have changed a file's content. Opening and reading it (the watcher
/// itself does) may not.
fn changes(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Starts the watcher thread for the stages `status` lists with a file.
pub fn spawn(
    status: Arc<JobStatus>,
    requests: Sender<SwapRequest>,
    stop: Arc<AtomicBool>,
) -> Result<(), WatchError> {
    let watched = status.watched();
    if watched.is_empty() {
        return Ok(());
    }
    let mut files: BTreeMap<PathBuf, Stages> = BTreeMap::new();
    for (stage, path) in watched {
        tracing::info!(stage, path = %path.display(), "watching the module file");
        files
            .entry(event_path(&path)?)
            .or_default()
            .push((stage, path));
    }
    let (events_in, events) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = events_in.send(event);
    })?;
    let dirs: BTreeSet<&Path> = files.keys().filter_map(|f| f.parent()).collect();
    for dir in dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Notify {
                dir: dir.to_owned(),
                source,
            })?;
    }
    std::thread::Builder::new()
        .name("rivulet-watch".into())
        .spawn(move || {
            // Dropping the watcher ends the watch: it lives as long as this thread.
            let _watcher = watcher;
            // Per changed file, when it is read unless another event comes first.
            let mut due: BTreeMap<PathBuf, Instant> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                let wait = due
                    .values()
                    .min()
                    .map_or(STOP_CHECK, |at| at.saturating_duration_since(now))
                    .min(STOP_CHECK);
                match events.recv_timeout(wait) {
                    Ok(Ok(event)) if changes(&event.kind) => {
                        for path in event.paths {
                            if files.contains_key(&path) {
                                due.insert(path, Instant::now() + QUIET);
                            }
                        }
                    }
                    Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
                    Ok(Err(err)) => tracing::warn!("file watcher: {err}"),
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                let now = Instant::now();
                let settled: Vec<PathBuf> = due
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(path, _)| path.clone())
                    .collect();
                for file in settled {
                    due.remove(&file);
                    for (stage, path) in files.get(&file).into_iter().flatten() {
                        if !offer(&status, &requests, stage, path) {
                            return;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

/// Reads a settled module file and asks for a swap if it is complete and new. False: the
/// job no longer takes swaps.
fn offer(status: &JobStatus, requests: &Sender<SwapRequest>, stage: &str, path: &Path) -> bool {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        // Replaced by a rename that has not landed yet: its event will come.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return true,
        Err(err) => {
            tracing::warn!(stage, path = %path.display(), "cannot read the changed module: {err}");
            return true;
        }
    };
    if let Layout::Incomplete = layout(&bytes) {
        tracing::info!(stage, path = %path.display(), size = bytes.len(), "the module file is incomplete; waiting for the rest");
        return true;
    }
    let hash = crate::udf::cache::content_hash(&bytes);
    if status.stage(stage).and_then(|s| s.hash) == Some(hash) {
        return true;
    }
    tracing::info!(stage, path = %path.display(), "module file changed; preparing a swap");
    let request = SwapRequest {
        stage: stage.to_owned(),
        bytes,
        origin: path.display().to_string(),
        reply: None,
        fleet: None,
        shadow: None,
    };
    requests.send(request).is_ok()
}

/// What a file's bytes look like as WebAssembly.
#[derive(Debug, PartialEq, Eq)]
enum Layout {
    /// Its sections fill it exactly.
    Complete,
    /// The start of a WebAssembly file (or nothing yet): more is being written.
    Incomplete,
    /// Something else: the swap refuses it with the reason.
    NotWasm,
}

const MAGIC: &[u8; 4] = b"\0asm";

/// Core modules and components alike are an 8-byte preamble (magic, version, layer) and
/// then sections, each an id byte and its size as unsigned LEB128.
fn layout(bytes: &[u8]) -> Layout {
    if bytes.len() < 8 {
        return match MAGIC.starts_with(&bytes[..bytes.len().min(4)]) {
            true => Layout::Incomplete,
            false => Layout::NotWasm,
        };
    }
    if &bytes[..4] != MAGIC {
        return Layout::NotWasm;
    }
    let mut at = 8;
    while at < bytes.len() {
        // The id byte, then the size.
        let Some((size, len)) = leb128(&bytes[at + 1..]) else {
            return Layout::Incomplete;
        };
        at = match (at + 1 + len).checked_add(size) {
            Some(end) if end <= bytes.len() => end,
            _ => return Layout::Incomplete,
        };
    }
    Layout::Complete
}

/// An unsigned LEB128 number of at most 5 bytes (a u32) and its length; None if cut short.
fn leb128(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().take(5).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A component preamble and two sections: 3 bytes of id 1, 130 bytes (a two-byte
    /// LEB128 size) of id 0.
    fn component() -> Vec<u8> {
        let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
        bytes.extend([1, 3, 0xa, 0xb, 0xc]);
        bytes.extend([0, 0x82, 0x01]);
        bytes.extend([7u8; 130]);
        bytes
    }

    #[test]
    fn a_file_is_complete_only_when_its_sections_fill_it_exactly() {
        let whole = component();
        assert_eq!(layout(&whole), Layout::Complete);
        for cut in [0, 3, 8 + 1, 8 + 4, 8 + 5 + 2, whole.len() - 1] {
            assert_eq!(layout(&whole[..cut]), Layout::Incomplete, "cut at {cut}");
        }
        assert_eq!(layout(b"\0asm\x0d\x00\x01\x00"), Layout::Complete);
        assert_eq!(layout(b"half-written garbage"), Layout::NotWasm);
        assert_eq!(layout(b"#!"), Layout::NotWasm);
    }

    #[test]
    fn opening_or_reading_a_file_is_not_a_change_but_closing_it_after_writing_is() {
        assert!(!changes(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(changes(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes(&EventKind::Modify(notify::event::ModifyKind::Any)));
    }

    #[test]
    fn a_file_is_named_by_its_resolved_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a");
        std::fs::create_dir(&nested).unwrap();
        let roundabout = nested.join("..").join("a").join("m.wasm");
        assert_eq!(
            event_path(&roundabout).unwrap(),
            dir.path().canonicalize().unwrap().join("a/m.wasm")
        );
        assert!(matches!(
            event_path(&dir.path().join("missing/m.wasm")),
            Err(WatchError::Dir { .. })
        ));
    }
}
