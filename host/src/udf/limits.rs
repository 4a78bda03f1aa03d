//! Per-stage sandbox limits, and the resource limiter that enforces the memory and
//! instance caps inside a store.

use serde::Deserialize;
use std::time::Duration;

/// What one stage's component may use. Every field has a sane default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Memory of the component in bytes: the sum over all its linear memories and its
    /// tables (each table element counted at its host size, [`TABLE_ELEMENT_BYTES`]).
    pub memory_bytes: usize,
    /// Wall-clock time one call (one batch) may take before it is abandoned: running guest
    /// code and waiting inside WASI host calls (sleep, `poll`, `block`) alike.
    #[serde(with = "duration_ms")]
    pub cpu_per_batch: Duration,
    /// Bytes of output (rows, payloads, accumulators) one call may return.
    pub output_bytes: usize,
    /// Core instances the component may create (a Rust component needs a handful).
    pub instances: usize,
    /// Aggregates: accumulator bytes the host may keep for the stage, all open windows and
    /// keys together. An `add` that would take the total past it is refused for that key.
    pub accumulator_bytes: usize,
    /// Aggregates: most windows handed to one `finish` call (windows firing together are
    /// finished in chunks, so one bad window costs only its chunk's isolation).
    pub finish_windows: usize,
    /// Aggregates: most accumulator bytes handed to one `finish` call (a larger
    /// accumulator goes alone).
    pub finish_bytes: usize,
}

impl Limits {
    /// Bytes the host copies out of the guest for one call's result (and for one call the
    /// guest makes into the host) before it gives up: twice the output limit plus 1 MiB,
    /// room for the result's own structure (list headers) on top of the bytes the output
    /// limit counts, so the exact check after copying decides every result near the limit
    /// while a result far past it is refused before the host holds a copy of it.
    pub fn copy_budget(&self) -> usize {
        self.output_bytes.saturating_mul(2).saturating_add(1 << 20)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 32 << 20,
            cpu_per_batch: Duration::from_millis(200),
            output_bytes: 16 << 20,
            instances: 16,
            accumulator_bytes: 64 << 20,
            finish_windows: 256,
            finish_bytes: 8 << 20,
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
    /// The component's memories and tables together would have grown past the cap;
    /// `requested` is that total.
    Memory { limit: usize, requested: usize },
    /// A table would have grown to `elements`, taking memories and tables together to
    /// `requested` bytes, past the cap.
    Table {
        limit: usize,
        requested: usize,
        elements: usize,
    },
    /// The call ran (or waited in a host call) past its deadline and was abandoned.
    Deadline { limit: Duration },
    /// The call returned more bytes than allowed.
    Output { limit: usize, produced: usize },
    /// The call returned so much that the host stopped copying its result out of the guest
    /// after `copied` bytes ([`Limits::copy_budget`]): far past the output limit.
    OutputUncopied { limit: usize, copied: usize },
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
                "memory limit of {} exceeded (the guest asked for {} over all its memories and tables)",
                human_bytes(*limit),
                human_bytes(*requested)
            ),
            LimitHit::Table {
                limit,
                requested,
                elements,
            } => write!(
                f,
                "memory limit of {} exceeded by a table of {elements} elements ({TABLE_ELEMENT_BYTES} B each on the host; the guest asked for {} over all its memories and tables)",
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
            LimitHit::OutputUncopied { limit, copied } => write!(
                f,
                "output limit of {} per batch exceeded (more than {} produced; the host stopped copying it there)",
                human_bytes(*limit),
                human_bytes(*copied)
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

/// Host bytes one table element takes (wasmtime stores a pointer per element).
pub const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// Enforces [`Limits`] inside one store and remembers which limit was hit, so a trap can be
/// reported as the limit that caused it.
///
/// The memory cap covers the whole store: every linear memory and every table (at
/// [`TABLE_ELEMENT_BYTES`] per element) of every core instance, summed. Memories and tables
/// only grow and are freed with the store, so the sum of granted growths is what is in use.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    hit: Option<LimitHit>,
    /// Bytes of memories and tables granted so far.
    used: usize,
    /// The last growth granted, taken back if wasmtime then fails it.
    pending: usize,
}

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        Limiter {
            limits,
            hit: None,
            used: 0,
            pending: 0,
        }
    }

