//! Statements → a [`PipelineSpec`]: the source table's connector, the built-in `json` parse
//! stage, the tumbling window and its built-in aggregates, and the sink table's connector.

use super::catalog::{Catalog, ColumnSource, Table};
use super::connector::{Role, connector};
use super::function::Functions;
use super::parse::Statement;
use super::{Pos, SqlError, SqlJob, interval};
use crate::spec::{
    AggregateSpec, BatchSpec, BuiltinFn, BuiltinSpec, DeadLetterSpec, KafkaSpec, OnError,
    PipelineSpec, StageKind, StageSpec, TimeDomain, WindowSpec,
};
use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Insert, Query,
    SelectItem, SetExpr, Spanned, TableFactor, TableObject,
};
use std::path::Path;
use std::time::Duration;

/// The name of the built-in parse stage a SQL job over JSON runs (`parse-avro` over Avro).
pub const PARSE_STAGE: &str = "parse-json";

/// `SET` keys that change the job.
const SETTINGS_USED: &[&str] = &[
    "pipeline.name",
    "parallelism.default",
    "table.exec.source.idle-timeout",
    "rivulet.dead-letters.topic",
    "rivulet.dead-letters.path",
    "execution.checkpointing.mode",
    "execution.checkpointing.interval",
];
/// `SET` keys rivulet knows and honours in its own way (a note says how).
const SETTINGS_NOTED: &[(&str, &str)] = &[
    ("execution.runtime-mode", "jobs run in streaming mode"),
    (
        "sql-client.execution.result-mode",
        "results go to the sink table",
    ),
];

/// One output column of the SELECT list.
#[derive(Debug, Clone, PartialEq)]
enum Output {
    WindowStart,
    WindowEnd,
    Key,
    Aggregate(BuiltinFn, Option<String>),
}

