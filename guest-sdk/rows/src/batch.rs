use serde_json::{Map, Value};

use crate::{RowError, Scalar};

pub(crate) fn get_bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

pub(crate) fn set_bit(bits: &mut Vec<u8>, i: usize) {
    let byte = i / 8;
    if bits.len() <= byte {
        bits.resize(byte + 1, 0);
    }
    bits[byte] |= 1 << (i % 8);
}

/// Cuts a lazily grown bitmap back to `n` bits; trailing zero bytes are dropped, so a bitmap
/// that only ever grew when a null was set is restored exactly.
fn truncate_bits(bits: &mut Vec<u8>, n: usize) {
    bits.truncate(n.div_ceil(8));
    if !n.is_multiple_of(8)
        && bits.len() == n.div_ceil(8)
        && let Some(last) = bits.last_mut()
    {
        *last &= (1u8 << (n % 8)) - 1;
    }
    while bits.last() == Some(&0) {
        bits.pop();
    }
}

/// Variable-length values (text, binary or JSON) packed into one buffer.
///
/// Value `i` is `data[offsets[i]..offsets[i + 1]]`; `offsets` has `len + 1` entries starting
/// at 0.
///
/// ```
/// use rivulet_rows::Packed;
///
/// let mut p = Packed::new();
/// p.push(b"hello");
/// p.push(b"");
/// assert_eq!(p.len(), 2);
/// assert_eq!(p.get(0), Some(&b"hello"[..]));
/// assert_eq!(p.offsets, [0, 5, 5]);
/// assert_eq!(p.iter().collect::<Vec<_>>(), [&b"hello"[..], b""]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct Packed {
    /// The bytes of all values, back to back.
    pub data: Vec<u8>,
    /// Start of every value in `data`, followed by the end of the last one.
    pub offsets: Vec<u32>,
}

impl Default for Packed {
    fn default() -> Self {
        Self::new()
    }
}

impl Packed {
    /// Creates an empty buffer (`offsets == [0]`).
    pub fn new() -> Self {
        Self {
            data: Vec::new(),
            offsets: vec![0],
        }
    }

    /// Appends one value.
    ///
    /// # Panics
    /// Panics if `data` would grow beyond `u32::MAX` bytes.
    pub fn push(&mut self, value: &[u8]) {
        self.start();
        self.data.extend_from_slice(value);
        self.seal();
    }

    /// Value `i`, or `None` if `i` is out of range (or the offsets are inconsistent).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let start = *self.offsets.get(i)? as usize;
        let end = *self.offsets.get(i.checked_add(1)?)? as usize;
        self.data.get(start..end)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates over the values in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    /// Iterates over the values as text: `Ok` for a value that is valid UTF-8, `Err` with
    /// its bytes for one that is not. The buffer is validated once as a whole (each value is
    /// then a slice between two character boundaries), not value by value.
    ///
    /// ```
    /// use rivulet_rows::Packed;
    ///
    /// let mut p = Packed::new();
    /// p.push("héllo".as_bytes());
    /// p.push(b"\xff");
    /// p.push(b"ok");
    /// let text: Vec<_> = p.iter_text().collect();
    /// assert_eq!(text, [Ok("héllo"), Err(&b"\xff"[..]), Ok("ok")]);
    /// ```
    pub fn iter_text(&self) -> impl ExactSizeIterator<Item = Result<&str, &[u8]>> + '_ {
        let whole = std::str::from_utf8(&self.data).ok();
        (0..self.len()).map(move |i| {
            let bytes = self.get(i).unwrap_or_default();
            let span = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
            match whole {
                Some(text) if text.is_char_boundary(span.0) && text.is_char_boundary(span.1) => {
                    text.get(span.0..span.1).ok_or(bytes)
                }
                _ => std::str::from_utf8(bytes).map_err(|_| bytes),
            }
        })
    }

    fn start(&mut self) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
    }

    /// Ends a value that was written straight into `data`.
    pub(crate) fn seal(&mut self) {
        let Ok(end) = u32::try_from(self.data.len()) else {
            panic!("packed buffer exceeds 4 GiB");
        };
        self.offsets.push(end);
    }

    pub(crate) fn fits(&self, extra: usize) -> bool {
        self.data.len().saturating_add(extra) <= u32::MAX as usize
    }

    fn push_empty(&mut self, n: usize) {
        self.start();
        let end = self.offsets.last().copied().unwrap_or(0);
        self.offsets.extend(std::iter::repeat_n(end, n));
    }

    fn truncate(&mut self, n: usize) {
        if self.offsets.len() > n + 1 {
            self.offsets.truncate(n + 1);
            self.data
                .truncate(self.offsets.last().map_or(0, |&e| e as usize));
        }
    }

    fn extend(&mut self, other: &Packed) {
        self.start();
        let base = self.offsets.last().copied().unwrap_or(0);
        self.data.extend_from_slice(&other.data);
        let shifted = other
            .offsets
            .iter()
            .skip(1)
            .map(|&o| base.saturating_add(o));
        self.offsets.extend(shifted);
    }
}

