//! The ECS RAM role through the instance metadata service (docs/ecs-api.md §5.5): a session token
//! first (`PUT /latest/api/token`, hardened mode) with a token-less fallback, role name
//! discovery, and temporary credentials refreshed well before their `Expiration`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{
    Attempt, CredentialError, CredentialProvider, Credentials, CredentialsConfig, Environment,
};
use crate::cloud::time;
use crate::secret::Secret;

/// Where the metadata service answers on every ECS instance.
pub const DEFAULT_METADATA_URL: &str = "http://100.100.100.200";

/// Whether `url` may be used as the metadata service: plain `http` (the service has no TLS) to
/// the documented address, a link-local address, or loopback (a local test double or relay).
/// Anything else would send the session token and receive credentials from a host that is
/// not the instance's own metadata service.
pub fn check_metadata_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("metadata_url is not a URL: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("metadata_url carries a user name or password; remove them".into());
    }
    // Shown without anything but scheme, host and port.
    let url = format!(
        "{}://{}{}",
        parsed.scheme(),
        parsed.host_str().unwrap_or(""),
        parsed.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    if parsed.scheme() != "http" {
        return Err(format!(
            "{url:?} uses {}://; the metadata service is reached over plain http://",
            parsed.scheme()
        ));
    }
    let allowed = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => {
            ip == std::net::Ipv4Addr::new(100, 100, 100, 200)
                || ip.is_link_local()
                || ip.is_loopback()
        }
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unicast_link_local(),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "{url:?} is not the metadata service: only 100.100.100.200, a link-local or a loopback IP address is accepted (not a host name)"
        ))
    }
}

/// Lifetime asked for a metadata session token (the SDKs' value, the maximum).
const TOKEN_TTL_SECONDS: &str = "21600";

/// Connect and read time allowed to the metadata service (the SDKs use 1 s each).
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// The first wait after a failed refresh; doubled after each further failure.
const REFRESH_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between refresh attempts while the service keeps failing.
const REFRESH_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Fetches and caches RAM-role credentials.
pub struct ImdsProvider {
    http: reqwest::Client,
    base: String,
    role_name: Option<String>,
    imdsv1_fallback: bool,
    refresh_before: Duration,
    cache: tokio::sync::Mutex<Cache>,
    /// Set once a fetch went without a session token (IMDSv1).
    fell_back: AtomicBool,
}

/// The cached credentials and, after a failed refresh, when the next may be tried: calls
/// in between get the failure at once instead of each waiting on the metadata service.
#[derive(Default)]
struct Cache {
    credentials: Option<Credentials>,
    failure: Option<Failure>,
}

struct Failure {
    detail: String,
    failures: u32,
    retry_at: DateTime<Utc>,
}

