//! `ecs-renewd demo`: the main job on a fresh machine, no Alibaba Cloud account needed. Starts
//! the emulator in-process with a seeded fleet (three regions, several policies, PostPaid
//! instances, an account whose balance runs short and is topped up midway, provider auto-renew
//! deductions that fail), runs the real daemon against it on a two-second cadence and a fast
//! virtual clock, serves /metrics meanwhile, and ends with a summary read back from the ledger
//! and the emulator's order book.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use ecs_emulator::settings::{AccessKeySpec, AccountSpec, GeneratorSpec, InstanceSpec};
use ecs_emulator::{EmulatorConfig, EmulatorHandle, Order};
use ecs_renewd::cloud::credentials::Environment;
use ecs_renewd::commands::Failure;
use ecs_renewd::config::Config;
use ecs_renewd::daemon::{self, Clocks, ConfigSource, Setup, Signals, TickSource, Ticks};
use ecs_renewd::ledger::{HistoryEntry, Ledger, StatusRow};
use ecs_wire::clock::{Clock, SystemClock, VirtualClock};
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long to run, in real seconds.
    pub seconds: u64,
    /// Virtual seconds per real second.
    pub speed: f64,
    /// Where the ledger goes (default: a new directory under $ECS_RENEWD_STATE_DIR or the temp dir).
    pub state_dir: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seconds: 60,
            speed: 6.0 * 3600.0,
            state_dir: None,
        }
    }
}

const REGIONS: [&str; 3] = ["cn-hangzhou", "cn-shanghai", "ap-southeast-1"];

fn key(id: &str, secret: &str) -> AccessKeySpec {
    AccessKeySpec {
        id: id.into(),
        secret: secret.into(),
        security_token: None,
        expires_at: None,
        denied_actions: vec![],
    }
}

fn named(id: &str, account: &str, region: &str, expires_in: &str) -> InstanceSpec {
    InstanceSpec {
        id: Some(id.into()),
        account: Some(account.into()),
        region: region.into(),
        zone: None,
        name: Some(id.trim_start_matches("i-").into()),
        charge_type: ChargeType::PrePaid,
        expires_at: None,
        expires_in: Some(expires_in.into()),
        expired_ago: None,
        tags: BTreeMap::new(),
        security_groups: vec!["sg-demo".into()],
        instance_type: "ecs.g7.large".into(),
        resource_group_id: String::new(),
        monthly_price: 60.0,
        renewal_status: RenewalStatus::Normal,
        auto_renew_duration: 1,
        auto_renew_unit: PeriodUnit::Month,
        deduction_fails: false,
    }
}

/// The demo fleet: account `prod` (300 generated instances in three regions plus named ones)
/// and account `lean`, whose balance covers two of its six renewals (due one a day from the
/// start) until it is topped up: the funds forecast warns of it from the first pass, two days
/// before the first renewal fails.
pub fn fleet() -> EmulatorConfig {
    let tagged = |mut spec: InstanceSpec, tags: &[(&str, &str)]| {
        spec.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spec
    };
    let mut instances: Vec<InstanceSpec> = (1..=6)
        .map(|n| {
            named(
                &format!("i-lean-{n}"),
                "lean",
                REGIONS[n % 3],
                &format!("{}d", 6 + n),
            )
        })
        .collect();
    for n in 1..=3 {
        instances.push(InstanceSpec {
            renewal_status: RenewalStatus::AutoRenewal,
            deduction_fails: true,
            ..tagged(
                named(
                    &format!("i-card-declined-{n}"),
                    "prod",
                    REGIONS[n - 1],
                    &format!("{}d", 10 + n),
                ),
                &[("billing", "auto")],
            )
        });
    }
    instances.push(tagged(
        named("i-keep-out", "prod", "cn-hangzhou", "4d"),
        &[("ecs-renewd:skip", "")],
    ));
    let mut config = EmulatorConfig {
        accounts: vec![
            AccountSpec {
                uid: None,
                roles: Vec::new(),
                members: Vec::new(),
                name: "prod".into(),
                balance: 200_000.0,
                currency: "CNY".into(),
                access_keys: vec![key("LTAIdemoprod", "demo-prod-secret")],
            },
            AccountSpec {
                uid: None,
                roles: Vec::new(),
                members: Vec::new(),
                name: "lean".into(),
                balance: 150.0,
                currency: "CNY".into(),
                access_keys: vec![key("LTAIdemolean", "demo-lean-secret")],
            },
        ],
        instances,
        generate: vec![GeneratorSpec {
            count: 300,
            account: Some("prod".into()),
            regions: REGIONS.iter().map(|r| r.to_string()).collect(),
            expiry_spread: "25d".into(),
            expired_share: 0.02,
            postpaid_share: 0.1,
            auto_renew_share: 0.15,
            not_renewal_share: 0.05,
            tags: [
                (
                    "team".to_string(),
                    vec!["web".into(), "db".into(), "batch".into()],
                ),
                ("env".to_string(), vec!["prod".into(), "staging".into()]),
            ]
            .into(),
            monthly_price: 80.0,
            id_prefix: "i-prod".into(),
            seed: 20261126,
        }],
        ..EmulatorConfig::default()
    };
    config.settings.renew_visibility_delay = Duration::from_secs(10);
    config
}

