use serde::de::value::{BorrowedStrDeserializer, SeqDeserializer};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, forward_to_deserialize_any};

use crate::RowError;
use crate::batch::{Batch, Column, Values};

impl Batch {
    /// Reads row `i` into `T`.
    ///
    /// The row is presented as a map from column name to value, so `#[derive(Deserialize)]`
    /// structs work with the usual attributes. Null values are left out of the map: an
    /// `Option` field reads them as `None`, a `#[serde(default)]` field gets its default, and
    /// any other field reports it as missing. Text and JSON strings are borrowed from the
    /// batch; JSON columns deserialize nested structs. A type that is not a struct or map (e.g.
    /// `i64`) is read from the only column, or from the column named `value`; an `Option` of
    /// anything reads a row whose values are all null as `None`.
    ///
    /// ```
    /// use rivulet_rows::BatchBuilder;
    /// use serde::Deserialize;
    ///
    /// #[derive(Deserialize)]
    /// #[serde(rename_all = "camelCase")]
    /// struct Click<'a> { page_url: &'a str, #[serde(default)] count: u32 }
    ///
    /// let mut builder = BatchBuilder::new();
    /// builder.push(&serde_json::json!({ "pageUrl": "/home" }))?;
    /// let batch = builder.finish();
    /// let click: Click = batch.row(0)?;
    /// assert_eq!((click.page_url, click.count), ("/home", 0));
    /// assert!(batch.row::<Click>(1).is_err());
    /// # Ok::<(), rivulet_rows::RowError>(())
    /// ```
    pub fn row<'a, T: Deserialize<'a>>(&'a self, i: usize) -> Result<T, RowError> {
        let len = self.len as usize;
        if i >= len {
            return Err(RowError::OutOfRange { index: i, len });
        }
        T::deserialize(RowDe {
            batch: self,
            row: i,
        })
        .map_err(|e| e.in_row(i))
    }

    /// Reads every row into `T`, in order; see [`Batch::row`].
    ///
    /// ```
    /// use rivulet_rows::BatchBuilder;
    ///
    /// let mut builder = BatchBuilder::new();
    /// for n in [3_i64, 4] {
    ///     builder.push(&n)?;
    /// }
    /// let sum: i64 = builder.finish().rows::<i64>().sum::<Result<i64, _>>()?;
    /// assert_eq!(sum, 7);
    /// # Ok::<(), rivulet_rows::RowError>(())
    /// ```
    pub fn rows<'a, T: Deserialize<'a>>(
        &'a self,
    ) -> impl Iterator<Item = Result<T, RowError>> + 'a {
        (0..self.len as usize).map(move |i| self.row(i))
    }
}

/// A whole row.
struct RowDe<'a> {
    batch: &'a Batch,
    row: usize,
}

impl<'a> RowDe<'a> {
    fn single(&self) -> Result<ValueDe<'a>, RowError> {
        let columns = &self.batch.columns;
        let col = match columns.as_slice() {
            [col] => col,
            _ => columns
                .iter()
                .find(|c| c.name == "value")
                .ok_or(RowError::NotSingleColumn(columns.len()))?,
        };
        Ok(ValueDe { col, row: self.row })
    }
}

macro_rules! forward_single {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, RowError> {
            let de = self.single()?;
            de.$method($($arg,)* visitor).map_err(|e| e.in_field(&de.col.name))
        }
    )*};
}

