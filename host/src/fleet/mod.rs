//! A job's fleet: the processes running one job over Kafka (`window.exchange = "kafka"`),
//! coordinated through the compacted topic `<job>-control` ([`record`]) — no cluster
//! manager, only Kafka.
//!
//! - **Membership.** Every process writes a heartbeat (its spec's print, its modules, its
//!   partitions) every [`HEARTBEAT`]; one not heard from for [`ALIVE`] is gone; one that
//!   stops writes a tombstone.
//! - **One spec.** A process whose spec differs from a live process's in what the job's
//!   partials depend on is refused at start, with the difference.
//! - **Joining.** A process that joins a running fleet starts with the modules the fleet
//!   runs (their bytes are on the topic), not its spec's files.
//! - **Fleet-wide swap.** A swap asked of any process is checked there, then proposed to
//!   every live process; each runs the same checks on its own input and votes. Only when
//!   every vote is yes does the proposer decide "install", and every process installs at
//!   its next batch boundary; one no (or no answer within [`VOTE_WAIT`]) and nobody does.

mod gate;
pub mod record;
pub mod view;

use crate::kafka::compacted::Compacted;
use crate::kafka::{KafkaConfig, KafkaError};
use crate::spec::PipelineSpec;
use crate::status::JobStatus;
use crate::swap::{RemoteProposal, SwapRequest};
use crate::udf::Runtime;
use record::{Control, Heartbeat, SpecPrint};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use view::View;

/// How often a process says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A process not heard from this long is gone.
pub const ALIVE: Duration = Duration::from_secs(6);
/// How long a proposer waits for every vote.
pub const VOTE_WAIT: Duration = Duration::from_secs(10);
/// How long a voter waits for the decision.
const DECISION_WAIT: Duration = Duration::from_secs(20);
/// How long a proposer waits for the others' installs before it answers.
const INSTALL_WAIT: Duration = Duration::from_secs(10);

pub use crate::cluster::topics::control_topic;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(
        "job `{job}` already runs on other processes with another spec: process {member} has {difference}. A fleet runs one spec: stop its processes and start them all with the new spec, or run this one under another job name"
    )]
    Differs {
        job: String,
        member: String,
        difference: String,
    },
}

/// This process's place in its job's fleet.
pub struct Fleet {
    job: String,
    me: String,
    host: String,
    started_ms: i64,
    print: SpecPrint,
    topic: Compacted,
    view: View,
    /// Where this process's read of the topic at its start ended.
    joined_at: i64,
    proposals: AtomicU64,
    /// The swap this process proposed that is being installed: its id and voters.
    proposing: Mutex<Option<(String, Vec<String>, Instant)>>,
    /// The swap this process proposed that the fleet is deciding (its id), if any.
    deciding: Mutex<Option<String>>,
    /// Its control API, once it serves one.
    control: Mutex<Option<String>>,
}

/// A module the running fleet runs in a stage: a joining process starts with it.
pub struct Adopted {
    pub stage: String,
    pub hash: String,
    pub bytes: Vec<u8>,
}

/// What the fleet's records need of a spec (see [`SpecPrint`]).
pub fn print_of(spec: &PipelineSpec) -> SpecPrint {
    let (source_topic, group) = match &spec.source {
        crate::spec::SourceSpec::Kafka { topic, group, .. } => (
            topic.clone(),
            group
                .clone()
                .unwrap_or_else(|| format!("rivulet-{}", spec.name)),
        ),
        _ => (String::new(), String::new()),
    };
    let window = spec.window.as_ref();
    let aggregate = match &spec.aggregate {
        Some(a) if a.module.is_some() => "wasm".to_owned(),
        Some(a) => a
            .builtin
            .iter()
            .map(|b| format!("{b:?}"))
            .collect::<Vec<_>>()
            .join("+"),
        None => "none".to_owned(),
    };
    SpecPrint {
        source_topic,
        group,
        window_ms: window.map_or(0, |w| i64::try_from(w.size.as_millis()).unwrap_or(i64::MAX)),
        time: window.map_or_else(String::new, |w| format!("{:?}", w.time).to_lowercase()),
        key: window.and_then(|w| w.key.clone()),
        exchange: window.map_or_else(String::new, |w| format!("{:?}", w.exchange).to_lowercase()),
        aggregate,
        stages: spec.stages.iter().map(|s| s.name.clone()).collect(),
    }
}

fn host_name() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".to_owned()
    } else {
        clean
    }
}

fn now_ms() -> i64 {
    crate::source::kafka::now_millis()
}

impl From<FleetError> for crate::error::PipelineError {
    fn from(err: FleetError) -> Self {
        match err {
            FleetError::Kafka(err) => crate::source::SourceError::from(err).into(),
            other => crate::error::PipelineError::Config(other.to_string()),
        }
    }
}

