//! Money safety, second round: each defect that was found outside the soak's fault menu has a
//! regression test here that failed before its fix (the invariants table in docs/how-it-works.md names them),
//! and `state_machine` drives the engine and the daemon's wake-up rule through random
//! sequences of passes, time, every classified error, config reloads and restarts, checking the
//! money invariants and the API-call budget after every step.

use crate::support;

#[path = "money_safety/state_machine.rs"]
mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ecs_emulator::settings::AccessKeySpec;
use ecs_emulator::{EmulatorHandle, FaultKind, FaultSpec};
use ecs_renewd::cloud::credentials::Environment;
use ecs_renewd::config::Config;
use ecs_renewd::daemon::Tick;
use ecs_renewd::daemon::{self, Clocks, ConfigSource, Setup, Signals, TickSource, Ticks};
use ecs_renewd::reconcile::PassSummary;
use ecs_wire::Action;
use ecs_wire::clock::{Clock, VirtualClock};
use support::{HARNESS_KEY, Harness, harness_fleet, instance_spec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const NOW: &str = "2026-03-10T04:00:00Z";
const RENEW_ALL: &str =
    "[[policies]]\nname = \"renew-all\"\naction = \"renew\"\nrenew_before = \"7d\"\n";

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

/// `n` instances due for renewal (expiring in three days).
fn due(n: usize) -> Vec<ecs_emulator::settings::InstanceSpec> {
    (0..n)
        .map(|i| instance_spec(&format!("i-due{i:02}"), "2026-03-13T16:00Z"))
        .collect()
}

/// RenewInstance orders per instance, from the emulator's order book.
fn orders_per_instance(emulator: &EmulatorHandle) -> std::collections::BTreeMap<String, usize> {
    let mut per = std::collections::BTreeMap::new();
    for order in emulator.orders().iter().filter(|o| o.kind == "renew") {
        *per.entry(order.instance_id.clone()).or_default() += 1;
    }
    per
}

// ------------------------------------------------------------------ the daemon's wake-ups

/// A daemon in process: hourly schedule, no ticks unless the test sends one, the business
/// clock and the cron wall clock both virtual and frozen.
struct Daemon {
    running: daemon::Running,
    ticks: mpsc::Sender<Tick>,
    passes: mpsc::UnboundedReceiver<PassSummary>,
    stop: CancellationToken,
    wall: Arc<VirtualClock>,
    _state: tempfile::TempDir,
}

async fn start_daemon(emulator: &EmulatorHandle, clock: Arc<VirtualClock>, extra: &str) -> Daemon {
    let state = tempfile::tempdir().unwrap();
    let text = format!(
        "[daemon]\nschedule = \"0 0 * * * *\"\njitter = \"0s\"\nstate_dir = \"{}\"\n[scan]\nregions = [\"cn-hangzhou\"]\n[retry]\nverify_timeout = \"200ms\"\nverify_interval = \"50ms\"\n[[accounts]]\nname = \"main\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"env\"\n[accounts.rate_limit]\nper_second = 1000\nburst = 100\n[accounts.call_retry]\nmax_attempts = 1\n{extra}",
        state.path().display(),
        emulator.url()
    );
    let env = Harness::env();
    let config = Config::parse(&text, Path::new("daemon.toml"), &env).unwrap();
    let (tick_tx, tick_rx) = mpsc::channel(1);
    let (pass_tx, passes) = mpsc::unbounded_channel();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let wall = Arc::new(VirtualClock::frozen(clock.now()));
    let running = daemon::start(Setup {
        config: ConfigSource {
            config,
            path: PathBuf::from("daemon.toml"),
            env,
        },
        clocks: Clocks {
            business: clock,
            wall: wall.clone(),
        },
        signals: Signals {
            stop: stop.clone(),
            reload: reload_rx,
        },
        ticks: Ticks {
            source: TickSource::Manual(tick_tx.clone(), tick_rx),
            watchdog_every: Duration::from_millis(50),
        },
        admin_listener: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        passes: Some(pass_tx),
    })
    .await
    .unwrap();
    Daemon {
        running,
        ticks: tick_tx,
        passes,
        stop,
        wall,
        _state: state,
    }
}

impl Daemon {
    async fn next_pass(&mut self) -> PassSummary {
        tokio::time::timeout(Duration::from_secs(30), self.passes.recv())
            .await
            .expect("a pass within the timeout")
            .expect("the daemon is running")
    }

    /// Passes that start within `window` without a tick (none are due in these tests).
    async fn passes_within(&mut self, window: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + window;
        let mut n = 0;
        while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.passes.recv()).await {
            n += 1;
            if n > 50 {
                break;
            }
        }
        n
    }

    async fn tick(&self) {
        self.ticks
            .send(Tick {
                at: self.wall.now(),
                reason: ecs_renewd::daemon::TickReason::Cron,
            })
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.stop.cancel();
        self.running.task.await.unwrap().unwrap();
    }
}

