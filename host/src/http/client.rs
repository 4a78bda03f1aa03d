//! The CLI's side of the control API (`rivulet swap`, `rivulet status`), over ureq.

use std::time::Duration;

/// A response: status code and body.
pub type Answer = (u16, String);

#[derive(Debug, thiserror::Error)]
#[error("no rivulet job answers at {addr} (is `rivulet run` running?): {reason}")]
pub struct ClientError {
    pub addr: String,
    pub reason: String,
}

/// Sends a request to the control API at `addr` (`host:port`), with `token` as bearer
/// token when given.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Result<Answer, ClientError> {
    let failed = |reason: String| ClientError {
        addr: addr.to_owned(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(150)))
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let bearer = token.map(|t| format!("Bearer {t}"));
    let response = match method {
        "POST" => {
            let mut request = agent.post(&url).header("Content-Type", "application/wasm");
            if let Some(bearer) = &bearer {
                request = request.header("Authorization", bearer);
            }
            request.send(body)
        }
        _ => {
            let mut request = agent.get(&url);
            if let Some(bearer) = &bearer {
                request = request.header("Authorization", bearer);
            }
            request.call()
        }
    };
    let mut response = response.map_err(|err| failed(err.to_string()))?;
    let code = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|err| failed(err.to_string()))?;
    Ok((code, text))
}
