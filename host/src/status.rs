//! What a running job knows about itself, shared with the control API and the swapper:
//! each stage's module (hash, state version, load time, swaps) and recent sample input.

use crate::counters::{JobCounters, TaskCounters};
use crate::error_report::ErrorWarnings;
use crate::graph::{Edge, JobGraph, Node};
use crate::udf::{Kind, UdfModule};
use rivulet_rows::{Batch, RawBatch, WindowAcc};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How a module sent over the control API is named (followed by its file name, if given).
pub const UPLOADED: &str = "uploaded";

/// Records a sample keeps: enough to catch a module that traps on real input.
pub const SAMPLE_RECORDS: usize = 16;

/// Swaps and rejections a stage's history keeps.
pub const SWAP_HISTORY: usize = 10;

/// One swap of a stage's module, or one refused.
#[derive(Debug, Clone, Serialize)]
pub struct SwapEvent {
    pub at: String,
    /// Where the candidate came from (a file, or `uploaded module`).
    pub origin: String,
    /// The candidate's hash (None: it was not a module).
    pub hash: Option<String>,
    /// Swapped in (with the record flow's pause), or why it was refused.
    pub swapped: bool,
    pub pause_us: Option<u64>,
    pub rejection: Option<String>,
}

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
    /// How long each swap paused the record flow ([`crate::counters::BATCH_LATENCY_US`]
    /// buckets).
    pub swap_pauses: crate::counters::Histogram,
    pub last_rejection: Option<String>,
    /// Shapes of output the stage never produced before, put out after a module was
    /// swapped in (see [`crate::shape`]), and the last one's difference from the shape
    /// before it.
    pub shape_changes: u64,
    pub last_shape_change: Option<String>,
    /// The shapes its output has had (every task reports them; each new one counts once).
    #[serde(skip)]
    pub shapes: crate::shape::ShapeHistory,
    /// Its latest swaps and refused swaps, oldest first (at most [`SWAP_HISTORY`]).
    pub history: VecDeque<SwapEvent>,
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
            swap_pauses: crate::counters::Histogram::default(),
            last_rejection: None,
            shape_changes: 0,
            last_shape_change: None,
            shapes: crate::shape::ShapeHistory::default(),
            history: VecDeque::new(),
            watch: None,
        }
    }

    /// Adds a swap (or a refused one) to the stage's history.
    pub fn remember(&mut self, event: SwapEvent) {
        if self.history.len() == SWAP_HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(event);
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

pub fn now_iso() -> String {
    rivulet_rows::time::iso8601(crate::source::kafka::now_millis())
}

/// Recent input of a stage, to try a candidate module on before swapping it in.
#[derive(Debug, Clone)]
pub enum Sample {
    Raw(RawBatch),
    Rows(Batch),
}

/// Accumulators of open windows a swap may take over: at most this many are tried.
pub const ACC_SAMPLE: usize = 64;

/// Live accumulators the tasks offered for one request of a swap.
#[derive(Debug, Default)]
struct AccSample {
    /// The request being answered, and the last one made.
    request: u64,
    last: u64,
    /// The tasks that answered it (each counts once, however often it offers).
    answered: std::collections::BTreeSet<usize>,
    windows: Vec<WindowAcc>,
}

/// The shared state of one running job.
#[derive(Debug, Default)]
pub struct JobStatus {
    pub job: String,
    pub records: AtomicU64,
    stages: Mutex<BTreeMap<String, StageInfo>>,
    /// Per stage, its latest sample and how many were taken.
    samples: Mutex<BTreeMap<String, (u64, Sample)>>,
    /// Whether stages keep samples of their input: until every component stage has one,
    /// and again while a swap is being prepared (see [`JobStatus::fresh_sample`]). The
    /// record path pays one atomic load per batch otherwise.
    sampling: AtomicBool,
    /// Each task's counters, as it last published them.
    counters: Mutex<Vec<TaskCounters>>,
    /// The request for live accumulators the tasks should answer (0: none; see
    /// [`JobStatus::live_accumulators`]). The record path pays one atomic load per batch.
    acc_request: AtomicU64,
    acc_sample: Mutex<AccSample>,
    /// The rate-limited WARNs of per-record errors, shared by the tasks.
    pub warnings: ErrorWarnings,
    /// The job's operator graph.
    graph: Mutex<Option<JobGraph>>,
    /// The reference tables its `enrich` stages read.
    tables: Mutex<Vec<std::sync::Arc<crate::table::Table>>>,
    /// Candidates running beside live modules (`rivulet swap --shadow`).
    pub shadows: std::sync::Arc<crate::shadow::ShadowBoard>,
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
    /// The counters, as the tasks last published them (every 250 ms).
    pub counters: JobCounters,
    /// The operator graph, each edge with what went along it.
    pub graph: Option<LiveGraph>,
    /// Its reference tables: size, last update, lookups.
    pub tables: Vec<crate::table::TableInfo>,
    /// Shadows of its stages, running or kept (see [`crate::shadow`]).
    pub shadows: Vec<crate::shadow::Report>,
}

/// The job graph with live counts.
#[derive(Debug, Serialize)]
pub struct LiveGraph {
    pub tasks: usize,
    pub nodes: Vec<Node>,
    pub edges: Vec<LiveEdge>,
}

#[derive(Debug, Serialize)]
pub struct LiveEdge {
    #[serde(flatten)]
    pub edge: Edge,
    /// What went along it (None: no counter of its own).
    pub count: Option<u64>,
}

impl LiveGraph {
    pub fn of(graph: &JobGraph, counters: &JobCounters, records: u64) -> Self {
        LiveGraph {
            tasks: graph.tasks,
            nodes: graph.nodes.clone(),
            edges: graph
                .edges
                .iter()
                .map(|edge| LiveEdge {
                    count: edge.flow.as_ref().map(|f| f.count(counters, records)),
                    edge: edge.clone(),
                })
                .collect(),
        }
    }
}

impl JobStatus {
    pub fn new(job: &str) -> Self {
        JobStatus {
            job: job.to_owned(),
            sampling: AtomicBool::new(true),
            ..JobStatus::default()
        }
    }

    pub fn set_tables(&self, tables: Vec<std::sync::Arc<crate::table::Table>>) {
        *lock(&self.tables) = tables;
    }

    pub fn set_graph(&self, graph: JobGraph) {
        *lock(&self.graph) = Some(graph);
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

    /// Whether stages should keep samples of their input now.
    pub fn sampling(&self) -> bool {
        self.sampling.load(Ordering::Relaxed)
    }

    /// Keeps the first few records of a stage's latest input (while sampling).
    pub fn sample_raw(&self, stage: &str, input: &RawBatch) {
        if self.sampling() {
            let take: Vec<u32> = (0..input.len.min(SAMPLE_RECORDS as u32)).collect();
            self.keep(stage, Sample::Raw(input.select(&take)));
        }
    }

    pub fn sample_rows(&self, stage: &str, input: &Batch) {
        if self.sampling() {
            let take: Vec<u32> = (0..input.len.min(SAMPLE_RECORDS as u32)).collect();
            self.keep(stage, Sample::Rows(input.select(&take)));
        }
    }

    fn keep(&self, stage: &str, sample: Sample) {
        let mut samples = lock(&self.samples);
        let taken = samples.get(stage).map_or(0, |(n, _)| *n) + 1;
        samples.insert(stage.to_owned(), (taken, sample));
        // Every component stage has one: stop until a swap asks for fresh ones.
        let complete = lock(&self.stages)
            .values()
            .filter(|info| info.hash.is_some())
            .all(|info| samples.contains_key(&info.name));
        if complete {
            self.sampling.store(false, Ordering::Relaxed);
        }
    }

    /// The stage's latest sample.
    pub fn sample(&self, stage: &str) -> Option<Sample> {
        lock(&self.samples)
            .get(stage)
            .map(|(_, sample)| sample.clone())
    }

    /// A sample of the stage's input taken from now on, waiting up to `wait` for the next
    /// batch to reach it; if none comes (an idle job), the latest one.
    pub fn fresh_sample(&self, stage: &str, wait: std::time::Duration) -> Option<Sample> {
        let taken = |samples: &BTreeMap<String, (u64, Sample)>| samples.get(stage).map(|(n, _)| *n);
        let before = taken(&lock(&self.samples));
        self.sampling.store(true, Ordering::Relaxed);
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline && taken(&lock(&self.samples)) == before {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.sample(stage)
    }

    /// The request for live accumulators `task` should answer now (0: none, or answered).
    pub fn accumulators_wanted(&self, task: usize) -> u64 {
        let request = self.acc_request.load(Ordering::Relaxed);
        if request == 0 || lock(&self.acc_sample).answered.contains(&task) {
            0
        } else {
            request
        }
    }

    /// `task`'s answer to `request`: some of its open windows' accumulators (of the
    /// aggregate module in service). A task's second answer is ignored.
    pub fn offer_accumulators(&self, request: u64, task: usize, windows: Vec<WindowAcc>) {
        let mut sample = lock(&self.acc_sample);
        if sample.request != request || !sample.answered.insert(task) {
            return;
        }
        let room = ACC_SAMPLE.saturating_sub(sample.windows.len());
        sample.windows.extend(windows.into_iter().take(room));
    }

    /// Up to [`ACC_SAMPLE`] accumulators of open windows, offered by the job's tasks
    /// between two of their batches: waits until all `tasks` answered, or `wait` (a task
    /// that has stopped never answers).
    pub fn live_accumulators(&self, tasks: usize, wait: std::time::Duration) -> Vec<WindowAcc> {
        let request = {
            let mut sample = lock(&self.acc_sample);
            sample.last += 1;
            let request = sample.last;
            *sample = AccSample {
                request,
                last: request,
                ..AccSample::default()
            };
            request
        };
        self.acc_request.store(request, Ordering::Relaxed);
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline && lock(&self.acc_sample).answered.len() < tasks
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.acc_request.store(0, Ordering::Relaxed);
        let mut sample = lock(&self.acc_sample);
        sample.request = 0;
        if sample.answered.len() < tasks {
            tracing::warn!(
                answered = sample.answered.len(),
                tasks,
                wait_ms = wait.as_millis(),
                "only some of the job's tasks offered their open windows' accumulators in time: the swap is checked on theirs alone"
            );
        }
        std::mem::take(&mut sample.windows)
    }

    /// `stage` produced output of `shape` (fingerprint `print`): if the stage never produced
    /// it before, it is remembered and, when `announce`, counted; returns its difference from
    /// the shape before it then (once for the job, whichever task reports it first).
    pub fn learn_shape(
        &self,
        stage: &str,
        print: u64,
        shape: &crate::shape::Shape,
        announce: bool,
    ) -> Option<String> {
        let mut difference = None;
        self.update_stage(stage, |info| {
            difference = info.shapes.learn(print, shape, announce);
            if let Some(difference) = &difference {
                info.shape_changes += 1;
                info.last_shape_change = Some(difference.clone());
            }
        });
        difference
    }

    pub fn count(&self, records: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Task `task` publishes its counters.
    pub fn publish(&self, task: usize, counters: TaskCounters) {
        let mut all = lock(&self.counters);
        if all.len() <= task {
            all.resize_with(task + 1, TaskCounters::default);
        }
        all[task] = counters;
    }

    /// The job's counters, as the tasks last published them.
    pub fn counters(&self) -> JobCounters {
        JobCounters::sum(lock(&self.counters).iter())
    }

    /// The job's graph, each stage's node naming the module it runs now.
    pub fn graph(&self) -> Option<JobGraph> {
        let mut graph = lock(&self.graph).clone()?;
        let stages = lock(&self.stages);
        graph.relabel(|stage| stages.get(stage).and_then(|info| info.origin.clone()));
        Some(graph)
    }

    pub fn snapshot(&self) -> Snapshot {
        let records = self.records.load(Ordering::Relaxed);
        let counters = self.counters();
        let graph = self
            .graph()
            .map(|graph| LiveGraph::of(&graph, &counters, records));
        Snapshot {
            job: self.job.clone(),
            records,
            stages: lock(&self.stages).values().cloned().collect(),
            counters,
            graph,
            tables: lock(&self.tables).iter().map(|t| t.info()).collect(),
            shadows: self.shadows.reports(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn raw(first: i64) -> RawBatch {
        let mut batch = RawBatch::new();
        batch.push(None, b"x", 0, 0, first, &[]);
        batch
    }

    fn first_offset(sample: Option<Sample>) -> i64 {
        match sample {
            Some(Sample::Raw(raw)) => raw.offsets[0],
            other => panic!("no raw sample: {other:?}"),
        }
    }

    #[test]
    fn samples_are_taken_until_every_component_stage_has_one_then_only_for_a_swap() {
        let status = JobStatus::new("job");
        let mut parse = StageInfo::builtin("parse", Kind::Parse);
        parse.hash = Some("abc".into());
        status.set_stage(parse);
        status.sample_raw("parse", &raw(1));
        assert!(!status.sampling(), "every component stage has a sample");
        status.sample_raw("parse", &raw(2));
        assert_eq!(first_offset(status.sample("parse")), 1, "no copy per batch");
        // A swap asks for a fresh one: the next batch is kept.
        let status = std::sync::Arc::new(status);
        let feeder = {
            let status = status.clone();
            std::thread::spawn(move || {
                while !status.sampling() {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                status.sample_raw("parse", &raw(3));
            })
        };
        let fresh = status.fresh_sample("parse", std::time::Duration::from_secs(5));
        feeder.join().unwrap();
        assert_eq!(first_offset(fresh), 3);
        assert!(!status.sampling());
        // An idle job: the latest sample, after the wait.
        let latest = status.fresh_sample("parse", std::time::Duration::from_millis(20));
        assert_eq!(first_offset(latest), 3);
    }

    fn window(start: i64) -> WindowAcc {
        WindowAcc {
            key: rivulet_rows::Scalar::Text("k".into()),
            window_start: start,
            window_end: start + 10,
            acc: vec![1],
        }
    }

    #[test]
    fn live_accumulators_gather_the_tasks_answers_up_to_the_cap() {
        let status = std::sync::Arc::new(JobStatus::new("job"));
        assert_eq!(status.accumulators_wanted(0), 0);
        let tasks: Vec<_> = (0..2usize)
            .map(|task| {
                let status = status.clone();
                std::thread::spawn(move || {
                    let request = loop {
                        match status.accumulators_wanted(task) {
                            0 => std::thread::sleep(std::time::Duration::from_millis(1)),
                            request => break request,
                        }
                    };
                    let first = 1000 * i64::try_from(task).unwrap();
                    let windows = (0..40).map(|i| window(first + i)).collect();
                    status.offer_accumulators(request, task, windows);
                })
            })
            .collect();
        let live = status.live_accumulators(2, std::time::Duration::from_secs(30));
        tasks.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(live.len(), ACC_SAMPLE, "two tasks' 80, capped");
        assert_eq!(status.accumulators_wanted(0), 0, "the request is over");
        status.offer_accumulators(1, 0, vec![window(5)]);
        assert_eq!(
            status.live_accumulators(0, std::time::Duration::ZERO),
            Vec::new(),
            "a late answer to an old request is not kept"
        );
    }

    #[test]
    fn a_task_that_answers_twice_counts_once_and_the_slower_tasks_windows_are_waited_for() {
        let status = std::sync::Arc::new(JobStatus::new("job"));
        let wanted = |status: &JobStatus, task| loop {
            match status.accumulators_wanted(task) {
                0 => std::thread::sleep(std::time::Duration::from_millis(1)),
                request => break request,
            }
        };
        // Task 1 holds no windows (a merge task) and answers as often as it loops.
        let quick = {
            let status = status.clone();
            std::thread::spawn(move || {
                let request = wanted(&status, 1);
                for _ in 0..5 {
                    status.offer_accumulators(request, 1, Vec::new());
                }
                assert_eq!(status.accumulators_wanted(1), 0, "task 1 answered");
            })
        };
        // Task 0 holds an open window and answers later (a long poll).
        let slow = {
            let status = status.clone();
            std::thread::spawn(move || {
                let request = wanted(&status, 0);
                std::thread::sleep(std::time::Duration::from_millis(200));
                status.offer_accumulators(request, 0, vec![window(7)]);
            })
        };
        let live = status.live_accumulators(2, std::time::Duration::from_secs(30));
        quick.join().unwrap();
        slow.join().unwrap();
        assert_eq!(live, vec![window(7)]);
    }

    #[test]
    fn a_new_shape_is_counted_once_for_the_job() {
        use crate::shape::Shape;
        let shape = |json: serde_json::Value| {
            let mut builder = rivulet_rows::BatchBuilder::new();
            builder.push(json.as_object().unwrap()).unwrap();
            Shape::of(&builder.finish())
        };
        let (a, b) = (
            shape(serde_json::json!({"x": 1})),
            shape(serde_json::json!({"x": "1"})),
        );
        let status = JobStatus::new("job");
        status.set_stage(StageInfo::builtin("map", Kind::Map));
        assert_eq!(status.learn_shape("map", a.fingerprint(), &a, false), None);
        assert_eq!(
            status
                .learn_shape("map", b.fingerprint(), &b, true)
                .as_deref(),
            Some("retyped x integer → text")
        );
        assert_eq!(
            status.learn_shape("map", b.fingerprint(), &b, true),
            None,
            "another task"
        );
        let map = status.stage("map").unwrap();
        assert_eq!(map.shape_changes, 1);
        assert_eq!(
            map.last_shape_change.as_deref(),
            Some("retyped x integer → text")
        );
    }
}
