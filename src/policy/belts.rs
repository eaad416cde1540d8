//! Safety belts: count and spend limits checked for the whole batch of renewals before anything
//! is charged. A tripped belt holds every renewal it covers (a count belt covers the batch, a
//! spend belt the renewals in its currency): a batch far larger than expected is a reason to stop
//! and page someone, not to charge the first N.

use std::collections::BTreeMap;

use crate::closed_enum;
use crate::money::Money;

fn money(cents: i64, currency: &str) -> String {
    Money {
        cents,
        currency: currency.to_owned(),
    }
    .to_string()
}

closed_enum! {
    /// A safety belt (a metric label).
    pub enum LimitKind {
        /// More renewals in one pass than `max_renewals_per_run`; holds the whole batch.
        RenewalsPerRun => "renewals_per_run",
        /// Today's renewals plus the batch over `max_renewals_per_day`; holds the whole batch.
        RenewalsPerDay => "renewals_per_day",
        /// A currency's spend in a pass over `max_spend_per_run`, or spend that cannot be checked.
        SpendPerRun => "spend_per_run",
        /// Today's spend plus the batch's over `max_spend_per_day`, or today's spend unknown.
        SpendPerDay => "spend_per_day",
        /// Renewals in one pass over `max_fleet_share_per_run` of the PrePaid instances seen.
        FleetShare => "fleet_share",
        /// A policy's `max_price`.
        MaxPrice => "max_price",
        /// Auto-renew switch-ons in one pass over `max_auto_renew_enables_per_run`.
        AutoRenewEnablesPerRun => "auto_renew_enables_per_run",
    }
}

/// A renewal in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The caller's key for it.
    pub key: usize,
    /// What to call it in messages (the instance id).
    pub label: String,
    /// Its quoted price, when priced.
    pub price: Option<Money>,
    /// The policy's `max_price`.
    pub max_price: Option<Money>,
    /// Already counted today: a resend of an intent that may have charged (same token, so it
    /// cannot charge again) adds nothing to the batch's count or spend.
    pub counted: bool,
}

/// The limits and what has been counted today.
#[derive(Debug, Clone, Default)]
pub struct BeltInput {
    /// Most renewals per pass.
    pub max_per_run: u32,
    /// Most renewals per day.
    pub max_per_day: u32,
    /// Charges counted today (known or suspected, each intent once).
    pub renewed_today: u32,
    /// Most spend per pass per currency (cents).
    pub max_spend_per_run: BTreeMap<String, i64>,
    /// Most spend per day per currency (cents).
    pub max_spend_per_day: BTreeMap<String, i64>,
    /// Spent today per currency (cents).
    pub spent_today: BTreeMap<String, i64>,
    /// Charges counted today whose price is still unknown (then today's spend is unknown).
    pub unpriced_today: usize,
    /// Most renewals as a share of the fleet (1.0 = off).
    pub max_fleet_share: f64,
    /// PrePaid instances seen in this pass.
    pub fleet_size: usize,
}

/// A tripped belt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    /// The belt that tripped (also the `limit_trips_total` label).
    pub limit: LimitKind,
    /// What it saw, in words.
    pub detail: String,
}

impl std::fmt::Display for Trip {
    /// `limit: detail`, as logs and the pass summary show a trip.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.limit, self.detail)
    }
}

/// The verdict on a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BeltOutcome {
    /// Keys that may be charged.
    pub allowed: Vec<usize>,
    /// Keys held, with the belt that holds them.
    pub held: Vec<(usize, LimitKind)>,
    /// Belts that tripped.
    pub trips: Vec<Trip>,
}

/// Holds `key` for `limit` (the first belt to hold a renewal is the one reported) and says why.
fn hold(
    held: &mut BTreeMap<usize, LimitKind>,
    trips: &mut Vec<Trip>,
    keys: impl IntoIterator<Item = usize>,
    limit: LimitKind,
    detail: String,
) {
    for key in keys {
        held.entry(key).or_insert(limit);
    }
    trips.push(Trip { limit, detail });
}

/// Applies every belt to the batch.
pub fn apply_belts(candidates: &[Candidate], input: &BeltInput) -> BeltOutcome {
    let mut held: BTreeMap<usize, LimitKind> = BTreeMap::new();
    let mut trips = Vec::new();
    max_price_belt(candidates, &mut held, &mut trips);
    let live: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !held.contains_key(&c.key))
        .collect();
    count_belts(&live, input, &mut held, &mut trips);
    spend_belts(&live, input, &mut held, &mut trips);
    let mut outcome = BeltOutcome {
        trips,
        ..BeltOutcome::default()
    };
    for c in candidates {
        match held.get(&c.key) {
            Some(limit) => outcome.held.push((c.key, *limit)),
            None => outcome.allowed.push(c.key),
        }
    }
    outcome
}

