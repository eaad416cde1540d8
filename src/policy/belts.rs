//! Safety belts: count and spend limits checked for the whole batch of renewals before anything
//! is charged. A tripped belt holds every renewal it covers (a count belt covers the batch, a
//! spend belt the renewals in its currency): a batch far larger than expected is a reason to stop
//! and page someone, not to charge the first N.

use std::collections::BTreeMap;

use crate::closed_enum;

closed_enum! {
    /// A safety belt (a metric label).
    pub enum LimitKind {
        /// `max_renewals_per_run`.
        RenewalsPerRun => "renewals_per_run",
        /// `max_renewals_per_day`.
        RenewalsPerDay => "renewals_per_day",
        /// `max_spend_per_run`.
        SpendPerRun => "spend_per_run",
        /// `max_spend_per_day`.
        SpendPerDay => "spend_per_day",
        /// `max_fleet_share_per_run`.
        FleetShare => "fleet_share",
        /// A policy's `max_price`.
        MaxPrice => "max_price",
    }
}

/// A renewal in the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The caller's key for it.
    pub key: usize,
    /// What to call it in messages (the instance id).
    pub label: String,
    /// Its quoted price: (cents, currency), when priced.
    pub price: Option<(i64, String)>,
    /// The policy's `max_price`, cents.
    pub max_price_cents: Option<i64>,
}

/// The limits and what has been spent today.
#[derive(Debug, Clone, Default)]
pub struct BeltInput {
    /// Most renewals per pass.
    pub max_per_run: u32,
    /// Most renewals per day.
    pub max_per_day: u32,
    /// Renewals already made today.
    pub renewed_today: u32,
    /// Most spend per pass per currency (cents).
    pub max_spend_per_run: BTreeMap<String, i64>,
    /// Most spend per day per currency (cents).
    pub max_spend_per_day: BTreeMap<String, i64>,
    /// Spent today per currency (cents).
    pub spent_today: BTreeMap<String, i64>,
    /// Most renewals as a share of the fleet (1.0 = off).
    pub max_fleet_share: f64,
    /// PrePaid instances seen in this pass.
    pub fleet_size: usize,
}

/// A tripped belt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    /// Which.
    pub limit: LimitKind,
    /// What it saw, in words.
    pub detail: String,
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

fn money(cents: i64, currency: &str) -> String {
    crate::money::Money {
        cents,
        currency: currency.to_owned(),
    }
    .to_string()
}

