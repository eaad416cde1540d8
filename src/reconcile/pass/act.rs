//! Phase 4, act: send the renewals the belts allowed (intent before act, one at a time per
//! source, sources in parallel) and turn each outcome into its instance's status line, the
//! summary's counts, what to verify, the retry to wake for and the refusals that stand.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::price_and_belts::Cleared;
use super::status_updates::{earliest, move_state, update_for};
use super::summary::PassSummary;
use crate::cloud::ErrorClass;
use crate::ledger::{Histories, LedgerError, StatusUpdate};
use crate::money::Money;
use crate::policy::{InstanceState, Refusal};
use crate::reconcile::assess::{Refused, RenewCandidate};
use crate::reconcile::context::PassContext;
use crate::reconcile::outcome::state_after;
use crate::reconcile::renew::{RenewOutcome, RenewalResult, renew_all};
use crate::reconcile::verify::VerifyTarget;

/// What acting leaves for the rest of the pass.
pub struct Acted {
    /// Status lines of the instances acted on (and of those the belts held).
    pub updates: Vec<StatusUpdate>,
    /// New orders whose expiry is to be seen moving.
    pub verify_targets: Vec<VerifyTarget>,
    /// The earliest retry an outcome asked for.
    pub next_retry: Option<DateTime<Utc>>,
    /// Renewals refused for a reason only a person can fix.
    pub refused: Vec<Refused>,
    /// Instances per state, the assessment's counts moved by the outcomes.
    pub by_state: BTreeMap<InstanceState, usize>,
    /// Accounts a renewal of this pass may have charged without an answer saying so (the
    /// outcome is unknown): the balance read before it is stale.
    pub maybe_charged: Vec<Arc<str>>,
}

/// Runs the phase. A ledger failure stops acting: the status lines of what was done are
/// written, and the failure ends the pass.
pub async fn act(
    ctx: &PassContext<'_>,
    histories: &Histories,
    by_state: BTreeMap<InstanceState, usize>,
    cleared: Cleared,
    summary: &mut PassSummary,
) -> Result<Acted, LedgerError> {
    let (results, ledger_error) = renew_all(ctx, histories, cleared.to_renew.clone()).await;
    let mut acted = Acted {
        updates: cleared.held,
        verify_targets: Vec::new(),
        next_retry: None,
        refused: Vec::new(),
        by_state,
        maybe_charged: Vec::new(),
    };
    apply_outcomes(&cleared.to_renew, &results, &mut acted, summary);
    if let Some(error) = ledger_error {
        ctx.ledger.update_status(&acted.updates, ctx.clock.now())?;
        return Err(error);
    }
    Ok(acted)
}

/// What each renewal's outcome means: its status line (`state_after`), the summary's counts,
/// what to verify, the retry to wake for, and standing refusals.
fn apply_outcomes(
    to_renew: &[RenewCandidate],
    results: &[RenewalResult],
    acted: &mut Acted,
    summary: &mut PassSummary,
) {
    let by_id: HashMap<&str, &RenewCandidate> = to_renew
        .iter()
        .map(|c| (c.instance.id.as_str(), c))
        .collect();
    let mut spend: BTreeMap<String, Money> = BTreeMap::new();
    for r in results {
        let Some(c) = by_id.get(r.instance_id.as_str()).copied() else {
            continue;
        };
        count_outcome(c, r, acted, summary, &mut spend);
        let after = state_after(&r.outcome, &c.reason, c.failed_attempts);
        if after.state != InstanceState::Due {
            move_state(&mut acted.by_state, InstanceState::Due, after.state);
        }
        acted.updates.push(update_for(
            c,
            after.state,
            after.next_action,
            after.reason,
            after.retry_at,
            after.failed_attempts,
        ));
    }
    summary.spend = spend;
}

/// One outcome's counts in the summary, and what it leaves to verify, wake for or report.
fn count_outcome(
    c: &RenewCandidate,
    r: &RenewalResult,
    acted: &mut Acted,
    summary: &mut PassSummary,
    spend: &mut BTreeMap<String, Money>,
) {
    match &r.outcome {
        RenewOutcome::Ordered { intent_id, .. } => {
            summary.renewed += 1;
            if let Some(q) = &c.price {
                let price = &q.trade_price;
                spend
                    .entry(price.currency.clone())
                    .or_insert_with(|| Money::zero(&price.currency))
                    .cents += price.cents;
            }
            acted.verify_targets.push(VerifyTarget {
                intent_id: *intent_id,
                account: r.account.clone(),
                region: r.region.clone(),
                instance_id: r.instance_id.clone(),
                old_expiry: r.old_expiry,
            });
        }
        RenewOutcome::Failed {
            class,
            code,
            retry_at,
        } => {
            summary.renew_failed += 1;
            // A not-applicable answer is looked at again at a scheduled pass: no wake-up.
            if *class != ErrorClass::NotApplicable {
                acted.next_retry = earliest(acted.next_retry, Some(*retry_at));
            }
            if let Some(refusal) = Refusal::of(*class, code) {
                acted.refused.push(Refused {
                    account: r.account.to_string(),
                    region: r.region.clone(),
                    instance_id: r.instance_id.clone(),
                    class: refusal.class,
                    code: refusal.code,
                });
            }
        }
        RenewOutcome::Unknown { retry_at } => {
            summary.renew_unknown += 1;
            acted.maybe_charged.push(r.account.clone());
            acted.next_retry = earliest(acted.next_retry, Some(*retry_at));
        }
        RenewOutcome::Skipped(_) | RenewOutcome::NotSent | RenewOutcome::Unrecorded => {
            summary.skipped += 1;
            acted.refused.extend(c.refused.clone());
        }
        RenewOutcome::DryRun { .. } => {
            summary.dry_run_renewals += 1;
            acted.refused.extend(c.refused.clone());
        }
    }
}
