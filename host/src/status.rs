//! What a running job knows about itself, shared with the control API and the swapper:
//! each stage's module (hash, state version, load time, swaps) and recent sample input.

use crate::udf::{Kind, UdfModule};
use rivulet_rows::{Batch, RawBatch};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Records a sample keeps: enough to catch a module that traps on real input.
pub const SAMPLE_RECORDS: usize = 16;

/// One stage's module, as reported by logs and `rivulet status`.
#[derive(Debug, Clone, Serialize)]
pub struct StageInfo {
    pub name: String,
    pub kind: Kind,
    /// Where the module came from (a file, or `control API`); `builtin` stages have none.
    pub origin: Option<String>,
    pub hash: Option<String>,
    pub size: usize,
    pub state_version: Option<u32>,
    pub load_ms: f64,
    pub loaded_at: String,
    pub swaps: u64,
    pub rejected: u64,
    pub last_swap_pause_us: Option<u64>,
    pub last_rejection: Option<String>,
    /// The file the job watches for this stage, if any.
    #[serde(skip)]
    pub watch: Option<PathBuf>,
}

impl StageInfo {
    pub fn builtin(name: &str, kind: Kind) -> Self {
        StageInfo {
            name: name.to_owned(),
            kind,
            origin: None,
            hash: None,
            size: 0,
            state_version: None,
            load_ms: 0.0,
            loaded_at: now_iso(),
            swaps: 0,
            rejected: 0,
            last_swap_pause_us: None,
            last_rejection: None,
            watch: None,
        }
    }

    pub fn module(name: &str, module: &UdfModule, state_version: Option<u32>) -> Self {
        StageInfo {
            origin: Some(module.path.display().to_string()),
            hash: Some(module.hash.clone()),
            size: module.size,
            state_version,
            load_ms: module.load_time.as_secs_f64() * 1e3,
            watch: Some(module.path.clone()),
            ..StageInfo::builtin(name, module.kind)
        }
    }
}

fn now_iso() -> String {
    rivulet_sdk::time::iso8601(crate::source::kafka::now_millis())
}

/// Recent input of a stage, to try a candidate module on before swapping it in.
#[derive(Debug, Clone)]
pub enum Sample {
    Raw(RawBatch),
    Rows(Batch),
}

/// The shared state of one running job.
#[derive(Debug, Default)]
pub struct JobStatus {
    pub job: String,
    pub records: AtomicU64,
    stages: Mutex<BTreeMap<String, StageInfo>>,
    samples: Mutex<BTreeMap<String, Sample>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `/status` as JSON.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub job: String,
    pub records: u64,
    pub stages: Vec<StageInfo>,
}

impl JobStatus {
    pub fn new(job: &str) -> Self {
        JobStatus {
            job: job.to_owned(),
            ..JobStatus::default()
        }
    }

    pub fn set_stage(&self, info: StageInfo) {
        lock(&self.stages).insert(info.name.clone(), info);
    }

    pub fn stage(&self, name: &str) -> Option<StageInfo> {
        lock(&self.stages).get(name).cloned()
    }

    pub fn update_stage(&self, name: &str, f: impl FnOnce(&mut StageInfo)) {
        if let Some(info) = lock(&self.stages).get_mut(name) {
            f(info);
        }
    }

    pub fn stage_names(&self) -> Vec<String> {
        lock(&self.stages).keys().cloned().collect()
    }

    pub fn watched(&self) -> Vec<(String, PathBuf)> {
        lock(&self.stages)
            .values()
            .filter_map(|s| s.watch.clone().map(|w| (s.name.clone(), w)))
            .collect()
    }

    /// Keeps the first few records of a stage's latest input.
    pub fn sample_raw(&self, stage: &str, input: &RawBatch) {
        let take: Vec<u32> = (0..input.len.min(SAMPLE_RECORDS as u32)).collect();
        lock(&self.samples).insert(stage.to_owned(), Sample::Raw(input.select(&take)));
    }

    pub fn sample_rows(&self, stage: &str, input: &Batch) {
        let take: Vec<u32> = (0..input.len.min(SAMPLE_RECORDS as u32)).collect();
        lock(&self.samples).insert(stage.to_owned(), Sample::Rows(input.select(&take)));
    }

    pub fn sample(&self, stage: &str) -> Option<Sample> {
        lock(&self.samples).get(stage).cloned()
    }

    pub fn count(&self, records: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            job: self.job.clone(),
            records: self.records.load(Ordering::Relaxed),
            stages: lock(&self.stages).values().cloned().collect(),
        }
    }
}
