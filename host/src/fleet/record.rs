//! The records of a fleet's control topic `<job>-control`, by key:
//!
//! | key | value |
//! |---|---|
//! | `member/<id>` | a process's [`Heartbeat`] (a tombstone: it stopped) |
//! | `module/<hash>` | a module's bytes, for processes that join later |
//! | `proposal/<id>` | a [`Proposal`] header line, then the module's bytes |
//! | `vote/<id>/<member>` | a process's [`Verdict`] on a proposal |
//! | `decision/<id>` | the proposer's [`Verdict`] for the fleet: install, or not and why |
//! | `installed/<id>/<member>` | a process's [`Verdict`] on its install |

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What every process of a job must agree on: a process whose spec differs from the running
/// fleet's is refused at start (its partials would not merge with theirs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecPrint {
    pub source_topic: String,
    pub group: String,
    pub window_ms: i64,
    pub time: String,
    pub key: Option<String>,
    /// `window.exchange`: `kafka` or `partitioned` (records written before it was noted
    /// were all `kafka`).
    #[serde(default = "kafka_exchange")]
    pub exchange: String,
    /// The aggregate: `wasm` or the built-ins' names.
    pub aggregate: String,
    pub stages: Vec<String>,
}

fn kafka_exchange() -> String {
    "kafka".to_owned()
}

impl SpecPrint {
    /// The first difference from `running`, worded for the user.
    pub fn differs(&self, running: &SpecPrint) -> Option<String> {
        let ms = |ms: i64| format!("{} s", ms as f64 / 1000.0);
        let named = |key: &Option<String>| key.clone().unwrap_or_else(|| "none".to_owned());
        let (what, theirs, ours) = if self.source_topic != running.source_topic {
            (
                "source topic",
                running.source_topic.clone(),
                self.source_topic.clone(),
            )
        } else if self.group != running.group {
            ("consumer group", running.group.clone(), self.group.clone())
        } else if self.window_ms != running.window_ms {
            ("window size", ms(running.window_ms), ms(self.window_ms))
        } else if self.time != running.time {
            ("window time", running.time.clone(), self.time.clone())
        } else if self.key != running.key {
            ("window key", named(&running.key), named(&self.key))
        } else if self.exchange != running.exchange {
            (
                "window exchange",
                running.exchange.clone(),
                self.exchange.clone(),
            )
        } else if self.aggregate != running.aggregate {
            (
                "aggregate",
                running.aggregate.clone(),
                self.aggregate.clone(),
            )
        } else if self.stages != running.stages {
            ("stages", running.stages.join(", "), self.stages.join(", "))
        } else {
            return None;
        };
        Some(format!("{what} {theirs}, this spec's {ours}"))
    }
}

/// A process of the fleet, as it last said (every [`super::HEARTBEAT`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Its control API, if it serves one.
    pub control: Option<String>,
    pub started_ms: i64,
    /// When it wrote this (its clock, epoch milliseconds).
    pub at_ms: i64,
    pub spec: SpecPrint,
    /// Per component stage, the hash of the module it runs.
    pub modules: BTreeMap<String, String>,
    /// Source partitions it reads, with their lag (stage 1).
    pub partitions: BTreeMap<i32, Option<i64>>,
    /// Partials partitions it merges (stage 2).
    pub merging: Vec<i32>,
    pub records: u64,
}

/// A swap one process asks the fleet for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposal {
    pub id: String,
    pub stage: String,
    pub hash: String,
    /// Where the module came from, on the proposer (a path, or `control API`).
    pub origin: String,
    pub proposer: String,
    /// The processes whose votes it waits for.
    pub voters: Vec<String>,
}

/// A yes or a no with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub ok: bool,
    pub reason: Option<String>,
    /// A process's record-flow pause for an install, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_us: Option<u64>,
}

impl Verdict {
    pub fn yes() -> Self {
        Verdict {
            ok: true,
            reason: None,
            pause_us: None,
        }
    }

    pub fn no(reason: impl Into<String>) -> Self {
        Verdict {
            ok: false,
            reason: Some(reason.into()),
            pause_us: None,
        }
    }
}

/// One record of the control topic, decoded.
// A heartbeat (the large variant) is the most common record, about one a second per
// process: boxing it would save nothing that matters.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Control {
    Member(String, Option<Heartbeat>),
    Module(String, Vec<u8>),
    Proposal(Proposal, Vec<u8>),
    Vote {
        proposal: String,
        member: String,
        verdict: Verdict,
    },
    Decision(String, Verdict),
    Installed {
        proposal: String,
        member: String,
        verdict: Verdict,
    },
}

