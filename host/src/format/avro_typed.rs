//! Avro records of declared column types, as Flink writes them: the record
//! `org.apache.flink.avro.generated.record`, one field per column in declared order,
//! nullable columns as `["null", type]` unions, TIMESTAMP(3) and TIMESTAMP_LTZ(3) as `long`
//! `timestamp-millis`, DECIMAL(p, s) as `bytes` `decimal` (see [`ColumnType::avro`]).

use crate::column_type::{ColumnType, Typed};
use crate::decimal;
use apache_avro::Schema;
use apache_avro::types::Value;
use rivulet_rows::{Batch, Column, Values};

/// Flink's name for the records it derives from a table's columns.
pub const RECORD_NAME: &str = "record";
pub const RECORD_NAMESPACE: &str = "org.apache.flink.avro.generated";

/// The record schema of `columns`.
pub fn record_schema(columns: &[(String, Typed)]) -> Result<Schema, String> {
    let fields: Vec<serde_json::Value> = columns
        .iter()
        .map(|(name, typed)| {
            let ty = typed.ty.avro();
            if typed.nullable {
                serde_json::json!({ "name": name, "type": ["null", ty], "default": null })
            } else {
                serde_json::json!({ "name": name, "type": ty })
            }
        })
        .collect();
    let schema = serde_json::json!({
        "type": "record", "name": RECORD_NAME, "namespace": RECORD_NAMESPACE, "fields": fields
    });
    Schema::parse(&schema).map_err(|err| format!("cannot derive an Avro schema: {err}"))
}

/// Row `i` of `rows` as a record of `schema` (from [`record_schema`] of `columns`), in
/// Avro binary. A column the row lacks is null.
pub fn encode_row(
    schema: &Schema,
    columns: &[(String, Typed)],
    rows: &Batch,
    i: usize,
) -> Result<Vec<u8>, String> {
    let mut fields = Vec::with_capacity(columns.len());
    for (name, typed) in columns {
        let value = match rows.column(name) {
            Some(column) if !column.is_null(i) => value_of(typed.ty, column, i)
                .map_err(|reason| format!("column `{name}` ({}): {reason}", typed.ty))?,
            _ => Value::Null,
        };
        let value = match (typed.nullable, value) {
            (true, Value::Null) => Value::Union(0, Box::new(Value::Null)),
            (true, value) => Value::Union(1, Box::new(value)),
            (false, Value::Null) => {
                return Err(format!("`{name}` is null, and the record needs it"));
            }
            (false, value) => value,
        };
        fields.push((name.clone(), value));
    }
    apache_avro::to_avro_datum(schema, Value::Record(fields))
        .map_err(|err| format!("cannot write the row as Avro: {err}"))
}

/// Row `i` of `column` (not null) as an Avro value of `ty`.
fn value_of(ty: ColumnType, column: &Column, i: usize) -> Result<Value, String> {
    let scalar = column
        .scalar(i)
        .ok_or_else(|| "the value has no Avro form here".to_owned())?;
    use rivulet_rows::Scalar;
    let mismatch = || format!("cannot write {scalar} as {ty}");
    Ok(match (ty, &scalar) {
        (ColumnType::Boolean, Scalar::Boolean(b)) => Value::Boolean(*b),
        (ColumnType::Integer { bits }, Scalar::Integer(n)) if bits <= 32 => {
            Value::Int(i32::try_from(*n).map_err(|_| format!("{n} does not fit {ty}"))?)
        }
        (ColumnType::Integer { .. }, Scalar::Integer(n)) => Value::Long(*n),
        (ColumnType::Float, Scalar::Float(x)) => Value::Float(*x as f32),
        (ColumnType::Float, Scalar::Integer(n)) => Value::Float(*n as f32),
        (ColumnType::Double, Scalar::Float(x)) => Value::Double(*x),
        (ColumnType::Double, Scalar::Integer(n)) => Value::Double(*n as f64),
        (ColumnType::Decimal { precision, scale }, _) => {
            let unscaled = match &scalar {
                Scalar::Text(text) => decimal::parse(text, scale)?,
                Scalar::Integer(n) => decimal::from_i64(*n, scale)?,
                Scalar::Float(x) => decimal::from_f64(*x, scale)?,
                _ => return Err(mismatch()),
            };
            if !decimal::fits(unscaled, precision) {
                return Err(format!(
                    "{} does not fit {ty}",
                    decimal::to_text(unscaled, scale)
                ));
            }
            Value::Decimal(apache_avro::Decimal::from(decimal::to_avro_bytes(unscaled)))
        }
        (ColumnType::String, Scalar::Text(text)) => Value::String(text.clone()),
        (ColumnType::String, other) => Value::String(other.to_string()),
        (ColumnType::Bytes, _) => match &column.values {
            Values::Binary(p) | Values::Text(p) => {
                Value::Bytes(p.get(i).unwrap_or_default().to_vec())
            }
            _ => return Err(mismatch()),
        },
        (ColumnType::Timestamp { precision, .. }, _) => {
            let millis = match &scalar {
                Scalar::Integer(ms) => *ms,
                Scalar::Text(text) => rivulet_rows::time::parse_iso8601(text)
                    .map_err(|err| format!("not a timestamp: {err}"))?,
                _ => return Err(mismatch()),
            };
            if precision <= 3 {
                Value::TimestampMillis(millis)
            } else {
                Value::TimestampMicros(
                    millis
                        .checked_mul(1000)
                        .ok_or_else(|| format!("{millis} ms is out of range"))?,
                )
            }
        }
        (ColumnType::Date, Scalar::Integer(days)) => {
            Value::Date(i32::try_from(*days).map_err(|_| mismatch())?)
        }
        _ => return Err(mismatch()),
    })
}

