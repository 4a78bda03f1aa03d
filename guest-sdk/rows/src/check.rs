//! The contract's layout rules, checked: what a component returns must pass these before
//! anything downstream sees it. This is the one definition; the host checks every world's
//! results with it, and the tests check that every batch [`BatchBuilder`](crate::BatchBuilder)
//! writes passes it.
//!
//! * packed values: `offsets` has one entry more than there are values, starts at 0, never
//!   decreases and stays within `data`;
//! * text is valid UTF-8 (each value on its own), `json` values are valid JSON (nulls hold
//!   placeholders and are not read);
//! * every column has `len` values, column names are unique, and a null bitmap has at most
//!   `ceil(len / 8)` bytes (missing trailing bytes mean "not null") with no bit set past `len`;
//! * each input record either produces output or errors, never both, and errors at most once;
//!   rows name their inputs in non-decreasing order;
//! * `finish` answers each window exactly once, with one result or one error.
//!
//! The checks walk each buffer once and allocate only to sort unsorted error lists.

use crate::{AddOut, Batch, Column, Encoded, Packed, RecordError, RowsOut, Values};

/// How a component's output breaks the contract. The message names the column, row, record
/// or window, so a dead letter says what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Breach {
    /// A column's value count differs from the batch's row count.
    #[error("column `{column}` has {found} values for {len} rows")]
    ColumnLength {
        /// The column.
        column: String,
        /// Values it has.
        found: usize,
        /// Rows in the batch.
        len: usize,
    },
    /// Two columns share a name.
    #[error("column name `{0}` appears more than once")]
    DuplicateColumn(String),
    /// A null bitmap longer than the batch needs.
    #[error(
        "column `{column}`: null bitmap has {found} bytes, more than the {max} that {len} rows need"
    )]
    LongBitmap {
        /// The column.
        column: String,
        /// Bytes it has.
        found: usize,
        /// Bytes `len` rows need at most.
        max: usize,
        /// Rows in the batch.
        len: usize,
    },
    /// A null bit set for a row past the end of the batch.
    #[error("column `{column}`: null bitmap marks row {row} null, past the batch's {len} rows")]
    NullPastEnd {
        /// The column.
        column: String,
        /// The first such row.
        row: usize,
        /// Rows in the batch.
        len: usize,
    },
    /// Packed offsets whose count does not match the values.
    #[error("{place}: {found} offsets for {values} values (needs one more than the values)")]
    OffsetCount {
        /// Column, payloads or keys.
        place: String,
        /// Offsets found.
        found: usize,
        /// Values expected.
        values: usize,
    },
    /// Packed offsets that do not start at 0.
    #[error("{place}: offsets start at {found}, not 0")]
    OffsetStart {
        /// Column, payloads or keys.
        place: String,
        /// The first offset.
        found: u32,
    },
    /// Packed offsets that decrease.
    #[error("{place}: offset {index} ({offset}) is less than the one before it ({previous})")]
    OffsetDecreasing {
        /// Column, payloads or keys.
        place: String,
        /// Index of the offending offset.
        index: usize,
        /// Its value.
        offset: u32,
        /// The offset before it.
        previous: u32,
    },
    /// A packed offset past the end of the data.
    #[error("{place}: offset {index} ({offset}) is past the end of the data ({data} bytes)")]
    OffsetPastData {
        /// Column, payloads or keys.
        place: String,
        /// Index of the offending offset.
        index: usize,
        /// Its value.
        offset: u32,
        /// Bytes of data.
        data: usize,
    },
    /// A text value that is not valid UTF-8.
    #[error("column `{column}`: row {row} is not valid UTF-8 text")]
    InvalidUtf8 {
        /// The column.
        column: String,
        /// The row.
        row: usize,
    },
    /// A `json` value that is not valid JSON.
    #[error("column `{column}`: row {row} is not valid JSON ({reason})")]
    InvalidJson {
        /// The column.
        column: String,
        /// The row.
        row: usize,
        /// What the JSON parser said.
        reason: String,
    },
    /// Results whose count does not match what the call needs (rows and origins, payloads
    /// and rows, accumulators and groups).
    #[error("returned {found} {what} for {expected} {of}")]
    Count {
        /// What was counted, e.g. `origins`.
        what: &'static str,
        /// How many there were.
        found: usize,
        /// How many there had to be.
        expected: usize,
        /// What they are counted against, e.g. `rows`.
        of: &'static str,
    },
    /// Origins that decrease.
    #[error(
        "row {row} comes from record {origin}, after a row from record {previous} (origins must not decrease)"
    )]
    OriginOrder {
        /// The output row.
        row: usize,
        /// Its origin.
        origin: u32,
        /// The origin of the row before it.
        previous: u32,
    },
    /// An origin or error index past the call's inputs.
    #[error("{what} names record {index}, but the call had {inputs} records")]
    IndexRange {
        /// `a row` or `an error`.
        what: &'static str,
        /// The index named.
        index: u32,
        /// Records in the call.
        inputs: u32,
    },
    /// Two errors for one record.
    #[error("reported more than one error for record {0}")]
    DuplicateError(u32),
    /// A record that produced output and an error.
    #[error("record {0} has both output and an error")]
    OutputAndError(u32),
    /// `finish` answered a window more than once.
    #[error("window {0} has more than one result")]
    WindowTwice(u32),
    /// `finish` did not answer a window.
    #[error("window {0} got neither a result nor an error")]
    WindowMissing(u32),
    /// A format step's failed row with a payload or key.
    #[error("row {0} failed but has a non-empty {1}")]
    FailedWithPayload(u32, &'static str),
}

