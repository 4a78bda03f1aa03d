//! The built-in `filter` stage: keeps the rows whose condition is TRUE (FALSE and NULL
//! rows are dropped); a row whose condition cannot be computed is refused with the reason.

use super::MapStage;
use crate::expr::Typed;
use crate::expr::eval::Eval;
use crate::expr::{Type, Value};
use crate::udf::UdfError;
use rivulet_rows::{Batch, RecordError, RowsOut};

pub struct Filter {
    condition: Typed,
    columns: Vec<(String, Type)>,
    /// The Wasm functions the condition calls, in slot order.
    functions: Vec<(String, Box<dyn MapStage>)>,
}

impl Filter {
    pub fn new(
        program: crate::expr::program::Program,
        functions: Vec<(String, Box<dyn MapStage>)>,
    ) -> Option<Self> {
        Some(Filter {
            condition: program.condition?,
            columns: program.scope.columns,
            functions,
        })
    }
}

impl MapStage for Filter {
    fn map(&mut self, input: &Batch) -> Result<RowsOut, UdfError> {
        let rows: Vec<u32> = (0..input.len).collect();
        let mut eval = Eval::new(input, &self.columns, &mut self.functions);
        let values = eval.eval(&self.condition, &rows);
        let mut kept = Vec::with_capacity(rows.len());
        let mut errors = Vec::new();
        for ((index, value), error) in (0u32..).zip(values).zip(eval.errors) {
            match error {
                Some(message) => errors.push(RecordError { index, message }),
                None if value == Value::Bool(true) => kept.push(index),
                None => {}
            }
        }
        let rows = if kept.len() == input.len as usize {
            input.clone()
        } else {
            input.select(&kept)
        };
        Ok(RowsOut {
            rows,
            origins: kept,
            errors,
        })
    }
}
