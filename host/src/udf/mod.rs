//! The sandboxed UDF runtime: loads step components, runs them under limits, and recovers
//! from anything they do.

pub mod bindings;
pub mod cache;
pub mod deadline;
pub mod error;
pub mod guest_log;
pub mod instance;
pub mod limits;
pub mod lookup;
pub mod module;
pub mod runtime;
pub mod sandbox;
pub mod swapped;

pub use cache::{CacheOutcome, ModuleCache};
pub use error::UdfError;
pub use limits::{LimitHit, Limits};
pub use lookup::{Reads, TableReader};
pub use module::{Kind, UdfModule};
pub use runtime::Runtime;
pub use swapped::{Swapped, SwappedModule};