/// The values of one column, one slot per row (null rows hold a placeholder).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(variant)
)]
pub enum Values {
    /// Booleans.
    #[cfg_attr(feature = "wasmtime", component(name = "boolean"))]
    Boolean(Vec<bool>),
    /// 64-bit signed integers.
    #[cfg_attr(feature = "wasmtime", component(name = "integer"))]
    Integer(Vec<i64>),
    /// 64-bit floats.
    #[cfg_attr(feature = "wasmtime", component(name = "float"))]
    Float(Vec<f64>),
    /// UTF-8 strings.
    #[cfg_attr(feature = "wasmtime", component(name = "text"))]
    Text(Packed),
    /// Byte strings.
    #[cfg_attr(feature = "wasmtime", component(name = "binary"))]
    Binary(Packed),
    /// Nested values (objects, arrays) as JSON text.
    #[cfg_attr(feature = "wasmtime", component(name = "json"))]
    Json(Packed),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Boolean,
    Integer,
    Float,
    Text,
    Binary,
    Json,
}

impl Kind {
    pub(crate) fn desc(self) -> &'static str {
        match self {
            Self::Boolean => "a boolean",
            Self::Integer => "an integer",
            Self::Float => "a float",
            Self::Text => "text",
            Self::Binary => "binary data",
            Self::Json => "JSON",
        }
    }

    pub(crate) fn empty(self) -> Values {
        match self {
            Self::Boolean => Values::Boolean(Vec::new()),
            Self::Integer => Values::Integer(Vec::new()),
            Self::Float => Values::Float(Vec::new()),
            Self::Text => Values::Text(Packed::new()),
            Self::Binary => Values::Binary(Packed::new()),
            Self::Json => Values::Json(Packed::new()),
        }
    }
}

/// `values` as `kind`: integers become floats, anything else becomes placeholders (this is
/// only used for all-null columns).
pub(crate) fn coerced(values: &Values, kind: Kind) -> Values {
    if let Values::Integer(v) = values
        && kind == Kind::Float
    {
        return Values::Float(v.iter().map(|&i| i as f64).collect());
    }
    let mut out = kind.empty();
    out.push_placeholders(values.len());
    out
}

fn pick<T: Copy + Default>(v: &[T], rows: &[u32]) -> Vec<T> {
    rows.iter()
        .map(|&r| v.get(r as usize).copied().unwrap_or_default())
        .collect()
}

fn pick_packed(p: &Packed, rows: &[u32]) -> Packed {
    let mut out = Packed::new();
    for &r in rows {
        out.push(p.get(r as usize).unwrap_or_default());
    }
    out
}

