//! Phase 2, settle: intents whose instance's expiry moved since they were sent are settled
//! (verified, or superseded by another charge), and auto-renew changes sent earlier are checked
//! against the attributes this pass read.

use std::sync::Arc;

use super::observe::Observed;
use super::summary::PassSummary;
use crate::ledger::{ChangeCheck, LedgerError, Settle, Settlement};
use crate::reconcile::context::PassContext;
use crate::reconcile::verify::{VerifyTarget, warn_if_outcome_unrecorded};

/// What the settle phase leaves for verification.
pub struct Settled {
    /// Open intents whose instance was not in the window (a renewal whose answer was never
    /// recorded can carry it past the horizon): each gets one look by id in the verify phase,
    /// whatever its status, so none stays open for ever.
    pub out_of_window: Vec<VerifyTarget>,
}

/// Runs the phase; one ledger transaction for all settlements and one for all checks.
pub fn settle(
    ctx: &PassContext<'_>,
    observed: &Observed,
    summary: &mut PassSummary,
) -> Result<Settled, LedgerError> {
    let out_of_window = settle_moved(ctx, observed, summary)?;
    check_auto_renew_changes(ctx, observed)?;
    Ok(Settled { out_of_window })
}

/// Settles intents whose instance's expiry moved; returns the open intents whose instance
/// was not seen.
fn settle_moved(
    ctx: &PassContext<'_>,
    observed: &Observed,
    summary: &mut PassSummary,
) -> Result<Vec<VerifyTarget>, LedgerError> {
    let mut out_of_window = Vec::new();
    let mut moved = Vec::new();
    for open in &observed.histories.open {
        let seen = observed.watched.get(&open.instance_id);
        if open.maybe_charged && seen.is_none_or(|s| s.expiry > open.old_expiry) {
            // A charge no answer reported is settled now (or looked up by id): the balance
            // remembered may have been read before it landed.
            ctx.funds.forget_balance(&open.account);
        }
        match seen {
            Some(seen) if seen.expiry > open.old_expiry => moved.push((open, seen.expiry)),
            Some(_) => {}
            None => out_of_window.push(VerifyTarget {
                intent_id: open.id,
                account: Arc::from(open.account.as_str()),
                region: open.region.clone(),
                instance_id: open.instance_id.clone(),
                old_expiry: open.old_expiry,
            }),
        }
    }
    let settled = ctx.ledger.settle_all(
        &moved
            .iter()
            .map(|(open, expiry)| Settle {
                intent_id: open.id,
                new_expiry: *expiry,
            })
            .collect::<Vec<_>>(),
        &ctx.day,
        ctx.clock.now(),
    )?;
    for ((open, expiry), settled) in moved.iter().zip(&settled) {
        warn_if_outcome_unrecorded(open, *expiry);
        summary.verified += usize::from(*settled == Settlement::Verified);
    }
    Ok(out_of_window)
}

/// Checks earlier auto-renew changes against the attributes this pass read.
fn check_auto_renew_changes(ctx: &PassContext<'_>, observed: &Observed) -> Result<(), LedgerError> {
    let mut checks = Vec::new();
    for change in &observed.unchecked {
        let seen = observed
            .watched
            .get(&change.instance_id)
            .and_then(|w| w.auto_renew.as_ref());
        if let Some(attrs) = seen {
            let target = &change.target;
            let took = attrs.renewal_status == target.status
                && (target.status != crate::cloud::types::RenewalStatus::AutoRenewal
                    || attrs.duration == target.duration);
            checks.push(ChangeCheck {
                id: change.id,
                took_effect: took,
            });
            if !took {
                tracing::warn!(account = %change.account, instance = %change.instance_id, "an auto-renew change did not take effect");
            }
        }
    }
    ctx.ledger.check_auto_renew_changes(&checks)
}
