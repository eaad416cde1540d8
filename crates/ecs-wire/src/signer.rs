//! RPC request signing ("signature v1", HMAC-SHA1), as the ECS service computes it
//! (docs/ecs-api.md §1). Pure: the caller passes every parameter, including `SignatureNonce` and `Timestamp`, so
//! the same inputs always give the same signature. Shared by the client (to sign) and the
//! emulator (to verify).

use std::fmt::Write as _;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;
use zeroize::{Zeroize, Zeroizing};

use crate::secret::Secret;

/// The value of the `SignatureMethod` parameter.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
/// The value of the `SignatureVersion` parameter.
pub const SIGNATURE_VERSION: &str = "1.0";

/// RFC 3986 unreserved characters stay as they are; every other byte is `%XY`, uppercase hex.
/// So a space is `%20` (never `+`), `*` is `%2A` and `~` is kept (docs/ecs-api.md §1.2).
const ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `value` the way the service does (UTF-8 bytes, uppercase hex).
pub fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, ENCODE_SET).to_string()
}

/// The canonicalized query string: parameters sorted by raw name (byte order), each
/// `encode(name)=encode(value)`, joined with `&`. A `Signature` parameter is left out. The
/// result is built in one buffer sized up front (it may hold the STS token, so no smaller copy
/// is left behind by growing), and wiped when dropped.
pub fn canonicalized_query<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Zeroizing<String> {
    let mut sorted: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(name, _)| *name != "Signature")
        .collect();
    // A stable sort keeps the received order of repeated names, as the service does.
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let most = sorted
        .iter()
        .map(|(name, value)| 3 * (name.len() + value.len()) + 2)
        .sum();
    let mut out = Zeroizing::new(String::with_capacity(most));
    for (i, (name, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        // Written through Display: no encoded copy of the value is made on the way.
        let _ = write!(
            out,
            "{}={}",
            utf8_percent_encode(name, ENCODE_SET),
            utf8_percent_encode(value, ENCODE_SET)
        );
    }
    out
}

/// `METHOD&%2F&encode(canonicalized query)`.
pub fn string_to_sign<'a>(
    method: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let query = canonicalized_query(params);
    let mut out = String::with_capacity(method.len() + 4 + 3 * query.len());
    out.push_str(&method.to_ascii_uppercase());
    out.push_str("&%2F&");
    let _ = write!(out, "{}", utf8_percent_encode(&query, ENCODE_SET));
    out
}

/// Base64(HMAC-SHA1(key = secret + "&", string_to_sign)). The key copy is wiped after use, and
/// the HMAC state with it (hmac's `zeroize` feature).
pub fn signature_of(string_to_sign: &str, secret: &Secret) -> String {
    let mut key = Zeroizing::new(String::with_capacity(secret.expose().len() + 1));
    key.push_str(secret.expose());
    key.push('&');
    let mut mac =
        Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("HMAC accepts a key of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A computed signature together with the string it was computed over (the emulator quotes
/// the latter in `SignatureDoesNotMatch`, and the client compares it with the server's). The
/// string to sign holds the STS token: it is not shown by `Debug` and is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Signed {
    /// What was signed.
    pub string_to_sign: String,
    /// The `Signature` parameter value (before URL encoding).
    pub signature: String,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("string_to_sign", &crate::secret::REDACTED)
            .field("signature", &self.signature)
            .finish()
    }
}

impl Drop for Signed {
    fn drop(&mut self) {
        self.string_to_sign.zeroize();
    }
}

