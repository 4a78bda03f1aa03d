//! The `lookup` host function (`rivulet:udf/lookup` in `wit/udf.wit`): a map stage's
//! read-only window on the job's reference tables. The sandbox knows tables only through
//! [`TableReader`], which the job gives each stage for the tables its spec lets it read
//! (`tables = ["regions"]`); a stage without one answers every lookup with an error.

use super::bindings::map::rivulet::udf::lookup;
use super::sandbox::SandboxState;
use rivulet_rows::Batch;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};

/// The WIT name of the interface, as a component's imports list it (with its version).
pub const INTERFACE: &str = "rivulet:udf/lookup@";

/// The tables one stage may read.
pub trait TableReader: Send + Sync {
    /// The row of `key` in `table` as a batch of one row, `None` when the key is not in
    /// it; `Err` names the table when the stage may not read it.
    fn lookup(&self, table: &str, key: &str) -> Result<Option<Batch>, String>;
}

/// What a stage's instances read tables through (`None`: the stage reads none).
pub type Reads = Option<Arc<dyn TableReader>>;

impl lookup::Host for SandboxState {
    fn lookup(&mut self, table: String, key: String) -> Result<Option<Batch>, String> {
        match &self.reads {
            Some(reader) => reader.lookup(&table, &key),
            None => Err(format!(
                "cannot read table `{table}`: this stage declares no tables (name the ones it reads in the spec: `tables = [\"{table}\"]`)"
            )),
        }
    }
}

/// Offers `lookup` to every component the linker instantiates (one that does not import it
/// is unaffected).
pub fn add_to_linker(linker: &mut Linker<SandboxState>) -> wasmtime::Result<()> {
    lookup::add_to_linker::<SandboxState, HasSelf<SandboxState>>(linker, |state| state)
}
