//! Chaos soak. In process: the reconcile engine and the emulator share one virtual clock; about
//! 2,000 instances in four regions and two accounts (one on rotating RAM-role credentials) live
//! through 60 simulated days under mixed policies while seeded random faults hit them — 5xx,
//! resets, timeouts, throttling bursts, commit-then-drop renewals, malformed bodies, balance
//! outages of one to four days, a region down for a day, revoked and expiring credentials. As a
//! process: the real binary is killed with SIGKILL at random points at least 20 times and
//! restarted. Both end by checking, against the emulator's order book and the ledger:
//! at most one order per (instance, expiry cycle); no renew-policy instance lapsed while funds
//! and its region were available; every order has its ledger record and vice versa; every
//! failure is counted in the metrics. Figures go to target/reliability/*.json.
//!
//! CI variant: `cargo test --test it soak::`. Long variant:
//! `ECS_RENEWD_SOAK=long ECS_RENEWD_SOAK_SEED=20261126 cargo test --release --test it soak:: -- --nocapture`.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ecs_emulator::instance::Lifecycle;
use ecs_emulator::settings::{AccessKeySpec, AccountSpec, InstanceSpec};
use ecs_emulator::world::AccessKey;
use ecs_emulator::{EmulatorConfig, EmulatorHandle, FaultKind, FaultSpec};
use ecs_renewd::cloud::credentials::Environment;
use ecs_renewd::config::Config;
use ecs_renewd::ledger::Ledger;
use ecs_wire::Action;
use ecs_wire::clock::{Clock, VirtualClock};
use ecs_wire::secret::Secret;
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use support::{Recorded, Reply, Stub};

const REGIONS: [&str; 4] = ["cn-hangzhou", "cn-beijing", "cn-shanghai", "ap-southeast-1"];

struct Options {
    instances: usize,
    days: i64,
    step_hours: i64,
    seed: u64,
    kills: usize,
    variant: &'static str,
}

fn options() -> Options {
    let seed = std::env::var("ECS_RENEWD_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_126);
    if std::env::var("ECS_RENEWD_SOAK").as_deref() == Ok("long") {
        Options {
            instances: 6_000,
            days: 180,
            step_hours: 2,
            seed,
            kills: 60,
            variant: "long",
        }
    } else {
        Options {
            instances: 2_000,
            days: 60,
            step_hours: 3,
            seed,
            kills: 20,
            variant: "ci",
        }
    }
}

fn write_figures(name: &str, value: &serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reliability");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), serde_json::to_string_pretty(value).unwrap()).unwrap();
}

/// Each instance's role, by tag: what its policy is.
fn role_of(n: usize) -> &'static str {
    match n % 20 {
        0..=7 => "renew",
        8..=10 => "auto-fallback",
        11..=12 => "auto",
        13..=14 => "lapse",
        15..=16 => "observe",
        17 => "skip",
        _ => "postpaid",
    }
}

fn fleet(options: &Options, start: DateTime<Utc>, rng: &mut StdRng) -> EmulatorConfig {
    let mut instances = Vec::with_capacity(options.instances);
    for n in 0..options.instances {
        let role = role_of(n);
        // Expiries from 5 days ago to 60 days ahead, at 00:00 UTC+8.
        let days = rng.random_range(-5i64..=60);
        let expires_at = ecs_wire::time::start_of_day_utc8(start + chrono::Duration::days(days))
            + chrono::Duration::days(1);
        let mut tags: BTreeMap<String, String> = [("role".to_string(), role.to_string())].into();
        if role == "skip" {
            tags.insert("ecs-renewd:skip".into(), String::new());
        }
        instances.push(InstanceSpec {
            id: Some(format!("i-soak{n:05}")),
            account: Some(if n % 2 == 0 { "alpha" } else { "beta" }.into()),
            region: REGIONS[(n / 2) % REGIONS.len()].into(),
            zone: None,
            name: Some(format!("soak-{n}")),
            charge_type: if role == "postpaid" {
                ChargeType::PostPaid
            } else {
                ChargeType::PrePaid
            },
            expires_at: Some(expires_at),
            expires_in: None,
            expired_ago: None,
            tags,
            security_groups: vec![],
            instance_type: "ecs.g6.large".into(),
            resource_group_id: String::new(),
            monthly_price: rng.random_range(10..200) as f64,
            renewal_status: if role.starts_with("auto") {
                RenewalStatus::AutoRenewal
            } else {
                RenewalStatus::Normal
            },
            auto_renew_duration: 1,
            auto_renew_unit: PeriodUnit::Month,
            // A share of auto-renewing instances whose provider deduction always fails.
            deduction_fails: role.starts_with("auto") && n % 3 == 0,
        });
    }
    let mut config = EmulatorConfig {
        accounts: vec![
            AccountSpec {
                uid: None,
                roles: Vec::new(),
                members: Vec::new(),
                name: "alpha".into(),
                balance: 5_000_000.0,
                currency: "CNY".into(),
                access_keys: vec![AccessKeySpec {
                    id: "LTAIsoakalpha".into(),
                    secret: "soak-alpha-secret".into(),
                    security_token: None,
                    expires_at: None,
                    denied_actions: vec![],
                }],
            },
            AccountSpec {
                uid: None,
                roles: Vec::new(),
                members: Vec::new(),
                name: "beta".into(),
                balance: 5_000_000.0,
                currency: "CNY".into(),
                access_keys: vec![],
            },
        ],
        instances,
        ..EmulatorConfig::default()
    };
    config.settings.clock_start = Some(start);
    config.settings.clock_speed = 0.0;
    config.settings.renew_visibility_delay = Duration::from_secs(300);
    config
}

