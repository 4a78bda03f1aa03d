//! A map step: keep orders of at least 50.00 and tag each with a price band.
//! Shows filter (`Option`) and map in one function.
//!
//! Try it: `target/release/rivulet udf test target/wasm32-wasip2/wasm/udf_high_value.wasm --input samples/order-rows.jsonl`.

use serde::{Deserialize, Serialize};

/// The order fields this step reads and passes on.
#[derive(Debug, Deserialize, Serialize)]
pub struct Order {
    pub customer: String,
    pub status: String,
    pub region: String,
    pub amount: f64,
    #[serde(rename = "tsMillis")]
    pub ts_millis: i64,
}

/// An order with its band.
#[derive(Debug, Serialize)]
pub struct Banded {
    #[serde(flatten)]
    pub order: Order,
    pub band: &'static str,
}

/// Orders below 50.00 are dropped.
#[rivulet_sdk::map]
pub fn high_value(order: Order) -> Option<Banded> {
    let band = match order.amount {
        a if a >= 500.0 => "premium",
        a if a >= 50.0 => "high",
        _ => return None,
    };
    Some(Banded { order, band })
}
