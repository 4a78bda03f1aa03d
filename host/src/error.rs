//! What can stop a job.

use crate::dead_letter::DeadLetterError;
use crate::sink::SinkError;
use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error(transparent)]
    Udf(#[from] crate::udf::UdfError),
}
