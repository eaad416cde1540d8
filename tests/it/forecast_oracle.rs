//! The funds forecast against the oracle (`oracle.rs`), over random fleets: every policy action
//! × RenewalStatus × both deduction schedules × period units × currencies × expiries around
//! 08:00 and 18:00 UTC+8 and the 16:00Z day boundary × balances × one source down. Each case
//! starts the emulator with the fleet, runs `plan` (the pass's own phases up to the forecast)
//! and checks:
//! - every source up: the forecast's charges (priced and unpriced) are the oracle's, at the
//!   same times, by the same renewer, at the same prices; its shortfall time and amount are
//!   the oracle's when every charge is priced;
//! - whenever the oracle says short by T, the forecast says short no later than T, or says
//!   incomplete — never covered; a source down always makes it incomplete.
//!
//! CI runs `ECS_RENEWD_ORACLE_CASES` (default 128) cases with a fixed seed;
//! `ECS_RENEWD_ORACLE=long` runs 2,000 (`ECS_RENEWD_ORACLE_SEED` fixes the seed). Figures go to
//! target/reliability/forecast-oracle-<variant>.json. Run against the code before the fixes of
//! issue 22, it found (shrunk to one instance each): a `renew`-policy instance with auto-renew
//! on counted as ecs-renewd's charge at the provider's deduction morning; a fallback forecast
//! at a provider attempt after the expiry; "covered" with a region down.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use ecs_emulator::settings::{AccessKeySpec, AccountSpec, InstanceSpec};
use ecs_emulator::{EmulatorConfig, FaultKind, FaultSpec};
use ecs_renewd::commands::plan;
use ecs_renewd::config::Config;
use ecs_renewd::{ChargeBy, Forecast};
use ecs_wire::Action;
use ecs_wire::clock::VirtualClock;
use ecs_wire::time;
use ecs_wire::types::{PeriodUnit, RenewalStatus};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};

use crate::oracle::{self, Daemon, Expected, Schedule, Subject};
use crate::support::HARNESS_KEY;

const REGIONS: [&str; 2] = ["cn-hangzhou", "cn-beijing"];
/// The first UTC+8 midnight after the dates `now` is drawn from.
const DAY0: &str = "2026-03-10T16:00:00Z";
const FUNDS_HORIZON_DAYS: i64 = 7;

/// What ecs-renewd is told to do with an instance (each instance has a policy of its own).
#[derive(Debug, Clone, Copy)]
enum PolicyKind {
    Renew {
        period: u32,
        unit: PeriodUnit,
        before_days: i64,
    },
    AutoRenew {
        duration: u32,
        unit: PeriodUnit,
        fallback_after_hours: Option<i64>,
    },
    Observe,
    NoPolicy,
}

#[derive(Debug, Clone)]
struct Inst {
    policy: PolicyKind,
    status: RenewalStatus,
    /// The instance's own auto-renew duration.
    own: (u32, PeriodUnit),
    expiry: DateTime<Utc>,
    monthly_price: u32,
    second_region: bool,
}

#[derive(Debug, Clone)]
struct Case {
    schedule: Schedule,
    usd: bool,
    balance: i64,
    now: DateTime<Utc>,
    instances: Vec<Inst>,
    second_region_down: bool,
}

fn t(s: &str) -> DateTime<Utc> {
    time::parse(s).unwrap()
}

// ------------------------------------------------------------------ generation

fn renew_policy(weeks: bool) -> BoxedStrategy<PolicyKind> {
    let months = (
        prop::sample::select(vec![1u32, 3, 12]),
        prop::sample::select(vec![3i64, 7, 12]),
    )
        .prop_map(|(period, before_days)| PolicyKind::Renew {
            period,
            unit: PeriodUnit::Month,
            before_days,
        });
    if !weeks {
        return months.boxed();
    }
    let weekly =
        (1u32..=2, prop::sample::select(vec![2i64, 3])).prop_map(|(period, before_days)| {
            PolicyKind::Renew {
                period,
                unit: PeriodUnit::Week,
                before_days,
            }
        });
    prop_oneof![3 => months, 1 => weekly].boxed()
}