impl<'de> Deserializer<'de> for RowDe<'de> {
    type Error = RowError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        let columns = self.batch.columns.iter();
        visitor.visit_map(RowMap {
            columns,
            row: self.row,
            current: None,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        if self.batch.columns.iter().all(|c| c.is_null(self.row)) {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! { map struct }

    forward_single! {
        deserialize_bool(); deserialize_i8(); deserialize_i16(); deserialize_i32();
        deserialize_i64(); deserialize_i128(); deserialize_u8(); deserialize_u16();
        deserialize_u32(); deserialize_u64(); deserialize_u128(); deserialize_f32();
        deserialize_f64(); deserialize_char(); deserialize_str(); deserialize_string();
        deserialize_bytes(); deserialize_byte_buf(); deserialize_unit();
        deserialize_unit_struct(name: &'static str); deserialize_seq();
        deserialize_tuple(len: usize); deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
    }
}

/// The non-null fields of a row.
struct RowMap<'a> {
    columns: std::slice::Iter<'a, Column>,
    row: usize,
    current: Option<&'a Column>,
}

impl<'de> MapAccess<'de> for RowMap<'de> {
    type Error = RowError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, RowError> {
        for col in self.columns.by_ref() {
            if !col.is_null(self.row) {
                self.current = Some(col);
                return seed
                    .deserialize(BorrowedStrDeserializer::new(&col.name))
                    .map(Some);
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, RowError> {
        let col = self
            .current
            .take()
            .ok_or(RowError::Malformed("value requested before its key"))?;
        seed.deserialize(ValueDe { col, row: self.row })
            .map_err(|e| e.in_field(&col.name))
    }
}

#[derive(Clone, Copy)]
enum Val<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(&'a [u8]),
    Binary(&'a [u8]),
    Json(&'a [u8]),
}

impl Val<'_> {
    fn desc(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a float",
            Self::Text(_) => "text",
            Self::Binary(_) => "binary data",
            Self::Json(_) => "JSON",
        }
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, RowError> {
    std::str::from_utf8(bytes).map_err(|_| RowError::InvalidUtf8)
}

type JsonDe<'a> = serde_json::Deserializer<serde_json::de::SliceRead<'a>>;

fn from_json<'a, T>(
    bytes: &'a [u8],
    f: impl FnOnce(&mut JsonDe<'a>) -> serde_json::Result<T>,
) -> Result<T, RowError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let out = f(&mut de)?;
    de.end()?;
    Ok(out)
}

fn visit_any<'de, V: Visitor<'de>>(val: Val<'de>, visitor: V) -> Result<V::Value, RowError> {
    match val {
        Val::Null => visitor.visit_unit(),
        Val::Bool(b) => visitor.visit_bool(b),
        Val::Int(i) => visitor.visit_i64(i),
        Val::Float(f) => visitor.visit_f64(f),
        Val::Text(b) => visitor.visit_borrowed_str(utf8(b)?),
        Val::Binary(b) => visitor.visit_borrowed_bytes(b),
        Val::Json(b) => from_json(b, |de| de.deserialize_any(visitor)),
    }
}

/// One value of one row.
#[derive(Clone, Copy)]
struct ValueDe<'a> {
    col: &'a Column,
    row: usize,
}

impl<'a> ValueDe<'a> {
    fn get(&self) -> Result<Val<'a>, RowError> {
        let (col, i) = (self.col, self.row);
        if col.is_null(i) {
            return Ok(Val::Null);
        }
        let val = match &col.values {
            Values::Boolean(v) => v.get(i).map(|&b| Val::Bool(b)),
            Values::Integer(v) => v.get(i).map(|&x| Val::Int(x)),
            Values::Float(v) => v.get(i).map(|&x| Val::Float(x)),
            Values::Text(p) => p.get(i).map(Val::Text),
            Values::Binary(p) => p.get(i).map(Val::Binary),
            Values::Json(p) => p.get(i).map(Val::Json),
        };
        val.ok_or(RowError::Malformed("a column is shorter than the batch"))
    }
}

macro_rules! checked {
    ($($method:ident => $ok:pat, $expected:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
            match self.get()? {
                val @ (Val::Json(_) | $ok) => visit_any(val, visitor),
                val => Err(RowError::TypeMismatch { expected: $expected, found: val.desc() }),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for ValueDe<'de> {
    type Error = RowError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visit_any(self.get()?, visitor)
    }

    checked! {
        deserialize_bool => Val::Bool(_), "a boolean";
        deserialize_i8 => Val::Int(_), "an integer";
        deserialize_i16 => Val::Int(_), "an integer";
        deserialize_i32 => Val::Int(_), "an integer";
        deserialize_i64 => Val::Int(_), "an integer";
        deserialize_i128 => Val::Int(_), "an integer";
        deserialize_u8 => Val::Int(_), "an integer";
        deserialize_u16 => Val::Int(_), "an integer";
        deserialize_u32 => Val::Int(_), "an integer";
        deserialize_u64 => Val::Int(_), "an integer";
        deserialize_u128 => Val::Int(_), "an integer";
        deserialize_f32 => Val::Int(_) | Val::Float(_), "a number";
        deserialize_f64 => Val::Int(_) | Val::Float(_), "a number";
        deserialize_char => Val::Text(_), "text";
        deserialize_str => Val::Text(_), "text";
        deserialize_string => Val::Text(_), "text";
        deserialize_bytes => Val::Binary(_) | Val::Text(_), "binary data";
        deserialize_byte_buf => Val::Binary(_) | Val::Text(_), "binary data";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.get()? {
            Val::Null => visitor.visit_none(),
            Val::Json(b) => from_json(b, |de| de.deserialize_option(visitor)),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, RowError> {
        match self.get()? {
            Val::Json(b) => from_json(b, |de| de.deserialize_newtype_struct(name, visitor)),
            _ => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, RowError> {
        match self.get()? {
            Val::Text(b) => visitor.visit_enum(BorrowedStrDeserializer::new(utf8(b)?)),
            Val::Json(b) => from_json(b, |de| de.deserialize_enum(name, variants, visitor)),
            val => visit_any(val, visitor),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        match self.get()? {
            Val::Binary(b) => {
                let mut seq = SeqDeserializer::<_, RowError>::new(b.iter().copied());
                let out = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            val => visit_any(val, visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, RowError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! { unit unit_struct map struct tuple tuple_struct identifier }
}
