//! Phase 6: the funds forecast. Each account's balance, read after this pass's renewals (so it
//! already shows their charges), against the charges still coming in the window; the gauges
//! and the pass record show it, with the instances the provider's auto-renew can no longer
//! renew in time. Never fails the pass: what cannot be known is said so.

use std::collections::{BTreeMap, HashSet};

use super::summary::PassSummary;
use crate::reconcile::assess::Upcoming;
use crate::reconcile::context::PassContext;
use crate::reconcile::funds::forecast_accounts;
use crate::reconcile::verify::VerifyTarget;

/// The instances this pass renewed (new orders): their charge is behind them.
fn renewed_in_pass(orders: &[VerifyTarget]) -> HashSet<String> {
    orders.iter().map(|t| t.instance_id.clone()).collect()
}

/// Instances auto-renew cannot renew in time and this pass did not renew: one gauge per
/// account (0 when none), and a warning for each.
fn publish_too_late(
    ctx: &PassContext<'_>,
    too_late: &[(std::sync::Arc<str>, String)],
    renewed: &HashSet<String>,
) {
    ctx.metrics.auto_renew_too_late.reset();
    let mut counts: BTreeMap<&str, i64> = ctx
        .config
        .accounts
        .iter()
        .map(|a| (a.name.as_str(), 0))
        .collect();
    for (account, instance) in too_late.iter().filter(|(_, id)| !renewed.contains(id)) {
        *counts.entry(account).or_default() += 1;
        tracing::warn!(%account, %instance,
            "auto-renew cannot renew it in time: no deduction attempt of the provider is left before its expiry");
    }
    for (account, n) in counts {
        ctx.metrics
            .auto_renew_too_late
            .with_label_values(&[account])
            .set(n);
    }
}

/// Runs the phase.
pub async fn forecast(
    ctx: &PassContext<'_>,
    (upcoming, too_late): (&[Upcoming], &[(std::sync::Arc<str>, String)]),
    orders: &[VerifyTarget],
    summary: &mut PassSummary,
) {
    let renewed = renewed_in_pass(orders);
    publish_too_late(ctx, too_late, &renewed);
    // A balance remembered from before this pass's charges is stale: read it again.
    for target in orders {
        ctx.funds.forget_balance(&target.account);
    }
    let forecasts = forecast_accounts(
        ctx.config,
        ctx.accounts,
        ctx.funds,
        upcoming,
        &renewed,
        ctx.started,
    )
    .await;
    ctx.metrics.funds.publish(&forecasts);
    summary.funds = forecasts;
}
