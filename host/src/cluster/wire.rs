//! The records of a job's internal `<job>-partials` topic, byte for byte.
//!
//! Stage 1 (pre-aggregation) writes two kinds of record; stage 2 (merge) reads them:
//! - a **partial**: one source partition's accumulator for one (window, key), the whole of
//!   it (a later partial for the same window, key and source partition replaces it), and
//! - a **marker**: how far a source partition's watermark has come. Every marker goes to
//!   every partials partition, after the partials it vouches for (one producer keeps them
//!   in order), so a partials partition's reader knows when it has all of a window.
//!
//! Layout (integers big-endian): `RVX` and a version byte, then a kind byte.
//! - marker (1): source partition `i32`, idle flag `u8`, watermark presence `u8` + `i64`.
//! - partial (2): source partition `i32`, window start `i64`, window end `i64`, key
//!   (a scalar: tag `u8` and its value), accumulator (built-in: `u8` 0, count `u16`, each
//!   one tag `u8` and its numbers, a number being absent (`u8` 0), an integer (1, `i128`),
//!   a float (2, `f64`) or an unscaled decimal (3, `i128`); Wasm: `u8` 1, state version
//!   `u32`, `u32` length, bytes).
//!   Texts and byte strings are a `u32` length and the bytes.
//!
//! Decoding checks every length against what is left, so a damaged record is an error
//! naming what is wrong, never a panic or a huge allocation.

use crate::aggregate::builtin::{BuiltinAcc, Num};
use rivulet_rows::Scalar;

const MAGIC: &[u8; 3] = b"RVX";
const VERSION: u8 = 1;
const MARKER: u8 = 1;
const PARTIAL: u8 = 2;

/// An accumulator as it crosses between processes. A Wasm accumulator carries the state
/// version of the module that wrote it: generations are numbered per process.
#[derive(Debug, Clone, PartialEq)]
pub enum WireAcc {
    Builtin(Vec<BuiltinAcc>),
    Bytes { state_version: u32, bytes: Vec<u8> },
}

/// One record of the partials topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Exchanged {
    /// Source partition `source`'s watermark (`None`: nothing seen yet); `idle`: it has sent
    /// nothing for the idle timeout, so readers need not wait for it.
    Marker {
        source: i32,
        watermark: Option<i64>,
        idle: bool,
    },
    /// Source partition `source`'s whole accumulator for (window, key).
    Partial {
        source: i32,
        start: i64,
        end: i64,
        key: Scalar,
        acc: WireAcc,
    },
}

