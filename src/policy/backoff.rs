//! How long a failed charge waits before the next attempt: doubling from a floor to a ceiling,
//! but never so long that fewer than `attempts_before_deadline` attempts fit before the deadline.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The persisted backoff settings (`[retry]`): how long a failed charge waits, and how long
/// verification of an order may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    /// First backoff.
    pub backoff_floor: Duration,
    /// Longest backoff.
    pub backoff_ceiling: Duration,
    /// Attempts that must still fit before the deadline.
    pub attempts_before_deadline: u32,
    /// Verification bound.
    pub verify_timeout: Duration,
    /// Verification polling interval.
    pub verify_interval: Duration,
}

/// The last moment a renewal helps: the expiry, or once expired, the release.
pub fn deadline_of(
    expiry: DateTime<Utc>,
    release_after: Duration,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    if now < expiry {
        expiry
    } else {
        expiry + chrono::Duration::from_std(release_after).unwrap_or(chrono::Duration::days(15))
    }
}

/// The wait after the `failures`-th failure in a row (1-based) at `now`.
pub fn backoff_delay(
    failures: u32,
    now: DateTime<Utc>,
    deadline: DateTime<Utc>,
    settings: &RetrySettings,
) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let doubled = settings
        .backoff_floor
        .saturating_mul(1u32 << exponent.min(20))
        .min(settings.backoff_ceiling);
    let remaining = (deadline - now).to_std().unwrap_or(Duration::ZERO);
    // Leave room for the attempts that must still fit; a minute apart at the least.
    let fitting = remaining / settings.attempts_before_deadline.max(1);
    doubled.min(fitting).max(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RetrySettings {
        RetrySettings {
            backoff_floor: Duration::from_secs(300),
            backoff_ceiling: Duration::from_secs(6 * 3600),
            attempts_before_deadline: 3,
            verify_timeout: Duration::from_secs(60),
            verify_interval: Duration::from_secs(5),
        }
    }

    #[test]
    fn doubles_from_five_minutes_to_six_hours_far_from_the_deadline() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let far = now + chrono::Duration::days(30);
        let minutes: Vec<u64> = (1..=8)
            .map(|n| backoff_delay(n, now, far, &settings()).as_secs() / 60)
            .collect();
        assert_eq!(minutes, [5, 10, 20, 40, 80, 160, 320, 360]);
    }

    #[test]
    fn shrinks_so_that_three_attempts_still_fit_before_the_deadline() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let soon = now + chrono::Duration::hours(3);
        assert_eq!(
            backoff_delay(8, now, soon, &settings()),
            Duration::from_secs(3600)
        );
        let very_soon = now + chrono::Duration::minutes(2);
        assert_eq!(
            backoff_delay(8, now, very_soon, &settings()),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn the_deadline_is_the_expiry_then_the_release() {
        let expiry = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(10);
        let release = Duration::from_secs(15 * 86_400);
        assert_eq!(
            deadline_of(expiry, release, expiry - chrono::Duration::days(1)),
            expiry
        );
        assert_eq!(
            deadline_of(expiry, release, expiry),
            expiry + chrono::Duration::days(15)
        );
    }
}
