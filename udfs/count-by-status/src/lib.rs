//! Workshop step 3: count orders per status in tumbling windows.
//!
//! The pipeline keys rows by `status`; this aggregate counts them and, when a window closes,
//! produces `{"window_start": ms, "window_end": ms, "status": "SHIPPED", "order_count": 3}`.
//!
//! Try it: `target/release/rivulet udf test target/wasm32-wasip2/wasm/udf_count_by_status.wasm --input samples/order-rows.jsonl --key status`;
//! in a job it is `pipelines/step4-aggregates-to-kafka.toml`.

use rivulet_sdk::{Aggregate, Window};
use serde::{Deserialize, Serialize};

/// Rows are counted whatever their fields.
#[derive(Debug, Deserialize)]
pub struct AnyRow {}

/// One window's count.
#[derive(Debug, PartialEq, Serialize)]
pub struct StatusCount {
    pub window_start: i64,
    pub window_end: i64,
    pub status: String,
    pub order_count: u64,
}

/// Counts rows per key and window.
pub struct CountByStatus;

#[rivulet_sdk::aggregate]
impl Aggregate for CountByStatus {
    type Input = AnyRow;
    type Acc = u64;
    type Output = StatusCount;

    fn create() -> u64 {
        0
    }

    fn add(acc: &mut u64, _row: AnyRow) {
        *acc += 1;
    }

    fn merge(a: u64, b: u64) -> u64 {
        a + b
    }

    fn finish(acc: u64, window: &Window) -> StatusCount {
        StatusCount {
            window_start: window.start_ms,
            window_end: window.end_ms,
            status: window.key.to_string(),
            order_count: acc,
        }
    }
}
