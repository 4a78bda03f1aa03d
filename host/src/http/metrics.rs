//! `/metrics`: the job's counters in the Prometheus text format, read at scrape time from
//! what the tasks last published (prometheus-client's [`Collector`]).

use crate::counters::{BATCH_LATENCY_US, FIRE_LATENESS_US, Histogram, JobCounters};
use crate::status::JobStatus;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

/// The content type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The job's metrics as text.
pub fn encode(status: &Arc<JobStatus>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("rivulet");
    registry.register_collector(Box::new(JobMetrics(status.clone())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[derive(Debug)]
struct JobMetrics(Arc<JobStatus>);

/// Writes one counter without labels.
fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// Writes a counter with one value per label value.
fn counters<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value_of_label, value) in values {
        let labels = [(label, value_of_label)];
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram's buckets as prometheus-client takes them: (upper bound in seconds, count
/// in that bucket), the last one unbounded.
fn buckets(bounds: &[u64], histogram: &Histogram) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .map(|&us| us as f64 / 1e6)
        .chain([f64::INFINITY])
        .zip(histogram.counts)
        .collect()
}

/// Writes a histogram of durations (seconds) with one series per label value.
fn histograms<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &str,
    label: &'static str,
    bounds: &[u64],
    values: impl IntoIterator<Item = (&'a str, &'a Histogram)>,
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (value_of_label, histogram) in values {
        let labels = [(label, value_of_label)];
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                histogram.sum_us as f64 / 1e6,
                histogram.count(),
                &buckets(bounds, histogram),
                None,
            )?;
    }
    Ok(())
}

