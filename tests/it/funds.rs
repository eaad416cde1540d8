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

// ------------------------------------------------------------------ issue 22: wrong numbers

/// A charge as the tests compare them: (instance, by, time, cents).
fn charges_of(f: &ecs_renewd::Forecast) -> Vec<(String, String, String, i64)> {
    f.charges
        .iter()
        .map(|c| {
            (
                c.instance_id.clone(),
                c.by.as_str().to_owned(),
                time::format_minutes(c.at),
                c.amount.cents,
            )
        })
        .collect()
}

/// An instance someone switched to auto-renew in the console, under a `renew` policy: the
/// provider charges it at its first attempt (T−9, 08:00 UTC+8), before the policy's
/// `renew_before` — whether the policy's time is beyond the window or inside it — at the
/// auto-renew duration's price, and the policy's later renewal is not counted too.
#[tokio::test]
async fn an_auto_renewing_instance_under_a_renew_policy_is_charged_by_the_provider_first() {
    // Expiry 03-21 00:00 UTC+8: the provider's first attempt is 03-12 08:00 UTC+8.
    let mut far = instance_spec("i-far", "2026-03-20T16:00Z");
    far.renewal_status = RenewalStatus::AutoRenewal;
    far.monthly_price = 500.0;
    let mut near = instance_spec("i-near", "2026-03-20T16:00Z");
    near.renewal_status = RenewalStatus::AutoRenewal;
    near.auto_renew_duration = 3;
    near.monthly_price = 100.0;
    near.tags = [("team".to_string(), "near".to_string())].into();
    let policies = r#"
[[policies]]
name = "near"
action = "renew"
renew_before = "6d"
[policies.match]
tags = { team = "near" }
[[policies]]
name = "far"
action = "renew"
renew_before = "2d"
"#;
    let h = Harness::start(harness_fleet(NOW, 300.0, vec![far, near]), policies).await;
    let f = &h.pass().await.funds[0];
    assert_eq!(
        charges_of(f),
        [
            (
                "i-far".into(),
                "auto-renew".into(),
                "2026-03-12T00:00Z".into(),
                50_000
            ),
            (
                "i-near".into(),
                "auto-renew".into(),
                "2026-03-12T00:00Z".into(),
                30_000
            ),
        ],
        "{f:#?}"
    );
    assert_eq!(
        f.shortfall_at,
        Some(time::parse("2026-03-12T00:00:00Z").unwrap())
    );
}

/// A balance remembered from before a provider deduction morning is read again after it: the
/// deduction took the money and moved its instance's expiry out of the window, so the old
/// balance would cover charges it no longer can.
#[tokio::test]
async fn a_balance_read_before_a_deduction_morning_is_read_again_after_it() {
    // 23:50Z is 07:50 UTC+8; the provider deducts i-auto (T−9) at 08:00 UTC+8 = 00:00Z.
    let now = "2026-03-11T23:50:00Z";
    let mut auto = instance_spec("i-auto", "2026-03-20T16:00Z");
    auto.renewal_status = RenewalStatus::AutoRenewal;
    auto.monthly_price = 500.0;
    auto.tags = [("team".to_string(), "auto".to_string())].into();
    let mut renew = instance_spec("i-renew", "2026-03-16T16:00Z");
    renew.monthly_price = 600.0;
    let policies = POLICIES
        .replace("balance_interval = \"0s\"", "balance_interval = \"1h\"")
        .replace("renew_before = \"2d\"", "renew_before = \"3d\"");
    let h = Harness::start(harness_fleet(now, 1000.0, vec![auto, renew]), &policies).await;
    let before = h.pass().await;
    assert_eq!(
        before.funds[0].available.as_ref().map(|m| m.cents),
        Some(100_000)
    );
    h.advance(std::time::Duration::from_secs(20 * 60));
    let after = h.pass().await;
    let f = &after.funds[0];
    assert_eq!(
        f.available.as_ref().map(|m| m.cents),
        Some(50_000),
        "read again after the 08:00 UTC+8 deduction: {f:#?}"
    );
    assert!(f.short(), "600 CNY due, 500 CNY left: {f:#?}");
}

