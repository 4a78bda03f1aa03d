//! Evaluates [`Typed`] trees over a batch, for a given set of its rows. Branches (`CASE`,
//! the right side of `AND`/`OR`) are evaluated only on the rows that reach them; a row
//! whose value cannot be computed gets its error (the first one) and `NULL`.

use super::functions;
use super::{BinOp, Node, Type, Typed, Value};
use crate::stage::MapStage;
use rivulet_rows::{Batch, Column, Values};
use std::cmp::Ordering;

/// One batch being evaluated: the columns of each slot, each row's error, and the Wasm
/// functions to call.
pub struct Eval<'b, 'u> {
    /// By slot: the column (None: the batch has no such column, every row NULL), its name
    /// and declared type.
    columns: Vec<(Option<&'b Column>, &'b str, Type)>,
    /// By batch row: the first error met computing it.
    pub errors: Vec<Option<String>>,
    udfs: &'u mut [(String, Box<dyn MapStage>)],
}

impl<'b, 'u> Eval<'b, 'u> {
    /// `slots`: the columns the trees read, by slot (a [`super::Scope`]'s `columns`).
    pub fn new(
        batch: &'b Batch,
        slots: &'b [(String, Type)],
        udfs: &'u mut [(String, Box<dyn MapStage>)],
    ) -> Self {
        Eval {
            columns: slots
                .iter()
                .map(|(name, ty)| (batch.column(name), name.as_str(), *ty))
                .collect(),
            errors: vec![None; batch.len as usize],
            udfs,
        }
    }

    fn fail(&mut self, row: u32, message: String) -> Value {
        if let Some(slot) = self.errors.get_mut(row as usize)
            && slot.is_none()
        {
            *slot = Some(message);
        }
        Value::Null
    }

