//! The shape of a stage's output, watched on every batch: once a module has been swapped
//! into a stage, each shape of its output that the stage never produced before (other
//! columns, or columns of other types, than what went downstream so far) is announced once
//! for the job — one WARN naming the stage and the difference from the shape before it, and
//! a count in the stage's status — whether it shows on the module's first batch or its
//! thousandth (a downstream step, a sink's consumers or a dashboard may depend on the
//! columns). Before the stage's first swap, the shapes its module produces are only learned.
//!
//! Each batch costs one fingerprint: a hash of its column names and types (not of its
//! records), compared with the previous batch's. Only a batch whose fingerprint differs is
//! looked at further.

use rivulet_rows::{Batch, Values};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// Column name → type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shape(BTreeMap<String, &'static str>);

fn type_of(values: &Values) -> &'static str {
    match values {
        Values::Boolean(_) => "boolean",
        Values::Integer(_) => "integer",
        Values::Float(_) => "float",
        Values::Text(_) => "text",
        Values::Binary(_) => "binary",
        Values::Json(_) => "json",
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_f64() => "float",
        serde_json::Value::Number(_) => "integer",
        serde_json::Value::String(_) => "text",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// One column's part of a fingerprint; a shape's is the sum of its columns' (whatever their
/// order).
fn column_print(name: &str, ty: &str) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    name.hash(&mut hasher);
    ty.hash(&mut hasher);
    hasher.finish()
}

/// The fingerprint of `rows`' shape, without building it: equal for equal shapes.
pub fn fingerprint(rows: &Batch) -> u64 {
    rows.columns.iter().fold(0u64, |print, c| {
        print.wrapping_add(column_print(&c.name, type_of(&c.values)))
    })
}

impl Shape {
    /// The columns of `rows`.
    pub fn of(rows: &Batch) -> Shape {
        Shape(
            rows.columns
                .iter()
                .map(|c| (c.name.clone(), type_of(&c.values)))
                .collect(),
        )
    }

