//! `plan` and `check-config` against the emulator: decisions, prices and belts in a stable JSON
//! shape; nothing mutating is ever sent; the binary's exit codes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ecs_emulator::settings::{AccessKeySpec, AccountSpec, InstanceSpec};
use ecs_emulator::{EmulatorConfig, EmulatorHandle};
use ecs_renewd::cloud::credentials::Environment;
use ecs_renewd::commands::plan;
use ecs_renewd::config::Config;
use ecs_wire::clock::VirtualClock;
use ecs_wire::time;
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};
use serde_json::json;

const NOW: &str = "2026-03-10T04:00:00Z";

fn spec(id: &str, expires: &str) -> InstanceSpec {
    InstanceSpec {
        id: Some(id.into()),
        account: None,
        region: "cn-hangzhou".into(),
        zone: None,
        name: Some(id.trim_start_matches("i-").into()),
        charge_type: ChargeType::PrePaid,
        expires_at: Some(time::parse(expires).unwrap()),
        expires_in: None,
        expired_ago: None,
        tags: BTreeMap::new(),
        security_groups: vec![],
        instance_type: "ecs.g6.large".into(),
        resource_group_id: String::new(),
        monthly_price: 100.0,
        renewal_status: RenewalStatus::Normal,
        auto_renew_duration: 1,
        auto_renew_unit: PeriodUnit::Month,
        deduction_fails: false,
    }
}

fn fleet() -> EmulatorConfig {
    let mut config = EmulatorConfig {
        accounts: vec![AccountSpec {
            uid: None,
            roles: Vec::new(),
            members: Vec::new(),
            name: "main".into(),
            balance: 10_000.0,
            currency: "CNY".into(),
            access_keys: vec![AccessKeySpec {
                id: "LTAIplan".into(),
                secret: "plan-secret".into(),
                security_token: None,
                expires_at: None,
                denied_actions: vec![],
            }],
        }],
        instances: vec![
            spec("i-due", "2026-03-13T16:00Z"),
            spec("i-later", "2026-03-30T16:00Z"),
            InstanceSpec {
                renewal_status: RenewalStatus::NotRenewal,
                ..spec("i-notrenew", "2026-03-12T16:00Z")
            },
            InstanceSpec {
                tags: [("ecs-renewd:skip".to_string(), String::new())].into(),
                ..spec("i-skip", "2026-03-12T16:00Z")
            },
            InstanceSpec {
                tags: [("team".to_string(), "auto".to_string())].into(),
                ..spec("i-auto", "2026-03-25T16:00Z")
            },
            spec("i-expired", "2026-03-08T16:00Z"),
            InstanceSpec {
                monthly_price: 5000.0,
                ..spec("i-dear", "2026-03-14T16:00Z")
            },
            InstanceSpec {
                charge_type: ChargeType::PostPaid,
                ..spec("i-postpaid", "2026-03-14T16:00Z")
            },
        ],
        ..EmulatorConfig::default()
    };
    config.settings.clock_start = Some(time::parse(NOW).unwrap());
    config.settings.clock_speed = 0.0;
    config
}

fn config_text(emulator: &EmulatorHandle) -> String {
    format!(
        r#"
[scan]
regions = ["cn-hangzhou"]
[[accounts]]
name = "main"
endpoint = "{}"
[accounts.credentials]
source = "env"
[accounts.rate_limit]
per_second = 100
burst = 10
[[policies]]
name = "auto"
action = "auto-renew"
[policies.match]
tags = {{ team = "auto" }}
[[policies]]
name = "renew-all"
action = "renew"
renew_before = "7d"
max_price = 2000.0
"#,
        emulator.url()
    )
}

fn env() -> Environment {
    Environment::from_pairs([
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIplan"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "plan-secret"),
    ])
}

async fn start() -> (EmulatorHandle, Arc<VirtualClock>) {
    let clock = Arc::new(VirtualClock::frozen(time::parse(NOW).unwrap()));
    let emulator =
        ecs_emulator::start_with_clock(fleet(), "127.0.0.1:0".parse().unwrap(), clock.clone())
            .await
            .unwrap();
    (emulator, clock)
}

