//! A table's `WITH (...)` options as a source or a sink: `kafka` and `upsert-kafka` (JSON or
//! Avro in Confluent's wire format, see [`super::format`]), `filesystem` (JSON lines; CSV
//! for a lookup table) and
//! `print` (standard output). Every option is either used, accepted with a note (a Flink
//! option with no effect here), or an error naming it.

use super::catalog::Table;
use super::format::{self, Format, FormatKind, Side};
use super::parse::OptionDef;
use super::{Pos, SqlError};
use crate::column_type::Typed;
use crate::spec::{
    AssignMode, ColumnSpec, KeyFields, KeyFormat, SinkFormat, SinkSpec, SourceSpec, StartAt,
    ValueFields,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Whether a table is read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Sink,
}

/// What a table's options say, for the planner.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    pub source: Option<SourceSpec>,
    pub sink: Option<SinkSpec>,
    /// `properties.bootstrap.servers`.
    pub brokers: Option<String>,
    /// Other `properties.*`: librdkafka properties.
    pub properties: BTreeMap<String, String>,
    /// `json.ignore-parse-errors` (Flink's default: false, fail).
    pub ignore_parse_errors: bool,
    /// The value format (none for `print`).
    pub value_format: Option<Format>,
    /// Options accepted without effect, and other things worth saying once.
    pub notes: Vec<String>,
}

impl Connector {
    /// The built-in parse stage (name, builtin, registry) that reads this table's records.
    pub fn parse_stage(&self) -> (&'static str, &'static str, Option<String>) {
        match &self.value_format {
            Some(format) if format.kind == FormatKind::AvroConfluent => {
                ("parse-avro", "avro-confluent", format.url.clone())
            }
            _ => ("parse-json", "json", None),
        }
    }
}

const KAFKA_USED: &[&str] = &[
    "topic",
    "properties.bootstrap.servers",
    "properties.group.id",
    "scan.startup.mode",
    "scan.bounded.mode",
    "key.fields",
    "value.fields-include",
];
const UPSERT_KAFKA_USED: &[&str] = &[
    "topic",
    "properties.bootstrap.servers",
    "value.fields-include",
];
const UPSERT_KAFKA_IGNORED: &[&str] = &[
    "sink.parallelism",
    "sink.buffer-flush.interval",
    "sink.buffer-flush.max-rows",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
];
const KAFKA_IGNORED: &[&str] = &[
    "sink.parallelism",
    "scan.topic-partition-discovery.interval",
    "sink.partitioner",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
    "sink.buffer-flush.interval",
    "sink.buffer-flush.max-rows",
];
const FILESYSTEM_USED: &[&str] = &["path"];
const FILESYSTEM_IGNORED: &[&str] = &[
    "source.monitor-interval",
    "partition.default-name",
    "auto-compaction",
    "compaction.file-size",
];
const FILESYSTEM_IGNORED_PREFIXES: &[&str] = &["sink.rolling-policy.", "sink.partition-commit."];
const PRINT_USED: &[&str] = &["print-identifier", "standard-error"];

