use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde_json::{Number, Value};

/// One plain value, as used for keys, filters and aggregation results.
///
/// Unlike `f64`, `Scalar` is `Eq`, `Hash` and `Ord` (floats compare with [`f64::total_cmp`]),
/// so it can be used as a hash-map or B-tree key. Values of different variants are never
/// equal (`Integer(1) != Float(1.0)`) and sort in variant order.
///
/// ```
/// use std::collections::HashMap;
/// use rivulet_rows::Scalar;
///
/// let mut counts = HashMap::new();
/// for key in [Scalar::Float(0.5), Scalar::from("eu"), Scalar::Float(0.5)] {
///     *counts.entry(key).or_insert(0) += 1;
/// }
/// assert_eq!(counts[&Scalar::Float(0.5)], 2);
/// assert_eq!(Scalar::Integer(3).to_string(), "3");
/// assert_eq!(Scalar::Null.to_json(), serde_json::Value::Null);
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(variant)
)]
pub enum Scalar {
    /// No value.
    #[cfg_attr(feature = "wasmtime", component(name = "null"))]
    Null,
    /// A boolean.
    #[cfg_attr(feature = "wasmtime", component(name = "boolean"))]
    Boolean(bool),
    /// A 64-bit signed integer.
    #[cfg_attr(feature = "wasmtime", component(name = "integer"))]
    Integer(i64),
    /// A 64-bit float.
    #[cfg_attr(feature = "wasmtime", component(name = "float"))]
    Float(f64),
    /// A string.
    #[cfg_attr(feature = "wasmtime", component(name = "text"))]
    Text(String),
}

impl Scalar {
    fn rank(&self) -> u8 {
        match self {
            Self::Null => 0,
            Self::Boolean(_) => 1,
            Self::Integer(_) => 2,
            Self::Float(_) => 3,
            Self::Text(_) => 4,
        }
    }

    /// Converts to a JSON value; non-finite floats become `null`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Boolean(b) => Value::Bool(*b),
            Self::Integer(i) => Value::from(*i),
            Self::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Text(s) => Value::String(s.clone()),
        }
    }
}

impl Ord for Scalar {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Boolean(a), Self::Boolean(b)) => a.cmp(b),
            (Self::Integer(a), Self::Integer(b)) => a.cmp(b),
            (Self::Float(a), Self::Float(b)) => a.total_cmp(b),
            (Self::Text(a), Self::Text(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Scalar {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Scalar {}

impl Hash for Scalar {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u8(self.rank());
        match self {
            Self::Null => {}
            Self::Boolean(b) => b.hash(state),
            Self::Integer(i) => i.hash(state),
            Self::Float(f) => f.to_bits().hash(state),
            Self::Text(s) => s.hash(state),
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Boolean(b) => b.fmt(f),
            Self::Integer(i) => i.fmt(f),
            Self::Float(x) => x.fmt(f),
            Self::Text(s) => f.write_str(s),
        }
    }
}

impl From<bool> for Scalar {
    fn from(v: bool) -> Self {
        Self::Boolean(v)
    }
}

impl From<i64> for Scalar {
    fn from(v: i64) -> Self {
        Self::Integer(v)
    }
}

impl From<f64> for Scalar {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl From<&str> for Scalar {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Scalar {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}
