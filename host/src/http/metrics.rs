//! `/metrics`: the job's counters in the Prometheus text format, read at scrape time from
//! what the tasks last published (prometheus-client's [`Collector`]).

use crate::counters::JobCounters;
use crate::status::JobStatus;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
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
            counter(
                e,
                "window_replay_skipped",
                "Replayed records whose window had closed before a restart.",
                w.replay_skipped,
            )?;
        }
        if let Some(watermark) = job.watermark {
            ConstGauge::new(watermark as f64 / 1000.0).encode(e.encode_descriptor(
                "event_time_watermark_seconds",
                "The job's event-time watermark (Unix time): windows ending at or before it have fired.",
                None,
                MetricType::Gauge,
            )?)?;
        }
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
        Ok(())
    }
}