/// Plans a parsed script (`origin` names it in spec messages; relative paths in it are
/// relative to its folder). Every INSERT becomes a job; they run side by side.
pub fn plan(statements: Vec<Statement>, origin: &Path) -> Result<SqlJob, SqlError> {
    let mut session = super::session::Session::new(origin);
    let mut specs = Vec::new();
    let mut explain = false;
    let mut printed = Vec::new();
    for statement in statements {
        match session.execute(statement)? {
            Outcome::Nothing => {}
            Outcome::Text(text) => printed.push(text),
            Outcome::Jobs {
                specs: planned,
                explain: e,
            } => {
                specs.extend(planned);
                explain |= e;
            }
            Outcome::Query { at, .. } => {
                return Err(SqlError::unsupported_because(
                    at,
                    "a SELECT without INSERT INTO in a script",
                    "the interactive client (`rivulet sql` without -f) prints a query's rows; a script inserts them into a table",
                ));
            }
        }
    }
    session.check_closed()?;
    let mut notes = session.take_notes();
    let mut specs = specs.into_iter();
    let Some(mut spec) = specs.next() else {
        return Err(SqlError::invalid(
            Pos { line: 1, column: 1 },
            "the script has no INSERT INTO ... SELECT: nothing to run",
        ));
    };
    let settings = session.settings().to_vec();
    apply_settings(&mut spec, &settings, &mut notes)?;
    let mut warnings = super::guarantee::apply(&mut spec, &settings);
    spec.validate(origin)?;
    let mut also = Vec::new();
    for mut other in specs {
        apply_settings(&mut other, &settings, &mut Vec::new())?;
        for warning in super::guarantee::apply(&mut other, &settings) {
            if !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
        other.validate(origin)?;
        also.push(other);
    }
    dedup_names(&mut spec, &mut also);
    Ok(SqlJob {
        spec,
        also,
        explain,
        notes,
        warnings,
        printed,
    })
}

/// Jobs side by side need their own names (their consumer groups and dead letters are named
/// after them): a repeated name gets `-2`, `-3`, ...
fn dedup_names(first: &mut PipelineSpec, rest: &mut [PipelineSpec]) {
    let mut seen = vec![first.name.clone()];
    for spec in rest {
        let mut n = 2;
        let base = spec.name.clone();
        while seen.contains(&spec.name) {
            spec.name = format!("{base}-{n}");
            n += 1;
        }
        seen.push(spec.name.clone());
    }
}

/// What a statement did.
#[derive(Debug)]
pub enum Outcome {
    /// A declaration or a setting.
    Nothing,
    /// Something to show (SHOW TABLES, DESCRIBE, a note).
    Text(String),
    /// Jobs to run: an INSERT, or the INSERTs of a statement set.
    Jobs {
        specs: Vec<PipelineSpec>,
        explain: bool,
    },
    /// A SELECT whose rows are to be shown: its job writes them to `spec`'s sink.
    Query {
        spec: Box<PipelineSpec>,
        columns: Vec<String>,
        explain: bool,
        at: Pos,
    },
}

pub fn apply_settings(
    spec: &mut PipelineSpec,
    settings: &[(String, String, Pos)],
    notes: &mut Vec<String>,
) -> Result<(), SqlError> {
    let mut ignored = Vec::new();
    for (key, value, at) in settings {
        match key.as_str() {
            "pipeline.name" => {
                if value.trim().is_empty() {
                    return Err(SqlError::invalid(*at, "'pipeline.name' must not be empty"));
                }
                spec.name = value.clone();
            }
            "parallelism.default" => {
                let tasks: usize = value.trim().parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    SqlError::invalid(
                        *at,
                        format!("'parallelism.default' is a number of tasks, at least 1, not '{value}'"),
                    )
                })?;
                spec.parallelism = Some(tasks);
            }
            "table.exec.source.idle-timeout" => {
                let timeout = flink_duration(value).map_err(|reason| {
                    SqlError::invalid(*at, format!("'table.exec.source.idle-timeout': {reason}"))
                })?;
                if let Some(window) = &mut spec.window {
                    window.idle_timeout = timeout;
                }
            }
            "rivulet.dead-letters.topic" => spec.dead_letters.topic = Some(value.clone()),
            "rivulet.dead-letters.path" => {
                let path = value.strip_prefix("file://").unwrap_or(value);
                spec.dead_letters.path = Some(path.into());
            }
            // The delivery guarantee (see `guarantee`).
            "execution.checkpointing.mode" => {}
            // No checkpoints: the job commits (exactly-once: a transaction) this often.
            "execution.checkpointing.interval" => {
                let interval = flink_duration(value).map_err(|reason| {
                    SqlError::invalid(*at, format!("'execution.checkpointing.interval': {reason}"))
                })?;
                spec.commit_interval = Some(interval);
            }
            "execution.runtime-mode" if !value.eq_ignore_ascii_case("streaming") => {
                return Err(SqlError::unsupported_because(
                    *at,
                    format!("'execution.runtime-mode' = '{value}'"),
                    "jobs run in streaming mode",
                ));
            }
            _ => match SETTINGS_NOTED.iter().find(|(k, _)| k == key) {
                Some((_, note)) => notes.push(format!("SET '{key}': {note}")),
                None => {
                    debug_assert!(!SETTINGS_USED.contains(&key.as_str()));
                    ignored.push(format!("'{key}'"));
                }
            },
        }
    }
    // With dead letters configured, malformed records that would be dropped, or would stop
    // the job, go there with the reason.
    if spec.dead_letters.topic.is_some() || spec.dead_letters.path.is_some() {
        for stage in &mut spec.stages {
            stage.on_error = OnError::Dlq;
        }
    }
    if !ignored.is_empty() {
        notes.push(format!(
            "ignored settings (no effect in rivulet): {}",
            ignored.join(", ")
        ));
    }
    Ok(())
}

/// A Flink duration: `30 s`, `30s`, `500 ms`, `1 min`, or a bare number of milliseconds.
fn flink_duration(text: &str) -> Result<Duration, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.is_empty() && compact.chars().all(|c| c.is_ascii_digit()) {
        return compact
            .parse()
            .map(Duration::from_millis)
            .map_err(|err| err.to_string());
    }
    let unit_at = compact
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(compact.len());
    let (number, unit) = compact.split_at(unit_at);
    let unit = match unit.to_ascii_lowercase().as_str() {
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => "ms",
        "s" | "sec" | "secs" | "second" | "seconds" => "s",
        "min" | "mins" | "minute" | "minutes" => "m",
        "h" | "hour" | "hours" => "h",
        other => return Err(format!("unknown unit '{other}' in '{text}'")),
    };
    crate::spec::parse_duration(&format!("{number}{unit}"))
}

fn span_pos(node: &impl Spanned) -> Pos {
    Pos::of(node.span())
}

