//! A `filter` or `project` stage's spec, compiled: the condition or the SELECT list, the
//! columns they read (typed by the spec's `types`) and the Wasm functions they call.

use super::{Scope, Type, Typed, compile, parse_expr, parse_select_list};
use crate::spec::{StageKind, StageSpec};
use sqlparser::ast::{Expr, SelectItem};

/// One output of a projection.
#[derive(Debug, Clone)]
pub enum Output {
    /// `expr [AS name]`.
    Expr(String, Typed),
    /// `*`: every input column not named by another output, in the input's order.
    Wildcard,
}

/// A compiled stage: what it reads and computes.
#[derive(Debug, Clone)]
pub struct Program {
    pub scope: Scope,
    /// `filter`: the condition.
    pub condition: Option<Typed>,
    /// `project`: the outputs.
    pub outputs: Vec<Output>,
}

/// A mistake in a stage's spec: the field (`where`, `select`, `types.amount`) and why.
pub type FieldError = (String, String);

/// Checks a `filter` or `project` stage's fields by compiling them.
pub fn check(stage: &StageSpec) -> Result<(), FieldError> {
    if stage.module.is_some() || stage.builtin.is_some() || stage.registry.is_some() {
        return Err((
            "kind".to_owned(),
            "a `filter` or `project` stage is built in: it takes no `module`, `builtin` or `registry`".to_owned(),
        ));
    }
    compile_stage(stage).map(|_| ())
}

/// Compiles a `filter` or `project` stage.
pub fn compile_stage(stage: &StageSpec) -> Result<Program, FieldError> {
    let mut declared = Vec::with_capacity(stage.types.len());
    for (column, name) in &stage.types {
        let ty = Type::of_sql(name).ok_or_else(|| {
            (
                format!("types.{column}"),
                format!("unknown type '{name}' (BOOLEAN, BIGINT, DOUBLE, STRING, TIMESTAMP(3))"),
            )
        })?;
        declared.push((column.clone(), ty));
    }
    let mut scope = Scope::open(declared).with_functions(stage.functions.keys().cloned());
    match stage.kind {
        StageKind::Filter => {
            if stage.select.is_some() {
                return Err((
                    "select".to_owned(),
                    "a `filter` stage takes `where`, not `select`".to_owned(),
                ));
            }
            let text = stage.condition.as_deref().ok_or_else(|| {
                (
                    "where".to_owned(),
                    "a `filter` stage needs `where` (a SQL condition)".to_owned(),
                )
            })?;
            let field = |e: super::ExprError| ("where".to_owned(), e.to_string());
            let condition =
                compile(&parse_expr(text).map_err(field)?, &mut scope).map_err(field)?;
            if !condition.ty.is_boolean() {
                return Err((
                    "where".to_owned(),
                    format!("the condition must be a BOOLEAN, not {}", condition.ty),
                ));
            }
            Ok(Program {
                scope,
                condition: Some(condition),
                outputs: Vec::new(),
            })
        }
        StageKind::Project => {
            if stage.condition.is_some() {
                return Err((
                    "where".to_owned(),
                    "a `project` stage takes `select`, not `where`".to_owned(),
                ));
            }
            let text = stage.select.as_deref().ok_or_else(|| {
                (
                    "select".to_owned(),
                    "a `project` stage needs `select` (a SQL SELECT list)".to_owned(),
                )
            })?;
            let field = |e: super::ExprError| ("select".to_owned(), e.to_string());
            let items = parse_select_list(text).map_err(field)?;
            let outputs = outputs(&items, &mut scope).map_err(field)?;
            Ok(Program {
                scope,
                condition: None,
                outputs,
            })
        }
        StageKind::Parse | StageKind::Map | StageKind::Enrich => Err((
            "kind".to_owned(),
            "only `filter` and `project` stages are compiled".to_owned(),
        )),
    }
}

/// A SELECT list's outputs, each named: its alias, its column, or `EXPR$n` (as Flink names
/// an unnamed expression).
pub fn outputs(items: &[SelectItem], scope: &mut Scope) -> Result<Vec<Output>, super::ExprError> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            SelectItem::UnnamedExpr(expr) => {
                let typed = compile(expr, scope)?;
                out.push(Output::Expr(natural_name(expr, i), typed));
            }
            SelectItem::ExprWithAlias { expr, alias } => {
                out.push(Output::Expr(alias.value.clone(), compile(expr, scope)?));
            }
            SelectItem::Wildcard(options)
                if options.opt_exclude.is_none()
                    && options.opt_except.is_none()
                    && options.opt_rename.is_none()
                    && options.opt_replace.is_none()
                    && options.opt_ilike.is_none() =>
            {
                out.push(Output::Wildcard);
            }
            other => {
                return Err(super::ExprError::unsupported(
                    sqlparser::ast::Spanned::span(other),
                    format!("`{other}` in a SELECT list"),
                ));
            }
        }
    }
    Ok(out)
}

fn natural_name(expr: &Expr, index: usize) -> String {
    match expr {
        Expr::Identifier(ident) => ident.value.clone(),
        Expr::CompoundIdentifier(parts) if !parts.is_empty() => {
            parts.last().map(|p| p.value.clone()).unwrap_or_default()
        }
        _ => format!("EXPR${index}"),
    }
}
