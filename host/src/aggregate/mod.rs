//! The aggregate of a windowed job: built-in functions, or a Wasm aggregate whose
//! accumulators the host keeps as bytes.

pub mod builtin;

use crate::stage::AggregateStage;
use builtin::{BuiltinAcc, Builtins};

/// What a window keeps per key.
#[derive(Debug, Clone, PartialEq)]
pub enum Acc {
    Builtin(Vec<BuiltinAcc>),
    Bytes(Vec<u8>),
}

/// A job's aggregate.
pub enum Aggregator {
    Builtin(Builtins),
    Wasm {
        stage: Box<dyn AggregateStage>,
        /// `create()`'s result, fetched once per module.
        empty: Vec<u8>,
        state_version: u32,
    },
}

impl Aggregator {
    pub fn empty(&self) -> Acc {
        match self {
            Aggregator::Builtin(builtins) => Acc::Builtin(builtins.create()),
            Aggregator::Wasm { empty, .. } => Acc::Bytes(empty.clone()),
        }
    }
}
