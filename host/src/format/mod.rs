//! Record formats: JSON objects of result rows ([`json`]) and Avro in Confluent's wire
//! format ([`avro`]).

pub mod avro;
pub mod avro_typed;
pub mod json;
