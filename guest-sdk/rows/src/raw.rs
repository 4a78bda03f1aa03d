use crate::RowError;
use crate::batch::{Packed, get_bit, set_bit};

/// One record header; a [`RawBatch`] holds the headers of all records, in record order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct Header {
    /// Index of the record this header belongs to.
    pub record: u32,
    /// Header name.
    pub key: String,
    /// Header value.
    pub value: Vec<u8>,
}

/// Undecoded records as read from a source: keys, payloads and metadata, column by column.
///
/// ```
/// use rivulet_rows::RawBatch;
///
/// let mut raw = RawBatch::new();
/// raw.push(Some(b"user-1"), b"{\"n\":1}", 1_700_000_000_000, 0, 42, &[("trace", b"abc")]);
/// raw.push(None, b"plain", 1_700_000_000_001, 1, 43, &[]);
///
/// let first = raw.record(0).ok_or("missing")?;
/// assert_eq!(first.key, Some(&b"user-1"[..]));
/// assert_eq!(first.headers, [("trace", &b"abc"[..])]);
/// assert_eq!(raw.record(1).ok_or("missing")?.payload_str()?, "plain");
/// assert_eq!(raw.select(&[1]).iter().next().map(|r| r.offset), Some(43));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "wasmtime",
    derive(
        wasmtime::component::ComponentType,
        wasmtime::component::Lift,
        wasmtime::component::Lower
    ),
    component(record)
)]
pub struct RawBatch {
    /// Number of records.
    pub len: u32,
    /// Record keys (an empty placeholder where the key is null).
    pub keys: Packed,
    /// Null bitmap of `keys`, LSB-first; empty when no key is null.
    #[cfg_attr(feature = "wasmtime", component(name = "key-nulls"))]
    pub key_nulls: Vec<u8>,
    /// Record payloads.
    pub payloads: Packed,
    /// Record timestamps (milliseconds since the Unix epoch, by convention).
    pub timestamps: Vec<i64>,
    /// Source partition of each record.
    pub partitions: Vec<i32>,
    /// Source offset of each record.
    pub offsets: Vec<i64>,
    /// Headers of all records, in record order.
    pub headers: Vec<Header>,
}

/// A borrowed view of one record of a [`RawBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// The key, `None` if null.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
    /// The timestamp.
    pub timestamp: i64,
    /// The source partition.
    pub partition: i32,
    /// The source offset.
    pub offset: i64,
    /// The headers, in order.
    pub headers: Vec<(&'a str, &'a [u8])>,
}

impl<'a> RawRecord<'a> {
    /// The payload as UTF-8 text.
    pub fn payload_str(&self) -> Result<&'a str, RowError> {
        std::str::from_utf8(self.payload).map_err(|_| RowError::InvalidUtf8)
    }
}

impl RawBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one record.
    ///
    /// # Panics
    /// Panics beyond `u32::MAX` records or 4 GiB of keys or payloads.
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        payload: &[u8],
        timestamp: i64,
        partition: i32,
        offset: i64,
        headers: &[(&str, &[u8])],
    ) {
        let record = self.len;
        let Some(len) = record.checked_add(1) else {
            panic!("raw batch exceeds u32::MAX records")
        };
        self.keys.push(key.unwrap_or_default());
        if key.is_none() {
            set_bit(&mut self.key_nulls, record as usize);
        }
        self.payloads.push(payload);
        self.timestamps.push(timestamp);
        self.partitions.push(partition);
        self.offsets.push(offset);
        self.headers
            .extend(headers.iter().map(|&(key, value)| Header {
                record,
                key: key.to_owned(),
                value: value.to_vec(),
            }));
        self.len = len;
    }

    /// Record `i`, or `None` if out of range (or the batch is inconsistent).
    pub fn record(&self, i: usize) -> Option<RawRecord<'_>> {
        let index = u32::try_from(i).ok().filter(|&r| r < self.len)?;
        let key = if get_bit(&self.key_nulls, i) {
            None
        } else {
            Some(self.keys.get(i)?)
        };
        let start = self.headers.partition_point(|h| h.record < index);
        let headers = self.headers[start..]
            .iter()
            .take_while(|h| h.record == index)
            .map(|h| (h.key.as_str(), h.value.as_slice()))
            .collect();
        Some(RawRecord {
            key,
            payload: self.payloads.get(i)?,
            timestamp: *self.timestamps.get(i)?,
            partition: *self.partitions.get(i)?,
            offset: *self.offsets.get(i)?,
            headers,
        })
    }

    /// Iterates over the records in order.
    pub fn iter(&self) -> impl Iterator<Item = RawRecord<'_>> + '_ {
        (0..self.len as usize).filter_map(|i| self.record(i))
    }

    /// A new batch with the given records, in the given order (indices may repeat).
    ///
    /// # Panics
    /// Panics if an index is out of range.
    pub fn select(&self, rows: &[u32]) -> RawBatch {
        let mut out = RawBatch::new();
        for &r in rows {
            let Some(rec) = self.record(r as usize) else {
                panic!(
                    "record {r} is out of range for a batch of {} records",
                    self.len
                );
            };
            let (ts, part, off) = (rec.timestamp, rec.partition, rec.offset);
            out.push(rec.key, rec.payload, ts, part, off, &rec.headers);
        }
        out
    }
}