    /// The value of `e` for each of `rows` (batch indexes), in order.
    pub fn eval(&mut self, e: &Typed, rows: &[u32]) -> Vec<Value> {
        match &e.node {
            Node::Column(slot) => {
                let (column, name, ty) = self.columns[*slot];
                rows.iter()
                    .map(|&r| match read(column, r as usize, name, ty) {
                        Ok(v) => v,
                        Err(message) => self.fail(r, message),
                    })
                    .collect()
            }
            Node::Literal(v) => vec![v.clone(); rows.len()],
            Node::Neg(arg) => {
                let values = self.eval(arg, rows);
                self.each(rows, values, |v| match v {
                    Value::Int(i) => i
                        .checked_neg()
                        .map(Value::Int)
                        .ok_or_else(|| "integer overflow in `-`".to_owned()),
                    Value::Float(x) => Ok(Value::Float(-x)),
                    Value::Null => Ok(Value::Null),
                    other => Err(format!("`-` needs a number, found {}", other.kind())),
                })
            }
            Node::Not(arg) => {
                let values = self.eval(arg, rows);
                self.each(rows, values, |v| {
                    Ok(match truth(&v)? {
                        Some(b) => Value::Bool(!b),
                        None => Value::Null,
                    })
                })
            }
            Node::Binary(op, l, r) => {
                let (a, b) = (self.eval(l, rows), self.eval(r, rows));
                let op = *op;
                rows.iter()
                    .zip(a.into_iter().zip(b))
                    .map(|(&row, (a, b))| match binary(op, a, b) {
                        Ok(v) => v,
                        Err(message) => self.fail(row, message),
                    })
                    .collect()
            }
            Node::And(l, r) | Node::Or(l, r) => {
                let and = matches!(e.node, Node::And(..));
                let left = self.eval(l, rows);
                let mut out = Vec::with_capacity(rows.len());
                let mut pending = Vec::new();
                for (i, (&row, v)) in rows.iter().zip(left).enumerate() {
                    match truth(&v) {
                        // FALSE AND x, TRUE OR x: decided without x.
                        Ok(Some(b)) if b != and => out.push(Value::Bool(b)),
                        Ok(t) => {
                            out.push(t.map_or(Value::Null, Value::Bool));
                            pending.push(i);
                        }
                        Err(message) => out.push(self.fail(row, message)),
                    }
                }
                let sub: Vec<u32> = pending.iter().map(|&i| rows[i]).collect();
                let right = self.eval(r, &sub);
                for (&i, v) in pending.iter().zip(right) {
                    let left = truth(&out[i]).ok().flatten();
                    let right = match truth(&v) {
                        Ok(t) => t,
                        Err(message) => {
                            out[i] = self.fail(rows[i], message);
                            continue;
                        }
                    };
                    out[i] = match (left, right) {
                        (_, Some(b)) if b != and => Value::Bool(b),
                        (Some(_), Some(b)) => Value::Bool(b),
                        _ => Value::Null,
                    };
                }
                out
            }
            Node::IsNull(arg, negated) => self
                .eval(arg, rows)
                .into_iter()
                .map(|v| Value::Bool(v.is_null() != *negated))
                .collect(),
            Node::In(arg, list, negated) => {
                let values = self.eval(arg, rows);
                let items: Vec<Vec<Value>> = list.iter().map(|i| self.eval(i, rows)).collect();
                let mut out = Vec::with_capacity(rows.len());
                for (k, (&row, v)) in rows.iter().zip(values).enumerate() {
                    let mut result = Some(false);
                    for item in &items {
                        match v.compare(&item[k]) {
                            Ok(Some(Ordering::Equal)) => {
                                result = Some(true);
                                break;
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => result = None,
                            Err(message) => {
                                self.fail(row, message);
                                result = None;
                                break;
                            }
                        }
                    }
                    out.push(match result {
                        Some(b) => Value::Bool(b != *negated),
                        None => Value::Null,
                    });
                }
                out
            }
            Node::Between(arg, low, high, negated) => {
                let (v, lo, hi) = (
                    self.eval(arg, rows),
                    self.eval(low, rows),
                    self.eval(high, rows),
                );
                let mut out = Vec::with_capacity(rows.len());
                for (&row, ((v, lo), hi)) in rows.iter().zip(v.into_iter().zip(lo).zip(hi)) {
                    let ge = v.compare(&lo).map(|o| o.map(|o| o != Ordering::Less));
                    let le = v.compare(&hi).map(|o| o.map(|o| o != Ordering::Greater));
                    out.push(match (ge, le) {
                        (Ok(ge), Ok(le)) => match and3(ge, le) {
                            Some(b) => Value::Bool(b != *negated),
                            None => Value::Null,
                        },
                        (Err(message), _) | (_, Err(message)) => self.fail(row, message),
                    });
                }
                out
            }
            Node::Like(arg, pattern, escape, negated) => {
                let (v, p) = (self.eval(arg, rows), self.eval(pattern, rows));
                let mut out = Vec::with_capacity(rows.len());
                for (&row, (v, p)) in rows.iter().zip(v.into_iter().zip(p)) {
                    out.push(match (v, p) {
                        (Value::Null, _) | (_, Value::Null) => Value::Null,
                        (Value::Text(v), Value::Text(p)) => {
                            match functions::like(&v, &p, *escape) {
                                Ok(m) => Value::Bool(m != *negated),
                                Err(message) => self.fail(row, message),
                            }
                        }
                        (v, p) => self.fail(
                            row,
                            format!("LIKE needs text, found {} and {}", v.kind(), p.kind()),
                        ),
                    });
                }
                out
            }
            Node::Case {
                operand,
                whens,
                otherwise,
            } => {
                let operand = operand.as_ref().map(|o| self.eval(o, rows));
                let mut out = vec![Value::Null; rows.len()];
                let mut pending: Vec<usize> = (0..rows.len()).collect();
                for (condition, result) in whens {
                    if pending.is_empty() {
                        break;
                    }
                    let sub: Vec<u32> = pending.iter().map(|&i| rows[i]).collect();
                    let conditions = self.eval(condition, &sub);
                    let mut taken = Vec::new();
                    let mut rest = Vec::new();
                    for (&i, c) in pending.iter().zip(conditions) {
                        let hit = match &operand {
                            Some(values) => {
                                values[i].compare(&c).map(|o| o == Some(Ordering::Equal))
                            }
                            None => truth(&c).map(|t| t == Some(true)),
                        };
                        match hit {
                            Ok(true) => taken.push(i),
                            Ok(false) => rest.push(i),
                            Err(message) => {
                                self.fail(rows[i], message);
                            }
                        }
                    }
                    let sub: Vec<u32> = taken.iter().map(|&i| rows[i]).collect();
                    for (&i, v) in taken.iter().zip(self.eval(result, &sub)) {
                        out[i] = v;
                    }
                    pending = rest;
                }
                if let Some(otherwise) = otherwise {
                    let sub: Vec<u32> = pending.iter().map(|&i| rows[i]).collect();
                    for (&i, v) in pending.iter().zip(self.eval(otherwise, &sub)) {
                        out[i] = v;
                    }
                }
                if e.ty == Type::Float {
                    for v in &mut out {
                        if let Value::Int(i) = *v {
                            *v = Value::Float(i as f64);
                        }
                    }
                }
                out
            }
            Node::Cast(arg, ty) => {
                let values = self.eval(arg, rows);
                let ty = *ty;
                self.each(rows, values, |v| v.cast(ty))
            }
            Node::Call(builtin, args) => {
                let args: Vec<Vec<Value>> = args.iter().map(|a| self.eval(a, rows)).collect();
                let mut out = Vec::with_capacity(rows.len());
                for (k, &row) in rows.iter().enumerate() {
                    let values: Vec<&Value> = args.iter().map(|a| &a[k]).collect();
                    out.push(match functions::call(*builtin, &values) {
                        Ok(v) => v,
                        Err(message) => self.fail(row, message),
                    });
                }
                out
            }
            Node::Udf(slot, args) => {
                let values: Vec<Vec<Value>> = args.iter().map(|a| self.eval(a, rows)).collect();
                let names: Vec<String> = args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| match a.node {
                        Node::Column(s) => self.columns[s].1.to_owned(),
                        _ => format!("arg{i}"),
                    })
                    .collect();
                self.call_udf(*slot, rows, names, values, args)
            }
        }
    }

