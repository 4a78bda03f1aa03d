//! The types a column may declare, with Flink's names (`STRING`, `BIGINT`, `DECIMAL(10, 2)`,
//! `TIMESTAMP(3)`, `TIMESTAMP_LTZ(3)`, ... `NOT NULL`): read from SQL DDL or from a spec's
//! text, and what each is in Avro (Flink's mapping).

use std::fmt;
use std::str::FromStr;

/// Flink's largest DECIMAL precision (and the result precision of SUM and AVG).
pub const MAX_PRECISION: u32 = 38;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Boolean,
    /// TINYINT (8), SMALLINT (16), INT (32), BIGINT (64).
    Integer {
        bits: u8,
    },
    /// FLOAT / REAL (32 bits).
    Float,
    /// DOUBLE (64 bits).
    Double,
    /// DECIMAL(precision, scale): exact.
    Decimal {
        precision: u32,
        scale: u32,
    },
    /// STRING, VARCHAR(n), CHAR(n).
    String,
    /// BYTES, VARBINARY(n), BINARY(n).
    Bytes,
    /// TIMESTAMP(p), or TIMESTAMP_LTZ(p) (`local`: WITH LOCAL TIME ZONE).
    Timestamp {
        precision: u32,
        local: bool,
    },
    /// DATE (days since the epoch).
    Date,
}

/// How an aggregate's input adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numeric {
    Integer,
    Float,
    Decimal { precision: u32, scale: u32 },
}

impl ColumnType {
    /// How the type adds up, if it is a number.
    pub fn numeric(self) -> Option<Numeric> {
        match self {
            ColumnType::Integer { .. } => Some(Numeric::Integer),
            ColumnType::Float | ColumnType::Double => Some(Numeric::Float),
            ColumnType::Decimal { precision, scale } => Some(Numeric::Decimal { precision, scale }),
            _ => None,
        }
    }

    pub fn is_timestamp(self) -> bool {
        matches!(self, ColumnType::Timestamp { .. })
    }

    /// The Avro schema of a non-null value (Flink's mapping: TIMESTAMP(3) and
    /// TIMESTAMP_LTZ(3) as `long` `timestamp-millis`, DECIMAL as `bytes` `decimal`).
    pub fn avro(self) -> serde_json::Value {
        use serde_json::json;
        match self {
            ColumnType::Boolean => json!("boolean"),
            ColumnType::Integer { bits } if bits <= 32 => json!("int"),
            ColumnType::Integer { .. } => json!("long"),
            ColumnType::Float => json!("float"),
            ColumnType::Double => json!("double"),
            ColumnType::Decimal { precision, scale } => json!({
                "type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale
            }),
            ColumnType::String => json!("string"),
            ColumnType::Bytes => json!("bytes"),
            ColumnType::Timestamp { precision, .. } if precision <= 3 => {
                json!({ "type": "long", "logicalType": "timestamp-millis" })
            }
            ColumnType::Timestamp { .. } => {
                json!({ "type": "long", "logicalType": "timestamp-micros" })
            }
            ColumnType::Date => json!({ "type": "int", "logicalType": "date" }),
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Boolean => f.write_str("BOOLEAN"),
            ColumnType::Integer { bits: 8 } => f.write_str("TINYINT"),
            ColumnType::Integer { bits: 16 } => f.write_str("SMALLINT"),
            ColumnType::Integer { bits: 32 } => f.write_str("INT"),
            ColumnType::Integer { .. } => f.write_str("BIGINT"),
            ColumnType::Float => f.write_str("FLOAT"),
            ColumnType::Double => f.write_str("DOUBLE"),
            ColumnType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            ColumnType::String => f.write_str("STRING"),
            ColumnType::Bytes => f.write_str("BYTES"),
            ColumnType::Timestamp {
                precision,
                local: false,
            } => write!(f, "TIMESTAMP({precision})"),
            ColumnType::Timestamp {
                precision,
                local: true,
            } => write!(f, "TIMESTAMP_LTZ({precision})"),
            ColumnType::Date => f.write_str("DATE"),
        }
    }
}

/// A type and whether it admits null (`... NOT NULL` does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Typed {
    pub ty: ColumnType,
    pub nullable: bool,
}

impl fmt::Display for Typed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.nullable {
            true => write!(f, "{}", self.ty),
            false => write!(f, "{} NOT NULL", self.ty),
        }
    }
}

