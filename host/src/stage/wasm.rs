//! Stages backed by sandboxed components. Inputs are copied into the guest by the canonical
//! ABI straight from the host's own `rivulet_rows` values (the bindings use those types, so
//! nothing is converted or cloned on the way); every world's outputs pass the contract check of `rivulet_rows` ([`Batch::check`], [`RowsOut::check`],
//! [`RowsOut::check_finish`], [`Encoded::check`], [`AddOut::check`]) before anyone downstream
//! sees them.

use super::{AggregateStage, FormatStage, MapStage, ParseStage};
use crate::udf::bindings::{aggregate::Aggregate, format::Format, map::Map, parse::Parse};
use crate::udf::instance::{OutputSize, Sandboxed};
use crate::udf::{Limits, Runtime, UdfError, UdfModule};
use rivulet_rows::{
    AddOut, Batch, Breach, Encoded, RawBatch, RecordError, RowsOut, Values, WindowAcc,
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

impl WasmMap {
    /// A map step that may read the reference tables of `reads` (its `lookup` calls).
    pub fn reading(
        runtime: &Runtime,
        module: &UdfModule,
        stage: &str,
        limits: Limits,
        reads: crate::udf::Reads,
    ) -> Result<Self, UdfError> {
        Sandboxed::reading(runtime, module, stage, limits, reads).map(WasmMap)
    }
}
constructor!(WasmAggregate);
constructor!(WasmFormat);

impl ParseStage for WasmParse {
    fn parse(&mut self, input: &RawBatch) -> Result<RowsOut, UdfError> {
        let out = self
            .0
            .call(async |b, store| b.call_parse(store, input).await)?;
        checked(self.0.stage(), out.check(input.len)).map(|()| out)
    }
}

impl MapStage for WasmMap {
    fn map(&mut self, input: &Batch) -> Result<RowsOut, UdfError> {
        let out = self
            .0
            .call(async |b, store| b.call_map(store, input).await)?;
        checked(self.0.stage(), out.check(input.len)).map(|()| out)
    }
}

impl FormatStage for WasmFormat {
    fn format(&mut self, input: &Batch) -> Result<Encoded, UdfError> {
        let encoded = self
            .0
            .call(async |b, store| b.call_format(store, input).await)?;
        checked(self.0.stage(), encoded.check(input.len)).map(|()| encoded)
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
        let out = self
            .0
            .call(async |b, store| b.call_add(store, &accs, rows, groups).await)?;
        checked(self.0.stage(), out.check(groups_count, rows.len)).map(|()| out)
    }

    fn merge(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<Vec<u8>>, UdfError> {
        let count = pairs.len();
        let merged = self
            .0
            .call(async |b, store| b.call_merge(store, &pairs).await)?;
        let stage = self.0.stage();
        match merged {
            Ok(accs) if accs.len() == count => Ok(accs),
            Ok(accs) => Err(UdfError::Contract {
                stage: stage.to_owned(),
                reason: format!(
                    "merge returned {} accumulators for {count} pairs",
                    accs.len()
                ),
            }),
            Err(message) => Err(UdfError::Trap {
                stage: stage.to_owned(),
                reason: format!("merge failed: {message}"),
            }),
        }
    }

    fn finish(&mut self, windows: Vec<WindowAcc>) -> Result<RowsOut, UdfError> {
        let count = u32::try_from(windows.len())
            .map_err(|_| UdfError::Runtime("too many windows in one call".into()))?;
        let out = self
            .0
            .call(async |b, store| b.call_finish(store, &windows).await)?;
        checked(self.0.stage(), out.check_finish(count)).map(|()| out)
    }
}

/// The outcome of the contract check of a call's output, as the stage's error: a breach
/// fails the whole call, so its records take the error path with the breach as the reason.
fn checked(stage: &str, check: Result<(), Breach>) -> Result<(), UdfError> {
    check.map_err(|breach| UdfError::Contract {
        stage: stage.to_owned(),
        reason: breach.to_string(),
    })
}

impl OutputSize for RowsOut {
    fn output_size(&self) -> usize {
        batch_size(&self.rows) + self.origins.len() * 4 + errors_size(&self.errors)
    }
}

impl OutputSize for Encoded {
    fn output_size(&self) -> usize {
        let packed = |p: &rivulet_rows::Packed| p.data.len() + p.offsets.len() * 4;
        packed(&self.payloads) + self.keys.as_ref().map_or(0, packed) + errors_size(&self.errors)
    }
}

impl OutputSize for AddOut {
    fn output_size(&self) -> usize {
        self.accs.iter().map(Vec::len).sum::<usize>() + errors_size(&self.errors)
    }
}

fn errors_size(errors: &[RecordError]) -> usize {
    errors.iter().map(|e| e.message.len() + 8).sum()
}

fn batch_size(batch: &Batch) -> usize {
    batch
        .columns
        .iter()
        .map(|c| {
            c.name.len()
                + c.nulls.len()
                + match &c.values {
                    Values::Boolean(v) => v.len(),
                    Values::Integer(v) => v.len() * 8,
                    Values::Float(v) => v.len() * 8,
                    Values::Text(p) | Values::Binary(p) | Values::Json(p) => {
                        p.data.len() + p.offsets.len() * 4
                    }
                }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;
    use rivulet_rows::BatchBuilder;
    use serde_json::{Map, Value, json};

    /// A field value of any column type (or null, or left out of the row).
    fn field() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            any::<bool>().prop_map(|b| Some(json!(b))),
            any::<i64>().prop_map(|i| Some(json!(i))),
            (-1e9f64..1e9).prop_map(|f| Some(json!(f))),
            "\\PC{0,8}".prop_map(|s| Some(json!(s))),
            proptest::collection::vec(any::<i32>(), 0..3).prop_map(|v| Some(json!(v))),
        ]
    }

    /// Rows whose fields keep one type per name (as a step's output type does): field `k`
    /// takes its type from `kinds[k]` and is null or missing in random rows.
    fn rows() -> impl Strategy<Value = Vec<Map<String, Value>>> {
        let count = prop_oneof![
            Just(0usize),
            Just(1),
            Just(8),
            Just(9),
            Just(1024),
            0usize..40
        ];
        (proptest::collection::vec(field(), 1..5), count).prop_flat_map(|(kinds, n)| {
            proptest::collection::vec(proptest::collection::vec(0u8..4, kinds.len()), n).prop_map(
                move |masks| {
                    masks
                        .iter()
                        .map(|mask| {
                            let mut row = Map::new();
                            for (k, (kind, m)) in kinds.iter().zip(mask).enumerate() {
                                match (kind, m) {
                                    (Some(v), 0 | 1) => {
                                        row.insert(format!("f{k}"), v.clone());
                                    }
                                    (Some(_), 2) => {
                                        row.insert(format!("f{k}"), Value::Null);
                                    }
                                    _ => {}
                                }
                            }
                            row
                        })
                        .collect()
                },
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn sdk_batches_pass_the_hosts_check_and_read_back(rows in rows()) {
            let mut builder = BatchBuilder::new();
            for row in &rows {
                builder.push(row).unwrap();
            }
            let batch = builder.finish();
            // The bindings lower and lift `Batch` itself (no conversion to test here; the
            // guests' tests cross the real boundary).
            let back = batch.clone();
            let origins: Vec<u32> = (0..batch.len).collect();
            let out = RowsOut { rows: back, origins, errors: Vec::new() };
            prop_assert!(checked("s", out.check(batch.len)).is_ok());
            for (i, row) in rows.iter().enumerate() {
                let read = out.rows.row_json(i);
                for (name, value) in row {
                    prop_assert_eq!(read.get(name), Some(value));
                }
            }
        }
    }
}