fn config_text(emulator: &EmulatorHandle, state: &Path) -> String {
    let account = |name: &str, id: &str| {
        format!(
            "[[accounts]]\nname = \"{name}\"\nendpoint = \"{}\"\nregions = [\"cn-hangzhou\", \"cn-shanghai\", \"ap-southeast-1\"]\n[accounts.credentials]\nsource = \"file\"\naccess_key_id = \"{id}\"\naccess_key_secret_file = \"{}\"\n[accounts.rate_limit]\nper_second = 200\nburst = 50\n",
            emulator.url(),
            state.join(format!("{name}.secret")).display()
        )
    };
    format!(
        r#"[daemon]
schedule = "*/2 * * * * *"
jitter = "0s"
state_dir = "{state}"
[scan]
horizon = "20d"
[limits]
max_spend_per_day = {{ CNY = 1000000.0 }}
[retry]
backoff_floor = "2h"
backoff_ceiling = "12h"
verify_timeout = "2s"
verify_interval = "100ms"
{prod}{lean}
[[policies]]
name = "card-declined-fallback"
action = "auto-renew"
fallback_renew = true
[policies.match]
tags = {{ billing = "auto" }}
[[policies]]
name = "web-renew"
action = "renew"
renew_before = "7d"
[policies.match]
accounts = ["prod"]
tags = {{ team = "web" }}
[[policies]]
name = "db-auto"
action = "auto-renew"
[policies.match]
accounts = ["prod"]
tags = {{ team = "db" }}
[[policies]]
name = "batch-staging-lapse"
action = "not-renewal"
[policies.match]
tags = {{ team = "batch", env = "staging" }}
[[policies]]
name = "lean-renew"
action = "renew"
renew_before = "7d"
[policies.match]
accounts = ["lean"]
[[policies]]
name = "everything-else"
action = "observe"
"#,
        state = state.display(),
        prod = account("prod", "LTAIdemoprod"),
        lean = account("lean", "LTAIdemolean"),
    )
}

fn state_dir(options: &DemoOptions, env: &Environment) -> PathBuf {
    if let Some(dir) = &options.state_dir {
        return dir.clone();
    }
    let base = env
        .get("ECS_RENEWD_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    #[allow(clippy::disallowed_methods)] // a unique name, not a decision
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    base.join(format!("ecs-renewd-demo-{stamp}-{}", std::process::id()))
}

fn write_secret(path: &Path, secret: &str) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::runtime(format!("writing {}: {e}", path.display()));
    std::fs::write(path, secret).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    Ok(())
}

/// Where the demo's clock starts: 09:00 UTC+8 of the latest day that has begun by `now`.
/// The fleet's generated expiries fall on UTC+8 midnights and the provider deducts at 08:00
/// UTC+8, so a start at a fixed time of day tells the same story at any hour it is run (from
/// the wall clock, an instance expiring within minutes of the start or an auto-renew set just
/// before the day's deduction made each run different).
fn clock_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let today = ecs_wire::time::start_of_day_utc8(now) + chrono::Duration::hours(9);
    if today <= now {
        today
    } else {
        today - chrono::Duration::days(1)
    }
}