fn policy(weeks: bool) -> BoxedStrategy<PolicyKind> {
    let auto = (
        prop::sample::select(vec![
            (1u32, PeriodUnit::Month),
            (3, PeriodUnit::Month),
            (1, PeriodUnit::Year),
        ]),
        prop::option::of(prop::sample::select(vec![24i64, 30, 60])),
    )
        .prop_map(
            |((duration, unit), fallback_after_hours)| PolicyKind::AutoRenew {
                duration,
                unit,
                fallback_after_hours,
            },
        );
    prop_oneof![
        3 => renew_policy(weeks),
        3 => auto,
        1 => Just(PolicyKind::Observe),
        1 => Just(PolicyKind::NoPolicy),
    ]
    .boxed()
}

/// Expiries on a UTC+8 day from three days ago to twenty days ahead, at its start (16:00Z),
/// its deduction morning (08:00 UTC+8) or the end of the deduction run (18:00 UTC+8), give or
/// take a minute.
fn expiry() -> impl Strategy<Value = DateTime<Utc>> {
    (
        -4i64..=16,
        prop::sample::select(vec![0i64, 8, 18]),
        -1i64..=1,
    )
        .prop_map(|(day, hour, minute)| {
            t(DAY0) + Duration::days(day) + Duration::hours(hour) + Duration::minutes(minute)
        })
}

fn instance(weeks: bool) -> impl Strategy<Value = Inst> {
    let own = if weeks {
        prop::sample::select(vec![
            (1u32, PeriodUnit::Month),
            (2, PeriodUnit::Month),
            (1, PeriodUnit::Week),
            (1, PeriodUnit::Year),
        ])
    } else {
        prop::sample::select(vec![
            (1u32, PeriodUnit::Month),
            (2, PeriodUnit::Month),
            (1, PeriodUnit::Year),
        ])
    };
    (
        policy(weeks),
        prop::sample::select(vec![
            RenewalStatus::AutoRenewal,
            RenewalStatus::AutoRenewal,
            RenewalStatus::Normal,
            RenewalStatus::NotRenewal,
        ]),
        own,
        expiry(),
        prop::sample::select(vec![40u32, 100, 250, 1000]),
        any::<bool>(),
    )
        .prop_map(
            |(policy, status, own, expiry, monthly_price, second_region)| Inst {
                policy,
                status,
                own,
                expiry,
                monthly_price,
                second_region,
            },
        )
}

/// Passes at midnight UTC+8 (16:00Z), at and around the deduction morning (08:00 UTC+8) and the
/// end of the deduction run (18:00 UTC+8), and mid-day.
fn now() -> impl Strategy<Value = DateTime<Utc>> {
    prop::sample::select(vec![
        "2026-03-09T23:59:00Z",
        "2026-03-10T00:00:00Z",
        "2026-03-10T00:01:00Z",
        "2026-03-10T04:00:00Z",
        "2026-03-10T10:00:00Z",
        "2026-03-10T15:59:00Z",
        "2026-03-10T16:00:00Z",
    ])
    .prop_map(t)
}

fn case() -> impl Strategy<Value = Case> {
    any::<bool>().prop_flat_map(|usd| {
        (
            prop::sample::select(vec![Schedule::NineDaysDaily, Schedule::FiveAttempts]),
            prop::sample::select(vec![0i64, 5_000, 30_000, 100_000, 10_000_000]),
            now(),
            prop::collection::vec(instance(!usd), 1..10),
            prop::bool::weighted(0.25),
        )
            .prop_map(
                move |(schedule, balance, now, instances, second_region_down)| Case {
                    schedule,
                    usd,
                    balance,
                    now,
                    instances,
                    second_region_down,
                },
            )
    })
}

// ------------------------------------------------------------------ the fleet and config

fn id(i: usize) -> String {
    format!("i-o{i}")
}

fn fleet(case: &Case) -> EmulatorConfig {
    let instances = case
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| InstanceSpec {
            region: REGIONS[usize::from(inst.second_region)].into(),
            renewal_status: inst.status,
            auto_renew_duration: inst.own.0,
            auto_renew_unit: inst.own.1,
            monthly_price: f64::from(inst.monthly_price),
            ..InstanceSpec::prepaid(&id(i)).expires_at(inst.expiry)
        })
        .collect();
    let mut config = EmulatorConfig {
        accounts: vec![AccountSpec {
            uid: None,
            roles: Vec::new(),
            members: Vec::new(),
            name: "main".into(),
            balance: case.balance as f64 / 100.0,
            currency: if case.usd { "USD" } else { "CNY" }.into(),
            access_keys: vec![AccessKeySpec {
                id: HARNESS_KEY.0.into(),
                secret: HARNESS_KEY.1.into(),
                security_token: None,
                expires_at: None,
                denied_actions: vec![],
            }],
        }],
        instances,
        regions: REGIONS.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    config.settings.clock_start = Some(case.now);
    config.settings.clock_speed = 0.0;
    config.settings.renew_visibility_delay = std::time::Duration::ZERO;
    if case.schedule == Schedule::FiveAttempts {
        config.settings.provider_auto_renew.attempt_days = Some(vec![-3, -1, 0, 6, 14]);
    }
    config
}

