use std::collections::HashMap;
use std::fmt::{self, Write as _};

use serde::Serialize;
use serde::ser::{self, Impossible, SerializeMap, SerializeStruct, Serializer};

use crate::RowError;
use crate::batch::{Batch, Column, Kind, Packed, Values, coerced};

/// Appends `Serialize` values to a [`Batch`], one row each.
///
/// A struct or string-keyed map becomes one row with a column per field; any other value
/// becomes a single column named `value`. Columns appear on first sight (earlier rows are
/// null there) and fields missing from a row are null.
///
/// | field value | column |
/// |---|---|
/// | `bool` | `Boolean` |
/// | integers (up to `i64::MAX`) | `Integer`, or `Float` if the column already holds floats |
/// | `f32`, `f64` | `Float`; an `Integer` column is promoted to `Float` |
/// | `str`, `char`, unit enum variant | `Text` |
/// | bytes (`serialize_bytes`) | `Binary` |
/// | `None`, `()`, unit struct | null |
/// | `Some(x)`, newtype struct | as `x` |
/// | struct, map, sequence, tuple, data-carrying variant | `Json` (serialized by `serde_json`) |
///
/// A column that so far only holds nulls takes the type of its first non-null value. Any
/// other type conflict is an error, and after any error the builder is exactly as it was
/// before the failed [`push`](Self::push).
///
/// ```
/// use rivulet_rows::{BatchBuilder, Values};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Reading<'a> { sensor: &'a str, value: f64, tags: Vec<&'a str> }
///
/// let mut builder = BatchBuilder::new();
/// builder.push(&Reading { sensor: "t1", value: 20.5, tags: vec!["roof"] })?;
/// assert!(builder.push(&serde_json::json!({ "value": "hot" })).is_err());
/// assert_eq!(builder.len(), 1);
///
/// let batch = builder.finish();
/// let tags = batch.column("tags").map(|c| &c.values);
/// assert!(matches!(tags, Some(Values::Json(p)) if p.get(0) == Some(&b"[\"roof\"]"[..])));
/// # Ok::<(), rivulet_rows::RowError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct BatchBuilder {
    len: u32,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    /// For each column, the row at which it appeared (so columns are in order of birth).
    born: Vec<u32>,
    /// Column of the n-th field of the previous row, tried before `index`.
    hints: Vec<Hint>,
    /// Number of fields written in the current row.
    field: usize,
    /// Values of columns whose type changed in the current row, to restore on error.
    undo: Vec<(usize, Values)>,
    /// Reused buffer for map keys.
    key: String,
}

/// Where the n-th field of the previous row went.
#[derive(Debug, Clone, Copy)]
struct Hint {
    column: usize,
    /// Address and length of the field's name when it was a `&'static str` (a struct
    /// field), else 0: the same static name again is the same column, with no compare.
    name: (usize, usize),
}

/// One field value, handed to the column it belongs to.
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Json(&'a mut dyn FnMut(&mut Vec<u8>) -> serde_json::Result<()>),
}

