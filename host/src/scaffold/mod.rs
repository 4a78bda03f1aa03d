//! `rivulet new`: a new step's crate, modelled on the ones in `udfs/` — one function (or one
//! `impl Aggregate`) under the kind's `rivulet_sdk` attribute, a unit test of it, and a sample
//! input for `rivulet udf test`. The templates are in `templates/`.

use crate::udf::Kind;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "`{name}` is not a step name: use lowercase letters, digits and single dashes, starting with a letter (e.g. `parse-clicks`); {why}"
    )]
    Name { name: String, why: &'static str },
    #[error("{} already exists: choose another name, or remove it first", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A file of the new crate: its path inside the crate, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: &'static str,
    pub text: String,
}

/// Where a crate's sample input is, inside the crate.
pub const SAMPLE: &str = "sample.jsonl";

/// The longest name accepted (a crate name, a file name, a Kafka-friendly stage name).
const MAX_NAME: usize = 48;

/// Checks a step name: it becomes the directory, the package `udf-<name>` and the
/// component `udf_<name>.wasm`.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let refuse = |why| {
        Err(ScaffoldError::Name {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > MAX_NAME {
        return refuse("it is longer than 48 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return refuse("it must start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return refuse("it has a character other than a-z, 0-9 and -");
    }
    if name.ends_with('-') || name.contains("--") {
        return refuse("a dash must stand between two words");
    }
    if name.starts_with("udf-") {
        return refuse("leave out the `udf-` prefix: the package is named `udf-<name>` already");
    }
    Ok(())
}

/// The package name of step `name`.
pub fn package(name: &str) -> String {
    format!("udf-{name}")
}

/// The component's file name (what `cargo build --target wasm32-wasip2` makes).
pub fn component(name: &str) -> String {
    format!("{}.wasm", package(name).replace('-', "_"))
}

/// The files of step `name`'s crate; `sample` is how its doc comment names the sample file.
pub fn files(name: &str, kind: Kind, sample: &str) -> Result<Vec<File>, ScaffoldError> {
    check_name(name)?;
    let (code, input) = match kind {
        Kind::Parse => (
            include_str!("templates/parse.rs.txt"),
            include_str!("templates/parse.jsonl"),
        ),
        Kind::Map => (
            include_str!("templates/map.rs.txt"),
            include_str!("templates/map.jsonl"),
        ),
        Kind::Aggregate => (
            include_str!("templates/aggregate.rs.txt"),
            include_str!("templates/aggregate.jsonl"),
        ),
        Kind::Format => (
            include_str!("templates/format.rs.txt"),
            include_str!("templates/format.jsonl"),
        ),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{package}}", &package(name))
            .replace("{{lib}}", &package(name).replace('-', "_"))
            .replace("{{sample}}", sample)
    };
    Ok(vec![
        File {
            path: "Cargo.toml",
            text: fill(include_str!("templates/Cargo.toml.txt")),
        },
        File {
            path: "src/lib.rs",
            text: fill(code),
        },
        File {
            path: SAMPLE,
            text: input.to_owned(),
        },
    ])
}

/// Writes step `name`'s crate to `dir` (which must not exist). Returns the files written.
pub fn create(dir: &Path, name: &str, kind: Kind) -> Result<Vec<PathBuf>, ScaffoldError> {
    let sample = dir.join(SAMPLE);
    let files = files(name, kind, &sample.display().to_string())?;
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let mut written = Vec::new();
    for file in files {
        let path = dir.join(file.path);
        let failed = |source| ScaffoldError::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        std::fs::write(&path, file.text).map_err(failed)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const KINDS: [Kind; 4] = [Kind::Parse, Kind::Map, Kind::Aggregate, Kind::Format];

    #[test]
    fn each_kind_gets_its_attribute_a_unit_test_and_a_sample() {
        for (kind, attribute) in KINDS.iter().zip([
            "#[rivulet_sdk::parse]",
            "#[rivulet_sdk::map]",
            "#[rivulet_sdk::aggregate]",
            "#[rivulet_sdk::format]",
        ]) {
            let files = files("clicks", *kind, "udfs/clicks/sample.jsonl").unwrap();
            let paths: Vec<&str> = files.iter().map(|f| f.path).collect();
            assert_eq!(paths, ["Cargo.toml", "src/lib.rs", "sample.jsonl"]);
            assert!(files[0].text.contains("name = \"udf-clicks\"\n"));
            assert!(
                files[0]
                    .text
                    .contains("crate-type = [\"cdylib\", \"rlib\"]")
            );
            let code = &files[1].text;
            assert_eq!(code.matches(attribute).count(), 1, "{kind:?}");
            assert!(code.contains("#[cfg(test)]") && code.contains("#[test]"));
            assert!(
                code.contains(
                    "target/wasm32-wasip2/wasm/udf_clicks.wasm --input udfs/clicks/sample.jsonl"
                ),
                "{code}"
            );
            assert!(!code.contains("{{"), "every placeholder filled: {code}");
            for line in files[2].text.lines() {
                assert!(line.starts_with('{'), "one JSON value per line: {line}");
            }
        }
    }

    #[test]
    fn names_that_make_no_crate_are_refused_with_the_reason() {
        for good in ["clicks", "parse-clicks2", "a"] {
            check_name(good).unwrap();
        }
        for (bad, why) in [
            ("", "it is empty"),
            ("Clicks", "must start with a lowercase letter"),
            ("2clicks", "must start with a lowercase letter"),
            ("parse_clicks", "other than a-z, 0-9 and -"),
            ("parse clicks", "other than a-z, 0-9 and -"),
            ("../evil", "must start with a lowercase letter"),
            ("a/b", "other than a-z, 0-9 and -"),
            ("clicks-", "between two words"),
            ("parse--clicks", "between two words"),
            ("udf-clicks", "leave out the `udf-` prefix"),
        ] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(check_name(&"a".repeat(49)).is_err());
    }

    #[test]
    fn an_existing_directory_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("clicks");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("mine.txt"), "keep").unwrap();
        let err = create(&target, "clicks", Kind::Map).unwrap_err();
        assert!(
            matches!(&err, ScaffoldError::Exists(path) if path == &target),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(&target).unwrap().collect();
        assert_eq!(left.len(), 1);

        let fresh = dir.path().join("fresh");
        let written = create(&fresh, "fresh", Kind::Format).unwrap();
        assert_eq!(
            written,
            [
                fresh.join("Cargo.toml"),
                fresh.join("src/lib.rs"),
                fresh.join("sample.jsonl")
            ]
        );
        assert_eq!(
            std::fs::read_to_string(fresh.join("sample.jsonl")).unwrap(),
            include_str!("templates/format.jsonl")
        );
    }
}
