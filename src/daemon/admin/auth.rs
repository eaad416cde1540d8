//! Optional bearer-token protection of /metrics and /status (`[admin] bearer_token_file`), the
//! scheme Prometheus sends with `authorization: credentials_file:`. /healthz and /readyz stay
//! open: probes carry no credentials. The token is read from a file no other user may read, and
//! re-read on reload.

use std::path::Path;
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::secret::{Secret, SecretFileError, read_secret_file};

/// The shortest token accepted: anything shorter can be guessed.
const MIN_TOKEN_CHARS: usize = 16;

/// The token the protected endpoints require, if any (swapped on reload).
#[derive(Clone, Default)]
pub struct Guard {
    token: Arc<RwLock<Option<Secret>>>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("protected", &self.is_protected())
            .finish()
    }
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Unreadable, empty or open to other users.
    #[error("[admin] bearer_token_file: {0}")]
    File(#[from] SecretFileError),
    /// Too short to resist guessing.
    #[error(
        "[admin] bearer_token_file: the token in {path} has {chars} characters; use at least {MIN_TOKEN_CHARS} (e.g. `openssl rand -hex 32 > {path}`)"
    )]
    TooShort {
        /// The `bearer_token_file` path the token was read from.
        path: String,
        /// Its length.
        chars: usize,
    },
}

/// Reads the bearer token from `path` (`private_dir`: `$CREDENTIALS_DIRECTORY`, exempt from the
/// mode rule as for key files).
pub fn load_token(path: &Path, private_dir: Option<&Path>) -> Result<Secret, TokenError> {
    let token = read_secret_file(path, "admin bearer token", private_dir)?;
    let chars = token.expose().chars().count();
    if chars < MIN_TOKEN_CHARS {
        return Err(TokenError::TooShort {
            path: path.display().to_string(),
            chars,
        });
    }
    Ok(token)
}

/// The token `[admin] bearer_token_file` names, if any (read by `run`, on reload and by
/// `check-config`).
pub fn configured_token(
    bearer_token_file: Option<&Path>,
    env: &crate::cloud::credentials::Environment,
) -> Result<Option<Secret>, TokenError> {
    let private = env.credentials_directory();
    bearer_token_file
        .map(|path| load_token(path, private.as_deref()))
        .transpose()
}

impl Guard {
    /// A guard requiring `token` (none: open).
    pub fn new(token: Option<Secret>) -> Guard {
        Guard {
            token: Arc::new(RwLock::new(token)),
        }
    }

    /// Replaces the token (after a reload).
    pub fn set(&self, token: Option<Secret>) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// Whether a token is required.
    pub fn is_protected(&self) -> bool {
        self.token
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Whether the `Authorization` header value grants access.
    pub fn admits(&self, authorization: Option<&HeaderValue>) -> bool {
        let token = self.token.read().unwrap_or_else(|p| p.into_inner());
        let Some(token) = token.as_ref() else {
            return true;
        };
        let Some(presented) = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        constant_time_eq(presented.trim().as_bytes(), token.expose().as_bytes())
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right (only whether the length was).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Middleware: 401 with a `WWW-Authenticate` challenge unless the token matches.
pub async fn require_token(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if guard.admits(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"ecs-renewd\"")],
        "this endpoint needs the bearer token from [admin] bearer_token_file\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_admitted() {
        let guard = Guard::new(Some(Secret::new("0123456789abcdef0123")));
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(guard.admits(Some(&header("Bearer 0123456789abcdef0123"))));
        for wrong in [
            "Bearer 0123456789abcdef012",
            "Bearer 0123456789abcdef01234",
            "Bearer 0123456789abcdef0124",
            "bearer 0123456789abcdef0123",
            "Basic 0123456789abcdef0123",
            "0123456789abcdef0123",
        ] {
            assert!(!guard.admits(Some(&header(wrong))), "{wrong}");
        }
        assert!(!guard.admits(None));
        assert!(format!("{guard:?}").contains("protected: true"));
        assert!(!format!("{guard:?}").contains("0123456789"));
        guard.set(None);
        assert!(guard.admits(None));
    }
}
