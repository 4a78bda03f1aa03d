//! `rivulet udf test` and `rivulet udf inspect`: run or describe one component locally.

use anyhow::Context;
use clap::{Args, Subcommand};
use rivulet::aggregate::AccBudget;
use rivulet::emit::row_object;
use rivulet::spec::{TableSource, TableSpec};
use rivulet::stage::AggregateStage;
use rivulet::stage::isolate;
use rivulet::stage::wasm::{WasmAggregate, WasmFormat, WasmMap, WasmParse};
use rivulet::udf::limits::human_bytes;
use rivulet::udf::{CacheOutcome, Kind, Limits, ModuleCache, Runtime, UdfModule};
use rivulet_rows::{Batch, BatchBuilder, RawBatch, RecordError, RowsOut, Scalar, WindowAcc};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum UdfCommand {
    /// Run a UDF over a file: one record (parse) or one JSON row (map, aggregate, format)
    /// per line. Prints each output or per-record error.
    Test(TestArgs),
    /// Print a UDF's kind, size, hash, imports and exports.
    Inspect {
        /// The component (`.wasm`).
        module: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The component (`.wasm`).
    module: PathBuf,
    /// Input file (`-` for stdin).
    #[arg(long, short)]
    input: PathBuf,
    /// Records per call into the component.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_size: u32,
    /// Aggregates: the field to group rows by (default: one group).
    #[arg(long)]
    key: Option<String>,
    /// Aggregates: the window's start (inclusive), epoch milliseconds or ISO-8601 text. With
    /// `--window-end` and `--timestamp`, only rows in the window are added; the bounds are
    /// handed to `finish`.
    #[arg(long, value_parser = instant, requires_all = ["window_end", "timestamp"])]
    window_start: Option<i64>,
    /// Aggregates: the window's end (exclusive), epoch milliseconds or ISO-8601 text.
    #[arg(long, value_parser = instant, requires_all = ["window_start", "timestamp"])]
    window_end: Option<i64>,
    /// Aggregates: the row field holding each row's event time (epoch milliseconds or
    /// ISO-8601 text), which decides whether the row is in the window.
    #[arg(long, requires_all = ["window_start", "window_end"])]
    timestamp: Option<String>,
    /// Memory cap of the component, in MiB.
    #[arg(long, default_value_t = 32)]
    memory_mib: usize,
    /// CPU deadline per batch, a duration like "200ms" or "1s".
    #[arg(long, default_value = "200ms", value_parser = super::run::duration)]
    cpu_limit: Duration,
    /// Map steps: a reference table the step may read with `lookup`, as `NAME:KEY=FILE`
    /// (a JSON-lines or CSV file keyed by column KEY), e.g.
    /// `regions:region=samples/regions.jsonl`. Repeat for more tables.
    #[arg(long = "table", value_parser = table_arg, value_name = "NAME:KEY=FILE")]
    tables: Vec<TableSpec>,
}

/// `--table NAME:KEY=FILE`.
fn table_arg(text: &str) -> Result<TableSpec, String> {
    let usage =
        || format!("{text:?} is not NAME:KEY=FILE (e.g. regions:region=samples/regions.jsonl)");
    let (names, path) = text.split_once('=').ok_or_else(usage)?;
    let (name, key) = names.split_once(':').ok_or_else(usage)?;
    if name.trim().is_empty() || key.trim().is_empty() || path.trim().is_empty() {
        return Err(usage());
    }
    Ok(TableSpec {
        name: name.to_owned(),
        key: key.to_owned(),
        source: TableSource::File {
            path: PathBuf::from(path),
            format: None,
            columns: None,
        },
        types: BTreeMap::new(),
    })
}

/// An instant on the command line: epoch milliseconds or ISO-8601 text.
fn instant(text: &str) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(millis) => Ok(millis),
        Err(_) => rivulet_rows::time::parse_iso8601(text).map_err(|err| err.to_string()),
    }
}