    fn each(
        &mut self,
        rows: &[u32],
        values: Vec<Value>,
        f: impl Fn(Value) -> Result<Value, String>,
    ) -> Vec<Value> {
        rows.iter()
            .zip(values)
            .map(|(&row, v)| match f(v) {
                Ok(v) => v,
                Err(message) => self.fail(row, message),
            })
            .collect()
    }

    /// Calls Wasm function `slot` once for `rows`: the argument columns as one batch; each
    /// row's value is the first column of its one output row (none: NULL).
    fn call_udf(
        &mut self,
        slot: usize,
        rows: &[u32],
        names: Vec<String>,
        values: Vec<Vec<Value>>,
        args: &[Typed],
    ) -> Vec<Value> {
        let mut out = vec![Value::Null; rows.len()];
        if rows.is_empty() {
            return out;
        }
        let len = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        let columns = names
            .into_iter()
            .zip(values)
            .zip(args)
            .map(|((name, values), arg)| super::column::build(name, &values, arg.ty))
            .collect();
        let input = Batch { len, columns };
        let Some((name, stage)) = self.udfs.get_mut(slot) else {
            return out;
        };
        let name = name.clone();
        let result = stage.map(&input);
        let output = match result {
            Ok(output) => output,
            Err(err) => {
                let message = format!("function {name}: {err}");
                for &row in rows {
                    self.fail(row, message.clone());
                }
                return out;
            }
        };
        for error in &output.errors {
            if let Some(&row) = rows.get(error.index as usize) {
                self.fail(row, format!("function {name}: {}", error.message));
            }
        }
        let mut seen = vec![0u32; rows.len()];
        let first = output.rows.columns.first();
        for (k, &origin) in output.origins.iter().enumerate() {
            let i = origin as usize;
            let Some(count) = seen.get_mut(i) else {
                continue;
            };
            *count += 1;
            match *count {
                1 => {
                    out[i] = match read(first, k, &name, Type::Any) {
                        Ok(v) => v,
                        Err(message) => self.fail(rows[i], message),
                    }
                }
                2 => {
                    out[i] = self.fail(
                        rows[i],
                        format!("function {name} returned more than one row for one call"),
                    );
                }
                _ => {}
            }
        }
        out
    }
}

