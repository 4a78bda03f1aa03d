//! `rivulet graph <spec>` prints a job's operator graph; `rivulet check <spec>` validates a
//! spec and its modules without running it.

use anyhow::Context;
use clap::{Args, ValueEnum};
use rivulet::graph::JobGraph;
use rivulet::spec::PipelineSpec;
use rivulet::udf::{ModuleCache, Runtime};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// A Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
    /// Graphviz DOT (`| dot -Tsvg > job.svg`).
    Dot,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The pipeline spec (TOML).
    #[arg(required_unless_present = "control", conflicts_with = "control")]
    spec: Option<PathBuf>,
    /// Instead of a spec: the running job at this control address (its stages name the
    /// modules they run now, swapped ones included).
    #[arg(long)]
    control: Option<String>,
    #[arg(long, value_enum, default_value = "mermaid")]
    format: Format,
    /// Tasks to show (default: the spec's `parallelism`, else one per core).
    #[arg(long)]
    parallelism: Option<usize>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The pipeline spec (TOML).
    spec: PathBuf,
}

pub fn graph(args: GraphArgs) -> anyhow::Result<()> {
    let format = match args.format {
        Format::Mermaid => "mermaid",
        Format::Dot => "dot",
    };
    let spec = match (&args.spec, &args.control) {
        (Some(spec), _) => spec,
        (None, Some(control)) => {
            let token = rivulet::http::token::read_for(control);
            let path = format!("/graph?format={format}");
            let (code, body) =
                rivulet::http::client::request(control, "GET", &path, &[], token.as_deref())?;
            anyhow::ensure!(code == 200, "the job answered {code}: {body}");
            print!("{body}");
            return Ok(());
        }
        (None, None) => anyhow::bail!("give a spec or --control"),
    };
    let spec = PipelineSpec::load(spec)?;
    let tasks = args
        .parallelism
        .or(spec.parallelism)
        .unwrap_or_else(rivulet::assemble::default_parallelism)
        .max(1);
    let graph = JobGraph::of(&spec, tasks);
    print!(
        "{}",
        match args.format {
            Format::Mermaid => graph.mermaid(),
            Format::Dot => graph.dot(),
        }
    );
    Ok(())
}

pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let spec = PipelineSpec::load(&args.spec)?;
    let runtime = Runtime::new(ModuleCache::default_location()).context("starting the runtime")?;
    let tasks = rivulet::assemble::check(&spec, &runtime)
        .with_context(|| format!("{} does not run", args.spec.display()))?;
    println!(
        "{}: ok — job `{}`, {} stage(s){}{}, {tasks} task(s)",
        args.spec.display(),
        spec.name,
        spec.stages.len(),
        if spec.window.is_some() {
            ", a window"
        } else {
            ""
        },
        if spec.format.is_some() {
            ", a formatter"
        } else {
            ""
        },
    );
    Ok(())
}
