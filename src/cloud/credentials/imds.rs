//! The ECS RAM role through the instance metadata service (reference §5.5): a session token
//! first (`PUT /latest/api/token`, hardened mode) with a token-less fallback, role name
//! discovery, and temporary credentials refreshed well before their `Expiration`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{
    Attempt, CredentialError, CredentialProvider, Credentials, CredentialsConfig, Environment,
};
use crate::cloud::time;
use crate::secret::Secret;

/// Where the metadata service answers on every ECS instance.
pub const DEFAULT_METADATA_URL: &str = "http://100.100.100.200";

/// Lifetime asked for a metadata session token (the SDKs' value, the maximum).
const TOKEN_TTL_SECONDS: &str = "21600";

/// Connect and read time allowed to the metadata service (the SDKs use 1 s each).
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// Fetches and caches RAM-role credentials.
pub struct ImdsProvider {
    http: reqwest::Client,
    base: String,
    role_name: Option<String>,
    imdsv1_fallback: bool,
    refresh_before: Duration,
    cache: tokio::sync::Mutex<Option<Credentials>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleCredentials {
    #[serde(default)]
    code: String,
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    access_key_secret: Secret,
    #[serde(default)]
    security_token: Secret,
    #[serde(default)]
    expiration: String,
}

/// What went wrong talking to the metadata service.
enum FetchError {
    /// Nothing answers at the URL: this host is not an ECS instance (or it is blocked).
    Unreachable(String),
    /// The service answers but has no role for us.
    NoRole(String),
    /// Anything else.
    Failed(String),
}

impl ImdsProvider {
    /// A provider for `role_name` (discovered when `None`) at `base_url`.
    pub fn new(
        base_url: &str,
        role_name: Option<String>,
        imdsv1_fallback: bool,
        refresh_before: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(METADATA_TIMEOUT)
            .timeout(METADATA_TIMEOUT)
            // The metadata service is link-local: a proxy can neither reach it nor be trusted
            // with its answers.
            .no_proxy()
            .build()
            .expect("a reqwest client with timeouts and no proxy always builds");
        ImdsProvider {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            role_name,
            imdsv1_fallback,
            refresh_before,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// A description for logs.
    pub fn describe(&self) -> String {
        match &self.role_name {
            Some(role) => format!("ECS RAM role {role:?} via {}", self.base),
            None => format!("ECS RAM role (discovered) via {}", self.base),
        }
    }

    fn error(&self, detail: impl Into<String>) -> CredentialError {
        CredentialError::Metadata {
            url: self.base.clone(),
            detail: detail.into(),
        }
    }

    /// Cached credentials while they have more than `refresh_before` left; otherwise fresh
    /// ones. If a refresh fails while the cached ones still work for a minute, those are used
    /// and the next call tries again.
    pub async fn credentials(&self, now: DateTime<Utc>) -> Result<Credentials, CredentialError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref()
            && !self.needs_refresh(cached, now)
        {
            return Ok(cached.clone());
        }
        match self.fetch().await {
            Ok(fresh) => {
                *cache = Some(fresh.clone());
                Ok(fresh)
            }
            Err(error) => {
                let detail = match error {
                    FetchError::Unreachable(d) | FetchError::NoRole(d) | FetchError::Failed(d) => d,
                };
                match cache.as_ref() {
                    Some(cached)
                        if cached
                            .expiration
                            .is_some_and(|exp| now + chrono::Duration::minutes(1) < exp) =>
                    {
                        tracing::warn!(
                            error = %detail,
                            "refreshing RAM role credentials failed; using the cached ones until they expire"
                        );
                        Ok(cached.clone())
                    }
                    _ => Err(self.error(detail)),
                }
            }
        }
    }

    /// Drops the cached credentials.
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    fn needs_refresh(&self, credentials: &Credentials, now: DateTime<Utc>) -> bool {
        match credentials.expiration {
            Some(expiration) => {
                let margin = chrono::Duration::from_std(self.refresh_before)
                    .unwrap_or(chrono::Duration::minutes(15));
                now >= expiration - margin
            }
            None => false,
        }
    }

    async fn fetch(&self) -> Result<Credentials, FetchError> {
        let token = self.session_token().await?;
        let role = match &self.role_name {
            Some(role) => role.clone(),
            None => self.discover_role(token.as_deref()).await?,
        };
        let url = format!(
            "{}/latest/meta-data/ram/security-credentials/{role}",
            self.base
        );
        let body = self.get_text(&url, token.as_deref()).await?;
        let parsed: RoleCredentials = serde_json::from_str(&body).map_err(|e| {
            FetchError::Failed(format!(
                "the credentials of role {role:?} are not valid JSON: {e}"
            ))
        })?;
        if parsed.code != "Success" {
            return Err(FetchError::Failed(format!(
                "the credentials of role {role:?} came with Code {:?}, not \"Success\"",
                parsed.code
            )));
        }
        if parsed.access_key_id.is_empty() || parsed.access_key_secret.is_empty() {
            return Err(FetchError::Failed(format!(
                "the credentials of role {role:?} lack AccessKeyId or AccessKeySecret"
            )));
        }
        let expiration = time::parse(&parsed.expiration).map_err(|e| {
            FetchError::Failed(format!("the credentials of role {role:?}: Expiration: {e}"))
        })?;
        Ok(Credentials {
            access_key_id: parsed.access_key_id,
            access_key_secret: parsed.access_key_secret,
            security_token: (!parsed.security_token.is_empty()).then_some(parsed.security_token),
            expiration: Some(expiration),
        })
    }

    /// A session token, or `None` when the token endpoint fails and the token-less (IMDSv1)
    /// fallback is allowed.
    async fn session_token(&self) -> Result<Option<String>, FetchError> {
        let url = format!("{}/latest/api/token", self.base);
        let result = self
            .http
            .put(&url)
            .header("X-aliyun-ecs-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
            .send()
            .await;
        let failure = match result {
            Ok(response) if response.status().is_success() => match response.text().await {
                Ok(token) if !token.trim().is_empty() => return Ok(Some(token.trim().to_owned())),
                Ok(_) => "the token endpoint returned an empty token".to_owned(),
                Err(e) => format!("reading the token failed: {}", e.without_url()),
            },
            Ok(response) => format!("the token endpoint answered HTTP {}", response.status()),
            Err(e) if e.is_connect() || e.is_timeout() => {
                return Err(FetchError::Unreachable(format!(
                    "no metadata service answers ({})",
                    e.without_url()
                )));
            }
            Err(e) => format!("the token request failed: {}", e.without_url()),
        };
        if self.imdsv1_fallback {
            tracing::debug!(reason = %failure, "metadata token unavailable; falling back to token-less requests");
            Ok(None)
        } else {
            Err(FetchError::Failed(format!(
                "{failure}, and the token-less fallback is disabled (imdsv1_fallback = false or ALIBABA_CLOUD_IMDSV1_DISABLED=true)"
            )))
        }
    }

    async fn discover_role(&self, token: Option<&str>) -> Result<String, FetchError> {
        let url = format!("{}/latest/meta-data/ram/security-credentials/", self.base);
        let body = self.get_text(&url, token).await?;
        body.lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| FetchError::NoRole("no RAM role is attached to this instance".into()))
    }

    async fn get_text(&self, url: &str, token: Option<&str>) -> Result<String, FetchError> {
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.header("X-aliyun-ecs-metadata-token", token);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                FetchError::Unreachable(format!(
                    "no metadata service answers ({})",
                    e.without_url()
                ))
            } else {
                FetchError::Failed(format!("GET {url} failed: {}", e.without_url()))
            }
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(FetchError::NoRole(format!(
                "GET {url} answered 404: no such RAM role attached to this instance"
            )));
        }
        if !status.is_success() {
            return Err(FetchError::Failed(format!(
                "GET {url} answered HTTP {status}"
            )));
        }
        response
            .text()
            .await
            .map_err(|e| FetchError::Failed(format!("reading {url} failed: {}", e.without_url())))
    }
}

