//! Joins with a reference table, run as a broadcast `enrich` stage before the query's
//! other stages: Flink's lookup join, `JOIN t FOR SYSTEM_TIME AS OF o.proc_time AS r ON
//! o.k = r.k` against a `filesystem` table (read once) or an `upsert-kafka` table (its topic
//! followed while the job runs), and a plain `JOIN` against a bounded (`filesystem`) table.
//! `JOIN` drops the rows without a match, `LEFT JOIN` keeps them with nulls. Any other join
//! is refused, naming it.
//!
//! The joined columns join the query's scope under their own names: `r.name` and `name`
//! are the same column, so a column name both tables have (other than the join key) is
//! refused. The key is added too, under the name `<alias>.<key>`, which only `r.key`
//! reads: it is null where a LEFT JOIN found no row (`o.key` and `key` read the source's).

use super::catalog::{Catalog, Column, ColumnSource, Table};
use super::connector::{Role, connector};
use super::{Pos, SqlError};
use crate::spec::{
    KeyFormat, OnError, OnMiss, SinkFormat, SinkSpec, StageKind, StageSpec, TableFormat,
    TableSource, TableSpec, TopicKeyFormat,
};
use crate::table::Declared;
use sqlparser::ast::{
    BinaryOperator, Expr, Ident, Join, JoinConstraint, JoinOperator, Spanned, TableFactor,
    TableVersion,
};

/// The name of the `enrich` stage a SQL join runs.
pub const LOOKUP_STAGE: &str = "lookup";

/// A join, planned.
#[derive(Debug)]
pub struct Lookup {
    pub stage: StageSpec,
    pub table: TableSpec,
    /// The Kafka cluster of an upsert-kafka table, and where it is named.
    pub brokers: Option<(String, Pos)>,
    /// The lookup table's columns the join adds (its key last, named `<alias>.<key>`).
    added: Vec<Column>,
}

impl Lookup {
    /// The source's columns and the joined ones: what the query's expressions may read.
    pub fn scope(&self, source: &Table) -> Table {
        let mut joined = source.clone();
        joined.columns.extend(self.added.iter().cloned());
        joined
    }
}

fn pos(node: &impl Spanned) -> Pos {
    Pos::of(node.span())
}

/// The alias of a FROM item (or its table's name).
pub fn alias_of(relation: &TableFactor) -> Option<&Ident> {
    match relation {
        TableFactor::Table { alias, name, .. } => alias
            .as_ref()
            .map(|a| &a.name)
            .or_else(|| name.0.last().and_then(|p| p.as_ident())),
        TableFactor::TableFunction { alias, .. } => alias.as_ref().map(|a| &a.name),
        _ => None,
    }
}

