//! Builds a runnable [`Pipeline`] from a [`PipelineSpec`]: loads and starts every
//! component, connects the source and the sinks.

use crate::aggregate::dispatch::AGGREGATE;
use crate::aggregate::{Aggregator, Generations, builtin::Builtins};
use crate::cluster::ClusterStep;
use crate::cluster::merge_op::MergeOperator;
use crate::cluster::pre_op::PreAggregate;
use crate::column_type::ColumnType;
use crate::dead_letter::DeadLetters;
use crate::delivery::Transaction;
use crate::delivery::transaction::transactional_id;
use crate::emit::Emitter;
use crate::error::PipelineError;
use crate::kafka::KafkaConfig;
use crate::pipeline::Pipeline;
use crate::registry::client::RegistryClient;
use crate::sink::{LineSink, SharedSink, Sink};
use crate::source::kafka::{KafkaSource, SourceOptions};
use crate::source::{FileSplit, LineSource, Source, SourceError, split_file};
use crate::spec::{
    Delivery, EXACTLY_ONCE_COMMIT_INTERVAL, OnError, OnMiss, PipelineSpec, SinkFormat, SinkSpec,
    SourceSpec, StageKind, ValueFields,
};
use crate::stage::avro::{AvroFormat, AvroParse};
use crate::stage::enrich::Enrich;
use crate::stage::filter::Filter;
use crate::stage::json::JsonParse;
use crate::stage::project::Project;
use crate::stage::sink_encoding::{AvroTarget, KeyEncoding, SinkEncoding, ValueEncoding};
use crate::stage::wasm::{WasmAggregate, WasmFormat, WasmMap, WasmParse};
use crate::stage::{AggregateStage, MapStage, ParseStage};
use crate::status::{JobStatus, StageInfo};
use crate::swap::{SwapStage, Swappable};
use crate::table::{TableContext, Tables};
use crate::task::Job;
use crate::transform::{Step, Transform};
use crate::udf::Kind;
use crate::udf::{Runtime, UdfModule};
use crate::window::Exchange;
use crate::window::{TaskLink, Windowing};
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
    /// This process among the job's (exactly-once: part of each task's
    /// `transactional.id`; a restart with the same instance fences the old process).
    /// Empty: `0`.
    pub instance: String,
}

/// Loads `stage`'s module: the one last swapped into it, if this runtime ran the job
/// before (a job that restarts keeps its swaps), else the spec's file at `path`.
fn load(
    runtime: &Runtime,
    job: &str,
    stage: &str,
    path: &std::path::Path,
) -> Result<UdfModule, PipelineError> {
    if let Some(swapped) = runtime.swapped().get(job, stage) {
        let origin = std::path::Path::new(&swapped.origin);
        let module = UdfModule::from_bytes(runtime, origin, &swapped.bytes)?;
        tracing::info!(stage, module = %swapped.origin, hash = module.short_hash(), instead_of = %path.display(), "loaded the module swapped in before the restart");
        return Ok(module);
    }
    let module = UdfModule::load(runtime, path)?;
    tracing::info!(module = %path.display(), kind = %module.kind, hash = module.short_hash(), size = module.size, load_ms = module.load_time.as_millis() as u64, "loaded");
    Ok(module)
}

/// The modules of a spec, loaded (compiled) once; every task starts its own instances.
struct Modules {
    parse: Option<UdfModule>,
    maps: Vec<UdfModule>,
    format: Option<UdfModule>,
    aggregate: Option<UdfModule>,
    /// The Wasm functions of `filter` and `project` stages: (stage, function name, module).
    functions: Vec<(String, String, UdfModule)>,
}

impl Pipeline {
    /// One task reading all of the spec's input (see [`Job::from_spec`] for several).
    pub fn from_spec(spec: &PipelineSpec, options: &RunOptions) -> Result<Self, PipelineError> {
        let mut job = Job::assemble(spec, options, 1)?;
        job.tasks
            .pop()
            .ok_or_else(|| PipelineError::Config("no task to run".to_owned()))
    }
}

impl Job {
    /// The job as `spec.parallelism` tasks (default: one per core; a file is split on line
    /// boundaries, standard input stays one task).
    pub fn from_spec(spec: &PipelineSpec, options: &RunOptions) -> Result<Self, PipelineError> {
        let tasks = match spec.parallelism {
            Some(tasks) => tasks,
            // Windows are handed between the tasks of a process outside any transaction:
            // one task per process (more processes share the partitions).
            None if spec.delivery == Delivery::ExactlyOnce
                && spec
                    .window
                    .as_ref()
                    .is_some_and(|w| w.exchange != crate::spec::WindowExchange::Kafka) =>
            {
                tracing::info!(job = %spec.name, "exactly-once with a window: one task in this process (set window.exchange = \"kafka\" for more)");
                1
            }
            None => default_parallelism(),
        };
        if tasks == 0 {
            return Err(PipelineError::Config(
                "parallelism must be at least 1".to_owned(),
            ));
        }
        Job::assemble(spec, options, tasks)
    }

