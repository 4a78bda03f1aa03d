//! Flink-style SQL jobs: a script of `CREATE TABLE`, `SET` and one `INSERT INTO ... SELECT`
//! over a tumbling window becomes a [`PipelineSpec`], the same graph a TOML spec builds.
//!
//! [`parse`] reads the text (sqlparser), [`catalog`] keeps the tables, [`connector`] turns a
//! table's `WITH` options into a source or a sink, [`plan`] builds the spec and [`explain`]
//! prints it.

pub mod catalog;
pub mod connector;
pub mod explain;
pub mod format;
pub mod function;
pub mod guarantee;
pub mod interval;
pub mod lookup;
pub mod parse;
pub mod plan;
pub mod query;
pub mod session;

use crate::spec::{PipelineSpec, SpecError};
use std::fmt;
use std::path::Path;

/// Where a construct starts in the script: line and column, from 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub fn of(span: sqlparser::tokenizer::Span) -> Self {
        Pos {
            line: span.start.line,
            column: span.start.column,
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str("?:?")
        } else {
            write!(f, "{}:{}", self.line, self.column)
        }
    }
}

/// A script that cannot be run, with the construct at fault and where it is.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not SQL sqlparser can read (its message says where).
    #[error("syntax error: {0}")]
    Syntax(String),
    /// Valid SQL that rivulet does not run (yet).
    #[error("{at}: {construct} is not supported yet{hint}")]
    Unsupported {
        at: Pos,
        construct: String,
        hint: String,
    },
    /// A mistake: an unknown table, column or option, a missing option, a wrong value.
    #[error("{at}: {message}")]
    Invalid { at: Pos, message: String },
    /// The planned job is not a valid spec (a bug in the planner if it ever shows).
    #[error("the planned job is invalid: {0}")]
    Spec(#[from] SpecError),
}

impl SqlError {
    pub fn unsupported(at: Pos, construct: impl Into<String>) -> Self {
        SqlError::Unsupported {
            at,
            construct: construct.into(),
            hint: String::new(),
        }
    }

    pub fn unsupported_because(
        at: Pos,
        construct: impl Into<String>,
        hint: impl fmt::Display,
    ) -> Self {
        SqlError::Unsupported {
            at,
            construct: construct.into(),
            hint: format!(" ({hint})"),
        }
    }

    pub fn invalid(at: Pos, message: impl Into<String>) -> Self {
        SqlError::Invalid {
            at,
            message: message.into(),
        }
    }
}

impl SqlError {
    /// Where the error is, when it is about one construct.
    pub fn at(&self) -> Option<Pos> {
        match self {
            SqlError::Unsupported { at, .. } | SqlError::Invalid { at, .. } => Some(*at),
            SqlError::Syntax(_) | SqlError::Spec(_) => None,
        }
    }
}

impl From<sqlparser::parser::ParserError> for SqlError {
    fn from(err: sqlparser::parser::ParserError) -> Self {
        let message = err.to_string();
        let message = message
            .strip_prefix("sql parser error: ")
            .unwrap_or(&message);
        SqlError::Syntax(message.to_owned())
    }
}

/// A planned SQL job: the spec to run, whether the script asked for `EXPLAIN`, and notes on
/// what was accepted without effect (printed once).
#[derive(Debug, Clone)]
pub struct SqlJob {
    pub spec: PipelineSpec,
    /// The other INSERTs of the script (statement sets, or more than one INSERT): jobs run
    /// side by side with `spec`.
    pub also: Vec<PipelineSpec>,
    pub explain: bool,
    pub notes: Vec<String>,
    /// What the job will do differently from what the script asked (logged as warnings).
    pub warnings: Vec<String>,
    /// What SHOW TABLES, DESCRIBE and the like print, in order.
    pub printed: Vec<String>,
}

/// Reads and plans the script at `path`; relative file paths in it are relative to the
/// script's folder.
pub fn load(path: &Path) -> Result<SqlJob, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
        path: path.to_owned(),
        error,
    })?;
    let mut job = plan_script(&text, path).map_err(|error| LoadError::Plan {
        path: path.to_owned(),
        error,
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    job.spec.resolve_paths(base);
    for spec in &mut job.also {
        spec.resolve_paths(base);
    }
    Ok(job)
}

/// A script that could not be read or planned, with its path.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read SQL script {}: {error}", path.display())]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("{}{}{error}", path.display(), if error.at().is_some() { ":" } else { ": " })]
    Plan {
        path: std::path::PathBuf,
        error: SqlError,
    },
}

/// Plans script `text` (`origin` names it in the spec's messages).
pub fn plan_script(text: &str, origin: &Path) -> Result<SqlJob, SqlError> {
    let statements = parse::parse_script(text)?;
    plan::plan(statements, origin)
}
