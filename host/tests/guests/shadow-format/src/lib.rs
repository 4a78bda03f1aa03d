//! Shadow-swap test format step, built in variants (`RIVULET_SWAP_VARIANT`): `v1` writes
//! each row `{"id": n, "status": "..."}` as that JSON keyed by its status; `keyed` keys it
//! by the upper-cased status instead and adds `"flag": true` to the value of every order
//! whose id is a multiple of 4.

use rivulet_sdk::{Error, Payload};
use serde::{Deserialize, Serialize};

/// The variant this build is (set by `just swap-guests` through `RIVULET_SWAP_VARIANT`).
pub const VARIANT: &str = match option_env!("RIVULET_SWAP_VARIANT") {
    Some(v) => v,
    None => "v1",
};

#[derive(Deserialize)]
pub struct Order {
    pub id: i64,
    pub status: String,
}

#[derive(Serialize)]
struct Out<'a> {
    id: i64,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    flag: Option<bool>,
}

#[rivulet_sdk::format]
pub fn format(row: Order) -> Result<Payload, Error> {
    let keyed = VARIANT == "keyed";
    let out = Out {
        id: row.id,
        status: &row.status,
        flag: (keyed && row.id % 4 == 0).then_some(true),
    };
    let key = match keyed {
        true => row.status.to_uppercase(),
        false => row.status.clone(),
    };
    Ok(Payload::keyed(key, serde_json::to_vec(&out)?))
}
