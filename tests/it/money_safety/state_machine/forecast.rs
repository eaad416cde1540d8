//! The published funds forecast against the oracle (`tests/it/oracle.rs`), after every pass of
//! the state machine: from the emulator's truth (instances, RenewalStatus, auto-renew
//! durations, prices, the balance), the policies as the config states them and the ledger's
//! backoffs, the oracle derives the charges of the window and when the balance cannot pay.
//!
//! - Always: whenever the oracle says short by T, some forecast of the account says short no
//!   later than T, or says it is incomplete — never covered.
//! - The balance a forecast shows is the account's, unless a person changed it since the last
//!   read and nothing charged the account since (the balance rule of docs/how-it-works.md).
//! - After a quiet pass (no fault pending or answered, renewals show at once, nothing refused):
//!   the forecasts' charges, together, are the oracle's — same instances, times, renewer and
//!   prices.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use ecs_emulator::instance::Lifecycle;
use ecs_renewd::Forecast;
use ecs_renewd::reconcile::{HistorySource, PassSummary};
use ecs_wire::Action;
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};
use proptest::test_runner::TestCaseError;

use super::{Model, RENEW_BEFORE_DAYS, RenewMode, fail, role};
use crate::oracle::{self, Daemon, Expected, Schedule, Subject};

/// The default `[funds] horizon`, which the state machine's config keeps.
const FUNDS_HORIZON: i64 = 7;

/// What the check knows about the balance between passes.
#[derive(Debug, Default)]
pub(super) struct BalanceWatch {
    /// A person changed the balance (or charged it in the console) since a forecast last
    /// showed the true balance.
    pub person_changed: bool,
    /// Orders that charged the account (ours and the provider's) when a forecast last showed
    /// the true balance.
    pub charges_at_match: usize,
}

/// Orders that charged the account, not made in the console.
fn charging_orders(model: &Model) -> usize {
    model
        .emulator
        .orders()
        .iter()
        .filter(|o| {
            o.kind == "auto_renew"
                || o.client_token
                    .as_deref()
                    .is_some_and(|t| t.starts_with("ern"))
        })
        .count()
}

/// Each PrePaid instance not released, as the oracle sees it under the config's policies.
fn subjects(model: &Model, now: DateTime<Utc>) -> Vec<Subject> {
    let histories = model.engine.as_ref().unwrap().ledger.histories().unwrap();
    let knobs = &model.knobs;
    model.emulator.with_world(|w| {
        let settings = w.settings.clone();
        w.instances()
            .filter(|i| {
                i.charge_type == ChargeType::PrePaid
                    && i.lifecycle(now, &settings) != Lifecycle::Released
            })
            .map(|i| {
                let n: usize = i.id.trim_start_matches("i-sm").parse().unwrap();
                let status = i.renewal_status;
                let own = (status == RenewalStatus::AutoRenewal)
                    .then_some((i.auto_renew_duration, i.auto_renew_unit));
                let history = histories.history(&i.id);
                let retry_at = history.retry_at.filter(|at| *at > now);
                // An open intent for this expiry that may have charged is resent with its
                // own period, whatever the config says now.
                let resend = history
                    .intent
                    .as_ref()
                    .filter(|v| v.maybe_charged && v.old_expiry == i.true_expiry())
                    .map(|v| v.period);
                let (provider, daemon) = match role(n) {
                    "renew" => match knobs.renew {
                        RenewMode::Renew { .. } if status == RenewalStatus::NotRenewal => {
                            (None, Daemon::Never)
                        }
                        RenewMode::Renew { months } => (
                            own,
                            Daemon::Renew {
                                period: resend.unwrap_or(months),
                                unit: PeriodUnit::Month,
                                before: Duration::days(RENEW_BEFORE_DAYS),
                                first_at: retry_at,
                            },
                        ),
                        // A not-renewal policy switches auto-renew off in the pass.
                        RenewMode::NotRenewal => (None, Daemon::Never),
                        RenewMode::Observe | RenewMode::Skip => (own, Daemon::Never),
                    },
                    "auto" if status == RenewalStatus::NotRenewal => (None, Daemon::Never),
                    "auto" => (
                        Some((1, PeriodUnit::Month)),
                        if knobs.fallback {
                            Daemon::Fallback {
                                period: resend.unwrap_or(1),
                                unit: PeriodUnit::Month,
                                after: Duration::days(1),
                                first_at: retry_at,
                            }
                        } else {
                            Daemon::Never
                        },
                    ),
                    "lapse" => (None, Daemon::Never),
                    _ => (own, Daemon::Never),
                };
                let mut periods: Vec<(u32, PeriodUnit)> = provider.into_iter().collect();
                if let Daemon::Renew { period, unit, .. } | Daemon::Fallback { period, unit, .. } =
                    daemon
                {
                    periods.push((period, unit));
                }
                Subject {
                    id: i.id.clone(),
                    expiry: i.true_expiry(),
                    provider,
                    daemon,
                    prices: periods
                        .into_iter()
                        .map(|(p, u)| ((p, u), i.price_cents(p, u).0))
                        .collect(),
                }
            })
            .collect()
    })
}