/// Reads `table`'s options for `role`.
pub fn connector(table: &Table, role: Role) -> Result<Connector, SqlError> {
    let options = &table.options;
    let get = |key: &str| options.iter().find(|o| o.key == key);
    let name = &table.name;
    let connector = get("connector").ok_or_else(|| {
        SqlError::invalid(
            table.at,
            format!(
                "table `{name}` needs the option 'connector' ('kafka', 'upsert-kafka', 'filesystem' or 'print')"
            ),
        )
    })?;
    let mut out = Connector::default();
    let kind = connector.value.as_str();
    let (used, ignored, ignored_prefixes): (&[&str], &[&str], &[&str]) = match kind {
        "kafka" => (KAFKA_USED, KAFKA_IGNORED, &[]),
        "upsert-kafka" => (UPSERT_KAFKA_USED, UPSERT_KAFKA_IGNORED, &[]),
        "filesystem" => (
            FILESYSTEM_USED,
            FILESYSTEM_IGNORED,
            FILESYSTEM_IGNORED_PREFIXES,
        ),
        "print" => (PRINT_USED, &[], &[]),
        "datagen" | "blackhole" | "jdbc" | "elasticsearch" => {
            return Err(SqlError::unsupported_because(
                connector.at,
                format!("the connector '{kind}'"),
                "kafka, upsert-kafka, filesystem and print are",
            ));
        }
        other => {
            return Err(SqlError::invalid(
                connector.at,
                format!(
                    "table `{name}`: unknown connector '{other}' (kafka, upsert-kafka, filesystem or print)"
                ),
            ));
        }
    };
    if kind == "upsert-kafka" && role == Role::Source {
        return Err(SqlError::unsupported_because(
            connector.at,
            format!("reading the upsert-kafka table `{name}`"),
            "upsert-kafka tables are sinks here; read the topic with 'connector' = 'kafka'",
        ));
    }
    let (value_format, key_format) = match kind {
        "print" => (None, None),
        _ => (
            format::format(table, Side::Value)?,
            format::format(table, Side::Key)?,
        ),
    };
    let mut seen: Vec<&str> = Vec::new();
    for option in options {
        let key = option.key.as_str();
        if seen.contains(&key) {
            return Err(SqlError::invalid(
                option.at,
                format!("table `{name}`: option '{key}' is given twice"),
            ));
        }
        seen.push(key);
        if key == "connector" || used.contains(&key) {
            continue;
        }
        if kind != "print" {
            match format::classify(option, table, value_format.as_ref(), key_format.as_ref()) {
                Some(Ok(note)) => {
                    out.notes.extend(note);
                    continue;
                }
                Some(Err(err)) => return Err(err),
                None => {}
            }
        }
        if kind.ends_with("kafka")
            && let Some(property) = key.strip_prefix("properties.")
        {
            out.properties
                .insert(property.to_owned(), option.value.clone());
            continue;
        }
        if ignored.contains(&key) || ignored_prefixes.iter().any(|p| key.starts_with(p)) {
            out.notes.push(format!(
                "table `{name}`: option '{key}' accepted without effect"
            ));
            continue;
        }
        if key.starts_with("key.") && kind != "upsert-kafka" {
            return Err(SqlError::unsupported_because(
                option.at,
                format!("the option '{key}'"),
                "a kafka table's key is 'key.format' and 'key.fields'",
            ));
        }
        return Err(SqlError::invalid(
            option.at,
            format!("table `{name}`: unknown option '{key}' for connector '{kind}'"),
        ));
    }
    if kind != "print" {
        let value = value_format.as_ref().ok_or_else(|| {
            let wanted = if kind == "upsert-kafka" {
                "value.format"
            } else {
                "format"
            };
            SqlError::invalid(
                table.at,
                format!("table `{name}` needs the option '{wanted}'"),
            )
        })?;
        if value.kind == FormatKind::Csv && kind != "filesystem" {
            return Err(SqlError::unsupported_because(
                value.at,
                format!("the format 'csv' on the {kind} table `{name}`"),
                "CSV is read from a filesystem table used as a lookup table",
            ));
        }
        value_options(table, role, value, kind, &mut out)?;
    }
    out.value_format = value_format.clone();
    match (kind, role) {
        ("kafka", _) => {
            kafka(table, role, &get, &mut out)?;
            keyed(table, role, &get, key_format.as_ref(), kind, &mut out)?;
        }
        ("upsert-kafka", _) => {
            if table.primary_key.is_empty() {
                return Err(SqlError::invalid(
                    table.at,
                    format!(
                        "table `{name}`: 'upsert-kafka' tables require to define a PRIMARY KEY constraint (it names the columns written to the Kafka record key, and the key each update overwrites)"
                    ),
                ));
            }
            if key_format.is_none() {
                return Err(SqlError::invalid(
                    table.at,
                    format!("table `{name}`: 'upsert-kafka' needs the option 'key.format'"),
                ));
            }
            if get("format").is_some() {
                return Err(SqlError::invalid(
                    at_of(table, "format"),
                    format!(
                        "table `{name}`: 'upsert-kafka' takes 'key.format' and 'value.format', not 'format'"
                    ),
                ));
            }
            kafka(table, role, &get, &mut out)?;
            keyed(table, role, &get, key_format.as_ref(), kind, &mut out)?;
        }
        ("filesystem", _)
            if value_format
                .as_ref()
                .is_some_and(|f| f.kind == FormatKind::AvroConfluent) =>
        {
            return Err(SqlError::unsupported_because(
                value_format.as_ref().map_or(table.at, |f| f.at),
                "the format 'avro-confluent' on a filesystem table",
                "files are JSON lines (or CSV, for a lookup table)",
            ));
        }
        ("filesystem", _) => {
            let path = required(table, &get, "path")?;
            let text = path.value.as_str();
            let file = text.strip_prefix("file://").unwrap_or(text);
            if file.is_empty() || text.contains("://") && !text.starts_with("file://") {
                return Err(SqlError::unsupported_because(
                    path.at,
                    format!("the path '{text}'"),
                    "a local file, as a plain path or a file:// URL, is",
                ));
            }
            let path = PathBuf::from(file);
            match role {
                Role::Source => out.source = Some(SourceSpec::File { path }),
                Role::Sink => out.sink = Some(SinkSpec::File { path }),
            }
        }
        ("print", Role::Source) => {
            return Err(SqlError::invalid(
                table.at,
                format!("table `{name}`: the print connector is a sink; it cannot be read"),
            ));
        }
        (_, _) => {
            if let Some(option) = get("standard-error")
                && option.value.eq_ignore_ascii_case("true")
            {
                return Err(SqlError::unsupported(
                    option.at,
                    "'standard-error' = 'true' (results go to standard output)",
                ));
            }
            if get("print-identifier").is_some() {
                out.notes.push(format!(
                    "table `{name}`: option 'print-identifier' accepted without effect"
                ));
            }
            out.sink = Some(SinkSpec::Stdout {});
        }
    }
    Ok(out)
}

