//! Synthetic workshop data: orders for `partitioned-topic` (with a share of malformed
//! records) and sales of three stores. Deterministic for a given seed.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rivulet_sdk::time::iso8601;

pub const STATUSES: [&str; 5] = ["NEW", "PENDING", "SHIPPED", "DELIVERED", "CANCELLED"];
pub const REGIONS: [&str; 4] = ["eu-west", "us-east", "us-west", "ap-south"];

/// Orders like `{"customer":"customer-042","status":"SHIPPED","region":"eu-west","amount":88.40,"ts":"…","tsMillis":…}`.
pub struct Orders {
    rng: SmallRng,
    malformed_ratio: f64,
}

/// One generated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    pub key: String,
    pub payload: String,
    /// Whether the payload is deliberately malformed.
    pub malformed: bool,
}

impl Orders {
    pub fn new(seed: u64, malformed_ratio: f64) -> Self {
        Orders {
            rng: SmallRng::seed_from_u64(seed),
            malformed_ratio: malformed_ratio.clamp(0.0, 1.0),
        }
    }

    /// An order with event time `ts_ms`.
    pub fn next(&mut self, ts_ms: i64) -> Seeded {
        let customer = format!("customer-{:03}", self.rng.random_range(0..100));
        let status = STATUSES[self.rng.random_range(0..STATUSES.len())];
        let region = REGIONS[self.rng.random_range(0..REGIONS.len())];
        let cents: u32 = self.rng.random_range(500..50_000);
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let ts = iso8601(ts_ms - ts_ms.rem_euclid(1000));
        let millis = ts_ms - ts_ms.rem_euclid(1000);
        let good = format!(
            r#"{{"customer":"{customer}","status":"{status}","region":"{region}","amount":{amount},"ts":"{ts}","tsMillis":{millis}}}"#
        );
        if self.rng.random_bool(self.malformed_ratio) {
            let payload = match self.rng.random_range(0..4) {
                0 => good[..good.len() / 2].to_owned(),
                1 => good.replace(&format!(r#""amount":{amount}"#), r#""amount":"lots""#),
                2 => good.replace(&format!(r#""status":"{status}","#), ""),
                _ => "not json at all".to_owned(),
            };
            return Seeded {
                key: customer,
                payload,
                malformed: true,
            };
        }
        Seeded {
            key: customer,
            payload: good,
            malformed: false,
        }
    }
}

/// Sales like `{"store_id":"store-2","sale_amount":12.5,"sale_ts":…}`.
pub struct Sales {
    rng: SmallRng,
}

impl Sales {
    pub fn new(seed: u64) -> Self {
        Sales {
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub fn next(&mut self, ts_ms: i64) -> Seeded {
        let store = format!("store-{}", self.rng.random_range(1..=3));
        let cents: u32 = self.rng.random_range(100..10_000);
        let payload = format!(
            r#"{{"store_id":"{store}","sale_amount":{}.{:02},"sale_ts":{ts_ms}}}"#,
            cents / 100,
            cents % 100
        );
        Seeded {
            key: store,
            payload,
            malformed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_orders_and_malformed_share_is_respected() {
        let a: Vec<Seeded> = (0..1000)
            .map({
                let mut g = Orders::new(7, 0.1);
                move |i| g.next(i)
            })
            .collect();
        let b: Vec<Seeded> = (0..1000)
            .map({
                let mut g = Orders::new(7, 0.1);
                move |i| g.next(i)
            })
            .collect();
        assert_eq!(a, b);
        let bad = a.iter().filter(|s| s.malformed).count();
        assert!((50..=150).contains(&bad), "{bad}");
        for s in a.iter().filter(|s| !s.malformed) {
            let v: serde_json::Value = serde_json::from_str(&s.payload).unwrap();
            assert!(STATUSES.contains(&v["status"].as_str().unwrap()));
        }
    }
}
