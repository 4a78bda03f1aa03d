//! A table's formats — `json`, `avro-confluent`, and `csv` for a filesystem lookup table —
//! and their options, with Flink's names:
//! the value format (`'format'` or `'value.format'`, options `json.*` / `avro-confluent.*`,
//! optionally prefixed `value.`) and the key format (`'key.format'`, options `key.json.*` /
//! `key.avro-confluent.*`).

use super::catalog::Table;
use super::parse::OptionDef;
use super::{Pos, SqlError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatKind {
    Json,
    /// Avro in Confluent's wire format, schemas in a registry.
    AvroConfluent,
    /// The key's bytes as they are (`'key.format' = 'raw'`).
    Raw,
    /// Comma-separated fields in the order of the table's columns, no header row (a
    /// filesystem table read as a lookup table).
    Csv,
}

impl FormatKind {
    fn name(self) -> &'static str {
        match self {
            FormatKind::Json => "json",
            FormatKind::AvroConfluent => "avro-confluent",
            FormatKind::Raw => "raw",
            FormatKind::Csv => "csv",
        }
    }
}

/// The key's or the value's format, read.
#[derive(Debug, Clone)]
pub struct Format {
    pub kind: FormatKind,
    pub at: Pos,
    /// `avro-confluent.url`.
    pub url: Option<String>,
    /// `avro-confluent.subject`.
    pub subject: Option<String>,
    /// `json.ignore-parse-errors`.
    pub ignore_parse_errors: bool,
    /// `json.timestamp-format.standard` was given (it must be ISO-8601).
    pub iso_timestamps: bool,
}

/// Which side of the record a format is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Key,
    Value,
}

const JSON_USED: &[&str] = &["ignore-parse-errors", "timestamp-format.standard"];
const JSON_IGNORED: &[&str] = &[
    "fail-on-missing-field",
    "map-null-key.mode",
    "map-null-key.literal",
    // DECIMAL is always written as a plain number.
    "encode.decimal-as-plain-number",
    "encode.ignore-null-fields",
];
const AVRO_USED: &[&str] = &["url", "schema-registry.url", "subject"];
const AVRO_REFUSED_PREFIXES: &[&str] = &["basic-auth.", "bearer-auth.", "ssl.", "properties."];

