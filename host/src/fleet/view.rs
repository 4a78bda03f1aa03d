//! What one process knows of its fleet, from the control topic: who is alive, the votes,
//! decisions and installs of proposals, and which modules the topic holds. Waiters are
//! woken by every record applied.

use super::record::{Control, Heartbeat, Proposal, Verdict};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct View {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
pub struct State {
    pub members: BTreeMap<String, Heartbeat>,
    pub votes: HashMap<String, BTreeMap<String, Verdict>>,
    pub decisions: HashMap<String, Verdict>,
    /// Per proposal, each process's install, and when this process learnt of it.
    pub installed: HashMap<String, BTreeMap<String, (Verdict, Instant)>>,
    /// When this process learnt of each decision.
    pub decided_at: HashMap<String, Instant>,
    /// Modules on the topic, by hash (their bytes are kept while joining).
    pub modules: HashMap<String, Vec<u8>>,
    /// The hashes of every module on the topic.
    pub known: HashSet<String>,
    /// Proposals not decided yet, with their module.
    pub open: BTreeMap<String, (Proposal, Vec<u8>)>,
}

impl State {
    /// The processes heard from within `alive` of `now_ms` (by their own clocks).
    pub fn alive(&self, now_ms: i64, alive: Duration) -> Vec<&Heartbeat> {
        let alive = i64::try_from(alive.as_millis()).unwrap_or(i64::MAX);
        self.members
            .values()
            .filter(|m| now_ms.saturating_sub(m.at_ms) <= alive)
            .collect()
    }
}

impl View {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a record read from the topic.
    pub fn apply(&self, record: Control) {
        let mut state = self.lock();
        match record {
            Control::Member(id, Some(heartbeat)) => {
                state.members.insert(id, heartbeat);
            }
            Control::Member(id, None) => {
                state.members.remove(&id);
            }
            Control::Module(hash, bytes) => {
                state.known.insert(hash.clone());
                state.modules.insert(hash, bytes);
            }
            Control::Proposal(proposal, bytes) => {
                state.open.insert(proposal.id.clone(), (proposal, bytes));
            }
            Control::Vote {
                proposal,
                member,
                verdict,
            } => {
                state
                    .votes
                    .entry(proposal)
                    .or_default()
                    .insert(member, verdict);
            }
            Control::Decision(proposal, verdict) => {
                state.open.remove(&proposal);
                state.decided_at.insert(proposal.clone(), Instant::now());
                state.decisions.insert(proposal, verdict);
            }
            Control::Installed {
                proposal,
                member,
                verdict,
            } => {
                state
                    .installed
                    .entry(proposal)
                    .or_default()
                    .insert(member, (verdict, Instant::now()));
            }
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Reads the state.
    pub fn with<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock())
    }

    /// Changes the state (e.g. dropping module bytes no longer needed).
    pub fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
    }

    /// Waits until `ready` answers (Some) or `deadline` passes (None).
    pub fn wait_for<T>(
        &self,
        deadline: Instant,
        mut ready: impl FnMut(&State) -> Option<T>,
    ) -> Option<T> {
        let mut state = self.lock();
        loop {
            if let Some(answer) = ready(&state) {
                return Some(answer);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