/// The component stages of a spec with their files: parse and map stages, `format`,
/// `aggregate`.
fn component_files(spec: &PipelineSpec) -> Vec<(String, std::path::PathBuf)> {
    let mut files: Vec<_> = spec
        .stages
        .iter()
        .filter_map(|s| s.module.clone().map(|m| (s.name.clone(), m)))
        .collect();
    if let Some(format) = &spec.format {
        files.push(("format".to_owned(), format.module.clone()));
    }
    if let Some(path) = spec.aggregate.as_ref().and_then(|a| a.module.clone()) {
        files.push((crate::aggregate::dispatch::AGGREGATE.to_owned(), path));
    }
    files
}

/// What this process runs in each component stage: the module last swapped into it, else
/// the spec's file.
pub fn running_modules(spec: &PipelineSpec, runtime: &Runtime) -> Vec<(String, Vec<u8>)> {
    component_files(spec)
        .into_iter()
        .filter_map(
            |(stage, path)| match runtime.swapped().get(&spec.name, &stage) {
                Some(swapped) => Some((stage, swapped.bytes.to_vec())),
                None => std::fs::read(&path).ok().map(|bytes| (stage, bytes)),
            },
        )
        .collect()
}

/// A process of a fleet as its control topic tells (see [`members`]).
#[derive(Debug, serde::Serialize)]
pub struct Member {
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
    /// Milliseconds since it was last heard from.
    pub silent_ms: i64,
    pub alive: bool,
}

/// The processes of job `job`'s fleet, from its control topic (read, not joined): those
/// that did not say they stopped, newest first.
pub fn members(kafka: &KafkaConfig, job: &str) -> Result<Vec<Member>, KafkaError> {
    let topic = Compacted::existing(kafka, &control_topic(job))?;
    let view = View::default();
    topic.read_to_end(|entry| {
        if entry.key.starts_with("member/")
            && let Ok(record) = Control::decode(&entry.key, entry.value.as_deref())
        {
            view.apply(record);
        }
    })?;
    let now = now_ms();
    let alive = i64::try_from(ALIVE.as_millis()).unwrap_or(i64::MAX);
    let mut members: Vec<Member> = view.with(|state| {
        state
            .members
            .values()
            .map(|heartbeat| Member {
                silent_ms: now.saturating_sub(heartbeat.at_ms),
                alive: now.saturating_sub(heartbeat.at_ms) <= alive,
                heartbeat: heartbeat.clone(),
            })
            .collect()
    });
    members.sort_by_key(|m| std::cmp::Reverse(m.heartbeat.started_ms));
    Ok(members)
}

/// Joins the fleet of `spec`'s job (see [`Fleet::join`]) and makes this process start
/// with the modules the fleet runs. Returns the fleet, and whether a module was adopted
/// (the caller loads its modules again).
pub fn start(
    spec: &PipelineSpec,
    kafka: &KafkaConfig,
    runtime: &Runtime,
) -> Result<(Arc<Fleet>, bool), FleetError> {
    let fleet = Fleet::join(spec, kafka)?;
    let running = running_modules(spec, runtime);
    let mut adopted_any = false;
    for adopted in fleet.adopted() {
        let ours = running
            .iter()
            .find(|(stage, _)| *stage == adopted.stage)
            .map(|(_, bytes)| crate::udf::cache::content_hash(bytes));
        if ours.as_deref() == Some(adopted.hash.as_str()) {
            continue;
        }
        let short = adopted.hash.get(..12).unwrap_or(&adopted.hash);
        tracing::info!(stage = %adopted.stage, hash = short, "starting with the module the running fleet has in this stage, not the spec's file");
        runtime.swapped().record(
            &spec.name,
            &adopted.stage,
            &format!("the fleet's module {short}"),
            &adopted.bytes,
        );
        adopted_any = true;
    }
    Ok((Arc::new(fleet), adopted_any))
}