    fn assemble(
        spec: &PipelineSpec,
        options: &RunOptions,
        tasks: usize,
    ) -> Result<Self, PipelineError> {
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
        if let Some((field, reason)) = spec.exactly_once_refusal() {
            return Err(PipelineError::Config(format!("`{field}`: {reason}")));
        }
        let exactly_once = spec.delivery == Delivery::ExactlyOnce;
        let commit_every = spec.commit_interval.unwrap_or(match exactly_once {
            true => EXACTLY_ONCE_COMMIT_INTERVAL,
            false => options.commit_every,
        });
        let instance = match options.instance.as_str() {
            "" => "0",
            instance => instance,
        };
        let status = Arc::new(JobStatus::new(&spec.name));
        // Modules first: a broken one fails fast, before any connection.
        let mut modules = Modules::load(spec, runtime, &status)?;
        check_registries(spec)?;
        let tables = Tables::open(
            &spec.tables,
            Some(&TableContext {
                kafka: &kafka,
                job: &spec.name,
                connect_timeout: options.connect_timeout,
                stop: &options.stop,
            }),
        )?;
        status.set_tables(tables.all().cloned().collect());
        let shares = Shares::plan(spec, tasks)?;
        let tasks = shares.len();
        status.set_graph(crate::graph::JobGraph::of(spec, tasks));
        let (sink, key_field) = match &spec.sink {
            SinkSpec::Kafka { topic, key, .. } => (
                Sink::kafka(&kafka, topic)?,
                key.as_ref().and_then(|k| k.0.first().cloned()),
            ),
            SinkSpec::Stdout {} => (Sink::Lines(LineSink::stdout()), None),
            SinkSpec::File { path } => (Sink::Lines(LineSink::file(path)?), None),
        };
        let sink = SharedSink::new(sink);
        // Window results are keyed by the window key unless the spec says otherwise.
        let key_field = key_field.or_else(|| spec.window.as_ref().and_then(|w| w.key.clone()));
        let dead_sink = match (&spec.dead_letters.path, spec.dead_letter_topic()) {
            (Some(path), _) => Some(Sink::Lines(LineSink::file(path)?)),
            (None, Some(topic)) => Some(Sink::kafka(&kafka, &topic)?),
            (None, None) => None,
        }
        .map(SharedSink::new);
        let late_sink = match spec.window.as_ref().map(|w| (&w.late_topic, &w.late_path)) {
            Some((_, Some(path))) => Some(SharedSink::new(Sink::Lines(LineSink::file(path)?))),
            Some((Some(topic), None)) => Some(SharedSink::new(Sink::kafka(&kafka, topic)?)),
            _ => None,
        };
        let over_kafka = OverKafka::plan(spec, &kafka, options)?;
        let fleet = match spec.is_fleet() {
            true => {
                let (fleet, adopted) = crate::fleet::start(spec, &kafka, runtime)?;
                if adopted {
                    modules = Modules::load(spec, runtime, &status)?;
                }
                Some(fleet)
            }
            false => None,
        };
        let exchange = match &spec.window {
            Some(window) if tasks > 1 && over_kafka.is_none() => {
                let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                Some(Arc::new(Exchange::new(
                    tasks,
                    millis(window.size),
                    millis(window.allowed_lateness),
                    millis(window.out_of_orderness),
                    shares.ordered(),
                    window.idle_timeout,
                )))
            }
            _ => None,
        };
        // Partitioned by the window key: this process finishes its own partitions' windows,
        // and checks that no key comes from two partitions.
        let key_partitions = match &spec.window {
            Some(window) if window.exchange == crate::spec::WindowExchange::Partitioned => {
                let key = window.key.as_deref().unwrap_or_default();
                tracing::info!(
                    job = %spec.name,
                    "keyed windows finished in this process, no partials topic and no merge stage: the source is partitioned by the window key `{key}` (window.exchange = \"partitioned\"; a key seen in two partitions stops the job)"
                );
                Some(Arc::new(crate::window::KeyPartitions::new(key)))
            }
            _ => None,
        };
        let swappable = modules.swappable(spec, &tables)?;
        let (swap_requests, mut prepared, retired) = if options.swappable && !swappable.is_empty() {
            // Over Kafka, every process runs both stages: twice the tasks.
            let all = tasks * if over_kafka.is_some() { 2 } else { 1 };
            let gate = fleet
                .clone()
                .map(|fleet| fleet as Arc<dyn crate::swap::FleetGate>);
            let channels =
                crate::swap::spawn(runtime.clone(), status.clone(), swappable, all, gate).map_err(
                    |err| PipelineError::Config(format!("cannot start the swap worker: {err}")),
                )?;
            (
                Some(channels.requests),
                channels.prepared.into_iter().map(Some).collect(),
                Some(channels.retired),
            )
        } else {
            (None, vec![], None)
        };
        if let Some(fleet) = &fleet {
            fleet
                .publish(&crate::fleet::running_modules(spec, runtime))
                .map_err(SourceError::from)?;
            fleet
                .run(status.clone(), swap_requests.clone(), options.stop.clone())
                .map_err(SourceError::from)?;
        }
        let samples = swap_requests.is_some().then(|| status.clone());
        let splits: Arc<[FileSplit]> = shares.splits().into();
        let mut pipelines = Vec::with_capacity(tasks);
        // Every task's producer before any source: a source's restore reads the state topic
        // `read_committed`, which waits for what older instances of the tasks left open
        // (aborted as each producer registers).
        let mut transactions = Vec::with_capacity(tasks);
        for task in 0..tasks {
            transactions.push(match exactly_once {
                true => Some(open_transaction(
                    spec,
                    &kafka,
                    (instance, "task", task),
                    "",
                    commit_every,
                )?),
                false => None,
            });
        }
        let mut transactions = transactions.into_iter();
        for (task, share) in shares.into_iter().enumerate() {
            let transaction = transactions.next().flatten();
            let own = transaction
                .as_ref()
                .map(|t| TaskSinks::of(t, spec, over_kafka.as_ref().map(|p| p.topic.as_str())));
            let source = share.open(spec, &kafka, options, task, tasks)?;
            let (parse, maps, format, aggregator) = modules.instances(spec, runtime, &tables)?;
            if task == 0
                && let (Some(module), Some(Aggregator::Wasm(generations))) =
                    (&modules.aggregate, &aggregator)
            {
                let version = generations.current.state_version;
                status.set_stage(StageInfo::module(AGGREGATE, module, Some(version)));
            }
            let mut cluster = None;
            let windowing = match (&spec.window, aggregator) {
                (Some(window), Some(aggregator)) if let Some(plan) = &over_kafka => {
                    let mut pre =
                        PreAggregate::new(window.clone(), aggregator, OnError::Dlq, plan.partials)?;
                    // Its input sample completes the job's (sampling stops until a swap).
                    pre.dispatch_mut().samples = samples.clone();
                    cluster = Some(ClusterStep::Pre(Box::new(pre)));
                    None
                }
                (Some(window), Some(aggregator)) => {
                    let mut windowing = Windowing::new(
                        window.clone(),
                        aggregator,
                        OnError::Dlq,
                        late_sink.is_some(),
                    )?;
                    windowing.sample_into(samples.clone());
                    if let Some(keys) = &key_partitions {
                        windowing.check_key_partitions(keys.clone());
                    }
                    if let Some(exchange) = &exchange {
                        windowing = windowing.linked(TaskLink {
                            exchange: exchange.clone(),
                            task,
                            splits: splits.clone(),
                        });
                    }
                    Some(windowing)
                }
                _ => None,
            };
            let mut stats = BTreeMap::new();
            stats.insert(parse.name.clone(), Default::default());
            pipelines.push(Pipeline {
                name: spec.name.clone(),
                task,
                source,
                transform: Transform {
                    parse,
                    maps,
                    stats,
                    samples: samples.clone(),
                },
                windowing,
                emitter: match &over_kafka {
                    // Stage 1 sends partials; results leave from stage 2.
                    // Its formatter is never called; it is there so a format swap reaches
                    // every task.
                    Some(plan) => Emitter {
                        format,
                        sink: own
                            .as_ref()
                            .and_then(|own| own.partials.clone())
                            .unwrap_or_else(|| plan.sink.clone()),
                        key_field: None,
                        json_numbers: json_numbers(spec),
                        samples: None,
                        recent: std::collections::VecDeque::new(),
                    },
                    None => Emitter {
                        format,
                        sink: own
                            .as_ref()
                            .map_or_else(|| sink.clone(), |own| own.results.clone()),
                        key_field: key_field.clone(),
                        json_numbers: json_numbers(spec),
                        samples: samples.clone(),
                        recent: std::collections::VecDeque::new(),
                    },
                },
                cluster,
                dead: DeadLetters::new(match &own {
                    Some(own) => own.dead.clone(),
                    None => dead_sink.clone(),
                }),
                late: match &own {
                    Some(own) => own.late.clone(),
                    None => late_sink.clone(),
                },
                transaction,
                batch: spec.batch.clone(),
                commit_every,
                tracker: Default::default(),
                stop: options.stop.clone(),
                status: status.clone(),
                swaps: prepared.get_mut(task).and_then(Option::take),
                swap_requests: swap_requests.clone(),
                swap_pauses: Vec::new(),
                retired: retired.clone(),
                drain_on_stop: false,
            });
        }
        if let (Some(plan), Some(window)) = (&over_kafka, &spec.window) {
            let merge_group = format!("{}-merge", plan.group);
            for task in 0..tasks {
                let transaction = match exactly_once {
                    true => Some(open_transaction(
                        spec,
                        &kafka,
                        (instance, "merge", task),
                        &merge_group,
                        commit_every,
                    )?),
                    false => None,
                };
                let own = transaction.as_ref().map(|t| TaskSinks::of(t, spec, None));
                let source_options = SourceOptions {
                    topic: plan.topic.clone(),
                    group: merge_group.clone(),
                    // From the committed offsets, with the closed watermark committed with
                    // them: windows stage 2 finished before a restart stay finished.
                    start: crate::spec::StartAt::Committed,
                    assign: crate::spec::AssignMode::Group,
                    bounded: false,
                    connect_timeout: options.connect_timeout,
                    share: (task, tasks),
                    // Stage 2 keeps its windows per partials partition.
                    cooperative: true,
                    exactly_once,
                };
                let source = KafkaSource::open(&kafka, &source_options, &options.stop)
                    .map_err(SourceError::from)?;
                let (parse, maps, format, aggregator) =
                    modules.instances(spec, runtime, &tables)?;
                let Some(aggregator) = aggregator else {
                    return Err(PipelineError::Config(
                        "a window needs an aggregate".to_owned(),
                    ));
                };
                let lateness =
                    i64::try_from(window.allowed_lateness.as_millis()).unwrap_or(i64::MAX);
                let size = i64::try_from(window.size.as_millis()).unwrap_or(i64::MAX);
                let merge = MergeOperator::new(
                    aggregator,
                    size,
                    window.key.clone(),
                    lateness,
                    plan.sources,
                    OnError::Dlq,
                );
                pipelines.push(Pipeline {
                    name: spec.name.clone(),
                    task: tasks + task,
                    source: Source::Kafka(Box::new(source)),
                    transform: Transform {
                        parse,
                        maps,
                        stats: BTreeMap::new(),
                        samples: None,
                    },
                    windowing: None,
                    cluster: Some(ClusterStep::Merge(Box::new(merge))),
                    emitter: Emitter {
                        format,
                        sink: own
                            .as_ref()
                            .map_or_else(|| sink.clone(), |own| own.results.clone()),
                        key_field: key_field.clone(),
                        json_numbers: json_numbers(spec),
                        samples: samples.clone(),
                        recent: std::collections::VecDeque::new(),
                    },
                    dead: DeadLetters::new(match &own {
                        Some(own) => own.dead.clone(),
                        None => dead_sink.clone(),
                    }),
                    late: None,
                    transaction,
                    batch: spec.batch.clone(),
                    commit_every,
                    tracker: Default::default(),
                    stop: options.stop.clone(),
                    status: status.clone(),
                    swaps: prepared.get_mut(tasks + task).and_then(Option::take),
                    swap_requests: swap_requests.clone(),
                    swap_pauses: Vec::new(),
                    retired: retired.clone(),
                    drain_on_stop: false,
                });
            }
        }
        Ok(Job {
            name: spec.name.clone(),
            tasks: pipelines,
            status,
            swap_requests,
            stop: options.stop.clone(),
            fleet,
        })
    }
}

