//! Synthetic workshop data: orders for `partitioned-topic` (with a share of malformed
//! records) and sales of three stores. Deterministic for a given seed.

use crate::kafka::KafkaError;
use crate::sink::kafka::KafkaSink;
use crate::source::kafka::now_millis;
use apache_avro::Schema;
use apache_avro::types::Value;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rivulet_rows::time::iso8601;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const STATUSES: [&str; 5] = ["NEW", "PENDING", "SHIPPED", "DELIVERED", "CANCELLED"];
/// The keys of `samples/regions.jsonl`, the workshop's region table (every seeded order's
/// region is in it).
pub const REGIONS: [&str; 5] = ["eu-west", "us-east", "us-west", "ap-south", "eu-central"];

/// Orders like `{"customer":"customer-042","status":"SHIPPED","region":"eu-west","amount":88.40,"ts":"…","tsMillis":…}`.
pub struct Orders {
    rng: SmallRng,
    malformed_ratio: f64,
}

/// One generated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    pub key: String,
    pub payload: Vec<u8>,
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
        // As a producer stamping the clock does: `ts` to the second, `tsMillis` precise.
        let ts = iso8601(ts_ms - ts_ms.rem_euclid(1000));
        let millis = ts_ms;
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
                payload: payload.into_bytes(),
                malformed: true,
            };
        }
        Seeded {
            key: customer,
            payload: good.into_bytes(),
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
            payload: payload.into_bytes(),
            malformed: false,
        }
    }

    /// A `StoreSale` ([`STORE_SALE_SCHEMA`]) in Confluent's Avro wire format, written with
    /// the schema registered as `schema_id`: a whole-unit `sale_amount` (1 to 500) and
    /// `sale_ts` in epoch milliseconds.
    pub fn next_avro(
        &mut self,
        ts_ms: i64,
        schema: &Schema,
        schema_id: u32,
    ) -> Result<Seeded, String> {
        let store = format!("store-{}", self.rng.random_range(1..=3));
        let amount: i32 = self.rng.random_range(1..=500);
        let record = Value::Record(vec![
            ("store_id".into(), Value::String(store.clone())),
            ("sale_amount".into(), Value::Int(amount)),
            ("sale_ts".into(), Value::TimestampMillis(ts_ms)),
        ]);
        let body = apache_avro::to_avro_datum(schema, record)
            .map_err(|err| format!("cannot write a StoreSale: {err}"))?;
        Ok(Seeded {
            key: store,
            payload: crate::format::avro::frame(schema_id, &body),
            malformed: false,
        })
    }
}

/// The sales workshop's Avro record, as Confluent's producer registers it.
pub const STORE_SALE_SCHEMA: &str = r#"{"type":"record","name":"StoreSale","fields":[{"name":"store_id","type":"string"},{"name":"sale_amount","type":"int"},{"name":"sale_ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;

/// Why seeding stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A record could not be generated.
    #[error("{0}")]
    Record(String),
}

/// Writes generated records to `sink` at `rate` per second (0: as fast as possible) until
/// `count` are written (0: no limit) or `stop` is set, then waits for them to be
/// acknowledged. Returns (written, malformed).
pub fn write(
    sink: &mut KafkaSink,
    rate: f64,
    count: u64,
    stop: &AtomicBool,
    mut next: impl FnMut(i64) -> Result<Seeded, String>,
) -> Result<(u64, u64), SeedError> {
    let started = Instant::now();
    let (mut written, mut malformed) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) && (count == 0 || written < count) {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(written as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait.min(Duration::from_millis(50)));
                sink.poll()?;
                continue;
            }
        }
        let record = next(now_millis()).map_err(SeedError::Record)?;
        malformed += u64::from(record.malformed);
        sink.send(Some(record.key.as_bytes()), &record.payload, &[])?;
        written += 1;
        if written.is_multiple_of(1000) {
            sink.poll()?;
            tracing::info!(topic = sink.topic(), queued = written, malformed, "seeding");
        }
    }
    // After Ctrl-C, what is not delivered within 2 s is reported, not waited for.
    let flush = match stop.load(Ordering::Relaxed) {
        true => Duration::from_secs(2),
        false => Duration::from_secs(30),
    };
    sink.flush(flush, None)?;
    Ok((written, malformed))
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
        let regions: std::collections::BTreeSet<&str> = a
            .iter()
            .filter_map(|s| serde_json::from_slice::<serde_json::Value>(&s.payload).ok())
            .filter_map(|v| v["region"].as_str().map(str::to_owned))
            .map(|r| {
                *REGIONS
                    .iter()
                    .find(|k| **k == r)
                    .unwrap_or(&"not a seeder region")
            })
            .collect();
        assert_eq!(
            regions.len(),
            REGIONS.len(),
            "every region is seeded: {regions:?}"
        );
        assert!((50..=150).contains(&bad), "{bad}");
        for s in a.iter().filter(|s| !s.malformed) {
            let v: serde_json::Value = serde_json::from_slice(&s.payload).unwrap();
            assert!(STATUSES.contains(&v["status"].as_str().unwrap()));
        }
    }

    /// The workshop's region table and the seeder agree: every seeded region is a key of
    /// `samples/regions.jsonl` and every key of it is seeded.
    #[test]
    fn seeded_regions_are_the_keys_of_the_sample_region_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/regions.jsonl");
        let text = std::fs::read_to_string(path).unwrap();
        let mut keys: Vec<String> = text
            .lines()
            .map(|l| {
                let row: serde_json::Value = serde_json::from_str(l).unwrap();
                row["region"].as_str().unwrap().to_owned()
            })
            .collect();
        keys.sort();
        let mut seeded: Vec<String> = REGIONS.iter().map(|r| (*r).to_owned()).collect();
        seeded.sort();
        assert_eq!(keys, seeded);
    }

    #[test]
    fn avro_sales_are_deterministic_framed_store_sales_of_three_stores() {
        let schema = Schema::parse_str(STORE_SALE_SCHEMA).unwrap();
        let make = || {
            let mut sales = Sales::new(7);
            (0..300)
                .map(|i| sales.next_avro(1_000 + i, &schema, 5).unwrap())
                .collect::<Vec<_>>()
        };
        let (a, b) = (make(), make());
        assert_eq!(a, b);
        let mut stores = std::collections::BTreeSet::new();
        for (i, sale) in (0i64..).zip(&a) {
            let (id, body) = crate::format::avro::split(&sale.payload).unwrap();
            assert_eq!(id, 5);
            let value = crate::format::avro::decode(&schema, id, body).unwrap();
            let Value::Record(fields) = value else {
                panic!()
            };
            assert_eq!(
                fields[0],
                ("store_id".into(), Value::String(sale.key.clone()))
            );
            assert!(
                matches!(fields[1].1, Value::Int(1..=500)),
                "{:?}",
                fields[1]
            );
            assert_eq!(
                fields[2],
                ("sale_ts".into(), Value::TimestampMillis(1_000 + i))
            );
            stores.insert(sale.key.clone());
        }
        assert_eq!(
            stores.into_iter().collect::<Vec<_>>(),
            ["store-1", "store-2", "store-3"]
        );
    }
}