impl FromStr for Typed {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let upper = text.trim().to_ascii_uppercase();
        let (body, nullable) = match upper.strip_suffix("NOT NULL") {
            Some(body) => (body.trim_end(), false),
            None => (
                upper.strip_suffix(" NULL").unwrap_or(&upper).trim_end(),
                true,
            ),
        };
        Ok(Typed {
            ty: body.parse()?,
            nullable,
        })
    }
}

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let upper = text.trim().to_ascii_uppercase();
        let (name, args) = match upper.split_once('(') {
            Some((name, rest)) => {
                let (args, after) = rest
                    .split_once(')')
                    .ok_or_else(|| format!("`{text}`: a `(` without `)`"))?;
                let args: Vec<u32> = args
                    .split(',')
                    .map(|a| a.trim().parse::<u32>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("`{text}`: the type's arguments are whole numbers"))?;
                (format!("{} {}", name.trim(), after.trim()), args)
            }
            None => (upper.clone(), Vec::new()),
        };
        let name: Vec<&str> = name.split_whitespace().collect();
        let unknown = || format!("unknown type `{}`", text.trim());
        let precision = |default: u32| args.first().copied().unwrap_or(default);
        let ty = match name[..] {
            ["BOOLEAN"] => ColumnType::Boolean,
            ["TINYINT"] => ColumnType::Integer { bits: 8 },
            ["SMALLINT"] => ColumnType::Integer { bits: 16 },
            ["INT"] | ["INTEGER"] => ColumnType::Integer { bits: 32 },
            ["BIGINT"] => ColumnType::Integer { bits: 64 },
            ["FLOAT"] | ["REAL"] => ColumnType::Float,
            ["DOUBLE"] | ["DOUBLE", "PRECISION"] => ColumnType::Double,
            ["DECIMAL"] | ["DEC"] | ["NUMERIC"] => {
                let (precision, scale) = match args[..] {
                    [] => (10, 0),
                    [p] => (p, 0),
                    [p, s] => (p, s),
                    _ => return Err(format!("`{text}`: DECIMAL takes (precision, scale)")),
                };
                if !(1..=MAX_PRECISION).contains(&precision) || scale > precision {
                    return Err(format!(
                        "`{text}`: DECIMAL's precision is 1 to {MAX_PRECISION} and its scale at most the precision"
                    ));
                }
                ColumnType::Decimal { precision, scale }
            }
            ["STRING"] | ["VARCHAR"] | ["CHAR"] | ["CHARACTER", "VARYING"] | ["TEXT"] => {
                ColumnType::String
            }
            ["BYTES"] | ["VARBINARY"] | ["BINARY"] => ColumnType::Bytes,
            ["TIMESTAMP"] | ["TIMESTAMP", "WITHOUT", "TIME", "ZONE"] => ColumnType::Timestamp {
                precision: precision(6),
                local: false,
            },
            ["TIMESTAMP_LTZ"] | ["TIMESTAMP", "WITH", "LOCAL", "TIME", "ZONE"] => {
                ColumnType::Timestamp {
                    precision: precision(6),
                    local: true,
                }
            }
            ["DATE"] => ColumnType::Date,
            _ => return Err(unknown()),
        };
        Ok(ty)
    }
}

/// Serde: a type as text (`type = "DECIMAL(10, 2)"`).
pub fn deserialize_typed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Typed, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// Serde: an optional type as text.
pub fn deserialize_optional<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Typed>, D::Error> {
    deserialize_typed(d).map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_flinks_type_names_with_their_arguments_and_nullability() {
        let t = |text: &str| text.parse::<Typed>().unwrap();
        assert_eq!(
            t("DECIMAL(10, 2)").ty,
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            t("decimal").ty,
            ColumnType::Decimal {
                precision: 10,
                scale: 0
            }
        );
        assert_eq!(
            t("TIMESTAMP(3)"),
            Typed {
                ty: ColumnType::Timestamp {
                    precision: 3,
                    local: false
                },
                nullable: true
            }
        );
        assert_eq!(
            t("TIMESTAMP(3) WITH LOCAL TIME ZONE").ty,
            ColumnType::Timestamp {
                precision: 3,
                local: true
            }
        );
        assert_eq!(
            t("STRING NOT NULL"),
            Typed {
                ty: ColumnType::String,
                nullable: false
            }
        );
        assert_eq!(t("VARCHAR(20)").ty, ColumnType::String);
        assert_eq!(t("INT").ty, ColumnType::Integer { bits: 32 });
        assert_eq!(t("DECIMAL(38, 18)").to_string(), "DECIMAL(38, 18)");
        assert_eq!(
            "MONEY".parse::<Typed>().unwrap_err(),
            "unknown type `MONEY`"
        );
        assert_eq!(
            "DECIMAL(2, 3)".parse::<Typed>().unwrap_err(),
            "`DECIMAL(2, 3)`: DECIMAL's precision is 1 to 38 and its scale at most the precision"
        );
    }
}
