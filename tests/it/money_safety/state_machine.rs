//! The state-machine (model-based) test. It drives the real engine (the `Engine` that `run`
//! and `once` build) and the daemon's wake-up rule (`daemon::wake::RetryWakes`, what `run`
//! decides to do after each pass) against the emulator, through random sequences of:
//! time passing (the daemon runs every pass it would: hourly cron ticks and the retry
//! wake-ups the last pass asked for), an answer with every code the client classifies on every
//! action of a pass, resets, garbled bodies, timeouts and commit-then-drop at every step of a
//! renewal, config reloads (period, policy, dry run, a second config entry for the same cloud
//! account added or removed — with its own AccessKey or assuming a RAM role through STS —, the
//! first entry removed, limits), balance changes, people renewing or switching auto-renew in
//! the console, instances released, a process killed in the middle of a renewal, restarts,
//! every STS key expiring at once (the next call meets `InvalidSecurityToken.Expired`), and
//! the role's trust policy revoked and restored (STS refuses; the refusal pause).
//!
//! After every step, and after every pass within a step, it checks:
//! - at most one order of ours per instance and expiry cycle, and none after another order of
//!   that cycle was visible;
//! - every order of ours has its ledger record, and the record counts toward the belts;
//! - no lapse of a renew-policy instance while it could be renewed: after a calm pass (no
//!   fault pending or answered, funds, a renew policy, no dry run, no tight limit, the account
//!   configured) every due instance not waiting out a backoff has its order;
//! - API calls within a budget: per pass, what the fleet, the sources and the retries justify;
//!   per step, that times the passes the cadence and the retries justify;
//! - a pass run for retries alone never starts within `backoff_floor` of the previous one;
//! - the ledger reads back whole.
//!
//! proptest generates the sequences and shrinks a failure to a minimal one. CI runs
//! `ECS_RENEWD_SM_CASES` (default 24) cases of up to `ECS_RENEWD_SM_STEPS` (default 24) steps
//! with a fixed seed; `ECS_RENEWD_SM=long` runs 400 cases of up to 60 steps
//! (`ECS_RENEWD_SM_SEED` fixes the seed). Figures go to
//! target/reliability/state-machine-<variant>.json.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ecs_emulator::instance::Lifecycle;
use ecs_emulator::settings::{AccessKeySpec, AccountSpec, InstanceSpec};
use ecs_emulator::{EmulatorConfig, EmulatorHandle, FaultKind, FaultSpec};
use ecs_renewd::cloud::credentials::Environment;
use ecs_renewd::config::Config;
use ecs_renewd::daemon::RetryWakes;
use ecs_renewd::reconcile::HistorySource;
use ecs_renewd::reconcile::{Engine, PassSummary};
use ecs_wire::Action;
use ecs_wire::clock::{Clock, VirtualClock};
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

#[path = "state_machine/forecast.rs"]
mod forecast;

const START: &str = "2026-03-10T04:00:00Z";
const SCHEDULE: &str = "0 0 * * * *";
const FLOOR: Duration = Duration::from_secs(300);
const RENEW_BEFORE_DAYS: i64 = 7;
const REGIONS: [&str; 2] = ["cn-hangzhou", "cn-beijing"];
const MAIN_KEY: (&str, &str) = ("LTAIsmmain", "sm-main-secret");
/// The account's id (the emulator's default for its first account), trusted by its role.
const SM_UID: &str = "1000000000000001";
/// The role the twin entry assumes when `twin_role` is set.
const TWIN_ROLE: &str = "sm-twin";
const TWIN_KEY: (&str, &str) = ("LTAIsmtwin", "sm-twin-secret");
const INSTANCES: usize = 10;
const MAX_ATTEMPTS: u64 = 2;

struct Options {
    cases: u32,
    steps: usize,
    seed: u64,
    variant: &'static str,
}

fn options() -> Options {
    let number = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let long = std::env::var("ECS_RENEWD_SM").as_deref() == Ok("long");
    Options {
        cases: number("ECS_RENEWD_SM_CASES").unwrap_or(if long { 400 } else { 24 }) as u32,
        steps: number("ECS_RENEWD_SM_STEPS").unwrap_or(if long { 60 } else { 24 }) as usize,
        seed: number("ECS_RENEWD_SM_SEED").unwrap_or(20_261_130),
        variant: if long { "long" } else { "ci" },
    }
}

// ------------------------------------------------------------------ the operations

/// What the renew-role policy does after a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RenewMode {
    Renew { months: u32 },
    Observe,
    Skip,
    NotRenewal,
}

/// A config as reloads change it.
#[derive(Debug, Clone, PartialEq)]
struct Knobs {
    main_entry: bool,
    twin_entry: bool,
    /// The twin entry assumes `TWIN_ROLE` (15-minute keys) instead of signing with its key.
    twin_role: bool,
    renew: RenewMode,
    fallback: bool,
    dry_run: bool,
    tight_daily_count: bool,
    spend_limit: Option<&'static str>,
    tight_enables: bool,
}

impl Knobs {
    fn calm(&self) -> bool {
        (self.main_entry || self.twin_entry)
            && matches!(self.renew, RenewMode::Renew { .. })
            && !self.dry_run
            && !self.tight_daily_count
            && self.spend_limit.is_none()
    }

    fn initial() -> Knobs {
        Knobs {
            main_entry: true,
            twin_entry: false,
            twin_role: false,
            renew: RenewMode::Renew { months: 1 },
            fallback: true,
            dry_run: false,
            tight_daily_count: false,
            spend_limit: None,
            tight_enables: false,
        }
    }
}

#[derive(Debug, Clone)]
enum Answer {
    /// An error answer with a classified code (index into `classified_codes`).
    Code(usize),
    Reset,
    Html,
    Malformed,
    CommitThenDrop,
    Timeout,
}