fn count(what: &'static str, found: usize, expected: usize, of: &'static str) -> Breach {
    Breach::Count {
        what,
        found,
        expected,
        of,
    }
}

/// Checks `p` holds exactly `values` values laid out by the rules; `place` names it.
fn check_offsets(p: &Packed, values: usize, place: impl Fn() -> String) -> Result<(), Breach> {
    if p.offsets.len() != values + 1 {
        return Err(Breach::OffsetCount {
            place: place(),
            found: p.offsets.len(),
            values,
        });
    }
    let mut previous = 0u32;
    if let Some(&first) = p.offsets.first()
        && first != 0
    {
        return Err(Breach::OffsetStart {
            place: place(),
            found: first,
        });
    }
    let mut bad = false;
    for &o in &p.offsets {
        bad |= o < previous;
        previous = o;
    }
    if bad && let Some(index) = p.offsets.windows(2).position(|w| w[1] < w[0]) {
        return Err(Breach::OffsetDecreasing {
            place: place(),
            index: index + 1,
            offset: p.offsets[index + 1],
            previous: p.offsets[index],
        });
    }
    // Non-decreasing, so the last offset is the largest.
    if previous as usize > p.data.len() {
        let index = p
            .offsets
            .iter()
            .position(|&o| o as usize > p.data.len())
            .unwrap_or(values);
        return Err(Breach::OffsetPastData {
            place: place(),
            index,
            offset: p.offsets[index],
            data: p.data.len(),
        });
    }
    Ok(())
}

/// Whether byte `i` of valid UTF-8 `text` starts a character (or is its end).
fn on_char_boundary(text: &[u8], i: usize) -> bool {
    text.get(i).is_none_or(|&b| (b as i8) >= -0x40)
}

