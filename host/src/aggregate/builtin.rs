//! Built-in aggregates: count, sum, avg, min, max over a numeric field.

use crate::spec::{BuiltinFn, BuiltinSpec};
use rivulet_rows::{Batch, Column};
use serde_json::Value;

/// The running state of one built-in aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum BuiltinAcc {
    Count(u64),
    Sum(f64),
    Avg { sum: f64, count: u64 },
    Min(Option<f64>),
    Max(Option<f64>),
}

/// Where one built-in reads a row.
enum Input<'a> {
    /// Every row counts (`count` without a field).
    Every,
    /// Rows where the field is present and not null count (`count` of a field).
    Present(Option<&'a Column>),
    /// The field's number (a missing, null or non-numeric field refuses the row).
    Number(&'a str, Option<&'a Column>),
}

/// The configured built-ins of a job, in output order.
#[derive(Debug, Clone)]
pub struct Builtins {
    specs: Vec<BuiltinSpec>,
}

impl Builtins {
    pub fn new(specs: Vec<BuiltinSpec>) -> Self {
        Builtins { specs }
    }

    pub fn create(&self) -> Vec<BuiltinAcc> {
        self.specs
            .iter()
            .map(|s| match s.function {
                BuiltinFn::Count => BuiltinAcc::Count(0),
                BuiltinFn::Sum => BuiltinAcc::Sum(0.0),
                BuiltinFn::Avg => BuiltinAcc::Avg { sum: 0.0, count: 0 },
                BuiltinFn::Min => BuiltinAcc::Min(None),
                BuiltinFn::Max => BuiltinAcc::Max(None),
            })
            .collect()
    }

    /// Adds rows `members` of `rows` to `accs`, in order, each all or nothing: a missing or
    /// non-numeric input field is an error naming it, and that row changes nothing.
    /// Returns the rows refused, with why.
    pub fn add_rows(
        &self,
        accs: &mut [BuiltinAcc],
        rows: &Batch,
        members: &[u32],
    ) -> Vec<(u32, String)> {
        // The input columns, found once per batch.
        let columns: Vec<Input<'_>> = self
            .specs
            .iter()
            .map(|spec| match (&spec.function, &spec.field) {
                (BuiltinFn::Count, None) => Input::Every,
                (BuiltinFn::Count, Some(field)) => Input::Present(rows.column(field)),
                (_, None) => Input::Every,
                (_, Some(field)) => Input::Number(field.as_str(), rows.column(field)),
            })
            .collect();
        let mut values = Vec::with_capacity(self.specs.len());
        let mut refused = Vec::new();
        for &row in members {
            values.clear();
            let read = columns.iter().try_for_each(|input| {
                values.push(match input {
                    Input::Every => Some(0.0),
                    Input::Present(column) => {
                        column.filter(|c| !c.is_null(row as usize)).map(|_| 0.0)
                    }
                    Input::Number(field, column) => {
                        let column = column.ok_or_else(|| format!("field `{field}` is missing"))?;
                        if column.is_null(row as usize) {
                            return Err(format!("field `{field}` is null"));
                        }
                        Some(
                            column
                                .f64_at(row as usize)
                                .ok_or_else(|| format!("field `{field}` is not a number"))?,
                        )
                    }
                });
                Ok(())
            });
            match read {
                Ok(()) => Self::apply(accs, &values),
                Err(error) => refused.push((row, error)),
            }
        }
        refused
    }

    /// Adds one row's inputs; `None`: this aggregate skips the row (`count` of a field
    /// that is missing or null).
    fn apply(accs: &mut [BuiltinAcc], values: &[Option<f64>]) {
        for (acc, &value) in accs.iter_mut().zip(values) {
            let Some(value) = value else { continue };
            match acc {
                BuiltinAcc::Count(n) => *n += 1,
                BuiltinAcc::Sum(sum) => *sum += value,
                BuiltinAcc::Avg { sum, count } => {
                    *sum += value;
                    *count += 1;
                }
                BuiltinAcc::Min(min) => *min = Some(min.map_or(value, |m| m.min(value))),
                BuiltinAcc::Max(max) => *max = Some(max.map_or(value, |m| m.max(value))),
            }
        }
    }

    /// Folds `other` (the same built-ins over other rows) into `accs`: two-phase aggregation
    /// across the tasks of a job.
    pub fn merge(&self, accs: &mut [BuiltinAcc], other: &[BuiltinAcc]) {
        for (acc, other) in accs.iter_mut().zip(other) {
            match (acc, other) {
                (BuiltinAcc::Count(n), BuiltinAcc::Count(m)) => *n += m,
                (BuiltinAcc::Sum(a), BuiltinAcc::Sum(b)) => *a += b,
                (
                    BuiltinAcc::Avg { sum, count },
                    BuiltinAcc::Avg {
                        sum: other_sum,
                        count: other_count,
                    },
                ) => {
                    *sum += other_sum;
                    *count += other_count;
                }
                (BuiltinAcc::Min(a), BuiltinAcc::Min(b)) => *a = option_fold(*a, *b, f64::min),
                (BuiltinAcc::Max(a), BuiltinAcc::Max(b)) => *a = option_fold(*a, *b, f64::max),
                _ => {}
            }
        }
    }

