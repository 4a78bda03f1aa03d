//! Components that break the contract on command, written against the raw WIT (no SDK), for
//! the host's contract tests. One crate, one world per build: `--features parse` (or `map`,
//! `aggregate`, `format`); `just udfs` builds all four as `breach_guest_<world>.wasm`.
//!
//! Each input record carries a command: a parse record's payload, a map or format row's
//! `command` text column, an aggregate row's `command` column (for `add`) or a window's key
//! (for `finish`). Most commands echo: one row `{"command": <command>}` per record, or one
//! payload per row. These break the contract for the whole call:
//!
//! | command | breach |
//! |---|---|
//! | `offset-past` | text offsets from this row on point past the data |
//! | `offset-back` | this row's end offset is before its start |
//! | `bad-utf8` | this row's text is not UTF-8 |
//! | `bad-json` | a `json` column whose value in this row is not JSON |
//! | `dup-column` | a second column named `command` |
//! | `row-and-error` | this record has a row (payload) and an error |
//! | `two-errors` | this record has two errors |
//! | `payload-past` / `payload-back` | (format) payload offsets past the data / decreasing |
//! | `finish-all-to-first` | (finish) every window's result is given for window 0 |
//! | `finish-skip` | (finish) this window gets no result and no error |
//!
//! `fail` is an honest per-record error; anything else is echoed.

#[cfg(all(
    target_arch = "wasm32",
    any(
        feature = "parse",
        feature = "map",
        feature = "aggregate",
        feature = "format"
    )
))]
mod guest {
    #[cfg(feature = "parse")]
    wit_bindgen::generate!({ path: "../../../../wit", world: "parse" });
    #[cfg(feature = "map")]
    wit_bindgen::generate!({ path: "../../../../wit", world: "map" });
    #[cfg(feature = "aggregate")]
    wit_bindgen::generate!({ path: "../../../../wit", world: "aggregate" });
    #[cfg(feature = "format")]
    wit_bindgen::generate!({ path: "../../../../wit", world: "format" });

    #[allow(unused_imports)]
    use rivulet::udf::types::*;

    struct Breach;

    fn packed(values: &[&[u8]]) -> Packed {
        let mut p = Packed {
            data: Vec::new(),
            offsets: vec![0],
        };
        for v in values {
            p.data.extend_from_slice(v);
            p.offsets.push(p.data.len() as u32);
        }
        p
    }

    fn error(index: u32, message: &str) -> RecordError {
        RecordError {
            index,
            message: message.to_owned(),
        }
    }

    /// The `command` text column of `batch`.
    #[allow(dead_code)]
    fn commands(batch: &Batch) -> Vec<String> {
        let column = batch.columns.iter().find(|c| c.name == "command");
        (0..batch.len as usize)
            .map(|i| match column.map(|c| &c.values) {
                Some(Values::Text(p)) => {
                    let (s, e) = (p.offsets[i] as usize, p.offsets[i + 1] as usize);
                    String::from_utf8_lossy(&p.data[s..e]).into_owned()
                }
                _ => String::new(),
            })
            .collect()
    }

    /// One row per command (an error for `fail`), then the breaches the commands ask for.
    #[allow(dead_code)]
    fn rows_out(commands: &[String]) -> RowsOut {
        let mut values: Vec<Vec<u8>> = Vec::new();
        let mut origins = Vec::new();
        let mut errors = Vec::new();
        let mut row_of = Vec::new();
        for (index, command) in (0u32..).zip(commands) {
            match command.as_str() {
                "fail" => errors.push(error(index, "refused on purpose")),
                "two-errors" => {
                    errors.push(error(index, "first"));
                    errors.push(error(index, "second"));
                }
                _ => {
                    if command == "row-and-error" {
                        errors.push(error(index, "and an error"));
                    }
                    row_of.push((command.as_str(), values.len()));
                    values.push(if command == "bad-utf8" {
                        vec![b'o', b'k', 0xC3, 0x28]
                    } else {
                        command.as_bytes().to_vec()
                    });
                    origins.push(index);
                }
            }
        }
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let mut text = packed(&refs);
        let mut columns = Vec::new();
        for &(command, row) in &row_of {
            match command {
                "offset-past" => {
                    let past = text.data.len() as u32 + 100;
                    for o in &mut text.offsets[row + 1..] {
                        *o = past;
                    }
                }
                "offset-back" => text.offsets[row + 1] = text.offsets[row].saturating_sub(1),
                "bad-json" => {
                    let docs: Vec<&[u8]> = row_of
                        .iter()
                        .map(|&(_, r)| if r == row { &b"{\"a\":"[..] } else { b"{}" })
                        .collect();
                    columns.push(Column {
                        name: "doc".into(),
                        nulls: Vec::new(),
                        values: Values::Json(packed(&docs)),
                    });
                }
                _ => {}
            }
        }
        let command = Column {
            name: "command".into(),
            nulls: Vec::new(),
            values: Values::Text(text),
        };
        if row_of.iter().any(|&(c, _)| c == "dup-column") {
            columns.push(command.clone());
        }
        columns.insert(0, command);
        RowsOut {
            rows: Batch {
                len: origins.len() as u32,
                columns,
            },
            origins,
            errors,
        }
    }

