//! The credentials URI (`source = "uri"` with `credentials_uri`, or
//! `ALIBABA_CLOUD_CREDENTIALS_URI`): a plain GET answering the five-field JSON
//! `{"Code": "Success", "AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}` —
//! what `ack-ram-tool export-credentials --serve` and the aliyun CLI's CredentialsURI mode
//! speak (docs/sts-and-directories.md §3.2). An empty `SecurityToken` means none; a `Code`
//! other than `Success` is a failure. The key is held and refreshed by [`Refreshing`]. The
//! URI is shown without its query (it may carry a token); the answer is never quoted.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use reqwest::Url;

use super::refresh::{Failure, Fetch, Refreshing};
use super::{
    Attempt, CredentialError, CredentialProvider, Credentials, CredentialsConfig, Environment,
};
use crate::secret::Secret;

/// The environment variable the official libraries read.
pub const URI_VARIABLE: &str = "ALIBABA_CLOUD_CREDENTIALS_URI";

/// How long one GET may take (the official libraries' read timeout).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The `uri` source: the config's `credentials_uri`, else the environment's.
pub(crate) fn from_uri(
    config: &CredentialsConfig,
    env: &Environment,
) -> Result<Attempt, CredentialError> {
    let Some(text) = config
        .credentials_uri
        .clone()
        .or_else(|| env.get(URI_VARIABLE).map(str::to_owned))
    else {
        return Ok(Attempt::Absent(format!(
            "no credentials_uri, and {URI_VARIABLE} is not set"
        )));
    };
    let url = checked(&text).map_err(|why| CredentialError::Incomplete {
        source_name: "uri",
        detail: format!(
            "the credentials URI cannot be used: {why} — give an https:// URL, or plain http to a loopback address"
        ),
    })?;
    let shown = shown(&url);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| CredentialError::Incomplete {
            source_name: "uri",
            detail: format!("no HTTP client: {e}"),
        })?;
    let source = UriSource {
        url,
        shown: shown.clone(),
        http,
    };
    let refreshing = Refreshing::new(Box::new(source), config.refresh_before);
    Ok(Attempt::found(CredentialProvider::refreshing(
        refreshing,
        format!("the credentials URI {shown}"),
    )))
}

/// `text` as a credentials URI: https, or plain http to a loopback address; a host; no user
/// information. The query is kept (servers may want one). The reason never quotes the text.
fn checked(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if crate::cloud::endpoint::is_loopback(&url) => {}
        "http" => return Err("plain http to a host that is not loopback".into()),
        other => return Err(format!("scheme {other:?} is not http or https")),
    }
    if url.host_str().is_none() {
        return Err("no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("it carries user information".into());
    }
    Ok(url)
}

/// `url` without its query or fragment.
fn shown(url: &Url) -> String {
    let mut bare = url.clone();
    bare.set_query(None);
    bare.set_fragment(None);
    bare.to_string()
}

struct UriSource {
    url: Url,
    shown: String,
    http: reqwest::Client,
}

impl Fetch for UriSource {
    fn what(&self) -> String {
        format!("the credentials URI {}", self.shown)
    }

    fn fetch(&self, _now: DateTime<Utc>) -> BoxFuture<'_, Result<Credentials, Failure>> {
        Box::pin(self.get())
    }
}

impl UriSource {
    async fn get(&self) -> Result<Credentials, Failure> {
        let failed = |text: String, refused: bool| Failure { text, refused };
        let response = self
            .http
            .get(self.url.clone())
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| failed(format!("GET failed: {}", e.without_url()), false))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| failed(format!("reading the answer: {}", e.without_url()), false))?;
        if !status.is_success() {
            return Err(failed(
                format!(
                    "answered HTTP {status} — check that the credentials server runs and serves this path"
                ),
                status.is_client_error(),
            ));
        }
        parse_answer(&body).map_err(|why| failed(why, false))
    }
}

/// The credentials of an answer; the reasons never quote a value.
fn parse_answer(body: &[u8]) -> Result<Credentials, String> {
    let answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the answer is not JSON".to_owned())?;
    let field = |name: &str| answer.get(name).and_then(serde_json::Value::as_str);
    if let Some(code) = field("Code")
        && code != "Success"
    {
        let code: String = code
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(40)
            .collect();
        return Err(format!("the answer's Code is {code:?}, not \"Success\""));
    }
    let required = |name: &str| {
        field(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the answer has no {name}"))
    };
    let access_key_id = required("AccessKeyId")?.to_owned();
    let secret = Secret::new(required("AccessKeySecret")?.to_owned());
    let expiration = required("Expiration")?;
    let expiration = crate::cloud::time::parse(expiration).map_err(|_| {
        "the answer's Expiration is not a UTC time (YYYY-MM-DDThh:mm:ssZ)".to_owned()
    })?;
    let security_token = field("SecurityToken")
        .filter(|t| !t.is_empty())
        .map(|t| Secret::new(t.to_owned()));
    Ok(Credentials {
        access_key_id,
        access_key_secret: secret,
        security_token,
        expiration: Some(expiration),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_five_field_answer_gives_a_key_and_an_empty_token_is_none() {
        let key = parse_answer(
            br#"{"Code":"Success","AccessKeyId":"AK","AccessKeySecret":"s3cr3t","SecurityToken":"","Expiration":"2026-12-07T09:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(key.access_key_id, "AK");
        assert!(key.security_token.is_none());
        assert!(key.expiration.is_some());
    }

    #[test]
    fn a_bad_answer_is_refused_without_quoting_it() {
        for body in [
            r#"{"Code":"Failed","AccessKeyId":"AK","AccessKeySecret":"s3cr3t","SecurityToken":"t","Expiration":"2026-12-07T09:00:00Z"}"#,
            r#"{"Code":"Success","AccessKeyId":"AK","SecurityToken":"t","Expiration":"2026-12-07T09:00:00Z"}"#,
            r#"{"Code":"Success","AccessKeyId":"AK","AccessKeySecret":"s3cr3t","Expiration":"tomorrow s3cr3t"}"#,
            "s3cr3t",
        ] {
            let why = parse_answer(body.as_bytes()).unwrap_err();
            assert!(!why.contains("s3cr3t"), "{why}");
        }
    }
}
