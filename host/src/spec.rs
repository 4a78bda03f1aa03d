//! Pipeline specs: one TOML file per job (see `pipelines/`). Parsing names the offending
//! field and line; validation names the field and why.

pub mod table;

use crate::udf::Limits;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use table::{OnMiss, TableFormat, TableSource, TableSpec, TopicKeyFormat};

/// A spec that cannot be used, with the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read pipeline spec {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("pipeline spec {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("pipeline spec {}: `{field}`: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// One streaming job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Names the job in logs, metrics and default group/topic names.
    pub name: String,
    pub source: SourceSpec,
    /// Parse (at most one, first) and map steps, in order.
    #[serde(default)]
    pub stages: Vec<StageSpec>,
    /// Reference tables `enrich` stages look rows up in (see [`table`]).
    #[serde(default)]
    pub tables: Vec<TableSpec>,
    pub window: Option<WindowSpec>,
    pub aggregate: Option<AggregateSpec>,
    pub format: Option<FormatSpec>,
    pub sink: SinkSpec,
    #[serde(default)]
    pub dead_letters: DeadLetterSpec,
    #[serde(default)]
    pub kafka: KafkaSpec,
    #[serde(default)]
    pub batch: BatchSpec,
    /// How many tasks run the job (threads, each with a share of the input and its own
    /// stage instances). Default: the number of cores (`rivulet run --parallelism`).
    #[serde(default)]
    pub parallelism: Option<usize>,
    /// What a restart may repeat: `at-least-once` (default) or `exactly-once` (Kafka
    /// transactions: outputs and offsets commit together; see README).
    #[serde(default)]
    pub delivery: Delivery,
    /// How often the job commits (exactly-once: each transaction; the latency a
    /// `read_committed` reader pays). Default: 100ms exactly-once, else `--commit-every`.
    #[serde(default, deserialize_with = "some_duration")]
    pub commit_interval: Option<Duration>,
}

/// The delivery guarantee of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Offsets are committed once the outputs before them are acknowledged: after a crash,
    /// what came after the last commit is written again.
    #[default]
    AtLeastOnce,
    /// Each task writes in Kafka transactions that commit its outputs with its offsets:
    /// a `read_committed` reader sees each output once.
    ExactlyOnce,
}

/// The commit interval exactly-once jobs get unless their spec says otherwise.
pub const EXACTLY_ONCE_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSpec {
    /// A Kafka topic.
    Kafka {
        topic: String,
        /// Consumer group (default `rivulet-<name>`); offsets are committed here.
        group: Option<String>,
        #[serde(default)]
        start: StartAt,
        #[serde(default)]
        assign: AssignMode,
        /// Stop at the end offsets seen at start, after emitting every window.
        #[serde(default)]
        bounded: bool,
    },
    /// A file of records, one per line (replays, benchmarks). Ends when the file does.
    File { path: PathBuf },
    /// Standard input, one record per line. (A struct variant, so that an unknown field is
    /// refused as it is for the other kinds.)
    Stdin {},
}

/// Where a Kafka source starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// The group's committed offsets; where there are none, the earliest.
    #[default]
    Committed,
    /// The beginning of every partition, whatever was committed.
    Earliest,
    /// The end of every partition: only new records.
    Latest,
}

/// How a Kafka source gets its partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignMode {
    /// Join the consumer group; partitions are balanced across instances.
    #[default]
    Group,
    /// Read every partition of the topic without a group join (offsets still committed
    /// to the group). Starts at once; one instance per job.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Parse,
    Map,
    /// Built in: keeps the rows for which `where` is TRUE (SQL's three-valued logic).
    Filter,
    /// Built in: each row becomes the `select` list's values.
    Project,
    /// Built in: adds the columns of the `table` row whose key is the row's `on` field.
    Enrich,
}

