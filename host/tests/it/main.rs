//! The host's integration tests, one binary: each module is one behaviour area (linking
//! one test binary instead of one per file keeps the release build's disk and link time small).

mod common;

mod avro_kafka;
mod blocking;
mod cli;
mod cluster;
mod contract;
mod crash_restart;
mod dashboard;
mod enrich;
mod enrich_topic;
mod exactly_once;
mod faults_tansu;
mod hot_swap;
mod isolation;
mod metrics;
mod module_loading;
mod new_step;
mod pipeline_kafka;
mod python_interop;
mod registry;
mod sandbox;
mod shadow;
mod specs;
mod sql;
mod sql_lookup;
mod sql_query;
mod sql_upsert;
mod tasks;
mod wasm_lookup;
mod workshop_udfs;
