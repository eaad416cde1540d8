//! In-run retries of one call: which failures may be repeated (by class and by the action's
//! safety) and how long to wait (exponential backoff with jitter, or the service's advice).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::action::{Action, RetrySafety};
use super::error::CloudError;

/// How a call is retried within a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The first backoff.
    #[serde(default = "default_base", with = "crate::duration::serde_humantime")]
    pub base_delay: Duration,
    /// The longest backoff.
    #[serde(default = "default_max", with = "crate::duration::serde_humantime")]
    pub max_delay: Duration,
    /// The longest advised delay (`x-acs-retry-after`) honoured within a pass; a longer advice
    /// ends the call's retries and the next pass tries again.
    #[serde(
        default = "default_max_advice",
        with = "crate::duration::serde_humantime"
    )]
    pub max_retry_after: Duration,
}

fn default_attempts() -> u32 {
    4
}
fn default_base() -> Duration {
    Duration::from_millis(200)
}
fn default_max() -> Duration {
    Duration::from_secs(20)
}
fn default_max_advice() -> Duration {
    Duration::from_secs(60)
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_attempts(),
            base_delay: default_base(),
            max_delay: default_max(),
            max_retry_after: default_max_advice(),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Wait this long, then send again (new nonce and timestamp, same parameters).
    RetryAfter(Duration),
    /// Give up and return the error.
    GiveUp,
}

impl RetryPolicy {
    /// Decides whether attempt number `attempt` (1-based) that failed with `error` is retried.
    /// `has_client_token` tells whether a charging call carries its idempotency token.
    pub fn next_step(
        &self,
        action: Action,
        has_client_token: bool,
        attempt: u32,
        error: &CloudError,
        jitter: f64,
    ) -> NextStep {
        if attempt >= self.max_attempts || !may_repeat(action, has_client_token, error) {
            return NextStep::GiveUp;
        }
        match error.retry_after() {
            Some(advice) if advice > self.max_retry_after => NextStep::GiveUp,
            Some(advice) => NextStep::RetryAfter(advice),
            None => NextStep::RetryAfter(self.backoff(attempt, jitter)),
        }
    }

    /// The wait after attempt `attempt` (1-based): `base × 2^(attempt-1)`, capped, scaled by a
    /// jitter factor in [0.5, 1] so that many clients do not retry in step.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let raw = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        raw.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// Whether a failed call may be sent again at all: only for throttling and transient failures,
/// and for a charging call only with its ClientToken.
pub fn may_repeat(action: Action, has_client_token: bool, error: &CloudError) -> bool {
    if matches!(
        error,
        CloudError::Credentials { .. }
            | CloudError::Refused { .. }
            | CloudError::ShuttingDown { .. }
    ) {
        return false;
    }
    if !error.class().retry_in_run() {
        return false;
    }
    match action.retry_safety() {
        RetrySafety::Read | RetrySafety::SetToValue => true,
        RetrySafety::NeedsClientToken => has_client_token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::error::{ApiError, ErrorClass};

    fn api(
        code: &str,
        status: u16,
        class: ErrorClass,
        retry_after: Option<Duration>,
    ) -> CloudError {
        CloudError::Api(Box::new(ApiError {
            action: Action::RenewInstance,
            region: "r".into(),
            http_status: status,
            code: code.into(),
            message: String::new(),
            request_id: String::new(),
            class,
            retry_after,
            hint: String::new(),
        }))
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_range() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1, 1.0), Duration::from_millis(200));
        assert_eq!(policy.backoff(2, 1.0), Duration::from_millis(400));
        assert_eq!(policy.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(policy.backoff(30, 1.0), Duration::from_secs(20));
    }

    #[test]
    fn renewals_repeat_only_with_their_client_token() {
        let policy = RetryPolicy::default();
        let unavailable = api("ServiceUnavailable", 503, ErrorClass::Transient, None);
        assert!(matches!(
            policy.next_step(Action::RenewInstance, true, 1, &unavailable, 1.0),
            NextStep::RetryAfter(_)
        ));
        assert_eq!(
            policy.next_step(Action::RenewInstance, false, 1, &unavailable, 1.0),
            NextStep::GiveUp
        );
    }

    #[test]
    fn only_throttled_and_transient_failures_repeat_within_a_pass() {
        let policy = RetryPolicy::default();
        for (code, status, class) in [
            ("ChargeTypeViolation", 403, ErrorClass::NotApplicable),
            (
                "InvalidAccountStatus.NotEnoughBalance",
                403,
                ErrorClass::Funds,
            ),
            ("LastOrderProcessing", 400, ErrorClass::Busy),
            ("Forbidden.RAM", 403, ErrorClass::Permission),
            ("InvalidTimeStamp.Expired", 400, ErrorClass::Clock),
            ("InvalidPeriod", 400, ErrorClass::Invalid),
        ] {
            let error = api(code, status, class, None);
            assert_eq!(
                policy.next_step(Action::DescribeInstances, true, 1, &error, 1.0),
                NextStep::GiveUp,
                "{code}"
            );
        }
    }

    #[test]
    fn advice_is_honoured_up_to_a_ceiling_and_attempts_are_bounded() {
        let policy = RetryPolicy::default();
        let advised = api(
            "Throttling",
            400,
            ErrorClass::Throttled,
            Some(Duration::from_secs(3)),
        );
        assert_eq!(
            policy.next_step(Action::DescribeInstances, false, 1, &advised, 0.3),
            NextStep::RetryAfter(Duration::from_secs(3))
        );
        let too_long = api(
            "Throttling",
            400,
            ErrorClass::Throttled,
            Some(Duration::from_secs(300)),
        );
        assert_eq!(
            policy.next_step(Action::DescribeInstances, false, 1, &too_long, 0.3),
            NextStep::GiveUp
        );
        assert_eq!(
            policy.next_step(Action::DescribeInstances, false, 4, &advised, 0.3),
            NextStep::GiveUp
        );
    }
}
