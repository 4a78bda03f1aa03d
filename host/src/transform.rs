//! The row-producing part of a job: parse raw records, then each map step in turn. Records
//! a step rejects are set aside for the dead letters (when a batch traps, the records that
//! cause it are isolated, see [`isolate`]); the rest flow on with the index of the raw
//! record each row came from.

use crate::error::PipelineError;
use crate::shadow::{Feed, LiveRows};
use crate::side_output::SideOutputs;
use crate::spec::OnError;
use crate::stage::{MapStage, ParseStage, isolate};
use rivulet_rows::{Batch, RawBatch};
use std::collections::BTreeMap;

use crate::counters::BATCH_LATENCY_US;
pub use crate::counters::StepStats;
use std::time::Instant;

/// A step with its name and error policy.
pub struct Step<S: ?Sized> {
    pub name: String,
    pub policy: OnError,
    pub stage: Box<S>,
    /// The shape of the step's output, watched across swaps.
    pub shape: crate::shape::ShapeWatch,
}

impl<S: ?Sized> Step<S> {
    /// Watches the shape of the step's output (one fingerprint per batch); a new one after
    /// a swap is announced.
    pub fn watch(&mut self, rows: &Batch, status: Option<&crate::status::JobStatus>) {
        if rows.len > 0 {
            self.shape.observe(
                crate::shape::fingerprint(rows),
                || crate::shape::Shape::of(rows),
                status,
                &self.name,
            );
        }
    }
}

pub struct Transform {
    pub parse: Step<dyn ParseStage>,
    pub maps: Vec<Step<dyn MapStage>>,
    pub stats: BTreeMap<String, StepStats>,
    /// Where each step's recent input is kept for trying swapped-in modules.
    pub samples: Option<std::sync::Arc<crate::status::JobStatus>>,
}

/// What a batch became: rows, the raw record of each, and the records refused.
pub struct Transformed {
    pub rows: Batch,
    /// For each row, the index of its record in the raw batch.
    pub origins: Vec<u32>,
    pub side: SideOutputs,
}

impl Transform {
    /// Rows from `raw`, each with the index of its record in `raw`.
    pub fn run(&mut self, raw: &RawBatch) -> Result<Transformed, PipelineError> {
        let mut side = SideOutputs::default();
        let parse = &mut self.parse;
        if let Some(samples) = &self.samples {
            samples.sample_raw(&parse.name, raw);
        }
        let stats = self.stats.entry(parse.name.clone()).or_default();
        stats.records_in += u64::from(raw.len);
        let shadow = self
            .samples
            .as_ref()
            .and_then(|s| s.shadows.tap(&parse.name));
        let called = Instant::now();
        let parsed = isolate::parse(&mut *parse.stage, raw);
        let busy = called.elapsed();
        stats.latency.record(&BATCH_LATENCY_US, busy);
        if let Some(shadow) = &shadow {
            let live = match &parsed {
                Ok(contained) => Some(LiveRows::of(&contained.out, contained.isolated)),
                Err(err) if !err.is_stopped() => Some(LiveRows::failed(raw.len, &err.to_string())),
                Err(_) => None,
            };
            if let Some(live) = live {
                shadow.send(Feed::Parse {
                    input: raw.clone(),
                    live,
                    busy,
                });
            }
        }
        let (mut rows, mut origins) = match parsed {
            Ok(isolate::Contained { out, isolated }) => {
                stats.failed_batches += u64::from(isolated);
                for error in &out.errors {
                    side.refuse_record(
                        error.index as usize,
                        &parse.name,
                        &error.message,
                        parse.policy,
                    );
                }
                stats.rejected += out.errors.len() as u64;
                (out.rows, out.origins)
            }
            // Abandoned because the job is stopping: not the records' fault.
            Err(err) if err.is_stopped() => return Err(err.into()),
            Err(err) => {
                stats.failed_batches += 1;
                stats.rejected += u64::from(raw.len);
                let error = err.to_string();
                tracing::warn!(stage = %parse.name, records = raw.len, "{error}");
                for index in 0..raw.len as usize {
                    side.refuse_record(index, &parse.name, &error, parse.policy);
                }
                (Batch::default(), Vec::new())
            }
        };
        stats.rows_out += u64::from(rows.len);
        parse.watch(&rows, self.samples.as_deref());
        for map in &mut self.maps {
            if rows.len == 0 {
                break;
            }
            if let Some(samples) = &self.samples {
                samples.sample_rows(&map.name, &rows);
            }
            let stats = self.stats.entry(map.name.clone()).or_default();
            stats.records_in += u64::from(rows.len);
            let shadow = self.samples.as_ref().and_then(|s| s.shadows.tap(&map.name));
            let called = Instant::now();
            let mapped = isolate::map(&mut *map.stage, &rows);
            let busy = called.elapsed();
            stats.latency.record(&BATCH_LATENCY_US, busy);
            if let Some(shadow) = &shadow {
                let live = match &mapped {
                    Ok(contained) => Some(LiveRows::of(&contained.out, contained.isolated)),
                    Err(err) if !err.is_stopped() => {
                        Some(LiveRows::failed(rows.len, &err.to_string()))
                    }
                    Err(_) => None,
                };
                if let Some(live) = live {
                    shadow.send(Feed::Map {
                        input: rows.clone(),
                        live,
                        busy,
                    });
                }
            }
            match mapped {
                Ok(isolate::Contained { out, isolated }) => {
                    stats.failed_batches += u64::from(isolated);
                    for error in &out.errors {
                        let index =
                            origins.get(error.index as usize).copied().unwrap_or(0) as usize;
                        side.refuse_record(index, &map.name, &error.message, map.policy);
                    }
                    stats.rejected += out.errors.len() as u64;
                    origins = out
                        .origins
                        .iter()
                        .map(|&o| origins.get(o as usize).copied().unwrap_or(0))
                        .collect();
                    rows = out.rows;
                }
                Err(err) if err.is_stopped() => return Err(err.into()),
                Err(err) => {
                    stats.failed_batches += 1;
                    stats.rejected += u64::from(rows.len);
                    let error = err.to_string();
                    tracing::warn!(stage = %map.name, rows = rows.len, "{error}");
                    for &index in &origins {
                        side.refuse_record(index as usize, &map.name, &error, map.policy);
                    }
                    rows = Batch::default();
                    origins.clear();
                }
            }
            stats.rows_out += u64::from(rows.len);
            map.watch(&rows, self.samples.as_deref());
        }
        Ok(Transformed {
            rows,
            origins,
            side,
        })
    }
}
