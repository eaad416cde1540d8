//! What a renewal's outcome means for its instance: the state it moves to, the next action and
//! the reason its status line shows, and when it is tried again. Pure (no ledger, no clock), so
//! every outcome's mapping is a unit test; the pass applies it (as kube-rs/controller-rs keeps
//! `error_policy` apart from `reconcile`).

use chrono::{DateTime, Utc};

use super::renew::RenewOutcome;
use crate::cloud::time::format_minutes;
use crate::policy::{InstanceState, NextAction};

/// An instance's status after its renewal outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateAfter {
    /// The state the instance moves to (from `Due`).
    pub state: InstanceState,
    /// The next action its status line shows: verify, backoff, failed or renew.
    pub next_action: NextAction,
    /// Why, in words, for the status line.
    pub reason: String,
    /// When the renewal is tried again (`None`: at the next pass as usual, or never needed).
    pub retry_at: Option<DateTime<Utc>>,
    /// Failed attempts counted for the instance's current expiry after this outcome.
    pub failed_attempts: u32,
}

/// The status that `outcome` gives an instance that was due for `reason` with
/// `failed_attempts` failed attempts before.
pub fn state_after(outcome: &RenewOutcome, reason: &str, failed_attempts: u32) -> StateAfter {
    let stays_due = |reason: String| StateAfter {
        state: InstanceState::Due,
        next_action: NextAction::Renew,
        reason,
        retry_at: None,
        failed_attempts,
    };
    match outcome {
        RenewOutcome::Ordered { order_id, .. } => StateAfter {
            state: InstanceState::PendingVerification,
            next_action: NextAction::Verify,
            reason: format!("renewed: order {order_id}; waiting for the new expiry to show"),
            retry_at: None,
            failed_attempts,
        },
        RenewOutcome::Failed {
            class,
            code,
            retry_at,
        } => {
            // A class that retrying can fix waits in backoff; the others (permission, clock,
            // invalid, not applicable) are failed until a person or the service changes.
            let (state, next_action) = if class.retry_later() {
                (InstanceState::Backoff, NextAction::Backoff)
            } else {
                (InstanceState::Failed, NextAction::Failed)
            };
            StateAfter {
                state,
                next_action,
                reason: format!(
                    "renewal failed: {code} ({class}); next attempt at {}",
                    format_minutes(*retry_at)
                ),
                retry_at: Some(*retry_at),
                failed_attempts: failed_attempts + 1,
            }
        }
        // Maybe charged: never "failed", always resent with the same token.
        RenewOutcome::Unknown { retry_at } => StateAfter {
            state: InstanceState::Backoff,
            next_action: NextAction::Backoff,
            reason: format!(
                "renewal outcome unknown; resent with the same ClientToken at {}",
                format_minutes(*retry_at)
            ),
            retry_at: Some(*retry_at),
            failed_attempts: failed_attempts + 1,
        },
        RenewOutcome::Skipped(why) => stays_due(why.clone()),
        RenewOutcome::DryRun { token } => {
            stays_due(format!("{reason} (dry run: not sent; ClientToken {token})"))
        }
        RenewOutcome::NotSent => stays_due(format!("{reason} (not sent: shutting down)")),
        // The request may have left and charged: shown as waiting, never as merely due. The
        // next pass settles it or resends it with its token.
        RenewOutcome::Unrecorded => StateAfter {
            state: InstanceState::Backoff,
            next_action: NextAction::Backoff,
            reason: format!(
                "{reason} (the ledger could not record this renewal and the pass stopped; it may \
                 have been charged: the next pass settles it or resends it with its ClientToken)"
            ),
            retry_at: None,
            failed_attempts,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::ErrorClass;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn an_order_waits_for_verification_and_counts_no_failure() {
        let after = state_after(
            &RenewOutcome::Ordered {
                intent_id: 7,
                order_id: "O-1".into(),
            },
            "due in 3 days",
            2,
        );
        assert_eq!(after.state, InstanceState::PendingVerification);
        assert_eq!(after.next_action, NextAction::Verify);
        assert_eq!(
            after.reason,
            "renewed: order O-1; waiting for the new expiry to show"
        );
        assert_eq!((after.retry_at, after.failed_attempts), (None, 2));
    }

    #[test]
    fn every_failure_class_maps_to_backoff_or_failed_with_its_retry_time() {
        let retry_at = at("2026-03-10T05:00:00Z");
        for class in ErrorClass::ALL {
            let after = state_after(
                &RenewOutcome::Failed {
                    class: *class,
                    code: "SomeCode".into(),
                    retry_at,
                },
                "due",
                1,
            );
            let expected = if class.retry_later() {
                (InstanceState::Backoff, NextAction::Backoff)
            } else {
                (InstanceState::Failed, NextAction::Failed)
            };
            assert_eq!((after.state, after.next_action), expected, "{class}");
            assert_eq!(after.retry_at, Some(retry_at), "{class}");
            assert_eq!(after.failed_attempts, 2, "{class}");
            assert_eq!(
                after.reason,
                format!("renewal failed: SomeCode ({class}); next attempt at 2026-03-10T05:00Z")
            );
        }
        // Both kinds exist, so the mapping is not constant.
        assert!(ErrorClass::ALL.iter().any(|c| c.retry_later()));
        assert!(ErrorClass::ALL.iter().any(|c| !c.retry_later()));
    }

    #[test]
    fn an_unrecorded_renewal_may_have_charged_so_it_is_never_shown_as_merely_due() {
        let after = state_after(&RenewOutcome::Unrecorded, "due in 3 days", 2);
        assert_eq!(
            (after.state, after.next_action),
            (InstanceState::Backoff, NextAction::Backoff)
        );
        assert_eq!((after.retry_at, after.failed_attempts), (None, 2));
        assert!(
            after.reason.contains("may have been charged"),
            "{}",
            after.reason
        );
    }

    #[test]
    fn an_unknown_outcome_is_backoff_never_failed() {
        let retry_at = at("2026-03-10T05:00:00Z");
        let after = state_after(&RenewOutcome::Unknown { retry_at }, "due", 0);
        assert_eq!(after.state, InstanceState::Backoff);
        assert_eq!(after.next_action, NextAction::Backoff);
        assert_eq!(after.retry_at, Some(retry_at));
        assert_eq!(after.failed_attempts, 1);
        assert!(
            after.reason.contains("same ClientToken"),
            "{}",
            after.reason
        );
    }

    #[test]
    fn skipped_dry_run_and_not_sent_stay_due_and_count_nothing() {
        let cases = [
            (
                RenewOutcome::Skipped("expiry moved".into()),
                "expiry moved".to_owned(),
            ),
            (
                RenewOutcome::DryRun {
                    token: "ern1-x".into(),
                },
                "due in 3 days (dry run: not sent; ClientToken ern1-x)".to_owned(),
            ),
            (
                RenewOutcome::NotSent,
                "due in 3 days (not sent: shutting down)".to_owned(),
            ),
        ];
        for (outcome, reason) in cases {
            let after = state_after(&outcome, "due in 3 days", 3);
            assert_eq!(
                after,
                StateAfter {
                    state: InstanceState::Due,
                    next_action: NextAction::Renew,
                    reason,
                    retry_at: None,
                    failed_attempts: 3,
                },
                "{outcome:?}"
            );
        }
    }
}
