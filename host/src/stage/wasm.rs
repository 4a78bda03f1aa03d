//! Stages backed by sandboxed components. Inputs are copied into the guest; outputs are
//! checked against the contract before anyone downstream sees them.

use super::{AggregateStage, FormatStage, MapStage, ParseStage};
use crate::udf::bindings::{aggregate::Aggregate, format::Format, map::Map, parse::Parse, wit};
use crate::udf::instance::{OutputSize, Sandboxed};
use crate::udf::{Limits, Runtime, UdfError, UdfModule};
use rivulet_rows::{
    AddOut, Batch, Column, Encoded, Header, Packed, RawBatch, RecordError, RowsOut, Scalar, Values,
    WindowAcc,
};

/// A parse step in a component.
pub struct WasmParse(Sandboxed<Parse>);
/// A map step in a component.
pub struct WasmMap(Sandboxed<Map>);
/// An aggregate in a component.
pub struct WasmAggregate(Sandboxed<Aggregate>);
/// A format step in a component.
pub struct WasmFormat(Sandboxed<Format>);

macro_rules! constructor {
    ($ty:ident) => {
        impl $ty {
            pub fn new(
                runtime: &Runtime,
                module: &UdfModule,
                stage: &str,
                limits: Limits,
            ) -> Result<Self, UdfError> {
                Sandboxed::new(runtime, module, stage, limits).map($ty)
            }

            pub fn sandbox(&self) -> &Sandboxed<impl crate::udf::instance::World> {
                &self.0
            }
        }
    };
}

constructor!(WasmParse);
constructor!(WasmMap);
constructor!(WasmAggregate);
constructor!(WasmFormat);

impl ParseStage for WasmParse {
    fn parse(&mut self, input: &RawBatch) -> Result<RowsOut, UdfError> {
        let arg = raw_to_wit(input);
        let out = self
            .0
            .call(async |b, store| b.call_parse(store, &arg).await)?;
        checked_rows(self.0.stage(), rows_from_wit(out), input.len, false)
    }
}

impl MapStage for WasmMap {
    fn map(&mut self, input: &Batch) -> Result<RowsOut, UdfError> {
        let arg = batch_to_wit(input);
        let out = self
            .0
            .call(async |b, store| b.call_map(store, &arg).await)?;
        checked_rows(self.0.stage(), rows_from_wit(out), input.len, false)
    }
}

impl FormatStage for WasmFormat {
    fn format(&mut self, input: &Batch) -> Result<Encoded, UdfError> {
        let arg = batch_to_wit(input);
        let out = self
            .0
            .call(async |b, store| b.call_format(store, &arg).await)?;
        let encoded = Encoded {
            payloads: packed_from_wit(out.payloads),
            keys: out.keys.map(packed_from_wit),
            errors: errors_from_wit(out.errors),
        };
        let stage = self.0.stage();
        let expected = input.len as usize;
        if encoded.payloads.len() != expected
            || encoded.keys.as_ref().is_some_and(|k| k.len() != expected)
        {
            return Err(contract(
                stage,
                format!(
                    "returned {} payloads for {expected} rows",
                    encoded.payloads.len()
                ),
            ));
        }
        check_errors(stage, &encoded.errors, input.len)?;
        Ok(encoded)
    }
}

impl AggregateStage for WasmAggregate {
    fn state_version(&mut self) -> Result<u32, UdfError> {
        self.0
            .call(async |b, store| b.call_state_version(store).await)
    }

    fn create(&mut self) -> Result<Vec<u8>, UdfError> {
        self.0.call(async |b, store| b.call_create(store).await)
    }

    fn add(
        &mut self,
        accs: Vec<Vec<u8>>,
        rows: &Batch,
        groups: &[u32],
    ) -> Result<AddOut, UdfError> {
        let groups_count = accs.len();
        let arg = batch_to_wit(rows);
        let out = self
            .0
            .call(async |b, store| b.call_add(store, &accs, &arg, groups).await)?;
        let stage = self.0.stage();
        if out.accs.len() != groups_count {
            return Err(contract(
                stage,
                format!(
                    "returned {} accumulators for {groups_count}",
                    out.accs.len()
                ),
            ));
        }
        let out = AddOut {
            accs: out.accs,
            errors: errors_from_wit(out.errors),
        };
        check_errors(stage, &out.errors, rows.len)?;
        Ok(out)
    }

