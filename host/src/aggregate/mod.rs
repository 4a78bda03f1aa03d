//! The aggregate of a windowed job: built-in functions, or a Wasm aggregate whose
//! accumulators the host keeps as bytes.
//!
//! A Wasm aggregate can be swapped while windows are open. If the new module keeps the
//! state version, it simply takes over (the accumulators are compatible). If the version
//! changes, the old module becomes a *retiring generation*: windows opened with it finish
//! with it, new windows use the new one, and the old module is dropped once its last
//! window has closed.

pub mod builtin;
pub mod dispatch;

use crate::stage::AggregateStage;
use builtin::{BuiltinAcc, Builtins};

/// What a window keeps per key.
#[derive(Debug, Clone, PartialEq)]
pub enum Acc {
    Builtin(Vec<BuiltinAcc>),
    /// A Wasm aggregate's accumulator, and the generation (module) that wrote it.
    Bytes {
        generation: u32,
        bytes: Vec<u8>,
    },
}

/// One Wasm aggregate module in service.
pub struct Generation {
    pub id: u32,
    pub stage: Box<dyn AggregateStage>,
    /// `create()`'s result, fetched once per module.
    pub empty: Vec<u8>,
    pub state_version: u32,
}

/// The current Wasm aggregate and those still finishing their windows.
pub struct Generations {
    pub current: Generation,
    pub retiring: Vec<Generation>,
    /// The stage's limits: the cap on the accumulator bytes the host keeps for it (all
    /// generations) and the size of `finish` chunks.
    pub limits: crate::udf::Limits,
    /// The shape of the current module's results, watched across swaps.
    pub shape: crate::shape::ShapeWatch,
}

impl Generations {
    pub fn new(stage: Box<dyn AggregateStage>, empty: Vec<u8>, state_version: u32) -> Self {
        Generations {
            current: Generation {
                id: 0,
                stage,
                empty,
                state_version,
            },
            retiring: Vec::new(),
            limits: crate::udf::Limits::default(),
            shape: crate::shape::ShapeWatch::default(),
        }
    }

    /// The same, with the stage's limits.
    pub fn with_limits(mut self, limits: crate::udf::Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Generation> {
        if self.current.id == id {
            return Some(&mut self.current);
        }
        self.retiring.iter_mut().find(|g| g.id == id)
    }

    /// Puts a new module in service. Returns whether the state version changed (then the
    /// old module keeps serving the windows it opened), and the module replaced outright.
    pub fn install(
        &mut self,
        stage: Box<dyn AggregateStage>,
        empty: Vec<u8>,
        state_version: u32,
    ) -> (bool, Option<Box<dyn AggregateStage>>) {
        if state_version == self.current.state_version {
            let old = std::mem::replace(&mut self.current.stage, stage);
            self.current.empty = empty;
            return (false, Some(old));
        }
        let next = Generation {
            id: self.current.id + 1,
            stage,
            empty,
            state_version,
        };
        let old = std::mem::replace(&mut self.current, next);
        self.retiring.push(old);
        (true, None)
    }

    /// Drops retiring modules no window uses any more.
    pub fn retire_unused(&mut self, in_use: impl Fn(u32) -> bool) {
        self.retiring.retain(|g| {
            let keep = in_use(g.id);
            if !keep {
                tracing::info!(
                    generation = g.id,
                    state_version = g.state_version,
                    "retired the previous aggregate module: its last window closed"
                );
            }
            keep
        });
    }
}

/// The accumulator bytes a stage keeps, against its cap: an accumulator may grow only if
/// the stage's total stays within it.
#[derive(Debug, Clone, Copy)]
pub struct AccBudget {
    pub cap: usize,
    pub held: usize,
}

impl AccBudget {
    /// Bytes held by every Wasm accumulator in `windows`.
    pub fn of(cap: usize, windows: &mut crate::window::TumblingWindows<Acc>) -> Self {
        let mut held = 0usize;
        windows.for_each_mut(|_, _, acc| {
            if let Acc::Bytes { bytes, .. } = acc {
                held = held.saturating_add(bytes.len());
            }
        });
        AccBudget { cap, held }
    }

    /// Lets an accumulator go from `old` to `new` bytes if the total stays within the cap;
    /// else returns the total it would have made.
    pub fn admit(&mut self, old: usize, new: usize) -> Result<(), usize> {
        let total = self.held.saturating_sub(old).saturating_add(new);
        if new > old && total > self.cap {
            return Err(total);
        }
        self.held = total;
        Ok(())
    }

    /// Why the row(s) adding to `key`'s accumulator in the window starting at `start` were
    /// refused.
    pub fn refusal(
        &self,
        key: &rivulet_rows::Scalar,
        start: i64,
        new: usize,
        total: usize,
    ) -> String {
        use crate::udf::limits::human_bytes;
        format!(
            "accumulator limit of {} exceeded: the accumulator of key {} in the window starting {} would grow to {}, taking the stage's accumulators to {}; the record is not added and the window keeps its previous accumulator",
            human_bytes(self.cap),
            key.to_json(),
            rivulet_rows::time::iso8601(start),
            human_bytes(new),
            human_bytes(total)
        )
    }
}

/// A job's aggregate.
pub enum Aggregator {
    Builtin(Builtins),
    Wasm(Generations),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_growth_past_the_cap_and_allows_shrinking() {
        let mut budget = AccBudget { cap: 100, held: 60 };
        assert_eq!(budget.admit(10, 40), Ok(()));
        assert_eq!(budget.held, 90);
        assert_eq!(budget.admit(40, 51), Err(101));
        assert_eq!(budget.held, 90, "a refusal changes nothing");
        assert_eq!(budget.admit(40, 50), Ok(()));
        assert_eq!(budget.held, 100);
        budget.cap = 10;
        assert_eq!(budget.admit(50, 20), Ok(()), "shrinking is always allowed");
        assert_eq!(budget.held, 70);
    }

    #[test]
    fn refusal_names_the_key_the_window_and_the_cap() {
        let budget = AccBudget {
            cap: 4 << 20,
            held: 0,
        };
        let message = budget.refusal(
            &rivulet_rows::Scalar::Text("big".into()),
            1_716_467_700_000,
            5 << 20,
            6 << 20,
        );
        assert_eq!(
            message,
            "accumulator limit of 4.0 MiB exceeded: the accumulator of key \"big\" in the window starting 2024-05-23T12:35:00Z would grow to 5.0 MiB, taking the stage's accumulators to 6.0 MiB; the record is not added and the window keeps its previous accumulator"
        );
    }
}
