//! Shadow-swap test aggregate, built in variants (`RIVULET_SWAP_VARIANT`): `v1` counts the
//! rows of each window and key, `double` reports twice the count. Both keep state version 1
//! (the accumulator is the same plain count), so `double` takes over open windows when
//! promoted.

use rivulet_sdk::{Aggregate, Window};
use serde::{Deserialize, Serialize};

/// The variant this build is (set by `just swap-guests` through `RIVULET_SWAP_VARIANT`).
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
    pub count: u64,
}

pub struct Count;

#[rivulet_sdk::aggregate]
impl Aggregate for Count {
    type Input = AnyRow;
    type Acc = u64;
    type Output = Counted;
    const STATE_VERSION: u32 = 1;

    fn create() -> u64 {
        0
    }

    fn add(acc: &mut u64, _row: AnyRow) {
        *acc += 1;
    }

    fn merge(a: u64, b: u64) -> u64 {
        a + b
    }

    fn finish(acc: u64, window: &Window) -> Counted {
        let factor = if VARIANT == "double" { 2 } else { 1 };
        Counted {
            window_start: window.start_ms,
            key: window.key.to_string(),
            count: acc * factor,
        }
    }
}
