//! Authentication as the service does it (docs/ecs-api.md §1, §4.2): required common parameters,
//! the timestamp window, the AccessKey, the STS token, the signature recomputed over the decoded
//! parameters with the method actually used, and nonce replay within the window. A request
//! signed the V3 way (an `ACS3-` `Authorization` header or `x-acs-action`) is checked by
//! [`crate::auth_v3`]; both share the key, window, token and nonce checks of [`crate::request`].

use chrono::{DateTime, Utc};

use super::request::{
    Caller, NonceStore, Params, Request, admit_nonce, caller, check_security_token,
    check_timestamp, find_key, missing,
};
use super::world::{AccessKey, Fault, World};
use ecs_wire::signer;

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