/// Runs the demo, writing progress and the summary to `out`.
pub async fn run(
    options: DemoOptions,
    env: &Environment,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(), Failure> {
    let runtime = |e: &dyn std::fmt::Display| Failure::runtime(e.to_string());
    let state = state_dir(&options, env);
    std::fs::create_dir_all(&state)
        .map_err(|e| Failure::runtime(format!("creating {}: {e}", state.display())))?;
    write_secret(&state.join("prod.secret"), "demo-prod-secret")?;
    write_secret(&state.join("lean.secret"), "demo-lean-secret")?;

    let start = clock_start(SystemClock.now());
    let clock = Arc::new(VirtualClock::running(start, options.speed));
    let emulator = ecs_emulator::start_with_clock(
        fleet(),
        "127.0.0.1:0".parse().expect("a valid address"),
        clock.clone(),
    )
    .await
    .map_err(|e| runtime(&e))?;
    let (running, stop, mut pass_rx) = start_daemon(&emulator, &state, clock.clone()).await?;
    let fleet_size = emulator.with_world(|w| w.instance_count());
    let _ = writeln!(
        out,
        "ecs-renewd demo: emulator at {} with {fleet_size} instances in 2 accounts and 3 regions; \
         the daemon runs every 2 s while the clock runs {:.0}x ({} per second) from {} UTC+8\n  metrics: http://{}/metrics   status: http://{}/status   (RUST_LOG=info shows the daemon's own logs)\n",
        emulator.url(),
        options.speed,
        ecs_wire::duration::format(Duration::from_secs_f64(options.speed)),
        start
            .with_timezone(&ecs_wire::time::utc8())
            .format("%Y-%m-%d %H:%M"),
        running.admin_addr,
        running.admin_addr
    );

    let watched = Watch {
        emulator: &emulator,
        ledger: &running.ledger,
        clock: clock.as_ref(),
        start,
    }
    .follow(out, &mut pass_rx, Duration::from_secs(options.seconds))
    .await;
    stop.cancel();
    match running.task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(runtime(&e)),
        Err(e) => return Err(runtime(&e)),
    }
    let ledger = running.ledger.clone();
    let lapsed = lapsed_during_run(&emulator, &watched.last_seen, start, clock.now());
    let summary = summarize(
        &emulator,
        &ledger,
        (watched.funds_failures, &lapsed),
        watched.passes,
        &state,
    );
    let _ = write!(out, "{summary}");
    emulator.shutdown().await;
    Ok(())
}

/// The daemon over the demo's config: cron every 2 s on the wall clock, business time on the
/// demo's virtual clock, the admin server on 127.0.0.1:9469 when it is free.
async fn start_daemon(
    emulator: &EmulatorHandle,
    state: &Path,
    clock: Arc<VirtualClock>,
) -> Result<
    (
        daemon::Running,
        CancellationToken,
        mpsc::UnboundedReceiver<ecs_renewd::reconcile::PassSummary>,
    ),
    Failure,
> {
    let runtime = |e: &dyn std::fmt::Display| Failure::runtime(e.to_string());
    let text = config_text(emulator, state);
    let config_path = state.join("demo.toml");
    std::fs::write(&config_path, &text).map_err(|e| runtime(&e))?;
    let config =
        Config::parse(&text, &config_path, &Environment::default()).map_err(|e| runtime(&e))?;
    let admin = match tokio::net::TcpListener::bind("127.0.0.1:9469").await {
        Ok(listener) => listener,
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| runtime(&e))?,
    };
    let stop = CancellationToken::new();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let (pass_tx, pass_rx) = mpsc::unbounded_channel();
    let running = daemon::start(Setup {
        config: ConfigSource {
            config,
            path: config_path,
            env: Environment::default(),
        },
        clocks: Clocks {
            business: clock,
            wall: Arc::new(SystemClock),
        },
        signals: Signals {
            stop: stop.clone(),
            reload: reload_rx,
        },
        ticks: Ticks {
            source: TickSource::Cron,
            watchdog_every: Duration::from_secs(1),
        },
        admin_listener: Some(admin),
        passes: Some(pass_tx),
    })
    .await
    .map_err(|e| runtime(&e))?;
    Ok((running, stop, pass_rx))
}