async fn frozen_emulator(
    instances: Vec<ecs_emulator::settings::InstanceSpec>,
    balance: f64,
) -> (EmulatorHandle, Arc<VirtualClock>) {
    let fleet = harness_fleet(NOW, balance, instances);
    let clock = Arc::new(VirtualClock::frozen(fleet.settings.clock_start.unwrap()));
    let emulator =
        ecs_emulator::start_with_clock(fleet, "127.0.0.1:0".parse().unwrap(), clock.clone())
            .await
            .unwrap();
    (emulator, clock)
}

/// The reproduction: hourly schedule, five instances due, one RenewInstance answered
/// `IncorrectInstanceStatus`. Before the fix the daemon then ran about twenty passes a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_not_applicable_answer_does_not_start_a_pass_storm() {
    let (emulator, clock) = frozen_emulator(due(5), 1000.0).await;
    emulator.add_fault(FaultSpec::fail_next(
        Action::RenewInstance,
        1,
        "IncorrectInstanceStatus",
        403,
    ));
    let mut d = start_daemon(&emulator, clock.clone(), RENEW_ALL).await;
    let first = d.next_pass().await;
    assert_eq!((first.renewed, first.renew_failed), (4, 1), "{first:?}");
    let scans = emulator.calls().count(Action::DescribeInstances);
    assert_eq!(
        d.passes_within(Duration::from_secs(2)).await,
        0,
        "no pass without a tick: the not-applicable answer waits for a scheduled pass"
    );
    assert_eq!(
        emulator.calls().count(Action::DescribeInstances),
        scans,
        "no scan either"
    );
    // A scheduled pass after its backoff gives it another look (an instance that was starting
    // may now be renewable).
    clock.advance(minutes(6));
    d.tick().await;
    let second = d.next_pass().await;
    assert_eq!(second.renewed, 1, "{second:?}");
    assert_eq!(orders_per_instance(&emulator).len(), 5);
    d.stop().await;
}

/// Any retry a pass leaves untouched (here: its source was down) must not wake the daemon
/// again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_retry_left_untouched_by_a_pass_does_not_wake_the_daemon_again() {
    let (emulator, clock) = frozen_emulator(due(1), 0.0).await;
    let mut d = start_daemon(&emulator, clock.clone(), RENEW_ALL).await;
    let first = d.next_pass().await;
    assert_eq!(first.renew_failed, 1, "{first:?}");
    // Past the backoff, a scheduled pass finds the source down: the retry is not attempted.
    clock.advance(minutes(6));
    emulator.add_fault(FaultSpec::fail_next(
        Action::DescribeInstances,
        1,
        "ServiceUnavailable",
        503,
    ));
    d.tick().await;
    let second = d.next_pass().await;
    assert_eq!(second.sources_down.len(), 1, "{second:?}");
    assert_eq!(
        d.passes_within(Duration::from_secs(2)).await,
        0,
        "the past-due retry waits for the next scheduled pass"
    );
    d.stop().await;
}

// ------------------------------------------------------------------ two entries, one account

/// A second RAM user of the harness account.
const TWIN_KEY: (&str, &str) = ("LTAItwin", "twin-secret");

fn twin_entry(dir: &Path, emulator: &EmulatorHandle) -> String {
    let secret = dir.join("twin-secret");
    std::fs::write(&secret, TWIN_KEY.1).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    format!(
        "[[accounts]]\nname = \"twin\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"file\"\naccess_key_id = \"{}\"\naccess_key_secret_file = \"{}\"\n[accounts.rate_limit]\nper_second = 1000\nburst = 100\n",
        emulator.url(),
        TWIN_KEY.0,
        secret.display()
    )
}

/// Two `[[accounts]]` entries reaching one cloud account (two RAM users, overlapping regions):
/// before the fix `once` charged all twenty due instances twice.
#[tokio::test]
async fn two_entries_for_one_cloud_account_charge_each_instance_once() {
    two_entries_for_one_cloud_account_charge_each_instance_once_on_either().await;
}

async fn two_entries_for_one_cloud_account_charge_each_instance_once_on_either() {
    let mut fleet = harness_fleet(NOW, 100_000.0, due(20));
    fleet.accounts[0].access_keys.push(AccessKeySpec {
        id: TWIN_KEY.0.into(),
        secret: TWIN_KEY.1.into(),
        security_token: None,
        expires_at: None,
        denied_actions: vec![],
    });
    let dir = tempfile::tempdir().unwrap();
    let probe = Harness::start(fleet, RENEW_ALL).await;
    let extra = format!("{}{RENEW_ALL}", twin_entry(dir.path(), &probe.emulator));
    drop(probe.engine);
    let engine = Harness::engine(&probe.emulator, &probe.clock, probe.state.path(), &extra).await;
    let summary = engine.run_pass().await.unwrap();
    let per = orders_per_instance(&probe.emulator);
    assert_eq!(per.len(), 20, "{summary:?}");
    assert!(
        per.values().all(|n| *n == 1),
        "each instance charged once: {per:?}"
    );
    assert_eq!(summary.renewed, 20, "{summary:?}");
    assert_eq!(summary.duplicate_sources.len(), 1, "{summary:?}");
    assert_eq!(summary.duplicate_sources[0].instances, 20);
    // The next pass, whichever entry lists an instance first, charges nothing more.
    let again = engine.run_pass().await.unwrap();
    assert_eq!(again.renewed, 0, "{again:?}");
    assert!(
        orders_per_instance(&probe.emulator)
            .values()
            .all(|n| *n == 1)
    );
}