fn config_text(emulator: &EmulatorHandle, dir: &Path, metadata: &str) -> String {
    format!(
        r#"[daemon]
state_dir = "{state}"
[scan]
regions = ["cn-hangzhou", "cn-beijing", "cn-shanghai", "ap-southeast-1"]
concurrency = 8
[limits]
max_renewals_per_run = 5000
max_renewals_per_day = 50000
[retry]
verify_timeout = "100ms"
verify_interval = "50ms"
[[accounts]]
name = "alpha"
endpoint = "{url}"
[accounts.credentials]
source = "file"
access_key_id = "LTAIsoakalpha"
access_key_secret_file = "{secret}"
[accounts.rate_limit]
per_second = 1000
burst = 100
[accounts.read_timeouts]
RenewInstance = "300ms"
DescribeInstances = "300ms"
[accounts.call_retry]
base_delay = "5ms"
max_delay = "20ms"
max_retry_after = "1s"
[[accounts]]
name = "beta"
endpoint = "{url}"
[accounts.credentials]
source = "ram-role"
metadata_url = "{metadata}"
ram_role_name = "soak-role"
[accounts.rate_limit]
per_second = 1000
burst = 100
[accounts.read_timeouts]
RenewInstance = "300ms"
DescribeInstances = "300ms"
[accounts.call_retry]
base_delay = "5ms"
max_delay = "20ms"
max_retry_after = "1s"
[[policies]]
name = "renew"
action = "renew"
renew_before = "7d"
[policies.match]
tags = {{ role = "renew" }}
[[policies]]
name = "auto-fallback"
action = "auto-renew"
fallback_renew = true
[policies.match]
tags = {{ role = "auto-fallback" }}
[[policies]]
name = "auto"
action = "auto-renew"
[policies.match]
tags = {{ role = "auto" }}
[[policies]]
name = "lapse"
action = "not-renewal"
[policies.match]
tags = {{ role = "lapse" }}
[[policies]]
name = "observe"
action = "observe"
"#,
        state = dir.join("state").display(),
        url = emulator.url(),
        secret = dir.join("alpha.secret").display(),
    )
}

/// A metadata service handing out 6-hour STS credentials for account beta, each registered
/// with the emulator as it is issued.
async fn metadata_service(
    emulator: Arc<EmulatorHandle>,
    clock: Arc<VirtualClock>,
    issued: Arc<AtomicU64>,
) -> Stub {
    Stub::start(move |request: &Recorded, _| match (request.method.as_str(), request.path.as_str()) {
        ("PUT", "/latest/api/token") => Reply::raw(200, "soak-token"),
        ("GET", "/latest/meta-data/ram/security-credentials/soak-role") => {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            let expiration = clock.now() + chrono::Duration::hours(6);
            let (id, secret, token) = (format!("STS.soakbeta{n}"), format!("sts-secret-{n}"), format!("sts-token-{n}"));
            emulator.with_world(|w| {
                w.put_key(&id, AccessKey { account: "beta".into(), secret: Secret::new(secret.clone()), security_token: Some(token.clone()), expires_at: Some(expiration), denied_actions: vec![] })
            });
            Reply::json(200, json!({"Code": "Success", "AccessKeyId": id, "AccessKeySecret": secret, "SecurityToken": token,
                "Expiration": ecs_wire::time::format_seconds(expiration)}))
        }
        _ => Reply::raw(404, ""),
    })
    .await
}

