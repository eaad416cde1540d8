//! An assumed RAM role: the account's base credentials (any source) sign STS `AssumeRole`
//! (version 2015-04-01, RPC signature V1, the base's STS token included when the base is
//! itself temporary: role chaining), and the role's temporary key signs the account's calls.
//! The key is held and fetched again before it expires by [`Refreshing`]; a refusal
//! (permission, trust, ExternalId, a wrong ARN) is asked again only after its pause, so a
//! misconfigured role is one clear error, not a storm of calls.
//! Facts: docs/sts-and-directories.md §1 and §3.3 (STS, and how the official credentials
//! libraries refresh); the behaviour: docs/architecture.md, "Credentials".

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use futures_util::future::BoxFuture;

use super::refresh::{Failure, Fetch, Refreshing};
use super::{CredentialError, CredentialProvider, Credentials};
use crate::cloud::client::{form_body, new_nonce, scrub_secrets, signed_call};
use crate::cloud::types::ErrorBody;
use crate::secret::Secret;

/// The STS API version.
pub const STS_VERSION: &str = "2015-04-01";

/// The read timeout of one AssumeRole call (the official credentials libraries use 10 s).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `[accounts.assume_role]`, as written in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssumeRoleConfig {
    /// `acs:ram::<account id>:role/<name>`.
    pub role_arn: String,
    /// The ExternalId the role's trust policy requires, written in the file.
    #[serde(default)]
    pub external_id: Option<String>,
    /// A file holding the ExternalId (instead of `external_id`).
    #[serde(default)]
    pub external_id_file: Option<PathBuf>,
    /// The session's name (in the provider's audit trail).
    #[serde(default = "default_session_name")]
    pub session_name: String,
    /// How long each key lasts (900 s to 12 h, and at most the role's `MaxSessionDuration`).
    #[serde(
        default = "default_duration",
        with = "crate::duration::serde_humantime"
    )]
    pub duration: Duration,
    /// Where AssumeRole goes (default: the account's regional STS endpoint).
    #[serde(default)]
    pub sts_endpoint: Option<String>,
}

fn default_session_name() -> String {
    "ecs-renewd".into()
}
fn default_duration() -> Duration {
    Duration::from_secs(3600)
}

/// One problem with an `[accounts.assume_role]` table: the key, what is wrong, what to do.
pub type Problem = (&'static str, String, &'static str);

impl AssumeRoleConfig {
    /// Every problem with the settings (pure: files are read when the role is first assumed).
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if !valid_role_arn(&self.role_arn) {
            problems.push((
                "role_arn",
                format!("{:?} is not a RAM role ARN", self.role_arn),
                "write acs:ram::<account id>:role/<role name>, e.g. acs:ram::1234567890123456:role/ecs-renewd",
            ));
        }
        if !valid_session_name(&self.session_name) {
            problems.push((
                "session_name",
                format!("{:?} is not a session name", self.session_name),
                "use 2 to 64 letters, digits and . @ - _",
            ));
        }
        let seconds = self.duration.as_secs();
        if !(900..=43_200).contains(&seconds) {
            problems.push((
                "duration",
                format!("{seconds} s is outside what STS grants"),
                "use 15m to 12h (and at most the role's maximum session duration, 1h unless raised)",
            ));
        }
        match (&self.external_id, &self.external_id_file) {
            (Some(_), Some(_)) => problems.push((
                "external_id",
                "both external_id and external_id_file are set".into(),
                "keep one of them",
            )),
            (Some(id), None) if !valid_external_id(id) => problems.push((
                "external_id",
                "the ExternalId is not 2 to 1224 characters of letters, digits and + = , . @ : / - _".into(),
                "copy the value from the role's trust policy (sts:ExternalId)",
            )),
            _ => {}
        }
        problems
    }

    /// The ExternalId to send: the inline value, or the file's (trimmed; an empty or
    /// unreadable file is an error naming it).
    fn external_id(&self) -> Result<Option<Secret>, CredentialError> {
        match (&self.external_id, &self.external_id_file) {
            (Some(id), _) => Ok(Some(Secret::new(id.clone()))),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    CredentialError::Unreadable {
                        what: "ExternalId",
                        path: path.clone(),
                        source,
                    }
                })?;
                let id = text.trim();
                if id.is_empty() {
                    return Err(CredentialError::Empty {
                        what: "ExternalId",
                        path: path.clone(),
                    });
                }
                Ok(Some(Secret::new(id.to_owned())))
            }
            (None, None) => Ok(None),
        }
    }
}

