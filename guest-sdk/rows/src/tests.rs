#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize, Serializer};
use serde_json::json;

use crate::{Batch, BatchBuilder, Column, Packed, RawBatch, RowError, Scalar, Values};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
struct Bin(Vec<u8>);

impl Serialize for Bin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Status {
    Active,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    a: i32,
    b: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Wrapper(i64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    flag: bool,
    small: i8,
    unsigned: u32,
    big: u64,
    int: i64,
    single: f32,
    double: f64,
    letter: char,
    name: String,
    status: Status,
    raw: Bin,
    maybe: Option<i64>,
    wrapped: Wrapper,
    inner: Inner,
    list: Vec<i32>,
    pair: (i32, String),
    #[serde(default)] // null values are left out of the row, so unit needs a default
    unit: (),
}

fn everything(i: i64) -> Everything {
    Everything {
        flag: i % 2 == 0,
        small: -3,
        unsigned: 7,
        big: u64::MAX >> 1,
        int: i,
        single: 1.5,
        double: -2.25,
        letter: 'λ',
        name: format!("name-{i}"),
        status: if i == 0 {
            Status::Active
        } else {
            Status::Closed
        },
        raw: Bin(vec![0, 255, i as u8]),
        maybe: (i == 1).then_some(42),
        wrapped: Wrapper(i * 10),
        inner: Inner {
            a: 1,
            b: vec!["x".into()],
        },
        list: vec![1, 2, 3],
        pair: (5, "five".into()),
        unit: (),
    }
}

fn build<T: Serialize>(rows: &[T]) -> Batch {
    let mut b = BatchBuilder::new();
    for r in rows {
        b.push(r).unwrap();
    }
    b.finish()
}

#[test]
fn round_trip_of_every_supported_field_kind() {
    let rows = [everything(0), everything(1), everything(2)];
    let batch = build(&rows);
    assert_eq!(batch.len, 3);
    let kind = |name: &str| std::mem::discriminant(&batch.column(name).unwrap().values);
    let d = std::mem::discriminant;
    assert_eq!(kind("flag"), d(&Values::Boolean(vec![])));
    assert_eq!(kind("big"), d(&Values::Integer(vec![])));
    assert_eq!(kind("single"), d(&Values::Float(vec![])));
    assert_eq!(kind("status"), d(&Values::Text(Packed::new())));
    assert_eq!(kind("raw"), d(&Values::Binary(Packed::new())));
    assert_eq!(kind("inner"), d(&Values::Json(Packed::new())));
    assert_eq!(kind("pair"), d(&Values::Json(Packed::new())));
    assert_eq!(batch.column("status").unwrap().text_at(1), Some("Closed"));
    let back: Vec<Everything> = batch.rows().collect::<Result<_, _>>().unwrap();
    assert_eq!(back, rows);
}

#[test]
fn nulls_and_options() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        id: i64,
        note: Option<String>,
    }
    let rows = [
        R { id: 1, note: None },
        R {
            id: 2,
            note: Some("x".into()),
        },
    ];
    let batch = build(&rows);
    assert!(
        batch.column("id").unwrap().nulls.is_empty(),
        "no bitmap without nulls"
    );
    let note = batch.column("note").unwrap();
    assert!(note.is_null(0) && !note.is_null(1));
    assert_eq!(note.nulls, [0b01]);
    assert_eq!(note.scalar(0), Some(Scalar::Null));
    assert_eq!(
        batch.rows::<R>().collect::<Result<Vec<_>, _>>().unwrap(),
        rows
    );
}

#[test]
fn columns_added_late_are_backfilled_and_missing_fields_are_null() {
    let batch = build(&[
        json!({"a": 1}),
        json!({"a": 2}),
        json!({"b": "x", "a": 3}),
        json!({"a": 4}),
    ]);
    let b = batch.column("b").unwrap();
    assert_eq!(b.len(), 4);
    assert_eq!(
        (0..4).map(|i| b.is_null(i)).collect::<Vec<_>>(),
        [true, true, false, true]
    );
    assert_eq!(b.text_at(2), Some("x"));
    assert_eq!(
        batch.column("a").unwrap().values,
        Values::Integer(vec![1, 2, 3, 4])
    );
}