    fn merge(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<Vec<u8>>, UdfError> {
        let count = pairs.len();
        let merged = self
            .0
            .call(async |b, store| b.call_merge(store, &pairs).await)?;
        let stage = self.0.stage();
        match merged {
            Ok(accs) if accs.len() == count => Ok(accs),
            Ok(accs) => Err(contract(
                stage,
                format!(
                    "merge returned {} accumulators for {count} pairs",
                    accs.len()
                ),
            )),
            Err(message) => Err(UdfError::Trap {
                stage: stage.to_owned(),
                reason: format!("merge failed: {message}"),
            }),
        }
    }

    fn finish(&mut self, windows: Vec<WindowAcc>) -> Result<RowsOut, UdfError> {
        let count = u32::try_from(windows.len())
            .map_err(|_| UdfError::Runtime("too many windows in one call".into()))?;
        let arg: Vec<wit::WindowAcc> = windows
            .into_iter()
            .map(|w| wit::WindowAcc {
                key: scalar_to_wit(w.key),
                window_start: w.window_start,
                window_end: w.window_end,
                acc: w.acc,
            })
            .collect();
        let out = self
            .0
            .call(async |b, store| b.call_finish(store, &arg).await)?;
        checked_rows(self.0.stage(), rows_from_wit(out), count, true)
    }
}

fn contract(stage: &str, reason: String) -> UdfError {
    UdfError::Contract {
        stage: stage.to_owned(),
        reason,
    }
}

fn check_errors(stage: &str, errors: &[RecordError], inputs: u32) -> Result<(), UdfError> {
    match errors.iter().find(|e| e.index >= inputs) {
        Some(e) => Err(contract(
            stage,
            format!("reported an error for record {} of {inputs}", e.index),
        )),
        None => Ok(()),
    }
}

/// Checks what a guest returned: columns as long as the batch, origins in range and in
/// order (and, for `finish`, exactly one result or error per window).
fn checked_rows(
    stage: &str,
    out: RowsOut,
    inputs: u32,
    one_per_input: bool,
) -> Result<RowsOut, UdfError> {
    let len = out.rows.len as usize;
    if out.origins.len() != len {
        return Err(contract(
            stage,
            format!("returned {len} rows but {} origins", out.origins.len()),
        ));
    }
    if let Some(column) = out.rows.columns.iter().find(|c| c.values.len() != len) {
        return Err(contract(
            stage,
            format!(
                "column `{}` has {} values for {len} rows",
                column.name,
                column.values.len()
            ),
        ));
    }
    if let Some(column) = out
        .rows
        .columns
        .iter()
        .find(|c| !c.nulls.is_empty() && c.nulls.len() < len.div_ceil(8))
    {
        return Err(contract(
            stage,
            format!("column `{}` has a short null bitmap", column.name),
        ));
    }
    if out.origins.windows(2).any(|w| w[0] > w[1])
        || out.origins.last().is_some_and(|&o| o >= inputs)
    {
        return Err(contract(
            stage,
            "returned origins out of order or out of range".to_owned(),
        ));
    }
    check_errors(stage, &out.errors, inputs)?;
    if one_per_input && len + out.errors.len() != inputs as usize {
        return Err(contract(
            stage,
            format!(
                "finished {len} windows and failed {} of {inputs}",
                out.errors.len()
            ),
        ));
    }
    Ok(out)
}

impl OutputSize for wit::RowsOut {
    fn output_size(&self) -> usize {
        batch_size(&self.rows) + self.origins.len() * 4 + errors_size(&self.errors)
    }
}

impl OutputSize for wit::Encoded {
    fn output_size(&self) -> usize {
        let packed = |p: &wit::Packed| p.data.len() + p.offsets.len() * 4;
        packed(&self.payloads) + self.keys.as_ref().map_or(0, packed) + errors_size(&self.errors)
    }
}

impl OutputSize for wit::AddOut {
    fn output_size(&self) -> usize {
        self.accs.iter().map(Vec::len).sum::<usize>() + errors_size(&self.errors)
    }
}

fn errors_size(errors: &[wit::RecordError]) -> usize {
    errors.iter().map(|e| e.message.len() + 8).sum()
}

fn batch_size(batch: &wit::Batch) -> usize {
    batch
        .columns
        .iter()
        .map(|c| {
            c.name.len()
                + c.nulls.len()
                + match &c.values {
                    wit::Values::Boolean(v) => v.len(),
                    wit::Values::Integer(v) => v.len() * 8,
                    wit::Values::Float(v) => v.len() * 8,
                    wit::Values::Text(p) | wit::Values::Binary(p) | wit::Values::Json(p) => {
                        p.data.len() + p.offsets.len() * 4
                    }
                }
        })
        .sum()
}

fn packed_to_wit(p: &Packed) -> wit::Packed {
    wit::Packed {
        data: p.data.clone(),
        offsets: p.offsets.clone(),
    }
}

fn packed_from_wit(p: wit::Packed) -> Packed {
    Packed {
        data: p.data,
        offsets: p.offsets,
    }
}

fn raw_to_wit(raw: &RawBatch) -> wit::RawBatch {
    wit::RawBatch {
        len: raw.len,
        keys: packed_to_wit(&raw.keys),
        key_nulls: raw.key_nulls.clone(),
        payloads: packed_to_wit(&raw.payloads),
        timestamps: raw.timestamps.clone(),
        partitions: raw.partitions.clone(),
        offsets: raw.offsets.clone(),
        headers: raw
            .headers
            .iter()
            .map(|h: &Header| wit::Header {
                record: h.record,
                key: h.key.clone(),
                value: h.value.clone(),
            })
            .collect(),
    }
}

pub(crate) fn batch_to_wit(batch: &Batch) -> wit::Batch {
    wit::Batch {
        len: batch.len,
        columns: batch
            .columns
            .iter()
            .map(|c: &Column| wit::Column {
                name: c.name.clone(),
                nulls: c.nulls.clone(),
                values: match &c.values {
                    Values::Boolean(v) => wit::Values::Boolean(v.clone()),
                    Values::Integer(v) => wit::Values::Integer(v.clone()),
                    Values::Float(v) => wit::Values::Float(v.clone()),
                    Values::Text(p) => wit::Values::Text(packed_to_wit(p)),
                    Values::Binary(p) => wit::Values::Binary(packed_to_wit(p)),
                    Values::Json(p) => wit::Values::Json(packed_to_wit(p)),
                },
            })
            .collect(),
    }
}

fn batch_from_wit(batch: wit::Batch) -> Batch {
    Batch {
        len: batch.len,
        columns: batch
            .columns
            .into_iter()
            .map(|c| Column {
                name: c.name,
                nulls: c.nulls,
                values: match c.values {
                    wit::Values::Boolean(v) => Values::Boolean(v),
                    wit::Values::Integer(v) => Values::Integer(v),
                    wit::Values::Float(v) => Values::Float(v),
                    wit::Values::Text(p) => Values::Text(packed_from_wit(p)),
                    wit::Values::Binary(p) => Values::Binary(packed_from_wit(p)),
                    wit::Values::Json(p) => Values::Json(packed_from_wit(p)),
                },
            })
            .collect(),
    }
}

fn errors_from_wit(errors: Vec<wit::RecordError>) -> Vec<RecordError> {
    errors
        .into_iter()
        .map(|e| RecordError {
            index: e.index,
            message: e.message,
        })
        .collect()
}

fn rows_from_wit(out: wit::RowsOut) -> RowsOut {
    RowsOut {
        rows: batch_from_wit(out.rows),
        origins: out.origins,
        errors: errors_from_wit(out.errors),
    }
}

fn scalar_to_wit(s: Scalar) -> wit::Scalar {
    match s {
        Scalar::Null => wit::Scalar::Null,
        Scalar::Boolean(b) => wit::Scalar::Boolean(b),
        Scalar::Integer(i) => wit::Scalar::Integer(i),
        Scalar::Float(f) => wit::Scalar::Float(f),
        Scalar::Text(t) => wit::Scalar::Text(t),
    }
}
