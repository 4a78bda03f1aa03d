//! The Kafka sink's built-in encoding of result rows with a keyed layout (Flink's
//! `upsert-kafka`, or a TOML sink with `key_format`, `value_fields` or `columns`): the
//! record key from the key fields (`raw` text, a `json` object, or an `avro-confluent`
//! record registered under `<topic>-key`), the value as JSON or as an `avro-confluent`
//! record (registered under `<topic>-value`), with or without the key fields, each Avro
//! schema following the declared column types (Flink's mapping, see
//! [`crate::format::avro_typed`]) or, without them, the values seen.

use super::FormatStage;
use crate::column_type::{ColumnType, Typed};
use crate::format::{avro, avro_typed, json};
use crate::registry::client::RegistryClient;
use crate::spec::{ColumnSpec, KeyFormat};
use crate::udf::UdfError;
use apache_avro::Schema;
use rivulet_rows::{Batch, Encoded, Packed, RecordError, Values};
use std::collections::HashMap;
use std::sync::Arc;

/// An Avro encoding: where its schemas are registered, and those registered so far (by
/// their columns).
#[derive(Debug)]
pub struct AvroTarget {
    pub registry: RegistryClient,
    pub subject: String,
    schemas: HashMap<String, (Arc<Schema>, u32)>,
}

impl AvroTarget {
    pub fn new(registry: &str, subject: String) -> Self {
        AvroTarget {
            registry: RegistryClient::new(registry),
            subject,
            schemas: HashMap::new(),
        }
    }

    /// The schema of `columns` and its id, registered on first use.
    fn schema(&mut self, columns: &[(String, Typed)]) -> Result<(Arc<Schema>, u32), String> {
        let signature: Vec<String> = columns.iter().map(|(n, t)| format!("{n}:{t}")).collect();
        let signature = signature.join(",");
        if let Some(found) = self.schemas.get(&signature) {
            return Ok(found.clone());
        }
        let schema = avro_typed::record_schema(columns)?;
        let id = self
            .registry
            .register(&self.subject, &schema)
            .map_err(|err| err.to_string())?;
        let found = (Arc::new(schema), id);
        self.schemas.insert(signature, found.clone());
        Ok(found)
    }
}

/// How the value is written.
#[derive(Debug)]
pub enum ValueEncoding {
    /// A JSON object (DECIMAL text as numbers).
    Json,
    AvroConfluent(Box<AvroTarget>),
}

/// How the key is written.
#[derive(Debug)]
pub enum KeyEncoding {
    Raw,
    Json,
    AvroConfluent(Box<AvroTarget>),
}

impl KeyEncoding {
    pub fn new(format: KeyFormat, registry: Option<&str>, subject: String) -> Self {
        match (format, registry) {
            (KeyFormat::Raw, _) => KeyEncoding::Raw,
            (KeyFormat::Json, _) => KeyEncoding::Json,
            (KeyFormat::AvroConfluent, Some(registry)) => {
                KeyEncoding::AvroConfluent(Box::new(AvroTarget::new(registry, subject)))
            }
            // Validation requires a registry for an Avro key.
            (KeyFormat::AvroConfluent, None) => KeyEncoding::Raw,
        }
    }
}

/// The encoding stage.
#[derive(Debug)]
pub struct SinkEncoding {
    pub stage: String,
    pub value: ValueEncoding,
    /// `None`: the sink keys records itself (the window key's text).
    pub key: Option<KeyEncoding>,
    pub key_fields: Vec<String>,
    /// Whether the value leaves the key fields out (`value.fields-include = EXCEPT_KEY`).
    pub except_key: bool,
    /// The declared result columns (empty: take the types from the values).
    pub columns: Vec<ColumnSpec>,
    /// Columns holding DECIMAL text, written as JSON numbers.
    pub json_numbers: Vec<String>,
}

impl SinkEncoding {
    fn failed(&self, reason: String) -> UdfError {
        UdfError::Builtin {
            stage: self.stage.clone(),
            reason,
        }
    }

    /// The typed columns of the value (or of the key, `key` true), declared or seen.
    fn typed(&self, rows: &Batch, key: bool) -> Vec<(String, Typed)> {
        let wanted = |name: &str| match key {
            true => self.key_fields.iter().any(|k| k == name),
            false => !(self.except_key && self.key_fields.iter().any(|k| k == name)),
        };
        let mut out: Vec<(String, Typed)> = if self.columns.is_empty() {
            rows.columns
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        seen_type(&c.values, &self.json_numbers, &c.name),
                    )
                })
                .collect()
        } else {
            self.columns
                .iter()
                .map(|c| (c.name.clone(), c.ty))
                .collect()
        };
        out.retain(|(name, _)| wanted(name));
        if key {
            // Key fields are never null (a PRIMARY KEY is NOT NULL), in the key's order.
            out.sort_by_key(|(name, _)| self.key_fields.iter().position(|k| k == name));
            for (_, typed) in &mut out {
                typed.nullable = false;
            }
        } else if self.columns.is_empty() {
            // Window bounds and keys are never null.
            for (name, typed) in &mut out {
                if name == "window_start" || name == "window_end" || self.key_fields.contains(name)
                {
                    typed.nullable = false;
                }
            }
        }
        out
    }
}

/// The type of a column of values (for a schema derived from results without declared types).
fn seen_type(values: &Values, numbers: &[String], name: &str) -> Typed {
    let ty = match values {
        Values::Boolean(_) => ColumnType::Boolean,
        Values::Integer(_) => ColumnType::Integer { bits: 64 },
        Values::Float(_) => ColumnType::Double,
        Values::Text(_) if numbers.iter().any(|n| n == name) => ColumnType::Decimal {
            precision: crate::column_type::MAX_PRECISION,
            scale: 0,
        },
        Values::Text(_) | Values::Json(_) => ColumnType::String,
        Values::Binary(_) => ColumnType::Bytes,
    };
    Typed { ty, nullable: true }
}