/// Exactly-once: the transactional producer of one task (`stage`: `task`, or `merge` for
/// stage 2 of a job over Kafka, whose consumer group is `group`; empty: the source's),
/// writing the state topic of that group in its transactions.
fn open_transaction(
    spec: &PipelineSpec,
    kafka: &KafkaConfig,
    (instance, stage, task): (&str, &str, usize),
    group: &str,
    commit_every: Duration,
) -> Result<Transaction, PipelineError> {
    let group = match (group, &spec.source) {
        ("", SourceSpec::Kafka { group, .. }) => group
            .clone()
            .unwrap_or_else(|| format!("rivulet-{}", spec.name)),
        (group, _) => group.to_owned(),
    };
    let id = transactional_id(&spec.name, instance, stage, task);
    let state = crate::kafka::state_topic::topic_name(&group);
    Transaction::open(kafka, &id, Some(&state), commit_every)
        .map_err(|err| PipelineError::Sink(err.into()))
}

/// Exactly-once: a task's own sinks, all writing through its transactional producer.
struct TaskSinks {
    results: SharedSink,
    dead: Option<SharedSink>,
    late: Option<SharedSink>,
    /// Stage 1 of a job over Kafka: the partials topic.
    partials: Option<SharedSink>,
}

impl TaskSinks {
    fn of(transaction: &Transaction, spec: &PipelineSpec, partials: Option<&str>) -> Self {
        let sink = |topic: &str| SharedSink::new(Sink::Kafka(transaction.sink(topic)));
        let results = match &spec.sink {
            SinkSpec::Kafka { topic, .. } => topic.clone(),
            // Refused before (see `PipelineSpec::exactly_once_refusal`).
            _ => format!("{}-results", spec.name),
        };
        TaskSinks {
            results: sink(&results),
            dead: spec.dead_letter_topic().as_deref().map(sink),
            late: spec
                .window
                .as_ref()
                .and_then(|w| w.late_topic.as_deref())
                .map(sink),
            partials: partials.map(sink),
        }
    }
}

