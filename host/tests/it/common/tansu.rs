//! A Tansu broker (a separate Kafka-protocol broker process) that a test starts, stops and
//! restarts. The binary comes from `RIVULET_TANSU` (`just test-tansu` sets it); storage from
//! `RIVULET_TANSU_STORAGE` (`memory` or `sqlite`, the latter persistent across restarts).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Tansu {
    binary: PathBuf,
    storage: String,
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    log: PathBuf,
}

/// Which storage a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Memory,
    /// Survives a broker restart.
    Persistent,
}

impl Tansu {
    /// Starts Tansu, or says why the test is skipped (no binary configured, or no
    /// persistent storage in this build) and returns `None`.
    pub fn start(storage: Storage) -> Option<Self> {
        let Some(binary) = std::env::var_os("RIVULET_TANSU").map(PathBuf::from) else {
            eprintln!("SKIPPED: RIVULET_TANSU is not set (run `just test-tansu`)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tansu dir");
        let storage = match storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Persistent => {
                let Some(binary) = std::env::var_os("RIVULET_TANSU_PERSISTENT") else {
                    eprintln!(
                        "SKIPPED: RIVULET_TANSU_PERSISTENT (a Tansu built with sqlite) is not set"
                    );
                    return None;
                };
                return Self::launch(
                    PathBuf::from(binary),
                    // Relative to the broker's working directory, the test's own.
                    "sqlite://tansu.db".to_owned(),
                    dir,
                );
            }
        };
        Self::launch(binary, storage, dir)
    }

    fn launch(binary: PathBuf, storage: String, dir: tempfile::TempDir) -> Option<Self> {
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            socket.local_addr().expect("port").port()
        };
        let log = dir.path().join("tansu.log");
        let mut tansu = Tansu {
            binary,
            storage,
            port,
            child: None,
            dir,
            log,
        };
        tansu.spawn();
        Some(tansu)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("tansu log");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(&self.binary)
            .args([
                "broker",
                "--storage-engine",
                &self.storage,
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "tansu did not start: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGKILL: no chance to tidy up).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same storage, and returns once it answers
    /// a metadata request (a broker that does not is killed and started again: the outage
    /// under test is the planned one). Tansu 0.6 with sqlite storage can still crash later,
    /// when a client produces (see [`Tansu::crashed`]); tests that restart it check that.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        for _ in 0..3 {
            if self.answers() {
                return;
            }
            eprintln!("tansu did not answer after its restart; starting it again");
            self.stop();
            self.spawn();
        }
    }

    /// Whether the broker process reported a panic (its log says so).
    pub fn crashed(&self) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains("panicked at"))
    }

    /// Prints the last lines of the broker's log.
    pub fn print_log_tail(&self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("tansu log, last lines:");
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
    }

    /// Whether the broker answers a metadata request.
    pub fn answers(&self) -> bool {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let client: Result<BaseConsumer, _> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", self.address())
            .create();
        client.is_ok_and(|c| c.fetch_metadata(None, Duration::from_secs(8)).is_ok())
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            self.print_log_tail();
        }
    }
}
