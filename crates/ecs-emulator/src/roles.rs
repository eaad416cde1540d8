//! Who is who for STS: each account's id (uid) and RAM roles from the fleet file (who may
//! assume a role, with which ExternalId, for how long), and the keys STS mints. `sts` answers
//! the calls; the world keeps these.

use std::collections::HashMap;

use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngExt;
use serde_json::{Value, json};

use super::settings::{AccountSpec, OidcProviderSpec};

/// A RAM role of an account: who may assume it, with which ExternalId, for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The role's name, as created (ARNs match it without regard to case).
    pub name: String,
    /// The account (fleet name) whose instances the role's keys act on.
    pub account: String,
    /// The account ids (uids) whose identities may assume it.
    pub trust: Vec<String>,
    /// The ExternalId its trust policy requires, if any.
    pub external_id: Option<String>,
    /// The longest session, in seconds (the role's `MaxSessionDuration`).
    pub max_session_seconds: i64,
}

/// Every account's id (uid), RAM roles and OIDC identity providers.
#[derive(Debug, Default)]
pub struct Identities {
    uids: HashMap<String, String>,
    roles: HashMap<(String, String), Role>,
    oidc: Vec<OidcProvider>,
}

impl Identities {
    /// Adds the fleet file's account number `index` (from 0): its `uid` (default
    /// `1000000000000001` for the first, and so on) and its roles.
    pub fn add(&mut self, index: usize, spec: &AccountSpec) -> Result<(), String> {
        let uid = spec
            .uid
            .clone()
            .unwrap_or_else(|| format!("1{:015}", index + 1));
        if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "account {:?}: uid {uid:?} must be digits (an account id)",
                spec.name
            ));
        }
        if self.uids.values().any(|known| *known == uid) {
            return Err(format!("uid {uid} is given to two accounts"));
        }
        self.uids.insert(spec.name.clone(), uid.clone());
        for role in &spec.roles {
            let max_session_seconds = match &role.max_session {
                None => 3600,
                Some(text) => ecs_wire::duration::parse(text)
                    .map_err(|e| {
                        format!(
                            "account {:?} role {:?}: max_session: {e}",
                            spec.name, role.name
                        )
                    })?
                    .as_secs() as i64,
            };
            if !(3600..=43_200).contains(&max_session_seconds) {
                return Err(format!(
                    "account {:?} role {:?}: max_session must be between 1h and 12h (RAM's MaxSessionDuration)",
                    spec.name, role.name
                ));
            }
            let key = (uid.clone(), role.name.to_ascii_lowercase());
            if self.roles.contains_key(&key) {
                return Err(format!(
                    "account {:?}: role {:?} is listed twice",
                    spec.name, role.name
                ));
            }
            self.roles.insert(
                key,
                Role {
                    name: role.name.clone(),
                    account: spec.name.clone(),
                    trust: role.trust.clone(),
                    external_id: role.external_id.clone(),
                    max_session_seconds,
                },
            );
        }
        Ok(())
    }

    /// Registers the fleet file's OIDC providers, each with a key of its own; `first` is the
    /// account a provider without one belongs to.
    pub fn add_oidc_providers(
        &mut self,
        specs: &[OidcProviderSpec],
        first: &str,
    ) -> Result<(), String> {
        for spec in specs {
            let account = spec.account.as_deref().unwrap_or(first);
            let uid = self
                .uid(account)
                .ok_or_else(|| format!("oidc provider {:?}: no account {account:?}", spec.name))?;
            let arn = format!("acs:ram::{uid}:oidc-provider/{}", spec.name);
            if self.oidc.iter().any(|p| p.arn == arn) {
                return Err(format!("oidc provider {:?} is listed twice", spec.name));
            }
            let key = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| format!("oidc provider {:?}: no RSA key could be made", spec.name))?;
            self.oidc.push(OidcProvider {
                arn,
                name: spec.name.clone(),
                issuer: spec.issuer.clone(),
                audience: spec.audience.clone(),
                key,
            });
        }
        Ok(())
    }

    /// The OIDC provider with this ARN, or this name.
    pub fn oidc_provider(&self, arn_or_name: &str) -> Option<&OidcProvider> {
        self.oidc
            .iter()
            .find(|p| p.arn == arn_or_name || p.name == arn_or_name)
    }

    /// The account's id.
    pub fn uid(&self, account: &str) -> Option<&str> {
        self.uids.get(account).map(String::as_str)
    }

    /// The role `name` (any case) of the account with id `uid`.
    pub fn role(&self, uid: &str, name: &str) -> Option<&Role> {
        self.roles.get(&(uid.to_owned(), name.to_ascii_lowercase()))
    }

    /// The role `name` of the account with id `uid`, to change (a test editing its trust
    /// policy).
    pub fn role_mut(&mut self, uid: &str, name: &str) -> Option<&mut Role> {
        self.roles
            .get_mut(&(uid.to_owned(), name.to_ascii_lowercase()))
    }
}