impl Column {
    fn check(&self, len: usize) -> Result<(), Breach> {
        let name = || format!("column `{}`", self.name);
        if self.values.len() != len {
            return Err(Breach::ColumnLength {
                column: self.name.clone(),
                found: self.values.len(),
                len,
            });
        }
        let max = len.div_ceil(8);
        if self.nulls.len() > max {
            return Err(Breach::LongBitmap {
                column: self.name.clone(),
                found: self.nulls.len(),
                max,
                len,
            });
        }
        if self.nulls.len() == max
            && !len.is_multiple_of(8)
            && let Some(&last) = self.nulls.last()
            && last >> (len % 8) != 0
        {
            let past = last >> (len % 8);
            return Err(Breach::NullPastEnd {
                column: self.name.clone(),
                row: len + past.trailing_zeros() as usize,
                len,
            });
        }
        match &self.values {
            Values::Boolean(_) | Values::Integer(_) | Values::Float(_) => Ok(()),
            Values::Binary(p) => check_offsets(p, len, name),
            Values::Text(p) => {
                check_offsets(p, len, name)?;
                let end = p.offsets.last().map_or(0, |&e| e as usize);
                let text = &p.data[..end];
                let valid = std::str::from_utf8(text).is_ok()
                    && p.offsets
                        .iter()
                        .all(|&o| on_char_boundary(text, o as usize));
                if valid {
                    return Ok(());
                }
                let row = (0..len)
                    .find(|&i| p.get(i).is_none_or(|v| std::str::from_utf8(v).is_err()))
                    .unwrap_or(0);
                Err(Breach::InvalidUtf8 {
                    column: self.name.clone(),
                    row,
                })
            }
            Values::Json(p) => {
                check_offsets(p, len, name)?;
                for row in (0..len).filter(|&i| !self.is_null(i)) {
                    let value = p.get(row).unwrap_or_default();
                    if let Err(err) = serde_json::from_slice::<serde::de::IgnoredAny>(value) {
                        return Err(Breach::InvalidJson {
                            column: self.name.clone(),
                            row,
                            reason: err.to_string(),
                        });
                    }
                }
                Ok(())
            }
        }
    }
}

impl Batch {
    /// Checks the batch against the contract's layout rules: every column has `len` values,
    /// names are unique, null bitmaps are no longer than `len` rows need, packed offsets start
    /// at 0, never decrease and stay within the data, text is UTF-8 and `json` values are JSON.
    ///
    /// ```
    /// use rivulet_rows::{Batch, BatchBuilder, Breach, Column, Packed, Values};
    ///
    /// let mut builder = BatchBuilder::new();
    /// builder.push(&serde_json::json!({ "name": "a" }))?;
    /// assert_eq!(builder.finish().check(), Ok(()));
    ///
    /// let bad = Packed { data: b"abc".to_vec(), offsets: vec![0, 7] };
    /// let batch = Batch { len: 1, columns: vec![Column::new("name", Values::Text(bad))] };
    /// assert_eq!(
    ///     batch.check().map_err(|e| e.to_string()),
    ///     Err("column `name`: offset 1 (7) is past the end of the data (3 bytes)".to_owned())
    /// );
    /// # Ok::<(), rivulet_rows::RowError>(())
    /// ```
    pub fn check(&self) -> Result<(), Breach> {
        let len = self.len as usize;
        for column in &self.columns {
            column.check(len)?;
        }
        check_unique_names(&self.columns)
    }
}

fn check_unique_names(columns: &[Column]) -> Result<(), Breach> {
    let duplicate = |name: &str| Err(Breach::DuplicateColumn(name.to_owned()));
    if columns.len() <= 16 {
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].iter().any(|d| d.name == c.name) {
                return duplicate(&c.name);
            }
        }
        return Ok(());
    }
    let mut names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    match names.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => duplicate(w[0]),
        None => Ok(()),
    }
}

/// Error indices, sorted; each must name an input and appear once.
fn error_indices(errors: &[RecordError], inputs: u32) -> Result<Vec<u32>, Breach> {
    let mut indices: Vec<u32> = errors.iter().map(|e| e.index).collect();
    if !indices.is_sorted() {
        indices.sort_unstable();
    }
    if let Some(&last) = indices.last()
        && last >= inputs
    {
        return Err(Breach::IndexRange {
            what: "an error",
            index: last,
            inputs,
        });
    }
    match indices.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(Breach::DuplicateError(w[0])),
        None => Ok(indices),
    }
}

