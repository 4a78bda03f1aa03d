//! The one-line progress of a running job (the ticker of `rivulet run` and `demo` on a
//! terminal): records in and their rate, results out, the watermark, open windows, the last
//! window fired and the source's lag.

use crate::counters::JobCounters;

/// `n` with thousands separated by commas.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The time of day of `ms` (UTC), with its milliseconds if it has any.
fn time_of_day(ms: i64) -> String {
    let iso = rivulet_rows::time::iso8601(ms);
    iso.get(11..)
        .map(|t| t.trim_end_matches('Z').to_owned())
        .unwrap_or(iso)
}

/// What the line says about a job: `records` read, `rate` of them per second since the last
/// line (None: the first line), at wall clock `now_ms`.
pub fn line(counters: &JobCounters, records: u64, rate: Option<f64>, now_ms: i64) -> String {
    let mut parts = Vec::new();
    parts.push(match rate {
        Some(rate) => format!(
            "in {} ({}/s)",
            thousands(records),
            thousands(rate.round() as u64)
        ),
        None => format!("in {}", thousands(records)),
    });
    parts.push(format!("out {}", thousands(counters.sink_sent)));
    if let Some(watermark) = counters.watermark.filter(|w| *w < i64::MAX) {
        parts.push(format!("watermark {}", time_of_day(watermark)));
    }
    if let Some(window) = &counters.window {
        parts.push(match window.open_windows {
            1 => "1 window open".to_owned(),
            n => format!("{} windows open", thousands(n)),
        });
        if let (Some(end), Some(at)) = (window.last_fire_end, window.last_fire_at) {
            let ago = (now_ms - at).max(0) / 1000;
            parts.push(format!("last fire {} ({ago} s ago)", time_of_day(end)));
        }
    }
    let lags: Vec<i64> = counters.partitions.values().filter_map(|p| p.lag).collect();
    if !lags.is_empty() {
        let lag: i64 = lags.iter().sum();
        parts.push(format!("lag {}", thousands(lag.max(0) as u64)));
    }
    parts.join(" · ")
}

/// `line` cut to `width` characters (a wider line would wrap and could not be redrawn in
/// place), an ellipsis marking the cut.
pub fn fit(line: &str, width: usize) -> String {
    let count = line.chars().count();
    if count <= width {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::{PartitionStats, WindowStats};

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn the_line_names_records_rate_output_watermark_windows_last_fire_and_lag() {
        // 2024-05-23T12:34:56Z and the window [12:34:50, 12:35:00).
        let t = 1_716_467_696_000;
        let counters = JobCounters {
            watermark: Some(t),
            window: Some(WindowStats {
                open_windows: 3,
                last_fire_end: Some(t - 6_000),
                last_fire_at: Some(t + 1_000),
                ..WindowStats::default()
            }),
            partitions: [
                (
                    0,
                    PartitionStats {
                        lag: Some(1200),
                        watermark: None,
                    },
                ),
                (
                    1,
                    PartitionStats {
                        lag: Some(34),
                        watermark: None,
                    },
                ),
                (2, PartitionStats::default()),
            ]
            .into(),
            sink_sent: 15,
            ..JobCounters::default()
        };
        assert_eq!(
            line(&counters, 12_345, Some(409.6), t + 5_500),
            "in 12,345 (410/s) · out 15 · watermark 12:34:56 · 3 windows open · last fire 12:34:50 (4 s ago) · lag 1,234"
        );
    }

    #[test]
    fn the_first_line_of_a_job_without_windows_or_kafka_says_only_what_is_known() {
        let counters = JobCounters::default();
        assert_eq!(line(&counters, 0, None, 0), "in 0 · out 0");
        let ended = JobCounters {
            watermark: Some(i64::MAX),
            window: Some(WindowStats {
                open_windows: 1,
                ..WindowStats::default()
            }),
            ..JobCounters::default()
        };
        assert_eq!(
            line(&ended, 7, Some(0.0), 0),
            "in 7 (0/s) · out 0 · 1 window open",
            "the end of a bounded input is no time of day"
        );
    }

    #[test]
    fn a_line_wider_than_the_terminal_is_cut_with_an_ellipsis() {
        assert_eq!(fit("in 1 · out 2", 20), "in 1 · out 2");
        assert_eq!(fit("in 1 · out 2", 8), "in 1 · …");
        assert_eq!(fit("abc", 3), "abc");
    }
}
