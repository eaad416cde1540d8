//! The ClientToken of a renewal: derived from (account, instance, current expiry, period,
//! unit), so every repeat of the same renewal — the next attempt, the next pass, after a crash,
//! from another host — carries the same token and the service charges once.

use chrono::{DateTime, Utc};
use sha1::{Digest, Sha1};

use crate::cloud::ecs::ClientToken;
use crate::cloud::time;
use crate::cloud::types::PeriodUnit;

/// Token prefix; the number versions the derivation.
const PREFIX: &str = "ern1-";

/// The token for renewing `instance_id` of `account` from `old_expiry` by `period` × `unit`.
pub fn client_token(
    account: &str,
    instance_id: &str,
    old_expiry: DateTime<Utc>,
    period: u32,
    unit: PeriodUnit,
) -> ClientToken {
    let input = format!(
        "{account}\n{instance_id}\n{}\n{period}\n{unit}",
        time::format_minutes(old_expiry)
    );
    let digest = Sha1::digest(input.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    ClientToken::new(format!("{PREFIX}{hex}")).expect("45 ASCII characters are a valid token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_renewal_gets_the_same_token_and_any_other_a_different_one() {
        let expiry = time::parse("2026-03-15T16:00Z").unwrap();
        let token = client_token("main", "i-1", expiry, 1, PeriodUnit::Month);
        assert_eq!(
            token,
            client_token("main", "i-1", expiry, 1, PeriodUnit::Month)
        );
        assert_eq!(token.as_str().len(), 45);
        let others = [
            client_token("other", "i-1", expiry, 1, PeriodUnit::Month),
            client_token("main", "i-2", expiry, 1, PeriodUnit::Month),
            client_token(
                "main",
                "i-1",
                expiry + chrono::Duration::days(30),
                1,
                PeriodUnit::Month,
            ),
            client_token("main", "i-1", expiry, 2, PeriodUnit::Month),
            client_token("main", "i-1", expiry, 1, PeriodUnit::Week),
        ];
        for other in others {
            assert_ne!(other, token);
        }
        // Seconds in an observed expiry do not change the token (ECS reports minutes).
        assert_eq!(
            token,
            client_token(
                "main",
                "i-1",
                expiry + chrono::Duration::seconds(30),
                1,
                PeriodUnit::Month
            )
        );
    }
}
