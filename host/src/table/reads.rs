//! The tables one Wasm map stage may read through `lookup` (its spec entry's `tables`),
//! as the sandbox sees them: a row comes back as a batch of one row, the same columnar
//! type every other value crossing the boundary has.

use super::contents::build_column;
use super::{Contents, TableHandle};
use crate::udf::TableReader;
use rivulet_rows::Batch;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A stage's readable tables, by name.
pub struct StageReads {
    stage: String,
    tables: BTreeMap<String, Arc<TableHandle>>,
    /// Every table of the job (to tell a table the stage does not list from one that
    /// does not exist).
    job_tables: Vec<String>,
}

impl StageReads {
    pub fn new(
        stage: &str,
        tables: BTreeMap<String, Arc<TableHandle>>,
        job_tables: Vec<String>,
    ) -> Self {
        StageReads {
            stage: stage.to_owned(),
            tables,
            job_tables,
        }
    }
}

/// Row `row` of `contents` as a batch of one row: every column, in the table's order.
pub fn one_row(contents: &Contents, row: &[super::Cell]) -> Batch {
    let columns = contents
        .columns()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            build_column(
                name,
                contents.kind(i),
                std::iter::once(Some(Contents::cell(row, i))),
            )
        })
        .collect();
    Batch { len: 1, columns }
}

impl TableReader for StageReads {
    fn lookup(&self, table: &str, key: &str) -> Result<Option<Batch>, String> {
        let Some(handle) = self.tables.get(table) else {
            let readable: Vec<&str> = self.tables.keys().map(String::as_str).collect();
            return Err(if self.job_tables.iter().any(|t| t == table) {
                format!(
                    "stage `{}` may not read table `{table}`: add it to the stage's `tables` (it reads {})",
                    self.stage,
                    readable.join(", ")
                )
            } else {
                format!(
                    "no table `{table}` (stage `{}` reads {})",
                    self.stage,
                    readable.join(", ")
                )
            });
        };
        let table = &handle.table;
        let contents = table.read();
        match contents.get(key) {
            Some(row) => {
                table.looked_up(1, 0);
                Ok(Some(one_row(&contents, row)))
            }
            None => {
                table.looked_up(0, 1);
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::table::Table;
    use serde_json::json;

    fn reads() -> StageReads {
        let mut contents = Contents::new(&BTreeMap::new());
        let row = json!({"region": "eu-west", "name": "Europe (Ireland)", "rank": 3});
        contents
            .upsert("eu-west", row.as_object().cloned().unwrap())
            .unwrap();
        let table = Table::new("regions", "region", "test".to_owned(), contents);
        let handle = Arc::new(TableHandle::detached(Arc::new(table)));
        StageReads::new(
            "add-name",
            BTreeMap::from([("regions".to_owned(), handle)]),
            vec!["regions".to_owned(), "tiers".to_owned()],
        )
    }

    #[test]
    fn a_hit_is_one_row_with_every_column_and_a_miss_is_none() {
        let reads = reads();
        let row = reads.lookup("regions", "eu-west").unwrap().unwrap();
        assert_eq!(row.len, 1);
        assert_eq!(
            row.row_json(0),
            *json!({"region": "eu-west", "name": "Europe (Ireland)", "rank": 3})
                .as_object()
                .unwrap()
        );
        assert_eq!(reads.lookup("regions", "mars").unwrap(), None);
        let info = reads.tables["regions"].table.info();
        assert_eq!((info.hits, info.misses), (1, 1));
    }

    #[test]
    fn a_table_the_stage_does_not_list_or_the_job_does_not_have_is_an_error_naming_it() {
        let reads = reads();
        assert_eq!(
            reads.lookup("tiers", "gold").unwrap_err(),
            "stage `add-name` may not read table `tiers`: add it to the stage's `tables` (it reads regions)"
        );
        assert_eq!(
            reads.lookup("countries", "IE").unwrap_err(),
            "no table `countries` (stage `add-name` reads regions)"
        );
    }
}
