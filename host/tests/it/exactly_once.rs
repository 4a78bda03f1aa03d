//! Exactly-once (`delivery = "exactly-once"`): each task writes its window results, dead
//! letters and late records in Kafka transactions that also commit its offsets and restart
//! state. A reader sees each output once across restarts, zombies and crashes.
//!
//! Which broker proves what: librdkafka's mock cluster and Tansu 0.6 accept transactions
//! but do not hide aborted ones from `read_committed` readers (see [`isolation`]), and only
//! Tansu fences an older producer. So a graceful restart runs on the mock cluster, the
//! zombie on Tansu, and the SIGKILL on Tansu, read by a reader that applies the log's
//! transaction markers itself ([`common::committed`]) — or on the broker given in
//! `RIVULET_TEST_TXN_BROKERS` (Apache Kafka, which hides aborted transactions itself).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::JobProcess;
use common::kafka::{Read, TestBroker, produce, read_until, unique};
use common::tansu::{Storage, Tansu};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const T0: i64 = 1_700_000_000_000;
const STATUSES: [&str; 5] = ["NEW", "PENDING", "SHIPPED", "DELIVERED", "CANCELLED"];
const WINDOW: i64 = 10_000;
const PARTITIONS: i32 = 3;

/// The topics of one run.
struct Topics {
    name: String,
    orders: String,
    counts: String,
    dlq: String,
    late: String,
}

impl Topics {
    fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        Topics {
            orders: format!("{name}-orders"),
            counts: format!("{name}-counts"),
            dlq: format!("{name}-dlq"),
            late: format!("{name}-late"),
            name,
        }
    }

    fn create(&self, broker: &TestBroker) {
        broker.topic(&self.orders, PARTITIONS);
        for topic in [&self.counts, &self.dlq, &self.late] {
            broker.topic(topic, 1);
        }
    }

    /// An exactly-once job counting orders per status in 10 s event-time windows.
    fn spec(&self, dir: &std::path::Path, assign: &str) -> std::path::PathBuf {
        self.spec_exchanging(dir, assign, "local")
    }

    /// The same job, its windows exchanged as `exchange` says (`kafka`: two stages over
    /// the job's partials topic).
    fn spec_exchanging(
        &self,
        dir: &std::path::Path,
        assign: &str,
        exchange: &str,
    ) -> std::path::PathBuf {
        let path = dir.join(format!("{}.toml", self.name));
        std::fs::write(
            &path,
            format!(
                r#"
name = "{name}"
delivery = "exactly-once"
parallelism = 1
[source]
kind = "kafka"
topic = "{orders}"
group = "{name}"
assign = "{assign}"
[window]
key = "status"
size = "10s"
time = "event"
timestamp = "tsMillis"
idle_timeout = "600s"
late_topic = "{late}"
exchange = "{exchange}"
[aggregate]
builtin = [{{ name = "order_count", fn = "count" }}]
[sink]
kind = "kafka"
topic = "{counts}"
[dead_letters]
topic = "{dlq}"
[batch]
max_records = 64
max_wait = "20ms"
"#,
                name = self.name,
                orders = self.orders,
                counts = self.counts,
                dlq = self.dlq,
                late = self.late,
                exchange = exchange,
            ),
        )
        .unwrap();
        path
    }
}

