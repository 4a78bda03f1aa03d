//! The built-in `enrich` stage: adds the columns of the reference table's row whose key is
//! the row's `on` field (a lookup join against a broadcast table). A row whose key is not in
//! the table is kept with nulls, dropped, or refused with the reason (`on_miss`).

use super::MapStage;
use crate::spec::OnMiss;
use crate::table::contents::build_column;
use crate::table::{Cell, Contents, TableHandle};
use crate::udf::UdfError;
use rivulet_rows::{Batch, Column, RecordError, RowsOut, Values};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

pub struct Enrich {
    table: Arc<TableHandle>,
    /// The row field matched with the table's key.
    on: String,
    /// The table columns added, by name (None: every column but the key).
    columns: Option<Vec<String>>,
    /// New names of added columns.
    rename: BTreeMap<String, String>,
    on_miss: OnMiss,
    /// Reused for keys that are not text.
    key: String,
}

/// Why an `enrich` stage cannot start.
#[derive(Debug, thiserror::Error)]
#[error("table `{table}` has no column `{column}` (it has {has})")]
pub struct NoColumn {
    pub table: String,
    pub column: String,
    pub has: String,
}

impl Enrich {
    /// The stage; a column it adds that a table with rows does not have is an error (a
    /// topic table still empty may get it later).
    pub fn new(
        table: Arc<TableHandle>,
        on: String,
        columns: Option<Vec<String>>,
        rename: BTreeMap<String, String>,
        on_miss: OnMiss,
    ) -> Result<Self, NoColumn> {
        {
            let contents = table.table.read();
            if !contents.is_empty() {
                for column in columns.iter().flatten() {
                    if contents.column_index(column).is_none() {
                        return Err(NoColumn {
                            table: table.table.name.clone(),
                            column: column.clone(),
                            has: contents.columns().join(", "),
                        });
                    }
                }
            }
        }
        Ok(Enrich {
            table,
            on,
            columns,
            rename,
            on_miss,
            key: String::new(),
        })
    }

    /// The columns added: (index in the table, if it has it yet; output name).
    fn outputs(&self, contents: &Contents) -> Vec<(Option<usize>, String)> {
        let named = |column: &String| {
            let out = self.rename.get(column).unwrap_or(column).clone();
            (contents.column_index(column), out)
        };
        match &self.columns {
            Some(columns) => columns.iter().map(named).collect(),
            None => contents
                .columns()
                .iter()
                .filter(|c| **c != self.table.table.key)
                .map(named)
                .collect(),
        }
    }
}

/// Row `i`'s key in `column` as the table's key text (into `buf` when it is not text), or
/// why it has none.
fn key_of<'a>(
    column: Option<&'a Column>,
    on: &str,
    i: usize,
    buf: &'a mut String,
) -> Result<&'a str, String> {
    let Some(column) = column else {
        return Err(format!("the row has no field `{on}`"));
    };
    if column.is_null(i) {
        return Err(format!("its `{on}` is null"));
    }
    buf.clear();
    match &column.values {
        Values::Text(_) => {
            return column
                .text_at(i)
                .ok_or_else(|| format!("its `{on}` is not UTF-8 text"));
        }
        Values::Integer(v) => {
            let _ = write!(buf, "{}", v.get(i).copied().unwrap_or_default());
        }
        Values::Boolean(v) => buf.push_str(if v.get(i).copied().unwrap_or_default() {
            "true"
        } else {
            "false"
        }),
        Values::Float(v) => {
            let x = v.get(i).copied().unwrap_or_default();
            // A whole number read as a float is the integer key.
            if x.fract() == 0.0 && x.abs() < 9.0e15 {
                let _ = write!(buf, "{}", x as i64);
            } else {
                return Err(format!(
                    "its `{on}` is {x}: a key is text, an integer or a boolean"
                ));
            }
        }
        Values::Json(_) | Values::Binary(_) => {
            return Err(format!(
                "its `{on}` is a nested value: a key is text, an integer or a boolean"
            ));
        }
    }
    Ok(buf)
}

