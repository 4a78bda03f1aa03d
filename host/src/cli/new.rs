//! `rivulet new <name> --kind parse|map|aggregate|format`: a new step's crate under `udfs/`.

use anyhow::Context;
use clap::{Args, ValueEnum};
use rivulet::scaffold;
use rivulet::udf::Kind;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The step's name: lowercase letters, digits and dashes (the package is `udf-<name>`).
    name: String,
    /// What the step is.
    #[arg(long, value_enum)]
    kind: StepKind,
    /// The directory the crate goes in, as `<dir>/<name>` (a workspace member: `udfs/*`
    /// is one in this repository).
    #[arg(long, default_value = "udfs")]
    dir: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StepKind {
    Parse,
    Map,
    Aggregate,
    Format,
}

impl From<StepKind> for Kind {
    fn from(kind: StepKind) -> Kind {
        match kind {
            StepKind::Parse => Kind::Parse,
            StepKind::Map => Kind::Map,
            StepKind::Aggregate => Kind::Aggregate,
            StepKind::Format => Kind::Format,
        }
    }
}

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    scaffold::check_name(&args.name)?;
    if !args.dir.is_dir() {
        anyhow::bail!(
            "{} is not a directory: run `rivulet new` at the workspace's root (where `udfs/` is), or pass --dir",
            args.dir.display()
        );
    }
    let dir = args.dir.join(&args.name);
    let kind = Kind::from(args.kind);
    let written = scaffold::create(&dir, &args.name, kind)
        .with_context(|| format!("creating the {kind} step `{}`", args.name))?;
    for path in &written {
        println!("  created {}", path.display());
    }
    let wasm = format!(
        "target/wasm32-wasip2/wasm/{}",
        scaffold::component(&args.name)
    );
    let key = match kind {
        Kind::Aggregate => " --key name",
        _ => "",
    };
    println!(
        "{kind} step `{name}` (package {package}). Next:\n  cargo test -p {package}\n  just udf {name}\n  rivulet udf test {wasm} --input {sample}{key}",
        name = args.name,
        package = scaffold::package(&args.name),
        sample = dir.join(scaffold::SAMPLE).display(),
    );
    Ok(())
}