/// Found by the state machine's long run: two entries reaching one cloud account split its
/// instances between them, and each entry's forecast set its half against the whole balance —
/// both said covered while the account was short. Entries this pass saw list the same
/// instances are one account to the forecast: each entry's forecast counts all their charges.
#[tokio::test]
async fn two_entries_for_one_cloud_account_forecast_its_charges_together() {
    two_entries_for_one_cloud_account_forecast_its_charges_together_on_either().await;
}

async fn two_entries_for_one_cloud_account_forecast_its_charges_together_on_either() {
    let a = instance_spec("i-hz", "2026-03-20T16:00Z");
    let mut b = instance_spec("i-bj", "2026-03-20T16:00Z");
    b.region = "cn-beijing".into();
    let mut fleet = harness_fleet(NOW, 150.0, vec![a, b]);
    fleet.accounts[0].access_keys.push(AccessKeySpec {
        id: TWIN_KEY.0.into(),
        secret: TWIN_KEY.1.into(),
        security_token: None,
        expires_at: None,
        denied_actions: vec![],
    });
    let dir = tempfile::tempdir().unwrap();
    let probe = Harness::start(fleet, RENEW_ALL).await;
    // The twin entry also scans cn-beijing, which only it lists.
    let twin = twin_entry(dir.path(), &probe.emulator).replace(
        "[accounts.credentials]",
        "regions = [\"cn-hangzhou\", \"cn-beijing\"]\n[accounts.credentials]",
    );
    let extra = format!("{twin}{RENEW_ALL}");
    drop(probe.engine);
    let engine = Harness::engine(&probe.emulator, &probe.clock, probe.state.path(), &extra).await;
    let summary = engine.run_pass().await.unwrap();
    assert_eq!(summary.funds.len(), 2, "{summary:?}");
    for f in &summary.funds {
        assert_eq!(f.upcoming.cents, 20_000, "{f:#?}");
        assert!(f.short(), "{f:#?}");
    }
}

/// The same AccessKey in two entries is refused by `check-config` (exit 78), naming both.
#[tokio::test]
async fn check_config_refuses_two_entries_with_the_same_access_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n[scan]\nregions = [\"cn-hangzhou\"]\n\n[[accounts]]\nname = \"prod\"\n[accounts.credentials]\nsource = \"env\"\n\n[[accounts]]\nname = \"prod-again\"\nregions = [\"cn-hangzhou\", \"cn-beijing\"]\n[accounts.credentials]\nsource = \"env\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ecs-renewd"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env_clear()
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", HARNESS_KEY.0)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", HARNESS_KEY.1)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    let path = config.display().to_string();
    assert!(
        stderr.contains(&format!("{path}:12:8: accounts[1].credentials"))
            && stderr.contains(&format!("{path}:7:8"))
            && stderr.contains("accounts[0] (prod)"),
        "both locations are named: {stderr}"
    );
    assert!(!stderr.contains(HARNESS_KEY.1), "no secret: {stderr}");
}

// ------------------------------------------------------------------ tokens and outcomes

/// A first attempt that charged but whose answer was lost, then a retry refused for funds:
/// before the fix the intent was recorded as a plain failure, and after a period change
/// (SIGHUP) a new token charged a second time.
#[tokio::test]
async fn a_period_change_after_a_maybe_charged_attempt_does_not_charge_again() {
    a_period_change_after_a_maybe_charged_attempt_does_not_charge_again_on_either().await;
}

async fn a_period_change_after_a_maybe_charged_attempt_does_not_charge_again_on_either() {
    let mut fleet = harness_fleet(NOW, 1000.0, due(1));
    fleet.settings.renew_visibility_delay = Duration::from_secs(4 * 3600);
    let h = Harness::start(fleet, &format!("#harness:max_attempts=2\n{RENEW_ALL}")).await;
    h.emulator.add_fault(FaultSpec::next(
        Action::RenewInstance,
        1,
        FaultKind::CommitThenDrop,
    ));
    h.emulator.add_fault(FaultSpec::fail_next(
        Action::RenewInstance,
        1,
        "InvalidAccountStatus.NotEnoughBalance",
        403,
    ));
    let first = h.pass().await;
    assert_eq!(
        first.renew_unknown, 1,
        "maybe charged, not failed: {first:?}"
    );
    assert_eq!(orders_per_instance(&h.emulator)["i-due00"], 1);
    let records = h.engine.ledger.money_records(Some("i-due00")).unwrap();
    assert_ne!(records[0].status, "failed", "{records:?}");

    // The operator changes the period and reloads.
    h.advance(minutes(20));
    let two_months = format!(
        "#harness:max_attempts=2\n{}",
        RENEW_ALL.replace("renew_before", "period = 2\nrenew_before")
    );
    let engine = Harness::engine(&h.emulator, &h.clock, h.state.path(), &two_months);
    drop(h.engine);
    let engine = engine.await;
    engine.run_pass().await.unwrap();
    let per = orders_per_instance(&h.emulator);
    assert_eq!(per["i-due00"], 1, "charged once: {:?}", h.emulator.orders());
    let records = engine.ledger.money_records(Some("i-due00")).unwrap();
    assert_eq!(records.len(), 1, "one intent for the expiry: {records:?}");
    assert_eq!(
        records[0].request, "1 Month",
        "the open intent keeps its period"
    );
}

