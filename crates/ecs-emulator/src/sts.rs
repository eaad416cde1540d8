//! STS as the emulator plays it: `AssumeRole` (API version 2015-04-01, signed like every
//! other call) with the service's documented checks, in its order — the role's ARN, the
//! session name, the role existing in the ARN's account, the duration within 900 s and the
//! role's maximum session, the caller's account trusted by the role, the role's ExternalId —
//! and keys minted for the role's account that expire on the emulator's clock
//! (`InvalidSecurityToken.Expired` after). The facts and the uncertain points (the code of an
//! ExternalId mismatch): docs/sts-and-directories.md §1; the fleet keys: docs/emulator.md.

use chrono::{DateTime, Duration, Utc};
use rand::RngExt;
use serde_json::{Value, json};

use super::request::{Caller, Params};
use super::roles::Role;
use super::world::{Fault, World};
use ecs_wire::time;

/// The STS API version.
pub const STS_VERSION: &str = "2015-04-01";

/// The shortest session STS grants, in seconds.
pub const MIN_SESSION_SECONDS: i64 = 900;

/// Whether a call of `version` is STS's.
pub fn is_sts(version: &str) -> bool {
    version == STS_VERSION
}

/// Whether the action is answered without a signature (`AssumeRoleWithOIDC`: the token is
/// the proof).
pub fn is_anonymous(action: &str) -> bool {
    action == "AssumeRoleWithOIDC"
}

/// Runs an unsigned STS call.
pub fn dispatch_anonymous(
    world: &mut World,
    action: &str,
    params: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Fault> {
    match action {
        "AssumeRoleWithOIDC" => assume_role_with_oidc(world, params, now),
        _ => Err(Fault::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )),
    }
}

