//! The built-in `avro-confluent` steps: a parse step reading Avro in Confluent's wire
//! format with writer schemas from a schema registry, and the Kafka sink's encoding of
//! window results the same way (schemas registered under `<topic>-value` and
//! `<topic>-key`, Confluent's TopicNameStrategy).

use super::{FormatStage, ParseStage};
use crate::format::{avro, avro_typed};
use crate::registry::client::{RegistryClient, RegistryError};
use crate::udf::UdfError;
use apache_avro::Schema;
use rivulet_rows::{Batch, BatchBuilder, Encoded, Packed, RawBatch, RecordError, RowsOut};
use std::collections::HashMap;
use std::sync::Arc;

/// Parses each payload as one Avro record in Confluent's wire format. A payload that is not
/// in the wire format, names a schema id the registry does not have, or is not a record
/// of its schema is refused with the reason; a registry that cannot be reached fails the
/// batch (its records are refused with that reason, or the job stops with `on_error = "fail"`).
#[derive(Debug)]
pub struct AvroParse {
    stage: String,
    registry: RegistryClient,
}

impl AvroParse {
    pub fn new(stage: &str, registry: &str) -> Self {
        AvroParse {
            stage: stage.to_owned(),
            registry: RegistryClient::new(registry),
        }
    }

    fn failed(&self, err: RegistryError) -> UdfError {
        UdfError::Builtin {
            stage: self.stage.clone(),
            reason: err.to_string(),
        }
    }
}

impl ParseStage for AvroParse {
    fn parse(&mut self, input: &RawBatch) -> Result<RowsOut, UdfError> {
        let mut builder = BatchBuilder::new();
        let mut origins = Vec::with_capacity(input.len as usize);
        let mut errors = Vec::new();
        for (index, record) in (0u32..).zip(input.iter()) {
            let row = match avro::split(record.payload) {
                Err(message) => Err(message),
                Ok((id, body)) => match self.registry.schema(id) {
                    Ok(schema) => avro::decode(&schema, id, body)
                        .and_then(|value| avro_typed::decimals_as_text(value, &schema))
                        .and_then(|value| {
                            builder
                                .push(&avro::Row(&value))
                                .map_err(|err| err.to_string())
                        }),
                    Err(err @ RegistryError::UnknownId { .. }) => Err(err.to_string()),
                    Err(err) => return Err(self.failed(err)),
                },
            };
            match row {
                Ok(()) => origins.push(index),
                Err(message) => errors.push(RecordError { index, message }),
            }
        }
        Ok(RowsOut {
            rows: builder.finish(),
            origins,
            errors,
        })
    }
}

/// Encodes window results for a Kafka topic: each row as a record of a schema derived
/// from the result's columns (registered under `<topic>-value`), and, when the sink is
/// keyed, the key as an Avro string (registered under `<topic>-key`).
#[derive(Debug)]
pub struct AvroFormat {
    stage: String,
    topic: String,
    key_field: Option<String>,
    /// Columns that are never null (the window bounds and key): plain types, not unions.
    required: Vec<String>,
    registry: RegistryClient,
    /// Derived schemas by column names and types, with their ids.
    schemas: HashMap<String, (Arc<Schema>, u32)>,
}

impl AvroFormat {
    pub fn new(stage: &str, topic: &str, key_field: Option<String>, registry: &str) -> Self {
        let mut required = vec!["window_start".to_owned(), "window_end".to_owned()];
        required.extend(key_field.clone());
        AvroFormat {
            stage: stage.to_owned(),
            topic: topic.to_owned(),
            key_field,
            required,
            registry: RegistryClient::new(registry),
            schemas: HashMap::new(),
        }
    }

    fn failed(&self, reason: String) -> UdfError {
        UdfError::Builtin {
            stage: self.stage.clone(),
            reason,
        }
    }

