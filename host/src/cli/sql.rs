//! `rivulet sql -f job.sql`: plans a Flink-style SQL script into a job and runs it as
//! `rivulet run` runs a spec (or, with `--explain` or `EXPLAIN INSERT`, prints its plan).

use super::run::{self, ControlArgs, KafkaArgs};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL script: CREATE TABLE, SET and one INSERT INTO ... SELECT.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Print the plan and the job graph instead of running the job.
    #[arg(long)]
    explain: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Commit offsets at most this often (a duration with its unit: "500ms", "1s").
    #[arg(long, default_value = "1s", value_parser = run::duration)]
    commit_every: Duration,
    #[command(flatten)]
    control: ControlArgs,
    #[command(flatten)]
    ticker: super::ticker::TickerArgs,
    /// How many tasks run the job (default: SET 'parallelism.default', else one per core).
    #[arg(long)]
    parallelism: Option<usize>,
}

pub fn run(args: SqlArgs) -> anyhow::Result<()> {
    let mut job = rivulet::sql::load(&args.file)?;
    if args.parallelism.is_some() {
        job.spec.parallelism = args.parallelism;
    }
    if args.explain || job.explain {
        let tasks = job
            .spec
            .parallelism
            .unwrap_or_else(rivulet::assemble::default_parallelism)
            .max(1);
        print!("{}", rivulet::sql::explain::explain(&job, tasks));
        return Ok(());
    }
    for note in &job.notes {
        tracing::info!("{note}");
    }
    for warning in &job.warnings {
        tracing::warn!("{warning}");
    }
    run::run_spec(
        job.spec,
        &run::RunSettings {
            kafka: &args.kafka,
            commit_every: args.commit_every,
            watch: false,
            control: &args.control,
            ticker: args.ticker.ticker,
        },
    )
}
