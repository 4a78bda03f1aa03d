//! A table's `WITH (...)` options as a source or a sink: `kafka`, `filesystem` (JSON lines)
//! and `print` (standard output). Every option is either used, accepted with a note (a Flink
//! option with no effect here), or an error naming it.

use super::catalog::Table;
use super::parse::OptionDef;
use super::{Pos, SqlError};
use crate::spec::{AssignMode, SinkSpec, SourceSpec, StartAt};
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
    /// Options accepted without effect, and other things worth saying once.
    pub notes: Vec<String>,
}

/// Options every connector with a JSON format knows.
const JSON_USED: &[&str] = &[
    "format",
    "value.format",
    "json.ignore-parse-errors",
    "json.timestamp-format.standard",
];
/// Flink JSON options that change nothing here.
const JSON_IGNORED: &[&str] = &[
    "json.fail-on-missing-field",
    "json.map-null-key.mode",
    "json.map-null-key.literal",
    "json.encode.decimal-as-plain-number",
    "json.encode.ignore-null-fields",
    "value.fields-include",
    "sink.parallelism",
];
const KAFKA_USED: &[&str] = &[
    "topic",
    "properties.bootstrap.servers",
    "properties.group.id",
    "scan.startup.mode",
    "scan.bounded.mode",
];
const KAFKA_IGNORED: &[&str] = &[
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
                "table `{name}` needs the option 'connector' ('kafka', 'filesystem' or 'print')"
            ),
        )
    })?;
    let mut out = Connector::default();
    let kind = connector.value.as_str();
    let (used, ignored, ignored_prefixes): (&[&str], &[&str], &[&str]) = match kind {
        "kafka" => (KAFKA_USED, KAFKA_IGNORED, &[]),
        "filesystem" => (
            FILESYSTEM_USED,
            FILESYSTEM_IGNORED,
            FILESYSTEM_IGNORED_PREFIXES,
        ),
        "print" => (PRINT_USED, &[], &[]),
        "upsert-kafka" | "datagen" | "blackhole" | "jdbc" | "elasticsearch" => {
            return Err(SqlError::unsupported_because(
                connector.at,
                format!("the connector '{kind}'"),
                "kafka, filesystem and print are",
            ));
        }
        other => {
            return Err(SqlError::invalid(
                connector.at,
                format!("table `{name}`: unknown connector '{other}' (kafka, filesystem or print)"),
            ));
        }
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
        let json = kind != "print";
        if key == "connector" || used.contains(&key) || (json && JSON_USED.contains(&key)) {
            continue;
        }
        if kind == "kafka"
            && let Some(property) = key.strip_prefix("properties.")
        {
            out.properties
                .insert(property.to_owned(), option.value.clone());
            continue;
        }
        if ignored.contains(&key)
            || ignored_prefixes.iter().any(|p| key.starts_with(p))
            || (json && JSON_IGNORED.contains(&key))
        {
            out.notes.push(format!(
                "table `{name}`: option '{key}' accepted without effect"
            ));
            continue;
        }
        if key.starts_with("key.") {
            return Err(SqlError::unsupported_because(
                option.at,
                format!("the option '{key}'"),
                "record keys are the window key",
            ));
        }
        return Err(SqlError::invalid(
            option.at,
            format!("table `{name}`: unknown option '{key}' for connector '{kind}'"),
        ));
    }
    if kind != "print" {
        format(table, role, &get, &mut out)?;
    }
    match (kind, role) {
        ("kafka", _) => kafka(table, role, &get, &mut out)?,
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

/// `format` / `value.format` (JSON only) and the JSON options.
fn format<'a>(
    table: &Table,
    role: Role,
    get: &impl Fn(&str) -> Option<&'a OptionDef>,
    out: &mut Connector,
) -> Result<(), SqlError> {
    let name = &table.name;
    let format = match (get("format"), get("value.format")) {
        (Some(a), Some(b)) if a.value != b.value => {
            return Err(SqlError::invalid(
                b.at,
                format!("table `{name}`: 'format' and 'value.format' differ"),
            ));
        }
        (Some(f), _) | (None, Some(f)) => f,
        (None, None) => required(table, get, "format")?,
    };
    if format.value != "json" {
        return Err(SqlError::unsupported_because(
            format.at,
            format!("the format '{}'", format.value),
            "JSON is",
        ));
    }
    if let Some(option) = get("json.ignore-parse-errors") {
        out.ignore_parse_errors = boolean(option)?;
    }
    match get("json.timestamp-format.standard") {
        Some(option) if option.value == "ISO-8601" => {}
        Some(option) => {
            return Err(SqlError::unsupported_because(
                option.at,
                format!("'json.timestamp-format.standard' = '{}'", option.value),
                "timestamps are ISO-8601 text",
            ));
        }
        None if role == Role::Sink
            && table
                .columns
                .iter()
                .any(|c| c.sql_type.starts_with("TIMESTAMP")) =>
        {
            out.notes.push(format!(
                "table `{name}`: timestamps are written as ISO-8601 text (as with 'json.timestamp-format.standard' = 'ISO-8601'; Flink's default is 'SQL')"
            ));
        }
        None => {}
    }
    Ok(())
}

fn boolean(option: &OptionDef) -> Result<bool, SqlError> {
    match option.value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(SqlError::invalid(
            option.at,
            format!(
                "option '{}' is 'true' or 'false', not '{other}'",
                option.key
            ),
        )),
    }
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
            format: crate::spec::SinkFormat::Json,
            registry: None,
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
