//! What the safety belts see, built one way for `plan` and for the pass: every renewal
//! candidate with its price, its policy's `max_price` and whether it is a resend of a charge
//! already counted, and the limits with what today has counted so far.

use crate::config::Config;
use crate::ledger::DayTotals;
use crate::policy::{BeltInput, Candidate};

use super::assess::RenewCandidate;

/// The belts' view of `renewals` against `today`, for a pass over `fleet_size` instances.
pub fn belt_inputs(
    config: &Config,
    renewals: &[RenewCandidate],
    today: &DayTotals,
    fleet_size: usize,
) -> (Vec<Candidate>, BeltInput) {
    let candidates = renewals
        .iter()
        .enumerate()
        .map(|(key, c)| Candidate {
            key,
            label: c.instance.id.clone(),
            price: c.price.as_ref().map(|q| q.trade_price.clone()),
            max_price: c.plan.max_price.clone(),
            counted: c.counted,
        })
        .collect();
    let input = BeltInput {
        max_per_run: config.limits.max_renewals_per_run,
        max_per_day: config.limits.max_renewals_per_day,
        renewed_today: today.renewals,
        max_spend_per_run: config.limits.max_spend_per_run.clone(),
        max_spend_per_day: config.limits.max_spend_per_day.clone(),
        spent_today: today.spend.clone(),
        unpriced_today: today.unpriced,
        max_fleet_share: config.limits.max_fleet_share_per_run,
        fleet_size,
    };
    (candidates, input)
}