fn order(p: i32, i: i64, ts: i64, status: &str) -> Vec<u8> {
    format!(r#"{{"customer":"c-{p}-{i}","status":"{status}","amount":1,"tsMillis":{ts}}}"#)
        .into_bytes()
}

type Record = (i32, String, Vec<u8>);

/// What a run is fed, in parts, and what must come out of it, computed here.
#[derive(Default)]
struct Truth {
    parts: Vec<Vec<Record>>,
    /// Order count per (window start, status) of every window that closes.
    counts: BTreeMap<(i64, String), u64>,
    /// Payloads of the records no parse accepts.
    bad: Vec<Vec<u8>>,
    /// Payloads of the records later than their window.
    late: Vec<Vec<u8>>,
}

impl Truth {
    /// `per_part` orders per partition in each of `parts` parts, 100 ms of event time
    /// apart; every 97th is not JSON. The last part ends each partition with an order an
    /// hour later (closing every window before it) and one for the first window (late).
    fn orders(parts: usize, per_part: i64) -> Self {
        let mut truth = Truth {
            parts: vec![Vec::new(); parts],
            ..Truth::default()
        };
        for p in 0..PARTITIONS {
            for i in 0..per_part * parts as i64 {
                let part = (i / per_part) as usize;
                let key = format!("k{p}");
                if i % 97 == 13 {
                    let bad = format!("not json {p}-{i}").into_bytes();
                    truth.bad.push(bad.clone());
                    truth.parts[part].push((p, key, bad));
                    continue;
                }
                let ts = T0 + i * 100;
                let status = STATUSES[((i * 7 + i64::from(p)) % 5) as usize];
                truth.parts[part].push((p, key, order(p, i, ts, status)));
                *truth
                    .counts
                    .entry((ts - ts.rem_euclid(WINDOW), status.to_owned()))
                    .or_default() += 1;
            }
            let last = truth.parts.last_mut().unwrap();
            last.push((p, format!("k{p}"), order(p, -1, T0 + 3_600_000, "NEW")));
            let late = order(p, -2, T0 + 1, "LATE");
            truth.late.push(late.clone());
            last.push((p, format!("k{p}"), late));
        }
        truth
    }

    fn done(&self, counts: &[Read], dlq: &[Read], late: &[Read]) -> bool {
        let got = window_counts(counts);
        self.counts.keys().all(|k| got.contains_key(k))
            && dlq.len() >= self.bad.len()
            && late.len() >= self.late.len()
    }

    /// Each window result, dead letter and late record exactly once.
    fn check(&self, counts: &[Read], dlq: &[Read], late: &[Read]) {
        let got = window_counts(counts);
        for (key, n) in &self.counts {
            let seen = got
                .get(key)
                .unwrap_or_else(|| panic!("window result {key:?} lost"));
            assert_eq!(seen, &vec![*n], "{key:?}: expected {n} once");
        }
        assert_eq!(
            got.len(),
            self.counts.len(),
            "a result for no window: {got:?}"
        );
        assert_eq!(sorted(dlq), sorted_bytes(&self.bad), "dead letters");
        assert_eq!(sorted(late), sorted_bytes(&self.late), "late records");
    }
}

fn sorted(records: &[Read]) -> Vec<Vec<u8>> {
    let mut payloads: Vec<Vec<u8>> = records.iter().map(|r| r.payload.clone()).collect();
    payloads.sort();
    payloads
}

fn sorted_bytes(payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut payloads = payloads.to_vec();
    payloads.sort();
    payloads
}

/// Order counts per (window start, status), as read (a repeated result shows twice).
fn window_counts(records: &[Read]) -> BTreeMap<(i64, String), Vec<u64>> {
    let mut out: BTreeMap<(i64, String), Vec<u64>> = BTreeMap::new();
    for r in records {
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        let start = v["window_start"]
            .as_i64()
            .or_else(|| v["window_start"].as_str().and_then(chrono_millis))
            .unwrap_or_else(|| panic!("window_start in {v}"));
        out.entry((start, v["status"].as_str().unwrap().to_owned()))
            .or_default()
            .push(v["order_count"].as_u64().unwrap());
    }
    out
}

/// Milliseconds of an ISO-8601 UTC time `rivulet_sdk::time::iso8601` wrote.
fn chrono_millis(text: &str) -> Option<i64> {
    (T0 - 86_400_000..T0 + 86_400_000)
        .step_by(WINDOW as usize)
        .find(|&ms| rivulet_sdk::time::iso8601(ms) == text)
}

/// Reads the three outputs (`read_committed`, as a downstream consumer would) until the
/// truth is complete, then one more second.
fn outputs(address: &str, topics: &Topics, truth: &Truth) -> (Vec<Read>, Vec<Read>, Vec<Read>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let read = |topic: &str| read_until(address, topic, 1, Duration::from_secs(3), |_| false);
        let (counts, dlq, late) = (read(&topics.counts), read(&topics.dlq), read(&topics.late));
        if truth.done(&counts, &dlq, &late) || Instant::now() >= deadline {
            return (counts, dlq, late);
        }
    }
}