impl Cell<'_> {
    fn kind(&self) -> Option<Kind> {
        Some(match self {
            Self::Null => return None,
            Self::Bool(_) => Kind::Boolean,
            Self::Int(_) => Kind::Integer,
            Self::Float(_) => Kind::Float,
            Self::Text(_) => Kind::Text,
            Self::Bytes(_) => Kind::Binary,
            Self::Json(_) => Kind::Json,
        })
    }
}

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of rows pushed so far.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no rows have been pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The finished batch.
    pub fn finish(self) -> Batch {
        Batch {
            len: self.len,
            columns: self.columns,
        }
    }

    /// Appends `row`; on error nothing is appended and the builder is unchanged.
    pub fn push<T: Serialize + ?Sized>(&mut self, row: &T) -> Result<(), RowError> {
        if self.len == u32::MAX {
            return Err(RowError::TooLarge);
        }
        let columns = self.start_row();
        let result = match row.serialize(Ser(Row(&mut *self))) {
            Err(SerError::NotRow) => self.field(Name::Static("value"), row),
            other => other,
        };
        match result {
            Ok(()) => {
                self.end_row();
                Ok(())
            }
            Err(e) => {
                self.abort_row(columns);
                Err(e.into_row().in_row(self.len as usize))
            }
        }
    }

    /// Starts a row; returns what [`abort_row`](Self::abort_row) needs to take it back.
    pub(crate) fn start_row(&mut self) -> usize {
        self.field = 0;
        self.columns.len()
    }

    /// Takes back the row being written (`columns`: what [`start_row`](Self::start_row)
    /// returned).
    pub(crate) fn abort_row(&mut self, columns: usize) {
        self.rollback(columns);
    }

    /// Completes the row whose cells were just written: every column it did not write is
    /// null in it.
    pub(crate) fn end_row(&mut self) {
        // Each cell of a row went to a distinct column (a second one is an error), so a row
        // that wrote as many cells as there are columns left none out.
        if self.field != self.columns.len() {
            let n = self.len as usize;
            for c in self.columns.iter_mut().filter(|c| c.len() == n) {
                c.push_nulls(1);
            }
        }
        self.undo.clear();
        self.len += 1;
    }

    /// Drops every row from `len` on, and the columns that appeared in those rows, so the
    /// batch is as it was after `len` rows (a column promoted from integers to floats by a
    /// dropped row stays float). Does nothing if `len` is not less than [`len`](Self::len).
    ///
    /// ```
    /// use rivulet_rows::BatchBuilder;
    /// use serde_json::json;
    ///
    /// let mut builder = BatchBuilder::new();
    /// builder.push(&json!({ "a": 1 }))?;
    /// builder.push(&json!({ "a": 2, "b": "x" }))?;
    /// builder.truncate(1);
    /// let batch = builder.finish();
    /// assert_eq!(batch.len, 1);
    /// assert!(batch.column("b").is_none());
    /// # Ok::<(), rivulet_rows::RowError>(())
    /// ```
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len as usize {
            return;
        }
        self.len = len as u32;
        self.undo.clear();
        let keep = self.born.partition_point(|&b| (b as usize) < len);
        self.rollback(keep);
    }

    fn rollback(&mut self, columns: usize) {
        for (i, values) in self.undo.drain(..) {
            if let Some(c) = self.columns.get_mut(i) {
                c.values = values;
            }
        }
        self.born.truncate(columns);
        if columns < self.columns.len() {
            // A hint may name a dropped column's index, which a later column can take.
            self.hints.clear();
        }
        for c in self.columns.drain(columns..) {
            self.index.remove(&c.name);
        }
        let n = self.len as usize;
        for c in &mut self.columns {
            c.truncate(n);
        }
    }

    fn field<T: Serialize + ?Sized>(&mut self, name: Name<'_>, value: &T) -> Result<(), SerError> {
        let result = match value.serialize(Ser(Field {
            b: &mut *self,
            name,
        })) {
            Ok(()) => Ok(()),
            Err(SerError::Row(e)) => Err(e),
            Err(_) => {
                let mut write = |buf: &mut Vec<u8>| serde_json::to_writer(buf, value);
                self.cell(name, Cell::Json(&mut write))
            }
        };
        result.map_err(|e| SerError::Row(e.in_field(name.text())))
    }

    /// The column of the current row's next field, `name` (created if new).
    #[inline]
    fn column_of(&mut self, name: Name<'_>, cell: &Cell<'_>) -> usize {
        let key = match name {
            Name::Static(s) => (s.as_ptr() as usize, s.len()),
            Name::Borrowed(_) => (0, 0),
        };
        let hint = self.hints.get(self.field).copied();
        let found = match hint {
            Some(h) if key.0 != 0 && h.name == key => Some(h.column),
            Some(h)
                if self
                    .columns
                    .get(h.column)
                    .is_some_and(|c| c.name == name.text()) =>
            {
                Some(h.column)
            }
            _ => self.index.get(name.text()).copied(),
        };
        let idx = match found {
            Some(i) => i,
            None => {
                let n = self.len as usize;
                let text = name.text();
                let mut col = Column::new(text, cell.kind().unwrap_or(Kind::Text).empty());
                col.push_nulls(n);
                self.index.insert(text.to_owned(), self.columns.len());
                self.columns.push(col);
                self.born.push(self.len);
                self.columns.len() - 1
            }
        };
        let hint = Hint {
            column: idx,
            name: key,
        };
        match self.hints.get_mut(self.field) {
            Some(h) => *h = hint,
            None => self.hints.push(hint),
        }
        self.field += 1;
        idx
    }

    pub(crate) fn cell(&mut self, name: Name<'_>, cell: Cell<'_>) -> Result<(), RowError> {
        let n = self.len as usize;
        let idx = self.column_of(name, &cell);
        let col = &mut self.columns[idx];
        if col.len() != n {
            return Err(RowError::DuplicateField);
        }
        write(col, cell, idx, &mut self.undo)
    }
}

