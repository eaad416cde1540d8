//! Phase 6: the funds forecast. Each account's balance, read after this pass's renewals (so it
//! already shows their charges), against the charges still coming in the window; the gauges
//! and the pass record show it, with the instances the provider's auto-renew can no longer
//! renew in time. Never fails the pass: what cannot be known is said so.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::observe::Observed;
use super::summary::PassSummary;
use crate::reconcile::context::PassContext;
use crate::reconcile::funds::{PassView, forecast_accounts};
use crate::reconcile::scan::SourceKey;
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

/// Pairs of config entries this pass saw list the same instances: they reach one cloud
/// account, whose one balance pays for the charges of both.
fn shared_accounts(observed: &Observed) -> Vec<(String, String)> {
    let account_of: HashMap<String, &str> = observed
        .reports
        .iter()
        .map(|r| (r.key.to_string(), r.key.account.as_str()))
        .collect();
    let mut pairs = BTreeSet::new();
    for d in &observed.assessment.duplicates {
        if let (Some(kept), Some(dropped)) = (account_of.get(&d.kept), account_of.get(&d.dropped))
            && kept != dropped
        {
            pairs.insert((kept.to_string(), dropped.to_string()));
        }
    }
    pairs.into_iter().collect()
}

/// Runs the phase, after this pass's new `orders` and renewals whose answer was lost (the
/// accounts they `maybe_charged`).
pub async fn forecast(
    ctx: &PassContext<'_>,
    observed: &Observed,
    (orders, maybe_charged): (&[VerifyTarget], &[Arc<str>]),
    summary: &mut PassSummary,
) {
    let renewed = renewed_in_pass(orders);
    publish_too_late(ctx, &observed.assessment.too_late, &renewed);
    // A balance remembered from before this pass's charges, known or possible, is stale:
    // read it again.
    for account in orders.iter().map(|t| &t.account).chain(maybe_charged) {
        ctx.funds.forget_balance(account);
    }
    let down: Vec<SourceKey> = observed
        .reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.key.clone())
        .collect();
    let shared = shared_accounts(observed);
    let view = PassView {
        shared: &shared,
        upcoming: &observed.assessment.upcoming,
        renewed: &renewed,
        down: &down,
        auto_renew_unknown: &observed.assessment.auto_renew_unknown,
        watched: &observed.watched,
    };
    let forecasts = forecast_accounts(ctx.config, ctx.accounts, ctx.funds, view, ctx.started).await;
    let forecast_on: Vec<&str> = ctx
        .config
        .accounts
        .iter()
        .filter(|a| ctx.config.funds.enabled && a.funds_enabled)
        .map(|a| a.name.as_str())
        .collect();
    ctx.metrics.funds.publish(&forecasts, &forecast_on);
    summary.funds = forecasts;
}