/// A source that cannot be scanned leaves its instances' charges out: the account's forecast
/// says so (log, plan, status, a gauge, the alert), and is never taken for covered.
#[tokio::test]
async fn a_source_that_cannot_be_scanned_makes_the_forecast_incomplete_never_covered() {
    // One attempt per call, so one failed DescribeInstances takes the source down for a pass.
    let h = Harness::start(
        fleet(3000.0),
        &format!("{POLICIES}#harness:max_attempts=1\n"),
    )
    .await;
    h.emulator.add_fault(FaultSpec::fail_next(
        Action::DescribeInstances,
        1,
        "InternalError",
        500,
    ));
    let summary = h.pass().await;
    let f = &summary.funds[0];
    assert_eq!(f.sources_down, ["main/cn-hangzhou"], "{f:#?}");
    assert!(!f.covered(), "{f:#?}");
    assert!(
        f.describe()
            .contains("incomplete: main/cn-hangzhou could not be scanned"),
        "{}",
        f.describe()
    );
    let metrics = h.engine.metrics.render_registry();
    assert!(
        metrics.contains(
            "ecs_renewd_funds_forecast_incomplete{account=\"main\",reason=\"source_down\"} 1"
        ),
        "{metrics}"
    );
    let json = serde_json::to_value(&summary.funds).unwrap();
    assert_eq!(json[0]["sources_down"][0], "main/cn-hangzhou", "{json}");
    // Scanned again: complete, and the gauge back to 0.
    let f = &h.pass().await.funds[0];
    assert!(f.covered(), "{f:#?}");
    assert!(h.engine.metrics.render_registry().contains(
        "ecs_renewd_funds_forecast_incomplete{account=\"main\",reason=\"source_down\"} 0"
    ));
}

/// Found by the state machine's oracle: with the auto-renew attributes unreadable, the
/// provider's charges cannot be known, and the forecast said "covered" from the rest.
#[tokio::test]
async fn unreadable_auto_renew_attributes_make_the_forecast_incomplete_never_covered() {
    // 600 CNY covers one of the two charges (500 CNY each), not both.
    let h = Harness::start(
        fleet(600.0),
        &format!("{POLICIES}#harness:max_attempts=1\n"),
    )
    .await;
    h.emulator.add_fault(FaultSpec::fail_next(
        Action::DescribeInstanceAutoRenewAttribute,
        1,
        "InternalError",
        500,
    ));
    let summary = h.pass().await;
    let f = &summary.funds[0];
    assert!(!f.covered(), "{f:#?}");
    assert_eq!(f.auto_renew_unknown, ["i-auto", "i-renew"], "{f:#?}");
    assert!(
        f.describe()
            .contains("incomplete: the auto-renew attributes of 2 instance(s) could not be read"),
        "{}",
        f.describe()
    );
    assert!(h.engine.metrics.render_registry().contains(
        "ecs_renewd_funds_forecast_incomplete{account=\"main\",reason=\"auto_renew_unknown\"} 1"
    ));
    // Read again: the provider's deduction is counted, and the account is short.
    let f = &h.pass().await.funds[0];
    assert!(f.auto_renew_unknown.is_empty() && f.short(), "{f:#?}");
}

/// Found by the state machine's oracle: a renewal whose answer was lost may have charged the
/// account, and the forecast kept the balance read before it.
#[tokio::test]
async fn a_renewal_whose_answer_was_lost_makes_the_balance_be_read_again() {
    let policies = POLICIES.replace("balance_interval = \"0s\"", "balance_interval = \"1h\"");
    let h = Harness::start(
        fleet(3000.0),
        &format!("{policies}#harness:max_attempts=1\n"),
    )
    .await;
    // 03-11T15:30Z: nothing due yet; the balance is read.
    h.advance(std::time::Duration::from_secs(35 * 3600 + 1800));
    assert_eq!(
        h.pass().await.funds[0].available.as_ref().map(|m| m.cents),
        Some(300_000)
    );
    // 16:05Z: i-renew is due; the order is made and its answer lost.
    h.advance(std::time::Duration::from_secs(35 * 60));
    h.emulator.add_fault(ecs_emulator::FaultSpec::next(
        Action::RenewInstance,
        1,
        ecs_emulator::FaultKind::CommitThenDrop,
    ));
    let summary = h.pass().await;
    assert_eq!(summary.renew_unknown, 1, "{summary:?}");
    assert_eq!(h.emulator.orders().len(), 1);
    let f = &summary.funds[0];
    assert_eq!(
        f.available.as_ref().map(|m| m.cents),
        Some(250_000),
        "{f:#?}"
    );
}

