//! Phase 3, price and belts: quote the renewals where a limit needs the price (and today's
//! unpriced charges when a spend limit is set), then apply the safety belts to the whole
//! batch — renewals and switching auto-renew on — before anything is sent.

use std::collections::HashSet;

use super::status_updates::update_for;
use super::summary::PassSummary;
use crate::ledger::{LedgerError, StatusUpdate};
use crate::policy::{
    InstanceState, LimitKind, NextAction, Trip, apply_belts, auto_renew_enables_belt,
};
use crate::reconcile::assess::{Assessment, AutoRenewChange, RenewCandidate};
use crate::reconcile::belts::belt_inputs;
use crate::reconcile::context::{Mode, PassContext};
use crate::reconcile::price::{price_candidates, price_charges};

/// What the belts let through.
pub struct Cleared {
    /// The renewals allowed, to be acted on.
    pub to_renew: Vec<RenewCandidate>,
    /// The status lines of the renewals held.
    pub held: Vec<StatusUpdate>,
    /// The held renewals' rows (indexes into the assessment's rows, when rows are kept) and
    /// the limit that holds each.
    pub holds: Vec<(usize, LimitKind)>,
}

/// Runs the phase. Auto-renew changes held by their belt are removed from `assessment`.
pub async fn price_and_belts(
    ctx: &PassContext<'_>,
    assessment: &mut Assessment,
    summary: &mut PassSummary,
) -> Result<Cleared, LedgerError> {
    let config = ctx.config;
    // `plan` shows every renewal's price; a pass asks only where a limit needs it.
    let needs_price = |c: &RenewCandidate| {
        ctx.mode == Mode::Plan || c.plan.max_price.is_some() || config.limits.has_spend_limits()
    };
    price_candidates(
        ctx.accounts,
        &mut assessment.renewals,
        config.scan.concurrency,
        needs_price,
    )
    .await;
    // The forecast later in the pass prices the same renewals: it reuses these quotes.
    for c in assessment.renewals.iter() {
        if let Some(quote) = &c.price {
            let (id, plan) = (&c.instance.id, &c.plan);
            ctx.funds
                .remember_price(id, plan.period, plan.unit, &quote.trade_price, ctx.started);
        }
    }
    let mut today = ctx.ledger.day_totals(&ctx.day)?;
    if config.limits.has_spend_limits() && today.unpriced > 0 {
        // A spend limit switched on later in the day: the day's earlier charges were made
        // unpriced. Their price now is what they cost (same instance, same period).
        let unpriced = ctx.ledger.unpriced_charges(&ctx.day)?;
        for (intent_id, price) in price_charges(ctx.accounts, &unpriced).await {
            ctx.ledger.price_charge(intent_id, &price)?;
        }
        today = ctx.ledger.day_totals(&ctx.day)?;
    }
    let (candidates, input) =
        belt_inputs(config, &assessment.renewals, &today, assessment.instances);
    let belts = apply_belts(&candidates, &input);
    let mut trips = belts.trips.clone();
    if let Some(trip) = hold_auto_renew_enables(ctx, assessment) {
        trips.push(trip);
    }
    publish_trips(ctx, &trips, summary);
    let mut held = Vec::new();
    let mut holds = Vec::new();
    for (key, limit) in &belts.held {
        let c = &assessment.renewals[*key];
        holds.push((c.row, *limit));
        summary.held += 1;
        summary.refused.extend(c.refused.clone());
        held.push(update_for(
            c,
            InstanceState::Due,
            NextAction::Hold,
            format!("{} — held: the {limit} limit tripped", c.reason),
            None,
            c.failed_attempts,
        ));
    }
    let allowed: HashSet<usize> = belts.allowed.iter().copied().collect();
    let to_renew = assessment
        .renewals
        .iter()
        .enumerate()
        .filter(|(key, _)| allowed.contains(key))
        .map(|(_, c)| c.clone())
        .collect();
    Ok(Cleared {
        to_renew,
        held,
        holds,
    })
}

/// Each belt that tripped: counted once per pass, logged, and listed in the summary.
fn publish_trips(ctx: &PassContext<'_>, trips: &[Trip], summary: &mut PassSummary) {
    let mut tripped = HashSet::new();
    for trip in trips {
        if tripped.insert(trip.limit) {
            ctx.metrics
                .limit_trips_total
                .with_label_values(&[trip.limit.as_str()])
                .inc();
        }
        tracing::error!(limit = trip.limit.as_str(), detail = %trip.detail, "safety belt tripped: what it covers is not done");
        summary.trips.push(trip.clone());
    }
}

/// Switching auto-renew on commits the provider to charge at every deduction day: a batch
/// larger than `max_auto_renew_enables_per_run` is held whole (switching it off never is).
fn hold_auto_renew_enables(ctx: &PassContext<'_>, assessment: &mut Assessment) -> Option<Trip> {
    let enabling =
        |c: &AutoRenewChange| c.target.status == crate::cloud::types::RenewalStatus::AutoRenewal;
    let enables = assessment.changes.iter().filter(|c| enabling(c)).count();
    let trip = auto_renew_enables_belt(enables, ctx.config.limits.max_auto_renew_enables_per_run)?;
    assessment.changes.retain(|c| !enabling(c));
    Some(trip)
}