#[tokio::test]
async fn plan_decides_prices_and_applies_belts_in_a_stable_json_shape() {
    let (emulator, clock) = start().await;
    // The forecast has its own test (below); this shape is the plan's without it.
    let text = format!("[funds]\nenabled = false\n{}", config_text(&emulator));
    let config = Config::parse(&text, Path::new("plan.toml"), &env()).unwrap();
    let report = plan::build(&config, &env(), clock).await.unwrap();
    let value = serde_json::to_value(&report).unwrap();
    let row = |id: &str,
               expires: &str,
               secs: i64,
               policy: serde_json::Value,
               decision: &str,
               state: &str,
               due: serde_json::Value,
               price: serde_json::Value,
               reason: &str| {
        json!({"account": "main", "region": "cn-hangzhou", "instance_id": id, "name": id.trim_start_matches("i-"),
               "expires_at": expires, "expires_in_seconds": secs, "policy": policy, "decision": decision,
               "state": state, "due_at": due, "price": price, "reason": reason})
    };
    let cny = |amount: f64| json!({"amount": amount, "currency": "CNY"});
    let expected = json!({
        "generated_at": "2026-03-10T04:00:00Z",
        "dry_run": false,
        "sources": [{"account": "main", "region": "cn-hangzhou", "ok": true, "instances": 7, "error": null}],
        "instances": [
            row("i-expired", "2026-03-08T16:00:00Z", -129600, json!("renew-all"), "renew", "due", json!("2026-03-01T16:00:00Z"), cny(100.0),
                "expired at 2026-03-08T16:00Z and not released: renew 1 Month"),
            row("i-notrenew", "2026-03-12T16:00:00Z", 216000, json!("renew-all"), "exclude", "excluded", json!(null), json!(null),
                "RenewalStatus is NotRenewal and policy renew-all does not set override_not_renewal: left to lapse"),
            row("i-skip", "2026-03-12T16:00:00Z", 216000, json!(null), "exclude", "excluded", json!(null), json!(null),
                "tagged ecs-renewd:skip: excluded whatever the policies say"),
            row("i-due", "2026-03-13T16:00:00Z", 302400, json!("renew-all"), "renew", "due", json!("2026-03-06T16:00:00Z"), cny(100.0),
                "expires 2026-03-13T16:00Z, within renew_before: renew 1 Month"),
            row("i-dear", "2026-03-14T16:00:00Z", 388800, json!("renew-all"), "hold", "due", json!("2026-03-07T16:00:00Z"), cny(5000.0),
                "expires 2026-03-14T16:00Z, within renew_before: renew 1 Month — held: the max_price limit would trip"),
            row("i-auto", "2026-03-25T16:00:00Z", 1339200, json!("auto"), "set-auto-renew", "ok", json!("2026-03-17T00:00:00Z"), json!(null),
                "auto-renew; the provider deducts from 2026-03-17T00:00Z"),
            row("i-later", "2026-03-30T16:00:00Z", 1771200, json!("renew-all"), "none", "ok", json!("2026-03-23T16:00:00Z"), json!(null),
                "renews 1 Month from 2026-03-23T16:00Z"),
        ],
        "renewals": 2,
        "held": 1,
        "auto_renew_changes": 1,
        "totals": [{"currency": "CNY", "renewals": 2, "amount": 200.0}],
        "limits": [{"limit": "max_price", "detail": "i-dear costs 5000.00 CNY, above max_price 2000.00 CNY"}],
    });
    assert_eq!(
        value,
        expected,
        "{}",
        serde_json::to_string_pretty(&value).unwrap()
    );
    let text = plan::render_text(&report);
    assert!(
        text.contains("2 renewal(s) would be made, 1 held by limits; 1 auto-renew change(s)"),
        "{text}"
    );
    assert!(text.contains("limit max_price would trip"), "{text}");
}

