//! A Tansu broker (a separate Kafka-protocol broker process) that a test starts, stops and
//! restarts. The binary comes from `RIVULET_TANSU` (`just test-tansu` sets it); the storage
//! is the test's choice ([`Storage`]).

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
    /// The broker's environment (where its object store is).
    env: Vec<(&'static str, String)>,
    /// The local S3 server of [`Storage::ObjectStore`].
    s3: Option<Child>,
}

/// Which storage a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    Memory,
    /// Survives a broker restart (sqlite: `RIVULET_TANSU_PERSISTENT`, a Tansu built with
    /// it; its transactions time out).
    Persistent,
    /// Survives a broker restart and takes transactions: Tansu's S3 storage on a local S3
    /// server (`RIVULET_MOTO`, moto's `moto_server`, which `scripts/with-tansu` installs),
    /// which outlives the broker's restarts.
    ObjectStore,
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
            Storage::ObjectStore => {
                let Some(moto) = std::env::var_os("RIVULET_MOTO") else {
                    eprintln!("SKIPPED: RIVULET_MOTO (moto's S3 server) is not set");
                    return None;
                };
                let (s3, endpoint) = s3_server(&PathBuf::from(moto), &dir);
                let mut tansu = Self::prepare(binary, "s3://tansu/".to_owned(), dir);
                tansu.s3 = Some(s3);
                tansu.env = vec![
                    ("AWS_ENDPOINT", endpoint),
                    ("AWS_ACCESS_KEY_ID", "test".into()),
                    ("AWS_SECRET_ACCESS_KEY", "test".into()),
                    ("AWS_DEFAULT_REGION", "us-east-1".into()),
                    ("AWS_ALLOW_HTTP", "true".into()),
                ];
                tansu.spawn();
                return Some(tansu);
            }
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
        let mut tansu = Self::prepare(binary, storage, dir);
        tansu.spawn();
        Some(tansu)
    }

    fn prepare(binary: PathBuf, storage: String, dir: tempfile::TempDir) -> Self {
        let log = dir.path().join("tansu.log");
        Tansu {
            binary,
            storage,
            port: free_port(),
            child: None,
            dir,
            log,
            env: Vec::new(),
            s3: None,
        }
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
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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
        if let Some(mut s3) = self.s3.take() {
            let _ = s3.kill();
            let _ = s3.wait();
        }
    }
}

fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    socket.local_addr().expect("port").port()
}

/// Starts moto's S3 server with a bucket `tansu`: the process and its endpoint.
fn s3_server(moto: &std::path::Path, dir: &tempfile::TempDir) -> (Child, String) {
    use std::io::{Read, Write};
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("s3.log")).expect("s3 log");
    let child = Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start moto_server");
    let started = Instant::now();
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            // Creates the bucket (us-east-1 needs no location).
            let request = format!(
                "PUT /tansu HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream
                .write_all(request.as_bytes())
                .expect("create the bucket");
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "creating the bucket: {answer}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, format!("http://127.0.0.1:{port}"))
}
