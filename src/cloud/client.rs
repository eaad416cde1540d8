//! `EcsClient`: one account's connection to ECS. Every call is rate-limited per (region,
//! action), signed afresh per attempt (new nonce and timestamp), sent as a POST form (so no
//! parameter, the STS token included, ever sits in a URL), decoded into typed responses or a
//! classified error, and retried only where that is safe.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngExt;
use reqwest::Url;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::action::Action;
use super::credentials::{CredentialProvider, Credentials};
use super::endpoint::Endpoint;
use super::error::{ApiError, CloudError, ErrorClass, TransportKind, classify, hint_for};
use super::rate_limit::{RateLimitConfig, RateLimiter};
use super::retry::{NextStep, RetryPolicy};
use super::signer::{self, SIGNATURE_METHOD, SIGNATURE_VERSION};
use super::time;
use super::types::ErrorBody;
use crate::clock::Clock;
use crate::secret::REDACTED;

/// How long an idle pooled connection is kept. Long enough to reuse connections within a pass,
/// short enough that they (and their grown read buffers) are gone while the daemon idles.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Larger answers are refused (a full DescribeInstances page is a few hundred KiB).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How much of an undecodable body is quoted in the error.
const SNIPPET_CHARS: usize = 160;

/// Observes every attempt (the metrics module implements this).
pub trait CallObserver: Send + Sync {
    /// One attempt ended: `Ok` or the failure class, and how long it took.
    fn attempt_finished(
        &self,
        account: &str,
        action: Action,
        region: &str,
        outcome: Result<(), ErrorClass>,
        elapsed: Duration,
    );
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct NoObserver;

impl CallObserver for NoObserver {
    fn attempt_finished(
        &self,
        _: &str,
        _: Action,
        _: &str,
        _: Result<(), ErrorClass>,
        _: Duration,
    ) {
    }
}

/// Everything an account's client needs besides its credentials.
#[derive(Clone)]
pub struct ClientSettings {
    /// The account's name in the config (for logs and metrics).
    pub account: String,
    /// Where requests go.
    pub endpoint: Endpoint,
    /// Per-action read timeout overrides; others use [`Action::default_read_timeout`].
    pub read_timeouts: Vec<(Action, Duration)>,
    /// In-run retries.
    pub retry: RetryPolicy,
    /// Client-side rate limits.
    pub rate_limit: RateLimitConfig,
}

/// Builds the one HTTP client all accounts share (connection pool, TLS config).
pub fn shared_http_client(connect_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        // A pure-Rust resolver: the static binary in the scratch image cannot load glibc's
        // NSS modules.
        .hickory_dns(true)
        .user_agent(concat!("ecs-renewd/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // A redirect would resend the signed body, STS token included, to whatever host the
        // Location names: never followed (the answer becomes a `Redirected` error).
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a rustls reqwest client with default roots always builds")
}

/// One account's ECS client.
pub struct EcsClient {
    settings: ClientSettings,
    http: reqwest::Client,
    credentials: Arc<CredentialProvider>,
    limiter: RateLimiter,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn CallObserver>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for EcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsClient")
            .field("account", &self.settings.account)
            .field("endpoint", &self.settings.endpoint)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// A typed answer plus the request id it came with.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    /// The decoded body.
    pub body: T,
    /// How many attempts it took.
    pub attempts: u32,
}

impl EcsClient {
    /// A client for one account.
    pub fn new(
        settings: ClientSettings,
        http: reqwest::Client,
        credentials: Arc<CredentialProvider>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let limiter = RateLimiter::new(settings.rate_limit.clone());
        EcsClient {
            settings,
            http,
            credentials,
            limiter,
            clock,
            observer: Arc::new(NoObserver),
            cancel: CancellationToken::new(),
        }
    }

    /// Reports every attempt to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Stops starting calls once `cancel` fires (the call in flight completes).
    pub fn with_cancellation(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Overrides one action's read timeout.
    pub fn with_read_timeout(mut self, action: Action, timeout: Duration) -> Self {
        self.settings.read_timeouts.retain(|(a, _)| *a != action);
        self.settings.read_timeouts.push((action, timeout));
        self
    }

    /// The account's name.
    pub fn account(&self) -> &str {
        &self.settings.account
    }

    /// Where the credentials come from.
    pub fn credentials_origin(&self) -> &str {
        self.credentials.origin()
    }

    /// Whether usable credentials can be had right now.
    pub async fn check_credentials(&self) -> Result<(), CloudError> {
        self.credentials
            .credentials(self.clock.now())
            .await
            .map(|_| ())
            .map_err(|source| CloudError::Credentials {
                account: self.settings.account.clone(),
                source,
            })
    }

    /// How long a call of `action` may wait for its answer (configured, or the SDK's).
    pub fn read_timeout(&self, action: Action) -> Duration {
        self.settings
            .read_timeouts
            .iter()
            .find(|(a, _)| *a == action)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| action.default_read_timeout())
    }

    /// Sends `action` about `region` with `params` and decodes the answer into `T`, retrying
    /// per the retry policy. `params` must not contain the common signing parameters.
    pub async fn call<T: DeserializeOwned>(
        &self,
        action: Action,
        region: &str,
        params: &[(&str, String)],
    ) -> Result<Answer<T>, CloudError> {
        let url = self
            .settings
            .endpoint
            .url_for(region)
            .map_err(|e| CloudError::Refused {
                action,
                region: region.to_owned(),
                detail: e.to_string(),
            })?;
        self.call_url(action, region, &url, params).await
    }

    /// [`EcsClient::call`] to a given URL (BSS calls go to the account site's billing
    /// endpoint, not a region's).
    pub async fn call_url<T: DeserializeOwned>(
        &self,
        action: Action,
        region: &str,
        url: &Url,
        params: &[(&str, String)],
    ) -> Result<Answer<T>, CloudError> {
        let has_client_token = params
            .iter()
            .any(|(name, value)| *name == "ClientToken" && !value.is_empty());
        let mut call = CallState::new(action, region);
        loop {
            call.attempt += 1;
            if self.cancel.is_cancelled() {
                return Err(call.stopped());
            }
            tokio::select! {
                _ = self.limiter.acquire(region, action) => {}
                _ = self.cancel.cancelled() => return Err(call.stopped()),
            }
            let attempted = self.observed_attempt::<T>(action, region, url, params, call.attempt);
            let error = match attempted.await {
                Ok(body) => {
                    return Ok(Answer {
                        body,
                        attempts: call.attempt,
                    });
                }
                Err(error) => error,
            };
            let jitter: f64 = rand::rng().random_range(0.0..=1.0);
            let retry = &self.settings.retry;
            let step = retry.next_step(action, has_client_token, call.attempt, &error, jitter);
            call.unanswered |= error.outcome_unknown();
            let NextStep::RetryAfter(delay) = step else {
                return Err(call.ending(error));
            };
            tracing::warn!(
                account = %self.settings.account,
                action = %action,
                region = %region,
                attempt = call.attempt,
                class = %error.class(),
                error = %error,
                retry_in_ms = delay.as_millis() as u64,
                "ECS call failed; retrying"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.cancel.cancelled() => return Err(call.ending(error)),
            }
            call.last = Some(error);
        }
    }

    /// One attempt in its span, counted by the observer when it was sent; credentials the
    /// service no longer knows are dropped so the next attempt fetches fresh ones.
    async fn observed_attempt<T: DeserializeOwned>(
        &self,
        action: Action,
        region: &str,
        url: &Url,
        params: &[(&str, String)],
        attempt: u32,
    ) -> Result<T, CloudError> {
        let span = tracing::debug_span!(
            "ecs_call",
            account = %self.settings.account,
            action = %action,
            region = %region,
            attempt
        );
        let started = tokio::time::Instant::now();
        let result =
            tracing::Instrument::instrument(self.attempt::<T>(action, region, url, params), span)
                .await;
        // Only requests that were sent count (credentials can fail before sending).
        if !matches!(result, Err(CloudError::Credentials { .. })) {
            self.observer.attempt_finished(
                &self.settings.account,
                action,
                region,
                result.as_ref().map(|_| ()).map_err(CloudError::class),
                started.elapsed(),
            );
        }
        if let Err(CloudError::Api(api)) = &result
            && (api.code.starts_with("InvalidAccessKeyId")
                || api.code.starts_with("InvalidSecurityToken"))
        {
            // Temporary credentials can be revoked or expire early: fetch fresh ones next time.
            self.credentials.invalidate().await;
        }
        result
    }

    /// One signed attempt.
    async fn attempt<T: DeserializeOwned>(
        &self,
        action: Action,
        region: &str,
        url: &Url,
        params: &[(&str, String)],
    ) -> Result<T, CloudError> {
        let now = self.clock.now();
        let credentials =
            self.credentials
                .credentials(now)
                .await
                .map_err(|source| CloudError::Credentials {
                    account: self.settings.account.clone(),
                    source,
                })?;
        let nonce = new_nonce();
        let signed = signed_parameters(action, region, params, &credentials, &nonce, now);
        let response = self
            .http
            .post(url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header("x-acs-action", action.as_str())
            .header("x-acs-version", action.version())
            .timeout(self.read_timeout(action))
            .body(form_body(&signed))
            .send()
            .await
            .map_err(|e| self.transport_error(action, region, url, e))?;
        let status = response.status().as_u16();
        if (300..400).contains(&status) {
            return Err(CloudError::Redirected {
                action,
                region: region.to_owned(),
                http_status: status,
                location_host: location_host(response.headers(), url),
            });
        }
        let retry_after = retry_after(response.headers());
        let bytes = read_body(response)
            .await
            .map_err(|e| self.transport_error(action, region, url, e))?;
        let answer = Received {
            action,
            region,
            status,
            retry_after,
            bytes: &bytes,
            string_to_sign: &signed.string_to_sign,
        };
        answer.decode(|text| scrub_secrets(text, &credentials))
    }

    fn transport_error(
        &self,
        action: Action,
        region: &str,
        url: &Url,
        error: reqwest::Error,
    ) -> CloudError {
        let kind = if error.is_timeout() {
            TransportKind::Timeout
        } else if error.is_connect() {
            TransportKind::Connect
        } else {
            TransportKind::Other
        };
        let endpoint = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        CloudError::Transport {
            action,
            region: region.to_owned(),
            endpoint,
            kind,
            source: error.without_url(),
        }
    }
}

/// Where one call stands across its attempts.
struct CallState<'a> {
    action: Action,
    region: &'a str,
    attempt: u32,
    /// Once an attempt may have been carried out (no answer, or a 5xx), every later way out of
    /// the call says so: the caller must treat a charge as possibly made.
    unanswered: bool,
    /// The last attempt's error: shutdown before a retry ends the call with it, so only a call
    /// that sent nothing ends "not sent".
    last: Option<CloudError>,
}

impl<'a> CallState<'a> {
    fn new(action: Action, region: &'a str) -> CallState<'a> {
        CallState {
            action,
            region,
            attempt: 0,
            unanswered: false,
            last: None,
        }
    }

    /// The call ends with `error`, marked unknown once an attempt went unanswered.
    fn ending(&self, error: CloudError) -> CloudError {
        if self.unanswered {
            error.after_unanswered()
        } else {
            error
        }
    }

    /// Shutdown came before the next attempt.
    fn stopped(&mut self) -> CloudError {
        match self.last.take() {
            Some(error) => self.ending(error),
            None => CloudError::ShuttingDown {
                action: self.action,
                region: self.region.to_owned(),
            },
        }
    }
}

/// An answer as it came back, to be decoded.
struct Received<'a> {
    action: Action,
    region: &'a str,
    status: u16,
    retry_after: Option<Duration>,
    bytes: &'a [u8],
    /// What this request signed (the service quotes its own on `SignatureDoesNotMatch`).
    string_to_sign: &'a str,
}

impl Received<'_> {
    /// The body as `T` (2xx), or the error it says; `scrub` takes secrets out of quoted text.
    fn decode<T: DeserializeOwned>(&self, scrub: impl Fn(&str) -> String) -> Result<T, CloudError> {
        let decode_error = |detail: String| CloudError::Decode {
            action: self.action,
            region: self.region.to_owned(),
            http_status: self.status,
            request_id: request_id_in(self.bytes),
            detail,
            snippet: scrub(&snippet(self.bytes)),
        };
        if (200..300).contains(&self.status) {
            return serde_json::from_slice::<T>(self.bytes)
                .map_err(|e| decode_error(e.to_string()));
        }
        match serde_json::from_slice::<ErrorBody>(self.bytes) {
            Ok(body) if !body.code.is_empty() => Err(self.api_error(body, &scrub)),
            Ok(_) | Err(_) => Err(decode_error("an error answer without a JSON Code".into())),
        }
    }

    /// An error answer with its class and a hint.
    fn api_error(&self, body: ErrorBody, scrub: &impl Fn(&str) -> String) -> CloudError {
        let class = classify(&body.code, self.status);
        let mut hint = hint_for(&body.code, class);
        let mut message = body.message.clone();
        if body.code == "SignatureDoesNotMatch" {
            // The service quotes its string to sign; it holds the STS token, so it is cut off
            // here after comparing it with ours, as the official SDKs do.
            if let Some((text, server_string)) = message.split_once("server string to sign is:") {
                hint = if server_string.trim() == self.string_to_sign {
                    "the service computed the same string to sign, so the AccessKey secret is wrong: check the secret configured for this account".into()
                } else {
                    "the service computed a different string to sign: a proxy may have changed the request, or this is a signing bug".into()
                };
                message = text.trim().to_owned();
            }
        }
        CloudError::Api(Box::new(ApiError {
            action: self.action,
            region: self.region.to_owned(),
            http_status: self.status,
            code: body.code,
            message: scrub(&message),
            request_id: body.request_id,
            class,
            retry_after: self.retry_after,
            hint,
        }))
    }
}

/// The form body of a signed request. It carries the STS token, so it is built in one buffer
/// sized up front and handed to the HTTP client as bytes that are wiped when the last
/// reference to them is dropped (after the request is written).
pub fn form_body(signed: &SignedParameters) -> bytes::Bytes {
    let most = signed
        .parameters
        .iter()
        .map(|(name, value)| 3 * (name.len() + value.len()) + 2)
        .sum::<usize>()
        + 3 * signed.signature.len()
        + 12;
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(most));
    for (name, value) in &signed.parameters {
        form.append_pair(name, value);
    }
    form.append_pair("Signature", &signed.signature);
    bytes::Bytes::from_owner(WipedOnDrop(form.finish().into_bytes()))
}

/// An unsigned form body (an anonymous call: `AssumeRoleWithOIDC`), built and wiped as
/// [`form_body`]'s are: it carries a token.
pub fn wiped_form(pairs: &[(&str, &str)]) -> bytes::Bytes {
    let most = pairs
        .iter()
        .map(|(name, value)| 3 * (name.len() + value.len()) + 2)
        .sum::<usize>();
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(most));
    for (name, value) in pairs {
        form.append_pair(name, value);
    }
    bytes::Bytes::from_owner(WipedOnDrop(form.finish().into_bytes()))
}