/// Applies every belt to the batch.
pub fn apply_belts(candidates: &[Candidate], input: &BeltInput) -> BeltOutcome {
    let mut outcome = BeltOutcome::default();
    let mut held: BTreeMap<usize, LimitKind> = BTreeMap::new();

    // Per renewal: max_price. An unpriced renewal under a max_price is held too.
    for c in candidates {
        if let Some(max) = c.max_price_cents {
            match &c.price {
                Some((cents, currency)) if *cents > max => {
                    held.insert(c.key, LimitKind::MaxPrice);
                    outcome.trips.push(Trip {
                        limit: LimitKind::MaxPrice,
                        detail: format!(
                            "{} costs {}, above max_price {}",
                            c.label,
                            money(*cents, currency),
                            money(max, currency)
                        ),
                    });
                }
                None => {
                    held.insert(c.key, LimitKind::MaxPrice);
                    outcome.trips.push(Trip {
                        limit: LimitKind::MaxPrice,
                        detail: format!(
                            "{} could not be priced, so max_price cannot be checked",
                            c.label
                        ),
                    });
                }
                Some(_) => {}
            }
        }
    }
    let live: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !held.contains_key(&c.key))
        .collect();
    let n = live.len() as u64;

    let mut hold_all = |limit: LimitKind, detail: String, held: &mut BTreeMap<usize, LimitKind>| {
        for c in &live {
            held.entry(c.key).or_insert(limit);
        }
        outcome.trips.push(Trip { limit, detail });
    };
    if n > u64::from(input.max_per_run) {
        hold_all(
            LimitKind::RenewalsPerRun,
            format!("{n} renewals in one pass, limit {}", input.max_per_run),
            &mut held,
        );
    }
    if u64::from(input.renewed_today) + n > u64::from(input.max_per_day) {
        hold_all(
            LimitKind::RenewalsPerDay,
            format!(
                "{} renewed today plus {n} now exceeds the daily limit {}",
                input.renewed_today, input.max_per_day
            ),
            &mut held,
        );
    }
    if input.max_fleet_share < 1.0 && n as f64 > input.max_fleet_share * input.fleet_size as f64 {
        hold_all(
            LimitKind::FleetShare,
            format!(
                "{n} renewals out of {} PrePaid instances exceeds the share {}",
                input.fleet_size, input.max_fleet_share
            ),
            &mut held,
        );
    }

    // Spend, per currency. Renewals that could not be priced are held by any spend belt.
    let spend_limits = !input.max_spend_per_run.is_empty() || !input.max_spend_per_day.is_empty();
    if spend_limits {
        let unpriced: Vec<usize> = live
            .iter()
            .filter(|c| c.price.is_none())
            .map(|c| c.key)
            .collect();
        if !unpriced.is_empty() {
            for key in &unpriced {
                held.entry(*key).or_insert(LimitKind::SpendPerRun);
            }
            outcome.trips.push(Trip {
                limit: LimitKind::SpendPerRun,
                detail: format!(
                    "{} renewal(s) could not be priced, so spend limits cannot be checked",
                    unpriced.len()
                ),
            });
        }
        let mut by_currency: BTreeMap<&str, (i64, Vec<usize>)> = BTreeMap::new();
        for c in &live {
            if let Some((cents, currency)) = &c.price {
                let entry = by_currency.entry(currency).or_default();
                // Saturating: prices are bounded when quoted, but a limit must never wrap.
                entry.0 = entry.0.saturating_add(*cents);
                entry.1.push(c.key);
            }
        }
        for (currency, (total, keys)) in by_currency {
            let mut trip = |limit: LimitKind, detail: String| {
                for key in &keys {
                    held.entry(*key).or_insert(limit);
                }
                outcome.trips.push(Trip { limit, detail });
            };
            if let Some(max) = input.max_spend_per_run.get(currency)
                && total > *max
            {
                trip(
                    LimitKind::SpendPerRun,
                    format!(
                        "{} in one pass, limit {}",
                        money(total, currency),
                        money(*max, currency)
                    ),
                );
            }
            let today = input.spent_today.get(currency).copied().unwrap_or(0);
            if let Some(max) = input.max_spend_per_day.get(currency)
                && today.saturating_add(total) > *max
            {
                trip(
                    LimitKind::SpendPerDay,
                    format!(
                        "{} spent today plus {} now exceeds the daily limit {}",
                        money(today, currency),
                        money(total, currency),
                        money(*max, currency)
                    ),
                );
            }
        }
    }

    for c in candidates {
        match held.get(&c.key) {
            Some(limit) => outcome.held.push((c.key, *limit)),
            None => outcome.allowed.push(c.key),
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priced(key: usize, cents: i64) -> Candidate {
        Candidate {
            key,
            label: format!("i-{key}"),
            price: Some((cents, "CNY".into())),
            max_price_cents: None,
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
    fn a_spend_belt_holds_its_currency_only() {
        let mut input = limits();
        input.max_spend_per_run.insert("CNY".into(), 1_000);
        let usd = Candidate {
            key: 2,
            label: "i-usd".into(),
            price: Some((5_000, "USD".into())),
            max_price_cents: None,
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
            max_price_cents: None,
        };
        let out = apply_belts(&[unpriced.clone(), priced(1, 10)], &input);
        assert_eq!(out.allowed, [1]);
        let out = apply_belts(
            &[Candidate {
                max_price_cents: Some(5),
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
            price: Some((100, "CNY".into())),
            max_price_cents: Some(500),
        };
        let dear = Candidate {
            key: 1,
            label: "i-1".into(),
            price: Some((900, "CNY".into())),
            max_price_cents: Some(500),
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