/// `acs:ram::<digits>:role/<1-64 letters, digits, . - _>`.
pub fn valid_role_arn(arn: &str) -> bool {
    let Some((uid, role)) = arn
        .strip_prefix("acs:ram::")
        .and_then(|rest| rest.split_once(":role/"))
    else {
        return false;
    };
    !uid.is_empty()
        && uid.bytes().all(|b| b.is_ascii_digit())
        && (1..=64).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// 2–64 letters, digits and `. @ - _` (STS's rule).
pub fn valid_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".@-_".contains(&b))
}

/// 2–1224 characters of `[\w+=,.@:/-]` (STS's rule).
fn valid_external_id(id: &str) -> bool {
    (2..=1224).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b))
}

/// Credentials of an assumed role, refreshed before they expire.
pub struct AssumedRole {
    refreshing: Refreshing,
    origin: String,
}

impl AssumedRole {
    /// Assumes `config`'s role with `base`'s credentials at `endpoint`; keys are fetched again
    /// `refresh_before` their expiry (at most half their lifetime before it).
    pub fn new(
        base: CredentialProvider,
        config: AssumeRoleConfig,
        endpoint: Url,
        http: reqwest::Client,
        refresh_before: Duration,
    ) -> AssumedRole {
        let origin = format!(
            "role {} assumed through {} with {}",
            config.role_arn,
            endpoint,
            base.origin()
        );
        let sts = Sts {
            base: Box::new(base),
            config,
            endpoint,
            http,
        };
        AssumedRole {
            refreshing: Refreshing::new(Box::new(sts), refresh_before),
            origin,
        }
    }

    /// Where the credentials come from, for logs (never a secret).
    pub fn describe(&self) -> String {
        self.origin.clone()
    }

    /// Forgets the current key (the service rejected it), so the next call fetches another.
    pub async fn invalidate(&self) {
        self.refreshing.invalidate().await;
    }

    /// The key to sign with at `now` ([`Refreshing::credentials`]).
    pub async fn credentials(&self, now: DateTime<Utc>) -> Result<Credentials, CredentialError> {
        self.refreshing.credentials(now).await
    }
}

/// STS, asked for the role's key with the base's credentials.
struct Sts {
    base: Box<CredentialProvider>,
    config: AssumeRoleConfig,
    endpoint: Url,
    http: reqwest::Client,
}

impl Fetch for Sts {
    fn what(&self) -> String {
        format!("assuming RAM role {}", self.config.role_arn)
    }

    fn fetch(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Credentials, Failure>> {
        Box::pin(self.assume(now))
    }

    fn invalidate(&self) -> BoxFuture<'_, ()> {
        self.base.invalidate_boxed()
    }
}

impl Sts {
    /// One AssumeRole call, signed with the base's credentials.
    async fn assume(&self, now: DateTime<Utc>) -> Result<Credentials, Failure> {
        let local = |text: String| Failure {
            text,
            refused: true,
        };
        let base = self
            .base
            .credentials_boxed(now)
            .await
            .map_err(|e| Failure {
                text: format!("the base credentials: {e}"),
                refused: false,
            })?;
        let external_id = self
            .config
            .external_id()
            .map_err(|e| local(e.to_string()))?;
        let mut params = vec![
            ("RoleArn", self.config.role_arn.clone()),
            ("RoleSessionName", self.config.session_name.clone()),
            (
                "DurationSeconds",
                self.config.duration.as_secs().to_string(),
            ),
        ];
        if let Some(id) = &external_id {
            params.push(("ExternalId", id.expose().to_owned()));
        }
        let signed = signed_call(
            ("AssumeRole", STS_VERSION),
            "",
            &params,
            &base,
            &new_nonce(),
            now,
        );
        let scrub = |text: &str| scrub_secrets(text, &base);
        post(&self.http, &self.endpoint, form_body(&signed), &scrub).await
    }
}

/// Posts `body` (a form) to STS at `endpoint` and reads the key it answers, or why not;
/// `scrub` takes the caller's secrets out of any text quoted.
pub(super) async fn post(
    http: &reqwest::Client,
    endpoint: &Url,
    body: bytes::Bytes,
    scrub: &impl Fn(&str) -> String,
) -> Result<Credentials, Failure> {
    let transient = |text: String| Failure {
        text,
        refused: false,
    };
    let response = http
        .post(endpoint.clone())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .timeout(READ_TIMEOUT)
        .body(body)
        .send()
        .await
        .map_err(|e| transient(format!("calling STS at {endpoint}: {}", e.without_url())))?;
    let status = response.status();
    let answer = response
        .bytes()
        .await
        .map_err(|e| transient(format!("reading STS's answer: {}", e.without_url())))?;
    if status.is_success() {
        return parse_credentials(&answer)
            .map_err(|why| transient(scrub(&format!("STS's answer: {why}"))));
    }
    Err(refusal(status.as_u16(), &answer, scrub))
}

