//! The values and static types of expressions, with SQL's casts and comparisons.

use std::cmp::Ordering;
use std::fmt;

/// A static type. `Any` is a column whose type is not declared (a TOML stage without
/// `types`) or a Wasm function's result: checked per value when it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Boolean,
    Integer,
    Float,
    Text,
    /// Timestamps are ISO-8601 text in rows (as window results carry them).
    Timestamp,
    Any,
}

impl Type {
    /// A declared SQL type (`BIGINT`, `DOUBLE`, `STRING`, `TIMESTAMP(3)`, ...), upper case.
    pub fn of_sql(name: &str) -> Option<Type> {
        let base = name
            .split(['(', ' '])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        Some(match base.as_str() {
            "BOOLEAN" | "BOOL" => Type::Boolean,
            "TINYINT" | "SMALLINT" | "INT" | "INTEGER" | "BIGINT" => Type::Integer,
            "FLOAT" | "DOUBLE" | "REAL" => Type::Float,
            "STRING" | "VARCHAR" | "CHAR" | "TEXT" => Type::Text,
            "TIMESTAMP" | "TIMESTAMP_LTZ" => Type::Timestamp,
            "ANY" => Type::Any,
            _ => return None,
        })
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, Type::Integer | Type::Float | Type::Any)
    }

    pub fn is_textual(self) -> bool {
        matches!(self, Type::Text | Type::Any)
    }

    pub fn is_boolean(self) -> bool {
        matches!(self, Type::Boolean | Type::Any)
    }

    /// Whether values of the two types can be compared with `=`, `<`, ...
    pub fn comparable(self, other: Type) -> bool {
        use Type::*;
        match (self, other) {
            (Any, _) | (_, Any) => true,
            (a, b) if a.is_numeric() && b.is_numeric() => true,
            (Timestamp, Text) | (Text, Timestamp) => true,
            (a, b) => a == b,
        }
    }

    /// The type of a value that is one or the other (CASE branches, COALESCE).
    pub fn unify(self, other: Type) -> Option<Type> {
        use Type::*;
        Some(match (self, other) {
            (a, b) if a == b => a,
            (Any, _) | (_, Any) => Any,
            (Integer, Float) | (Float, Integer) => Float,
            (Timestamp, Text) | (Text, Timestamp) => Text,
            _ => return None,
        })
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Boolean => "BOOLEAN",
            Type::Integer => "BIGINT",
            Type::Float => "DOUBLE",
            Type::Text => "STRING",
            Type::Timestamp => "TIMESTAMP(3)",
            Type::Any => "ANY",
        })
    }
}

/// One value of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// What kind of value it is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Text(_) => "text",
        }
    }

    /// SQL's comparison: `None` when either is NULL; an error for values of unrelated kinds.
    pub fn compare(&self, other: &Value) -> Result<Option<Ordering>, String> {
        Ok(Some(match (self, other) {
            (Value::Null, _) | (_, Value::Null) => return Ok(None),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Int(a), Value::Float(b)) => (*a as f64).total_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.total_cmp(&(*b as f64)),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (a, b) => {
                return Err(format!("cannot compare {} with {}", a.kind(), b.kind()));
            }
        }))
    }

    /// `CAST(value AS to)`; an error names the value and the type.
    pub fn cast(self, to: Type) -> Result<Value, String> {
        let fail = |v: &Value| format!("cannot cast {} to {to}", v.quoted());
        Ok(match (self, to) {
            (Value::Null, _) => Value::Null,
            (v, Type::Any) => v,
            (Value::Int(i), Type::Integer) => Value::Int(i),
            (Value::Float(x), Type::Integer) => {
                let t = x.trunc();
                if !t.is_finite() || t < i64::MIN as f64 || t >= i64::MAX as f64 {
                    return Err(fail(&Value::Float(x)));
                }
                Value::Int(t as i64)
            }
            (Value::Bool(b), Type::Integer) => Value::Int(i64::from(b)),
            (Value::Text(s), Type::Integer) => match s.trim().parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => return Err(fail(&Value::Text(s))),
            },
            (Value::Int(i), Type::Float) => Value::Float(i as f64),
            (Value::Float(x), Type::Float) => Value::Float(x),
            (Value::Bool(b), Type::Float) => Value::Float(if b { 1.0 } else { 0.0 }),
            (Value::Text(s), Type::Float) => match s.trim().parse::<f64>() {
                Ok(x) => Value::Float(x),
                Err(_) => return Err(fail(&Value::Text(s))),
            },
            (Value::Bool(b), Type::Boolean) => Value::Bool(b),
            (Value::Int(i), Type::Boolean) => Value::Bool(i != 0),
            (Value::Text(s), Type::Boolean) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(fail(&Value::Text(s))),
            },
            (v, Type::Text) => Value::Text(v.to_string()),
            (Value::Int(ms), Type::Timestamp) => Value::Text(rivulet_rows::time::iso8601(ms)),
            (Value::Text(s), Type::Timestamp) => match rivulet_rows::time::parse_iso8601(&s) {
                Ok(ms) => Value::Text(rivulet_rows::time::iso8601(ms)),
                Err(_) => return Err(fail(&Value::Text(s))),
            },
            (v, _) => return Err(fail(&v)),
        })
    }

    fn quoted(&self) -> String {
        match self {
            Value::Text(s) => format!("'{s}'"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Value::Int(i) => write!(f, "{i}"),
            // As Flink prints a DOUBLE: `100.0`, not `100`.
            Value::Float(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 => {
                write!(f, "{x:.1}")
            }
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn casts_follow_sql_rules() {
        assert_eq!(Value::Float(-2.7).cast(Type::Integer), Ok(Value::Int(-2)));
        assert_eq!(
            Value::Text(" 42 ".into()).cast(Type::Integer),
            Ok(Value::Int(42))
        );
        assert_eq!(
            Value::Text("abc".into()).cast(Type::Integer),
            Err("cannot cast 'abc' to BIGINT".into())
        );
        assert_eq!(
            Value::Float(100.0).cast(Type::Text),
            Ok(Value::Text("100.0".into()))
        );
        assert_eq!(
            Value::Int(0).cast(Type::Timestamp),
            Ok(Value::Text("1970-01-01T00:00:00Z".into()))
        );
        assert_eq!(Value::Null.cast(Type::Integer), Ok(Value::Null));
    }

    #[test]
    fn comparisons_with_null_are_unknown_and_numbers_compare_across_kinds() {
        assert_eq!(Value::Null.compare(&Value::Int(1)), Ok(None));
        assert_eq!(
            Value::Int(2).compare(&Value::Float(2.5)),
            Ok(Some(Ordering::Less))
        );
        assert!(Value::Int(2).compare(&Value::Text("2".into())).is_err());
    }
}
