//! Bounding a guest call in time, wherever the time goes. Guest code is interrupted by the
//! epoch callback (checked every [`EPOCH_TICK`](super::runtime::EPOCH_TICK)); a guest
//! waiting inside a WASI host call (a sleep, `poll`, a pollable's `block`) is a pending
//! future, abandoned by [`bounded`] at the deadline. Both also end when the job's stop
//! flag is set.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

/// How often a waiting call looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Why a call was cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// It ran (or waited in a host call) past its time limit.
    Deadline,
    /// The job is stopping.
    Stopped,
}

/// The clock of one store: when its current call must end, and the job's stop flag.
#[derive(Debug, Default)]
pub struct CallClock {
    deadline: Option<Instant>,
    stop: Option<Arc<AtomicBool>>,
    /// Why the epoch callback interrupted the guest, if it did.
    interrupted: Option<Interruption>,
}

impl CallClock {
    pub fn new(stop: Option<Arc<AtomicBool>>) -> Self {
        CallClock {
            deadline: None,
            stop,
            interrupted: None,
        }
    }

    /// Starts a call that must end by `deadline`.
    pub fn start(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
        self.interrupted = None;
    }

    /// Whether the call must end now; remembers why.
    pub fn check(&mut self, now: Instant) -> Option<Interruption> {
        let why = due(self.stop.as_deref(), self.deadline, now);
        if why.is_some() {
            self.interrupted = why;
        }
        why
    }

    /// Why the epoch callback interrupted the last call, if it did.
    pub fn take_interruption(&mut self) -> Option<Interruption> {
        self.interrupted.take()
    }
}

fn due(stop: Option<&AtomicBool>, deadline: Option<Instant>, now: Instant) -> Option<Interruption> {
    if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
        Some(Interruption::Stopped)
    } else if deadline.is_some_and(|d| now >= d) {
        Some(Interruption::Deadline)
    } else {
        None
    }
}

/// Runs `call` until it completes, `deadline` passes or `stop` is set, whichever is
/// first. A call that completes without ever waiting costs no timer. Must run inside a
/// tokio runtime with the time driver.
pub async fn bounded<T>(
    call: impl Future<Output = T>,
    deadline: Instant,
    stop: Option<&AtomicBool>,
) -> Result<T, Interruption> {
    let mut call = pin!(call);
    let mut expiry = pin!(expiry(deadline, stop));
    poll_fn(|cx| {
        if let Poll::Ready(out) = call.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        expiry.as_mut().poll(cx).map(Err)
    })
    .await
}

/// Completes when the call must end.
async fn expiry(deadline: Instant, stop: Option<&AtomicBool>) -> Interruption {
    loop {
        let now = Instant::now();
        if let Some(why) = due(stop, Some(deadline), now) {
            return why;
        }
        let wake = match stop {
            Some(_) => deadline.min(now + STOP_POLL),
            None => deadline,
        };
        tokio::time::sleep_until(wake.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_ready_call_completes() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let out = runtime().block_on(bounded(async { 7 }, deadline, None));
        assert_eq!(out, Ok(7));
    }

    #[test]
    fn a_call_that_never_completes_ends_at_its_deadline() {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        let out = runtime().block_on(bounded(std::future::pending::<()>(), deadline, None));
        assert_eq!(out, Err(Interruption::Deadline));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn a_waiting_call_ends_when_the_job_stops() {
        let stop = Arc::new(AtomicBool::new(false));
        let setter = stop.clone();
        let flipper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            setter.store(true, Ordering::Relaxed);
        });
        let deadline = Instant::now() + Duration::from_secs(3600);
        let out = runtime().block_on(bounded(std::future::pending::<()>(), deadline, Some(&stop)));
        flipper.join().unwrap();
        assert_eq!(out, Err(Interruption::Stopped));
    }

    #[test]
    fn the_clock_says_why_a_call_must_end() {
        let now = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let mut clock = CallClock::new(Some(stop.clone()));
        clock.start(now + Duration::from_millis(10));
        assert_eq!(clock.check(now), None);
        assert_eq!(clock.take_interruption(), None);
        assert_eq!(
            clock.check(now + Duration::from_millis(10)),
            Some(Interruption::Deadline)
        );
        assert_eq!(clock.take_interruption(), Some(Interruption::Deadline));
        stop.store(true, Ordering::Relaxed);
        assert_eq!(clock.check(now), Some(Interruption::Stopped));
    }
}