fn forecast_charges(
    forecasts: &[Forecast],
) -> BTreeSet<(DateTime<Utc>, String, &'static str, Option<i64>)> {
    forecasts
        .iter()
        .flat_map(crate::forecast_oracle::forecast_charges)
        .collect()
}

/// What our orders the emulator carried out at `now` (within the pass) cost: one whose answer
/// was lost may be carried out after the pass read the balance (the request was still in
/// flight), so the balance shown may be higher by up to this much.
fn in_flight_cents(model: &Model, now: DateTime<Utc>) -> i64 {
    model
        .emulator
        .orders()
        .iter()
        .filter(|o| {
            o.at == now
                && o.client_token
                    .as_deref()
                    .is_some_and(|t| t.starts_with("ern"))
        })
        .map(|o| o.price_cents)
        .sum()
}

/// The balance a forecast shows against the account's.
fn check_balance(
    model: &mut Model,
    forecasts: &[Forecast],
    summary: &PassSummary,
) -> Result<Option<i64>, TestCaseError> {
    let truth = model
        .emulator
        .with_world(|w| w.account("sm").map(|a| a.balance_cents))
        .unwrap_or_default();
    let charges = charging_orders(model);
    let shown: BTreeSet<i64> = forecasts
        .iter()
        .filter_map(|f| f.available.as_ref().map(|m| m.cents))
        .collect();
    let Some(&known) = shown.iter().next() else {
        return Ok(None);
    };
    if shown.len() == 1 && known == truth {
        model.balance = BalanceWatch {
            person_changed: false,
            charges_at_match: charges,
        };
        return Ok(Some(known));
    }
    let watch = &model.balance;
    if watch.person_changed && watch.charges_at_match == charges {
        return Ok(Some(*shown.iter().max().unwrap()));
    }
    // Read while a renewal whose answer was lost was still on its way: the charge lands
    // after the read, and the next pass sees the expiry move and reads again.
    let landed = in_flight_cents(model, summary.started_at);
    if summary.renew_unknown > 0 && shown.len() == 1 && known > truth && known - truth <= landed {
        return Ok(Some(known));
    }
    Err(fail(
        model,
        format!(
            "the forecast shows a balance of {shown:?} cents, the account has {truth}: {} charge(s) since the last true one, a person changed it since: {}",
            charges - watch.charges_at_match,
            watch.person_changed
        ),
    ))
}

/// The check after a pass; `quiet`: nothing failed or was pending, so the charges must be the
/// oracle's exactly.
pub(super) fn check(
    model: &mut Model,
    summary: &PassSummary,
    quiet: bool,
) -> Result<(), TestCaseError> {
    let now = summary.started_at;
    let forecasts = &summary.funds;
    let until = oracle::window_end(now, Duration::days(FUNDS_HORIZON));
    if let Some(f) = forecasts.iter().find(|f| f.until != until) {
        return Err(fail(
            model,
            format!("the window ends at {}, the oracle's at {until}", f.until),
        ));
    }
    let Some(balance) = check_balance(model, forecasts, summary)? else {
        return Ok(());
    };
    let expected = oracle::charges(&subjects(model, now), Schedule::NineDaysDaily, now, until);
    if let Some(at) = oracle::shortfall(&expected, balance) {
        let said = forecasts
            .iter()
            .any(|f| !f.gaps().is_empty() || f.shortfall_at.is_some_and(|s| s <= at));
        if !said {
            return Err(fail(
                model,
                format!(
                    "the oracle is short from {at} with {balance} cents, and no forecast says short by then or incomplete: {forecasts:#?}\noracle {expected:#?}"
                ),
            ));
        }
    }
    if !quiet || forecasts.iter().any(|f| !f.sources_down.is_empty()) {
        return Ok(());
    }
    let want: BTreeSet<_> = expected
        .iter()
        .map(|e: &Expected| (e.at, e.id.clone(), e.by, Some(e.cents)))
        .collect();
    let got = forecast_charges(forecasts);
    let got_priced: BTreeSet<_> = got
        .iter()
        .map(|(at, id, by, cents)| {
            let cents = cents.or_else(|| {
                want.iter()
                    .find(|w| (w.0, &w.1, w.2) == (*at, id, *by))
                    .and_then(|w| w.3)
            });
            (*at, id.clone(), *by, cents)
        })
        .collect();
    if got_priced != want {
        return Err(fail(
            model,
            format!(
                "after a quiet pass the forecast's charges are not the oracle's:\nforecast {got:#?}\noracle   {want:#?}"
            ),
        ));
    }
    Ok(())
}

/// The most balance reads `span` may take by the rule of docs/how-it-works.md: one per
/// `top_up_check_interval` (15 min) while renewals are held for funds, one per
/// `balance_interval` (1 h), one after each pass that charged, one after each deduction
/// morning — per entry, each call up to `attempts` times.
pub(super) fn balance_budget(
    span: Duration,
    entries: u64,
    charging_passes: u64,
    attempts: u64,
) -> u64 {
    let secs = span.num_seconds().max(0) as u64;
    let per_entry = (secs / 900 + 1) + (secs / 3600 + 1) + charging_passes + (secs / 86_400 + 1);
    attempts * entries * per_entry
}

/// Balance calls so far.
pub(super) fn balance_calls(model: &Model) -> u64 {
    model.emulator.calls().count(Action::QueryAccountBalance)
}