#[tokio::test]
async fn plan_sends_no_mutating_call() {
    let (emulator, clock) = start().await;
    let config = Config::parse(&config_text(&emulator), Path::new("plan.toml"), &env()).unwrap();
    plan::build(&config, &env(), clock).await.unwrap();
    let calls = emulator.calls();
    assert_eq!(calls.mutating(), 0, "{calls:?}");
    assert!(
        calls.count(ecs_wire::Action::DescribeRenewalPrice) >= 3,
        "plan prices every renewal: {calls:?}"
    );
    assert!(emulator.orders().is_empty());
}

#[tokio::test]
async fn a_spend_limit_that_would_trip_is_shown() {
    let (emulator, clock) = start().await;
    let text = config_text(&emulator).replace(
        "[scan]",
        "[limits]\nmax_spend_per_run = { CNY = 150.0 }\n[scan]",
    );
    let config = Config::parse(&text, Path::new("plan.toml"), &env()).unwrap();
    let report = plan::build(&config, &env(), clock).await.unwrap();
    assert_eq!((report.renewals, report.held), (0, 3));
    assert_eq!(report.limits[1].limit, "spend_per_run");
    assert_eq!(
        report.limits[1].detail,
        "200.00 CNY in one pass, limit 150.00 CNY"
    );
}

/// The international site's provider tries its first deduction at T−3 (docs/v3-and-bss.md §3.1),
/// so a fallback keyed to the China site's T−9 would renew ahead of the provider every cycle.
#[tokio::test]
async fn the_fallback_point_follows_the_international_deduction_schedule() {
    let clock = Arc::new(VirtualClock::frozen(time::parse(NOW).unwrap()));
    let mut fleet = fleet();
    fleet.instances = vec![InstanceSpec {
        tags: [("team".to_string(), "auto".to_string())].into(),
        renewal_status: RenewalStatus::AutoRenewal,
        ..spec("i-intl", "2026-03-15T16:00Z")
    }];
    let emulator =
        ecs_emulator::start_with_clock(fleet, "127.0.0.1:0".parse().unwrap(), clock.clone())
            .await
            .unwrap();
    let text = config_text(&emulator)
        .replace(
            "[accounts.credentials]",
            "site = \"international\"\n[accounts.credentials]",
        )
        .replace(
            "action = \"auto-renew\"\n",
            "action = \"auto-renew\"\nfallback_renew = true\n",
        );
    let config = Config::parse(&text, Path::new("plan.toml"), &env()).unwrap();
    let report = plan::build(&config, &env(), clock).await.unwrap();
    let row = &report.instances[0];
    // T−3 is 03-13 08:00 UTC+8; a day later is inside the provider's 08:00–18:00 run, so the
    // fallback waits for 03-14 18:00 UTC+8 = 03-14T10:00Z.
    assert_eq!(
        (row.decision.as_str(), row.due_at),
        ("none", Some(time::parse("2026-03-14T10:00:00Z").unwrap())),
        "{}",
        row.reason
    );
    assert_eq!(report.renewals, 0);
}

#[tokio::test]
async fn plan_prints_the_funds_forecast_per_account() {
    let (emulator, clock) = start().await;
    emulator.with_world(|w| assert!(w.set_balance("main", 15_000)));
    let config = Config::parse(&config_text(&emulator), Path::new("plan.toml"), &env()).unwrap();
    let report = plan::build(&config, &env(), clock).await.unwrap();
    // Due now: i-expired, i-due and i-dear (100 + 100 + 5,000 CNY); the provider charges
    // i-auto (its policy switches auto-renew on) at T−9 = 03-16T00:00Z (100 CNY); i-later is
    // due 03-23, after the window (03-11T00:00Z + 7 days).
    let f = &report.funds[0];
    assert_eq!((f.by_daemon.cents, f.by_provider.cents), (520_000, 10_000));
    assert_eq!(f.available.as_ref().map(|m| m.cents), Some(15_000));
    assert_eq!(f.shortfall_at, Some(time::parse(NOW).unwrap()));
    let value = serde_json::to_value(&report).unwrap();
    assert_eq!(value["funds"][0]["short_by"]["cents"], 515_000);
    let text = plan::render_text(&report);
    assert!(
        text.contains("FUNDS SHORT: account main: 5300.00 CNY of renewals due by 2026-03-18T00:00Z (3 by ecs-renewd, 1 by the provider's auto-renew), 150.00 CNY available — short by 5150.00 CNY from 2026-03-10T04:00Z"),
        "{text}"
    );
    assert_eq!(
        emulator
            .calls()
            .count(ecs_wire::Action::DescribeRenewalPrice),
        4,
        "the forecast reuses the plan's three quotes and asks only i-auto's"
    );
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ecs-renewd"))
}

