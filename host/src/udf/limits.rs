//! Per-stage sandbox limits, and the resource limiter that enforces the memory and
//! instance caps inside a store.

use serde::Deserialize;
use std::time::Duration;

/// What one stage's component may use. Every field has a sane default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory of the component, all memories together, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time one call (one batch) may take before it is abandoned: running guest
    /// code and waiting inside WASI host calls (sleep, `poll`, `block`) alike.
    #[serde(with = "duration_ms")]
    pub cpu_per_batch: Duration,
    /// Bytes of output (rows, payloads, accumulators) one call may return.
    pub output_bytes: usize,
    /// Core instances the component may create (a Rust component needs a handful).
    pub instances: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 32 << 20,
            cpu_per_batch: Duration::from_millis(200),
            output_bytes: 16 << 20,
            instances: 16,
        }
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// The limit a call ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// Linear memory would have grown past the cap.
    Memory { limit: usize, requested: usize },
    /// The call ran (or waited in a host call) past its deadline and was abandoned.
    Deadline { limit: Duration },
    /// The call returned more bytes than allowed.
    Output { limit: usize, produced: usize },
    /// The component tried to create more instances, tables or memories than allowed.
    Instances { limit: usize },
    /// The guest's call stack overflowed (unbounded recursion).
    Stack,
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Memory { limit, requested } => write!(
                f,
                "memory limit of {} exceeded (the guest asked for {})",
                human_bytes(*limit),
                human_bytes(*requested)
            ),
            LimitHit::Deadline { limit } => {
                write!(
                    f,
                    "time limit of {} ms per batch exceeded (`cpu_per_batch`; time the guest spends waiting in host calls counts)",
                    limit.as_millis()
                )
            }
            LimitHit::Output { limit, produced } => write!(
                f,
                "output limit of {} per batch exceeded ({} produced)",
                human_bytes(*limit),
                human_bytes(*produced)
            ),
            LimitHit::Instances { limit } => {
                write!(f, "instance limit of {limit} per component exceeded")
            }
            LimitHit::Stack => f.write_str("stack limit exceeded (unbounded recursion?)"),
        }
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Enforces [`Limits`] inside one store and remembers which limit was hit, so a trap can be
/// reported as the limit that caused it.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    hit: Option<LimitHit>,
}

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        Limiter { limits, hit: None }
    }

    /// The limit hit since the last call to this method, if any.
    pub fn take_hit(&mut self) -> Option<LimitHit> {
        self.hit.take()
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.hit = Some(LimitHit::Memory {
                limit: self.limits.memory_bytes,
                requested: desired,
            });
            // Refuse the growth; Rust guests abort on allocation failure, which traps.
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.instances
    }

    fn memories(&self) -> usize {
        self.limits.instances
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn refuses_growth_past_the_cap_and_remembers_it() {
        let mut limiter = Limiter::new(Limits {
            memory_bytes: 1 << 20,
            ..Limits::default()
        });
        assert!(matches!(limiter.memory_growing(0, 1 << 19, None), Ok(true)));
        assert_eq!(limiter.take_hit(), None);
        assert!(matches!(
            limiter.memory_growing(0, 2 << 20, None),
            Ok(false)
        ));
        assert_eq!(
            limiter.take_hit(),
            Some(LimitHit::Memory {
                limit: 1 << 20,
                requested: 2 << 20
            })
        );
        assert_eq!(limiter.take_hit(), None);
    }

    #[test]
    fn limits_read_from_toml_like_json_with_defaults() {
        let limits: Limits =
            serde_json::from_str(r#"{"memory_bytes": 1048576, "cpu_per_batch": 50}"#).unwrap();
        assert_eq!(limits.memory_bytes, 1 << 20);
        assert_eq!(limits.cpu_per_batch, Duration::from_millis(50));
        assert_eq!(limits.output_bytes, Limits::default().output_bytes);
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(32 << 20), "32.0 MiB");
    }
}