/// A timeout (the charge may have happened) followed by a busy answer: unknown, never failed.
#[tokio::test]
async fn a_timeout_then_a_busy_answer_is_an_unknown_outcome() {
    a_timeout_then_a_busy_answer_is_an_unknown_outcome_on_either().await;
}

async fn a_timeout_then_a_busy_answer_is_an_unknown_outcome_on_either() {
    for second in [
        "Idempotence.Processing",
        "InvalidAccountStatus.NotEnoughBalance",
    ] {
        let mut fleet = harness_fleet(NOW, 1000.0, due(1));
        fleet.settings.renew_visibility_delay = Duration::from_secs(3600);
        let h = Harness::start(
            fleet,
            &format!(
                "#harness:max_attempts=2\n[accounts.read_timeouts]\nRenewInstance = \"200ms\"\n{RENEW_ALL}"
            ),
        )
        .await;
        h.emulator
            .add_fault(FaultSpec::latency(Action::RenewInstance, 600));
        h.emulator
            .add_fault(FaultSpec::fail_next(Action::RenewInstance, 1, second, 400));
        let first = h.pass().await;
        assert_eq!(
            (first.renew_unknown, first.renew_failed),
            (1, 0),
            "{second}: {first:?}"
        );
        let records = h.engine.ledger.money_records(Some("i-due00")).unwrap();
        assert_ne!(records[0].status, "failed", "{second}: {records:?}");
    }
}

// ------------------------------------------------------------------ belts

/// A renewal whose answer was lost, settled when its expiry moved: it counts toward the daily
/// limit (before the fix only recorded orders did).
#[tokio::test]
async fn a_charge_learned_by_settling_counts_toward_the_daily_limit() {
    a_charge_learned_by_settling_counts_toward_the_daily_limit_on_either().await;
}

async fn a_charge_learned_by_settling_counts_toward_the_daily_limit_on_either() {
    let fleet = harness_fleet(
        NOW,
        1000.0,
        vec![
            instance_spec("i-a", "2026-03-13T16:00Z"),
            // Due at 06:00Z with renew_before 7 days.
            instance_spec("i-b", "2026-03-17T06:00Z"),
        ],
    );
    let h = Harness::start(
        fleet,
        &format!("#harness:max_attempts=1\n[limits]\nmax_renewals_per_day = 1\n{RENEW_ALL}"),
    )
    .await;
    h.emulator.add_fault(FaultSpec::next(
        Action::RenewInstance,
        1,
        FaultKind::CommitThenDrop,
    ));
    let first = h.pass().await;
    assert_eq!(first.renew_unknown, 1, "{first:?}");
    h.advance(minutes(10));
    let second = h.pass().await;
    assert_eq!(second.renewed, 0, "settled, not resent: {second:?}");
    // Same day, i-b is due: today's one renewal is used up.
    h.advance(minutes(180));
    let third = h.pass().await;
    assert_eq!((third.renewed, third.held), (0, 1), "{third:?}");
    assert_eq!(orders_per_instance(&h.emulator).len(), 1);
}

/// A quote in a currency the spend limits do not name is held, not waved through.
#[tokio::test]
async fn a_quote_in_another_currency_is_held_by_a_spend_limit() {
    a_quote_in_another_currency_is_held_by_a_spend_limit_on_either().await;
}

async fn a_quote_in_another_currency_is_held_by_a_spend_limit_on_either() {
    let mut fleet = harness_fleet(NOW, 1000.0, due(1));
    fleet.accounts[0].currency = "USD".into();
    let h = Harness::start(
        fleet,
        &format!("[limits]\nmax_spend_per_day = {{ CNY = 10000.0 }}\n{RENEW_ALL}"),
    )
    .await;
    let summary = h.pass().await;
    assert_eq!((summary.renewed, summary.held), (0, 1), "{summary:?}");
    assert!(
        summary.trips.iter().any(|t| t.to_string().contains("USD")),
        "{:?}",
        summary.trips
    );
    assert!(h.emulator.orders().is_empty());
}

/// A policy's max_price is an amount in one currency: a quote in another is held.
#[tokio::test]
async fn max_price_is_compared_in_its_own_currency() {
    max_price_is_compared_in_its_own_currency_on_either().await;
}

