//! A schema registry speaking the subset of the Confluent Schema Registry REST API that
//! serializers use: the in-memory development server ([`server`], over [`store`]) that
//! `rivulet registry` runs, and the client ([`client`]) the Avro format uses against it or
//! against a real registry.

pub mod client;
pub mod server;
pub mod store;

/// The content type of every answer (and of request bodies), as Confluent's registry uses.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Where `rivulet registry` listens by default (Confluent's port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