#[derive(Debug, Clone)]
enum Console {
    Renew,
    SetStatus(RenewalStatus),
    Release,
    DeductionFails(bool),
}

#[derive(Debug, Clone)]
enum Op {
    /// Time passes; the daemon runs every pass it would meanwhile.
    Advance { minutes: u32 },
    /// The next `count` calls of `action` get this answer.
    Fault {
        action: Action,
        answer: Answer,
        count: u64,
    },
    /// SIGHUP with a new config.
    Reload(Knobs),
    /// The process stops between passes and starts again.
    Restart,
    /// The process is killed while a renewal is out, then starts again.
    KillDuringRenewal,
    /// The account's balance.
    Balance(f64),
    /// A person in the console.
    Console { instance: usize, change: Console },
    /// Every key STS minted expires now.
    ExpireStsKeys,
    /// The twin role's trust policy trusts the account (true) or nobody (false).
    RoleTrust(bool),
}

/// Every action of a pass; the renewal, where the money moves, more often.
fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(vec![
        Action::DescribeInstances,
        Action::DescribeInstanceAutoRenewAttribute,
        Action::DescribeRenewalPrice,
        Action::RenewInstance,
        Action::RenewInstance,
        Action::RenewInstance,
        Action::ModifyInstanceAutoRenewAttribute,
        // The funds forecast's balance call (a top-up ends funds backoffs through it).
        Action::QueryAccountBalance,
    ])
}

fn answer() -> impl Strategy<Value = Answer> {
    let codes = ecs_renewd::cloud::classified_codes().len();
    prop_oneof![
        6 => (0..codes).prop_map(Answer::Code),
        1 => Just(Answer::Reset),
        1 => Just(Answer::Html),
        1 => Just(Answer::Malformed),
        2 => Just(Answer::CommitThenDrop),
        1 => Just(Answer::Timeout),
    ]
}

fn knobs() -> impl Strategy<Value = Knobs> {
    (
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.3),
        prop_oneof![
            4 => (1u32..=2).prop_map(|months| RenewMode::Renew { months }),
            1 => Just(RenewMode::Observe),
            1 => Just(RenewMode::Skip),
            1 => Just(RenewMode::NotRenewal),
        ],
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        prop_oneof![
            4 => Just(None),
            1 => Just(Some("{ CNY = 150.0 }")),
            1 => Just(Some("{ CNY = 100000.0 }")),
            1 => Just(Some("{ USD = 100000.0 }")),
        ],
        prop::bool::weighted(0.15),
        any::<bool>(),
    )
        .prop_map(
            |(
                main_entry,
                twin_entry,
                renew,
                fallback,
                dry_run,
                tight,
                spend,
                enables,
                twin_role,
            )| Knobs {
                main_entry,
                twin_entry: twin_entry || !main_entry,
                twin_role,
                renew,
                fallback,
                dry_run,
                tight_daily_count: tight,
                spend_limit: spend,
                tight_enables: enables,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop_oneof![
            4 => (1u32..=240).prop_map(|minutes| Op::Advance { minutes }),
            1 => (1u32..=3).prop_map(|days| Op::Advance { minutes: days * 1440 }),
        ],
        5 => (action(), answer(), 1u64..=3).prop_map(|(action, answer, count)| Op::Fault {
            action,
            answer,
            count
        }),
        2 => knobs().prop_map(Op::Reload),
        1 => Just(Op::Restart),
        1 => Just(Op::KillDuringRenewal),
        1 => prop::sample::select(vec![0.0, 150.0, 100_000.0]).prop_map(Op::Balance),
        2 => (
            0..INSTANCES,
            prop_oneof![
                Just(Console::Renew),
                Just(Console::SetStatus(RenewalStatus::NotRenewal)),
                Just(Console::SetStatus(RenewalStatus::AutoRenewal)),
                Just(Console::SetStatus(RenewalStatus::Normal)),
                Just(Console::Release),
                any::<bool>().prop_map(Console::DeductionFails),
            ]
        )
            .prop_map(|(instance, change)| Op::Console { instance, change }),
        1 => Just(Op::ExpireStsKeys),
        1 => any::<bool>().prop_map(Op::RoleTrust),
    ]
}

/// A case: whether renewals show at once, whether the provider replays a refused
/// ClientToken's failure (UNCERTAIN, so both), the jitter seed, the operations.
fn case(steps: usize) -> impl Strategy<Value = (bool, bool, u64, Vec<Op>)> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
        prop::collection::vec(op(), 1..=steps),
    )
}

// ------------------------------------------------------------------ the world

fn role(n: usize) -> &'static str {
    match n {
        0..=4 => "renew",
        5 | 6 => "auto",
        7 => "lapse",
        8 => "other",
        _ => "postpaid",
    }
}

