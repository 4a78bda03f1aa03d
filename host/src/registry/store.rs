//! The development registry's state: schemas by id, subjects as lists of versions, in
//! memory. Compatibility is NONE: any valid Avro schema may become a subject's next version.

use serde::Serialize;
use std::collections::BTreeMap;

/// A refusal, with Confluent's HTTP status and error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    #[error("Schema not found")]
    SchemaNotFound,
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error("Invalid compatibility level {0:?}: this development registry supports NONE only")]
    InvalidCompatibility(String),
}

impl StoreError {
    /// Confluent's error code (`40403`).
    pub fn code(&self) -> u32 {
        match self {
            StoreError::SubjectNotFound(_) => 40401,
            StoreError::VersionNotFound(_) => 40402,
            StoreError::SchemaNotFound => 40403,
            StoreError::InvalidSchema(_) => 42201,
            StoreError::InvalidVersion(_) => 42202,
            StoreError::InvalidCompatibility(_) => 42203,
        }
    }

    /// The HTTP status: the code's first three digits.
    pub fn status(&self) -> u16 {
        (self.code() / 100) as u16
    }
}

/// A schema under a subject, as `GET /subjects/{subject}/versions/{version}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// Every schema and subject.
#[derive(Debug, Default)]
pub struct Store {
    /// Schema text by id - 1, as first registered.
    schemas: Vec<Stored>,
    /// Each subject's schema ids, version n at n - 1.
    subjects: BTreeMap<String, Vec<u32>>,
}

#[derive(Debug)]
struct Stored {
    text: String,
    /// The schema as parsed and written again: the same schema written differently (spaces,
    /// key order) is the same schema; logical types and defaults still count.
    canonical: String,
}

/// `text` parsed as an Avro schema and written again.
fn canonical(text: &str) -> Result<String, StoreError> {
    let schema = apache_avro::Schema::parse_str(text)
        .map_err(|err| StoreError::InvalidSchema(err.to_string()))?;
    serde_json::to_string(&schema).map_err(|err| StoreError::InvalidSchema(err.to_string()))
}

impl Store {
    /// Registers `schema` under `subject`: its id (the same schema always has the same id),
    /// a new version only if the subject does not have it yet.
    pub fn register(&mut self, subject: &str, schema: &str) -> Result<u32, StoreError> {
        let canonical = canonical(schema)?;
        let id = match self.schemas.iter().position(|s| s.canonical == canonical) {
            Some(index) => index as u32 + 1,
            None => {
                self.schemas.push(Stored {
                    text: schema.to_owned(),
                    canonical,
                });
                self.schemas.len() as u32
            }
        };
        let versions = self.subjects.entry(subject.to_owned()).or_default();
        if !versions.contains(&id) {
            versions.push(id);
        }
        Ok(id)
    }

    /// The schema with this id.
    pub fn schema(&self, id: u32) -> Result<&str, StoreError> {
        id.checked_sub(1)
            .and_then(|index| self.schemas.get(index as usize))
            .map(|s| s.text.as_str())
            .ok_or(StoreError::SchemaNotFound)
    }

    pub fn subjects(&self) -> Vec<String> {
        self.subjects.keys().cloned().collect()
    }

    /// The subject's versions, oldest first.
    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, StoreError> {
        let versions = self.ids(subject)?;
        Ok((1..=versions.len() as u32).collect())
    }

    fn ids(&self, subject: &str) -> Result<&Vec<u32>, StoreError> {
        self.subjects
            .get(subject)
            .ok_or_else(|| StoreError::SubjectNotFound(subject.to_owned()))
    }

    /// Version `version` (a number from 1, `latest` or `-1`) of `subject`.
    pub fn version(&self, subject: &str, version: &str) -> Result<SubjectVersion, StoreError> {
        let ids = self.ids(subject)?;
        let number = match version {
            "latest" | "-1" => ids.len() as u32,
            text => match text.parse::<u32>() {
                Ok(n) if n >= 1 && n <= i32::MAX as u32 => n,
                _ => return Err(StoreError::InvalidVersion(text.to_owned())),
            },
        };
        let id = number
            .checked_sub(1)
            .and_then(|index| ids.get(index as usize))
            .ok_or_else(|| StoreError::VersionNotFound(version.to_owned()))?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version: number,
            id: *id,
            schema: self.schema(*id)?.to_owned(),
        })
    }

    /// Which version of `subject` `schema` is.
    pub fn lookup(&self, subject: &str, schema: &str) -> Result<SubjectVersion, StoreError> {
        let canonical = canonical(schema)?;
        let ids = self.ids(subject)?;
        let (index, id) = ids
            .iter()
            .enumerate()
            .find(|(_, id)| {
                self.schemas
                    .get(**id as usize - 1)
                    .is_some_and(|s| s.canonical == canonical)
            })
            .ok_or(StoreError::SchemaNotFound)?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version: index as u32 + 1,
            id: *id,
            schema: self.schema(*id)?.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALE: &str =
        r#"{"type":"record","name":"StoreSale","fields":[{"name":"store_id","type":"string"}]}"#;
    const SALE_SPACED: &str = r#"{ "type": "record", "name": "StoreSale",
        "fields": [ { "name": "store_id", "type": "string" } ] }"#;
    const LOGICAL: &str = r#"{"type":"record","name":"StoreSale","fields":[{"name":"store_id","type":{"type":"string","logicalType":"uuid"}}]}"#;
    const OTHER: &str = r#"{"type":"record","name":"Other","fields":[{"name":"n","type":"long"}]}"#;

    #[test]
    fn the_same_schema_written_differently_gets_the_same_id_and_no_new_version() {
        let mut store = Store::default();
        assert_eq!(store.register("sales-value", SALE), Ok(1));
        assert_eq!(store.register("sales-value", SALE_SPACED), Ok(1));
        assert_eq!(store.register("other-value", SALE), Ok(1));
        assert_eq!(store.register("sales-value", OTHER), Ok(2));
        assert_eq!(store.register("sales-value", LOGICAL), Ok(3));
        assert_eq!(store.versions("sales-value"), Ok(vec![1, 2, 3]));
        assert_eq!(store.versions("other-value"), Ok(vec![1]));
        assert_eq!(store.schema(1), Ok(SALE));
        assert_eq!(store.version("sales-value", "latest").map(|v| v.id), Ok(3));
        assert_eq!(
            store.lookup("sales-value", SALE_SPACED).map(|v| v.version),
            Ok(1)
        );
    }

    #[test]
    fn refusals_carry_confluents_codes() {
        let mut store = Store::default();
        let invalid = store.register("s", "{\"type\":\"nope\"}").unwrap_err();
        assert_eq!((invalid.status(), invalid.code()), (422, 42201));
        assert_eq!(store.schema(1), Err(StoreError::SchemaNotFound));
        assert_eq!(store.schema(0), Err(StoreError::SchemaNotFound));
        assert_eq!(
            store.version("s", "1"),
            Err(StoreError::SubjectNotFound("s".into()))
        );
        store.register("s", SALE).unwrap();
        assert_eq!(
            store.version("s", "2"),
            Err(StoreError::VersionNotFound("2".into()))
        );
        assert_eq!(
            store.version("s", "0"),
            Err(StoreError::InvalidVersion("0".into()))
        );
        assert_eq!(store.lookup("s", OTHER), Err(StoreError::SchemaNotFound));
        assert_eq!(StoreError::SchemaNotFound.to_string(), "Schema not found");
    }
}
