//! A job's operator graph as people read it: source → stages → (window → aggregate) →
//! format → sink, with the side outputs (dead letters, late records) as their own edges.
//! Printed by `rivulet graph` as Mermaid or Graphviz DOT.

use crate::aggregate::dispatch::AGGREGATE;
use crate::spec::{PipelineSpec, SinkSpec, SourceSpec, TimeDomain};
use std::fmt::Write;
use std::path::Path;

/// The operators of a job and what flows between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobGraph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Tasks that run the graph, each with its own share of the input.
    pub tasks: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Identifier in the printed graph (`n0`, `n1`, …).
    pub id: String,
    /// What it is, on one line.
    pub label: String,
    /// Sources and sinks (topics, files) print as such.
    pub io: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// A side output (dead letters, late records), labelled with what goes there.
    pub side: Option<&'static str>,
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn seconds(d: std::time::Duration) -> String {
    match d.as_millis() {
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

impl JobGraph {
    /// The graph a spec describes, run by `tasks` tasks.
    pub fn of(spec: &PipelineSpec, tasks: usize) -> Self {
        let mut graph = JobGraph {
            nodes: Vec::new(),
            edges: Vec::new(),
            tasks,
        };
        let source = match &spec.source {
            SourceSpec::Kafka { topic, .. } => format!("Kafka topic {topic}"),
            SourceSpec::File { path } => format!("file {}", file_name(path)),
            SourceSpec::Stdin {} => "standard input".to_owned(),
        };
        let mut last = graph.node(source, true);
        let dead = match (&spec.dead_letters.path, spec.dead_letter_topic()) {
            (Some(path), _) => Some(format!("file {}", file_name(path))),
            (None, Some(topic)) => Some(format!("Kafka topic {topic}")),
            (None, None) => None,
        };
        let dead = dead.map(|label| graph.node(label, true));
        for stage in &spec.stages {
            let logic = match (&stage.module, &stage.builtin) {
                (Some(module), _) => file_name(module),
                (None, Some(builtin)) => format!("built-in {builtin}"),
                (None, None) => "built-in json".to_owned(),
            };
            let kind = format!("{:?}", stage.kind).to_lowercase();
            let node = graph.node(format!("{kind} {}: {logic}", stage.name), false);
            graph.edge(&last, &node, None);
            if let Some(dead) = &dead {
                graph.edge(&node, dead, Some("rejected"));
            }
            last = node;
        }
        if let Some(window) = &spec.window {
            let time = match window.time {
                TimeDomain::Processing => "processing time".to_owned(),
                TimeDomain::Event => format!(
                    "event time {}, {} out of order",
                    window.timestamp.as_deref().unwrap_or("kafka"),
                    seconds(window.out_of_orderness)
                ),
            };
            let key = window
                .key
                .as_deref()
                .map_or_else(|| "no key".to_owned(), |k| format!("key {k}"));
            let lateness = match window.allowed_lateness.is_zero() {
                true => String::new(),
                false => format!(", {} allowed lateness", seconds(window.allowed_lateness)),
            };
            let node = graph.node(
                format!(
                    "tumbling window {}, {key}, {time}{lateness}",
                    seconds(window.size)
                ),
                false,
            );
            graph.edge(&last, &node, None);
            if let Some(dead) = &dead {
                graph.edge(&node, dead, Some("no key or time"));
            }
            let late = match (&window.late_topic, &window.late_path) {
                (_, Some(path)) => Some(format!("file {}", file_name(path))),
                (Some(topic), None) => Some(format!("Kafka topic {topic}")),
                (None, None) => None,
            };
            if let Some(late) = late {
                let late = graph.node(late, true);
                graph.edge(&node, &late, Some("too late"));
            }
            last = node;
            if let Some(aggregate) = &spec.aggregate {
                let logic = match &aggregate.module {
                    Some(module) => file_name(module),
                    None => aggregate
                        .builtin
                        .iter()
                        .map(|b| format!("{:?} as {}", b.function, b.name).to_lowercase())
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                let merge = match tasks > 1 {
                    true => format!(", partials of {tasks} tasks merged"),
                    false => String::new(),
                };
                let node = graph.node(format!("{AGGREGATE}: {logic}{merge}"), false);
                graph.edge(&last, &node, None);
                if let Some(dead) = &dead {
                    graph.edge(&node, dead, Some("refused"));
                }
                last = node;
            }
        }
        let format = match &spec.format {
            Some(format) => format!("format: {}", file_name(&format.module)),
            None => match &spec.sink {
                SinkSpec::Kafka {
                    format: crate::spec::SinkFormat::AvroConfluent,
                    registry: Some(registry),
                    ..
                } => format!("format: avro-confluent ({registry})"),
                _ => "format: JSON".to_owned(),
            },
        };
        let node = graph.node(format, false);
        graph.edge(&last, &node, None);
        let avro = matches!(
            &spec.sink,
            SinkSpec::Kafka {
                format: crate::spec::SinkFormat::AvroConfluent,
                ..
            }
        );
        if let Some(dead) = &dead
            && (spec.format.is_some() || avro)
        {
            graph.edge(&node, dead, Some("refused"));
        }
        let sink = match &spec.sink {
            SinkSpec::Kafka { topic, .. } => format!("Kafka topic {topic}"),
            SinkSpec::File { path } => format!("file {}", file_name(path)),
            SinkSpec::Stdout {} => "standard output".to_owned(),
        };
        let sink = graph.node(sink, true);
        graph.edge(&node, &sink, None);
        graph
    }

    fn node(&mut self, label: String, io: bool) -> String {
        let id = format!("n{}", self.nodes.len());
        self.nodes.push(Node {
            id: id.clone(),
            label,
            io,
        });
        id
    }

    fn edge(&mut self, from: &str, to: &str, side: Option<&'static str>) {
        self.edges.push(Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            side,
        });
    }

    fn title(&self) -> String {
        match self.tasks {
            1 => "1 task".to_owned(),
            n => format!("{n} tasks, each with its share of the input"),
        }
    }

    /// A Mermaid flowchart (renders in GitHub Markdown).
    pub fn mermaid(&self) -> String {
        let mut out = format!("flowchart LR\n  %% {}\n", self.title());
        for node in &self.nodes {
            let label = node.label.replace('"', "#quot;");
            let _ = match node.io {
                true => writeln!(out, "  {}[(\"{label}\")]", node.id),
                false => writeln!(out, "  {}[\"{label}\"]", node.id),
            };
        }
        for edge in &self.edges {
            let _ = match edge.side {
                Some(what) => writeln!(out, "  {} -. {what} .-> {}", edge.from, edge.to),
                None => writeln!(out, "  {} --> {}", edge.from, edge.to),
            };
        }
        out
    }

    /// A Graphviz DOT digraph.
    pub fn dot(&self) -> String {
        let mut out = format!(
            "digraph job {{\n  rankdir=LR;\n  label=\"{}\";\n",
            self.title()
        );
        for node in &self.nodes {
            let label = node.label.replace('\\', "\\\\").replace('"', "\\\"");
            let shape = if node.io { "cylinder" } else { "box" };
            let _ = writeln!(out, "  {} [label=\"{label}\", shape={shape}];", node.id);
        }
        for edge in &self.edges {
            let _ = match edge.side {
                Some(what) => writeln!(
                    out,
                    "  {} -> {} [label=\"{what}\", style=dashed];",
                    edge.from, edge.to
                ),
                None => writeln!(out, "  {} -> {};", edge.from, edge.to),
            };
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
name = "orders"
[source]
kind = "kafka"
topic = "partitioned-topic"
[[stages]]
name = "parse-orders"
kind = "parse"
module = "target/udf_parse_orders.wasm"
[window]
key = "status"
size = "30s"
time = "event"
timestamp = "tsMillis"
out_of_orderness = "2s"
late_topic = "late-orders"
[aggregate]
builtin = [{ name = "order_count", fn = "count" }]
[sink]
kind = "kafka"
topic = "flink-aggregates"
[dead_letters]
topic = "orders-dlq"
"#;

    #[test]
    fn a_keyed_window_job_reads_as_its_operators_with_side_outputs() {
        let spec = PipelineSpec::parse(SPEC, Path::new("job.toml")).unwrap();
        let graph = JobGraph::of(&spec, 2);
        assert_eq!(
            graph.mermaid(),
            concat!(
                "flowchart LR\n",
                "  %% 2 tasks, each with its share of the input\n",
                "  n0[(\"Kafka topic partitioned-topic\")]\n",
                "  n1[(\"Kafka topic orders-dlq\")]\n",
                "  n2[\"parse parse-orders: udf_parse_orders.wasm\"]\n",
                "  n3[\"tumbling window 30 s, key status, event time tsMillis, 2 s out of order\"]\n",
                "  n4[(\"Kafka topic late-orders\")]\n",
                "  n5[\"aggregate: count as order_count, partials of 2 tasks merged\"]\n",
                "  n6[\"format: JSON\"]\n",
                "  n7[(\"Kafka topic flink-aggregates\")]\n",
                "  n0 --> n2\n",
                "  n2 -. rejected .-> n1\n",
                "  n2 --> n3\n",
                "  n3 -. no key or time .-> n1\n",
                "  n3 -. too late .-> n4\n",
                "  n3 --> n5\n",
                "  n5 -. refused .-> n1\n",
                "  n5 --> n6\n",
                "  n6 --> n7\n",
            )
        );
        let dot = graph.dot();
        assert!(dot.starts_with("digraph job {\n  rankdir=LR;\n"), "{dot}");
        assert!(
            dot.contains("  n3 -> n4 [label=\"too late\", style=dashed];\n"),
            "{dot}"
        );
        assert!(
            dot.contains("  n7 [label=\"Kafka topic flink-aggregates\", shape=cylinder];\n"),
            "{dot}"
        );
        assert!(dot.ends_with("}\n"));
    }

    #[test]
    fn a_file_job_without_window_or_dead_letters_has_no_side_edges() {
        let spec = PipelineSpec::parse(
            r#"
name = "replay"
[source]
kind = "file"
path = "samples/orders.jsonl"
[[stages]]
name = "parse"
kind = "parse"
builtin = "json"
[sink]
kind = "stdout"
"#,
            Path::new("job.toml"),
        )
        .unwrap();
        let graph = JobGraph::of(&spec, 1);
        let labels: Vec<&str> = graph.nodes.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "file orders.jsonl",
                "parse parse: built-in json",
                "format: JSON",
                "standard output"
            ]
        );
        assert!(graph.edges.iter().all(|e| e.side.is_none()));
        assert_eq!(graph.edges.len(), 3);
    }
}