impl Fleet {
    /// Joins job `spec.name`'s fleet: reads its control topic, refuses a spec that differs
    /// from a live process's, and says which modules the fleet runs (see [`Fleet::adopted`]).
    pub fn join(spec: &PipelineSpec, kafka: &KafkaConfig) -> Result<Self, FleetError> {
        let topic = Compacted::open(kafka, &control_topic(&spec.name), "control topic", 1)?;
        let view = View::default();
        let joined_at = topic.read_to_end(|entry| {
            match Control::decode(&entry.key, entry.value.as_deref()) {
                Ok(record) => view.apply(record),
                Err(err) => {
                    tracing::warn!(topic = %topic.name(), offset = entry.offset, "skipped: {err}")
                }
            }
        })?;
        let host = host_name();
        let started_ms = now_ms();
        let me = format!("{host}-{}-{}", std::process::id(), started_ms % 1_000_000);
        let print = print_of(spec);
        let now = now_ms();
        let differs = view.with(|state| {
            state.alive(now, ALIVE).into_iter().find_map(|member| {
                print
                    .differs(&member.spec)
                    .map(|difference| (member.id.clone(), difference))
            })
        });
        if let Some((member, difference)) = differs {
            return Err(FleetError::Differs {
                job: spec.name.clone(),
                member,
                difference,
            });
        }
        let live = view.with(|state| state.alive(now, ALIVE).len());
        tracing::info!(job = %spec.name, process = %me, others = live, topic = %topic.name(), "joined the job's fleet");
        Ok(Fleet {
            job: spec.name.clone(),
            me,
            host,
            started_ms,
            print,
            topic,
            view,
            joined_at,
            proposals: AtomicU64::new(0),
            proposing: Mutex::new(None),
            deciding: Mutex::new(None),
            control: Mutex::new(None),
        })
    }

    pub fn id(&self) -> &str {
        &self.me
    }

    /// Per stage, the module the live processes run (the most of them, if they differ),
    /// when its bytes are on the topic.
    pub fn adopted(&self) -> Vec<Adopted> {
        let now = now_ms();
        self.view.with(|state| {
            let mut votes: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
            for member in state.alive(now, ALIVE) {
                for (stage, hash) in &member.modules {
                    *votes.entry(stage).or_default().entry(hash).or_default() += 1;
                }
            }
            votes
                .into_iter()
                .filter_map(|(stage, hashes)| {
                    let (hash, _) = hashes.into_iter().max_by_key(|(_, n)| *n)?;
                    match state.modules.get(hash) {
                        Some(bytes) => Some(Adopted {
                            stage: stage.to_owned(),
                            hash: hash.to_owned(),
                            bytes: bytes.clone(),
                        }),
                        None => {
                            tracing::warn!(stage, hash, "the fleet runs a module whose bytes are not on the control topic; starting with the spec's file");
                            None
                        }
                    }
                })
                .collect()
        })
    }

    /// Puts `modules` (stage, bytes) on the topic unless they are there, so that processes
    /// joining later can start with them.
    pub fn publish(&self, modules: &[(String, Vec<u8>)]) -> Result<(), KafkaError> {
        for (stage, bytes) in modules {
            let hash = crate::udf::cache::content_hash(bytes);
            if self.view.with(|s| s.known.contains(&hash)) {
                continue;
            }
            self.write(&Control::Module(hash.clone(), bytes.clone()))?;
            tracing::debug!(stage, hash, "module put on the control topic");
            self.view.apply(Control::Module(hash, bytes.clone()));
        }
        // Joining is done: only modules of later proposals are needed again.
        self.view.update(|state| state.modules.clear());
        Ok(())
    }

    /// Serves its control API at `address` (in its heartbeats, for `rivulet status --job`).
    pub fn set_control(&self, address: Option<String>) {
        *self.control.lock().unwrap_or_else(PoisonError::into_inner) = address;
    }

    fn write(&self, record: &Control) -> Result<(), KafkaError> {
        let (key, value) = record.encode();
        self.topic.write(&[(&key, value.as_deref())])
    }

    fn heartbeat(&self, status: &JobStatus) -> Heartbeat {
        let modules = status
            .stage_names()
            .into_iter()
            .filter_map(|name| status.stage(&name).and_then(|s| s.hash).map(|h| (name, h)))
            .collect();
        let counters = status.counters();
        let partitions = counters
            .partitions
            .iter()
            .map(|(&p, stats)| (p, stats.lag))
            .collect();
        let merging = counters.merging.keys().copied().collect();
        Heartbeat {
            id: self.me.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            control: self
                .control
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            started_ms: self.started_ms,
            at_ms: now_ms(),
            spec: self.print.clone(),
            modules,
            partitions,
            merging,
            records: status.records(),
        }
    }