async fn max_price_is_compared_in_its_own_currency_on_either() {
    let mut fleet = harness_fleet(NOW, 1000.0, due(1));
    fleet.accounts[0].currency = "USD".into();
    let h = Harness::start(
        fleet,
        &RENEW_ALL.replace("renew_before", "max_price = 10000.0\nrenew_before"),
    )
    .await;
    let summary = h.pass().await;
    assert_eq!((summary.renewed, summary.held), (0, 1), "{summary:?}");
    assert!(h.emulator.orders().is_empty());
}

/// A spend limit switched on in the middle of a day counts the day's earlier charges, which
/// were made unpriced.
#[tokio::test]
async fn a_spend_limit_enabled_mid_day_counts_the_days_earlier_charges() {
    a_spend_limit_enabled_mid_day_counts_the_days_earlier_charges_on_either().await;
}

async fn a_spend_limit_enabled_mid_day_counts_the_days_earlier_charges_on_either() {
    let fleet = harness_fleet(
        NOW,
        1000.0,
        vec![
            instance_spec("i-a", "2026-03-13T16:00Z"),
            instance_spec("i-b", "2026-03-17T06:00Z"),
        ],
    );
    let h = Harness::start(fleet, RENEW_ALL).await;
    assert_eq!(h.pass().await.renewed, 1);
    h.advance(minutes(180));
    let limited = format!("[limits]\nmax_spend_per_day = {{ CNY = 150.0 }}\n{RENEW_ALL}");
    let engine = Harness::engine(&h.emulator, &h.clock, h.state.path(), &limited);
    drop(h.engine);
    let engine = engine.await;
    let summary = engine.run_pass().await.unwrap();
    assert_eq!(
        (summary.renewed, summary.held),
        (0, 1),
        "100 CNY earlier today + 100 CNY now is over 150 CNY: {summary:?}"
    );
    assert_eq!(orders_per_instance(&h.emulator).len(), 1);
}

// ------------------------------------------------------------------ smaller ones

/// `renew_before` as long as the period would renew on every pass: refused.
#[test]
fn renew_before_longer_than_the_period_is_refused() {
    let text = "[[accounts]]\nname = \"a\"\n[[policies]]\nname = \"weekly\"\naction = \"renew\"\nperiod = 1\nperiod_unit = \"Week\"\nrenew_before = \"30d\"\n";
    let error = Config::parse(text, Path::new("c.toml"), &Environment::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("c.toml:8:16: policies[0].renew_before"),
        "{error}"
    );
}

/// A ledger row the daemon cannot read is an error naming the row, not a silent default.
#[tokio::test]
async fn an_unreadable_ledger_row_is_a_loud_error() {
    let h = Harness::start(harness_fleet(NOW, 0.0, due(1)), RENEW_ALL).await;
    assert_eq!(h.pass().await.renew_failed, 1);
    let raw = rusqlite::Connection::open(h.state.path().join("ledger.db")).unwrap();
    raw.execute("UPDATE intents SET unit = 'Fortnight'", [])
        .unwrap();
    let error = h.engine.ledger.histories().unwrap_err().to_string();
    assert!(
        error.contains("intents") && error.contains("unit") && error.contains("Fortnight"),
        "{error}"
    );
    raw.execute("UPDATE intents SET unit = 'Month'", [])
        .unwrap();
    raw.execute(
        "INSERT INTO auto_renew_changes (at, account, region, instance_id, status, duration, unit, result)
         VALUES ('2026-03-10T04:00:00Z', 'main', 'cn-hangzhou', 'i-x', 'Sometimes', 1, 'Month', 'ok')",
        [],
    )
    .unwrap();
    let error = h
        .engine
        .ledger
        .unchecked_auto_renew_changes()
        .unwrap_err()
        .to_string();
    assert!(error.contains("Sometimes"), "{error}");
}

/// An auto-renew change is recorded before it is sent, as a renewal's intent is.
#[tokio::test]
async fn an_auto_renew_change_is_recorded_before_it_is_sent() {
    an_auto_renew_change_is_recorded_before_it_is_sent_on_either().await;
}

async fn an_auto_renew_change_is_recorded_before_it_is_sent_on_either() {
    let h = Arc::new(
        Harness::start(
            harness_fleet(
                NOW,
                1000.0,
                vec![instance_spec("i-auto", "2026-03-28T16:00Z")],
            ),
            "[[policies]]\nname = \"auto\"\naction = \"auto-renew\"\n",
        )
        .await,
    );
    h.emulator.add_fault(FaultSpec::latency(
        Action::ModifyInstanceAutoRenewAttribute,
        1000,
    ));
    let running = tokio::spawn({
        let h = h.clone();
        async move { h.pass().await }
    });
    assert!(
        h.emulator
            .wait_for(
                |c| c.count(Action::ModifyInstanceAutoRenewAttribute) >= 1,
                Duration::from_secs(20)
            )
            .await
    );
    // Read while the call is out, through another connection: the row was committed before
    // it left (SQLite: a read-only connection; PostgreSQL: another session of the pool).
    let records = match ecs_renewd::ledger::Ledger::open_read_only(h.state.path()).unwrap() {
        Some(reader) => reader.money_records(Some("i-auto")).unwrap(),
        None => h.engine.ledger.money_records(Some("i-auto")).unwrap(),
    };
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].status, "pending");
    assert_eq!(running.await.unwrap().auto_renew_changed, 1);
}