    /// A formatter's record: the fields of a JSON object (their JSON types), else one
    /// column `payload` of text or binary.
    pub fn of_payload(payload: &[u8]) -> Shape {
        match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(serde_json::Value::Object(fields)) => Shape(
                fields
                    .iter()
                    .map(|(name, value)| (name.clone(), json_type(value)))
                    .collect(),
            ),
            _ => {
                let kind = match std::str::from_utf8(payload) {
                    Ok(_) => "text",
                    Err(_) => "binary",
                };
                Shape(BTreeMap::from([("payload".to_owned(), kind)]))
            }
        }
    }

    /// Its fingerprint (the same as [`fingerprint`] of the rows it was taken from).
    pub fn fingerprint(&self) -> u64 {
        self.0.iter().fold(0u64, |print, (name, ty)| {
            print.wrapping_add(column_print(name, ty))
        })
    }

    /// How `after` differs from `self`: columns added, removed and retyped; `None` if alike.
    pub fn diff(&self, after: &Shape) -> Option<String> {
        let added: Vec<String> = after
            .0
            .iter()
            .filter(|(name, _)| !self.0.contains_key(*name))
            .map(|(name, ty)| format!("{name} ({ty})"))
            .collect();
        let removed: Vec<String> = self
            .0
            .iter()
            .filter(|(name, _)| !after.0.contains_key(*name))
            .map(|(name, ty)| format!("{name} ({ty})"))
            .collect();
        let retyped: Vec<String> = self
            .0
            .iter()
            .filter_map(|(name, ty)| {
                let now = after.0.get(name)?;
                (now != ty).then(|| format!("{name} {ty} → {now}"))
            })
            .collect();
        let parts: Vec<String> = [("added", added), ("removed", removed), ("retyped", retyped)]
            .into_iter()
            .filter(|(_, list)| !list.is_empty())
            .map(|(what, list)| format!("{what} {}", list.join(", ")))
            .collect();
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// How many shapes a stage remembers (a module whose every batch has a shape of its own is
/// announced this many times at most).
pub const SHAPES_KEPT: usize = 64;

/// The shapes a stage's output has had, job-wide (kept in its status, so that the tasks
/// announce each one once).
#[derive(Debug, Clone, Default)]
pub struct ShapeHistory {
    seen: Vec<u64>,
    /// The latest new shape: what the next new one is compared with.
    latest: Option<Shape>,
}

impl ShapeHistory {
    /// The stage produced `shape` (fingerprint `print`): if it had never produced it, it is
    /// remembered and, when `announce`, its difference from the shape before it returned.
    pub fn learn(&mut self, print: u64, shape: &Shape, announce: bool) -> Option<String> {
        if self.seen.contains(&print) || self.seen.len() >= SHAPES_KEPT {
            return None;
        }
        self.seen.push(print);
        let before = self.latest.replace(shape.clone());
        match (announce, before) {
            (true, Some(before)) => before.diff(shape),
            (true, None) => Shape::default().diff(shape),
            (false, _) => None,
        }
    }
}

/// One stage's output shape in one task: the fingerprint of its latest batch, the ones it
/// knows the job has seen, and whether a module was swapped into the stage.
#[derive(Debug, Default)]
pub struct ShapeWatch {
    current: Option<u64>,
    known: Vec<u64>,
    swapped: bool,
}

impl ShapeWatch {
    /// Swap `_swap` installed a new module: new shapes are announced from now on.
    pub fn swapped(&mut self, _swap: u64) {
        self.swapped = true;
    }

    /// The stage put out a batch of fingerprint `print`: unless it is the previous batch's
    /// (or one this task saw before), `shape()` is taken and handed to the job's history of
    /// the stage's shapes, which announces it if it is new and a module was swapped in.
    pub fn observe(
        &mut self,
        print: u64,
        shape: impl FnOnce() -> Shape,
        status: Option<&crate::status::JobStatus>,
        stage: &str,
    ) {
        if self.current == Some(print) {
            return;
        }
        self.current = Some(print);
        if self.known.contains(&print) || self.known.len() >= SHAPES_KEPT {
            return;
        }
        self.known.push(print);
        if let Some(status) = status
            && let Some(difference) = status.learn_shape(stage, print, &shape(), self.swapped)
        {
            tracing::warn!(
                stage,
                "stage `{stage}` (its module was swapped) produces output of a shape it never produced before: {difference}"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rivulet_rows::BatchBuilder;

    fn rows(json: serde_json::Value) -> Batch {
        let mut builder = BatchBuilder::new();
        builder.push(json.as_object().unwrap()).unwrap();
        builder.finish()
    }

    #[test]
    fn diff_names_added_removed_and_retyped_columns() {
        let before = Shape::of(&rows(serde_json::json!({"id": 1, "name": "a", "v": 2})));
        let after = Shape::of(&rows(serde_json::json!({"id": 1, "v": "2", "extra": true})));
        assert_eq!(
            before.diff(&after).as_deref(),
            Some("added extra (boolean); removed name (text); retyped v integer → text")
        );
        assert_eq!(before.diff(&before), None);
    }

    #[test]
    fn a_formatted_record_has_the_shape_of_its_json_fields_or_of_its_bytes() {
        let json = Shape::of_payload(br#"{"status":"NEW","order_count":3}"#);
        let text = Shape::of_payload(b"NEW,3");
        assert_eq!(
            json.diff(&text).as_deref(),
            Some("added payload (text); removed order_count (integer), status (text)")
        );
        assert_eq!(
            text.diff(&Shape::of_payload(&[0xff, 0x00])).as_deref(),
            Some("retyped payload text → binary")
        );
    }

    #[test]
    fn the_fingerprint_tells_shapes_apart_whatever_the_column_order_or_values() {
        let a = rows(serde_json::json!({"x": 1, "y": "a"}));
        let same = rows(serde_json::json!({"y": "zzz", "x": 99}));
        let retyped = rows(serde_json::json!({"x": 1.5, "y": "a"}));
        let renamed = rows(serde_json::json!({"x": 1, "z": "a"}));
        assert_eq!(fingerprint(&a), fingerprint(&same));
        assert_eq!(fingerprint(&a), Shape::of(&a).fingerprint());
        assert_ne!(fingerprint(&a), fingerprint(&retyped));
        assert_ne!(fingerprint(&a), fingerprint(&renamed));
    }

    #[test]
    fn each_new_shape_is_announced_once_and_only_after_a_swap() {
        let a = Shape::of(&rows(serde_json::json!({"x": 1})));
        let b = Shape::of(&rows(serde_json::json!({"x": 1.5})));
        let c = Shape::of(&rows(serde_json::json!({"x": 1, "note": "n"})));
        let mut history = ShapeHistory::default();
        assert_eq!(history.learn(a.fingerprint(), &a, false), None, "learned");
        assert_eq!(
            history.learn(b.fingerprint(), &b, false),
            None,
            "before a swap: learned, not announced"
        );
        assert_eq!(history.learn(a.fingerprint(), &a, true), None, "seen");
        assert_eq!(
            history.learn(c.fingerprint(), &c, true).as_deref(),
            Some("added note (text); retyped x float → integer"),
            "compared with the latest new shape"
        );
        assert_eq!(history.learn(c.fingerprint(), &c, true), None, "once");
        let mut fresh = ShapeHistory::default();
        assert_eq!(
            fresh.learn(a.fingerprint(), &a, true).as_deref(),
            Some("added x (integer)"),
            "nothing before it"
        );
    }
}
