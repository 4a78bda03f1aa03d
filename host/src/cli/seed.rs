//! `rivulet seed orders|sales`: the workshop's synthetic input, into Kafka.

use super::run::{KafkaArgs, stop_on_signals};
use apache_avro::Schema;
use clap::{Args, Subcommand};
use rivulet::kafka::KafkaConfig;
use rivulet::registry::client::RegistryClient;
use rivulet::seed::{Orders, STORE_SALE_SCHEMA, Sales, Seeded};
use rivulet::sink::kafka::KafkaSink;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

#[derive(Debug, Subcommand)]
pub enum SeedCommand {
    /// Orders into `partitioned-topic` (keyed by customer).
    Orders {
        #[command(flatten)]
        common: SeedArgs,
        #[arg(long, default_value = "partitioned-topic")]
        topic: String,
        /// Share of deliberately malformed orders (0 to 1).
        #[arg(long, default_value_t = 0.05)]
        malformed_ratio: f64,
    },
    /// Sales of three stores into `sales` (keyed by store).
    Sales {
        #[command(flatten)]
        common: SeedArgs,
        #[arg(long, default_value = "sales")]
        topic: String,
        /// `json`, or `avro`: StoreSale records in Confluent's wire format, the schema
        /// registered at `--registry` under `<topic>-value`.
        #[arg(long, value_enum, default_value_t = SalesFormat::Json)]
        format: SalesFormat,
        /// The schema registry's URL (with `--format avro`).
        #[arg(long)]
        registry: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SalesFormat {
    Json,
    Avro,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Records per second (0: as fast as possible; default 20 orders/s, 1 sale/s).
    #[arg(long)]
    rate: Option<f64>,
    /// Records to write (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Random seed (same seed, same records).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Event times start now and advance this much per record (e.g. "1s": a minute of
    /// event time every 60 records, whatever the rate); default: the wall clock.
    #[arg(long, value_parser = super::run::duration)]
    event_step: Option<std::time::Duration>,
}

pub fn run(command: SeedCommand) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    match command {
        SeedCommand::Orders {
            common,
            topic,
            malformed_ratio,
        } => {
            let mut orders = Orders::new(common.seed, malformed_ratio);
            seed(&common, &topic, &stop, move |ts| Ok(orders.next(ts)))
        }
        SeedCommand::Sales {
            common,
            topic,
            format,
            registry,
        } => {
            let mut sales = Sales::new(common.seed);
            let common = SeedArgs {
                rate: Some(common.rate.unwrap_or(1.0)),
                ..common
            };
            match (format, registry) {
                (SalesFormat::Json, None) => {
                    seed(&common, &topic, &stop, move |ts| Ok(sales.next(ts)))
                }
                (SalesFormat::Json, Some(_)) => Err(anyhow::anyhow!(
                    "--registry is for --format avro (JSON sales need no registry)"
                )),
                (SalesFormat::Avro, None) => Err(anyhow::anyhow!(
                    "--format avro needs --registry URL (e.g. http://127.0.0.1:8081, `rivulet registry`)"
                )),
                (SalesFormat::Avro, Some(url)) => {
                    let schema = Schema::parse_str(STORE_SALE_SCHEMA)?;
                    let subject = format!("{topic}-value");
                    let id = RegistryClient::new(&url).register(&subject, &schema)?;
                    tracing::info!(subject, id, registry = %url, "StoreSale schema registered");
                    seed(&common, &topic, &stop, move |ts| {
                        sales.next_avro(ts, &schema, id)
                    })
                }
            }
        }
    }
}

/// Writes generated records at `rate` until `count` or `stop`; returns how many.
pub fn seed(
    args: &SeedArgs,
    topic: &str,
    stop: &Arc<AtomicBool>,
    mut next: impl FnMut(i64) -> Result<Seeded, String>,
) -> anyhow::Result<()> {
    let brokers = args
        .kafka
        .brokers
        .clone()
        .unwrap_or_else(|| rivulet::assemble::DEFAULT_BROKERS.to_owned());
    let config = KafkaConfig::new(brokers.clone());
    let mut sink = KafkaSink::open(&config, topic)?;
    sink.wait_for_broker(&config, args.kafka.connect_timeout, stop)?;
    let rate = args.rate.unwrap_or(20.0);
    let step = args
        .event_step
        .map(|step| i64::try_from(step.as_millis()).unwrap_or(i64::MAX));
    let (start, mut index) = (rivulet::source::kafka::now_millis(), 0i64);
    let written = rivulet::seed::write(&mut sink, rate, args.count, stop, |ts| {
        let ts = match step {
            Some(step) => start.saturating_add(index.saturating_mul(step)),
            None => ts,
        };
        index += 1;
        next(ts)
    });
    // Delivered: acknowledged by the broker, not merely queued.
    let (sent, delivered) = sink.counts();
    match written {
        Ok((_, malformed)) => {
            tracing::info!(topic, delivered, malformed, brokers = %brokers, "seeded");
            Ok(())
        }
        Err(err) => Err(anyhow::anyhow!(
            "{err} ({delivered} of {sent} records delivered to `{topic}`)"
        )),
    }
}