#[test]
fn a_column_that_was_only_null_takes_the_first_real_type() {
    let batch = build(&[json!({"v": null}), json!({"v": 5})]);
    let v = batch.column("v").unwrap();
    assert_eq!(v.values, Values::Integer(vec![0, 5]));
    assert!(v.is_null(0));

    let mut b = BatchBuilder::new();
    b.push(&json!({"v": null, "w": "t"})).unwrap();
    let before = b.clone().finish();
    assert!(
        b.push(&json!({"v": 5, "w": 1})).is_err(),
        "retypes v, then fails on w"
    );
    assert_eq!(b.clone().finish(), before);
    b.push(&json!({"v": true})).unwrap();
    assert_eq!(
        b.finish().column("v").unwrap().values,
        Values::Boolean(vec![false, true])
    );
}

#[test]
fn rollback_after_type_conflict_leaves_the_builder_unchanged_and_usable() {
    let mut b = BatchBuilder::new();
    b.push(&json!({"id": 1, "amount": 2, "tag": "a"})).unwrap();
    b.push(&json!({"id": 2, "amount": 3})).unwrap();
    let before = b.clone().finish();
    // Promotes `amount`, adds a null to `id`, creates `fresh`, then fails on `tag`.
    let err = b
        .push(&json!({"amount": 2.5, "id": null, "fresh": [1], "tag": 7}))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 2: field \"tag\": expected text, found an integer"
    );
    assert_eq!(b.clone().finish(), before);
    assert!(b.push(&json!({"id": 3, "amount": 4, "tag": "c"})).is_ok());
    let after = b.finish();
    assert_eq!(after.len, 3);
    assert!(after.column("fresh").is_none());
    assert_eq!(
        after.column("amount").unwrap().values,
        Values::Integer(vec![2, 3, 4])
    );
    assert_eq!(after.select(&[0, 1]), before.select(&[0, 1]));
}

#[test]
fn integers_and_floats_mix_into_a_float_column() {
    let batch = build(&[json!({"x": 1}), json!({"x": 2.5}), json!({"x": 3})]);
    assert_eq!(
        batch.column("x").unwrap().values,
        Values::Float(vec![1.0, 2.5, 3.0])
    );
    #[derive(Deserialize)]
    struct R {
        x: f64,
    }
    let ints = build(&[json!({"x": 7})]);
    assert_eq!(
        ints.row::<R>(0).unwrap().x,
        7.0,
        "integer column reads into f64"
    );
}

#[test]
fn nested_struct_is_stored_as_json() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Outer {
        inner: Option<Inner>,
    }
    let rows = [
        Outer {
            inner: Some(Inner {
                a: 1,
                b: vec!["q\"".into()],
            }),
        },
        Outer { inner: None },
    ];
    let batch = build(&rows);
    let Values::Json(p) = &batch.column("inner").unwrap().values else {
        panic!("not json")
    };
    assert_eq!(p.get(0).unwrap(), br#"{"a":1,"b":["q\""]}"#);
    assert_eq!(
        batch
            .rows::<Outer>()
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        rows
    );
    assert_eq!(batch.row_json(0)["inner"], json!({"a": 1, "b": ["q\""]}));
}

#[test]
fn text_is_borrowed_from_the_batch() {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct R<'a> {
        user_name: &'a str,
        #[serde(default)]
        score: i64,
    }
    let batch = build(&[json!({"userName": "ada"})]);
    let r: R<'_> = batch.row(0).unwrap();
    assert_eq!((r.user_name, r.score), ("ada", 0));
    let Values::Text(p) = &batch.column("userName").unwrap().values else {
        panic!()
    };
    assert!(std::ptr::eq(r.user_name.as_ptr(), p.data.as_ptr()));
}