/// How long to wait after `failures` failed refreshes in a row.
fn refresh_backoff(failures: u32) -> Duration {
    REFRESH_BACKOFF_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(REFRESH_BACKOFF_MAX)
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
            // Never follow a redirect: the answer would come from elsewhere, and the session
            // token would be sent along.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client with timeouts and no proxy always builds");
        ImdsProvider {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            role_name,
            imdsv1_fallback,
            refresh_before,
            cache: tokio::sync::Mutex::new(Cache::default()),
            fell_back: AtomicBool::new(false),
        }
    }

    /// Whether a fetch had to go without a session token (IMDSv1).
    pub fn fell_back_to_v1(&self) -> bool {
        self.fell_back.load(Ordering::Relaxed)
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
    /// ones. If a refresh fails while the cached ones still work for a minute, those are used.
    /// After a failed refresh the next one waits (1 s, doubling to 60 s); calls in between get
    /// the cached credentials or the failure without asking the service again.
    pub async fn credentials(&self, now: DateTime<Utc>) -> Result<Credentials, CredentialError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.credentials.as_ref()
            && !self.needs_refresh(cached, now)
        {
            return Ok(cached.clone());
        }
        let detail = match &cache.failure {
            Some(failure) if now < failure.retry_at => failure.detail.clone(),
            _ => match self.fetch().await {
                Ok(fresh) => {
                    cache.failure = None;
                    cache.credentials = Some(fresh.clone());
                    return Ok(fresh);
                }
                Err(error) => {
                    let detail = match error {
                        FetchError::Unreachable(d)
                        | FetchError::NoRole(d)
                        | FetchError::Failed(d) => d,
                    };
                    let failures = cache.failure.as_ref().map_or(0, |f| f.failures) + 1;
                    let wait = refresh_backoff(failures);
                    tracing::warn!(error = %detail, failures, retry_in_s = wait.as_secs(), "refreshing RAM role credentials failed");
                    cache.failure = Some(Failure {
                        detail: detail.clone(),
                        failures,
                        retry_at: now
                            + chrono::Duration::from_std(wait)
                                .unwrap_or(chrono::Duration::minutes(1)),
                    });
                    detail
                }
            },
        };
        match cache.credentials.as_ref() {
            Some(cached)
                if cached
                    .expiration
                    .is_some_and(|exp| now + chrono::Duration::minutes(1) < exp) =>
            {
                Ok(cached.clone())
            }
            _ => Err(self.error(detail)),
        }
    }

    /// Drops the cached credentials.
    pub async fn invalidate(&self) {
        let mut cache = self.cache.lock().await;
        cache.credentials = None;
        // Rejected credentials are worth one fresh attempt at once.
        cache.failure = None;
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
            None => self.discover_role(token.as_ref()).await?,
        };
        let url = format!(
            "{}/latest/meta-data/ram/security-credentials/{role}",
            self.base
        );
        let body = self.get_text(&url, token.as_ref()).await?;
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
    async fn session_token(&self) -> Result<Option<Secret>, FetchError> {
        let url = format!("{}/latest/api/token", self.base);
        let result = self
            .http
            .put(&url)
            .header("X-aliyun-ecs-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)
            .send()
            .await;
        let failure = match result {
            Ok(response) if response.status().is_success() => match response.text().await {
                Ok(token) => {
                    let token = Zeroizing::new(token);
                    if !token.trim().is_empty() {
                        return Ok(Some(Secret::new(token.trim())));
                    }
                    "the token endpoint returned an empty token".to_owned()
                }
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
            // Token-less requests are what SSRF-style attacks on the metadata service rely on:
            // worth an operator's attention every time.
            tracing::warn!(reason = %failure, "metadata session token unavailable; fetching RAM role credentials without one (IMDSv1) — set imdsv1_fallback = false once the instance enforces hardened mode");
            self.fell_back.store(true, Ordering::Relaxed);
            Ok(None)
        } else {
            Err(FetchError::Failed(format!(
                "{failure}, and the token-less fallback is disabled (imdsv1_fallback = false or ALIBABA_CLOUD_IMDSV1_DISABLED=true)"
            )))
        }
    }

    async fn discover_role(&self, token: Option<&Secret>) -> Result<String, FetchError> {
        let url = format!("{}/latest/meta-data/ram/security-credentials/", self.base);
        let body = self.get_text(&url, token).await?;
        body.lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| FetchError::NoRole("no RAM role is attached to this instance".into()))
    }

    async fn get_text(
        &self,
        url: &str,
        token: Option<&Secret>,
    ) -> Result<Zeroizing<String>, FetchError> {
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.header("X-aliyun-ecs-metadata-token", token.expose());
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
        if status.is_redirection() {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| reqwest::Url::parse(url).ok()?.join(l).ok())
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "an unnamed host".into());
            return Err(FetchError::Failed(format!(
                "GET {url} answered a redirect (HTTP {status}) to {to}, which is not followed"
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
            .map(Zeroizing::new)
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
            provider.cache.lock().await.credentials = Some(credentials);
            let warnings = if provider.fell_back_to_v1() {
                vec![format!(
                    "the metadata service at {} gave no session token, so RAM role credentials are fetched without one (IMDSv1); set imdsv1_fallback = false once the instance enforces hardened mode",
                    provider.base
                )]
            } else {
                Vec::new()
            };
            Ok(Attempt::found(
                CredentialProvider::metadata(provider).with_warnings(warnings),
            ))
        }
        Err(FetchError::Unreachable(why) | FetchError::NoRole(why)) if in_chain => {
            Ok(Attempt::Absent(why))
        }
        Err(FetchError::Unreachable(d) | FetchError::NoRole(d) | FetchError::Failed(d)) => {
            Err(provider.error(d))
        }
    }
}