/// Switching auto-renew on commits future charges: a batch larger than the belt is held.
#[tokio::test]
async fn switching_auto_renew_on_for_more_than_the_belt_allows_is_held() {
    switching_auto_renew_on_for_more_than_the_belt_allows_is_held_on_either().await;
}

async fn switching_auto_renew_on_for_more_than_the_belt_allows_is_held_on_either() {
    let instances = (0..3)
        .map(|n| instance_spec(&format!("i-{n}"), "2026-03-28T16:00Z"))
        .collect();
    let h = Harness::start(
        harness_fleet(NOW, 1000.0, instances),
        "[limits]\nmax_auto_renew_enables_per_run = 2\n[[policies]]\nname = \"auto\"\naction = \"auto-renew\"\n",
    )
    .await;
    let summary = h.pass().await;
    assert_eq!(summary.auto_renew_changed, 0, "{summary:?}");
    assert!(
        summary
            .trips
            .iter()
            .any(|t| t.to_string().starts_with("auto_renew_enables_per_run")),
        "{:?}",
        summary.trips
    );
    assert_eq!(
        h.emulator
            .calls()
            .count(Action::ModifyInstanceAutoRenewAttribute),
        0
    );
}

// ------------------------------------------------------------------ loud refusals

/// A key whose RAM policy lacks RenewInstance: unready and alerting after the first refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_refused_for_permission_is_loud_at_once() {
    let mut fleet = harness_fleet(NOW, 1000.0, due(1));
    fleet.accounts[0].access_keys[0].denied_actions = vec![Action::RenewInstance];
    let clock = Arc::new(VirtualClock::frozen(fleet.settings.clock_start.unwrap()));
    let emulator =
        ecs_emulator::start_with_clock(fleet, "127.0.0.1:0".parse().unwrap(), clock.clone())
            .await
            .unwrap();
    let mut d = start_daemon(&emulator, clock, RENEW_ALL).await;
    let first = d.next_pass().await;
    assert_eq!(first.renew_failed, 1, "{first:?}");
    let admin = d.running.admin_addr;
    let client = reqwest::Client::new();
    let readyz = client
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status().as_u16(), 503);
    let body = readyz.text().await.unwrap();
    assert!(body.contains("Forbidden.RAM"), "{body}");
    let metrics = d.running.metrics.render(&d.running.ledger);
    assert!(
        metrics.contains("ecs_renewd_renewals_refused{account=\"main\",class=\"permission\"} 1"),
        "{metrics}"
    );
    let status = ecs_renewd::commands::status::render_status(
        &ecs_renewd::commands::status::report(&d.running.ledger).unwrap(),
    );
    assert!(
        status.contains("REFUSED: i-due00 (main/cn-hangzhou): the renewal was refused (permission: Forbidden.RAM)"),
        "{status}"
    );
    d.stop().await;
}

/// With a bearer token set, the open `/readyz` gives probes the verdict and generic reasons
/// only; the instances, regions and error codes stay behind the token (`/status`, or `/readyz`
/// with the token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_without_the_token_names_no_instance_region_or_code() {
    let mut fleet = harness_fleet(NOW, 1000.0, due(1));
    fleet.accounts[0].access_keys[0].denied_actions = vec![Action::RenewInstance];
    let clock = Arc::new(VirtualClock::frozen(fleet.settings.clock_start.unwrap()));
    let emulator =
        ecs_emulator::start_with_clock(fleet, "127.0.0.1:0".parse().unwrap(), clock.clone())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    let token = "readyz-token-0123456789abcdef";
    std::fs::write(&token_file, token).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let extra = format!(
        "{RENEW_ALL}[admin]\nbearer_token_file = \"{}\"\n",
        token_file.display()
    );
    let mut d = start_daemon(&emulator, clock, &extra).await;
    assert_eq!(d.next_pass().await.renew_failed, 1);
    let admin = d.running.admin_addr;
    let client = reqwest::Client::new();
    let open = client
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status().as_u16(), 503);
    let body = open.text().await.unwrap();
    for detail in ["i-due00", "cn-hangzhou", "Forbidden.RAM"] {
        assert!(
            !body.contains(detail),
            "{detail} in the open /readyz: {body}"
        );
    }
    assert!(
        body.contains("renewals refused for permission: 1"),
        "{body}"
    );
    let with_token = client
        .get(format!("http://{admin}/readyz"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        with_token.contains("i-due00") && with_token.contains("Forbidden.RAM"),
        "{with_token}"
    );
    d.stop().await;
}

/// An entry whose key was revoked cannot list its sources, so its status lines are kept —
/// but not for an instance another entry for the same cloud account lists now: `status`
/// shows one line per instance, the live one.
#[tokio::test]
async fn a_revoked_entrys_status_line_does_not_stay_beside_the_live_one() {
    a_revoked_entrys_status_line_does_not_stay_beside_the_live_one_on_either().await;
}

