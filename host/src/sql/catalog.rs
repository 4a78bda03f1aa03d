//! The tables a script declares: their columns (what each reads from the record), their time
//! attributes (processing time, or event time with its watermark delay) and their options.

use super::parse::{ColumnKind, OptionDef, TableDef};
use super::{Pos, SqlError, interval};
use sqlparser::ast::{
    BinaryOperator, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Spanned, Value,
};
use std::time::Duration;

/// What a column holds and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    /// The record's field of the same name.
    Field,
    /// `AS PROCTIME()`: the time of arrival.
    ProcTime,
    /// `AS TO_TIMESTAMP_LTZ(field, 3)`: a field of epoch milliseconds.
    EpochMillis(String),
    /// `METADATA FROM 'timestamp'`: the Kafka record's timestamp.
    KafkaTimestamp,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub at: Pos,
    /// The declared type, upper case (`STRING`, `TIMESTAMP(3)`); computed columns: the
    /// type of their expression.
    pub sql_type: String,
    pub source: ColumnSource,
    /// Whether the column admits null (not `NOT NULL`, not in the PRIMARY KEY).
    pub nullable: bool,
}

impl Column {
    fn is_timestamp(&self) -> bool {
        self.sql_type.starts_with("TIMESTAMP")
    }
}

/// Where event time comes from: a column with a watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The time attribute column.
    pub column: String,
    /// The row field holding the time (`kafka`: the record timestamp).
    pub field: String,
    /// How far the watermark trails the largest time seen.
    pub delay: Duration,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub at: Pos,
    pub columns: Vec<Column>,
    pub watermark: Option<Watermark>,
    /// The PRIMARY KEY's columns (empty: none), and where it is declared.
    pub primary_key: Vec<String>,
    pub primary_key_at: Pos,
    pub options: Vec<OptionDef>,
}

impl Table {
    /// The column named `name` (case-insensitive, as Flink's default).
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The column named `name`, or an error naming the table and its columns.
    pub fn expect_column(&self, name: &str, at: Pos) -> Result<&Column, SqlError> {
        self.column(name).ok_or_else(|| {
            let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
            SqlError::invalid(
                at,
                format!(
                    "table `{}` has no column `{name}` (it has {})",
                    self.name,
                    names.join(", ")
                ),
            )
        })
    }
}

/// The tables of a script, in declaration order.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: Vec<Table>,
}

impl Catalog {
    pub fn table(&self, name: &str, at: Pos) -> Result<&Table, SqlError> {
        self.tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let names: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
                SqlError::invalid(
                    at,
                    match names.is_empty() {
                        true => format!("unknown table `{name}` (no table is declared)"),
                        false => format!("unknown table `{name}` (declared: {})", names.join(", ")),
                    },
                )
            })
    }

    /// Adds a declared table, checking its columns and watermark.
    pub fn add(&mut self, def: TableDef) -> Result<(), SqlError> {
        if self.table(&def.name, def.at).is_ok() {
            return Err(SqlError::invalid(
                def.at,
                format!("table `{}` is declared twice", def.name),
            ));
        }
        let mut columns: Vec<Column> = Vec::with_capacity(def.columns.len());
        for column in &def.columns {
            if columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(&column.name))
            {
                return Err(SqlError::invalid(
                    column.at,
                    format!("table `{}` has two columns `{}`", def.name, column.name),
                ));
            }
            let (sql_type, source) = match &column.kind {
                ColumnKind::Physical(data_type) => (type_name(data_type), ColumnSource::Field),
                ColumnKind::Metadata(data_type, key) if key.eq_ignore_ascii_case("timestamp") => {
                    (type_name(data_type), ColumnSource::KafkaTimestamp)
                }
                ColumnKind::Metadata(_, key) => {
                    return Err(SqlError::unsupported_because(
                        column.at,
                        format!(
                            "the metadata column `{}` (METADATA FROM '{key}')",
                            column.name
                        ),
                        "only the Kafka 'timestamp' is read",
                    ));
                }
                ColumnKind::Computed(expr) => computed(expr, &columns, &column.name)?,
            };
            columns.push(Column {
                name: column.name.clone(),
                at: column.at,
                sql_type,
                source,
                nullable: !column.not_null,
            });
        }
        let mut primary_key = Vec::new();
        let mut primary_key_at = def.at;
        if let Some(key) = &def.primary_key {
            primary_key_at = key.at;
            for (name, at) in &key.columns {
                let Some(column) = columns
                    .iter_mut()
                    .find(|c| c.name.eq_ignore_ascii_case(name))
                else {
                    return Err(SqlError::invalid(
                        *at,
                        format!("PRIMARY KEY: table `{}` has no column `{name}`", def.name),
                    ));
                };
                if column.source != ColumnSource::Field {
                    return Err(SqlError::invalid(
                        *at,
                        format!(
                            "PRIMARY KEY: `{}` is not a physical column of `{}`",
                            column.name, def.name
                        ),
                    ));
                }
                // A primary key's columns are NOT NULL, as in Flink.
                column.nullable = false;
                if !primary_key.contains(&column.name) {
                    primary_key.push(column.name.clone());
                }
            }
        }
        let mut table = Table {
            name: def.name,
            at: def.at,
            columns,
            watermark: None,
            primary_key,
            primary_key_at,
            options: def.options,
        };
        if let Some(def) = def.watermark {
            let column = table.expect_column(&def.column, def.at)?;
            let field = match &column.source {
                ColumnSource::Field if column.is_timestamp() => column.name.clone(),
                ColumnSource::EpochMillis(field) => field.clone(),
                ColumnSource::KafkaTimestamp => "kafka".to_owned(),
                _ => {
                    return Err(SqlError::invalid(
                        def.at,
                        format!(
                            "WATERMARK FOR `{}`: the column must be a TIMESTAMP(3) or TIMESTAMP_LTZ(3) (it is {})",
                            column.name, column.sql_type
                        ),
                    ));
                }
            };
            let delay = watermark_delay(&def.expr, &column.name)?;
            table.watermark = Some(Watermark {
                column: column.name.clone(),
                field,
                delay,
            });
        }
        self.tables.push(table);
        Ok(())
    }
}