/// The RAM role source: in a chain, an unreachable metadata service or a host without a role
/// means "not here" and the chain moves on; when selected explicitly, both are errors.
pub(crate) async fn from_ram_role(
    config: &CredentialsConfig,
    env: &Environment,
) -> Result<Attempt, CredentialError> {
    let in_chain = config.source == super::SourceKind::Chain;
    if in_chain && env.is_true("ALIBABA_CLOUD_ECS_METADATA_DISABLED") {
        return Ok(Attempt::Absent(
            "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true".into(),
        ));
    }
    let role = config
        .ram_role_name
        .clone()
        .or_else(|| env.get("ALIBABA_CLOUD_ECS_METADATA").map(str::to_owned));
    let provider = ImdsProvider::new(
        &config.metadata_url,
        role,
        config.imdsv1_fallback && !env.is_true("ALIBABA_CLOUD_IMDSV1_DISABLED"),
        config.refresh_before,
    );
    // Fetch once now: it proves the source works, and fills the cache.
    match provider.fetch().await {
        Ok(credentials) => {
            *provider.cache.lock().await = Some(credentials);
            Ok(Attempt::found(CredentialProvider::metadata(provider)))
        }
        Err(FetchError::Unreachable(why) | FetchError::NoRole(why)) if in_chain => {
            Ok(Attempt::Absent(why))
        }
        Err(FetchError::Unreachable(d) | FetchError::NoRole(d) | FetchError::Failed(d)) => {
            Err(provider.error(d))
        }
    }
}