/// The window `udf test` aggregates over: `[start, end)` on the rows' `field`.
struct Window<'a> {
    start: i64,
    end: i64,
    field: &'a str,
}

impl Window<'_> {
    /// Whether row `row` falls in the window; `Err` says why its time cannot be read.
    fn contains(&self, batch: &Batch, row: usize) -> Result<bool, String> {
        let field = self.field;
        let millis = match batch.column(field).and_then(|c| c.scalar(row)) {
            None | Some(Scalar::Null) => {
                return Err(format!("no event time: field `{field}` is missing"));
            }
            Some(Scalar::Integer(ms)) => ms,
            Some(Scalar::Float(ms)) if ms.is_finite() => ms as i64,
            Some(Scalar::Text(text)) => rivulet_rows::time::parse_iso8601(&text)
                .map_err(|err| format!("no event time: field `{field}`: {err}"))?,
            Some(_) => {
                return Err(format!(
                    "no event time: field `{field}` is not a number of milliseconds or ISO-8601 text"
                ));
            }
        };
        Ok(self.start <= millis && millis < self.end)
    }
}

pub fn run(command: UdfCommand) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(ModuleCache::default_location())?;
    match command {
        UdfCommand::Inspect { module } => inspect(&runtime, &module),
        UdfCommand::Test(args) => test(&runtime, &args),
    }
}

