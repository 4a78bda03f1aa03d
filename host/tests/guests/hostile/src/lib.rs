//! A hostile UDF for the sandbox tests: each record's command makes it misbehave. Built as
//! a parse step by default, or as a map, aggregate or format step (features `map`,
//! `aggregate`, `format`); `just hostile-guests` builds every world.
//!
//! Commands: `loop`, `bomb`, `recurse`, `panic`, `exit`, `huge:<bytes>`, `file:<path>`,
//! `env:<name>`, `connect:<addr>`, `say:<text>` (writes to stdout and stderr),
//! `sleep:<ms>` (`std::thread::sleep`), `block:<ms>` (a monotonic-clock pollable's
//! `block`), `poll:<ms>` (`wasi:io/poll.poll`), `forever` (blocks on a pollable that never
//! fires), `spam:<lines>` (that many lines to stderr), `longline:<bytes>` (one stderr line
//! without a newline), `exit-code:<n>` (WASI `exit-with-code`); anything else is echoed.
//! Commands that try to escape the sandbox report what happened in the outcome.
//!
//! Parse and map take the command as the payload / the `command` field; the aggregate
//! runs `add:<command>` rows in `add` and remembers `finish:<command>` rows to run in
//! `finish`; format runs the row's command and writes the outcome.

use rivulet_sdk::Error;
use serde::{Deserialize, Serialize};
use std::hint::black_box;

#[derive(Serialize)]
pub struct Outcome {
    pub command: String,
    pub outcome: String,
}

/// A row carrying a command (map, aggregate and format inputs).
#[derive(Deserialize)]
pub struct Command {
    pub command: String,
}

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let local = black_box([depth; 16]);
    recurse(black_box(depth + 1)) + local[3]
}

fn report<T, E: std::fmt::Display>(result: Result<T, E>, ok: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => format!("allowed: {}", ok(value)),
        Err(err) => format!("denied: {err}"),
    }
}

fn millis(arg: &str) -> u64 {
    arg.parse().unwrap_or(1000)
}

/// Does what `command` says; returns what happened.
pub fn act(command: &str) -> Result<String, Error> {
    use wasip2::clocks::monotonic_clock;
    let (verb, arg) = command.split_once(':').unwrap_or((command, ""));
    Ok(match verb {
        "loop" => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        "bomb" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "recurse" => recurse(0).to_string(),
        "panic" => panic!("hostile guest panics on purpose"),
        "exit" => std::process::exit(3),
        "exit-code" => {
            wasip2::cli::exit::exit_with_code(arg.parse().unwrap_or(3));
            "still here".to_owned()
        }
        "fail" => return Err(Error::new("refused on purpose")),
        "huge" => "x".repeat(arg.parse().unwrap_or(1 << 20)),
        "file" => report(std::fs::read_to_string(arg), |text| text),
        "list" => report(std::fs::read_dir(arg), |dir| {
            format!("{} entries", dir.count())
        }),
        "env" => report(std::env::var(arg), |value| value),
        "args" => format!("{} args", std::env::args().count()),
        "connect" => report(std::net::TcpStream::connect(arg), |_| {
            "connected".to_owned()
        }),
        "say" => {
            println!("stdout: {arg}");
            eprintln!("stderr: {arg}");
            "said".to_owned()
        }
        "spam" => {
            for i in 0..arg.parse::<u64>().unwrap_or(3000) {
                eprintln!("spam line {i}");
            }
            "spammed".to_owned()
        }
        "longline" => {
            eprint!("{}", "L".repeat(arg.parse().unwrap_or(70 * 1024)));
            "long line written".to_owned()
        }
        "sleep" => {
            std::thread::sleep(std::time::Duration::from_millis(millis(arg)));
            "slept".to_owned()
        }
        "block" => {
            monotonic_clock::subscribe_duration(millis(arg) * 1_000_000).block();
            "blocked".to_owned()
        }
        "poll" => {
            let pollable = monotonic_clock::subscribe_duration(millis(arg) * 1_000_000);
            wasip2::io::poll::poll(&[&pollable]);
            "polled".to_owned()
        }
        "forever" => {
            monotonic_clock::subscribe_duration(u64::MAX).block();
            "woke up".to_owned()
        }
        _ => "echo".to_owned(),
    })
}

#[cfg(not(any(feature = "map", feature = "aggregate", feature = "format")))]
pub mod world {
    use super::*;
    use rivulet_sdk::RawRecord;

    #[rivulet_sdk::parse]
    pub fn parse(rec: RawRecord) -> Result<Outcome, Error> {
        let command = rec.payload_str()?.to_owned();
        let outcome = act(&command)?;
        Ok(Outcome { command, outcome })
    }
}

#[cfg(feature = "map")]
pub mod world {
    use super::*;

    #[rivulet_sdk::map]
    pub fn map(row: Command) -> Result<Outcome, Error> {
        let outcome = act(&row.command)?;
        Ok(Outcome {
            command: row.command,
            outcome,
        })
    }
}

#[cfg(feature = "format")]
pub mod world {
    use super::*;

    #[rivulet_sdk::format]
    pub fn format(row: Command) -> Result<String, Error> {
        let outcome = act(&row.command)?;
        Ok(format!("{}={outcome}", row.command))
    }
}

#[cfg(feature = "aggregate")]
pub mod world {
    use super::*;
    use rivulet_sdk::{Aggregate, Window};

    /// Rows added, and the commands to run at `finish`.
    #[derive(Serialize, Deserialize, Default)]
    pub struct Acc {
        pub count: u64,
        pub at_finish: Vec<String>,
    }

    #[derive(Serialize)]
    pub struct Counted {
        pub key: String,
        pub count: u64,
    }

    pub struct Hostile;

    #[rivulet_sdk::aggregate]
    impl Aggregate for Hostile {
        type Input = Command;
        type Acc = Acc;
        type Output = Counted;

        fn create() -> Acc {
            Acc::default()
        }

        fn add(acc: &mut Acc, row: Command) {
            acc.count += 1;
            if let Some(command) = row.command.strip_prefix("add:") {
                let _ = act(command);
            } else if let Some(command) = row.command.strip_prefix("finish:") {
                acc.at_finish.push(command.to_owned());
            }
        }

        fn merge(mut a: Acc, b: Acc) -> Acc {
            a.count += b.count;
            a.at_finish.extend(b.at_finish);
            a
        }

        fn finish(acc: Acc, window: &Window) -> Counted {
            for command in &acc.at_finish {
                let _ = act(command);
            }
            Counted {
                key: window.key.to_string(),
                count: acc.count,
            }
        }
    }
}
