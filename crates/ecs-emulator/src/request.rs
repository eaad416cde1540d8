//! A request as the emulator receives it — its decoded parameters, headers and body, and who
//! signed it — and the checks both signature schemes share: the key, the timestamp window, the
//! STS token and nonce replay (docs/ecs-api.md §1, §4.2). `auth` (RPC) and `auth_v3` (V3) each
//! check their own signature over it.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use super::world::{AccessKey, Fault, World};
use ecs_wire::Action;
use ecs_wire::time;

/// The decoded parameters of a request (query and form body together).
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes a query string and a form body (`+` is a space, `%XX` a byte).
    pub fn decode(query: Option<&str>, form_body: Option<&[u8]>) -> Params {
        let mut pairs: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        if let Some(body) = form_body {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Params { pairs }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first non-empty value of `name`.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// Every pair.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// One request as authentication sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The URI path (`/` for RPC-style calls).
    pub path: &'a str,
    /// The query's parameters alone: the V3 signature covers these and not the body's.
    pub query: &'a [(String, String)],
    /// Query and form body together: what the action reads, and what the RPC signature covers.
    pub params: &'a Params,
    /// The headers, names lowercase, in the order received.
    pub headers: &'a [(String, String)],
    /// The body's bytes (V3 checks them against `x-acs-content-sha256`).
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// An RPC-style request with its parameters and nothing else (no headers, no body), as
    /// the RPC signature sees it.
    pub fn rpc(method: &'a str, params: &'a Params) -> Request<'a> {
        Request {
            method,
            path: "/",
            query: &[],
            params,
            headers: &[],
            body: &[],
        }
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request is signed the V3 way: an `ACS3-…` `Authorization` header, or the
    /// action named in `x-acs-action` with no `Signature` parameter (then the missing
    /// `Authorization` is reported as such). The older SDK sends `x-acs-action` too, beside its
    /// RPC signature.
    pub fn is_v3(&self) -> bool {
        self.header("authorization")
            .is_some_and(|v| v.trim_start().starts_with("ACS3-"))
            || (self.header("x-acs-action").is_some() && self.params.get("Signature").is_none())
    }

    /// The API version: `x-acs-version` for V3, the `Version` parameter otherwise.
    pub fn version(&self) -> &'a str {
        if self.is_v3() {
            self.header("x-acs-version").unwrap_or_default()
        } else {
            self.params.get("Version").unwrap_or_default()
        }
    }

    /// The action's name: `x-acs-action` for V3, the `Action` parameter otherwise.
    pub fn action_name(&self) -> &'a str {
        if self.is_v3() {
            self.header("x-acs-action").unwrap_or_default()
        } else {
            self.params.get("Action").unwrap_or_default()
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account that owns the signing AccessKey; the call sees only its instances.
    pub account: String,
    /// The AccessKey ID.
    pub key_id: String,
    /// Actions it may not call.
    pub denied_actions: Vec<Action>,
}

/// Nonces seen within the timestamp window.
#[derive(Debug, Default)]
pub struct NonceStore {
    seen: HashMap<String, DateTime<Utc>>,
}

impl NonceStore {
    /// Records `nonce` at `now`; false when it was already used within `window`.
    pub fn record(&mut self, nonce: &str, now: DateTime<Utc>, window: Duration) -> bool {
        if self.seen.len() > 10_000 {
            self.seen.retain(|_, at| now - *at < window);
        }
        match self.seen.get(nonce) {
            Some(at) if now - *at < window => false,
            _ => {
                self.seen.insert(nonce.to_owned(), now);
                true
            }
        }
    }
}

/// `MissingParameter` for `name`.
pub(crate) fn missing(name: &str) -> Fault {
    Fault::new(
        400,
        "MissingParameter",
        format!(
            "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
        ),
    )
}

/// The AccessKey `key_id`, or `InvalidAccessKeyId.NotFound`.
pub(crate) fn find_key<'w>(world: &'w World, key_id: &str) -> Result<&'w AccessKey, Fault> {
    world.key(key_id).ok_or_else(|| {
        Fault::new(
            world.settings.unknown_key_status,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
    })
}

/// Records the nonce, or `SignatureNonceUsed` when it was used within the window.
pub(crate) fn admit_nonce(
    nonces: &mut NonceStore,
    nonce: &str,
    auth_now: DateTime<Utc>,
    window: Duration,
) -> Result<(), Fault> {
    if nonces.record(nonce, auth_now, window) {
        Ok(())
    } else {
        Err(Fault::new(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ))
    }
}

/// The caller a checked key stands for.
pub(crate) fn caller(key: &AccessKey, key_id: &str) -> Caller {
    Caller {
        account: key.account.clone(),
        key_id: key_id.to_owned(),
        denied_actions: key.denied_actions.clone(),
    }
}

/// Checks that the request's time (`Timestamp`, or `x-acs-date` for V3) parses and lies within
/// the timestamp window of `auth_now`; returns the window, which also bounds nonce replay.
pub(crate) fn check_timestamp(
    stamp: &str,
    world: &World,
    auth_now: DateTime<Utc>,
) -> Result<Duration, Fault> {
    let timestamp = time::parse(stamp).map_err(|_| {
        Fault::new(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        )
    })?;
    let window =
        Duration::from_std(world.settings.timestamp_window).unwrap_or(Duration::minutes(15));
    if (auth_now - timestamp).abs() > window {
        return Err(Fault::new(
            400,
            "InvalidTimeStamp.Expired",
            format!(
                "Specified time stamp or date value is expired. The request time {} is more than {} minutes away from the server time {}.",
                stamp,
                window.num_minutes(),
                time::format_seconds(auth_now)
            ),
        ));
    }
    Ok(window)
}

/// For an STS key: checks that the request carries the key's security token (`SecurityToken`,
/// or `x-acs-security-token` for V3), then that the key has not expired at the emulated time.
pub(crate) fn check_security_token(
    token: Option<&str>,
    key: &AccessKey,
    now: DateTime<Utc>,
) -> Result<(), Fault> {
    if let Some(expected) = &key.security_token {
        match token.filter(|t| !t.is_empty()) {
            None => {
                return Err(Fault::new(
                    400,
                    "MissingSecurityToken",
                    "SecurityToken is mandatory for this access key.",
                ));
            }
            Some(token) if token != expected => {
                return Err(Fault::new(
                    400,
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "The security token does not match the access key.",
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(expires_at) = key.expires_at
        && now >= expires_at
    {
        return Err(Fault::new(
            400,
            "InvalidSecurityToken.Expired",
            "Specified SecurityToken is expired.",
        ));
    }
    Ok(())
}