    /// The value schema of `rows` and its id, registered on first use.
    fn value_schema(&mut self, rows: &Batch) -> Result<(Arc<Schema>, u32), UdfError> {
        let signature: Vec<String> = rows
            .columns
            .iter()
            .map(|c| format!("{}:{:?}", c.name, std::mem::discriminant(&c.values)))
            .collect();
        let signature = signature.join(",");
        if let Some(found) = self.schemas.get(&signature) {
            return Ok(found.clone());
        }
        let schema = avro::record_schema(rows, &self.topic, &self.required)
            .map_err(|reason| self.failed(reason))?;
        let subject = format!("{}-value", self.topic);
        let id = self
            .registry
            .register(&subject, &schema)
            .map_err(|err| self.failed(err.to_string()))?;
        let found = (Arc::new(schema), id);
        self.schemas.insert(signature, found.clone());
        Ok(found)
    }
}

impl FormatStage for AvroFormat {
    fn format(&mut self, rows: &Batch) -> Result<Encoded, UdfError> {
        let (schema, id) = self.value_schema(rows)?;
        let key_id = match &self.key_field {
            Some(_) => Some(
                self.registry
                    .register(&format!("{}-key", self.topic), &Schema::String)
                    .map_err(|err| self.failed(err.to_string()))?,
            ),
            None => None,
        };
        let mut payloads = Packed::new();
        let mut keys = key_id.map(|_| Packed::new());
        let mut errors = Vec::new();
        for i in 0..rows.len as usize {
            let key = match (&self.key_field, key_id) {
                (Some(field), Some(key_id)) => key_text(rows, field, i)
                    .and_then(|text| avro::encode_string(&text))
                    .map(|body| Some(avro::frame(key_id, &body))),
                _ => Ok(None),
            };
            let encoded = key.and_then(|key| {
                avro::encode_row(&schema, rows, i).map(|body| (key, avro::frame(id, &body)))
            });
            match encoded {
                Ok((key, payload)) => {
                    payloads.push(&payload);
                    if let Some(keys) = &mut keys {
                        keys.push(key.as_deref().unwrap_or_default());
                    }
                }
                Err(message) => {
                    payloads.push(&[]);
                    if let Some(keys) = &mut keys {
                        keys.push(&[]);
                    }
                    errors.push(RecordError {
                        index: i as u32,
                        message,
                    });
                }
            }
        }
        Ok(Encoded {
            payloads,
            keys,
            errors,
        })
    }
}

/// Row `i`'s key as text (a number as written in JSON).
fn key_text(rows: &Batch, field: &str, i: usize) -> Result<String, String> {
    match rows.column(field).and_then(|c| c.scalar(i)) {
        Some(rivulet_rows::Scalar::Text(text)) => Ok(text),
        Some(rivulet_rows::Scalar::Null) | None => {
            Err(format!("the key field `{field}` is missing or null"))
        }
        Some(other) => Ok(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A URL nothing listens on.
    fn nowhere() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}")
    }

    #[test]
    fn a_registry_that_is_down_fails_the_batch_naming_it_but_a_bad_payload_needs_none() {
        let url = nowhere();
        let mut stage = AvroParse::new("parse-sales", &url);
        let mut raw = RawBatch::new();
        raw.push(None, b"plain text", 0, 0, 0, &[]);
        let out = stage.parse(&raw).unwrap();
        assert_eq!(out.origins, Vec::<u32>::new());
        assert_eq!(
            out.errors,
            vec![RecordError {
                index: 0,
                message: "not Avro in Confluent's wire format: no magic byte 0 (the payload starts with 0x70)".into()
            }]
        );
        raw.push(None, &avro::frame(1, &[2, b'x']), 0, 0, 1, &[]);
        let err = stage.parse(&raw).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "stage `parse-sales`: the schema registry at {url} is unreachable: "
            )),
            "{err}"
        );
    }

    #[test]
    fn a_registry_that_is_down_fails_the_encoding_naming_it() {
        let url = nowhere();
        let mut stage = AvroFormat::new("format", "out", None, &url);
        let mut builder = BatchBuilder::new();
        builder.push(&serde_json::json!({ "n": 1 })).unwrap();
        let err = stage.format(&builder.finish()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "stage `format`: the schema registry at {url} is unreachable: "
            )),
            "{err}"
        );
    }
}