fn fleet(delayed: bool, replay: bool) -> EmulatorConfig {
    let start = ecs_wire::time::parse(START).unwrap();
    let instances = (0..INSTANCES)
        .map(|n| {
            let expires =
                ecs_wire::time::start_of_day_utc8(start + chrono::Duration::days(n as i64 * 3 + 2));
            InstanceSpec {
                id: Some(format!("i-sm{n:02}")),
                account: None,
                region: REGIONS[n % 2].into(),
                zone: None,
                name: Some(format!("sm-{n}")),
                charge_type: if role(n) == "postpaid" {
                    ChargeType::PostPaid
                } else {
                    ChargeType::PrePaid
                },
                expires_at: Some(expires),
                expires_in: None,
                expired_ago: None,
                tags: [("role".to_string(), role(n).to_string())].into(),
                security_groups: vec![],
                instance_type: "ecs.g6.large".into(),
                resource_group_id: String::new(),
                monthly_price: 100.0,
                renewal_status: if role(n) == "auto" {
                    RenewalStatus::AutoRenewal
                } else {
                    RenewalStatus::Normal
                },
                auto_renew_duration: 1,
                auto_renew_unit: PeriodUnit::Month,
                deduction_fails: n == 6,
            }
        })
        .collect();
    let key = |(id, secret): (&str, &str)| AccessKeySpec {
        id: id.into(),
        secret: secret.into(),
        security_token: None,
        expires_at: None,
        denied_actions: vec![],
    };
    let mut config = EmulatorConfig {
        accounts: vec![AccountSpec {
            uid: None,
            roles: vec![ecs_emulator::settings::RoleSpec {
                name: TWIN_ROLE.into(),
                trust: vec![SM_UID.into()],
                external_id: None,
                max_session: None,
            }],
            members: Vec::new(),
            name: "sm".into(),
            balance: 100_000.0,
            currency: "CNY".into(),
            access_keys: vec![key(MAIN_KEY), key(TWIN_KEY)],
        }],
        instances,
        ..EmulatorConfig::default()
    };
    config.settings.clock_start = Some(start);
    config.settings.clock_speed = 0.0;
    if replay {
        config.settings.failed_tokens = ecs_emulator::settings::FailedTokens::ReplayFailure;
    }
    config.settings.renew_visibility_delay = if delayed {
        Duration::from_secs(600)
    } else {
        Duration::ZERO
    };
    config
}

fn config_text(knobs: &Knobs, emulator: &EmulatorHandle, dir: &Path) -> String {
    let mut text = format!(
        "[daemon]\nschedule = \"{SCHEDULE}\"\njitter = \"0s\"\nstate_dir = \"{}\"\ndry_run = {}\n\
         [scan]\nregions = [\"{}\", \"{}\"]\n\
         [retry]\nbackoff_floor = \"5m\"\nverify_timeout = \"60ms\"\nverify_interval = \"20ms\"\n\
         [limits]\nmax_renewals_per_day = {}\nmax_auto_renew_enables_per_run = {}\n",
        dir.join("state").display(),
        knobs.dry_run,
        REGIONS[0],
        REGIONS[1],
        if knobs.tight_daily_count { 2 } else { 500 },
        if knobs.tight_enables { 1 } else { 1000 },
    );
    if let Some(limit) = knobs.spend_limit {
        text.push_str(&format!("max_spend_per_day = {limit}\n"));
    }
    let entry = |name: &str, credentials: String| {
        format!(
            "[[accounts]]\nname = \"{name}\"\nendpoint = \"{}\"\n{credentials}\
             [accounts.rate_limit]\nper_second = 1000\nburst = 100\n\
             [accounts.call_retry]\nmax_attempts = {MAX_ATTEMPTS}\nbase_delay = \"2ms\"\nmax_delay = \"5ms\"\nmax_retry_after = \"20ms\"\n\
             [accounts.read_timeouts]\nDescribeInstances = \"200ms\"\nDescribeInstanceAutoRenewAttribute = \"200ms\"\n\
             DescribeRenewalPrice = \"200ms\"\nRenewInstance = \"200ms\"\nModifyInstanceAutoRenewAttribute = \"200ms\"\n",
            emulator.url()
        )
    };
    if knobs.main_entry {
        text.push_str(&entry(
            "main",
            "[accounts.credentials]\nsource = \"env\"\n".into(),
        ));
    }
    if knobs.twin_entry && knobs.twin_role {
        text.push_str(&entry(
            "twin",
            format!(
                "[accounts.credentials]\nsource = \"env\"\n[accounts.assume_role]\nrole_arn = \"acs:ram::{SM_UID}:role/{TWIN_ROLE}\"\nduration = \"15m\"\n"
            ),
        ));
    } else if knobs.twin_entry {
        text.push_str(&entry(
            "twin",
            format!(
                "[accounts.credentials]\nsource = \"file\"\naccess_key_id = \"{}\"\naccess_key_secret_file = \"{}\"\n",
                TWIN_KEY.0,
                dir.join("twin-secret").display()
            ),
        ));
    }
    let renew = match knobs.renew {
        RenewMode::Renew { months } => format!(
            "action = \"renew\"\nperiod = {months}\nrenew_before = \"{RENEW_BEFORE_DAYS}d\"\n"
        ),
        RenewMode::Observe => "action = \"observe\"\n".into(),
        RenewMode::Skip => "action = \"skip\"\n".into(),
        RenewMode::NotRenewal => "action = \"not-renewal\"\n".into(),
    };
    text.push_str(&format!(
        "[[policies]]\nname = \"renew\"\n{renew}[policies.match]\ntags = {{ role = \"renew\" }}\n\
         [[policies]]\nname = \"auto\"\naction = \"auto-renew\"\nfallback_renew = {}\n[policies.match]\ntags = {{ role = \"auto\" }}\n\
         [[policies]]\nname = \"lapse\"\naction = \"not-renewal\"\n[policies.match]\ntags = {{ role = \"lapse\" }}\n",
        knobs.fallback
    ));
    text.push_str(&crate::support::ledger_section(dir));
    text
}

fn env() -> Environment {
    Environment::from_pairs([
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", MAIN_KEY.0),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", MAIN_KEY.1),
    ])
}

// ------------------------------------------------------------------ the model

/// What every case adds up to, for the figures.
#[derive(Default)]
struct Totals {
    cases: AtomicU64,
    steps: AtomicU64,
    passes: AtomicU64,
    retry_passes: AtomicU64,
    calls: AtomicU64,
    our_orders: AtomicU64,
    faults: AtomicU64,
    reloads: AtomicU64,
    restarts: AtomicU64,
    kills: AtomicU64,
    calm_checks: AtomicU64,
    forecast_checks: AtomicU64,
    quiet_forecast_checks: AtomicU64,
    replaying_cases: AtomicU64,
}