impl FormatStage for SinkEncoding {
    fn format(&mut self, rows: &Batch) -> Result<Encoded, UdfError> {
        let value_columns = self.typed(rows, false);
        let key_columns = self.typed(rows, true);
        let value_schema = match &mut self.value {
            ValueEncoding::AvroConfluent(target) => Some(target.schema(&value_columns)),
            ValueEncoding::Json => None,
        }
        .transpose()
        .map_err(|reason| self.failed(reason))?;
        let key_schema = match &mut self.key {
            Some(KeyEncoding::AvroConfluent(target)) => Some(target.schema(&key_columns)),
            _ => None,
        }
        .transpose()
        .map_err(|reason| self.failed(reason))?;
        let skip: Vec<String> = match self.except_key {
            true => self.key_fields.clone(),
            false => Vec::new(),
        };
        let mut payloads = Packed::new();
        let mut keys = self.key.as_ref().map(|_| Packed::new());
        let mut errors = Vec::new();
        for i in 0..rows.len as usize {
            let key = match &self.key {
                None => Ok(Vec::new()),
                Some(KeyEncoding::Raw) => {
                    key_text(rows, &self.key_fields, i).map(String::into_bytes)
                }
                Some(KeyEncoding::Json) => key_present(rows, &self.key_fields, i).map(|()| {
                    let object = json::row_object(rows, i);
                    let only_key: serde_json::Map<String, serde_json::Value> = self
                        .key_fields
                        .iter()
                        .filter_map(|k| object.get(k).map(|v| (k.clone(), v.clone())))
                        .collect();
                    json::object_text(&only_key, &[], &self.json_numbers).into_bytes()
                }),
                Some(KeyEncoding::AvroConfluent(_)) => match &key_schema {
                    Some((schema, id)) => key_present(rows, &self.key_fields, i)
                        .and_then(|()| avro_typed::encode_row(schema, &key_columns, rows, i))
                        .map(|body| avro::frame(*id, &body)),
                    None => Ok(Vec::new()),
                },
            };
            let value = match &value_schema {
                None => Ok(json::row_text(rows, i, &skip, &self.json_numbers).into_bytes()),
                Some((schema, id)) => avro_typed::encode_row(schema, &value_columns, rows, i)
                    .map(|body| avro::frame(*id, &body)),
            };
            match key.and_then(|key| value.map(|value| (key, value))) {
                Ok((key, value)) => {
                    payloads.push(&value);
                    if let Some(keys) = &mut keys {
                        keys.push(&key);
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

/// Every key field of row `i` is present and not null.
fn key_present(rows: &Batch, fields: &[String], i: usize) -> Result<(), String> {
    for field in fields {
        if rows.column(field).is_none_or(|c| c.is_null(i)) {
            return Err(format!("the key field `{field}` is missing or null"));
        }
    }
    Ok(())
}

/// Row `i`'s one key field as text (a number as written in JSON).
fn key_text(rows: &Batch, fields: &[String], i: usize) -> Result<String, String> {
    key_present(rows, fields, i)?;
    let field = fields.first().map(String::as_str).unwrap_or_default();
    match rows.column(field).and_then(|c| c.scalar(i)) {
        Some(rivulet_rows::Scalar::Text(text)) => Ok(text),
        Some(other) => Ok(other.to_string()),
        None => Err(format!("the key field `{field}` has no text form")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rivulet_rows::BatchBuilder;

    fn rows() -> Batch {
        let mut b = BatchBuilder::new();
        b.push(&serde_json::json!({"window_start":"2026-01-01T00:00:00Z","store_id":"s-1","total":"0.30"}))
            .unwrap();
        b.finish()
    }

    fn encoding(key: Option<KeyEncoding>, except_key: bool) -> SinkEncoding {
        SinkEncoding {
            stage: "format".into(),
            value: ValueEncoding::Json,
            key,
            key_fields: vec!["store_id".into()],
            except_key,
            columns: Vec::new(),
            json_numbers: vec!["total".into()],
        }
    }

    #[test]
    fn json_keys_and_values_with_or_without_the_key_fields() {
        let out = encoding(Some(KeyEncoding::Json), false)
            .format(&rows())
            .unwrap();
        assert_eq!(out.keys.unwrap().get(0).unwrap(), br#"{"store_id":"s-1"}"#);
        assert_eq!(
            out.payloads.get(0).unwrap(),
            br#"{"window_start":"2026-01-01T00:00:00Z","store_id":"s-1","total":0.30}"#
        );
        let out = encoding(Some(KeyEncoding::Raw), true)
            .format(&rows())
            .unwrap();
        assert_eq!(out.keys.unwrap().get(0).unwrap(), b"s-1");
        assert_eq!(
            out.payloads.get(0).unwrap(),
            br#"{"window_start":"2026-01-01T00:00:00Z","total":0.30}"#
        );
    }

    #[test]
    fn a_row_without_its_key_is_refused_with_the_reason() {
        let mut b = BatchBuilder::new();
        b.push(&serde_json::json!({"total":"1.00"})).unwrap();
        let out = encoding(Some(KeyEncoding::Json), false)
            .format(&b.finish())
            .unwrap();
        assert_eq!(
            out.errors,
            vec![RecordError {
                index: 0,
                message: "the key field `store_id` is missing or null".into()
            }]
        );
    }
}
