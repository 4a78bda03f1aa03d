//! Builds a runnable [`Pipeline`] from a [`PipelineSpec`]: loads and starts every
//! component, connects the source and the sinks.

use crate::aggregate::{Aggregator, Generations, builtin::Builtins};
use crate::dead_letter::DeadLetters;
use crate::emit::Emitter;
use crate::error::PipelineError;
use crate::kafka::KafkaConfig;
use crate::kafka::source::{KafkaSource, SourceOptions};
use crate::pipeline::Pipeline;
use crate::sink::{LineSink, Sink};
use crate::source::{LineSource, Source, SourceError};
use crate::spec::{OnError, PipelineSpec, SinkSpec, SourceSpec, StageKind};
use crate::stage::json::JsonParse;
use crate::stage::wasm::{WasmAggregate, WasmFormat, WasmMap, WasmParse};
use crate::stage::{AggregateStage, MapStage, ParseStage};
use crate::status::{JobStatus, StageInfo};
use crate::swap::Swappable;
use crate::transform::{Step, Transform};
use crate::udf::Kind;
use crate::udf::{Runtime, UdfModule};
use crate::windowing::{AGGREGATE, Windowing};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// The workshop's address of Kafka from the host.
pub const DEFAULT_BROKERS: &str = "localhost:9094";

/// How to run a spec.
pub struct RunOptions {
    /// Overrides the spec's brokers (`--brokers`, `KAFKA_BOOTSTRAP_SERVERS`).
    pub brokers: Option<String>,
    pub runtime: Runtime,
    pub stop: Arc<AtomicBool>,
    /// Give up on an unreachable broker after this long (None: retry until stopped).
    pub connect_timeout: Option<Duration>,
    pub commit_every: Duration,
    /// Accept module swaps (from the control API or the watcher).
    pub swappable: bool,
}

fn load(runtime: &Runtime, path: &std::path::Path) -> Result<UdfModule, PipelineError> {
    let module = UdfModule::load(runtime, path)?;
    tracing::info!(module = %path.display(), kind = %module.kind, hash = module.short_hash(), size = module.size, load_ms = module.load_time.as_millis() as u64, "loaded");
    Ok(module)
}