    /// Output fields and values.
    pub fn finish(&self, accs: &[BuiltinAcc]) -> Vec<(String, Value)> {
        self.specs
            .iter()
            .zip(accs)
            .map(|(spec, acc)| {
                let value = match acc {
                    BuiltinAcc::Count(n) => Value::from(*n),
                    BuiltinAcc::Sum(sum) => number(*sum),
                    BuiltinAcc::Avg { count: 0, .. } => Value::Null,
                    BuiltinAcc::Avg { sum, count } => number(sum / *count as f64),
                    BuiltinAcc::Min(v) | BuiltinAcc::Max(v) => v.map_or(Value::Null, number),
                };
                (spec.name.clone(), value)
            })
            .collect()
    }
}

fn option_fold(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// Whole numbers print without a fraction; others keep at most 6 decimals (no 0.1+0.2 noise).
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Value::from(value as i64)
    } else {
        let rounded = (value * 1e6).round() / 1e6;
        serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rivulet_rows::BatchBuilder;
    use serde_json::json;

    fn spec(name: &str, function: BuiltinFn, field: Option<&str>) -> BuiltinSpec {
        BuiltinSpec {
            name: name.into(),
            function,
            field: field.map(Into::into),
        }
    }

    #[test]
    fn computes_every_builtin_and_rejects_bad_rows_whole() {
        let builtins = Builtins::new(vec![
            spec("n", BuiltinFn::Count, None),
            spec("total", BuiltinFn::Sum, Some("amount")),
            spec("avg", BuiltinFn::Avg, Some("amount")),
            spec("lo", BuiltinFn::Min, Some("amount")),
            spec("hi", BuiltinFn::Max, Some("amount")),
        ]);
        let mut b = BatchBuilder::new();
        for row in [
            json!({"amount": 0.1}),
            json!({"amount": 0.2}),
            json!({"amount": null}),
            json!({"amount": 3}),
        ] {
            b.push(&row).unwrap();
        }
        let rows = b.finish();
        let mut accs = builtins.create();
        let refused = builtins.add_rows(&mut accs, &rows, &[0, 1, 2, 3]);
        assert_eq!(
            refused,
            [(2, "field `amount` is null".to_owned())],
            "only the null row is refused, and it changes nothing"
        );
        let out: serde_json::Map<String, Value> = builtins.finish(&accs).into_iter().collect();
        assert_eq!(
            Value::Object(out),
            json!({"n": 3, "total": 3.3, "avg": 1.1, "lo": 0.1, "hi": 3})
        );
    }

    #[test]
    fn count_of_a_field_counts_the_rows_where_it_is_present_and_not_null() {
        let builtins = Builtins::new(vec![
            spec("rows", BuiltinFn::Count, None),
            spec("with_region", BuiltinFn::Count, Some("region")),
            spec("with_colour", BuiltinFn::Count, Some("colour")),
        ]);
        let mut b = BatchBuilder::new();
        for row in [
            json!({"region": "eu"}),
            json!({"region": null}),
            json!({"other": 1}),
            json!({"region": "us"}),
        ] {
            b.push(&row).unwrap();
        }
        let rows = b.finish();
        let mut accs = builtins.create();
        assert_eq!(builtins.add_rows(&mut accs, &rows, &[0, 1, 2, 3]), []);
        let out: serde_json::Map<String, Value> = builtins.finish(&accs).into_iter().collect();
        assert_eq!(
            Value::Object(out),
            json!({"rows": 4, "with_region": 2, "with_colour": 0})
        );
    }

    #[test]
    fn merged_partials_finish_like_one_accumulator_over_all_rows() {
        let builtins = Builtins::new(vec![
            spec("n", BuiltinFn::Count, None),
            spec("total", BuiltinFn::Sum, Some("amount")),
            spec("avg", BuiltinFn::Avg, Some("amount")),
            spec("lo", BuiltinFn::Min, Some("amount")),
            spec("hi", BuiltinFn::Max, Some("amount")),
        ]);
        let mut b = BatchBuilder::new();
        for amount in [4, 1, 7, 2] {
            b.push(&json!({ "amount": amount })).unwrap();
        }
        let rows = b.finish();
        let (mut left, mut right, empty) =
            (builtins.create(), builtins.create(), builtins.create());
        assert!(builtins.add_rows(&mut left, &rows, &[0, 1]).is_empty());
        assert!(builtins.add_rows(&mut right, &rows, &[2, 3]).is_empty());
        builtins.merge(&mut left, &right);
        builtins.merge(&mut left, &empty);
        let out: serde_json::Map<String, Value> = builtins.finish(&left).into_iter().collect();
        assert_eq!(
            Value::Object(out),
            json!({"n": 4, "total": 14, "avg": 3.5, "lo": 1, "hi": 7})
        );
    }
}
