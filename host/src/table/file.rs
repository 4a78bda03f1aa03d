//! A table from a file, read once at start: JSON lines (one object per line, blank lines
//! skipped) or CSV, with a header row or with its fields named by the spec. Anything that
//! is not a row of the table — invalid JSON, a missing or repeated key, a value of another
//! type than its column, a CSV record of another width — is an error naming the file and
//! the line.

use super::TableError;
use super::contents::{Contents, Declared, key_text};
use crate::spec::{TableFormat, TableSpec};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// Reads the table `spec` from `path`; `columns` names the fields of a CSV file that has
/// no header row.
pub fn load(
    spec: &TableSpec,
    path: &Path,
    format: Option<TableFormat>,
    columns: Option<&[String]>,
) -> Result<Contents, TableError> {
    let format = match format.or_else(|| format_of(path)) {
        Some(format) => format,
        None => {
            return Err(TableError::Invalid {
                table: spec.name.clone(),
                message: format!(
                    "cannot tell how {} is written from its extension: give format = \"json\" (JSON lines) or \"csv\"",
                    path.display()
                ),
            });
        }
    };
    let read_error = |error| TableError::Read {
        table: spec.name.clone(),
        path: path.to_owned(),
        error,
    };
    let mut loader = Loader {
        spec,
        path,
        contents: Contents::new(&spec.types),
        first_line: HashMap::new(),
    };
    match format {
        TableFormat::Json => {
            let text = std::fs::read_to_string(path).map_err(read_error)?;
            for (n, line) in (1u64..).zip(text.lines()) {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let row = match serde_json::from_str::<Value>(line) {
                    Ok(Value::Object(row)) => row,
                    Ok(other) => {
                        return Err(loader.error(
                            n,
                            format!("a row is a JSON object, not {}", kind_of(&other)),
                        ));
                    }
                    Err(err) => return Err(loader.error(n, format!("invalid JSON: {err}"))),
                };
                loader.add(n, row)?;
            }
        }
        TableFormat::Csv => {
            let file = std::fs::File::open(path).map_err(read_error)?;
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(columns.is_none())
                // Without a header, every record's length is checked against `columns`.
                .flexible(columns.is_some())
                .from_reader(std::io::BufReader::new(file));
            let header: Vec<String> = match columns {
                Some(columns) => columns.to_vec(),
                None => reader
                    .headers()
                    .map_err(|err| loader.csv_error(1, err))?
                    .iter()
                    .map(|h| h.trim().to_owned())
                    .collect(),
            };
            if !header.contains(&spec.key) {
                return Err(loader.error(
                    1,
                    format!(
                        "the header has no key column `{}` (it has {})",
                        spec.key,
                        header.join(", ")
                    ),
                ));
            }
            for (i, name) in header.iter().enumerate() {
                if header[..i].contains(name) {
                    return Err(loader.error(1, format!("the header names `{name}` twice")));
                }
            }
            let types: Vec<Declared> = header
                .iter()
                .map(|h| {
                    spec.types
                        .get(h)
                        .and_then(|t| Declared::of_sql(t))
                        .unwrap_or(Declared::Text)
                })
                .collect();
            for record in reader.records() {
                let record = record.map_err(|err| {
                    let line = err.position().map_or(0, |p| p.line());
                    loader.csv_error(line, err)
                })?;
                let n = record.position().map_or(0, |p| p.line());
                if record.len() != header.len() {
                    return Err(loader.error(
                        n,
                        format!(
                            "{} fields, but the table has {} columns ({})",
                            record.len(),
                            header.len(),
                            header.join(", ")
                        ),
                    ));
                }
                let mut row = Map::new();
                for ((name, ty), field) in header.iter().zip(&types).zip(record.iter()) {
                    let value = ty
                        .parse_text(field)
                        .map_err(|reason| loader.error(n, format!("column `{name}`: {reason}")))?;
                    row.insert(name.clone(), value);
                }
                loader.add(n, row)?;
            }
        }
    }
    Ok(loader.contents)
}

/// The format an extension says: `.jsonl`, `.ndjson`, `.json` or `.csv`.
pub fn format_of(path: &Path) -> Option<TableFormat> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "jsonl" | "ndjson" | "json" => Some(TableFormat::Json),
        "csv" => Some(TableFormat::Csv),
        _ => None,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Loader<'a> {
    spec: &'a TableSpec,
    path: &'a Path,
    contents: Contents,
    /// The line each key was read on.
    first_line: HashMap<String, u64>,
}

impl Loader<'_> {
    fn error(&self, line: u64, message: String) -> TableError {
        TableError::Line {
            table: self.spec.name.clone(),
            path: self.path.to_owned(),
            line,
            message,
        }
    }

    fn csv_error(&self, line: u64, err: csv::Error) -> TableError {
        match err.into_kind() {
            csv::ErrorKind::Io(error) => TableError::Read {
                table: self.spec.name.clone(),
                path: self.path.to_owned(),
                error,
            },
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => self.error(
                line,
                format!("{len} field(s), the header has {expected_len}"),
            ),
            csv::ErrorKind::Utf8 { .. } => self.error(line, "not UTF-8 text".to_owned()),
            other => self.error(line, format!("{other:?}")),
        }
    }

    /// Adds the row read on line `n`.
    fn add(&mut self, n: u64, row: Map<String, Value>) -> Result<(), TableError> {
        let key =
            key_text(row.get(&self.spec.key), &self.spec.key).map_err(|m| self.error(n, m))?;
        if let Some(first) = self.first_line.get(&key) {
            return Err(self.error(
                n,
                format!("the key {key:?} is already the row of line {first}"),
            ));
        }
        self.contents
            .upsert(&key, row)
            .map_err(|message| self.error(n, message))?;
        self.first_line.insert(key, n);
        Ok(())
    }
}
