//! # rivulet-sdk: pipeline steps as plain Rust functions
//!
//! A rivulet pipeline runs each step's logic as a sandboxed WebAssembly component. With this
//! crate a step is one function (or, for aggregates, one trait impl) over your own serde
//! types, under one attribute:
//!
//! | attribute | you write | the host calls it with |
//! |---|---|---|
//! | [`macro@parse`] | `fn(RawRecord) -> rows` | raw Kafka records |
//! | [`macro@map`] | `fn(Row) -> rows` (map, filter, flat-map) | rows |
//! | [`macro@aggregate`] | `impl Aggregate for T` | rows of one key and window |
//! | [`macro@format`] | `fn(Row) -> payload` | rows on their way to a sink |
//!
//! "rows" is `T`, `Option<T>` (filter) or `Vec<T>` (flat-map) of any `Serialize` type, or a
//! `Result` of one of them whose error (anything `Display`) becomes that record's error:
//! the host counts it and sends the record to the dead-letter path; nothing traps.
//!
//! A map step can read the job's reference tables with [`lookup`] (read-only; the stage
//! lists the tables it reads in the spec).
//!
//! Build a step with `cargo build --target wasm32-wasip2 --release` (crate type `cdylib`);
//! the `.wasm` file is the component. The same crate also builds natively, so its logic can
//! be unit-tested with `cargo test` like any Rust code.
//!
//! ```
//! use rivulet_sdk::{Error, RawRecord};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, Serialize)]
//! struct Order {
//!     status: String,
//!     amount: f64,
//! }
//!
//! /// Keeps well-formed orders; a malformed one becomes an error naming why.
//! #[rivulet_sdk::parse]
//! fn parse(rec: RawRecord) -> Result<Option<Order>, Error> {
//!     Ok(Some(serde_json::from_slice(rec.payload)?))
//! }
//! # fn main() {}
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

mod acc;
mod lookup;
pub use lookup::lookup;
#[cfg(not(target_arch = "wasm32"))]
pub use lookup::testing;
/// ISO-8601 timestamps (shared with the host, which does not depend on this crate).
pub use rivulet_rows::time;

pub use rivulet_rows::{RawRecord, Scalar};
/// Marks an `impl Aggregate for T` as the component's aggregate step.
///
/// ```
/// use rivulet_sdk::{Aggregate, Window};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct Order { status: String }
///
/// #[derive(Serialize)]
/// struct StatusCount { status: String, order_count: u64 }
///
/// struct CountOrders;
///
/// #[rivulet_sdk::aggregate]
/// impl Aggregate for CountOrders {
///     type Input = Order;
///     type Acc = u64;
///     type Output = StatusCount;
///
///     fn create() -> u64 { 0 }
///     fn add(acc: &mut u64, _order: Order) { *acc += 1 }
///     fn merge(a: u64, b: u64) -> u64 { a + b }
///     fn finish(acc: u64, window: &Window) -> StatusCount {
///         StatusCount { status: window.key.to_string(), order_count: acc }
///     }
/// }
/// # fn main() {}
/// ```
pub use rivulet_sdk_macros::aggregate;
/// Marks `fn(Row) -> payload` as the component's format step.
///
/// The payload is a `String`, `Vec<u8>` or [`Payload`] (to set the Kafka key too), or a
/// `Result` of one of them.
///
/// ```
/// use rivulet_sdk::Payload;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Count { status: String, order_count: u64 }
///
/// #[rivulet_sdk::format]
/// fn format(row: Count) -> Payload {
///     Payload::keyed(row.status.clone(), format!("{}={}", row.status, row.order_count))
/// }
/// # fn main() {}
/// ```
pub use rivulet_sdk_macros::format;
/// Marks `fn(Row) -> rows` as the component's map step: map (`T`), filter (`Option<T>`)
/// or flat-map (`Vec<T>`), optionally as a `Result`.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize, Serialize)]
/// struct Order { status: String, amount: f64 }
///
/// /// Keeps only shipped orders.
/// #[rivulet_sdk::map]
/// fn shipped(order: Order) -> Option<Order> {
///     (order.status == "SHIPPED").then_some(order)
/// }
/// # fn main() {}
/// ```
pub use rivulet_sdk_macros::map;
/// Marks `fn(RawRecord) -> rows` as the component's parse step.
///
/// ```
/// use rivulet_sdk::{Error, RawRecord};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Line<'a> { text: &'a str, offset: i64 }
///
/// #[rivulet_sdk::parse]
/// fn parse(rec: RawRecord) -> Result<Line<'_>, Error> {
///     Ok(Line { text: rec.payload_str()?, offset: rec.offset })
/// }
/// # fn main() {}
/// ```
pub use rivulet_sdk_macros::parse;

