//! Avro in Confluent's wire format: magic byte 0, the writer schema's registry id (4 bytes,
//! big-endian), then the record in Avro binary. Decoding (a record → a row) and encoding
//! (a row → a record of a schema derived from the row's columns, the way Flink maps its
//! types: nullable columns as unions with null).

use apache_avro::Schema;
use apache_avro::types::Value;
use rivulet_rows::{Batch, Column, Values};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// The first byte of every record in the wire format.
pub const MAGIC: u8 = 0;

/// Why a payload is not a record in Confluent's wire format (the dead letter's reason).
pub fn split(payload: &[u8]) -> Result<(u32, &[u8]), String> {
    match payload {
        [] => Err("not Avro in Confluent's wire format: the payload is empty".to_owned()),
        [first, ..] if *first != MAGIC => Err(format!(
            "not Avro in Confluent's wire format: no magic byte 0 (the payload starts with 0x{first:02x})"
        )),
        [_, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        short => Err(format!(
            "not Avro in Confluent's wire format: {} bytes is too short for the magic byte and a 4-byte schema id",
            short.len()
        )),
    }
}

/// `body` framed with the schema id.
pub fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The record in `body`, written with `schema` (schema id `id`, for messages).
pub fn decode(schema: &Schema, id: u32, body: &[u8]) -> Result<Value, String> {
    let mut rest = body;
    let value = apache_avro::from_avro_datum(schema, &mut rest, None)
        .map_err(|err| format!("not a record of schema id {id}: {err}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "not a record of schema id {id}: {} bytes left after the record",
            rest.len()
        ));
    }
    match value {
        Value::Record(_) => Ok(value),
        _ => Err(format!(
            "schema id {id} is not a record schema: a row needs named fields"
        )),
    }
}

/// A decoded record as a row for [`rivulet_rows::BatchBuilder::push`]: each field goes
/// straight to its column (string → text, int and long → integer, float and double →
/// float, boolean, null and a union's null → null, timestamps and dates → integer, as
/// stored: `timestamp-millis` is epoch milliseconds; bytes and fixed → binary; arrays,
/// maps and nested records → JSON).
pub struct Row<'a>(pub &'a Value);

struct Cell<'a>(&'a Value);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Record(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (name, value) in fields {
                    map.serialize_entry(name, &Cell(value))?;
                }
                map.end()
            }
            other => Cell(other).serialize(s),
        }
    }
}

impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_none(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Int(n) | Value::Date(n) | Value::TimeMillis(n) => s.serialize_i64(i64::from(*n)),
            Value::Long(n)
            | Value::TimeMicros(n)
            | Value::TimestampMillis(n)
            | Value::TimestampMicros(n)
            | Value::TimestampNanos(n)
            | Value::LocalTimestampMillis(n)
            | Value::LocalTimestampMicros(n)
            | Value::LocalTimestampNanos(n) => s.serialize_i64(*n),
            Value::Float(x) => s.serialize_f64(f64::from(*x)),
            Value::Double(x) => s.serialize_f64(*x),
            Value::Bytes(b) | Value::Fixed(_, b) => s.serialize_bytes(b),
            Value::String(text) | Value::Enum(_, text) => s.serialize_str(text),
            Value::Uuid(uuid) => s.serialize_str(&uuid.to_string()),
            Value::BigDecimal(d) => s.serialize_str(&d.to_string()),
            Value::Union(_, inner) => Cell(inner).serialize(s),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Cell(item))?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(b.0));
                let mut map = s.serialize_map(Some(sorted.len()))?;
                for (name, value) in sorted {
                    map.serialize_entry(name, &Cell(value))?;
                }
                map.end()
            }
            Value::Record(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (name, value) in fields {
                    map.serialize_entry(name, &Cell(value))?;
                }
                map.end()
            }
            Value::Decimal(_) | Value::Duration(_) => Err(S::Error::custom(
                "Avro decimal and duration values have no row type (use a map stage on the bytes)",
            )),
        }
    }
}

/// The Avro type of a column's values.
fn avro_type(values: &Values) -> &'static str {
    match values {
        Values::Boolean(_) => "boolean",
        Values::Integer(_) => "long",
        Values::Float(_) => "double",
        Values::Text(_) | Values::Json(_) => "string",
        Values::Binary(_) => "bytes",
    }
}

