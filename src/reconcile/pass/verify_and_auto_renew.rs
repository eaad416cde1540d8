//! Phase 5, verify and auto-renew: new orders are polled until their new expiry shows, open
//! intents out of the window get one look by id, and the auto-renew attributes are set
//! meanwhile (verification only reads, and every renewal has been sent by now).

use std::collections::HashMap;
use std::time::Duration;

use super::act::Acted;
use super::status_updates::move_state;
use super::summary::PassSummary;
use crate::ledger::{Histories, LedgerError, Settlement, StatusUpdate};
use crate::policy::{InstanceState, NextAction};
use crate::reconcile::assess::AutoRenewChange;
use crate::reconcile::auto_renew;
use crate::reconcile::context::PassContext;
use crate::reconcile::verify::{Verified, VerifyTarget, verify, warn_if_outcome_unrecorded};

/// Runs the phase; verified renewals' status lines become `ok` with the new expiry.
pub async fn verify_and_auto_renew(
    ctx: &PassContext<'_>,
    histories: &Histories,
    out_of_window: Vec<VerifyTarget>,
    changes: Vec<AutoRenewChange>,
    acted: &mut Acted,
    summary: &mut PassSummary,
) -> Result<(), LedgerError> {
    let verify_targets = std::mem::take(&mut acted.verify_targets);
    let (verified, auto_renew_report) = tokio::join!(
        verification(ctx, out_of_window, verify_targets),
        auto_renew_changes(ctx, changes)
    );
    let verified = verified?;
    if let Some(report) = auto_renew_report? {
        summary.auto_renew_changed = report.changed;
        summary.dry_run_auto_renew_changes = report.dry_run;
        summary.auto_renew_failed = report.failed;
    }
    for v in verified
        .iter()
        .filter(|v| v.settled != Settlement::Verified)
    {
        if let Some(open) = histories.open.iter().find(|o| o.id == v.target.intent_id) {
            warn_if_outcome_unrecorded(open, v.new_expiry);
        }
    }
    apply_verified(verified, acted, summary);
    Ok(())
}

/// Out-of-window intents get one round; new orders are polled up to `verify_timeout`.
async fn verification(
    ctx: &PassContext<'_>,
    out_of_window: Vec<VerifyTarget>,
    new_orders: Vec<VerifyTarget>,
) -> Result<Vec<Verified>, LedgerError> {
    let mut verified = Vec::new();
    if ctx.cancel.is_cancelled() {
        return Ok(verified);
    }
    let retry = &ctx.config.retry;
    for (targets, timeout) in [
        (out_of_window, Duration::ZERO),
        (new_orders, retry.verify_timeout),
    ] {
        if !targets.is_empty() {
            verified.extend(verify(ctx, targets, (timeout, retry.verify_interval)).await?);
        }
    }
    Ok(verified)
}

/// Sets the wanted auto-renew attributes; `None` once shutdown has begun.
async fn auto_renew_changes(
    ctx: &PassContext<'_>,
    changes: Vec<AutoRenewChange>,
) -> Result<Option<auto_renew::ChangeReport>, LedgerError> {
    if ctx.cancel.is_cancelled() {
        return Ok(None);
    }
    auto_renew::apply(ctx, changes).await.map(Some)
}

/// Verified renewals: their status lines become `ok` with the new expiry.
fn apply_verified(verified: Vec<Verified>, acted: &mut Acted, summary: &mut PassSummary) {
    let update_index: HashMap<String, usize> = acted
        .updates
        .iter()
        .enumerate()
        .map(|(index, u)| (u.instance_id.clone(), index))
        .collect();
    for v in verified {
        summary.verified += usize::from(v.settled == Settlement::Verified);
        let reason = if v.settled == Settlement::Verified {
            format!(
                "renewed and verified: expires {}",
                crate::cloud::time::format_minutes(v.new_expiry)
            )
        } else {
            format!(
                "expiry moved to {} without a recorded order",
                crate::cloud::time::format_minutes(v.new_expiry)
            )
        };
        match update_index.get(&v.target.instance_id).copied() {
            Some(index) => {
                let update = &mut acted.updates[index];
                move_state(
                    &mut acted.by_state,
                    InstanceState::PendingVerification,
                    InstanceState::Ok,
                );
                update.state = InstanceState::Ok;
                update.decision = NextAction::Nothing;
                update.reason = reason;
                update.due_at = None;
                update.expires_at = Some(v.new_expiry);
            }
            None => acted.updates.push(StatusUpdate {
                account: v.target.account.to_string(),
                instance_id: v.target.instance_id.clone(),
                state: InstanceState::Ok,
                decision: NextAction::Nothing,
                reason,
                due_at: None,
                failed_attempts: 0,
                next_retry_at: None,
                expires_at: Some(v.new_expiry),
            }),
        }
    }
}
