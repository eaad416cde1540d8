//! The status lines a pass writes for the instances it acted on, and the counts per state they
//! move: shared by the phases that act, hold and verify, so none of them reaches into another.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::ledger::StatusUpdate;
use crate::policy::{InstanceState, NextAction};
use crate::reconcile::assess::RenewCandidate;

/// Moves one instance between state counts.
pub fn move_state(
    by_state: &mut BTreeMap<InstanceState, usize>,
    from: InstanceState,
    to: InstanceState,
) {
    if let Some(n) = by_state.get_mut(&from) {
        *n = n.saturating_sub(1);
    }
    *by_state.entry(to).or_default() += 1;
}

/// The earlier of two optional times.
pub fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The status change of one renewal candidate.
pub fn update_for(
    c: &RenewCandidate,
    state: InstanceState,
    decision: NextAction,
    reason: String,
    retry_at: Option<DateTime<Utc>>,
    failed_attempts: u32,
) -> StatusUpdate {
    StatusUpdate {
        account: c.account.to_string(),
        instance_id: c.instance.id.clone(),
        state,
        decision,
        reason,
        due_at: retry_at,
        failed_attempts,
        next_retry_at: retry_at,
        expires_at: None,
    }
}
