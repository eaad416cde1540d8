//! The funds forecast against the emulator, on its clock: a shortfall seen before the deduction
//! day and cleared by a top-up, a negative balance, a key that may not read the balance, the
//! other site's endpoint after `NotApplicable`, and the balance and price calls it makes.

use ecs_emulator::FaultSpec;
use ecs_wire::Action;
use ecs_wire::time;
use ecs_wire::types::RenewalStatus;

use crate::support::{Harness, harness_fleet, instance_spec};

const NOW: &str = "2026-03-10T04:00:00Z";

/// A `renew` policy two days ahead and an `auto-renew` policy for `team=auto`, with the
/// balance read on every pass.
const POLICIES: &str = r#"
[funds]
balance_interval = "0s"
[[policies]]
name = "auto"
action = "auto-renew"
[policies.match]
tags = { team = "auto" }
[[policies]]
name = "renew-all"
action = "renew"
renew_before = "2d"
"#;

/// `i-renew` is due for ecs-renewd's renewal at 03-11T16:00Z; `i-auto` is charged by the
/// provider at T−9 = 03-13 08:00 UTC+8 = 03-13T00:00Z; each costs 500 CNY a month.
fn fleet(balance: f64) -> ecs_emulator::EmulatorConfig {
    let mut renew = instance_spec("i-renew", "2026-03-13T16:00Z");
    renew.monthly_price = 500.0;
    let mut auto = instance_spec("i-auto", "2026-03-22T16:00Z");
    auto.monthly_price = 500.0;
    auto.renewal_status = RenewalStatus::AutoRenewal;
    auto.tags = [("team".to_string(), "auto".to_string())].into();
    harness_fleet(NOW, balance, vec![renew, auto])
}

fn gauge_line(h: &Harness, name: &str) -> Option<String> {
    h.engine
        .metrics
        .render_registry()
        .lines()
        .find(|l| l.starts_with(name))
        .map(str::to_owned)
}

#[tokio::test]
async fn a_short_account_is_warned_before_the_deduction_day_and_a_top_up_clears_it() {
    let h = Harness::start(fleet(300.0), POLICIES).await;
    let summary = h.pass().await;
    assert_eq!(summary.renewed, 0, "nothing is due yet");
    let f = &summary.funds[0];
    assert_eq!((f.account.as_str(), f.currency.as_str()), ("main", "CNY"));
    assert_eq!(f.available.as_ref().map(|m| m.cents), Some(30_000));
    assert_eq!((f.by_daemon.cents, f.by_provider.cents), (50_000, 50_000));
    // ecs-renewd's own renewal comes first and already exceeds 300 CNY.
    assert_eq!(
        f.shortfall_at,
        Some(time::parse("2026-03-11T16:00:00Z").unwrap())
    );
    assert_eq!(f.short_by.as_ref().map(|m| m.cents), Some(70_000));
    assert!(
        f.describe()
            .contains("1000.00 CNY of renewals due by 2026-03-18T00:00Z (1 by ecs-renewd, 1 by the provider's auto-renew), 300.00 CNY available — short by 700.00 CNY from 2026-03-11T16:00Z"),
        "{}",
        f.describe()
    );
    let at = time::parse("2026-03-11T16:00:00Z").unwrap().timestamp();
    assert_eq!(
        gauge_line(&h, "ecs_renewd_funds_shortfall_timestamp_seconds").as_deref(),
        Some(
            format!(
                "ecs_renewd_funds_shortfall_timestamp_seconds{{account=\"main\",currency=\"CNY\"}} {at}"
            )
            .as_str()
        )
    );
    let prices = h.emulator.calls().count(Action::DescribeRenewalPrice);
    assert_eq!(prices, 2, "one quote per upcoming charge");

    h.emulator
        .with_world(|w| assert!(w.set_balance("main", 150_000)));
    let summary = h.pass().await;
    let f = &summary.funds[0];
    assert_eq!(f.available.as_ref().map(|m| m.cents), Some(150_000));
    assert_eq!((f.shortfall_at, f.short_by.clone()), (None, None));
    assert_eq!(
        gauge_line(&h, "ecs_renewd_funds_shortfall_timestamp_seconds"),
        None,
        "a covered account has no shortfall series"
    );
    assert!(
        gauge_line(
            &h,
            "ecs_renewd_upcoming_charges{account=\"main\",by=\"auto-renew\",currency=\"CNY\"} 500"
        )
        .is_some(),
        "{}",
        h.engine.metrics.render_registry()
    );
    assert_eq!(
        h.emulator.calls().count(Action::DescribeRenewalPrice),
        prices,
        "quotes are reused within price_cache"
    );
    assert_eq!(h.emulator.calls().count(Action::QueryAccountBalance), 2);
    assert!(
        h.engine
            .metrics
            .render_registry()
            .contains("ecs_renewd_api_requests_total{action=\"QueryAccountBalance\""),
        "balance calls are counted with the API calls"
    );
}