    #[cfg(feature = "parse")]
    impl Guest for Breach {
        fn parse(input: RawBatch) -> RowsOut {
            let p = &input.payloads;
            let commands: Vec<String> = (0..input.len as usize)
                .map(|i| {
                    let (s, e) = (p.offsets[i] as usize, p.offsets[i + 1] as usize);
                    String::from_utf8_lossy(&p.data[s..e]).into_owned()
                })
                .collect();
            rows_out(&commands)
        }
    }

    #[cfg(feature = "map")]
    impl Guest for Breach {
        fn map(input: Batch) -> RowsOut {
            rows_out(&commands(&input))
        }
    }

    #[cfg(feature = "format")]
    impl Guest for Breach {
        fn format(input: Batch) -> Encoded {
            let commands = commands(&input);
            let mut errors = Vec::new();
            let values: Vec<&[u8]> = (0u32..)
                .zip(&commands)
                .map(|(index, command)| match command.as_str() {
                    "fail" => {
                        errors.push(error(index, "refused on purpose"));
                        &b""[..]
                    }
                    "two-errors" => {
                        errors.push(error(index, "first"));
                        errors.push(error(index, "second"));
                        &b""[..]
                    }
                    "row-and-error" => {
                        errors.push(error(index, "and an error"));
                        command.as_bytes()
                    }
                    _ => command.as_bytes(),
                })
                .collect();
            let mut payloads = packed(&values);
            for (row, command) in commands.iter().enumerate() {
                match command.as_str() {
                    "payload-past" => {
                        let past = payloads.data.len() as u32 + 100;
                        for o in &mut payloads.offsets[row + 1..] {
                            *o = past;
                        }
                    }
                    "payload-back" => {
                        payloads.offsets[row + 1] = payloads.offsets[row].saturating_sub(1)
                    }
                    _ => {}
                }
            }
            Encoded {
                payloads,
                keys: None,
                errors,
            }
        }
    }

    #[cfg(feature = "aggregate")]
    fn count(acc: &[u8]) -> u64 {
        std::str::from_utf8(acc)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    #[cfg(feature = "aggregate")]
    impl Guest for Breach {
        fn state_version() -> u32 {
            1
        }

        fn create() -> Vec<u8> {
            b"0".to_vec()
        }

        /// Counts rows per group; `fail` and `two-errors` rows do not count.
        fn add(accs: Vec<Vec<u8>>, rows: Batch, groups: Vec<u32>) -> AddOut {
            let mut counts: Vec<u64> = accs.iter().map(|a| count(a)).collect();
            let mut errors = Vec::new();
            for ((index, command), &group) in (0u32..).zip(commands(&rows)).zip(&groups) {
                match command.as_str() {
                    "fail" => errors.push(error(index, "refused on purpose")),
                    "two-errors" => {
                        errors.push(error(index, "first"));
                        errors.push(error(index, "second"));
                    }
                    _ => {
                        if let Some(c) = counts.get_mut(group as usize) {
                            *c += 1;
                        }
                    }
                }
            }
            AddOut {
                accs: counts.iter().map(|c| c.to_string().into_bytes()).collect(),
                errors,
            }
        }

        fn merge(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<Vec<u8>>, String> {
            Ok(pairs
                .iter()
                .map(|(a, b)| (count(a) + count(b)).to_string().into_bytes())
                .collect())
        }

        /// One row `{"key": <key>, "count": <n>}` per window, unless a window's key asks
        /// for a breach.
        fn finish(windows: Vec<WindowAcc>) -> RowsOut {
            let key = |w: &WindowAcc| match &w.key {
                Scalar::Text(t) => t.clone(),
                _ => String::new(),
            };
            let all_to_first = windows.iter().any(|w| key(w) == "finish-all-to-first");
            let mut keys: Vec<Vec<u8>> = Vec::new();
            let mut counts = Vec::new();
            let mut origins = Vec::new();
            let mut errors = Vec::new();
            for (index, window) in (0u32..).zip(&windows) {
                match key(window).as_str() {
                    "finish-skip" => continue,
                    "fail" => {
                        errors.push(error(index, "refused on purpose"));
                        continue;
                    }
                    "row-and-error" => errors.push(error(index, "and an error")),
                    _ => {}
                }
                keys.push(key(window).into_bytes());
                counts.push(count(&window.acc) as i64);
                origins.push(if all_to_first { 0 } else { index });
            }
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            RowsOut {
                rows: Batch {
                    len: origins.len() as u32,
                    columns: vec![
                        Column {
                            name: "key".into(),
                            nulls: Vec::new(),
                            values: Values::Text(packed(&refs)),
                        },
                        Column {
                            name: "count".into(),
                            nulls: Vec::new(),
                            values: Values::Integer(counts),
                        },
                    ],
                },
                origins,
                errors,
            }
        }
    }

    export!(Breach);
}
