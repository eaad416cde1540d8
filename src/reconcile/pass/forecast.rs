//! Phase 6: the funds forecast. Each account's balance, read after this pass's renewals (so it
//! already shows their charges), against the charges still coming in the window; the gauges
//! and the pass record show it. Never fails the pass: what cannot be known is said so.

use std::collections::HashSet;

use super::PassSummary;
use crate::reconcile::PassContext;
use crate::reconcile::assess::Upcoming;
use crate::reconcile::funds::forecast_accounts;
use crate::reconcile::verify::VerifyTarget;

/// The instances this pass renewed (new orders): their charge is behind them.
fn renewed_in_pass(orders: &[VerifyTarget]) -> HashSet<String> {
    orders.iter().map(|t| t.instance_id.clone()).collect()
}

/// Runs the phase.
pub async fn forecast(
    ctx: &PassContext<'_>,
    upcoming: &[Upcoming],
    orders: &[VerifyTarget],
    summary: &mut PassSummary,
) {
    let renewed = renewed_in_pass(orders);
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