impl MapStage for Enrich {
    fn map(&mut self, input: &Batch) -> Result<RowsOut, UdfError> {
        let handle = self.table.clone();
        let table = &handle.table;
        let contents = table.read();
        let on = input.column(&self.on);
        let len = input.len as usize;
        let mut found: Vec<Option<&[Cell]>> = Vec::with_capacity(len);
        let mut kept: Vec<u32> = Vec::with_capacity(len);
        let mut errors = Vec::new();
        let mut misses = 0u64;
        // Misses kept with nulls need no reason.
        let explain = self.on_miss != OnMiss::Null;
        for i in 0..len {
            let row = match key_of(on, &self.on, i, &mut self.key) {
                Ok(key) => contents.get(key).ok_or_else(|| {
                    if explain {
                        format!("no row in table `{}` for {} {key:?}", table.name, self.on)
                    } else {
                        String::new()
                    }
                }),
                Err(reason) => Err(format!("cannot look up table `{}`: {reason}", table.name)),
            };
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            match row {
                Ok(row) => {
                    found.push(Some(row));
                    kept.push(index);
                }
                Err(message) => {
                    misses += 1;
                    found.push(None);
                    match self.on_miss {
                        OnMiss::Null => kept.push(index),
                        OnMiss::Drop | OnMiss::Dlq => errors.push(RecordError { index, message }),
                    }
                }
            }
        }
        table.looked_up(len as u64 - misses, misses);
        let outputs = self.outputs(&contents);
        let mut rows = if kept.len() == len {
            input.clone()
        } else {
            input.select(&kept)
        };
        rows.columns
            .retain(|c| !outputs.iter().any(|(_, name)| *name == c.name));
        for (index, name) in &outputs {
            let kind = index.and_then(|i| contents.kind(i));
            let cells = kept.iter().map(|&r| {
                let row = found.get(r as usize).copied().flatten()?;
                index.map(|i| Contents::cell(row, i))
            });
            rows.columns.push(build_column(name, kind, cells));
        }
        Ok(RowsOut {
            rows,
            origins: kept,
            errors,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::table::Table;
    use serde_json::json;

    fn table() -> Arc<TableHandle> {
        let mut contents = Contents::new(&BTreeMap::new());
        for (key, name) in [("42", "answer"), ("true", "yes")] {
            let row = json!({"id": key, "name": name});
            contents
                .upsert(key, row.as_object().cloned().unwrap())
                .unwrap();
        }
        let table = Table::new("t", "id", "test".to_owned(), contents);
        Arc::new(TableHandle::detached(Arc::new(table)))
    }

    fn batch(rows: &[serde_json::Value]) -> Batch {
        let mut builder = rivulet_rows::BatchBuilder::new();
        for row in rows {
            builder.push(row).unwrap();
        }
        builder.finish()
    }

    #[test]
    fn integer_boolean_and_whole_float_keys_match_the_text_keys() {
        let mut enrich =
            Enrich::new(table(), "k".into(), None, BTreeMap::new(), OnMiss::Dlq).unwrap();
        for rows in [
            vec![json!({"k": 42}), json!({"k": 7})],
            vec![json!({"k": 42.0}), json!({"k": 7.5})],
            vec![json!({"k": true}), json!({"k": false})],
        ] {
            let out = enrich.map(&batch(&rows)).unwrap();
            assert_eq!(out.origins, [0], "{rows:?}");
            assert_eq!(out.errors.len(), 1);
            assert!(out.rows.column("name").unwrap().text_at(0).is_some());
        }
        let reasons: Vec<String> = [json!({"k": 7.5}), json!({"k": {"a": 1}})]
            .into_iter()
            .flat_map(|row| enrich.map(&batch(&[row])).unwrap().errors)
            .map(|e| e.message)
            .collect();
        assert_eq!(
            reasons,
            [
                "cannot look up table `t`: its `k` is 7.5: a key is text, an integer or a boolean",
                "cannot look up table `t`: its `k` is a nested value: a key is text, an integer or a boolean"
            ]
        );
        let info = enrich.table.table.info();
        assert_eq!((info.hits, info.misses), (3, 5));
    }

    #[test]
    fn an_added_column_replaces_a_row_field_of_the_same_name_and_misses_get_nulls() {
        let mut enrich =
            Enrich::new(table(), "k".into(), None, BTreeMap::new(), OnMiss::Null).unwrap();
        let out = enrich
            .map(&batch(&[
                json!({"k": "42", "name": "old"}),
                json!({"k": "x", "name": "old"}),
            ]))
            .unwrap();
        assert_eq!(out.origins, [0, 1]);
        assert_eq!(
            out.rows.row_json(0),
            *json!({"k": "42", "name": "answer"}).as_object().unwrap()
        );
        assert_eq!(
            out.rows.row_json(1),
            *json!({"k": "x", "name": null}).as_object().unwrap()
        );
    }
}
