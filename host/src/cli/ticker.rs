//! The live one-line progress of `rivulet run` and `rivulet demo` (see
//! [`rivulet::progress`]): drawn in place on standard error about once a second while it is
//! a terminal, erased before each log line and result (see [`rivulet::console`]) and at the
//! end. Nothing is drawn when standard error is not a terminal, unless asked for.

use clap::ValueEnum;
use rivulet::status::JobStatus;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// When to draw the progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TickerMode {
    /// While standard error is a terminal.
    Auto,
    /// Always (e.g. to a file or pipe, for a test).
    Always,
    /// Never.
    Never,
}

impl TickerMode {
    pub fn wanted(self) -> bool {
        match self {
            TickerMode::Auto => std::io::stderr().is_terminal(),
            TickerMode::Always => true,
            TickerMode::Never => false,
        }
    }
}

/// `--ticker`, of `run`, `sql` and `demo`.
#[derive(Debug, clap::Args)]
pub struct TickerArgs {
    /// The live progress line on standard error (records in and their rate, results out,
    /// watermark, open windows, last fire, lag): `auto` draws it while standard error is a
    /// terminal.
    #[arg(long, value_enum, default_value = "auto")]
    pub ticker: TickerMode,
}

/// A new line of figures this often; an erased line is redrawn within [`REDRAW`].
const EVERY: Duration = Duration::from_secs(1);
const REDRAW: Duration = Duration::from_millis(250);

/// Width when standard error is not a terminal (`--ticker always`).
const DEFAULT_WIDTH: usize = 120;

/// The ticker's thread, following the job it is pointed at (a restarted job is a new one).
pub struct Ticker {
    job: Arc<Mutex<Option<Arc<JobStatus>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts drawing (if `mode` wants it); it shows nothing until pointed at a job.
    pub fn start(mode: TickerMode) -> Self {
        let job: Arc<Mutex<Option<Arc<JobStatus>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = mode.wanted().then(|| {
            rivulet::console::enable();
            let (job, stop) = (job.clone(), stop.clone());
            std::thread::Builder::new()
                .name("rivulet-ticker".into())
                .spawn(move || tick(&job, &stop))
                .ok()
        });
        Ticker {
            job,
            stop,
            thread: thread.flatten(),
        }
    }

    /// Shows `status`'s figures from now on.
    pub fn follow(&self, status: Arc<JobStatus>) {
        *self.job.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            rivulet::console::erase();
        }
    }
}

fn width() -> usize {
    terminal_size::terminal_size_of(std::io::stderr())
        .map(|(w, _)| usize::from(w.0))
        .unwrap_or(DEFAULT_WIDTH)
}

fn tick(job: &Mutex<Option<Arc<JobStatus>>>, stop: &AtomicBool) {
    // The job followed (by address), its records and when they were read.
    let mut last: Option<(usize, u64, Instant)> = None;
    let mut line = String::new();
    let mut rendered: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let status = job.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(status) = status {
            if rendered.is_none_or(|at| at.elapsed() >= EVERY) {
                let records = status.records();
                let id = Arc::as_ptr(&status) as usize;
                let now = Instant::now();
                let rate = match last {
                    Some((job, before, at)) if job == id => {
                        let secs = now.duration_since(at).as_secs_f64();
                        Some(records.saturating_sub(before) as f64 / secs.max(1e-3))
                    }
                    _ => None,
                };
                last = Some((id, records, now));
                let now_ms = rivulet::source::kafka::now_millis();
                line = rivulet::progress::line(&status.counters(), records, rate, now_ms);
                rendered = Some(now);
                rivulet::console::draw(&rivulet::progress::fit(&line, width().saturating_sub(1)));
            } else if !rivulet::console::is_drawn() {
                rivulet::console::draw(&rivulet::progress::fit(&line, width().saturating_sub(1)));
            }
        }
        std::thread::sleep(REDRAW);
    }
}