#[tokio::test]
async fn a_negative_balance_is_short_from_the_first_charge() {
    let h = Harness::start(fleet(-11.19), POLICIES).await;
    let f = &h.pass().await.funds[0];
    assert_eq!(f.available.as_ref().map(|m| m.cents), Some(-1_119));
    assert_eq!(
        f.shortfall_at,
        Some(time::parse("2026-03-11T16:00:00Z").unwrap())
    );
    assert_eq!(f.short_by.as_ref().map(|m| m.cents), Some(101_119));
}

#[tokio::test]
async fn a_key_that_may_not_read_the_balance_makes_the_forecast_unknown_not_the_pass_failed() {
    let mut fleet = fleet(300.0);
    fleet.accounts[0].access_keys[0].denied_actions = vec![Action::QueryAccountBalance];
    let h = Harness::start(fleet, POLICIES).await;
    let summary = h.pass().await;
    assert_eq!(summary.result.as_str(), "ok");
    let f = &summary.funds[0];
    assert_eq!((f.available.clone(), f.shortfall_at), (None, None));
    let why = f.unknown.as_deref().unwrap_or_default();
    assert!(why.contains("NotAuthorized"), "{why}");
    assert_eq!(f.upcoming.cents, 100_000, "the charges are still listed");
    assert_eq!(gauge_line(&h, "ecs_renewd_account_available_amount"), None);
}

#[tokio::test]
async fn a_charge_that_cannot_be_priced_is_named_and_counted_not_dropped() {
    let h = Harness::start(fleet(3000.0), POLICIES).await;
    h.emulator.add_fault(FaultSpec::fail_next(
        Action::DescribeRenewalPrice,
        1,
        "InvalidParameter",
        400,
    ));
    let summary = h.pass().await;
    assert_eq!(summary.result.as_str(), "ok");
    let f = &summary.funds[0];
    assert_eq!(f.upcoming.cents, 50_000, "only the priced charge is summed");
    assert_eq!(f.unpriced.len(), 1, "{f:?}");
    let id = f.unpriced[0].instance_id.clone();
    assert_ne!(Some(&id), f.charges.first().map(|c| &c.instance_id));
    assert!(
        f.describe().contains(&format!(
            "; 1 more not priced: {id}), 3000.00 CNY available"
        )),
        "{}",
        f.describe()
    );
    assert_eq!(
        gauge_line(&h, "ecs_renewd_upcoming_charges_unpriced").as_deref(),
        Some("ecs_renewd_upcoming_charges_unpriced{account=\"main\",currency=\"CNY\"} 1")
    );
    let json = serde_json::to_value(&summary.funds).unwrap();
    assert_eq!(json[0]["unpriced"][0]["instance_id"], id.as_str(), "{json}");
    // A failed quote is not remembered: the next pass prices it.
    let f = &h.pass().await.funds[0];
    assert!(f.unpriced.is_empty(), "{f:?}");
    assert_eq!(f.upcoming.cents, 100_000);
    assert_eq!(
        gauge_line(&h, "ecs_renewd_upcoming_charges_unpriced").as_deref(),
        Some("ecs_renewd_upcoming_charges_unpriced{account=\"main\",currency=\"CNY\"} 0")
    );
}