/// The first index in both sorted lists.
fn first_common(a: &[u32], b: &[u32]) -> Option<u32> {
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        match x.cmp(&y) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return Some(x),
        }
    }
    None
}

impl RowsOut {
    /// Checks a parse or map step's output for a call with `inputs` records: the rows'
    /// layout, one origin per row (non-decreasing, in range), errors in range and at most one
    /// per record, and no record with both rows and an error.
    pub fn check(&self, inputs: u32) -> Result<(), Breach> {
        self.rows.check()?;
        let len = self.rows.len as usize;
        if self.origins.len() != len {
            return Err(count("origins", self.origins.len(), len, "rows"));
        }
        if let Some(row) = self.origins.windows(2).position(|w| w[1] < w[0]) {
            return Err(Breach::OriginOrder {
                row: row + 1,
                origin: self.origins[row + 1],
                previous: self.origins[row],
            });
        }
        if let Some(&last) = self.origins.last()
            && last >= inputs
        {
            return Err(Breach::IndexRange {
                what: "a row",
                index: last,
                inputs,
            });
        }
        if self.errors.is_empty() {
            return Ok(());
        }
        let errors = error_indices(&self.errors, inputs)?;
        match first_common(&self.origins, &errors) {
            Some(index) => Err(Breach::OutputAndError(index)),
            None => Ok(()),
        }
    }

    /// Checks an aggregate's `finish` output for `windows` windows: as [`RowsOut::check`],
    /// and each window answered exactly once, by one result row or one error.
    pub fn check_finish(&self, windows: u32) -> Result<(), Breach> {
        self.check(windows)?;
        if let Some(w) = self.origins.windows(2).find(|w| w[0] == w[1]) {
            return Err(Breach::WindowTwice(w[0]));
        }
        let answered = self.origins.len() + self.errors.len();
        if answered != windows as usize {
            let mut seen = vec![false; windows as usize];
            for &i in self
                .origins
                .iter()
                .chain(self.errors.iter().map(|e| &e.index))
            {
                seen[i as usize] = true;
            }
            let missing = seen.iter().position(|&s| !s).unwrap_or(0);
            return Err(Breach::WindowMissing(missing as u32));
        }
        Ok(())
    }
}

impl Encoded {
    /// Checks a format step's output for `rows` input rows: one payload (and key, when keys
    /// are set) per row, packed by the rules; errors in range and at most one per row; a
    /// failed row's payload and key empty.
    pub fn check(&self, rows: u32) -> Result<(), Breach> {
        let n = rows as usize;
        if self.payloads.len() != n {
            return Err(count("payloads", self.payloads.len(), n, "rows"));
        }
        check_offsets(&self.payloads, n, || "payloads".to_owned())?;
        if let Some(keys) = &self.keys {
            if keys.len() != n {
                return Err(count("keys", keys.len(), n, "rows"));
            }
            check_offsets(keys, n, || "keys".to_owned())?;
        }
        if self.errors.is_empty() {
            return Ok(());
        }
        for index in error_indices(&self.errors, rows)? {
            let i = index as usize;
            if self.payloads.get(i).is_some_and(|p| !p.is_empty()) {
                return Err(Breach::FailedWithPayload(index, "payload"));
            }
            if let Some(keys) = &self.keys
                && keys.get(i).is_some_and(|k| !k.is_empty())
            {
                return Err(Breach::FailedWithPayload(index, "key"));
            }
        }
        Ok(())
    }
}

impl AddOut {
    /// Checks an aggregate's `add` output for `groups` accumulators and `rows` rows: one
    /// accumulator per group, errors in range and at most one per row.
    pub fn check(&self, groups: usize, rows: u32) -> Result<(), Breach> {
        if self.accs.len() != groups {
            return Err(count("accumulators", self.accs.len(), groups, "groups"));
        }
        error_indices(&self.errors, rows).map(drop)
    }
}
