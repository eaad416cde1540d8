//! RRSA on ACK, and OIDC generally (`source = "oidc"`): a RAM role assumed with an OIDC token
//! through STS `AssumeRoleWithOIDC`, which is unsigned (the token is the proof). The role, the
//! provider and the token file come from the config (`role_arn`, `oidc_provider_arn`,
//! `oidc_token_file`, `role_session_name`) or from the variables ack-pod-identity-webhook
//! injects (`ALIBABA_CLOUD_ROLE_ARN`, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`,
//! `ALIBABA_CLOUD_OIDC_TOKEN_FILE`; `ALIBABA_CLOUD_ROLE_SESSION_NAME` optional). The token file
//! is read again at every refresh: the kubelet rotates it (docs/sts-and-directories.md §2).
//! STS is `sts_endpoint`, else the regional endpoint of `ALIBABA_CLOUD_STS_REGION` (`sts-vpc.`
//! when `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED=true`), else `sts.aliyuncs.com`, as the official
//! libraries choose. The key is held and refreshed by [`Refreshing`].

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use reqwest::Url;

use super::assume_role::{STS_VERSION, post, valid_role_arn, valid_session_name};
use super::refresh::{Failure, Fetch, Refreshing};
use super::{
    Attempt, CredentialError, CredentialProvider, Credentials, CredentialsConfig, Environment,
};

/// How long each key lasts (STS's default).
const DURATION: Duration = Duration::from_secs(3600);

/// The `oidc` source: absent when none of role, provider and token file is set anywhere; an
/// error naming what is missing when only some are.
pub(crate) fn from_oidc(
    config: &CredentialsConfig,
    env: &Environment,
) -> Result<Attempt, CredentialError> {
    let Some(role) = oidc_role(config, env)? else {
        return Ok(Attempt::Absent(
            "ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN and ALIBABA_CLOUD_OIDC_TOKEN_FILE are unset".into(),
        ));
    };
    let endpoint =
        sts_endpoint(config, env).map_err(|e| incomplete(format!("sts_endpoint: {e}")))?;
    Ok(Attempt::found(provider(
        role,
        endpoint,
        config.refresh_before,
    )))
}

fn incomplete(detail: String) -> CredentialError {
    CredentialError::Incomplete {
        source_name: "oidc",
        detail,
    }
}

/// The role, provider, token file and session name, each from the config or else the
/// environment, checked; `None` when none of the first three is set anywhere.
fn oidc_role(
    config: &CredentialsConfig,
    env: &Environment,
) -> Result<Option<OidcRole>, CredentialError> {
    let pick = |own: &Option<String>, variable: &str| {
        own.clone().or_else(|| env.get(variable).map(str::to_owned))
    };
    let role_arn = pick(&config.role_arn, "ALIBABA_CLOUD_ROLE_ARN");
    let provider_arn = pick(&config.oidc_provider_arn, "ALIBABA_CLOUD_OIDC_PROVIDER_ARN");
    let token_file = config
        .oidc_token_file
        .clone()
        .or_else(|| env.get("ALIBABA_CLOUD_OIDC_TOKEN_FILE").map(PathBuf::from));
    let (role_arn, provider_arn, token_file) = match (role_arn, provider_arn, token_file) {
        (None, None, None) => return Ok(None),
        (Some(role), Some(provider), Some(file)) => (role, provider, file),
        (role, provider, file) => {
            return Err(incomplete(missing(
                role.is_none(),
                provider.is_none(),
                file.is_none(),
            )));
        }
    };
    if !valid_role_arn(&role_arn) {
        return Err(incomplete(format!(
            "{role_arn:?} is not a RAM role ARN (acs:ram::<account id>:role/<name>)"
        )));
    }
    check_token_file(&token_file)?;
    if !valid_provider_arn(&provider_arn) {
        return Err(incomplete(format!(
            "{provider_arn:?} is not an OIDC provider ARN (acs:ram::<account id>:oidc-provider/<name>)"
        )));
    }
    let session_name = pick(&config.role_session_name, "ALIBABA_CLOUD_ROLE_SESSION_NAME")
        .unwrap_or_else(|| "ecs-renewd".into());
    if !valid_session_name(&session_name) {
        return Err(incomplete(format!(
            "role session name {session_name:?}: use 2 to 64 letters, digits and . @ - _"
        )));
    }
    Ok(Some(OidcRole {
        role_arn,
        provider_arn,
        token_file,
        session_name,
    }))
}

