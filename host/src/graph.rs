//! A job's operator graph as people read it: source → stages → (window → aggregate) →
//! format → sink, with the side outputs (dead letters, late records) as their own edges.
//! Printed by `rivulet graph` as Mermaid or Graphviz DOT, and served in `/status` with each
//! edge's live count (the dashboard draws it).

use crate::aggregate::dispatch::AGGREGATE;
use crate::counters::JobCounters;
use crate::spec::{PipelineSpec, SinkSpec, SourceSpec, TimeDomain};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// The operators of a job and what flows between them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobGraph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Tasks that run the graph, each with its own share of the input.
    pub tasks: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Identifier in the printed graph (`n0`, `n1`, …).
    pub id: String,
    /// What it is, on one line.
    pub label: String,
    /// Sources and sinks (topics, files) print as such.
    pub io: bool,
    /// The stage whose module the node runs, if any: a swap renames the module in the
    /// label (see [`JobGraph::relabel`]).
    #[serde(skip)]
    pub module: Option<ModuleLabel>,
}

/// Where a node's label names its stage's module: `before` + the module + `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleLabel {
    pub stage: String,
    pub before: String,
    pub after: String,
}

/// How a label names a module from its origin: a file by its name, an upload as such.
pub fn module_name(origin: &str) -> String {
    match origin.strip_prefix(crate::status::UPLOADED) {
        Some(_) => origin.to_owned(),
        None => file_name(Path::new(origin)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// A side output (dead letters, late records), labelled with what goes there.
    pub side: Option<&'static str>,
    /// Which counter says how much went along it (None: none counts it alone).
    pub flow: Option<Flow>,
}

/// The counter of what flows along an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "counter", content = "stage")]
pub enum Flow {
    /// Records read from the source.
    Source,
    /// Rows a parse or map stage put out.
    RowsOut(String),
    /// Dead letters of a stage (the window's refusals count as the aggregate's).
    DeadLetters(String),
    /// Rows added to windows.
    WindowRows,
    /// Records too late for their window.
    TooLate,
    /// Window results.
    Results,
    /// Records sent to the sink.
    SinkSent,
}

impl Flow {
    /// How much went along the edge, from the job's counters and records read.
    pub fn count(&self, counters: &JobCounters, records: u64) -> u64 {
        let window = counters.window.unwrap_or_default();
        match self {
            Flow::Source => records,
            Flow::RowsOut(stage) => counters.steps.get(stage).map_or(0, |s| s.rows_out),
            Flow::DeadLetters(stage) => counters.dead_letters.get(stage).copied().unwrap_or(0),
            Flow::WindowRows => window.rows,
            Flow::TooLate => window.too_late,
            Flow::Results => window.results,
            Flow::SinkSent => counters.sink_sent,
        }
    }
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
        let mut flow = Flow::Source;
        let dead = match (&spec.dead_letters.path, spec.dead_letter_topic()) {
            (Some(path), _) => Some(format!("file {}", file_name(path))),
            (None, Some(topic)) => Some(format!("Kafka topic {topic}")),
            (None, None) => None,
        };
        let dead = dead.map(|label| graph.node(label, true));
        for stage in &spec.stages {
            let logic = match (&stage.module, &stage.builtin) {
                _ if stage.kind == crate::spec::StageKind::Filter => {
                    stage.condition.clone().unwrap_or_default()
                }
                _ if stage.kind == crate::spec::StageKind::Project => {
                    stage.select.clone().unwrap_or_default()
                }
                _ if stage.kind == crate::spec::StageKind::Enrich => format!(
                    "{} on {}",
                    stage.table.as_deref().unwrap_or_default(),
                    stage.on.as_deref().unwrap_or_default()
                ),
                (Some(module), _) => file_name(module),
                (None, Some(builtin)) => format!("built-in {builtin}"),
                (None, None) => "built-in json".to_owned(),
            };
            let kind = format!("{:?}", stage.kind).to_lowercase();
            let before = format!("{kind} {}: ", stage.name);
            let node = graph.node(format!("{before}{logic}"), false);
            if stage.module.is_some() {
                graph.runs_module(&node, &stage.name, before, String::new());
            }
            graph.edge(&last, &node, None, Some(flow));
            // A reference table reaches every task of its `enrich` stage, or of a Wasm map
            // stage that reads it (`tables`): a side input.
            let tables = spec.tables.iter().filter(|t| {
                (stage.kind == crate::spec::StageKind::Enrich
                    && Some(&t.name) == stage.table.as_ref())
                    || stage.tables.contains(&t.name)
            });
            for table in tables {
                let source = match &table.source {
                    crate::spec::TableSource::File { path, .. } => {
                        format!("file {}", file_name(path))
                    }
                    crate::spec::TableSource::Kafka { topic, .. } => {
                        format!("Kafka topic {topic}")
                    }
                };
                let input = graph.node(format!("table {}: {source}", table.name), true);
                graph.edge(&input, &node, Some("broadcast"), None);
            }
            if let Some(dead) = &dead {
                let refused = Flow::DeadLetters(stage.name.clone());
                graph.edge(&node, dead, Some("rejected"), Some(refused));
            }
            last = node;
            flow = Flow::RowsOut(stage.name.clone());
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
            graph.edge(&last, &node, None, Some(flow));
            if let Some(dead) = &dead {
                let refused = Flow::DeadLetters(AGGREGATE.to_owned());
                graph.edge(&node, dead, Some("no key or time"), Some(refused));
            }
            let late = match (&window.late_topic, &window.late_path) {
                (_, Some(path)) => Some(format!("file {}", file_name(path))),
                (Some(topic), None) => Some(format!("Kafka topic {topic}")),
                (None, None) => None,
            };
            if let Some(late) = late {
                let late = graph.node(late, true);
                graph.edge(&node, &late, Some("too late"), Some(Flow::TooLate));
            }
            last = node;
            flow = Flow::Results;
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
                let before = format!("{AGGREGATE}: ");
                if window.exchange == crate::spec::WindowExchange::Kafka {
                    // Two stages in every process, over the job's partials topic.
                    let per = ", per source partition (stage 1)".to_owned();
                    let pre = graph.node(format!("{before}{logic}{per}"), false);
                    if aggregate.module.is_some() {
                        graph.runs_module(&pre, AGGREGATE, before.clone(), per);
                    }
                    graph.edge(&last, &pre, None, Some(Flow::WindowRows));
                    let partials = graph.node(
                        format!(
                            "Kafka topic {}: partials by key, watermark markers",
                            crate::cluster::topics::partials_topic(&spec.name)
                        ),
                        true,
                    );
                    graph.edge(&pre, &partials, None, None);
                    last = partials;
                }
                let merge = match (window.exchange, tasks > 1) {
                    (crate::spec::WindowExchange::Kafka, _) => {
                        ", partials of every source partition merged (stage 2)".to_owned()
                    }
                    (crate::spec::WindowExchange::Partitioned, many) => format!(
                        ", each process its own partitions' keys (input partitioned by the key: no partials topic, no merge stage){}",
                        if many {
                            format!("; partials of {tasks} tasks merged")
                        } else {
                            String::new()
                        }
                    ),
                    (_, true) => format!(", partials of {tasks} tasks merged"),
                    (_, false) => String::new(),
                };
                let node = graph.node(format!("{before}{logic}{merge}"), false);
                if aggregate.module.is_some() {
                    graph.runs_module(&node, AGGREGATE, before, merge);
                }
                let rows = match window.exchange {
                    crate::spec::WindowExchange::Kafka => None,
                    _ => Some(Flow::WindowRows),
                };
                graph.edge(&last, &node, None, rows);
                if let Some(dead) = &dead {
                    // Counted with the window's refusals (one stage name, `aggregate`).
                    graph.edge(&node, dead, Some("refused"), None);
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
        if spec.format.is_some() {
            graph.runs_module(&node, "format", "format: ".to_owned(), String::new());
        }
        graph.edge(&last, &node, None, Some(flow));
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
            let refused = Flow::DeadLetters("format".to_owned());
            graph.edge(&node, dead, Some("refused"), Some(refused));
        }
        let sink = match &spec.sink {
            SinkSpec::Kafka { topic, .. } => format!("Kafka topic {topic}"),
            SinkSpec::File { path } => format!("file {}", file_name(path)),
            SinkSpec::Stdout {} => "standard output".to_owned(),
        };
        let sink = graph.node(sink, true);
        graph.edge(&node, &sink, None, Some(Flow::SinkSent));
        if spec.is_fleet() {
            // Every process of the job reads it: who runs the job, and the swaps they agree
            // on, which reach each stage that runs a module.
            let control = graph.node(
                format!(
                    "Kafka topic {}: fleet members, swaps",
                    crate::cluster::topics::control_topic(&spec.name)
                ),
                true,
            );
            let swappable: Vec<String> = graph
                .nodes
                .iter()
                .filter(|n| n.module.is_some())
                .map(|n| n.id.clone())
                .collect();
            for node in swappable {
                graph.edge(&control, &node, Some("swaps"), None);
            }
        }
        graph
    }

    fn node(&mut self, label: String, io: bool) -> String {
        let id = format!("n{}", self.nodes.len());
        self.nodes.push(Node {
            id: id.clone(),
            label,
            io,
            module: None,
        });
        id
    }

    fn runs_module(&mut self, node: &str, stage: &str, before: String, after: String) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.id == node) {
            node.module = Some(ModuleLabel {
                stage: stage.to_owned(),
                before,
                after,
            });
        }
    }

    /// Names in each stage's node the module it runs now (`origin`: a file, or an upload),
    /// as given for each stage by `origin_of`.
    pub fn relabel(&mut self, origin_of: impl Fn(&str) -> Option<String>) {
        for node in &mut self.nodes {
            if let Some(module) = &node.module
                && let Some(origin) = origin_of(&module.stage)
            {
                node.label = format!("{}{}{}", module.before, module_name(&origin), module.after);
            }
        }
    }

    fn edge(&mut self, from: &str, to: &str, side: Option<&'static str>, flow: Option<Flow>) {
        self.edges.push(Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            side,
            flow,
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
    fn a_keyed_window_job_reads_as_its_operators_with_side_outputs_and_their_counters() {
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
        let flows: Vec<Option<Flow>> = graph.edges.iter().map(|e| e.flow.clone()).collect();
        let dead = |stage: &str| Some(Flow::DeadLetters(stage.to_owned()));
        assert_eq!(
            flows,
            [
                Some(Flow::Source),
                dead("parse-orders"),
                Some(Flow::RowsOut("parse-orders".to_owned())),
                dead("aggregate"),
                Some(Flow::TooLate),
                Some(Flow::WindowRows),
                None,
                Some(Flow::Results),
                Some(Flow::SinkSent),
            ]
        );
        let counters = JobCounters {
            steps: [(
                "parse-orders".to_owned(),
                crate::counters::StepStats {
                    records_in: 10,
                    rows_out: 8,
                    rejected: 2,
                    failed_batches: 0,
                    ..Default::default()
                },
            )]
            .into(),
            window: Some(crate::counters::WindowStats {
                rows: 7,
                too_late: 1,
                results: 3,
                ..Default::default()
            }),
            dead_letters: [("parse-orders".to_owned(), 2)].into(),
            sink_sent: 3,
            ..JobCounters::default()
        };
        let counts: Vec<Option<u64>> = graph
            .edges
            .iter()
            .map(|e| e.flow.as_ref().map(|f| f.count(&counters, 10)))
            .collect();
        assert_eq!(
            counts,
            [
                Some(10),
                Some(2),
                Some(8),
                Some(0),
                Some(1),
                Some(7),
                None,
                Some(3),
                Some(3)
            ]
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
    fn a_job_over_input_partitioned_by_its_key_reads_as_one_aggregate_with_no_partials_topic() {
        let text = SPEC.replace("late_topic", "exchange = \"partitioned\"\nlate_topic");
        let spec = PipelineSpec::parse(&text, Path::new("job.toml")).unwrap();
        let labels = |tasks| -> Vec<String> {
            JobGraph::of(&spec, tasks)
                .nodes
                .iter()
                .map(|n| n.label.clone())
                .collect()
        };
        let one = labels(1);
        assert_eq!(
            one[3..7],
            [
                "tumbling window 30 s, key status, event time tsMillis, 2 s out of order",
                "Kafka topic late-orders",
                "aggregate: count as order_count, each process its own partitions' keys (input partitioned by the key: no partials topic, no merge stage)",
                "format: JSON",
            ]
        );
        assert!(
            labels(2)[5].ends_with("no merge stage); partials of 2 tasks merged"),
            "{:?}",
            labels(2)
        );
    }

    #[test]
    fn a_job_over_kafka_reads_as_two_stages_around_its_partials_topic() {
        let text = SPEC.replace("late_topic", "exchange = \"kafka\"\nlate_topic");
        let spec = PipelineSpec::parse(&text, Path::new("job.toml")).unwrap();
        let graph = JobGraph::of(&spec, 2);
        let labels: Vec<&str> = graph.nodes.iter().map(|n| n.label.as_str()).collect();
        assert_eq!(
            labels[3..8],
            [
                "tumbling window 30 s, key status, event time tsMillis, 2 s out of order",
                "Kafka topic late-orders",
                "aggregate: count as order_count, per source partition (stage 1)",
                "Kafka topic orders-partials: partials by key, watermark markers",
                "aggregate: count as order_count, partials of every source partition merged (stage 2)",
            ]
        );
        let main: Vec<(&str, &str)> = graph
            .edges
            .iter()
            .filter(|e| e.side.is_none())
            .map(|e| (e.from.as_str(), e.to.as_str()))
            .collect();
        assert!(main.contains(&("n3", "n5")), "window → stage 1: {main:?}");
        assert!(main.contains(&("n5", "n6")), "stage 1 → partials: {main:?}");
        assert!(main.contains(&("n6", "n7")), "partials → stage 2: {main:?}");
        assert!(main.contains(&("n7", "n8")), "stage 2 → format: {main:?}");
        assert_eq!(
            labels[10],
            "Kafka topic orders-control: fleet members, swaps"
        );
        let swaps: Vec<(&str, &str)> = graph
            .edges
            .iter()
            .filter(|e| e.side == Some("swaps"))
            .map(|e| (e.from.as_str(), e.to.as_str()))
            .collect();
        assert_eq!(labels[2], "parse parse-orders: udf_parse_orders.wasm");
        assert_eq!(
            swaps,
            [("n10", "n2")],
            "the control topic reaches the one stage that runs a module (parse-orders)"
        );
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

    /// The graph of a job from stdin through `stage` (TOML) to stdout, with the table
    /// `regions` read from `source`.
    fn side_input_graph(stage: &str, source: &str) -> String {
        let spec = PipelineSpec::parse(
            &format!(
                "name = \"enriched\"\n[source]\nkind = \"stdin\"\n[[stages]]\n{stage}\n[[tables]]\nname = \"regions\"\nkey = \"region\"\nsource = {source}\n[sink]\nkind = \"stdout\"\n"
            ),
            Path::new("job.toml"),
        )
        .unwrap();
        JobGraph::of(&spec, 1).mermaid()
    }

    #[test]
    fn a_reference_table_is_a_side_input_of_its_enrich_stage() {
        let mermaid = side_input_graph(
            "name = \"add-region\"\nkind = \"enrich\"\ntable = \"regions\"\non = \"region\"",
            "{ kind = \"kafka\", topic = \"regions\" }",
        );
        assert!(
            mermaid.contains("  n1[\"enrich add-region: regions on region\"]\n  n2[(\"table regions: Kafka topic regions\")]\n"),
            "{mermaid}"
        );
        assert!(mermaid.contains("  n2 -. broadcast .-> n1\n"), "{mermaid}");
    }

    #[test]
    fn a_table_a_wasm_map_stage_reads_is_a_side_input_of_it() {
        let mermaid = side_input_graph(
            "name = \"add-region\"\nkind = \"map\"\nmodule = \"target/udf_enrich_region.wasm\"\ntables = [\"regions\"]",
            "{ kind = \"file\", path = \"regions.jsonl\" }",
        );
        assert!(
            mermaid.contains("  n2[(\"table regions: file regions.jsonl\")]\n"),
            "{mermaid}"
        );
        assert!(mermaid.contains("  n2 -. broadcast .-> n1\n"), "{mermaid}");
    }

    #[test]
    fn relabelling_names_the_module_each_stage_runs_now() {
        let spec = SPEC
            .replace(
                "builtin = [{ name = \"order_count\", fn = \"count\" }]",
                "module = \"target/udf_count.wasm\"",
            )
            .replace(
                "[sink]",
                "[format]\nmodule = \"target/udf_format.wasm\"\n[sink]",
            );
        let spec = PipelineSpec::parse(&spec, Path::new("job.toml")).unwrap();
        let mut graph = JobGraph::of(&spec, 2);
        let labels = |graph: &JobGraph| -> Vec<String> {
            graph
                .nodes
                .iter()
                .filter(|n| !n.io)
                .map(|n| n.label.clone())
                .collect()
        };
        let before = labels(&graph);
        graph.relabel(|stage| match stage {
            "parse-orders" => Some("/home/me/rivulet/target/udf_parse_orders_v2.wasm".into()),
            "aggregate" => Some("uploaded counting.wasm".into()),
            _ => None,
        });
        assert_eq!(
            labels(&graph),
            [
                "parse parse-orders: udf_parse_orders_v2.wasm",
                &before[1],
                "aggregate: uploaded counting.wasm, partials of 2 tasks merged",
                "format: udf_format.wasm",
            ]
        );
        assert_eq!(
            before[2],
            "aggregate: udf_count.wasm, partials of 2 tasks merged"
        );
    }
}
