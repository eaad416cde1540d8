//! V3 (ACS3-HMAC-SHA256) authentication, the scheme today's official SDKs use by default
//! (docs/v3-and-bss.md §1): the `Authorization` header read, every `x-acs-*` header, `host` and
//! `content-type` required to be signed, `x-acs-content-sha256` checked against the body, the
//! `x-acs-date` window, the signature recomputed over the headers the request lists, the STS
//! token from `x-acs-security-token`, and nonce replay. The key, window, token and nonce checks
//! are the RPC scheme's ([`crate::auth`]).

use chrono::{DateTime, Utc};

use crate::request::{
    Caller, NonceStore, Request, admit_nonce, caller, check_security_token, check_timestamp,
    find_key, missing,
};
use crate::world::{Fault, World};
use ecs_wire::signer_v3::{self, Authorization, RequestParts};

/// The headers every V3 request carries, in the order they are reported missing.
const REQUIRED: [&str; 5] = [
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
];

fn incomplete(message: impl Into<String>) -> Fault {
    Fault::new(400, "IncompleteSignature", message)
}

/// Checks a V3-signed request; see the module's overview for the order.
pub fn authenticate(
    request: &Request<'_>,
    world: &World,
    nonces: &mut NonceStore,
    auth_now: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Caller, Fault> {
    let authorization = read_authorization(request)?;
    for name in REQUIRED {
        if request.header(name).is_none_or(str::is_empty) {
            return Err(missing(name));
        }
    }
    check_signed_headers(request, &authorization)?;
    check_payload(request)?;
    let window = check_timestamp(header(request, "x-acs-date"), world, auth_now)?;
    let key = find_key(world, &authorization.key_id)?;
    check_signature(request, &authorization, key)?;
    check_security_token(request.header("x-acs-security-token"), key, now)?;
    admit_nonce(
        nonces,
        header(request, "x-acs-signature-nonce"),
        auth_now,
        window,
    )?;
    Ok(caller(key, &authorization.key_id))
}

fn header<'a>(request: &Request<'a>, name: &str) -> &'a str {
    request.header(name).unwrap_or_default()
}

fn read_authorization(request: &Request<'_>) -> Result<Authorization, Fault> {
    let value = request
        .header("authorization")
        .ok_or_else(|| missing("Authorization"))?;
    Authorization::parse(value).map_err(|error| incomplete(format!("{error}.")))
}

/// The service's rule: every common header but `Authorization` that the request carries must
/// be signed: `host`, each `x-acs-*`, and `content-type` when a body comes with one. Every
/// header listed must be present.
fn check_signed_headers(request: &Request<'_>, authorization: &Authorization) -> Result<(), Fault> {
    let signed = |name: &str| authorization.signed_headers.iter().any(|s| s == name);
    let must = request
        .headers
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with("x-acs-") || *name == "host" || *name == "content-type");
    for name in std::iter::once("host").chain(must) {
        if !signed(name) {
            return Err(incomplete(format!(
                "The header {name} must be listed in SignedHeaders."
            )));
        }
    }
    for name in &authorization.signed_headers {
        if request.header(name).is_none() {
            return Err(incomplete(format!(
                "The signed header {name} is not in the request."
            )));
        }
    }
    Ok(())
}

/// `x-acs-content-sha256` must be the body's hash: a body changed on the way is refused even
/// when the headers (and so the signature) are intact.
fn check_payload(request: &Request<'_>) -> Result<(), Fault> {
    let claimed = header(request, "x-acs-content-sha256");
    let actual = signer_v3::hex_sha256(request.body);
    if !claimed.eq_ignore_ascii_case(&actual) {
        return Err(Fault::new(
            400,
            "SignatureDoesNotMatch",
            format!(
                "The x-acs-content-sha256 header {claimed} is not the SHA-256 of the request body ({actual})."
            ),
        ));
    }
    Ok(())
}

