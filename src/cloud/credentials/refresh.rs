//! Temporary credentials fetched from somewhere (STS for an assumed role, a credentials URI)
//! and held between calls: fetched again before they expire (`refresh_before` their expiry,
//! never before half their life, so a short-lived key is not fetched on every call); a failed
//! fetch keeps the current key while it has more than a minute left; a refusal (the source said no, and
//! asking again soon cannot help) is said once and the source asked again only after
//! [`REFUSAL_PAUSE`], so a misconfiguration is one clear error, not a storm of calls.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use super::{CredentialError, Credentials};

/// How long a refusal stands before the source is asked again (a fix made meanwhile is picked
/// up then, or at a reload).
pub const REFUSAL_PAUSE: Duration = Duration::from_secs(5 * 60);

/// Why a fetch failed, kept to be said again while a refusal stands.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The whole message (code, text, request id, advice; never a secret).
    pub text: String,
    /// The source refused: asking again soon cannot help.
    pub refused: bool,
}

/// Where temporary credentials come from.
pub trait Fetch: Send + Sync {
    /// What is fetched, for messages ("assuming RAM role acs:…", "the credentials URI …").
    fn what(&self) -> String;

    /// Fetches a key at `now`.
    fn fetch(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Credentials, Failure>>;

    /// The service rejected the current key: forget what the source itself holds (an assumed
    /// role's base credentials).
    fn invalidate(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// What is held between calls.
#[derive(Default)]
struct Held {
    /// The current key.
    current: Option<Credentials>,
    /// When it was fetched (its refresh point lies between then and its expiry).
    fetched_at: Option<DateTime<Utc>>,
    /// The last refusal and when it came.
    refusal: Option<(DateTime<Utc>, Failure)>,
}

/// Temporary credentials from `source`, held and refreshed.
pub struct Refreshing {
    source: Box<dyn Fetch>,
    refresh_before: Duration,
    held: tokio::sync::Mutex<Held>,
}

impl Refreshing {
    /// Keys from `source`, fetched again `refresh_before` their expiry (at most half their
    /// lifetime before it).
    pub fn new(source: Box<dyn Fetch>, refresh_before: Duration) -> Refreshing {
        Refreshing {
            source,
            refresh_before,
            held: tokio::sync::Mutex::new(Held::default()),
        }
    }

    /// Forgets the current key (the service rejected it), so the next call fetches another.
    pub async fn invalidate(&self) {
        let mut held = self.held.lock().await;
        held.current = None;
        held.fetched_at = None;
        self.source.invalidate().await;
    }

    /// The key to sign with at `now`: the current one until its refresh point, else a fresh
    /// one; the current one while it still works if fetching fails.
    pub async fn credentials(&self, now: DateTime<Utc>) -> Result<Credentials, CredentialError> {
        let mut held = self.held.lock().await;
        if let Some(current) = &held.current
            && now < self.refresh_point(current, held.fetched_at)
        {
            return Ok(current.clone());
        }
        if let Some((at, failure)) = &held.refusal
            && now < *at + chrono::Duration::from_std(REFUSAL_PAUSE).unwrap_or_default()
        {
            return Err(self.error(failure));
        }
        match self.source.fetch(now).await {
            Ok(fresh) => {
                held.current = Some(fresh.clone());
                held.fetched_at = Some(now);
                held.refusal = None;
                Ok(fresh)
            }
            Err(failure) => {
                if failure.refused {
                    tracing::error!("{}: {}", self.source.what(), failure.text);
                    held.refusal = Some((now, failure.clone()));
                }
                // A key with less than a minute left could expire while a request is out.
                let usable = |end: DateTime<Utc>| now + chrono::Duration::minutes(1) < end;
                match &held.current {
                    Some(current) if current.expiration.is_some_and(usable) => {
                        tracing::warn!(
                            expires = %current.expiration.map(|t| t.to_rfc3339()).unwrap_or_default(),
                            "{}: could not refresh the key; the current one is used until it expires: {}",
                            self.source.what(),
                            failure.text
                        );
                        Ok(current.clone())
                    }
                    _ => Err(self.error(&failure)),
                }
            }
        }
    }

    /// When `current` should be replaced: `refresh_before` its expiry, but no earlier than
    /// halfway through its life.
    fn refresh_point(
        &self,
        current: &Credentials,
        fetched_at: Option<DateTime<Utc>>,
    ) -> DateTime<Utc> {
        let Some(expiry) = current.expiration else {
            return DateTime::<Utc>::MAX_UTC;
        };
        let before = chrono::Duration::from_std(self.refresh_before).unwrap_or_default();
        let halfway = fetched_at.map(|at| at + (expiry - at) / 2);
        match halfway {
            Some(halfway) => (expiry - before).max(halfway),
            None => expiry - before,
        }
    }

    fn error(&self, failure: &Failure) -> CredentialError {
        CredentialError::Temporary {
            what: self.source.what(),
            detail: failure.text.clone(),
        }
    }
}