pub(crate) fn plan_insert(
    catalog: &Catalog,
    functions: &Functions,
    insert: &Insert,
    at: Pos,
    notes: &mut Vec<String>,
) -> Result<PipelineSpec, SqlError> {
    let TableObject::TableName(sink_name) = &insert.table else {
        return Err(SqlError::unsupported(at, "INSERT INTO a table function"));
    };
    let sink_at = span_pos(sink_name);
    if insert.overwrite {
        return Err(SqlError::unsupported(at, "INSERT OVERWRITE"));
    }
    if let Some(column) = insert.columns.first() {
        return Err(SqlError::unsupported_because(
            span_pos(column),
            "an INSERT column list",
            "the SELECT list gives the sink table's columns in order",
        ));
    }
    if insert.partitioned.is_some() || insert.on.is_some() || insert.returning.is_some() {
        return Err(SqlError::unsupported(at, "this form of INSERT"));
    }
    let sink_table = catalog.table(&sink_name.to_string(), sink_at)?;
    let Some(query) = &insert.source else {
        return Err(SqlError::unsupported_because(
            at,
            "INSERT without a SELECT",
            "write INSERT INTO t SELECT ...",
        ));
    };
    plan_query(catalog, functions, (sink_table, sink_at), query, at, notes)
}

/// Plans `query` writing into `sink_table`'s columns by position.
pub(crate) fn plan_query(
    catalog: &Catalog,
    functions: &Functions,
    (sink_table, sink_at): (&Table, Pos),
    query: &Query,
    at: Pos,
    notes: &mut Vec<String>,
) -> Result<PipelineSpec, SqlError> {
    let select = select_of(query)?;
    if let Some(distinct) = &select.distinct {
        return Err(SqlError::unsupported(
            span_pos(&select.select_token.0),
            format!("{distinct}"),
        ));
    }
    if let Some(having) = &select.having {
        return Err(SqlError::unsupported(span_pos(having), "HAVING"));
    }
    if let Some(qualify) = &select.qualify {
        return Err(SqlError::unsupported(span_pos(qualify), "QUALIFY"));
    }
    if !select.named_window.is_empty()
        || !select.lateral_views.is_empty()
        || !select.sort_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || select.top.is_some()
    {
        return Err(SqlError::unsupported(
            span_pos(&select.select_token.0),
            "this form of SELECT",
        ));
    }
    // FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(col), INTERVAL ...)).
    let from = match &select.from[..] {
        [one] => one,
        [] => {
            return Err(SqlError::unsupported(
                span_pos(&select.select_token.0),
                "a SELECT without FROM",
            ));
        }
        [_, second, ..] => {
            return Err(SqlError::unsupported(
                span_pos(&second.relation),
                "a join (a second table in FROM)",
            ));
        }
    };
    let join = match &from.joins[..] {
        [] => None,
        [join] => Some(join),
        [_, second, ..] => {
            return Err(SqlError::unsupported(
                span_pos(&second.relation),
                "a second JOIN",
            ));
        }
    };
    let source_alias = super::lookup::alias_of(&from.relation).cloned();
    let lookup_of = |source: &Table| match join {
        Some(join) => super::lookup::plan(catalog, source, source_alias.as_ref(), join).map(Some),
        None => Ok(None),
    };
    if let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = &from.relation
    {
        if let Some(alias) = alias
            && !alias.columns.is_empty()
        {
            return Err(SqlError::unsupported(
                Pos::of(alias.name.span),
                "column aliases in FROM",
            ));
        }
        if !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty()) {
            return Err(SqlError::unsupported_because(
                span_pos(&select.select_token.0),
                "GROUP BY without a window",
                "aggregate over TABLE(TUMBLE(TABLE t, DESCRIPTOR(time_column), INTERVAL 'n' SECOND)) and GROUP BY window_start, window_end",
            ));
        }
        let source_table = catalog.table(&name.to_string(), span_pos(name))?;
        let lookup = lookup_of(source_table)?;
        let scope = lookup
            .as_ref()
            .map_or_else(|| source_table.clone(), |l| l.scope(source_table));
        let mut stages: Vec<StageSpec> = lookup.iter().map(|l| l.stage.clone()).collect();
        if let Some(condition) = &select.selection {
            stages.push(super::query::filter(condition, &scope, functions)?);
        }
        stages.push(super::query::project(
            &select.projection,
            &scope,
            sink_table,
            functions,
            (span_pos(&select.select_token.0), sink_at),
        )?);
        let spec = job_spec(source_table, sink_table, stages, None, None, at, notes)?;
        return with_lookup(spec, lookup, source_table);
    }
    // A joined window: its alias names the source in the join.
    let relation = match (&from.relation, join) {
        (TableFactor::TableFunction { expr, .. }, Some(_)) => TableFactor::TableFunction {
            expr: expr.clone(),
            alias: None,
        },
        (relation, _) => relation.clone(),
    };
    let window = window_of(&relation)?;
    let source_table = catalog.table(&window.table, window.table_at)?;
    let lookup = lookup_of(source_table)?;
    let scope = lookup
        .as_ref()
        .map_or_else(|| source_table.clone(), |l| l.scope(source_table));
    let mut stages: Vec<StageSpec> = lookup.iter().map(|l| l.stage.clone()).collect();
    if let Some(condition) = &select.selection {
        stages.push(super::query::filter(condition, &scope, functions)?);
    }
    let time_column = source_table.expect_column(&window.time_column, window.time_at)?;
    let (time, timestamp, delay) = match (&time_column.source, &source_table.watermark) {
        (ColumnSource::ProcTime, _) => (TimeDomain::Processing, None, Duration::ZERO),
        (_, Some(watermark)) if watermark.column == time_column.name => (
            TimeDomain::Event,
            Some(watermark.field.clone()),
            watermark.delay,
        ),
        _ => {
            return Err(SqlError::invalid(
                window.time_at,
                format!(
                    "DESCRIPTOR({}): `{}` is not a time attribute of `{}` (declare it `AS PROCTIME()`, or give it a WATERMARK)",
                    window.time_column, time_column.name, source_table.name
                ),
            ));
        }
    };
    // GROUP BY window_start, window_end[, key].
    let key = group_key(&select.group_by, &scope, span_pos(&select.select_token.0))?;
    let outputs = outputs(&select.projection, &scope, key.as_deref())?;
    // The sink's columns, in order, name the outputs.
    if outputs.len() != sink_table.columns.len() {
        let names: Vec<&str> = sink_table.columns.iter().map(|c| c.name.as_str()).collect();
        return Err(SqlError::invalid(
            sink_at,
            format!(
                "the SELECT list has {} columns but table `{}` has {} ({})",
                outputs.len(),
                sink_table.name,
                names.len(),
                names.join(", ")
            ),
        ));
    }
    let mut builtin = Vec::new();
    for ((output, item_at), column) in outputs.iter().zip(&sink_table.columns) {
        let natural = match output {
            Output::WindowStart => Some("window_start"),
            Output::WindowEnd => Some("window_end"),
            Output::Key => key.as_deref(),
            Output::Aggregate(function, field) => {
                builtin.push(BuiltinSpec {
                    name: column.name.clone(),
                    function: *function,
                    field: field.clone(),
                    input: field
                        .as_deref()
                        .and_then(|f| scope.column(f))
                        .and_then(|c| c.sql_type.parse().ok()),
                });
                None
            }
        };
        let (fits, gives) = match output {
            Output::WindowStart | Output::WindowEnd => {
                (column.sql_type.starts_with("TIMESTAMP"), "TIMESTAMP(3)")
            }
            Output::Key => (true, ""),
            Output::Aggregate(..) => (is_numeric(&column.sql_type), "a number"),
        };
        if !fits {
            return Err(SqlError::invalid(
                *item_at,
                format!(
                    "column `{}` of `{}` is {}, but the SELECT list gives it {gives}",
                    column.name, sink_table.name, column.sql_type
                ),
            ));
        }
        if let Some(natural) = natural
            && natural != column.name
        {
            return Err(SqlError::unsupported_because(
                *item_at,
                format!(
                    "writing `{natural}` into the column `{}` of `{}`",
                    column.name, sink_table.name
                ),
                format!(
                    "window results carry `{natural}` under its own name; name the sink column `{natural}`"
                ),
            ));
        }
    }
    let grouped = key.is_some();
    for (wanted, what) in [
        (Output::WindowStart, "window_start"),
        (Output::WindowEnd, "window_end"),
        (Output::Key, key.as_deref().unwrap_or_default()),
    ] {
        if (wanted != Output::Key || grouped) && !outputs.iter().any(|(o, _)| *o == wanted) {
            return Err(SqlError::unsupported_because(
                span_pos(&select.select_token.0),
                format!("a SELECT list without `{what}`"),
                "window results always carry window_start, window_end and the grouping column",
            ));
        }
    }
    if builtin.is_empty() {
        return Err(SqlError::unsupported(
            span_pos(&select.select_token.0),
            "a window query without an aggregate",
        ));
    }
    let window = WindowSpec {
        key,
        size: window.size,
        time,
        timestamp,
        out_of_orderness: delay,
        allowed_lateness: Duration::ZERO,
        idle_timeout: crate::spec::default_idle(),
        late_topic: None,
        late_path: None,
        exchange: Default::default(),
        partials_partitions: None,
    };
    let aggregate = AggregateSpec {
        module: None,
        builtin,
        limits: Default::default(),
    };
    let spec = job_spec(
        source_table,
        sink_table,
        stages,
        Some(window),
        Some(aggregate),
        at,
        notes,
    )?;
    with_lookup(spec, lookup, source_table)
}

