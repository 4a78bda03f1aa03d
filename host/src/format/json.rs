//! Result rows as JSON objects: the non-null fields of a row, in column order, with DECIMAL
//! results (carried as text, see [`crate::decimal`]) written as plain JSON numbers, as
//! Flink's JSON format writes DECIMAL (`12.30`, never `"12.30"` or `1.23E+1`).

use rivulet_rows::Batch;
use serde_json::Value;

/// Row `i` as a JSON object of its non-null fields. A null is an absent field (the SDK reads
/// rows the same way), so a row shows exactly its own fields, never its batch-mates' columns.
pub fn row_object(rows: &Batch, i: usize) -> serde_json::Map<String, Value> {
    rows.row_json(i)
        .into_iter()
        .filter(|(name, _)| rows.column(name).is_none_or(|c| !c.is_null(i)))
        .collect()
}

/// Whether `text` is a plain decimal number (`-12.30`), safe to write unquoted.
fn plain_decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// The JSON text of `object`, the fields named in `skip` left out and the text of those in
/// `numbers` written as numbers (when it is a plain decimal).
pub fn object_text(
    object: &serde_json::Map<String, Value>,
    skip: &[String],
    numbers: &[String],
) -> String {
    let mut out = String::from("{");
    for (name, value) in object {
        if skip.contains(name) {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&Value::String(name.clone()).to_string());
        out.push(':');
        match value {
            Value::String(text) if numbers.contains(name) && plain_decimal(text) => {
                out.push_str(text);
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out.push('}');
    out
}

/// Row `i` of `rows` as JSON text (see [`object_text`]).
pub fn row_text(rows: &Batch, i: usize, skip: &[String], numbers: &[String]) -> String {
    object_text(&row_object(rows, i), skip, numbers)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_are_numbers_and_skipped_fields_are_left_out() {
        let object = json!({"store_id": "s\"1", "total": "1000.10", "note": "1.5", "odd": "1e5"});
        let Value::Object(object) = object else {
            unreachable!()
        };
        let numbers = vec!["total".to_owned(), "odd".to_owned()];
        assert_eq!(
            object_text(&object, &[], &numbers),
            r#"{"store_id":"s\"1","total":1000.10,"note":"1.5","odd":"1e5"}"#
        );
        assert_eq!(
            object_text(&object, &["store_id".to_owned()], &numbers),
            r#"{"total":1000.10,"note":"1.5","odd":"1e5"}"#
        );
        assert!(
            plain_decimal("-0.5")
                && plain_decimal("12")
                && !plain_decimal("1.")
                && !plain_decimal("-")
        );
    }
}
