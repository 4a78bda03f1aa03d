//! Side outputs: what an operator sets aside instead of passing on. Records a step refused
//! go to the dead letters (with the step's policy), and records too late for their window
//! go to the late records. Operators return them with their main output; the pipeline
//! routes them ([`crate::pipeline`]), so no operator holds the dead-letter or late sinks.

use crate::spec::OnError;

/// Everything one operator call set aside.
#[derive(Debug, Default)]
pub struct SideOutputs {
    /// For the dead letters, in the order they were refused.
    pub refused: Vec<Refused>,
    /// Too late for their window: records of the batch, by index.
    pub late: Vec<usize>,
    /// Too late for their window, read again from their source (ordered file splits).
    pub late_payloads: Vec<Vec<u8>>,
}

/// One refused input, why, and by which step.
#[derive(Debug)]
pub struct Refused {
    pub what: RefusedInput,
    pub stage: String,
    pub error: String,
    pub policy: OnError,
}

/// What was refused.
#[derive(Debug)]
pub enum RefusedInput {
    /// Record `index` of the batch being processed (its key, payload, partition and offset
    /// go to the dead letter).
    Record(usize),
    /// A row derived from several records (a window result, a row to format), as its
    /// payload.
    Derived(Vec<u8>),
}

impl SideOutputs {
    /// Record `index` of the batch, refused by `stage`.
    pub fn refuse_record(&mut self, index: usize, stage: &str, error: &str, policy: OnError) {
        self.refused.push(Refused {
            what: RefusedInput::Record(index),
            stage: stage.to_owned(),
            error: error.to_owned(),
            policy,
        });
    }

    /// A derived row (`payload`), refused by `stage`.
    pub fn refuse_derived(&mut self, payload: Vec<u8>, stage: &str, error: &str, policy: OnError) {
        self.refused.push(Refused {
            what: RefusedInput::Derived(payload),
            stage: stage.to_owned(),
            error: error.to_owned(),
            policy,
        });
    }

    /// Adds `other`'s side outputs after these.
    pub fn append(&mut self, mut other: SideOutputs) {
        self.refused.append(&mut other.refused);
        self.late.append(&mut other.late);
        self.late_payloads.append(&mut other.late_payloads);
    }

    pub fn is_empty(&self) -> bool {
        self.refused.is_empty() && self.late.is_empty() && self.late_payloads.is_empty()
    }
}
