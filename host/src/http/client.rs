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

/// `text` as a query-string value: every byte but ASCII letters, digits and `-._~` as `%XX`.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A query-string value decoded: `%XX` to its byte, `+` to a space (invalid UTF-8 replaced).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_value_survives_encoding_and_decoding() {
        let name = "my step (v2)/ünï+code.wasm";
        let encoded = percent_encode(name);
        assert_eq!(encoded, "my%20step%20%28v2%29%2F%C3%BCn%C3%AF%2Bcode.wasm");
        assert_eq!(percent_decode(&encoded), name);
        assert_eq!(
            percent_decode("a+b%2"),
            "a b%2",
            "a cut escape stays as it is"
        );
    }
}
