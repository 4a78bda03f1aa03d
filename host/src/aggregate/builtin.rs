//! Built-in aggregates: count, sum, avg, min, max over a numeric field. A null (or missing)
//! input is skipped, as in SQL; the input's declared type (`type = "BIGINT"`, set by the
//! SQL planner from the column) decides the arithmetic: integers add exactly and AVG
//! truncates to an integer (as Flink's AVG of INT/BIGINT does), DECIMAL(p, s) adds exactly
//! at scale s (see [`crate::decimal`]) and its AVG has scale max(6, s), HALF_UP; floats
//! (and fields of no declared type) add as f64.

use crate::column_type::Numeric;
use crate::decimal;
use crate::spec::{BuiltinFn, BuiltinSpec};
use rivulet_rows::{Batch, Column, Values};
use serde_json::Value;

/// One input value, in its type's arithmetic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i128),
    Float(f64),
    /// Unscaled, at the input's scale.
    Decimal(i128),
}

impl Num {
    fn checked_add(self, other: Num) -> Option<Num> {
        Some(match (self, other) {
            (Num::Int(a), Num::Int(b)) => Num::Int(a.checked_add(b)?),
            (Num::Decimal(a), Num::Decimal(b)) => Num::Decimal(a.checked_add(b)?),
            (Num::Float(a), Num::Float(b)) => Num::Float(a + b),
            _ => return None,
        })
    }

    fn min(self, other: Num) -> Num {
        if other.less_than(self) { other } else { self }
    }

    fn max(self, other: Num) -> Num {
        if self.less_than(other) { other } else { self }
    }

    fn less_than(self, other: Num) -> bool {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) | (Num::Decimal(a), Num::Decimal(b)) => a < b,
            (Num::Float(a), Num::Float(b)) => a < b,
            _ => false,
        }
    }
}

/// The running state of one built-in aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum BuiltinAcc {
    Count(u64),
    /// `None` until a non-null value comes (SUM of no values is NULL).
    Sum(Option<Num>),
    Avg {
        sum: Option<Num>,
        count: u64,
    },
    Min(Option<Num>),
    Max(Option<Num>),
}

/// Where one built-in reads a row.
enum Input<'a> {
    /// Every row counts (`count` without a field).
    Every,
    /// Rows where the field is present and not null count (`count` of a field).
    Present(Option<&'a Column>),
    /// The field's number (missing or null: skipped; not a number: the row is refused).
    Number(&'a str, Option<&'a Column>, Numeric),
}

/// The configured built-ins of a job, in output order.
#[derive(Debug, Clone)]
pub struct Builtins {
    specs: Vec<BuiltinSpec>,
    kinds: Vec<Numeric>,
}

/// How a built-in adds: its input's declared type; without one, as floats.
fn kind_of(spec: &BuiltinSpec) -> Numeric {
    spec.input
        .and_then(|typed| typed.ty.numeric())
        .unwrap_or(Numeric::Float)
}

impl Builtins {
    pub fn new(specs: Vec<BuiltinSpec>) -> Self {
        let kinds = specs.iter().map(kind_of).collect();
        Builtins { specs, kinds }
    }

    pub fn create(&self) -> Vec<BuiltinAcc> {
        self.specs
            .iter()
            .map(|s| match s.function {
                BuiltinFn::Count => BuiltinAcc::Count(0),
                BuiltinFn::Sum => BuiltinAcc::Sum(None),
                BuiltinFn::Avg => BuiltinAcc::Avg {
                    sum: None,
                    count: 0,
                },
                BuiltinFn::Min => BuiltinAcc::Min(None),
                BuiltinFn::Max => BuiltinAcc::Max(None),
            })
            .collect()
    }

