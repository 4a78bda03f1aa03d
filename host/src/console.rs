//! The terminal's status line: one line drawn in place at the bottom of standard error (the
//! progress ticker of `rivulet run` and `demo`), erased before anything else is written to
//! the terminal — a log line, a result on standard output — so that every other line stays
//! whole and readable. The ticker redraws it after.
//!
//! Nothing here costs anything until a status line is enabled ([`enable`]): writers then
//! take one lock per write.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Whether a status line may be drawn (set once, by the ticker).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether a status line is on the terminal now; the lock orders writes to the terminal.
static DRAWN: Mutex<bool> = Mutex::new(false);

/// Moves to the line's start and erases it.
const ERASE: &str = "\r\x1b[2K";

fn drawn() -> MutexGuard<'static, bool> {
    DRAWN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// From now on, writers through this module erase the status line before they write.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Draws `line` as the status line, replacing the one drawn (it must fit the terminal's
/// width: a wrapped line would not be erased whole).
pub fn draw(line: &str) {
    let mut drawn = drawn();
    let mut err = std::io::stderr().lock();
    if write!(err, "{ERASE}{line}")
        .and_then(|()| err.flush())
        .is_ok()
    {
        *drawn = true;
    }
}

/// Erases the status line, if one is drawn (at the end, so that the shell's prompt starts on
/// a clean line).
pub fn erase() {
    let mut drawn = drawn();
    erase_locked(&mut drawn);
}

fn erase_locked(drawn: &mut bool) {
    if *drawn {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "{ERASE}").and_then(|()| err.flush());
        *drawn = false;
    }
}

/// Whether a status line is on the terminal now.
pub fn is_drawn() -> bool {
    *drawn()
}

/// A writer that erases the status line before each write (while one is enabled).
#[derive(Debug)]
pub struct Erasing<W>(pub W);

impl<W: Write> Write for Erasing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !enabled() {
            return self.0.write(buf);
        }
        let mut drawn = drawn();
        erase_locked(&mut drawn);
        // Whole, before the ticker may draw again.
        self.0.write_all(buf)?;
        self.0.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