/// Found by the state machine's oracle: a renewal request still on its way when the pass read
/// the balance is carried out later; the next pass, settling it, must not keep that balance.
#[tokio::test]
async fn a_charge_that_landed_after_the_balance_was_read_makes_it_be_read_again() {
    let policies = POLICIES.replace("balance_interval = \"0s\"", "balance_interval = \"1h\"");
    let h = Harness::start(
        fleet(3000.0),
        &format!("{policies}#harness:max_attempts=1\n"),
    )
    .await;
    // 03-11T16:05Z: i-renew is due; its request is cut off, outcome unknown.
    h.advance(std::time::Duration::from_secs(36 * 3600 + 300));
    h.emulator.add_fault(ecs_emulator::FaultSpec::next(
        Action::RenewInstance,
        1,
        ecs_emulator::FaultKind::Reset,
    ));
    let summary = h.pass().await;
    assert_eq!(summary.renew_unknown, 1, "{summary:?}");
    assert_eq!(
        summary.funds[0].available.as_ref().map(|m| m.cents),
        Some(300_000)
    );
    // The request reaches the provider after all (as a slow network delivers it).
    let token: String = rusqlite::Connection::open(h.state.path().join("ledger.db"))
        .unwrap()
        .query_row("SELECT client_token FROM intents", [], |r| r.get(0))
        .unwrap();
    let now = time::parse("2026-03-11T16:05:00Z").unwrap();
    h.emulator.with_world(|w| {
        w.renew(
            "main",
            "i-renew",
            1,
            ecs_wire::types::PeriodUnit::Month,
            Some(&token),
            now,
        )
        .unwrap();
    });
    h.advance(std::time::Duration::from_secs(600));
    let f = &h.pass().await.funds[0];
    assert_eq!(
        f.available.as_ref().map(|m| m.cents),
        Some(250_000),
        "{f:#?}"
    );
}

/// Found by the state machine's oracle: a renewal refused for permission is tried again at
/// its retry time (the grant may come any moment), yet the forecast left its charge out.
#[tokio::test]
async fn a_renewal_refused_for_permission_still_counts_at_its_next_attempt() {
    let h = Harness::start(
        fleet(3000.0),
        &format!("{POLICIES}#harness:max_attempts=1\n"),
    )
    .await;
    h.advance(std::time::Duration::from_secs(36 * 3600 + 300));
    h.emulator.add_fault(FaultSpec::fail_next(
        Action::RenewInstance,
        1,
        "Forbidden.RAM",
        403,
    ));
    let summary = h.pass().await;
    assert_eq!(
        (summary.renew_failed, summary.refused.len()),
        (1, 1),
        "{summary:?}"
    );
    // The next pass, while the refusal stands, counts it at its retry time.
    h.advance(std::time::Duration::from_secs(600));
    let later = h.pass().await;
    let f = &later.funds[0];
    let charge = f.charges.iter().find(|c| c.instance_id == "i-renew");
    assert!(
        charge.is_some_and(|c| Some(c.at) == summary.next_retry_at && c.amount.cents == 50_000),
        "{f:#?}\nnext retry {:?}",
        summary.next_retry_at
    );
}

/// A RAM policy missing `ecs:DescribeRenewalPrice`: the first refusal ends the account's
/// pricing for the pass and for `price_cache`, with one warning naming the action; the
/// charges are counted unpriced.
#[tokio::test]
async fn a_price_refused_for_permission_is_asked_once_and_said_once() {
    let mut instances = Vec::new();
    for n in 0..5 {
        let mut i = instance_spec(&format!("i-{n}"), "2026-03-13T16:00Z");
        i.monthly_price = 500.0;
        instances.push(i);
    }
    let mut fleet = harness_fleet(NOW, 300.0, instances);
    fleet.accounts[0].access_keys[0].denied_actions = vec![Action::DescribeRenewalPrice];
    let h = Harness::start(fleet, POLICIES).await;
    let logs = crate::support::AllThreadLogs::start();
    let f = &h.pass().await.funds[0];
    assert_eq!(f.unpriced.len(), 5, "{f:#?}");
    assert_eq!(
        h.emulator.calls().count(Action::DescribeRenewalPrice),
        1,
        "one refused call"
    );
    h.advance(std::time::Duration::from_secs(600));
    h.pass().await;
    assert_eq!(
        h.emulator.calls().count(Action::DescribeRenewalPrice),
        1,
        "not asked again within price_cache"
    );
    let text = logs.text();
    let warnings = text.matches("DescribeRenewalPrice was refused").count();
    assert_eq!(warnings, 1, "{text}");
    assert!(text.contains("ecs:DescribeRenewalPrice"), "{text}");
}

