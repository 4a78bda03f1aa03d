//! A hostile aggregate for the isolation and limit tests. Each row may carry `grow` (bytes
//! to append to its key's accumulator) and `cmd`: `panic` panics in `add`. A window whose
//! key is `"poison"` panics in `finish`. Results count the rows each window added and the
//! bytes its accumulator grew by.

use rivulet_sdk::{Aggregate, Scalar, Window};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub struct Row {
    #[serde(default)]
    pub grow: usize,
    #[serde(default)]
    pub cmd: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
pub struct Acc {
    pub count: u64,
    pub pad: String,
}

#[derive(Serialize)]
pub struct Finished {
    pub key: String,
    pub count: u64,
    pub grown: usize,
}

pub struct Hostile;

#[rivulet_sdk::aggregate]
impl Aggregate for Hostile {
    type Input = Row;
    type Acc = Acc;
    type Output = Finished;

    fn create() -> Acc {
        Acc::default()
    }

    fn add(acc: &mut Acc, row: Row) {
        if row.cmd.as_deref() == Some("panic") {
            panic!("hostile aggregate panics in add on purpose");
        }
        acc.count += 1;
        acc.pad.push_str(&"x".repeat(row.grow));
    }

    fn merge(mut a: Acc, b: Acc) -> Acc {
        a.count += b.count;
        a.pad.push_str(&b.pad);
        a
    }

    fn finish(acc: Acc, window: &Window) -> Finished {
        let key = match &window.key {
            Scalar::Text(text) => text.clone(),
            other => format!("{other:?}"),
        };
        if key == "poison" {
            panic!("hostile aggregate panics in finish on purpose");
        }
        Finished {
            key,
            count: acc.count,
            grown: acc.pad.len(),
        }
    }
}
