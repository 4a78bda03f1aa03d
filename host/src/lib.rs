//! rivulet: streaming pipelines whose step logic runs as sandboxed WebAssembly components.
//!
//! [`pipeline`] is the data flow; [`assemble`] builds it from a [`spec`]; the rest are its
//! parts, one concern each.

pub mod aggregate;
pub mod assemble;
pub mod cluster;
pub mod column_type;
pub mod console;
pub mod counters;
pub mod dead_letter;
pub mod decimal;
pub mod delivery;
pub mod emit;
pub mod error;
pub mod error_report;
pub mod expr;
pub mod fleet;
pub mod format;
pub mod graph;
pub mod http;
pub mod kafka;
pub mod pipeline;
pub mod progress;
pub mod registry;
pub mod scaffold;
pub mod seed;
pub mod shadow;
pub mod shape;
pub mod side_output;
pub mod sink;
pub mod source;
pub mod spec;
pub mod sql;
pub mod stage;
pub mod status;
pub mod swap;
pub mod table;
pub mod task;
pub mod transform;
pub mod udf;
pub mod watch;
pub mod window;
