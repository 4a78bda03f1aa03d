//! Dev only: the workshop's steps as native Rust stages — the very same functions the
//! `udfs/` crates compile to components, called directly. Benchmarks and tests compare the
//! two; the product never links the workshop.

use rivulet::stage::{AggregateStage, FormatStage, MapStage, ParseStage};
use rivulet::udf::UdfError;
use rivulet_rows::{AddOut, Batch, Encoded, RawBatch, RowsOut, WindowAcc};
use rivulet_sdk::__private as glue;
use std::marker::PhantomData;

/// A native parse step.
pub struct NativeParse(pub fn(&RawBatch) -> RowsOut);
/// A native map step.
pub struct NativeMap(pub fn(&Batch) -> RowsOut);
/// A native format step.
pub struct NativeFormat(pub fn(&Batch) -> Encoded);
/// A native aggregate.
pub struct NativeAggregate<A>(PhantomData<fn() -> A>);

impl<A> Default for NativeAggregate<A> {
    fn default() -> Self {
        NativeAggregate(PhantomData)
    }
}

impl ParseStage for NativeParse {
    fn parse(&mut self, input: &RawBatch) -> Result<RowsOut, UdfError> {
        Ok((self.0)(input))
    }
}

impl MapStage for NativeMap {
    fn map(&mut self, input: &Batch) -> Result<RowsOut, UdfError> {
        Ok((self.0)(input))
    }
}

impl FormatStage for NativeFormat {
    fn format(&mut self, input: &Batch) -> Result<Encoded, UdfError> {
        Ok((self.0)(input))
    }
}

impl<A: rivulet_sdk::Aggregate> AggregateStage for NativeAggregate<A> {
    fn state_version(&mut self) -> Result<u32, UdfError> {
        Ok(A::STATE_VERSION)
    }

    fn create(&mut self) -> Result<Vec<u8>, UdfError> {
        Ok(glue::aggregate_create::<A>())
    }

    fn add(
        &mut self,
        accs: Vec<Vec<u8>>,
        rows: &Batch,
        groups: &[u32],
    ) -> Result<AddOut, UdfError> {
        Ok(glue::aggregate_add::<A>(accs, rows, groups))
    }

    fn merge(&mut self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<Vec<u8>>, UdfError> {
        glue::aggregate_merge::<A>(pairs).map_err(|reason| UdfError::Trap {
            stage: "native".into(),
            reason,
        })
    }

    fn finish(&mut self, windows: Vec<WindowAcc>) -> Result<RowsOut, UdfError> {
        Ok(glue::aggregate_finish::<A>(windows))
    }
}

/// Native parse of the workshop's orders.
pub fn parse_orders() -> NativeParse {
    NativeParse(udf_parse_orders::__rivulet_parse_batch)
}

/// Native parse of the second seed's sales.
pub fn parse_sales() -> NativeParse {
    NativeParse(udf_parse_sales::__rivulet_parse_batch)
}

/// Native high-value filter.
pub fn high_value() -> NativeMap {
    NativeMap(udf_high_value::__rivulet_map_batch)
}

/// Native order summary (step 2).
pub fn order_summary() -> NativeFormat {
    NativeFormat(udf_order_summary::__rivulet_format_batch)
}

/// Native window-result formatter (step 4).
pub fn format_aggregate() -> NativeFormat {
    NativeFormat(udf_format_aggregate::__rivulet_format_batch)
}

/// Native count per status (step 3).
pub fn count_by_status() -> NativeAggregate<udf_count_by_status::CountByStatus> {
    NativeAggregate::default()
}

/// Native average amount per status.
pub fn avg_amount() -> NativeAggregate<udf_avg_amount::AvgAmountByStatus> {
    NativeAggregate::default()
}

/// Native sales per store.
pub fn sum_sales() -> NativeAggregate<udf_sum_sales::SumSales> {
    NativeAggregate::default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    #[test]
    fn seeded_orders_keep_clock_millis_and_parse_orders_accepts_every_good_one() {
        let mut orders = rivulet::seed::Orders::new(3, 0.05);
        let (mut good, mut parsed) = (0, 0);
        for i in 0..1000i64 {
            let ts_ms = 1_716_467_696_000 + i * 37;
            let seeded = orders.next(ts_ms);
            let record = rivulet_sdk::RawRecord {
                key: None,
                payload: &seeded.payload,
                timestamp: 0,
                partition: 0,
                offset: i,
                headers: Vec::new(),
            };
            let result = udf_parse_orders::parse(record);
            assert_eq!(
                result.is_ok(),
                !seeded.malformed,
                "{}",
                String::from_utf8_lossy(&seeded.payload)
            );
            if let Ok(order) = result {
                assert_eq!(order.ts_millis, ts_ms);
                assert_eq!(
                    order.ts,
                    rivulet_sdk::time::iso8601(ts_ms - ts_ms.rem_euclid(1000))
                );
                parsed += 1;
            }
            good += usize::from(!seeded.malformed);
        }
        assert_eq!(parsed, good);
        assert!(good > 900, "{good}");
    }
}
