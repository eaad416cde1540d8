//! The funds forecast, pure: which charges are coming for an account (the renewals ecs-renewd
//! will make, and the provider's auto-renew deductions) and when the running total first
//! exceeds the available amount. No I/O: the pass gathers prices and the balance and calls
//! [`forecast`]; `plan` does the same.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::decide::Decision;
use super::{DeductionSchedule, Policy, PolicyAction};
use crate::closed_enum;
use crate::cloud::time::start_of_day_utc8;
use crate::cloud::types::{AutoRenewAttribute, Instance, PeriodUnit, RenewalStatus};
use crate::money::Money;

closed_enum! {
    /// Who makes a charge.
    pub enum ChargeBy {
        /// A renewal ecs-renewd makes (a `renew` policy, or an `auto-renew` policy's fallback).
        Daemon => "ecs-renewd",
        /// The provider's auto-renew deduction.
        Provider => "auto-renew",
    }
}

/// A charge expected within the forecast window, before it is priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeSeed {
    /// When it is expected (never before the pass).
    pub at: DateTime<Utc>,
    /// Who makes it.
    pub by: ChargeBy,
    /// The renewal length it buys.
    pub period: u32,
    /// Its unit.
    pub unit: PeriodUnit,
}

/// The end of the forecast window: the next provider deduction morning (08:00 UTC+8) after
/// `now`, plus `horizon`.
pub fn window_end(now: DateTime<Utc>, horizon: std::time::Duration) -> DateTime<Utc> {
    let today = start_of_day_utc8(now) + Duration::hours(8);
    let next = if today > now {
        today
    } else {
        today + Duration::days(1)
    };
    next + Duration::from_std(horizon).unwrap_or_default()
}

/// The charge, if any, an instance will cause by `until`, from its decision, its policy and its
/// auto-renew attributes. A renewal the pass makes now is at `now`; one due later at its due
/// time; an `AutoRenewal` instance that ecs-renewd does not renew is charged by the provider
/// at its next attempt (counted once: an `auto-renew` policy's fallback is not added on top).
pub fn charge_for(
    decision: &Decision,
    policy: Option<&Policy>,
    instance: &Instance,
    auto_renew: Option<&AutoRenewAttribute>,
    schedule: DeductionSchedule,
    (now, until): (DateTime<Utc>, DateTime<Utc>),
) -> Option<ChargeSeed> {
    if let Some(plan) = &decision.renew {
        return Some(ChargeSeed {
            at: now,
            by: ChargeBy::Daemon,
            period: plan.period,
            unit: plan.unit,
        });
    }
    if let Some(PolicyAction::Renew { period, unit, .. }) = policy.map(|p| &p.action) {
        let at = decision.due_at?.max(now);
        return (at <= until && decision.refused.is_none()).then_some(ChargeSeed {
            at,
            by: ChargeBy::Daemon,
            period: *period,
            unit: *unit,
        });
    }
    // The attributes the provider will use: the policy's target when it sets them, else
    // what the instance has.
    let (status, duration, unit) = match (policy.map(|p| &p.action), auto_renew) {
        (Some(PolicyAction::AutoRenew { target, .. }), _)
            if decision.auto_renew_change.is_some() =>
        {
            (target.status, target.duration, target.unit)
        }
        (_, Some(a)) => (
            a.renewal_status,
            a.duration,
            a.period_unit.unwrap_or(PeriodUnit::Month),
        ),
        (_, None) => return None,
    };
    if status != RenewalStatus::AutoRenewal || duration == 0 {
        return None;
    }
    let at = schedule
        .attempts(instance.expired_time)
        .into_iter()
        .find(|at| *at >= now)?;
    (at <= until).then_some(ChargeSeed {
        at,
        by: ChargeBy::Provider,
        period: duration,
        unit,
    })
}

/// A priced charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Charge {
    /// The instance.
    pub instance_id: String,
    /// What it will cost.
    pub amount: Money,
    /// When.
    pub at: DateTime<Utc>,
    /// By whom.
    pub by: ChargeBy,
}

