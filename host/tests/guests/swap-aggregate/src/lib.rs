//! Hot-swap test aggregate, built in variants. `v1` and `v2` share state version 1: the
//! accumulator counts rows per variant that added them (`{"v1": 3, "v2": 2}`), so a result
//! shows which module saw which rows. `v3` has state version 2 and a different accumulator
//! (a plain count). `v4` is the mistake a swap must catch: its accumulator changed layout
//! (`{"rows": n}`, a struct that cannot read v1's map) but it kept state version 1.

use rivulet_sdk::{Aggregate, Window};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The variant this build is (set by `just udfs` through `RIVULET_SWAP_VARIANT`).
pub const VARIANT: &str = match option_env!("RIVULET_SWAP_VARIANT") {
    Some(v) => v,
    None => "v1",
};

#[derive(Deserialize)]
pub struct AnyRow {}

#[derive(Serialize)]
pub struct Counted {
    pub window_start: i64,
    pub key: String,
    pub counts: BTreeMap<String, u64>,
    pub finished_by: &'static str,
}

pub struct PerVariant;

#[cfg(not(swap_v4))]
#[rivulet_sdk::aggregate]
impl Aggregate for PerVariant {
    type Input = AnyRow;
    type Acc = serde_json::Value;
    type Output = Counted;
    const STATE_VERSION: u32 = if matches!(VARIANT.as_bytes(), b"v3") {
        2
    } else {
        1
    };

    fn create() -> serde_json::Value {
        if VARIANT == "v3" {
            serde_json::json!(0)
        } else {
            serde_json::json!({})
        }
    }

    fn add(acc: &mut serde_json::Value, _row: AnyRow) {
        if VARIANT == "v3" {
            *acc = serde_json::json!(acc.as_u64().unwrap_or(0) + 1);
        } else if let Some(map) = acc.as_object_mut() {
            let n = map
                .get(VARIANT)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            map.insert(VARIANT.to_owned(), serde_json::json!(n + 1));
        }
    }

    fn merge(a: serde_json::Value, _b: serde_json::Value) -> serde_json::Value {
        a
    }

    fn finish(acc: serde_json::Value, window: &Window) -> Counted {
        let counts = match acc {
            serde_json::Value::Object(map) => map
                .into_iter()
                .map(|(k, v)| (k, v.as_u64().unwrap_or(0)))
                .collect(),
            other => BTreeMap::from([("plain".to_owned(), other.as_u64().unwrap_or(0))]),
        };
        Counted {
            window_start: window.start_ms,
            key: window.key.to_string(),
            counts,
            finished_by: VARIANT,
        }
    }
}

/// `v4`'s accumulator: a new layout under the old state version.
#[cfg(swap_v4)]
#[derive(Serialize, Deserialize)]
pub struct Rows {
    pub rows: u64,
}

#[cfg(swap_v4)]
#[rivulet_sdk::aggregate]
impl Aggregate for PerVariant {
    type Input = AnyRow;
    type Acc = Rows;
    type Output = Counted;
    const STATE_VERSION: u32 = 1;

    fn create() -> Rows {
        Rows { rows: 0 }
    }

    fn add(acc: &mut Rows, _row: AnyRow) {
        acc.rows += 1;
    }

    fn merge(a: Rows, b: Rows) -> Rows {
        Rows {
            rows: a.rows + b.rows,
        }
    }

    fn finish(acc: Rows, window: &Window) -> Counted {
        Counted {
            window_start: window.start_ms,
            key: window.key.to_string(),
            counts: BTreeMap::from([("v4".to_owned(), acc.rows)]),
            finished_by: VARIANT,
        }
    }
}