/// What happens to a record a stage rejects or traps on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Send it to the dead-letter topic (or file) with headers saying why.
    #[default]
    Dlq,
    /// Count it and drop it.
    Drop,
    /// Stop the pipeline with the error.
    Fail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    pub kind: StageKind,
    /// The component; relative paths are relative to the spec file.
    pub module: Option<PathBuf>,
    /// A built-in step instead of a module (parse steps): `json` (each payload a JSON
    /// object) or `avro-confluent` (Avro in Confluent's wire format; needs `registry`).
    pub builtin: Option<String>,
    /// The schema registry's URL (`http://127.0.0.1:8081`), for `avro-confluent`.
    pub registry: Option<String>,
    /// `filter` stages: a SQL condition (`amount > 100 AND status <> 'CANCELLED'`).
    #[serde(rename = "where")]
    pub condition: Option<String>,
    /// `project` stages: a SQL SELECT list (`order_id, UPPER(status) AS status`).
    pub select: Option<String>,
    /// `filter` and `project` stages: SQL types of the columns they read (`amount =
    /// "DOUBLE"`); a value is read as its type (a record's `100` as `100.0` for a DOUBLE)
    /// and a column without one is typed by its values.
    #[serde(default)]
    pub types: std::collections::BTreeMap<String, String>,
    /// `filter` and `project` stages: Wasm map components callable as scalar functions,
    /// by name (`band = "udf_band.wasm"`): the map gets the argument columns, the first
    /// column of its output row is the value.
    #[serde(default)]
    pub functions: std::collections::BTreeMap<String, PathBuf>,
    /// `enrich` stages: the `[[tables]]` entry rows are looked up in.
    pub table: Option<String>,
    /// `enrich` stages: the row field matched with the table's key.
    pub on: Option<String>,
    /// `enrich` stages: the table columns added (default: all but the key).
    pub columns: Option<Vec<String>>,
    /// `enrich` stages: new names of added columns (`name = "region_name"`).
    #[serde(default)]
    pub rename: std::collections::BTreeMap<String, String>,
    /// `enrich` stages: what happens to a row whose key is not in the table (default
    /// `null`).
    pub on_miss: Option<OnMiss>,
    /// Wasm `map` stages: the `[[tables]]` its component may read with `lookup` (read-only;
    /// any other table is refused).
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub limits: Limits,
}

/// Which clock windows follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeDomain {
    /// Arrival time at rivulet; windows fire on the wall clock, even without input.
    #[default]
    Processing,
    /// A timestamp carried by each record; windows fire on the watermark.
    Event,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// The row field to key by (`status`); absent: one key for all rows.
    pub key: Option<String>,
    #[serde(deserialize_with = "duration")]
    pub size: Duration,
    #[serde(default)]
    pub time: TimeDomain,
    /// Event time: a row field (epoch ms or ISO-8601 text), or `kafka` for the record timestamp.
    pub timestamp: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub out_of_orderness: Duration,
    #[serde(default, deserialize_with = "duration")]
    pub allowed_lateness: Duration,
    /// A partition without records for this long stops holding the watermark back.
    #[serde(default = "default_idle", deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Records later than the allowed lateness go to this topic, or to this file (one
    /// record per line); with neither they are counted and dropped.
    pub late_topic: Option<String>,
    pub late_path: Option<PathBuf>,
    /// Where the tasks' partial accumulators meet: in this process (`local`), through the
    /// Kafka topic `<job>-partials` (`kafka`), so several processes run one job, or nowhere
    /// beyond the process (`partitioned`: the source is partitioned by the window key).
    #[serde(default)]
    pub exchange: WindowExchange,
    /// Partitions of `<job>-partials` (default: as many as the source topic has).
    pub partials_partitions: Option<u32>,
}

/// Where a keyed window's partial accumulators are merged (see [`crate::cluster`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowExchange {
    /// In this process: its tasks' partials merge in memory.
    #[default]
    Local,
    /// Over Kafka: every process pre-aggregates its source partitions and merges its share
    /// of the partials topic's partitions.
    Kafka,
    /// Several processes, no exchange between them: the source topic is partitioned by the
    /// window key (its producer keys records by it), so each process finishes the windows
    /// of its own partitions: no partials topic and no merge stage. A key that comes from
    /// two partitions stops the job with an error naming it.
    Partitioned,
}

impl WindowExchange {
    /// Whether several processes of the job share the source through its consumer group
    /// (and run as a fleet over `<job>-control`).
    pub fn is_fleet(self) -> bool {
        matches!(self, WindowExchange::Kafka | WindowExchange::Partitioned)
    }
}

