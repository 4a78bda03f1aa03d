//! The delivery guarantee a script asks for with `SET 'execution.checkpointing.mode'`:
//! rivulet runs at-least-once (offsets committed once results are acknowledged; a restart
//! may repeat results), so `EXACTLY_ONCE` is accepted with one warning saying so.

use super::Pos;

/// Whether `value` asks for exactly-once.
pub fn is_exactly_once(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("EXACTLY_ONCE")
}

/// The warnings the settings call for.
pub fn warnings(settings: &[(String, String, Pos)]) -> Vec<String> {
    settings
        .iter()
        .filter(|(key, value, _)| key == "execution.checkpointing.mode" && is_exactly_once(value))
        .map(|(_, value, at)| {
            format!(
                "{at}: SET 'execution.checkpointing.mode' = '{value}': this job runs at-least-once (exactly-once is not supported yet; after a restart some results may be written again, and upsert-kafka's keys make those rewrites overwrite)"
            )
        })
        .collect()
}