fn required<'a>(
    table: &Table,
    get: &impl Fn(&str) -> Option<&'a OptionDef>,
    key: &str,
) -> Result<&'a OptionDef, SqlError> {
    get(key).ok_or_else(|| {
        SqlError::invalid(
            table.at,
            format!("table `{}` needs the option '{key}'", table.name),
        )
    })
}

/// The value format's options that concern the whole table: JSON parse errors, timestamps.
fn value_options(
    table: &Table,
    role: Role,
    value: &Format,
    kind: &str,
    out: &mut Connector,
) -> Result<(), SqlError> {
    out.ignore_parse_errors = value.ignore_parse_errors;
    if value.kind == FormatKind::AvroConfluent && !kind.ends_with("kafka") {
        return Ok(());
    }
    if value.kind == FormatKind::Json
        && !value.iso_timestamps
        && role == Role::Sink
        && table
            .columns
            .iter()
            .any(|c| c.sql_type.starts_with("TIMESTAMP"))
    {
        out.notes.push(format!(
            "table `{}`: timestamps are written as ISO-8601 text (as with 'json.timestamp-format.standard' = 'ISO-8601'; Flink's default is 'SQL')",
            table.name
        ));
    }
    Ok(())
}

/// A sink's key and value layout: the key columns (the PRIMARY KEY of an upsert-kafka
/// table, `key.fields` of a kafka table) in the key format, the value with or without them,
/// Avro schemas following the declared column types.
fn keyed<'a>(
    table: &Table,
    role: Role,
    get: &impl Fn(&str) -> Option<&'a OptionDef>,
    key_format: Option<&Format>,
    kind: &str,
    out: &mut Connector,
) -> Result<(), SqlError> {
    let name = &table.name;
    let key_fields: Vec<String> = match (kind, get("key.fields")) {
        ("upsert-kafka", _) => table.primary_key.clone(),
        (_, Some(option)) => option
            .value
            .split(';')
            .map(|field| {
                table
                    .expect_column(field.trim(), option.at)
                    .map(|c| c.name.clone())
            })
            .collect::<Result<_, _>>()?,
        (_, None) => Vec::new(),
    };
    match (key_format, key_fields.is_empty()) {
        (Some(format), true) => {
            return Err(SqlError::invalid(
                format.at,
                format!("table `{name}`: 'key.format' needs 'key.fields' (the key's columns)"),
            ));
        }
        (None, false) if kind == "kafka" => {
            return Err(SqlError::invalid(
                at_of(table, "key.fields"),
                format!("table `{name}`: 'key.fields' needs 'key.format'"),
            ));
        }
        _ => {}
    }
    let value_fields = match get("value.fields-include") {
        None => ValueFields::All,
        Some(option) => match option.value.to_ascii_uppercase().as_str() {
            "ALL" => ValueFields::All,
            "EXCEPT_KEY" if !key_fields.is_empty() => ValueFields::ExceptKey,
            "EXCEPT_KEY" => {
                return Err(SqlError::invalid(
                    option.at,
                    format!("table `{name}`: 'value.fields-include' = 'EXCEPT_KEY' needs a key"),
                ));
            }
            other => {
                return Err(SqlError::invalid(
                    option.at,
                    format!(
                        "table `{name}`: 'value.fields-include' is 'ALL' or 'EXCEPT_KEY', not '{other}'"
                    ),
                ));
            }
        },
    };
    if role == Role::Source {
        if key_format.is_some() {
            return Err(SqlError::unsupported_because(
                key_format.map_or(table.at, |f| f.at),
                format!("reading key columns of `{name}` from the record key"),
                "a source's columns come from the record value",
            ));
        }
        return Ok(());
    }
    let Some(SinkSpec::Kafka {
        key,
        format,
        registry,
        key_format: sink_key_format,
        key_registry,
        subject,
        key_subject,
        value_fields: sink_value_fields,
        columns,
        ..
    }) = &mut out.sink
    else {
        return Ok(());
    };
    let value = out.value_format.as_ref();
    let avro_value = value.is_some_and(|f| f.kind == FormatKind::AvroConfluent);
    if avro_value {
        *format = SinkFormat::AvroConfluent;
        *registry = value.and_then(|f| f.url.clone());
        *subject = value.and_then(|f| f.subject.clone());
    }
    if let Some(key_format) = key_format {
        *key = Some(KeyFields(key_fields.clone()));
        *sink_key_format = Some(match key_format.kind {
            FormatKind::Raw => {
                if key_fields.len() != 1 {
                    return Err(SqlError::invalid(
                        key_format.at,
                        format!("table `{name}`: the key format 'raw' takes one key column"),
                    ));
                }
                KeyFormat::Raw
            }
            FormatKind::Json => KeyFormat::Json,
            FormatKind::AvroConfluent => KeyFormat::AvroConfluent,
            FormatKind::Csv => {
                return Err(SqlError::unsupported(key_format.at, "the key format 'csv'"));
            }
        });
        if key_format.kind == FormatKind::AvroConfluent {
            if key_format.url != *registry {
                *key_registry = key_format.url.clone();
            }
            *key_subject = key_format.subject.clone();
        }
    }
    *sink_value_fields = value_fields;
    if avro_value || key_format.is_some() {
        *columns = table
            .columns
            .iter()
            .map(|column| {
                let mut ty: Typed = column.sql_type.parse().map_err(|reason| {
                    SqlError::unsupported_because(
                        column.at,
                        format!("the type {} of column `{}`", column.sql_type, column.name),
                        reason,
                    )
                })?;
                ty.nullable = column.nullable;
                Ok(ColumnSpec {
                    name: column.name.clone(),
                    ty,
                })
            })
            .collect::<Result<_, SqlError>>()?;
    }
    Ok(())
}