/// The job with the table its join reads (and that table's Kafka cluster).
fn with_lookup(
    mut spec: PipelineSpec,
    lookup: Option<super::lookup::Lookup>,
    source: &Table,
) -> Result<PipelineSpec, SqlError> {
    let Some(lookup) = lookup else {
        return Ok(spec);
    };
    if let Some((brokers, at)) = lookup.brokers {
        match &spec.kafka.brokers {
            Some(job) if *job != brokers => {
                return Err(SqlError::invalid(
                    at,
                    format!(
                        "tables `{}` and `{}` name different Kafka clusters ('{job}', '{brokers}'); a job uses one",
                        source.name, lookup.table.name
                    ),
                ));
            }
            _ => spec.kafka.brokers = Some(brokers),
        }
    }
    spec.tables.push(lookup.table);
    Ok(spec)
}

/// The job reading `source_table` into `sink_table`: the built-in JSON parse, then
/// `stages`, then the window and its aggregates if any.
#[allow(clippy::too_many_arguments)]
fn job_spec(
    source_table: &Table,
    sink_table: &Table,
    stages: Vec<StageSpec>,
    window: Option<WindowSpec>,
    aggregate: Option<AggregateSpec>,
    at: Pos,
    notes: &mut Vec<String>,
) -> Result<PipelineSpec, SqlError> {
    let source = connector(source_table, Role::Source)?;
    let sink = connector(sink_table, Role::Sink)?;
    for (table, options, what) in [
        (source_table, &source, "read by the query"),
        (sink_table, &sink, "written by the query"),
    ] {
        if let Some(format) = &options.value_format
            && format.kind == super::format::FormatKind::Csv
        {
            return Err(SqlError::unsupported_because(
                format.at,
                format!("the CSV table `{}` {what}", table.name),
                "a CSV file is read as a lookup table (JOIN … FOR SYSTEM_TIME AS OF), a job's own files are JSON lines",
            ));
        }
    }
    notes.extend(source.notes.iter().cloned());
    notes.extend(sink.notes.iter().cloned());
    let brokers = match (&source.brokers, &sink.brokers) {
        (Some(a), Some(b)) if a != b => {
            return Err(SqlError::invalid(
                super::connector::at_of(sink_table, "properties.bootstrap.servers"),
                format!(
                    "tables `{}` and `{}` name different Kafka clusters ('{a}', '{b}'); a job uses one",
                    source_table.name, sink_table.name
                ),
            ));
        }
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    let mut properties = source.properties.clone();
    properties.extend(sink.properties.clone());
    let parse_stage = source.parse_stage();
    let (Some(source_spec), Some(sink_spec)) = (source.source, sink.sink) else {
        return Err(SqlError::invalid(at, "the tables have no source or sink"));
    };
    Ok(PipelineSpec {
        name: sink_table.name.clone(),
        source: source_spec,
        stages: std::iter::once(StageSpec {
            name: parse_stage.0.to_owned(),
            kind: StageKind::Parse,
            module: None,
            builtin: Some(parse_stage.1.to_owned()),
            registry: parse_stage.2,
            condition: None,
            select: None,
            types: Default::default(),
            functions: Default::default(),
            table: None,
            on: None,
            columns: None,
            rename: Default::default(),
            on_miss: None,
            tables: Vec::new(),
            on_error: if source.ignore_parse_errors {
                OnError::Drop
            } else {
                OnError::Fail
            },
            limits: Default::default(),
        })
        .chain(stages)
        .collect(),
        tables: Vec::new(),
        window,
        aggregate,
        format: None,
        sink: sink_spec,
        dead_letters: DeadLetterSpec::default(),
        kafka: KafkaSpec {
            brokers,
            properties,
        },
        batch: BatchSpec::default(),
        parallelism: None,
        delivery: Default::default(),
        commit_interval: None,
    })
}

/// Whether a declared type is a number (`BIGINT`, `DOUBLE`, `DECIMAL(10, 2)`, ...).
fn is_numeric(sql_type: &str) -> bool {
    [
        "INT", "DOUBLE", "FLOAT", "REAL", "DECIMAL", "NUMERIC", "DEC",
    ]
    .iter()
    .any(|t| sql_type.contains(t))
}

/// The query's one SELECT, refusing what goes around it.
fn select_of(query: &Query) -> Result<&sqlparser::ast::Select, SqlError> {
    if let Some(with) = &query.with {
        return Err(SqlError::unsupported(
            span_pos(with),
            "WITH (a common table expression)",
        ));
    }
    if let Some(order_by) = &query.order_by {
        return Err(SqlError::unsupported_because(
            span_pos(order_by),
            "ORDER BY",
            "a streaming result has no order",
        ));
    }
    if let Some(limit) = &query.limit_clause {
        return Err(SqlError::unsupported(span_pos(limit), "LIMIT"));
    }
    if let Some(fetch) = &query.fetch {
        return Err(SqlError::unsupported(span_pos(fetch), "FETCH"));
    }
    match query.body.as_ref() {
        SetExpr::Select(select) => Ok(select),
        SetExpr::SetOperation { op, .. } => Err(SqlError::unsupported(
            span_pos(query.body.as_ref()),
            format!("{op}"),
        )),
        SetExpr::Query(inner) => Err(SqlError::unsupported(
            span_pos(inner.as_ref()),
            "a subquery",
        )),
        SetExpr::Values(_) => Err(SqlError::unsupported(
            span_pos(query.body.as_ref()),
            "VALUES",
        )),
        other => Err(SqlError::unsupported(span_pos(other), format!("`{other}`"))),
    }
}

/// `TUMBLE(TABLE t, DESCRIPTOR(col), INTERVAL ...)`, read.
struct Tumble {
    table: String,
    table_at: Pos,
    time_column: String,
    time_at: Pos,
    size: Duration,
}

fn window_of(relation: &TableFactor) -> Result<Tumble, SqlError> {
    let at = span_pos(relation);
    let expr = match relation {
        TableFactor::TableFunction { expr, alias: None } => expr,
        TableFactor::Table { name, .. } => {
            return Err(SqlError::unsupported_because(
                at,
                format!("a query on `{name}` without a window"),
                "read FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(time_column), INTERVAL 'n' SECOND)) and GROUP BY window_start, window_end",
            ));
        }
        TableFactor::Derived { .. } => return Err(SqlError::unsupported(at, "a subquery in FROM")),
        other => return Err(SqlError::unsupported(at, format!("`{other}` in FROM"))),
    };
    let Expr::Function(function) = expr else {
        return Err(SqlError::unsupported(
            span_pos(expr),
            format!("TABLE({expr})"),
        ));
    };
    let name = function.name.to_string().to_uppercase();
    if name != "TUMBLE" {
        return Err(SqlError::unsupported_because(
            span_pos(function),
            format!("the {name} window"),
            "TUMBLE windows are",
        ));
    }
    let args = arguments(function, &["DATA", "TIMECOL", "SIZE", "OFFSET"])?;
    let [Some(table), Some(descriptor), Some(size), offset] = args[..] else {
        return Err(SqlError::invalid(
            span_pos(function),
            "TUMBLE takes (TABLE t, DESCRIPTOR(time_column), INTERVAL 'n' SECOND)",
        ));
    };
    if let Some(offset) = offset {
        return Err(SqlError::unsupported(span_pos(offset), "a window offset"));
    }
    let (table, table_at) = match table {
        Expr::Prefixed { prefix, value } if prefix.value == "TABLE" => match value.as_ref() {
            Expr::Identifier(ident) => (ident.value.clone(), Pos::of(ident.span)),
            other => {
                return Err(SqlError::unsupported(
                    span_pos(other),
                    format!("TABLE {other}"),
                ));
            }
        },
        other => {
            return Err(SqlError::invalid(
                span_pos(other),
                format!("TUMBLE's first argument is TABLE <name>, not `{other}`"),
            ));
        }
    };
    let descriptor_error = |e: &Expr| {
        SqlError::invalid(
            span_pos(e),
            format!("TUMBLE's second argument is DESCRIPTOR(time_column), not `{e}`"),
        )
    };
    let (time_column, time_at) = match descriptor {
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("DESCRIPTOR") => {
            match &arguments(f, &["COLUMN"])?[..] {
                [Some(Expr::Identifier(ident))] => (ident.value.clone(), Pos::of(ident.span)),
                _ => return Err(descriptor_error(descriptor)),
            }
        }
        other => return Err(descriptor_error(other)),
    };
    let size = interval::duration(size)?;
    if size.is_zero() {
        return Err(SqlError::invalid(
            span_pos(function),
            "the window size must be at least 1ms",
        ));
    }
    Ok(Tumble {
        table,
        table_at,
        time_column,
        time_at,
        size,
    })
}

/// A function's arguments by position, or by name (`DATA => TABLE t`) in `names`' order.
fn arguments<'a>(
    function: &'a Function,
    names: &[&str],
) -> Result<Vec<Option<&'a Expr>>, SqlError> {
    let mut out = vec![None; names.len()];
    let FunctionArguments::List(list) = &function.args else {
        return Ok(out);
    };
    for (i, arg) in list.args.iter().enumerate() {
        let (slot, value) = match arg {
            FunctionArg::Unnamed(value) => (i, value),
            FunctionArg::Named { name, arg, .. } => {
                let slot = names
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(&name.value))
                    .ok_or_else(|| {
                        SqlError::invalid(
                            Pos::of(name.span),
                            format!("{} has no argument `{}`", function.name, name.value),
                        )
                    })?;
                (slot, arg)
            }
            FunctionArg::ExprNamed { name, .. } => {
                return Err(SqlError::unsupported(span_pos(name), "this named argument"));
            }
        };
        let FunctionArgExpr::Expr(value) = value else {
            return Err(SqlError::unsupported(
                span_pos(function),
                format!("the argument `{value}` of {}", function.name),
            ));
        };
        match out.get_mut(slot) {
            Some(place) => *place = Some(value),
            None => {
                return Err(SqlError::invalid(
                    span_pos(value),
                    format!("{} takes at most {} arguments", function.name, names.len()),
                ));
            }
        }
    }
    Ok(out)
}

