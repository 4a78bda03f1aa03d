//! The control API of a running job, on local HTTP:
//!
//! * `GET /status` — the job and each stage's module (hash, state version, load time, swaps);
//! * `POST /stages/<name>/module` with a component as the body — swap it in (answers once
//!   the swap is done or rejected).

use crate::status::JobStatus;
use crate::swap::SwapRequest;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

/// Largest module accepted over the API.
const MAX_BODY: usize = 64 << 20;

/// Binds `addr` (falling back to a free port if it is taken) and serves until the process
/// ends. Returns the bound address.
pub fn serve(
    addr: &str,
    status: Arc<JobStatus>,
    requests: Sender<SwapRequest>,
) -> std::io::Result<SocketAddr> {
    let listener = match TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(addr, "control address in use; taking a free port");
            TcpListener::bind("127.0.0.1:0")?
        }
        Err(err) => return Err(err),
    };
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("rivulet-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let status = status.clone();
                let requests = requests.clone();
                let _ = std::thread::Builder::new()
                    .name("rivulet-control-conn".into())
                    .spawn(move || {
                        if let Err(err) = handle(stream, &status, &requests) {
                            tracing::debug!("control connection: {err}");
                        }
                    });
            }
        })?;
    Ok(bound)
}

fn respond(stream: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        _ => "Error",
    };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn error_body(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn handle(
    mut stream: TcpStream,
    status: &JobStatus,
    requests: &Sender<SwapRequest>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    match (method, path.trim_end_matches('/')) {
        ("GET", "/status") => {
            let body = serde_json::to_string_pretty(&status.snapshot())
                .unwrap_or_else(|e| error_body(&e.to_string()));
            respond(&mut stream, 200, &body)
        }
        ("POST", path) if path.starts_with("/stages/") && path.ends_with("/module") => {
            let stage = path
                .trim_start_matches("/stages/")
                .trim_end_matches("/module")
                .to_owned();
            if length == 0 {
                return respond(
                    &mut stream,
                    400,
                    &error_body("send the component as the request body"),
                );
            }
            if length > MAX_BODY {
                return respond(&mut stream, 413, &error_body("module larger than 64 MiB"));
            }
            let mut bytes = vec![0; length];
            reader.read_exact(&mut bytes)?;
            let (reply, answer) = channel();
            let request = SwapRequest {
                stage,
                bytes,
                origin: "uploaded module".to_owned(),
                reply: Some(reply),
            };
            if requests.send(request).is_err() {
                return respond(&mut stream, 500, &error_body("the job is shutting down"));
            }
            match answer.recv_timeout(Duration::from_secs(120)) {
                Ok(Ok(outcome)) => respond(
                    &mut stream,
                    200,
                    &serde_json::to_string_pretty(&outcome).unwrap_or_default(),
                ),
                Ok(Err(reason)) => respond(&mut stream, 422, &error_body(&reason)),
                Err(_) => respond(
                    &mut stream,
                    500,
                    &error_body("no answer from the job within 120 s"),
                ),
            }
        }
        _ => respond(
            &mut stream,
            404,
            &error_body("try GET /status or POST /stages/<name>/module"),
        ),
    }
}

/// A tiny client for the CLI: sends a request, returns (status code, body).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(150)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/wasm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}