async fn a_revoked_entrys_status_line_does_not_stay_beside_the_live_one_on_either() {
    let mut fleet = harness_fleet(
        NOW,
        100_000.0,
        vec![instance_spec("i-one", "2026-03-28T16:00Z")],
    );
    fleet.accounts[0].access_keys.push(AccessKeySpec {
        id: TWIN_KEY.0.into(),
        secret: TWIN_KEY.1.into(),
        security_token: None,
        expires_at: None,
        denied_actions: vec![],
    });
    let dir = tempfile::tempdir().unwrap();
    let probe = Harness::start(fleet, RENEW_ALL).await;
    let extra = format!("{}{RENEW_ALL}", twin_entry(dir.path(), &probe.emulator));
    drop(probe.engine);
    let engine = Harness::engine(&probe.emulator, &probe.clock, probe.state.path(), &extra).await;
    engine.run_pass().await.unwrap();
    let rows = engine.ledger.status_rows().unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let first = rows[0].account.clone();
    // The entry that listed it first loses its key.
    let revoked = if first == "main" {
        HARNESS_KEY.0
    } else {
        TWIN_KEY.0
    };
    probe
        .emulator
        .with_world(|w| assert!(w.revoke_key(revoked)));
    probe.clock.advance(Duration::from_secs(3600));
    let summary = engine.run_pass().await.unwrap();
    assert_eq!(summary.sources_down.len(), 1, "{summary:#?}");
    let rows = engine.ledger.status_rows().unwrap();
    let lines: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.account.as_str(), r.instance_id.as_str()))
        .collect();
    assert_eq!(lines.len(), 1, "one line per instance: {lines:?}");
    assert_ne!(lines[0].0, first, "the live entry's line: {lines:?}");
}

/// Shutdown that begins while a retry waits for the rate limiter, after an attempt that got a
/// 503 (the service may have carried it out): the call's outcome is unknown, not "not sent" —
/// before the fix the attempt was recorded as `not_sent` and the audit trail lost it.
#[tokio::test]
async fn shutdown_between_retries_after_an_unanswered_attempt_is_an_unknown_outcome() {
    let error = shutdown_while_the_retry_waits(support::Reply::error(
        503,
        "ServiceUnavailable",
        "The service is busy.",
    ))
    .await;
    assert!(error.outcome_unknown(), "{error}");
    assert!(
        !matches!(error, ecs_renewd::cloud::CloudError::ShuttingDown { .. }),
        "{error}"
    );
}

/// The same after an attempt the service refused outright (throttled): the call ends with
/// that answer, a known failure — not "not sent", which would lose the attempt.
#[tokio::test]
async fn shutdown_between_retries_after_a_refused_attempt_keeps_the_refusal() {
    let error = shutdown_while_the_retry_waits(support::Reply::error(
        400,
        "Throttling.User",
        "Request was denied due to user flow control.",
    ))
    .await;
    assert!(!error.outcome_unknown(), "{error}");
    assert_eq!(error.code(), Some("Throttling.User"), "{error}");
}

/// Sends a renewal whose first attempt gets `first`; shutdown begins while the retry waits
/// five seconds for the rate limiter; returns how the call ended.
async fn shutdown_while_the_retry_waits(first: support::Reply) -> ecs_renewd::cloud::CloudError {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let stub = support::Stub::start(move |_, index| {
        let _ = arrived_tx.send(index);
        first.clone()
    })
    .await;
    let cancel = CancellationToken::new();
    // One call every five seconds per action: the retry waits in the limiter.
    let client = {
        use ecs_renewd::cloud::RateLimitConfig;
        use ecs_renewd::cloud::credentials::{CredentialProvider, Credentials};
        use ecs_renewd::cloud::{ClientSettings, shared_http_client};
        let settings = ClientSettings {
            account: "main".into(),
            endpoint: ecs_renewd::cloud::Endpoint::parse(&stub.url()).unwrap(),
            read_timeouts: Vec::new(),
            retry: support::fast_retry(3),
            rate_limit: RateLimitConfig {
                per_second: 0.2,
                burst: 1,
                ..RateLimitConfig::default()
            },
        };
        let credentials = CredentialProvider::fixed(
            Credentials {
                access_key_id: support::TEST_KEY_ID.into(),
                access_key_secret: ecs_wire::secret::Secret::new(support::TEST_SECRET),
                security_token: None,
                expiration: None,
            },
            "test",
        );
        ecs_renewd::cloud::EcsClient::new(
            settings,
            shared_http_client(Duration::from_secs(2)),
            Arc::new(credentials),
            Arc::new(ecs_wire::clock::SystemClock),
        )
        .with_cancellation(cancel.clone())
    };
    let token = ecs_renewd::reconcile::client_token("i-1", chrono::DateTime::UNIX_EPOCH, 0);
    let call = tokio::spawn(async move {
        client
            .renew_instance(
                "cn-hangzhou",
                "i-1",
                1,
                ecs_wire::types::PeriodUnit::Month,
                &token,
            )
            .await
    });
    let first = tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .unwrap();
    assert_eq!(first, Some(0));
    // The 503 answer comes back within milliseconds; the retry then waits five seconds for
    // the limiter. Stop in the middle of that wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    let error = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(stub.requests().len(), 1, "no second attempt was sent");
    error
}

