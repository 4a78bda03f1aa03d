//! Hot-swap test parse step, built in variants: `v1` (value = id), `v2` (value = id × 10),
//! `trap` (panics on every record), `sleep` (sleeps an hour in a WASI call on every record). Input `{"id": n}`; output tags the variant.

use rivulet_sdk::{Error, RawRecord};
use serde::{Deserialize, Serialize};

/// The variant this build is (set by `just udfs` through `RIVULET_SWAP_VARIANT`).
pub const VARIANT: &str = match option_env!("RIVULET_SWAP_VARIANT") {
    Some(v) => v,
    None => "v1",
};

#[derive(Deserialize)]
struct Input {
    id: i64,
}

#[derive(Serialize)]
pub struct Parsed {
    pub id: i64,
    pub parsed_by: &'static str,
    pub value: i64,
}

#[rivulet_sdk::parse]
pub fn parse(rec: RawRecord) -> Result<Parsed, Error> {
    let input: Input = serde_json::from_slice(rec.payload)?;
    let factor = match VARIANT {
        "v2" => 10,
        "trap" => panic!("this variant traps on every record"),
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            1
        }
        _ => 1,
    };
    Ok(Parsed {
        id: input.id,
        parsed_by: VARIANT,
        value: input.id * factor,
    })
}
