//! The reference tables of a spec (`[[tables]]`) and the `enrich` stages that read them.

use super::{PipelineSpec, StageKind, StageSpec};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A reference table: rows by key, loaded at start and shared by every task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// What `enrich` stages call it (`table = "regions"`).
    pub name: String,
    /// The column rows are looked up by.
    pub key: String,
    pub source: TableSource,
    /// SQL types of columns (`population = "BIGINT"`): a CSV field is read as its type, a
    /// JSON value must be of it. Without one, CSV fields are text and JSON values keep
    /// their own type.
    #[serde(default)]
    pub types: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TableSource {
    /// A file, read once at start: JSON lines (one object per line) or CSV with a header
    /// row; `format` is `json` or `csv`, by default told by the extension. A CSV file
    /// without a header row (as Flink's `csv` format writes it) names its fields in order
    /// with `columns`.
    File {
        path: PathBuf,
        format: Option<TableFormat>,
        #[serde(default)]
        columns: Option<Vec<String>>,
    },
    /// A Kafka topic (compacted, typically), read from the beginning before the job takes
    /// its first record and followed while it runs: the record key is the row's key (as
    /// `key_format` says), the value a JSON object of its columns; the last value of a key
    /// wins and a null value (a tombstone) deletes the key.
    Kafka {
        topic: String,
        #[serde(default)]
        key_format: TopicKeyFormat,
    },
}

/// How a table topic's record keys are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicKeyFormat {
    /// The key's UTF-8 text is the row's key.
    #[default]
    Text,
    /// The key is JSON: an object holding the table's key column (as Flink's upsert-kafka
    /// writes it with `'key.format' = 'json'`), or a bare JSON value.
    Json,
}

/// How a table file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// One JSON object per line.
    Json,
    /// Comma-separated values with a header row naming the columns.
    Csv,
}

/// What an `enrich` stage does with a row whose key is not in the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMiss {
    /// Keep the row; the added columns are null (a left join).
    #[default]
    Null,
    /// Drop the row, counted as the stage's error (an inner join).
    Drop,
    /// Send the record to the dead letters with the reason.
    Dlq,
}

/// The SQL types a table column may be declared as.
pub const TABLE_TYPES: &str = "BOOLEAN, BIGINT (INT, ...), DOUBLE (FLOAT, DECIMAL, ...) or STRING";

/// Checks the `[[tables]]` and the `enrich` stages against them: `Err((field, reason))`.
pub(crate) fn check(spec: &PipelineSpec) -> Result<(), (String, String)> {
    for (i, table) in spec.tables.iter().enumerate() {
        let field = |name: &str| format!("tables[{i}].{name}");
        if table.name.trim().is_empty() {
            return Err((field("name"), "must not be empty".to_owned()));
        }
        if spec.tables[..i].iter().any(|t| t.name == table.name) {
            return Err((field("name"), "table names must be unique".to_owned()));
        }
        if table.key.trim().is_empty() {
            return Err((field("key"), "must name the key column".to_owned()));
        }
        if let TableSource::File {
            path,
            format,
            columns: Some(columns),
        } = &table.source
        {
            let csv = match format {
                Some(format) => *format == TableFormat::Csv,
                None => crate::table::file::format_of(path) == Some(TableFormat::Csv),
            };
            if !csv {
                return Err((
                    field("source.columns"),
                    "names the fields of a CSV file without a header row; a JSON line names its own".to_owned(),
                ));
            }
            if !columns.contains(&table.key) {
                return Err((
                    field("source.columns"),
                    format!("has no key column `{}`", table.key),
                ));
            }
            if let Some(twice) = columns
                .iter()
                .enumerate()
                .find_map(|(i, c)| columns[..i].contains(c).then_some(c))
            {
                return Err((field("source.columns"), format!("names `{twice}` twice")));
            }
        }
        for (column, ty) in &table.types {
            if crate::table::Declared::of_sql(ty).is_none() {
                return Err((
                    field(&format!("types.{column}")),
                    format!("unknown type {ty:?} (a table column is {TABLE_TYPES})"),
                ));
            }
        }
    }
    for (i, stage) in spec.stages.iter().enumerate() {
        let field = |name: &str| format!("stages[{i}].{name}");
        check_reads(spec, stage).map_err(|reason| (field("tables"), reason))?;
        if stage.kind != StageKind::Enrich {
            if stage.table.is_some()
                || stage.on.is_some()
                || stage.columns.is_some()
                || !stage.rename.is_empty()
                || stage.on_miss.is_some()
            {
                return Err((
                    format!("stages[{i}]"),
                    "`table`, `on`, `columns`, `rename` and `on_miss` are for `enrich` stages"
                        .to_owned(),
                ));
            }
            continue;
        }
        check_enrich(spec, stage).map_err(|(name, reason)| (field(&name), reason))?;
    }
    Ok(())
}