/// Options to run a job in this process against `address`, as instance `0`, until `stop`.
fn in_process(
    address: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> rivulet::assemble::RunOptions {
    use rivulet::udf::{ModuleCache, Runtime};
    rivulet::assemble::RunOptions {
        brokers: Some(address.to_owned()),
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop,
        connect_timeout: Some(Duration::from_secs(30)),
        commit_every: Duration::from_secs(1),
        swappable: false,
        instance: "0".into(),
    }
}

/// A `rivulet run` of `spec` as `instance`, its stderr lines collected.
fn spawn(spec: &std::path::Path, brokers: &str, instance: &str) -> (JobProcess, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rivulet"))
        .args(["run", spec.to_str().unwrap(), "--brokers", brokers])
        .args(["--instance", instance, "--control", "off"])
        .env(
            "RUST_LOG",
            std::env::var("TEST_RUST_LOG").unwrap_or("info".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rivulet");
    let stderr = child.stderr.take().unwrap();
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("  [job] {line}");
            let _ = lines.send(line);
        }
    });
    (JobProcess(child), said)
}

/// Waits for a line containing `text`; returns it.
fn said(lines: &Receiver<String>, text: &str, within: Duration) -> String {
    said_with(lines, text, within).pop().unwrap_or_default()
}

/// Waits for a line containing `text`; returns every line until it, it last.
fn said_with(lines: &Receiver<String>, text: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(text);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("no line with {text:?} within {within:?}"),
        }
    }
}

/// Asks the job to stop (SIGTERM) and waits for it: it commits what it did first.
fn stop(job: &mut JobProcess) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &job.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    job.wait().unwrap()
}

#[test]
fn a_graceful_restart_writes_each_window_result_dead_letter_and_late_record_once() {
    let broker = TestBroker::embedded();
    let topics = Topics::new("eos-restart");
    let dir = tempfile::tempdir().unwrap();
    let spec = topics.spec(dir.path(), "all");
    restart_gracefully(&broker, &topics, &spec);
}

#[test]
fn a_graceful_restart_over_the_partials_topic_writes_each_window_result_dead_letter_and_late_record_once()
 {
    let broker = TestBroker::embedded();
    let topics = Topics::new("eos-exchange");
    let dir = tempfile::tempdir().unwrap();
    let spec = topics.spec_exchanging(dir.path(), "group", "kafka");
    restart_gracefully(&broker, &topics, &spec);
}

/// Runs `spec` over half the orders, stops it (SIGTERM) mid-run, runs it again over the
/// rest, and checks that every output came out once.
fn restart_gracefully(broker: &TestBroker, topics: &Topics, spec: &std::path::Path) {
    let address = broker.address();
    topics.create(broker);
    let spec = spec.to_owned();
    let truth = Truth::orders(2, 600);
    produce(&address, &topics.orders, &truth.parts[0]);

    let (mut job, _lines) = spawn(&spec, &address, "0");
    // Mid-run: some windows out, others open, their records committed as still needed.
    let early = read_until(&address, &topics.counts, 1, Duration::from_secs(60), |r| {
        r.len() >= 5
    });
    assert!(!early.is_empty(), "results before the stop");
    assert!(stop(&mut job).success());

    produce(&address, &topics.orders, &truth.parts[1]);
    let (mut job, _lines) = spawn(&spec, &address, "0");
    let (counts, dlq, late) = outputs(&address, topics, &truth);
    assert!(stop(&mut job).success());
    truth.check(&counts, &dlq, &late);
}

#[test]
fn what_a_task_sends_while_its_commit_is_in_flight_goes_into_the_next_commit_to_the_last_window() {
    use rivulet::task::Job;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let broker = TestBroker::embedded();
    let TestBroker::Embedded(embedded) = &broker else {
        unreachable!("an embedded broker")
    };
    let address = broker.address();
    let topics = Topics::new("eos-overlap");
    topics.create(&broker);
    let dir = tempfile::tempdir().unwrap();
    // A commit after every batch, each slowed by the broker: one is always in flight, the
    // last one too when the end of the input fires the remaining windows.
    let path = topics.spec(dir.path(), "all");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace(
            "delivery = \"exactly-once\"",
            "delivery = \"exactly-once\"\ncommit_interval = \"1ms\"",
        )
        .replace("[source]\n", "[source]\nbounded = true\n");
    std::fs::write(&path, text).unwrap();
    let spec = rivulet::spec::PipelineSpec::load(&path).unwrap();
    let mut truth = Truth::orders(1, 600);
    // The end of the input fires the window of each partition's order an hour later too.
    // Read at once, the orders of one partition may pass the others': which records are
    // late is not for this test to say, so there are none.
    let late = std::mem::take(&mut truth.late);
    truth.parts[0].retain(|(_, _, payload)| !late.contains(payload));
    truth.counts.insert(
        (T0 + 3_600_000, "NEW".to_owned()),
        u64::from(PARTITIONS as u32),
    );
    produce(&address, &topics.orders, &truth.parts[0]);
    embedded.round_trip(Duration::from_millis(20)).unwrap();
    let options = in_process(&address, Arc::new(AtomicBool::new(false)));
    Job::from_spec(&spec, &options).unwrap().run().unwrap();
    embedded.round_trip(Duration::ZERO).unwrap();
    let (counts, dlq, late) = outputs(&address, &topics, &truth);
    truth.check(&counts, &dlq, &late);
}

