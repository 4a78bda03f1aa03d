//! The difference between what the live module and its shadow made of the same input: per
//! record for parse, map and format (rows only in the old output, only in the new one, or
//! changed — with counts per field and the first few examples), per window and key for an
//! aggregate (old result against new).

use rivulet_rows::{Batch, Encoded, RecordError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How many examples of differing records a diff keeps (the first ones seen).
pub const EXAMPLES: usize = 10;

/// How many compared windows a diff keeps (the latest ones).
pub const RECENT_WINDOWS: usize = 20;

/// One side's output for a batch: rows, the input each came from, and the inputs refused.
pub struct Output<'a> {
    pub rows: &'a Batch,
    pub origins: &'a [u32],
    pub errors: &'a [RecordError],
}

/// Per-record differences, accumulated over every batch the shadow saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordDiff {
    /// Input records compared.
    pub compared: u64,
    /// Inputs whose outputs are the same on both sides (rows, or both refused).
    pub same: u64,
    /// Rows present on both sides with different values.
    pub changed: u64,
    /// Rows only the live module produced.
    pub only_old: u64,
    /// Rows only the shadow produced.
    pub only_new: u64,
    /// Per field (or `payload` for a formatter's non-JSON output): changed rows in which it
    /// differs.
    pub fields: BTreeMap<String, u64>,
    /// The first differing rows.
    pub examples: Vec<Example>,
}

/// A differing row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Where its input came from (`partition/offset`, or its place in the shadow's input).
    pub input: String,
    /// `changed`, `only_old` or `only_new`.
    pub kind: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
    /// The fields that differ (a changed row).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// The fields in which two values differ: per key of two objects, or `payload` for anything
/// else that is not equal.
pub fn differing_fields(old: &Value, new: &Value) -> Vec<String> {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            names
                .into_iter()
                .filter(|name| old.get(*name) != new.get(*name))
                .cloned()
                .collect()
        }
        _ if old == new => Vec::new(),
        _ => vec!["payload".to_owned()],
    }
}

impl RecordDiff {
    fn example(&mut self, example: Example) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(example);
        }
    }

    /// Compares the values two sides made of one input.
    fn compare(&mut self, input: &str, old: Vec<Value>, new: Vec<Value>) {
        self.compare_by(input, old, new, differing_fields);
    }

    /// [`RecordDiff::compare`], naming the differing fields with `fields_of`.
    fn compare_by(
        &mut self,
        input: &str,
        old: Vec<Value>,
        new: Vec<Value>,
        fields_of: fn(&Value, &Value) -> Vec<String>,
    ) {
        self.compared += 1;
        if old == new {
            self.same += 1;
            return;
        }
        let longest = old.len().max(new.len());
        let (mut old, mut new) = (old.into_iter(), new.into_iter());
        for _ in 0..longest {
            match (old.next(), new.next()) {
                (Some(old), Some(new)) => {
                    let fields = fields_of(&old, &new);
                    if fields.is_empty() {
                        continue;
                    }
                    self.changed += 1;
                    for field in &fields {
                        *self.fields.entry(field.clone()).or_default() += 1;
                    }
                    self.example(Example {
                        input: input.to_owned(),
                        kind: "changed".to_owned(),
                        old: Some(old),
                        new: Some(new),
                        fields,
                    });
                }
                (Some(old), None) => {
                    self.only_old += 1;
                    self.example(Example {
                        input: input.to_owned(),
                        kind: "only_old".to_owned(),
                        old: Some(old),
                        new: None,
                        fields: Vec::new(),
                    });
                }
                (None, Some(new)) => {
                    self.only_new += 1;
                    self.example(Example {
                        input: input.to_owned(),
                        kind: "only_new".to_owned(),
                        old: None,
                        new: Some(new),
                        fields: Vec::new(),
                    });
                }
                (None, None) => {}
            }
        }
    }

    /// Adds the comparison of two sides' rows made of the same `inputs` inputs; `input(i)`
    /// names input `i` in examples. Rows are compared cell by cell first; only the inputs
    /// whose rows differ are turned into JSON.
    pub fn rows(
        &mut self,
        inputs: u32,
        old: &Output<'_>,
        new: &Output<'_>,
        input: impl Fn(u32) -> String,
    ) {
        let old_rows = per_input(inputs, old);
        let new_rows = per_input(inputs, new);
        let cells = Cells::of(old.rows, new.rows);
        for (i, (old_rows, new_rows)) in old_rows.iter().zip(&new_rows).enumerate() {
            let same = old_rows.len() == new_rows.len()
                && old_rows
                    .iter()
                    .zip(new_rows)
                    .all(|(&a, &b)| cells.same(a, b));
            if same {
                self.compared += 1;
                self.same += 1;
                continue;
            }
            let json = |side: &Output<'_>, rows: &[usize]| -> Vec<Value> {
                rows.iter()
                    .map(|&row| Value::Object(crate::format::json::row_object(side.rows, row)))
                    .collect()
            };
            self.compare(&input(i as u32), json(old, old_rows), json(new, new_rows));
        }
    }

    /// Adds the comparison of two formatters' records for the same `inputs` rows: each as
    /// `{"key": …, "value": …}` (the key as text, or null; the value as JSON, or as text),
    /// so a changed Kafka key — where the record goes, what it replaces in a compacted
    /// topic — shows as much as a changed value.
    pub fn payloads(&mut self, inputs: u32, old: &Encoded, new: &Encoded) {
        let old_failed: BTreeSet<u32> = old.errors.iter().map(|e| e.index).collect();
        let new_failed: BTreeSet<u32> = new.errors.iter().map(|e| e.index).collect();
        let text = |bytes: &[u8]| Value::String(String::from_utf8_lossy(bytes).into_owned());
        let record = |encoded: &Encoded, failed: &BTreeSet<u32>, i: u32| -> Vec<Value> {
            if failed.contains(&i) {
                return Vec::new();
            }
            let payload = encoded.payloads.get(i as usize).unwrap_or_default();
            let key = match &encoded.keys {
                Some(keys) => match keys.get(i as usize).unwrap_or_default() {
                    [] => Value::Null,
                    key => text(key),
                },
                None => Value::Null,
            };
            let value = serde_json::from_slice(payload).unwrap_or_else(|_| text(payload));
            vec![serde_json::json!({ "key": key, "value": value })]
        };
        for i in 0..inputs {
            let old = record(old, &old_failed, i);
            let new = record(new, &new_failed, i);
            let input = format!("row {}", self.compared);
            self.compare_by(&input, old, new, differing_in_record);
        }
    }
}

