//! The bearer token a job's swap endpoint requires: given (`RIVULET_CONTROL_TOKEN`, as the
//! compose file does) or generated per job and written to a file only its user can read,
//! `~/.cache/rivulet/control/<ip>_<port>.token`, where `rivulet swap` finds it by the
//! control address.

use rand::TryRngCore;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A job's token.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot generate a token: {0}")]
    Random(String),
    #[error("cannot write the token file {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("an empty control token was given")]
    Empty,
}

impl Token {
    /// 32 random bytes from the operating system, as hex.
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|err| TokenError::Random(err.to_string()))?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// A token given by the operator.
    pub fn given(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(Token(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token (compared in constant time).
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Writes the token to `path`, readable by its owner only.
    pub fn write(&self, path: &Path) -> Result<(), TokenError> {
        let failed = |error| TokenError::Write {
            path: path.to_owned(),
            error,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(0o600);
            // An older file keeps its mode on open: set it again.
            if path.exists() {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(failed)?;
            }
        }
        let mut file = options.open(path).map_err(failed)?;
        file.write_all(self.0.as_bytes()).map_err(failed)
    }
}

/// Where the token of the job serving at `addr` is kept (None: no home directory).
pub fn path_for(addr: &SocketAddr) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let name = format!("{}_{}.token", addr.ip(), addr.port()).replace(':', "-");
    Some(
        PathBuf::from(home)
            .join(".cache/rivulet/control")
            .join(name),
    )
}

/// The token for a control address as the CLI knows it (`host:port`): the first of its
/// resolved addresses with a token file.
pub fn read_for(addr: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()?
        .filter_map(|a| path_for(&a))
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|t| t.trim().to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_differ_and_only_the_same_text_matches() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert_ne!(a.as_str(), b.as_str());
        assert!(a.matches(a.as_str()));
        assert!(!a.matches(b.as_str()));
        assert!(!a.matches(""));
        assert!(Token::given("  ").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_token_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control/x.token");
        let token = Token::generate().unwrap();
        token.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), token.as_str());
    }
}