fn inspect(runtime: &Runtime, path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let module = UdfModule::load(runtime, path)?;
    // The same check every stage makes before it starts: imports and export types.
    rivulet::udf::instance::type_check(runtime, &module)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "module   {}", path.display())?;
    writeln!(
        out,
        "kind     {} (world rivulet:udf/{}@0.1.0)",
        module.kind, module.kind
    )?;
    writeln!(
        out,
        "size     {} ({} bytes)",
        human_bytes(module.size),
        module.size
    )?;
    writeln!(out, "sha256   {}", module.hash)?;
    let cache = match module.cache {
        CacheOutcome::Hit => "cache hit",
        CacheOutcome::Miss => "compiled, now cached",
        CacheOutcome::Disabled => "compiled, cache off",
    };
    writeln!(
        out,
        "load     {} ms ({cache})",
        module.load_time.as_millis()
    )?;
    if module.kind == Kind::Aggregate {
        let mut stage = WasmAggregate::new(runtime, &module, &stage_name(path), Limits::default())?;
        writeln!(out, "state    version {}", stage.state_version()?)?;
    }
    writeln!(out, "exports  {}", module.exports.join(", "))?;
    writeln!(out, "imports  {}", module.imports.len())?;
    for import in &module.imports {
        writeln!(out, "  {import}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn stage_name(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "udf".to_owned())
}

fn read_lines(path: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read input {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut lines = Vec::new();
    for line in reader.split(b'\n') {
        let mut line = line.with_context(|| format!("cannot read input {}", path.display()))?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        lines.push(line);
    }
    Ok(lines)
}

/// Refuses an input that is one JSON array (a file of orders as `[{...}, {...}]`): each
/// line is one record or row, so it would be read as pieces of the array.
fn refuse_json_array(path: &std::path::Path, lines: &[Vec<u8>]) -> anyhow::Result<()> {
    let first = lines
        .iter()
        .map(|l| l.trim_ascii_start())
        .find(|l| !l.is_empty());
    if first.is_none_or(|l| !l.starts_with(b"[")) {
        return Ok(());
    }
    let whole = lines.join(&b'\n');
    match serde_json::from_slice::<Vec<serde_json::Value>>(&whole) {
        Ok(items)
            if lines.iter().filter(|l| !l.trim_ascii().is_empty()).count() > 1
                || items.iter().all(serde_json::Value::is_object) =>
        {
            anyhow::bail!(
                "{} is one JSON array, but `rivulet udf test` reads one JSON value per line \
                 (JSON Lines): put each element on its own line, e.g. `jq -c '.[]' {}`",
                path.display(),
                path.display()
            )
        }
        _ => Ok(()),
    }
}

/// Totals printed at the end of a run.
#[derive(Default)]
struct Tally {
    records: usize,
    outputs: usize,
    errors: usize,
    /// Rows outside `udf test`'s window (aggregates), not added.
    outside: usize,
}

fn test(runtime: &Runtime, args: &TestArgs) -> anyhow::Result<ExitCode> {
    let module = UdfModule::load(runtime, &args.module)?;
    let lines = read_lines(&args.input)?;
    refuse_json_array(&args.input, &lines)?;
    let limits = Limits {
        memory_bytes: args.memory_mib << 20,
        cpu_per_batch: args.cpu_limit,
        ..Limits::default()
    };
    let stage = stage_name(&args.module);
    let mut out = std::io::stdout().lock();
    let mut tally = Tally::default();
    let chunk = args.batch_size as usize;
    match module.kind {
        Kind::Parse => {
            let mut udf = WasmParse::new(runtime, &module, &stage, limits)?;
            for (first, lines) in (0..).step_by(chunk).zip(lines.chunks(chunk)) {
                let mut batch = RawBatch::new();
                for (i, line) in lines.iter().enumerate() {
                    batch.push(None, line, 0, 0, (first + i) as i64, &[]);
                }
                // As in a job: a failing batch is retried in parts, so only the records
                // that cause it get the error.
                let result = isolate::parse(&mut udf, &batch).map(|c| c.out);
                print_rows(&mut out, &mut tally, first, lines.len(), result)?;
            }
        }
        Kind::Map | Kind::Format => {
            if module.reads_tables() && args.tables.is_empty() {
                anyhow::bail!(
                    "{} looks rows up in reference tables: give it each table it reads with --table NAME:KEY=FILE (e.g. --table regions:region=samples/regions.jsonl)",
                    args.module.display()
                );
            }
            let tables = rivulet::table::Tables::open(&args.tables, None)?;
            let names: Vec<String> = args.tables.iter().map(|t| t.name.clone()).collect();
            let reads = tables.reads(&stage, &names).map_err(anyhow::Error::msg)?;
            let mut map = (module.kind == Kind::Map)
                .then(|| WasmMap::reading(runtime, &module, &stage, limits, reads))
                .transpose()?;
            let mut format = (module.kind == Kind::Format)
                .then(|| WasmFormat::new(runtime, &module, &stage, limits))
                .transpose()?;
            for (first, lines) in (0..).step_by(chunk).zip(lines.chunks(chunk)) {
                let (batch, positions) = json_rows(&mut out, &mut tally, first, lines)?;
                if let Some(udf) = map.as_mut() {
                    let result = isolate::map(udf, &batch).map(|c| c.out);
                    print_rows_at(&mut out, &mut tally, &positions, result)?;
                } else if let Some(udf) = format.as_mut() {
                    let result = isolate::format(udf, &batch).map(|c| c.out);
                    print_encoded(&mut out, &mut tally, &positions, result)?;
                }
            }
        }
        Kind::Aggregate => aggregate(
            runtime, &module, &stage, limits, args, &lines, &mut out, &mut tally,
        )?,
    }
    write!(
        out,
        "-- {} records in, {} outputs, {} errors",
        tally.records, tally.outputs, tally.errors
    )?;
    if tally.outside > 0 {
        write!(out, ", {} outside the window", tally.outside)?;
    }
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

/// Parses JSON rows; lines that are not JSON objects are reported and skipped. Returns the
/// batch and, for each of its rows, its line index.
fn json_rows(
    out: &mut impl Write,
    tally: &mut Tally,
    first: usize,
    lines: &[Vec<u8>],
) -> anyhow::Result<(Batch, Vec<usize>)> {
    let mut builder = BatchBuilder::new();
    let mut positions = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        tally.records += 1;
        let pushed = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line)
            .map_err(|err| format!("not a JSON object: {err}"))
            .and_then(|row| builder.push(&row).map_err(|err| err.to_string()));
        match pushed {
            Ok(()) => positions.push(first + i),
            Err(message) => {
                tally.errors += 1;
                writeln!(out, "{}: error: {message}", first + i + 1)?;
            }
        }
    }
    Ok((builder.finish(), positions))
}

fn print_rows(
    out: &mut impl Write,
    tally: &mut Tally,
    first: usize,
    count: usize,
    result: Result<RowsOut, rivulet::udf::UdfError>,
) -> anyhow::Result<()> {
    tally.records += count;
    let positions: Vec<usize> = (first..first + count).collect();
    print_rows_at(out, tally, &positions, result)
}

fn print_rows_at(
    out: &mut impl Write,
    tally: &mut Tally,
    positions: &[usize],
    result: Result<RowsOut, rivulet::udf::UdfError>,
) -> anyhow::Result<()> {
    let rows = match result {
        Ok(rows) => rows,
        Err(err) => {
            for position in positions {
                writeln!(out, "{}: error: {err}", position + 1)?;
            }
            tally.errors += positions.len();
            return Ok(());
        }
    };
    let mut errors: BTreeMap<u32, &RecordError> = BTreeMap::new();
    for error in &rows.errors {
        errors.insert(error.index, error);
    }
    let mut produced = rows.origins.iter().enumerate().peekable();
    for (index, position) in (0u32..).zip(positions) {
        while let Some((row, _)) = produced.next_if(|(_, origin)| **origin == index) {
            writeln!(
                out,
                "{}: {}",
                position + 1,
                serde_json::Value::Object(row_object(&rows.rows, row))
            )?;
            tally.outputs += 1;
        }
        if let Some(error) = errors.get(&index) {
            writeln!(out, "{}: error: {}", position + 1, error.message)?;
            tally.errors += 1;
        }
    }
    Ok(())
}

fn print_encoded(
    out: &mut impl Write,
    tally: &mut Tally,
    positions: &[usize],
    result: Result<rivulet_rows::Encoded, rivulet::udf::UdfError>,
) -> anyhow::Result<()> {
    let encoded = match result {
        Ok(encoded) => encoded,
        Err(err) => {
            for position in positions {
                writeln!(out, "{}: error: {err}", position + 1)?;
            }
            tally.errors += positions.len();
            return Ok(());
        }
    };
    let errors: BTreeMap<u32, &RecordError> = encoded.errors.iter().map(|e| (e.index, e)).collect();
    for (index, position) in positions.iter().enumerate() {
        if let Some(error) = errors.get(&(index as u32)) {
            writeln!(out, "{}: error: {}", position + 1, error.message)?;
            tally.errors += 1;
            continue;
        }
        let payload = encoded.payloads.get(index).unwrap_or_default();
        let key = encoded
            .keys
            .as_ref()
            .and_then(|k| k.get(index))
            .filter(|k| !k.is_empty());
        match key {
            Some(key) => writeln!(
                out,
                "{}: [{}] {}",
                position + 1,
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(payload)
            )?,
            None => writeln!(
                out,
                "{}: {}",
                position + 1,
                String::from_utf8_lossy(payload)
            )?,
        }
        tally.outputs += 1;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn aggregate(
    runtime: &Runtime,
    module: &UdfModule,
    stage: &str,
    limits: Limits,
    args: &TestArgs,
    lines: &[Vec<u8>],
    out: &mut impl Write,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let mut udf = WasmAggregate::new(runtime, module, stage, limits)?;
    let empty = udf.create()?;
    let mut groups: BTreeMap<Scalar, Vec<u8>> = BTreeMap::new();
    let chunk = args.batch_size as usize;
    let window = match (
        args.window_start,
        args.window_end,
        args.timestamp.as_deref(),
    ) {
        (Some(start), Some(end), Some(field)) => {
            if end <= start {
                anyhow::bail!("--window-end ({end}) must be after --window-start ({start})");
            }
            Some(Window { start, end, field })
        }
        _ => None,
    };
    for (first, lines) in (0..).step_by(chunk).zip(lines.chunks(chunk)) {
        let (batch, positions) = json_rows(out, tally, first, lines)?;
        let (batch, positions) = match &window {
            Some(window) => in_window(out, tally, window, &batch, &positions)?,
            None => (batch, positions),
        };
        let keys: Vec<Scalar> = (0..batch.len as usize)
            .map(|row| {
                args.key
                    .as_deref()
                    .and_then(|key| batch.column(key))
                    .and_then(|column| column.scalar(row))
                    .unwrap_or(Scalar::Null)
            })
            .collect();
        let mut order: Vec<Scalar> = Vec::new();
        let mut index: BTreeMap<&Scalar, u32> = BTreeMap::new();
        let assigned: Vec<u32> = keys
            .iter()
            .map(|key| {
                *index.entry(key).or_insert_with(|| {
                    order.push(key.clone());
                    (order.len() - 1) as u32
                })
            })
            .collect();
        let accs: Vec<Vec<u8>> = order
            .iter()
            .map(|key| groups.get(key).cloned().unwrap_or_else(|| empty.clone()))
            .collect();
        // As in a job: a failing batch is retried in parts (and the stage's accumulator cap
        // applies per key).
        let mut budget = AccBudget {
            cap: limits.accumulator_bytes,
            held: groups.values().map(Vec::len).sum(),
        };
        let mut admit = |group: u32, old: usize, new: usize| {
            budget.admit(old, new).map_err(|total| {
                let key = order.get(group as usize).unwrap_or(&Scalar::Null);
                budget.refusal(key, args.window_start.unwrap_or(0), new, total)
            })
        };
        match isolate::add(&mut udf, accs, &batch, &assigned, &mut admit) {
            Ok(added) => {
                for error in &added.errors {
                    let line = positions.get(error.index as usize).map_or(0, |p| p + 1);
                    writeln!(out, "{line}: error: {}", error.message)?;
                    tally.errors += 1;
                }
                for (key, acc) in order.into_iter().zip(added.accs) {
                    groups.insert(key, acc);
                }
            }
            Err(err) => {
                for position in &positions {
                    writeln!(out, "{}: error: {err}", position + 1)?;
                }
                tally.errors += positions.len();
            }
        }
    }
    let windows: Vec<WindowAcc> = groups
        .into_iter()
        .map(|(key, acc)| WindowAcc {
            key,
            window_start: args.window_start.unwrap_or(0),
            window_end: args.window_end.unwrap_or(0),
            acc,
        })
        .collect();
    let keys: Vec<Scalar> = windows.iter().map(|w| w.key.clone()).collect();
    let finished = isolate::finish(&mut udf, windows, (&limits).into())?;
    for (row, origin) in finished.origins.iter().enumerate() {
        let key = keys
            .get(*origin as usize)
            .map(ToString::to_string)
            .unwrap_or_default();
        writeln!(
            out,
            "result [{key}]: {}",
            serde_json::Value::Object(row_object(&finished.rows, row))
        )?;
        tally.outputs += 1;
    }
    for error in &finished.errors {
        writeln!(out, "result error: {}", error.message)?;
        tally.errors += 1;
    }
    Ok(())
}

/// The rows of `batch` in `window` (and their line positions); the others are reported.
fn in_window(
    out: &mut impl Write,
    tally: &mut Tally,
    window: &Window<'_>,
    batch: &Batch,
    positions: &[usize],
) -> anyhow::Result<(Batch, Vec<usize>)> {
    let mut kept = Vec::new();
    for (row, position) in positions.iter().enumerate() {
        match window.contains(batch, row) {
            Ok(true) => kept.push(row as u32),
            Ok(false) => {
                writeln!(out, "{}: outside the window, not added", position + 1)?;
                tally.outside += 1;
            }
            Err(message) => {
                writeln!(out, "{}: error: {message}", position + 1)?;
                tally.errors += 1;
            }
        }
    }
    let kept_positions = kept.iter().map(|&row| positions[row as usize]).collect();
    Ok((batch.select(&kept), kept_positions))
}
