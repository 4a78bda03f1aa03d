//! Shared helpers of the host's integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rivulet::udf::{Limits, ModuleCache, Runtime, UdfModule};
use std::path::PathBuf;

/// The components `just udfs` builds.
pub fn wasm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RIVULET_UDF_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wasm32-wasip2/wasm")
}

/// Path of a built component, e.g. `wasm("udf_parse_orders")`.
pub fn wasm(name: &str) -> PathBuf {
    let path = wasm_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the UDFs first with `just udfs`",
        path.display()
    );
    path
}

pub fn runtime() -> Runtime {
    Runtime::new(ModuleCache::disabled()).expect("runtime")
}

pub fn load(runtime: &Runtime, name: &str) -> UdfModule {
    UdfModule::load(runtime, &wasm(name)).expect("module loads")
}

pub fn limits() -> Limits {
    Limits::default()
}

/// The JSON lines of a file (none when it does not exist).
pub fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Waits (30 s at most) until one of the job's tables satisfies `done`; `what` names the
/// moment for the failure message.
pub fn wait_for_table(
    status: &rivulet::status::JobStatus,
    what: &str,
    done: impl Fn(&rivulet::table::TableInfo) -> bool,
) {
    let started = std::time::Instant::now();
    loop {
        let tables = status.snapshot().tables;
        if tables.iter().any(&done) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{what}: the table is {tables:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
/// A `rivulet` child process, killed when dropped: a failing test leaves no job running (it
/// would load the machine for the tests after it).
pub struct JobProcess(pub std::process::Child);

impl JobProcess {
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.0.try_wait()
    }
}

impl Drop for JobProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub mod committed;
pub mod job;
pub mod kafka;
pub mod registry;
pub mod tansu;

/// A started `rivulet run` (its stderr piped): the job, its stderr lines as they come, and
/// the control API's address from its `control API at http://ADDR` line.
pub fn with_control(
    mut child: std::process::Child,
) -> (JobProcess, std::sync::mpsc::Receiver<String>, String) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let job = JobProcess(child);
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let control = loop {
        let line = said
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the job prints its control address");
        if let Some(rest) = line.strip_prefix("control API at http://") {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    (job, said, control)
}
