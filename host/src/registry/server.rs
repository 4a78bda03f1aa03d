//! `rivulet registry`: the development schema registry over HTTP (axum, on a thread of its
//! own). In memory, compatibility NONE, no authentication: for development only.
//!
//! * `POST /subjects/{subject}/versions` `{"schema": "..."}` → `{"id": 1}` (same schema, same id)
//! * `POST /subjects/{subject}` `{"schema": "..."}` → `{"subject","version","id","schema"}`
//! * `GET /schemas/ids/{id}` → `{"schema": "..."}`
//! * `GET /subjects`, `GET /subjects/{subject}/versions`,
//!   `GET /subjects/{subject}/versions/{version|latest}`
//! * `GET /config` → `{"compatibilityLevel": "NONE"}`; `PUT /config` accepts `NONE` only
//!
//! Errors are Confluent's: `{"error_code": 40403, "message": "Schema not found"}`.

use super::CONTENT_TYPE;
use super::store::{Store, StoreError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

type Shared = Arc<Mutex<Store>>;

/// A registry request body: the schema, its type (AVRO only) and references (none).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: String,
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

/// A running registry.
#[derive(Debug)]
pub struct RegistryServer {
    pub addr: SocketAddr,
}

impl RegistryServer {
    /// Binds `listen` (port 0: any free port) and serves on a thread of its own until the
    /// process exits.
    pub fn start(listen: &str) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let app = router(Shared::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        std::thread::Builder::new()
            .name("rivulet-registry".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(err) => {
                            tracing::error!("schema registry: {err}");
                            return;
                        }
                    };
                    if let Err(err) = axum::serve(listener, app).await {
                        tracing::error!("schema registry stopped: {err}");
                    }
                });
            })?;
        Ok(RegistryServer { addr })
    }

    /// `http://host:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn router(store: Shared) -> Router {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route("/schemas/ids/{id}", get(schema))
        .route("/config", get(config).put(set_config))
        .fallback(not_found)
        .with_state(store)
}

fn answer(code: StatusCode, body: serde_json::Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: serde_json::Value) -> Response {
    answer(StatusCode::OK, body)
}

fn refuse(code: u16, error_code: u32, message: &str) -> Response {
    answer(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        json!({ "error_code": error_code, "message": message }),
    )
}

impl IntoResponse for StoreError {
    fn into_response(self) -> Response {
        refuse(self.status(), self.code(), &self.to_string())
    }
}

fn lock(store: &Shared) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The request's schema, if it is one this registry takes.
fn schema_of(body: &[u8]) -> Result<String, StoreError> {
    let request: SchemaRequest = serde_json::from_slice(body).map_err(|err| {
        StoreError::InvalidSchema(format!("the body is not a schema request: {err}"))
    })?;
    if let Some(kind) = request.schema_type.filter(|t| t != "AVRO") {
        return Err(StoreError::InvalidSchema(format!(
            "schemaType {kind} is not supported (AVRO only)"
        )));
    }
    if !request.references.is_empty() {
        return Err(StoreError::InvalidSchema(
            "schema references are not supported by this development registry".to_owned(),
        ));
    }
    Ok(request.schema)
}

async fn register(
    State(store): State<Shared>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Response {
    let schema = match schema_of(&body) {
        Ok(schema) => schema,
        Err(refusal) => return refusal.into_response(),
    };
    let registered = lock(&store).register(&subject, &schema);
    match registered {
        Ok(id) => {
            tracing::info!(subject, id, "registered");
            ok(json!({ "id": id }))
        }
        Err(err) => err.into_response(),
    }
}

async fn lookup(State(store): State<Shared>, Path(subject): Path<String>, body: Bytes) -> Response {
    let schema = match schema_of(&body) {
        Ok(schema) => schema,
        Err(refusal) => return refusal.into_response(),
    };
    let found = lock(&store).lookup(&subject, &schema);
    match found.and_then(|v| serde_json::to_value(v).map_err(|_| StoreError::SchemaNotFound)) {
        Ok(body) => ok(body),
        Err(err) => err.into_response(),
    }
}

async fn schema(State(store): State<Shared>, Path(id): Path<String>) -> Response {
    let store = lock(&store);
    match id.parse().map_err(|_| StoreError::SchemaNotFound) {
        Ok(id) => match store.schema(id) {
            Ok(text) => ok(json!({ "schema": text })),
            Err(err) => err.into_response(),
        },
        Err(err) => err.into_response(),
    }
}

async fn subjects(State(store): State<Shared>) -> Response {
    ok(json!(lock(&store).subjects()))
}

async fn versions(State(store): State<Shared>, Path(subject): Path<String>) -> Response {
    match lock(&store).versions(&subject) {
        Ok(versions) => ok(json!(versions)),
        Err(err) => err.into_response(),
    }
}

async fn version(
    State(store): State<Shared>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    let found = lock(&store).version(&subject, &version);
    match found.and_then(|v| serde_json::to_value(v).map_err(|_| StoreError::SchemaNotFound)) {
        Ok(body) => ok(body),
        Err(err) => err.into_response(),
    }
}

async fn config() -> Response {
    ok(json!({ "compatibilityLevel": "NONE" }))
}

async fn set_config(body: Bytes) -> Response {
    let level = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("compatibility")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    if level.eq_ignore_ascii_case("NONE") {
        ok(json!({ "compatibility": "NONE" }))
    } else {
        StoreError::InvalidCompatibility(level).into_response()
    }
}

async fn not_found() -> Response {
    refuse(404, 404, "HTTP 404 Not Found")
}