/// `AssumeRoleWithOIDC`: the token verified against the provider, the role trusting it, a key
/// minted for the role's account.
fn assume_role_with_oidc(
    world: &mut World,
    params: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Fault> {
    let (uid, role_name) = requested_role(params)?;
    let no_provider = || {
        Fault::new(
            401,
            "AuthenticationFail.NoPermission",
            "No such OIDC Provider registered.",
        )
    };
    let provider_arn = params
        .non_empty("OIDCProviderArn")
        .ok_or_else(no_provider)?;
    let provider = world
        .identities()
        .oidc_provider(provider_arn)
        .filter(|p| p.arn == provider_arn)
        .ok_or_else(no_provider)?;
    let token = params.non_empty("OIDCToken").unwrap_or_default();
    let claims = provider.verify(token, now).map_err(|refusal| {
        Fault::new(
            401,
            &format!("AuthenticationFail.OIDCToken.{}", refusal.code),
            refusal.message,
        )
    })?;
    let session = session_name(params)?;
    let role = world
        .identities()
        .role(uid, role_name)
        .cloned()
        .ok_or_else(|| Fault::new(404, "EntityNotExist.Role", "The specified Role not exists."))?;
    let seconds = duration_seconds(params, &role)?;
    if !role.trust.iter().any(|t| t == provider_arn) {
        return Err(Fault::new(
            401,
            "AuthenticationFail.NoPermission",
            "There is no permission.",
        ));
    }
    let mut answer = minted_answer(world, &role, uid, session, now, seconds);
    answer["OIDCTokenInfo"] = json!({
        "Issuer": claims.issuer,
        "Subject": claims.subject,
        "ClientIds": claims.audience,
    });
    Ok(answer)
}

/// Runs an authenticated STS call.
pub fn dispatch(
    world: &mut World,
    caller: &Caller,
    action: &str,
    params: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Fault> {
    match action {
        "AssumeRole" => assume_role(world, caller, params, now),
        _ => Err(Fault::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )),
    }
}

/// `AssumeRole`: checks the request and mints a key for the role's account.
fn assume_role(
    world: &mut World,
    caller: &Caller,
    params: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Fault> {
    let (uid, role_name) = requested_role(params)?;
    let session = session_name(params)?;
    let role = world
        .identities()
        .role(uid, role_name)
        .cloned()
        .ok_or_else(|| Fault::new(404, "EntityNotExist.Role", "The specified Role not exists."))?;
    let seconds = duration_seconds(params, &role)?;
    let trusted = world
        .identities()
        .uid(&caller.account)
        .is_some_and(|caller_uid| role.trust.iter().any(|t| t == caller_uid));
    let external_id_matches = match &role.external_id {
        None => true,
        Some(expected) => params.get("ExternalId") == Some(expected.as_str()),
    };
    if !trusted || !external_id_matches {
        return Err(Fault::new(
            403,
            "NoPermission",
            "You are not authorized to do this action. You should be authorized by RAM.",
        ));
    }
    Ok(minted_answer(world, &role, uid, session, now, seconds))
}

/// A key minted for `role`'s account, lasting `seconds`, as STS answers it.
fn minted_answer(
    world: &mut World,
    role: &Role,
    uid: &str,
    session: &str,
    now: DateTime<Utc>,
    seconds: i64,
) -> Value {
    let expires_at = now + Duration::seconds(seconds);
    let minted = world.mint_sts_key(&role.account, expires_at, now);
    json!({
        "AssumedRoleUser": {
            "Arn": format!("acs:ram::{uid}:role/{}/{session}", role.name.to_ascii_lowercase()),
            "AssumedRoleId": format!("3{:017}:{session}", rand::rng().random_range(0..10u64.pow(17))),
        },
        "Credentials": {
            "AccessKeyId": minted.id,
            "AccessKeySecret": minted.secret,
            "SecurityToken": minted.token,
            "Expiration": time::format_seconds(expires_at),
        }
    })
}

/// The account id and role name of `RoleArn`.
fn requested_role(params: &Params) -> Result<(&str, &str), Fault> {
    let arn = params.non_empty("RoleArn").ok_or_else(|| {
        Fault::new(
            400,
            "MissingRoleArn",
            "RoleArn is mandatory for this action.",
        )
    })?;
    parse_role_arn(arn).ok_or_else(|| {
        Fault::new(
            400,
            "InvalidParameter.RoleArn",
            "The parameter RoleArn is wrongly formed.",
        )
    })
}

/// `RoleSessionName`, when it follows STS's rule.
fn session_name(params: &Params) -> Result<&str, Fault> {
    let session = params.non_empty("RoleSessionName").unwrap_or_default();
    if !valid_session_name(session) {
        return Err(Fault::new(
            400,
            "InvalidParameter.RoleSessionName",
            "The parameter RoleSessionName is wrongly formed.",
        ));
    }
    Ok(session)
}

/// `DurationSeconds` (default 3600) when within 900 s and the role's maximum session.
fn duration_seconds(params: &Params, role: &Role) -> Result<i64, Fault> {
    let wrong = || {
        Fault::new(
            400,
            "InvalidParameter.DurationSeconds",
            format!(
                "The Min/Max value of DurationSeconds is 15min/{}s.",
                role.max_session_seconds
            ),
        )
    };
    let seconds = match params.non_empty("DurationSeconds") {
        None => 3600,
        Some(text) => text.parse::<i64>().map_err(|_| wrong())?,
    };
    if seconds < MIN_SESSION_SECONDS || seconds > role.max_session_seconds {
        return Err(wrong());
    }
    Ok(seconds)
}

/// `acs:ram::<account id>:role/<name>` → (account id, name).
pub fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("acs:ram::")?;
    let (uid, role) = rest.split_once(":role/")?;
    let name_ok = !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    (!uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()) && name_ok).then_some((uid, role))
}

/// 2–64 characters of letters, digits and `. @ - _`.
pub fn valid_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".@-_".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_name_an_account_id_and_a_role() {
        assert_eq!(
            parse_role_arn("acs:ram::1234567890123456:role/ecs-renewd"),
            Some(("1234567890123456", "ecs-renewd"))
        );
        for bad in [
            "acs:ram::12ab:role/x",
            "acs:ram:::role/x",
            "acs:ram::123:user/x",
            "acs:ram::123:role/",
            "arn:ram::123:role/x",
            "acs:ram::123:role/a/b",
        ] {
            assert_eq!(parse_role_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn session_names_are_two_to_sixty_four_plain_characters() {
        assert!(valid_session_name("ecs-renewd"));
        assert!(valid_session_name("a.b@c_d-e"));
        assert!(!valid_session_name("a"));
        assert!(!valid_session_name(&"a".repeat(65)));
        assert!(!valid_session_name("with space"));
    }
}
