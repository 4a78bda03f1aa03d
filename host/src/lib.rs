//! rivulet: streaming pipelines whose step logic runs as sandboxed WebAssembly components.

pub mod stage;
pub mod udf;