/// Per renewal: `max_price`, in its own currency. An unpriced renewal, or one quoted in another
/// currency, cannot be checked and is held.
fn max_price_belt(
    candidates: &[Candidate],
    held: &mut BTreeMap<usize, LimitKind>,
    trips: &mut Vec<Trip>,
) {
    for c in candidates {
        let Some(max) = &c.max_price else { continue };
        let detail = match &c.price {
            Some(price) if price.currency != max.currency => format!(
                "{} is quoted {price}, but max_price is {max}: a price in another currency cannot be checked",
                c.label
            ),
            Some(price) if price.cents > max.cents => {
                format!("{} costs {price}, above max_price {max}", c.label)
            }
            Some(_) => continue,
            None => format!(
                "{} could not be priced, so max_price cannot be checked",
                c.label
            ),
        };
        hold(held, trips, [c.key], LimitKind::MaxPrice, detail);
    }
}

/// The count belts (per pass, per day, share of the fleet): each holds the whole batch. A
/// resend of a charge already counted today adds nothing.
fn count_belts(
    live: &[&Candidate],
    input: &BeltInput,
    held: &mut BTreeMap<usize, LimitKind>,
    trips: &mut Vec<Trip>,
) {
    let keys = || live.iter().map(|c| c.key).collect::<Vec<_>>();
    let n = live.iter().filter(|c| !c.counted).count() as u64;
    if n > u64::from(input.max_per_run) {
        let detail = format!("{n} renewals in one pass, limit {}", input.max_per_run);
        hold(held, trips, keys(), LimitKind::RenewalsPerRun, detail);
    }
    if u64::from(input.renewed_today) + n > u64::from(input.max_per_day) {
        let detail = format!(
            "{} renewed today plus {n} now exceeds the daily limit {}",
            input.renewed_today, input.max_per_day
        );
        hold(held, trips, keys(), LimitKind::RenewalsPerDay, detail);
    }
    if input.max_fleet_share < 1.0 && n as f64 > input.max_fleet_share * input.fleet_size as f64 {
        let detail = format!(
            "{n} renewals out of {} PrePaid instances exceeds the share {}",
            input.fleet_size, input.max_fleet_share
        );
        hold(held, trips, keys(), LimitKind::FleetShare, detail);
    }
}

/// The spend belts, per currency. Under any spend limit a renewal is held when its spend
/// cannot be checked: unpriced, quoted in a currency the limits do not name, or while today's
/// earlier charges include some whose price is unknown.
fn spend_belts(
    live: &[&Candidate],
    input: &BeltInput,
    held: &mut BTreeMap<usize, LimitKind>,
    trips: &mut Vec<Trip>,
) {
    if input.max_spend_per_run.is_empty() && input.max_spend_per_day.is_empty() {
        return;
    }
    let new: Vec<&&Candidate> = live.iter().filter(|c| !c.counted).collect();
    let unpriced: Vec<usize> = new
        .iter()
        .filter(|c| c.price.is_none())
        .map(|c| c.key)
        .collect();
    if !unpriced.is_empty() {
        let detail = format!(
            "{} renewal(s) could not be priced, so spend limits cannot be checked",
            unpriced.len()
        );
        hold(held, trips, unpriced, LimitKind::SpendPerRun, detail);
    }
    if input.unpriced_today > 0 && !input.max_spend_per_day.is_empty() {
        let detail = format!(
            "{} of today's earlier charges could not be priced, so today's spend is unknown and the daily spend limit cannot be checked",
            input.unpriced_today
        );
        hold(
            held,
            trips,
            new.iter().map(|c| c.key),
            LimitKind::SpendPerDay,
            detail,
        );
    }
    let mut by_currency: BTreeMap<&str, (i64, Vec<usize>)> = BTreeMap::new();
    for c in &new {
        if let Some(price) = &c.price {
            let entry = by_currency.entry(&price.currency).or_default();
            // Saturating: prices are bounded when quoted, but a limit must never wrap.
            entry.0 = entry.0.saturating_add(price.cents);
            entry.1.push(c.key);
        }
    }
    for (currency, (total, keys)) in by_currency {
        currency_belts(currency, (total, keys), input, held, trips);
    }
}

