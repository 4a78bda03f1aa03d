//! The second seed's job, step 2: total sales per store per window (one minute in the
//! workshop). Produces `{"window_start": ms, "window_end": ms, "store_id": "store-1", "total_sales": 37.5, "sale_count": 3}`.
//!
//! Try it: `target/release/rivulet udf test target/wasm32-wasip2/wasm/udf_sum_sales.wasm --input samples/sale-rows.jsonl --key store_id`;
//! in a job it is `pipelines/sales-per-store.toml`.

use rivulet_sdk::{Aggregate, Window};
use serde::{Deserialize, Serialize};

/// The field the sum reads.
#[derive(Debug, Deserialize)]
pub struct Sale {
    pub sale_amount: f64,
}

/// Running total, kept in cents so sums are exact.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Total {
    pub cents: i64,
    pub count: u64,
}

/// One store's sales in one window.
#[derive(Debug, Serialize)]
pub struct StoreSales {
    pub window_start: i64,
    pub window_end: i64,
    pub store_id: String,
    pub total_sales: f64,
    pub sale_count: u64,
}

/// Sums `sale_amount` per key (store) and window.
pub struct SumSales;

#[rivulet_sdk::aggregate]
impl Aggregate for SumSales {
    type Input = Sale;
    type Acc = Total;
    type Output = StoreSales;

    fn create() -> Total {
        Total::default()
    }

    fn add(acc: &mut Total, sale: Sale) {
        acc.cents += (sale.sale_amount * 100.0).round() as i64;
        acc.count += 1;
    }

    fn merge(a: Total, b: Total) -> Total {
        Total {
            cents: a.cents + b.cents,
            count: a.count + b.count,
        }
    }

    fn finish(acc: Total, window: &Window) -> StoreSales {
        StoreSales {
            window_start: window.start_ms,
            window_end: window.end_ms,
            store_id: window.key.to_string(),
            total_sales: acc.cents as f64 / 100.0,
            sale_count: acc.count,
        }
    }
}
