//! Columnar row batches for rivulet, and serde (de)serialization of plain Rust types into them.
//!
//! Rows cross the WebAssembly boundary column by column. The types in this crate mirror the
//! `packed`, `values`, `column`, `batch`, `raw-batch`, `header` and `scalar` WIT records field
//! for field, so converting to and from generated bindings only moves fields around.
//!
//! * [`BatchBuilder`] appends any `Serialize` value (usually a struct) as a row.
//! * [`Batch::rows`] / [`Batch::row`] read rows back into any `Deserialize` type, borrowing text.
//! * [`RawBatch`] holds undecoded records (key, payload, headers) as they come from a source.
//! * [`Batch::check`], [`RowsOut::check`], [`Encoded::check`], [`AddOut::check`]: the
//!   contract's layout rules, which a component's output must pass ([`Breach`] says how it
//!   failed).
//!
//! ```
//! use rivulet_rows::BatchBuilder;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Order {
//!     id: i64,
//!     status: String,
//!     amount: Option<f64>,
//! }
//!
//! let mut builder = BatchBuilder::new();
//! builder.push(&Order { id: 1, status: "new".into(), amount: Some(9.5) })?;
//! builder.push(&Order { id: 2, status: "paid".into(), amount: None })?;
//! let batch = builder.finish();
//! assert_eq!(batch.len, 2);
//!
//! let orders = batch.rows::<Order>().collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(orders[1], Order { id: 2, status: "paid".into(), amount: None });
//! # Ok::<(), rivulet_rows::RowError>(())
//! ```
#![warn(missing_docs)]

mod batch;
mod check;
#[cfg(test)]
mod check_tests;
mod contract;
mod de;
mod json;
mod raw;
mod scalar;
mod ser;
#[cfg(test)]
mod tests;
pub mod time;

pub use batch::{Batch, Column, Packed, Values};
pub use check::Breach;
pub use contract::{AddOut, Encoded, RecordError, RowsOut, WindowAcc};
pub use raw::{Header, RawBatch, RawRecord};
pub use scalar::Scalar;
pub use ser::BatchBuilder;

/// Everything that can go wrong building, reading or combining batches.
///
/// The message is complete on its own: the row, the field and any JSON error are part of
/// `Display` (nothing is left to `source()`), e.g. `row 3: missing field "status"`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// An error while building or reading the row with this index.
    #[error("row {row}: {inner}")]
    Row {
        /// Index of the row in its batch.
        row: usize,
        /// What went wrong.
        inner: Box<RowError>,
    },
    /// An error in the value of one field (column).
    #[error("field \"{field}\": {inner}")]
    Field {
        /// Field (column) name.
        field: String,
        /// What went wrong.
        inner: Box<RowError>,
    },
    /// A required field is absent from the row, or null.
    #[error("missing field \"{0}\"")]
    MissingField(String),
    /// A value does not have the type its column or target field needs.
    #[error("expected {expected}, found {found}")]
    TypeMismatch {
        /// The type that was needed, e.g. `a number`.
        expected: &'static str,
        /// The type that was there, e.g. `text`.
        found: &'static str,
    },
    /// An integer outside the `i64` range.
    #[error("value {0} does not fit a 64-bit signed integer")]
    IntegerOverflow(String),
    /// A text value is not valid UTF-8.
    #[error("text value is not valid UTF-8")]
    InvalidUtf8,
    /// A JSON column value could not be written or read.
    #[error("JSON value: {0}")]
    Json(serde_json::Error),
    /// The same field was written twice to one row.
    #[error("field appears more than once in the row")]
    DuplicateField,
    /// A map key that is not a string, an integer or a unit enum variant.
    #[error("map keys must be strings, integers or unit variants")]
    InvalidKey,
    /// A row index past the end of the batch.
    #[error("row {index} is out of range for a batch of {len} rows")]
    OutOfRange {
        /// The requested row.
        index: usize,
        /// Number of rows in the batch.
        len: usize,
    },
    /// A non-struct value was read from a row that has no single column to read it from.
    #[error("a plain value needs exactly one column (or one named \"value\"), found {0} columns")]
    NotSingleColumn(usize),
    /// More than `u32::MAX` rows, or more than 4 GiB of data in one column.
    #[error("batch exceeds the limit of u32::MAX rows or 4 GiB per column")]
    TooLarge,
    /// The batch does not follow the layout rules (e.g. a column shorter than the batch).
    #[error("malformed batch: {0}")]
    Malformed(&'static str),
    /// Any other error, usually raised by a `Serialize` or `Deserialize` implementation.
    #[error("{0}")]
    Custom(String),
}

impl RowError {
    pub(crate) fn in_field(self, field: &str) -> Self {
        Self::Field {
            field: field.to_owned(),
            inner: Box::new(self),
        }
    }

    pub(crate) fn in_row(self, row: usize) -> Self {
        Self::Row {
            row,
            inner: Box::new(self),
        }
    }
}

impl From<serde_json::Error> for RowError {
    fn from(e: serde_json::Error) -> Self {
        Self::Json(e)
    }
}

impl serde::de::Error for RowError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Self::Custom(msg.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        Self::MissingField(field.to_owned())
    }
}