#[tokio::test]
async fn not_applicable_on_the_sites_endpoint_asks_the_other_sites() {
    let h = Harness::start(fleet(300.0), POLICIES).await;
    h.emulator.add_fault(FaultSpec::fail_next(
        Action::QueryAccountBalance,
        1,
        "NotApplicable",
        400,
    ));
    let f = &h.pass().await.funds[0];
    assert_eq!(f.available.as_ref().map(|m| m.cents), Some(30_000));
    assert_eq!(h.emulator.calls().count(Action::QueryAccountBalance), 2);
}

#[tokio::test]
async fn the_balance_is_read_at_most_once_per_interval_and_not_at_all_when_off() {
    let h = Harness::start(fleet(300.0), &POLICIES.replace("\"0s\"", "\"1h\"")).await;
    h.pass().await;
    h.advance(std::time::Duration::from_secs(600));
    h.pass().await;
    assert_eq!(h.emulator.calls().count(Action::QueryAccountBalance), 1);
    h.advance(std::time::Duration::from_secs(3600));
    h.pass().await;
    assert_eq!(h.emulator.calls().count(Action::QueryAccountBalance), 2);

    let off = Harness::start(
        fleet(300.0),
        &format!("{POLICIES}\n[funds]\nenabled = false\n")
            .replace("[funds]\nbalance_interval = \"0s\"\n", ""),
    )
    .await;
    let summary = off.pass().await;
    assert!(summary.funds.is_empty());
    assert_eq!(off.emulator.calls().count(Action::QueryAccountBalance), 0);
}

/// Passes an hour apart (a cron cadence) from a renewal refused for lack of funds until its
/// order, with a top-up after `short_hours`: how long after the top-up the order came.
async fn hours_from_top_up_to_order(extra: &str, short_hours: u32) -> (u32, Vec<String>) {
    let mut due = instance_spec("i-held", "2026-03-16T16:00Z");
    due.monthly_price = 500.0;
    let h = Harness::start(harness_fleet(NOW, 10.0, vec![due]), extra).await;
    let mut retried = Vec::new();
    for hour in 0..48u32 {
        if hour == short_hours {
            h.emulator
                .with_world(|w| assert!(w.set_balance("main", 1_000_000)));
        }
        let summary = h.pass().await;
        retried.extend(summary.top_ups.iter().flat_map(|t| t.retried.clone()));
        if !h.emulator.orders().is_empty() {
            assert!(hour >= short_hours, "renewed before the top-up");
            return (hour - short_hours, retried);
        }
        h.advance(std::time::Duration::from_secs(3600));
    }
    panic!("no order within 48 hours");
}

const HELD: &str = r#"
[funds]
balance_interval = "0s"
[[policies]]
name = "renew-all"
action = "renew"
renew_before = "7d"
"#;

/// Before: a renewal refused for lack of funds waits out its persisted backoff (doubling from
/// 5 minutes to 6 hours) even after the account is topped up. After: the pass that sees the
/// top-up retries it.
#[tokio::test]
async fn a_top_up_retries_held_renewals_in_the_next_pass_instead_of_after_their_backoff() {
    let (with, retried) = hours_from_top_up_to_order(HELD, 10).await;
    assert_eq!(with, 0, "the pass after the top-up renews");
    assert_eq!(retried, vec!["i-held".to_string()]);
    let off = HELD.replace("balance_interval = \"0s\"", "enabled = false");
    let (without, retried) = hours_from_top_up_to_order(&off, 10).await;
    assert!(retried.is_empty());
    assert!(
        without >= 2,
        "without the forecast the backoff decides: {without} h"
    );
    println!(
        "time from top-up to order with hourly passes: {with} h with the forecast, {without} h without"
    );
}

const AUTO_ONLY: &str = r#"
[[policies]]
name = "auto"
action = "auto-renew"
"#;

