//! Who is who for STS: each account's id (uid) and RAM roles from the fleet file (who may
//! assume a role, with which ExternalId, for how long), and the keys STS mints. `sts` answers
//! the calls; the world keeps these.

use std::collections::HashMap;

use rand::RngExt;

use super::settings::AccountSpec;

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

/// Every account's id (uid) and RAM roles.
#[derive(Debug, Default)]
pub struct Identities {
    uids: HashMap<String, String>,
    roles: HashMap<(String, String), Role>,
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

    /// The account's id.
    pub fn uid(&self, account: &str) -> Option<&str> {
        self.uids.get(account).map(String::as_str)
    }

    /// The role `name` (any case) of the account with id `uid`.
    pub fn role(&self, uid: &str, name: &str) -> Option<&Role> {
        self.roles.get(&(uid.to_owned(), name.to_ascii_lowercase()))
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
