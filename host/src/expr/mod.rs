//! SQL expressions evaluated natively over row batches: column references, literals,
//! arithmetic, `CAST`, `CASE`, comparisons, `AND`/`OR`/`NOT` with SQL's three-valued logic,
//! `IS [NOT] NULL`, `IN`, `BETWEEN`, `LIKE` and string functions.
//!
//! [`compile`] type-checks a sqlparser expression against the columns it may read and
//! gives a [`Typed`] tree; [`eval`] runs trees over a [`rivulet_rows::Batch`] a batch at a
//! time (only the rows a branch needs are evaluated there, so `CASE WHEN b = 0 THEN NULL
//! ELSE a / b END` never divides by zero); [`column`] turns results back into columns. A
//! value that cannot be computed for one row (division by zero, a failed cast) is that
//! row's error, never the batch's. The built-in `filter` and `project` stages
//! (`stage/filter.rs`, `stage/project.rs`) are its users.

pub mod column;
pub mod compile;
pub mod eval;
pub mod functions;
pub mod program;
pub mod value;

pub use compile::{Scope, compile};
pub use value::{Type, Value};

use sqlparser::ast;
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

/// An expression that cannot be compiled, with where it is (line and column from 1, in the
/// text it was parsed from).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ExprError {
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// Valid SQL that is not supported (yet), rather than a mistake.
    pub unsupported: bool,
}

impl ExprError {
    pub(crate) fn invalid(span: sqlparser::tokenizer::Span, message: impl Into<String>) -> Self {
        ExprError {
            line: span.start.line,
            column: span.start.column,
            message: message.into(),
            unsupported: false,
        }
    }

    pub(crate) fn unsupported(
        span: sqlparser::tokenizer::Span,
        construct: impl AsRef<str>,
    ) -> Self {
        ExprError {
            line: span.start.line,
            column: span.start.column,
            message: format!("{} is not supported yet", construct.as_ref()),
            unsupported: true,
        }
    }
}

/// A compiled expression: its node, its static type and where it starts.
#[derive(Debug, Clone)]
pub struct Typed {
    pub node: Node,
    pub ty: Type,
    pub span: sqlparser::tokenizer::Span,
}

/// Binary operators on two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Concat,
}

/// The built-in scalar functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Upper,
    Lower,
    Concat,
    CharLength,
    /// TRIM: which ends (leading, trailing).
    Trim(bool, bool),
    Substring,
    Coalesce,
    Abs,
}

#[derive(Debug, Clone)]
pub enum Node {
    /// Column slot `slot` of the program (see [`Scope::columns`]).
    Column(usize),
    Literal(Value),
    Neg(Box<Typed>),
    Not(Box<Typed>),
    Binary(BinOp, Box<Typed>, Box<Typed>),
    And(Box<Typed>, Box<Typed>),
    Or(Box<Typed>, Box<Typed>),
    IsNull(Box<Typed>, bool),
    In(Box<Typed>, Vec<Typed>, bool),
    Between(Box<Typed>, Box<Typed>, Box<Typed>, bool),
    Like(Box<Typed>, Box<Typed>, Option<char>, bool),
    /// `CASE [operand] WHEN .. THEN .. ELSE .. END`: an operand's WHENs are compared to it.
    Case {
        operand: Option<Box<Typed>>,
        whens: Vec<(Typed, Typed)>,
        otherwise: Option<Box<Typed>>,
    },
    Cast(Box<Typed>, Type),
    Call(Builtin, Vec<Typed>),
    /// A Wasm map component used as a scalar function: its slot in [`Scope::udfs`].
    Udf(usize, Vec<Typed>),
}

/// Parses one expression written alone (a TOML spec's `where`).
pub fn parse_expr(text: &str) -> Result<ast::Expr, ExprError> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(syntax)?;
    let expr = parser.parse_expr().map_err(syntax)?;
    let next = parser.peek_token();
    if next.token != sqlparser::tokenizer::Token::EOF {
        return Err(ExprError::invalid(
            next.span,
            format!("unexpected `{}` after the expression", next.token),
        ));
    }
    Ok(expr)
}

/// Parses a SELECT list written alone (a TOML spec's `select`).
pub fn parse_select_list(text: &str) -> Result<Vec<ast::SelectItem>, ExprError> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(syntax)?;
    let items = parser.parse_projection().map_err(syntax)?;
    let next = parser.peek_token();
    if next.token != sqlparser::tokenizer::Token::EOF {
        return Err(ExprError::invalid(
            next.span,
            format!("unexpected `{}` after the SELECT list", next.token),
        ));
    }
    Ok(items)
}

fn syntax(err: sqlparser::parser::ParserError) -> ExprError {
    let message = err.to_string();
    let message = message
        .strip_prefix("sql parser error: ")
        .unwrap_or(&message)
        .to_owned();
    ExprError {
        line: 1,
        column: 1,
        message: format!("syntax error: {message}"),
        unsupported: false,
    }
}
