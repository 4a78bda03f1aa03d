//! Workshop step 1: parse the JSON orders of `partitioned-topic` and drop malformed ones.
//!
//! Input, one Kafka record per order:
//! `{"customer":"customer-042","status":"SHIPPED","region":"eu-west","amount":88.40,"ts":"2024-05-23T12:34:56Z","tsMillis":1716467696000}`.
//! A record that is not such an order becomes a per-record error naming why (the pipeline
//! counts it and sends it to the dead-letter topic). Build and try it:
//!
//! ```text
//! just udfs && rivulet udf test target/wasm32-wasip2/wasm/udf_parse_orders.wasm --input samples/orders.jsonl
//! ```

mod ts;

use rivulet_sdk::time::parse_iso8601;
use rivulet_sdk::{Error, RawRecord};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Orders larger than this are rejected instead of parsed: real ones are ~150 bytes.
pub const MAX_ORDER_BYTES: usize = 64 * 1024;

/// A well-formed order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order<'a> {
    /// An optional coupon code; newer producers add it, older orders have none (then the
    /// field is left out of the row, and the column is null for that order).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub customer: Cow<'a, str>,
    #[serde(borrow)]
    pub status: Cow<'a, str>,
    #[serde(borrow)]
    pub region: Cow<'a, str>,
    pub amount: f64,
    /// Event time as ISO-8601 text.
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
    /// Event time in milliseconds since the Unix epoch, as sent (derived from `ts` when
    /// absent). It must agree with `ts` at `ts`'s precision: `"…:56Z"` with any millisecond
    /// of that second.
    #[serde(rename = "tsMillis")]
    pub ts_millis: i64,
}

/// The order as it arrives; text is borrowed from the payload unless it has escapes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow, default)]
    coupon: Option<Cow<'a, str>>,
    #[serde(borrow)]
    customer: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    region: Cow<'a, str>,
    amount: f64,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(rename = "tsMillis")]
    ts_millis: Option<i64>,
}

fn required(field: &str, value: &str) -> Result<(), Error> {
    // A value that starts with a visible ASCII character is not blank: no need to trim.
    if value.as_bytes().first().is_some_and(u8::is_ascii_graphic) {
        return Ok(());
    }
    if value.trim().is_empty() {
        Err(Error::new(format!("field `{field}` is empty")))
    } else {
        Ok(())
    }
}

/// Parses one order; `Err` names what is wrong with it.
#[rivulet_sdk::parse]
pub fn parse(rec: RawRecord<'_>) -> Result<Order<'_>, Error> {
    if rec.payload.len() > MAX_ORDER_BYTES {
        return Err(Error::new(format!(
            "order of {} bytes exceeds the {MAX_ORDER_BYTES}-byte limit",
            rec.payload.len()
        )));
    }
    if rec.payload.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::new("empty payload"));
    }
    // One UTF-8 check of the whole payload, so serde_json does not check every string again
    // (invalid UTF-8 takes the slice parser, for its usual error).
    let wire: Wire<'_> = match std::str::from_utf8(rec.payload) {
        Ok(text) => serde_json::from_str(text)?,
        Err(_) => serde_json::from_slice(rec.payload)?,
    };
    required("customer", &wire.customer)?;
    required("status", &wire.status)?;
    required("region", &wire.region)?;
    if !wire.amount.is_finite() || wire.amount < 0.0 {
        return Err(Error::new(format!(
            "field `amount` must be a non-negative number, got {}",
            wire.amount
        )));
    }
    let ts_millis = match wire.ts_millis {
        Some(millis) => {
            ts::check_agreement(&wire.ts, millis)?;
            millis
        }
        None => parse_iso8601(&wire.ts)?,
    };
    Ok(Order {
        coupon: wire.coupon,
        customer: wire.customer,
        status: wire.status,
        region: wire.region,
        amount: wire.amount,
        ts: wire.ts,
        ts_millis,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn record(payload: &[u8]) -> RawRecord<'_> {
        RawRecord {
            key: None,
            payload,
            timestamp: 0,
            partition: 0,
            offset: 0,
            headers: Vec::new(),
        }
    }

    #[test]
    fn parses_the_workshop_order() {
        let order = parse(record(br#"{"customer":"customer-042","status":"SHIPPED","region":"eu-west","amount":88.40,"ts":"2024-05-23T12:34:56Z","tsMillis":1716467696000}"#)).unwrap();
        assert_eq!(order.status, "SHIPPED");
        assert_eq!(order.ts_millis, 1_716_467_696_000);
    }

    #[test]
    fn keeps_precise_millis_of_a_whole_second_ts() {
        let order = parse(record(br#"{"customer":"c","status":"NEW","region":"r","amount":1,"ts":"2024-05-23T12:34:56Z","tsMillis":1716467696789}"#)).unwrap();
        assert_eq!(order.ts, "2024-05-23T12:34:56Z");
        assert_eq!(order.ts_millis, 1_716_467_696_789);
    }

    #[test]
    fn keeps_an_optional_coupon_and_leaves_it_out_when_absent() {
        let with = parse(record(br#"{"coupon":"SPRING","customer":"c","status":"NEW","region":"r","amount":1,"ts":"1970-01-01T00:00:01Z"}"#)).unwrap();
        assert_eq!(with.coupon.as_deref(), Some("SPRING"));
        let without = parse(record(br#"{"customer":"c","status":"NEW","region":"r","amount":1,"ts":"1970-01-01T00:00:01Z"}"#)).unwrap();
        assert_eq!(without.coupon, None);
        let row = serde_json::to_value(&without).unwrap();
        assert!(row.get("coupon").is_none(), "{row}");
    }

    #[test]
    fn derives_millis_from_ts_when_absent() {
        let order = parse(record(br#"{"customer":"c","status":"NEW","region":"r","amount":1,"ts":"1970-01-01T00:00:01Z"}"#)).unwrap();
        assert_eq!(order.ts_millis, 1000);
    }

    #[test]
    fn rejects_malformed_orders_with_a_reason() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "invalid JSON"),
            (b"", "empty payload"),
            (br#"{"customer":"c","status":"","region":"r","amount":1,"ts":"1970-01-01T00:00:01Z"}"#, "`status` is empty"),
            (br#"{"customer":"c","status":"NEW","region":"r","amount":"1","ts":"1970-01-01T00:00:01Z"}"#, "invalid type"),
            (br#"{"customer":"c","status":"NEW","region":"r","amount":-1,"ts":"1970-01-01T00:00:01Z"}"#, "non-negative"),
            (br#"{"customer":"c","status":"NEW","region":"r","amount":1,"ts":"1970-01-01T00:00:01Z","tsMillis":5}"#, "disagree"),
        ];
        for (payload, reason) in cases {
            let err = parse(record(payload)).unwrap_err().to_string();
            assert!(err.contains(reason), "{err:?} should contain {reason:?}");
        }
    }

    #[test]
    fn batch_keeps_good_rows_and_reports_bad_ones_by_index() {
        let mut batch = rivulet_sdk::__private::RawBatch::default();
        batch.push(None, br#"{"customer":"c","status":"NEW","region":"r","amount":1,"ts":"1970-01-01T00:00:01Z"}"#, 0, 0, 0, &[]);
        batch.push(None, b"{", 0, 0, 1, &[]);
        let out = __rivulet_parse_batch(&batch);
        assert_eq!(out.rows.len, 1);
        assert_eq!(out.origins, vec![0]);
        assert_eq!(out.errors.len(), 1);
        assert_eq!(out.errors[0].index, 1);
    }
}
