//! Reading the job's reference tables from a map step: [`lookup`].
//!
//! Inside rivulet (wasm32) a lookup is a call to the host's read-only `lookup` function
//! (`rivulet:udf/lookup` in `wit/udf.wit`); the row comes back in the same columnar batch
//! type every other row crosses the boundary in, and is read into your type like an input
//! row. Built natively (unit tests, benchmarks), lookups read the rows given to
//! [`testing::insert_row`].

use crate::Error;
use rivulet_rows::Batch;
use serde::de::DeserializeOwned;
use std::fmt::Display;

/// The row of `key` in the reference table `table`, read into `T` (`None` when the key is
/// not in the table).
///
/// The stage must list the table in its spec entry (`tables = ["regions"]`); asking for
/// another one is an error naming it, as is a row that does not fit `T`. Keys match by
/// their text, so `lookup("stores", 42)` finds the row whose key is `42` or `"42"`.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct Region { name: String }
///
/// #[derive(Deserialize, Serialize)]
/// struct Order { order_id: String, region: String }
///
/// #[derive(Serialize)]
/// struct Named { order_id: String, region_name: Option<String> }
///
/// /// Adds the region's name (null when the region is not in the table).
/// #[rivulet_sdk::map]
/// fn add_region_name(order: Order) -> Result<Named, rivulet_sdk::Error> {
///     let region = rivulet_sdk::lookup::<Region>("regions", &order.region)?;
///     Ok(Named { order_id: order.order_id, region_name: region.map(|r| r.name) })
/// }
///
/// # fn main() {
/// rivulet_sdk::testing::insert_row("regions", "eu-west", &serde_json::json!({"region": "eu-west", "name": "Europe (Ireland)"}));
/// let named = add_region_name(Order { order_id: "o1".into(), region: "eu-west".into() }).unwrap();
/// assert_eq!(named.region_name.as_deref(), Some("Europe (Ireland)"));
/// let missed = add_region_name(Order { order_id: "o2".into(), region: "mars".into() }).unwrap();
/// assert_eq!(missed.region_name, None);
/// # }
/// ```
///
/// Within one batch, the host is asked once per (table, key): later lookups of the same key
/// read the answer it gave (a workshop batch of 1,024 orders over five regions makes five
/// calls, not 1,024). A table updated while the job runs is seen from the next batch on.
pub fn lookup<T: DeserializeOwned>(table: &str, key: impl Display) -> Result<Option<T>, Error> {
    let key = key.to_string();
    host::with_row(table, &key, |row| match row {
        Ok(Some(row)) => read(row, table, &key).map(Some),
        Ok(None) => Ok(None),
        Err(err) => Err(Error::new(err)),
    })
}

/// The one row of `row` as `T`; an error names the table and key.
fn read<T: DeserializeOwned>(row: &Batch, table: &str, key: &str) -> Result<T, Error> {
    row.row::<T>(0).map_err(|err| {
        Error::new(format!(
            "the row of {key:?} in table `{table}` does not fit `{}`: {err}",
            std::any::type_name::<T>()
        ))
    })
}

#[cfg(target_arch = "wasm32")]
mod host {
    mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "table-reader",
            with: {
                "rivulet:udf/types@0.1.0": crate::__private::types,
            },
        });
    }

    use rivulet_rows::Batch;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// The most answers one batch keeps (a batch of distinct keys beyond this asks the host
    /// for each of the rest).
    const MEMO_CAP: usize = 4096;

    type Answer = Result<Option<Batch>, String>;

    thread_local! {
        /// The host's answers in the current batch, by table then key.
        static MEMO: RefCell<HashMap<String, HashMap<String, Answer>>> =
            RefCell::new(HashMap::new());
    }

    /// Forgets the previous batch's answers (a table may have changed since).
    pub fn new_batch() {
        MEMO.with(|memo| memo.borrow_mut().clear());
    }

    /// Calls `f` with the host's answer for `key` in `table`, asking the host only for the
    /// batch's first lookup of that key.
    pub fn with_row<R>(table: &str, key: &str, f: impl FnOnce(&Answer) -> R) -> R {
        MEMO.with(|memo| {
            let mut memo = memo.borrow_mut();
            if let Some(answer) = memo.get(table).and_then(|rows| rows.get(key)) {
                return f(answer);
            }
            let answer = bindings::rivulet::udf::lookup::lookup(table, key);
            let held: usize = memo.values().map(HashMap::len).sum();
            if held >= MEMO_CAP {
                return f(&answer);
            }
            let rows = memo.entry(table.to_owned()).or_default();
            f(rows.entry(key.to_owned()).or_insert(answer))
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    use rivulet_rows::Batch;

    /// Natively there are no batches to remember answers over: every lookup reads the
    /// test's rows as they are now.
    pub fn new_batch() {}

    pub fn with_row<R>(
        table: &str,
        key: &str,
        f: impl FnOnce(&Result<Option<Batch>, String>) -> R,
    ) -> R {
        f(&super::testing::lookup(table, key))
    }
}

/// Called by `#[map]`'s generated code at the start of every batch.
pub(crate) fn new_batch() {
    host::new_batch();
}

/// Tables for a step built natively (its unit tests): what [`lookup`] reads outside
/// rivulet. Each thread has its own.
#[cfg(not(target_arch = "wasm32"))]
pub mod testing {
    use rivulet_rows::{Batch, BatchBuilder};
    use serde::Serialize;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        static TABLES: RefCell<BTreeMap<String, BTreeMap<String, Batch>>> =
            const { RefCell::new(BTreeMap::new()) };
    }

    /// Sets the row of `key` in `table` (creating the table), as a compacted topic's
    /// update would.
    ///
    /// # Panics
    /// When `row` cannot be stored as a row (it is not a struct or map).
    pub fn insert_row<T: Serialize + ?Sized>(table: &str, key: &str, row: &T) {
        let mut builder = BatchBuilder::new();
        if let Err(err) = builder.push(row) {
            panic!("a test row of table `{table}` cannot be stored: {err}");
        }
        let batch = builder.finish();
        TABLES.with(|tables| {
            tables
                .borrow_mut()
                .entry(table.to_owned())
                .or_default()
                .insert(key.to_owned(), batch);
        });
    }

    /// Deletes the row of `key` in `table` (a tombstone).
    pub fn delete_row(table: &str, key: &str) {
        TABLES.with(|tables| {
            if let Some(rows) = tables.borrow_mut().get_mut(table) {
                rows.remove(key);
            }
        });
    }

    pub(crate) fn lookup(table: &str, key: &str) -> Result<Option<Batch>, String> {
        TABLES.with(|tables| match tables.borrow().get(table) {
            Some(rows) => Ok(rows.get(key).cloned()),
            None => Err(format!(
                "no table `{table}` (in a native build, give it rows with rivulet_sdk::testing::insert_row)"
            )),
        })
    }
}
