//! A table's rows by key. Each column keeps one type, set by its declaration or by its
//! first value: integers join a float column as floats (and a float widens an integer
//! column), anything else of another type is refused with the column and the value.

use rivulet_rows::{Column, Packed, Values};
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::collections::BTreeMap;

/// One value of a table row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Boolean(bool),
    Integer(i64),
    Float(f64),
    Text(Box<str>),
    /// A nested value (object, array), as JSON text.
    Json(Box<str>),
}

/// The type of a column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellKind {
    Boolean,
    Integer,
    Float,
    Text,
    Json,
}

impl CellKind {
    fn describe(self) -> &'static str {
        match self {
            CellKind::Boolean => "booleans",
            CellKind::Integer => "integers",
            CellKind::Float => "numbers",
            CellKind::Text => "text",
            CellKind::Json => "nested JSON values",
        }
    }
}

/// A column's declared SQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Boolean,
    Integer,
    Float,
    Text,
}

impl Declared {
    /// `BIGINT`, `INT`, `DOUBLE`, `DECIMAL(10, 2)`, `STRING`, `BOOLEAN`, ... (any case).
    pub fn of_sql(name: &str) -> Option<Declared> {
        use crate::expr::Type;
        let upper = name.trim().to_ascii_uppercase();
        if ["DECIMAL", "NUMERIC", "DEC"]
            .iter()
            .any(|t| upper.starts_with(t))
        {
            return Some(Declared::Float);
        }
        match Type::of_sql(&upper)? {
            Type::Boolean => Some(Declared::Boolean),
            Type::Integer => Some(Declared::Integer),
            Type::Float => Some(Declared::Float),
            Type::Text | Type::Timestamp => Some(Declared::Text),
            Type::Any => None,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Declared::Boolean => "BOOLEAN",
            Declared::Integer => "BIGINT",
            Declared::Float => "DOUBLE",
            Declared::Text => "STRING",
        }
    }

    fn kind(self) -> CellKind {
        match self {
            Declared::Boolean => CellKind::Boolean,
            Declared::Integer => CellKind::Integer,
            Declared::Float => CellKind::Float,
            Declared::Text => CellKind::Text,
        }
    }

    /// CSV text as a JSON value of this type (empty text is null).
    pub fn parse_text(self, text: &str) -> Result<Value, String> {
        if text.is_empty() {
            return Ok(Value::Null);
        }
        let trimmed = text.trim();
        let parsed = match self {
            Declared::Text => return Ok(Value::String(text.to_owned())),
            Declared::Integer => trimmed.parse::<i64>().ok().map(Value::from),
            Declared::Float => trimmed
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            Declared::Boolean => match trimmed.to_ascii_lowercase().as_str() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
        };
        parsed.ok_or_else(|| format!("{text:?} is not a {}", self.sql()))
    }
}

/// A table key as text: keys match by their text, so `42` and `"42"` are the same key.
pub fn key_text(value: Option<&Value>, column: &str) -> Result<String, String> {
    match value {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        None | Some(Value::Null) => Err(format!("the key column `{column}` is missing or null")),
        Some(other) => Err(format!(
            "the key column `{column}` must be text, an integer or a boolean, not {other}"
        )),
    }
}

/// A row's value as a cell of the declared type (if any).
fn cell_of(value: Value, declared: Option<Declared>) -> Result<Cell, String> {
    let cell = match value {
        Value::Null => Cell::Null,
        Value::Bool(b) => Cell::Boolean(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) if declared != Some(Declared::Float) => Cell::Integer(i),
            _ => Cell::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cell::Text(s.into_boxed_str()),
        nested => Cell::Json(nested.to_string().into_boxed_str()),
    };
    match (declared, cell_kind(&cell)) {
        (Some(declared), Some(kind)) if declared.kind() != kind => Err(format!(
            "is {}, not {}",
            declared.sql(),
            describe_cell(&cell)
        )),
        _ => Ok(cell),
    }
}

fn cell_kind(cell: &Cell) -> Option<CellKind> {
    Some(match cell {
        Cell::Null => return None,
        Cell::Boolean(_) => CellKind::Boolean,
        Cell::Integer(_) => CellKind::Integer,
        Cell::Float(_) => CellKind::Float,
        Cell::Text(_) => CellKind::Text,
        Cell::Json(_) => CellKind::Json,
    })
}

fn describe_cell(cell: &Cell) -> String {
    match cell {
        Cell::Null => "null".to_owned(),
        Cell::Boolean(b) => b.to_string(),
        Cell::Integer(i) => i.to_string(),
        Cell::Float(f) => f.to_string(),
        Cell::Text(t) => format!("{t:?}"),
        Cell::Json(j) => j.to_string(),
    }
}

static NULL: Cell = Cell::Null;

