//! The fleet's part in a swap (see [`crate::swap::FleetGate`]): propose and wait for every
//! vote, or vote and wait for the decision; then report installs.

use super::record::{Control, Proposal, Verdict};
use super::{ALIVE, DECISION_WAIT, Fleet, INSTALL_WAIT, VOTE_WAIT, now_ms};
use crate::swap::{FleetGate, FleetInstalls, SwapRequest};
use crate::udf::UdfModule;
use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl FleetGate for Fleet {
    fn agree(&self, request: &SwapRequest, module: &UdfModule) -> Result<(), String> {
        match &request.fleet {
            None => self.propose(request, module),
            Some(remote) => {
                if remote.voter {
                    self.vote(&remote.id, Verdict::yes())
                        .map_err(|err| format!("cannot vote on the fleet's swap: {err}"))?;
                }
                let deadline = Instant::now() + DECISION_WAIT;
                let decision = self
                    .view
                    .wait_for(deadline, |state| state.decisions.get(&remote.id).cloned());
                match decision {
                    Some(Verdict { ok: true, .. }) => Ok(()),
                    Some(Verdict { reason, .. }) => Err(format!(
                        "the fleet did not take it: {}",
                        reason.unwrap_or_default()
                    )),
                    None => Err(format!(
                        "no decision from the proposing process within {} s",
                        DECISION_WAIT.as_secs()
                    )),
                }
            }
        }
    }

    fn refused(&self, request: &SwapRequest, reason: &str) {
        if let Some(remote) = request.fleet.as_ref().filter(|r| r.voter)
            && let Err(err) = self.vote(&remote.id, Verdict::no(reason))
        {
            tracing::warn!("cannot vote no on the fleet's swap: {err}");
        }
    }

    fn installed(
        &self,
        request: &SwapRequest,
        result: &Result<Duration, String>,
    ) -> Option<FleetInstalls> {
        let verdict = match result {
            Ok(pause) => Verdict {
                ok: true,
                reason: None,
                pause_us: Some(u64::try_from(pause.as_micros()).unwrap_or(u64::MAX)),
            },
            Err(reason) => Verdict::no(reason.clone()),
        };
        if let Some(remote) = &request.fleet {
            let record = Control::Installed {
                proposal: remote.id.clone(),
                member: self.me.clone(),
                verdict,
            };
            if let Err(err) = self.write(&record) {
                tracing::warn!("cannot report this process's install to the fleet: {err}");
            }
            return None;
        }
        if result.is_ok()
            && let Err(err) = self.publish(&[(request.stage.clone(), request.bytes.clone())])
        {
            tracing::warn!(
                "cannot put the module on the control topic for processes that join later: {err}"
            );
        }
        let (id, voters, decided) = self
            .proposing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        let mine = decided.elapsed();
        let deadline = Instant::now() + INSTALL_WAIT;
        let installs = self
            .view
            .wait_for(deadline, |state| {
                let got = state.installed.get(&id)?;
                voters
                    .iter()
                    .all(|v| got.contains_key(v))
                    .then(|| got.clone())
            })
            .or_else(|| self.view.with(|state| state.installed.get(&id).cloned()))
            .unwrap_or_default();
        let mut report = FleetInstalls {
            processes: voters.len() + 1,
            installed_ms: BTreeMap::new(),
            failed: BTreeMap::new(),
            missing: Vec::new(),
        };
        if result.is_ok() {
            report
                .installed_ms
                .insert(self.me.clone(), mine.as_secs_f64() * 1e3);
        }
        for voter in &voters {
            match installs.get(voter) {
                Some((Verdict { ok: true, .. }, at)) => {
                    let ms = at.saturating_duration_since(decided).as_secs_f64() * 1e3;
                    report.installed_ms.insert(voter.clone(), ms);
                }
                Some((Verdict { reason, .. }, _)) => {
                    report
                        .failed
                        .insert(voter.clone(), reason.clone().unwrap_or_default());
                }
                None => report.missing.push(voter.clone()),
            }
        }
        Some(report)
    }
}

impl Fleet {
    /// Proposes a swap this process's user asked for, checked here already, to every live
    /// process, and decides: install only if every one of them said yes in time.
    fn propose(&self, request: &SwapRequest, module: &UdfModule) -> Result<(), String> {
        let now = now_ms();
        let voters: Vec<String> = self.view.with(|state| {
            state
                .alive(now, ALIVE)
                .into_iter()
                .map(|m| m.id.clone())
                .filter(|id| *id != self.me)
                .collect()
        });
        if voters.is_empty() {
            return Ok(());
        }
        if request.bytes.len() > crate::kafka::compacted::MAX_RECORD {
            return Err(format!(
                "the module is {} bytes; a fleet's control topic takes modules up to {} bytes",
                request.bytes.len(),
                crate::kafka::compacted::MAX_RECORD
            ));
        }
        let n = self.proposals.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{}-{n}", self.me);
        // Noted before the proposal is written: one that another process writes meanwhile
        // is ordered against it (see `Fleet::gives_way`).
        *self.deciding.lock().unwrap_or_else(PoisonError::into_inner) = Some(id.clone());
        let decided = self.decide(request, module, id, voters);
        *self.deciding.lock().unwrap_or_else(PoisonError::into_inner) = None;
        decided
    }

    /// Writes proposal `id` and decides it on the votes of `voters`.
    fn decide(
        &self,
        request: &SwapRequest,
        module: &UdfModule,
        id: String,
        voters: Vec<String>,
    ) -> Result<(), String> {
        let proposal = Proposal {
            id: id.clone(),
            stage: request.stage.clone(),
            hash: module.hash.clone(),
            origin: request.origin.clone(),
            proposer: self.me.clone(),
            voters: voters.clone(),
        };
        self.write(&Control::Proposal(proposal, request.bytes.clone()))
            .map_err(|err| format!("cannot propose it to the fleet: {err}"))?;
        tracing::info!(stage = %request.stage, proposal = %id, processes = voters.len(), "proposed the swap to the fleet; waiting for every process's checks");
        let deadline = Instant::now() + VOTE_WAIT;
        let votes = self.view.wait_for(deadline, |state| {
            let votes = state.votes.get(&id)?;
            let refused = votes.values().any(|v| !v.ok);
            (refused || voters.iter().all(|v| votes.contains_key(v))).then(|| votes.clone())
        });
        let votes = votes
            .or_else(|| self.view.with(|state| state.votes.get(&id).cloned()))
            .unwrap_or_default();
        // A refusal's reason first: the wait ends at the first one, others may still be due.
        let refusal = voters
            .iter()
            .find_map(|voter| {
                let verdict = votes.get(voter).filter(|v| !v.ok)?;
                Some(format!(
                    "process {voter} refused it: {}",
                    verdict.reason.clone().unwrap_or_default()
                ))
            })
            .or_else(|| {
                let silent = voters.iter().find(|v| !votes.contains_key(*v))?;
                Some(format!(
                    "process {silent} did not answer within {} s",
                    VOTE_WAIT.as_secs()
                ))
            });
        let decision = match &refusal {
            None => Verdict::yes(),
            Some(reason) => Verdict::no(reason.clone()),
        };
        self.write(&Control::Decision(id.clone(), decision))
            .map_err(|err| format!("cannot write the fleet's decision: {err}"))?;
        match refusal {
            None => {
                *self
                    .proposing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some((id, voters, Instant::now()));
                Ok(())
            }
            Some(reason) => Err(format!(
                "the fleet refused it, no process installed it: {reason}"
            )),
        }
    }
}