/// What the demo watches while the daemon runs.
struct Watch<'a> {
    emulator: &'a EmulatorHandle,
    ledger: &'a Ledger,
    clock: &'a dyn Clock,
    start: chrono::DateTime<chrono::Utc>,
}

/// What it saw: passes, funds failures before the top-up, each instance's last status.
struct Watched {
    passes: u32,
    funds_failures: usize,
    last_seen: LastSeen,
}

impl Watch<'_> {
    /// Prints a line per pass (and the funds forecast's changes) for `seconds`, and tops the
    /// lean account up three passes after its first failure.
    async fn follow(
        &self,
        out: &mut (dyn std::io::Write + Send),
        passes_rx: &mut mpsc::UnboundedReceiver<ecs_renewd::reconcile::PassSummary>,
        seconds: Duration,
    ) -> Watched {
        let deadline = tokio::time::Instant::now() + seconds;
        let mut passes = 0u32;
        let mut topped_up = false;
        let mut funds_failures_before_top_up = 0usize;
        let mut passes_since_failure = 0u32;
        let mut short: BTreeMap<String, bool> = BTreeMap::new();
        let mut last_seen = LastSeen::default();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                summary = passes_rx.recv() => {
                    let Some(summary) = summary else { break };
                    passes += 1;
                    let elapsed = self.clock.now() - self.start;
                    let _ = writeln!(
                        out,
                        "pass {passes:>2}  day +{:>4.1}  {:>3} instances  renewed {:>2}  failed {:>2}  verified {:>2}  auto-renew set {:>3}  {}",
                        elapsed.num_minutes() as f64 / 1440.0,
                        summary.instances,
                        summary.renewed,
                        summary.renew_failed,
                        summary.verified,
                        summary.auto_renew_changed,
                        if summary.result.as_str() == "ok" { String::new() } else { format!("({})", summary.result) }
                    );
                    write_funds(out, &summary, &mut short);
                    last_seen.update(self.ledger);
                    funds_failures_before_top_up += if topped_up { 0 } else { summary.renew_failed };
                    passes_since_failure += u32::from(funds_failures_before_top_up > 0);
                    // Topped up a couple of passes after the first failure: the renewals wait out
                    // their backoff, until a pass sees the top-up.
                    if !topped_up && passes_since_failure >= 3 {
                        self.emulator.with_world(|w| w.set_balance("lean", 100_000));
                        topped_up = true;
                        let _ = writeln!(out, "         ...account lean topped up to 1000.00 CNY: the next pass sees it and retries the renewals held for lack of funds");
                    }
                }
            }
        }
        Watched {
            passes,
            funds_failures: funds_failures_before_top_up,
            last_seen,
        }
    }
}

/// Prints a pass's funds forecast when an account falls short (with the charges, the balance
/// and from when) and when it is covered again: transitions only, so the run stays readable.
fn write_funds(
    out: &mut (dyn std::io::Write + Send),
    summary: &ecs_renewd::reconcile::PassSummary,
    short: &mut BTreeMap<String, bool>,
) {
    for t in &summary.top_ups {
        let _ = writeln!(
            out,
            "         ...account {}: {} available covers {} renewal(s) held for lack of funds: retried in this pass ({})",
            t.account,
            t.available,
            t.retried.len(),
            t.retried.join(", ")
        );
    }
    for f in &summary.funds {
        let now_short = f.shortfall_at.is_some();
        let was_short = short
            .insert(format!("{} {}", f.account, f.currency), now_short)
            .unwrap_or(false);
        if now_short && !was_short {
            let _ = writeln!(out, "         ...FUNDS SHORT: {}", f.describe());
        } else if !now_short && was_short {
            let _ = writeln!(out, "         ...funds covered again: {}", f.describe());
        }
    }
}

/// Each instance's last status line written while it had not yet expired: its policy and why,
/// for the instances that lapse.
#[derive(Debug, Default)]
struct LastSeen {
    rows: BTreeMap<String, (Option<String>, String)>,
}

