//! The aggregate of a windowed job: built-in functions, or a Wasm aggregate whose
//! accumulators the host keeps as bytes.
//!
//! A Wasm aggregate can be swapped while windows are open. If the new module keeps the
//! state version, it simply takes over (the accumulators are compatible). If the version
//! changes, the old module becomes a *retiring generation*: windows opened with it finish
//! with it, new windows use the new one, and the old module is dropped once its last
//! window has closed.

pub mod builtin;

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
        }
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

/// A job's aggregate.
pub enum Aggregator {
    Builtin(Builtins),
    Wasm(Generations),
}