pub(crate) fn default_idle() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// A Wasm aggregate component.
    pub module: Option<PathBuf>,
    /// Built-in aggregates instead.
    #[serde(default)]
    pub builtin: Vec<BuiltinSpec>,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinFn {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinSpec {
    /// Output field (`order_count`).
    pub name: String,
    #[serde(rename = "fn")]
    pub function: BuiltinFn,
    /// Input field (all but `count`; `count` with a field counts the rows where it is present
    /// and not null).
    pub field: Option<String>,
    /// The input field's type (`"BIGINT"`, `"DECIMAL(10, 2)"`): integers add exactly and
    /// average to an integer, decimals add exactly; without it, numbers add as floats.
    #[serde(
        default,
        rename = "type",
        deserialize_with = "crate::column_type::deserialize_optional"
    )]
    pub input: Option<crate::column_type::Typed>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    pub module: PathBuf,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub on_error: OnError,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkSpec {
    /// A Kafka topic (idempotent producer, acks=all). `key`: a row field for the record key.
    /// `format`: `json` (the default) or `avro-confluent` (Avro in Confluent's wire format,
    /// schemas registered at `registry` under `<topic>-value` and `<topic>-key`).
    Kafka {
        topic: String,
        /// The record key: a row field, or several (`["store_id"]`); default: the window key.
        key: Option<KeyFields>,
        #[serde(default)]
        format: SinkFormat,
        registry: Option<String>,
        /// How the key is encoded (default: the field's text, or with `format =
        /// "avro-confluent"` an Avro string).
        key_format: Option<KeyFormat>,
        /// The registry for the key's schema, when it is not `registry`.
        key_registry: Option<String>,
        /// Subjects (default `<topic>-value` and `<topic>-key`, TopicNameStrategy).
        subject: Option<String>,
        key_subject: Option<String>,
        /// Whether the value holds the key fields too (`all`, the default) or not
        /// (`except-key`).
        #[serde(default)]
        value_fields: ValueFields,
        /// The result columns' types, in order (`[{ name = "total", type = "DECIMAL(10, 2)" }]`):
        /// the Avro schemas follow them (Flink's mapping) instead of the values seen.
        #[serde(default)]
        columns: Vec<ColumnSpec>,
    },
    /// Standard output, one record per line. (A struct variant, so that an unknown field is
    /// refused as it is for the other kinds.)
    Stdout {},
    /// A file, appended one record per line.
    File { path: PathBuf },
}

/// How a Kafka sink encodes results (without a `[format]` module).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkFormat {
    /// One JSON object per result.
    #[default]
    Json,
    /// Avro in Confluent's wire format, with a schema registry.
    AvroConfluent,
}

/// One or more row fields (`key = "store_id"` or `key = ["store_id", "region"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFields(pub Vec<String>);

impl<'de> Deserialize<'de> for KeyFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        match OneOrMany::deserialize(d)? {
            OneOrMany::One(field) => Ok(KeyFields(vec![field])),
            OneOrMany::Many(fields) => Ok(KeyFields(fields)),
        }
    }
}

/// How a Kafka sink encodes the record key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyFormat {
    /// The one key field's text, as bytes.
    Raw,
    /// A JSON object of the key fields.
    Json,
    /// An Avro record of the key fields in Confluent's wire format (Flink's key format),
    /// registered under `<topic>-key`.
    AvroConfluent,
}

/// Which fields a Kafka sink's value holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueFields {
    #[default]
    All,
    ExceptKey,
}

/// A result column's name and type.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(
        rename = "type",
        deserialize_with = "crate::column_type::deserialize_typed"
    )]
    pub ty: crate::column_type::Typed,
}

/// The built-in parse steps.
pub const BUILTIN_PARSE: [&str; 2] = ["json", "avro-confluent"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSpec {
    /// Topic for rejected records (default `<name>-dlq` when the job uses Kafka).
    pub topic: Option<String>,
    /// A file instead of a topic.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSpec {
    /// Bootstrap servers; `--brokers` and `KAFKA_BOOTSTRAP_SERVERS` override it.
    pub brokers: Option<String>,
    /// Extra librdkafka properties for every client.
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// How records are batched; either field may be left out (its default is kept).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchSpec {
    /// Records per batch through the stages.
    pub max_records: usize,
    /// How long a batch may wait to fill.
    #[serde(deserialize_with = "duration")]
    pub max_wait: Duration,
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            max_records: 1024,
            max_wait: Duration::from_millis(100),
        }
    }
}