/// While a renewal is held for lack of funds, the balance is read at most once per
/// `top_up_check_interval` (15 minutes by default), not on every pass.
#[tokio::test]
async fn a_held_renewal_reads_the_balance_at_most_once_per_top_up_check_interval() {
    let policies = POLICIES.replace("balance_interval = \"0s\"", "balance_interval = \"1h\"");
    let h = Harness::start(fleet(0.0), &policies).await;
    h.advance(std::time::Duration::from_secs(2 * 86_400));
    assert_eq!(h.pass().await.renew_failed, 1, "held for lack of funds");
    let start = h.emulator.calls().count(Action::QueryAccountBalance);
    for _ in 0..12 {
        h.advance(std::time::Duration::from_secs(5 * 60));
        h.pass().await;
    }
    let reads = h.emulator.calls().count(Action::QueryAccountBalance) - start;
    assert!(
        reads <= 4,
        "60 minutes of 5-minute passes: {reads} balance reads"
    );
}

/// An AutoRenewal instance with no provider attempt left before its expiry lapses unless
/// someone renews it: flagged under any policy (or none), and no provider charge is forecast.
#[tokio::test]
async fn auto_renew_too_late_is_flagged_under_any_policy_and_not_forecast() {
    // NOW is 12:00 UTC+8 on 03-10; the expiry 03-11 00:00 UTC+8 leaves no 08:00 attempt.
    let mut late = instance_spec("i-late", "2026-03-10T16:00Z");
    late.renewal_status = RenewalStatus::AutoRenewal;
    late.tags = [("team".to_string(), "watch".to_string())].into();
    let policies = r#"
[[policies]]
name = "watch"
action = "observe"
[policies.match]
tags = { team = "watch" }
"#;
    let h = Harness::start(harness_fleet(NOW, 3000.0, vec![late]), policies).await;
    let summary = h.pass().await;
    let metrics = h.engine.metrics.render_registry();
    assert!(
        metrics.contains("ecs_renewd_auto_renew_too_late{account=\"main\"} 1"),
        "{metrics}"
    );
    let rows = h.engine.ledger.status_rows().unwrap();
    assert!(
        rows[0]
            .reason
            .contains("auto-renew cannot renew it in time"),
        "{rows:#?}"
    );
    let f = &summary.funds;
    assert!(
        f.iter()
            .all(|f| f.charges.is_empty() && f.unpriced.is_empty()),
        "no attempt that cannot occur: {f:#?}"
    );
}

/// An auto-renew instance whose provider deduction has failed since its first attempt is due
/// at the next attempt, not at the first one days ago.
#[tokio::test]
async fn an_auto_renew_instance_is_due_at_the_providers_next_attempt_not_its_first() {
    // Expiry 03-17 00:00 UTC+8: attempts from 03-07 08:00 UTC+8 (03-07T00:00Z), daily; the
    // next after NOW (03-10 12:00 UTC+8) is 03-11 08:00 UTC+8 = 03-11T00:00Z.
    let mut auto = instance_spec("i-auto", "2026-03-16T16:00Z");
    auto.renewal_status = RenewalStatus::AutoRenewal;
    auto.deduction_fails = true;
    let policy = "[[policies]]\nname = \"auto\"\naction = \"auto-renew\"\n";
    let h = Harness::start(harness_fleet(NOW, 3000.0, vec![auto]), policy).await;
    h.pass().await;
    let rows = h.engine.ledger.status_rows().unwrap();
    assert_eq!(
        rows[0].due_at,
        Some(time::parse("2026-03-11T00:00:00Z").unwrap()),
        "{rows:#?}"
    );
}

/// After a restart the forecast's quotes are gone: the top-up check prices a held renewal from
/// what its intent recorded (or asks), and retries it in the first pass.
#[tokio::test]
async fn after_a_restart_a_top_up_retries_the_held_renewal_in_the_first_pass() {
    let policies = HELD.replace(
        "balance_interval = \"0s\"\n",
        "balance_interval = \"0s\"\ntop_up_check_interval = \"0s\"\n",
    );
    let h = Harness::start(
        harness_fleet(NOW, 0.0, vec![instance_spec("i-held", "2026-03-13T16:00Z")]),
        &policies,
    )
    .await;
    assert_eq!(h.pass().await.renew_failed, 1);
    // The process stops and starts again over the same ledger.
    let Harness {
        emulator,
        clock,
        engine,
        state,
    } = h;
    drop(engine);
    let h = Harness {
        engine: Harness::engine(&emulator, &clock, state.path(), &policies).await,
        emulator,
        clock,
        state,
    };
    h.emulator
        .with_world(|w| assert!(w.set_balance("main", 1_000_000)));
    h.advance(std::time::Duration::from_secs(60));
    let summary = h.pass().await;
    assert_eq!(summary.top_ups.len(), 1, "{summary:#?}");
    assert_eq!((summary.renewed, summary.verified), (1, 1), "{summary:#?}");
}
