//! The ClientToken of a renewal: derived from the instance, its current expiry and how many of
//! that expiry cycle's intents were refused outright, so every repeat of a renewal that may
//! have charged — the next attempt, the next pass, after a crash, after a reload that changed
//! the period, through another config entry that reaches the same cloud account, from another
//! host — carries the same token, and the service charges at most once (a repeat with other
//! parameters is answered `IdempotenceParamNotMatch` instead of a second charge). Only an error
//! answer, which proves no order exists, moves the cycle to its next token
//! (`policy::TokenChoice`). Instance ids are unique across accounts, so the account's label in
//! the config plays no part.

use chrono::{DateTime, Utc};
use sha1::{Digest, Sha1};

use crate::cloud::ecs::ClientToken;
use crate::cloud::time;

/// Token prefix; the number versions the derivation (`ern1-` tokens also hashed the account
/// label, period and unit; open intents keep theirs until settled).
const PREFIX: &str = "ern2-";

/// The token for renewing `instance_id` from `old_expiry` after `refusals` intents of that cycle
/// were refused outright (0: the cycle's first token, the same as before refusals counted).
pub fn client_token(instance_id: &str, old_expiry: DateTime<Utc>, refusals: u32) -> ClientToken {
    let mut input = format!("{instance_id}\n{}", time::format_minutes(old_expiry));
    if refusals > 0 {
        input.push_str(&format!("\nrefused {refusals}"));
    }
    let digest = Sha1::digest(input.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    ClientToken::new(format!("{PREFIX}{hex}")).expect("45 ASCII characters are a valid token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_token_per_instance_and_expiry_cycle() {
        let expiry = time::parse("2026-03-15T16:00Z").unwrap();
        let token = client_token("i-1", expiry, 0);
        assert_eq!(token, client_token("i-1", expiry, 0));
        assert_eq!(token.as_str().len(), 45);
        assert!(token.as_str().starts_with("ern2-"));
        for other in [
            client_token("i-2", expiry, 0),
            client_token("i-1", expiry + chrono::Duration::days(30), 0),
            client_token("i-1", expiry, 1),
        ] {
            assert_ne!(other, token);
        }
        // Seconds in an observed expiry do not change the token (ECS reports minutes).
        assert_eq!(
            token,
            client_token("i-1", expiry + chrono::Duration::seconds(30), 0)
        );
    }

    #[test]
    fn each_refusal_of_a_cycle_moves_it_to_its_next_token() {
        let expiry = time::parse("2026-03-15T16:00Z").unwrap();
        let tokens: Vec<ClientToken> = (0..4).map(|n| client_token("i-1", expiry, n)).collect();
        for (i, a) in tokens.iter().enumerate() {
            assert!(a.as_str().starts_with("ern2-") && a.as_str().len() == 45);
            for b in &tokens[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            tokens[2],
            client_token("i-1", expiry, 2),
            "derived, not drawn"
        );
    }
}