/// A row's value of `column` as its declared type. A missing column is NULL.
pub fn read(column: Option<&Column>, row: usize, name: &str, ty: Type) -> Result<Value, String> {
    let Some(column) = column else {
        return Ok(Value::Null);
    };
    if column.is_null(row) {
        return Ok(Value::Null);
    }
    let raw = match &column.values {
        Values::Boolean(v) => v.get(row).map(|&b| Value::Bool(b)),
        Values::Integer(v) => v.get(row).map(|&i| Value::Int(i)),
        Values::Float(v) => v.get(row).map(|&x| Value::Float(x)),
        Values::Text(p) | Values::Json(p) | Values::Binary(p) => p
            .get(row)
            .map(|bytes| Value::Text(String::from_utf8_lossy(bytes).into_owned())),
    }
    .unwrap_or(Value::Null);
    let refuse = |v: &Value| {
        format!(
            "column `{name}` is {ty} but the record holds {}",
            match v {
                Value::Text(s) => format!("'{s}'"),
                other => other.to_string(),
            }
        )
    };
    Ok(match (raw, ty) {
        (v, Type::Any) => v,
        (Value::Int(i), Type::Integer) => Value::Int(i),
        (Value::Float(x), Type::Integer) if x.fract() == 0.0 && x.abs() < 9e15 => {
            Value::Int(x as i64)
        }
        (Value::Int(i), Type::Float) => Value::Float(i as f64),
        (Value::Float(x), Type::Float) => Value::Float(x),
        (Value::Bool(b), Type::Boolean) => Value::Bool(b),
        (Value::Text(s), Type::Text | Type::Timestamp) => Value::Text(s),
        (Value::Int(ms), Type::Timestamp) => Value::Text(rivulet_rows::time::iso8601(ms)),
        (v @ (Value::Int(_) | Value::Float(_) | Value::Bool(_)), Type::Text) => {
            Value::Text(v.to_string())
        }
        (v, _) => return Err(refuse(&v)),
    })
}