    /// Runs the fleet's side of this process on a thread until `stop`: heartbeats, and
    /// proposals of other processes handed to the swap worker (`requests`).
    pub fn run(
        self: &Arc<Self>,
        status: Arc<JobStatus>,
        requests: Option<Sender<SwapRequest>>,
        stop: Arc<AtomicBool>,
    ) -> Result<(), KafkaError> {
        let tail = self.topic.tail(self.joined_at)?;
        let fleet = self.clone();
        let spawned = std::thread::Builder::new()
            .name("rivulet-fleet".into())
            .spawn(move || {
                let now = now_ms();
                // Proposals still open when this process joined: it installs what is decided.
                let open: Vec<_> = fleet.view.with(|state| {
                    let alive: Vec<&str> = state.alive(now, ALIVE).iter().map(|m| m.id.as_str()).collect();
                    state
                        .open
                        .values()
                        .filter(|(p, _)| alive.contains(&p.proposer.as_str()))
                        .cloned()
                        .collect()
                });
                for (proposal, bytes) in open {
                    fleet.hand_over(&requests, proposal, bytes, false);
                }
                let mut last_beat: Option<Instant> = None;
                while !stop.load(Ordering::Relaxed) {
                    if last_beat.is_none_or(|at| at.elapsed() >= HEARTBEAT) {
                        let beat = fleet.heartbeat(&status);
                        if let Err(err) = fleet.write(&Control::Member(fleet.me.clone(), Some(beat))) {
                            tracing::warn!(job = %fleet.job, "cannot write this process's heartbeat: {err}");
                        }
                        last_beat = Some(Instant::now());
                    }
                    let Some(entry) = tail.next(Duration::from_millis(100)) else {
                        continue;
                    };
                    match Control::decode(&entry.key, entry.value.as_deref()) {
                        Ok(Control::Proposal(proposal, bytes)) => {
                            fleet.view.apply(Control::Proposal(proposal.clone(), Vec::new()));
                            if proposal.proposer != fleet.me {
                                let voter = proposal.voters.contains(&fleet.me);
                                match fleet.gives_way(&proposal.id) {
                                    Some(reason) if voter => {
                                        if let Err(err) = fleet.vote(&proposal.id, record::Verdict::no(reason)) {
                                            tracing::warn!("cannot vote no on the fleet's swap: {err}");
                                        }
                                    }
                                    // Not a voter: it installs what the fleet decides, and its
                                    // swap worker is free once its own proposal is decided.
                                    _ => fleet.hand_over(&requests, proposal, bytes, voter),
                                }
                            }
                        }
                        // Its bytes are needed only by processes that join later.
                        Ok(Control::Module(hash, _)) => {
                            fleet.view.apply(Control::Module(hash, Vec::new()));
                        }
                        Ok(record) => fleet.view.apply(record),
                        Err(err) => tracing::warn!(job = %fleet.job, offset = entry.offset, "control topic: {err}"),
                    }
                }
                if let Err(err) = fleet.write(&Control::Member(fleet.me.clone(), None)) {
                    tracing::debug!("cannot say this process left the fleet: {err}");
                }
            });
        spawned.map(|_| ()).map_err(|err| KafkaError::Restore {
            reason: format!("cannot start the fleet's thread: {err}"),
        })
    }

    /// Why another process's proposal `id` must give way to this process's own, if it
    /// must. Two processes proposing at once would each wait for the other's vote, which
    /// its swap worker, busy with its own proposal, can't give until that one is decided:
    /// the smaller proposal id goes first, and the other is refused at once.
    fn gives_way(&self, id: &str) -> Option<String> {
        let deciding = self.deciding.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = deciding.as_deref()?;
        (id > mine).then(|| {
            format!(
                "process {} is having the fleet decide its own swap (proposal {mine}) at this moment; the proposal with the smaller id goes first: ask again once it is decided",
                self.me
            )
        })
    }

    /// Hands another process's proposal to this process's swap worker.
    fn hand_over(
        &self,
        requests: &Option<Sender<SwapRequest>>,
        proposal: record::Proposal,
        bytes: Vec<u8>,
        voter: bool,
    ) {
        let Some(requests) = requests else {
            if voter {
                let _ = self.vote(&proposal.id, record::Verdict::no("this process takes no swaps (started with --control off and without --watch)"));
            }
            return;
        };
        tracing::info!(stage = %proposal.stage, hash = %proposal.hash.get(..12).unwrap_or(&proposal.hash), proposer = %proposal.proposer, "a swap proposed to the fleet: checking it here");
        let request = SwapRequest {
            stage: proposal.stage.clone(),
            bytes,
            origin: format!(
                "{} (fleet swap from {})",
                proposal.origin, proposal.proposer
            ),
            reply: None,
            fleet: Some(RemoteProposal {
                id: proposal.id.clone(),
                voter,
            }),
            shadow: None,
        };
        if requests.send(request).is_err() && voter {
            let _ = self.vote(
                &proposal.id,
                record::Verdict::no("this process is stopping"),
            );
        }
    }

    fn vote(&self, proposal: &str, verdict: record::Verdict) -> Result<(), KafkaError> {
        self.write(&Control::Vote {
            proposal: proposal.to_owned(),
            member: self.me.clone(),
            verdict,
        })
    }
}