/// A job over Kafka (`window.exchange = "kafka"`): its partials topic and the partition
/// counts both stages plan with.
struct OverKafka {
    topic: String,
    /// The source's consumer group (stage 2's is `<group>-merge`).
    group: String,
    /// Partitions of the source topic (stage 2 waits for each one's markers).
    sources: i32,
    /// Partitions of the partials topic.
    partials: i32,
    /// Stage 1's sink: the partials topic.
    sink: SharedSink,
}

impl OverKafka {
    fn plan(
        spec: &PipelineSpec,
        kafka: &KafkaConfig,
        options: &RunOptions,
    ) -> Result<Option<Self>, PipelineError> {
        let (Some(window), SourceSpec::Kafka { topic, group, .. }) = (&spec.window, &spec.source)
        else {
            return Ok(None);
        };
        if window.exchange != crate::spec::WindowExchange::Kafka {
            return Ok(None);
        }
        let timeout = options.connect_timeout;
        let sources = crate::cluster::topics::partitions(kafka, topic, timeout, &options.stop)
            .map_err(SourceError::from)?;
        let sources = i32::try_from(sources.len()).unwrap_or(i32::MAX);
        let asked = window
            .partials_partitions
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(sources);
        let name = crate::cluster::topics::partials_topic(&spec.name);
        let partials = crate::cluster::topics::ensure(kafka, &name, asked, timeout, &options.stop)
            .map_err(SourceError::from)?;
        let partials = i32::try_from(partials.len()).unwrap_or(i32::MAX);
        tracing::info!(
            job = %spec.name,
            topic = %name,
            source_partitions = sources,
            partials_partitions = partials,
            "keyed windows over Kafka: this process pre-aggregates its share of the source partitions and merges its share of the partials"
        );
        Ok(Some(OverKafka {
            sink: SharedSink::new(Sink::kafka(kafka, &name)?),
            topic: name,
            group: group
                .clone()
                .unwrap_or_else(|| format!("rivulet-{}", spec.name)),
            sources,
            partials,
        }))
    }
}

