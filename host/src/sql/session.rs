//! A SQL session: the tables, functions and settings declared so far, and what each next
//! statement does with them. Scripts (`rivulet sql -f`) and the interactive client both
//! run their statements through one.

use super::catalog::{Catalog, Column, ColumnSource, Table};
use super::function::Functions;
use super::parse::{OptionDef, Statement};
use super::plan::{Outcome, plan_insert, plan_query};
use super::{Pos, SqlError};
use crate::spec::PipelineSpec;
use sqlparser::ast::{Expr, SelectItem, SetExpr};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub struct Session {
    catalog: Catalog,
    functions: Functions,
    settings: Vec<(String, String, Pos)>,
    /// Where relative paths (functions) are resolved.
    base: PathBuf,
    notes: Vec<String>,
    /// The INSERTs of an open statement set.
    set: Option<(Vec<PipelineSpec>, Pos)>,
}

impl Session {
    /// A session whose relative paths are relative to `origin`'s folder.
    pub fn new(origin: &Path) -> Self {
        let base = origin
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Session {
            catalog: Catalog::default(),
            functions: Functions::default(),
            settings: Vec::new(),
            base,
            notes: Vec::new(),
            set: None,
        }
    }

    pub fn settings(&self) -> &[(String, String, Pos)] {
        &self.settings
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// A statement set still open at the end is an error.
    pub fn check_closed(&self) -> Result<(), SqlError> {
        match &self.set {
            Some((_, at)) => Err(SqlError::invalid(*at, "the statement set has no END")),
            None => Ok(()),
        }
    }

    pub fn execute(&mut self, statement: Statement) -> Result<Outcome, SqlError> {
        if let Some((_, begun)) = &self.set
            && !matches!(
                statement,
                Statement::Insert { .. } | Statement::EndSet { .. }
            )
        {
            let begun = *begun;
            return Err(SqlError::invalid(
                begun,
                "a statement set holds only INSERT INTO statements up to its END",
            ));
        }
        Ok(match statement {
            Statement::CreateTable(def) => {
                self.catalog.add(*def)?;
                Outcome::Nothing
            }
            Statement::Set { key, value, at } => {
                self.settings.retain(|(k, _, _)| *k != key);
                self.settings.push((key, value, at));
                Outcome::Nothing
            }
            Statement::CreateFunction {
                name,
                path,
                at,
                if_not_exists,
            } => {
                self.functions
                    .add(&name, &path, &self.base, at, if_not_exists)?;
                Outcome::Nothing
            }
            Statement::Drop {
                function,
                name,
                if_exists,
                at,
            } => {
                let dropped = match function {
                    true => self.functions.remove(&name),
                    false => self.catalog.remove(&name),
                };
                if !dropped && !if_exists {
                    let what = if function { "function" } else { "table" };
                    return Err(SqlError::invalid(at, format!("unknown {what} `{name}`")));
                }
                Outcome::Nothing
            }
            Statement::AddJar { .. } => {
                let note = "ADD JAR ignored: rivulet's functions are Wasm components (CREATE FUNCTION name AS 'udf.wasm' LANGUAGE WASM)".to_owned();
                self.notes.push(note.clone());
                Outcome::Text(note)
            }
            Statement::Show { functions, .. } => {
                let names: Vec<String> = match functions {
                    true => self.functions.names(),
                    false => self
                        .catalog
                        .tables()
                        .iter()
                        .map(|t| t.name.clone())
                        .collect(),
                };
                let header = if functions {
                    "function name"
                } else {
                    "table name"
                };
                Outcome::Text(table_text(
                    &[header],
                    names.into_iter().map(|n| vec![n]).collect(),
                ))
            }
            Statement::Describe { name, at } => {
                let table = self.catalog.table(&name, at)?;
                Outcome::Text(describe(table))
            }
            Statement::BeginSet { at } => {
                self.set = Some((Vec::new(), at));
                Outcome::Nothing
            }
            Statement::EndSet { at } => match self.set.take() {
                Some((specs, _)) => Outcome::Jobs {
                    specs,
                    explain: false,
                },
                None => return Err(SqlError::invalid(at, "END without BEGIN STATEMENT SET")),
            },
            Statement::Insert {
                insert,
                explain,
                at,
            } => {
                let spec =
                    plan_insert(&self.catalog, &self.functions, &insert, at, &mut self.notes)?;
                match &mut self.set {
                    Some((specs, _)) => {
                        specs.push(spec);
                        Outcome::Nothing
                    }
                    None => Outcome::Jobs {
                        specs: vec![spec],
                        explain,
                    },
                }
            }
            Statement::Query { query, explain, at } => {
                let (sink, columns) = result_table(&query, at);
                let spec = plan_query(
                    &self.catalog,
                    &self.functions,
                    (&sink, at),
                    &query,
                    at,
                    &mut self.notes,
                )?;
                Outcome::Query {
                    spec: Box::new(spec),
                    columns,
                    explain,
                    at,
                }
            }
        })
    }
}

/// The table a SELECT's rows go to when shown: a column per item, named as Flink names it.
fn result_table(query: &sqlparser::ast::Query, at: Pos) -> (Table, Vec<String>) {
    let items: &[SelectItem] = match query.body.as_ref() {
        SetExpr::Select(select) => &select.projection,
        _ => &[],
    };
    let mut columns = Vec::new();
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (name, expr) = match item {
            SelectItem::ExprWithAlias { expr, alias } => (alias.value.clone(), Some(expr)),
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => (ident.value.clone(), None),
            SelectItem::UnnamedExpr(expr) => (format!("EXPR${i}"), Some(expr)),
            _ => (format!("EXPR${i}"), None),
        };
        let sql_type = match (name.to_ascii_lowercase().as_str(), expr) {
            ("window_start" | "window_end", _) => "TIMESTAMP(3)",
            (_, Some(Expr::Function(f)))
                if ["COUNT", "SUM", "MIN", "MAX", "AVG"]
                    .iter()
                    .any(|a| f.name.to_string().eq_ignore_ascii_case(a)) =>
            {
                "DOUBLE"
            }
            _ => "ANY",
        };
        names.push(name.clone());
        columns.push(Column {
            name,
            at,
            sql_type: sql_type.to_owned(),
            source: ColumnSource::Field,
            nullable: true,
        });
    }
    let table = Table {
        name: "query".to_owned(),
        at,
        columns,
        watermark: None,
        primary_key: Vec::new(),
        primary_key_at: at,
        options: vec![OptionDef {
            key: "connector".to_owned(),
            value: "print".to_owned(),
            at,
        }],
    };
    (table, names)
}