fn push_checked(p: &mut Packed, bytes: &[u8]) -> Result<(), RowError> {
    if !p.fits(bytes.len()) {
        return Err(RowError::TooLarge);
    }
    p.push(bytes);
    Ok(())
}

fn write(
    col: &mut Column,
    cell: Cell<'_>,
    idx: usize,
    undo: &mut Vec<(usize, Values)>,
) -> Result<(), RowError> {
    match (&mut col.values, cell) {
        (_, Cell::Null) => col.push_nulls(1),
        (Values::Boolean(v), Cell::Bool(b)) => v.push(b),
        (Values::Integer(v), Cell::Int(i)) => v.push(i),
        (Values::Float(v), Cell::Int(i)) => v.push(i as f64),
        (Values::Float(v), Cell::Float(f)) => v.push(f),
        (Values::Text(p), Cell::Text(s)) => push_checked(p, s.as_bytes())?,
        (Values::Binary(p), Cell::Bytes(b)) => push_checked(p, b)?,
        (Values::Json(p), Cell::Json(f)) => {
            let start = p.data.len();
            let result = match f(&mut p.data) {
                Ok(()) if p.fits(0) => Ok(()),
                Ok(()) => Err(RowError::TooLarge),
                Err(e) => Err(RowError::from(e)),
            };
            if result.is_err() {
                p.data.truncate(start);
            }
            result?;
            p.seal();
        }
        (values, cell) => {
            let have = values.kind();
            let want = cell.kind().unwrap_or(have);
            let promote = have == Kind::Integer && want == Kind::Float;
            if !promote && !col.all_null() {
                return Err(RowError::TypeMismatch {
                    expected: have.desc(),
                    found: want.desc(),
                });
            }
            let new = coerced(&col.values, want);
            let old = std::mem::replace(&mut col.values, new);
            undo.push((idx, old));
            return write(col, cell, idx, undo);
        }
    }
    Ok(())
}

#[derive(Debug)]
enum SerError {
    Row(RowError),
    /// The value is compound; the caller stores it as JSON.
    Json,
    /// The top-level value is not a struct or map; the caller stores it as column `value`.
    NotRow,
}

impl SerError {
    fn into_row(self) -> RowError {
        match self {
            Self::Row(e) => e,
            other => RowError::Custom(other.to_string()),
        }
    }
}

impl fmt::Display for SerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Row(e) => e.fmt(f),
            Self::Json => f.write_str("unexpected nested value"),
            Self::NotRow => f.write_str("unexpected non-row value"),
        }
    }
}

impl std::error::Error for SerError {}

impl ser::Error for SerError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Row(RowError::Custom(msg.to_string()))
    }
}

impl From<RowError> for SerError {
    fn from(e: RowError) -> Self {
        Self::Row(e)
    }
}

/// Where [`Ser`] sends what it finds: a column, a map key, or (at the top level) a row.
trait Sink: Sized {
    /// Receives the fields of a struct or map.
    type Map: SerializeMap<Ok = (), Error = SerError> + SerializeStruct<Ok = (), Error = SerError>;
    /// The error for sequences, tuples and data-carrying variants.
    const COMPOUND: SerError;
    /// Takes a plain value (seen through options and newtypes).
    fn put(self, cell: Cell<'_>) -> Result<(), SerError>;
    /// Starts a struct or map.
    fn map(self) -> Result<Self::Map, SerError>;
}

/// A field value: goes into its column, or is stored as JSON if compound.
struct Field<'b, 'n> {
    b: &'b mut BatchBuilder,
    name: Name<'n>,
}

/// A field's name: a struct's field names are `&'static str`, which lets the builder find
/// the column of a field it saw at the same position in the previous row by address.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Name<'n> {
    Static(&'static str),
    Borrowed(&'n str),
}

impl<'n> Name<'n> {
    pub(crate) fn text(self) -> &'n str {
        match self {
            Name::Static(s) => s,
            Name::Borrowed(s) => s,
        }
    }
}

impl Sink for Field<'_, '_> {
    type Map = Impossible<(), SerError>;
    const COMPOUND: SerError = SerError::Json;

    fn put(self, cell: Cell<'_>) -> Result<(), SerError> {
        Ok(self.b.cell(self.name, cell)?)
    }

    fn map(self) -> Result<Self::Map, SerError> {
        Err(SerError::Json)
    }
}

/// A map key, written into a reused string.
struct Key<'k>(&'k mut String);

