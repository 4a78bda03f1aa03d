//! On-disk cache of compiled components, keyed by the module's content hash and the
//! engine's compatibility hash, so a module is compiled once per machine and engine.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// SHA-256 of a module's bytes, as lowercase hex.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where compiled components live. `None` disables the cache.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    dir: Option<PathBuf>,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded precompiled from the cache.
    Hit,
    /// Compiled now (and stored, if the cache is enabled and writable).
    Miss,
    /// Compiled now; caching is off.
    Disabled,
}

impl ModuleCache {
    /// A cache in `dir` (created when first written).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        ModuleCache {
            dir: Some(dir.into()),
        }
    }

    /// No caching: every load compiles.
    pub fn disabled() -> Self {
        ModuleCache { dir: None }
    }

    /// `$RIVULET_CACHE_DIR`, else `$XDG_CACHE_HOME/rivulet/modules`, else
    /// `~/.cache/rivulet/modules`; disabled when none is known.
    pub fn default_location() -> Self {
        let from_env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = from_env("RIVULET_CACHE_DIR") {
            return Self::at(dir);
        }
        if let Some(xdg) = from_env("XDG_CACHE_HOME") {
            return Self::at(Path::new(&xdg).join("rivulet/modules"));
        }
        match from_env("HOME") {
            Some(home) => Self::at(Path::new(&home).join(".cache/rivulet/modules")),
            None => Self::disabled(),
        }
    }

    fn entry(&self, engine: &Engine, hash: &str) -> Option<PathBuf> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hasher.finish();
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{hash}-{engine_key:016x}.cwasm")))
    }

    /// The compiled component for `bytes` (whose hash is `hash`): from the cache if present
    /// and loadable, else compiled and stored. A broken or unwritable cache only costs a
    /// compile; it never fails the load.
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        hash: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(path) = self.entry(engine, hash) else {
            return Ok((Component::new(engine, bytes)?, CacheOutcome::Disabled));
        };
        if path.is_file() {
            // SAFETY: the file was written by `Component::serialize` of an engine with the
            // same compatibility hash (it is in the file name), into a cache directory that
            // only rivulet writes; wasmtime still checks its header and version.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(err) => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable cache entry: {err:#}");
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(err) = store(&path, &component) {
            tracing::warn!(path = %path.display(), "cannot write module cache: {err:#}");
        }
        Ok((component, CacheOutcome::Miss))
    }
}

/// Writes atomically: a crashed writer leaves a temp file, never a torn entry.
fn store(path: &Path, component: &Component) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|err| std::io::Error::other(format!("{err:#}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