/// Plans `join` of `source` (named `source_alias` in the query) with a catalog table.
pub fn plan(
    catalog: &Catalog,
    source: &Table,
    source_alias: Option<&Ident>,
    join: &Join,
) -> Result<Lookup, SqlError> {
    let at = pos(&join.relation);
    let (constraint, on_miss) = match &join.join_operator {
        JoinOperator::Join(c) | JoinOperator::Inner(c) => (c, OnMiss::Drop),
        JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (c, OnMiss::Null),
        other => {
            let name = match other {
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) => "RIGHT JOIN",
                JoinOperator::FullOuter(_) => "FULL OUTER JOIN",
                JoinOperator::CrossJoin(_) => "CROSS JOIN",
                JoinOperator::Semi(_) | JoinOperator::LeftSemi(_) | JoinOperator::RightSemi(_) => {
                    "a SEMI JOIN"
                }
                JoinOperator::Anti(_) | JoinOperator::LeftAnti(_) | JoinOperator::RightAnti(_) => {
                    "an ANTI JOIN"
                }
                JoinOperator::AsOf { .. } => "ASOF JOIN",
                JoinOperator::CrossApply | JoinOperator::OuterApply => "APPLY",
                _ => "this kind of join",
            };
            return Err(unsupported_join(at, name));
        }
    };
    let TableFactor::Table {
        name,
        alias,
        version,
        args: None,
        ..
    } = &join.relation
    else {
        return Err(unsupported_join(at, &format!("JOIN {}", join.relation)));
    };
    let table = catalog.table(&name.to_string(), pos(name))?;
    let table_alias = alias
        .as_ref()
        .map(|a| &a.name)
        .or_else(|| name.0.last().and_then(|p| p.as_ident()));
    let source_kind = connector(table, Role::Sink)?;
    let bounded = matches!(
        &source_kind.sink,
        Some(SinkSpec::File { .. }) | Some(SinkSpec::Stdout {})
    );
    match version {
        Some(TableVersion::ForSystemTimeAsOf(time)) => proc_time(source, time)?,
        Some(other) => return Err(SqlError::unsupported(at, format!("{other}"))),
        None if bounded => {}
        None => {
            return Err(SqlError::unsupported_because(
                at,
                format!("a regular JOIN with the unbounded table `{}`", table.name),
                format!(
                    "join it as a lookup table: JOIN {} FOR SYSTEM_TIME AS OF <the source's PROCTIME() column> AS ...",
                    table.name
                ),
            ));
        }
    }
    let JoinConstraint::On(condition) = constraint else {
        return Err(SqlError::unsupported_because(
            at,
            "a join without ON",
            "write ON source.column = table.key",
        ));
    };
    let (on, key) = equality(condition, source, source_alias, table, table_alias)?;
    let (source_spec, brokers) = table_source(table, &source_kind)?;
    let mut added = Vec::new();
    for column in &table.columns {
        if column.name.eq_ignore_ascii_case(&key) {
            continue;
        }
        if source.column(&column.name).is_some() {
            return Err(SqlError::unsupported_because(
                column.at,
                format!(
                    "a join of tables that both have a column `{}` (`{}` and `{}`)",
                    column.name, source.name, table.name
                ),
                "name the lookup table's columns apart from the source's",
            ));
        }
        added.push(Column {
            nullable: true,
            ..column.clone()
        });
    }
    let alias = table_alias.map_or_else(|| table.name.clone(), |a| a.value.clone());
    let key_column = table.expect_column(&key, at)?;
    let key_read = format!("{alias}.{}", key_column.name);
    let mut columns: Vec<String> = added.iter().map(|c| c.name.clone()).collect();
    columns.push(key_column.name.clone());
    added.push(Column {
        name: key_read.clone(),
        nullable: true,
        ..key_column.clone()
    });
    let types = table
        .columns
        .iter()
        .filter(|c| Declared::of_sql(&c.sql_type).is_some())
        .map(|c| (c.name.clone(), c.sql_type.clone()))
        .collect();
    Ok(Lookup {
        stage: StageSpec {
            name: LOOKUP_STAGE.to_owned(),
            kind: StageKind::Enrich,
            module: None,
            builtin: None,
            registry: None,
            condition: None,
            select: None,
            types: Default::default(),
            functions: Default::default(),
            table: Some(table.name.clone()),
            on: Some(on),
            columns: Some(columns),
            rename: [(key_column.name.clone(), key_read.clone())].into(),
            on_miss: Some(on_miss),
            tables: Vec::new(),
            on_error: OnError::Dlq,
            limits: Default::default(),
        },
        table: TableSpec {
            name: table.name.clone(),
            key,
            source: source_spec,
            types,
        },
        brokers,
        added,
    })
}

fn unsupported_join(at: Pos, name: &str) -> SqlError {
    SqlError::unsupported_because(
        at,
        name,
        "a join here is a lookup join: [LEFT] JOIN t FOR SYSTEM_TIME AS OF o.proc_time AS r ON o.column = r.key, or a [LEFT] JOIN with a filesystem table",
    )
}

/// `FOR SYSTEM_TIME AS OF` must name the source's processing-time attribute.
fn proc_time(source: &Table, time: &Expr) -> Result<(), SqlError> {
    let name = match time {
        Expr::Identifier(ident) => &ident.value,
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => &parts[1].value,
        other => {
            return Err(SqlError::unsupported(
                pos(other),
                format!("FOR SYSTEM_TIME AS OF {other}"),
            ));
        }
    };
    let column = source.expect_column(name, pos(time))?;
    match column.source {
        ColumnSource::ProcTime => Ok(()),
        _ => Err(SqlError::unsupported_because(
            pos(time),
            format!(
                "FOR SYSTEM_TIME AS OF `{}` (not the processing-time attribute)",
                column.name
            ),
            "a lookup join reads the table as of each row's processing time: name the source's `AS PROCTIME()` column",
        )),
    }
}

