//! The job's HTTP endpoint (axum, on a small runtime of its own, off the record path):
//!
//! * `GET /` — the dashboard: one page (`dashboard.html`, built into the binary) that polls
//!   `/status` and swaps modules through the endpoint below. It carries no job data itself,
//!   so it is served to anyone who reaches the address; what it shows needs what `/status`
//!   needs;
//! * `GET /status` — the job, each stage's module and the job's counters, as JSON;
//! * `GET /metrics` — the same counters in the Prometheus text format ([`metrics`]);
//! * `GET /graph?format=mermaid|dot` — the job's operator graph, each stage naming the
//!   module it runs now (`rivulet graph --control`);
//! * `POST /stages/{name}/module[?file=<name>]` with a component as the body — swap it in
//!   (answers once the swap is done or rejected); `file` names it in the status and the
//!   graph. It needs the job's bearer token ([`token`]);
//! * `POST /stages/{name}/shadow`, `GET /shadows`, `POST /shadows/promote|drop` — run a
//!   candidate beside the live module and compare ([`shadow`]).
//!
//! Bound to a loopback address, the read-only endpoints are open; bound to any other
//! address, every endpoint needs the token.

pub mod client;
pub mod metrics;
pub mod shadow;
pub mod token;

use crate::status::JobStatus;
use crate::swap::SwapRequest;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
pub use token::Token;

/// The dashboard page, served at `/`.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// Largest module accepted over the API.
const MAX_BODY: usize = 64 << 20;

/// How long a swap may take before the caller is told there was no answer.
const SWAP_ANSWER: Duration = Duration::from_secs(120);

/// The job the endpoint answers for. A job restarted after a failure is a new job: the
/// endpoint is pointed at it ([`Target::set`]) and keeps its address and token.
#[derive(Clone, Default)]
pub struct Target(Arc<RwLock<Option<Current>>>);

#[derive(Clone)]
struct Current {
    status: Arc<JobStatus>,
    /// None: the job has no module to swap (built-in steps only).
    requests: Option<Sender<SwapRequest>>,
}

impl Target {
    pub fn set(&self, status: Arc<JobStatus>, requests: Option<Sender<SwapRequest>>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) =
            Some(Current { status, requests });
    }

    fn current(&self) -> Option<Current> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[derive(Clone)]
struct Shared {
    target: Target,
    token: Token,
    /// Whether read-only endpoints need the token too (not bound to loopback).
    guard_reads: bool,
}

/// Binds `addr` (falling back to a free loopback port if it is taken) and serves until the
/// process ends. Returns the bound address.
pub fn serve(addr: &str, target: Target, token: Token) -> std::io::Result<SocketAddr> {
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(addr, "control address in use; taking a free port");
            std::net::TcpListener::bind("127.0.0.1:0")?
        }
        Err(err) => return Err(err),
    };
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let shared = Shared {
        target,
        token,
        guard_reads: !bound.ip().is_loopback(),
    };
    let app = router(shared);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("rivulet-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(err) => {
                        tracing::error!("control API: {err}");
                        return;
                    }
                };
                if let Err(err) = axum::serve(listener, app).await {
                    tracing::error!("control API stopped: {err}");
                }
            });
        })?;
    Ok(bound)
}

fn router(shared: Shared) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/graph", get(graph))
        .route("/stages/{name}/module", post(swap))
        .route("/stages/{name}/shadow", post(shadow::start))
        .route("/shadows", get(shadow::list))
        .route("/shadows/promote", post(shadow::promote))
        .route("/shadows/drop", post(shadow::drop_shadow))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

fn json(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error(code: StatusCode, message: &str) -> Response {
    json(code, serde_json::json!({ "error": message }).to_string())
}

/// The refusal, unless `headers` carry the job's token (or `needed` is false).
fn refusal(shared: &Shared, headers: &HeaderMap, needed: bool) -> Option<Response> {
    if !needed {
        return None;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if shared.token.matches(given) => None,
        Some(_) => Some(error(StatusCode::UNAUTHORIZED, "wrong token")),
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "this needs the job's token: `Authorization: Bearer <token>` (rivulet swap reads it from the token file the job printed)",
        )),
    }
}