fn unit_word(unit: PeriodUnit) -> &'static str {
    match unit {
        PeriodUnit::Week => "Week",
        PeriodUnit::Month => "Month",
        PeriodUnit::Year => "Year",
    }
}

fn policy_text(i: usize, policy: PolicyKind) -> String {
    let body = match policy {
        PolicyKind::Renew {
            period,
            unit,
            before_days,
        } => format!(
            "action = \"renew\"\nperiod = {period}\nperiod_unit = \"{}\"\nrenew_before = \"{before_days}d\"\n",
            unit_word(unit)
        ),
        PolicyKind::AutoRenew {
            duration,
            unit,
            fallback_after_hours,
        } => {
            let fallback = fallback_after_hours
                .map(|h| format!("fallback_renew = true\nfallback_after = \"{h}h\"\n"))
                .unwrap_or_default();
            format!(
                "action = \"auto-renew\"\nduration = {duration}\nperiod_unit = \"{}\"\n{fallback}",
                unit_word(unit)
            )
        }
        PolicyKind::Observe => "action = \"observe\"\n".into(),
        PolicyKind::NoPolicy => return String::new(),
    };
    format!(
        "[[policies]]\nname = \"p{i}\"\n{body}[policies.match]\ninstance_ids = [\"{}\"]\n",
        id(i)
    )
}

fn config_text(case: &Case, endpoint: &str, state: &Path) -> String {
    let (site, schedule) = (
        if case.usd { "international" } else { "china" },
        match case.schedule {
            Schedule::NineDaysDaily => "t9-daily",
            Schedule::FiveAttempts => "t3-five-attempts",
        },
    );
    let policies: String = case
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| policy_text(i, inst.policy))
        .collect();
    format!(
        "[daemon]\nstate_dir = \"{}\"\n[scan]\nregions = [\"{}\", \"{}\"]\nhorizon = \"40d\"\n[funds]\nhorizon = \"{FUNDS_HORIZON_DAYS}d\"\n[[accounts]]\nname = \"main\"\nendpoint = \"{endpoint}\"\nsite = \"{site}\"\ndeduction_schedule = \"{schedule}\"\n[accounts.credentials]\nsource = \"env\"\n[accounts.rate_limit]\nper_second = 1000\nburst = 100\n[accounts.call_retry]\nbase_delay = \"1ms\"\nmax_delay = \"2ms\"\nmax_attempts = 1\n{policies}",
        state.display(),
        REGIONS[0],
        REGIONS[1],
    )
}

// ------------------------------------------------------------------ the oracle's view

/// The instance as the oracle sees it, from the documented rules (docs/configuration.md,
/// Policies; What is never renewed): a NotRenewal instance under a renewing policy is left to
/// lapse and the provider never deducts it; an `auto-renew` policy switches auto-renew on with
/// its own duration (not for an expired instance) and renews itself only as a fallback;
/// `observe` and no policy leave the instance to the provider.
fn subject(i: usize, inst: &Inst, price: impl Fn(u32, PeriodUnit) -> i64) -> Subject {
    let renewing = matches!(
        inst.policy,
        PolicyKind::Renew { .. } | PolicyKind::AutoRenew { .. }
    );
    let left_to_lapse = inst.status == RenewalStatus::NotRenewal && renewing;
    let own_provider = (inst.status == RenewalStatus::AutoRenewal).then_some(inst.own);
    let (provider, daemon) = match inst.policy {
        _ if left_to_lapse => (None, Daemon::Never),
        PolicyKind::Renew {
            period,
            unit,
            before_days,
        } => (
            own_provider,
            Daemon::Renew {
                period,
                unit,
                before: Duration::days(before_days),
                first_at: None,
            },
        ),
        PolicyKind::AutoRenew {
            duration,
            unit,
            fallback_after_hours,
        } => (
            Some((duration, unit)),
            match fallback_after_hours {
                Some(h) => Daemon::Fallback {
                    period: duration,
                    unit,
                    after: Duration::hours(h),
                    first_at: None,
                },
                None => Daemon::Never,
            },
        ),
        PolicyKind::Observe | PolicyKind::NoPolicy => (own_provider, Daemon::Never),
    };
    let mut periods: Vec<(u32, PeriodUnit)> = provider.into_iter().collect();
    match daemon {
        Daemon::Renew { period, unit, .. } | Daemon::Fallback { period, unit, .. } => {
            periods.push((period, unit))
        }
        Daemon::Never => {}
    }
    Subject {
        id: id(i),
        expiry: inst.expiry,
        provider,
        daemon,
        prices: periods
            .into_iter()
            .map(|(n, u)| ((n, u), price(n, u)))
            .collect(),
    }
}