/// A key STS minted: what the caller gets back.
pub struct Minted {
    /// `STS.` and 24 characters.
    pub id: String,
    /// The secret.
    pub secret: String,
    /// The token that must come with it.
    pub token: String,
}

/// A fresh key for an assumed role.
pub fn mint() -> Minted {
    let mut rng = rand::rng();
    let mut text = |n: usize| -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    Minted {
        id: format!("STS.{}", text(24)),
        secret: text(44),
        token: format!("CAIS{}", text(300)),
    }
}

/// An OIDC identity provider (RRSA's issuer for a cluster): the issuer and audience its tokens
/// carry, and the RSA key (RS256) they are signed with.
pub struct OidcProvider {
    /// `acs:ram::<uid>:oidc-provider/<name>`.
    pub arn: String,
    /// Its name.
    pub name: String,
    /// `iss` of its tokens.
    pub issuer: String,
    /// `aud` its tokens must carry.
    pub audience: String,
    key: RsaKeyPair,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("arn", &self.arn)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The claims STS reads from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: `system:serviceaccount:<namespace>:<name>` for a pod.
    pub subject: String,
    /// `iss`.
    pub issuer: String,
    /// `aud`, joined by commas (STS's `ClientIds`).
    pub audience: String,
}

/// Why STS would refuse a token: the last part of its `AuthenticationFail.OIDCToken.*` code,
/// and its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRefusal {
    /// `Invalid`, `InvalidSignature`, `AudienceNotMatch` or `Expired`.
    pub code: &'static str,
    /// The message STS sends with it.
    pub message: &'static str,
}

fn oidc_fault(code: &'static str, message: &'static str) -> TokenRefusal {
    TokenRefusal { code, message }
}

impl OidcProvider {
    /// A token for `subject` (`audience`: the provider's when `None`), valid until `expires`.
    pub fn mint(
        &self,
        subject: &str,
        audience: Option<&str>,
        issued: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": "emulator"});
        let claims = json!({
            "iss": self.issuer,
            "aud": audience.unwrap_or(&self.audience),
            "sub": subject,
            "iat": issued.timestamp(),
            "exp": expires.timestamp(),
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .expect("an RSA key signs");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// Verifies `token` as STS does: three parts, RS256, this provider's signature, its
    /// issuer, its audience among `aud`, `exp` after `now`, a subject.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenRefusal> {
        let invalid = |why: &'static str| oidc_fault("Invalid", why);
        let parts: Vec<&str> = token.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err(invalid(
                "The JsonWebToken is not three dot-separated parts.",
            ));
        };
        let decode = |part: &str| -> Result<Value, TokenRefusal> {
            let bytes = URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| invalid("The JsonWebToken is not base64url."))?;
            serde_json::from_slice(&bytes).map_err(|_| invalid("The JsonWebToken is not JSON."))
        };
        if decode(header)?["alg"] != "RS256" {
            return Err(invalid("Only RS256 JsonWebTokens are accepted."));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| invalid("The JsonWebToken's signature is not base64url."))?;
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            self.key.public_key().as_ref(),
        );
        public
            .verify(format!("{header}.{claims}").as_bytes(), &signature)
            .map_err(|_| {
                oidc_fault(
                    "InvalidSignature",
                    "The JsonWebToken's signature is invalid.",
                )
            })?;
        let claims = decode(claims)?;
        let text = |name: &str| claims[name].as_str().unwrap_or_default().to_owned();
        if text("iss") != self.issuer {
            return Err(invalid("The JsonWebToken's issuer is not the provider's."));
        }
        let audience: Vec<String> = match &claims["aud"] {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if !audience.contains(&self.audience) {
            return Err(oidc_fault(
                "AudienceNotMatch",
                "The audience of the JsonWebToken does not match.",
            ));
        }
        if claims["exp"]
            .as_i64()
            .is_none_or(|exp| exp <= now.timestamp())
        {
            return Err(oidc_fault("Expired", "This JsonWebToken is expired."));
        }
        let subject = text("sub");
        if subject.is_empty() {
            return Err(invalid("The JsonWebToken has no subject."));
        }
        Ok(Claims {
            subject,
            issuer: text("iss"),
            audience: audience.join(","),
        })
    }
}
