//! Workshop step 2: print each order as a one-line summary (the `print()` of the Flink job).
//!
//! Input rows are parsed orders (see `udf-parse-orders`); output is text like
//! `2024-05-23T12:34:56Z customer-042 SHIPPED eu-west 88.40`.
//!
//! Try it on parsed orders: `target/release/rivulet udf test target/wasm32-wasip2/wasm/udf_order_summary.wasm --input samples/order-rows.jsonl`
//! (after `just udfs build`); in a job it is `pipelines/step2-order-summary.toml`.

use serde::Deserialize;

/// The order fields the summary shows.
#[derive(Debug, Deserialize)]
pub struct Order<'a> {
    pub customer: &'a str,
    pub status: &'a str,
    pub region: &'a str,
    pub amount: f64,
    pub ts: &'a str,
}

/// One line per order.
#[rivulet_sdk::format]
pub fn format(order: Order<'_>) -> String {
    format!(
        "{} {} {} {} {:.2}",
        order.ts, order.customer, order.status, order.region, order.amount
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_an_order_on_one_line() {
        let line = format(Order {
            customer: "customer-042",
            status: "SHIPPED",
            region: "eu-west",
            amount: 88.4,
            ts: "2024-05-23T12:34:56Z",
        });
        assert_eq!(
            line,
            "2024-05-23T12:34:56Z customer-042 SHIPPED eu-west 88.40"
        );
    }
}
