//! `rivulet new`: a crate of each kind is formatted and lint-clean, builds as a component,
//! passes its own unit test, and runs its sample input through `rivulet udf test` with the
//! outputs its doc promises.
//!
//! The crates are generated into a scratch workspace (a copy of this workspace's manifest
//! and lock file, with `udfs/*` as its only members and absolute paths to the SDK), never
//! into this repository's `udfs/`: a failing or interrupted run leaves nothing behind. It
//! builds into this workspace's target directory, so only the new crates are compiled.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A workspace whose members are its own `udfs/*`, with this workspace's settings.
fn scratch_workspace(dir: &Path) {
    let root = root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let manifest: String = manifest
        .lines()
        .map(|line| match line {
            l if l.starts_with("members = ") => "members = [\"udfs/*\"]".to_owned(),
            l if l.starts_with("default-members = ") => String::new(),
            l => l.replace("{ path = \"", &format!("{{ path = \"{}/", root.display())),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    std::fs::create_dir(dir.join("udfs")).unwrap();
}

fn rivulet(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rivulet"));
    command.current_dir(dir);
    command
}

fn cargo(dir: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir());
    command
}

const KINDS: [&str; 4] = ["parse", "map", "aggregate", "format"];

#[test]
fn a_new_step_of_each_kind_builds_passes_its_test_and_runs_its_sample() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    scratch_workspace(dir);

    for kind in KINDS {
        let name = format!("new-step-{kind}");
        let out = succeeded(
            "rivulet new",
            rivulet(dir)
                .args(["new", &name, "--kind", kind])
                .output()
                .unwrap(),
        );
        assert!(
            out.contains(&format!("created udfs/{name}/src/lib.rs")),
            "{out}"
        );
    }
    // The same name again is refused, and so is a name that makes no crate.
    let again = rivulet(dir)
        .args(["new", "new-step-map", "--kind", "parse"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("udfs/new-step-map already exists"),
        "{}",
        text(&again.stderr)
    );
    let bad = rivulet(dir)
        .args(["new", "New_Step", "--kind", "map"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("`New_Step` is not a step name"),
        "{}",
        text(&bad.stderr)
    );
    let packages: Vec<String> = KINDS
        .iter()
        .flat_map(|k| ["-p".to_owned(), format!("udf-new-step-{k}")])
        .collect();

    // As CI wants the workspace's crates: formatted, and clean of lints.
    succeeded(
        "cargo fmt --check",
        cargo(dir)
            .args(["fmt", "--all", "--check"])
            .output()
            .unwrap(),
    );
    succeeded(
        "cargo clippy",
        cargo(dir)
            .args(["clippy", "--release", "--all-targets"])
            .args(&packages)
            .args(["--", "-D", "warnings"])
            .output()
            .unwrap(),
    );
    succeeded(
        "building the components",
        cargo(dir)
            .args(["build", "--profile", "wasm", "--target", "wasm32-wasip2"])
            .args(&packages)
            .output()
            .unwrap(),
    );
    let tests = succeeded(
        "the crates' unit tests",
        cargo(dir)
            .args(["test", "--release"])
            .args(&packages)
            .output()
            .unwrap(),
    );
    assert_eq!(
        tests.matches("test result: ok. 1 passed; 0 failed").count(),
        4,
        "{tests}"
    );

    let expected = [
        (
            "parse",
            concat!(
                "1: {\"id\":1,\"name\":\"apples\",\"amount\":3.5}\n",
                "2: {\"id\":2,\"name\":\"pears\",\"amount\":12.0}\n",
                "3: error: field `name` is empty\n",
                "4: error: invalid JSON: EOF while parsing an object at line 1 column 22\n",
                "-- 4 records in, 2 outputs, 2 errors\n",
            ),
        ),
        (
            "map",
            concat!(
                "1: {\"id\":1,\"name\":\"apples\",\"amount\":3.5,\"size\":\"small\"}\n",
                "2: {\"id\":2,\"name\":\"pears\",\"amount\":12.0,\"size\":\"large\"}\n",
                "-- 3 records in, 2 outputs, 0 errors\n",
            ),
        ),
        (
            "aggregate",
            concat!(
                "result [apples]: {\"key\":\"apples\",\"window_start\":0,\"window_end\":0,\"count\":2,\"total\":5.0}\n",
                "result [pears]: {\"key\":\"pears\",\"window_start\":0,\"window_end\":0,\"count\":1,\"total\":12.0}\n",
                "-- 3 records in, 2 outputs, 0 errors\n",
            ),
        ),
        (
            "format",
            concat!(
                "1: [apples] 1,apples,3.50\n",
                "2: error: name \"pears, ripe\" is not one plain CSV field\n",
                "3: [plums] 3,plums,0.25\n",
                "-- 3 records in, 2 outputs, 1 errors\n",
            ),
        ),
    ];
    for (kind, want) in expected {
        let wasm = target_dir().join(format!("wasm32-wasip2/wasm/udf_new_step_{kind}.wasm"));
        let sample = dir.join(format!("udfs/new-step-{kind}/sample.jsonl"));
        let mut command = rivulet(dir);
        command
            .args(["udf", "test"])
            .arg(&wasm)
            .arg("--input")
            .arg(&sample);
        if kind == "aggregate" {
            command.args(["--key", "name"]);
        }
        let out = command.output().unwrap();
        assert_eq!(text(&out.stdout), want, "{kind}: {}", text(&out.stderr));
    }
}
