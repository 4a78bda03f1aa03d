//! Shadow-swap test parse step, built in variants (`RIVULET_SWAP_VARIANT`): `v1` keeps
//! `status` as sent, `lower` lower-cases it, `trap` is `v1` but panics on a record whose
//! status is `BOOM` (it passes the swap checks on ordinary input, then traps on live
//! traffic). Input `{"id": n, "status": "..."}`.

use rivulet_sdk::{Error, RawRecord};
use serde::{Deserialize, Serialize};

/// The variant this build is (set by `just swap-guests` through `RIVULET_SWAP_VARIANT`).
pub const VARIANT: &str = match option_env!("RIVULET_SWAP_VARIANT") {
    Some(v) => v,
    None => "v1",
};

#[derive(Deserialize)]
struct Input {
    id: i64,
    status: String,
}

#[derive(Serialize)]
pub struct Parsed {
    pub id: i64,
    pub status: String,
}

#[rivulet_sdk::parse]
pub fn parse(rec: RawRecord) -> Result<Parsed, Error> {
    let input: Input = serde_json::from_slice(rec.payload)?;
    let status = match VARIANT {
        "lower" => input.status.to_lowercase(),
        "trap" if input.status == "BOOM" => panic!("this variant traps on status BOOM"),
        _ => input.status,
    };
    Ok(Parsed {
        id: input.id,
        status,
    })
}
