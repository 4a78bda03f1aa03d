//! The built-in `json` parse step.

use super::ParseStage;
use crate::udf::UdfError;
use rivulet_rows::{BatchBuilder, RawBatch, RecordError, RowsOut};

/// The built-in `json` parse step: each payload is one JSON object, which becomes a row.
///
/// Objects go straight into columns ([`BatchBuilder::push_json_object`]); a record that
/// path refuses (malformed JSON, a repeated field, a value its column cannot take) is
/// parsed again the reference way, through a `serde_json` map, so its row or its error
/// message is exactly what that way gives.
#[derive(Debug, Default)]
pub struct JsonParse;

impl ParseStage for JsonParse {
    fn parse(&mut self, input: &RawBatch) -> Result<RowsOut, UdfError> {
        let mut builder = BatchBuilder::new();
        let mut origins = Vec::with_capacity(input.len as usize);
        let mut errors = Vec::new();
        // The payloads are validated as UTF-8 once, as a whole, not string by string.
        for (index, text) in (0u32..).zip(input.payloads.iter_text()) {
            let direct = match text {
                Ok(text) => builder.push_json_object_str(text),
                Err(bytes) => builder.push_json_object(bytes),
            };
            let pushed = match direct {
                Ok(()) => Ok(()),
                Err(_) => {
                    push_via_map(&mut builder, text.map_or_else(|bytes| bytes, str::as_bytes))
                }
            };
            match pushed {
                Ok(()) => origins.push(index),
                Err(message) => errors.push(RecordError { index, message }),
            }
        }
        Ok(RowsOut {
            rows: builder.finish(),
            origins,
            errors,
        })
    }
}

/// The reference way: the payload as a `serde_json` map, pushed as a row.
fn push_via_map(builder: &mut BatchBuilder, payload: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(payload)
        .map_err(|err| format!("not a JSON object: {err}"))
        .and_then(|row| builder.push(&row).map_err(|err| err.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    /// The stage before the direct path: every payload through a map.
    fn reference(input: &RawBatch) -> RowsOut {
        let mut builder = BatchBuilder::new();
        let (mut origins, mut errors) = (Vec::new(), Vec::new());
        for (index, record) in (0u32..).zip(input.iter()) {
            match push_via_map(&mut builder, record.payload) {
                Ok(()) => origins.push(index),
                Err(message) => errors.push(RecordError { index, message }),
            }
        }
        RowsOut {
            rows: builder.finish(),
            origins,
            errors,
        }
    }

    fn raw(payloads: &[&[u8]]) -> RawBatch {
        let mut raw = RawBatch::new();
        for (i, p) in (0i64..).zip(payloads) {
            raw.push(None, p, 0, 0, i, &[]);
        }
        raw
    }

    #[test]
    fn equals_the_map_path_on_awkward_records() {
        let payloads: &[&[u8]] = &[
            br#"{"a":1,"b":"x","c":[1,{"d":2.50}],"e":{"z":1,"a":[]},"f":null}"#,
            br#"{"b":"y","a":2.5}"#,
            br#"{"a":"text now"}"#,
            br#"{"a":1,"a":2}"#,
            br#"{"a":18446744073709551615}"#,
            br#"{"esc\u0061ped":"v\n","b":true}"#,
            br#"{"b":"#,
            b"[1,2]",
            b"\"s\"",
            b"null",
            br#"{"a":3} trailing"#,
            b"",
            b"  {\"g\" : 1e3 , \"h\":-0, \"i\":-7}  ",
            b"{\"t\":\"\xff\"}",
            br#"{"c":"not json column"}"#,
            br#"{"n":null,"n2":null}"#,
            br#"{"n":5}"#,
        ];
        let input = raw(payloads);
        let ours = JsonParse.parse(&input).unwrap();
        assert_eq!(ours, reference(&input));
        assert!(ours.errors.len() >= 5, "{:?}", ours.errors);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn equals_the_map_path(rows in proptest::collection::vec(
            proptest::collection::vec(
                ("[a-d]", prop_oneof![
                    Just("1".to_owned()), Just("-2".to_owned()), Just("2.5".to_owned()),
                    Just("\"s\"".to_owned()), Just("null".to_owned()), Just("true".to_owned()),
                    Just("[1,\"x\"]".to_owned()), Just("{\"k\":{}}".to_owned()), Just("{".to_owned()),
                ]),
                0..5,
            ),
            0..30,
        )) {
            let payloads: Vec<Vec<u8>> = rows
                .iter()
                .map(|fields| {
                    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", body.join(",")).into_bytes()
                })
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let input = raw(&refs);
            prop_assert_eq!(JsonParse.parse(&input).unwrap(), reference(&input));
        }
    }
}