/// The grouping column besides the window, if any.
fn group_key(group_by: &GroupByExpr, table: &Table, at: Pos) -> Result<Option<String>, SqlError> {
    let exprs = match group_by {
        GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs,
        GroupByExpr::Expressions(..) => {
            return Err(SqlError::unsupported(
                at,
                "GROUP BY with ROLLUP, CUBE or TOTALS",
            ));
        }
        GroupByExpr::All(_) => return Err(SqlError::unsupported(at, "GROUP BY ALL")),
    };
    let mut window = (false, false);
    let mut keys: Vec<(String, Pos)> = Vec::new();
    for expr in exprs {
        let Some((name, span)) = column_ident(expr, table) else {
            return Err(SqlError::unsupported_because(
                span_pos(expr),
                format!("GROUP BY {expr}"),
                "group by columns",
            ));
        };
        let ident_at = Pos::of(span);
        match name.to_ascii_lowercase().as_str() {
            "window_start" => window.0 = true,
            "window_end" => window.1 = true,
            "window_time" => {
                return Err(SqlError::unsupported(ident_at, "GROUP BY window_time"));
            }
            _ => {
                let column = table.expect_column(&name, ident_at)?;
                if column.source != ColumnSource::Field {
                    return Err(SqlError::unsupported_because(
                        ident_at,
                        format!("GROUP BY {}", column.name),
                        "group by a field of the record",
                    ));
                }
                if !keys.iter().any(|(k, _)| *k == column.name) {
                    keys.push((column.name.clone(), ident_at));
                }
            }
        }
    }
    if window != (true, true) {
        return Err(SqlError::unsupported_because(
            at,
            "a GROUP BY without both window_start and window_end",
            "a window aggregation groups by window_start, window_end and at most one column",
        ));
    }
    match &keys[..] {
        [] => Ok(None),
        [(key, _)] => Ok(Some(key.clone())),
        [_, (second, second_at), ..] => Err(SqlError::unsupported_because(
            *second_at,
            format!("a second grouping column `{second}`"),
            "windows are keyed by one column",
        )),
    }
}

