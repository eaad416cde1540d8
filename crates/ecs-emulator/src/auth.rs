//! Authentication as the service does it (docs/ecs-api.md §1, §4.2): required common parameters,
//! the timestamp window, the AccessKey, the STS token, the signature recomputed over the decoded
//! parameters with the method actually used, and nonce replay within the window.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

use super::world::{Fault, World};
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

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account.
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

fn missing(name: &str) -> Fault {
    Fault::new(
        400,
        "MissingParameter",
        format!(
            "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
        ),
    )
}

/// Checks a request. `auth_now` is the clock the timestamp window is checked against, `now`
/// the emulated time (STS key expiry).
pub fn authenticate(
    method: &str,
    params: &Params,
    world: &World,
    nonces: &mut NonceStore,
    auth_now: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Caller, Fault> {
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
    let get = |name| params.get(name).unwrap_or_default();
    if get("SignatureMethod") != signer::SIGNATURE_METHOD {
        return Err(Fault::new(
            400,
            "InvalidParamater.SignatureMethod",
            "The specified SignatureMethod is not supported.",
        ));
    }
    if get("SignatureVersion") != signer::SIGNATURE_VERSION {
        return Err(Fault::new(
            400,
            "InvalidParamater.SignatureVersion",
            "The specified SignatureVersion is not supported.",
        ));
    }
    let timestamp = time::parse(get("Timestamp")).map_err(|_| {
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
                get("Timestamp"),
                window.num_minutes(),
                time::format_seconds(auth_now)
            ),
        ));
    }
    let key_id = get("AccessKeyId");
    let key = world.key(key_id).ok_or_else(|| {
        Fault::new(
            world.settings.unknown_key_status,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
    })?;
    let server = signer::sign(
        method,
        params.pairs().iter().map(|(n, v)| (n.as_str(), v.as_str())),
        &key.secret,
    );
    if server.signature != get("Signature") {
        return Err(Fault::new(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{}",
                server.string_to_sign
            ),
        ));
    }
    if let Some(expected) = &key.security_token {
        match params.non_empty("SecurityToken") {
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
    if !nonces.record(get("SignatureNonce"), auth_now, window) {
        return Err(Fault::new(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    Ok(Caller {
        account: key.account.clone(),
        key_id: key_id.to_owned(),
        denied_actions: key.denied_actions.clone(),
    })
}
