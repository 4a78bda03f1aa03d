//! `EXPLAIN INSERT ...` and `rivulet sql --explain`: the planned job in words, then its
//! operator graph (the one `rivulet graph` prints for a TOML spec).

use super::SqlJob;
use crate::graph::JobGraph;
use crate::spec::{
    BuiltinFn, KeyFormat, OnError, PipelineSpec, SinkFormat, SinkSpec, SourceSpec, StageKind,
    StartAt, TimeDomain, ValueFields,
};
use std::fmt::Write;
use std::time::Duration;

fn duration(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

fn source(spec: &PipelineSpec) -> String {
    match &spec.source {
        SourceSpec::Kafka {
            topic,
            group,
            start,
            bounded,
            ..
        } => {
            let group = group
                .clone()
                .unwrap_or_else(|| format!("rivulet-{}", spec.name));
            let start = match start {
                StartAt::Committed => "committed offsets",
                StartAt::Earliest => "earliest",
                StartAt::Latest => "latest",
            };
            let end = if *bounded { ", to the end offsets" } else { "" };
            format!("kafka topic {topic} (group {group}, from {start}{end})")
        }
        SourceSpec::File { path } => format!("file {}", path.display()),
        SourceSpec::Stdin {} => "standard input".to_owned(),
    }
}

fn sink(spec: &PipelineSpec) -> String {
    match &spec.sink {
        SinkSpec::Kafka {
            topic,
            key,
            format: SinkFormat::AvroConfluent,
            registry: Some(registry),
            key_format,
            value_fields,
            ..
        } => {
            let key = match (key, key_format) {
                (Some(key), Some(format)) => format!(
                    "key {} as {}, ",
                    key.0.join(", "),
                    match format {
                        KeyFormat::Raw => "raw text",
                        KeyFormat::Json => "JSON",
                        KeyFormat::AvroConfluent => "avro-confluent",
                    }
                ),
                _ => String::new(),
            };
            let fields = match value_fields {
                ValueFields::All => "",
                ValueFields::ExceptKey => " without the key columns",
            };
            format!(
                "kafka topic {topic} ({key}value as avro-confluent{fields}; registry {registry})"
            )
        }
        SinkSpec::Kafka {
            topic,
            key: Some(key),
            key_format: Some(format),
            ..
        } => format!(
            "kafka topic {topic} (key {} as {}, value as JSON: window_start, window_end as ISO-8601 text)",
            key.0.join(", "),
            match format {
                KeyFormat::Raw => "raw text",
                KeyFormat::Json => "JSON",
                KeyFormat::AvroConfluent => "avro-confluent",
            }
        ),
        SinkSpec::Kafka { topic, .. } => format!("kafka topic {topic}"),
        SinkSpec::File { path } => format!("file {}", path.display()),
        SinkSpec::Stdout {} => "standard output".to_owned(),
    }
}

/// The plan of `job` as text, with the graph for `tasks` tasks.
pub fn explain(job: &SqlJob, tasks: usize) -> String {
    let spec = &job.spec;
    let mut out = format!("job {}\n", spec.name);
    let _ = writeln!(out, "  source:    {}", source(spec));
    if let Some(brokers) = &spec.kafka.brokers {
        let _ = writeln!(out, "  brokers:   {brokers}");
    }
    for stage in &spec.stages {
        match stage.kind {
            StageKind::Filter => {
                let condition = stage.condition.as_deref().unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  filter:    {} (built-in: WHERE {condition})",
                    stage.name
                );
                continue;
            }
            StageKind::Project => {
                let list = stage.select.as_deref().unwrap_or_default();
                let _ = writeln!(out, "  project:   {} (built-in: SELECT {list})", stage.name);
                for (name, path) in &stage.functions {
                    let _ = writeln!(out, "  function:  {name} = {}", path.display());
                }
                continue;
            }
            StageKind::Enrich => {
                let _ = writeln!(
                    out,
                    "  enrich:    {} (lookup in table {} on {})",
                    stage.name,
                    stage.table.as_deref().unwrap_or_default(),
                    stage.on.as_deref().unwrap_or_default()
                );
                continue;
            }
            StageKind::Parse | StageKind::Map => {}
        }
        let errors = match stage.on_error {
            OnError::Drop => "malformed records dropped and counted",
            OnError::Dlq => "malformed records to the dead letters",
            OnError::Fail => "the job fails on a malformed record",
        };
        let registry = stage
            .registry
            .as_deref()
            .map_or_else(String::new, |url| format!(", registry {url}"));
        let _ = writeln!(
            out,
            "  parse:     {} (built-in {}{registry}; {errors})",
            stage.name,
            stage.builtin.as_deref().unwrap_or("module")
        );
    }
    if let Some(window) = &spec.window {
        let time = match (window.time, &window.timestamp) {
            (TimeDomain::Processing, _) => "processing time".to_owned(),
            (TimeDomain::Event, Some(field)) => format!(
                "event time from {field}, watermark {} behind",
                duration(window.out_of_orderness)
            ),
            (TimeDomain::Event, None) => "event time".to_owned(),
        };
        let key = window
            .key
            .as_deref()
            .map_or_else(|| "no key".to_owned(), |k| format!("key {k}"));
        let _ = writeln!(
            out,
            "  window:    tumbling {}, {time}, {key}",
            duration(window.size)
        );
    }
    if let Some(aggregate) = &spec.aggregate {
        let list: Vec<String> = aggregate
            .builtin
            .iter()
            .map(|b| {
                let function = match b.function {
                    BuiltinFn::Count => "COUNT",
                    BuiltinFn::Sum => "SUM",
                    BuiltinFn::Avg => "AVG",
                    BuiltinFn::Min => "MIN",
                    BuiltinFn::Max => "MAX",
                };
                format!(
                    "{} = {function}({})",
                    b.name,
                    b.field.as_deref().unwrap_or("*")
                )
            })
            .collect();
        let _ = writeln!(out, "  aggregate: {}", list.join(", "));
    }
    let sink = sink(spec);
    if sink.ends_with(')') {
        let _ = writeln!(out, "  sink:      {sink}");
    } else {
        let encoding = match spec.window {
            Some(_) => " (JSON: window_start, window_end as ISO-8601 text)",
            None => " (JSON)",
        };
        let _ = writeln!(out, "  sink:      {sink}{encoding}");
    }
    if spec.delivery == crate::spec::Delivery::ExactlyOnce {
        let every = spec
            .commit_interval
            .unwrap_or(crate::spec::EXACTLY_ONCE_COMMIT_INTERVAL);
        let _ = writeln!(
            out,
            "  delivery:  exactly-once (results, dead letters and offsets commit in one Kafka transaction per task every {every:?}; read them read_committed)"
        );
    }
    for other in &job.also {
        let _ = writeln!(
            out,
            "  also:      job {} (a statement set's INSERT, run side by side)",
            other.name
        );
    }
    for note in &job.notes {
        let _ = writeln!(out, "  note:      {note}");
    }
    for warning in &job.warnings {
        let _ = writeln!(out, "  warning:   {warning}");
    }
    out.push('\n');
    out.push_str(&JobGraph::of(spec, tasks).mermaid());
    out
}