/// Whether `name` is a valid Avro name.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `text` as an Avro name: other characters become `_`.
pub fn avro_name(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert(0, '_');
    }
    name
}

/// The record schema of `rows`' columns, named `name`: one field per column, in order;
/// the columns named in `required` as plain types, the others as `["null", type]` with
/// default null (as Flink writes nullable columns).
pub fn record_schema(rows: &Batch, name: &str, required: &[String]) -> Result<Schema, String> {
    let mut fields = Vec::with_capacity(rows.columns.len());
    for column in &rows.columns {
        if !valid_name(&column.name) {
            return Err(format!(
                "column `{}` is not a valid Avro field name (letters, digits and _, not starting with a digit)",
                column.name
            ));
        }
        let kind = avro_type(&column.values);
        fields.push(if required.contains(&column.name) {
            serde_json::json!({ "name": column.name, "type": kind })
        } else {
            serde_json::json!({ "name": column.name, "type": ["null", kind], "default": null })
        });
    }
    let schema = serde_json::json!({ "type": "record", "name": avro_name(name), "fields": fields });
    Schema::parse(&schema).map_err(|err| format!("cannot derive an Avro schema: {err}"))
}

/// Row `i` of `rows` as a record of `schema` (from [`record_schema`] of the same columns),
/// in Avro binary.
pub fn encode_row(schema: &Schema, rows: &Batch, i: usize) -> Result<Vec<u8>, String> {
    let Schema::Record(record) = schema else {
        return Err("the derived schema is not a record".to_owned());
    };
    let mut fields = Vec::with_capacity(record.fields.len());
    for (field, column) in record.fields.iter().zip(&rows.columns) {
        let value = cell(column, i);
        let value = match (&field.schema, value) {
            (Schema::Union(_), Value::Null) => Value::Union(0, Box::new(Value::Null)),
            (Schema::Union(_), value) => Value::Union(1, Box::new(value)),
            (_, Value::Null) => {
                return Err(format!(
                    "`{}` is null, and the record needs it",
                    column.name
                ));
            }
            (_, value) => value,
        };
        fields.push((column.name.clone(), value));
    }
    apache_avro::to_avro_datum(schema, Value::Record(fields))
        .map_err(|err| format!("cannot write the row as Avro: {err}"))
}

/// Row `i` of `column` as an Avro value (null as [`Value::Null`]).
fn cell(column: &Column, i: usize) -> Value {
    if column.is_null(i) {
        return Value::Null;
    }
    let text = |p: &rivulet_rows::Packed| {
        Value::String(String::from_utf8_lossy(p.get(i).unwrap_or_default()).into_owned())
    };
    match &column.values {
        Values::Boolean(v) => v.get(i).map_or(Value::Null, |b| Value::Boolean(*b)),
        Values::Integer(v) => v.get(i).map_or(Value::Null, |n| Value::Long(*n)),
        Values::Float(v) => v.get(i).map_or(Value::Null, |x| Value::Double(*x)),
        Values::Text(p) | Values::Json(p) => text(p),
        Values::Binary(p) => Value::Bytes(p.get(i).unwrap_or_default().to_vec()),
    }
}

