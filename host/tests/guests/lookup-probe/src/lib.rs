//! Test map step for the `lookup` tests: each row names a table and a key; the step looks
//! the key up and adds the row's `name` column (null on a miss). An error of `lookup` (a
//! table the stage may not read) is the record's error, word for word.

use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct Probe {
    pub id: i64,
    pub table: String,
    pub key: String,
}

#[derive(Deserialize)]
pub struct Named {
    pub name: Option<String>,
}

#[derive(Serialize)]
pub struct Found {
    pub id: i64,
    pub table: String,
    pub key: String,
    pub name: Option<String>,
}

#[cfg(feature = "parse")]
#[rivulet_sdk::parse]
pub fn probe_parse(rec: rivulet_sdk::RawRecord<'_>) -> Result<Found, rivulet_sdk::Error> {
    let row: Probe = serde_json::from_slice(rec.payload)?;
    probe(row)
}

#[cfg_attr(not(feature = "parse"), rivulet_sdk::map)]
pub fn probe(row: Probe) -> Result<Found, rivulet_sdk::Error> {
    let found = rivulet_sdk::lookup::<Named>(&row.table, &row.key)?;
    Ok(Found {
        name: found.and_then(|n| n.name),
        id: row.id,
        table: row.table,
        key: row.key,
    })
}
