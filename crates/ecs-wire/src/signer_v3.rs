//! The ACS3-HMAC-SHA256 ("V3") request signature that today's official SDKs send by default
//! (docs/v3-and-bss.md §1). Pure, like [`crate::signer`]: the caller passes every header and
//! query parameter, so the same inputs always give the same signature. The emulator verifies
//! with it; its unit tests hold the official vectors.
//!
//! ```text
//! CanonicalRequest = METHOD \n URI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n PayloadHash
//! StringToSign     = "ACS3-HMAC-SHA256" \n hex(SHA-256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(key = secret, StringToSign))
//! ```

use std::fmt::Write as _;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::secret::Secret;
use crate::signer::percent_encode;

/// The algorithm named in the `Authorization` header and the first line of the string to sign.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// `x-acs-content-sha256` of an empty body.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Lowercase hex of the SHA-256 of `bytes` (the payload hash, and the canonical request's).
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The canonical query string: the query's parameters (never the body's) sorted by name in byte
/// order (a stable sort: repeated names keep their order), each `encode(name)=encode(value)`
/// with RFC 3986 encoding (an empty value renders as `name=`), joined with `&`. It may hold the
/// STS token's neighbours, so it is wiped when dropped.
pub fn canonical_query<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Zeroizing<String> {
    let mut sorted: Vec<(&str, &str)> = params.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Zeroizing::new(String::new());
    for (i, (name, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode(name));
        out.push('=');
        out.push_str(&percent_encode(value));
    }
    out
}

/// The headers as they are signed: names lowercased, values trimmed, sorted by name, the values
/// of a repeated name joined with `,` in the order they came.
fn canonical_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(String, String)> {
    let mut lowered: Vec<(String, &str)> = headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .collect();
    lowered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(lowered.len());
    for (name, value) in lowered {
        match merged.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(',');
                joined.push_str(value);
            }
            _ => merged.push((name, value.to_owned())),
        }
    }
    merged
}

/// One request's parts as the signature covers them.
#[derive(Clone, Copy)]
pub struct RequestParts<'a> {
    /// `GET` or `POST` (any case; signed uppercase).
    pub method: &'a str,
    /// The path; `/` for RPC-style APIs.
    pub uri: &'a str,
    /// The query's parameters, decoded.
    pub query: &'a [(&'a str, &'a str)],
    /// The signed headers with their values, in any order and case.
    pub headers: &'a [(&'a str, &'a str)],
    /// The `x-acs-content-sha256` value: lowercase hex SHA-256 of the body.
    pub payload_hash: &'a str,
}

/// A computed V3 signature with what it was computed over. The canonical request holds the STS
/// token: `Debug` leaves it out and it is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedV3 {
    /// The canonical request (the emulator quotes it in `SignatureDoesNotMatch`).
    pub canonical_request: String,
    /// The header names signed, lowercase, sorted, joined with `;`.
    pub signed_headers: String,
    /// Lowercase hex HMAC-SHA256.
    pub signature: String,
}

impl std::fmt::Debug for SignedV3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedV3")
            .field("canonical_request", &crate::secret::REDACTED)
            .field("signed_headers", &self.signed_headers)
            .field("signature", &self.signature)
            .finish()
    }
}

impl Drop for SignedV3 {
    fn drop(&mut self) {
        self.canonical_request.zeroize();
    }
}

impl SignedV3 {
    /// The `Authorization` header value for `key_id`.
    pub fn authorization(&self, key_id: &str) -> String {
        format!(
            "{ALGORITHM} Credential={key_id},SignedHeaders={},Signature={}",
            self.signed_headers, self.signature
        )
    }
}

/// Signs `parts` with `secret` (used raw: no `&` is appended, unlike the RPC signature).
pub fn sign(parts: RequestParts<'_>, secret: &Secret) -> SignedV3 {
    let headers = canonical_headers(parts.headers.iter().copied());
    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical_request = String::new();
    canonical_request.push_str(&parts.method.to_ascii_uppercase());
    canonical_request.push('\n');
    canonical_request.push_str(parts.uri);
    canonical_request.push('\n');
    canonical_request.push_str(&canonical_query(parts.query.iter().copied()));
    canonical_request.push('\n');
    for (name, value) in &headers {
        let _ = writeln!(canonical_request, "{name}:{value}");
    }
    canonical_request.push('\n');
    canonical_request.push_str(&signed_headers);
    canonical_request.push('\n');
    canonical_request.push_str(parts.payload_hash);
    let signature = signature_of(&string_to_sign(&canonical_request), secret);
    SignedV3 {
        canonical_request,
        signed_headers,
        signature,
    }
}

/// `ACS3-HMAC-SHA256\n` + hex SHA-256 of the canonical request.
pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", hex_sha256(canonical_request.as_bytes()))
}

