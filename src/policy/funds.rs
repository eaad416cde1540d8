//! The funds forecast, pure: which charges are coming for an account (the renewals ecs-renewd
//! will make, and the provider's auto-renew deductions) and when the running total first
//! exceeds the available amount. No I/O: the pass gathers prices and the balance and calls
//! [`forecast`]; `plan` does the same.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::decide::{Decision, InstanceState};
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

closed_enum! {
    /// Why a forecast is incomplete: what it cannot see (a metric label).
    pub enum Gap {
        /// A source of the account could not be scanned: its instances' charges are missing.
        SourceDown => "source_down",
        /// Some charges could not be priced: the sums are a floor.
        Unpriced => "unpriced",
        /// The balance could not be read: nothing to compare with.
        BalanceUnknown => "balance_unknown",
        /// Some instances' auto-renew attributes could not be read: whether the provider
        /// charges them is not known.
        AutoRenewUnknown => "auto_renew_unknown",
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

/// Most charges one instance can have in a window: a window is at most a day plus
/// `[funds] horizon`, and the shortest period is a week.
const MOST_CHARGES: usize = 8;

/// How an instance gets renewed from one expiry cycle to the next, as far as the forecast can
/// tell: by the provider's auto-renew, by ecs-renewd's policy, or both (whichever comes first
/// renews the cycle; the other then waits for the next).
#[derive(Debug, Clone, Copy)]
struct Renewers {
    /// The provider's auto-renew (duration and unit) when it is on, or the policy switches it
    /// on in this pass.
    provider: Option<(u32, PeriodUnit)>,
    /// ecs-renewd's own renewals.
    daemon: DaemonRenewal,
}

/// How ecs-renewd renews the instance, cycle after cycle.
#[derive(Debug, Clone, Copy)]
enum DaemonRenewal {
    /// It does not (no renewing policy, a standing refusal, left to lapse).
    Never,
    /// A `renew` policy: `before` the expiry.
    Renew {
        period: u32,
        unit: PeriodUnit,
        before: Duration,
    },
    /// An `auto-renew` policy's fallback, once the provider's deduction is overdue.
    Fallback {
        period: u32,
        unit: PeriodUnit,
        after: Duration,
    },
}

impl Renewers {
    /// Who renews an instance `decide` has decided on, under `policy`.
    fn of(
        decision: &Decision,
        policy: Option<&Policy>,
        auto_renew: Option<&AutoRenewAttribute>,
    ) -> Renewers {
        // The attributes the provider will use: the policy's when this pass sets them.
        let attributes = match (&decision.auto_renew_change, auto_renew) {
            (Some(target), _) => Some((target.status, target.duration, target.unit)),
            (None, Some(a)) => Some((
                a.renewal_status,
                a.duration,
                a.period_unit.unwrap_or(PeriodUnit::Month),
            )),
            (None, None) => None,
        };
        let provider = attributes
            .filter(|(status, duration, _)| *status == RenewalStatus::AutoRenewal && *duration > 0)
            .map(|(_, duration, unit)| (duration, unit));
        // A refused or failed renewal is tried again at its retry time (a grant or a fix may
        // come any moment): the money must be there by then. Only an excluded instance is
        // never renewed by ecs-renewd.
        let acts = decision.state != InstanceState::Excluded;
        let daemon = match policy.map(|p| &p.action) {
            Some(PolicyAction::Renew {
                period,
                unit,
                renew_before,
                ..
            }) if acts => DaemonRenewal::Renew {
                period: *period,
                unit: *unit,
                before: Duration::from_std(*renew_before).unwrap_or_default(),
            },
            Some(PolicyAction::AutoRenew {
                fallback: Some(f), ..
            }) if acts => DaemonRenewal::Fallback {
                period: f.period,
                unit: f.unit,
                after: Duration::from_std(f.after).unwrap_or_default(),
            },
            _ => DaemonRenewal::Never,
        };
        Renewers { provider, daemon }
    }

    /// When ecs-renewd would renew the cycle ending at `expiry`, looking from `from`: a
    /// renewal policy's due time, or the fallback point (at once when no deduction attempt is
    /// left before the expiry).
    fn daemon_due(
        &self,
        expiry: DateTime<Utc>,
        from: DateTime<Utc>,
        schedule: DeductionSchedule,
    ) -> Option<(DateTime<Utc>, u32, PeriodUnit)> {
        match self.daemon {
            DaemonRenewal::Never => None,
            DaemonRenewal::Renew {
                period,
                unit,
                before,
            } => Some(((expiry - before).max(from), period, unit)),
            DaemonRenewal::Fallback {
                period,
                unit,
                after,
            } => {
                let at = if schedule.next_before_expiry(expiry, from).is_some() {
                    super::decide::fallback_point(
                        expiry,
                        after.to_std().unwrap_or_default(),
                        schedule,
                    )
                } else {
                    super::decide::too_late_point(schedule, expiry, from)
                };
                Some((at.max(from), period, unit))
            }
        }
    }
}

/// The expiry after a renewal of `period` × `unit` made at `at`: the old expiry moved on, or,
/// for an instance already expired, the start of the day it is renewed on.
fn renewed_expiry(
    expiry: DateTime<Utc>,
    at: DateTime<Utc>,
    period: u32,
    unit: PeriodUnit,
) -> DateTime<Utc> {
    let base = if at < expiry {
        expiry
    } else {
        start_of_day_utc8(at)
    };
    crate::cloud::time::add_period(base, period, unit)
}

/// Every charge an instance will cause from `now` to `until`, in time order. Each cycle is
/// renewed by whichever comes first — the provider's next deduction attempt before the expiry
/// (when auto-renew is on, or the policy switches it on now), or ecs-renewd's renewal (a renewal
/// the pass makes now, a `renew` policy's due time, an `auto-renew` policy's fallback) — and
/// the other is not counted for that cycle; the expiry then moves and the next cycle starts.
/// An attempt that cannot come before the expiry is never counted (the provider does not
/// deduct for an expired instance); a renewal already ordered is behind the pass, while one
/// that only may have charged counts again when it will be resent (if it did charge, the
/// balance already shows it, and the forecast errs on the side of short).
pub fn charges_for(
    decision: &Decision,
    policy: Option<&Policy>,
    instance: &Instance,
    auto_renew: Option<&AutoRenewAttribute>,
    schedule: DeductionSchedule,
    (now, until): (DateTime<Utc>, DateTime<Utc>),
) -> Vec<ChargeSeed> {
    let mut charges = Vec::new();
    if decision.ordered {
        return charges;
    }
    let renewers = Renewers::of(decision, policy, auto_renew);
    let mut expiry = instance.expired_time;
    // The first cycle is as `decide` saw it: a renewal now, or its due time (a backoff's
    // retry among them).
    // An intent that may have charged is resent with its own period.
    let mut daemon = match &decision.renew {
        Some(plan) => Some((now, plan.period, plan.unit)),
        None => renewers
            .daemon_due(expiry, now, schedule)
            .map(|(at, period, unit)| {
                let (period, unit) = decision.resend_period.unwrap_or((period, unit));
                (decision.due_at.unwrap_or(at).max(at).max(now), period, unit)
            }),
    };
    let mut from = now;
    while charges.len() < MOST_CHARGES {
        let provider = renewers.provider.and_then(|(duration, unit)| {
            schedule
                .next_before_expiry(expiry, from)
                .map(|at| (at, duration, unit))
        });
        // The provider's deduction run goes first when both fall at one moment.
        let (by, (at, period, unit)) = match (provider, daemon) {
            (Some(p), Some(d)) if d.0 < p.0 => (ChargeBy::Daemon, d),
            (Some(p), _) => (ChargeBy::Provider, p),
            (None, Some(d)) => (ChargeBy::Daemon, d),
            (None, None) => break,
        };
        if at > until {
            break;
        }
        charges.push(ChargeSeed {
            at,
            by,
            period,
            unit,
        });
        expiry = renewed_expiry(expiry, at, period, unit);
        from = at + Duration::seconds(1);
        daemon = renewers.daemon_due(expiry, from, schedule);
    }
    charges
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
    /// The account's sources the scan could not list (`account/region`).
    pub sources_down: Vec<String>,
    /// Instances whose auto-renew attributes could not be read while a provider deduction
    /// attempt falls in the window.
    pub auto_renew_unknown: Vec<String>,
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
    /// The account's sources the scan could not list (`account/region`): their instances'
    /// charges are missing, so a forecast that looks covered is not known to be.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources_down: Vec<String>,
    /// Instances whose auto-renew attributes could not be read, with a provider deduction
    /// attempt in the window: whether the provider charges them is not known, so a forecast
    /// that looks covered is not known to be.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub auto_renew_unknown: Vec<String>,
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
    /// What the forecast cannot see, if anything.
    pub fn gaps(&self) -> Vec<Gap> {
        let mut gaps = Vec::new();
        if !self.sources_down.is_empty() {
            gaps.push(Gap::SourceDown);
        }
        if !self.unpriced.is_empty() || self.unpriced_not_recorded > 0 {
            gaps.push(Gap::Unpriced);
        }
        if self.available.is_none() {
            gaps.push(Gap::BalanceUnknown);
        }
        if !self.auto_renew_unknown.is_empty() {
            gaps.push(Gap::AutoRenewUnknown);
        }
        gaps
    }

    /// Whether the charges it sees exceed the balance.
    pub fn short(&self) -> bool {
        self.shortfall_at.is_some()
    }

    /// Covered: the balance is known, every charge is seen and priced, and they fit.
    pub fn covered(&self) -> bool {
        !self.short() && self.gaps().is_empty()
    }

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
        if !self.sources_down.is_empty() {
            line.push_str(&format!(
                " — incomplete: {} could not be scanned, its charges are missing",
                self.sources_down.join(", ")
            ));
        }
        if !self.auto_renew_unknown.is_empty() {
            line.push_str(&format!(
                " — incomplete: the auto-renew attributes of {} instance(s) could not be read, whether the provider charges them is not known",
                self.auto_renew_unknown.len()
            ));
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
        sources_down,
        auto_renew_unknown,
    } = charges;
    charges.sort_by(|a, b| (a.at, &a.instance_id).cmp(&(b.at, &b.instance_id)));
    unpriced.sort_by(|a, b| (a.at, &a.instance_id).cmp(&(b.at, &b.instance_id)));
    let mut currencies: Vec<String> = charges.iter().map(|c| c.amount.currency.clone()).collect();
    if let BalanceView::Known(m) = balance {
        currencies.push(m.currency.clone());
    }
    if !unpriced.is_empty() || !sources_down.is_empty() || !auto_renew_unknown.is_empty() {
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
            f.sources_down = sources_down.clone();
            f.auto_renew_unknown = auto_renew_unknown.clone();
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
        sources_down: Vec::new(),
        auto_renew_unknown: Vec::new(),
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
            ..WindowCharges::default()
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