/// Signs a request: `method` is `GET` or `POST`, `params` every parameter that travels with
/// the request (query and form body) in any order, `secret` the AccessKey secret.
pub fn sign<'a>(
    method: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    secret: &Secret,
) -> Signed {
    let string_to_sign = string_to_sign(method, params);
    let signature = signature_of(&string_to_sign, secret);
    Signed {
        string_to_sign,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs<'a>(p: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a str, &'a str)> {
        p.iter().copied()
    }

    #[test]
    fn percent_encoding_matches_the_sdk_table() {
        let table = [
            (" ", "%20"),
            ("*", "%2A"),
            ("~", "~"),
            ("+", "%2B"),
            ("/", "%2F"),
            (":", "%3A"),
            ("=", "%3D"),
            ("&", "%26"),
            ("%", "%25"),
            ("!", "%21"),
            ("'", "%27"),
            ("(", "%28"),
            (")", "%29"),
            ("中", "%E4%B8%AD"),
            ("aZ09-_.", "aZ09-_."),
        ];
        for (raw, encoded) in table {
            assert_eq!(percent_encode(raw), encoded, "encoding {raw:?}");
        }
    }

    const V1_PARAMS: [(&str, &str); 8] = [
        ("AccessKeyId", "testid"),
        ("Action", "DescribeRegions"),
        ("Format", "XML"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2016-02-23T12:46:24Z"),
        ("Version", "2014-05-26"),
    ];

    #[test]
    fn v1_official_ecs_doc_example() {
        let signed = sign("GET", pairs(&V1_PARAMS), &Secret::new("testsecret"));
        assert_eq!(
            signed.string_to_sign,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        assert_eq!(signed.signature, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
        assert_eq!(
            percent_encode(&signed.signature),
            "OLeaidS1JvxuMvnyHOwuJ%2BuX5qY%3D"
        );
    }

    #[test]
    fn v1_with_post_signs_differently() {
        let signed = sign("POST", pairs(&V1_PARAMS), &Secret::new("testsecret"));
        assert_eq!(signed.signature, "MxbnVAM4w6sft9xjVpe/GCKueuk=");
    }

    #[test]
    fn v2_key_spelled_timestamp_with_capital_s_sorts_after_signature_version() {
        let params: Vec<(&str, &str)> = V1_PARAMS
            .iter()
            .map(|&(k, v)| {
                if k == "Timestamp" {
                    ("TimeStamp", v)
                } else {
                    (k, v)
                }
            })
            .collect();
        let signed = sign("GET", params, &Secret::new("testsecret"));
        assert_eq!(signed.signature, "CT9X0VtwR86fNWSnsc6v8YGOjuE=");
    }

    const V3_PARAMS: [(&str, &str); 10] = [
        ("AccessKeyId", "accessKeyId"),
        ("Action", ""),
        ("Format", "JSON"),
        ("RegionId", "regionId"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "MOCK_UUID"),
        ("SignatureType", ""),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "mock date"),
        ("Version", ""),
    ];

    #[test]
    fn v3_go_sdk_access_key_vector_with_empty_values_and_a_space() {
        let signed = sign("GET", pairs(&V3_PARAMS), &Secret::new("accessKeySecret"));
        assert_eq!(
            signed.string_to_sign,
            "GET&%2F&AccessKeyId%3DaccessKeyId%26Action%3D%26Format%3DJSON%26RegionId%3DregionId%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3DMOCK_UUID%26SignatureType%3D%26SignatureVersion%3D1.0%26Timestamp%3Dmock%2520date%26Version%3D"
        );
        assert_eq!(signed.signature, "7loPmFjvDnzOVnQeQNj85S6nFGY=");
    }

    #[test]
    fn v4_go_sdk_sts_vector_signs_the_security_token() {
        let mut params = V3_PARAMS.to_vec();
        params.push(("SecurityToken", "accessKeyStsToken"));
        let signed = sign("GET", params, &Secret::new("accessKeySecret"));
        assert_eq!(signed.signature, "5Nxdcler+ihqWqv0Hr2On4PsBf4=");
    }

    #[test]
    fn v5_darabonba_vector() {
        let signed = sign(
            "GET",
            [("query", "test"), ("body", "test")],
            &Secret::new("secret"),
        );
        assert_eq!(signed.string_to_sign, "GET&%2F&body%3Dtest%26query%3Dtest");
        assert_eq!(signed.signature, "XlUyV4sXjOuX5FnjUz9IF9tm5rU=");
    }

    #[test]
    fn v6_go_sdk_nested_url_value_is_encoded_twice() {
        let signed = sign(
            "GET",
            [("key", "value"), ("q", "http://domain/?q=value&q2=value2")],
            &Secret::new("secret"),
        );
        assert_eq!(
            signed.string_to_sign,
            "GET&%2F&key%3Dvalue%26q%3Dhttp%253A%252F%252Fdomain%252F%253Fq%253Dvalue%2526q2%253Dvalue2"
        );
        assert_eq!(signed.signature, "8NILhT1NWk6m6AMmBKa7BKaY5C8=");
    }

    #[test]
    fn a_signature_parameter_is_never_signed() {
        let with = sign(
            "GET",
            [("a", "1"), ("Signature", "whatever")],
            &Secret::new("s"),
        );
        let without = sign("GET", [("a", "1")], &Secret::new("s"));
        assert_eq!(with, without);
    }

    fn arbitrary_value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[ *~+/:=&%!'()a-zA-Z0-9._-]{0,12}",
            "\\PC{0,8}",
        ]
    }

    proptest! {
        #[test]
        fn signing_is_independent_of_parameter_order(
            map in prop::collection::btree_map("[A-Za-z][A-Za-z0-9.]{0,10}|\\PC{1,4}", arbitrary_value(), 0..12),
            seed in any::<u64>(),
        ) {
            let ordered: Vec<(String, String)> = map.into_iter().collect();
            let mut shuffled = ordered.clone();
            // A deterministic permutation driven by the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let secret = Secret::new("k");
            let a = sign("POST", ordered.iter().map(|(k, v)| (k.as_str(), v.as_str())), &secret);
            let b = sign("POST", shuffled.iter().map(|(k, v)| (k.as_str(), v.as_str())), &secret);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn encoded_output_uses_only_unreserved_characters_and_uppercase_escapes(value in "\\PC{0,16}") {
            let encoded = percent_encode(&value);
            let mut chars = encoded.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '%' {
                    let hi = chars.next().unwrap();
                    let lo = chars.next().unwrap();
                    prop_assert!(hi.is_ascii_digit() || ('A'..='F').contains(&hi));
                    prop_assert!(lo.is_ascii_digit() || ('A'..='F').contains(&lo));
                } else {
                    prop_assert!(c.is_ascii_alphanumeric() || "-_.~".contains(c));
                }
            }
            let decoded = percent_encoding::percent_decode_str(&encoded).decode_utf8().unwrap();
            prop_assert_eq!(decoded, value);
        }
    }
}
