//! Loud per-record errors. Records a stage refuses (parse, map, the aggregate's `add`, format)
//! go to the dead letters one by one; the log gets at most one WARN per stage per
//! [`WARN_EVERY`], carrying how many the stage refused since its previous WARN and one
//! example reason. A job's tasks share one [`ErrorWarnings`] (in
//! [`crate::status::JobStatus`]), so the bound holds for the job, and what is still pending
//! when a task stops is logged then: the WARNs' counts add up to every refused record.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one WARN per stage this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// One WARN: `count` records refused by `stage` since its previous WARN, and one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub stage: String,
    pub count: u64,
    pub example: String,
}

impl Warning {
    /// Writes the WARN.
    pub fn log(&self) {
        tracing::warn!(
            stage = %self.stage,
            errors = self.count,
            "stage `{}` refused {} record(s) since its previous warning (dead letters, or dropped under its on_error policy); for example: {}",
            self.stage,
            self.count,
            self.example
        );
    }
}

/// Refused records of one stage not yet in a WARN.
#[derive(Debug, Default)]
struct Pending {
    count: u64,
    example: Option<String>,
    last_warn: Option<Instant>,
}

impl Pending {
    fn take(&mut self, stage: &str, now: Instant) -> Option<Warning> {
        if self.count == 0 {
            return None;
        }
        self.last_warn = Some(now);
        Some(Warning {
            stage: stage.to_owned(),
            count: std::mem::take(&mut self.count),
            example: self.example.take().unwrap_or_default(),
        })
    }
}

/// The job's rate-limited WARNs of per-record errors, per stage.
#[derive(Debug, Default)]
pub struct ErrorWarnings {
    stages: Mutex<BTreeMap<String, Pending>>,
}

impl ErrorWarnings {
    /// `stage` refused `count` more records (`example`: why one was). Logs a WARN unless
    /// the stage's previous one is less than [`WARN_EVERY`] old.
    pub fn note(&self, stage: &str, count: u64, example: &str) {
        if let Some(warning) = self.note_at(stage, count, example, Instant::now()) {
            warning.log();
        }
    }

    /// [`ErrorWarnings::note`] at `now`: the WARN due, if any.
    pub fn note_at(&self, stage: &str, count: u64, example: &str, now: Instant) -> Option<Warning> {
        if count == 0 {
            return None;
        }
        let mut stages = self.stages.lock().unwrap_or_else(PoisonError::into_inner);
        let pending = stages.entry(stage.to_owned()).or_default();
        pending.count += count;
        if pending.example.is_none() {
            pending.example = Some(example.to_owned());
        }
        let due = pending
            .last_warn
            .is_none_or(|last| now.saturating_duration_since(last) >= WARN_EVERY);
        if due { pending.take(stage, now) } else { None }
    }

    /// Logs what every stage refused since its previous WARN (a task stops).
    pub fn flush(&self) {
        for warning in self.flush_at(Instant::now()) {
            warning.log();
        }
    }

    /// [`ErrorWarnings::flush`] at `now`: the WARNs due.
    pub fn flush_at(&self, now: Instant) -> Vec<Warning> {
        let mut stages = self.stages.lock().unwrap_or_else(PoisonError::into_inner);
        stages
            .iter_mut()
            .filter_map(|(stage, pending)| pending.take(stage, now))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(stage: &str, count: u64, example: &str) -> Option<Warning> {
        Some(Warning {
            stage: stage.to_owned(),
            count,
            example: example.to_owned(),
        })
    }

    #[test]
    fn the_first_error_warns_then_one_warning_per_stage_per_interval_carries_the_count() {
        let warnings = ErrorWarnings::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(
            warnings.note_at("parse", 1, "bad json 1", at(0)),
            warning("parse", 1, "bad json 1")
        );
        assert_eq!(warnings.note_at("parse", 3, "bad json 2", at(1)), None);
        assert_eq!(
            warnings.note_at("format", 2, "no field", at(2)),
            warning("format", 2, "no field"),
            "stages are limited separately"
        );
        assert_eq!(warnings.note_at("parse", 5, "bad json 3", at(9)), None);
        assert_eq!(
            warnings.note_at("parse", 1, "bad json 4", at(10)),
            warning("parse", 9, "bad json 2"),
            "the count since the previous warning, with the first reason among them"
        );
        assert_eq!(warnings.note_at("parse", 2, "bad json 5", at(11)), None);
        assert_eq!(warnings.note_at("format", 0, "nothing", at(30)), None);
        assert_eq!(
            warnings.flush_at(at(12)),
            vec![Warning {
                stage: "parse".to_owned(),
                count: 2,
                example: "bad json 5".to_owned()
            }],
            "a stop logs what is pending; stages with nothing pending stay quiet"
        );
        assert_eq!(warnings.flush_at(at(13)), Vec::new());
        assert_eq!(
            warnings.note_at("parse", 1, "bad json 6", at(14)),
            None,
            "the flush counts as the stage's warning"
        );
    }
}