/// A step's error for one record: a message for the dead-letter record and the logs.
///
/// Converts from the errors a step typically meets, so `?` works on them.
///
/// ```
/// use rivulet_sdk::Error;
///
/// let err = Error::new("amount must be positive");
/// assert_eq!(err.to_string(), "amount must be positive");
/// let err: Error = serde_json::from_str::<u32>("x").unwrap_err().into();
/// assert!(err.to_string().starts_with("invalid JSON: "));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error(message.to_owned())
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error(format!("invalid JSON: {err}"))
    }
}

impl From<rivulet_rows::RowError> for Error {
    fn from(err: rivulet_rows::RowError) -> Self {
        Error(err.to_string())
    }
}

impl From<std::str::Utf8Error> for Error {
    fn from(err: std::str::Utf8Error) -> Self {
        Error(format!("invalid UTF-8: {err}"))
    }
}

impl From<time::TimeError> for Error {
    fn from(err: time::TimeError) -> Self {
        Error(err.to_string())
    }
}

/// The window an aggregate result belongs to.
///
/// ```
/// use rivulet_sdk::{Scalar, Window};
///
/// let w = Window { key: Scalar::Text("SHIPPED".into()), start_ms: 1_716_467_670_000, end_ms: 1_716_467_700_000 };
/// assert_eq!(w.start_iso(), "2024-05-23T12:34:30Z");
/// assert_eq!(w.end_iso(), "2024-05-23T12:35:00Z");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The key the window's rows were grouped by (`Null` when the pipeline has no key).
    pub key: Scalar,
    /// Inclusive start, milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// Exclusive end, milliseconds since the Unix epoch.
    pub end_ms: i64,
}

impl Window {
    /// The start as ISO-8601 UTC text.
    pub fn start_iso(&self) -> String {
        time::iso8601(self.start_ms)
    }

    /// The end as ISO-8601 UTC text.
    pub fn end_iso(&self) -> String {
        time::iso8601(self.end_ms)
    }
}

/// An aggregate over one key's rows in one window.
///
/// The host keeps the accumulator (as bytes: `Acc` serialized as JSON, NaN and ±infinity as
/// the strings `"NaN"`, `"Infinity"` and `"-Infinity"`) between calls, so the
/// component holds no state and can be restarted or swapped at any batch boundary. Change
/// [`Aggregate::STATE_VERSION`] whenever `Acc`'s shape changes: the host then lets windows
/// opened with the old module finish with it.
///
/// ```
/// use rivulet_sdk::{Aggregate, Window};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct Order { amount: f64 }
///
/// #[derive(Serialize, Deserialize, Default)]
/// struct Sum { total: f64, count: u64 }
///
/// #[derive(Serialize)]
/// struct Avg { avg_amount: f64 }
///
/// struct AvgAmount;
///
/// #[rivulet_sdk::aggregate]
/// impl Aggregate for AvgAmount {
///     type Input = Order;
///     type Acc = Sum;
///     type Output = Avg;
///     const STATE_VERSION: u32 = 2;
///
///     fn create() -> Sum { Sum::default() }
///     fn add(acc: &mut Sum, order: Order) { acc.total += order.amount; acc.count += 1 }
///     fn merge(a: Sum, b: Sum) -> Sum { Sum { total: a.total + b.total, count: a.count + b.count } }
///     fn finish(acc: Sum, _window: &Window) -> Avg {
///         Avg { avg_amount: if acc.count == 0 { 0.0 } else { acc.total / acc.count as f64 } }
///     }
/// }
/// # fn main() {}
/// ```
pub trait Aggregate {
    /// One input row.
    type Input: DeserializeOwned;
    /// The running state of one key in one window.
    type Acc: Serialize + DeserializeOwned;
    /// The result row of one key in one window.
    type Output: Serialize;
    /// Version of `Acc`'s layout; bump it when `Acc` changes.
    const STATE_VERSION: u32 = 1;

    /// The empty accumulator.
    fn create() -> Self::Acc;
    /// Adds one row.
    fn add(acc: &mut Self::Acc, input: Self::Input);
    /// Combines two accumulators of the same key and window.
    fn merge(a: Self::Acc, b: Self::Acc) -> Self::Acc;
    /// The result of a closed window.
    fn finish(acc: Self::Acc, window: &Window) -> Self::Output;
}

