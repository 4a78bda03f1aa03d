//! Shadow swap in a running job: a candidate runs beside the live module on a copy of its
//! input, the diff shows exactly what it would change, its output reaches no sink, a
//! trapping shadow is dropped without touching the live job, and promote installs it as a
//! normal swap with nothing lost.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use crate::common;

use common::job::{Running, lines, module, producer, send, send_to, start};
use common::kafka::{TestBroker, read_until};
use common::wasm;
use rdkafka::producer::{BaseProducer, Producer};
use rivulet::shadow::{Bound, Report, State};
use rivulet::swap::{ShadowAsk, SwapRequest};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

const T0: i64 = 1_700_000_000_000;

impl Running {
    fn shadow(&self, stage: &str, name: &str, bound: Bound) -> Result<Report, String> {
        let (reply, answer) = channel();
        self.swaps
            .send(SwapRequest {
                stage: stage.into(),
                bytes: module(name),
                origin: format!("test:{name}"),
                reply: None,
                fleet: None,
                shadow: Some(ShadowAsk { bound, reply }),
            })
            .unwrap();
        answer.recv_timeout(Duration::from_secs(60)).unwrap()
    }

    fn report(&self, stage: &str) -> Report {
        self.status
            .shadows
            .reports()
            .into_iter()
            .find(|r| r.stage == stage)
            .unwrap_or_else(|| panic!("no shadow of {stage}"))
    }

