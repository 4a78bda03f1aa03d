//! The contract check against what the builder writes (property tests: every shape the SDK
//! writes passes and round-trips), and against corrupted batches (each rule is enforced).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde::{Deserialize, Serialize, Serializer};

use crate::{
    AddOut, Batch, BatchBuilder, Breach, Column, Encoded, Packed, RecordError, RowsOut, Values,
};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
struct Bin(Vec<u8>);

impl Serialize for Bin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Doc {
    tags: Vec<String>,
    n: i32,
}

/// A row with every column type; every field but `name` and `doc` may be null, and `late`
/// is left out of the row (not even null) until the row where it first appears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    name: String,
    doc: Doc,
    flag: Option<bool>,
    count: Option<i64>,
    ratio: Option<f64>,
    note: Option<String>,
    raw: Option<Bin>,
    list: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    late: Option<String>,
}

fn row_count() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(8),
        Just(9),
        Just(1024),
        0usize..70,
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "\\PC{0,12}", "[a-z]{0,3}"]
}

fn row() -> impl Strategy<Value = Row> {
    (
        (
            "[a-zλ]{1,6}",
            proptest::collection::vec(text(), 0..3),
            any::<i32>(),
        ),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<i64>()),
        proptest::option::of(-1e12f64..1e12),
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
        proptest::option::of(proptest::collection::vec(any::<i64>(), 0..3)),
        text(),
    )
        .prop_map(
            |((name, tags, n), flag, count, ratio, note, raw, list, late)| Row {
                name,
                doc: Doc { tags, n },
                flag,
                count,
                ratio,
                note,
                raw: raw.map(Bin),
                list,
                late: Some(late),
            },
        )
}

/// Rows, with `late` absent before a random row (and everywhere if that row is past the end),
/// and each optional field null in a random run of rows (at the start, anywhere, or nowhere).
fn rows() -> impl Strategy<Value = Vec<Row>> {
    row_count()
        .prop_flat_map(|n| (proptest::collection::vec(row(), n), 0..=n + 1, 0..=n, 0..=n))
        .prop_map(|(mut rows, appears, null_from, null_to)| {
            let (from, to) = (null_from.min(null_to), null_from.max(null_to));
            for (i, row) in rows.iter_mut().enumerate() {
                if i < appears {
                    row.late = None;
                }
                if (from..to).contains(&i) {
                    row.note = None;
                    row.count = None;
                }
            }
            rows
        })
}

fn build(rows: &[Row]) -> Batch {
    let mut builder = BatchBuilder::new();
    for r in rows {
        builder.push(r).unwrap();
    }
    builder.finish()
}

fn packed_mut<'a>(batch: &'a mut Batch, name: &str) -> &'a mut Packed {
    let column = batch.columns.iter_mut().find(|c| c.name == name).unwrap();
    match &mut column.values {
        Values::Text(p) | Values::Binary(p) | Values::Json(p) => p,
        _ => panic!("column {name} is not packed"),
    }
}

/// Replaces value `row` of a packed column with `bytes`, moving the later offsets.
fn replace_value(p: &mut Packed, row: usize, bytes: &[u8]) {
    let (start, end) = (p.offsets[row] as usize, p.offsets[row + 1] as usize);
    p.data.splice(start..end, bytes.iter().copied());
    let shift = bytes.len() as i64 - (end - start) as i64;
    for o in &mut p.offsets[row + 1..] {
        *o = (i64::from(*o) + shift) as u32;
    }
}

#[derive(Debug, Clone, Copy)]
enum Corruption {
    OffsetPastData,
    OffsetsDecrease,
    OffsetsStartLate,
    InvalidUtf8,
    SplitCharacter,
    InvalidJson,
    DuplicateName,
    LongBitmap,
    ShortColumn,
}

