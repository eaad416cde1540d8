//! When the provider tries to charge an `AutoRenewal` instance (docs/v3-and-bss.md §3.1). Two
//! schedules are documented and which applies to an account is UNCERTAIN, so it is a setting
//! whose default follows the account's site: the ECS API reference's (first attempt 08:00 UTC+8
//! nine days before expiry, then daily until nine days after) and the international user
//! guide's (T−3, T−1, T, T+6, T+14; the guide gives no hour, 08:00 UTC+8 is assumed like the
//! other). The fallback point, the funds forecast and the "too late" check all read it.

use chrono::{DateTime, Duration, Utc};

use crate::closed_enum;
use crate::cloud::periods::Site;
use crate::cloud::time::start_of_day_utc8;

closed_enum! {
    /// A provider auto-renew deduction schedule.
    pub enum DeductionSchedule {
        /// T−9 days at 08:00 UTC+8, then daily at 08:00 until T+9 (the ECS API reference).
        NineDaysDaily => "t9-daily",
        /// T−3, T−1, T, T+6 and T+14 at 08:00 UTC+8 (the international ECS user guide).
        FiveAttempts => "t3-five-attempts",
    }
}

/// The days (relative to the expiry's UTC+8 day) of the five-attempt schedule.
const FIVE_ATTEMPT_DAYS: [i64; 5] = [-3, -1, 0, 6, 14];

impl DeductionSchedule {
    /// The documented schedule of a site: the API reference's on the China site, the user
    /// guide's on the international site.
    pub fn for_site(site: Site) -> DeductionSchedule {
        match site {
            Site::China => DeductionSchedule::NineDaysDaily,
            Site::International => DeductionSchedule::FiveAttempts,
        }
    }

    /// Every attempt for an instance expiring at `expiry`, in order.
    pub fn attempts(self, expiry: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let at_eight =
            |days: i64| start_of_day_utc8(expiry + Duration::days(days)) + Duration::hours(8);
        match self {
            DeductionSchedule::NineDaysDaily => (-9..=9).map(at_eight).collect(),
            DeductionSchedule::FiveAttempts => {
                FIVE_ATTEMPT_DAYS.iter().map(|d| at_eight(*d)).collect()
            }
        }
    }

    /// The longest time the first attempt can come before an expiry, in whole days: the
    /// attempt is at 08:00 UTC+8 of a day counted from the expiry's UTC+8 day, so it comes up to
    /// 16 hours earlier than the day count alone says.
    pub fn longest_lead(self) -> Duration {
        let first_day = match self {
            DeductionSchedule::NineDaysDaily => -9,
            DeductionSchedule::FiveAttempts => FIVE_ATTEMPT_DAYS[0],
        };
        Duration::days(1 - first_day)
    }

    /// The first attempt.
    pub fn first(self, expiry: DateTime<Utc>) -> DateTime<Utc> {
        self.attempts(expiry)[0]
    }

    /// The next attempt at or after `now` that still comes before the expiry: `None` means the
    /// provider cannot renew the instance before it expires (auto-renew was switched on too
    /// late, or every attempt so far failed).
    pub fn next_before_expiry(
        self,
        expiry: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.attempts(expiry)
            .into_iter()
            .find(|at| *at >= now && *at < expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::time;

    fn t(s: &str) -> DateTime<Utc> {
        time::parse(s).unwrap()
    }

    #[test]
    fn no_first_attempt_comes_earlier_than_the_longest_lead() {
        for &schedule in DeductionSchedule::ALL {
            let lead = schedule.longest_lead();
            let mut latest = Duration::zero();
            // Expiries at every minute of two UTC+8 days.
            for minute in 0..2 * 24 * 60 {
                let expiry = t("2026-03-20T16:00:00Z") + Duration::minutes(minute);
                let before = expiry - schedule.first(expiry);
                assert!(before <= lead, "{schedule}: {expiry} first {before}");
                latest = latest.max(before);
            }
            // Whole days, and no more than the one that holds the latest.
            assert!(
                lead - latest < Duration::days(1),
                "{schedule}: {latest} of {lead}"
            );
        }
    }

    #[test]
    fn the_api_reference_schedule_starts_nine_days_ahead_and_runs_daily() {
        // Expiry 03-21 00:00 UTC+8: T−9 is 03-12, 08:00 UTC+8 = 03-12T00:00Z.
        let attempts = DeductionSchedule::NineDaysDaily.attempts(t("2026-03-20T16:00:00Z"));
        assert_eq!(attempts.len(), 19);
        assert_eq!(attempts[0], t("2026-03-12T00:00:00Z"));
        assert_eq!(attempts[1], t("2026-03-13T00:00:00Z"));
        assert_eq!(*attempts.last().unwrap(), t("2026-03-30T00:00:00Z"));
    }

    #[test]
    fn the_international_schedule_is_t3_t1_t_t6_t14() {
        let attempts = DeductionSchedule::FiveAttempts.attempts(t("2026-03-20T16:00:00Z"));
        let expected = [
            "2026-03-18",
            "2026-03-20",
            "2026-03-21",
            "2026-03-27",
            "2026-04-04",
        ]
        .map(|d| t(&format!("{d}T00:00:00Z")));
        assert_eq!(attempts, expected);
    }

    #[test]
    fn the_site_picks_the_default() {
        assert_eq!(
            DeductionSchedule::for_site(Site::International),
            DeductionSchedule::FiveAttempts
        );
        assert_eq!(
            DeductionSchedule::for_site(Site::China),
            DeductionSchedule::NineDaysDaily
        );
    }

    #[test]
    fn no_attempt_left_before_expiry_once_the_last_morning_has_passed() {
        // Expiry 03-21 00:00 UTC+8; the last attempt before it is 03-20 08:00 UTC+8.
        let expiry = t("2026-03-20T16:00:00Z");
        let schedule = DeductionSchedule::NineDaysDaily;
        assert_eq!(
            schedule.next_before_expiry(expiry, t("2026-03-19T23:00:00Z")),
            Some(t("2026-03-20T00:00:00Z"))
        );
        assert_eq!(
            schedule.next_before_expiry(expiry, t("2026-03-20T03:00:00Z")),
            None
        );
        // Under the five-attempt schedule the T attempt (03-21 08:00 UTC+8) is after expiry.
        assert_eq!(
            DeductionSchedule::FiveAttempts.next_before_expiry(expiry, t("2026-03-19T03:00:00Z")),
            Some(t("2026-03-20T00:00:00Z"))
        );
    }
}
