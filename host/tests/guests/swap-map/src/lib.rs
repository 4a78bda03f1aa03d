//! Hot-swap test map step, built in variants: `v1` (value2 = value), `v2` (value2 = value +
//! 1000). Output tags the variant. `v3` changes the output's shape: value2 as text, and a
//! new column `note`. `v4` is `v1` for ids below 100 and `v3`'s shape from id 100 on (a
//! shape that changes on a later batch, not the first).

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

/// `v3`'s row.
#[derive(Serialize)]
pub struct Reshaped {
    #[serde(flatten)]
    pub parsed: Parsed,
    pub mapped_by: &'static str,
    pub value2: String,
    pub note: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum Output {
    Mapped(Mapped),
    Reshaped(Reshaped),
}

#[rivulet_sdk::map]
pub fn map(parsed: Parsed) -> Output {
    let offset = if VARIANT == "v2" { 1000 } else { 0 };
    let value2 = parsed.value + offset;
    if VARIANT == "v3" || (VARIANT == "v4" && parsed.id >= 100) {
        return Output::Reshaped(Reshaped {
            parsed,
            mapped_by: VARIANT,
            value2: value2.to_string(),
            note: "reshaped",
        });
    }
    Output::Mapped(Mapped {
        parsed,
        mapped_by: VARIANT,
        value2,
    })
}