impl Values {
    /// Number of slots.
    pub fn len(&self) -> usize {
        match self {
            Self::Boolean(v) => v.len(),
            Self::Integer(v) => v.len(),
            Self::Float(v) => v.len(),
            Self::Text(p) | Self::Binary(p) | Self::Json(p) => p.len(),
        }
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Self::Boolean(_) => Kind::Boolean,
            Self::Integer(_) => Kind::Integer,
            Self::Float(_) => Kind::Float,
            Self::Text(_) => Kind::Text,
            Self::Binary(_) => Kind::Binary,
            Self::Json(_) => Kind::Json,
        }
    }

    fn packed(&self) -> Option<&Packed> {
        match self {
            Self::Text(p) | Self::Binary(p) | Self::Json(p) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn push_placeholders(&mut self, n: usize) {
        match self {
            Self::Boolean(v) => v.resize(v.len() + n, false),
            Self::Integer(v) => v.resize(v.len() + n, 0),
            Self::Float(v) => v.resize(v.len() + n, 0.0),
            Self::Text(p) | Self::Binary(p) | Self::Json(p) => p.push_empty(n),
        }
    }

    fn truncate(&mut self, n: usize) {
        match self {
            Self::Boolean(v) => v.truncate(n),
            Self::Integer(v) => v.truncate(n),
            Self::Float(v) => v.truncate(n),
            Self::Text(p) | Self::Binary(p) | Self::Json(p) => p.truncate(n),
        }
    }

    fn select(&self, rows: &[u32]) -> Values {
        match self {
            Self::Boolean(v) => Self::Boolean(pick(v, rows)),
            Self::Integer(v) => Self::Integer(pick(v, rows)),
            Self::Float(v) => Self::Float(pick(v, rows)),
            Self::Text(p) => Self::Text(pick_packed(p, rows)),
            Self::Binary(p) => Self::Binary(pick_packed(p, rows)),
            Self::Json(p) => Self::Json(pick_packed(p, rows)),
        }
    }

    /// Appends `other`, which must have the same kind (callers coerce first).
    fn extend(&mut self, other: &Values) {
        match (self, other) {
            (Self::Boolean(a), Self::Boolean(b)) => a.extend_from_slice(b),
            (Self::Integer(a), Self::Integer(b)) => a.extend_from_slice(b),
            (Self::Float(a), Self::Float(b)) => a.extend_from_slice(b),
            (Self::Text(a), Self::Text(b))
            | (Self::Binary(a), Self::Binary(b))
            | (Self::Json(a), Self::Json(b)) => a.extend(b),
            _ => debug_assert!(false, "extend with mismatched kinds"),
        }
    }
}

/// One named column: values plus a null bitmap.
///
/// The bitmap is LSB-first; bit `i` set means row `i` is null (its value slot holds a
/// placeholder). An empty bitmap means no nulls; missing trailing bytes mean "not null".
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
pub struct Column {
    /// Column (field) name.
    pub name: String,
    /// Null bitmap, LSB-first; empty when the column has no nulls.
    pub nulls: Vec<u8>,
    /// The values.
    pub values: Values,
}

impl Column {
    /// A column without nulls.
    pub fn new(name: impl Into<String>, values: Values) -> Self {
        Self {
            name: name.into(),
            nulls: Vec::new(),
            values,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether row `i` is null.
    pub fn is_null(&self, i: usize) -> bool {
        get_bit(&self.nulls, i)
    }

    /// Row `i` as a [`Scalar`]; `None` if out of range, for binary and JSON columns, and for
    /// text that is not valid UTF-8.
    pub fn scalar(&self, i: usize) -> Option<Scalar> {
        if i >= self.len() {
            return None;
        }
        if self.is_null(i) {
            return Some(Scalar::Null);
        }
        Some(match &self.values {
            Values::Boolean(v) => Scalar::Boolean(v[i]),
            Values::Integer(v) => Scalar::Integer(v[i]),
            Values::Float(v) => Scalar::Float(v[i]),
            Values::Text(_) => Scalar::Text(self.text_at(i)?.to_owned()),
            Values::Binary(_) | Values::Json(_) => return None,
        })
    }

    /// Row `i` as a float if it is a non-null integer or float.
    pub fn f64_at(&self, i: usize) -> Option<f64> {
        if self.is_null(i) {
            return None;
        }
        match &self.values {
            Values::Integer(v) => v.get(i).map(|&x| x as f64),
            Values::Float(v) => v.get(i).copied(),
            _ => None,
        }
    }

    /// Row `i` if it is non-null, valid UTF-8 text.
    pub fn text_at(&self, i: usize) -> Option<&str> {
        match &self.values {
            Values::Text(p) if !self.is_null(i) => std::str::from_utf8(p.get(i)?).ok(),
            _ => None,
        }
    }

    pub(crate) fn push_nulls(&mut self, n: usize) {
        let start = self.len();
        self.values.push_placeholders(n);
        for i in start..start + n {
            set_bit(&mut self.nulls, i);
        }
    }

    pub(crate) fn truncate(&mut self, n: usize) {
        self.values.truncate(n);
        truncate_bits(&mut self.nulls, n);
    }

    pub(crate) fn all_null(&self) -> bool {
        (0..self.len()).all(|i| self.is_null(i))
    }

    fn select(&self, rows: &[u32]) -> Column {
        let mut nulls = Vec::new();
        if !self.nulls.is_empty() {
            for (j, &r) in rows.iter().enumerate() {
                if self.is_null(r as usize) {
                    set_bit(&mut nulls, j);
                }
            }
        }
        Column {
            name: self.name.clone(),
            nulls,
            values: self.values.select(rows),
        }
    }

    /// The kind this column must have to also hold `other`'s values.
    fn merge_kind(&self, other: &Column) -> Result<Kind, RowError> {
        let (a, b) = (self.values.kind(), other.values.kind());
        let kind = if a == b || other.all_null() {
            a
        } else if self.all_null() {
            b
        } else if matches!(
            (a, b),
            (Kind::Integer, Kind::Float) | (Kind::Float, Kind::Integer)
        ) {
            Kind::Float
        } else {
            let err = RowError::TypeMismatch {
                expected: a.desc(),
                found: b.desc(),
            };
            return Err(err.in_field(&self.name));
        };
        if let (Some(p), Some(q)) = (self.values.packed(), other.values.packed())
            && !p.fits(q.data.len())
        {
            return Err(RowError::TooLarge);
        }
        Ok(kind)
    }

    fn extend(&mut self, other: &Column) {
        let n = self.len();
        let kind = self.values.kind();
        if other.values.kind() == kind {
            self.values.extend(&other.values);
        } else {
            self.values.extend(&coerced(&other.values, kind));
        }
        if !other.nulls.is_empty() {
            for i in (0..other.len()).filter(|&i| other.is_null(i)) {
                set_bit(&mut self.nulls, n + i);
            }
        }
    }

    fn json_at(&self, i: usize) -> Value {
        let bytes = match &self.values {
            Values::Text(p) | Values::Binary(p) | Values::Json(p) if !self.is_null(i) => p.get(i),
            _ => return self.scalar(i).map_or(Value::Null, |s| s.to_json()),
        };
        let Some(bytes) = bytes else {
            return Value::Null;
        };
        let lossy = || Value::String(String::from_utf8_lossy(bytes).into_owned());
        match &self.values {
            Values::Binary(_) => Value::Array(bytes.iter().map(|&b| Value::from(b)).collect()),
            Values::Json(_) => serde_json::from_slice(bytes).unwrap_or_else(|_| lossy()),
            _ => lossy(),
        }
    }
}

/// A batch of rows stored column by column; every column has `len` rows.
///
/// ```
/// use rivulet_rows::{Batch, BatchBuilder, Scalar};
/// use serde_json::json;
///
/// let mut builder = BatchBuilder::new();
/// for (id, price) in [(1, 2.5), (2, 4.0), (3, 1.0)] {
///     builder.push(&json!({ "id": id, "price": price }))?;
/// }
/// let batch = builder.finish();
/// assert_eq!(batch.column("price").and_then(|c| c.f64_at(1)), Some(4.0));
///
/// let mut picked = batch.select(&[2, 0]);
/// assert_eq!(picked.column("id").and_then(|c| c.scalar(0)), Some(Scalar::Integer(3)));
/// picked.append(batch.select(&[1]))?;
/// assert_eq!(picked.len, 3);
/// assert_eq!(picked.row_json(2), json!({ "id": 2, "price": 4.0 }).as_object().cloned().unwrap_or_default());
/// # Ok::<(), rivulet_rows::RowError>(())
/// ```
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
pub struct Batch {
    /// Number of rows.
    pub len: u32,
    /// The columns, each with `len` rows.
    pub columns: Vec<Column>,
}

impl Batch {
    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The column with this name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Row `i` as a JSON object: nulls become `null`, JSON columns are parsed back into nested
    /// values, binary values become arrays of byte values, and invalid UTF-8 text is replaced
    /// lossily. Out-of-range rows give `null` for every column.
    pub fn row_json(&self, i: usize) -> Map<String, Value> {
        self.columns
            .iter()
            .map(|c| (c.name.clone(), c.json_at(i)))
            .collect()
    }

    /// A new batch with the given rows, in the given order (indices may repeat).
    ///
    /// # Panics
    /// Panics if an index is out of range.
    pub fn select(&self, rows: &[u32]) -> Batch {
        if let Some(bad) = rows.iter().find(|&&r| r >= self.len) {
            panic!("row {bad} is out of range for a batch of {} rows", self.len);
        }
        let Ok(len) = u32::try_from(rows.len()) else {
            panic!("too many rows selected")
        };
        Batch {
            len,
            columns: self.columns.iter().map(|c| c.select(rows)).collect(),
        }
    }

    /// Appends the rows of `other`.
    ///
    /// Columns are matched by name, in any order. A column missing on one side is null there;
    /// integers and floats mix into a float column; a column that is entirely null adopts the
    /// other side's type. On error (another type conflict, inconsistent lengths, size limits)
    /// `self` is left unchanged.
    pub fn append(&mut self, other: Batch) -> Result<(), RowError> {
        let (n, m) = (self.len as usize, other.len as usize);
        let len = self.len.checked_add(other.len).ok_or(RowError::TooLarge)?;
        if self.columns.iter().any(|c| c.len() != n) || other.columns.iter().any(|c| c.len() != m) {
            return Err(RowError::Malformed(
                "a column's length differs from the batch length",
            ));
        }
        let mut plan = Vec::with_capacity(other.columns.len());
        for (j, col) in other.columns.iter().enumerate() {
            if other.columns[..j].iter().any(|c| c.name == col.name) {
                return Err(RowError::Malformed("duplicate column name"));
            }
            let target = match self.columns.iter().position(|c| c.name == col.name) {
                Some(i) => Some((i, self.columns[i].merge_kind(col)?)),
                None => None,
            };
            plan.push(target);
        }
        for (col, target) in other.columns.iter().zip(plan) {
            let i = match target {
                Some((i, kind)) => {
                    let own = &mut self.columns[i];
                    if own.values.kind() != kind {
                        own.values = coerced(&own.values, kind);
                    }
                    i
                }
                None => {
                    let mut own = Column::new(col.name.clone(), col.values.kind().empty());
                    own.push_nulls(n);
                    self.columns.push(own);
                    self.columns.len() - 1
                }
            };
            self.columns[i].extend(col);
        }
        for c in self.columns.iter_mut().filter(|c| c.len() == n) {
            c.push_nulls(m);
        }
        self.len = len;
        Ok(())
    }

    /// Concatenates batches with [`Batch::append`].
    pub fn concat(batches: impl IntoIterator<Item = Batch>) -> Result<Batch, RowError> {
        let mut out = Batch::default();
        for b in batches {
            out.append(b)?;
        }
        Ok(out)
    }
}
