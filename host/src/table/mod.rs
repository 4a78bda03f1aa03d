//! Reference tables: rows by key, loaded once per job and shared by every task (a
//! broadcast, as Flink's broadcast state or Kafka Streams' GlobalKTable), read by `enrich`
//! stages and by Wasm map stages through `lookup` ([`reads`]). A table comes from a file ([`file`], read at start) or a Kafka topic ([`topic`],
//! read to its end at start and followed while the job runs). [`contents`] holds the rows
//! and keeps each column to one type.

pub mod contents;
pub mod file;
pub mod reads;
pub mod topic;

pub use contents::{Cell, CellKind, Contents, Declared};

use crate::kafka::KafkaConfig;
use crate::spec::{TableSource, TableSpec};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// A table that cannot be loaded: the job does not start.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table `{table}`: cannot read {}: {error}", path.display())]
    Read {
        table: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("table `{table}`: {}:{line}: {message}", path.display())]
    Line {
        table: String,
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("table `{table}`: {message}")]
    Invalid { table: String, message: String },
    #[error("table `{table}`: {error}")]
    Kafka {
        table: String,
        error: Box<crate::kafka::KafkaError>,
    },
}

/// One reference table, shared by the tasks of a job.
#[derive(Debug)]
pub struct Table {
    pub name: String,
    /// The key column.
    pub key: String,
    /// Where its rows come from (`file regions.jsonl`, `Kafka topic regions`).
    pub source: String,
    contents: RwLock<Contents>,
    /// Rows written (inserted or replaced), keys deleted, updates refused, since start.
    updates: AtomicU64,
    deletes: AtomicU64,
    rejected: AtomicU64,
    /// Lookups that found a row, and that did not.
    hits: AtomicU64,
    misses: AtomicU64,
    /// When its contents last changed (Unix ms; the load, for a file).
    updated_at: AtomicI64,
    last_rejection: Mutex<Option<String>>,
}

/// A table's state for `rivulet status` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct TableInfo {
    pub name: String,
    pub key: String,
    pub source: String,
    pub rows: u64,
    pub columns: Vec<String>,
    /// When its contents last changed (Unix ms, and as ISO-8601).
    pub updated_at_ms: i64,
    pub updated_at: String,
    pub updates: u64,
    pub deletes: u64,
    /// Updates refused (a record of the topic that is not a row), and the last reason.
    pub rejected: u64,
    pub last_rejection: Option<String>,
    /// Lookups of `enrich` stages that found a row, and that did not.
    pub hits: u64,
    pub misses: u64,
}

impl Table {
    pub fn new(name: &str, key: &str, source: String, contents: Contents) -> Self {
        let rows = contents.len() as u64;
        Table {
            name: name.to_owned(),
            key: key.to_owned(),
            source,
            contents: RwLock::new(contents),
            updates: AtomicU64::new(rows),
            deletes: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            updated_at: AtomicI64::new(crate::source::kafka::now_millis()),
            last_rejection: Mutex::new(None),
        }
    }

    /// The rows, for reading (held for one batch: updates wait for it).
    pub fn read(&self) -> RwLockReadGuard<'_, Contents> {
        self.contents.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Contents> {
        self.contents
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the row of `key` (the last value of a key wins); a row that does not fit the
    /// table is refused and counted, the row before it kept.
    pub fn upsert(&self, key: &str, row: serde_json::Map<String, serde_json::Value>) {
        let outcome = self.write().upsert(key, row);
        match outcome {
            Ok(()) => {
                self.updates.fetch_add(1, Ordering::Relaxed);
                self.touched();
            }
            Err(reason) => self.reject(format!("key {key:?}: {reason}")),
        }
    }

    /// Deletes `key` (a tombstone); a key not in the table changes nothing.
    pub fn delete(&self, key: &str) {
        if self.write().delete(key) {
            self.deletes.fetch_add(1, Ordering::Relaxed);
            self.touched();
        }
    }

    /// An update that is not a row (no key, not a JSON object, a value of another type).
    pub fn reject(&self, reason: String) {
        let count = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(line) = crate::kafka::collapsed(&format!(
            "table `{}`: update refused, the row before it is kept: {reason}",
            self.name
        )) {
            tracing::warn!(rejected = count, "{line}");
        }
        *self
            .last_rejection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason);
    }

    fn touched(&self) {
        self.updated_at
            .store(crate::source::kafka::now_millis(), Ordering::Relaxed);
    }