fn corruption() -> impl Strategy<Value = Corruption> {
    use Corruption::*;
    prop_oneof![
        Just(OffsetPastData),
        Just(OffsetsDecrease),
        Just(OffsetsStartLate),
        Just(InvalidUtf8),
        Just(SplitCharacter),
        Just(InvalidJson),
        Just(DuplicateName),
        Just(LongBitmap),
        Just(ShortColumn),
    ]
}

/// Corrupts row `row` (or the whole column) of a valid batch; returns the breach the check
/// must report.
fn corrupt(batch: &mut Batch, how: Corruption, row: usize) -> Breach {
    let len = batch.len as usize;
    let column = "column `name`".to_owned();
    match how {
        Corruption::OffsetPastData => {
            let p = packed_mut(batch, "name");
            p.offsets[len] = p.data.len() as u32 + 1 + row as u32;
            Breach::OffsetPastData {
                place: column,
                index: len,
                offset: p.offsets[len],
                data: p.data.len(),
            }
        }
        Corruption::OffsetsDecrease => {
            // Every name has at least one byte, so offsets strictly increase.
            let p = packed_mut(batch, "name");
            p.offsets.swap(row, row + 1);
            if row == 0 {
                Breach::OffsetStart {
                    place: column,
                    found: p.offsets[0],
                }
            } else {
                Breach::OffsetDecreasing {
                    place: column,
                    index: row + 1,
                    offset: p.offsets[row + 1],
                    previous: p.offsets[row],
                }
            }
        }
        Corruption::OffsetsStartLate => {
            let p = packed_mut(batch, "name");
            p.offsets[0] = 1;
            Breach::OffsetStart {
                place: column,
                found: 1,
            }
        }
        Corruption::InvalidUtf8 => {
            replace_value(packed_mut(batch, "name"), row, b"ok\xff");
            Breach::InvalidUtf8 {
                column: "name".into(),
                row,
            }
        }
        Corruption::SplitCharacter => {
            // "λ" is two bytes; an offset between them leaves two halves, each invalid.
            let p = packed_mut(batch, "name");
            replace_value(p, row, "λ".as_bytes());
            p.offsets[row + 1] -= 1;
            Breach::InvalidUtf8 {
                column: "name".into(),
                row,
            }
        }
        Corruption::InvalidJson => {
            replace_value(packed_mut(batch, "doc"), row, b"{\"tags\":");
            Breach::InvalidJson {
                column: "doc".into(),
                row,
                reason: "EOF while parsing a value at line 1 column 8".into(),
            }
        }
        Corruption::DuplicateName => {
            let copy = batch.columns[0].clone();
            let name = copy.name.clone();
            batch.columns.push(copy);
            Breach::DuplicateColumn(name)
        }
        Corruption::LongBitmap => {
            let c = batch.columns.iter_mut().find(|c| c.name == "flag").unwrap();
            c.nulls.resize(len.div_ceil(8) + 1, 0);
            Breach::LongBitmap {
                column: "flag".into(),
                found: len.div_ceil(8) + 1,
                max: len.div_ceil(8),
                len,
            }
        }
        Corruption::ShortColumn => {
            let c = batch
                .columns
                .iter_mut()
                .find(|c| c.name == "ratio")
                .unwrap();
            // All-null columns are text; any kind will do.
            match &mut c.values {
                Values::Boolean(v) => v.truncate(row),
                Values::Integer(v) => v.truncate(row),
                Values::Float(v) => v.truncate(row),
                Values::Text(p) | Values::Binary(p) | Values::Json(p) => {
                    p.offsets.truncate(row + 1)
                }
            }
            Breach::ColumnLength {
                column: "ratio".into(),
                found: row,
                len,
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_batch_the_builder_writes_passes_the_check_and_round_trips(rows in rows()) {
        let batch = build(&rows);
        prop_assert_eq!(batch.check(), Ok(()));
        let back: Vec<Row> = batch.rows().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(back, rows);
    }

    #[test]
    fn selected_and_appended_batches_pass_the_check(rows in rows(), pick in proptest::collection::vec(any::<prop::sample::Index>(), 0..20)) {
        let batch = build(&rows);
        let picked: Vec<u32> = if rows.is_empty() { Vec::new() } else { pick.iter().map(|i| i.index(rows.len()) as u32).collect() };
        let mut selected = batch.select(&picked);
        prop_assert_eq!(selected.check(), Ok(()));
        selected.append(batch.clone()).unwrap();
        prop_assert_eq!(selected.check(), Ok(()));
        let back: Vec<Row> = selected.rows().collect::<Result<_, _>>().unwrap();
        let expected: Vec<Row> = picked.iter().map(|&i| rows[i as usize].clone()).chain(rows.iter().cloned()).collect();
        prop_assert_eq!(back, expected);
    }

    #[test]
    fn corrupted_batches_are_rejected_naming_the_breach(
        rows in rows().prop_filter("needs a row", |r| !r.is_empty()),
        how in corruption(),
        at in any::<prop::sample::Index>(),
    ) {
        let mut batch = build(&rows);
        let row = at.index(rows.len());
        let expected = corrupt(&mut batch, how, row);
        prop_assert_eq!(batch.check(), Err(expected));
    }
}

fn text_column(name: &str, values: &[&str]) -> Column {
    let mut p = Packed::new();
    for v in values {
        p.push(v.as_bytes());
    }
    Column::new(name, Values::Text(p))
}

#[test]
fn a_field_that_appears_after_row_eight_is_accepted_with_a_short_bitmap() {
    // Nulls only in the first 500 of 1024 rows: the bitmap ends at byte 62 of 128.
    let rows: Vec<serde_json::Value> = (0..1024)
        .map(|i| {
            if i < 500 {
                serde_json::json!({ "id": i })
            } else {
                serde_json::json!({ "id": i, "coupon": "SPRING" })
            }
        })
        .collect();
    let mut builder = BatchBuilder::new();
    for r in &rows {
        builder.push(r).unwrap();
    }
    let batch = builder.finish();
    assert_eq!(batch.column("coupon").unwrap().nulls.len(), 63);
    assert_eq!(batch.check(), Ok(()));
}

#[test]
fn a_null_bit_past_the_last_row_is_a_breach() {
    let mut column = text_column("s", &["a", "b", "c"]);
    column.nulls = vec![0b1000_0001];
    let batch = Batch {
        len: 3,
        columns: vec![column],
    };
    assert_eq!(
        batch.check().unwrap_err().to_string(),
        "column `s`: null bitmap marks row 7 null, past the batch's 3 rows"
    );
}

#[test]
fn packed_offsets_must_be_one_more_than_the_values_and_start_at_zero() {
    let empty = Batch {
        len: 0,
        columns: vec![Column::new(
            "s",
            Values::Text(Packed {
                data: Vec::new(),
                offsets: Vec::new(),
            }),
        )],
    };
    assert_eq!(
        empty.check().unwrap_err().to_string(),
        "column `s`: 0 offsets for 0 values (needs one more than the values)"
    );
}

#[test]
fn json_placeholders_of_null_rows_are_not_read() {
    let mut p = Packed::new();
    p.push(b"[1]");
    p.push(b"");
    let mut column = Column::new("j", Values::Json(p));
    column.nulls = vec![0b10];
    let batch = Batch {
        len: 2,
        columns: vec![column],
    };
    assert_eq!(batch.check(), Ok(()));
}

fn rows_out(origins: Vec<u32>, errors: &[u32]) -> RowsOut {
    let values: Vec<&str> = origins.iter().map(|_| "x").collect();
    RowsOut {
        rows: Batch {
            len: origins.len() as u32,
            columns: vec![text_column("v", &values)],
        },
        origins,
        errors: errors
            .iter()
            .map(|&index| RecordError {
                index,
                message: "bad".into(),
            })
            .collect(),
    }
}

#[test]
fn a_record_has_rows_or_one_error_never_both() {
    assert_eq!(rows_out(vec![0, 0, 2], &[1, 3]).check(4), Ok(()));
    let cases = [
        (
            rows_out(vec![0, 1], &[1]),
            "record 1 has both output and an error",
        ),
        (
            rows_out(vec![0], &[3, 2, 3]),
            "reported more than one error for record 3",
        ),
        (
            rows_out(vec![0], &[4]),
            "an error names record 4, but the call had 4 records",
        ),
        (
            rows_out(vec![4], &[]),
            "a row names record 4, but the call had 4 records",
        ),
        (
            rows_out(vec![2, 1], &[]),
            "row 1 comes from record 1, after a row from record 2 (origins must not decrease)",
        ),
    ];
    for (out, message) in cases {
        assert_eq!(out.check(4).unwrap_err().to_string(), message);
    }
    let mut short = rows_out(vec![0, 1], &[]);
    short.origins.pop();
    assert_eq!(
        short.check(4).unwrap_err().to_string(),
        "returned 1 origins for 2 rows"
    );
}

#[test]
fn finish_answers_each_window_exactly_once() {
    assert_eq!(rows_out(vec![0, 2], &[1]).check_finish(3), Ok(()));
    let cases = [
        (
            rows_out(vec![0, 0, 0], &[]),
            "window 0 has more than one result",
        ),
        (
            rows_out(vec![0, 2], &[]),
            "window 1 got neither a result nor an error",
        ),
        (
            rows_out(vec![], &[]),
            "window 0 got neither a result nor an error",
        ),
        (
            rows_out(vec![0, 1], &[1]),
            "record 1 has both output and an error",
        ),
        (
            rows_out(vec![0], &[1, 1]),
            "reported more than one error for record 1",
        ),
    ];
    for (out, message) in cases {
        assert_eq!(out.check_finish(3).unwrap_err().to_string(), message);
    }
}

#[test]
fn format_output_has_one_payload_per_row_and_failed_rows_are_empty() {
    let payloads = |values: &[&[u8]]| {
        let mut p = Packed::new();
        for v in values {
            p.push(v);
        }
        p
    };
    let error = |index| RecordError {
        index,
        message: "bad".into(),
    };
    let good = Encoded {
        payloads: payloads(&[b"a", b"", b"c"]),
        keys: Some(payloads(&[b"k", b"", b""])),
        errors: vec![error(1)],
    };
    assert_eq!(good.check(3), Ok(()));

    let mut past = good.clone();
    past.payloads.offsets[3] = 99;
    let mut keys = good.clone();
    keys.keys = Some(payloads(&[b"k"]));
    let mut failed = good.clone();
    failed.errors = vec![error(0)];
    let mut twice = good.clone();
    twice.errors.push(error(1));
    let cases = [
        (
            past,
            "payloads: offset 3 (99) is past the end of the data (2 bytes)",
        ),
        (keys, "returned 1 keys for 3 rows"),
        (failed, "row 0 failed but has a non-empty payload"),
        (twice, "reported more than one error for record 1"),
    ];
    for (out, message) in cases {
        assert_eq!(out.check(3).unwrap_err().to_string(), message);
    }
}

#[test]
fn add_returns_one_accumulator_per_group_and_one_error_per_row_at_most() {
    let out = |accs: usize, errors: &[u32]| AddOut {
        accs: vec![Vec::new(); accs],
        errors: errors
            .iter()
            .map(|&index| RecordError {
                index,
                message: "bad".into(),
            })
            .collect(),
    };
    assert_eq!(out(2, &[0, 3]).check(2, 4), Ok(()));
    assert_eq!(
        out(1, &[]).check(2, 4).unwrap_err().to_string(),
        "returned 1 accumulators for 2 groups"
    );
    assert_eq!(
        out(2, &[3, 3]).check(2, 4).unwrap_err().to_string(),
        "reported more than one error for record 3"
    );
}