/// A charge in the window that could not be priced (`DescribeRenewalPrice` failed, or the
/// period is one it cannot price): left out of the sums, and named, so a forecast is never
/// taken for complete when it is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unpriced {
    /// The instance.
    pub instance_id: String,
    /// When the charge is expected.
    pub at: DateTime<Utc>,
    /// Who makes it.
    pub by: ChargeBy,
}

/// An account's charges in the forecast window, priced or not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowCharges {
    /// The charges with a price.
    pub priced: Vec<Charge>,
    /// The charges without one.
    pub unpriced: Vec<Unpriced>,
    /// The currency the account is billed in: unpriced charges are counted under it.
    pub billing_currency: String,
}

/// Priced charges only: how the unit tests below build most windows.
#[cfg(test)]
impl From<Vec<Charge>> for WindowCharges {
    fn from(priced: Vec<Charge>) -> Self {
        WindowCharges {
            priced,
            ..WindowCharges::default()
        }
    }
}

/// What the account can pay with, as far as the daemon knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalanceView {
    /// `QueryAccountBalance`'s available amount.
    Known(Money),
    /// Not known, and why (forecast off, permission refused, the call failed).
    Unknown(String),
}

/// The forecast for one account and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forecast {
    /// The config account entry.
    pub account: String,
    /// The currency of the charges and the balance compared.
    pub currency: String,
    /// The available amount, when known in this currency.
    pub available: Option<Money>,
    /// Why the comparison could not be made, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
    /// Every priced charge in the window, in time order.
    pub charges: Vec<Charge>,
    /// Charges in the window that could not be priced: not in the sums below, which are then
    /// a floor.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced: Vec<Unpriced>,
    /// Charges in the sums but not in `charges`: a pass record lists only the earliest (see
    /// [`Forecast::for_record`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub charges_not_recorded: usize,
    /// Unpriced charges not in `unpriced`, likewise.
    #[serde(skip_serializing_if = "is_zero")]
    pub unpriced_not_recorded: usize,
    /// Their sum.
    pub upcoming: Money,
    /// The part ecs-renewd makes.
    pub by_daemon: Money,
    /// The part the provider's auto-renew deducts.
    pub by_provider: Money,
    /// When the running total first exceeds the available amount (absent when covered).
    pub shortfall_at: Option<DateTime<Utc>>,
    /// By how much the window's charges exceed the available amount (absent when covered).
    pub short_by: Option<Money>,
    /// The end of the window.
    pub until: DateTime<Utc>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Forecast {
    /// A copy that lists only the `keep` earliest charges and unpriced charges, counting the
    /// rest: what a pass record keeps. The sums and the shortfall still cover every charge; a
    /// fleet's full list (thousands of charges) would otherwise add hundreds of kilobytes to
    /// the ledger every pass. `plan` lists every charge.
    pub fn for_record(&self, keep: usize) -> Forecast {
        let mut f = self.clone();
        f.charges_not_recorded += f.charges.len().saturating_sub(keep);
        f.charges.truncate(keep);
        f.unpriced_not_recorded += f.unpriced.len().saturating_sub(keep);
        f.unpriced.truncate(keep);
        f
    }

    /// One line for logs, `plan` and the demo.
    pub fn describe(&self) -> String {
        let count = |by: ChargeBy| self.charges.iter().filter(|c| c.by == by).count();
        let mut line = format!(
            "account {}: {} of renewals due by {} ({} by ecs-renewd, {} by the provider's auto-renew{})",
            self.account,
            self.upcoming,
            crate::cloud::time::format_minutes(self.until),
            count(ChargeBy::Daemon),
            count(ChargeBy::Provider),
            self.describe_unpriced(),
        );
        match (&self.available, &self.unknown) {
            (Some(available), _) => {
                line.push_str(&format!(", {available} available"));
                if let (Some(short), Some(at)) = (&self.short_by, self.shortfall_at) {
                    line.push_str(&format!(
                        " — short by {short} from {}",
                        crate::cloud::time::format_minutes(at)
                    ));
                }
            }
            (None, Some(why)) => line.push_str(&format!(", balance unknown: {why}")),
            (None, None) => {}
        }
        line
    }

    /// "; 2 more not priced: i-a, i-b" (the first five named), or nothing.
    fn describe_unpriced(&self) -> String {
        if self.unpriced.is_empty() {
            return String::new();
        }
        let mut names: Vec<&str> = self
            .unpriced
            .iter()
            .take(5)
            .map(|u| u.instance_id.as_str())
            .collect();
        if self.unpriced.len() > names.len() {
            names.push("…");
        }
        format!(
            "; {} more not priced: {}",
            self.unpriced.len(),
            names.join(", ")
        )
    }
}