fn no_job() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "the job is (re)starting")
}

/// The job a request that needs the token acts on, or the answer that refuses it.
fn authorised(shared: &Shared, headers: &HeaderMap) -> Result<Current, Box<Response>> {
    if let Some(refused) = refusal(shared, headers, true) {
        return Err(Box::new(refused));
    }
    shared.target.current().ok_or_else(|| Box::new(no_job()))
}

/// The same for a request carrying a component as its body.
fn upload(shared: &Shared, headers: &HeaderMap, body: &Bytes) -> Result<Current, Box<Response>> {
    let current = authorised(shared, headers)?;
    if body.is_empty() {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "send the component as the request body",
        )));
    }
    Ok(current)
}

async fn dashboard() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        DASHBOARD,
    )
        .into_response()
}

async fn status(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&shared, &headers, shared.guard_reads) {
        return refused;
    }
    let Some(current) = shared.target.current() else {
        return no_job();
    };
    let snapshot = current.status.snapshot();
    match serde_json::to_string_pretty(&snapshot) {
        Ok(body) => json(StatusCode::OK, body),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

async fn metrics(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&shared, &headers, shared.guard_reads) {
        return refused;
    }
    let Some(current) = shared.target.current() else {
        return no_job();
    };
    match metrics::encode(&current.status) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

async fn graph(State(shared): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&shared, &headers, shared.guard_reads) {
        return refused;
    }
    let Some(current) = shared.target.current() else {
        return no_job();
    };
    let Some(graph) = current.status.graph() else {
        return error(StatusCode::NOT_FOUND, "this job has no graph");
    };
    let text = match query_value(&uri, "format").as_deref() {
        None | Some("mermaid") => graph.mermaid(),
        Some("dot") => graph.dot(),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("unknown graph format `{other}` (mermaid or dot)"),
            );
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

/// The value of `name` in the request's query string, percent-decoded.
fn query_value(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| client::percent_decode(value))
    })
}

/// How an uploaded module is named: its file name (no directories, printable, at most 100
/// characters), if the caller gave one.
fn upload_origin(file: Option<String>) -> String {
    let name: Option<String> = file.map(|file| {
        let base = file.rsplit(['/', '\\']).next().unwrap_or_default();
        base.chars().filter(|c| !c.is_control()).take(100).collect()
    });
    match name.filter(|n| !n.trim().is_empty()) {
        Some(name) => format!("{} {name}", crate::status::UPLOADED),
        None => format!("{} module", crate::status::UPLOADED),
    }
}

async fn swap(
    State(shared): State<Shared>,
    Path(stage): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let current = match upload(&shared, &headers, &body) {
        Ok(current) => current,
        Err(refused) => return *refused,
    };
    let (reply, answer) = channel();
    let request = SwapRequest {
        stage,
        bytes: body.to_vec(),
        origin: upload_origin(query_value(&uri, "file")),
        reply: Some(reply),
        fleet: None,
        shadow: None,
    };
    let Some(requests) = &current.requests else {
        return error(
            StatusCode::CONFLICT,
            "this job has no module to swap (its steps are built in)",
        );
    };
    if requests.send(request).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the job is shutting down");
    }
    let waited = tokio::task::spawn_blocking(move || answer.recv_timeout(SWAP_ANSWER)).await;
    match waited {
        Ok(Ok(Ok(outcome))) => json(
            StatusCode::OK,
            serde_json::to_string_pretty(&outcome).unwrap_or_default(),
        ),
        Ok(Ok(Err(reason))) => error(StatusCode::UNPROCESSABLE_ENTITY, &reason),
        Ok(Err(_)) | Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "no answer from the job within 120 s",
        ),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "try GET / (the dashboard), GET /status, GET /metrics, POST /stages/<name>/module, POST /stages/<name>/shadow, GET /shadows, POST /shadows/promote or POST /shadows/drop",
    )
}
