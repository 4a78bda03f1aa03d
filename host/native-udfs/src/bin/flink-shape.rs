//! Dev only: the helpers of `just bench-flink-shape` (see `scripts/bench-flink-shape`).
//!
//! * `flink-shape gen <orders> <file>`: the order file of issue #7's benchmark, always the
//!   same bytes for the same count: `<orders>` orders plus one truncated line per 1,000
//!   orders, 1,000 customers, 5 statuses, 5 regions, amounts 1.00–500.00, `tsMillis`
//!   advancing 10 ms per order minus a random 0–2 s disorder, `ts` the same instant in
//!   ISO-8601 with milliseconds.
//! * `flink-shape native <spec>`: runs a job spec (whose parse stage is replaced) with the
//!   workshop's parse-orders compiled natively, the very function the component runs.
//! * `flink-shape floor <file>`: reads the file and splits it into lines, nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool fails loudly

use rivulet::assemble::RunOptions;
use rivulet::pipeline::Pipeline;
use rivulet::spec::PipelineSpec;
use rivulet::udf::{ModuleCache, Runtime};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const STATUSES: [&str; 5] = ["NEW", "PENDING", "SHIPPED", "DELIVERED", "CANCELLED"];
const REGIONS: [&str; 5] = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"];
/// 2024-05-23T12:35:00Z.
const T0: i64 = 1_716_467_700_000;

/// SplitMix64: a fixed, dependency-free generator, so the file never changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the bias of a 64-bit modulo is negligible here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn iso8601_millis(millis: i64) -> String {
    let text = rivulet_sdk::time::iso8601(millis);
    if millis.rem_euclid(1000) == 0 {
        // Always three fraction digits: "…:56Z" → "…:56.000Z".
        format!("{}.000Z", &text[..text.len() - 1])
    } else {
        text
    }
}

fn generate(orders: u64, path: &Path) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut rng = Rng(0x7269_7675_6c65_7437); // "rivulet7"
    for i in 0..orders {
        let customer = rng.below(1000);
        let status = STATUSES[rng.below(5) as usize];
        let region = REGIONS[rng.below(5) as usize];
        let cents = 100 + rng.below(49_901); // 1.00 ..= 500.00
        let disorder = rng.below(2001) as i64; // 0 ..= 2 s
        let millis = T0 + i as i64 * 10 - disorder;
        let line = format!(
            r#"{{"customer":"customer-{customer:03}","status":"{status}","region":"{region}","amount":{}.{:02},"ts":"{}","tsMillis":{millis}}}"#,
            cents / 100,
            cents % 100,
            iso8601_millis(millis),
        );
        writeln!(out, "{line}").unwrap();
        if i % 1000 == 999 {
            // A truncated line: the order cut somewhere before its closing brace.
            let cut = 1 + rng.below(line.len() as u64 - 1) as usize;
            writeln!(out, "{}", &line[..cut]).unwrap();
        }
    }
    out.flush().unwrap();
}

fn native(spec: &Path) {
    let spec = PipelineSpec::load(spec).unwrap();
    let options = RunOptions {
        brokers: None,
        runtime: Runtime::new(ModuleCache::disabled()).unwrap(),
        stop: Arc::new(AtomicBool::new(false)),
        connect_timeout: None,
        commit_every: Duration::from_secs(1),
        swappable: false,
        instance: Default::default(),
    };
    let mut pipeline = Pipeline::from_spec(&spec, &options).unwrap();
    pipeline.transform.parse.stage = Box::new(rivulet_native_udfs::parse_orders());
    pipeline.run().unwrap();
}

fn floor(path: &Path) {
    let mut reader = BufReader::with_capacity(1 << 16, std::fs::File::open(path).unwrap());
    let (mut lines, mut bytes, mut line) = (0u64, 0u64, Vec::new());
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).unwrap();
        if n == 0 {
            break;
        }
        lines += 1;
        bytes += std::hint::black_box(&line).len() as u64;
    }
    println!("{lines} lines, {bytes} bytes");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["gen", orders, path] => generate(orders.parse().unwrap(), Path::new(path)),
        ["native", spec] => native(Path::new(spec)),
        ["floor", path] => floor(Path::new(path)),
        _ => {
            eprintln!("usage: flink-shape gen <orders> <file> | native <spec> | floor <file>");
            std::process::exit(2);
        }
    }
}
