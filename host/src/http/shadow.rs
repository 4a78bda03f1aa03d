//! The control API's shadow routes (see [`crate::shadow`]), each needing the job's token
//! but the read-only `GET /shadows`:
//!
//! * `POST /stages/{name}/shadow[?for=5m|windows=N][&file=<name>]` with a component as the
//!   body — check it as a swap would and run it beside the stage's live module;
//! * `GET /shadows` — every shadow's diff and costs, as JSON;
//! * `POST /shadows/promote[?stage=<name>]` — swap the candidate in (a normal swap);
//! * `POST /shadows/drop[?stage=<name>]` — discard it.

use super::{Shared, authorised, error, json, no_job, query_value, refusal, upload, upload_origin};
use crate::shadow::Bound;
use crate::swap::{ShadowAsk, SwapRequest};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use std::sync::mpsc::channel;

/// How long a shadow's start may take before the caller is told there was no answer.
const START_ANSWER: std::time::Duration = std::time::Duration::from_secs(120);

/// The bound a request asks for: `for` (a duration) or `windows` (a count), not both.
pub fn bound(uri: &Uri) -> Result<Bound, String> {
    match (query_value(uri, "for"), query_value(uri, "windows")) {
        (Some(_), Some(_)) => Err("give --for or --windows, not both".to_owned()),
        (Some(text), None) => crate::spec::parse_duration(&text)
            .map(Bound::For)
            .map_err(|err| format!("for={text}: {err}")),
        (None, Some(text)) => match text.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Bound::Windows(n)),
            _ => Err(format!(
                "windows={text}: give a whole number of windows, at least 1"
            )),
        },
        (None, None) => Ok(Bound::For(crate::shadow::DEFAULT_FOR)),
    }
}

fn pretty<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(body) => json(StatusCode::OK, body),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

pub(super) async fn start(
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
    let bound = match bound(&uri) {
        Ok(bound) => bound,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let Some(requests) = &current.requests else {
        return error(
            StatusCode::CONFLICT,
            "this job has no module to shadow (its steps are built in)",
        );
    };
    let (reply, answer) = channel();
    let request = SwapRequest {
        stage,
        bytes: body.to_vec(),
        origin: upload_origin(query_value(&uri, "file")),
        reply: None,
        fleet: None,
        shadow: Some(ShadowAsk { bound, reply }),
    };
    if requests.send(request).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the job is shutting down");
    }
    let waited = tokio::task::spawn_blocking(move || answer.recv_timeout(START_ANSWER)).await;
    match waited {
        Ok(Ok(Ok(report))) => pretty(&report),
        Ok(Ok(Err(reason))) => error(StatusCode::UNPROCESSABLE_ENTITY, &reason),
        Ok(Err(_)) | Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "no answer from the job within 120 s",
        ),
    }
}

pub(super) async fn list(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&shared, &headers, shared.guard_reads) {
        return refused;
    }
    let Some(current) = shared.target.current() else {
        return no_job();
    };
    pretty(&current.status.shadows.reports())
}

pub(super) async fn promote(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let current = match authorised(&shared, &headers) {
        Ok(current) => current,
        Err(refused) => return *refused,
    };
    let Some(requests) = current.requests.clone() else {
        return error(StatusCode::CONFLICT, "this job has no module to swap");
    };
    let stage = query_value(&uri, "stage");
    let status = current.status.clone();
    let promoted = tokio::task::spawn_blocking(move || {
        crate::swap::promote(&requests, &status, stage.as_deref())
    })
    .await;
    match promoted {
        Ok(Ok(outcome)) => pretty(&outcome),
        Ok(Err(reason)) => error(StatusCode::UNPROCESSABLE_ENTITY, &reason),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

pub(super) async fn drop_shadow(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let current = match authorised(&shared, &headers) {
        Ok(current) => current,
        Err(refused) => return *refused,
    };
    let board = &current.status.shadows;
    let dropped = board
        .which(query_value(&uri, "stage").as_deref())
        .and_then(|stage| board.drop_shadow(&stage, "dropped on request"));
    match dropped {
        Ok(report) => pretty(&report),
        Err(err @ crate::shadow::ShadowError::Gone { .. }) => {
            error(StatusCode::CONFLICT, &err.to_string())
        }
        Err(err) => error(StatusCode::NOT_FOUND, &err.to_string()),
    }
}