    /// Adds rows `members` of `rows` to `accs`, in order, each all or nothing: a
    /// non-numeric input field, or a sum that would overflow, is an error naming it, and
    /// that row changes nothing. Returns the rows refused, with why.
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
            .zip(&self.kinds)
            .map(|(spec, kind)| match (&spec.function, &spec.field) {
                (BuiltinFn::Count, None) => Input::Every,
                (BuiltinFn::Count, Some(field)) => Input::Present(rows.column(field)),
                (_, None) => Input::Every,
                (_, Some(field)) => Input::Number(field.as_str(), rows.column(field), *kind),
            })
            .collect();
        let mut values = Vec::with_capacity(self.specs.len());
        let mut refused = Vec::new();
        for &row in members {
            values.clear();
            let read = columns.iter().try_for_each(|input| {
                values.push(match input {
                    Input::Every => Some(Num::Int(0)),
                    Input::Present(column) => column
                        .filter(|c| !c.is_null(row as usize))
                        .map(|_| Num::Int(0)),
                    Input::Number(field, column, kind) => match column {
                        Some(column) if !column.is_null(row as usize) => Some(
                            number_at(column, row as usize, *kind)
                                .map_err(|reason| format!("field `{field}` {reason}"))?,
                        ),
                        _ => None,
                    },
                });
                Ok::<(), String>(())
            });
            match read.and_then(|()| self.fits(accs, &values)) {
                Ok(()) => Self::apply(accs, &values),
                Err(error) => refused.push((row, error)),
            }
        }
        refused
    }

    /// Whether adding one row's inputs keeps every sum in range.
    fn fits(&self, accs: &[BuiltinAcc], values: &[Option<Num>]) -> Result<(), String> {
        for ((acc, value), spec) in accs.iter().zip(values).zip(&self.specs) {
            let (Some(value), BuiltinAcc::Sum(Some(sum)) | BuiltinAcc::Avg { sum: Some(sum), .. }) =
                (value, acc)
            else {
                continue;
            };
            if sum.checked_add(*value).is_none() {
                return Err(format!(
                    "the sum of field `{}` overflows",
                    spec.field.as_deref().unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// Adds one row's inputs; `None`: this aggregate skips the row (a null input, or
    /// `count` of a field that is missing or null).
    fn apply(accs: &mut [BuiltinAcc], values: &[Option<Num>]) {
        for (acc, &value) in accs.iter_mut().zip(values) {
            let Some(value) = value else { continue };
            match acc {
                BuiltinAcc::Count(n) => *n += 1,
                BuiltinAcc::Sum(sum) => *sum = add(*sum, Some(value)),
                BuiltinAcc::Avg { sum, count } => {
                    *sum = add(*sum, Some(value));
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
                (BuiltinAcc::Sum(a), BuiltinAcc::Sum(b)) => *a = add(*a, *b),
                (
                    BuiltinAcc::Avg { sum, count },
                    BuiltinAcc::Avg {
                        sum: other_sum,
                        count: other_count,
                    },
                ) => {
                    *sum = add(*sum, *other_sum);
                    *count += other_count;
                }
                (BuiltinAcc::Min(a), BuiltinAcc::Min(b)) => *a = option_fold(*a, *b, Num::min),
                (BuiltinAcc::Max(a), BuiltinAcc::Max(b)) => *a = option_fold(*a, *b, Num::max),
                _ => {}
            }
        }
    }

    /// Output fields and values (a DECIMAL result as its text, at its scale).
    pub fn finish(&self, accs: &[BuiltinAcc]) -> Vec<(String, Value)> {
        self.specs
            .iter()
            .zip(&self.kinds)
            .zip(accs)
            .map(|((spec, kind), acc)| {
                let value = match acc {
                    BuiltinAcc::Count(n) => Value::from(*n),
                    BuiltinAcc::Sum(sum) => sum.map_or(Value::Null, |sum| output(sum, *kind)),
                    BuiltinAcc::Avg { count: 0, .. } | BuiltinAcc::Avg { sum: None, .. } => {
                        Value::Null
                    }
                    BuiltinAcc::Avg {
                        sum: Some(sum),
                        count,
                    } => average(*sum, *count, *kind),
                    BuiltinAcc::Min(v) | BuiltinAcc::Max(v) => {
                        v.map_or(Value::Null, |v| output(v, *kind))
                    }
                };
                (spec.name.clone(), value)
            })
            .collect()
    }

    /// The output columns that hold DECIMAL text (written as numbers by the JSON encodings).
    pub fn decimal_outputs(specs: &[BuiltinSpec]) -> Vec<String> {
        specs
            .iter()
            .filter(|s| s.function != BuiltinFn::Count)
            .filter(|s| matches!(kind_of(s), Numeric::Decimal { .. }))
            .map(|s| s.name.clone())
            .collect()
    }
}

/// Row `i` of `column` (not null) as a number of `kind`, or why not.
fn number_at(column: &Column, i: usize, kind: Numeric) -> Result<Num, String> {
    let not_a_number = || "is not a number".to_owned();
    match (kind, &column.values) {
        (Numeric::Float, _) => column.f64_at(i).map(Num::Float).ok_or_else(not_a_number),
        (Numeric::Integer, Values::Integer(v)) => v
            .get(i)
            .map(|n| Num::Int(i128::from(*n)))
            .ok_or_else(not_a_number),
        (Numeric::Integer, Values::Float(v)) => match v.get(i) {
            Some(x) if x.fract() == 0.0 && x.abs() < 9.0e18 => Ok(Num::Int(*x as i128)),
            _ => Err("is not an integer".to_owned()),
        },
        (Numeric::Decimal { scale, .. }, Values::Integer(v)) => v
            .get(i)
            .ok_or_else(not_a_number)
            .and_then(|n| decimal::from_i64(*n, scale))
            .map(Num::Decimal),
        (Numeric::Decimal { scale, .. }, Values::Float(v)) => v
            .get(i)
            .ok_or_else(not_a_number)
            .and_then(|x| decimal::from_f64(*x, scale))
            .map(Num::Decimal),
        (Numeric::Decimal { scale, .. }, Values::Text(_)) => column
            .text_at(i)
            .ok_or_else(not_a_number)
            .and_then(|text| decimal::parse(text, scale))
            .map(Num::Decimal),
        _ => Err(not_a_number()),
    }
}

fn add(a: Option<Num>, b: Option<Num>) -> Option<Num> {
    match (a, b) {
        // In range: `fits` checked every row before it was added.
        (Some(a), Some(b)) => a.checked_add(b).or(Some(a)),
        (a, b) => a.or(b),
    }
}

fn option_fold(a: Option<Num>, b: Option<Num>, f: fn(Num, Num) -> Num) -> Option<Num> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// A SUM, MIN or MAX result.
fn output(value: Num, kind: Numeric) -> Value {
    match (value, kind) {
        (Num::Int(n), _) => i64::try_from(n).map_or_else(|_| Value::from(n as f64), Value::from),
        (Num::Float(x), _) => number(x),
        (Num::Decimal(n), Numeric::Decimal { scale, .. }) => {
            Value::String(decimal::to_text(n, scale))
        }
        (Num::Decimal(n), _) => Value::String(n.to_string()),
    }
}

/// An AVG result: integers truncate (Flink's AVG of INT/BIGINT is an INT/BIGINT),
/// decimals have scale max(6, s), rounded half up.
fn average(sum: Num, count: u64, kind: Numeric) -> Value {
    let count = i128::from(count);
    match (sum, kind) {
        (Num::Int(n), _) => output(Num::Int(n / count), kind),
        (Num::Float(x), _) => number(x / count as f64),
        (Num::Decimal(n), Numeric::Decimal { scale, .. }) => {
            let result_scale = scale.max(6);
            decimal::rescale(n, scale, result_scale).map_or(Value::Null, |n| {
                Value::String(decimal::to_text(
                    decimal::div_half_up(n, count),
                    result_scale,
                ))
            })
        }
        (Num::Decimal(n), _) => Value::String((n / count).to_string()),
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
            input: None,
        }
    }

    fn typed(name: &str, function: BuiltinFn, field: &str, ty: &str) -> BuiltinSpec {
        BuiltinSpec {
            input: Some(ty.parse().unwrap()),
            ..spec(name, function, Some(field))
        }
    }

    fn run(builtins: &Builtins, rows: &[Value]) -> (Value, Vec<(u32, String)>) {
        let mut b = BatchBuilder::new();
        for row in rows {
            b.push(row).unwrap();
        }
        let rows = b.finish();
        let mut accs = builtins.create();
        let members: Vec<u32> = (0..rows.len).collect();
        let refused = builtins.add_rows(&mut accs, &rows, &members);
        let out: serde_json::Map<String, Value> = builtins.finish(&accs).into_iter().collect();
        (Value::Object(out), refused)
    }

    #[test]
    fn a_null_input_is_skipped_and_a_non_number_refuses_its_row_whole() {
        let builtins = Builtins::new(vec![
            spec("n", BuiltinFn::Count, None),
            spec("with_amount", BuiltinFn::Count, Some("amount")),
            spec("total", BuiltinFn::Sum, Some("amount")),
            spec("avg", BuiltinFn::Avg, Some("amount")),
            spec("lo", BuiltinFn::Min, Some("amount")),
            spec("hi", BuiltinFn::Max, Some("amount")),
        ]);
        let (out, refused) = run(
            &builtins,
            &[
                json!({"amount": 0.1}),
                json!({"amount": null}),
                json!({"other": 1}),
                json!({"amount": 3}),
            ],
        );
        assert_eq!(refused, []);
        // The null and the missing amounts are skipped by every aggregate of the field:
        // avg = 3.1 / 2.
        assert_eq!(
            out,
            json!({"n": 4, "with_amount": 2, "total": 3.1, "avg": 1.55, "lo": 0.1, "hi": 3})
        );
        let (out, refused) = run(&builtins, &[json!({"amount": "x"}), json!({"other": 2})]);
        assert_eq!(
            refused,
            [(0, "field `amount` is not a number".to_owned())],
            "a non-number refuses its row, which changes nothing"
        );
        assert_eq!(
            out,
            json!({"n": 1, "with_amount": 0, "total": null, "avg": null, "lo": null, "hi": null})
        );
        let (out, _) = run(&builtins, &[json!({"amount": null})]);
        assert_eq!(
            out,
            json!({"n": 1, "with_amount": 0, "total": null, "avg": null, "lo": null, "hi": null}),
            "SQL: SUM, AVG, MIN and MAX of only nulls are NULL"
        );
    }

    #[test]
    fn avg_of_an_integer_column_truncates_to_an_integer_like_flink() {
        let builtins = Builtins::new(vec![
            typed("avg", BuiltinFn::Avg, "n", "BIGINT"),
            typed("total", BuiltinFn::Sum, "n", "INT"),
            typed("lo", BuiltinFn::Min, "n", "INT"),
        ]);
        // 7/2 = 3.5 → 3 and -7/2 = -3.5 → -3 (toward zero, as Java's integer division).
        assert_eq!(
            run(&builtins, &[json!({"n": 3}), json!({"n": 4})]).0,
            json!({"avg": 3, "total": 7, "lo": 3})
        );
        assert_eq!(
            run(&builtins, &[json!({"n": -3}), json!({"n": -4})]).0,
            json!({"avg": -3, "total": -7, "lo": -4})
        );
        let (_, refused) = run(&builtins, &[json!({"n": 1.5})]);
        assert_eq!(refused, [(0, "field `n` is not an integer".to_owned())]);
    }

    #[test]
    fn decimal_sums_are_exact_where_f64_drifts() {
        // 10 000 times 0.1, as JSON numbers: exactly 1000.00. The same in f64 is not.
        let rows: Vec<Value> = (0..10_000).map(|_| json!({"price": 0.1})).collect();
        let mut float_sum = 0.0f64;
        for _ in 0..10_000 {
            float_sum += 0.1;
        }
        assert_ne!(float_sum, 1000.0, "the f64 sum drifts");
        let builtins = Builtins::new(vec![
            typed("total", BuiltinFn::Sum, "price", "DECIMAL(10, 2)"),
            typed("mean", BuiltinFn::Avg, "price", "DECIMAL(10, 2)"),
            typed("hi", BuiltinFn::Max, "price", "DECIMAL(10, 2)"),
        ]);
        let (out, refused) = run(&builtins, &rows);
        assert!(refused.is_empty());
        assert_eq!(
            out,
            json!({"total": "1000.00", "mean": "0.100000", "hi": "0.10"})
        );
        // Text inputs, and AVG rounding half up at scale max(6, s): 2/3 = 0.666667.
        let (out, _) = run(
            &builtins,
            &[
                json!({"price": "0.01"}),
                json!({"price": "0.00"}),
                json!({"price": "0.01"}),
            ],
        );
        assert_eq!(
            out,
            json!({"total": "0.02", "mean": "0.006667", "hi": "0.01"})
        );
        assert_eq!(
            Builtins::decimal_outputs(&builtins.specs),
            ["total", "mean", "hi"]
        );
    }

    #[test]
    fn computes_every_builtin_and_a_null_input_counts_only_for_count_star() {
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
        assert_eq!(refused, [], "a null is skipped, not refused");
        let out: serde_json::Map<String, Value> = builtins.finish(&accs).into_iter().collect();
        assert_eq!(
            Value::Object(out),
            json!({"n": 4, "total": 3.3, "avg": 1.1, "lo": 0.1, "hi": 3})
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
