//! The row-at-a-time parts of a query: `WHERE` as a built-in `filter` stage and the SELECT
//! list of a query without a window as a built-in `project` stage. Expressions are
//! type-checked here against the source table's declared columns (errors at the script's
//! line and column) and handed to the stages as text, with the columns' types.

use super::catalog::{ColumnSource, Table};
use super::function::Functions;
use super::{Pos, SqlError};
use crate::expr::program::{Output, outputs};
use crate::expr::{ExprError, Scope, Type, compile};
use crate::spec::{OnError, StageKind, StageSpec};
use sqlparser::ast::{Expr, SelectItem, Spanned};
use std::collections::BTreeMap;

/// The name of the built-in filter stage a SQL job runs for its WHERE.
pub const FILTER_STAGE: &str = "where";
/// The name of the built-in project stage a SQL job runs for its SELECT list.
pub const PROJECT_STAGE: &str = "select";

impl From<ExprError> for SqlError {
    fn from(err: ExprError) -> Self {
        let at = Pos {
            line: err.line,
            column: err.column,
        };
        match err.unsupported {
            true => SqlError::Unsupported {
                at,
                construct: err
                    .message
                    .strip_suffix(" is not supported yet")
                    .unwrap_or(&err.message)
                    .to_owned(),
                hint: String::new(),
            },
            false => SqlError::invalid(at, err.message),
        }
    }
}

/// The columns of `table` an expression may read (the record's fields), with their types.
fn columns(table: &Table) -> Vec<(String, Type)> {
    table
        .columns
        .iter()
        .filter(|c| c.source == ColumnSource::Field)
        .map(|c| (c.name.clone(), column_type(&c.sql_type)))
        .collect()
}

fn column_type(sql_type: &str) -> Type {
    match Type::of_sql(sql_type) {
        Some(ty) => ty,
        // DECIMAL and the like: numbers.
        None if ["DECIMAL", "NUMERIC", "DEC"]
            .iter()
            .any(|t| sql_type.starts_with(t)) =>
        {
            Type::Float
        }
        None => Type::Any,
    }
}

fn scope(table: &Table, functions: &Functions) -> Scope {
    Scope::closed(&table.name, columns(table)).with_functions(functions.names())
}

/// The stage's `types` (every declared field) and `functions` (those it calls).
fn stage(
    name: &str,
    kind: StageKind,
    table: &Table,
    scope: &Scope,
    functions: &Functions,
) -> StageSpec {
    let types: BTreeMap<String, String> = columns(table)
        .into_iter()
        .filter(|(_, ty)| *ty != Type::Any)
        .map(|(name, ty)| (name, ty.to_string()))
        .collect();
    StageSpec {
        name: name.to_owned(),
        kind,
        module: None,
        builtin: None,
        registry: None,
        condition: None,
        select: None,
        types,
        functions: scope
            .udfs
            .iter()
            .filter_map(|name| functions.path(name).map(|p| (name.clone(), p.to_owned())))
            .collect(),
        table: None,
        on: None,
        columns: None,
        rename: Default::default(),
        on_miss: None,
        tables: Vec::new(),
        // A row whose value cannot be computed goes to the dead letters with the reason.
        on_error: OnError::Dlq,
        limits: Default::default(),
    }
}

/// `WHERE condition` as a filter stage.
pub fn filter(
    condition: &Expr,
    table: &Table,
    functions: &Functions,
) -> Result<StageSpec, SqlError> {
    let mut scope = scope(table, functions);
    let typed = compile(condition, &mut scope)?;
    if !typed.ty.is_boolean() {
        return Err(SqlError::invalid(
            Pos::of(condition.span()),
            format!(
                "WHERE needs a BOOLEAN condition, but `{condition}` is {}",
                typed.ty
            ),
        ));
    }
    let mut spec = stage(FILTER_STAGE, StageKind::Filter, table, &scope, functions);
    spec.condition = Some(condition.to_string());
    Ok(spec)
}

/// The SELECT list of a query without a window, written into `sink`'s columns by position,
/// as a project stage.
pub fn project(
    items: &[SelectItem],
    table: &Table,
    sink: &Table,
    functions: &Functions,
    (at, sink_at): (Pos, Pos),
) -> Result<StageSpec, SqlError> {
    let mut scope = scope(table, functions);
    let compiled = outputs(items, &mut scope)?;
    if compiled.iter().any(|o| matches!(o, Output::Wildcard)) {
        return Err(SqlError::unsupported_because(
            at,
            "SELECT * into a table",
            "name the columns, in the sink table's order",
        ));
    }
    if compiled.len() != sink.columns.len() {
        let names: Vec<&str> = sink.columns.iter().map(|c| c.name.as_str()).collect();
        return Err(SqlError::invalid(
            sink_at,
            format!(
                "the SELECT list has {} columns but table `{}` has {} ({})",
                compiled.len(),
                sink.name,
                names.len(),
                names.join(", ")
            ),
        ));
    }
    let mut list = Vec::with_capacity(items.len());
    for ((item, output), column) in items.iter().zip(&compiled).zip(&sink.columns) {
        let (
            Output::Expr(_, typed),
            SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. },
        ) = (output, item)
        else {
            continue;
        };
        let wanted = column_type(&column.sql_type);
        let fits = match (typed.ty, wanted) {
            (_, Type::Any) | (Type::Any, _) => true,
            (Type::Integer, Type::Float) => true,
            (Type::Text, Type::Timestamp) | (Type::Timestamp, Type::Text) => true,
            (a, b) => a == b,
        };
        if !fits {
            return Err(SqlError::invalid(
                Pos::of(expr.span()),
                format!(
                    "column `{}` of `{}` is {}, but the SELECT list gives it {} (`{expr}`)",
                    column.name, sink.name, column.sql_type, typed.ty
                ),
            ));
        }
        let text = match (typed.ty, wanted) {
            (Type::Integer, Type::Float)
            | (Type::Any, Type::Integer | Type::Float | Type::Boolean) => {
                format!("CAST({expr} AS {wanted})")
            }
            _ => expr.to_string(),
        };
        list.push(format!("{text} AS {}", quoted(&column.name)));
    }
    let mut spec = stage(PROJECT_STAGE, StageKind::Project, table, &scope, functions);
    spec.select = Some(list.join(", "));
    Ok(spec)
}

/// A name as an identifier of the stage's SELECT list (quoted: it may be a keyword).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