/// Writes one metric family whose series each have their own labels.
fn labelled<V: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &str,
    kind: MetricType,
    series: Vec<(Vec<(&'static str, String)>, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in series {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One figure of a side's work in a shadow.
type CostOf = fn(&crate::shadow::Cost) -> u64;

/// The shadows' series: whether each runs, each side's work, and the differences.
fn shadow_metrics(
    encoder: &mut DescriptorEncoder<'_>,
    shadows: &[crate::shadow::Report],
) -> Result<(), std::fmt::Error> {
    let stage = |r: &crate::shadow::Report| ("stage", r.stage.clone());
    let running = shadows
        .iter()
        .map(|r| {
            let on = i64::from(r.state == crate::shadow::State::Running);
            (vec![stage(r)], ConstGauge::new(on))
        })
        .collect();
    labelled(
        encoder,
        "shadow_running",
        "Whether a shadow runs beside the stage's live module (1) or was stopped (0).",
        MetricType::Gauge,
        running,
    )?;
    let per_side = |value: fn(&crate::shadow::Cost) -> u64| {
        shadows
            .iter()
            .flat_map(|r| {
                [("live", &r.live), ("shadow", &r.shadow)].map(|(side, cost)| {
                    (
                        vec![stage(r), ("side", side.to_owned())],
                        ConstCounter::new(value(cost)),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    let sides: [(&'static str, &str, CostOf); 4] = [
        (
            "shadow_inputs",
            "Inputs the live module and its shadow each processed while the shadow ran.",
            |c| c.inputs,
        ),
        (
            "shadow_errors",
            "Inputs the live module and its shadow each refused while the shadow ran.",
            |c| c.errors,
        ),
        (
            "shadow_traps",
            "Calls of the live module and its shadow that trapped or hit a limit.",
            |c| c.traps,
        ),
        (
            "shadow_busy_microseconds",
            "Time the live module and its shadow each spent in their calls on the same input.",
            |c| c.busy_us,
        ),
    ];
    for (name, help, value) in sides {
        labelled(encoder, name, help, MetricType::Counter, per_side(value))?;
    }
    let mut outcomes = Vec::new();
    let mut fields = Vec::new();
    for report in shadows {
        if let Some(records) = &report.records {
            for (outcome, n) in [
                ("same", records.same),
                ("changed", records.changed),
                ("only_old", records.only_old),
                ("only_new", records.only_new),
            ] {
                let labels = vec![stage(report), ("outcome", outcome.to_owned())];
                outcomes.push((labels, ConstCounter::new(n)));
            }
            for (field, n) in &records.fields {
                fields.push((
                    vec![stage(report), ("field", field.clone())],
                    ConstCounter::new(*n),
                ));
            }
        }
        if let Some(windows) = &report.windows {
            for (outcome, n) in [
                (
                    "same",
                    windows.compared - windows.partial - windows.differing,
                ),
                ("differing", windows.differing),
                ("partial", windows.partial),
            ] {
                let labels = vec![stage(report), ("outcome", outcome.to_owned())];
                outcomes.push((labels, ConstCounter::new(n)));
            }
            for (field, n) in &windows.fields {
                fields.push((
                    vec![stage(report), ("field", field.clone())],
                    ConstCounter::new(*n),
                ));
            }
        }
    }
    labelled(
        encoder,
        "shadow_compared",
        "Records (parse, map, format) or windows (aggregate) compared, by outcome.",
        MetricType::Counter,
        outcomes,
    )?;
    labelled(
        encoder,
        "shadow_field_differences",
        "Rows (or window keys) whose field differs between the live module and its shadow.",
        MetricType::Counter,
        fields,
    )
}

/// Writes a gauge with one value per table.
fn table_gauges<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &str,
    values: impl IntoIterator<Item = (&'a str, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (table, value) in values {
        let labels = [("table", table)];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a gauge with one value per partition.
fn partition_gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &'static str,
    help: &str,
    values: impl IntoIterator<Item = (i32, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (partition, value) in values {
        let labels = [("partition", partition.to_string())];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for JobMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.snapshot();
        let job: &JobCounters = &snapshot.counters;
        let e = &mut encoder;
        counter(
            e,
            "source_records",
            "Records read from the source.",
            snapshot.records,
        )?;
        let steps = &job.steps;
        let each = |f: fn(&crate::counters::StepStats) -> u64| {
            steps.iter().map(move |(name, s)| (name.as_str(), f(s)))
        };
        counters(
            e,
            "stage_records_in",
            "Records or rows a step received.",
            "stage",
            each(|s| s.records_in),
        )?;
        counters(
            e,
            "stage_rows_out",
            "Rows a step passed on.",
            "stage",
            each(|s| s.rows_out),
        )?;
        counters(
            e,
            "stage_rejected",
            "Records a step rejected (to the dead letters, or dropped by policy).",
            "stage",
            each(|s| s.rejected),
        )?;
        counters(
            e,
            "stage_failed_batches",
            "Calls on a whole batch that failed (its records were then isolated).",
            "stage",
            each(|s| s.failed_batches),
        )?;
        histograms(
            e,
            "stage_batch_duration",
            "Time of each call of a step on a batch (isolating a failed batch included).",
            "stage",
            &BATCH_LATENCY_US,
            steps.iter().map(|(name, s)| (name.as_str(), &s.latency)),
        )?;
        counters(
            e,
            "stage_errors",
            "Records a stage refused: per-record errors of parse, map, the aggregate and format (dead-lettered or dropped).",
            "stage",
            job.errors.iter().map(|(stage, n)| (stage.as_str(), *n)),
        )?;
        counters(
            e,
            "dead_letters",
            "Dead letters sent, by the stage that refused the record.",
            "stage",
            job.dead_letters
                .iter()
                .map(|(stage, n)| (stage.as_str(), *n)),
        )?;
        if let Some(w) = job.window {
            counter(e, "window_rows", "Rows added to a window.", w.rows)?;
            counter(
                e,
                "window_late_updates",
                "Rows added to a window that had fired (allowed lateness).",
                w.late_updates,
            )?;
            counter(
                e,
                "window_too_late",
                "Records too late for their window (to the late records).",
                w.too_late,
            )?;
            counter(e, "window_results", "Window results finished.", w.results)?;
            e.encode_descriptor(
                "window_fire_lateness",
                "How long after its end (wall clock) each window first fired.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                w.fire_lateness.sum_us as f64 / 1e6,
                w.fire_lateness.count(),
                &buckets(&FIRE_LATENESS_US, &w.fire_lateness),
                None,
            )?;
            counter(
                e,
                "window_replay_skipped",
                "Replayed records whose window had closed before a restart.",
                w.replay_skipped,
            )?;
            ConstGauge::new(w.open_windows as i64).encode(e.encode_descriptor(
                "windows_open",
                "Windows held now: open, or fired and within their allowed lateness.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if let Some(watermark) = job.watermark {
            ConstGauge::new(watermark as f64 / 1000.0).encode(e.encode_descriptor(
                "event_time_watermark_seconds",
                "The job's event-time watermark (Unix time): windows ending at or before it have fired.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        let partitions = &job.partitions;
        partition_gauges(
            e,
            "source_partition_lag",
            "Records in a source partition past the job's committed position (Kafka consumer lag, reported by the client every second).",
            partitions
                .iter()
                .filter_map(|(&p, s)| s.lag.map(|lag| (p, lag as f64))),
        )?;
        partition_gauges(
            e,
            "event_time_partition_watermark_seconds",
            "A source partition's event-time watermark (Unix time).",
            partitions
                .iter()
                .filter_map(|(&p, s)| s.watermark.map(|w| (p, w as f64 / 1000.0))),
        )?;
        counter(e, "sink_sent", "Results sent to the sink.", job.sink_sent)?;
        counter(
            e,
            "sink_acked",
            "Results the sink acknowledged.",
            job.sink_acked,
        )?;
        let stages = &snapshot.stages;
        counters(
            e,
            "stage_swaps",
            "Modules swapped into a stage.",
            "stage",
            stages.iter().map(|s| (s.name.as_str(), s.swaps)),
        )?;
        histograms(
            e,
            "stage_swap_pause",
            "How long each swap paused the record flow.",
            "stage",
            &BATCH_LATENCY_US,
            stages.iter().map(|s| (s.name.as_str(), &s.swap_pauses)),
        )?;
        counters(
            e,
            "stage_swap_rejections",
            "Swaps a stage refused.",
            "stage",
            stages.iter().map(|s| (s.name.as_str(), s.rejected)),
        )?;
        counters(
            e,
            "stage_shape_changes",
            "Swaps whose module produced output of another shape (columns added, removed or retyped) than the module before it.",
            "stage",
            stages.iter().map(|s| (s.name.as_str(), s.shape_changes)),
        )?;
        let tables = &snapshot.tables;
        table_gauges(
            e,
            "table_rows",
            "Rows of a reference table.",
            tables.iter().map(|t| (t.name.as_str(), t.rows as f64)),
        )?;
        table_gauges(
            e,
            "table_last_update_seconds",
            "When a reference table's contents last changed (Unix time; its load, for a file).",
            tables
                .iter()
                .map(|t| (t.name.as_str(), t.updated_at_ms as f64 / 1000.0)),
        )?;
        counters(
            e,
            "table_updates",
            "Rows written to a reference table (inserted or replaced), its load included.",
            "table",
            tables.iter().map(|t| (t.name.as_str(), t.updates)),
        )?;
        counters(
            e,
            "table_deletes",
            "Keys a tombstone deleted from a reference table.",
            "table",
            tables.iter().map(|t| (t.name.as_str(), t.deletes)),
        )?;
        counters(
            e,
            "table_rejected_updates",
            "Records of a table's topic that were no row (no key, not a JSON object, a value of another type), refused.",
            "table",
            tables.iter().map(|t| (t.name.as_str(), t.rejected)),
        )?;
        counters(
            e,
            "table_lookup_hits",
            "Lookups of enrich stages that found a row.",
            "table",
            tables.iter().map(|t| (t.name.as_str(), t.hits)),
        )?;
        counters(
            e,
            "table_lookup_misses",
            "Lookups of enrich stages that found no row (or had no key to look up).",
            "table",
            tables.iter().map(|t| (t.name.as_str(), t.misses)),
        )?;
        shadow_metrics(&mut encoder, &snapshot.shadows)?;
        Ok(())
    }
}