/// A boolean's truth: TRUE, FALSE or unknown (NULL).
fn truth(v: &Value) -> Result<Option<bool>, String> {
    match v {
        Value::Bool(b) => Ok(Some(*b)),
        Value::Null => Ok(None),
        other => Err(format!(
            "a condition needs a boolean, found {}",
            other.kind()
        )),
    }
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// One binary operation with SQL's rules: NULL in, NULL out; integers stay integers
/// (checked), a float makes a float; division and remainder by zero are errors.
fn binary(op: BinOp, a: Value, b: Value) -> Result<Value, String> {
    use BinOp::*;
    if a.is_null() || b.is_null() {
        return Ok(Value::Null);
    }
    let compare = |wanted: fn(Ordering) -> bool| -> Result<Value, String> {
        Ok(match a.compare(&b)? {
            Some(o) => Value::Bool(wanted(o)),
            None => Value::Null,
        })
    };
    match op {
        Eq => compare(|o| o == Ordering::Equal),
        NotEq => compare(|o| o != Ordering::Equal),
        Lt => compare(|o| o == Ordering::Less),
        LtEq => compare(|o| o != Ordering::Greater),
        Gt => compare(|o| o == Ordering::Greater),
        GtEq => compare(|o| o != Ordering::Less),
        Concat => Ok(Value::Text(format!("{a}{b}"))),
        Add | Sub | Mul | Div | Mod => arithmetic(op, a, b),
    }
}

fn arithmetic(op: BinOp, a: Value, b: Value) -> Result<Value, String> {
    use BinOp::*;
    let symbol = match op {
        Add => "+",
        Sub => "-",
        Mul => "*",
        Div => "/",
        _ => "%",
    };
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            if matches!(op, Div | Mod) && y == 0 {
                return Err("division by zero".to_owned());
            }
            let r = match op {
                Add => x.checked_add(y),
                Sub => x.checked_sub(y),
                Mul => x.checked_mul(y),
                Div => x.checked_div(y),
                _ => x.checked_rem(y),
            };
            r.map(Value::Int)
                .ok_or_else(|| format!("integer overflow in `{x} {symbol} {y}`"))
        }
        (a, b) => {
            let number = |v: &Value| match v {
                Value::Int(i) => Ok(*i as f64),
                Value::Float(x) => Ok(*x),
                other => Err(format!("`{symbol}` needs numbers, found {}", other.kind())),
            };
            let (x, y) = (number(&a)?, number(&b)?);
            if matches!(op, Div | Mod) && y == 0.0 {
                return Err("division by zero".to_owned());
            }
            Ok(Value::Float(match op {
                Add => x + y,
                Sub => x - y,
                Mul => x * y,
                Div => x / y,
                _ => x % y,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::expr::{Scope, compile, parse_expr};
    use rivulet_rows::BatchBuilder;

    /// `text` over rows of (a, b), each possibly NULL: the values and the row errors.
    fn run(text: &str, rows: &[(Option<i64>, Option<i64>)]) -> (Vec<Value>, Vec<Option<String>>) {
        let mut builder = BatchBuilder::new();
        for (a, b) in rows {
            builder.push(&serde_json::json!({"a": a, "b": b})).unwrap();
        }
        let batch = builder.finish();
        let mut scope = Scope::open(vec![
            ("a".into(), Type::Integer),
            ("b".into(), Type::Integer),
        ]);
        let typed = compile(&parse_expr(text).unwrap(), &mut scope).unwrap();
        let mut udfs: Vec<(String, Box<dyn MapStage>)> = Vec::new();
        let mut eval = Eval::new(&batch, &scope.columns, &mut udfs);
        let all: Vec<u32> = (0..batch.len).collect();
        let values = eval.eval(&typed, &all);
        (values, eval.errors)
    }

    #[test]
    fn and_or_not_follow_three_valued_logic() {
        let rows = [
            (Some(1), Some(1)),
            (Some(1), None),
            (None, Some(0)),
            (None, None),
            (Some(0), Some(0)),
        ];
        let (t, f, n) = (Value::Bool(true), Value::Bool(false), Value::Null);
        let (and, _) = run("a = 1 AND b = 1", &rows);
        assert_eq!(and, [t.clone(), n.clone(), f.clone(), n.clone(), f.clone()]);
        let (or, _) = run("a = 1 OR b = 1", &rows);
        assert_eq!(or, [t.clone(), t.clone(), n.clone(), n.clone(), f.clone()]);
        let (not, _) = run("NOT (a = 1)", &rows);
        assert_eq!(not, [f.clone(), f.clone(), n.clone(), n.clone(), t.clone()]);
        let (is_null, _) = run("a IS NULL", &rows);
        assert_eq!(is_null, [f.clone(), f.clone(), t.clone(), t.clone(), f]);
    }

    #[test]
    fn only_the_branch_a_row_takes_is_computed() {
        let rows = [(Some(6), Some(0)), (Some(6), Some(3)), (None, Some(0))];
        let (values, errors) = run("CASE WHEN b = 0 THEN -1 ELSE a / b END", &rows);
        assert_eq!(values, [Value::Int(-1), Value::Int(2), Value::Int(-1)]);
        assert_eq!(errors, [None, None, None]);
        let (_, errors) = run("b <> 0 AND a / b > 1", &rows);
        assert_eq!(errors, [None, None, None]);
        let (values, errors) = run("a / b", &rows);
        assert_eq!(values, [Value::Null, Value::Int(2), Value::Null]);
        // NULL / 0 is NULL: the division never happens.
        assert_eq!(errors, [Some("division by zero".to_owned()), None, None]);
    }
}