/// A string in Avro binary (a record key with the schema `"string"`).
pub fn encode_string(text: &str) -> Result<Vec<u8>, String> {
    apache_avro::to_avro_datum(&Schema::String, Value::String(text.to_owned()))
        .map_err(|err| format!("cannot write the key as Avro: {err}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rivulet_rows::{BatchBuilder, Scalar};

    const SALE: &str = r#"{"type":"record","name":"StoreSale","fields":[
        {"name":"store_id","type":"string"},
        {"name":"sale_amount","type":"int"},
        {"name":"sale_ts","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"price","type":"double"},
        {"name":"weight","type":"float"},
        {"name":"paid","type":"boolean"},
        {"name":"note","type":["null","string"],"default":null}]}"#;

    #[test]
    fn split_names_what_is_missing() {
        assert_eq!(split(&[0, 0, 0, 1, 2, 9]), Ok((258, &[9][..])));
        assert_eq!(
            split(b"{\"a\":1}").unwrap_err(),
            "not Avro in Confluent's wire format: no magic byte 0 (the payload starts with 0x7b)"
        );
        assert_eq!(
            split(&[0, 1]).unwrap_err(),
            "not Avro in Confluent's wire format: 2 bytes is too short for the magic byte and a 4-byte schema id"
        );
        assert_eq!(
            split(b"").unwrap_err(),
            "not Avro in Confluent's wire format: the payload is empty"
        );
        assert_eq!(frame(258, &[9]), vec![0, 0, 0, 1, 2, 9]);
    }

    #[test]
    fn a_record_becomes_a_row_column_by_column() {
        let schema = Schema::parse_str(SALE).unwrap();
        let record = |note: Value| {
            Value::Record(vec![
                ("store_id".into(), Value::String("store-2".into())),
                ("sale_amount".into(), Value::Int(1250)),
                ("sale_ts".into(), Value::TimestampMillis(1_716_467_696_123)),
                ("price".into(), Value::Double(2.5)),
                ("weight".into(), Value::Float(0.5)),
                ("paid".into(), Value::Boolean(true)),
                ("note".into(), note),
            ])
        };
        let mut builder = BatchBuilder::new();
        for note in [
            Value::Union(1, Box::new(Value::String("gift".into()))),
            Value::Union(0, Box::new(Value::Null)),
        ] {
            let body = apache_avro::to_avro_datum(&schema, record(note)).unwrap();
            let value = decode(&schema, 7, &body).unwrap();
            builder.push(&Row(&value)).unwrap();
        }
        let rows = builder.finish();
        let at = |name: &str, i: usize| rows.column(name).unwrap().scalar(i).unwrap();
        assert_eq!(at("store_id", 0), Scalar::Text("store-2".into()));
        assert_eq!(at("sale_amount", 0), Scalar::Integer(1250));
        assert_eq!(at("sale_ts", 0), Scalar::Integer(1_716_467_696_123));
        assert_eq!(at("price", 0), Scalar::Float(2.5));
        assert_eq!(at("weight", 0), Scalar::Float(0.5));
        assert_eq!(at("paid", 0), Scalar::Boolean(true));
        assert_eq!(at("note", 0), Scalar::Text("gift".into()));
        assert_eq!(at("note", 1), Scalar::Null);
        assert!(matches!(
            rows.column("sale_amount").unwrap().values,
            Values::Integer(_)
        ));
    }

    #[test]
    fn bytes_that_are_not_the_schemas_record_are_refused() {
        let schema = Schema::parse_str(SALE).unwrap();
        let err = decode(&schema, 7, &[2, b'x']).unwrap_err();
        assert!(err.starts_with("not a record of schema id 7: "), "{err}");
        let string = Schema::String;
        let body = encode_string("s").unwrap();
        assert_eq!(
            decode(&string, 3, &body).unwrap_err(),
            "schema id 3 is not a record schema: a row needs named fields"
        );
    }

    #[test]
    fn window_results_get_a_flink_like_schema_and_round_trip() {
        let mut builder = BatchBuilder::new();
        builder
            .push(&serde_json::json!({"window_start":"2026-01-01T00:00:00Z","store_id":"store-1","total":12,"avg":null}))
            .unwrap();
        builder
            .push(&serde_json::json!({"window_start":"2026-01-01T00:00:00Z","store_id":"store-2","total":7,"avg":1.5}))
            .unwrap();
        let rows = builder.finish();
        let required = vec!["window_start".to_owned(), "store_id".to_owned()];
        let schema = record_schema(&rows, "sales-per-store", &required).unwrap();
        let json: serde_json::Value = serde_json::to_value(&schema).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"record","name":"sales_per_store","fields":[
                {"name":"window_start","type":"string"},
                {"name":"store_id","type":"string"},
                {"name":"total","type":["null","long"],"default":null},
                {"name":"avg","type":["null","double"],"default":null}]})
        );
        let first = decode(&schema, 1, &encode_row(&schema, &rows, 0).unwrap()).unwrap();
        assert_eq!(
            first,
            Value::Record(vec![
                (
                    "window_start".into(),
                    Value::String("2026-01-01T00:00:00Z".into())
                ),
                ("store_id".into(), Value::String("store-1".into())),
                ("total".into(), Value::Union(1, Box::new(Value::Long(12)))),
                ("avg".into(), Value::Union(0, Box::new(Value::Null))),
            ])
        );
        let err = record_schema(&rows, "t", &["avg".to_owned()])
            .and_then(|schema| encode_row(&schema, &rows, 0))
            .unwrap_err();
        assert_eq!(err, "`avg` is null, and the record needs it");
    }
}
