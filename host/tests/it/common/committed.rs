//! A `read_committed` reader that does not take the broker's word for it.
//!
//! A Kafka broker hides the records of aborted transactions from `read_committed` readers
//! by listing those transactions in its fetch answer; some brokers (librdkafka's mock
//! cluster, Tansu 0.6) list none, so every client shows aborted records there. What they
//! do keep is the log itself: each transaction ends with a control batch of its producer,
//! a COMMIT or an ABORT marker. This reader fetches a partition's raw record batches
//! (Fetch v4, `read_uncommitted`) and applies the rule itself: a transactional batch's
//! records count once a COMMIT marker of its producer follows them, an ABORT marker drops
//! them, a transaction with no marker yet is still open (not shown), and records written
//! outside transactions count as they come.
//!
//! Written from the protocol's specification (Fetch v4, record batch v2), independent of
//! the code under test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use super::kafka::Read;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write};
use std::net::TcpStream;
use std::time::Duration;

const FETCH: i16 = 1;
const FETCH_VERSION: i16 = 4;
const TRANSACTIONAL: i16 = 1 << 4;
const CONTROL: i16 = 1 << 5;
const COMPRESSION: i16 = 0b111;
const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// Bytes being decoded.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|b| b[0] as i8)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes(b.try_into().unwrap()))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .map(|b| i64::from_be_bytes(b.try_into().unwrap()))
    }
    /// A zigzag varint (records' fields).
    fn varint(&mut self) -> Option<i64> {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
        Some((value >> 1) as i64 ^ -((value & 1) as i64))
    }
    /// Bytes prefixed by a varint length (-1: null).
    fn var_bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            n => self.take(usize::try_from(n).ok()?).map(Some),
        }
    }
    fn string(&mut self) -> Option<&'a [u8]> {
        let n = self.i16()?;
        self.take(usize::try_from(n).ok()?)
    }
}

/// One record batch (magic 2).
struct Batch<'a> {
    base_offset: i64,
    next_offset: i64,
    attributes: i16,
    producer_id: i64,
    records: Cursor<'a>,
    count: i32,
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as i16).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// One Fetch v4 round trip: the raw record bytes of `partition` from `offset`, and the
/// partition's high watermark.
fn fetch(stream: &mut TcpStream, topic: &str, partition: i32, offset: i64) -> (Vec<u8>, i64) {
    let mut body = Vec::new();
    body.extend_from_slice(&FETCH.to_be_bytes());
    body.extend_from_slice(&FETCH_VERSION.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    put_str(&mut body, "rivulet-test-committed");
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id: a consumer
    body.extend_from_slice(&100i32.to_be_bytes()); // max wait ms
    body.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&(8i32 << 20).to_be_bytes()); // max bytes
    body.push(0); // read_uncommitted: every batch, markers included
    body.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut body, topic);
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&offset.to_be_bytes());
    body.extend_from_slice(&(4i32 << 20).to_be_bytes()); // partition max bytes
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut answer).unwrap();
    let mut c = Cursor(&answer);
    assert_eq!(c.i32(), Some(7), "correlation id");
    c.i32().unwrap(); // throttle
    assert_eq!(c.i32(), Some(1), "one topic");
    c.string().unwrap();
    assert_eq!(c.i32(), Some(1), "one partition");
    assert_eq!(c.i32(), Some(partition));
    let error = c.i16().unwrap();
    assert_eq!(
        error, 0,
        "fetch of {topic}/{partition} at {offset}: error {error}"
    );
    let high = c.i64().unwrap();
    c.i64().unwrap(); // last stable offset
    let aborted = c.i32().unwrap();
    for _ in 0..aborted.max(0) {
        c.i64().unwrap();
        c.i64().unwrap();
    }
    let records = match c.i32().unwrap() {
        n if n <= 0 => Vec::new(),
        n => c.take(n as usize).unwrap().to_vec(),
    };
    (records, high)
}

