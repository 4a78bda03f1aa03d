//! The built-in `project` stage: each row becomes the values of a SELECT list; a row with
//! a value that cannot be computed is refused with the reason.

use super::MapStage;
use crate::expr::Type;
use crate::expr::column::build;
use crate::expr::eval::Eval;
use crate::expr::program::{Output, Program};
use crate::udf::UdfError;
use rivulet_rows::{Batch, RecordError, RowsOut};

pub struct Project {
    outputs: Vec<Output>,
    columns: Vec<(String, Type)>,
    functions: Vec<(String, Box<dyn MapStage>)>,
}

impl Project {
    pub fn new(program: Program, functions: Vec<(String, Box<dyn MapStage>)>) -> Self {
        Project {
            outputs: program.outputs,
            columns: program.scope.columns,
            functions,
        }
    }
}

impl MapStage for Project {
    fn map(&mut self, input: &Batch) -> Result<RowsOut, UdfError> {
        let rows: Vec<u32> = (0..input.len).collect();
        let mut eval = Eval::new(input, &self.columns, &mut self.functions);
        let mut computed = Vec::with_capacity(self.outputs.len());
        for output in &self.outputs {
            if let Output::Expr(name, typed) = output {
                computed.push((name.as_str(), typed.ty, eval.eval(typed, &rows)));
            }
        }
        let mut kept = Vec::with_capacity(rows.len());
        let mut errors = Vec::new();
        for (index, error) in (0u32..).zip(eval.errors) {
            match error {
                Some(message) => errors.push(RecordError { index, message }),
                None => kept.push(index),
            }
        }
        let all = kept.len() == rows.len();
        let named: Vec<&str> = computed.iter().map(|(name, _, _)| *name).collect();
        let mut columns = Vec::new();
        let mut computed = computed.into_iter();
        for output in &self.outputs {
            match output {
                Output::Wildcard => {
                    let rest = Batch {
                        len: input.len,
                        columns: input
                            .columns
                            .iter()
                            .filter(|c| !named.contains(&c.name.as_str()))
                            .cloned()
                            .collect(),
                    };
                    let rest = if all { rest } else { rest.select(&kept) };
                    columns.extend(rest.columns);
                }
                Output::Expr(..) => {
                    let Some((name, ty, values)) = computed.next() else {
                        continue;
                    };
                    let values: Vec<_> = if all {
                        values
                    } else {
                        kept.iter().map(|&i| values[i as usize].clone()).collect()
                    };
                    columns.push(build(name.to_owned(), &values, ty));
                }
            }
        }
        let len = u32::try_from(kept.len()).unwrap_or(u32::MAX);
        Ok(RowsOut {
            rows: Batch { len, columns },
            origins: kept,
            errors,
        })
    }
}
