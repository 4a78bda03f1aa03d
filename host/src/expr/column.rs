//! Expression results → a column of a batch.

use super::{Type, Value};
use rivulet_rows::{Column, Packed, Values};

/// A column named `name` holding `values`, of the kind `ty` gives (an `ANY` column takes
/// the kind of its values: integers and floats together make floats, other mixes text).
pub fn build(name: String, values: &[Value], ty: Type) -> Column {
    let kind = match ty {
        Type::Boolean => Kind::Bool,
        Type::Integer => Kind::Int,
        Type::Float => Kind::Float,
        Type::Text | Type::Timestamp => Kind::Text,
        Type::Any => infer(values),
    };
    let mut nulls = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if v.is_null() {
            let byte = i / 8;
            if nulls.len() <= byte {
                nulls.resize(byte + 1, 0u8);
            }
            nulls[byte] |= 1 << (i % 8);
        }
    }
    let values = match kind {
        Kind::Bool => Values::Boolean(
            values
                .iter()
                .map(|v| matches!(v, Value::Bool(true)))
                .collect(),
        ),
        Kind::Int => Values::Integer(
            values
                .iter()
                .map(|v| match v {
                    Value::Int(i) => *i,
                    _ => 0,
                })
                .collect(),
        ),
        Kind::Float => Values::Float(
            values
                .iter()
                .map(|v| match v {
                    Value::Int(i) => *i as f64,
                    Value::Float(x) => *x,
                    _ => 0.0,
                })
                .collect(),
        ),
        Kind::Text => {
            let mut packed = Packed::new();
            for v in values {
                match v {
                    Value::Null => packed.push(b""),
                    Value::Text(s) => packed.push(s.as_bytes()),
                    other => packed.push(other.to_string().as_bytes()),
                }
            }
            Values::Text(packed)
        }
    };
    Column {
        name,
        nulls,
        values,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Int,
    Float,
    Text,
}

fn infer(values: &[Value]) -> Kind {
    let mut kind: Option<Kind> = None;
    for v in values {
        let k = match v {
            Value::Null => continue,
            Value::Bool(_) => Kind::Bool,
            Value::Int(_) => Kind::Int,
            Value::Float(_) => Kind::Float,
            Value::Text(_) => Kind::Text,
        };
        kind = Some(match (kind, k) {
            (None, k) => k,
            (Some(a), b) if a == b => a,
            (Some(Kind::Int), Kind::Float) | (Some(Kind::Float), Kind::Int) => Kind::Float,
            _ => Kind::Text,
        });
    }
    kind.unwrap_or(Kind::Int)
}