/// Lowercase hex HMAC-SHA256 of `string_to_sign` keyed by the secret; the HMAC state is wiped
/// (hmac's `zeroize` feature).
pub fn signature_of(string_to_sign: &str, secret: &Secret) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts a key of any length");
    mac.update(string_to_sign.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// A parsed `Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The AccessKey ID from `Credential`.
    pub key_id: String,
    /// The signed header names, as listed (lowercase, `;`-separated on the wire).
    pub signed_headers: Vec<String>,
    /// The hex signature.
    pub signature: String,
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    /// Another algorithm than [`ALGORITHM`].
    #[error("the Authorization header does not start with {ALGORITHM}")]
    Algorithm,
    /// `Credential`, `SignedHeaders` or `Signature` is absent or empty.
    #[error("the Authorization header has no {0}")]
    Missing(&'static str),
}

impl Authorization {
    /// Reads the header value; the parts may come in any order, separated by `,`.
    pub fn parse(value: &str) -> Result<Authorization, AuthorizationError> {
        let rest = value
            .trim()
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '))
            .ok_or(AuthorizationError::Algorithm)?;
        let (mut key_id, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            match part.trim().split_once('=') {
                Some(("Credential", v)) => key_id = Some(v.to_owned()),
                Some(("SignedHeaders", v)) => signed = Some(v.to_owned()),
                Some(("Signature", v)) => signature = Some(v.to_owned()),
                _ => {}
            }
        }
        let nonempty = |v: Option<String>, name| {
            v.filter(|v| !v.is_empty())
                .ok_or(AuthorizationError::Missing(name))
        };
        Ok(Authorization {
            key_id: nonempty(key_id, "Credential")?,
            signed_headers: nonempty(signed, "SignedHeaders")?
                .split(';')
                .map(str::to_owned)
                .collect(),
            signature: nonempty(signature, "Signature")?,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The vectors of docs/v3-and-bss.md §1.6: V3-A and V3-B are the official ones (the V3
    //! signature page and the Model Studio page), D1–D5 were computed with the official Python
    //! SDK's own `get_authorization` and an independent implementation, which agree.
    use super::*;

    const DATE: &str = "2023-10-26T10:22:32Z";
    const NONCE: &str = "3156853299f313e23d1673dc12e1703d";

    fn signed(
        host: &str,
        action: &str,
        version: &str,
        query: &[(&str, &str)],
        date: &str,
        nonce: &str,
        extra: &[(&str, &str)],
    ) -> SignedV3 {
        signed_with(
            "POST",
            host,
            action,
            version,
            query,
            date,
            nonce,
            extra,
            EMPTY_PAYLOAD_SHA256,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn signed_with(
        method: &str,
        host: &str,
        action: &str,
        version: &str,
        query: &[(&str, &str)],
        date: &str,
        nonce: &str,
        extra: &[(&str, &str)],
        payload_hash: &str,
    ) -> SignedV3 {
        let mut headers = vec![
            ("host", host),
            ("x-acs-action", action),
            ("x-acs-content-sha256", payload_hash),
            ("x-acs-date", date),
            ("x-acs-signature-nonce", nonce),
            ("x-acs-version", version),
        ];
        headers.extend_from_slice(extra);
        sign(
            RequestParts {
                method,
                uri: "/",
                query,
                headers: &headers,
                payload_hash,
            },
            &Secret::new("YourAccessKeySecret"),
        )
    }

    const RUN_INSTANCES: [(&str, &str); 2] = [
        (
            "ImageId",
            "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
        ),
        ("RegionId", "cn-shanghai"),
    ];

    #[test]
    fn official_example_v3_a() {
        let s = signed(
            "ecs.cn-shanghai.aliyuncs.com",
            "RunInstances",
            "2014-05-26",
            &RUN_INSTANCES,
            DATE,
            NONCE,
            &[],
        );
        assert_eq!(
            s.canonical_request,
            "POST\n/\nImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n\
             host:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\n\
             x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-acs-date:2023-10-26T10:22:32Z\nx-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n\
             x-acs-version:2014-05-26\n\n\
             host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            string_to_sign(&s.canonical_request),
            "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        assert_eq!(
            s.signature,
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
        assert_eq!(
            s.authorization("YourAccessKeyId"),
            "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    #[test]
    fn official_example_v3_b() {
        let s = signed(
            "ecs.cn-shanghai.aliyuncs.com",
            "RunInstances",
            "2014-05-26",
            &RUN_INSTANCES,
            "2023-10-26T09:01:01Z",
            "d410180a5abf7fe235dd9b74aca91fc0",
            &[],
        );
        assert_eq!(
            hex_sha256(s.canonical_request.as_bytes()),
            "29622f5feb1e9fcaaa2e276a72889c975f7b16f00e02be1ca34965b18cd85015"
        );
        assert_eq!(
            s.signature,
            "e521358f7776c97df52e6b2891a8bc73026794a071b50c3323388c4e0df64804"
        );
    }

    const RENEW: [(&str, &str); 4] = [
        ("ClientToken", "0c593ea1-3bea-11e9-b96b-88e9fe637760"),
        ("InstanceId", "i-bp67acfmxazb4p****"),
        ("Period", "1"),
        ("PeriodUnit", "Month"),
    ];

    #[test]
    fn derived_renew_instance_d1_and_with_sts_d2() {
        let host = "ecs.cn-hangzhou.aliyuncs.com";
        let s = signed(
            host,
            "RenewInstance",
            "2014-05-26",
            &RENEW,
            DATE,
            NONCE,
            &[],
        );
        assert!(s.canonical_request.contains(
            "ClientToken=0c593ea1-3bea-11e9-b96b-88e9fe637760&InstanceId=i-bp67acfmxazb4p%2A%2A%2A%2A&Period=1&PeriodUnit=Month"
        ));
        assert_eq!(
            s.signature,
            "0eb8cec9b44dcc4d922680f735f4dd69555988e08c02130e79c591256d303a1b"
        );
        let sts = [
            ("x-acs-accesskey-id", "YourAccessKeyId"),
            ("x-acs-security-token", "YourSecurityToken"),
        ];
        let s = signed(
            host,
            "RenewInstance",
            "2014-05-26",
            &RENEW,
            DATE,
            NONCE,
            &sts,
        );
        assert_eq!(
            s.signed_headers,
            "host;x-acs-accesskey-id;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version"
        );
        assert_eq!(
            s.signature,
            "9053b30e1c067eeb1bcad5446eb9a1de7daff4827ae87a3c3e1d10bd6c8f7fd1"
        );
    }

    #[test]
    fn derived_query_account_balance_d3() {
        let s = signed(
            "business.aliyuncs.com",
            "QueryAccountBalance",
            "2017-12-14",
            &[],
            DATE,
            NONCE,
            &[],
        );
        assert_eq!(
            s.signature,
            "f04a20d20250d2ac9c84ae408a6b3f5f64c266e3d45c02c363569cc35f767787"
        );
    }

    #[test]
    fn derived_form_body_d4() {
        let body_hash = hex_sha256(b"RegionId=cn-hangzhou");
        assert_eq!(
            body_hash,
            "acb32d261aada29a48734ef41e424fe8b3cfd2c453e1c8f6c83651024dd8e016"
        );
        let s = signed_with(
            "POST",
            "ecs.cn-hangzhou.aliyuncs.com",
            "DescribeInstances",
            "2014-05-26",
            &[],
            DATE,
            NONCE,
            &[("content-type", "application/x-www-form-urlencoded")],
            &body_hash,
        );
        assert!(s.signed_headers.starts_with("content-type;host;"));
        assert_eq!(
            s.signature,
            "145474d6e98757d166a4aef5c04bfcd0d12f32211711e12353cd6e2f3718c3d4"
        );
    }

    #[test]
    fn derived_get_with_encoded_value_d5() {
        let s = signed_with(
            "GET",
            "ecs.cn-hangzhou.aliyuncs.com",
            "DescribeInstances",
            "2014-05-26",
            &[("InstanceName", "a b*c~d/中")],
            DATE,
            NONCE,
            &[],
            EMPTY_PAYLOAD_SHA256,
        );
        assert!(
            s.canonical_request
                .contains("\nInstanceName=a%20b%2Ac~d%2F%E4%B8%AD\n")
        );
        assert_eq!(
            s.signature,
            "9ffeaf1e01431fe48348f2172bf7d3a8c8c4bbffa9567a3aeb820243e2bd7133"
        );
    }

    #[test]
    fn header_names_are_lowercased_values_trimmed_and_repeats_joined() {
        let headers = canonical_headers([("X-Acs-B", " two "), ("x-acs-a", "1"), ("x-acs-b", "3")]);
        assert_eq!(
            headers,
            vec![
                ("x-acs-a".to_owned(), "1".to_owned()),
                ("x-acs-b".to_owned(), "two,3".to_owned())
            ]
        );
        assert_eq!(
            canonical_query([("B", ""), ("A", "x y")]).as_str(),
            "A=x%20y&B="
        );
    }

    #[test]
    fn the_authorization_header_round_trips_and_refuses_what_is_not_v3() {
        let s = signed("h", "DescribeRegions", "2014-05-26", &[], DATE, NONCE, &[]);
        let parsed = Authorization::parse(&s.authorization("LTAIkey")).unwrap();
        assert_eq!(parsed.key_id, "LTAIkey");
        assert_eq!(parsed.signature, s.signature);
        assert_eq!(parsed.signed_headers.join(";"), s.signed_headers);
        assert_eq!(
            Authorization::parse("acs LTAIkey:sig"),
            Err(AuthorizationError::Algorithm)
        );
        assert_eq!(
            Authorization::parse("ACS3-HMAC-SHA256 Credential=k,Signature=s"),
            Err(AuthorizationError::Missing("SignedHeaders"))
        );
        assert!(!format!("{s:?}").contains("x-acs-date:"));
    }
}