#[test]
fn a_zombie_with_the_same_task_identity_is_fenced_and_nothing_is_written_twice() {
    // The mock cluster does not fence an older producer; Tansu does.
    let Some(tansu) = Tansu::start(Storage::Memory) else {
        return;
    };
    let address = tansu.address();
    let broker = TestBroker::External(address.clone());
    let topics = Topics::new("eos-zombie");
    topics.create(&broker);
    let dir = tempfile::tempdir().unwrap();
    let spec = topics.spec(dir.path(), "all");
    let truth = Truth::orders(2, 300);
    produce(&address, &topics.orders, &truth.parts[0]);

    let (mut older, older_lines) = spawn(&spec, &address, "z");
    said(
        &older_lines,
        "transactional producer ready",
        Duration::from_secs(60),
    );
    read_until(&address, &topics.counts, 1, Duration::from_secs(60), |r| {
        r.len() >= 5
    });
    // The older process is idle, everything it read committed; then a second one starts
    // with the same identity (a restart while the first still runs).
    std::thread::sleep(Duration::from_secs(1));
    let (mut newer, newer_lines) = spawn(&spec, &address, "z");
    said(
        &newer_lines,
        "transactional producer ready",
        Duration::from_secs(60),
    );
    produce(&address, &topics.orders, &truth.parts[1]);

    // The older one, writing again, finds itself fenced: one line, and it stops cleanly.
    let mut older_said = said_with(&older_lines, "this task stops", Duration::from_secs(60));
    let line = older_said.last().cloned().unwrap_or_default();
    assert!(
        line.contains("fenced") && line.contains("rivulet.") && line.contains(".z.task-0"),
        "{line}"
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = older.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the fenced process stops"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a fenced process ends cleanly: {status}");
    older_said.extend(older_lines.try_iter());
    let fenced: Vec<&String> = older_said
        .iter()
        .filter(|l| l.to_lowercase().contains("fenc"))
        .collect();
    assert_eq!(fenced, vec![&line], "one line says it");

    let (counts, dlq, late) = outputs(&address, &topics, &truth);
    assert!(stop(&mut newer).success());
    truth.check(&counts, &dlq, &late);
}

/// How a `read_committed` reader is shielded from aborted transactions on a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// The broker hides them (Apache Kafka): any client's `read_committed` is right.
    Broker,
    /// The broker shows them, but its log has each transaction's COMMIT or ABORT marker:
    /// [`common::committed`] applies them (Tansu 0.6).
    Markers,
}

/// Which [`Isolation`] the broker at `address` gives: a transaction aborted, then one
/// committed, read back both ways. Err: neither reader gets it right.
fn isolation(address: &str) -> Result<Isolation, String> {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let topic = unique("eos-probe");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("transactional.id", &topic)
        .create()
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(20);
    producer
        .init_transactions(timeout)
        .map_err(|e| e.to_string())?;
    for (payload, commit) in [(&b"aborted"[..], false), (&b"committed"[..], true)] {
        producer.begin_transaction().map_err(|e| e.to_string())?;
        producer
            .send(
                BaseRecord::<(), [u8]>::to(&topic)
                    .partition(0)
                    .payload(payload),
            )
            .map_err(|(e, _)| e.to_string())?;
        producer.flush(timeout).map_err(|e| e.to_string())?;
        match commit {
            true => producer.commit_transaction(timeout),
            false => producer.abort_transaction(timeout),
        }
        .map_err(|e| e.to_string())?;
    }
    let read = read_until(address, &topic, 1, Duration::from_secs(10), |r| {
        r.iter().any(|r| r.payload == b"committed")
    });
    if !read.iter().any(|r| r.payload == b"aborted") {
        return Ok(Isolation::Broker);
    }
    let payloads: Vec<Vec<u8>> = common::committed::committed(address, &topic, 0)
        .into_iter()
        .map(|r| r.payload)
        .collect();
    match payloads == vec![b"committed".to_vec()] {
        true => Ok(Isolation::Markers),
        false => Err(format!(
            "a read_committed reader sees an aborted transaction's record, and the log's markers give {payloads:?}"
        )),
    }
}