/// Bytes that are zeroed before their memory is freed.
struct WipedOnDrop(Vec<u8>);

impl AsRef<[u8]> for WipedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for WipedOnDrop {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// The parameters of one attempt, signed. They include the STS token (and the string to sign
/// repeats it): wiped when dropped.
pub struct SignedParameters {
    /// Every parameter except `Signature`.
    pub parameters: Vec<(String, String)>,
    /// What was signed.
    pub string_to_sign: String,
    /// Base64 HMAC-SHA1 of `string_to_sign`, sent as the `Signature` parameter.
    pub signature: String,
}

/// Adds the common parameters (docs/ecs-api.md §1.1) to `params` and signs them for a POST.
pub fn signed_parameters(
    action: Action,
    region: &str,
    params: &[(&str, String)],
    credentials: &Credentials,
    nonce: &str,
    now: DateTime<Utc>,
) -> SignedParameters {
    let api = (action.as_str(), action.version());
    signed_call(api, region, params, credentials, nonce, now)
}

/// [`signed_parameters`] for any RPC-style API's `(action, version)` (STS's too).
pub fn signed_call(
    (action, version): (&str, &str),
    region: &str,
    params: &[(&str, String)],
    credentials: &Credentials,
    nonce: &str,
    now: DateTime<Utc>,
) -> SignedParameters {
    let mut parameters: Vec<(String, String)> = vec![
        ("Action".into(), action.into()),
        ("Version".into(), version.into()),
        ("Format".into(), "JSON".into()),
        ("AccessKeyId".into(), credentials.access_key_id.clone()),
        ("SignatureMethod".into(), SIGNATURE_METHOD.into()),
        ("SignatureVersion".into(), SIGNATURE_VERSION.into()),
        ("SignatureNonce".into(), nonce.into()),
        ("Timestamp".into(), time::format_seconds(now)),
    ];
    if let Some(token) = &credentials.security_token {
        parameters.push(("SecurityToken".into(), token.expose().into()));
    }
    if !region.is_empty() && !params.iter().any(|(name, _)| *name == "RegionId") {
        parameters.push(("RegionId".into(), region.into()));
    }
    parameters.extend(params.iter().map(|(n, v)| ((*n).to_owned(), v.clone())));
    let signed = signer::sign(
        "POST",
        parameters.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        &credentials.access_key_secret,
    );
    let mut signed = signed;
    SignedParameters {
        parameters,
        string_to_sign: std::mem::take(&mut signed.string_to_sign),
        signature: std::mem::take(&mut signed.signature),
    }
}

impl Drop for SignedParameters {
    fn drop(&mut self) {
        for (_, value) in &mut self.parameters {
            zeroize::Zeroize::zeroize(value);
        }
        zeroize::Zeroize::zeroize(&mut self.string_to_sign);
    }
}

/// A fresh 32-hex-digit nonce (the official SDKs send the same shape).
pub fn new_nonce() -> String {
    let value: u128 = rand::rng().random();
    format!("{value:032x}")
}

/// The host (and port) a redirect's `Location` names, resolved against the request URL; never
/// its path or query, which could carry anything.
fn location_host(headers: &reqwest::header::HeaderMap, url: &Url) -> String {
    let Some(location) = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
    else {
        return "no Location header".into();
    };
    match url.join(location) {
        Ok(target) => match (target.host_str(), target.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => "a Location without a host".into(),
        },
        Err(_) => "an unreadable Location".into(),
    }
}

/// `x-acs-retry-after` (milliseconds, as the Tea SDK reads it) or `Retry-After` (seconds).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<u64> {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
    };
    number("x-acs-retry-after")
        .map(Duration::from_millis)
        .or_else(|| number("retry-after").map(Duration::from_secs))
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            // Keep what fits; decoding will fail and say so.
            body.extend_from_slice(&chunk[..MAX_BODY_BYTES - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(SNIPPET_CHARS)
        .collect()
}

/// The `RequestId` of an undecodable body, when one can be picked out of it.
fn request_id_in(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let Some(start) = text.find("\"RequestId\"") else {
        return "none".into();
    };
    let rest = &text[start + "\"RequestId\"".len()..];
    let value = rest
        .trim_start()
        .strip_prefix(':')
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix('"'))
        .and_then(|r| r.split('"').next());
    match value {
        Some(id) if !id.is_empty() && id.len() <= 64 => id.to_owned(),
        _ => "none".into(),
    }
}