#[test]
fn select_and_append() {
    let a = build(&[
        json!({"id": 1, "v": 1}),
        json!({"id": 2, "v": 2}),
        json!({"id": 3, "v": null}),
    ]);
    let picked = a.select(&[2, 0]);
    assert_eq!(picked.len, 2);
    assert_eq!(
        picked.column("id").unwrap().values,
        Values::Integer(vec![3, 1])
    );
    assert!(picked.column("v").unwrap().is_null(0));

    let mut joined = picked.clone();
    joined
        .append(build(&[json!({"extra": "e", "v": 0.5, "id": 9})]))
        .unwrap();
    assert_eq!(joined.len, 3);
    assert_eq!(
        joined.column("v").unwrap().values,
        Values::Float(vec![0.0, 1.0, 0.5])
    );
    let extra = joined.column("extra").unwrap();
    assert!(extra.is_null(0) && extra.is_null(1) && !extra.is_null(2));
    assert_eq!(
        joined.row_json(2),
        json!({"id": 9, "v": 0.5, "extra": "e"})
            .as_object()
            .unwrap()
            .clone()
    );

    let before = joined.clone();
    let err = joined.append(build(&[json!({"id": "text"})])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field \"id\": expected an integer, found text"
    );
    assert_eq!(joined, before);

    let all = Batch::concat([a.clone(), a.select(&[]), a]).unwrap();
    assert_eq!(all.len, 6);
}

#[test]
fn raw_batch_records_with_headers_and_null_keys() {
    let mut raw = RawBatch::new();
    raw.push(Some(b"k0"), b"p0", 10, 0, 100, &[("h", b"1"), ("h2", b"2")]);
    raw.push(None, b"p1", 11, 1, 101, &[]);
    raw.push(Some(b""), b"\xff", 12, 2, 102, &[("only", b"x")]);
    assert_eq!(raw.len, 3);
    assert_eq!(raw.key_nulls, [0b010]);
    let r0 = raw.record(0).unwrap();
    assert_eq!(r0.headers, [("h", &b"1"[..]), ("h2", &b"2"[..])]);
    let r1 = raw.record(1).unwrap();
    assert_eq!(
        (r1.key, r1.payload_str().unwrap(), r1.partition),
        (None, "p1", 1)
    );
    assert!(raw.record(3).is_none());
    assert!(matches!(
        raw.record(2).unwrap().payload_str(),
        Err(RowError::InvalidUtf8)
    ));
    let sel = raw.select(&[2, 1]);
    let recs: Vec<_> = sel.iter().collect();
    assert_eq!(recs[0].key, Some(&b""[..]));
    assert_eq!(recs[0].headers, [("only", &b"x"[..])]);
    assert_eq!(recs[0].offset, 102);
    assert_eq!(recs[1].key, None);
    assert_eq!(sel.headers[0].record, 0);
}

#[test]
fn scalar_works_as_a_hash_and_ordered_key() {
    let mut m = HashMap::new();
    for s in [
        Scalar::Float(f64::NAN),
        Scalar::Float(f64::NAN),
        Scalar::from(1),
        Scalar::from(1.0),
    ] {
        *m.entry(s).or_insert(0) += 1;
    }
    assert_eq!(m[&Scalar::Float(f64::NAN)], 2);
    assert_eq!(m.len(), 3, "Integer(1) and Float(1.0) are distinct keys");
    let sorted: BTreeMap<Scalar, ()> = [
        Scalar::from("b"),
        Scalar::Null,
        Scalar::from(-1.5),
        Scalar::from(true),
    ]
    .into_iter()
    .map(|s| (s, ()))
    .collect();
    let order: Vec<String> = sorted.keys().map(Scalar::to_string).collect();
    assert_eq!(order, ["null", "true", "-1.5", "b"]);
    assert_eq!(
        Scalar::Float(f64::INFINITY).to_json(),
        serde_json::Value::Null
    );
}