/// `"30s"`, `"500ms"`, `"1.5m"`, `"2h"`: a number and its unit, in specs and on the command
/// line alike. A number without a unit is refused (it would be ambiguous: milliseconds or
/// seconds?), with the fix in the message.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like \"30s\", \"500ms\" or \"1m\""))?;
    let millis = match unit.trim() {
        "ms" => value,
        "s" => value * 1000.0,
        "m" | "min" => value * 60_000.0,
        "h" => value * 3_600_000.0,
        "" => return Err(missing_unit(text)),
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    if !millis.is_finite() || !(0.0..=1e15).contains(&millis) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_micros((millis * 1000.0) as u64))
}

/// The error for a duration written as a bare number.
fn missing_unit(number: &str) -> String {
    format!(
        "a duration needs a unit: write \"{number}s\" (or \"{number}ms\", \"{number}m\"), not {number}"
    )
}

/// An optional duration (present: as [`duration`]).
fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A spec's duration: text with a unit. A TOML number is refused with the text to write.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration like \"30s\", \"500ms\" or \"1m\"")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(E::custom(missing_unit(&n.to_string())))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
            Err(E::custom(missing_unit(&n.to_string())))
        }
        fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Duration, E> {
            Err(E::custom(missing_unit(&n.to_string())))
        }
    }
    d.deserialize_any(Text)
}

impl PipelineSpec {
    /// Whether the job runs as a fleet: a keyed window job over Kafka whose processes
    /// share the source (`window.exchange = "kafka"` or `"partitioned"`), coordinated over
    /// its control topic.
    pub fn is_fleet(&self) -> bool {
        matches!(self.source, SourceSpec::Kafka { .. })
            && self.window.as_ref().is_some_and(|w| w.exchange.is_fleet())
    }