/// Recomputes the signature over the method, path, query and the headers the request lists,
/// with the key's secret.
fn check_signature(
    request: &Request<'_>,
    authorization: &Authorization,
    key: &crate::world::AccessKey,
) -> Result<(), Fault> {
    let query: Vec<(&str, &str)> = request
        .query
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .filter(|(name, _)| authorization.signed_headers.contains(name))
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    let server = signer_v3::sign(
        RequestParts {
            method: request.method,
            uri: path,
            query: &query,
            headers: &headers,
            payload_hash: header(request, "x-acs-content-sha256"),
        },
        &key.secret,
    );
    if server.signature != authorization.signature.to_ascii_lowercase() {
        return Err(Fault::new(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{}",
                signer_v3::string_to_sign(&server.canonical_request)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Params;
    use crate::settings::EmulatorConfig;
    use ecs_wire::secret::Secret;
    use ecs_wire::time;

    const DATE: &str = "2026-03-10T04:00:00Z";

    fn world(token: Option<&str>) -> World {
        let mut config = EmulatorConfig::single_account("LTAIv3", "v3-secret");
        config.accounts[0].access_keys[0].security_token = token.map(str::to_owned);
        World::from_config(&config, time::parse(DATE).unwrap(), "test").unwrap()
    }

    /// A request as the Tea SDK sends it: business parameters in the query, an empty body,
    /// every header signed.
    struct Built {
        query: Vec<(String, String)>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        params: Params,
    }

    fn build(secret: &str, nonce: &str, extra: &[(&str, &str)], body: &[u8]) -> Built {
        let query = vec![
            ("RegionId".to_owned(), "cn-hangzhou".to_owned()),
            ("InstanceId".to_owned(), "i-1".to_owned()),
        ];
        let mut headers: Vec<(String, String)> = [
            ("host", "127.0.0.1:8080"),
            ("x-acs-action", "DescribeInstanceAutoRenewAttribute"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-date", DATE),
            ("x-acs-signature-nonce", nonce),
        ]
        .iter()
        .chain(extra)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        headers.push(("x-acs-content-sha256".into(), signer_v3::hex_sha256(body)));
        let q: Vec<(&str, &str)> = query
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let signed = signer_v3::sign(
            RequestParts {
                method: "POST",
                uri: "/",
                query: &q,
                headers: &h,
                payload_hash: &signer_v3::hex_sha256(body),
            },
            &Secret::new(secret),
        );
        headers.push(("authorization".into(), signed.authorization("LTAIv3")));
        let params = Params::decode(Some("RegionId=cn-hangzhou&InstanceId=i-1"), None);
        Built {
            query,
            headers,
            body: body.to_vec(),
            params,
        }
    }

    fn check(world: &World, nonces: &mut NonceStore, built: &Built) -> Result<Caller, Fault> {
        check_at(world, nonces, built, DATE)
    }

    /// Authenticates `built` with the service's clock at `at`.
    fn check_at(
        world: &World,
        nonces: &mut NonceStore,
        built: &Built,
        at: &str,
    ) -> Result<Caller, Fault> {
        let request = Request {
            method: "POST",
            path: "/",
            query: &built.query,
            params: &built.params,
            headers: &built.headers,
            body: &built.body,
        };
        assert!(request.is_v3());
        assert_eq!(request.action_name(), "DescribeInstanceAutoRenewAttribute");
        let now = time::parse(at).unwrap();
        authenticate(&request, world, nonces, now, now)
    }

    fn code(result: Result<Caller, Fault>) -> String {
        result.expect_err("refused").code
    }

    fn set_header(built: &mut Built, name: &str, value: &str) {
        built.headers.iter_mut().find(|(n, _)| n == name).unwrap().1 = value.to_owned();
    }

    #[test]
    fn a_correctly_signed_request_is_accepted_once() {
        let world = world(None);
        let mut nonces = NonceStore::default();
        let built = build("v3-secret", "n1", &[], b"");
        assert_eq!(check(&world, &mut nonces, &built).unwrap().key_id, "LTAIv3");
        assert_eq!(
            code(check(&world, &mut nonces, &built)),
            "SignatureNonceUsed"
        );
    }

    #[test]
    fn a_wrong_secret_or_a_tampered_request_does_not_match() {
        let world = world(None);
        let mut nonces = NonceStore::default();
        let wrong = build("not-the-secret", "n1", &[], b"");
        assert_eq!(
            code(check(&world, &mut nonces, &wrong)),
            "SignatureDoesNotMatch"
        );
        let mut header = build("v3-secret", "n2", &[], b"");
        set_header(&mut header, "x-acs-version", "2016-01-01");
        assert_eq!(
            code(check(&world, &mut nonces, &header)),
            "SignatureDoesNotMatch"
        );
        let mut query = build("v3-secret", "n3", &[], b"");
        query.query[1].1 = "i-2".into();
        assert_eq!(
            code(check(&world, &mut nonces, &query)),
            "SignatureDoesNotMatch"
        );
        let mut body = build("v3-secret", "n4", &[], b"RegionId=cn-hangzhou");
        body.body = b"RegionId=cn-beijing".to_vec();
        let fault = check(&world, &mut nonces, &body).unwrap_err();
        assert_eq!(fault.code, "SignatureDoesNotMatch");
        assert!(
            fault.message.contains("x-acs-content-sha256"),
            "{}",
            fault.message
        );
    }

    #[test]
    fn an_unsigned_acs_header_or_a_missing_one_is_refused() {
        let world = world(None);
        let mut nonces = NonceStore::default();
        let mut unsigned = build("v3-secret", "n1", &[], b"");
        unsigned.headers.push(("x-acs-extra".into(), "1".into()));
        let fault = check(&world, &mut nonces, &unsigned).unwrap_err();
        assert_eq!(fault.code, "IncompleteSignature");
        assert!(fault.message.contains("x-acs-extra"), "{}", fault.message);
        let mut no_date = build("v3-secret", "n2", &[], b"");
        no_date.headers.retain(|(n, _)| n != "x-acs-date");
        let fault = check(&world, &mut nonces, &no_date).unwrap_err();
        assert_eq!(fault.code, "MissingParameter");
        assert!(fault.message.contains("x-acs-date"), "{}", fault.message);
        let mut no_auth = build("v3-secret", "n3", &[], b"");
        no_auth.headers.retain(|(n, _)| n != "authorization");
        assert_eq!(
            code(check(&world, &mut nonces, &no_auth)),
            "MissingParameter"
        );
    }

    #[test]
    fn the_date_must_be_inside_the_window() {
        let world = world(None);
        let mut nonces = NonceStore::default();
        let built = build("v3-secret", "n1", &[], b"");
        let fault = check_at(&world, &mut nonces, &built, "2026-03-10T04:20:00Z").unwrap_err();
        assert_eq!(fault.code, "InvalidTimeStamp.Expired");
    }

    #[test]
    fn an_sts_key_needs_its_token_in_x_acs_security_token() {
        let world = world(Some("sts-token"));
        let mut nonces = NonceStore::default();
        let without = build("v3-secret", "n1", &[], b"");
        assert_eq!(
            code(check(&world, &mut nonces, &without)),
            "MissingSecurityToken"
        );
        let wrong = build("v3-secret", "n2", &[("x-acs-security-token", "other")], b"");
        assert_eq!(
            code(check(&world, &mut nonces, &wrong)),
            "InvalidSecurityToken.MismatchWithAccessKey"
        );
        let right = build(
            "v3-secret",
            "n3",
            &[("x-acs-security-token", "sts-token")],
            b"",
        );
        assert!(check(&world, &mut nonces, &right).is_ok());
    }
}
