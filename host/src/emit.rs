//! The end of a job: format rows (a Wasm formatter, or JSON by default) and send them to
//! the sink.

use crate::counters::{RECENT_RESULTS, RecentResult};
use crate::error::PipelineError;
use crate::side_output::SideOutputs;
use crate::sink::SharedSink;
use crate::stage::FormatStage;
use crate::transform::Step;
use rivulet_rows::Batch;

pub struct Emitter {
    pub format: Option<Step<dyn FormatStage>>,
    pub sink: SharedSink,
    /// Row field whose value becomes the record key (when the formatter sets none).
    pub key_field: Option<String>,
    /// Result columns holding DECIMAL text, written as JSON numbers.
    pub json_numbers: Vec<String>,
    /// Where the formatter's recent input is kept for trying swapped-in modules.
    pub samples: Option<std::sync::Arc<crate::status::JobStatus>>,
    /// The latest window results (for the control API).
    pub recent: std::collections::VecDeque<RecentResult>,
}

pub use crate::format::json::row_object;

fn key_of(rows: &Batch, row: usize, field: Option<&str>) -> Option<Vec<u8>> {
    let column = rows.column(field?)?;
    match column.scalar(row)? {
        rivulet_rows::Scalar::Null => None,
        rivulet_rows::Scalar::Text(text) => Some(text.into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

impl Emitter {
    /// Formats and sends fired windows' results; returns the rows refused.
    pub fn emit_all(
        &mut self,
        results: &crate::aggregate::dispatch::Results,
    ) -> Result<SideOutputs, PipelineError> {
        let mut side = SideOutputs::default();
        for rows in &results.parts {
            self.remember(rows);
            side.append(self.emit(rows)?);
        }
        Ok(side)
    }

    /// Keeps the last few result rows as JSON (a window's results: few, unlike records).
    fn remember(&mut self, rows: &Batch) {
        let at = crate::source::kafka::now_millis();
        let n = rows.len as usize;
        for i in n.saturating_sub(RECENT_RESULTS)..n {
            if self.recent.len() == RECENT_RESULTS {
                self.recent.pop_front();
            }
            let row = serde_json::Value::Object(row_object(rows, i)).to_string();
            self.recent.push_back(RecentResult { at, row });
        }
    }

    /// Formats and sends `rows`; returns the rows refused (the formatter's errors, and
    /// payloads the sink cannot take), for the dead letters.
    pub fn emit(&mut self, rows: &Batch) -> Result<SideOutputs, PipelineError> {
        let mut side = SideOutputs::default();
        if rows.len == 0 {
            return Ok(side);
        }
        // One lock per batch (the tasks of a job share the sink).
        let mut sink = self.sink.lock();
        match &mut self.format {
            None => {
                for i in 0..rows.len as usize {
                    let payload = crate::format::json::row_text(rows, i, &[], &self.json_numbers);
                    let key = key_of(rows, i, self.key_field.as_deref());
                    sink.send(key.as_deref(), payload.as_bytes(), &[])?;
                }
            }
            Some(format) => match sample_then_format(format, rows, self.samples.as_deref()) {
                Ok(encoded) => {
                    // A formatted record's shape needs its JSON parsed: one record per batch.
                    if let Some(payload) = (0..rows.len)
                        .filter(|i| !encoded.errors.iter().any(|e| e.index == *i))
                        .find_map(|i| encoded.payloads.get(i as usize))
                    {
                        let shape = crate::shape::Shape::of_payload(payload);
                        format.shape.observe(
                            shape.fingerprint(),
                            || shape,
                            self.samples.as_deref(),
                            &format.name,
                        );
                    }
                    let failed: std::collections::BTreeMap<u32, &str> = encoded
                        .errors
                        .iter()
                        .map(|e| (e.index, e.message.as_str()))
                        .collect();
                    for i in 0..rows.len as usize {
                        if let Some(error) = failed.get(&(i as u32)) {
                            let payload =
                                serde_json::Value::Object(row_object(rows, i)).to_string();
                            side.refuse_derived(
                                payload.into_bytes(),
                                &format.name,
                                error,
                                format.policy,
                            );
                            continue;
                        }
                        let payload = encoded.payloads.get(i).unwrap_or_default();
                        if let Some(reason) = sink.refusal(payload) {
                            // A line sink never splits a record: the formatter's payload
                            // with a line break is dead-lettered as it is, with the reason.
                            side.refuse_derived(
                                payload.to_vec(),
                                &format.name,
                                &reason,
                                format.policy,
                            );
                            continue;
                        }
                        let key = encoded
                            .keys
                            .as_ref()
                            .and_then(|k| k.get(i))
                            .filter(|k| !k.is_empty())
                            .map(<[u8]>::to_vec)
                            .or_else(|| key_of(rows, i, self.key_field.as_deref()));
                        sink.send(key.as_deref(), payload, &[])?;
                    }
                }
                Err(err) if err.is_stopped() => return Err(err.into()),
                Err(err) => {
                    let error = err.to_string();
                    tracing::warn!(stage = %format.name, rows = rows.len, "{error}");
                    for i in 0..rows.len as usize {
                        let payload = serde_json::Value::Object(row_object(rows, i)).to_string();
                        side.refuse_derived(
                            payload.into_bytes(),
                            &format.name,
                            &error,
                            format.policy,
                        );
                    }
                }
            },
        }
        Ok(side)
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
    let shadow = samples.and_then(|s| s.shadows.tap(&format.name));
    let called = std::time::Instant::now();
    let formatted = crate::stage::isolate::format(&mut *format.stage, rows);
    if let Some(shadow) = shadow {
        let busy = called.elapsed();
        let live = match &formatted {
            Ok(contained) => Some((contained.out.clone(), contained.isolated)),
            Err(err) if !err.is_stopped() => {
                let message = err.to_string();
                let errors = (0..rows.len)
                    .map(|index| rivulet_rows::RecordError {
                        index,
                        message: message.clone(),
                    })
                    .collect();
                let failed = rivulet_rows::Encoded {
                    errors,
                    ..Default::default()
                };
                Some((failed, true))
            }
            Err(_) => None,
        };
        if let Some((live, trapped)) = live {
            shadow.send(crate::shadow::Feed::Format {
                input: rows.clone(),
                live,
                trapped,
                busy,
            });
        }
    }
    formatted.map(|contained| contained.out)
}