/// Removes the AccessKey secret and STS token, in every encoding they could appear in, from
/// text that came back from the service.
pub fn scrub_secrets(text: &str, credentials: &Credentials) -> String {
    let mut out = text.to_owned();
    let secrets = std::iter::once(credentials.access_key_secret.expose())
        .chain(credentials.security_token.as_ref().map(|t| t.expose()))
        .filter(|s| s.len() >= 4);
    for secret in secrets {
        let once = signer::percent_encode(secret);
        let twice = signer::percent_encode(&once);
        let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        for form_of_it in [secret.to_owned(), twice, once, form] {
            if !form_of_it.is_empty() {
                out = out.replace(&form_of_it, REDACTED);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn sts() -> Credentials {
        Credentials {
            access_key_id: "STS.id".into(),
            access_key_secret: Secret::new("s3cr3t/+="),
            security_token: Some(Secret::new("CAES+token/with=chars")),
            expiration: None,
        }
    }

    #[test]
    fn the_common_parameters_are_all_signed_and_the_token_is_one_of_them() {
        let now = time::parse("2024-01-01T00:00:00Z").unwrap();
        let signed = signed_parameters(
            Action::RenewInstance,
            "cn-hangzhou",
            &[("InstanceId", "i-1".into())],
            &sts(),
            "0123456789abcdef0123456789abcdef",
            now,
        );
        let names: Vec<&str> = signed.parameters.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "Action",
            "Version",
            "Format",
            "AccessKeyId",
            "SignatureMethod",
            "SignatureVersion",
            "SignatureNonce",
            "Timestamp",
            "SecurityToken",
            "RegionId",
            "InstanceId",
        ] {
            assert!(names.contains(&expected), "{expected} missing");
        }
        assert!(
            signed
                .string_to_sign
                .contains("Timestamp%3D2024-01-01T00%253A00%253A00Z")
        );
        let again = signer::sign(
            "POST",
            signed
                .parameters
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
            &Secret::new("s3cr3t/+="),
        );
        assert_eq!(again.signature, signed.signature);
    }

    #[test]
    fn secrets_are_scrubbed_in_every_encoding() {
        let credentials = sts();
        let text = format!(
            "raw CAES+token/with=chars once {} twice {} form {}",
            signer::percent_encode("CAES+token/with=chars"),
            signer::percent_encode(&signer::percent_encode("CAES+token/with=chars")),
            form_urlencoded::byte_serialize(b"s3cr3t/+=").collect::<String>()
        );
        let scrubbed = scrub_secrets(&text, &credentials);
        assert!(!scrubbed.contains("CAES"), "{scrubbed}");
        assert!(!scrubbed.contains("s3cr3t"), "{scrubbed}");
    }

    #[test]
    fn nonces_are_fresh_and_hex() {
        let a = new_nonce();
        let b = new_nonce();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_request_id_is_found_in_a_truncated_body() {
        assert_eq!(request_id_in(br#"{"RequestId": "ABC-1", "Instan"#), "ABC-1");
        assert_eq!(request_id_in(b"<html>502</html>"), "none");
    }
}