/// A sink record: payload bytes and an optional Kafka key.
///
/// ```
/// use rivulet_sdk::Payload;
///
/// let p = Payload::keyed("SHIPPED", "{\"order_count\":3}");
/// assert_eq!(p.key.as_deref(), Some(&b"SHIPPED"[..]));
/// assert_eq!(Payload::from("x").key, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Kafka key, if any.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub value: Vec<u8>,
}

impl Payload {
    /// A payload with a key.
    pub fn keyed(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Payload {
            key: Some(key.into()),
            value: value.into(),
        }
    }
}

impl From<String> for Payload {
    fn from(value: String) -> Self {
        Payload {
            key: None,
            value: value.into_bytes(),
        }
    }
}

impl From<&str> for Payload {
    fn from(value: &str) -> Self {
        Payload {
            key: None,
            value: value.as_bytes().to_vec(),
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(value: Vec<u8>) -> Self {
        Payload { key: None, value }
    }
}

/// Glue used by the macros' expansions. Not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::{Aggregate, Payload, Window};
    pub use rivulet_rows::{
        AddOut, Batch, BatchBuilder, Encoded, Packed, RawBatch, RecordError, RowError, RowsOut,
        WindowAcc,
    };
    use std::fmt::Display;
    pub use wit_bindgen;

    /// The WIT `types` interface, as the generated bindings see it.
    pub mod types {
        pub use rivulet_rows::{
            AddOut, Batch, Column, Encoded, Header, Packed, RawBatch, RecordError, RowsOut, Scalar,
            Values, WindowAcc,
        };
    }

    /// Starts a map batch: lookups from here on ask the host again.
    pub fn new_lookup_batch() {
        crate::lookup::new_batch();
    }

    /// Numbers the items of a batch (batches hold at most `u32::MAX` records).
    pub fn indexed<I: Iterator>(iter: I) -> impl Iterator<Item = (u32, I::Item)> {
        (0u32..).zip(iter)
    }

    /// Collects a parse or map step's output. A record either has rows or one error: if one
    /// of a record's rows cannot be stored, its rows so far are taken back, the error is
    /// kept, and its later rows are ignored.
    #[derive(Default)]
    pub struct RowsOutBuilder {
        rows: BatchBuilder,
        origins: Vec<u32>,
        errors: Vec<RecordError>,
        /// The record whose row could not be stored.
        failed: Option<u32>,
    }

    impl RowsOutBuilder {
        pub fn new() -> Self {
            Self::default()
        }

        pub fn push<T: serde::Serialize + ?Sized>(&mut self, index: u32, row: &T) {
            if self.failed == Some(index) {
                return;
            }
            match self.rows.push(row) {
                Ok(()) => self.origins.push(index),
                Err(err) => {
                    let kept = self.origins.partition_point(|&o| o < index);
                    self.origins.truncate(kept);
                    self.rows.truncate(kept);
                    self.failed = Some(index);
                    self.errors.push(RecordError {
                        index,
                        message: format!("output row cannot be stored: {err}"),
                    });
                }
            }
        }

        pub fn error(&mut self, index: u32, err: &dyn Display) {
            self.errors.push(RecordError {
                index,
                message: err.to_string(),
            });
        }

        pub fn input_error(&mut self, index: u32, err: &RowError) {
            self.errors.push(RecordError {
                index,
                message: format!("input row does not fit the step's type: {err}"),
            });
        }

        pub fn finish(self) -> RowsOut {
            RowsOut {
                rows: self.rows.finish(),
                origins: self.origins,
                errors: self.errors,
            }
        }
    }

    /// Collects a format step's output: exactly one payload slot per input row.
    pub struct EncodedBuilder {
        payloads: Packed,
        keys: Option<Packed>,
        count: usize,
        errors: Vec<RecordError>,
    }

    impl Default for EncodedBuilder {
        fn default() -> Self {
            Self::new()
        }
    }

    impl EncodedBuilder {
        pub fn new() -> Self {
            EncodedBuilder {
                payloads: Packed::new(),
                keys: None,
                count: 0,
                errors: Vec::new(),
            }
        }

        pub fn push(&mut self, payload: impl Into<Payload>) {
            let Payload { key, value } = payload.into();
            self.payloads.push(&value);
            match (key, &mut self.keys) {
                (Some(key), Some(keys)) => keys.push(&key),
                (Some(key), None) => {
                    let mut keys = Packed::new();
                    for _ in 0..self.count {
                        keys.push(&[]);
                    }
                    keys.push(&key);
                    self.keys = Some(keys);
                }
                (None, Some(keys)) => keys.push(&[]),
                (None, None) => {}
            }
            self.count += 1;
        }

        pub fn error(&mut self, index: u32, err: &dyn Display) {
            self.push(Vec::new());
            self.errors.push(RecordError {
                index,
                message: err.to_string(),
            });
        }

        pub fn input_error(&mut self, index: u32, err: &RowError) {
            self.push(Vec::new());
            self.errors.push(RecordError {
                index,
                message: format!("input row does not fit the step's type: {err}"),
            });
        }

        pub fn finish(self) -> Encoded {
            Encoded {
                payloads: self.payloads,
                keys: self.keys,
                errors: self.errors,
            }
        }
    }

    fn encode_acc<A: Aggregate>(acc: &A::Acc) -> Result<Vec<u8>, String> {
        crate::acc::encode(acc).map_err(|err| format!("accumulator cannot be encoded: {err}"))
    }

    /// The accumulator in `bytes`; the error says whether the bytes are not JSON at all or
    /// do not fit the accumulator type, and where.
    fn decode_acc<A: Aggregate>(bytes: &[u8]) -> Result<A::Acc, String> {
        crate::acc::decode(bytes).map_err(|err| {
            let ty = std::any::type_name::<A::Acc>();
            match err.classify() {
                serde_json::error::Category::Data => {
                    format!("accumulator does not fit `{ty}`: {err}")
                }
                _ => format!(
                    "accumulator is not valid JSON ({} bytes): {err}",
                    bytes.len()
                ),
            }
        })
    }

    pub fn aggregate_create<A: Aggregate>() -> Vec<u8> {
        match encode_acc::<A>(&A::create()) {
            Ok(bytes) => bytes,
            // A type that cannot encode its own empty state is a bug in the step: trap with why.
            Err(message) => panic!("{message}"),
        }
    }

    pub fn aggregate_add<A: Aggregate>(accs: Vec<Vec<u8>>, rows: &Batch, groups: &[u32]) -> AddOut {
        let mut errors = Vec::new();
        let mut state: Vec<Result<Option<A::Acc>, String>> =
            accs.iter().map(|_| Ok(None)).collect();
        for (index, &group) in super::__private::indexed(groups.iter()) {
            let Some(slot) = state.get_mut(group as usize) else {
                errors.push(RecordError {
                    index,
                    message: format!("group {group} has no accumulator"),
                });
                continue;
            };
            if let Ok(None) = slot {
                *slot = decode_acc::<A>(&accs[group as usize]).map(Some);
            }
            let acc = match slot {
                Ok(Some(acc)) => acc,
                Ok(None) => continue,
                Err(message) => {
                    errors.push(RecordError {
                        index,
                        message: message.clone(),
                    });
                    continue;
                }
            };
            match rows.row::<A::Input>(index as usize) {
                Ok(input) => A::add(acc, input),
                Err(err) => errors.push(RecordError {
                    index,
                    message: format!("input row does not fit the step's type: {err}"),
                }),
            }
        }
        let mut out = Vec::with_capacity(accs.len());
        for (old, new) in accs.into_iter().zip(state) {
            match new {
                Ok(Some(acc)) => match encode_acc::<A>(&acc) {
                    Ok(bytes) => out.push(bytes),
                    Err(message) => panic!("{message}"),
                },
                _ => out.push(old),
            }
        }
        AddOut { accs: out, errors }
    }

    pub fn aggregate_merge<A: Aggregate>(
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Vec<Vec<u8>>, String> {
        pairs
            .into_iter()
            .map(|(a, b)| {
                let merged = A::merge(decode_acc::<A>(&a)?, decode_acc::<A>(&b)?);
                encode_acc::<A>(&merged)
            })
            .collect()
    }

    pub fn aggregate_finish<A: Aggregate>(windows: Vec<WindowAcc>) -> RowsOut {
        let mut out = RowsOutBuilder::new();
        for (index, window) in indexed(windows.into_iter()) {
            match decode_acc::<A>(&window.acc) {
                Ok(acc) => {
                    let bounds = Window {
                        key: window.key,
                        start_ms: window.window_start,
                        end_ms: window.window_end,
                    };
                    out.push(index, &A::finish(acc, &bounds));
                }
                Err(message) => out.error(index, &message),
            }
        }
        out.finish()
    }
}