#[tokio::test]
async fn the_binary_exits_0_for_a_usable_config_and_78_for_a_broken_one() {
    // The binary signs with the wall clock: this emulator follows real time, with expiries
    // relative to now.
    let relative = |id: &str, days: &str| InstanceSpec {
        expires_at: None,
        expires_in: Some(days.into()),
        ..spec(id, NOW)
    };
    let emulator = ecs_emulator::start(
        EmulatorConfig {
            settings: Default::default(),
            instances: vec![
                relative("i-a", "2d"),
                relative("i-b", "5d"),
                relative("i-c", "20d"),
            ],
            ..fleet()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config_text(&emulator)).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config_text(&emulator)
            .replace("period", "perriod")
            .replace("renew_before", "renew_befor"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut cmd = binary();
        cmd.args(args)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIplan")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "plan-secret")
            .env("RUST_LOG", "warn");
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let ok = run(&["check-config", "--config", good.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("good.toml: OK"));
    let broken = run(&["check-config", "--config", bad.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(broken.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&broken.stderr);
    assert!(
        stderr.contains("bad.toml:20:1: policies[1].renew_befor: unknown field `renew_befor`"),
        "{stderr}"
    );
    let missing = run(&["check-config", "--config", "/nonexistent/config.toml"])
        .await
        .unwrap();
    assert_eq!(missing.status.code(), Some(78));
    let json = run(&["plan", "--json", "--config", good.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(
        json.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["instances"].as_array().unwrap().len(), 3);
    assert_eq!(value["renewals"], 2);
    assert_eq!(emulator.calls().mutating(), 0);
}

/// A fleet for the agreement test: `renewals` instances due for renewal (100 CNY each, one of
/// them 5,000 CNY when `dear`), and `switch_ons` whose policy switches auto-renew on.
fn agreement_fleet(renewals: usize, dear: bool, switch_ons: usize) -> EmulatorConfig {
    let mut instances: Vec<InstanceSpec> = (0..renewals)
        .map(|i| crate::support::instance_spec(&format!("i-due{i}"), "2026-03-12T16:00Z"))
        .collect();
    if dear {
        instances[0].monthly_price = 5_000.0;
    }
    for i in 0..switch_ons {
        let mut spec = crate::support::instance_spec(&format!("i-auto{i}"), "2026-03-28T16:00Z");
        spec.tags = [("team".to_string(), "auto".to_string())].into();
        instances.push(spec);
    }
    instances.push(crate::support::instance_spec(
        "i-later",
        "2026-03-16T16:00Z",
    ));
    crate::support::harness_fleet(NOW, 20_000.0, instances)
}

const AGREEMENT_POLICIES: &str = r#"
[[policies]]
name = "auto"
action = "auto-renew"
[policies.match]
tags = { team = "auto" }
[[policies]]
name = "renew-all"
action = "renew"
renew_before = "3d"
max_price = 2000.0
"#;

/// Plans, then runs the pass the plan foresaw, over the same ledger and emulator, and checks
/// that they agree: renewals made, holds, auto-renew changes, belts tripped, and the funds
/// forecast once this pass's charges are taken out.
async fn plan_then_pass(
    fleet: EmulatorConfig,
    extra: &str,
) -> (plan::PlanReport, ecs_renewd::reconcile::PassSummary) {
    let h = crate::support::Harness::start(fleet, extra).await;
    let text = crate::support::Harness::config_text(&h.emulator, h.state.path(), extra);
    let env = crate::support::Harness::env();
    let config = Config::parse(&text, Path::new("harness.toml"), &env).unwrap();
    let report = plan::build(&config, &env, h.clock.clone()).await.unwrap();
    let summary = h.pass().await;
    let trips: Vec<(String, String)> = summary
        .trips
        .iter()
        .map(|t| (t.limit.as_str().to_owned(), t.detail.clone()))
        .collect();
    let limits: Vec<(String, String)> = report
        .limits
        .iter()
        .map(|l| (l.limit.clone(), l.detail.clone()))
        .collect();
    assert_eq!(limits, trips, "the plan and the pass trip the same belts");
    assert_eq!(
        (report.renewals, report.held, report.auto_renew_changes),
        (
            summary.renewed + summary.dry_run_renewals,
            summary.held,
            summary.auto_renew_changed + summary.dry_run_auto_renew_changes
        ),
        "renewals, holds and auto-renew changes: plan {report:#?}\npass {summary:#?}"
    );
    assert_eq!(summary.renew_failed + summary.renew_unknown, 0);
    let spent: i64 = summary.spend.values().map(|m| m.cents).sum();
    for (planned, passed) in report.funds.iter().zip(&summary.funds) {
        assert_eq!(planned.account, passed.account);
        let charged = if summary.dry_run_renewals > 0 {
            0
        } else {
            spent
        };
        assert_eq!(
            planned.upcoming.cents - charged,
            passed.upcoming.cents,
            "the pass's forecast is the plan's less this pass's charges: plan {planned:#?}\npass {passed:#?}"
        );
        assert_eq!(
            planned.available.as_ref().map(|m| m.cents - charged),
            passed.available.as_ref().map(|m| m.cents)
        );
        assert_eq!(planned.short_by, passed.short_by);
    }
    assert_eq!(report.funds.len(), summary.funds.len());
    (report, summary)
}

#[tokio::test]
async fn the_plan_and_the_next_pass_agree_when_belts_trip() {
    // Twelve switch-ons against a limit of five hold every switch-on of the pass; the dear
    // renewal trips max_price.
    let extra = format!("[limits]\nmax_auto_renew_enables_per_run = 5\n{AGREEMENT_POLICIES}");
    let (report, summary) = plan_then_pass(agreement_fleet(3, true, 12), &extra).await;
    let limits: Vec<&str> = report.limits.iter().map(|l| l.limit.as_str()).collect();
    assert_eq!(limits, ["max_price", "auto_renew_enables_per_run"]);
    assert_eq!(
        (summary.renewed, summary.held, summary.auto_renew_changed),
        (2, 1, 0)
    );
}

#[tokio::test]
async fn the_plan_and_the_next_pass_agree_when_nothing_trips() {
    let (report, summary) = plan_then_pass(agreement_fleet(4, false, 3), AGREEMENT_POLICIES).await;
    assert!(report.limits.is_empty());
    assert_eq!((summary.renewed, summary.auto_renew_changed), (4, 3));
    let f = &report.funds[0];
    assert_eq!(
        f.by_daemon.cents,
        4 * 10_000 + 10_000,
        "four due now and i-later in the window"
    );
}

#[tokio::test]
async fn the_plan_and_the_next_pass_agree_in_a_dry_run() {
    let extra = format!("#harness:dry_run\n{AGREEMENT_POLICIES}");
    let (report, summary) = plan_then_pass(agreement_fleet(4, false, 3), &extra).await;
    assert!(report.dry_run);
    assert_eq!((summary.dry_run_renewals, summary.renewed), (4, 0));
    assert_eq!(
        (
            summary.dry_run_auto_renew_changes,
            summary.auto_renew_changed
        ),
        (3, 0)
    );
}