/// Auto-renew switched on 13 hours before expiry, after the provider's last deduction attempt
/// (08:00 UTC+8) before it: the provider will never charge it. The pass says so (gauge, status
/// line) at once; with `fallback_renew` it renews once the day's deduction run is over instead
/// of waiting for the fallback point.
#[tokio::test]
async fn auto_renew_switched_on_too_late_is_flagged_and_the_fallback_renews_it() {
    // NOW is 12:00 UTC+8; the expiry 03-11 01:00 UTC+8; the last attempt was today 08:00.
    let late = || instance_spec("i-late", "2026-03-10T17:00Z");
    let h = Harness::start(harness_fleet(NOW, 1000.0, vec![late()]), AUTO_ONLY).await;
    h.pass().await;
    assert_eq!(
        gauge_line(&h, "ecs_renewd_auto_renew_too_late").as_deref(),
        Some("ecs_renewd_auto_renew_too_late{account=\"main\"} 1")
    );
    let status = h.engine.ledger.status_report(&Default::default()).unwrap();
    let row = &status.instances[0];
    assert!(
        row.reason.contains("auto-renew cannot renew it in time"),
        "{}",
        row.reason
    );
    assert!(h.emulator.orders().is_empty());

    let fallback = AUTO_ONLY.replace(
        "action = \"auto-renew\"",
        "action = \"auto-renew\"\nfallback_renew = true\nfallback_after = \"8d12h\"",
    );
    let h = Harness::start(harness_fleet(NOW, 1000.0, vec![late()]), &fallback).await;
    h.pass().await;
    assert!(
        h.emulator.orders().is_empty(),
        "not while the day's deduction run may still show"
    );
    // Renewed once the day's deduction run is over, 18:00 UTC+8 (10:00Z), not at the fallback
    // point (T−9 08:00 UTC+8 + 8.5 days = 20:00 UTC+8, 12:00Z).
    h.advance(std::time::Duration::from_secs(6 * 3600 + 60));
    let summary = h.pass().await;
    assert_eq!((summary.renewed, h.emulator.orders().len()), (1, 1));
    assert_eq!(
        gauge_line(&h, "ecs_renewd_auto_renew_too_late").as_deref(),
        Some("ecs_renewd_auto_renew_too_late{account=\"main\"} 0"),
        "renewed: nothing is too late any more"
    );
}

/// `status --json` carries the last pass's forecast (`last_pass.summary.funds`), each charge
/// with its instance, amount, time and who makes it.
#[tokio::test]
async fn the_status_report_carries_the_forecast() {
    let h = Harness::start(fleet(300.0), POLICIES).await;
    h.pass().await;
    let report = h.engine.ledger.status_report(&Default::default()).unwrap();
    let value = serde_json::to_value(&report).unwrap();
    let funds = &value["last_pass"]["summary"]["funds"][0];
    assert_eq!(funds["account"], "main");
    assert_eq!(funds["shortfall_at"], "2026-03-11T16:00:00Z");
    assert_eq!(funds["charges"][0]["instance_id"], "i-renew");
    assert_eq!(funds["charges"][0]["by"], "ecs-renewd");
    assert_eq!(funds["charges"][1]["by"], "auto-renew");
    assert_eq!(funds["charges"][1]["amount"]["cents"], 50_000);
}

/// The pass record (kept in the ledger every pass) lists a forecast's earliest charges and
/// counts the rest: a fleet with thousands of charges in the window would otherwise add
/// hundreds of kilobytes to the ledger each pass. The pass's own summary (metrics, logs) and
/// `plan` keep every charge.
#[tokio::test]
async fn the_pass_record_keeps_the_earliest_charges_and_counts_the_rest() {
    let instances: Vec<_> = (0..120)
        .map(|n| {
            let mut i = instance_spec(&format!("i-auto{n:03}"), "2026-03-22T16:00Z");
            i.renewal_status = RenewalStatus::AutoRenewal;
            i.tags = [("team".to_string(), "auto".to_string())].into();
            i
        })
        .collect();
    let h = Harness::start(harness_fleet(NOW, 100_000.0, instances), POLICIES).await;
    let summary = h.pass().await;
    assert_eq!(summary.funds[0].charges.len(), 120);
    let record = h.engine.ledger.last_pass().unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_str(&record.summary).unwrap();
    let funds = &json["funds"][0];
    assert_eq!(
        funds["charges"].as_array().map(Vec::len),
        Some(50),
        "{funds}"
    );
    assert_eq!(funds["charges_not_recorded"], 70, "{funds}");
    assert_eq!(
        funds["upcoming"],
        serde_json::to_value(&summary.funds[0].upcoming).unwrap(),
        "the sums cover every charge"
    );
    assert!(
        record.summary.len() < 20_000,
        "{} bytes",
        record.summary.len()
    );
}