/// A type as text, upper case, without spaces before parentheses (`TIMESTAMP(3)`).
fn type_name(data_type: &DataType) -> String {
    data_type.to_string().to_uppercase()
}

/// A computed column's type and source: `PROCTIME()` or `TO_TIMESTAMP_LTZ(field, 3)`.
fn computed(
    expr: &Expr,
    columns: &[Column],
    name: &str,
) -> Result<(String, ColumnSource), SqlError> {
    let at = Pos::of(expr.span());
    let unsupported = || {
        SqlError::unsupported_because(
            at,
            format!("the computed column `{name} AS {expr}`"),
            "computed columns are PROCTIME() and TO_TIMESTAMP_LTZ(epoch_millis_column, 3)",
        )
    };
    let Expr::Function(function) = expr else {
        return Err(unsupported());
    };
    let args: Vec<&Expr> = match &function.args {
        FunctionArguments::None => vec![],
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|arg| match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                _ => Err(unsupported()),
            })
            .collect::<Result<_, _>>()?,
        FunctionArguments::Subquery(_) => return Err(unsupported()),
    };
    let function_name = function.name.to_string().to_uppercase();
    match (function_name.as_str(), &args[..]) {
        ("PROCTIME", []) => Ok(("TIMESTAMP_LTZ(3)".to_owned(), ColumnSource::ProcTime)),
        ("TO_TIMESTAMP_LTZ", [Expr::Identifier(field), precision]) => {
            let precision_ok = matches!(precision, Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n == "3"));
            if !precision_ok {
                return Err(SqlError::unsupported_because(
                    Pos::of(precision.span()),
                    format!("TO_TIMESTAMP_LTZ with precision `{precision}`"),
                    "epoch milliseconds, precision 3, are",
                ));
            }
            let source = columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(&field.value))
                .ok_or_else(|| {
                    SqlError::invalid(
                        Pos::of(field.span),
                        format!(
                            "computed column `{name}`: no column `{}` declared before it",
                            field.value
                        ),
                    )
                })?;
            if source.source != ColumnSource::Field || !source.sql_type.contains("INT") {
                return Err(SqlError::invalid(
                    Pos::of(field.span),
                    format!(
                        "TO_TIMESTAMP_LTZ(`{}`, 3) needs a BIGINT column of epoch milliseconds (it is {})",
                        source.name, source.sql_type
                    ),
                ));
            }
            Ok((
                "TIMESTAMP_LTZ(3)".to_owned(),
                ColumnSource::EpochMillis(source.name.clone()),
            ))
        }
        _ => Err(unsupported()),
    }
}

/// `col` (no delay) or `col - INTERVAL 'n' UNIT`.
fn watermark_delay(expr: &Expr, column: &str) -> Result<Duration, SqlError> {
    let is_column =
        |e: &Expr| matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(column));
    match expr {
        e if is_column(e) => Ok(Duration::ZERO),
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Minus,
            right,
        } if is_column(left) => interval::duration(right),
        _ => Err(SqlError::unsupported_because(
            Pos::of(expr.span()),
            format!("the watermark `{expr}`"),
            format!("write `{column} - INTERVAL 'n' SECOND`"),
        )),
    }
}

impl Catalog {
    /// The declared tables, in declaration order.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// Drops table `name`; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.tables.len();
        self.tables.retain(|t| !t.name.eq_ignore_ascii_case(name));
        self.tables.len() != before
    }
}
