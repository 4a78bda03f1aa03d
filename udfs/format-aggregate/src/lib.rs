//! Workshop step 4: format window results for the `flink-aggregates` topic, exactly as the
//! Flink SQL job's sink does: `{"window_start":"2024-05-23T12:34:30Z","window_end":"2024-05-23T12:35:00Z","status":"SHIPPED","order_count":3}`.
//!
//! Window bounds arrive as epoch milliseconds (or already as ISO-8601 text) and leave as
//! ISO-8601 UTC text; the Kafka key is the status.
//!
//! Try it: `target/release/rivulet udf test target/wasm32-wasip2/wasm/udf_format_aggregate.wasm --input samples/window-results.jsonl`;
//! in a job it is `pipelines/step4-aggregates-to-kafka.toml`.

use rivulet_sdk::time::{iso8601, parse_iso8601};
use rivulet_sdk::{Error, Payload};
use serde::{Deserialize, Serialize};

/// A window bound: epoch milliseconds or ISO-8601 text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Instant {
    Millis(i64),
    Text(String),
}

impl Instant {
    fn iso(&self) -> Result<String, Error> {
        match self {
            Instant::Millis(ms) => Ok(iso8601(*ms)),
            Instant::Text(text) => Ok(iso8601(parse_iso8601(text)?)),
        }
    }
}

/// A window result of step 3.
#[derive(Debug, Deserialize)]
pub struct StatusCount {
    pub window_start: Instant,
    pub window_end: Instant,
    pub status: String,
    pub order_count: u64,
}

#[derive(Serialize)]
struct Out<'a> {
    window_start: String,
    window_end: String,
    status: &'a str,
    order_count: u64,
}

/// The sink record of one window result.
#[rivulet_sdk::format]
pub fn format(row: StatusCount) -> Result<Payload, Error> {
    let out = Out {
        window_start: row.window_start.iso()?,
        window_end: row.window_end.iso()?,
        status: &row.status,
        order_count: row.order_count,
    };
    Ok(Payload::keyed(
        row.status.clone(),
        serde_json::to_vec(&out)?,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn formats_like_the_flink_sql_sink() {
        let p = format(StatusCount {
            window_start: Instant::Millis(1_716_467_670_000),
            window_end: Instant::Millis(1_716_467_700_000),
            status: "SHIPPED".into(),
            order_count: 3,
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(p.value).unwrap(),
            r#"{"window_start":"2024-05-23T12:34:30Z","window_end":"2024-05-23T12:35:00Z","status":"SHIPPED","order_count":3}"#
        );
        assert_eq!(p.key.unwrap(), b"SHIPPED");
    }

    #[test]
    fn rejects_a_bound_that_is_not_a_time() {
        let err = format(StatusCount {
            window_start: Instant::Text("soon".into()),
            window_end: Instant::Millis(0),
            status: "NEW".into(),
            order_count: 1,
        })
        .unwrap_err();
        assert!(err.to_string().contains("not an ISO-8601 timestamp"));
    }
}
