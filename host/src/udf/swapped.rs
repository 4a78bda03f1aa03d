//! Modules swapped into running jobs, remembered by the runtime that runs them: a job that
//! restarts in the same process (after a Kafka failure) starts with what was swapped in,
//! not with its spec's files, so a restart never silently undoes a swap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The latest module swapped into each (job, stage). Cheap to clone; clones share it.
#[derive(Clone, Default)]
pub struct Swapped(Arc<Mutex<HashMap<(String, String), SwappedModule>>>);

/// A module a swap installed, as the swap received it.
#[derive(Clone)]
pub struct SwappedModule {
    /// Where it came from (a path, or `control API`).
    pub origin: String,
    pub bytes: Arc<[u8]>,
}

impl Swapped {
    /// Remembers that `bytes` now run as `stage` of `job`.
    pub fn record(&self, job: &str, stage: &str, origin: &str, bytes: &[u8]) {
        let module = SwappedModule {
            origin: origin.to_owned(),
            bytes: bytes.into(),
        };
        self.lock()
            .insert((job.to_owned(), stage.to_owned()), module);
    }

    /// The module last swapped into `stage` of `job`, if any.
    pub fn get(&self, job: &str, stage: &str) -> Option<SwappedModule> {
        self.lock()
            .get(&(job.to_owned(), stage.to_owned()))
            .cloned()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), SwappedModule>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_swap_of_a_stage_wins_and_jobs_are_apart() {
        let swapped = Swapped::default();
        assert!(swapped.get("job", "parse").is_none());
        swapped.record("job", "parse", "a.wasm", b"first");
        swapped
            .clone()
            .record("job", "parse", "control API", b"second");
        swapped.record("other", "parse", "b.wasm", b"theirs");
        let got = swapped
            .get("job", "parse")
            .map(|m| (m.origin, m.bytes.to_vec()));
        assert_eq!(got, Some(("control API".to_owned(), b"second".to_vec())));
        assert!(swapped.get("job", "format").is_none());
    }
}