/// The forecast of one account: one entry per currency among its charges and its balance.
/// Currencies are never mixed: charges in a currency other than the balance's get no
/// comparison ("unknown", saying why). Unpriced charges go with the billing currency's entry.
pub fn forecast(
    account: &str,
    balance: &BalanceView,
    charges: WindowCharges,
    until: DateTime<Utc>,
) -> Vec<Forecast> {
    let WindowCharges {
        priced: mut charges,
        mut unpriced,
        billing_currency,
    } = charges;
    charges.sort_by(|a, b| (a.at, &a.instance_id).cmp(&(b.at, &b.instance_id)));
    unpriced.sort_by(|a, b| (a.at, &a.instance_id).cmp(&(b.at, &b.instance_id)));
    let mut currencies: Vec<String> = charges.iter().map(|c| c.amount.currency.clone()).collect();
    if let BalanceView::Known(m) = balance {
        currencies.push(m.currency.clone());
    }
    if !unpriced.is_empty() {
        currencies.push(billing_currency.clone());
    }
    currencies.sort();
    currencies.dedup();
    currencies
        .into_iter()
        .map(|currency| {
            let mine: Vec<Charge> = charges
                .iter()
                .filter(|c| c.amount.currency == currency)
                .cloned()
                .collect();
            let mut f = one_currency(account, balance, mine, currency, until);
            if f.currency == billing_currency {
                f.unpriced = std::mem::take(&mut unpriced);
            }
            f
        })
        .collect()
}

