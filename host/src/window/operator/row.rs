//! A row's place in its batch: the source record it came from (its partition and offset)
//! and its event time.

use rivulet_rows::time::parse_iso8601;
use rivulet_rows::{Batch, Column, RawBatch, Values};

/// Where a row's source record is: its index in the batch, its partition and offset.
pub(crate) struct Origin<'a> {
    pub(crate) raw: &'a RawBatch,
    pub(crate) index: usize,
}

impl<'a> Origin<'a> {
    pub(crate) fn partition(&self) -> i32 {
        self.raw.partitions.get(self.index).copied().unwrap_or(0)
    }

    pub(crate) fn offset(&self) -> i64 {
        self.raw.offsets.get(self.index).copied().unwrap_or(-1)
    }
}

/// Where a batch's event times come from.
pub(crate) enum Stamps<'a> {
    Kafka,
    /// A field, and its column (`None`: the batch has no such field).
    Field(&'a str, Option<&'a Column>),
}

impl<'a> Stamps<'a> {
    /// Where a batch's event times are: the Kafka timestamp, or a column (`timestamp`).
    pub(crate) fn of(timestamp: Option<&'a str>, rows: &'a Batch) -> Self {
        match timestamp.unwrap_or("kafka") {
            "kafka" => Stamps::Kafka,
            field => Stamps::Field(field, rows.column(field)),
        }
    }

    /// Row `row`'s event time in milliseconds.
    pub(crate) fn at(&self, row: usize, origin: &Origin<'_>) -> Result<i64, String> {
        let (field, column) = match self {
            Stamps::Kafka => {
                return origin
                    .raw
                    .timestamps
                    .get(origin.index)
                    .copied()
                    .ok_or_else(|| "the record has no Kafka timestamp".to_owned());
            }
            Stamps::Field(field, column) => (field, column),
        };
        let column = column.ok_or_else(|| format!("no event time: field `{field}` is missing"))?;
        if column.is_null(row) {
            return Err(format!("no event time: field `{field}` is null"));
        }
        match &column.values {
            Values::Integer(ms) => ms.get(row).copied(),
            Values::Float(ms) => ms.get(row).filter(|ms| ms.is_finite()).map(|&ms| ms as i64),
            Values::Text(_) => match column.text_at(row) {
                Some(text) => {
                    return parse_iso8601(text)
                        .map_err(|err| format!("no event time: field `{field}`: {err}"));
                }
                // Not valid UTF-8.
                None => None,
            },
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "no event time: field `{field}` is not a number of milliseconds or ISO-8601 text"
            )
        })
    }
}
