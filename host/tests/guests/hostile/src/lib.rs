//! A hostile parse UDF for the sandbox tests: each record's payload is a command.
//!
//! `loop`, `bomb`, `recurse`, `panic`, `exit`, `huge:<bytes>`, `file:<path>`, `env:<name>`,
//! `connect:<addr>`, `say:<text>` (writes to stdout and stderr); anything else is echoed.
//! Commands that try to escape the sandbox report what happened in the `outcome` field.

use rivulet_sdk::{Error, RawRecord};
use serde::Serialize;
use std::hint::black_box;

#[derive(Serialize)]
pub struct Outcome {
    pub command: String,
    pub outcome: String,
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

#[rivulet_sdk::parse]
pub fn parse(rec: RawRecord) -> Result<Outcome, Error> {
    let command = rec.payload_str()?.to_owned();
    let (verb, arg) = command.split_once(':').unwrap_or((command.as_str(), ""));
    let outcome = match verb {
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
        _ => "echo".to_owned(),
    };
    Ok(Outcome { command, outcome })
}