// ------------------------------------------------------------------ the check

/// A forecast's charges and unpriced charges, as the oracle states one (`cents` None:
/// unpriced), in time order. The state-machine test compares with it too.
pub(crate) fn forecast_charges(
    f: &Forecast,
) -> Vec<(DateTime<Utc>, String, &'static str, Option<i64>)> {
    let by = |b: ChargeBy| match b {
        ChargeBy::Daemon => "ecs-renewd",
        ChargeBy::Provider => "auto-renew",
    };
    let mut out: Vec<_> = f
        .charges
        .iter()
        .map(|c| (c.at, c.instance_id.clone(), by(c.by), Some(c.amount.cents)))
        .chain(
            f.unpriced
                .iter()
                .map(|u| (u.at, u.instance_id.clone(), by(u.by), None)),
        )
        .collect();
    out.sort();
    out
}

fn check(case: &Case, report: &plan::PlanReport, expected: &[Expected]) -> Result<(), String> {
    let until = oracle::window_end(case.now, Duration::days(FUNDS_HORIZON_DAYS));
    let [f] = report.funds.as_slice() else {
        return Err(format!("one forecast expected, got {:#?}", report.funds));
    };
    if f.until != until {
        return Err(format!("window ends {} , the oracle's {until}", f.until));
    }
    let in_window: Vec<&Expected> = expected.iter().filter(|e| e.at <= until).collect();
    let all: Vec<Expected> = in_window.iter().map(|e| (*e).clone()).collect();
    let oracle_short = oracle::shortfall(&all, case.balance);
    if f.covered() && oracle_short.is_some() {
        return Err(format!(
            "the forecast says covered, the oracle short from {oracle_short:?}: {f:#?}\noracle {all:#?}"
        ));
    }
    if let Some(at) = oracle_short
        && f.gaps().is_empty()
        && f.shortfall_at.is_none_or(|s| s > at)
    {
        return Err(format!(
            "the oracle is short from {at}, the forecast from {:?} and complete",
            f.shortfall_at
        ));
    }
    if case.second_region_down && f.sources_down.is_empty() {
        return Err(format!(
            "a source is down and the forecast does not say so: {f:#?}"
        ));
    }
    // With the second region down, the forecast sees the first region's charges, exactly.
    let seen = |e: &&Expected| {
        let i: usize = e.id.trim_start_matches("i-o").parse().unwrap();
        !(case.second_region_down && case.instances[i].second_region)
    };
    let priced = |e: &Expected| {
        f.unpriced
            .iter()
            .all(|u| !(u.instance_id == e.id && u.at == e.at))
            .then_some(e.cents)
    };
    let mut want: Vec<_> = all
        .iter()
        .filter(seen)
        .map(|e| (e.at, e.id.clone(), e.by, priced(e)))
        .collect();
    want.sort();
    let got = forecast_charges(f);
    if got != want {
        return Err(format!(
            "charges differ:\nforecast {got:#?}\noracle   {want:#?}"
        ));
    }
    if f.unpriced.is_empty() && !case.second_region_down {
        let total: i64 = all.iter().map(|e| e.cents).sum();
        let short_by = oracle_short.map(|_| total - case.balance);
        if (f.shortfall_at, f.short_by.as_ref().map(|m| m.cents)) != (oracle_short, short_by) {
            return Err(format!(
                "shortfall: forecast {:?} by {:?}, oracle {oracle_short:?} by {short_by:?}",
                f.shortfall_at, f.short_by
            ));
        }
    }
    Ok(())
}