    pub fn info(&self) -> TableInfo {
        let (rows, columns) = {
            let contents = self.read();
            (contents.len() as u64, contents.columns().to_vec())
        };
        let updated_at_ms = self.updated_at.load(Ordering::Relaxed);
        TableInfo {
            name: self.name.clone(),
            key: self.key.clone(),
            source: self.source.clone(),
            rows,
            columns,
            updated_at_ms,
            updated_at: rivulet_rows::time::iso8601(updated_at_ms),
            updates: self.updates.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            last_rejection: self
                .last_rejection
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// An `enrich` stage's batch found `hits` rows and missed `misses`.
    pub fn looked_up(&self, hits: u64, misses: u64) {
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(misses, Ordering::Relaxed);
    }
}

/// A table as its readers hold it: when the last reader lets go, a topic table stops
/// following its topic.
#[derive(Debug)]
pub struct TableHandle {
    pub table: Arc<Table>,
    /// Set on drop: the follower thread stops.
    follower_stop: Option<Arc<AtomicBool>>,
}

impl TableHandle {
    /// A handle on a table nothing follows (a file's, or one built in place).
    pub fn detached(table: Arc<Table>) -> Self {
        TableHandle {
            table,
            follower_stop: None,
        }
    }
}

impl Drop for TableHandle {
    fn drop(&mut self) {
        if let Some(stop) = &self.follower_stop {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// The tables of a job, by name.
#[derive(Debug, Default, Clone)]
pub struct Tables(BTreeMap<String, Arc<TableHandle>>);

/// How to reach what tables read.
pub struct TableContext<'a> {
    pub kafka: &'a KafkaConfig,
    pub job: &'a str,
    /// How long to wait for Kafka (None: until stopped).
    pub connect_timeout: Option<Duration>,
    pub stop: &'a AtomicBool,
}

impl Tables {
    /// Loads every table of the spec: files are read, topics read to their end (and
    /// followed from then on; without a `context`, as `rivulet check` does, they are left
    /// empty). The first that cannot be loaded is the error.
    pub fn open(
        specs: &[TableSpec],
        context: Option<&TableContext<'_>>,
    ) -> Result<Self, TableError> {
        let mut tables = BTreeMap::new();
        for spec in specs {
            let started = std::time::Instant::now();
            let handle = match &spec.source {
                TableSource::File {
                    path,
                    format,
                    columns,
                } => {
                    let contents = file::load(spec, path, *format, columns.as_deref())?;
                    let source = format!("file {}", path.display());
                    TableHandle::detached(Arc::new(Table::new(
                        &spec.name, &spec.key, source, contents,
                    )))
                }
                TableSource::Kafka { topic, key_format } => match context {
                    Some(context) => topic::follow(spec, topic, *key_format, context)?,
                    None => TableHandle::detached(Arc::new(Table::new(
                        &spec.name,
                        &spec.key,
                        format!("Kafka topic {topic} (not read)"),
                        Contents::new(&spec.types),
                    ))),
                },
            };
            let info = handle.table.info();
            tracing::info!(table = %spec.name, source = %info.source, rows = info.rows, load_ms = started.elapsed().as_millis() as u64, "table loaded");
            tables.insert(spec.name.clone(), Arc::new(handle));
        }
        Ok(Tables(tables))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<TableHandle>> {
        self.0.get(name)
    }

    /// What Wasm map stage `stage` reads through `lookup`: the tables `names` (None when
    /// it names none). A name the job has no table for is an error naming it.
    pub fn reads(&self, stage: &str, names: &[String]) -> Result<crate::udf::Reads, String> {
        if names.is_empty() {
            return Ok(None);
        }
        let mut readable = BTreeMap::new();
        for name in names {
            let handle = self.0.get(name).ok_or_else(|| {
                let have: Vec<&str> = self.0.keys().map(String::as_str).collect();
                format!(
                    "stage `{stage}` reads table `{name}`, which the job does not have ({})",
                    match have.is_empty() {
                        true => "it declares no [[tables]]".to_owned(),
                        false => format!("its tables: {}", have.join(", ")),
                    }
                )
            })?;
            readable.insert(name.clone(), handle.clone());
        }
        let job_tables = self.0.keys().cloned().collect();
        Ok(Some(Arc::new(reads::StageReads::new(
            stage, readable, job_tables,
        ))))
    }

    /// Every table, for the job's status.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Table>> {
        self.0.values().map(|handle| &handle.table)
    }
}