    /// Waits until the shadow's report satisfies `done` (it is a test failure after 60 s).
    fn wait_report(&self, stage: &str, what: &str, done: impl Fn(&Report) -> bool) -> Report {
        let started = Instant::now();
        loop {
            let report = self.report(stage);
            if done(&report) {
                return report;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "waiting for {what}: {report:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn parse_spec(out: &Path, dead: &Path) -> String {
    format!(
        r#"
name = "shadows"
[source]
kind = "kafka"
topic = "orders"
assign = "all"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[sink]
kind = "file"
path = "{}"
[dead_letters]
path = "{}"
[batch]
max_records = 25
max_wait = "10ms"
"#,
        wasm("shadow_parse_v1").display(),
        out.display(),
        dead.display()
    )
}

/// Sends orders `0..n` with status `warm` and waits until the job has read them: the swap
/// checks try a candidate on the stage's recent input.
fn warm_up(job: &Running, producer: &BaseProducer, n: usize) {
    for id in 0..n {
        send(
            producer,
            "orders",
            &format!(r#"{{"id":{id},"status":"warm"}}"#),
            None,
        );
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    job.wait_records(n as u64);
}

const STATUSES: [&str; 5] = ["SHIPPED", "pending", "Open", "done", "NEW"];

fn status_of(id: usize) -> &'static str {
    STATUSES[id % STATUSES.len()]
}

#[test]
fn a_parse_shadow_that_lower_cases_status_shows_exactly_the_changed_rows_and_reaches_no_sink() {
    let broker = TestBroker::embedded();
    broker.topic("orders", 1);
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let job = start(&parse_spec(&out, &dead), &broker.address(), dir.path());
    let producer = producer(&broker.address());
    warm_up(&job, &producer, WARM);

    let report = job
        .shadow(
            "parse",
            "shadow_parse_lower",
            Bound::For(Duration::from_secs(600)),
        )
        .unwrap();
    assert_eq!(
        (report.state, report.kind.as_str()),
        (State::Running, "parse")
    );
    let busy = job
        .shadow(
            "parse",
            "shadow_parse_v1",
            Bound::For(Duration::from_secs(60)),
        )
        .expect_err("one shadow per stage");
    assert!(busy.contains("already has a shadow running"), "{busy}");

    // 300 orders, and 7 records no parser can read (both sides refuse them).
    const N: usize = 300;
    let mut sent = WARM;
    let mut broken = Vec::new();
    for id in 0..N {
        send(
            &producer,
            "orders",
            &format!(r#"{{"id":{id},"status":"{}"}}"#, status_of(id)),
            None,
        );
        sent += 1;
        if id % 45 == 44 {
            send(&producer, "orders", "not json", None);
            broken.push(sent);
            sent += 1;
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let report = job.wait_report("parse", "every record compared", |r| {
        r.records.as_ref().unwrap().compared == (sent - WARM) as u64
    });

    // What lower-casing changes, computed from the input.
    let changed: Vec<usize> = (0..N)
        .filter(|&id| status_of(id).to_lowercase() != status_of(id))
        .collect();
    let records = report.records.as_ref().unwrap();
    assert_eq!(records.changed, changed.len() as u64);
    assert_eq!(
        records.same,
        (N - changed.len() + broken.len()) as u64,
        "unchanged orders and the records both refused"
    );
    assert_eq!((records.only_old, records.only_new), (0, 0));
    assert_eq!(
        records.fields,
        BTreeMap::from([("status".to_owned(), changed.len() as u64)])
    );
    let expected: Vec<(Value, Value)> = changed
        .iter()
        .take(rivulet::shadow::diff::EXAMPLES)
        .map(|&id| {
            (
                json!({"id": id, "status": status_of(id)}),
                json!({"id": id, "status": status_of(id).to_lowercase()}),
            )
        })
        .collect();
    let examples: Vec<(Value, Value)> = records
        .examples
        .iter()
        .map(|e| {
            assert_eq!(
                (e.kind.as_str(), e.fields.as_slice()),
                ("changed", &["status".to_owned()][..])
            );
            (e.old.clone().unwrap(), e.new.clone().unwrap())
        })
        .collect();
    assert_eq!(examples, expected);
    // The first changed order is order 0, the first record after the warm-up.
    assert_eq!(records.examples[0].input, format!("0/{WARM}"));
    let broken_count = broken.len() as u64;
    assert_eq!(
        (report.live.errors, report.shadow.errors),
        (broken_count, broken_count)
    );
    assert_eq!((report.live.traps, report.shadow.traps), (0, 0));
    assert_eq!(report.shadow.inputs, (sent - WARM) as u64);

    let dropped = job
        .status
        .shadows
        .drop_shadow("parse", "dropped on request")
        .unwrap();
    assert_eq!(dropped.state, State::Dropped);
    let rows = lines(&out, WARM + N);
    let dead_letters = lines(&dead, broken.len());
    job.stop();
    // The sink has the live module's rows, each once, status as sent; the dead letters have
    // the broken records once (the shadow refused them too, and sent nothing).
    assert_eq!(rows.len(), WARM + N);
    for (i, row) in rows.iter().skip(WARM).enumerate() {
        assert_eq!(row, &json!({"id": i, "status": status_of(i)}));
    }
    assert_eq!(dead_letters.len(), broken.len(), "{dead_letters:?}");
}

/// A job from `orders` through the parse component `parse` and `stages` (TOML) to the
/// topic `out`, warmed up with [`WARM`] orders, with a shadow of `stage` running
/// `candidate` (for 10 minutes).
struct ToTopic {
    broker: TestBroker,
    _dir: tempfile::TempDir,
    job: Running,
    producer: BaseProducer,
    out: &'static str,
    stage: &'static str,
}

const WARM: usize = 10;

impl ToTopic {
    fn start(
        parse: &str,
        stages: &str,
        out: &'static str,
        stage: &'static str,
        candidate: &str,
    ) -> Self {
        let broker = TestBroker::embedded();
        broker.topic("orders", 1);
        broker.topic(out, 1);
        let spec = format!(
            r#"
name = "{stage}-shadows"
[source]
kind = "kafka"
topic = "orders"
assign = "all"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
{stages}
[sink]
kind = "kafka"
topic = "{out}"
[batch]
max_records = 25
max_wait = "10ms"
"#,
            wasm(parse).display(),
        );
        let dir = tempfile::tempdir().unwrap();
        let job = start(&spec, &broker.address(), dir.path());
        let producer = producer(&broker.address());
        warm_up(&job, &producer, WARM);
        let report = job
            .shadow(stage, candidate, Bound::For(Duration::from_secs(600)))
            .unwrap();
        assert_eq!(
            (report.state, report.kind.as_str()),
            (State::Running, stage)
        );
        ToTopic {
            broker,
            _dir: dir,
            job,
            producer,
            out,
            stage,
        }
    }

    /// Drops the shadow, stops the job, and reads back what reached the topic.
    fn stop(self) -> Vec<common::kafka::Read> {
        self.job
            .status
            .shadows
            .drop_shadow(self.stage, "dropped on request")
            .unwrap();
        self.job.stop();
        read_until(
            &self.broker.address(),
            self.out,
            1,
            Duration::from_secs(5),
            |_| false,
        )
    }
}

#[test]
fn a_map_shadow_that_adds_a_thousand_shows_every_row_changed_in_exactly_those_fields() {
    let stages = format!(
        "[[stages]]\nname = \"map\"\nkind = \"map\"\nmodule = \"{}\"",
        wasm("swap_map_v1").display()
    );
    let run = ToTopic::start("swap_parse_v1", &stages, "mapped", "map", "swap_map_v2");
    let (job, producer) = (&run.job, &run.producer);

    const N: usize = 120;
    for id in WARM..WARM + N {
        send(producer, "orders", &format!(r#"{{"id":{id}}}"#), None);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let report = job.wait_report("map", "every row compared", |r| {
        r.records.as_ref().unwrap().compared == N as u64
    });
    // v1 maps value2 = value (= id) and tags `v1`; v2 adds 1000 and tags `v2`: every row
    // changes in those two fields and no other.
    let records = report.records.as_ref().unwrap();
    assert_eq!(
        (
            records.changed,
            records.same,
            records.only_old,
            records.only_new
        ),
        (N as u64, 0, 0, 0)
    );
    assert_eq!(
        records.fields,
        BTreeMap::from([
            ("mapped_by".to_owned(), N as u64),
            ("value2".to_owned(), N as u64)
        ])
    );
    let row = |id: usize, variant: &str, value2: usize| json!({"id": id, "parsed_by": "v1", "value": id, "mapped_by": variant, "value2": value2});
    let examples: Vec<(Value, Value)> = records
        .examples
        .iter()
        .map(|e| {
            let mut fields = e.fields.clone();
            fields.sort();
            assert_eq!(
                (e.kind.as_str(), fields),
                ("changed", vec!["mapped_by".to_owned(), "value2".to_owned()])
            );
            (e.old.clone().unwrap(), e.new.clone().unwrap())
        })
        .collect();
    let expected: Vec<(Value, Value)> = (WARM..WARM + rivulet::shadow::diff::EXAMPLES)
        .map(|id| (row(id, "v1", id), row(id, "v2", id + 1000)))
        .collect();
    assert_eq!(examples, expected);
    assert_eq!(records.examples[0].input, "row 0");
    assert_eq!((report.live.errors, report.shadow.errors), (0, 0));

    // The topic has the live module's rows only, each once.
    let records = run.stop();
    let rows: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect();
    let want: Vec<Value> = (0..WARM + N).map(|id| row(id, "v1", id)).collect();
    assert_eq!(rows, want);
}

#[test]
fn a_format_shadow_that_rekeys_shows_the_changed_keys_and_value_fields_and_reaches_no_topic() {
    let stages = format!(
        "[format]\nmodule = \"{}\"",
        wasm("shadow_format_v1").display()
    );
    let run = ToTopic::start(
        "shadow_parse_v1",
        &stages,
        "formatted",
        "format",
        "shadow_format_keyed",
    );
    let (job, producer) = (&run.job, &run.producer);

    const N: usize = 200;
    for id in WARM..WARM + N {
        let order = format!(r#"{{"id":{id},"status":"{}"}}"#, status_of(id));
        send(producer, "orders", &order, None);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let report = job.wait_report("format", "every record compared", |r| {
        r.records.as_ref().unwrap().compared == N as u64
    });
    // `keyed` keys by the upper-cased status (a change where the status isn't upper case)
    // and flags every order whose id is a multiple of 4.
    let ids = WARM..WARM + N;
    let rekeyed = |id: usize| status_of(id).to_uppercase() != status_of(id);
    let flagged = |id: usize| id.is_multiple_of(4);
    let changed: Vec<usize> = ids
        .clone()
        .filter(|&id| rekeyed(id) || flagged(id))
        .collect();
    let records = report.records.as_ref().unwrap();
    assert_eq!(
        (
            records.changed,
            records.same,
            records.only_old,
            records.only_new
        ),
        (changed.len() as u64, (N - changed.len()) as u64, 0, 0)
    );
    assert_eq!(
        records.fields,
        BTreeMap::from([
            (
                "key".to_owned(),
                ids.clone().filter(|&id| rekeyed(id)).count() as u64
            ),
            (
                "value.flag".to_owned(),
                ids.clone().filter(|&id| flagged(id)).count() as u64
            ),
        ])
    );
    let record = |id: usize, key: String, flag: bool| {
        let mut value = json!({"id": id, "status": status_of(id)});
        if flag {
            value["flag"] = json!(true);
        }
        json!({"key": key, "value": value})
    };
    let examples: Vec<(Value, Value)> = records
        .examples
        .iter()
        .map(|e| (e.old.clone().unwrap(), e.new.clone().unwrap()))
        .collect();
    let expected: Vec<(Value, Value)> = changed
        .iter()
        .take(rivulet::shadow::diff::EXAMPLES)
        .map(|&id| {
            (
                record(id, status_of(id).to_owned(), false),
                record(id, status_of(id).to_uppercase(), flagged(id)),
            )
        })
        .collect();
    assert_eq!(examples, expected);

    // The topic has the live module's records only, each once, keyed by the status as sent.
    let read = run.stop();
    let got: Vec<(String, Value)> = read
        .iter()
        .map(|r| {
            let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
            (key, serde_json::from_slice(&r.payload).unwrap())
        })
        .collect();
    let warm = (0..WARM).map(|id| ("warm".to_owned(), json!({"id": id, "status": "warm"})));
    let want: Vec<(String, Value)> = warm
        .chain((WARM..WARM + N).map(|id| {
            let status = status_of(id);
            (status.to_owned(), json!({"id": id, "status": status}))
        }))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_trapping_shadow_is_dropped_with_the_reason_and_no_live_record_is_lost() {
    let broker = TestBroker::embedded();
    broker.topic("orders", 1);
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let job = start(&parse_spec(&out, &dead), &broker.address(), dir.path());
    let producer = producer(&broker.address());
    warm_up(&job, &producer, 10);
    job.shadow(
        "parse",
        "shadow_parse_trap",
        Bound::For(Duration::from_secs(600)),
    )
    .unwrap();
    // Order 150 is the one the candidate traps on.
    const N: usize = 300;
    for id in 10..N {
        let status = if id == 150 { "BOOM" } else { status_of(id) };
        send(
            &producer,
            "orders",
            &format!(r#"{{"id":{id},"status":"{status}"}}"#),
            None,
        );
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let report = job.wait_report("parse", "the shadow dropped", |r| r.state != State::Running);
    assert_eq!(report.state, State::Dropped);
    let reason = report.reason.clone().unwrap();
    assert!(
        reason.starts_with("the shadow trapped or hit a limit"),
        "{reason}"
    );
    assert_eq!(report.shadow.traps, 1);
    assert_eq!(report.live.traps, 0);
    assert!(
        job.status.shadows.tap("parse").is_none(),
        "nothing is fed to it any more"
    );

    let rows = lines(&out, N);
    job.stop();
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids,
        (0..N as u64).collect::<Vec<_>>(),
        "every record once, in order"
    );
    assert_eq!(rows[150]["status"], "BOOM", "the live module parsed it");
}

#[test]
fn a_windows_bound_on_a_record_stage_and_a_module_of_another_world_are_refused() {
    let broker = TestBroker::embedded();
    broker.topic("orders", 1);
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let job = start(&parse_spec(&out, &dead), &broker.address(), dir.path());
    let err = job
        .shadow("parse", "shadow_parse_lower", Bound::Windows(3))
        .unwrap_err();
    assert_eq!(
        err,
        "--windows counts an aggregate's windows; stage `parse` is a parse stage: use --for"
    );
    let err = job
        .shadow("parse", "shadow_aggregate_v1", Bound::Windows(3))
        .unwrap_err();
    assert!(
        err.contains("implements the aggregate world, but stage `parse` needs the parse world"),
        "{err}"
    );
    assert!(job.status.shadows.reports().is_empty());
    job.stop();
}

/// Sends `counts` orders per status, timestamped in the 10 s window `window` from T0, to
/// the partitions of `orders` in turn (`partitions` of them), and waits until the broker
/// has them; returns how many orders were sent in all (`sent`, also their next id).
fn send_window(
    producer: &BaseProducer,
    partitions: u64,
    sent: &mut u64,
    window: i64,
    counts: &[(&str, u64)],
) -> u64 {
    for (status, n) in counts {
        for _ in 0..*n {
            let payload = format!(r#"{{"id":{sent},"status":"{status}"}}"#);
            let ts = Some(T0 + window * 10_000 + 5_000);
            send_to(
                producer,
                "orders",
                (*sent % partitions) as i32,
                &payload,
                ts,
            );
            *sent += 1;
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    *sent
}

fn aggregate_spec(out: &Path) -> String {
    format!(
        r#"
name = "agg-shadows"
[source]
kind = "kafka"
topic = "orders"
assign = "all"
[[stages]]
name = "parse"
kind = "parse"
module = "{}"
[window]
key = "status"
size = "10s"
time = "event"
timestamp = "kafka"
idle_timeout = "60s"
[aggregate]
module = "{}"
[sink]
kind = "file"
path = "{}"
[batch]
max_records = 25
max_wait = "10ms"
"#,
        wasm("shadow_parse_v1").display(),
        wasm("shadow_aggregate_v1").display(),
        out.display()
    )
}

/// Count per key of each window's result rows in `rows`: window start → key → count.
fn counts(rows: &[Value]) -> BTreeMap<i64, BTreeMap<String, u64>> {
    let mut counts: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    for row in rows {
        let previous = counts
            .entry(row["window_start"].as_i64().unwrap())
            .or_default()
            .insert(
                row["key"].as_str().unwrap().to_owned(),
                row["count"].as_u64().unwrap(),
            );
        assert_eq!(previous, None, "one result per window and key: {rows:?}");
    }
    counts
}

#[test]
fn an_aggregate_shadow_that_doubles_counts_differs_by_the_old_counts_and_promote_takes_over_from_the_next_window()
 {
    let broker = TestBroker::embedded();
    broker.topic("orders", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let job = start(&aggregate_spec(&out), &broker.address(), dir.path());
    let producer = producer(&broker.address());
    let mut sent = 0u64;
    let mut emit =
        |window: i64, counts: &[(&str, u64)]| send_window(&producer, 1, &mut sent, window, counts);
    // Per window (10 s each from T0): the orders per status.
    let plan: [&[(&str, u64)]; 5] = [
        &[("A", 3), ("B", 2)],
        &[("A", 4), ("B", 1), ("C", 2)],
        &[("A", 5), ("B", 6)],
        &[("A", 7), ("C", 1)],
        &[("A", 2), ("B", 3)],
    ];
    emit(0, plan[0]);
    let n = emit(1, plan[1]);
    job.wait_records(n);
    lines(&out, 2); // W0 fired (live only)
    let report = job
        .shadow("aggregate", "shadow_aggregate_double", Bound::Windows(10))
        .unwrap();
    assert_eq!(report.kind, "aggregate");
    emit(2, plan[2]); // W1 fires: open when the shadow started, so partial
    emit(3, plan[3]); // W2 fires: the shadow saw all of it
    let report = job.wait_report("aggregate", "two windows compared", |r| {
        r.windows.as_ref().unwrap().compared >= 2
    });
    let windows = report.windows.as_ref().unwrap();
    assert_eq!(
        (windows.compared, windows.partial, windows.differing),
        (2, 1, 1)
    );
    let w1 = &windows.recent[0];
    assert_eq!((w1.window_start, w1.partial), (T0 + 10_000, true));
    let w2 = &windows.recent[1];
    assert_eq!(
        (w2.window_start, w2.window_end, w2.partial),
        (T0 + 20_000, T0 + 30_000, false)
    );
    // Per key: new − old equals the old count, which is what was sent.
    let diffs: BTreeMap<String, (u64, u64)> = w2
        .keys
        .iter()
        .map(|k| {
            assert_eq!(k.fields, ["count"]);
            let old = k.old.as_ref().unwrap()["count"].as_u64().unwrap();
            let new = k.new.as_ref().unwrap()["count"].as_u64().unwrap();
            (k.key.as_str().unwrap().to_owned(), (old, new - old))
        })
        .collect();
    let sent_w2: BTreeMap<String, (u64, u64)> = plan[2]
        .iter()
        .map(|(s, n)| (s.to_string(), (*n, *n)))
        .collect();
    assert_eq!(diffs, sent_w2);
    assert_eq!((windows.keys, windows.differing_keys), (2, 2));

    let outcome = rivulet::swap::promote(&job.swaps, &job.status, Some("aggregate")).unwrap();
    assert!(
        !outcome.new_generation,
        "same state version: it takes over W3"
    );
    assert_eq!(job.report("aggregate").state, State::Promoted);
    emit(4, plan[4]); // W3 fires, finished by the promoted module
    emit(10, &[("Z", 1)]); // W4 fires
    let rows = lines(&out, 11);
    job.stop();
    let doubled = |w: usize| -> BTreeMap<String, u64> {
        plan[w]
            .iter()
            .map(|(s, n)| (s.to_string(), n * 2))
            .collect()
    };
    let plain = |w: usize| -> BTreeMap<String, u64> {
        plan[w].iter().map(|(s, n)| (s.to_string(), *n)).collect()
    };
    let expected = BTreeMap::from([
        (T0, plain(0)),
        (T0 + 10_000, plain(1)),
        (T0 + 20_000, plain(2)),
        (T0 + 30_000, doubled(3)),
        (T0 + 40_000, doubled(4)),
    ]);
    assert_eq!(
        counts(&rows),
        expected,
        "every window once, the old module's results up to the promote, the new one's after, and nothing from the shadow"
    );
}

#[test]
fn an_aggregate_shadow_over_two_tasks_sees_both_tasks_rows_and_compares_each_window_once() {
    let broker = TestBroker::embedded();
    broker.topic("orders", 2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let spec = aggregate_spec(&out).replace(
        "name = \"agg-shadows\"\n",
        "name = \"agg-shadows\"\nparallelism = 2\n",
    );
    let job = start(&spec, &broker.address(), dir.path());
    let producer = producer(&broker.address());
    let mut sent = 0u64;
    // Every status's orders alternate between the two partitions (so both tasks).
    let mut emit =
        |window: i64, counts: &[(&str, u64)]| send_window(&producer, 2, &mut sent, window, counts);
    let plan: [&[(&str, u64)]; 4] = [
        &[("A", 3), ("B", 2)],
        &[("A", 4), ("B", 1), ("C", 2)],
        &[("A", 5), ("B", 6), ("C", 3)],
        &[("A", 7), ("C", 1)],
    ];
    emit(0, plan[0]);
    let n = emit(1, plan[1]);
    job.wait_records(n);
    lines(&out, 2); // W0 fired (live only)
    job.shadow("aggregate", "shadow_aggregate_double", Bound::Windows(10))
        .unwrap();
    emit(2, plan[2]); // W1 fires: open when the shadow started, so partial
    emit(3, plan[3]); // W2 fires: the shadow saw all of it, from both tasks
    let report = job.wait_report("aggregate", "two windows compared", |r| {
        r.windows.as_ref().unwrap().compared >= 2
    });
    let windows = report.windows.as_ref().unwrap();
    assert_eq!((windows.compared, windows.partial), (2, 1), "{windows:#?}");
    let w2 = &windows.recent[1];
    assert_eq!((w2.window_start, w2.partial), (T0 + 20_000, false));
    let got: BTreeMap<String, (u64, u64)> = w2
        .keys
        .iter()
        .map(|k| {
            let old = k.old.as_ref().unwrap()["count"].as_u64().unwrap();
            let new = k.new.as_ref().unwrap()["count"].as_u64().unwrap();
            (k.key.as_str().unwrap().to_owned(), (old, new))
        })
        .collect();
    // The live result is what was sent; the shadow's is twice that: both tasks' rows, once.
    let want: BTreeMap<String, (u64, u64)> = plan[2]
        .iter()
        .map(|(s, n)| (s.to_string(), (*n, 2 * n)))
        .collect();
    assert_eq!(got, want);
    job.stop();
}

#[test]
fn control_api_starts_reports_and_promotes_a_shadow_with_the_token_and_metrics_show_its_diff() {
    let broker = TestBroker::embedded();
    broker.topic("orders", 1);
    let dir = tempfile::tempdir().unwrap();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let job = start(&parse_spec(&out, &dead), &broker.address(), dir.path());
    let target = rivulet::http::Target::default();
    target.set(job.status.clone(), Some(job.swaps.clone()));
    let token = rivulet::http::Token::generate().unwrap();
    let addr = rivulet::http::serve("127.0.0.1:0", target, token.clone())
        .unwrap()
        .to_string();
    let request = |method: &str, path: &str, body: &[u8], token: Option<&str>| {
        rivulet::http::client::request(&addr, method, path, body, token).unwrap()
    };
    let producer = producer(&broker.address());
    warm_up(&job, &producer, 10);

    let lower = module("shadow_parse_lower");
    let (code, body) = request("POST", "/stages/parse/shadow", &lower, None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = request(
        "POST",
        "/stages/parse/shadow?for=5m&windows=2",
        &lower,
        Some(token.as_str()),
    );
    assert_eq!(
        (code, body.as_str()),
        (400, r#"{"error":"give --for or --windows, not both"}"#)
    );
    let (code, body) = request("POST", "/shadows/promote", &[], Some(token.as_str()));
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("no shadow is running or kept"), "{body}");
    let (code, body) = request(
        "POST",
        "/stages/parse/shadow?for=10m&file=lower.wasm",
        &lower,
        Some(token.as_str()),
    );
    assert_eq!(code, 200, "{body}");
    let started: Report = serde_json::from_str(&body).unwrap();
    assert_eq!(started.bound, Bound::For(Duration::from_secs(600)));
    assert!(started.origin.ends_with("lower.wasm"), "{}", started.origin);

    // Orders 10..30: their statuses alternate between upper and lower case.
    let status = |id: usize| if id.is_multiple_of(2) { "OPEN" } else { "open" };
    for id in 10..30 {
        send(
            &producer,
            "orders",
            &format!(r#"{{"id":{id},"status":"{}"}}"#, status(id)),
            None,
        );
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    job.wait_report("parse", "20 records compared", |r| {
        r.records.as_ref().unwrap().compared == 20
    });
    let (code, body) = request("GET", "/shadows", &[], None);
    assert_eq!(code, 200);
    let reports: Vec<Report> = serde_json::from_str(&body).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].records.as_ref().unwrap().changed, 10);
    let (code, metrics) = request("GET", "/metrics", &[], None);
    assert_eq!(code, 200);
    for line in [
        r#"rivulet_shadow_running{stage="parse"} 1"#,
        r#"rivulet_shadow_compared_total{stage="parse",outcome="changed"} 10"#,
        r#"rivulet_shadow_compared_total{stage="parse",outcome="same"} 10"#,
        r#"rivulet_shadow_field_differences_total{stage="parse",field="status"} 10"#,
        r#"rivulet_shadow_inputs_total{stage="parse",side="shadow"} 20"#,
        r#"rivulet_shadow_inputs_total{stage="parse",side="live"} 20"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    let (code, body) = request(
        "POST",
        "/shadows/promote?stage=parse",
        &[],
        Some(token.as_str()),
    );
    assert_eq!(code, 200, "{body}");
    let outcome: rivulet::swap::SwapOutcome = serde_json::from_str(&body).unwrap();
    assert_eq!(outcome.hash, started.hash);
    assert_eq!(
        job.status.stage("parse").unwrap().hash,
        Some(started.hash.clone())
    );
    let (code, body) = request("POST", "/shadows/drop", &[], Some(token.as_str()));
    assert_eq!(code, 409, "a promoted shadow cannot be dropped: {body}");
    assert!(
        body.contains("the shadow of stage `parse` was promoted; nothing to drop"),
        "{body}"
    );
    assert_eq!(
        job.report("parse").state,
        State::Promoted,
        "dropping a promoted shadow changes nothing"
    );

    for id in 30..40 {
        send(
            &producer,
            "orders",
            &format!(r#"{{"id":{id},"status":"{}"}}"#, status(id)),
            None,
        );
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let rows = lines(&out, 40);
    job.stop();
    assert_eq!(rows.len(), 40, "every record once");
    for (id, row) in rows.iter().enumerate() {
        let expected = match id {
            0..10 => "warm".to_owned(),
            10..30 => status(id).to_owned(),
            _ => status(id).to_lowercase(),
        };
        assert_eq!(row, &json!({"id": id, "status": expected}), "order {id}");
    }
}