/// The broker the crash test needs: `RIVULET_TEST_TXN_BROKERS` (Apache Kafka), else Tansu,
/// with how its readers are shielded from aborted transactions.
fn transactional_broker() -> Option<(String, Option<Tansu>, Isolation)> {
    if let Ok(address) = std::env::var("RIVULET_TEST_TXN_BROKERS") {
        match isolation(&address) {
            Ok(isolation) => return Some((address, None, isolation)),
            Err(reason) => panic!("RIVULET_TEST_TXN_BROKERS={address}: {reason}"),
        }
    }
    let tansu = Tansu::start(Storage::Memory)?;
    match isolation(&tansu.address()) {
        Ok(isolation) => Some((tansu.address(), Some(tansu), isolation)),
        Err(reason) => panic!("Tansu: {reason}"),
    }
}

/// [`outputs`], read as `isolation` says.
fn outputs_isolated(
    address: &str,
    topics: &Topics,
    truth: &Truth,
    isolation: Isolation,
) -> (Vec<Read>, Vec<Read>, Vec<Read>) {
    if isolation == Isolation::Broker {
        return outputs(address, topics, truth);
    }
    let read = || {
        let read = |topic: &str| common::committed::committed(address, topic, 0);
        (read(&topics.counts), read(&topics.dlq), read(&topics.late))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (counts, dlq, late) = read();
        if truth.done(&counts, &dlq, &late) || Instant::now() >= deadline {
            // Then what came after, if anything.
            std::thread::sleep(Duration::from_secs(2));
            return read();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_marker_reader_keeps_a_committed_transaction_and_drops_an_aborted_one_on_tansu() {
    // Tansu shows aborted records to every client; the crash test's reader must not.
    // (librdkafka's mock cluster writes no markers at all: no reader can tell there.)
    let Some(tansu) = Tansu::start(Storage::Memory) else {
        return;
    };
    let isolation = isolation(&tansu.address()).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(isolation, Isolation::Markers);
}

#[test]
fn sigkill_of_either_process_five_times_and_a_read_committed_reader_sees_each_output_once() {
    let Some((address, _tansu, isolation)) = transactional_broker() else {
        return;
    };
    let broker = TestBroker::External(address.clone());
    let topics = Topics::new("eos-kill");
    topics.create(&broker);
    let dir = tempfile::tempdir().unwrap();
    // Two processes share the partitions through the consumer group; every status is in
    // every partition, so their windows meet over the job's partials topic.
    let spec = topics.spec_exchanging(dir.path(), "group", "kafka");
    let truth = Truth::orders(6, 5_556);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut random = move |below: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % below
    };
    let mut jobs = vec![spawn(&spec, &address, "a").0, spawn(&spec, &address, "b").0];
    for part in &truth.parts[..5] {
        produce(&address, &topics.orders, part);
        std::thread::sleep(Duration::from_millis(random(1000)));
        let victim = random(2) as usize;
        jobs[victim].kill().unwrap();
        jobs[victim].wait().unwrap();
        jobs[victim] = spawn(&spec, &address, ["a", "b"][victim]).0;
    }
    produce(&address, &topics.orders, &truth.parts[5]);
    let (counts, dlq, late) = outputs_isolated(&address, &topics, &truth, isolation);
    for job in &mut jobs {
        stop(job);
    }
    truth.check(&counts, &dlq, &late);
}

#[test]
fn a_broker_stopped_ten_seconds_mid_run_and_restarted_and_a_read_committed_reader_sees_each_output_once()
 {
    // Tansu's S3 storage keeps the log through the restart and takes transactions (its
    // sqlite storage times them out). When the outage fails a commit, the job restarts
    // from its committed state: the restart state pinned by the committed offsets, not the
    // newer records of the aborted transaction, which this broker shows to every reader.
    let Some(mut tansu) = Tansu::start(Storage::ObjectStore) else {
        return;
    };
    let address = tansu.address();
    let isolation = isolation(&address).unwrap_or_else(|err| panic!("Tansu (S3): {err}"));
    let broker = TestBroker::External(address.clone());
    let topics = Topics::new("eos-outage");
    topics.create(&broker);
    let dir = tempfile::tempdir().unwrap();
    let spec = topics.spec(dir.path(), "all");
    let truth = Truth::orders(3, 2_000);
    produce(&address, &topics.orders, &truth.parts[0]);
    let (mut job, _lines) = spawn(&spec, &address, "0");
    read_until(&address, &topics.counts, 1, Duration::from_secs(60), |r| {
        !r.is_empty()
    });
    produce(&address, &topics.orders, &truth.parts[1]);
    tansu.stop();
    std::thread::sleep(Duration::from_secs(10));
    tansu.restart();
    produce(&address, &topics.orders, &truth.parts[2]);
    let (counts, dlq, late) = outputs_isolated(&address, &topics, &truth, isolation);
    assert!(
        job.try_wait().unwrap().is_none(),
        "the job kept running through the outage"
    );
    stop(&mut job);
    truth.check(&counts, &dlq, &late);
}

#[test]
fn consume_reads_read_committed_by_default_and_names_the_isolation_levels() {
    let broker = TestBroker::embedded();
    let address = broker.address();
    let topic = unique("eos-consume");
    broker.topic(&topic, 1);
    produce(&address, &topic, &[(0, "k".into(), b"one".to_vec())]);
    let consume = |isolation: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rivulet"));
        command.args(["consume", &topic, "--brokers", &address, "--from-beginning"]);
        command.args(["--timeout", "2s"]).env("RUST_LOG", "warn");
        if let Some(isolation) = isolation {
            command.args(["--isolation", isolation]);
        }
        command.output().unwrap()
    };
    for isolation in [None, Some("read-committed"), Some("read-uncommitted")] {
        let out = consume(isolation);
        assert!(out.status.success(), "{isolation:?}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "one\n",
            "{isolation:?}"
        );
    }
    let out = consume(Some("committed"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid value 'committed' for '--isolation <ISOLATION>'")
            && err.contains("[possible values: read-committed, read-uncommitted]"),
        "{err}"
    );
}

#[test]
fn a_commit_the_broker_refuses_is_aborted_and_the_restarted_job_loses_nothing() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rivulet::task::Job;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let broker = TestBroker::embedded();
    let TestBroker::Embedded(embedded) = &broker else {
        unreachable!("an embedded broker")
    };
    let address = broker.address();
    let topics = Topics::new("eos-abort");
    topics.create(&broker);
    let dir = tempfile::tempdir().unwrap();
    let spec = rivulet::spec::PipelineSpec::load(&topics.spec(dir.path(), "all")).unwrap();
    let truth = Truth::orders(2, 600);
    let options = |stop: Arc<AtomicBool>| in_process(&address, stop);
    produce(&address, &topics.orders, &truth.parts[0]);
    let mut job = Job::from_spec(&spec, &options(Arc::new(AtomicBool::new(false)))).unwrap();
    let running = std::thread::spawn(move || job.run());
    read_until(&address, &topics.counts, 1, Duration::from_secs(60), |r| {
        !r.is_empty()
    });
    // The broker refuses the next commit (an error the producer cannot retry).
    embedded.fail_next(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN],
    );
    produce(&address, &topics.orders, &truth.parts[1][..30]);
    let err = running.join().unwrap().unwrap_err();
    let text = err.to_string();
    let id = format!("rivulet.{}.0.task-0", topics.name);
    assert!(
        text.starts_with(&format!("transaction `{id}`: committing failed: "))
            && text.ends_with("; aborted"),
        "{text}"
    );
    // `rivulet run` restarts a job after such a failure, from its committed state.
    assert!(err.is_kafka_failure());

    produce(&address, &topics.orders, &truth.parts[1][30..]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut job = Job::from_spec(&spec, &options(stop.clone())).unwrap();
    let running = std::thread::spawn(move || job.run());
    let (counts, dlq, late) = outputs(&address, &topics, &truth);
    stop.store(true, Ordering::Relaxed);
    running.join().unwrap().unwrap();
    // This broker shows aborted transactions to every reader: what the aborted one wrote is
    // visible, so results may repeat here; none is lost, and each is whole.
    let got = window_counts(&counts);
    for (key, n) in &truth.counts {
        let seen = got.get(key).unwrap_or_else(|| panic!("{key:?} lost"));
        assert!(
            seen.iter().all(|c| c == n),
            "{key:?}: {seen:?}, expected {n}"
        );
    }
    assert!(dlq.len() >= truth.bad.len() && late.len() >= truth.late.len());
}

#[test]
fn a_restore_takes_the_restart_state_the_last_commit_pinned_not_a_newer_one_of_an_aborted_transaction()
 {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rivulet::delivery::{PartitionState, Transaction};
    use rivulet::kafka::KafkaConfig;
    use rivulet::kafka::state_topic::StateTopic;
    use rivulet::source::kafka::{KafkaSource, SourceOptions};
    use rivulet::spec::{AssignMode, StartAt};
    use std::sync::atomic::AtomicBool;

    // Tansu shows aborted records to `read_committed` readers (the embedded broker does
    // too, but it never commits a transaction's offsets).
    let Some(tansu) = Tansu::start(Storage::Memory) else {
        return;
    };
    let address = tansu.address();
    let topic = unique("eos-pin");
    TestBroker::External(address.clone()).topic(&topic, 2);
    let config = KafkaConfig::new(address.as_str());
    let group = format!("{topic}-group");
    let options = SourceOptions {
        topic: topic.clone(),
        group: group.clone(),
        start: StartAt::Committed,
        assign: AssignMode::All,
        bounded: false,
        connect_timeout: Some(Duration::from_secs(30)),
        share: (0, 1),
        cooperative: false,
        exactly_once: true,
    };
    let stop = AtomicBool::new(false);
    let source = KafkaSource::open(&config, &options, &stop).unwrap();
    let state_topic = source.state_topic().unwrap().to_owned();
    let state = |committed: i64, read: i64| PartitionState {
        committed,
        read,
        watermark: Some(read * 100),
        combined: Some(read * 100),
    };
    // A commit of both partitions' restart state, with their offsets.
    let committed = BTreeMap::from([(0, state(10, 20)), (1, state(5, 7))]);
    let mut transaction = Transaction::open(
        &config,
        &format!("{topic}-task"),
        Some(&state_topic),
        Duration::from_millis(100),
    )
    .unwrap();
    let commit = source.transactional_commit(&committed).unwrap();
    transaction
        .start_commit(
            Some((commit.offsets, commit.group.unwrap())),
            commit.states,
            None,
        )
        .unwrap();
    transaction.settle().unwrap();
    // A later transaction moved partition 0 on — with the same committed offset: an open
    // window still needs offset 10 — and was aborted.
    let zombie: BaseProducer = KafkaConfig::new(address.as_str())
        .client()
        .set("transactional.id", format!("{topic}-other"))
        .create()
        .unwrap();
    let timeout = Duration::from_secs(20);
    zombie.init_transactions(timeout).unwrap();
    zombie.begin_transaction().unwrap();
    let key = format!("{topic}/0");
    let aborted = state(10, 50).encode();
    zombie
        .send(
            BaseRecord::to(&state_topic)
                .partition(0)
                .key(key.as_str())
                .payload(aborted.as_str()),
        )
        .unwrap();
    zombie.flush(timeout).unwrap();
    zombie.abort_transaction(timeout).unwrap();
    // This broker shows the aborted record: it is the newest state of partition 0 found.
    let newest = StateTopic::open(&config, &group, None)
        .unwrap()
        .read(&topic, &[0, 1])
        .unwrap();
    assert_eq!(newest.get(&0), Some(&state(10, 50)), "{newest:?}");
    drop(source);

    let restarted = KafkaSource::open(&config, &options, &stop).unwrap();
    assert_eq!(restarted.assignment().states, committed);
    assert_eq!(restarted.positions(), &BTreeMap::from([(0, 10), (1, 5)]));
    // Windows closed for every partition: by the committed states (the aborted one had
    // closed up to 5000).
    assert_eq!(restarted.assignment().job_closed, Some(2000));
}
