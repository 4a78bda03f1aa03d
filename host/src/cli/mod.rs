//! Command-line interface: argument definitions and dispatch.

mod broker;
mod consume;
mod demo;
mod graph;
mod instances;
mod new;
mod registry;
mod reset;
mod run;
mod seed;
mod shadow;
mod sql;
mod sql_client;
mod swap;
mod ticker;
mod udf;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Streaming pipelines whose step logic is sandboxed, hot-swappable WebAssembly.
#[derive(Debug, Parser)]
#[command(name = "rivulet", version, about)]
pub struct Cli {
    /// More logging (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline spec until Ctrl-C (or the end of a bounded input).
    Run(run::RunArgs),
    /// Run a Flink-style SQL script (CREATE TABLE, SET, INSERT INTO ... SELECT over TUMBLE).
    Sql(sql::SqlArgs),
    /// Start an embedded Kafka-protocol broker (development only) and print its address.
    Broker(broker::BrokerArgs),
    /// Start a development schema registry (Confluent's REST API, in memory) and print its URL.
    Registry(registry::RegistryArgs),
    /// Print a topic's records (results, dead letters, late records, input), one value per line.
    Consume(consume::ConsumeArgs),
    /// Write the workshop's synthetic data into Kafka.
    #[command(subcommand)]
    Seed(seed::SeedCommand),
    /// Everything on one machine: embedded broker, seeder, the workshop's steps, results live.
    Demo(demo::DemoArgs),
    /// Replace a stage's module in a running job (checked first; rejected modules change nothing).
    Swap(swap::SwapArgs),
    /// A running job's shadows: see the difference from the live module, promote or drop.
    #[command(subcommand)]
    Shadow(shadow::ShadowCommand),
    /// Print a spec's operator graph (Mermaid or DOT), with its side outputs.
    Graph(graph::GraphArgs),
    /// Check a spec and its modules without running it (nothing is connected).
    Check(graph::CheckArgs),
    /// Show a running job's stages and their modules (`--job`: every process of a job over Kafka).
    Status(swap::StatusArgs),
    /// Start a job over: delete its internal topics and its consumer groups' offsets.
    Reset(reset::ResetArgs),
    /// Work with one UDF component locally.
    #[command(subcommand)]
    Udf(udf::UdfCommand),
    /// Start a new step: its crate under udfs/, with a unit test and a sample input.
    New(new::NewArgs),
}

/// Logs go to stderr; guest output is logged under `rivulet::guest` with its stage.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    // Colour only on a terminal; each line erases the progress ticker's line first.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(|| rivulet::console::Erasing(std::io::stderr()))
        .with_target(false)
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args).map(|()| ExitCode::SUCCESS),
        Command::Sql(args) => sql::run(args).map(|()| ExitCode::SUCCESS),
        Command::Broker(args) => broker::run(args).map(|()| ExitCode::SUCCESS),
        Command::Registry(args) => registry::run(args).map(|()| ExitCode::SUCCESS),
        Command::Consume(args) => consume::run(args).map(|()| ExitCode::SUCCESS),
        Command::Seed(command) => seed::run(command).map(|()| ExitCode::SUCCESS),
        Command::Demo(args) => demo::run(args).map(|()| ExitCode::SUCCESS),
        Command::Swap(args) => swap::swap(args).map(|()| ExitCode::SUCCESS),
        Command::Shadow(command) => shadow::run(command).map(|()| ExitCode::SUCCESS),
        Command::Graph(args) => graph::graph(args).map(|()| ExitCode::SUCCESS),
        Command::Check(args) => graph::check(args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => swap::status(args).map(|()| ExitCode::SUCCESS),
        Command::Reset(args) => reset::run(args).map(|()| ExitCode::SUCCESS),
        Command::Udf(command) => udf::run(command),
        Command::New(args) => new::run(args).map(|()| ExitCode::SUCCESS),
    }
}