/// The parts in which two formatted records differ: `key`, and `value.<field>` per field of
/// two object values (`value` for any other values that are not equal).
fn differing_in_record(old: &Value, new: &Value) -> Vec<String> {
    let mut fields = Vec::new();
    if old.get("key") != new.get("key") {
        fields.push("key".to_owned());
    }
    let (old, new) = (&old["value"], &new["value"]);
    match (old, new) {
        (Value::Object(_), Value::Object(_)) => fields.extend(
            differing_fields(old, new)
                .into_iter()
                .map(|field| format!("value.{field}")),
        ),
        _ if old != new => fields.push("value".to_owned()),
        _ => {}
    }
    fields
}

/// Each input's rows (their indices), in order.
fn per_input(inputs: u32, side: &Output<'_>) -> Vec<Vec<usize>> {
    let mut rows = vec![Vec::new(); inputs as usize];
    for (row, &origin) in side.origins.iter().enumerate().take(side.rows.len as usize) {
        if let Some(slot) = rows.get_mut(origin as usize) {
            slot.push(row);
        }
    }
    rows
}

/// Cell-by-cell equality of rows of two batches, columns matched by name (a column only
/// one side has must be null there). Without allocating: the shadow keeps up with the
/// live stage only if comparing is cheap.
struct Cells<'a> {
    old: &'a Batch,
    new: &'a Batch,
    /// Per old column, the new column of the same name.
    pairs: Vec<(usize, Option<usize>)>,
    /// New columns the old batch does not have.
    new_only: Vec<usize>,
}

