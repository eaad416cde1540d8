//! Authentication as the service does it (docs/ecs-api.md §1, §4.2): required common parameters,
//! the timestamp window, the AccessKey, the STS token, the signature recomputed over the decoded
//! parameters with the method actually used, and nonce replay within the window. A request
//! signed the V3 way (an `ACS3-` `Authorization` header or `x-acs-action`) is checked by
//! [`crate::auth_v3`], which shares the key, window, token and nonce checks here.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use super::world::{AccessKey, Fault, World};
use ecs_wire::Action;
use ecs_wire::signer;
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

pub(crate) fn missing(name: &str) -> Fault {
    Fault::new(
        400,
        "MissingParameter",
        format!(
            "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
        ),
    )
}

/// Checks a request, signed either way. `auth_now` is the clock the timestamp window is
/// checked against, `now` the emulated time (STS key expiry).
pub fn authenticate(
    request: &Request<'_>,
    world: &World,
    nonces: &mut NonceStore,
    auth_now: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Caller, Fault> {
    if request.is_v3() {
        return crate::auth_v3::authenticate(request, world, nonces, auth_now, now);
    }
    let params = request.params;
    check_required(params)?;
    check_signature_scheme(params)?;
    let window = check_timestamp(param(params, "Timestamp"), world, auth_now)?;
    let key_id = param(params, "AccessKeyId");
    let key = find_key(world, key_id)?;
    check_signature(request.method, params, key)?;
    check_security_token(params.non_empty("SecurityToken"), key, now)?;
    admit_nonce(nonces, param(params, "SignatureNonce"), auth_now, window)?;
    Ok(caller(key, key_id))
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

/// The first value of `name`, or the empty string when the request has none.
fn param<'a>(params: &'a Params, name: &str) -> &'a str {
    params.get(name).unwrap_or_default()
}

/// Fails with `MissingParameter` for the first required common parameter that is absent or
/// empty, in the service's order.
fn check_required(params: &Params) -> Result<(), Fault> {
    for name in [
        "Action",
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Version",
    ] {
        if params.non_empty(name).is_none() {
            return Err(missing(name));
        }
    }
    Ok(())
}

/// Checks that the request names the one signature method and version the service supports.
fn check_signature_scheme(params: &Params) -> Result<(), Fault> {
    if param(params, "SignatureMethod") != signer::SIGNATURE_METHOD {
        return Err(Fault::new(
            400,
            "InvalidParamater.SignatureMethod",
            "The specified SignatureMethod is not supported.",
        ));
    }
    if param(params, "SignatureVersion") != signer::SIGNATURE_VERSION {
        return Err(Fault::new(
            400,
            "InvalidParamater.SignatureVersion",
            "The specified SignatureVersion is not supported.",
        ));
    }
    Ok(())
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

/// Recomputes the signature over the decoded parameters with the method actually used and the
/// key's secret, and fails with `SignatureDoesNotMatch` when the request's differs.
fn check_signature(method: &str, params: &Params, key: &AccessKey) -> Result<(), Fault> {
    let server = signer::sign(
        method,
        params.pairs().iter().map(|(n, v)| (n.as_str(), v.as_str())),
        &key.secret,
    );
    if server.signature != param(params, "Signature") {
        return Err(Fault::new(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{}",
                server.string_to_sign
            ),
        ));
    }
    Ok(())
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
