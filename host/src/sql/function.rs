//! `CREATE [TEMPORARY] FUNCTION name AS 'udf.wasm' LANGUAGE WASM`: Wasm map components
//! callable as scalar functions. Each is loaded when it is declared (compiled and checked
//! against the map world, through the module cache), so a missing or wrong component is an
//! error at the statement.

use super::{Pos, SqlError};
use crate::udf::{Kind, ModuleCache, Runtime, UdfModule};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Function {
    pub name: String,
    pub path: PathBuf,
    pub at: Pos,
}

/// The functions a script declared.
#[derive(Debug, Clone, Default)]
pub struct Functions {
    list: Vec<Function>,
}

impl Functions {
    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|f| f.name.clone()).collect()
    }

    pub fn path(&self, name: &str) -> Option<&Path> {
        self.list
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.path.as_path())
    }

    pub fn list(&self) -> &[Function] {
        &self.list
    }

    /// Declares `name` as the map component at `path` (relative to `base`), loading it.
    pub fn add(
        &mut self,
        name: &str,
        path: &str,
        base: &Path,
        at: Pos,
        if_not_exists: bool,
    ) -> Result<(), SqlError> {
        if self.path(name).is_some() {
            if if_not_exists {
                return Ok(());
            }
            return Err(SqlError::invalid(
                at,
                format!("function `{name}` is declared twice"),
            ));
        }
        let path_buf = PathBuf::from(path.strip_prefix("file://").unwrap_or(path));
        let resolved = if path_buf.is_relative() {
            base.join(&path_buf)
        } else {
            path_buf
        };
        let refuse =
            |reason: String| SqlError::invalid(at, format!("CREATE FUNCTION {name}: {reason}"));
        if !resolved.is_file() {
            return Err(refuse(format!("no file '{}'", resolved.display())));
        }
        let runtime =
            Runtime::new(ModuleCache::default_location()).map_err(|err| refuse(err.to_string()))?;
        let module = UdfModule::load(&runtime, &resolved).map_err(|err| refuse(err.to_string()))?;
        if module.kind != Kind::Map {
            return Err(refuse(format!(
                "'{}' is a {} component; a function is a map component (#[rivulet_sdk::map])",
                resolved.display(),
                module.kind
            )));
        }
        self.list.push(Function {
            name: name.to_owned(),
            path: resolved,
            at,
        });
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.list.len();
        self.list.retain(|f| !f.name.eq_ignore_ascii_case(name));
        self.list.len() != before
    }
}