impl<'a> Cells<'a> {
    fn of(old: &'a Batch, new: &'a Batch) -> Self {
        let pairs = old
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (i, new.columns.iter().position(|n| n.name == c.name)))
            .collect();
        let new_only = new
            .columns
            .iter()
            .enumerate()
            .filter(|(_, n)| !old.columns.iter().any(|c| c.name == n.name))
            .map(|(i, _)| i)
            .collect();
        Cells {
            old,
            new,
            pairs,
            new_only,
        }
    }

    /// Whether old row `a` and new row `b` hold the same values (false when unsure: the
    /// caller then compares them as JSON).
    fn same(&self, a: usize, b: usize) -> bool {
        let old = |i: usize| &self.old.columns[i];
        let new = |i: usize| &self.new.columns[i];
        self.pairs.iter().all(|&(o, n)| match n {
            Some(n) => same_cell(old(o), a, new(n), b),
            None => old(o).is_null(a),
        }) && self.new_only.iter().all(|&n| new(n).is_null(b))
    }
}

fn same_cell(a: &rivulet_rows::Column, i: usize, b: &rivulet_rows::Column, j: usize) -> bool {
    use rivulet_rows::Values;
    match (a.is_null(i), b.is_null(j)) {
        (true, true) => return true,
        (false, false) => {}
        _ => return false,
    }
    match (&a.values, &b.values) {
        (Values::Boolean(x), Values::Boolean(y)) => x.get(i) == y.get(j),
        (Values::Integer(x), Values::Integer(y)) => x.get(i) == y.get(j),
        (Values::Float(x), Values::Float(y)) => x.get(i) == y.get(j),
        (Values::Text(x), Values::Text(y))
        | (Values::Binary(x), Values::Binary(y))
        | (Values::Json(x), Values::Json(y)) => x.get(i) == y.get(j),
        _ => false,
    }
}

/// One key of a compared window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyDiff {
    pub key: Value,
    /// The live module's result (None: it has none for this key, or refused it).
    pub old: Option<Value>,
    /// The shadow's result.
    pub new: Option<Value>,
    /// The result's fields that differ (every field when one side has no result).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// One window as both modules finished it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowDiff {
    pub window_start: i64,
    pub window_end: i64,
    /// The window was open before the shadow started: the shadow saw only part of its rows.
    pub partial: bool,
    /// Keys whose results differ.
    pub differing: u64,
    /// Every key, differing or not.
    pub keys: Vec<KeyDiff>,
}

/// Per-window differences of an aggregate shadow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowsDiff {
    /// Windows compared (firings of the live module).
    pub compared: u64,
    /// Of those, the windows the shadow saw only part of.
    pub partial: u64,
    /// Windows (the shadow saw whole) with at least one differing key.
    pub differing: u64,
    /// Keys compared in whole windows, and those that differ.
    pub keys: u64,
    pub differing_keys: u64,
    /// Per result field: keys of whole windows in which it differs.
    pub fields: BTreeMap<String, u64>,
    /// The latest compared windows, oldest first.
    pub recent: VecDeque<WindowDiff>,
}