/// The whole batches in `bytes` (a fetch may end with part of one).
fn batches(bytes: &[u8]) -> Vec<Batch<'_>> {
    let mut c = Cursor(bytes);
    let mut out = Vec::new();
    while let (Some(base_offset), Some(length)) = (c.i64(), c.i32()) {
        let Some(body) = c.take(length as usize) else {
            break;
        };
        let mut b = Cursor(body);
        b.i32().unwrap(); // partition leader epoch
        assert_eq!(b.i8(), Some(2), "record batch v2");
        b.i32().unwrap(); // crc
        let attributes = b.i16().unwrap();
        assert_eq!(attributes & COMPRESSION, 0, "uncompressed batches");
        let last_delta = b.i32().unwrap();
        b.i64().unwrap(); // base timestamp
        b.i64().unwrap(); // max timestamp
        let producer_id = b.i64().unwrap();
        b.i16().unwrap(); // producer epoch
        b.i32().unwrap(); // base sequence
        let count = b.i32().unwrap();
        out.push(Batch {
            base_offset,
            next_offset: base_offset + i64::from(last_delta) + 1,
            attributes,
            producer_id,
            records: b,
            count,
        });
    }
    out
}

/// The records of a batch: (offset, key, value, headers).
#[allow(clippy::type_complexity)]
fn records<'a>(
    batch: &mut Batch<'a>,
) -> Vec<(
    i64,
    Option<&'a [u8]>,
    Option<&'a [u8]>,
    Vec<(String, String)>,
)> {
    let mut out = Vec::new();
    for _ in 0..batch.count {
        let c = &mut batch.records;
        let length = c.varint().unwrap();
        let mut r = Cursor(c.take(length as usize).unwrap());
        r.i8().unwrap(); // attributes
        r.varint().unwrap(); // timestamp delta
        let offset = batch.base_offset + r.varint().unwrap();
        let key = r.var_bytes().unwrap();
        let value = r.var_bytes().unwrap();
        let headers = (0..r.varint().unwrap())
            .map(|_| {
                let name = r.var_bytes().unwrap().unwrap_or_default();
                let value = r.var_bytes().unwrap().unwrap_or_default();
                (
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                )
            })
            .collect();
        out.push((offset, key, value, headers));
    }
    out
}

/// The committed records of `topic`'s `partition`, as a `read_committed` reader should see
/// them (see the module documentation), in offset order.
pub fn committed(address: &str, topic: &str, partition: i32) -> Vec<Read> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (mut offset, mut out) = (0i64, Vec::new());
    let mut open: HashMap<i64, Vec<Read>> = HashMap::new();
    let mut empty = 0;
    loop {
        let (bytes, high) = fetch(&mut stream, topic, partition, offset);
        let mut found = batches(&bytes);
        if found.is_empty() {
            if offset >= high {
                break;
            }
            // A broker just restarted may not serve everything yet.
            empty += 1;
            assert!(
                empty < 50,
                "{topic}/{partition}: nothing at {offset} below the high watermark {high}"
            );
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let from = offset;
        for batch in &mut found {
            if batch.next_offset <= from {
                continue; // read before
            }
            offset = offset.max(batch.next_offset);
            let transactional = batch.attributes & TRANSACTIONAL != 0;
            if batch.attributes & CONTROL != 0 {
                let kept = open.remove(&batch.producer_id).unwrap_or_default();
                for (_, key, _, _) in records(batch) {
                    let mut k = Cursor(key.expect("a control record has a key"));
                    k.i16().unwrap(); // version
                    match k.i16().unwrap() {
                        COMMIT => out.extend(kept.clone()),
                        ABORT => {}
                        other => panic!("control record type {other}"),
                    }
                }
                continue;
            }
            for (at, key, value, headers) in records(batch) {
                let read = Read {
                    partition,
                    offset: at,
                    key: key.map(<[u8]>::to_vec),
                    payload: value.unwrap_or_default().to_vec(),
                    headers: headers.into_iter().collect::<BTreeMap<_, _>>(),
                };
                match transactional {
                    true => open.entry(batch.producer_id).or_default().push(read),
                    false => out.push(read),
                }
            }
        }
    }
    out.sort_by_key(|r| r.offset);
    out
}
