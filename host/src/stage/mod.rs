//! The four stage kinds as traits, implemented both by sandboxed Wasm components
//! ([`wasm`]) and by native Rust ([`native`], used by benchmarks and as a reference).
//!
//! Every call takes a whole batch and returns per-record results: rows (with the input
//! each came from) and per-record errors. A call that fails as a whole (a trap, a limit)
//! returns `Err`; the pipeline then isolates the records that cause it ([`isolate`]).

pub mod avro;
pub mod enrich;
pub mod filter;
pub mod isolate;
pub mod json;
pub mod project;
pub mod sink_encoding;
pub mod wasm;

use crate::udf::UdfError;
use rivulet_rows::{AddOut, Batch, Encoded, RawBatch, RowsOut, WindowAcc};

/// Raw records → rows.
pub trait ParseStage: Send {
    fn parse(&mut self, input: &RawBatch) -> Result<RowsOut, UdfError>;
}

/// Rows → rows (map, filter, flat-map).
pub trait MapStage: Send {
    fn map(&mut self, input: &Batch) -> Result<RowsOut, UdfError>;
}

/// An aggregate over accumulators the caller stores as bytes.
pub trait AggregateStage: Send {
    fn state_version(&mut self) -> Result<u32, UdfError>;
    fn create(&mut self) -> Result<Vec<u8>, UdfError>;
    /// Adds row `i` of `rows` to `accs[groups[i]]`; returns every accumulator, updated.
    fn add(&mut self, accs: Vec<Vec<u8>>, rows: &Batch, groups: &[u32])
    -> Result<AddOut, UdfError>;
    fn merge(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<Vec<u8>>, UdfError>;
    /// One result row per window (or an error naming its index).
    fn finish(&mut self, windows: Vec<WindowAcc>) -> Result<RowsOut, UdfError>;
}

/// Rows → sink payloads (one per row).
pub trait FormatStage: Send {
    fn format(&mut self, input: &Batch) -> Result<Encoded, UdfError>;
}