impl Sink for Key<'_> {
    type Map = Impossible<(), SerError>;
    const COMPOUND: SerError = SerError::Row(RowError::InvalidKey);

    fn put(self, cell: Cell<'_>) -> Result<(), SerError> {
        let written = match cell {
            Cell::Text(s) => self.0.write_str(s),
            Cell::Int(i) => write!(self.0, "{i}"),
            Cell::Bool(b) => write!(self.0, "{b}"),
            Cell::Float(f) => write!(self.0, "{f}"),
            Cell::Null | Cell::Bytes(_) | Cell::Json(_) => Err(fmt::Error),
        };
        written.map_err(|_| Self::COMPOUND)
    }

    fn map(self) -> Result<Self::Map, SerError> {
        Err(Self::COMPOUND)
    }
}

/// A whole row: only structs and maps qualify.
struct Row<'b>(&'b mut BatchBuilder);

impl<'b> Sink for Row<'b> {
    type Map = Self;
    const COMPOUND: SerError = SerError::NotRow;

    fn put(self, _: Cell<'_>) -> Result<(), SerError> {
        Err(SerError::NotRow)
    }

    fn map(self) -> Result<Self, SerError> {
        Ok(self)
    }
}

impl SerializeStruct for Row<'_> {
    type Ok = ();
    type Error = SerError;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        self.0.field(Name::Static(key), value)
    }

    fn end(self) -> Result<(), SerError> {
        Ok(())
    }
}

impl SerializeMap for Row<'_> {
    type Ok = ();
    type Error = SerError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerError> {
        let mut buf = std::mem::take(&mut self.0.key);
        buf.clear();
        let result = key.serialize(Ser(Key(&mut buf)));
        self.0.key = buf;
        result
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        let key = std::mem::take(&mut self.0.key);
        let result = self.0.field(Name::Borrowed(&key), value);
        self.0.key = key;
        result
    }

    fn end(self) -> Result<(), SerError> {
        Ok(())
    }
}

/// The one serializer, parameterized by where values go.
struct Ser<S>(S);

macro_rules! ints {
    ($($method:ident($t:ty)),*) => {$(
        fn $method(self, v: $t) -> Result<(), SerError> {
            self.0.put(int(v)?)
        }
    )*};
}

fn int<T: TryInto<i64> + ToString + Copy>(v: T) -> Result<Cell<'static>, SerError> {
    let i = v
        .try_into()
        .map_err(|_| RowError::IntegerOverflow(v.to_string()))?;
    Ok(Cell::Int(i))
}

type Never = Impossible<(), SerError>;

impl<S: Sink> Serializer for Ser<S> {
    type Ok = ();
    type Error = SerError;
    type SerializeSeq = Never;
    type SerializeTuple = Never;
    type SerializeTupleStruct = Never;
    type SerializeTupleVariant = Never;
    type SerializeStructVariant = Never;
    type SerializeMap = S::Map;
    type SerializeStruct = S::Map;

    ints!(
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128)
    );

    fn serialize_bool(self, v: bool) -> Result<(), SerError> {
        self.0.put(Cell::Bool(v))
    }

    fn serialize_f32(self, v: f32) -> Result<(), SerError> {
        self.0.put(Cell::Float(v.into()))
    }

    fn serialize_f64(self, v: f64) -> Result<(), SerError> {
        self.0.put(Cell::Float(v))
    }

    fn serialize_str(self, v: &str) -> Result<(), SerError> {
        self.0.put(Cell::Text(v))
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), SerError> {
        self.0.put(Cell::Bytes(v))
    }

    fn serialize_char(self, v: char) -> Result<(), SerError> {
        self.0.put(Cell::Text(v.encode_utf8(&mut [0; 4])))
    }

    fn serialize_none(self) -> Result<(), SerError> {
        self.0.put(Cell::Null)
    }

    fn serialize_unit(self) -> Result<(), SerError> {
        self.0.put(Cell::Null)
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), SerError> {
        self.0.put(Cell::Null)
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), SerError> {
        self.0.put(Cell::Text(variant))
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), SerError> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        value.serialize(self)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<S::Map, SerError> {
        self.0.map()
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<S::Map, SerError> {
        self.0.map()
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), SerError> {
        Err(S::COMPOUND)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Never, SerError> {
        Err(S::COMPOUND)
    }

    fn serialize_tuple(self, _: usize) -> Result<Never, SerError> {
        Err(S::COMPOUND)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Never, SerError> {
        Err(S::COMPOUND)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Never, SerError> {
        Err(S::COMPOUND)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Never, SerError> {
        Err(S::COMPOUND)
    }
}