/// One currency's spend against the limits: held when a limit is set but not in this
/// currency, or when the pass's or the day's spend would pass it.
fn currency_belts(
    currency: &str,
    (total, keys): (i64, Vec<usize>),
    input: &BeltInput,
    held: &mut BTreeMap<usize, LimitKind>,
    trips: &mut Vec<Trip>,
) {
    for (limits, kind, which) in [
        (&input.max_spend_per_run, LimitKind::SpendPerRun, "per pass"),
        (&input.max_spend_per_day, LimitKind::SpendPerDay, "per day"),
    ] {
        if !limits.is_empty() && !limits.contains_key(currency) {
            let named: Vec<&str> = limits.keys().map(String::as_str).collect();
            let detail = format!(
                "{} renewal(s) quoted in {currency}, but the spend limit {which} is set only in {}: add a {currency} amount to it",
                keys.len(),
                named.join(", ")
            );
            hold(held, trips, keys.clone(), kind, detail);
        }
    }
    if let Some(max) = input.max_spend_per_run.get(currency)
        && total > *max
    {
        let detail = format!(
            "{} in one pass, limit {}",
            money(total, currency),
            money(*max, currency)
        );
        hold(held, trips, keys.clone(), LimitKind::SpendPerRun, detail);
    }
    let today = input.spent_today.get(currency).copied().unwrap_or(0);
    if let Some(max) = input.max_spend_per_day.get(currency)
        && today.saturating_add(total) > *max
    {
        let detail = format!(
            "{} spent today plus {} now exceeds the daily limit {}",
            money(today, currency),
            money(total, currency),
            money(*max, currency)
        );
        hold(held, trips, keys, LimitKind::SpendPerDay, detail);
    }
}