/// A stage's `tables`: only a Wasm map stage reads tables by name, each one of the spec's,
/// once.
fn check_reads(spec: &PipelineSpec, stage: &StageSpec) -> Result<(), String> {
    if stage.tables.is_empty() {
        return Ok(());
    }
    if stage.kind != StageKind::Map || stage.module.is_none() {
        return Err(match stage.kind {
            StageKind::Enrich => {
                "an `enrich` stage names its one table with `table`; `tables` is for Wasm `map` stages".to_owned()
            }
            _ => "only a Wasm `map` stage (one with a `module`) reads tables with `lookup`".to_owned(),
        });
    }
    for (j, name) in stage.tables.iter().enumerate() {
        if stage.tables[..j].contains(name) {
            return Err(format!("`{name}` is named twice"));
        }
        if !spec.tables.iter().any(|t| &t.name == name) {
            let names: Vec<&str> = spec.tables.iter().map(|t| t.name.as_str()).collect();
            return Err(match names.is_empty() {
                true => format!("no table `{name}`: the spec declares no [[tables]]"),
                false => format!("no table `{name}` (the spec declares {})", names.join(", ")),
            });
        }
    }
    Ok(())
}

fn check_enrich(spec: &PipelineSpec, stage: &StageSpec) -> Result<(), (String, String)> {
    let err = |field: &str, reason: String| Err((field.to_owned(), reason));
    if stage.module.is_some() || stage.builtin.is_some() || stage.registry.is_some() {
        return err(
            "kind",
            "an `enrich` stage is built in: it takes no `module`, `builtin` or `registry`"
                .to_owned(),
        );
    }
    if stage.condition.is_some()
        || stage.select.is_some()
        || !stage.types.is_empty()
        || !stage.functions.is_empty()
    {
        return err(
            "kind",
            "`where`, `select`, `types` and `functions` are for `filter` and `project` stages"
                .to_owned(),
        );
    }
    if stage.on_error != super::OnError::Dlq {
        return err(
            "on_error",
            "an `enrich` stage refuses only rows whose key is not in the table: say what happens to them with `on_miss` (\"null\", \"drop\" or \"dlq\")".to_owned(),
        );
    }
    let Some(name) = &stage.table else {
        return err(
            "table",
            "an `enrich` stage needs the table it reads".to_owned(),
        );
    };
    let Some(table) = spec.tables.iter().find(|t| &t.name == name) else {
        let names: Vec<&str> = spec.tables.iter().map(|t| t.name.as_str()).collect();
        return err(
            "table",
            match names.is_empty() {
                true => format!("no table `{name}`: the spec declares no [[tables]]"),
                false => format!("no table `{name}` (the spec declares {})", names.join(", ")),
            },
        );
    };
    match &stage.on {
        None => {
            return err(
                "on",
                format!(
                    "an `enrich` stage needs the row field matched with the table's key `{}`",
                    table.key
                ),
            );
        }
        Some(on) if on.trim().is_empty() => {
            return err("on", "must name a row field".to_owned());
        }
        Some(_) => {}
    }
    if let Some(columns) = &stage.columns {
        if columns.is_empty() {
            return err("columns", "names no column to add".to_owned());
        }
        for (j, column) in columns.iter().enumerate() {
            if columns[..j].contains(column) {
                return err("columns", format!("`{column}` is named twice"));
            }
        }
    }
    for from in stage.rename.keys() {
        match &stage.columns {
            Some(columns) if !columns.contains(from) => {
                return err(
                    &format!("rename.{from}"),
                    format!("`{from}` is not one of the `columns` added"),
                );
            }
            None if *from == table.key => {
                return err(
                    &format!("rename.{from}"),
                    format!("the key column `{from}` is added only when `columns` names it"),
                );
            }
            _ => {}
        }
    }
    let outputs = enriched_names(stage);
    for (j, out) in outputs.iter().enumerate() {
        if out.trim().is_empty() {
            return err("rename", "a column cannot be renamed to nothing".to_owned());
        }
        if outputs[..j].contains(out) {
            return err(
                "rename",
                format!("two added columns would be named `{out}`"),
            );
        }
    }
    Ok(())
}

/// The names an `enrich` stage gives the columns it names in `columns` (renamed), when
/// it names them.
fn enriched_names(stage: &StageSpec) -> Vec<String> {
    stage
        .columns
        .iter()
        .flatten()
        .map(|c| stage.rename.get(c).cloned().unwrap_or_else(|| c.clone()))
        .collect()
}