fn describe(table: &Table) -> String {
    let rows = table
        .columns
        .iter()
        .map(|c| {
            let extras = match &c.source {
                ColumnSource::Field => String::new(),
                ColumnSource::ProcTime => "AS PROCTIME()".to_owned(),
                ColumnSource::EpochMillis(field) => format!("AS TO_TIMESTAMP_LTZ({field}, 3)"),
                ColumnSource::KafkaTimestamp => "METADATA FROM 'timestamp'".to_owned(),
            };
            let watermark = match &table.watermark {
                Some(w) if w.column == c.name => {
                    format!(
                        "`{}` - INTERVAL '{}' SECOND",
                        w.column,
                        w.delay.as_secs_f64()
                    )
                }
                _ => String::new(),
            };
            vec![c.name.clone(), c.sql_type.clone(), extras, watermark]
        })
        .collect();
    table_text(&["name", "type", "extras", "watermark"], rows)
}

/// Rows as Flink's client prints them: a boxed table.
pub fn table_text(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut String| {
        out.push('+');
        for w in &widths {
            out.push_str(&"-".repeat(w + 2));
            out.push('+');
        }
        out.push('\n');
    };
    let row_text = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (w, cell) in widths.iter().zip(cells) {
            let _ = write!(out, " {cell:<w$} |");
        }
        out.push('\n');
    };
    let mut out = String::new();
    line(&mut out);
    row_text(
        &mut out,
        &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
    );
    line(&mut out);
    let count = rows.len();
    for row in rows {
        row_text(&mut out, &row);
    }
    line(&mut out);
    let _ = writeln!(
        out,
        "{count} row{} in set",
        if count == 1 { "" } else { "s" }
    );
    out
}
