//! The workshop's closing exploration as a Wasm map step: enrich each order with its
//! region's name and country from the reference table `regions` (a broadcast side input,
//! read-only through `rivulet_sdk::lookup`). An order whose region is not in the table
//! becomes a per-record error naming the region (it goes to the dead letters), as the
//! built-in `enrich` stage does with `on_miss = "dlq"`.
//!
//! The stage lists the table it reads (`pipelines/orders-per-region-wasm.toml`):
//!
//! ```toml
//! [[stages]]
//! name = "add-region"
//! kind = "map"
//! module = "../target/wasm32-wasip2/wasm/udf_enrich_region.wasm"
//! tables = ["regions"]
//! ```
//!
//! Try it: `just udf enrich-region && rivulet udf test target/wasm32-wasip2/wasm/udf_enrich_region.wasm --input samples/order-rows.jsonl --table regions:region=samples/regions.jsonl`.

use rivulet_sdk::Error;
use serde::{Deserialize, Serialize};

/// The table this step reads.
pub const TABLE: &str = "regions";

/// The order fields this step reads and passes on.
#[derive(Debug, Deserialize, Serialize)]
pub struct Order {
    pub customer: String,
    pub status: String,
    pub region: String,
    pub amount: f64,
    pub ts: String,
    #[serde(rename = "tsMillis")]
    pub ts_millis: i64,
}

/// The columns of a `regions` row this step adds.
#[derive(Debug, Deserialize)]
pub struct Region {
    pub name: String,
    pub country: String,
}

/// An order with its region's name and country.
#[derive(Debug, Serialize)]
pub struct Enriched {
    #[serde(flatten)]
    pub order: Order,
    pub region_name: String,
    pub country: String,
}

/// Adds `region_name` and `country`; a region the table does not have is the record's error.
#[rivulet_sdk::map]
pub fn enrich_region(order: Order) -> Result<Enriched, Error> {
    match rivulet_sdk::lookup::<Region>(TABLE, &order.region)? {
        Some(region) => Ok(Enriched {
            region_name: region.name,
            country: region.country,
            order,
        }),
        None => Err(Error::new(format!(
            "no row in table `{TABLE}` for region {:?}",
            order.region
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rivulet_sdk::testing::insert_row;
    use serde_json::json;

    fn order(region: &str) -> Order {
        Order {
            customer: "customer-042".into(),
            status: "SHIPPED".into(),
            region: region.into(),
            amount: 88.4,
            ts: "2024-05-23T12:34:56Z".into(),
            ts_millis: 1_716_467_696_000,
        }
    }

    #[test]
    fn a_known_region_adds_its_name_and_country_and_an_unknown_one_is_an_error() {
        insert_row(
            TABLE,
            "eu-west",
            &json!({"region": "eu-west", "name": "Europe (Ireland)", "country": "Ireland"}),
        );
        let enriched = enrich_region(order("eu-west")).unwrap();
        assert_eq!(enriched.region_name, "Europe (Ireland)");
        assert_eq!(enriched.country, "Ireland");
        assert_eq!(enriched.order.region, "eu-west");
        assert_eq!(
            enrich_region(order("mars")).unwrap_err().to_string(),
            "no row in table `regions` for region \"mars\""
        );
    }
}