/// `a.x = b.y`: the source's column and the table's key column.
fn equality(
    condition: &Expr,
    source: &Table,
    source_alias: Option<&Ident>,
    table: &Table,
    table_alias: Option<&Ident>,
) -> Result<(String, String), SqlError> {
    let not_equality = || {
        SqlError::unsupported_because(
            pos(condition),
            format!("the join condition {condition}"),
            "a lookup join matches one source column with the table's key: ON o.column = r.key",
        )
    };
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = condition
    else {
        return Err(not_equality());
    };
    // Which side each operand names: Some(true) the table, Some(false) the source.
    let side = |expr: &Expr| -> Option<(bool, String)> {
        let same = |a: &Ident, b: Option<&Ident>| {
            b.is_some_and(|b| a.value.eq_ignore_ascii_case(&b.value))
        };
        match expr {
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                let column = parts[1].value.clone();
                if same(&parts[0], table_alias) {
                    Some((true, column))
                } else if same(&parts[0], source_alias) {
                    Some((false, column))
                } else {
                    None
                }
            }
            Expr::Identifier(ident) if source.column(&ident.value).is_some() => {
                Some((false, ident.value.clone()))
            }
            Expr::Identifier(ident) if table.column(&ident.value).is_some() => {
                Some((true, ident.value.clone()))
            }
            _ => None,
        }
    };
    let (on, key) = match (side(left), side(right)) {
        (Some((false, on)), Some((true, key))) | (Some((true, key)), Some((false, on))) => {
            (on, key)
        }
        _ => return Err(not_equality()),
    };
    let on = source.expect_column(&on, pos(condition))?;
    let key = table.expect_column(&key, pos(condition))?;
    if on.source != ColumnSource::Field {
        return Err(SqlError::unsupported(
            pos(condition),
            format!("joining on the computed column `{}`", on.name),
        ));
    }
    let keyed_by = match &table.primary_key[..] {
        [] => true,
        [one] => one.eq_ignore_ascii_case(&key.name),
        _ => false,
    };
    if !keyed_by {
        return Err(SqlError::unsupported_because(
            pos(condition),
            format!(
                "a lookup on `{}` instead of the PRIMARY KEY of `{}` ({})",
                key.name,
                table.name,
                table.primary_key.join(", ")
            ),
            "a lookup table is read by its key",
        ));
    }
    Ok((on.name.clone(), key.name.clone()))
}

/// Where the table's rows come from: a filesystem table's file, an upsert-kafka table's
/// topic (its key raw text or JSON, its value JSON).
fn table_source(
    table: &Table,
    options: &super::connector::Connector,
) -> Result<(TableSource, Option<(String, Pos)>), SqlError> {
    let connector_at = super::connector::at_of(table, "connector");
    match &options.sink {
        Some(SinkSpec::File { path }) => {
            let csv = options
                .value_format
                .as_ref()
                .is_some_and(|f| f.kind == super::format::FormatKind::Csv);
            // Flink's `csv` has no header row: its fields are the physical columns, in order.
            let (format, columns) = match csv {
                true => (
                    TableFormat::Csv,
                    Some(
                        table
                            .columns
                            .iter()
                            .filter(|c| c.source == ColumnSource::Field)
                            .map(|c| c.name.clone())
                            .collect(),
                    ),
                ),
                false => (TableFormat::Json, None),
            };
            Ok((
                TableSource::File {
                    path: path.clone(),
                    format: Some(format),
                    columns,
                },
                None,
            ))
        }
        Some(SinkSpec::Kafka {
            topic,
            format,
            key_format,
            ..
        }) if !table.primary_key.is_empty() => {
            if *format != SinkFormat::Json {
                return Err(SqlError::unsupported_because(
                    super::connector::at_of(table, "value.format"),
                    format!("the lookup table `{}` in Avro", table.name),
                    "its topic's values are read as JSON",
                ));
            }
            let key_format = match key_format {
                Some(KeyFormat::Raw) => TopicKeyFormat::Text,
                Some(KeyFormat::Json) => TopicKeyFormat::Json,
                _ => {
                    return Err(SqlError::unsupported_because(
                        super::connector::at_of(table, "key.format"),
                        format!("the lookup table `{}` with this key format", table.name),
                        "its record keys are read as text ('key.format' = 'raw') or JSON ('key.format' = 'json')",
                    ));
                }
            };
            let brokers = options.brokers.clone().map(|b| {
                (
                    b,
                    super::connector::at_of(table, "properties.bootstrap.servers"),
                )
            });
            Ok((
                TableSource::Kafka {
                    topic: topic.clone(),
                    key_format,
                },
                brokers,
            ))
        }
        _ => Err(SqlError::unsupported_because(
            connector_at,
            format!("the table `{}` as a lookup table", table.name),
            "a lookup table has the connector 'filesystem' or 'upsert-kafka'",
        )),
    }
}
