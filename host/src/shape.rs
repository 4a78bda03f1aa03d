//! The shape of a stage's output, watched across swaps: when a swapped-in module's first
//! output has other columns, or columns of other types, than the previous module's output,
//! the job logs one WARN naming the stage and the difference and counts it in the stage's
//! status (a downstream step, a sink's consumers or a dashboard may depend on the columns).
//!
//! Watching costs nothing per batch once the shape is known: a stage looks at its output
//! only for its first non-empty batch, and for the first one after a swap.

use rivulet_rows::{Batch, Values};
use std::collections::BTreeMap;

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

/// One stage's output shape across swaps.
#[derive(Debug, Default)]
pub enum ShapeWatch {
    /// No output seen yet.
    #[default]
    Unknown,
    Known(Shape),
    /// Swap `swap` installed a module that has produced nothing yet.
    Swapped {
        before: Option<Shape>,
        swap: u64,
    },
}

/// A swapped-in module's output differs from the previous one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeChange {
    /// The swap that installed the module (each task reports it; the job logs it once).
    pub swap: u64,
    pub difference: String,
}

impl ShapeWatch {
    /// Swap `swap` installed a new module.
    pub fn swapped(&mut self, swap: u64) {
        let before = match std::mem::take(self) {
            ShapeWatch::Known(shape) => Some(shape),
            ShapeWatch::Swapped { before, .. } => before,
            ShapeWatch::Unknown => None,
        };
        *self = ShapeWatch::Swapped { before, swap };
    }

    /// Whether the next output should be looked at (once the shape is known, only after a
    /// swap).
    pub fn wants(&self) -> bool {
        !matches!(self, ShapeWatch::Known(_))
    }

    /// The stage produced output of `shape`: the change a swap made, if any.
    pub fn observe(&mut self, shape: Shape) -> Option<ShapeChange> {
        let change = match &*self {
            ShapeWatch::Swapped {
                before: Some(before),
                swap,
            } => before.diff(&shape).map(|difference| ShapeChange {
                swap: *swap,
                difference,
            }),
            _ => None,
        };
        *self = ShapeWatch::Known(shape);
        change
    }
}

/// Logs a swap's change of output once for the job (every task sees it) and counts it in
/// the stage's status.
pub fn announce(status: Option<&crate::status::JobStatus>, stage: &str, change: &ShapeChange) {
    let Some(status) = status else {
        return;
    };
    if status.shape_changed(stage, change.swap, &change.difference) {
        tracing::warn!(
            stage,
            "the module swapped into stage `{stage}` produces output of another shape than the module before it: {}",
            change.difference
        );
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
    fn only_the_first_output_after_a_swap_is_compared_with_the_output_before_it() {
        let a = Shape::of(&rows(serde_json::json!({"x": 1})));
        let b = Shape::of(&rows(serde_json::json!({"x": 1.5})));
        let mut watch = ShapeWatch::default();
        assert!(watch.wants());
        assert_eq!(
            watch.observe(a.clone()),
            None,
            "the first output sets the shape"
        );
        assert!(!watch.wants(), "a known shape is not looked at again");
        watch.swapped(7);
        assert!(watch.wants());
        assert_eq!(
            watch.observe(b.clone()),
            Some(ShapeChange {
                swap: 7,
                difference: "retyped x integer → float".to_owned()
            })
        );
        watch.swapped(8);
        assert_eq!(watch.observe(b), None, "the same shape again: no change");
        let mut fresh = ShapeWatch::default();
        fresh.swapped(1);
        assert_eq!(fresh.observe(a), None, "nothing to compare with");
    }
}