#[derive(Default)]
struct Outages {
    /// (account, from, until).
    funds: Vec<(String, DateTime<Utc>, DateTime<Utc>)>,
    /// (region, from, until).
    regions: Vec<(String, DateTime<Utc>, DateTime<Utc>)>,
}

impl Outages {
    /// Whether something outside the daemon's control stood in the way of renewing `instance`
    /// during the day before `expiry`.
    fn excuse(&self, account: &str, region: &str, expiry: DateTime<Utc>) -> bool {
        let from = expiry - chrono::Duration::days(1);
        let overlaps = |a: DateTime<Utc>, b: DateTime<Utc>| a < expiry && b > from;
        self.funds
            .iter()
            .any(|(acc, a, b)| acc == account && overlaps(*a, *b))
            || self
                .regions
                .iter()
                .any(|(r, a, b)| r == region && overlaps(*a, *b))
    }
}

fn random_action(rng: &mut StdRng) -> Action {
    Action::ALL[rng.random_range(0..Action::ALL.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaos_soak_keeps_every_promise() {
    let options = options();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let start = ecs_wire::time::parse("2026-01-05T02:00:00Z").unwrap();
    let clock = Arc::new(VirtualClock::frozen(start));
    let emulator = Arc::new(
        ecs_emulator::start_with_clock(
            fleet(&options, start, &mut rng),
            "127.0.0.1:0".parse().unwrap(),
            clock.clone(),
        )
        .await
        .unwrap(),
    );
    let issued = Arc::new(AtomicU64::new(0));
    let metadata = metadata_service(emulator.clone(), clock.clone(), issued.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("alpha.secret");
    std::fs::write(&key_file, "soak-alpha-secret").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let text = config_text(&emulator, dir.path(), &metadata.url());
    let config = Config::parse(&text, Path::new("soak.toml"), &Environment::default()).unwrap();
    let engine = match ecs_renewd::commands::once::engine(
        config,
        &Environment::default(),
        clock.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    {
        Ok(engine) => engine,
        Err(e) => panic!("{e}"),
    };

    let initially_expired: BTreeSet<String> = emulator.with_world(|w| {
        w.instances()
            .filter(|i| i.lifecycle(start, &w.settings) != Lifecycle::Active)
            .map(|i| i.id.clone())
            .collect()
    });
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut outages = Outages::default();
    let mut balance_back: Vec<(String, DateTime<Utc>)> = Vec::new();
    let mut lapses: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut excused: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut passes: BTreeMap<String, u64> = BTreeMap::new();
    let steps = options.days * 24 / options.step_hours;
    for _ in 0..steps {
        let now = clock.now();
        // Faults for this step, drawn from the seeded generator.
        let mut add = |kind: &'static str, spec: FaultSpec| {
            *faults.entry(kind).or_default() += 1;
            emulator.add_fault(spec);
        };
        let region = REGIONS[rng.random_range(0..REGIONS.len())].to_string();
        if rng.random_bool(0.3) {
            let action = random_action(&mut rng);
            add(
                "5xx",
                FaultSpec {
                    region: Some(region.clone()),
                    ..FaultSpec::fail_next(
                        action,
                        rng.random_range(1..=3),
                        "ServiceUnavailable",
                        503,
                    )
                },
            );
        }
        if rng.random_bool(0.15) {
            add(
                "reset",
                FaultSpec::next(
                    random_action(&mut rng),
                    rng.random_range(1..=2),
                    FaultKind::Reset,
                ),
            );
        }
        if rng.random_bool(0.15) {
            let action = if rng.random_bool(0.5) {
                Action::RenewInstance
            } else {
                Action::DescribeInstances
            };
            add("timeout", FaultSpec::latency(action, 450));
        }
        if rng.random_bool(0.1) {
            let spec = FaultSpec {
                region: Some(region.clone()),
                ..FaultSpec::next(
                    random_action(&mut rng),
                    rng.random_range(5..=15),
                    FaultKind::Error {
                        code: "Throttling".into(),
                        status: 400,
                        message: None,
                        retry_after_ms: Some(10),
                    },
                )
            };
            add("throttling_burst", spec);
        }
        if rng.random_bool(0.15) {
            add(
                "commit_then_drop",
                FaultSpec::next(Action::RenewInstance, 1, FaultKind::CommitThenDrop),
            );
        }
        if rng.random_bool(0.1) {
            add(
                "malformed",
                FaultSpec::next(random_action(&mut rng), 1, FaultKind::Malformed),
            );
        }
        if rng.random_bool(0.02) && !outages.regions.iter().any(|(_, _, until)| *until > now) {
            let until = now + chrono::Duration::days(1);
            outages.regions.push((region.clone(), now, until));
            add(
                "region_down_1d",
                FaultSpec {
                    action: None,
                    region: Some(region.clone()),
                    account: None,
                    count: None,
                    until: Some(until),
                    kind: FaultKind::Error {
                        code: "ServiceUnavailable".into(),
                        status: 503,
                        message: None,
                        retry_after_ms: None,
                    },
                },
            );
        }
        for account in ["alpha", "beta"] {
            if rng.random_bool(0.03) && !balance_back.iter().any(|(a, _)| a == account) {
                let until = now + chrono::Duration::days(rng.random_range(1..=4));
                emulator.with_world(|w| w.set_balance(account, 0));
                balance_back.push((account.to_string(), until));
                outages.funds.push((account.to_string(), now, until));
                *faults.entry("balance_outage").or_default() += 1;
            }
        }
        balance_back.retain(|(account, until)| {
            if *until <= now {
                emulator.with_world(|w| w.set_balance(account, 500_000_000));
                false
            } else {
                true
            }
        });
        if rng.random_bool(0.02) {
            // The current STS key is revoked (expired early); the daemon must fetch a new one.
            let current = format!("STS.soakbeta{}", issued.load(Ordering::SeqCst));
            if emulator.with_world(|w| w.revoke_key(&current)) {
                *faults.entry("credentials_revoked").or_default() += 1;
            }
        }

        let summary = engine.run_pass().await.expect("no ledger failure");
        *passes
            .entry(summary.result.as_str().to_owned())
            .or_default() += 1;

        // Lapses: a renew-policy instance past its expiry.
        let now = clock.now();
        emulator.with_world(|w| {
            for i in w.instances() {
                if i.tags.iter().any(|(k, v)| k == "role" && v == "renew")
                    && !initially_expired.contains(&i.id)
                    && i.lifecycle(now, &w.settings) == Lifecycle::Expired
                    && !lapses.contains_key(&i.id)
                    && !excused.contains_key(&i.id)
                {
                    if outages.excuse(&i.account, &i.region, i.true_expiry()) {
                        excused.insert(i.id.clone(), i.true_expiry());
                    } else {
                        lapses.insert(i.id.clone(), i.true_expiry());
                    }
                }
            }
        });
        clock.advance(Duration::from_secs(options.step_hours as u64 * 3600));
    }
    *faults.entry("sts_rotations").or_default() += issued.load(Ordering::SeqCst);

    // One last calm pass so that pending renewals settle.
    emulator.with_world(|w| {
        w.set_balance("alpha", 500_000_000);
        w.set_balance("beta", 500_000_000);
    });
    clock.advance(Duration::from_secs(3600));
    engine.run_pass().await.expect("no ledger failure");

    let orders = emulator.orders();
    let ledger: &Ledger = &engine.ledger;
    let checks = check_invariants(&orders, ledger);
    let metrics = engine.metrics.render(&engine.ledger);
    let metric_sum = |prefix: &str, not: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix) && !l.contains(not))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let failed_attempts = {
        let conn = rusqlite::Connection::open(dir.path().join("state/ledger.db")).unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM attempts WHERE outcome IN ('failed','unknown')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        n as f64
    };
    let surfaced = metric_sum("ecs_renewd_renewals_total{", "result=\"ok\"");
    let api_calls = metric_sum("ecs_renewd_api_requests_total{", "\u{0}");
    let emulator_calls = emulator.calls().by_action.values().sum::<u64>() as f64;

    let renewal_orders = orders.iter().filter(|o| o.kind == "renew").count();
    let figures = json!({
        "variant": options.variant,
        "seed": options.seed,
        "instances": options.instances,
        "simulated_days": options.days,
        "passes": passes,
        "faults_injected": faults,
        "orders": orders.len(),
        "renewal_orders_by_the_daemon": renewal_orders,
        "provider_auto_renew_orders": orders.len() - renewal_orders,
        "double_charges": checks.double_charges.len(),
        "lapses": lapses.len(),
        "lapses_excused_by_outages": excused.len(),
        "orders_without_ledger_record": checks.orders_without_record.len(),
        "ledger_orders_without_cloud_order": checks.records_without_order.len(),
        "failed_or_unknown_attempts_in_ledger": failed_attempts,
        "failed_or_unknown_renewals_in_metrics": surfaced,
        "api_calls_counted_by_the_daemon": api_calls,
        "api_calls_received_by_the_emulator": emulator_calls,
        "command": format!("ECS_RENEWD_SOAK={} ECS_RENEWD_SOAK_SEED={} cargo test --release --test it soak:: -- --nocapture", options.variant, options.seed),
    });
    println!("{}", serde_json::to_string_pretty(&figures).unwrap());
    write_figures(&format!("soak-{}.json", options.variant), &figures);

    assert!(
        checks.double_charges.is_empty(),
        "double charges: {:?}",
        checks.double_charges
    );
    assert!(
        lapses.is_empty(),
        "renew-policy instances lapsed with funds and region available: {lapses:?}"
    );
    assert!(
        checks.orders_without_record.is_empty(),
        "orders without a ledger record: {:?}",
        checks.orders_without_record
    );
    assert!(
        checks.records_without_order.is_empty(),
        "ledger orders the cloud does not have: {:?}",
        checks.records_without_order
    );
    assert_eq!(
        surfaced, failed_attempts,
        "every failed or unknown renewal attempt is counted in the metrics"
    );
    assert_eq!(
        api_calls, emulator_calls,
        "every API call is counted in the metrics"
    );
    assert!(
        renewal_orders > options.instances / 4,
        "the soak renewed plenty ({renewal_orders})"
    );
    assert!(
        faults.values().sum::<u64>() > 100,
        "plenty of faults were injected: {faults:?}"
    );
}

struct Checks {
    double_charges: Vec<(String, DateTime<Utc>, usize)>,
    orders_without_record: Vec<String>,
    records_without_order: Vec<String>,
}

fn check_invariants(orders: &[ecs_emulator::Order], ledger: &Ledger) -> Checks {
    let mut per_cycle: HashMap<(String, DateTime<Utc>), usize> = HashMap::new();
    for order in orders {
        *per_cycle
            .entry((order.instance_id.clone(), order.old_expiry))
            .or_default() += 1;
    }
    let double_charges = per_cycle
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|((id, expiry), n)| (id, expiry, n))
        .collect();
    let records = ledger.tokens_and_orders().unwrap();
    let tokens: BTreeSet<&str> = records.iter().map(|r| r.client_token.as_str()).collect();
    let cloud_orders: HashMap<&str, &str> = orders
        .iter()
        .filter_map(|o| Some((o.order_id.as_str(), o.client_token.as_deref()?)))
        .collect();
    let orders_without_record = orders
        .iter()
        .filter(|o| {
            o.kind == "renew"
                && !o
                    .client_token
                    .as_deref()
                    .is_some_and(|t| tokens.contains(t))
        })
        .map(|o| o.order_id.clone())
        .collect();
    let records_without_order = records
        .iter()
        .filter_map(|r| {
            let (order, token) = (r.order_id.as_deref()?, r.client_token.as_str());
            (cloud_orders.get(order) != Some(&token)).then(|| format!("{order} ({token})"))
        })
        .collect();
    Checks {
        double_charges,
        orders_without_record,
        records_without_order,
    }
}

/// The binary, killed with SIGKILL at random points and restarted, still charges once per cycle
/// and keeps the ledger and the cloud in agreement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_charges_twice() {
    let options = options();
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x5151);
    // Real time: the binary signs with the wall clock.
    let mut fleet = support::harness_fleet("2000-01-01T00:00:00Z", 1_000_000.0, vec![]);
    fleet.settings.clock_start = None;
    fleet.settings.clock_speed = 1.0;
    fleet.settings.renew_visibility_delay = Duration::from_secs(2);
    fleet.instances = (0..120)
        .map(|n| InstanceSpec {
            expires_at: None,
            expires_in: Some(format!("{}d", 1 + n % 6)),
            region: REGIONS[n % REGIONS.len()].into(),
            ..support::instance_spec(&format!("i-kill{n:03}"), "2000-01-01T00:00Z")
        })
        .collect();
    let emulator = ecs_emulator::start(fleet, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // Every renewal is slow, so kills land between intent and answer as well as elsewhere.
    emulator.add_fault(FaultSpec {
        action: Some(Action::RenewInstance),
        region: None,
        account: None,
        count: None,
        until: None,
        kind: FaultKind::Latency { ms: 60 },
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nschedule = \"* * * * * *\"\njitter = \"0s\"\nstate_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[scan]\nregions = [{}]\n[limits]\nmax_renewals_per_run = 1000\n[retry]\nverify_timeout = \"3s\"\nverify_interval = \"200ms\"\nbackoff_floor = \"1m\"\n[[accounts]]\nname = \"main\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"env\"\n[accounts.rate_limit]\nper_second = 100\nburst = 10\n[[policies]]\nname = \"renew\"\naction = \"renew\"\n",
            dir.path().join("state").display(),
            REGIONS.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", "),
            emulator.url()
        ),
    )
    .unwrap();
    let mut kills = 0;
    let mut kills_mid_renewal = 0;
    while kills < options.kills {
        let (mut child, _lines) = support::spawn_daemon(&config);
        let before = emulator.calls().count(Action::RenewInstance);
        // Kill at a random point once the daemon has started renewing (or after a random
        // moment when there is nothing left to renew).
        let point = rng.random_range(1..=6);
        let arrived = emulator
            .wait_for(
                |c| c.count(Action::RenewInstance) >= before + point,
                Duration::from_secs(3),
            )
            .await;
        child.kill().unwrap(); // SIGKILL
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        kills += 1;
        kills_mid_renewal += usize::from(arrived);
    }
    // A last run that is left to finish the work.
    let (mut last, mut lines) = support::spawn_daemon(&config);
    let settled = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.recv().await {
            if std::env::var("SOAK_DEBUG").is_ok()
                && (line.contains("pass finished")
                    || line.contains("ERROR")
                    || line.contains("WARN"))
            {
                eprintln!("{line}");
            }
            // A pass that found nothing left to renew and nothing pending.
            if line.contains("\"pass finished\"")
                && line.contains(" 0 renewed, 0 failed, 0 unknown, 0 pending verification, 0 held")
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let _ = last.kill();
    let _ = last.wait();
    assert!(settled, "the restarted daemon finished the work");

    let orders = emulator.orders();
    let ledger = Ledger::open_read_only(&dir.path().join("state"))
        .unwrap()
        .unwrap();
    let checks = check_invariants(&orders, &ledger);
    let renewed: BTreeSet<&str> = orders.iter().map(|o| o.instance_id.as_str()).collect();
    let figures = json!({
        "variant": options.variant,
        "seed": options.seed,
        "instances": 120,
        "sigkills": kills,
        "sigkills_after_a_renewal_was_sent": kills_mid_renewal,
        "renew_instance_calls": emulator.calls().count(Action::RenewInstance),
        "orders": orders.len(),
        "instances_renewed": renewed.len(),
        "double_charges": checks.double_charges.len(),
        "orders_without_ledger_record": checks.orders_without_record.len(),
        "ledger_orders_without_cloud_order": checks.records_without_order.len(),
    });
    println!("{}", serde_json::to_string_pretty(&figures).unwrap());
    write_figures(&format!("kills-{}.json", options.variant), &figures);
    assert!(kills >= 20);
    assert!(
        kills_mid_renewal >= 5,
        "kills landed while renewals were in flight ({kills_mid_renewal})"
    );
    assert!(
        checks.double_charges.is_empty(),
        "double charges: {:?}",
        checks.double_charges
    );
    assert!(
        checks.orders_without_record.is_empty(),
        "orders without a ledger record: {:?}",
        checks.orders_without_record
    );
    assert!(
        checks.records_without_order.is_empty(),
        "{:?}",
        checks.records_without_order
    );
    assert_eq!(renewed.len(), 120, "every instance was renewed in the end");
}