impl LastSeen {
    /// Keeps the lines a pass wrote before the instance's expiry. A line's own write time
    /// decides, not the time the demo reads it: on a busy machine the read comes hours of
    /// virtual time after the pass, when an instance the pass saw may have expired.
    fn update(&mut self, ledger: &Ledger) {
        for row in ledger.status_rows().unwrap_or_default() {
            if row.expires_at > row.updated_at {
                self.rows.insert(
                    row.instance_id.clone(),
                    (row.policy.clone(), row.reason.clone()),
                );
            }
        }
    }
}

/// An instance that expired during the run and was not renewed.
#[derive(Debug, Clone)]
struct Lapsed {
    instance_id: String,
    expired_at: chrono::DateTime<chrono::Utc>,
    policy: Option<String>,
    why: String,
}

/// The PrePaid instances whose expiry passed during the run without a renewal, with the
/// policy and the last reason shown before they expired.
fn lapsed_during_run(
    emulator: &EmulatorHandle,
    last_seen: &LastSeen,
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> Vec<Lapsed> {
    let mut lapsed: Vec<Lapsed> = emulator.with_world(|w| {
        w.instances()
            .filter(|i| i.charge_type == ChargeType::PrePaid)
            .filter(|i| i.true_expiry() > start && i.true_expiry() <= end)
            .map(|i| {
                let (policy, why) = last_seen
                    .rows
                    .get(&i.id)
                    .cloned()
                    .unwrap_or((None, "never listed before it expired".into()));
                Lapsed {
                    instance_id: i.id.clone(),
                    expired_at: i.true_expiry(),
                    policy,
                    why,
                }
            })
            .collect()
    });
    lapsed.sort_by(|a, b| (a.expired_at, &a.instance_id).cmp(&(b.expired_at, &b.instance_id)));
    lapsed
}

/// Writes every instance that lapsed during the run, grouped by policy and why (the reason's
/// words before its details), each group with its instances in expiry order.
fn write_lapsed(out: &mut String, lapsed: &[Lapsed]) {
    let _ = writeln!(
        out,
        "lapsed during the run (expired, not renewed): {}",
        lapsed.len()
    );
    let mut groups: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
    for l in lapsed {
        let cut = [": ", " ("]
            .iter()
            .filter_map(|sep| l.why.find(sep))
            .min()
            .unwrap_or(l.why.len());
        let why = l.why[..cut].trim().to_owned();
        let policy = l.policy.clone().unwrap_or_else(|| "no policy".into());
        groups
            .entry((policy, why))
            .or_default()
            .push(&l.instance_id);
    }
    for ((policy, why), ids) in groups {
        let _ = writeln!(out, "  {policy}: {why}: {} ({})", ids.len(), ids.join(", "));
    }
}

/// The end summary: what ecs-renewd renewed and set, what it skipped and spent, and the checks
/// that no cycle was charged twice and every order has a ledger record.
fn summarize(
    emulator: &EmulatorHandle,
    ledger: &Ledger,
    (funds_failures, lapsed): (usize, &[Lapsed]),
    passes: u32,
    state: &Path,
) -> String {
    let mut out = String::new();
    let orders = emulator.orders();
    let records = ledger.money_records(None).unwrap_or_default();
    let status = ledger.status_rows().unwrap_or_default();
    let renewals: Vec<&HistoryEntry> = records.iter().filter(|r| r.kind == "renewal").collect();
    let _ = writeln!(out, "\n=== summary after {passes} passes ===");
    write_renewals(&mut out, &renewals, funds_failures);
    write_auto_renew(&mut out, &records, &orders);
    write_skipped(&mut out, &status);
    write_lapsed(&mut out, lapsed);
    write_policies(&mut out, &status);
    write_spend(&mut out, &orders);
    write_double_charges(&mut out, &orders, &renewals);
    let _ = writeln!(
        out,
        "ledger: {}  (ecs-renewd status|history --config {})",
        state.join(ecs_renewd::ledger::LEDGER_FILE).display(),
        state.join("demo.toml").display()
    );
    out
}

/// Writes the renewals ecs-renewd ordered: how many and whether all were verified, how many
/// were card-declined fallbacks, and which succeeded only after refusals (each refused attempt
/// of the cycle is an intent of its own, the next with a fresh ClientToken: a refusal leaves
/// no order) or on a later attempt with the same ClientToken (an answer lost).
fn write_renewals(out: &mut String, renewals: &[&HistoryEntry], funds_failures: usize) {
    let ordered: Vec<_> = renewals.iter().filter(|r| r.order_id.is_some()).collect();
    let refusals_before = |r: &HistoryEntry| {
        renewals
            .iter()
            .filter(|e| {
                // A refused intent is settled as superseded once the cycle's order shows.
                e.instance_id == r.instance_id
                    && e.old_expiry == r.old_expiry
                    && e.order_id.is_none()
                    && e.error.is_some()
                    && e.at < r.at
            })
            .count()
    };
    let retried: Vec<_> = ordered
        .iter()
        .map(|r| (r, refusals_before(r)))
        .filter(|(r, refused)| r.attempts > 1 || *refused > 0)
        .collect();
    let _ = writeln!(
        out,
        "renewed by ecs-renewd: {} instance(s), every one verified by its new expiry: {}",
        ordered.len(),
        ordered.iter().all(|r| r.status == "verified")
    );
    let fallback = ordered
        .iter()
        .filter(|r| r.instance_id.starts_with("i-card-declined"))
        .count();
    let _ = writeln!(
        out,
        "  {fallback} of them because the provider's auto-renew deduction kept failing (card declined): renewed directly after the fallback point"
    );
    let _ = writeln!(
        out,
        "charges that failed and were retried: {funds_failures} failure(s) for lack of funds before the top-up; {} renewal(s) succeeded on a later attempt",
        retried.len()
    );
    for (r, refused) in &retried {
        let _ = writeln!(
            out,
            "  {} {}: ordered after {refused} refusal(s) (a fresh ClientToken after each: no order existed) and {} attempt(s) with its own token, order {}",
            r.account,
            r.instance_id,
            r.attempts,
            r.order_id.as_deref().unwrap_or("-")
        );
    }
}

/// Writes how many instances ecs-renewd set to auto-renew, and how many the provider's own
/// auto-renew deduction renewed meanwhile.
fn write_auto_renew(out: &mut String, records: &[HistoryEntry], orders: &[Order]) {
    let auto_renew_set: HashSet<&str> = records
        .iter()
        .filter(|r| r.kind == "auto_renew" && r.status != "failed")
        .map(|r| r.instance_id.as_str())
        .collect();
    let _ = writeln!(
        out,
        "auto-renew set (RenewalStatus=AutoRenewal) on {} instance(s)",
        auto_renew_set.len()
    );
    let provider = orders.iter().filter(|o| o.kind == "auto_renew").count();
    let _ = writeln!(
        out,
        "renewed by the provider's own auto-renew deduction meanwhile: {provider}"
    );
}

/// Writes the instances excluded on purpose, counted by a short form of the reason.
fn write_skipped(out: &mut String, status: &[StatusRow]) {
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for row in status
        .iter()
        .filter(|r| r.state == ecs_renewd::InstanceState::Excluded)
    {
        let why = if row.reason.starts_with("tagged") {
            "skip tag".to_owned()
        } else if row.reason.contains("lets it lapse") {
            "policy lets it lapse".to_owned()
        } else if row.reason.starts_with("RenewalStatus is NotRenewal") {
            "set to NotRenewal in the console".to_owned()
        } else {
            row.reason.clone()
        };
        *skipped.entry(why).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "skipped on purpose: {}",
        if skipped.is_empty() {
            "none".to_owned()
        } else {
            skipped
                .iter()
                .map(|(why, n)| format!("{n} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
}

/// Writes how many instances each policy matched in the last pass.
fn write_policies(out: &mut String, status: &[StatusRow]) {
    let by_policy = status.iter().filter(|r| r.policy.is_some()).fold(
        BTreeMap::<&str, usize>::new(),
        |mut m, r| {
            *m.entry(r.policy.as_deref().unwrap_or("-")).or_default() += 1;
            m
        },
    );
    let _ = writeln!(
        out,
        "instances per policy in the last pass: {}",
        by_policy
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Writes what ecs-renewd's own renewal orders cost, one line per currency.
fn write_spend(out: &mut String, orders: &[Order]) {
    let mut spend: BTreeMap<&str, i64> = BTreeMap::new();
    for order in orders.iter().filter(|o| o.kind == "renew") {
        *spend.entry(order.currency.as_str()).or_default() += order.price_cents;
    }
    for (currency, cents) in spend {
        let _ = writeln!(
            out,
            "spend by ecs-renewd: {}",
            ecs_renewd::Money {
                cents,
                currency: currency.to_owned()
            }
        );
    }
}

/// Writes the money-safety checks: expiry cycles charged more than once, and renewal orders
/// whose ClientToken no ledger record holds.
fn write_double_charges(out: &mut String, orders: &[Order], renewals: &[&HistoryEntry]) {
    let mut per_cycle: BTreeMap<(String, chrono::DateTime<chrono::Utc>), usize> = BTreeMap::new();
    for order in orders {
        *per_cycle
            .entry((order.instance_id.clone(), order.old_expiry))
            .or_default() += 1;
    }
    let doubles = per_cycle.values().filter(|n| **n > 1).count();
    let tokens: HashSet<&str> = renewals
        .iter()
        .filter_map(|r| r.client_token.as_deref())
        .collect();
    let unrecorded = orders
        .iter()
        .filter(|o| {
            o.kind == "renew"
                && !o
                    .client_token
                    .as_deref()
                    .is_some_and(|t| tokens.contains(t))
        })
        .count();
    let _ = writeln!(
        out,
        "double charges (orders per instance and expiry cycle > 1): {doubles}; orders without a ledger record: {unrecorded}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn status_row(id: &str, expires_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> StatusRow {
        StatusRow {
            account: "prod".into(),
            region: "cn-hangzhou".into(),
            instance_id: id.into(),
            name: id.into(),
            expires_at,
            policy: Some("db-auto".into()),
            state: ecs_renewd::InstanceState::Ok,
            decision: ecs_renewd::NextAction::Nothing,
            due_at: None,
            reason: "auto-renew cannot renew it in time: no deduction attempt is left".into(),
            failed_attempts: 0,
            next_retry_at: None,
            drift: false,
            deduction_overdue: false,
            last_outcome: None,
            updated_at,
        }
    }

    /// A busy machine reads a pass's status lines late, after an instance the pass saw has
    /// expired: the lapse report still gives the pass's reason (CI once reported three such
    /// instances as "never listed before it expired").
    #[test]
    fn a_lapse_keeps_the_reason_of_the_last_pass_that_saw_it_before_it_expired() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let pass = Utc.with_ymd_and_hms(2026, 11, 30, 13, 55, 0).unwrap();
        let expiry = Utc.with_ymd_and_hms(2026, 11, 30, 16, 0, 0).unwrap();
        ledger
            .write_status(&[status_row("i-late", expiry, pass)], 1)
            .unwrap();
        let mut seen = LastSeen::default();
        seen.update(&ledger);
        assert_eq!(
            seen.rows.get("i-late").map(|(p, _)| p.as_deref()),
            Some(Some("db-auto")),
            "{seen:?}"
        );
        // A line written after the expiry says what happened afterwards, not why: not kept.
        ledger
            .write_status(
                &[status_row(
                    "i-late",
                    expiry,
                    expiry + chrono::Duration::hours(12),
                )],
                2,
            )
            .unwrap();
        let mut after = LastSeen::default();
        after.update(&ledger);
        assert!(after.rows.is_empty(), "{after:?}");
    }

    #[test]
    fn the_clock_starts_at_nine_utc8_of_the_day_that_has_begun() {
        let at = |d, h, m| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap();
        // 01:00Z is 09:00 UTC+8; UTC+8's day begins at 16:00Z the day before.
        assert_eq!(clock_start(at(30, 1, 0)), at(30, 1, 0));
        assert_eq!(clock_start(at(30, 13, 50)), at(30, 1, 0));
        assert_eq!(clock_start(at(30, 15, 59)), at(30, 1, 0));
        assert_eq!(
            clock_start(at(30, 16, 0)),
            at(30, 1, 0),
            "00:00 UTC+8: 9:00 is ahead"
        );
        assert_eq!(clock_start(at(30, 0, 59)), at(29, 1, 0));
        assert_eq!(clock_start(at(30, 17, 0)), at(30, 1, 0));
    }
}
