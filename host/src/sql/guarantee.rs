//! The delivery guarantee a script asks for with `SET 'execution.checkpointing.mode'`:
//! `EXACTLY_ONCE` runs the job exactly-once (Kafka transactions, see
//! [`crate::delivery::transaction`]) when it can — Kafka in, Kafka out — and otherwise
//! at-least-once, with one warning saying why.

use super::Pos;
use crate::spec::{Delivery, PipelineSpec};

/// Whether `value` asks for exactly-once.
pub fn is_exactly_once(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("EXACTLY_ONCE")
}

/// Applies the settings' checkpointing mode to `spec`; returns the warnings they call for
/// (exactly-once asked by a job that cannot honour it).
pub fn apply(spec: &mut PipelineSpec, settings: &[(String, String, Pos)]) -> Vec<String> {
    let mut warnings = Vec::new();
    for (key, value, at) in settings {
        if key != "execution.checkpointing.mode" {
            continue;
        }
        if !is_exactly_once(value) {
            spec.delivery = Delivery::AtLeastOnce;
            continue;
        }
        spec.delivery = Delivery::ExactlyOnce;
        if let Some((_, reason)) = spec.exactly_once_refusal() {
            spec.delivery = Delivery::AtLeastOnce;
            warnings.push(format!(
                "{at}: SET 'execution.checkpointing.mode' = '{value}': this job runs at-least-once ({reason}); after a restart some results may be written again, and upsert-kafka's keys make those rewrites overwrite"
            ));
        }
    }
    warnings
}
