//! The end of a job: format rows (a Wasm formatter, or JSON by default) and send them to
//! the sink, each with the source offsets it holds.

use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::delivery::Holds;
use crate::pipeline::PipelineError;
use crate::sink::Sink;
use crate::stage::FormatStage;
use crate::transform::Step;
use rivulet_rows::Batch;

pub struct Emitter {
    pub format: Option<Step<dyn FormatStage>>,
    pub sink: Sink,
    /// Row field whose value becomes the record key (when the formatter sets none).
    pub key_field: Option<String>,
    /// Where the formatter's recent input is kept for trying swapped-in modules.
    pub samples: Option<std::sync::Arc<crate::status::JobStatus>>,
}

fn key_of(rows: &Batch, row: usize, field: Option<&str>) -> Option<Vec<u8>> {
    let column = rows.column(field?)?;
    match column.scalar(row)? {
        rivulet_rows::Scalar::Null => None,
        rivulet_rows::Scalar::Text(text) => Some(text.into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

impl Emitter {
    /// Formats and sends fired windows' results.
    pub fn emit_all(
        &mut self,
        results: &crate::windowing::Results,
        topic: &str,
        dead: &mut DeadLetters,
    ) -> Result<(), PipelineError> {
        for (rows, holds) in &results.parts {
            self.emit(rows, holds, topic, dead)?;
        }
        Ok(())
    }

    /// Formats and sends `rows`; `holds[i]` are row i's source offsets.
    pub fn emit(
        &mut self,
        rows: &Batch,
        holds: &[Holds],
        topic: &str,
        dead: &mut DeadLetters,
    ) -> Result<(), PipelineError> {
        if rows.len == 0 {
            return Ok(());
        }
        let no_holds = Holds::new();
        let hold_of = |i: usize| holds.get(i).cloned().unwrap_or_else(|| no_holds.clone());
        match &mut self.format {
            None => {
                for i in 0..rows.len as usize {
                    let payload = serde_json::Value::Object(rows.row_json(i)).to_string();
                    let key = key_of(rows, i, self.key_field.as_deref());
                    self.sink
                        .send(key.as_deref(), payload.as_bytes(), &[], hold_of(i))?;
                }
            }
            Some(format) => match sample_then_format(format, rows, self.samples.as_deref()) {
                Ok(encoded) => {
                    let failed: std::collections::BTreeMap<u32, &str> = encoded
                        .errors
                        .iter()
                        .map(|e| (e.index, e.message.as_str()))
                        .collect();
                    for i in 0..rows.len as usize {
                        if let Some(error) = failed.get(&(i as u32)) {
                            let payload = serde_json::Value::Object(rows.row_json(i)).to_string();
                            let holds = hold_of(i);
                            let letter = DeadLetter::derived(
                                &format.name,
                                error,
                                topic,
                                payload.as_bytes(),
                                &holds,
                            );
                            dead.handle(format.policy, &letter)?;
                            continue;
                        }
                        let payload = encoded.payloads.get(i).unwrap_or_default();
                        let key = encoded
                            .keys
                            .as_ref()
                            .and_then(|k| k.get(i))
                            .filter(|k| !k.is_empty())
                            .map(<[u8]>::to_vec)
                            .or_else(|| key_of(rows, i, self.key_field.as_deref()));
                        self.sink.send(key.as_deref(), payload, &[], hold_of(i))?;
                    }
                }
                Err(err) => {
                    let error = err.to_string();
                    tracing::warn!(stage = %format.name, rows = rows.len, "{error}");
                    for i in 0..rows.len as usize {
                        let payload = serde_json::Value::Object(rows.row_json(i)).to_string();
                        let holds = hold_of(i);
                        let letter = DeadLetter::derived(
                            &format.name,
                            &error,
                            topic,
                            payload.as_bytes(),
                            &holds,
                        );
                        dead.handle(format.policy, &letter)?;
                    }
                }
            },
        }
        Ok(())
    }
}

/// Keeps the formatter's input as a sample (for trying swapped-in modules), then formats.
fn sample_then_format(
    format: &mut Step<dyn FormatStage>,
    rows: &Batch,
    samples: Option<&crate::status::JobStatus>,
) -> Result<rivulet_rows::Encoded, crate::udf::UdfError> {
    if let Some(samples) = samples {
        samples.sample_rows(&format.name, rows);
    }
    crate::stage::isolate::format(&mut *format.stage, rows)
}
