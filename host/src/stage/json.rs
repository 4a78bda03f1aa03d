//! The built-in `json` parse step.

use super::ParseStage;
use crate::udf::UdfError;
use rivulet_rows::{RawBatch, RowsOut};

/// The built-in `json` parse step: each payload is one JSON object, which becomes a row.
#[derive(Debug, Default)]
pub struct JsonParse;

impl ParseStage for JsonParse {
    fn parse(&mut self, input: &RawBatch) -> Result<RowsOut, UdfError> {
        let mut builder = rivulet_rows::BatchBuilder::new();
        let mut origins = Vec::new();
        let mut errors = Vec::new();
        for (index, record) in (0u32..).zip(input.iter()) {
            let pushed = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(
                record.payload,
            )
            .map_err(|err| format!("not a JSON object: {err}"))
            .and_then(|row| builder.push(&row).map_err(|err| err.to_string()));
            match pushed {
                Ok(()) => origins.push(index),
                Err(message) => errors.push(rivulet_rows::RecordError { index, message }),
            }
        }
        Ok(RowsOut {
            rows: builder.finish(),
            origins,
            errors,
        })
    }
}