/// A column named alone (`name`) or with its table (`r.name`: a query reads one table, or
/// a table and its lookup table whose column names differ; a lookup join's `r.key` reads
/// the table's key), as the name of the column it reads and where it is named.
fn column_ident(expr: &Expr, table: &Table) -> Option<(String, sqlparser::tokenizer::Span)> {
    match expr {
        Expr::Identifier(ident) => Some((ident.value.clone(), ident.span)),
        Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
            // A column named `r.key` (a lookup join's key) is read apart from `key`.
            let dotted = format!("{}.{}", parts[0].value, parts[1].value);
            let name = match table.column(&dotted) {
                Some(column) => column.name.clone(),
                None => parts[1].value.clone(),
            };
            Some((name, parts[1].span))
        }
        _ => None,
    }
}

/// The SELECT list as outputs, each with where it is.
fn outputs(
    items: &[SelectItem],
    table: &Table,
    key: Option<&str>,
) -> Result<Vec<(Output, Pos)>, SqlError> {
    items
        .iter()
        .map(|item| {
            let expr = match item {
                SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => expr,
                other => {
                    return Err(SqlError::unsupported_because(
                        span_pos(other),
                        format!("SELECT {other}"),
                        "name the window columns, the grouping column and the aggregates",
                    ));
                }
            };
            let at = span_pos(expr);
            let output = match (column_ident(expr, table), expr) {
                (Some((name, _)), _) => match name.to_ascii_lowercase().as_str() {
                    "window_start" => Output::WindowStart,
                    "window_end" => Output::WindowEnd,
                    "window_time" => return Err(SqlError::unsupported(at, "window_time")),
                    _ => {
                        let column = table.expect_column(&name, at)?;
                        if Some(column.name.as_str()) != key {
                            return Err(SqlError::invalid(
                                at,
                                format!(
                                    "column `{}` is neither in GROUP BY nor in an aggregate",
                                    column.name
                                ),
                            ));
                        }
                        Output::Key
                    }
                },
                (None, Expr::Function(function)) => aggregate(function, table)?,
                (None, other) => {
                    return Err(SqlError::unsupported_because(
                        at,
                        format!("the expression `{other}`"),
                        "SELECT lists columns and COUNT, SUM, MIN, MAX, AVG",
                    ));
                }
            };
            Ok((output, at))
        })
        .collect()
}