/// STS's error answer as a failure: a 4xx other than throttling is a refusal.
pub(super) fn refusal(status: u16, body: &[u8], scrub: &impl Fn(&str) -> String) -> Failure {
    let error: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (code, message, request_id) = match &error {
        Some(e) => (
            e.code.as_str(),
            e.message.as_str(),
            if e.request_id.is_empty() {
                "none"
            } else {
                e.request_id.as_str()
            },
        ),
        None => ("(no error code)", "", "none"),
    };
    let throttled = code.starts_with("Throttling") || message.contains("flow control");
    Failure {
        text: scrub(&format!(
            "STS answered HTTP {status} {code}: {message} (request id {request_id}) — {}",
            advice(code)
        )),
        refused: (400..500).contains(&status) && !throttled,
    }
}

/// What to do about an STS error code.
fn advice(code: &str) -> &'static str {
    match code {
        "NoPermission" => {
            "the role's trust policy must name the base identity's account (and require the ExternalId configured, if any), and the base identity needs sts:AssumeRole; the root account's key cannot assume roles"
        }
        "EntityNotExist.Role" => "check role_arn: no such role in that account",
        c if c.starts_with("AuthenticationFail") => {
            "the role's trust policy must name the OIDC provider (and the token's subject, if it conditions on one), and the token must come from that provider, for audience sts.aliyuncs.com, unexpired"
        }
        c if c.starts_with("InvalidParameter") => "check the [accounts.assume_role] settings",
        c if c.starts_with("InvalidAccessKeyId") || c.starts_with("InvalidSecurityToken") => {
            "the base credentials are not valid: check them"
        }
        c if c.starts_with("Throttling") => "STS limits calls per account; it is tried again later",
        _ => "check the role and the base credentials; STS is tried again later",
    }
}

/// The `Credentials` of an AssumeRole answer.
fn parse_credentials(body: &[u8]) -> Result<Credentials, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        credentials: Key,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Key {
        access_key_id: String,
        access_key_secret: String,
        security_token: String,
        expiration: String,
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("not the AssumeRole shape: {e}"))?;
    let key = answer.credentials;
    let expiration = crate::cloud::time::parse(&key.expiration)
        .map_err(|e| format!("Expiration {:?}: {e}", key.expiration))?;
    Ok(Credentials {
        access_key_id: key.access_key_id,
        access_key_secret: Secret::new(key.access_key_secret),
        security_token: Some(Secret::new(key.security_token)),
        expiration: Some(expiration),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AssumeRoleConfig {
        toml::from_str("role_arn = \"acs:ram::1234567890123456:role/ecs-renewd\"").unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones_and_pass() {
        let c = config();
        assert_eq!(c.session_name, "ecs-renewd");
        assert_eq!(c.duration, Duration::from_secs(3600));
        assert!(c.problems().is_empty(), "{:?}", c.problems());
    }

    #[test]
    fn each_bad_setting_is_named() {
        let bad = AssumeRoleConfig {
            role_arn: "acs:ram::12x:role/r".into(),
            session_name: "a b".into(),
            duration: Duration::from_secs(600),
            external_id: Some("x".into()),
            ..config()
        };
        let keys: Vec<&str> = bad.problems().iter().map(|p| p.0).collect();
        assert_eq!(
            keys,
            ["role_arn", "session_name", "duration", "external_id"]
        );
        let both = AssumeRoleConfig {
            external_id: Some("abcd".into()),
            external_id_file: Some("/x".into()),
            ..config()
        };
        assert_eq!(both.problems()[0].0, "external_id");
    }

    #[test]
    fn an_error_answer_is_a_refusal_unless_it_is_throttling_or_a_server_error() {
        let body = |code: &str| {
            format!(r#"{{"RequestId":"R1","Code":"{code}","Message":"m"}}"#).into_bytes()
        };
        let plain = |t: &str| t.to_owned();
        let denied = refusal(403, &body("NoPermission"), &plain);
        assert!(denied.refused);
        assert!(denied.text.contains("NoPermission") && denied.text.contains("R1"));
        assert!(!refusal(400, &body("Throttling.User"), &plain).refused);
        assert!(!refusal(500, &body("InternalError"), &plain).refused);
    }

    #[test]
    fn the_answer_gives_a_temporary_key_with_its_expiry() {
        let body = br#"{"RequestId":"R","AssumedRoleUser":{"Arn":"a","AssumedRoleId":"b"},
            "Credentials":{"AccessKeyId":"STS.k","AccessKeySecret":"s","SecurityToken":"t","Expiration":"2026-12-07T09:00:00Z"}}"#;
        let key = parse_credentials(body).unwrap();
        assert_eq!(key.access_key_id, "STS.k");
        assert_eq!(key.security_token.unwrap().expose(), "t");
        assert_eq!(
            key.expiration.unwrap().to_rfc3339(),
            "2026-12-07T09:00:00+00:00"
        );
    }
}
