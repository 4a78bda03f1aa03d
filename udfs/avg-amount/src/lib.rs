//! Average order amount per key (status) and window.
//!
//! Produces `{"window_start": ms, "window_end": ms, "status": "SHIPPED", "avg_amount": 42.5, "order_count": 2}`.
//!
//! Try it: `target/release/rivulet udf test target/wasm32-wasip2/wasm/udf_avg_amount.wasm --input samples/order-rows.jsonl --key status`.

use rivulet_sdk::{Aggregate, Window};
use serde::{Deserialize, Serialize};

/// The field the average reads.
#[derive(Debug, Deserialize)]
pub struct Order {
    pub amount: f64,
}

/// Running sum and count.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SumCount {
    pub sum: f64,
    pub count: u64,
}

/// One window's average.
#[derive(Debug, Serialize)]
pub struct AvgAmount {
    pub window_start: i64,
    pub window_end: i64,
    pub status: String,
    pub avg_amount: f64,
    pub order_count: u64,
}

/// Averages `amount` per key and window.
pub struct AvgAmountByStatus;

#[rivulet_sdk::aggregate]
impl Aggregate for AvgAmountByStatus {
    type Input = Order;
    type Acc = SumCount;
    type Output = AvgAmount;

    fn create() -> SumCount {
        SumCount::default()
    }

    fn add(acc: &mut SumCount, order: Order) {
        acc.sum += order.amount;
        acc.count += 1;
    }

    fn merge(a: SumCount, b: SumCount) -> SumCount {
        SumCount {
            sum: a.sum + b.sum,
            count: a.count + b.count,
        }
    }

    fn finish(acc: SumCount, window: &Window) -> AvgAmount {
        let avg = if acc.count == 0 {
            0.0
        } else {
            acc.sum / acc.count as f64
        };
        AvgAmount {
            window_start: window.start_ms,
            window_end: window.end_ms,
            status: window.key.to_string(),
            avg_amount: (avg * 100.0).round() / 100.0,
            order_count: acc.count,
        }
    }
}
