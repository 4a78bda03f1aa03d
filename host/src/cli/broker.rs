//! `rivulet broker`: an in-process Kafka-protocol broker for development (librdkafka's
//! mock cluster). Not for production: in memory only, gone when the process exits.

use super::run::stop_on_signals;
use clap::Args;
use rivulet::kafka::broker::EmbeddedBroker;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The workshop's bootstrap address (`rivulet run`, `seed` and `consume` default to it).
pub const LISTEN: &str = "127.0.0.1:9094";

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Where clients bootstrap: a forwarder to the embedded broker listens there (port 0:
    /// any free port).
    #[arg(long, default_value = LISTEN)]
    listen: String,
    /// Topics to create, as name:partitions.
    #[arg(long = "topic", default_values_t = ["partitioned-topic:3".to_string(), "flink-aggregates:1".to_string(), "sales:1".to_string()])]
    topics: Vec<String>,
    /// Also start the development schema registry, at this address (default 127.0.0.1:8081).
    #[arg(long, num_args = 0..=1, default_missing_value = rivulet::registry::DEFAULT_LISTEN)]
    registry: Option<String>,
}

/// Parses `name:partitions` (partitions default to 1).
pub fn topic_arg(text: &str) -> anyhow::Result<(String, i32)> {
    match text.split_once(':') {
        Some((name, n)) => Ok((
            name.to_owned(),
            n.parse()
                .map_err(|_| anyhow::anyhow!("`{text}`: partitions must be a number"))?,
        )),
        None => Ok((text.to_owned(), 1)),
    }
}

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let broker = EmbeddedBroker::start(1)?;
    for topic in &args.topics {
        let (name, partitions) = topic_arg(topic)?;
        broker.create_topic(&name, partitions)?;
    }
    let forwarder = broker.listen(&args.listen)?;
    println!("{}", forwarder.address());
    eprintln!(
        "embedded broker (development only: in memory, gone on exit) at {} (clients are then pointed at {}); topics: {}; Ctrl-C to stop",
        forwarder.address(),
        broker.bootstrap_servers(),
        args.topics.join(", ")
    );
    let _registry = match &args.registry {
        Some(listen) => Some(super::registry::start(listen)?),
        None => None,
    };
    let stop = stop_on_signals()?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