#[test]
fn row_json_converts_every_column_kind() {
    #[derive(Serialize)]
    struct R {
        b: bool,
        n: Option<i64>,
        raw: Bin,
        nested: BTreeMap<String, i32>,
    }
    let batch = build(&[R {
        b: true,
        n: None,
        raw: Bin(vec![1, 2]),
        nested: [("k".into(), 1)].into(),
    }]);
    let expected = json!({"b": true, "n": null, "raw": [1, 2], "nested": {"k": 1}});
    assert_eq!(serde_json::Value::Object(batch.row_json(0)), expected);
}

#[test]
fn invalid_utf8_text_is_an_error_naming_row_and_field() {
    let mut p = Packed::new();
    p.push(b"ok");
    p.push(b"\xff\xfe");
    let batch = Batch {
        len: 2,
        columns: vec![Column::new("s", Values::Text(p))],
    };
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct R {
        s: String,
    }
    assert!(batch.row::<R>(0).is_ok());
    let err = batch.row::<R>(1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 1: field \"s\": text value is not valid UTF-8"
    );
    assert_eq!(batch.column("s").unwrap().text_at(1), None);
}

#[test]
fn u64_beyond_i64_is_an_error() {
    #[derive(Serialize)]
    struct R {
        v: u64,
    }
    let mut b = BatchBuilder::new();
    b.push(&R { v: 1 }).unwrap();
    let err = b.push(&R { v: u64::MAX }).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("value 18446744073709551615 does not fit a 64-bit signed integer"),
        "{err}"
    );
    assert_eq!(
        b.finish().column("v").unwrap().values,
        Values::Integer(vec![1])
    );
}

#[test]
fn read_errors_describe_the_problem() {
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct R {
        amount: Option<f64>,
        status: String,
    }
    let batch = build(&[
        json!({"status": "a"}),
        json!({"amount": "lots", "status": "b"}),
        json!({"amount": null, "status": "c"}),
        json!({"amount": null}),
    ]);
    assert!(batch.row::<R>(0).is_ok() && batch.row::<R>(2).is_ok());
    let err = |i| batch.row::<R>(i).unwrap_err().to_string();
    assert_eq!(
        err(1),
        "row 1: field \"amount\": expected a number, found text"
    );
    assert_eq!(err(3), "row 3: missing field \"status\"");
    assert_eq!(err(4), "row 4 is out of range for a batch of 4 rows");
}

#[test]
fn plain_values_use_a_single_value_column() {
    let batch = build(&[Some(3_i64), None]);
    assert_eq!(batch.columns.len(), 1);
    assert_eq!(batch.columns[0].name, "value");
    assert_eq!(
        batch
            .rows::<Option<i64>>()
            .map(|r| r.unwrap())
            .collect::<Vec<_>>(),
        [Some(3), None]
    );
    let strings = build(&["a", "b"]);
    assert_eq!(strings.row::<&str>(1).unwrap(), "b");
    let two = build(&[json!({"a": 1, "b": 2})]);
    assert!(matches!(two.row::<i64>(0), Err(RowError::Row { .. })));
}

#[test]
fn map_with_integer_keys_and_duplicate_fields() {
    let batch = build(&[BTreeMap::from([(1, "one"), (2, "two")])]);
    assert_eq!(batch.column("2").unwrap().text_at(0), Some("two"));
    #[derive(Serialize)]
    struct Dup {
        a: i32,
        #[serde(rename = "a")]
        b: i32,
    }
    let err = BatchBuilder::new().push(&Dup { a: 1, b: 2 }).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 0: field \"a\": field appears more than once in the row"
    );
}