/// One core per task, unless the machine won't say.
/// Checks a spec without running it, as `run` would start it: loads every module (compiled
/// and type-checked against its world), starts one instance of each stage and plans the
/// tasks (a file source is read to split it). Connects to nothing. Returns how many tasks
/// `run` would start.
pub fn check(spec: &PipelineSpec, runtime: &Runtime) -> Result<usize, PipelineError> {
    let status = JobStatus::new(&spec.name);
    let modules = Modules::load(spec, runtime, &status)?;
    // File tables are read; topic tables are not (nothing is connected).
    let tables = Tables::open(&spec.tables, None)?;
    modules.instances(spec, runtime, &tables)?;
    let tasks = spec.parallelism.unwrap_or_else(default_parallelism);
    if tasks == 0 {
        return Err(PipelineError::Config(
            "parallelism must be at least 1".to_owned(),
        ));
    }
    Ok(Shares::plan(spec, tasks)?.len())
}

pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl Modules {
    fn load(
        spec: &PipelineSpec,
        runtime: &Runtime,
        status: &JobStatus,
    ) -> Result<Self, PipelineError> {
        let mut modules = Modules {
            parse: None,
            maps: Vec::new(),
            format: None,
            aggregate: None,
            functions: Vec::new(),
        };
        for stage in &spec.stages {
            match (stage.kind, &stage.module) {
                (StageKind::Parse, Some(path)) => {
                    let module = load(runtime, &spec.name, &stage.name, path)?;
                    status.set_stage(StageInfo::module(&stage.name, &module, None));
                    modules.parse = Some(module);
                }
                (StageKind::Parse, None) => {
                    status.set_stage(StageInfo::builtin(&stage.name, Kind::Parse));
                }
                (StageKind::Map, Some(path)) => {
                    let module = load(runtime, &spec.name, &stage.name, path)?;
                    status.set_stage(StageInfo::module(&stage.name, &module, None));
                    modules.maps.push(module);
                }
                (StageKind::Map, None) => {
                    return Err(PipelineError::Config(format!(
                        "stage `{}` has no module",
                        stage.name
                    )));
                }
                (StageKind::Enrich, _) => {
                    status.set_stage(StageInfo::builtin(&stage.name, Kind::Map));
                }
                (StageKind::Filter | StageKind::Project, _) => {
                    status.set_stage(StageInfo::builtin(&stage.name, Kind::Map));
                    for (name, path) in &stage.functions {
                        let module =
                            load(runtime, &spec.name, &format!("{}.{name}", stage.name), path)?;
                        if module.kind != Kind::Map {
                            return Err(PipelineError::Config(format!(
                                "stage `{}`: function `{name}` ({}) is a {} component; a function is a map component",
                                stage.name,
                                path.display(),
                                module.kind
                            )));
                        }
                        modules
                            .functions
                            .push((stage.name.clone(), name.clone(), module));
                    }
                }
            }
        }
        if let Some(format) = &spec.format {
            let module = load(runtime, &spec.name, "format", &format.module)?;
            status.set_stage(StageInfo::module("format", &module, None));
            modules.format = Some(module);
        }
        if let Some(aggregate) = &spec.aggregate
            && let Some(path) = &aggregate.module
        {
            // Its status (with the state version) comes with the first task's instance.
            modules.aggregate = Some(load(runtime, &spec.name, AGGREGATE, path)?);
        }
        Ok(modules)
    }

    /// The stages that can be swapped: those running a component.
    fn swappable(&self, spec: &PipelineSpec, tables: &Tables) -> Result<Swappable, PipelineError> {
        let stage_of = |kind: Kind, limits: crate::udf::Limits| SwapStage {
            kind,
            limits,
            reads: None,
        };
        let mut swappable = Swappable::new();
        for stage in &spec.stages {
            if stage.module.is_some() {
                let kind = match stage.kind {
                    StageKind::Parse => Kind::Parse,
                    StageKind::Map | StageKind::Filter | StageKind::Project | StageKind::Enrich => {
                        Kind::Map
                    }
                };
                let reads = stage_reads(stage, tables)?;
                swappable.insert(
                    stage.name.clone(),
                    SwapStage {
                        reads,
                        ..stage_of(kind, stage.limits)
                    },
                );
            }
        }
        if let Some(format) = &spec.format {
            swappable.insert("format".to_owned(), stage_of(Kind::Format, format.limits));
        }
        if let Some(aggregate) = spec.aggregate.as_ref().filter(|a| a.module.is_some()) {
            swappable.insert(
                AGGREGATE.to_owned(),
                stage_of(Kind::Aggregate, aggregate.limits),
            );
        }
        Ok(swappable)
    }

    /// One task's instances of every stage.
    #[allow(clippy::type_complexity)]
    fn instances(
        &self,
        spec: &PipelineSpec,
        runtime: &Runtime,
        tables: &Tables,
    ) -> Result<
        (
            Step<dyn ParseStage>,
            Vec<Step<dyn MapStage>>,
            Option<Step<dyn crate::stage::FormatStage>>,
            Option<Aggregator>,
        ),
        PipelineError,
    > {
        let mut parse: Option<Step<dyn ParseStage>> = None;
        let mut maps: Vec<Step<dyn MapStage>> = Vec::new();
        let mut map_modules = self.maps.iter();
        for stage in &spec.stages {
            let step = |stage_impl: Box<dyn ParseStage>| Step {
                name: stage.name.clone(),
                policy: stage.on_error,
                stage: stage_impl,
                shape: Default::default(),
            };
            match (stage.kind, &self.parse) {
                (StageKind::Parse, Some(module)) if stage.module.is_some() => {
                    parse = Some(step(Box::new(WasmParse::new(
                        runtime,
                        module,
                        &stage.name,
                        stage.limits,
                    )?)));
                }
                (StageKind::Parse, _) => match (stage.builtin.as_deref(), &stage.registry) {
                    (Some("avro-confluent"), Some(registry)) => {
                        parse = Some(step(Box::new(AvroParse::new(&stage.name, registry))));
                    }
                    _ => parse = Some(step(Box::new(JsonParse))),
                },
                (StageKind::Filter | StageKind::Project, _) => {
                    let program =
                        crate::expr::program::compile_stage(stage).map_err(|(field, reason)| {
                            PipelineError::Config(format!(
                                "stage `{}`: `{field}`: {reason}",
                                stage.name
                            ))
                        })?;
                    let mut functions: Vec<(String, Box<dyn MapStage>)> = Vec::new();
                    for name in &program.scope.udfs {
                        let module = self
                            .functions
                            .iter()
                            .find(|(s, n, _)| *s == stage.name && n == name)
                            .map(|(_, _, m)| m)
                            .ok_or_else(|| {
                                PipelineError::Config(format!(
                                    "stage `{}`: function `{name}` is not loaded",
                                    stage.name
                                ))
                            })?;
                        let instance = WasmMap::new(runtime, module, name, stage.limits)?;
                        functions.push((name.clone(), Box::new(instance)));
                    }
                    let built: Box<dyn MapStage> = match stage.kind {
                        StageKind::Filter => {
                            Box::new(Filter::new(program, functions).ok_or_else(|| {
                                PipelineError::Config(format!(
                                    "stage `{}` has no condition",
                                    stage.name
                                ))
                            })?)
                        }
                        _ => Box::new(Project::new(program, functions)),
                    };
                    maps.push(Step {
                        name: stage.name.clone(),
                        policy: stage.on_error,
                        stage: built,
                        shape: Default::default(),
                    });
                }
                (StageKind::Enrich, _) => maps.push(enrich_step(stage, tables)?),
                (StageKind::Map, _) => {
                    let module = map_modules.next().ok_or_else(|| {
                        PipelineError::Config(format!("stage `{}` has no module", stage.name))
                    })?;
                    let reads = stage_reads(stage, tables)?;
                    maps.push(Step {
                        name: stage.name.clone(),
                        policy: stage.on_error,
                        stage: Box::new(WasmMap::reading(
                            runtime,
                            module,
                            &stage.name,
                            stage.limits,
                            reads,
                        )?),
                        shape: Default::default(),
                    });
                }
            }
        }
        let parse = parse.unwrap_or_else(|| Step {
            name: "parse".into(),
            policy: OnError::Dlq,
            stage: Box::new(JsonParse),
            shape: Default::default(),
        });
        let format = match (&spec.format, &self.format) {
            (Some(format), Some(module)) => Some(Step {
                name: "format".into(),
                policy: format.on_error,
                stage: Box::new(WasmFormat::new(runtime, module, "format", format.limits)?)
                    as Box<dyn crate::stage::FormatStage>,
                shape: Default::default(),
            }),
            _ => sink_format(spec),
        };
        let aggregator = match (&spec.aggregate, &self.aggregate) {
            (Some(aggregate), Some(module)) => {
                let mut stage = WasmAggregate::new(runtime, module, AGGREGATE, aggregate.limits)?;
                let empty = stage.create()?;
                let state_version = stage.state_version()?;
                Some(Aggregator::Wasm(
                    Generations::new(
                        Box::new(stage) as Box<dyn AggregateStage>,
                        empty,
                        state_version,
                    )
                    .with_limits(aggregate.limits),
                ))
            }
            (Some(aggregate), None) => Some(Aggregator::Builtin(Builtins::new(
                aggregate.builtin.clone(),
            ))),
            (None, _) => None,
        };
        Ok((parse, maps, format, aggregator))
    }
}