/// The belt on switching auto-renew on: it commits the provider to charge at every deduction
/// day, so a batch larger than expected is held whole, as a renewal batch is.
pub fn auto_renew_enables_belt(enables: usize, max: u32) -> Option<Trip> {
    (enables as u64 > u64::from(max)).then(|| Trip {
        limit: LimitKind::AutoRenewEnablesPerRun,
        detail: format!("auto-renew switched on for {enables} instances in one pass, limit {max}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priced(key: usize, cents: i64) -> Candidate {
        Candidate {
            key,
            label: format!("i-{key}"),
            price: Some(Money {
                cents,
                currency: "CNY".into(),
            }),
            max_price: None,
            counted: false,
        }
    }

    fn cny(cents: i64) -> Money {
        Money {
            cents,
            currency: "CNY".into(),
        }
    }

    fn limits() -> BeltInput {
        BeltInput {
            max_per_run: 10,
            max_per_day: 20,
            max_fleet_share: 1.0,
            fleet_size: 100,
            ..BeltInput::default()
        }
    }

    #[test]
    fn a_batch_within_every_limit_goes_through() {
        let out = apply_belts(&[priced(0, 100), priced(1, 100)], &limits());
        assert_eq!(out.allowed, [0, 1]);
        assert!(out.trips.is_empty());
    }

    #[test]
    fn a_count_belt_holds_the_whole_batch() {
        let batch: Vec<Candidate> = (0..11).map(|k| priced(k, 1)).collect();
        let out = apply_belts(&batch, &limits());
        assert!(out.allowed.is_empty());
        assert_eq!(out.trips[0].limit, LimitKind::RenewalsPerRun);
        let mut today = limits();
        today.renewed_today = 19;
        let out = apply_belts(&[priced(0, 1), priced(1, 1)], &today);
        assert_eq!(
            (out.allowed.len(), out.trips[0].limit),
            (0, LimitKind::RenewalsPerDay)
        );
    }

    #[test]
    fn a_spend_belt_holds_the_renewals_of_its_own_currency() {
        let mut input = limits();
        input.max_spend_per_run.insert("CNY".into(), 1_000);
        input.max_spend_per_run.insert("USD".into(), 10_000);
        let usd = Candidate {
            key: 2,
            label: "i-usd".into(),
            price: Some(Money {
                cents: 5_000,
                currency: "USD".into(),
            }),
            max_price: None,
            counted: false,
        };
        let out = apply_belts(&[priced(0, 600), priced(1, 600), usd], &input);
        assert_eq!(out.allowed, [2]);
        assert_eq!(
            out.held,
            [(0, LimitKind::SpendPerRun), (1, LimitKind::SpendPerRun)]
        );
        assert_eq!(
            out.trips[0].detail,
            "12.00 CNY in one pass, limit 10.00 CNY"
        );
    }

    #[test]
    fn a_quote_in_a_currency_no_spend_limit_names_is_held() {
        let mut input = limits();
        input.max_spend_per_day.insert("CNY".into(), 1_000_000);
        let usd = Candidate {
            price: Some(Money {
                cents: 100,
                currency: "USD".into(),
            }),
            ..priced(1, 0)
        };
        let out = apply_belts(&[priced(0, 100), usd], &input);
        assert_eq!(
            (out.allowed, out.held),
            (vec![0], vec![(1, LimitKind::SpendPerDay)])
        );
        assert_eq!(
            out.trips[0].detail,
            "1 renewal(s) quoted in USD, but the spend limit per day is set only in CNY: add a USD amount to it"
        );
    }

    #[test]
    fn max_price_in_another_currency_holds_the_renewal() {
        let usd = Candidate {
            price: Some(Money {
                cents: 100,
                currency: "USD".into(),
            }),
            max_price: Some(cny(1_000_000)),
            ..priced(0, 0)
        };
        let out = apply_belts(&[usd], &limits());
        assert_eq!(out.held, [(0, LimitKind::MaxPrice)]);
    }

    #[test]
    fn a_resend_of_a_counted_charge_adds_nothing_but_an_unknown_days_spend_holds_new_ones() {
        let mut input = limits();
        input.max_per_day = 1;
        input.renewed_today = 1;
        let resend = Candidate {
            counted: true,
            ..priced(0, 100)
        };
        let out = apply_belts(std::slice::from_ref(&resend), &input);
        assert_eq!(out.allowed, [0], "{out:?}");
        let out = apply_belts(&[resend.clone(), priced(1, 100)], &input);
        assert!(out.allowed.is_empty(), "a new one trips the belt for all");
        let mut input = limits();
        input.max_spend_per_day.insert("CNY".into(), 1_000_000);
        input.unpriced_today = 2;
        let out = apply_belts(&[resend, priced(1, 100)], &input);
        assert_eq!(
            (out.allowed, out.held),
            (vec![0], vec![(1, LimitKind::SpendPerDay)])
        );
    }

    #[test]
    fn daily_spend_counts_what_was_spent_today() {
        let mut input = limits();
        input.max_spend_per_day.insert("CNY".into(), 1_000);
        input.spent_today.insert("CNY".into(), 900);
        let out = apply_belts(&[priced(0, 200)], &input);
        assert_eq!(out.held, [(0, LimitKind::SpendPerDay)]);
    }

    #[test]
    fn spend_totals_saturate_instead_of_wrapping_below_the_limit() {
        let mut input = limits();
        input.max_spend_per_run.insert("CNY".into(), 1_000);
        input.max_spend_per_day.insert("CNY".into(), 1_000);
        input.spent_today.insert("CNY".into(), i64::MAX - 1);
        let huge = i64::MAX / 2 + 1;
        let out = apply_belts(&[priced(0, huge), priced(1, huge)], &input);
        assert!(out.allowed.is_empty(), "{out:?}");
        assert_eq!(
            out.held,
            [(0, LimitKind::SpendPerRun), (1, LimitKind::SpendPerRun)]
        );
        assert!(out.trips.iter().any(|t| t.limit == LimitKind::SpendPerDay));
    }

    #[test]
    fn unpriced_renewals_are_held_when_money_must_be_checked() {
        let mut input = limits();
        input.max_spend_per_run.insert("CNY".into(), 1_000);
        let unpriced = Candidate {
            key: 0,
            label: "i-0".into(),
            price: None,
            max_price: None,
            counted: false,
        };
        let out = apply_belts(&[unpriced.clone(), priced(1, 10)], &input);
        assert_eq!(out.allowed, [1]);
        let out = apply_belts(
            &[Candidate {
                max_price: Some(cny(5)),
                ..unpriced
            }],
            &limits(),
        );
        assert_eq!(out.held, [(0, LimitKind::MaxPrice)]);
    }

    #[test]
    fn max_price_holds_only_the_expensive_renewal() {
        let cheap = Candidate {
            key: 0,
            label: "i-0".into(),
            price: Some(cny(100)),
            max_price: Some(cny(500)),
            counted: false,
        };
        let dear = Candidate {
            key: 1,
            label: "i-1".into(),
            price: Some(cny(900)),
            max_price: Some(cny(500)),
            counted: false,
        };
        let out = apply_belts(&[cheap, dear], &limits());
        assert_eq!(
            (out.allowed, out.held),
            (vec![0], vec![(1, LimitKind::MaxPrice)])
        );
    }

    #[test]
    fn the_fleet_share_belt_trips_on_a_large_share() {
        let mut input = limits();
        input.max_fleet_share = 0.5;
        input.fleet_size = 4;
        let out = apply_belts(&[priced(0, 1), priced(1, 1), priced(2, 1)], &input);
        assert_eq!(
            (out.allowed.len(), out.trips[0].limit),
            (0, LimitKind::FleetShare)
        );
    }
}
