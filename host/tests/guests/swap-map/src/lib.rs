//! Hot-swap test map step, built in variants: `v1` (value2 = value), `v2` (value2 = value +
//! 1000). Output tags the variant.

use serde::{Deserialize, Serialize};

/// The variant this build is (set by `just udfs` through `RIVULET_SWAP_VARIANT`).
pub const VARIANT: &str = match option_env!("RIVULET_SWAP_VARIANT") {
    Some(v) => v,
    None => "v1",
};

#[derive(Deserialize, Serialize)]
pub struct Parsed {
    pub id: i64,
    pub parsed_by: String,
    pub value: i64,
}

#[derive(Serialize)]
pub struct Mapped {
    #[serde(flatten)]
    pub parsed: Parsed,
    pub mapped_by: &'static str,
    pub value2: i64,
}

#[rivulet_sdk::map]
pub fn map(parsed: Parsed) -> Mapped {
    let offset = if VARIANT == "v2" { 1000 } else { 0 };
    let value2 = parsed.value + offset;
    Mapped {
        parsed,
        mapped_by: VARIANT,
        value2,
    }
}