/// A record that is not one of [`Control`]'s.
#[derive(Debug, thiserror::Error)]
#[error("control record `{key}`: {reason}")]
pub struct Undecodable {
    pub key: String,
    pub reason: String,
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail; an empty value would read as a tombstone.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Control {
    /// The record's key and value (None: a tombstone).
    pub fn encode(&self) -> (String, Option<Vec<u8>>) {
        match self {
            Control::Member(id, heartbeat) => {
                (format!("member/{id}"), heartbeat.as_ref().map(json))
            }
            Control::Module(hash, bytes) => (format!("module/{hash}"), Some(bytes.clone())),
            Control::Proposal(proposal, bytes) => {
                let mut value = json(proposal);
                value.push(b'\n');
                value.extend_from_slice(bytes);
                (format!("proposal/{}", proposal.id), Some(value))
            }
            Control::Vote {
                proposal,
                member,
                verdict,
            } => (format!("vote/{proposal}/{member}"), Some(json(verdict))),
            Control::Decision(proposal, verdict) => {
                (format!("decision/{proposal}"), Some(json(verdict)))
            }
            Control::Installed {
                proposal,
                member,
                verdict,
            } => (
                format!("installed/{proposal}/{member}"),
                Some(json(verdict)),
            ),
        }
    }

    pub fn decode(key: &str, value: Option<&[u8]>) -> Result<Self, Undecodable> {
        let bad = |reason: String| Undecodable {
            key: key.to_owned(),
            reason,
        };
        let parse = |value: Option<&[u8]>| -> Result<Verdict, Undecodable> {
            let value = value.ok_or_else(|| bad("no value".to_owned()))?;
            serde_json::from_slice(value).map_err(|err| bad(err.to_string()))
        };
        let (kind, rest) = key
            .split_once('/')
            .ok_or_else(|| bad("no kind in the key".to_owned()))?;
        // Ids are `<member>-<n>` and members `<host>-<pid>-<start>`: no `/` in either.
        let pair = || {
            rest.split_once('/')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| bad("expected <proposal>/<member>".to_owned()))
        };
        Ok(match kind {
            "member" => Control::Member(
                rest.to_owned(),
                value
                    .map(serde_json::from_slice)
                    .transpose()
                    .map_err(|err| bad(err.to_string()))?,
            ),
            "module" => Control::Module(
                rest.to_owned(),
                value
                    .ok_or_else(|| bad("no module bytes".to_owned()))?
                    .to_vec(),
            ),
            "proposal" => {
                let value = value.ok_or_else(|| bad("no value".to_owned()))?;
                let split = value
                    .iter()
                    .position(|&b| b == b'\n')
                    .ok_or_else(|| bad("no header line".to_owned()))?;
                let (header, bytes) = value.split_at(split);
                let proposal: Proposal =
                    serde_json::from_slice(header).map_err(|err| bad(err.to_string()))?;
                Control::Proposal(proposal, bytes.get(1..).unwrap_or_default().to_vec())
            }
            "vote" => {
                let (proposal, member) = pair()?;
                Control::Vote {
                    proposal,
                    member,
                    verdict: parse(value)?,
                }
            }
            "decision" => Control::Decision(rest.to_owned(), parse(value)?),
            "installed" => {
                let (proposal, member) = pair()?;
                Control::Installed {
                    proposal,
                    member,
                    verdict: parse(value)?,
                }
            }
            other => return Err(bad(format!("unknown kind `{other}`"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print() -> SpecPrint {
        SpecPrint {
            source_topic: "orders".into(),
            group: "g".into(),
            window_ms: 30_000,
            time: "event".into(),
            key: Some("status".into()),
            exchange: "kafka".into(),
            aggregate: "wasm".into(),
            stages: vec!["parse-orders".into()],
        }
    }

    #[test]
    fn every_control_record_reads_back_as_written() {
        let proposal = Proposal {
            id: "h-1-2-1".into(),
            stage: "parse".into(),
            hash: "abc".into(),
            origin: "control API".into(),
            proposer: "h-1-2".into(),
            voters: vec!["h-9-9".into()],
        };
        let module = b"\0asm\n\x01binary".to_vec();
        let (key, value) = Control::Proposal(proposal, module.clone()).encode();
        match Control::decode(&key, value.as_deref()).unwrap() {
            Control::Proposal(p, bytes) => {
                assert_eq!((p.id.as_str(), p.stage.as_str()), ("h-1-2-1", "parse"));
                assert_eq!(bytes, module, "bytes after the header, newlines and all");
            }
            other => panic!("{other:?}"),
        }
        let vote = Control::Vote {
            proposal: "h-1-2-1".into(),
            member: "h-9-9".into(),
            verdict: Verdict::no("trapped"),
        };
        let (key, value) = vote.encode();
        assert_eq!(key, "vote/h-1-2-1/h-9-9");
        match Control::decode(&key, value.as_deref()).unwrap() {
            Control::Vote {
                proposal,
                member,
                verdict,
            } => {
                assert_eq!((proposal.as_str(), member.as_str()), ("h-1-2-1", "h-9-9"));
                assert_eq!(verdict, Verdict::no("trapped"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Control::decode("member/h-1-2", None).unwrap(),
            Control::Member(id, None) if id == "h-1-2"
        ));
    }

    #[test]
    fn a_record_of_another_kind_or_shape_is_an_error_naming_its_key() {
        let err = Control::decode("gossip/x", Some(b"{}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "control record `gossip/x`: unknown kind `gossip`"
        );
        assert!(Control::decode("vote/only-one", Some(b"{\"ok\":true}")).is_err());
        assert!(Control::decode("decision/p", Some(b"not json")).is_err());
    }

    #[test]
    fn a_spec_that_differs_names_the_first_difference_with_both_values() {
        let running = print();
        assert_eq!(print().differs(&running), None);
        let mut other = print();
        other.window_ms = 20_000;
        assert_eq!(
            other.differs(&running).as_deref(),
            Some("window size 30 s, this spec's 20 s")
        );
        let mut other = print();
        other.key = None;
        assert_eq!(
            other.differs(&running).as_deref(),
            Some("window key status, this spec's none")
        );
    }
}