/// The token file is read at every refresh; one missing, unreadable or empty at start is
/// said now (`check-config`, start-up) rather than at the first pass. Its text is not kept.
fn check_token_file(path: &std::path::Path) -> Result<(), CredentialError> {
    let what = "OIDC token (oidc_token_file, ALIBABA_CLOUD_OIDC_TOKEN_FILE)";
    let text = std::fs::read_to_string(path).map_err(|source| CredentialError::Unreadable {
        what,
        path: path.to_owned(),
        source,
    })?;
    if text.trim().is_empty() {
        return Err(CredentialError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Which of the three settings are missing, in words.
fn missing(role: bool, provider: bool, file: bool) -> String {
    let names: Vec<&str> = [
        (role, "role_arn (ALIBABA_CLOUD_ROLE_ARN)"),
        (
            provider,
            "oidc_provider_arn (ALIBABA_CLOUD_OIDC_PROVIDER_ARN)",
        ),
        (file, "oidc_token_file (ALIBABA_CLOUD_OIDC_TOKEN_FILE)"),
    ]
    .into_iter()
    .filter_map(|(absent, name)| absent.then_some(name))
    .collect();
    format!("{} not set", names.join(" and "))
}

/// What `AssumeRoleWithOIDC` is asked for.
pub(crate) struct OidcRole {
    /// The role.
    pub role_arn: String,
    /// The OIDC provider the role trusts.
    pub provider_arn: String,
    /// The file the token is read from at every refresh.
    pub token_file: PathBuf,
    /// The session's name.
    pub session_name: String,
}

/// The provider of `role`'s keys, asked of STS at `endpoint` (the `oidc` source's, and the
/// aliyun CLI's `OIDC` profiles').
pub(crate) fn provider(
    role: OidcRole,
    endpoint: Url,
    refresh_before: Duration,
) -> CredentialProvider {
    let origin = format!(
        "role {} assumed with the OIDC token in {} through {endpoint}",
        role.role_arn,
        role.token_file.display()
    );
    let source = Oidc {
        role_arn: role.role_arn,
        provider_arn: role.provider_arn,
        token_file: role.token_file,
        session_name: role.session_name,
        endpoint,
        http: crate::cloud::client::shared_http_client(Duration::from_secs(5)),
    };
    CredentialProvider::refreshing(Refreshing::new(Box::new(source), refresh_before), origin)
}

/// `acs:ram::<digits>:oidc-provider/<name>`.
pub(crate) fn valid_provider_arn(arn: &str) -> bool {
    arn.strip_prefix("acs:ram::")
        .and_then(|rest| rest.split_once(":oidc-provider/"))
        .is_some_and(|(uid, name)| {
            !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty()
        })
}

/// Where AssumeRoleWithOIDC goes.
fn sts_endpoint(
    config: &CredentialsConfig,
    env: &Environment,
) -> Result<Url, crate::cloud::endpoint::EndpointError> {
    let text = match (&config.sts_endpoint, env.get("ALIBABA_CLOUD_STS_REGION")) {
        (Some(endpoint), _) => endpoint.clone(),
        (None, Some(region)) if env.is_true("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED") => {
            format!("https://sts-vpc.{region}.aliyuncs.com/")
        }
        (None, Some(region)) => format!("https://sts.{region}.aliyuncs.com/"),
        (None, None) => "https://sts.aliyuncs.com/".into(),
    };
    crate::cloud::endpoint::checked(text)
}

struct Oidc {
    role_arn: String,
    provider_arn: String,
    token_file: PathBuf,
    session_name: String,
    endpoint: Url,
    http: reqwest::Client,
}

impl Fetch for Oidc {
    fn what(&self) -> String {
        format!(
            "assuming RAM role {} with the OIDC token in {}",
            self.role_arn,
            self.token_file.display()
        )
    }

    fn fetch(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Credentials, Failure>> {
        Box::pin(self.assume(now))
    }
}

impl Oidc {
    /// One AssumeRoleWithOIDC call with the token file's current token.
    async fn assume(&self, now: DateTime<Utc>) -> Result<Credentials, Failure> {
        let failed = |text: String| Failure {
            text,
            refused: false,
        };
        let token = std::fs::read_to_string(&self.token_file)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| {
                failed(format!(
                    "reading the token file: {e} — check the projected volume"
                ))
            })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(failed("the token file is empty".into()));
        }
        let timestamp = crate::cloud::time::format_seconds(now);
        let duration = DURATION.as_secs().to_string();
        let body = crate::cloud::client::wiped_form(&[
            ("Action", "AssumeRoleWithOIDC"),
            ("Version", STS_VERSION),
            ("Format", "JSON"),
            ("Timestamp", timestamp.as_str()),
            ("RoleArn", self.role_arn.as_str()),
            ("OIDCProviderArn", self.provider_arn.as_str()),
            ("OIDCToken", token),
            ("RoleSessionName", self.session_name.as_str()),
            ("DurationSeconds", duration.as_str()),
        ]);
        let scrub = |text: &str| text.replace(token, crate::secret::REDACTED);
        post(&self.http, &self.endpoint, body, &scrub).await
    }
}