async fn run_case(case: &Case, tally: &Tally) -> Result<(), String> {
    let clock = Arc::new(VirtualClock::frozen(case.now));
    let emulator =
        ecs_emulator::start_with_clock(fleet(case), "127.0.0.1:0".parse().unwrap(), clock.clone())
            .await
            .map_err(|e| e.to_string())?;
    if case.second_region_down {
        emulator.add_fault(FaultSpec {
            action: Some(Action::DescribeInstances),
            region: Some(REGIONS[1].into()),
            account: None,
            count: None,
            until: None,
            kind: FaultKind::Error {
                code: "InternalError".into(),
                status: 500,
                message: None,
                retry_after_ms: None,
            },
        });
    }
    let subjects: Vec<Subject> = case
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let id = id(i);
            subject(i, inst, |n, u| {
                emulator.with_world(|w| {
                    w.instances()
                        .find(|x| x.id == id)
                        .map(|x| x.price_cents(n, u).0)
                        .expect("the instance is in the world")
                })
            })
        })
        .collect();
    let until = oracle::window_end(case.now, Duration::days(FUNDS_HORIZON_DAYS));
    let expected = oracle::charges(&subjects, case.schedule, case.now, until);
    let state = tempfile::tempdir().unwrap();
    let text = config_text(case, &emulator.url(), state.path());
    let env = crate::support::Harness::env();
    let config =
        Config::parse(&text, Path::new("oracle.toml"), &env).map_err(|e| format!("{e}\n{text}"))?;
    let report = plan::build(&config, &env, clock)
        .await
        .map_err(|e| e.to_string())?;
    let f = &report.funds[0];
    tally.count(&[
        (
            "oracle_charges",
            expected.iter().filter(|e| e.at <= until).count(),
        ),
        ("cases_with_charges", usize::from(!expected.is_empty())),
        (
            "cases_short",
            usize::from(oracle::shortfall(&expected, case.balance).is_some()),
        ),
        ("cases_with_unpriced", usize::from(!f.unpriced.is_empty())),
        (
            "cases_with_a_source_down",
            usize::from(case.second_region_down),
        ),
        (
            "provider_charges",
            expected.iter().filter(|e| e.by == "auto-renew").count(),
        ),
    ]);
    check(case, &report, &expected)
}

/// What the cases covered, for the figures file.
#[derive(Default)]
struct Tally(std::sync::Mutex<std::collections::BTreeMap<&'static str, usize>>);

impl Tally {
    fn count(&self, items: &[(&'static str, usize)]) {
        let mut map = self.0.lock().unwrap();
        *map.entry("runs_including_shrinking").or_default() += 1;
        for (name, n) in items {
            *map.entry(name).or_default() += n;
        }
    }
}

fn options() -> (u32, u64, &'static str) {
    let number = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let long = std::env::var("ECS_RENEWD_ORACLE").as_deref() == Ok("long");
    (
        number("ECS_RENEWD_ORACLE_CASES").unwrap_or(if long { 2000 } else { 128 }) as u32,
        number("ECS_RENEWD_ORACLE_SEED").unwrap_or(20_261_206),
        if long { "long" } else { "ci" },
    )
}

#[test]
fn the_forecast_agrees_with_the_oracle_over_random_fleets() {
    let (cases, seed, variant) = options();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let started = tokio::time::Instant::now();
    let tally = Tally::default();
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&case(), |case| {
        runtime
            .block_on(run_case(&case, &tally))
            .map_err(TestCaseError::fail)
    });
    let command = format!(
        "{}ECS_RENEWD_ORACLE_SEED={seed} cargo test --release --test it forecast_oracle -- --nocapture",
        if variant == "long" {
            "ECS_RENEWD_ORACLE=long "
        } else {
            ""
        }
    );
    let mut figures = serde_json::json!({
        "command": command,
        "variant": variant,
        "seed": seed,
        "cases": cases,
        "seconds": started.elapsed().as_secs(),
        "passed": result.is_ok(),
    });
    for (name, n) in tally.0.lock().unwrap().iter() {
        figures[*name] = serde_json::json!(n);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reliability");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("forecast-oracle-{variant}.json")),
        serde_json::to_string_pretty(&figures).unwrap(),
    )
    .unwrap();
    println!("{figures}");
    if let Err(e) = result {
        panic!("{e}");
    }
}
