//! A Confluent Schema Registry client (over ureq): writer schemas by id, cached per id, and
//! registration under a subject, cached per (subject, schema). Works against
//! `rivulet registry` or a real registry.

use super::CONTENT_TYPE;
use apache_avro::Schema;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong talking to the registry, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the schema registry at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("schema id {id} is not in the schema registry at {url}")]
    UnknownId { url: String, id: u32 },
    #[error("the schema registry at {url} refused {what}: {message} (error code {code})")]
    Refused {
        url: String,
        what: String,
        code: i64,
        message: String,
    },
    #[error(
        "the schema registry at {url} gave an answer to {what} that is not the registry's: {reason}"
    )]
    Malformed {
        url: String,
        what: String,
        reason: String,
    },
    #[error(
        "schema id {id} from the schema registry at {url} is not a valid Avro schema: {reason}"
    )]
    InvalidSchema {
        url: String,
        id: u32,
        reason: String,
    },
}

/// A registry at one base URL.
pub struct RegistryClient {
    url: String,
    agent: ureq::Agent,
    by_id: HashMap<u32, Arc<Schema>>,
    ids: HashMap<(String, String), u32>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client of the registry at `url` (`http://127.0.0.1:8081`); connects on first use.
    pub fn new(url: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        RegistryClient {
            url: url.trim_end_matches('/').to_owned(),
            agent,
            by_id: HashMap::new(),
            ids: HashMap::new(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the registry answers (`GET /subjects`).
    pub fn check(&self) -> Result<(), RegistryError> {
        self.call("GET", "/subjects", None, "the list of subjects")
            .map(|_| ())
    }

    /// The writer schema with this id (fetched once, then from the cache).
    pub fn schema(&mut self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(schema) = self.by_id.get(&id) {
            return Ok(schema.clone());
        }
        let what = format!("schema id {id}");
        let body = match self.call("GET", &format!("/schemas/ids/{id}"), None, &what) {
            Err(RegistryError::Refused { code: 40403, .. }) => {
                return Err(RegistryError::UnknownId {
                    url: self.url.clone(),
                    id,
                });
            }
            other => other?,
        };
        let text = body
            .get("schema")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| self.malformed(&what, "no `schema` text"))?;
        let schema = Schema::parse_str(text).map_err(|err| RegistryError::InvalidSchema {
            url: self.url.clone(),
            id,
            reason: err.to_string(),
        })?;
        let schema = Arc::new(schema);
        self.by_id.insert(id, schema.clone());
        Ok(schema)
    }

    /// Registers `schema` under `subject` (once per client); its id.
    pub fn register(&mut self, subject: &str, schema: &Schema) -> Result<u32, RegistryError> {
        // The whole schema: its parsing canonical form would drop logical types.
        let text = serde_json::to_string(schema).map_err(|err| {
            self.malformed(&format!("a schema for `{subject}`"), &err.to_string())
        })?;
        let key = (subject.to_owned(), text);
        if let Some(id) = self.ids.get(&key) {
            return Ok(*id);
        }
        let what = format!("a schema for subject `{subject}`");
        let request = serde_json::json!({ "schema": key.1 });
        let path = format!("/subjects/{}/versions", encode(subject));
        let body = self.call("POST", &path, Some(&request), &what)?;
        let id = body
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| self.malformed(&what, "no `id`"))?;
        self.by_id.insert(id, Arc::new(schema.clone()));
        self.ids.insert(key, id);
        Ok(id)
    }

    fn malformed(&self, what: &str, reason: &str) -> RegistryError {
        RegistryError::Malformed {
            url: self.url.clone(),
            what: what.to_owned(),
            reason: reason.to_owned(),
        }
    }

    /// One request; the JSON answer, or the registry's refusal.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<serde_json::Value, RegistryError> {
        let url = format!("{}{path}", self.url);
        let response = match body {
            Some(body) => self
                .agent
                .post(&url)
                .header("Content-Type", CONTENT_TYPE)
                .header("Accept", CONTENT_TYPE)
                .send(body.to_string()),
            None if method == "GET" => self.agent.get(&url).header("Accept", CONTENT_TYPE).call(),
            None => self.agent.post(&url).send_empty(),
        };
        let mut response = response.map_err(|err| RegistryError::Unreachable {
            url: self.url.clone(),
            reason: err.to_string(),
        })?;
        let status = response.status().as_u16();
        let text =
            response
                .body_mut()
                .read_to_string()
                .map_err(|err| RegistryError::Unreachable {
                    url: self.url.clone(),
                    reason: err.to_string(),
                })?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| self.malformed(what, &format!("HTTP {status}: {}", clip(&text))))?;
        if (200..300).contains(&status) {
            return Ok(json);
        }
        Err(RegistryError::Refused {
            url: self.url.clone(),
            what: what.to_owned(),
            code: json
                .get("error_code")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(i64::from(status)),
            message: json
                .get("message")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no message")
                .to_owned(),
        })
    }
}

/// A subject as one path segment.
fn encode(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for byte in subject.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}