    /// Reads, parses and validates a spec; relative paths in it (modules, files) are
    /// relative to the spec's folder.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            error: source,
        })?;
        let mut spec = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        spec.resolve_paths(base);
        Ok(spec)
    }

    /// Parses and validates spec text (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, SpecError> {
        let spec: PipelineSpec = toml::from_str(text).map_err(|err| SpecError::Parse {
            path: path.to_owned(),
            message: err.to_string().trim_end().replace('\n', " "),
        })?;
        spec.validate(path)?;
        Ok(spec)
    }

    /// Makes relative paths in the spec (modules, files) relative to `base`.
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for stage in &mut self.stages {
            if let Some(module) = &mut stage.module {
                fix(module);
            }
            for module in stage.functions.values_mut() {
                fix(module);
            }
        }
        if let Some(module) = self.aggregate.as_mut().and_then(|a| a.module.as_mut()) {
            fix(module);
        }
        if let Some(format) = &mut self.format {
            fix(&mut format.module);
        }
        if let SourceSpec::File { path } = &mut self.source {
            fix(path);
        }
        if let Some(path) = self.window.as_mut().and_then(|w| w.late_path.as_mut()) {
            fix(path);
        }
        if let SinkSpec::File { path } = &mut self.sink {
            fix(path);
        }
        if let Some(path) = &mut self.dead_letters.path {
            fix(path);
        }
        for table in &mut self.tables {
            if let TableSource::File { path, .. } = &mut table.source {
                fix(path);
            }
        }
    }

    /// Checks what the types cannot (`path` is for messages).
    pub(crate) fn validate(&self, path: &Path) -> Result<(), SpecError> {
        let invalid = |field: &str, reason: &str| {
            Err(SpecError::Invalid {
                path: path.to_owned(),
                field: field.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if self.name.trim().is_empty() {
            return invalid("name", "must not be empty");
        }
        if let Err((field, reason)) = table::check(self) {
            return invalid(&field, &reason);
        }
        for (i, stage) in self.stages.iter().enumerate() {
            let field = format!("stages[{i}]");
            if stage.kind == StageKind::Enrich {
                if self.stages[..i].iter().any(|s| s.name == stage.name) {
                    return invalid(&format!("{field}.name"), "stage names must be unique");
                }
                continue;
            }
            if stage.kind == StageKind::Parse && i != 0 {
                return invalid(
                    &format!("{field}.kind"),
                    "a parse stage must be the first stage",
                );
            }
            if matches!(stage.kind, StageKind::Filter | StageKind::Project) {
                if let Err((key, reason)) = crate::expr::program::check(stage) {
                    return invalid(&format!("{field}.{key}"), &reason);
                }
                if self.stages[..i].iter().any(|s| s.name == stage.name) {
                    return invalid(&format!("{field}.name"), "stage names must be unique");
                }
                continue;
            }
            if stage.condition.is_some()
                || stage.select.is_some()
                || !stage.types.is_empty()
                || !stage.functions.is_empty()
            {
                return invalid(
                    &field,
                    "`where`, `select`, `types` and `functions` are for `filter` and `project` stages",
                );
            }
            match (&stage.module, &stage.builtin) {
                (Some(_), Some(_)) => {
                    return invalid(&field, "give `module` or `builtin`, not both");
                }
                (None, None) => {
                    return invalid(&field, "needs `module` (a component) or `builtin`");
                }
                (None, Some(b))
                    if !(stage.kind == StageKind::Parse && BUILTIN_PARSE.contains(&b.as_str())) =>
                {
                    return invalid(
                        &format!("{field}.builtin"),
                        "the built-in stages are `json` and `avro-confluent` (parse stages)",
                    );
                }
                _ => {}
            }
            let avro = stage.builtin.as_deref() == Some("avro-confluent");
            match (avro, &stage.registry) {
                (true, None) => {
                    return invalid(
                        &format!("{field}.registry"),
                        "`avro-confluent` needs the schema registry's URL (registry = \"http://127.0.0.1:8081\")",
                    );
                }
                (false, Some(_)) => {
                    return invalid(
                        &format!("{field}.registry"),
                        "only the `avro-confluent` built-in reads a schema registry",
                    );
                }
                _ => {}
            }
            if self.stages[..i].iter().any(|s| s.name == stage.name) {
                return invalid(&format!("{field}.name"), "stage names must be unique");
            }
        }
        match (&self.window, &self.aggregate) {
            (Some(_), None) => return invalid("aggregate", "a window needs an [aggregate]"),
            (None, Some(_)) => return invalid("window", "an [aggregate] needs a [window]"),
            _ => {}
        }
        if let Some(window) = &self.window {
            if window.size.as_millis() == 0 {
                return invalid("window.size", "must be at least 1ms");
            }
            if window.late_topic.is_some() && window.late_path.is_some() {
                return invalid(
                    "window.late_path",
                    "give `late_topic` or `late_path`, not both",
                );
            }
            if window.time == TimeDomain::Event && window.timestamp.is_none() {
                return invalid(
                    "window.timestamp",
                    "event time needs a timestamp field (or \"kafka\")",
                );
            }
            if window.time == TimeDomain::Processing && window.timestamp.is_some() {
                return invalid(
                    "window.timestamp",
                    "only event-time windows read a timestamp (set time = \"event\")",
                );
            }
        }
        if let Some(aggregate) = &self.aggregate {
            match (&aggregate.module, aggregate.builtin.is_empty()) {
                (Some(_), false) => {
                    return invalid("aggregate", "give `module` or `builtin`, not both");
                }
                (None, true) => {
                    return invalid(
                        "aggregate",
                        "needs `module` (a component) or `builtin` aggregates",
                    );
                }
                _ => {}
            }
            for (i, builtin) in aggregate.builtin.iter().enumerate() {
                if builtin.function != BuiltinFn::Count && builtin.field.is_none() {
                    return invalid(
                        &format!("aggregate.builtin[{i}].field"),
                        "needs the input field",
                    );
                }
            }
        }
        if let Some(window) = &self.window
            && window.exchange.is_fleet()
        {
            let name = match window.exchange {
                WindowExchange::Partitioned => "partitioned",
                _ => "kafka",
            };
            match &self.source {
                SourceSpec::Kafka {
                    assign: AssignMode::Group,
                    bounded: false,
                    ..
                } => {}
                _ => {
                    return invalid(
                        "window.exchange",
                        &format!(
                            "\"{name}\" needs a Kafka source read by a consumer group (assign = \"group\", not bounded): the processes of the job share its partitions"
                        ),
                    );
                }
            }
            if window.exchange == WindowExchange::Partitioned && window.key.is_none() {
                return invalid(
                    "window.exchange",
                    "\"partitioned\" needs a window key (`window.key`): the source is partitioned by it",
                );
            }
            if window.exchange == WindowExchange::Partitioned
                && window.partials_partitions.is_some()
            {
                return invalid(
                    "window.partials_partitions",
                    "only with window.exchange = \"kafka\": a partitioned job has no partials topic",
                );
            }
            if window.partials_partitions == Some(0) {
                return invalid("window.partials_partitions", "must be at least 1");
            }
        }
        if let Some(reason) = self.exactly_once_refusal() {
            return invalid(reason.0, &reason.1);
        }
        if self.commit_interval.is_some_and(|d| d.is_zero()) {
            return invalid("commit_interval", "must be at least 1ms");
        }
        if let SourceSpec::Kafka {
            bounded: true,
            assign: AssignMode::Group,
            ..
        } = self.source
        {
            return invalid(
                "source.bounded",
                "a bounded read needs assign = \"all\" (it reads every partition to its end)",
            );
        }
        if let SinkSpec::Kafka {
            format,
            registry,
            key,
            key_format,
            key_registry,
            value_fields,
            ..
        } = &self.sink
        {
            let window_key = self.window.as_ref().and_then(|w| w.key.clone());
            let key_count = key
                .as_ref()
                .map_or(usize::from(window_key.is_some()), |k| k.0.len());
            if key.as_ref().is_some_and(|k| k.0.is_empty()) {
                return invalid("sink.key", "names no field");
            }
            if key_format.is_some() && self.format.is_some() {
                return invalid(
                    "sink.key_format",
                    "a [format] module sets the keys itself; give one or the other",
                );
            }
            match key_format {
                Some(KeyFormat::Raw) if key_count > 1 => {
                    return invalid(
                        "sink.key_format",
                        "\"raw\" takes one key field (use \"json\" or \"avro-confluent\" for several)",
                    );
                }
                Some(_) if key_count == 0 => {
                    return invalid("sink.key_format", "needs a key (`key`, or a window key)");
                }
                Some(KeyFormat::AvroConfluent) if registry.is_none() && key_registry.is_none() => {
                    return invalid(
                        "sink.key_registry",
                        "key_format = \"avro-confluent\" needs the schema registry's URL",
                    );
                }
                _ => {}
            }
            if *value_fields == ValueFields::ExceptKey && key_count == 0 {
                return invalid("sink.value_fields", "\"except-key\" needs a key");
            }
            match (format, registry) {
                (SinkFormat::AvroConfluent, None) => {
                    return invalid(
                        "sink.registry",
                        "format = \"avro-confluent\" needs the schema registry's URL",
                    );
                }
                (SinkFormat::Json, Some(_)) if *key_format != Some(KeyFormat::AvroConfluent) => {
                    return invalid(
                        "sink.registry",
                        "only format = \"avro-confluent\" uses a schema registry",
                    );
                }
                (SinkFormat::AvroConfluent, Some(_)) if self.format.is_some() => {
                    return invalid(
                        "sink.format",
                        "give a [format] module or format = \"avro-confluent\", not both",
                    );
                }
                _ => {}
            }
        }
        if self.batch.max_records == 0 || self.batch.max_records > 1_000_000 {
            return invalid("batch.max_records", "must be between 1 and 1000000");
        }
        Ok(())
    }

    /// Whether any part of the job talks to Kafka.
    /// Where dead letters go when they go to Kafka: the `[dead_letters]` topic, else
    /// `<name>-dlq` when the job uses Kafka and no file is given.
    pub fn dead_letter_topic(&self) -> Option<String> {
        match (&self.dead_letters.path, &self.dead_letters.topic) {
            (Some(_), _) => None,
            (None, Some(topic)) => Some(topic.clone()),
            (None, None) if self.uses_kafka() => Some(format!("{}-dlq", self.name)),
            (None, None) => None,
        }
    }

    /// Why this job cannot run exactly-once (the field at fault and the reason), if it
    /// asks to and cannot: every input must be a Kafka topic read with a consumer group
    /// (offsets commit in the transaction) and every output a Kafka topic (files and
    /// standard output are not transactional).
    pub fn exactly_once_refusal(&self) -> Option<(&'static str, String)> {
        if self.delivery != Delivery::ExactlyOnce {
            return None;
        }
        const WHY: &str =
            "delivery = \"exactly-once\" commits outputs and offsets in Kafka transactions";
        if !matches!(self.source, SourceSpec::Kafka { .. }) {
            return Some(("source", format!("{WHY}: it needs a Kafka source")));
        }
        if !matches!(self.sink, SinkSpec::Kafka { .. }) {
            return Some((
                "sink",
                format!(
                    "{WHY}: it needs a Kafka sink (a file or standard output cannot take back what an aborted transaction wrote)"
                ),
            ));
        }
        if self.dead_letters.path.is_some() {
            return Some((
                "dead_letters.path",
                format!(
                    "{WHY}: dead letters must go to a topic (`dead_letters.topic`), not a file"
                ),
            ));
        }
        if self.window.as_ref().is_some_and(|w| w.late_path.is_some()) {
            return Some((
                "window.late_path",
                format!("{WHY}: late records must go to a topic (`late_topic`), not a file"),
            ));
        }
        // Over the partials topic, windows cross tasks inside the transactions.
        if self
            .window
            .as_ref()
            .is_some_and(|w| w.exchange != WindowExchange::Kafka)
            && self.parallelism.is_some_and(|n| n > 1)
        {
            return Some((
                "parallelism",
                format!(
                    "{WHY}: a window over several tasks of one process hands windows between tasks outside any transaction; run parallelism = 1 per process (more processes share the partitions through the consumer group), or exchange the windows over Kafka (`window.exchange = \"kafka\"`)"
                ),
            ));
        }
        None
    }

    pub fn uses_kafka(&self) -> bool {
        matches!(self.source, SourceSpec::Kafka { .. })
            || matches!(self.sink, SinkSpec::Kafka { .. })
            || self.dead_letters.topic.is_some()
            || self.window.as_ref().is_some_and(|w| w.late_topic.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP3: &str = r#"
        name = "count-by-status"
        [source]
        kind = "kafka"
        topic = "partitioned-topic"
        [[stages]]
        name = "parse"
        kind = "parse"
        module = "../target/wasm32-wasip2/wasm/udf_parse_orders.wasm"
        [window]
        key = "status"
        size = "30s"
        [aggregate]
        builtin = [{ name = "order_count", fn = "count" }]
        [sink]
        kind = "kafka"
        topic = "flink-aggregates"
    "#;

    fn parse(text: &str) -> Result<PipelineSpec, SpecError> {
        PipelineSpec::parse(text, Path::new("job.toml"))
    }

    #[test]
    fn a_batch_section_may_give_either_field_alone() {
        let records = parse(&format!("{STEP3}\n[batch]\nmax_records = 64\n")).unwrap();
        assert_eq!(records.batch.max_records, 64);
        assert_eq!(records.batch.max_wait, Duration::from_millis(100));
        let wait = parse(&format!("{STEP3}\n[batch]\nmax_wait = \"5ms\"\n")).unwrap();
        assert_eq!(wait.batch.max_records, 1024);
        assert_eq!(wait.batch.max_wait, Duration::from_millis(5));
        let unknown = parse(&format!("{STEP3}\n[batch]\nmax_rows = 5\n")).unwrap_err();
        assert!(unknown.to_string().contains("max_rows"), "{unknown}");
    }

    #[test]
    fn reads_the_workshop_step3_spec_with_defaults() {
        let spec = parse(STEP3).unwrap();
        let window = spec.window.unwrap();
        assert_eq!(window.size, Duration::from_secs(30));
        assert_eq!(window.time, TimeDomain::Processing);
        assert_eq!(spec.batch.max_records, 1024);
        assert!(matches!(
            spec.source,
            SourceSpec::Kafka {
                start: StartAt::Committed,
                assign: AssignMode::Group,
                ..
            }
        ));
    }

    #[test]
    fn a_partitioned_exchange_needs_a_group_source_a_key_and_no_partials_topic() {
        let partitioned = STEP3.replace(
            "size = \"30s\"",
            "size = \"30s\"\nexchange = \"partitioned\"",
        );
        let spec = parse(&partitioned).unwrap();
        assert_eq!(spec.window.unwrap().exchange, WindowExchange::Partitioned);
        let assigned = partitioned.replace(
            "topic = \"partitioned-topic\"",
            "topic = \"partitioned-topic\"\nassign = \"all\"",
        );
        let err = parse(&assigned).unwrap_err().to_string();
        assert!(
            err.contains("\"partitioned\" needs a Kafka source read by a consumer group"),
            "{err}"
        );
        let keyless = partitioned.replace("key = \"status\"\n", "");
        let err = parse(&keyless).unwrap_err().to_string();
        assert!(err.contains("\"partitioned\" needs a window key"), "{err}");
        let partials = partitioned.replace(
            "exchange = \"partitioned\"",
            "exchange = \"partitioned\"\npartials_partitions = 3",
        );
        let err = parse(&partials).unwrap_err().to_string();
        assert!(
            err.contains("a partitioned job has no partials topic"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_named_with_its_line() {
        let err = parse(&STEP3.replace("size = \"30s\"", "sise = \"30s\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `sise`"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_problem() {
        let err = parse(&STEP3.replace("\"30s\"", "\"30 parsecs\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown duration unit"), "{err}");
    }

    #[test]
    fn event_time_needs_a_timestamp_field() {
        let err = parse(&STEP3.replace("size = \"30s\"", "size = \"30s\"\ntime = \"event\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`window.timestamp`"), "{err}");
    }

    #[test]
    fn window_without_aggregate_is_refused() {
        let text = STEP3.replace(
            "[aggregate]\n        builtin = [{ name = \"order_count\", fn = \"count\" }]",
            "",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("`aggregate`: a window needs an [aggregate]"),
            "{err}"
        );
    }

    #[test]
    fn sum_without_field_is_refused() {
        let err = parse(&STEP3.replace("fn = \"count\"", "fn = \"sum\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`aggregate.builtin[0].field`"), "{err}");
    }

    #[test]
    fn bare_number_duration_is_refused_with_the_text_to_write() {
        for (size, number) in [("30", "30"), ("\"30\"", "30"), ("1.5", "1.5")] {
            let err = parse(&STEP3.replace("size = \"30s\"", &format!("size = {size}")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("a duration needs a unit: write \"{number}s\"")),
                "{size}: {err}"
            );
            assert!(err.contains("size"), "{size}: {err}");
        }
        let err = parse(&STEP3.replace("size = \"30s\"", "size = \"30s\"\nallowed_lateness = 10"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("write \"10s\""), "{err}");
    }

    #[test]
    fn unknown_field_of_every_source_and_sink_kind_is_named() {
        let sources = [
            "kind = \"kafka\"\ntopic = \"t\"",
            "kind = \"file\"\npath = \"in.jsonl\"",
            "kind = \"stdin\"",
        ];
        let sinks = [
            "kind = \"kafka\"\ntopic = \"t\"",
            "kind = \"file\"\npath = \"out.jsonl\"",
            "kind = \"stdout\"",
        ];
        let job = |source: &str, sink: &str| {
            format!("name = \"j\"\n[source]\n{source}\n[sink]\n{sink}\n")
        };
        for source in sources {
            assert!(parse(&job(source, sinks[2])).is_ok(), "{source}");
            let err = parse(&job(&format!("{source}\ncolour = \"red\""), sinks[2]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown field `colour`"), "{source}: {err}");
        }
        for sink in sinks {
            assert!(parse(&job(sources[2], sink)).is_ok(), "{sink}");
            let err = parse(&job(sources[2], &format!("{sink}\ncolour = \"red\"")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("unknown field `colour`"), "{sink}: {err}");
        }
    }

    #[test]
    fn avro_confluent_needs_a_registry_and_only_it_takes_one() {
        let job = |stage: &str, sink: &str| {
            format!(
                "name = \"j\"\n[source]\nkind = \"stdin\"\n[[stages]]\nname = \"p\"\nkind = \"parse\"\n{stage}\n[sink]\nkind = \"kafka\"\ntopic = \"t\"\n{sink}\n"
            )
        };
        let url = "registry = \"http://127.0.0.1:8081\"";
        let avro = "builtin = \"avro-confluent\"";
        let spec = parse(&job(
            &format!("{avro}\n{url}"),
            &format!("format = \"avro-confluent\"\n{url}"),
        ))
        .unwrap();
        assert!(matches!(
            spec.sink,
            SinkSpec::Kafka {
                format: SinkFormat::AvroConfluent,
                ..
            }
        ));
        let err = parse(&job(avro, "")).unwrap_err().to_string();
        assert!(
            err.contains("`stages[0].registry`: `avro-confluent` needs the schema registry's URL"),
            "{err}"
        );
        let err = parse(&job(&format!("builtin = \"json\"\n{url}"), ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`stages[0].registry`: only the `avro-confluent` built-in"),
            "{err}"
        );
        let err = parse(&job("builtin = \"json\"", "format = \"avro-confluent\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`sink.registry`: format = \"avro-confluent\" needs"),
            "{err}"
        );
        let err = parse(&job("builtin = \"json\"", "format = \"avro\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `avro`"), "{err}");
        let err = parse(&job("builtin = \"csv\"", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`stages[0].builtin`"), "{err}");
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(
            parse_duration("5"),
            Err("a duration needs a unit: write \"5s\" (or \"5ms\", \"5m\"), not 5".into())
        );
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
    }
}
