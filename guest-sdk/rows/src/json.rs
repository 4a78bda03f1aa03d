//! [`BatchBuilder::push_json_object`]: a JSON object straight into columns, without an
//! intermediate `serde_json` map per record.

use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::RowError;
use crate::ser::{BatchBuilder, Cell, Name};

impl BatchBuilder {
    /// Appends the JSON object in `json` as one row, as [`push`](Self::push) of the
    /// `serde_json::Map` it parses to would, without building the map: fields become
    /// columns in document order, nested objects and arrays become `Json` columns (written
    /// as `serde_json` writes them), `null` is null.
    ///
    /// `Err` (the builder then unchanged) for anything else — text that is not one JSON
    /// object, a field that appears twice, a value its column cannot take — with a short
    /// reason; a caller that needs the exact message of the map's path (or its rule for a
    /// repeated field: the last value wins) falls back to it for that record.
    ///
    /// ```
    /// use rivulet_rows::BatchBuilder;
    /// use serde_json::json;
    ///
    /// let mut builder = BatchBuilder::new();
    /// builder.push_json_object(br#"{"id":1,"tags":["a"],"note":null}"#)?;
    /// assert!(builder.push_json_object(br#"{"id":"x"}"#).is_err());
    /// assert!(builder.push_json_object(b"[1]").is_err());
    /// let batch = builder.finish();
    /// assert_eq!(batch.len, 1);
    /// assert_eq!(batch.row_json(0), json!({"id": 1, "tags": ["a"], "note": null}).as_object().cloned().unwrap_or_default());
    /// # Ok::<(), rivulet_rows::RowError>(())
    /// ```
    pub fn push_json_object(&mut self, json: &[u8]) -> Result<(), RowError> {
        self.push_json(serde_json::Deserializer::from_slice(json))
    }

    /// [`push_json_object`](Self::push_json_object) of text already known to be valid
    /// UTF-8: its strings are not validated again.
    pub fn push_json_object_str(&mut self, json: &str) -> Result<(), RowError> {
        self.push_json(serde_json::Deserializer::from_str(json))
    }

    fn push_json<'de, R: serde_json::de::Read<'de>>(
        &mut self,
        mut de: serde_json::Deserializer<R>,
    ) -> Result<(), RowError> {
        if self.len() == u32::MAX as usize {
            return Err(RowError::TooLarge);
        }
        let columns = self.start_row();
        let result = de
            .deserialize_map(RowVisitor(&mut *self))
            .and_then(|()| de.end());
        match result {
            Ok(()) => {
                self.end_row();
                Ok(())
            }
            Err(err) => {
                self.abort_row(columns);
                Err(RowError::Json(err))
            }
        }
    }
}

/// The top-level object: each field into its column.
struct RowVisitor<'b>(&'b mut BatchBuilder);

impl<'de> Visitor<'de> for RowVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut key = String::new();
        while let Some(name) = map.next_key_seed(KeySeed(&mut key))? {
            let name = match name {
                Some(borrowed) => borrowed,
                None => key.as_str(),
            };
            map.next_value_seed(CellSeed {
                b: &mut *self.0,
                name,
            })?;
        }
        Ok(())
    }
}

/// A field name: borrowed from the input (`Some`), or, when it has escapes, unescaped into
/// the buffer (`None`).
struct KeySeed<'k>(&'k mut String);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<&'de str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<&'de str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.0.clear();
        self.0.push_str(v);
        Ok(None)
    }
}

/// One field's value, written to its column.
struct CellSeed<'b, 'n> {
    b: &'b mut BatchBuilder,
    name: &'n str,
}

impl CellSeed<'_, '_> {
    fn put<E: de::Error>(self, cell: Cell<'_>) -> Result<(), E> {
        self.b
            .cell(Name::Borrowed(self.name), cell)
            .map_err(|err| E::custom(err.in_field(self.name)))
    }

    /// A nested value, stored as the JSON `serde_json` writes for it (as the map's path does).
    fn nested<E: de::Error>(self, value: &Value) -> Result<(), E> {
        let mut write = |buf: &mut Vec<u8>| serde_json::to_writer(buf, value);
        self.put(Cell::Json(&mut write))
    }
}

impl<'de> DeserializeSeed<'de> for CellSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.put(Cell::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.put(Cell::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(i) => self.put(Cell::Int(i)),
            Err(_) => Err(E::custom(RowError::IntegerOverflow(v.to_string()))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.put(Cell::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.put(Cell::Text(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.put(Cell::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let value = Value::deserialize_from(SeqAccessDeserializer::new(seq))?;
        self.nested(&value)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let value = Value::deserialize_from(MapAccessDeserializer::new(map))?;
        self.nested(&value)
    }
}

/// `Value::deserialize`, named for the call sites above.
trait DeserializeFrom: Sized {
    fn deserialize_from<'de, D: Deserializer<'de>>(de: D) -> Result<Self, D::Error>;
}

impl DeserializeFrom for Value {
    fn deserialize_from<'de, D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        serde::Deserialize::deserialize(de)
    }
}