fn one_currency(
    account: &str,
    balance: &BalanceView,
    charges: Vec<Charge>,
    currency: String,
    until: DateTime<Utc>,
) -> Forecast {
    let money = |cents: i64| Money {
        cents,
        currency: currency.clone(),
    };
    let sum = |by: Option<ChargeBy>| {
        charges
            .iter()
            .filter(|c| by.is_none_or(|b| c.by == b))
            .map(|c| c.amount.cents)
            .sum::<i64>()
    };
    let (available, unknown) = match balance {
        BalanceView::Known(m) if m.currency == currency => (Some(m.clone()), None),
        BalanceView::Known(m) => (
            None,
            Some(format!(
                "the balance is in {}, these charges are in {currency}",
                m.currency
            )),
        ),
        BalanceView::Unknown(why) => (None, Some(why.clone())),
    };
    let total = sum(None);
    let shortfall_at = available.as_ref().and_then(|a| {
        let mut running = 0i64;
        charges.iter().find_map(|c| {
            running += c.amount.cents;
            (running > a.cents).then_some(c.at)
        })
    });
    let short_by = match (&available, shortfall_at) {
        (Some(a), Some(_)) => Some(money(total - a.cents)),
        _ => None,
    };
    Forecast {
        account: account.to_owned(),
        currency: currency.clone(),
        available,
        unknown,
        upcoming: money(total),
        by_daemon: money(sum(Some(ChargeBy::Daemon))),
        by_provider: money(sum(Some(ChargeBy::Provider))),
        shortfall_at,
        short_by,
        charges,
        unpriced: Vec::new(),
        charges_not_recorded: 0,
        unpriced_not_recorded: 0,
        until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::time;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        time::parse(s).unwrap()
    }

    fn charge(id: &str, cents: i64, currency: &str, at: &str, by: ChargeBy) -> Charge {
        Charge {
            instance_id: id.into(),
            amount: Money {
                cents,
                currency: currency.into(),
            },
            at: t(at),
            by,
        }
    }

    fn cny(cents: i64) -> BalanceView {
        BalanceView::Known(Money {
            cents,
            currency: "CNY".into(),
        })
    }

    const UNTIL: &str = "2026-12-10T00:00:00Z";

    #[test]
    fn the_shortfall_is_when_the_running_total_first_exceeds_the_balance() {
        let charges = vec![
            charge(
                "i-b",
                200_000,
                "CNY",
                "2026-12-04T00:00:00Z",
                ChargeBy::Provider,
            ),
            charge(
                "i-a",
                100_000,
                "CNY",
                "2026-12-01T00:00:00Z",
                ChargeBy::Daemon,
            ),
            charge(
                "i-c",
                940_000,
                "CNY",
                "2026-12-05T00:00:00Z",
                ChargeBy::Daemon,
            ),
        ];
        let f = &forecast("prod", &cny(310_000), charges.into(), t(UNTIL))[0];
        assert_eq!(f.upcoming.cents, 1_240_000);
        assert_eq!(
            (f.by_daemon.cents, f.by_provider.cents),
            (1_040_000, 200_000)
        );
        assert_eq!(f.shortfall_at, Some(t("2026-12-05T00:00:00Z")));
        assert_eq!(f.short_by.as_ref().map(|m| m.cents), Some(930_000));
        assert_eq!(f.charges[0].instance_id, "i-a");
        assert_eq!(
            f.describe(),
            "account prod: 12400.00 CNY of renewals due by 2026-12-10T00:00Z (2 by ecs-renewd, 1 by the provider's auto-renew), 3100.00 CNY available — short by 9300.00 CNY from 2026-12-05T00:00Z"
        );
    }

    #[test]
    fn a_covered_account_has_no_shortfall_and_an_exact_cover_is_covered() {
        let charges = vec![charge(
            "i-a",
            100_000,
            "CNY",
            "2026-12-01T00:00:00Z",
            ChargeBy::Daemon,
        )];
        let f = &forecast("prod", &cny(100_000), charges.into(), t(UNTIL))[0];
        assert_eq!((f.shortfall_at, f.short_by.clone()), (None, None));
    }

    #[test]
    fn a_negative_balance_is_short_from_the_first_charge() {
        let charges = vec![charge(
            "i-a",
            1,
            "CNY",
            "2026-12-01T00:00:00Z",
            ChargeBy::Provider,
        )];
        let f = &forecast("prod", &cny(-1_119), charges.into(), t(UNTIL))[0];
        assert_eq!(f.shortfall_at, Some(t("2026-12-01T00:00:00Z")));
        assert_eq!(f.short_by.as_ref().map(|m| m.cents), Some(1_120));
    }

    #[test]
    fn currencies_are_kept_apart() {
        let charges = vec![
            charge(
                "i-cny",
                500_000,
                "CNY",
                "2026-12-01T00:00:00Z",
                ChargeBy::Daemon,
            ),
            charge(
                "i-usd",
                100,
                "USD",
                "2026-12-01T00:00:00Z",
                ChargeBy::Daemon,
            ),
        ];
        let all = forecast("prod", &cny(100_000), charges.into(), t(UNTIL));
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].currency, "CNY");
        assert!(all[0].shortfall_at.is_some());
        assert_eq!(all[1].currency, "USD");
        assert_eq!(
            (all[1].available.clone(), all[1].shortfall_at),
            (None, None)
        );
        assert_eq!(
            all[1].unknown.as_deref(),
            Some("the balance is in CNY, these charges are in USD")
        );
    }

    #[test]
    fn an_unknown_balance_still_lists_the_charges() {
        let charges = vec![charge(
            "i-a",
            100,
            "CNY",
            "2026-12-01T00:00:00Z",
            ChargeBy::Daemon,
        )];
        let why = BalanceView::Unknown("NotAuthorized: grant bss:DescribeAcccount".into());
        let f = &forecast("prod", &why, charges.into(), t(UNTIL))[0];
        assert_eq!((f.upcoming.cents, f.shortfall_at), (100, None));
        assert!(
            f.describe().contains("balance unknown: NotAuthorized"),
            "{}",
            f.describe()
        );
    }

    #[test]
    fn unpriced_charges_are_named_with_the_billing_currency_and_left_out_of_the_sums() {
        let unpriced = |id: &str| Unpriced {
            instance_id: id.into(),
            at: t("2026-12-02T00:00:00Z"),
            by: ChargeBy::Provider,
        };
        let charges = WindowCharges {
            priced: vec![charge(
                "i-a",
                100,
                "USD",
                "2026-12-01T00:00:00Z",
                ChargeBy::Daemon,
            )],
            unpriced: vec![unpriced("i-x"), unpriced("i-y")],
            billing_currency: "CNY".into(),
        };
        let all = forecast("prod", &cny(500), charges, t(UNTIL));
        assert_eq!(all.len(), 2);
        let (cny_f, usd_f) = (&all[0], &all[1]);
        assert_eq!((cny_f.currency.as_str(), cny_f.unpriced.len()), ("CNY", 2));
        assert_eq!((cny_f.upcoming.cents, cny_f.shortfall_at), (0, None));
        assert_eq!(
            cny_f.describe(),
            "account prod: 0.00 CNY of renewals due by 2026-12-10T00:00Z (0 by ecs-renewd, 0 by the provider's auto-renew; 2 more not priced: i-x, i-y), 5.00 CNY available"
        );
        assert!(usd_f.unpriced.is_empty());
        // With the balance unknown and nothing priced, the account still has its entry.
        let only = WindowCharges {
            unpriced: (0..7).map(|n| unpriced(&format!("i-{n}"))).collect(),
            billing_currency: "CNY".into(),
            ..WindowCharges::default()
        };
        let why = BalanceView::Unknown("not queried".into());
        let f = &forecast("prod", &why, only, t(UNTIL))[0];
        assert!(
            f.describe()
                .contains("; 7 more not priced: i-0, i-1, i-2, i-3, i-4, …), balance unknown"),
            "{}",
            f.describe()
        );
    }

    #[test]
    fn a_balance_without_charges_is_still_reported() {
        let f = &forecast("prod", &cny(5), WindowCharges::default(), t(UNTIL))[0];
        assert_eq!(
            (f.upcoming.cents, f.available.as_ref().map(|m| m.cents)),
            (0, Some(5))
        );
    }

    #[test]
    fn the_window_runs_to_the_next_deduction_morning_plus_the_horizon() {
        let week = std::time::Duration::from_secs(7 * 86_400);
        // 2026-11-30 12:00 UTC = 20:00 UTC+8: the next 08:00 UTC+8 is 12-01T00:00Z.
        assert_eq!(
            window_end(t("2026-11-30T12:00:00Z"), week),
            t("2026-12-08T00:00:00Z")
        );
        // Exactly at a deduction morning: the next one.
        assert_eq!(
            window_end(t("2026-12-01T00:00:00Z"), week),
            t("2026-12-09T00:00:00Z")
        );
    }

    proptest! {
        /// Whatever the charges and balance: the parts add up to the whole, and a shortfall is
        /// reported exactly when the window's total exceeds the balance, at a charge's time.
        #[test]
        fn totals_and_shortfall_agree(
            amounts in proptest::collection::vec((0i64..1_000_000, 0u32..20, any::<bool>()), 0..30),
            balance in -100_000i64..5_000_000,
        ) {
            let charges: Vec<Charge> = amounts.iter().enumerate().map(|(i, (cents, day, daemon))| Charge {
                instance_id: format!("i-{i}"),
                amount: Money { cents: *cents, currency: "CNY".into() },
                at: t("2026-12-01T00:00:00Z") + Duration::days(i64::from(*day)),
                by: if *daemon { ChargeBy::Daemon } else { ChargeBy::Provider },
            }).collect();
            let total: i64 = charges.iter().map(|c| c.amount.cents).sum();
            let f = &forecast("a", &cny(balance), charges.clone().into(), t(UNTIL))[0];
            prop_assert_eq!(f.upcoming.cents, total);
            prop_assert_eq!(f.by_daemon.cents + f.by_provider.cents, total);
            // No charge, nothing to fall short on (even below zero).
            prop_assert_eq!(f.shortfall_at.is_some(), !charges.is_empty() && total > balance);
            if let Some(at) = f.shortfall_at {
                prop_assert!(charges.iter().any(|c| c.at == at));
                prop_assert_eq!(f.short_by.as_ref().map(|m| m.cents), Some(total - balance));
            }
        }
    }
}