fn kafka<'a>(
    table: &Table,
    role: Role,
    get: &impl Fn(&str) -> Option<&'a OptionDef>,
    out: &mut Connector,
) -> Result<(), SqlError> {
    let topic = required(table, get, "topic")?;
    if topic.value.contains(';') || topic.value.trim().is_empty() {
        return Err(SqlError::unsupported_because(
            topic.at,
            format!("the topic list '{}'", topic.value),
            "one topic is",
        ));
    }
    let topic = topic.value.clone();
    out.brokers = get("properties.bootstrap.servers").map(|o| o.value.clone());
    out.properties.remove("bootstrap.servers");
    out.properties.remove("group.id");
    if role == Role::Sink {
        for key in [
            "properties.group.id",
            "scan.startup.mode",
            "scan.bounded.mode",
        ] {
            if get(key).is_some() {
                out.notes.push(format!(
                    "table `{}`: option '{key}' has no effect on a sink",
                    table.name
                ));
            }
        }
        out.sink = Some(SinkSpec::Kafka {
            topic,
            key: None,
            format: SinkFormat::Json,
            registry: None,
            key_format: None,
            key_registry: None,
            subject: None,
            key_subject: None,
            value_fields: Default::default(),
            columns: Vec::new(),
        });
        return Ok(());
    }
    let start = match get("scan.startup.mode") {
        None => StartAt::Committed,
        Some(option) => match option.value.as_str() {
            "group-offsets" => StartAt::Committed,
            "earliest-offset" => StartAt::Earliest,
            "latest-offset" => StartAt::Latest,
            other => {
                return Err(SqlError::unsupported_because(
                    option.at,
                    format!("'scan.startup.mode' = '{other}'"),
                    "earliest-offset, latest-offset and group-offsets are",
                ));
            }
        },
    };
    let bounded = match get("scan.bounded.mode") {
        None => false,
        Some(option) => match option.value.as_str() {
            "unbounded" => false,
            "latest-offset" => true,
            other => {
                return Err(SqlError::unsupported_because(
                    option.at,
                    format!("'scan.bounded.mode' = '{other}'"),
                    "unbounded and latest-offset are",
                ));
            }
        },
    };
    out.source = Some(SourceSpec::Kafka {
        topic,
        group: get("properties.group.id").map(|o| o.value.clone()),
        start,
        // A bounded read takes every partition to its end; otherwise the group balances.
        assign: if bounded {
            AssignMode::All
        } else {
            AssignMode::Group
        },
        bounded,
    });
    Ok(())
}

/// Where an option is, for messages about a table as a whole.
pub fn at_of(table: &Table, key: &str) -> Pos {
    table
        .options
        .iter()
        .find(|o| o.key == key)
        .map_or(table.at, |o| o.at)
}