/// A partials-topic record that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a rivulet partials record (it does not start with `RVX`)")]
    Magic,
    #[error("partials record version {0} is not one this rivulet reads (it reads {VERSION})")]
    Version(u8),
    #[error("partials record is cut short: {0} is missing")]
    Short(&'static str),
    #[error("partials record has an unknown {what} tag {tag}")]
    Tag { what: &'static str, tag: u8 },
    #[error("partials record has {0} bytes after its end")]
    Trailing(usize),
    #[error("partials record has a key text that is not UTF-8")]
    Utf8,
}

impl Exchanged {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        match self {
            Exchanged::Marker {
                source,
                watermark,
                idle,
            } => {
                out.push(MARKER);
                out.extend_from_slice(&source.to_be_bytes());
                out.push(u8::from(*idle));
                put_opt_i64(&mut out, *watermark);
            }
            Exchanged::Partial {
                source,
                start,
                end,
                key,
                acc,
            } => {
                out.push(PARTIAL);
                out.extend_from_slice(&source.to_be_bytes());
                out.extend_from_slice(&start.to_be_bytes());
                out.extend_from_slice(&end.to_be_bytes());
                put_scalar(&mut out, key);
                put_acc(&mut out, acc);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(bytes);
        if r.take(3, "magic").ok() != Some(MAGIC.as_slice()) {
            return Err(WireError::Magic);
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let record = match r.u8("kind")? {
            MARKER => Exchanged::Marker {
                source: r.i32("source partition")?,
                idle: r.u8("idle flag")? != 0,
                watermark: r.opt_i64("watermark")?,
            },
            PARTIAL => Exchanged::Partial {
                source: r.i32("source partition")?,
                start: r.i64("window start")?,
                end: r.i64("window end")?,
                key: r.scalar()?,
                acc: r.acc()?,
            },
            tag => return Err(WireError::Tag { what: "kind", tag }),
        };
        match r.0.len() {
            0 => Ok(record),
            left => Err(WireError::Trailing(left)),
        }
    }
}

/// The partials partition a window key goes to: FNV-1a of the key's encoding, so every
/// process (and every rivulet version reading this layout) picks the same one.
pub fn partition_of(key: &Scalar, partitions: i32) -> i32 {
    let mut encoded = Vec::with_capacity(16);
    put_scalar(&mut encoded, key);
    let hash = encoded.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let partitions = u64::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(hash % partitions).unwrap_or(0)
}

fn put_opt_i64(out: &mut Vec<u8>, value: Option<i64>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn put_num(out: &mut Vec<u8>, value: Option<Num>) {
    match value {
        None => out.push(0),
        Some(Num::Int(v)) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
        Some(Num::Float(v)) => {
            out.push(2);
            out.extend_from_slice(&v.to_be_bytes());
        }
        Some(Num::Decimal(v)) => {
            out.push(3);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Longer than 4 GiB cannot be produced to Kafka anyway; the length saturates and the
    // reader then reports the record cut short.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_scalar(out: &mut Vec<u8>, key: &Scalar) {
    match key {
        Scalar::Null => out.push(0),
        Scalar::Boolean(b) => {
            out.push(1);
            out.push(u8::from(*b));
        }
        Scalar::Integer(i) => {
            out.push(2);
            out.extend_from_slice(&i.to_be_bytes());
        }
        Scalar::Float(f) => {
            out.push(3);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Scalar::Text(s) => {
            out.push(4);
            put_bytes(out, s.as_bytes());
        }
    }
}

fn put_acc(out: &mut Vec<u8>, acc: &WireAcc) {
    match acc {
        WireAcc::Builtin(accs) => {
            out.push(0);
            let count = u16::try_from(accs.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for acc in accs.iter().take(usize::from(count)) {
                match acc {
                    BuiltinAcc::Count(n) => {
                        out.push(0);
                        out.extend_from_slice(&n.to_be_bytes());
                    }
                    BuiltinAcc::Sum(sum) => {
                        out.push(1);
                        put_num(out, *sum);
                    }
                    BuiltinAcc::Avg { sum, count } => {
                        out.push(2);
                        put_num(out, *sum);
                        out.extend_from_slice(&count.to_be_bytes());
                    }
                    BuiltinAcc::Min(v) => {
                        out.push(3);
                        put_num(out, *v);
                    }
                    BuiltinAcc::Max(v) => {
                        out.push(4);
                        put_num(out, *v);
                    }
                }
            }
        }
        WireAcc::Bytes {
            state_version,
            bytes,
        } => {
            out.push(1);
            out.extend_from_slice(&state_version.to_be_bytes());
            put_bytes(out, bytes);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Short(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N, what)?);
        Ok(array)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        self.array(what).map(i32::from_be_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        self.array(what).map(i64::from_be_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.array(what).map(u64::from_be_bytes)
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, WireError> {
        self.array(what).map(f64::from_be_bytes)
    }

    fn opt_i64(&mut self, what: &'static str) -> Result<Option<i64>, WireError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => self.i64(what).map(Some),
            tag => Err(WireError::Tag { what, tag }),
        }
    }

    fn num(&mut self, what: &'static str) -> Result<Option<Num>, WireError> {
        Ok(Some(match self.u8(what)? {
            0 => return Ok(None),
            1 => Num::Int(self.array(what).map(i128::from_be_bytes)?),
            2 => Num::Float(self.f64(what)?),
            3 => Num::Decimal(self.array(what).map(i128::from_be_bytes)?),
            tag => return Err(WireError::Tag { what, tag }),
        }))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.u32(what)?;
        self.take(usize::try_from(len).unwrap_or(usize::MAX), what)
    }

    fn scalar(&mut self) -> Result<Scalar, WireError> {
        Ok(match self.u8("key")? {
            0 => Scalar::Null,
            1 => Scalar::Boolean(self.u8("key")? != 0),
            2 => Scalar::Integer(self.i64("key")?),
            3 => Scalar::Float(self.f64("key")?),
            4 => {
                let text = self.bytes("key")?;
                Scalar::Text(String::from_utf8(text.to_vec()).map_err(|_| WireError::Utf8)?)
            }
            tag => return Err(WireError::Tag { what: "key", tag }),
        })
    }

    fn acc(&mut self) -> Result<WireAcc, WireError> {
        const WHAT: &str = "accumulator";
        match self.u8(WHAT)? {
            0 => {
                let count = u16::from_be_bytes(self.array(WHAT)?);
                let mut accs = Vec::with_capacity(usize::from(count).min(self.0.len()));
                for _ in 0..count {
                    accs.push(match self.u8(WHAT)? {
                        0 => BuiltinAcc::Count(self.u64(WHAT)?),
                        1 => BuiltinAcc::Sum(self.num(WHAT)?),
                        2 => BuiltinAcc::Avg {
                            sum: self.num(WHAT)?,
                            count: self.u64(WHAT)?,
                        },
                        3 => BuiltinAcc::Min(self.num(WHAT)?),
                        4 => BuiltinAcc::Max(self.num(WHAT)?),
                        tag => return Err(WireError::Tag { what: WHAT, tag }),
                    });
                }
                Ok(WireAcc::Builtin(accs))
            }
            1 => Ok(WireAcc::Bytes {
                state_version: self.u32(WHAT)?,
                bytes: self.bytes(WHAT)?.to_vec(),
            }),
            tag => Err(WireError::Tag { what: WHAT, tag }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Exchanged> {
        vec![
            Exchanged::Marker {
                source: 5,
                watermark: Some(1_700_000_000_123),
                idle: false,
            },
            Exchanged::Marker {
                source: 0,
                watermark: None,
                idle: true,
            },
            Exchanged::Partial {
                source: 2,
                start: 30_000,
                end: 60_000,
                key: Scalar::from("shipped"),
                acc: WireAcc::Builtin(vec![
                    BuiltinAcc::Count(7),
                    BuiltinAcc::Sum(Some(Num::Float(12.5))),
                    BuiltinAcc::Avg {
                        sum: Some(Num::Int(-3)),
                        count: 2,
                    },
                    BuiltinAcc::Min(None),
                    BuiltinAcc::Max(Some(Num::Decimal(123_456_789_012_345_678_901))),
                    BuiltinAcc::Sum(None),
                ]),
            },
            Exchanged::Partial {
                source: 1,
                start: -60_000,
                end: 0,
                key: Scalar::Integer(-3),
                acc: WireAcc::Bytes {
                    state_version: 4,
                    bytes: vec![0, 1, 2, 255],
                },
            },
            Exchanged::Partial {
                source: 1,
                start: 0,
                end: 1,
                key: Scalar::Null,
                acc: WireAcc::Bytes {
                    state_version: 0,
                    bytes: Vec::new(),
                },
            },
        ]
    }

    #[test]
    fn every_record_reads_back_as_written() {
        for record in samples() {
            assert_eq!(Exchanged::decode(&record.encode()), Ok(record));
        }
    }

    #[test]
    fn a_marker_has_the_documented_bytes() {
        let bytes = Exchanged::Marker {
            source: 3,
            watermark: Some(258),
            idle: true,
        }
        .encode();
        let expected = [
            b'R', b'V', b'X', 1, 1, 0, 0, 0, 3, 1, 1, 0, 0, 0, 0, 0, 0, 1, 2,
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn every_cut_of_a_record_is_an_error_not_a_panic() {
        for record in samples() {
            let bytes = record.encode();
            for len in 0..bytes.len() {
                assert!(
                    Exchanged::decode(&bytes[..len]).is_err(),
                    "{record:?} cut at {len}"
                );
            }
        }
    }

    #[test]
    fn foreign_and_damaged_records_are_refused_with_the_reason() {
        assert_eq!(Exchanged::decode(b"{\"status\":1}"), Err(WireError::Magic));
        assert_eq!(
            Exchanged::decode(b"RVX\x02\x01"),
            Err(WireError::Version(2))
        );
        assert_eq!(
            Exchanged::decode(b"RVX\x01\x09"),
            Err(WireError::Tag {
                what: "kind",
                tag: 9
            })
        );
        let mut bytes = samples()[0].encode();
        bytes.push(0);
        assert_eq!(Exchanged::decode(&bytes), Err(WireError::Trailing(1)));
        // A length far past the record's end is "cut short", not an allocation.
        let mut bytes = b"RVX\x01\x02".to_vec();
        bytes.extend_from_slice(&[0; 4 + 8 + 8]);
        bytes.push(4);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Exchanged::decode(&bytes), Err(WireError::Short("key")));
    }

    #[test]
    fn a_key_goes_to_the_same_partition_every_time_and_keys_spread() {
        let keys = ["pending", "shipped", "delivered", "cancelled", "returned"];
        let first: Vec<i32> = keys
            .iter()
            .map(|k| partition_of(&Scalar::from(*k), 6))
            .collect();
        let again: Vec<i32> = keys
            .iter()
            .map(|k| partition_of(&Scalar::from(*k), 6))
            .collect();
        assert_eq!(first, again);
        assert!(first.iter().all(|p| (0..6).contains(p)));
        let spread: std::collections::BTreeSet<i32> = (0..100)
            .map(|i| partition_of(&Scalar::Integer(i), 6))
            .collect();
        assert_eq!(spread.len(), 6);
        assert_eq!(partition_of(&Scalar::from("x"), 0), 0);
    }
}