/// The format named by `key` (`format`, `value.format` or `key.format`), if given.
pub fn format(table: &Table, side: Side) -> Result<Option<Format>, SqlError> {
    let get = |key: &str| table.options.iter().find(|o| o.key == key);
    let given = match side {
        Side::Key => get("key.format"),
        Side::Value => match (get("format"), get("value.format")) {
            (Some(a), Some(b)) if a.value != b.value => {
                return Err(SqlError::invalid(
                    b.at,
                    format!("table `{}`: 'format' and 'value.format' differ", table.name),
                ));
            }
            (Some(f), _) | (None, Some(f)) => Some(f),
            (None, None) => None,
        },
    };
    let Some(given) = given else { return Ok(None) };
    let kind = match (given.value.as_str(), side) {
        ("json", _) => FormatKind::Json,
        ("avro-confluent", _) => FormatKind::AvroConfluent,
        ("raw", Side::Key) => FormatKind::Raw,
        ("csv", Side::Value) => FormatKind::Csv,
        (other, _) => {
            return Err(SqlError::unsupported_because(
                given.at,
                format!("the format '{other}'"),
                match side {
                    Side::Value => "json, avro-confluent and csv are",
                    Side::Key => "json, avro-confluent and raw are",
                },
            ));
        }
    };
    let mut out = Format {
        kind,
        at: given.at,
        url: None,
        subject: None,
        ignore_parse_errors: false,
        iso_timestamps: false,
    };
    for option in &table.options {
        let Some(name) = option_of(&option.key, side, kind) else {
            continue;
        };
        match (kind, name) {
            (FormatKind::Json, "ignore-parse-errors") => {
                out.ignore_parse_errors = boolean(option)?;
            }
            (FormatKind::Json, "timestamp-format.standard") if option.value == "ISO-8601" => {
                out.iso_timestamps = true;
            }
            (FormatKind::Json, "timestamp-format.standard") => {
                return Err(SqlError::unsupported_because(
                    option.at,
                    format!("'{}' = '{}'", option.key, option.value),
                    "timestamps are ISO-8601 text",
                ));
            }
            (FormatKind::Csv, "field-delimiter") if option.value == "," => {}
            (FormatKind::Csv, "quote-character") if option.value == "\"" => {}
            (FormatKind::Csv, _) => {
                return Err(SqlError::unsupported_because(
                    option.at,
                    format!("'{}' = '{}'", option.key, option.value),
                    "CSV files are read comma-separated, with '\"' quotes",
                ));
            }
            (FormatKind::AvroConfluent, "url" | "schema-registry.url") => {
                out.url = Some(option.value.clone());
            }
            (FormatKind::AvroConfluent, "subject") => out.subject = Some(option.value.clone()),
            (FormatKind::AvroConfluent, name)
                if AVRO_REFUSED_PREFIXES.iter().any(|p| name.starts_with(p)) =>
            {
                return Err(SqlError::unsupported_because(
                    option.at,
                    format!("the option '{}'", option.key),
                    "the registry client has no authentication or TLS settings yet",
                ));
            }
            _ => {}
        }
    }
    if kind == FormatKind::AvroConfluent && out.url.is_none() {
        let prefix = match side {
            Side::Key => "key.",
            Side::Value if given.key == "value.format" => "value.",
            Side::Value => "",
        };
        return Err(SqlError::invalid(
            given.at,
            format!(
                "table `{}`: the format 'avro-confluent' needs the option '{prefix}avro-confluent.url' (the schema registry)",
                table.name
            ),
        ));
    }
    Ok(Some(out))
}

/// The format option `key` names for `side`'s format of `kind` (`json.ignore-parse-errors`,
/// `value.json.ignore-parse-errors` → `ignore-parse-errors`), if it is one.
fn option_of(key: &str, side: Side, kind: FormatKind) -> Option<&str> {
    let name = kind.name();
    let rest = match side {
        Side::Key => key.strip_prefix("key.")?,
        Side::Value => key.strip_prefix("value.").unwrap_or(key),
    };
    rest.strip_prefix(name)?.strip_prefix('.')
}

/// How a table's option `key` stands with its formats: `Some(Ok(note))` a format option
/// (with a note when it has no effect), `Some(Err(..))` a format option that is unknown,
/// `None` not a format option.
pub fn classify(
    option: &OptionDef,
    table: &Table,
    value: Option<&Format>,
    key: Option<&Format>,
) -> Option<Result<Option<String>, SqlError>> {
    if matches!(
        option.key.as_str(),
        "format" | "value.format" | "key.format"
    ) {
        return Some(Ok(None));
    }
    for (side, format) in [(Side::Value, value), (Side::Key, key)] {
        let Some(format) = format else { continue };
        let Some(name) = option_of(&option.key, side, format.kind) else {
            continue;
        };
        let (used, ignored): (&[&str], &[&str]) = match format.kind {
            FormatKind::Json => (JSON_USED, JSON_IGNORED),
            FormatKind::AvroConfluent => (AVRO_USED, &[]),
            FormatKind::Raw => (&[], &[]),
            FormatKind::Csv => (&["field-delimiter", "quote-character"], &[]),
        };
        if used.contains(&name) {
            return Some(Ok(None));
        }
        if ignored.contains(&name) {
            return Some(Ok(Some(format!(
                "table `{}`: option '{}' accepted without effect",
                table.name, option.key
            ))));
        }
        return Some(Err(SqlError::invalid(
            option.at,
            format!(
                "table `{}`: unknown option '{}' for the format '{}'",
                table.name,
                option.key,
                format.kind.name()
            ),
        )));
    }
    None
}

pub fn boolean(option: &OptionDef) -> Result<bool, SqlError> {
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