    /// The limit hit since the last call to this method, if any.
    pub fn take_hit(&mut self) -> Option<LimitHit> {
        self.pending = 0;
        self.hit.take()
    }

    /// Bytes of memories and tables in use.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Grants `current -> desired` bytes if the total stays within the cap; else records
    /// the hit `refused(total)` describes.
    fn grow(
        &mut self,
        current: usize,
        desired: usize,
        refused: impl FnOnce(usize, usize) -> LimitHit,
    ) -> bool {
        let delta = desired.saturating_sub(current);
        let total = self.used.saturating_add(delta);
        if total > self.limits.memory_bytes {
            self.hit = Some(refused(self.limits.memory_bytes, total));
            self.pending = 0;
            return false;
        }
        self.used = total;
        self.pending = delta;
        true
    }

    fn growth_failed(&mut self) {
        self.used = self.used.saturating_sub(std::mem::take(&mut self.pending));
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A refusal makes `memory.grow` return -1; Rust guests abort on allocation
        // failure, which traps.
        Ok(
            self.grow(current, desired, |limit, requested| LimitHit::Memory {
                limit,
                requested,
            }),
        )
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.growth_failed();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| elements.saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(
            self.grow(bytes(current), bytes(desired), |limit, requested| {
                LimitHit::Table {
                    limit,
                    requested,
                    elements: desired,
                }
            }),
        )
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.growth_failed();
        Ok(())
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
        // A second memory of 2 MiB: the store would hold 2.5 MiB.
        assert_eq!(
            limiter.take_hit(),
            Some(LimitHit::Memory {
                limit: 1 << 20,
                requested: (1 << 19) + (2 << 20)
            })
        );
        assert_eq!(limiter.take_hit(), None);
    }

    #[test]
    fn memories_and_tables_count_together_against_one_cap() {
        let mut limiter = Limiter::new(Limits {
            memory_bytes: 4 << 20,
            ..Limits::default()
        });
        // Three memories of 1 MiB each: every one is under the cap, together 3 MiB.
        for _ in 0..3 {
            assert!(matches!(limiter.memory_growing(0, 1 << 20, None), Ok(true)));
        }
        assert_eq!(limiter.used(), 3 << 20);
        // A fourth memory's second MiB would make 5 MiB.
        assert!(matches!(limiter.memory_growing(0, 1 << 20, None), Ok(true)));
        assert!(matches!(
            limiter.memory_growing(1 << 20, 2 << 20, None),
            Ok(false)
        ));
        assert_eq!(
            limiter.take_hit(),
            Some(LimitHit::Memory {
                limit: 4 << 20,
                requested: 5 << 20
            })
        );
        // 4 MiB are in use: a table of 1 element is one pointer too many.
        assert!(matches!(limiter.table_growing(0, 1, None), Ok(false)));
        assert_eq!(
            limiter.take_hit(),
            Some(LimitHit::Table {
                limit: 4 << 20,
                requested: (4 << 20) + TABLE_ELEMENT_BYTES,
                elements: 1
            })
        );
    }

    #[test]
    fn a_growth_that_fails_after_it_was_granted_is_given_back() {
        let mut limiter = Limiter::new(Limits::default());
        assert!(matches!(limiter.table_growing(10, 1010, None), Ok(true)));
        assert_eq!(limiter.used(), 1000 * TABLE_ELEMENT_BYTES);
        limiter
            .table_grow_failed(wasmtime::format_err!("past the table's maximum"))
            .unwrap();
        assert_eq!(limiter.used(), 0);
    }

    #[test]
    fn limits_read_from_toml_like_json_with_defaults() {
        let limits: Limits =
            serde_json::from_str(r#"{"memory_bytes": 1048576, "cpu_per_batch": 50}"#).unwrap();
        assert_eq!(limits.memory_bytes, 1 << 20);
        assert_eq!(limits.cpu_per_batch, Duration::from_millis(50));
        assert_eq!(limits.output_bytes, Limits::default().output_bytes);
        assert_eq!(limits.accumulator_bytes, 64 << 20);
        let limits: Limits =
            serde_json::from_str(r#"{"finish_windows": 16, "finish_bytes": 4096}"#).unwrap();
        assert_eq!((limits.finish_windows, limits.finish_bytes), (16, 4096));
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(32 << 20), "32.0 MiB");
    }
}
