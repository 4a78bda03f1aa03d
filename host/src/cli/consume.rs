//! `rivulet consume <topic>`: read a topic (the workshop's input, a job's results, its dead
//! letters or late records) and print each record's value, one per line.

use super::run::{KafkaArgs, duration, stop_on_signals};
use anyhow::Context;
use clap::Args;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rivulet::kafka::{KafkaConfig, LogContext};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The topic to read.
    topic: String,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Read from the start of every partition (default: only records written from now on;
    /// with `--group`, from the group's committed offsets).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// Under each value, its partition, offset and key, and its headers one per line (a dead
    /// letter's stage, error and source record).
    #[arg(long)]
    headers: bool,
    /// Read as a member of this consumer group, committing what was printed (default: read
    /// every partition without a group; nothing is committed).
    #[arg(long)]
    group: Option<String>,
    /// Stop once no record came for this long, e.g. "5s" (default: read until Ctrl-C).
    #[arg(long, value_parser = duration)]
    timeout: Option<Duration>,
    /// Decode keys and values in Confluent's Avro wire format with the schemas of this
    /// registry (e.g. http://127.0.0.1:8081), printed as JSON; other bytes print as they are.
    #[arg(long)]
    registry: Option<String>,
    /// Print each record's key before its value (`key → value`).
    #[arg(long)]
    keys: bool,
    /// `read-committed` (default): only records of committed transactions, as a
    /// downstream consumer of an exactly-once job sees them; `read-uncommitted`: also
    /// those of open and aborted transactions.
    #[arg(long, value_enum, default_value = "read-committed")]
    isolation: Isolation,
}

/// Which records of transactions `consume` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Isolation {
    ReadCommitted,
    ReadUncommitted,
}

impl Isolation {
    /// The client's `isolation.level`.
    fn level(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// Turns Avro in Confluent's wire format into JSON text, with the registry's schemas.
struct AvroText(rivulet::registry::client::RegistryClient);

impl AvroText {
    /// `bytes` as JSON if they are a record (or a value) in the wire format; else as text.
    fn text(&mut self, bytes: &[u8]) -> String {
        use rivulet::format::{avro, avro_typed};
        let Ok((id, body)) = avro::split(bytes) else {
            return readable(bytes);
        };
        let schema = match self.0.schema(id) {
            Ok(schema) => schema,
            Err(err) => return format!("({err}) {}", readable(bytes)),
        };
        let mut rest = body;
        let decoded = apache_avro::from_avro_datum(&schema, &mut rest, None)
            .map_err(|err| err.to_string())
            .and_then(|value| match value {
                apache_avro::types::Value::Record(_) => {
                    avro_typed::decimals_as_text(value, &schema)
                }
                other => Ok(other),
            })
            .and_then(|value| {
                serde_json::to_string(&avro::Row(&value)).map_err(|err| err.to_string())
            });
        match decoded {
            Ok(json) => json,
            Err(err) => format!(
                "(not a record of schema id {id}: {err}) {}",
                readable(bytes)
            ),
        }
    }
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    let brokers = args
        .kafka
        .brokers
        .clone()
        .unwrap_or_else(|| rivulet::assemble::DEFAULT_BROKERS.to_owned());
    let config = KafkaConfig::new(brokers.clone());
    let reset = if args.from_beginning {
        "earliest"
    } else {
        "latest"
    };
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| format!("rivulet-consume-{}", std::process::id()));
    let consumer: BaseConsumer<LogContext> = config
        .client()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
        .set("enable.partition.eof", "false")
        .set("isolation.level", args.isolation.level())
        .create_with_context(LogContext)
        .context("creating the consumer")?;
    let partitions = rivulet::kafka::wait_for_kafka(
        consumer.client(),
        &config,
        &args.topic,
        true,
        args.kafka.connect_timeout,
        &stop,
    )?;
    match &args.group {
        Some(_) => consumer
            .subscribe(&[&args.topic])
            .with_context(|| format!("subscribing to `{}`", args.topic))?,
        None => {
            let start = if args.from_beginning {
                Offset::Beginning
            } else {
                Offset::End
            };
            let mut tpl = TopicPartitionList::new();
            for &p in &partitions {
                tpl.add_partition_offset(&args.topic, p, start)
                    .context("building the assignment")?;
            }
            consumer.assign(&tpl).context("assigning partitions")?;
        }
    }
    tracing::debug!(topic = %args.topic, brokers = %brokers, ?partitions, "consuming");
    let mut out = std::io::stdout().lock();
    let mut count = 0u64;
    let mut last = Instant::now();
    // Next offset per partition after what was printed (committed with `--group`).
    let mut printed: BTreeMap<i32, i64> = BTreeMap::new();
    let mut avro = args
        .registry
        .as_deref()
        .map(|url| AvroText(rivulet::registry::client::RegistryClient::new(url)));
    while !stop.load(Ordering::Relaxed) && args.max.is_none_or(|max| count < max) {
        if args.timeout.is_some_and(|t| last.elapsed() >= t) {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                print(&mut out, &message, args.headers, args.keys, avro.as_mut())?;
                printed.insert(message.partition(), message.offset() + 1);
                count += 1;
                last = Instant::now();
            }
            Some(Err(err)) => tracing::warn!(topic = %args.topic, "{err}"),
            None => {}
        }
    }
    out.flush()?;
    if args.group.is_some() && !printed.is_empty() {
        // What was printed is committed: a later run in the group continues after it.
        let mut tpl = TopicPartitionList::new();
        for (&p, &next) in &printed {
            tpl.add_partition_offset(&args.topic, p, Offset::Offset(next))
                .context("building the commit")?;
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .with_context(|| format!("committing the group's offsets in `{}`", args.topic))?;
    }
    tracing::info!(topic = %args.topic, records = count, "consumed");
    Ok(())
}

/// One record: its value on a line (bytes that are not UTF-8 escaped), and with `headers`
/// its place, key and headers, indented, on the lines below.
fn print(
    out: &mut impl Write,
    message: &BorrowedMessage<'_>,
    headers: bool,
    keys: bool,
    mut avro: Option<&mut AvroText>,
) -> std::io::Result<()> {
    let mut text = |bytes: &[u8]| match avro.as_deref_mut() {
        Some(avro) => avro.text(bytes),
        None => readable(bytes),
    };
    let value = text(message.payload().unwrap_or_default());
    let key = message.key().map_or_else(|| "(none)".to_owned(), &mut text);
    match keys {
        true => writeln!(out, "{key} → {value}")?,
        false => writeln!(out, "{value}")?,
    }
    if !headers {
        return Ok(());
    }
    writeln!(
        out,
        "  partition {}, offset {}, key {key}",
        message.partition(),
        message.offset()
    )?;
    if let Some(hs) = message.headers() {
        for h in hs.iter() {
            writeln!(
                out,
                "  {}: {}",
                h.key,
                readable(h.value.unwrap_or_default())
            )?;
        }
    }
    Ok(())
}

/// Text as it is; other bytes as Rust-style escapes (`\xff`), so a line is always one line.
fn readable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains(['\n', '\r']) => text.to_owned(),
        _ => bytes.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn values_print_on_one_line_with_other_bytes_escaped() {
        assert_eq!(readable(b"{\"a\":1}"), "{\"a\":1}");
        assert_eq!(readable("süß".as_bytes()), "süß");
        assert_eq!(readable(b"a\nb"), "a\\nb");
        assert_eq!(readable(&[0xff, b'x']), "\\xffx");
    }
}
