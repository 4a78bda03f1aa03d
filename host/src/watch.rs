//! Watches each stage's module file and asks for a swap when it changes (after the file has
//! stopped changing, so a half-written build is never picked up).

use crate::status::JobStatus;
use crate::swap::SwapRequest;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, SystemTime};

/// How often files are checked.
pub const POLL: Duration = Duration::from_millis(200);

type Stamp = (u64, Option<SystemTime>);

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// Starts the watcher thread for the stages `status` lists with a file.
pub fn spawn(
    status: Arc<JobStatus>,
    requests: Sender<SwapRequest>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let watched = status.watched();
    if watched.is_empty() {
        return Ok(());
    }
    for (stage, path) in &watched {
        tracing::info!(stage, path = %path.display(), "watching the module file");
    }
    std::thread::Builder::new().name("rivulet-watch".into()).spawn(move || {
        let mut seen: BTreeMap<String, Option<Stamp>> = watched.iter().map(|(s, p)| (s.clone(), stamp(p))).collect();
        let mut settling: BTreeMap<String, Stamp> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(POLL);
            for (stage, path) in &watched {
                let now = stamp(path);
                if now == seen.get(stage).copied().flatten() {
                    settling.remove(stage);
                    continue;
                }
                let Some(now) = now else { continue };
                // Changed: wait one more poll for the file to settle.
                if settling.get(stage) != Some(&now) {
                    settling.insert(stage.clone(), now);
                    continue;
                }
                settling.remove(stage);
                seen.insert(stage.clone(), Some(now));
                let bytes = match std::fs::read(path) {
                    Ok(bytes) => bytes,
                    Err(err) => {
                        tracing::warn!(stage, path = %path.display(), "cannot read the changed module: {err}");
                        continue;
                    }
                };
                let hash = crate::udf::cache::content_hash(&bytes);
                if status.stage(stage).and_then(|s| s.hash) == Some(hash) {
                    continue;
                }
                tracing::info!(stage, path = %path.display(), "module file changed; preparing a swap");
                let request = SwapRequest {
                    stage: stage.clone(),
                    bytes,
                    origin: path.display().to_string(),
                    reply: None,
                };
                if requests.send(request).is_err() {
                    return;
                }
            }
        }
    })?;
    Ok(())
}
