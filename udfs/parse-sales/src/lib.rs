//! The second seed's job, step 1: parse sales `{"store_id": "store-1", "sale_amount": 12.5, "sale_ts": ...}`
//! where `sale_ts` is epoch milliseconds or ISO-8601 text. Malformed sales become errors.
//!
//! Try it: `target/release/rivulet udf test target/wasm32-wasip2/wasm/udf_parse_sales.wasm --input samples/sales.jsonl`;
//! in a job it is `pipelines/sales-per-store.toml`.

use rivulet_sdk::time::parse_iso8601;
use rivulet_sdk::{Error, RawRecord};
use serde::{Deserialize, Serialize};

/// A well-formed sale; `sale_ts` is normalised to epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sale {
    pub store_id: String,
    pub sale_amount: f64,
    pub sale_ts: i64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum When {
    Millis(i64),
    Text(String),
}

#[derive(Deserialize)]
struct Wire {
    store_id: StoreId,
    sale_amount: f64,
    sale_ts: When,
}

/// Store ids arrive as text or as numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoreId {
    Text(String),
    Number(i64),
}

/// Parses one sale.
#[rivulet_sdk::parse]
pub fn parse(rec: RawRecord) -> Result<Sale, Error> {
    let wire: Wire = serde_json::from_slice(rec.payload)?;
    let store_id = match wire.store_id {
        StoreId::Text(text) if !text.trim().is_empty() => text,
        StoreId::Text(_) => return Err(Error::new("field `store_id` is empty")),
        StoreId::Number(n) => n.to_string(),
    };
    if !wire.sale_amount.is_finite() {
        return Err(Error::new("field `sale_amount` is not a finite number"));
    }
    let sale_ts = match wire.sale_ts {
        When::Millis(ms) => ms,
        When::Text(text) => parse_iso8601(&text)?,
    };
    Ok(Sale {
        store_id,
        sale_amount: wire.sale_amount,
        sale_ts,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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
    fn accepts_millis_or_iso_times_and_numeric_store_ids() {
        let a = parse(record(
            br#"{"store_id":"store-1","sale_amount":12.5,"sale_ts":1000}"#,
        ))
        .unwrap();
        let b = parse(record(
            br#"{"store_id":7,"sale_amount":1,"sale_ts":"1970-01-01T00:00:01Z"}"#,
        ))
        .unwrap();
        assert_eq!(
            (a.sale_ts, b.sale_ts, b.store_id.as_str()),
            (1000, 1000, "7")
        );
    }

    #[test]
    fn rejects_sales_without_a_store() {
        assert!(parse(record(br#"{"store_id":" ","sale_amount":1,"sale_ts":0}"#)).is_err());
        assert!(parse(record(br#"{"sale_amount":1,"sale_ts":0}"#)).is_err());
    }
}
