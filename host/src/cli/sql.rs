//! `rivulet sql -f job.sql`: plans a Flink-style SQL script into jobs and runs them as
//! `rivulet run` runs a spec (or, with `--explain` or `EXPLAIN INSERT`, prints the plan).
//! Without `-f`: the interactive client ([`super::sql_client`]).

use super::run::{self, ControlArgs, KafkaArgs};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL script: CREATE TABLE / FUNCTION, SET and INSERT INTO ... SELECT (several, or
    /// a statement set, run side by side). Without it: the interactive client.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Print the plan and the job graph instead of running the job.
    #[arg(long)]
    explain: bool,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Commit offsets at most this often (a duration with its unit: "500ms", "1s").
    #[arg(long, default_value = "1s", value_parser = run::duration)]
    pub commit_every: Duration,
    #[command(flatten)]
    control: ControlArgs,
    #[command(flatten)]
    ticker: super::ticker::TickerArgs,
    /// How many tasks run the job (default: SET 'parallelism.default', else one per core).
    #[arg(long)]
    pub parallelism: Option<usize>,
}

pub fn run(args: SqlArgs) -> anyhow::Result<()> {
    let Some(file) = &args.file else {
        return super::sql_client::run(&args);
    };
    let mut job = rivulet::sql::load(file)?;
    for text in &job.printed {
        print!("{text}");
    }
    if args.parallelism.is_some() {
        job.spec.parallelism = args.parallelism;
        for spec in &mut job.also {
            spec.parallelism = args.parallelism;
        }
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
    let off = ControlArgs {
        addr: "off".to_owned(),
        token: None,
    };
    // Every job of a statement set runs side by side in this process; the first one has
    // the control API.
    let also = std::mem::take(&mut job.also);
    let handles: Vec<_> = also
        .into_iter()
        .map(|spec| {
            let kafka = args.kafka.clone();
            let commit_every = args.commit_every;
            let off = ControlArgs {
                addr: off.addr.clone(),
                token: None,
            };
            std::thread::spawn(move || {
                run::run_spec(
                    spec,
                    &run::RunSettings {
                        kafka: &kafka,
                        commit_every,
                        watch: false,
                        control: &off,
                        ticker: super::ticker::TickerMode::Never,
                        instance: "0",
                        shadows: &[],
                    },
                )
            })
        })
        .collect();
    let first = run::run_spec(
        job.spec,
        &run::RunSettings {
            kafka: &args.kafka,
            commit_every: args.commit_every,
            watch: false,
            control: &args.control,
            ticker: args.ticker.ticker,
            instance: "0",
            shadows: &[],
        },
    );
    let mut result = first;
    for handle in handles {
        let outcome = handle
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a job's thread panicked")));
        if result.is_ok() {
            result = outcome;
        }
    }
    result
}