/// The tables a Wasm map stage's `lookup` reads (its spec entry's `tables`).
fn stage_reads(
    stage: &crate::spec::StageSpec,
    tables: &Tables,
) -> Result<crate::udf::Reads, PipelineError> {
    tables
        .reads(&stage.name, &stage.tables)
        .map_err(PipelineError::Config)
}

/// An `enrich` stage over its table; its policy sends misses where `on_miss` says.
fn enrich_step(
    stage: &crate::spec::StageSpec,
    tables: &Tables,
) -> Result<Step<dyn MapStage>, PipelineError> {
    let config =
        |reason: String| PipelineError::Config(format!("stage `{}`: {reason}", stage.name));
    let name = stage.table.as_deref().unwrap_or_default();
    let table = tables
        .get(name)
        .ok_or_else(|| config(format!("no table `{name}`")))?;
    let on_miss = stage.on_miss.unwrap_or_default();
    let enrich = Enrich::new(
        table.clone(),
        stage.on.clone().unwrap_or_default(),
        stage.columns.clone(),
        stage.rename.clone(),
        on_miss,
    )
    .map_err(|err| config(err.to_string()))?;
    Ok(Step {
        name: stage.name.clone(),
        policy: match on_miss {
            OnMiss::Drop => OnError::Drop,
            OnMiss::Null | OnMiss::Dlq => OnError::Dlq,
        },
        stage: Box::new(enrich),
        shape: Default::default(),
    })
}