/// Why a pass ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cron,
    Retry,
    Startup,
}

struct Model {
    emulator: EmulatorHandle,
    clock: Arc<VirtualClock>,
    dir: tempfile::TempDir,
    knobs: Knobs,
    engine: Option<Engine>,
    wakes: RetryWakes,
    jitter: StdRng,
    last_pass: Option<DateTime<Utc>>,
    delay: Duration,
    log: Vec<String>,
    balance: forecast::BalanceWatch,
    /// Passes whose orders charged the account (each lets the balance be read again).
    charging_passes: u64,
    /// Whether the twin role trusts the account, and since when (a refusal stands for
    /// `REFUSAL_PAUSE` after the last refused AssumeRole, which is before the restore).
    trusted: (bool, Option<DateTime<Utc>>),
}

type Check = Result<(), TestCaseError>;

fn fail(model: &Model, what: String) -> TestCaseError {
    let tail: Vec<&String> = model.log.iter().rev().take(12).collect();
    TestCaseError::fail(format!("{what}\nlast events (newest first): {tail:#?}"))
}

impl Model {
    async fn start(delayed: bool, replay: bool, seed: u64, postgres: bool) -> Model {
        let fleet = fleet(delayed, replay);
        let delay = fleet.settings.renew_visibility_delay;
        let clock = Arc::new(VirtualClock::frozen(fleet.settings.clock_start.unwrap()));
        let emulator =
            ecs_emulator::start_with_clock(fleet, "127.0.0.1:0".parse().unwrap(), clock.clone())
                .await
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        if postgres {
            crate::support::ledger_in_postgres(dir.path()).await;
        }
        let secret = dir.path().join("twin-secret");
        std::fs::write(&secret, TWIN_KEY.1).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let mut model = Model {
            emulator,
            clock,
            dir,
            knobs: Knobs::initial(),
            engine: None,
            wakes: RetryWakes::new(FLOOR),
            jitter: StdRng::seed_from_u64(seed),
            last_pass: None,
            delay,
            log: Vec::new(),
            balance: forecast::BalanceWatch::default(),
            charging_passes: 0,
            trusted: (true, None),
        };
        model.engine = Some(model.open_engine().await);
        model
    }

