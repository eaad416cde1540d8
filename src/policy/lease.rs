//! The lease's timings (`[ha]`, docs/architecture.md "Two replicas") and the rules over them,
//! as pure functions of the instants passed in: which combinations are refused, whether a
//! RenewInstance may still be sent, and how long a standby waits between tries.
//!
//! The rules are client-go's (`NewLeaderElector` rejects `LeaseDuration <= RenewDeadline` and
//! `RenewDeadline <= JitterFactor × RetryPeriod`, JitterFactor 1.2), plus one of our own: a
//! charge must be able to finish before the deadline, so the deadline exceeds the request's
//! timeout.

use std::time::Duration;

use tokio::time::Instant;

/// How long a lease lasts, how long the leader keeps trying to renew it, how often it renews
/// (and a standby tries to take it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaTimings {
    /// A take or renewal keeps the lease this long (on the database server's clock).
    pub lease_duration: Duration,
    /// The leader gives up (and exits) when no renewal succeeded for this long.
    pub renew_deadline: Duration,
    /// Between renewals, and between a standby's tries.
    pub retry_period: Duration,
}

impl Default for HaTimings {
    /// cert-manager's: 60 s, 40 s, 10 s (issue 24; its defaults file cited in
    /// docs/architecture.md).
    fn default() -> Self {
        HaTimings {
            lease_duration: Duration::from_secs(60),
            renew_deadline: Duration::from_secs(40),
            retry_period: Duration::from_secs(10),
        }
    }
}

/// A combination of timings that cannot keep one leader safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// The lease would run out while the leader still believes it holds it.
    #[error(
        "[ha] lease_duration ({lease:?}) must be longer than renew_deadline ({deadline:?}): otherwise the lease runs out while the leader still acts — lengthen lease_duration or shorten renew_deadline"
    )]
    LeaseNotLongerThanDeadline {
        /// `lease_duration`.
        lease: Duration,
        /// `renew_deadline`.
        deadline: Duration,
    },
    /// Too few renewal tries fit in the deadline.
    #[error(
        "[ha] renew_deadline ({deadline:?}) must be longer than 1.2 × retry_period ({retry:?}): at least one retry must fit before the leader gives up — shorten retry_period"
    )]
    DeadlineTooShortForRetries {
        /// `renew_deadline`.
        deadline: Duration,
        /// `retry_period`.
        retry: Duration,
    },
    /// A renewal request could not finish before the deadline.
    #[error(
        "[ha] renew_deadline ({deadline:?}) must be longer than the RenewInstance read timeout ({timeout:?}): a charge sent just before the check must be answered before the lease may be lost — lengthen renew_deadline"
    )]
    DeadlineNotLongerThanRequest {
        /// `renew_deadline`.
        deadline: Duration,
        /// The RenewInstance read timeout.
        timeout: Duration,
    },
}

impl HaTimings {
    /// Checks the rules against the RenewInstance read timeout `request_timeout`.
    pub fn check(&self, request_timeout: Duration) -> Result<(), TimingError> {
        let (lease, deadline, retry) =
            (self.lease_duration, self.renew_deadline, self.retry_period);
        if lease <= deadline {
            return Err(TimingError::LeaseNotLongerThanDeadline { lease, deadline });
        }
        if deadline.as_secs_f64() <= 1.2 * retry.as_secs_f64() {
            return Err(TimingError::DeadlineTooShortForRetries { deadline, retry });
        }
        if deadline <= request_timeout {
            return Err(TimingError::DeadlineNotLongerThanRequest {
                deadline,
                timeout: request_timeout,
            });
        }
        Ok(())
    }

    /// Whether a RenewInstance may be sent at `now` by a leader whose last successful lease
    /// renewal began at `renewed`: only if the request, given its whole `request_timeout`,
    /// ends before the renew deadline — by then this leader has either renewed again or
    /// stopped, so no other leader can act while the request is out. (What remains: a pause
    /// of this process between this check and the send; docs/architecture.md.)
    pub fn may_send(&self, renewed: Instant, now: Instant, request_timeout: Duration) -> bool {
        now.saturating_duration_since(renewed) + request_timeout < self.renew_deadline
    }

    /// How long a standby waits before its next try: `retry_period` ± 20 %, by `jitter` in
    /// [0, 1), so replicas started together do not try in step.
    pub fn campaign_delay(&self, jitter: f64) -> Duration {
        self.retry_period
            .mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn timings(lease: u64, deadline: u64, retry: u64) -> HaTimings {
        HaTimings {
            lease_duration: secs(lease),
            renew_deadline: secs(deadline),
            retry_period: secs(retry),
        }
    }

    #[test]
    fn the_rules_between_the_timings_refuse_what_cannot_keep_one_leader() {
        let read = secs(19);
        let table: [(HaTimings, Option<&str>); 6] = [
            (HaTimings::default(), None),
            (timings(6, 4, 1), Some("read timeout")), // the failover tests' timings need a 1 s read timeout
            (timings(40, 40, 10), Some("lease_duration")),
            (timings(30, 40, 10), Some("lease_duration")),
            (timings(60, 24, 20), Some("1.2 × retry_period")),
            (timings(60, 19, 10), Some("read timeout")),
        ];
        for (t, refused) in table {
            let got = t.check(read).err().map(|e| e.to_string());
            match (refused, &got) {
                (None, None) => {}
                (Some(word), Some(message)) => assert!(message.contains(word), "{t:?}: {message}"),
                _ => panic!("{t:?}: expected {refused:?}, got {got:?}"),
            }
        }
        assert_eq!(timings(6, 4, 1).check(secs(1)), Ok(()));
        // 25 s > 1.2 × 20 s and > 19 s: just allowed.
        assert_eq!(timings(60, 25, 20).check(read), Ok(()));
    }

    #[test]
    fn a_renewal_is_sent_only_if_it_ends_before_the_renew_deadline() {
        let t = HaTimings::default();
        let renewed = Instant::now();
        let read = secs(19);
        assert!(t.may_send(renewed, renewed, read));
        assert!(t.may_send(renewed, renewed + secs(20), read));
        assert!(
            !t.may_send(renewed, renewed + secs(21), read),
            "20 s + 19 s < 40 s, 21 + 19 is not"
        );
        assert!(!t.may_send(renewed, renewed + secs(300), read));
    }

    #[test]
    fn a_standby_waits_the_retry_period_give_or_take_a_fifth() {
        let t = HaTimings::default();
        assert_eq!(t.campaign_delay(0.0), secs(8));
        assert_eq!(t.campaign_delay(0.5), secs(10));
        assert!(t.campaign_delay(0.999) < secs(12));
        assert_eq!(
            t.campaign_delay(7.0),
            secs(12),
            "out-of-range jitter is clamped"
        );
    }
}