/// Once today's renewal count is used up, a retry due later today will be held by the belt:
/// no reason to wake before the schedule. (The funds forecast is off: with it, the top-up that
/// lets i-later renew would end i-poor's backoff too, and both would be due at once.)
#[tokio::test]
async fn a_retry_the_daily_count_will_hold_is_no_reason_to_wake() {
    a_retry_the_daily_count_will_hold_is_no_reason_to_wake_on_either().await;
}

async fn a_retry_the_daily_count_will_hold_is_no_reason_to_wake_on_either() {
    let fleet = harness_fleet(
        NOW,
        0.0,
        vec![
            instance_spec("i-poor", "2026-03-13T16:00Z"),
            // Due at 04:02Z with renew_before 7 days, before i-poor's retry at 04:05Z.
            instance_spec("i-later", "2026-03-17T04:02Z"),
        ],
    );
    let h = Harness::start(
        fleet,
        &format!("[funds]\nenabled = false\n[limits]\nmax_renewals_per_day = 1\n{RENEW_ALL}"),
    )
    .await;
    let first = h.pass().await;
    assert_eq!(first.renew_failed, 1, "{first:?}");
    assert!(
        first.next_retry_at.is_some(),
        "the funds retry wakes the daemon"
    );
    h.emulator.with_world(|w| w.set_balance("main", 100_000));
    h.advance(minutes(2));
    let second = h.pass().await;
    assert_eq!(second.renewed, 1, "{second:?}");
    assert_eq!(
        second.next_retry_at, None,
        "today's one renewal is made: i-poor's retry today would be held"
    );
}

/// The money-safety tests above that build their engines through the harness, again with the
/// ledger in PostgreSQL (`support::on_postgres`). Those that drive the daemon loop, a stub
/// server, or SQLite itself (a row damaged with rusqlite) stay SQLite's; the daemon's money
/// paths on PostgreSQL are `failover.rs`'s.
mod on_postgres {
    use crate::support::on_postgres;

    #[tokio::test]
    async fn two_entries_for_one_cloud_account_charge_each_instance_once() {
        on_postgres(super::two_entries_for_one_cloud_account_charge_each_instance_once_on_either())
            .await;
    }

    #[tokio::test]
    async fn two_entries_for_one_cloud_account_forecast_its_charges_together() {
        on_postgres(
            super::two_entries_for_one_cloud_account_forecast_its_charges_together_on_either(),
        )
        .await;
    }

    #[tokio::test]
    async fn a_period_change_after_a_maybe_charged_attempt_does_not_charge_again() {
        on_postgres(
            super::a_period_change_after_a_maybe_charged_attempt_does_not_charge_again_on_either(),
        )
        .await;
    }

    #[tokio::test]
    async fn a_timeout_then_a_busy_answer_is_an_unknown_outcome() {
        on_postgres(super::a_timeout_then_a_busy_answer_is_an_unknown_outcome_on_either()).await;
    }

    #[tokio::test]
    async fn a_charge_learned_by_settling_counts_toward_the_daily_limit() {
        on_postgres(super::a_charge_learned_by_settling_counts_toward_the_daily_limit_on_either())
            .await;
    }

    #[tokio::test]
    async fn a_quote_in_another_currency_is_held_by_a_spend_limit() {
        on_postgres(super::a_quote_in_another_currency_is_held_by_a_spend_limit_on_either()).await;
    }

    #[tokio::test]
    async fn max_price_is_compared_in_its_own_currency() {
        on_postgres(super::max_price_is_compared_in_its_own_currency_on_either()).await;
    }

    #[tokio::test]
    async fn a_spend_limit_enabled_mid_day_counts_the_days_earlier_charges() {
        on_postgres(
            super::a_spend_limit_enabled_mid_day_counts_the_days_earlier_charges_on_either(),
        )
        .await;
    }

    #[tokio::test]
    async fn an_auto_renew_change_is_recorded_before_it_is_sent() {
        on_postgres(super::an_auto_renew_change_is_recorded_before_it_is_sent_on_either()).await;
    }

    #[tokio::test]
    async fn switching_auto_renew_on_for_more_than_the_belt_allows_is_held() {
        on_postgres(
            super::switching_auto_renew_on_for_more_than_the_belt_allows_is_held_on_either(),
        )
        .await;
    }

    #[tokio::test]
    async fn a_revoked_entrys_status_line_does_not_stay_beside_the_live_one() {
        on_postgres(
            super::a_revoked_entrys_status_line_does_not_stay_beside_the_live_one_on_either(),
        )
        .await;
    }

    #[tokio::test]
    async fn a_retry_the_daily_count_will_hold_is_no_reason_to_wake() {
        on_postgres(super::a_retry_the_daily_count_will_hold_is_no_reason_to_wake_on_either())
            .await;
    }
}