/// `value` (decoded with `schema`) with its top-level DECIMAL fields as their text (rows
/// carry decimals as text; see [`crate::decimal`]).
pub fn decimals_as_text(value: Value, schema: &Schema) -> Result<Value, String> {
    let (Value::Record(fields), Schema::Record(record)) = (value, schema) else {
        return Ok(Value::Null);
    };
    fields
        .into_iter()
        .zip(&record.fields)
        .map(|((name, value), field)| {
            let value = match (value, &field.schema) {
                (Value::Union(index, inner), Schema::Union(union)) => {
                    let variant = union.variants().get(index as usize);
                    match (*inner, variant) {
                        (Value::Decimal(d), Some(Schema::Decimal(s))) => {
                            Value::Union(index, Box::new(decimal_text(&d, s.scale, &name)?))
                        }
                        (inner, _) => Value::Union(index, Box::new(inner)),
                    }
                }
                (Value::Decimal(d), Schema::Decimal(s)) => decimal_text(&d, s.scale, &name)?,
                (value, _) => value,
            };
            Ok((name, value))
        })
        .collect::<Result<_, String>>()
        .map(Value::Record)
}

fn decimal_text(d: &apache_avro::Decimal, scale: usize, field: &str) -> Result<Value, String> {
    let bytes = <Vec<u8>>::try_from(d).map_err(|err| format!("field `{field}`: {err}"))?;
    let unscaled = decimal::from_avro_bytes(&bytes)
        .ok_or_else(|| format!("field `{field}`: the decimal has more than 38 digits"))?;
    let scale = u32::try_from(scale).map_err(|_| format!("field `{field}`: scale {scale}"))?;
    Ok(Value::String(decimal::to_text(unscaled, scale)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rivulet_rows::BatchBuilder;

    fn columns(list: &[(&str, &str)]) -> Vec<(String, Typed)> {
        list.iter()
            .map(|(n, t)| ((*n).to_owned(), t.parse().unwrap()))
            .collect()
    }

    #[test]
    fn declared_columns_get_flinks_avro_schema_and_values_round_trip() {
        let columns = columns(&[
            ("window_start", "TIMESTAMP(3)"),
            ("store_id", "STRING NOT NULL"),
            ("total", "DECIMAL(10, 2)"),
            ("n", "INT"),
        ]);
        let schema = record_schema(&columns).unwrap();
        let json: serde_json::Value = serde_json::to_value(&schema).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type":"record","name":"record","namespace":"org.apache.flink.avro.generated","fields":[
                {"name":"window_start","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null},
                {"name":"store_id","type":"string"},
                {"name":"total","type":["null",{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}],"default":null},
                {"name":"n","type":["null","int"],"default":null}]})
        );
        let mut b = BatchBuilder::new();
        b.push(&serde_json::json!({"window_start":"2026-01-01T00:01:00Z","store_id":"s-1","total":"1000.10","n":3}))
            .unwrap();
        let rows = b.finish();
        let body = encode_row(&schema, &columns, &rows, 0).unwrap();
        let decoded = apache_avro::from_avro_datum(&schema, &mut &body[..], None).unwrap();
        let decoded = decimals_as_text(decoded, &schema).unwrap();
        assert_eq!(
            decoded,
            Value::Record(vec![
                (
                    "window_start".into(),
                    Value::Union(1, Box::new(Value::TimestampMillis(1_767_225_660_000)))
                ),
                ("store_id".into(), Value::String("s-1".into())),
                (
                    "total".into(),
                    Value::Union(1, Box::new(Value::String("1000.10".into())))
                ),
                ("n".into(), Value::Union(1, Box::new(Value::Int(3)))),
            ])
        );
        let narrow = self::columns(&[("total", "DECIMAL(3, 2)")]);
        let err = encode_row(&record_schema(&narrow).unwrap(), &narrow, &rows, 0).unwrap_err();
        assert_eq!(
            err,
            "column `total` (DECIMAL(3, 2)): 1000.10 does not fit DECIMAL(3, 2)"
        );
    }
}