impl WindowsDiff {
    /// Adds a window: per key, the live result and the shadow's.
    pub fn window(
        &mut self,
        window_start: i64,
        window_end: i64,
        partial: bool,
        results: BTreeMap<String, (Value, Option<Value>, Option<Value>)>,
    ) {
        let mut keys = Vec::with_capacity(results.len());
        let mut differing = 0;
        for (_, (key, old, new)) in results {
            let fields = match (&old, &new) {
                (Some(old), Some(new)) => differing_fields(old, new),
                (Some(only), None) | (None, Some(only)) => match only {
                    Value::Object(map) => map.keys().cloned().collect(),
                    _ => vec!["payload".to_owned()],
                },
                (None, None) => Vec::new(),
            };
            if !fields.is_empty() {
                differing += 1;
                if !partial {
                    for field in &fields {
                        *self.fields.entry(field.clone()).or_default() += 1;
                    }
                }
            }
            keys.push(KeyDiff {
                key,
                old,
                new,
                fields,
            });
        }
        self.compared += 1;
        if partial {
            self.partial += 1;
        } else {
            self.keys += keys.len() as u64;
            self.differing_keys += differing;
            if differing > 0 {
                self.differing += 1;
            }
        }
        if self.recent.len() == RECENT_WINDOWS {
            self.recent.pop_front();
        }
        self.recent.push_back(WindowDiff {
            window_start,
            window_end,
            partial,
            differing,
            keys,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rivulet_rows::BatchBuilder;
    use serde_json::json;

    fn batch(rows: &[Value]) -> Batch {
        let mut builder = BatchBuilder::new();
        for row in rows {
            builder.push(row).unwrap();
        }
        builder.finish()
    }

    fn encoded(records: &[(&str, &str)], failed: &[u32]) -> Encoded {
        let (mut payloads, mut keys) = (rivulet_rows::Packed::new(), rivulet_rows::Packed::new());
        for (key, value) in records {
            keys.push(key.as_bytes());
            payloads.push(value.as_bytes());
        }
        Encoded {
            payloads,
            keys: Some(keys),
            errors: failed
                .iter()
                .map(|&index| RecordError {
                    index,
                    message: "refused".to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn formatted_records_differ_by_key_and_by_value_field_and_a_refused_one_is_missing() {
        let old = encoded(
            &[
                ("a", r#"{"id":1,"status":"a"}"#),
                ("b", r#"{"id":2,"status":"b"}"#),
                ("c", "plain text"),
                ("d", r#"{"id":4}"#),
                ("e", r#"{"id":5}"#),
            ],
            &[],
        );
        let new = encoded(
            &[
                ("A", r#"{"id":1,"status":"a"}"#),
                ("b", r#"{"id":2,"status":"b","flag":true}"#),
                ("c", "other text"),
                ("", ""),
                ("e", r#"{"id":5}"#),
            ],
            &[3],
        );
        let mut diff = RecordDiff::default();
        diff.payloads(5, &old, &new);
        assert_eq!(
            (diff.compared, diff.same, diff.changed, diff.only_old),
            (5, 1, 3, 1)
        );
        assert_eq!(
            diff.fields,
            BTreeMap::from([
                ("key".to_owned(), 1),
                ("value".to_owned(), 1),
                ("value.flag".to_owned(), 1)
            ])
        );
        let first = &diff.examples[0];
        assert_eq!(
            (first.old.clone(), first.new.clone()),
            (
                Some(json!({"key": "a", "value": {"id": 1, "status": "a"}})),
                Some(json!({"key": "A", "value": {"id": 1, "status": "a"}}))
            )
        );
        assert_eq!(diff.examples[3].kind, "only_old");
    }

    #[test]
    fn changed_rows_count_per_field_and_missing_rows_per_side() {
        let old = batch(&[
            json!({"id": 1, "status": "A"}),
            json!({"id": 2, "status": "B"}),
            json!({"id": 4, "status": "D"}),
        ]);
        let new = batch(&[
            json!({"id": 1, "status": "a"}),
            json!({"id": 2, "status": "B"}),
            json!({"id": 3, "status": "C"}),
        ]);
        let mut diff = RecordDiff::default();
        diff.rows(
            4,
            &Output {
                rows: &old,
                origins: &[0, 1, 3],
                errors: &[],
            },
            &Output {
                rows: &new,
                origins: &[0, 1, 2],
                errors: &[],
            },
            |i| format!("#{i}"),
        );
        assert_eq!(
            (
                diff.compared,
                diff.same,
                diff.changed,
                diff.only_old,
                diff.only_new
            ),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(diff.fields, BTreeMap::from([("status".to_owned(), 1)]));
        let kinds: Vec<(&str, &str)> = diff
            .examples
            .iter()
            .map(|e| (e.input.as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [("#0", "changed"), ("#2", "only_new"), ("#3", "only_old")]
        );
        assert_eq!(diff.examples[0].fields, ["status"]);
    }

    #[test]
    fn a_window_key_missing_on_one_side_differs_in_every_field_and_partial_windows_stay_apart() {
        let mut diff = WindowsDiff::default();
        let results = BTreeMap::from([
            (
                "a".to_owned(),
                (
                    json!("a"),
                    Some(json!({"count": 2})),
                    Some(json!({"count": 4})),
                ),
            ),
            (
                "b".to_owned(),
                (json!("b"), Some(json!({"count": 1})), None),
            ),
            (
                "c".to_owned(),
                (
                    json!("c"),
                    Some(json!({"count": 1})),
                    Some(json!({"count": 1})),
                ),
            ),
        ]);
        diff.window(0, 10, false, results.clone());
        diff.window(10, 20, true, results);
        assert_eq!((diff.compared, diff.partial, diff.differing), (2, 1, 1));
        assert_eq!((diff.keys, diff.differing_keys), (3, 2));
        assert_eq!(diff.fields, BTreeMap::from([("count".to_owned(), 2)]));
        assert_eq!(diff.recent[0].keys[1].fields, ["count"]);
        assert!(diff.recent[1].partial);
    }
}