#[test]
fn huge_strings_round_trip() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        big: String,
        n: i32,
    }
    let rows = [
        R {
            big: "x".repeat(1 << 20),
            n: 1,
        },
        R {
            big: "é".repeat(1 << 19),
            n: 2,
        },
    ];
    let batch = build(&rows);
    let Values::Text(p) = &batch.column("big").unwrap().values else {
        panic!()
    };
    assert_eq!(p.data.len(), 2 << 20);
    assert_eq!(
        batch.rows::<R>().collect::<Result<Vec<_>, _>>().unwrap(),
        rows
    );
}

#[test]
fn builder_reuses_column_hints_when_field_order_changes() {
    let batch = build(&[
        json!({"a": 1, "b": 2}),
        json!({"b": 3, "a": 4}),
        json!({"c": 5}),
    ]);
    assert_eq!(
        batch.column("a").unwrap().values,
        Values::Integer(vec![1, 4, 0])
    );
    assert_eq!(
        batch.column("b").unwrap().values,
        Values::Integer(vec![2, 3, 0])
    );
    assert_eq!(batch.column("c").unwrap().nulls, [0b011]);
}

#[derive(Serialize)]
struct Ab {
    a: i64,
    b: &'static str,
}

#[derive(Serialize)]
struct Ba {
    b: &'static str,
    z: i64,
}

#[test]
fn struct_field_hints_survive_a_dropped_column_taking_their_index() {
    let mut builder = BatchBuilder::new();
    builder.push(&Ab { a: 1, b: "x" }).unwrap();
    // A row that adds a column and fails drops it; a later row's new column takes its
    // index, and the struct's hint for that position must not lead there.
    assert!(builder.push(&json!({"a": 2, "n": 1, "b": 3})).is_err());
    builder.push(&Ba { b: "y", z: 7 }).unwrap();
    builder.push(&Ab { a: 3, b: "w" }).unwrap();
    builder.truncate(2);
    builder.push(&json!({"q": true})).unwrap();
    builder.push(&Ba { b: "v", z: 8 }).unwrap();
    let batch = builder.finish();
    assert_eq!(batch.len, 4);
    assert_eq!(
        batch.column("a").unwrap().values,
        Values::Integer(vec![1, 0, 0, 0])
    );
    assert_eq!(
        batch.column("z").unwrap().values,
        Values::Integer(vec![0, 7, 0, 8])
    );
    assert_eq!(batch.column("q").unwrap().nulls, [0b1011]);
    let names: Vec<&str> = batch.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "z", "q"]);
}

#[test]
fn json_objects_go_straight_to_columns_like_their_maps() {
    // (line, whether the direct path takes it); a taken line must give the map's row.
    let lines: [(&[u8], bool); 6] = [
        (br#"{"a":1,"b":"x","n":{"k":[1,2.5,null]}}"#, true),
        (br#"{"b":"y","a":2.5,"c":null}"#, true),
        (br#"{"a":"no"}"#, false),
        (br#"{"a":1,"a":2}"#, false),
        (br#"{"\u0062":"esc"}"#, true),
        (b"{\"b\":", false),
    ];
    let mut fast = BatchBuilder::new();
    let mut reference = BatchBuilder::new();
    for (line, taken) in lines {
        assert_eq!(
            fast.push_json_object(line).is_ok(),
            taken,
            "{}",
            String::from_utf8_lossy(line)
        );
        if taken {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(line).unwrap();
            reference.push(&map).unwrap();
        }
    }
    assert_eq!(fast.finish(), reference.finish());
}

#[test]
fn text_values_split_inside_a_character_are_not_text() {
    // "é" is C3 A9: the buffer as a whole is valid UTF-8, but each value holds half of it.
    let mut p = Packed::new();
    p.push(&[0xC3]);
    p.push(&[0xA9]);
    p.push("né".as_bytes());
    p.push(b"");
    assert!(std::str::from_utf8(&p.data).is_ok());
    let text: Vec<_> = p.iter_text().collect();
    assert_eq!(text, [Err(&[0xC3][..]), Err(&[0xA9][..]), Ok("né"), Ok("")]);
}
