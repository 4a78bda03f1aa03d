//! One streaming job, as data flows through it:
//!
//! source → parse → map… → (key → window → aggregate → fire) → format → sink,
//! with rejected records to the dead letters and offsets committed once nothing
//! downstream holds them (at-least-once).

use crate::dead_letter::{DeadLetterError, DeadLetters};
use crate::delivery::{self, Holds, hold};
use crate::emit::Emitter;
use crate::sink::{SinkError, all_holds};
use crate::source::{Source, SourceError};
use crate::spec::BatchSpec;
use crate::status::JobStatus;
use crate::swap::{Prepared, Retired};
use crate::transform::Transform;
use crate::windowing::Windowing;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error(transparent)]
    Udf(#[from] crate::udf::UdfError),
}

pub struct Pipeline {
    pub name: String,
    pub source: Source,
    pub transform: Transform,
    pub windowing: Option<Windowing>,
    pub emitter: Emitter,
    pub dead: DeadLetters,
    pub batch: BatchSpec,
    pub commit_every: Duration,
    pub stop: Arc<AtomicBool>,
    pub status: Arc<JobStatus>,
    /// Swaps prepared off the hot path, installed between batches.
    pub swaps: Option<Receiver<Prepared>>,
    /// Where to ask for a swap (the control API and the watcher use it).
    pub swap_requests: Option<std::sync::mpsc::Sender<crate::swap::SwapRequest>>,
    /// How long each swap paused the record flow.
    pub swap_pauses: Vec<Duration>,
    /// Replaced modules, dropped on the swap worker (not on the hot path).
    pub retired: Option<std::sync::mpsc::Sender<Retired>>,
}

impl Pipeline {
    /// Runs until stopped, or until a bounded source is exhausted and every window fired.
    pub fn run(&mut self) -> Result<(), PipelineError> {
        match self.flow() {
            Ok(()) => self.shutdown(),
            Err(PipelineError::Udf(err)) if err.is_stopped() => self.abandon(&err),
            Err(err) => Err(err),
        }
    }

    /// The record flow, until stopped or the end of a bounded source.
    fn flow(&mut self) -> Result<(), PipelineError> {
        let topic = self.source.name().to_owned();
        self.reset_windows(&self.source.partitions());
        let mut last_commit = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(partitions) = self.source.take_rebalance() {
                self.reset_windows(&partitions);
            }
            self.install_swaps();
            let raw = self.source.poll(self.batch.max_records, self.poll_wait())?;
            self.status.count(u64::from(raw.len));
            if raw.len > 0 {
                let (rows, origins) = self.transform.run(&raw, &topic, &mut self.dead)?;
                match &mut self.windowing {
                    Some(windowing) => {
                        windowing.ingest(&raw, &rows, &origins, &topic, &mut self.dead)?
                    }
                    None => {
                        let holds: Vec<Holds> = origins
                            .iter()
                            .map(|&o| hold(raw.partitions[o as usize], raw.offsets[o as usize]))
                            .collect();
                        self.emitter.emit(&rows, &holds, &topic, &mut self.dead)?;
                    }
                }
            }
            if let Some(windowing) = &mut self.windowing {
                let results = windowing.fire(&topic, &mut self.dead)?;
                self.emitter.emit_all(&results, &topic, &mut self.dead)?;
            }
            self.serve_sinks()?;
            if last_commit.elapsed() >= self.commit_every {
                // A failed periodic commit only delays progress: the next one retries it.
                if let Err(err) = self.commit(false) {
                    tracing::warn!(job = %self.name, "commit failed, will retry: {err}");
                }
                last_commit = Instant::now();
            }
            if self.source.at_end() {
                if let Some(windowing) = &mut self.windowing {
                    let results = windowing.drain(&topic, &mut self.dead)?;
                    self.emitter.emit_all(&results, &topic, &mut self.dead)?;
                }
                break;
            }
        }
        Ok(())
    }

    /// Stops after a signal abandoned a guest call mid-batch: flushes what the sinks hold
    /// but commits nothing more, so the interrupted batch is read again on restart.
    fn abandon(&mut self, err: &crate::udf::UdfError) -> Result<(), PipelineError> {
        tracing::info!(job = %self.name, "stopping: {err}; the interrupted batch is not committed");
        for sink in self.sinks_mut() {
            sink.flush(Duration::from_secs(30))?;
        }
        self.source.close();
        Ok(())
    }

    fn reset_windows(&mut self, partitions: &[i32]) {
        let restored = self.source.restored_watermarks();
        if let Some(windowing) = &mut self.windowing {
            windowing.reset(partitions, &restored);
        }
    }

    /// How long to wait for input: the batch wait, shortened to the next window timer.
    fn poll_wait(&self) -> Duration {
        let timer = self.windowing.as_ref().and_then(Windowing::next_timer_ms);
        match timer {
            Some(ms) => self
                .batch
                .max_wait
                .min(Duration::from_millis(ms.max(0) as u64)),
            None => self.batch.max_wait,
        }
    }

    fn sinks_mut(&mut self) -> impl Iterator<Item = &mut crate::sink::Sink> {
        let late = self.windowing.as_mut().and_then(Windowing::late_sink);
        std::iter::once(&mut self.emitter.sink)
            .chain(self.dead.sink_mut())
            .chain(late)
    }

    fn serve_sinks(&mut self) -> Result<(), PipelineError> {
        for sink in self.sinks_mut() {
            sink.poll()?;
        }
        Ok(())
    }

    /// Commits every partition up to its smallest held offset.
    fn commit(&mut self, sync: bool) -> Result<(), PipelineError> {
        let mut holds = vec![all_holds(
            std::iter::once(&self.emitter.sink).chain(self.dead.sink()),
        )];
        if let Some(windowing) = &self.windowing {
            holds.push(windowing.holds());
            holds.extend(windowing.late_sink_ref().map(|s| s.holds()));
        }
        let offsets = delivery::committable(&self.source.positions(), &holds);
        let watermarks = match &self.windowing {
            Some(windowing) => windowing.partition_watermarks(&self.source.partitions()),
            None => Default::default(),
        };
        self.source.commit(&offsets, &watermarks, sync)?;
        Ok(())
    }

    /// Flushes every sink and commits what is safe.
    fn shutdown(&mut self) -> Result<(), PipelineError> {
        for sink in self.sinks_mut() {
            sink.flush(Duration::from_secs(30))?;
        }
        let committed = self.commit(true);
        self.source.close();
        committed
    }
}