/// Result columns holding DECIMAL text (written as JSON numbers): decimal aggregates, and
/// sink columns declared DECIMAL.
fn json_numbers(spec: &PipelineSpec) -> Vec<String> {
    let mut numbers = spec
        .aggregate
        .as_ref()
        .map(|a| Builtins::decimal_outputs(&a.builtin))
        .unwrap_or_default();
    if let SinkSpec::Kafka { columns, .. } = &spec.sink {
        for column in columns {
            if matches!(column.ty.ty, ColumnType::Decimal { .. }) && !numbers.contains(&column.name)
            {
                numbers.push(column.name.clone());
            }
        }
    }
    numbers
}

/// The Kafka sink's built-in encoding, if the spec asks for one: `avro-confluent`, or a
/// keyed layout (`key_format`, `value_fields`, `columns`).
fn sink_format(spec: &PipelineSpec) -> Option<Step<dyn crate::stage::FormatStage>> {
    let SinkSpec::Kafka {
        topic,
        key,
        format,
        registry,
        key_format,
        key_registry,
        subject,
        key_subject,
        value_fields,
        columns,
    } = &spec.sink
    else {
        return None;
    };
    // Window results are keyed by the window key unless the spec says otherwise.
    let key_fields: Vec<String> = key
        .as_ref()
        .map(|k| k.0.clone())
        .or_else(|| {
            spec.window
                .as_ref()
                .and_then(|w| w.key.clone())
                .map(|k| vec![k])
        })
        .unwrap_or_default();
    let plain = key_format.is_none()
        && columns.is_empty()
        && *value_fields == ValueFields::All
        && subject.is_none();
    let stage: Box<dyn crate::stage::FormatStage> = match (format, registry) {
        (SinkFormat::AvroConfluent, Some(registry)) if plain => Box::new(AvroFormat::new(
            "format",
            topic,
            key_fields.first().cloned(),
            registry,
        )),
        (SinkFormat::Json, _) if plain => return None,
        (format, registry) => {
            let value = match (format, registry) {
                (SinkFormat::AvroConfluent, Some(registry)) => {
                    ValueEncoding::AvroConfluent(Box::new(AvroTarget::new(
                        registry,
                        subject.clone().unwrap_or_else(|| format!("{topic}-value")),
                    )))
                }
                _ => ValueEncoding::Json,
            };
            let key = key_format.map(|f| {
                KeyEncoding::new(
                    f,
                    key_registry.as_deref().or(registry.as_deref()),
                    key_subject
                        .clone()
                        .unwrap_or_else(|| format!("{topic}-key")),
                )
            });
            Box::new(SinkEncoding {
                stage: "format".into(),
                value,
                key,
                key_fields,
                except_key: *value_fields == ValueFields::ExceptKey,
                columns: columns.clone(),
                json_numbers: json_numbers(spec),
            })
        }
    };
    Some(Step {
        name: "format".into(),
        policy: OnError::Dlq,
        stage,
        shape: Default::default(),
    })
}

