//! Loading a UDF file: recognise what it is, compile it (through the cache), and read the
//! world it implements from its exports.

use super::cache::{CacheOutcome, content_hash};
use super::error::UdfError;
use super::runtime::Runtime;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmtime::component::Component;

/// The stage kinds, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Parse,
    Map,
    Aggregate,
    Format,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Parse => "parse",
            Kind::Map => "map",
            Kind::Aggregate => "aggregate",
            Kind::Format => "format",
        }
    }

    /// The functions the world exports.
    pub fn exports(self) -> &'static [&'static str] {
        match self {
            Kind::Parse => &["parse"],
            Kind::Map => &["map"],
            Kind::Aggregate => &["state-version", "create", "add", "merge", "finish"],
            Kind::Format => &["format"],
        }
    }

    const ALL: [Kind; 4] = [Kind::Parse, Kind::Map, Kind::Aggregate, Kind::Format];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compiled UDF component and what is known about it.
#[derive(Clone)]
pub struct UdfModule {
    pub path: PathBuf,
    pub kind: Kind,
    /// SHA-256 of the file, hex.
    pub hash: String,
    pub size: usize,
    pub component: Component,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub cache: CacheOutcome,
    pub load_time: Duration,
}

impl fmt::Debug for UdfModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdfModule")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("hash", &self.hash)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];

impl UdfModule {
    /// Reads and compiles `path`.
    pub fn load(runtime: &Runtime, path: &Path) -> Result<Self, UdfError> {
        let bytes = std::fs::read(path).map_err(|source| UdfError::Read {
            path: path.to_owned(),
            error: source,
        })?;
        Self::from_bytes(runtime, path, &bytes)
    }

    /// Compiles `bytes`, which came from `path`.
    pub fn from_bytes(runtime: &Runtime, path: &Path, bytes: &[u8]) -> Result<Self, UdfError> {
        let started = Instant::now();
        let corrupt = |reason: String| UdfError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        match bytes.get(..8) {
            Some(header) if header.starts_with(WASM_MAGIC) => {
                if header[4..8] == CORE_VERSION {
                    return Err(UdfError::CoreModule {
                        path: path.to_owned(),
                    });
                }
            }
            _ => {
                return Err(corrupt(format!(
                    "not a WebAssembly file ({} bytes, no `\\0asm` header)",
                    bytes.len()
                )));
            }
        }
        let hash = content_hash(bytes);
        let (component, cache) = runtime
            .cache()
            .load(runtime.engine(), bytes, &hash)
            .map_err(|err| corrupt(root_cause(&err)))?;
        let engine = runtime.engine();
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        if let Some(import) = imports.iter().find(|name| {
            !name.starts_with("wasi:")
                && !name.starts_with("rivulet:udf/types@")
                && !name.starts_with(super::lookup::INTERFACE)
        }) {
            return Err(UdfError::ForbiddenImport {
                path: path.to_owned(),
                import: import.clone(),
            });
        }
        let kind = Kind::ALL
            .into_iter()
            .find(|kind| {
                kind.exports()
                    .iter()
                    .all(|e| exports.iter().any(|x| x == e))
            })
            .ok_or_else(|| UdfError::UnknownWorld {
                path: path.to_owned(),
                exports: if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                },
            })?;
        // Only map stages read tables.
        if kind != Kind::Map
            && imports
                .iter()
                .any(|name| name.starts_with(super::lookup::INTERFACE))
        {
            return Err(UdfError::LookupOutsideMap {
                path: path.to_owned(),
                kind: kind.name(),
            });
        }
        Ok(UdfModule {
            path: path.to_owned(),
            kind,
            hash,
            size: bytes.len(),
            component,
            imports,
            exports,
            cache,
            load_time: started.elapsed(),
        })
    }

    /// Whether it looks rows up in reference tables (imports `rivulet:udf/lookup`).
    pub fn reads_tables(&self) -> bool {
        self.imports
            .iter()
            .any(|name| name.starts_with(super::lookup::INTERFACE))
    }

    /// The first 12 hex digits of the hash, for logs.
    pub fn short_hash(&self) -> &str {
        self.hash.get(..12).unwrap_or(&self.hash)
    }
}

/// The innermost message of a wasmtime error (its chain joined, most specific last).
pub fn root_cause(err: &wasmtime::Error) -> String {
    err.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