fn aggregate(function: &Function, table: &Table) -> Result<Output, SqlError> {
    let at = span_pos(function);
    let name = function.name.to_string().to_uppercase();
    let builtin = match name.as_str() {
        "COUNT" => BuiltinFn::Count,
        "SUM" => BuiltinFn::Sum,
        "MIN" => BuiltinFn::Min,
        "MAX" => BuiltinFn::Max,
        "AVG" => BuiltinFn::Avg,
        _ => {
            return Err(SqlError::unsupported_because(
                at,
                format!("the function {name}"),
                "the aggregates are COUNT, SUM, MIN, MAX and AVG",
            ));
        }
    };
    if function.filter.is_some() || function.over.is_some() || !function.within_group.is_empty() {
        return Err(SqlError::unsupported(at, format!("`{function}`")));
    }
    let FunctionArguments::List(list) = &function.args else {
        return Err(SqlError::invalid(at, format!("{name} needs an argument")));
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return Err(SqlError::unsupported(at, format!("`{function}`")));
    }
    match (&list.args[..], builtin) {
        ([FunctionArg::Unnamed(FunctionArgExpr::Wildcard)], BuiltinFn::Count) => {
            Ok(Output::Aggregate(BuiltinFn::Count, None))
        }
        ([FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(ident)))], _) => {
            let column = table.expect_column(&ident.value, Pos::of(ident.span))?;
            if column.source != ColumnSource::Field {
                return Err(SqlError::unsupported_because(
                    Pos::of(ident.span),
                    format!("{name}({})", column.name),
                    "aggregate a field of the record",
                ));
            }
            if builtin != BuiltinFn::Count && !is_numeric(&column.sql_type) {
                return Err(SqlError::invalid(
                    Pos::of(ident.span),
                    format!(
                        "{name}({}): the column is {}, not a number",
                        column.name, column.sql_type
                    ),
                ));
            }
            Ok(Output::Aggregate(builtin, Some(column.name.clone())))
        }
        _ => Err(SqlError::unsupported_because(
            at,
            format!("`{function}`"),
            "an aggregate takes one column (or COUNT(*))",
        )),
    }
}
