//! Price: quote renewals with DescribeRenewalPrice where a limit needs the price (a policy's
//! `max_price`, any spend limit, or `plan`, which always shows prices). Whole years are quoted
//! in years, since the price API takes at most nine months.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;

use super::assess::RenewCandidate;
use crate::accounts::AccountClient;
use crate::cloud::periods::price_query_for;
use crate::ledger::UnpricedCharge;
use crate::money::Money;

/// Quotes every candidate for which `needed` says so; sources are priced concurrently.
pub async fn price_candidates(
    accounts: &[AccountClient],
    candidates: &mut [RenewCandidate],
    concurrency: usize,
    needed: impl Fn(&RenewCandidate) -> bool,
) {
    let mut groups: BTreeMap<(Arc<str>, String), Vec<&mut RenewCandidate>> = BTreeMap::new();
    for candidate in candidates.iter_mut().filter(|c| needed(c)) {
        groups
            .entry((candidate.account.clone(), candidate.instance.region.clone()))
            .or_default()
            .push(candidate);
    }
    futures_util::stream::iter(groups)
        .for_each_concurrent(
            concurrency.max(1),
            |((account, region), group)| async move {
                let Some(client) = accounts.iter().find(|a| *a.name == *account) else {
                    return;
                };
                for candidate in group {
                    let Some((period, unit)) =
                        price_query_for(candidate.plan.period, candidate.plan.unit)
                    else {
                        candidate.price_error = Some(format!(
                            "DescribeRenewalPrice cannot price {} {}",
                            candidate.plan.period, candidate.plan.unit
                        ));
                        continue;
                    };
                    match client
                        .client
                        .describe_renewal_price(&region, &candidate.instance.id, period, unit)
                        .await
                    {
                        Ok(quote) => candidate.price = Some(quote),
                        Err(error) => candidate.price_error = Some(error.to_string()),
                    }
                }
            },
        )
        .await;
}

/// Prices charges made earlier without a quote (a spend limit switched on later in the day
/// needs them): the instance's price for the same period now. A charge that cannot be priced
/// is left out and logged; its day's spend stays unknown and the daily spend limit holds.
pub async fn price_charges(
    accounts: &[AccountClient],
    charges: &[UnpricedCharge],
) -> Vec<(i64, Money)> {
    let mut priced = Vec::new();
    for charge in charges {
        let Some(client) = accounts.iter().find(|a| a.name == charge.account) else {
            tracing::warn!(account = %charge.account, instance = %charge.instance_id, "an earlier charge cannot be priced: its account is no longer configured");
            continue;
        };
        let Some((period, unit)) = price_query_for(charge.period, charge.unit) else {
            continue;
        };
        match client
            .client
            .describe_renewal_price(&charge.region, &charge.instance_id, period, unit)
            .await
        {
            Ok(quote) => priced.push((charge.intent_id, quote.trade_price)),
            Err(error) => {
                tracing::warn!(instance = %charge.instance_id, error = %error, "an earlier charge could not be priced; today's spend stays unknown")
            }
        }
    }
    priced
}