impl Pipeline {
    pub fn from_spec(spec: &PipelineSpec, options: &RunOptions) -> Result<Self, PipelineError> {
        // Stopping the job abandons any guest call in progress, whatever the guest does.
        // Guest calls in progress are abandoned when the job stops, unless the caller chose
        // another flag for that (the demo drains its windows when its duration ends).
        let runtime = &match options.runtime.stop_flag() {
            Some(_) => options.runtime.clone(),
            None => options.runtime.stopped_by(options.stop.clone()),
        };
        let kafka = KafkaConfig {
            brokers: options
                .brokers
                .clone()
                .or_else(|| spec.kafka.brokers.clone())
                .unwrap_or_else(|| DEFAULT_BROKERS.to_owned()),
            properties: spec.kafka.properties.clone(),
        };
        let status = Arc::new(JobStatus::new(&spec.name));
        let mut swappable = Swappable::new();
        // Stages first: a broken module fails fast, before any connection.
        let mut parse: Option<Step<dyn ParseStage>> = None;
        let mut maps: Vec<Step<dyn MapStage>> = Vec::new();
        for stage in &spec.stages {
            match (stage.kind, &stage.module) {
                (StageKind::Parse, Some(path)) => {
                    let module = load(runtime, path)?;
                    status.set_stage(StageInfo::module(&stage.name, &module, None));
                    swappable.insert(stage.name.clone(), (Kind::Parse, stage.limits));
                    parse = Some(Step {
                        name: stage.name.clone(),
                        policy: stage.on_error,
                        stage: Box::new(WasmParse::new(
                            runtime,
                            &module,
                            &stage.name,
                            stage.limits,
                        )?),
                    });
                }
                (StageKind::Parse, None) => {
                    status.set_stage(StageInfo::builtin(&stage.name, Kind::Parse));
                    parse = Some(Step {
                        name: stage.name.clone(),
                        policy: stage.on_error,
                        stage: Box::new(JsonParse),
                    });
                }
                (StageKind::Map, Some(path)) => {
                    let module = load(runtime, path)?;
                    status.set_stage(StageInfo::module(&stage.name, &module, None));
                    swappable.insert(stage.name.clone(), (Kind::Map, stage.limits));
                    maps.push(Step {
                        name: stage.name.clone(),
                        policy: stage.on_error,
                        stage: Box::new(WasmMap::new(runtime, &module, &stage.name, stage.limits)?),
                    });
                }
                (StageKind::Map, None) => {
                    return Err(PipelineError::Config(format!(
                        "stage `{}` has no module",
                        stage.name
                    )));
                }
            }
        }
        let parse = parse.unwrap_or_else(|| Step {
            name: "parse".into(),
            policy: OnError::Dlq,
            stage: Box::new(JsonParse),
        });
        let format = match &spec.format {
            Some(format) => {
                let module = load(runtime, &format.module)?;
                status.set_stage(StageInfo::module("format", &module, None));
                swappable.insert("format".to_owned(), (Kind::Format, format.limits));
                Some(Step {
                    name: "format".into(),
                    policy: format.on_error,
                    stage: Box::new(WasmFormat::new(runtime, &module, "format", format.limits)?)
                        as Box<dyn crate::stage::FormatStage>,
                })
            }
            None => None,
        };
        let aggregator = match &spec.aggregate {
            Some(aggregate) => Some(match &aggregate.module {
                Some(path) => {
                    let module = load(runtime, path)?;
                    let mut stage =
                        WasmAggregate::new(runtime, &module, AGGREGATE, aggregate.limits)?;
                    let empty = stage.create()?;
                    let state_version = stage.state_version()?;
                    status.set_stage(StageInfo::module(AGGREGATE, &module, Some(state_version)));
                    swappable.insert(AGGREGATE.to_owned(), (Kind::Aggregate, aggregate.limits));
                    Aggregator::Wasm(
                        Generations::new(
                            Box::new(stage) as Box<dyn AggregateStage>,
                            empty,
                            state_version,
                        )
                        .with_accumulator_cap(aggregate.limits.accumulator_bytes),
                    )
                }
                None => Aggregator::Builtin(Builtins::new(aggregate.builtin.clone())),
            }),
            None => None,
        };

        let source = match &spec.source {
            SourceSpec::Kafka {
                topic,
                group,
                start,
                assign,
                bounded,
            } => {
                let source_options = SourceOptions {
                    topic: topic.clone(),
                    group: group
                        .clone()
                        .unwrap_or_else(|| format!("rivulet-{}", spec.name)),
                    start: *start,
                    assign: *assign,
                    bounded: *bounded,
                    connect_timeout: options.connect_timeout,
                };
                Source::Kafka(Box::new(
                    KafkaSource::open(&kafka, &source_options, &options.stop)
                        .map_err(SourceError::from)?,
                ))
            }
            SourceSpec::File { path } => {
                Source::Lines(LineSource::file(path).map_err(|source| SourceError::Io {
                    name: path.display().to_string(),
                    error: source,
                })?)
            }
            SourceSpec::Stdin {} => Source::Lines(LineSource::stdin()),
        };
        let (sink, key_field) = match &spec.sink {
            SinkSpec::Kafka { topic, key } => (Sink::kafka(&kafka, topic)?, key.clone()),
            SinkSpec::Stdout {} => (Sink::Lines(LineSink::stdout()), None),
            SinkSpec::File { path } => (Sink::Lines(LineSink::file(path)?), None),
        };
        // Window results are keyed by the window key unless the spec says otherwise.
        let key_field = key_field.or_else(|| spec.window.as_ref().and_then(|w| w.key.clone()));
        let dead_sink = match (&spec.dead_letters.path, &spec.dead_letters.topic) {
            (Some(path), _) => Some(Sink::Lines(LineSink::file(path)?)),
            (None, Some(topic)) => Some(Sink::kafka(&kafka, topic)?),
            (None, None) if spec.uses_kafka() => {
                Some(Sink::kafka(&kafka, &format!("{}-dlq", spec.name))?)
            }
            (None, None) => None,
        };
        let windowing = match (&spec.window, aggregator) {
            (Some(window), Some(aggregator)) => {
                let late = match &window.late_topic {
                    Some(topic) => Some(Sink::kafka(&kafka, topic)?),
                    None => None,
                };
                let policy = OnError::Dlq;
                Some(Windowing::new(window.clone(), aggregator, policy, late)?)
            }
            _ => None,
        };
        let mut stats = BTreeMap::new();
        stats.insert(parse.name.clone(), Default::default());
        let (swap_requests, swaps, retired) = if options.swappable && !swappable.is_empty() {
            let channels =
                crate::swap::spawn(runtime.clone(), status.clone(), swappable).map_err(|err| {
                    PipelineError::Config(format!("cannot start the swap worker: {err}"))
                })?;
            (
                Some(channels.requests),
                Some(channels.prepared),
                Some(channels.retired),
            )
        } else {
            (None, None, None)
        };
        let samples = swaps.is_some().then(|| status.clone());
        let windowing = windowing.map(|mut w| {
            w.samples = samples.clone();
            w
        });
        Ok(Pipeline {
            name: spec.name.clone(),
            source,
            transform: Transform {
                parse,
                maps,
                stats,
                samples: samples.clone(),
            },
            windowing,
            emitter: Emitter {
                format,
                sink,
                key_field,
                samples,
            },
            dead: DeadLetters::new(dead_sink),
            batch: spec.batch.clone(),
            commit_every: options.commit_every,
            tracker: Default::default(),
            stop: options.stop.clone(),
            status,
            swaps,
            swap_requests,
            swap_pauses: Vec::new(),
            retired,
            drain_on_stop: false,
        })
    }
}