    fn config(&self) -> Config {
        let text = config_text(&self.knobs, &self.emulator, self.dir.path());
        Config::parse(&text, Path::new("sm.toml"), &env()).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// A fresh process: ledger, metrics and clients; the wake-up state as `run` restores it.
    async fn open_engine(&mut self) -> Engine {
        // A killed pass's blocking ledger writes may still hold the state directory's lock
        // for a moment (a real process's lock goes with the process).
        let config = self.config();
        if let ecs_renewd::config::LedgerLocation::Postgres { url, .. } = &config.ledger {
            // One process's ledger and term for the whole case: a restart is a new engine
            // over the same shared ledger.
            let engine =
                crate::support::Harness::shared_engine(config.clone(), url, &self.clock).await;
            return self.restored(engine);
        }
        let mut tries = 0;
        let engine = loop {
            match ecs_renewd::commands::once::engine(
                self.config(),
                &env(),
                self.clock.clone(),
                CancellationToken::new(),
            )
            .await
            {
                Ok(engine) => break engine,
                Err(e)
                    if tries < 500
                        && e.to_string().contains("already uses the state directory") =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        self.restored(engine)
    }

    /// Each intent's token, order and counted day (`out` while an attempt is out), read from
    /// the ledger's own storage with our own SQL: the SQLite file, or the PostgreSQL database
    /// (on a thread of its own: this check is synchronous).
    fn raw_records(&self) -> BTreeMap<String, (Option<String>, Option<String>)> {
        // An intent still `sent` (its process stopped while the attempt was out) is counted by
        // `day_totals` until the next pass marks and counts it.
        const SQL: &str = "SELECT client_token, order_id, CASE WHEN status = 'sent' THEN 'out' ELSE counted_day END FROM intents";
        let url_file = self.dir.path().join("ledger-url");
        if let Ok(url) = std::fs::read_to_string(&url_file) {
            return std::thread::scope(|s| {
                s.spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        let (client, connection) =
                            tokio_postgres::connect(&url, tokio_postgres::NoTls)
                                .await
                                .unwrap();
                        tokio::spawn(connection);
                        client
                            .query(SQL, &[])
                            .await
                            .unwrap()
                            .iter()
                            .map(|r| (r.get(0), (r.get(1), r.get(2))))
                            .collect()
                    })
                })
                .join()
                .unwrap()
            });
        }
        let raw = rusqlite::Connection::open_with_flags(
            self.dir.path().join("state/ledger.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        raw.prepare(SQL)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The wake-up state as `run` restores it at start, from `engine`'s ledger.
    fn restored(&mut self, engine: Engine) -> Engine {
        self.wakes = RetryWakes::new(FLOOR);
        if let Some(last) = engine.ledger.last_pass().unwrap() {
            self.wakes
                .after_pass(last.started_at, last.next_retry_at, self.jitter.random());
        }
        engine
    }

    /// SIGHUP: a new config, clients and engine over the same ledger and metrics (as
    /// `reload_config` builds it).
    async fn reload(&mut self, knobs: Knobs) {
        self.knobs = knobs;
        let config = self.config();
        let old = self.engine.take().unwrap();
        self.wakes.set_floor(config.retry.backoff_floor);
        let engine = Engine::connect(config, &env(), old.base())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.engine = Some(engine);
    }

    /// Waits until the emulator has answered every request that reached it (one a client
    /// gave up on is still carried out, later). Virtual time moves only after that: a request
    /// in flight for a moment of real time must not be carried out hours of virtual time later
    /// (past the ClientToken's retention), which no network does.
    async fn drain(&self) -> Check {
        let arrived: u64 = self.emulator.calls().by_action.values().sum();
        if self
            .emulator
            .wait_for_answers(arrived, Duration::from_secs(10))
            .await
        {
            Ok(())
        } else {
            Err(fail(
                self,
                "the emulator did not answer every request within 10 s".into(),
            ))
        }
    }

    fn calls(&self) -> u64 {
        let calls = self.emulator.calls();
        Action::ALL.iter().map(|a| calls.count(*a)).sum()
    }

    /// The most calls one pass may make: per source a page, its attributes, a permission
    /// probe, a re-read, verification polls, out-of-window looks and auto-renew batches; per
    /// entry two balance reads (the top-up check and the forecast after a charge); per
    /// instance a quote, a renewal, an earlier charge's quote and the forecast's quote — each
    /// attempt up to `MAX_ATTEMPTS` times.
    fn pass_budget(&self) -> u64 {
        let entries = u64::from(self.knobs.main_entry) + u64::from(self.knobs.twin_entry);
        let sources = entries * REGIONS.len() as u64;
        let verify_polls = 60 / 20 + 2;
        let per_source = 1 + 1 + 1 + 1 + verify_polls + 1 + 3;
        let per_entry = 2;
        let per_instance = 4;
        MAX_ATTEMPTS
            * (sources * per_source + entries * per_entry + INSTANCES as u64 * per_instance)
    }

    async fn pass(&mut self, kind: Kind, totals: &Totals) -> Check {
        let now = self.clock.now();
        if kind == Kind::Retry
            && let Some(last) = self.last_pass
            && now - last < chrono::Duration::from_std(FLOOR).unwrap()
        {
            return Err(fail(
                self,
                format!(
                    "a retry pass at {now} only {} after the last one",
                    now - last
                ),
            ));
        }
        let funded = self
            .emulator
            .with_world(|w| w.account("sm").is_some_and(|a| a.balance_cents >= 100_000));
        let calm = self.knobs.calm()
            && self.reachable(now)
            && funded
            && self.emulator.pending_faults() == 0;
        let before = self.snapshot(now);
        let calls = self.calls();
        let orders = self.emulator.orders().len();
        let outcomes = self.emulator.calls().by_outcome;
        let engine = self.engine.as_ref().unwrap();
        let summary = engine
            .run_pass()
            .await
            .map_err(|e| fail(self, format!("the {kind:?} pass at {now} failed: {e}")))?;
        self.drain().await?;
        self.last_pass = Some(now);
        self.wakes.after_pass(
            summary.started_at,
            summary.next_retry_at,
            self.jitter.random(),
        );
        let used = self.calls() - calls;
        totals.passes.fetch_add(1, Ordering::Relaxed);
        totals
            .retry_passes
            .fetch_add(u64::from(kind == Kind::Retry), Ordering::Relaxed);
        totals.calls.fetch_add(used, Ordering::Relaxed);
        self.log.push(format!(
            "{kind:?} pass at {now}: {used} calls, {}",
            summary.line()
        ));
        if used > self.pass_budget() {
            return Err(fail(
                self,
                format!(
                    "a pass made {used} calls, over its budget of {}",
                    self.pass_budget()
                ),
            ));
        }
        let answered_calmly = self.emulator.calls().by_outcome.iter().all(|(code, n)| {
            matches!(code.as_str(), "OK" | "DryRunOperation") || outcomes.get(code) == Some(n)
        });
        if calm && answered_calmly {
            totals.calm_checks.fetch_add(1, Ordering::Relaxed);
            self.no_lapse(&before, &summary)?;
        }
        if self.emulator.orders().len() > orders {
            self.charging_passes += 1;
        }
        let quiet = answered_calmly
            && self.emulator.pending_faults() == 0
            && self.delay.is_zero()
            && summary.refused.is_empty();
        totals.forecast_checks.fetch_add(1, Ordering::Relaxed);
        totals
            .quiet_forecast_checks
            .fetch_add(u64::from(quiet), Ordering::Relaxed);
        forecast::check(self, &summary, quiet)?;
        self.invariants()
    }

    /// Whether some entry can act on the account at `now`: the main entry, or the twin entry
    /// when it signs with its own key or its role trusts the account and any refusal's pause
    /// has passed.
    fn reachable(&self, now: DateTime<Utc>) -> bool {
        let pause = chrono::Duration::from_std(ecs_renewd::cloud::credentials::REFUSAL_PAUSE)
            .unwrap_or_default();
        let role_usable = match self.trusted {
            (false, _) => false,
            (true, None) => true,
            (true, Some(restored)) => now >= restored + pause,
        };
        self.knobs.main_entry || !self.knobs.twin_role || role_usable
    }

    /// The twin role's trust policy: the account or nobody.
    fn set_trust(&mut self, trusted: bool) {
        let trust = if trusted {
            vec![SM_UID.to_owned()]
        } else {
            Vec::new()
        };
        self.emulator.with_world(|w| {
            let role = w.identities_mut().role_mut(SM_UID, TWIN_ROLE);
            role.expect("the fleet has the twin role").trust = trust;
        });
        if trusted != self.trusted.0 {
            self.trusted = (trusted, trusted.then(|| self.clock.now()));
        }
    }

    /// Each renew-role instance's expiry cycle and whether it must be renewed in a calm pass.
    fn snapshot(&self, now: DateTime<Utc>) -> Vec<(String, DateTime<Utc>, bool)> {
        let histories = self.engine.as_ref().unwrap().ledger.histories().unwrap();
        let due_from = chrono::Duration::days(RENEW_BEFORE_DAYS);
        self.emulator.with_world(|w| {
            let settings = w.settings.clone();
            w.instances()
                .filter(|i| i.tags.iter().any(|(k, v)| k == "role" && v == "renew"))
                .map(|i| {
                    let expiry = i.shown_expiry(now);
                    let backoff = histories.history(&i.id).retry_at.is_some_and(|at| at > now);
                    let must = i.lifecycle(now, &settings) != Lifecycle::Released
                        && i.renewal_status != RenewalStatus::NotRenewal
                        && now >= expiry - due_from
                        && !backoff;
                    (i.id.clone(), expiry, must)
                })
                .collect()
        })
    }

    fn no_lapse(&self, before: &[(String, DateTime<Utc>, bool)], summary: &PassSummary) -> Check {
        let orders = self.emulator.orders();
        for (id, expiry, must) in before {
            let renewed = orders.iter().any(|o| {
                &o.instance_id == id
                    && o.old_expiry >= *expiry
                    && o.client_token
                        .as_deref()
                        .is_some_and(|t| t.starts_with("ern"))
            });
            if *must && !renewed {
                return Err(fail(
                    self,
                    format!(
                        "{id} (expiry {expiry}) was due in a calm pass and has no order of ours: {summary:?}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Runs every pass the daemon would run until `end`: cron ticks and retry wake-ups.
    async fn advance_to(&mut self, end: DateTime<Utc>, totals: &Totals) -> Check {
        let config = self.engine.as_ref().unwrap().config.clone();
        let start = self.clock.now();
        let calls = self.calls();
        let (balance_calls, charging) = (forecast::balance_calls(self), self.charging_passes);
        let mut passes = 0u64;
        loop {
            let now = self.clock.now();
            let tick =
                ecs_renewd::daemon::next_fire(&config.schedule, config.timezone, now).unwrap();
            let (at, kind) = match self.wakes.next() {
                Some(retry) if retry < tick => (retry.max(now), Kind::Retry),
                _ => (tick, Kind::Cron),
            };
            if at > end {
                break;
            }
            self.clock.set(at);
            self.pass(kind, totals).await?;
            passes += 1;
        }
        self.clock.set(end);
        // The cadence and the retries justify at most this many passes and calls.
        let span = (end - start).num_seconds().max(0) as u64;
        let ticks = span / 3600 + 1;
        let retries = span / FLOOR.as_secs() + 1;
        if passes > ticks + retries {
            return Err(fail(
                self,
                format!(
                    "{passes} passes in {span} s: the cadence and the retries justify {}",
                    ticks + retries
                ),
            ));
        }
        let entries = u64::from(self.knobs.main_entry) + u64::from(self.knobs.twin_entry);
        let read = forecast::balance_calls(self) - balance_calls;
        let allowed = forecast::balance_budget(
            end - start,
            entries,
            self.charging_passes - charging,
            MAX_ATTEMPTS,
        );
        if read > allowed {
            return Err(fail(
                self,
                format!("{read} balance reads in {span} s, over the rule's {allowed}"),
            ));
        }
        let used = self.calls() - calls;
        let budget = (ticks + retries) * self.pass_budget();
        if used > budget {
            return Err(fail(
                self,
                format!("{used} calls in {span} s, over the budget of {budget}"),
            ));
        }
        Ok(())
    }

    async fn restart(&mut self, totals: &Totals) -> Check {
        drop(self.engine.take());
        self.engine = Some(self.open_engine().await);
        totals.restarts.fetch_add(1, Ordering::Relaxed);
        // `run` starts with a pass when the last successful one is older than a cadence.
        let engine = self.engine.as_ref().unwrap();
        let recent = engine
            .ledger
            .last_successful_pass()
            .unwrap()
            .is_some_and(|at| self.clock.now() - at < chrono::Duration::hours(1));
        if !recent {
            self.pass(Kind::Startup, totals).await?;
        }
        Ok(())
    }

    /// A renewal is held in the emulator while the pass is dropped (the process dies); the
    /// emulator then carries the request out. The next process must neither lose nor repeat
    /// the charge.
    async fn kill_during_renewal(&mut self, totals: &Totals) -> Check {
        self.emulator
            .add_fault(FaultSpec::latency(Action::RenewInstance, 150));
        let renewals = self.emulator.calls().count(Action::RenewInstance);
        {
            let engine = self.engine.as_ref().unwrap();
            let emulator = &self.emulator;
            tokio::select! {
                _ = engine.run_pass() => {}
                _ = emulator.wait_for(|c| c.count(Action::RenewInstance) > renewals, Duration::from_secs(10)) => {}
            }
        }
        // The "new process" starts once every request the old one sent has been carried out.
        self.drain().await?;
        totals.kills.fetch_add(1, Ordering::Relaxed);
        self.log.push("killed during a renewal".into());
        self.restart(totals).await
    }

    fn console(&mut self, instance: usize, change: &Console) {
        let id = format!("i-sm{instance:02}");
        // A renewal in the console charges the account: a person's change of the balance.
        self.balance.person_changed |= matches!(change, Console::Renew);
        let now = self.clock.now();
        let done = self.emulator.with_world(|w| match change {
            Console::Renew => w
                .renew(
                    "sm",
                    &id,
                    1,
                    PeriodUnit::Month,
                    Some(&format!("console-{now}")),
                    now,
                )
                .map(|_| ())
                .map_err(|f| format!("{f:?}")),
            Console::SetStatus(status) => w
                .set_auto_renew(
                    "sm",
                    std::slice::from_ref(&id),
                    *status,
                    Some(1),
                    PeriodUnit::Month,
                    now,
                )
                .map_err(|f| format!("{f:?}")),
            Console::Release => {
                w.set_expiry(&id, now - chrono::Duration::days(16));
                Ok(())
            }
            Console::DeductionFails(fails) => {
                w.set_deduction_fails(&id, *fails);
                Ok(())
            }
        });
        self.log
            .push(format!("console {change:?} on {id} at {now}: {done:?}"));
    }

    async fn step(&mut self, op: &Op, totals: &Totals) -> Check {
        self.log.push(format!("step {op:?}"));
        match op {
            Op::Advance { minutes } => {
                let end = self.clock.now() + chrono::Duration::minutes(i64::from(*minutes));
                self.advance_to(end, totals).await?;
            }
            Op::Fault {
                action,
                answer,
                count,
            } => {
                let kind = match answer {
                    Answer::Code(index) => {
                        let (code, status) = ecs_renewd::cloud::classified_codes()[*index];
                        FaultKind::Error {
                            code: code.into(),
                            status,
                            message: None,
                            retry_after_ms: None,
                        }
                    }
                    Answer::Reset => FaultKind::Reset,
                    Answer::Html => FaultKind::Html,
                    Answer::Malformed => FaultKind::Malformed,
                    Answer::CommitThenDrop => FaultKind::CommitThenDrop,
                    Answer::Timeout => FaultKind::Latency { ms: 400 },
                };
                self.emulator
                    .add_fault(FaultSpec::next(*action, *count, kind));
                totals.faults.fetch_add(1, Ordering::Relaxed);
            }
            Op::Reload(knobs) => {
                self.reload(knobs.clone()).await;
                totals.reloads.fetch_add(1, Ordering::Relaxed);
            }
            Op::Restart => self.restart(totals).await?,
            Op::KillDuringRenewal => self.kill_during_renewal(totals).await?,
            Op::Balance(amount) => {
                self.emulator
                    .with_world(|w| w.set_balance("sm", (*amount * 100.0) as i64));
                self.balance.person_changed = true;
            }
            Op::Console { instance, change } => self.console(*instance, change),
            Op::ExpireStsKeys => {
                let now = self.clock.now();
                self.emulator.with_world(|w| w.expire_sts_keys(now));
            }
            Op::RoleTrust(trusted) => self.set_trust(*trusted),
        }
        self.invariants()
    }

    /// The money invariants, against the emulator's order book and the ledger.
    fn invariants(&self) -> Check {
        let orders = self.emulator.orders();
        let ours = |o: &ecs_emulator::Order| {
            o.client_token
                .as_deref()
                .is_some_and(|t| t.starts_with("ern"))
        };
        let mut per_cycle: HashMap<(&str, DateTime<Utc>), Vec<&ecs_emulator::Order>> =
            HashMap::new();
        for order in &orders {
            per_cycle
                .entry((&order.instance_id, order.old_expiry))
                .or_default()
                .push(order);
        }
        for ((id, expiry), cycle) in &per_cycle {
            let mine: Vec<_> = cycle.iter().filter(|o| ours(o)).collect();
            if mine.len() > 1 {
                return Err(fail(
                    self,
                    format!(
                        "{id}: {} orders of ours for the cycle ending {expiry}: {mine:#?}",
                        mine.len()
                    ),
                ));
            }
            if let Some(mine) = mine.first() {
                let delay = chrono::Duration::from_std(self.delay).unwrap();
                if let Some(seen) = cycle.iter().find(|o| !ours(o) && o.at + delay <= mine.at) {
                    return Err(fail(
                        self,
                        format!(
                            "{id}: our order {} came after another order of the cycle showed: {seen:?}",
                            mine.order_id
                        ),
                    ));
                }
            }
        }
        // Two orders of ours for one instance, the second placed before the first one's new
        // expiry showed: the same expiry renewed twice (the emulator records each against the
        // expiry it extended, so these land in different cycles above).
        let delay = chrono::Duration::from_std(self.delay).unwrap();
        let mut by_instance: HashMap<&str, Vec<&ecs_emulator::Order>> = HashMap::new();
        for order in orders.iter().filter(|o| ours(o)) {
            by_instance
                .entry(&order.instance_id)
                .or_default()
                .push(order);
        }
        for (id, mut mine) in by_instance {
            mine.sort_by_key(|o| o.at);
            for pair in mine.windows(2) {
                // (Within one pass the clock stands still: two orders at one moment are two
                // renewals of the same expiry even when renewals show at once.)
                if pair[1].at < pair[0].at + delay.max(chrono::Duration::seconds(1)) {
                    return Err(fail(
                        self,
                        format!(
                            "{id}: order {} at {} came before order {}'s new expiry showed: {pair:#?}",
                            pair[1].order_id, pair[1].at, pair[0].order_id
                        ),
                    ));
                }
            }
        }
        let ledger = &self.engine.as_ref().unwrap().ledger;
        ledger
            .histories()
            .map_err(|e| fail(self, format!("the ledger does not read back: {e}")))?;
        let records = self.raw_records();
        for order in orders.iter().filter(|o| ours(o)) {
            let token = order.client_token.as_deref().unwrap_or_default();
            match records.get(token) {
                None => {
                    return Err(fail(
                        self,
                        format!("order {} ({token}) has no ledger record", order.order_id),
                    ));
                }
                Some((_, None)) => {
                    return Err(fail(
                        self,
                        format!(
                            "order {} ({token}) is not counted by the belts",
                            order.order_id
                        ),
                    ));
                }
                Some((Some(recorded), _)) if *recorded != order.order_id => {
                    return Err(fail(
                        self,
                        format!("order {} is recorded as {recorded}", order.order_id),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn run_case(delayed: bool, replay: bool, seed: u64, ops: &[Op], totals: &Totals) -> Check {
    run_case_on(false, delayed, replay, seed, ops, totals)
}

/// [`run_case`] with the ledger in PostgreSQL when `postgres`.
fn run_case_on(
    postgres: bool,
    delayed: bool,
    replay: bool,
    seed: u64,
    ops: &[Op],
    totals: &Totals,
) -> Check {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut model = Model::start(delayed, replay, seed, postgres).await;
        totals
            .replaying_cases
            .fetch_add(u64::from(replay), Ordering::Relaxed);
        model.pass(Kind::Startup, totals).await?;
        for op in ops {
            model.step(op, totals).await?;
            totals.steps.fetch_add(1, Ordering::Relaxed);
        }
        // Let the last wake-ups and a day of the schedule run out, then check once more.
        let end = model.clock.now() + chrono::Duration::days(1);
        model.advance_to(end, totals).await?;
        let ours = model
            .emulator
            .orders()
            .iter()
            .filter(|o| {
                o.client_token
                    .as_deref()
                    .is_some_and(|t| t.starts_with("ern"))
            })
            .count() as u64;
        totals.our_orders.fetch_add(ours, Ordering::Relaxed);
        totals.cases.fetch_add(1, Ordering::Relaxed);
        model.invariants()
    })
}

/// Found by the long run (seed 20261130), shrunk: two entries reach one cloud account; one
/// renews an instance while the other still remembers the balance from before the charge.
/// Each showed its own balance, and the twin's was the one from before the order.
#[test]
fn entries_of_one_cloud_account_forget_the_balance_either_of_them_charged() {
    let knobs = |main_entry, renew, fallback, dry_run, tight_daily_count| Knobs {
        main_entry,
        twin_entry: true,
        twin_role: false,
        renew,
        fallback,
        dry_run,
        tight_daily_count,
        spend_limit: None,
        tight_enables: false,
    };
    let ops = [
        Op::Reload(knobs(false, RenewMode::Skip, true, true, false)),
        Op::Advance { minutes: 2880 },
        Op::Fault {
            action: Action::RenewInstance,
            answer: Answer::Code(39),
            count: 3,
        },
        Op::Reload(knobs(
            true,
            RenewMode::Renew { months: 2 },
            false,
            false,
            true,
        )),
        Op::Advance { minutes: 195 },
    ];
    run_case(false, false, 0, &ops, &Totals::default()).unwrap();
}

/// The role path on its own: the only entry assumes a role with 15-minute keys; every key
/// expires at once mid-cadence, then the trust policy is revoked (passes refuse, nothing is
/// charged, nothing twice) and restored (once the refusal pause has passed, the due
/// instances renew: the calm check holds the model to it).
#[test]
fn an_entry_through_a_role_survives_key_expiry_and_a_revoked_trust_policy() {
    let role_only = Knobs {
        main_entry: false,
        twin_entry: true,
        twin_role: true,
        ..Knobs::initial()
    };
    let ops = [
        Op::Reload(role_only),
        Op::Advance { minutes: 50 },
        Op::ExpireStsKeys,
        Op::Advance { minutes: 70 },
        Op::RoleTrust(false),
        Op::Advance { minutes: 1440 },
        Op::RoleTrust(true),
        Op::Advance { minutes: 2880 },
    ];
    run_case(false, false, 0, &ops, &Totals::default()).unwrap();
}

/// The CI variant's sequences again with the ledger in PostgreSQL (fewer cases: each makes a
/// database; the figures of record are the SQLite run's).
#[test]
fn random_sequences_on_postgres_keep_every_money_promise() {
    let options = options();
    let totals = Totals::default();
    let config = ProptestConfig {
        cases: (options.cases / 3).max(1),
        rng_seed: RngSeed::Fixed(options.seed),
        failure_persistence: None,
        max_shrink_iters: 128,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&case(options.steps), |(delayed, replay, seed, ops)| {
        run_case_on(true, delayed, replay, seed, &ops, &totals)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    assert!(totals.steps.load(Ordering::Relaxed) > 0);
}

#[test]
fn random_sequences_keep_every_money_promise_and_the_call_budget() {
    let options = options();
    let totals = Totals::default();
    let config = ProptestConfig {
        cases: options.cases,
        rng_seed: RngSeed::Fixed(options.seed),
        failure_persistence: None,
        max_shrink_iters: 512,
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    };
    let started = tokio::time::Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&case(options.steps), |(delayed, replay, seed, ops)| {
        run_case(delayed, replay, seed, &ops, &totals)
    });
    let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
    let command = format!(
        "{}ECS_RENEWD_SM_SEED={} cargo test --release --test it money_safety::state_machine::random_sequences -- --nocapture",
        if options.variant == "long" {
            "ECS_RENEWD_SM=long "
        } else {
            ""
        },
        options.seed
    );
    let figures = serde_json::json!({
        "command": command,
        "variant": options.variant,
        "seed": options.seed,
        "cases": options.cases,
        "max_steps": options.steps,
        "runs_including_shrinking": load(&totals.cases),
        "steps": load(&totals.steps),
        "passes": load(&totals.passes),
        "retry_passes": load(&totals.retry_passes),
        "api_calls": load(&totals.calls),
        "orders_of_ours": load(&totals.our_orders),
        "faults_injected": load(&totals.faults),
        "reloads": load(&totals.reloads),
        "restarts": load(&totals.restarts),
        "kills_during_renewal": load(&totals.kills),
        "calm_pass_lapse_checks": load(&totals.calm_checks),
        "forecast_oracle_checks": load(&totals.forecast_checks),
        "quiet_forecast_oracle_checks": load(&totals.quiet_forecast_checks),
        "cases_replaying_failed_tokens": load(&totals.replaying_cases),
        "seconds": started.elapsed().as_secs(),
        "passed": result.is_ok(),
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reliability");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("state-machine-{}.json", options.variant)),
        serde_json::to_string_pretty(&figures).unwrap(),
    )
    .unwrap();
    println!("{figures}");
    if let Err(error) = result {
        panic!("{error}");
    }
}