/// Every schema registry the spec names answers: a job does not start against one that is
/// down (one that goes down later fails the batches that need it, with the reason).
fn check_registries(spec: &PipelineSpec) -> Result<(), PipelineError> {
    let stages = spec.stages.iter().filter_map(|s| s.registry.as_deref());
    let sink = match &spec.sink {
        SinkSpec::Kafka {
            registry,
            key_registry,
            ..
        } => vec![registry.as_deref(), key_registry.as_deref()],
        _ => Vec::new(),
    };
    for url in stages.chain(sink.into_iter().flatten()) {
        RegistryClient::new(url)
            .check()
            .map_err(|err| PipelineError::Config(format!("cannot start: {err}")))?;
    }
    Ok(())
}

/// Each task's share of the input.
enum Shares {
    /// Consecutive splits of one file.
    File(Vec<FileSplit>),
    Stdin,
    /// A Kafka topic: one consumer per task.
    Kafka(usize),
}

/// One task's share.
enum Share {
    File(FileSplit),
    Stdin,
    Kafka,
}

impl Shares {
    fn plan(spec: &PipelineSpec, tasks: usize) -> Result<Self, PipelineError> {
        Ok(match &spec.source {
            SourceSpec::File { path } => {
                Shares::File(split_file(path, tasks).map_err(|error| SourceError::Io {
                    name: path.display().to_string(),
                    error,
                })?)
            }
            SourceSpec::Stdin {} => Shares::Stdin,
            SourceSpec::Kafka { .. } => Shares::Kafka(tasks),
        })
    }

    fn len(&self) -> usize {
        match self {
            Shares::File(splits) => splits.len().max(1),
            Shares::Stdin => 1,
            Shares::Kafka(tasks) => *tasks,
        }
    }

    /// Whether the shares are consecutive parts of one ordered input.
    fn ordered(&self) -> bool {
        matches!(self, Shares::File(_))
    }

    fn splits(&self) -> Vec<FileSplit> {
        match self {
            Shares::File(splits) => splits.clone(),
            _ => Vec::new(),
        }
    }

    fn into_iter(self) -> impl Iterator<Item = Share> {
        let shares: Vec<Share> = match self {
            Shares::File(splits) => splits.into_iter().map(Share::File).collect(),
            Shares::Stdin => vec![Share::Stdin],
            Shares::Kafka(tasks) => (0..tasks).map(|_| Share::Kafka).collect(),
        };
        shares.into_iter()
    }
}

impl Share {
    fn open(
        self,
        spec: &PipelineSpec,
        kafka: &KafkaConfig,
        options: &RunOptions,
        task: usize,
        tasks: usize,
    ) -> Result<Source, PipelineError> {
        Ok(match (self, &spec.source) {
            (
                Share::Kafka,
                SourceSpec::Kafka {
                    topic,
                    group,
                    start,
                    assign,
                    bounded,
                },
            ) => {
                let source_options = SourceOptions {
                    topic: topic.clone(),
                    group: group
                        .clone()
                        .unwrap_or_else(|| format!("rivulet-{}", spec.name)),
                    start: *start,
                    assign: *assign,
                    bounded: *bounded,
                    connect_timeout: options.connect_timeout,
                    share: (task, tasks),
                    // Stage 1 of a job over Kafka keeps its state per source partition, a
                    // job without a window keeps none; windows exchanged in the process
                    // mix partitions, so every rebalance replays them all.
                    cooperative: spec
                        .window
                        .as_ref()
                        .is_none_or(|w| w.exchange == crate::spec::WindowExchange::Kafka),
                    exactly_once: spec.delivery == Delivery::ExactlyOnce,
                };
                Source::Kafka(Box::new(
                    KafkaSource::open(kafka, &source_options, &options.stop)
                        .map_err(SourceError::from)?,
                ))
            }
            (Share::File(split), _) => {
                Source::Lines(LineSource::split(&split).map_err(|error| SourceError::Io {
                    name: split.path.display().to_string(),
                    error,
                })?)
            }
            _ => Source::Lines(LineSource::stdin()),
        })
    }
}
