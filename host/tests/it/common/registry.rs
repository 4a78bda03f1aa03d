//! `rivulet registry` as a child process.

use super::JobProcess;
use std::io::BufRead;
use std::process::{Command, Stdio};

/// A started registry (killed when dropped), its URL (its first stdout line) and its
/// startup line.
pub fn registry() -> (JobProcess, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["registry", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    // Its log is drained for as long as it runs (a closed pipe would fail its writes).
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (JobProcess(child), url.trim().to_owned(), banner)
}
