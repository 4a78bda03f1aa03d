//! The rest of the WIT contract's records (`rivulet:udf/types`), mirrored field for field so
//! generated bindings can use them directly.

use crate::{Batch, Packed, Scalar};

/// Why one input record (or row) produced no output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct RecordError {
    /// Index of the input record in its batch.
    pub index: u32,
    /// What went wrong, for people.
    pub message: String,
}

/// Rows produced from a batch, the input each came from, and the inputs that failed.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct RowsOut {
    /// The produced rows.
    pub rows: Batch,
    /// For each produced row, the index of the input it came from (non-decreasing).
    pub origins: Vec<u32>,
    /// Inputs that produced an error instead of rows.
    pub errors: Vec<RecordError>,
}

/// One window's accumulator, handed to an aggregate's `finish`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct WindowAcc {
    /// The grouping key of the window.
    pub key: Scalar,
    /// Inclusive start, milliseconds since the Unix epoch.
    #[cfg_attr(feature = "wasmtime", component(name = "window-start"))]
    pub window_start: i64,
    /// Exclusive end, milliseconds since the Unix epoch.
    #[cfg_attr(feature = "wasmtime", component(name = "window-end"))]
    pub window_end: i64,
    /// The accumulator bytes, as the aggregate last returned them.
    pub acc: Vec<u8>,
}

/// Accumulators after an aggregate's `add`: one per group, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct AddOut {
    /// Updated accumulators.
    pub accs: Vec<Vec<u8>>,
    /// Rows that could not be added; they do not count.
    pub errors: Vec<RecordError>,
}

/// Encoded records for a sink: one payload per input row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct Encoded {
    /// One payload per input row; rows named in `errors` have an empty payload.
    pub payloads: Packed,
    /// One key per input row when the formatter sets keys (empty means no key).
    pub keys: Option<Packed>,
    /// Rows that could not be formatted.
    pub errors: Vec<RecordError>,
}