/// The rows of a table by key, and its columns.
#[derive(Debug, Default)]
pub struct Contents {
    columns: Vec<String>,
    kinds: Vec<Option<CellKind>>,
    declared: BTreeMap<String, Declared>,
    rows: FxHashMap<Box<str>, Box<[Cell]>>,
}

impl Contents {
    /// An empty table; `types` are the declared SQL types of columns (checked by the spec).
    pub fn new(types: &BTreeMap<String, String>) -> Self {
        let declared: BTreeMap<String, Declared> = types
            .iter()
            .filter_map(|(name, ty)| Declared::of_sql(ty).map(|d| (name.clone(), d)))
            .collect();
        let mut contents = Contents {
            declared,
            ..Contents::default()
        };
        let names: Vec<String> = contents.declared.keys().cloned().collect();
        for name in names {
            contents.add_column(&name);
        }
        contents
    }

    fn add_column(&mut self, name: &str) -> usize {
        self.columns.push(name.to_owned());
        self.kinds.push(self.declared.get(name).map(|d| d.kind()));
        self.columns.len() - 1
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The column names, in the order they were first seen (declared ones first).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// The type of column `index` (None: only nulls so far).
    pub fn kind(&self, index: usize) -> Option<CellKind> {
        self.kinds.get(index).copied().flatten()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.rows.contains_key(key)
    }

    /// The row of `key`.
    pub fn get(&self, key: &str) -> Option<&[Cell]> {
        self.rows.get(key).map(|row| &**row)
    }

    /// Cell `index` of `row` (null where the row has none).
    pub fn cell(row: &[Cell], index: usize) -> &Cell {
        row.get(index).unwrap_or(&NULL)
    }

    /// Sets `key`'s row to `row`'s fields. A field of another type than its column holds
    /// refuses the whole row (the table is left as it was) with the reason.
    pub fn upsert(&mut self, key: &str, row: serde_json::Map<String, Value>) -> Result<(), String> {
        let mut placed: Vec<(usize, Cell)> = Vec::with_capacity(row.len());
        let mut new_columns: Vec<String> = Vec::new();
        let mut kinds: Vec<(usize, CellKind)> = Vec::new();
        for (name, value) in row {
            let index = match self.column_index(&name) {
                Some(index) => index,
                None => match new_columns.iter().position(|c| *c == name) {
                    Some(at) => self.columns.len() + at,
                    None => {
                        new_columns.push(name.clone());
                        self.columns.len() + new_columns.len() - 1
                    }
                },
            };
            let declared = self.declared.get(&name).copied();
            let mut cell =
                cell_of(value, declared).map_err(|reason| format!("column `{name}` {reason}"))?;
            let Some(kind) = cell_kind(&cell) else {
                placed.push((index, cell));
                continue;
            };
            let current = self.kind(index).or_else(|| {
                kinds
                    .iter()
                    .rev()
                    .find(|(i, _)| *i == index)
                    .map(|(_, k)| *k)
            });
            match (current, kind) {
                (None, kind) => kinds.push((index, kind)),
                (Some(a), b) if a == b => {}
                (Some(CellKind::Float), CellKind::Integer) => {
                    if let Cell::Integer(i) = cell {
                        cell = Cell::Float(i as f64);
                    }
                }
                (Some(CellKind::Integer), CellKind::Float) => kinds.push((index, CellKind::Float)),
                (Some(holds), _) => {
                    return Err(format!(
                        "column `{name}` holds {}, not {}",
                        holds.describe(),
                        describe_cell(&cell)
                    ));
                }
            }
            placed.push((index, cell));
        }
        for name in new_columns {
            self.add_column(&name);
        }
        for (index, kind) in kinds {
            if self.kind(index) == Some(CellKind::Integer) && kind == CellKind::Float {
                self.widen(index);
            }
            if let Some(slot) = self.kinds.get_mut(index) {
                *slot = Some(kind);
            }
        }
        let width = placed.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
        let mut cells = vec![Cell::Null; width];
        for (index, cell) in placed {
            let cell = match (self.kind(index), cell) {
                (Some(CellKind::Float), Cell::Integer(i)) => Cell::Float(i as f64),
                (_, cell) => cell,
            };
            cells[index] = cell;
        }
        self.rows.insert(key.into(), cells.into_boxed_slice());
        Ok(())
    }

    /// An integer column becomes a float column.
    fn widen(&mut self, index: usize) {
        for row in self.rows.values_mut() {
            if let Some(cell) = row.get_mut(index)
                && let Cell::Integer(i) = *cell
            {
                *cell = Cell::Float(i as f64);
            }
        }
    }

    /// Deletes `key`; whether it was there.
    pub fn delete(&mut self, key: &str) -> bool {
        self.rows.remove(key).is_some()
    }
}

/// A column named `name` of `cells` (None: null), of the column type `kind` (None: only
/// nulls, a text column of nulls).
pub fn build_column<'a>(
    name: &str,
    kind: Option<CellKind>,
    cells: impl ExactSizeIterator<Item = Option<&'a Cell>>,
) -> Column {
    let len = cells.len();
    let mut nulls: Vec<u8> = Vec::new();
    let mut null = |i: usize| {
        if nulls.len() <= i / 8 {
            nulls.resize(i / 8 + 1, 0);
        }
        nulls[i / 8] |= 1 << (i % 8);
    };
    let values = match kind {
        Some(CellKind::Boolean) => {
            let mut v = Vec::with_capacity(len);
            for (i, cell) in cells.enumerate() {
                match cell {
                    Some(Cell::Boolean(b)) => v.push(*b),
                    _ => {
                        null(i);
                        v.push(false);
                    }
                }
            }
            Values::Boolean(v)
        }
        Some(CellKind::Integer) => {
            let mut v = Vec::with_capacity(len);
            for (i, cell) in cells.enumerate() {
                match cell {
                    Some(Cell::Integer(x)) => v.push(*x),
                    _ => {
                        null(i);
                        v.push(0);
                    }
                }
            }
            Values::Integer(v)
        }
        Some(CellKind::Float) => {
            let mut v = Vec::with_capacity(len);
            for (i, cell) in cells.enumerate() {
                match cell {
                    Some(Cell::Float(x)) => v.push(*x),
                    Some(Cell::Integer(x)) => v.push(*x as f64),
                    _ => {
                        null(i);
                        v.push(0.0);
                    }
                }
            }
            Values::Float(v)
        }
        Some(CellKind::Text | CellKind::Json) | None => {
            let mut packed = Packed::new();
            for (i, cell) in cells.enumerate() {
                match cell {
                    Some(Cell::Text(t) | Cell::Json(t)) => packed.push(t.as_bytes()),
                    _ => {
                        null(i);
                        packed.push(b"");
                    }
                }
            }
            match kind {
                Some(CellKind::Json) => Values::Json(packed),
                _ => Values::Text(packed),
            }
        }
    };
    Column {
        name: name.to_owned(),
        nulls,
        values,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn integers_widen_a_column_to_floats_and_other_types_are_refused() {
        let mut contents = Contents::new(&BTreeMap::new());
        contents
            .upsert("a", row(json!({"k": "a", "n": 1})))
            .unwrap();
        contents
            .upsert("b", row(json!({"k": "b", "n": 2.5})))
            .unwrap();
        assert_eq!(contents.kind(1), Some(CellKind::Float));
        assert_eq!(contents.get("a").unwrap()[1], Cell::Float(1.0));
        let err = contents
            .upsert("c", row(json!({"k": "c", "n": "three"})))
            .unwrap_err();
        assert_eq!(err, "column `n` holds numbers, not \"three\"");
        assert!(!contents.contains("c"), "a refused row is not half written");
        let err = contents
            .upsert("a", row(json!({"k": "a", "n": 3, "x": true, "y": [1]})))
            .map(|()| contents.get("a").unwrap().to_vec())
            .unwrap();
        assert_eq!(
            err,
            vec![
                Cell::Text("a".into()),
                Cell::Float(3.0),
                Cell::Boolean(true),
                Cell::Json("[1]".into())
            ]
        );
    }

    #[test]
    fn declared_types_are_checked_and_csv_text_is_read_as_its_type() {
        let types = BTreeMap::from([("pop".to_owned(), "BIGINT".to_owned())]);
        let mut contents = Contents::new(&types);
        assert_eq!(contents.columns(), ["pop"]);
        let err = contents.upsert("a", row(json!({"pop": 1.5}))).unwrap_err();
        assert_eq!(err, "column `pop` is BIGINT, not 1.5");
        assert_eq!(Declared::Integer.parse_text(" 42 "), Ok(json!(42)));
        assert_eq!(Declared::Integer.parse_text(""), Ok(Value::Null));
        assert_eq!(
            Declared::Boolean.parse_text("yes"),
            Err("\"yes\" is not a BOOLEAN".to_owned())
        );
        assert_eq!(Declared::of_sql("decimal(10, 2)"), Some(Declared::Float));
        assert_eq!(Declared::of_sql("MAP<STRING, INT>"), None);
    }

    #[test]
    fn keys_match_by_their_text() {
        assert_eq!(key_text(Some(&json!(42)), "id"), Ok("42".to_owned()));
        assert_eq!(key_text(Some(&json!("42")), "id"), Ok("42".to_owned()));
        assert_eq!(
            key_text(Some(&json!(1.5)), "id"),
            Err("the key column `id` must be text, an integer or a boolean, not 1.5".to_owned())
        );
        assert_eq!(
            key_text(None, "id"),
            Err("the key column `id` is missing or null".to_owned())
        );
    }
}
