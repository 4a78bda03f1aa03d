//! What can go wrong loading or running a UDF component.

use super::limits::LimitHit;
use std::path::PathBuf;

/// A UDF failure, naming the module or stage and, for limits, the limit.
#[derive(Debug, thiserror::Error)]
pub enum UdfError {
    #[error("cannot read UDF module {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{} is a core WebAssembly module, not a component: build the UDF with `cargo build --target wasm32-wasip2`",
        path.display()
    )]
    CoreModule { path: PathBuf },
    #[error("{} is not a valid WebAssembly component: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{} exports no rivulet UDF (a parse, map, aggregate or format world of rivulet:udf@0.1.0); it exports: {exports}",
        path.display()
    )]
    UnknownWorld { path: PathBuf, exports: String },
    #[error("{} imports `{import}`, which the rivulet sandbox does not provide", path.display())]
    ForbiddenImport { path: PathBuf, import: String },
    #[error(
        "{} is a {kind} step but imports rivulet:udf/lookup: only map steps may look rows up in reference tables",
        path.display()
    )]
    LookupOutsideMap { path: PathBuf, kind: &'static str },
    #[error("{} implements the {found} world, but stage `{stage}` needs the {expected} world", path.display())]
    WrongWorld {
        path: PathBuf,
        stage: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{} does not match the rivulet:udf@0.1.0 {world} world: {reason}", path.display())]
    Mismatch {
        path: PathBuf,
        world: &'static str,
        reason: String,
    },
    #[error(
        "stage `{stage}`: {} looks rows up in reference tables (it imports rivulet:udf/lookup), but the stage names no tables it may read: add `tables = [\"<table>\", ...]` to the stage",
        path.display()
    )]
    TablesUndeclared { stage: String, path: PathBuf },
    #[error("stage `{stage}`: cannot start the UDF: {reason}")]
    Instantiate { stage: String, reason: String },
    #[error("stage `{stage}`: {limit}")]
    Limit { stage: String, limit: LimitHit },
    #[error("stage `{stage}`: UDF trapped: {reason}")]
    Trap { stage: String, reason: String },
    #[error("stage `{stage}`: call abandoned because the job is stopping")]
    Stopped { stage: String },
    #[error("stage `{stage}`: UDF broke the contract: {reason}")]
    Contract { stage: String, reason: String },
    /// A built-in step failed as a whole (e.g. its schema registry cannot be reached).
    #[error("stage `{stage}`: {reason}")]
    Builtin { stage: String, reason: String },
    #[error("UDF runtime: {0}")]
    Runtime(String),
}

impl UdfError {
    /// The limit this error reports, if it is a limit.
    pub fn limit(&self) -> Option<LimitHit> {
        match self {
            UdfError::Limit { limit, .. } => Some(*limit),
            _ => None,
        }
    }

    /// Whether the call was abandoned because the job is stopping (not the guest's fault:
    /// its records must not be dead-lettered).
    pub fn is_stopped(&self) -> bool {
        matches!(self, UdfError::Stopped { .. })
    }
}
