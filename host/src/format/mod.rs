//! Record formats other than JSON lines: Avro in Confluent's wire format ([`avro`]).

pub mod avro;
