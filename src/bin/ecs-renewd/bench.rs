//! `ecs-renewd bench`: the real reconcile path at fleet scale. For each fleet size the emulator
//! runs in this process (30 ms per call, 20 calls/s per account, region and action by default)
//! and the daemon runs as a separate process (`ecs-renewd run`), so its memory and CPU are
//! measured alone. Prints, per size: API calls per action next to their lower bound, the pass's
//! wall time next to the bound the rate limits and latency set, peak RSS and CPU during the
//! pass, and RSS (heap and stacks apart from what is mapped from files) and CPU after an idle
//! minute.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ecs_emulator::settings::{AccessKeySpec, AccountSpec, InstanceSpec};
use ecs_emulator::{EmulatorConfig, EmulatorHandle};
use ecs_renewd::commands::Failure;
use ecs_wire::Action;
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Fleet sizes.
    pub sizes: Vec<usize>,
    /// Latency per call.
    pub latency: Duration,
    /// Calls per second per (account, region, action).
    pub rate: f64,
    /// How long to idle after the pass; CPU and wake-ups are measured over all of it but the
    /// first [`SETTLE`] (the pass's wind-down: pooled connections closing, the memory trim).
    pub idle: Duration,
    /// A PostgreSQL server (libpq key=value pairs, no dbname): each size runs a second time
    /// with the ledger in a fresh database there, and is compared with the SQLite run.
    pub postgres: Option<String>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            sizes: vec![1_000, 10_000, 100_000],
            latency: Duration::from_millis(30),
            rate: 20.0,
            idle: Duration::from_secs(90),
            postgres: None,
        }
    }
}

/// The part of the idle time left out of the idle figures: the daemon closes the pass's
/// pooled connections after 20 s and returns memory 5 s later.
pub const SETTLE: Duration = Duration::from_secs(30);

impl BenchOptions {
    /// How long the idle figures are measured: the idle time after the settling part (at
    /// least half the idle time when it is short).
    pub fn idle_window(&self) -> Duration {
        (self.idle.saturating_sub(SETTLE)).max(self.idle / 2)
    }
}

const REGIONS: usize = 10;
const ACCOUNTS: [&str; 2] = ["alpha", "beta"];

fn region(n: usize) -> String {
    format!("bench-region-{n}")
}

/// The source (account, region) instance `i` lives in: round-robin over all 20.
fn source_of(i: usize) -> (usize, usize) {
    let s = i % (REGIONS * ACCOUNTS.len());
    (s % ACCOUNTS.len(), s / ACCOUNTS.len())
}

/// What an instance is for — 5% due for renewal, 20% with auto-renew drift, the rest already
/// auto-renewing as the policy wants — spread evenly within each source.
fn role(i: usize) -> (&'static str, RenewalStatus, &'static str) {
    let j = i / (REGIONS * ACCOUNTS.len());
    if j.is_multiple_of(20) {
        ("renew", RenewalStatus::Normal, "3d")
    } else if j % 5 == 1 {
        ("auto", RenewalStatus::Normal, "20d")
    } else {
        ("auto", RenewalStatus::AutoRenewal, "20d")
    }
}

/// The fleet: `size` PrePaid instances, all inside the scan window, spread over 2 accounts ×
/// 10 regions.
fn fleet(size: usize, options: &BenchOptions) -> EmulatorConfig {
    let instances = (0..size)
        .map(|i| {
            let (tag, status, expires) = role(i);
            InstanceSpec {
                id: Some(format!("i-bench{i:07}")),
                account: Some(ACCOUNTS[source_of(i).0].into()),
                region: region(source_of(i).1),
                zone: None,
                name: None,
                charge_type: ChargeType::PrePaid,
                expires_at: None,
                expires_in: Some(expires.into()),
                expired_ago: None,
                tags: [("role".to_string(), tag.to_string())].into(),
                security_groups: vec![],
                instance_type: "ecs.g7.large".into(),
                resource_group_id: String::new(),
                monthly_price: 50.0,
                renewal_status: status,
                auto_renew_duration: 1,
                auto_renew_unit: PeriodUnit::Month,
                deduction_fails: false,
            }
        })
        .collect();
    let mut config = EmulatorConfig {
        accounts: ACCOUNTS
            .iter()
            .map(|name| AccountSpec {
                uid: None,
                roles: Vec::new(),
                members: Vec::new(),
                name: (*name).into(),
                balance: 100_000_000.0,
                currency: "CNY".into(),
                access_keys: vec![AccessKeySpec {
                    id: format!("LTAIbench{name}"),
                    secret: format!("bench-{name}-secret"),
                    security_token: None,
                    expires_at: None,
                    denied_actions: vec![],
                }],
            })
            .collect(),
        instances,
        ..EmulatorConfig::default()
    };
    config.settings.auth_clock = ecs_emulator::settings::AuthClock::Wall;
    config.settings.latency = options.latency;
    config.settings.renew_visibility_delay = Duration::ZERO;
    config.settings.provider_auto_renew.enabled = false;
    config.settings.throttle.per_second = options.rate;
    // A little slack for network jitter; the daemon's own limit keeps it at the rate.
    config.settings.throttle.burst = 3;
    config
}

fn config_text(
    emulator: &EmulatorHandle,
    dir: &Path,
    options: &BenchOptions,
    ledger: Option<&str>,
) -> String {
    let regions: Vec<String> = (0..REGIONS).map(|r| format!("\"{}\"", region(r))).collect();
    let mut text = format!(
        "[daemon]\nschedule = \"0 0 0 1 1 *\"\njitter = \"0s\"\nstate_dir = \"{state}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [scan]\nregions = [{regions}]\nhorizon = \"30d\"\nconcurrency = {sources}\n\
         [limits]\nmax_renewals_per_run = 1000000\nmax_renewals_per_day = 1000000\nmax_auto_renew_enables_per_run = 1000000\n\
         [retry]\nverify_timeout = \"30s\"\nverify_interval = \"200ms\"\n",
        state = dir.join("state").display(),
        regions = regions.join(", "),
        sources = REGIONS * ACCOUNTS.len(),
    );
    for name in ACCOUNTS {
        let _ = write!(
            text,
            "[[accounts]]\nname = \"{name}\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"file\"\naccess_key_id = \"LTAIbench{name}\"\n\
             access_key_secret_file = \"{}\"\n[accounts.rate_limit]\nper_second = {}\nburst = 1\n",
            emulator.url(),
            dir.join(format!("{name}.secret")).display(),
            options.rate
        );
    }
    if let Some(url) = ledger {
        let _ = write!(text, "[ledger]\nbackend = \"postgres\"\nurl = \"{url}\"\n");
    }
    text.push_str(
        "[[policies]]\nname = \"renew\"\naction = \"renew\"\nrenew_before = \"7d\"\n[policies.match]\ntags = { role = \"renew\" }\n\
         [[policies]]\nname = \"auto\"\naction = \"auto-renew\"\nduration = 1\n[policies.match]\ntags = { role = \"auto\" }\n",
    );
    text
}

/// The lower bound on calls per action, and the wall-time bound, for this fleet.
fn bounds(size: usize, options: &BenchOptions) -> (BTreeMap<Action, u64>, Duration) {
    let mut per_source: BTreeMap<(usize, usize), (u64, u64, u64)> = BTreeMap::new();
    for i in 0..size {
        let entry = per_source.entry(source_of(i)).or_default();
        entry.0 += 1;
        let (tag, status, _) = role(i);
        if tag == "renew" {
            entry.1 += 1;
        } else if status == RenewalStatus::Normal {
            entry.2 += 1;
        }
    }
    let ceil = |n: u64| n.div_ceil(100);
    let spacing = Duration::from_secs_f64(1.0 / options.rate).max(options.latency);
    let interval = Duration::from_secs_f64(1.0 / options.rate);
    let latency = options.latency;
    let mut calls: BTreeMap<Action, u64> = BTreeMap::new();
    let mut wall = Duration::ZERO;
    for (window, renewals, drift) in per_source.values().copied() {
        let pages = ceil(window);
        *calls.entry(Action::DescribeInstances).or_default() += pages + 2 * ceil(renewals);
        *calls
            .entry(Action::DescribeInstanceAutoRenewAttribute)
            .or_default() += pages;
        *calls.entry(Action::RenewInstance).or_default() += renewals;
        *calls
            .entry(Action::ModifyInstanceAutoRenewAttribute)
            .or_default() += ceil(drift);
        let steps = |n: u64, gap: Duration| {
            if n == 0 {
                Duration::ZERO
            } else {
                gap * (n as u32 - 1) + latency
            }
        };
        // Pages chain (each needs the last one's token), the last page's attributes follow;
        // then re-read, renewals, one verification round, auto-renew changes.
        let source = steps(pages, spacing)
            + latency
            + steps(ceil(renewals), interval)
            + steps(renewals, spacing)
            + steps(ceil(renewals), interval)
            + steps(ceil(drift), spacing);
        wall = wall.max(source);
    }
    calls.insert(Action::DescribeRenewalPrice, 0);
    calls.insert(Action::DescribeRegions, 0);
    // The funds forecast: one balance call per account, side by side after the rest. Its
    // window (the next deduction morning + 7 days) ends before the auto-renewing instances'
    // first deduction (T−9 of a 20-day expiry) and the due ones are renewed in the pass, so
    // nothing is left to price.
    calls.insert(Action::QueryAccountBalance, ACCOUNTS.len() as u64);
    wall += latency;
    (calls, wall)
}

/// One process's resident and CPU figures from /proc.
#[derive(Debug, Clone, Copy, Default)]
struct ProcessFigures {
    rss_kib: u64,
    /// The part of `rss_kib` that is heap and stacks.
    rss_anon_kib: u64,
    /// The part of `rss_kib` mapped from files: the binary's code and data, libc.
    rss_file_kib: u64,
    peak_rss_kib: u64,
    cpu_seconds: f64,
    /// Context switches of all the process's threads so far (voluntary and not): each is a
    /// thread that slept and was woken.
    switches: u64,
}

/// Context switches of every thread of `pid` so far.
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("voluntary_ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

fn figures(pid: u32) -> ProcessFigures {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 14th, stime the 15th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ProcessFigures {
        rss_kib: field("VmRSS:"),
        rss_anon_kib: field("RssAnon:"),
        rss_file_kib: field("RssFile:"),
        peak_rss_kib: field("VmHWM:"),
        cpu_seconds: ticks / 100.0,
        switches: context_switches(pid),
    }
}

/// The figures for one fleet size.
#[derive(Debug, Clone)]
pub struct SizeReport {
    /// How many instances the emulated fleet holds.
    pub size: usize,
    /// Calls per action: (made, lower bound).
    pub calls: BTreeMap<Action, (u64, u64)>,
    /// Pass wall time.
    pub pass: Duration,
    /// The wall time the rate limit and per-call latency allow the pass (see `bounds`).
    pub bound: Duration,
    /// Peak RSS (KiB) by the end of the pass.
    pub peak_rss_kib: u64,
    /// CPU seconds by the end of the pass.
    pub pass_cpu: f64,
    /// RSS (KiB) after idling.
    pub idle_rss_kib: u64,
    /// Of which anonymous (heap, stacks), KiB.
    pub idle_rss_anon_kib: u64,
    /// Of which file-backed (the binary's code and data, shared libraries), KiB.
    pub idle_rss_file_kib: u64,
    /// The allocator's heap after the pass, KiB: (in use, free but kept), when the daemon said.
    pub idle_heap_kib: Option<(u64, u64)>,
    /// CPU share of one core while idling.
    pub idle_cpu_share: f64,
    /// Thread wake-ups per second while idle (context switches over the idle window).
    pub idle_wakeups: f64,
    /// Renewals made.
    pub renewed: u64,
    /// Where the pass's time went, e.g. "observe 0.10 s, act 0.20 s".
    pub phases: String,
    /// The ledger's engine: "SQLite" or "PostgreSQL".
    pub ledger: &'static str,
    /// PostgreSQL runs: the pass wall time over the SQLite run's in this bench run.
    pub vs_sqlite: Option<f64>,
}

/// The pass's phase timings (a JSON object of seconds) as text, in pipeline order.
fn phase_text(json: &str) -> String {
    let laps: BTreeMap<String, f64> = serde_json::from_str(json).unwrap_or_default();
    let order = [
        "observe",
        "settle",
        "price_and_belts",
        "act",
        "verify_and_auto_renew",
        "forecast",
        "publish",
    ];
    let mut names: Vec<&String> = laps.keys().collect();
    names.sort_by_key(|name| order.iter().position(|o| o == name).unwrap_or(order.len()));
    names
        .iter()
        .map(|name| format!("{name} {:.2} s", laps[*name]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error for a step of the run at `size` instances that failed with `e`.
fn failure(size: usize, what: &str, e: &dyn std::fmt::Display) -> Failure {
    Failure::runtime(format!("bench ({size} instances): {what}: {e}"))
}

/// What one size's run works with: the running emulator and the daemon's files.
struct BenchSetup {
    /// The emulator serving the fleet, in this process.
    emulator: EmulatorHandle,
    /// The temporary directory holding the files and the daemon's state (removed when dropped).
    dir: tempfile::TempDir,
}

impl BenchSetup {
    /// The daemon's config file.
    fn config(&self) -> PathBuf {
        self.dir.path().join("bench.toml")
    }

    /// The daemon's own copy of this executable.
    fn exe(&self) -> PathBuf {
        self.dir.path().join("ecs-renewd")
    }
}

/// The daemon, running as a child process, and the lines of its (JSON) log.
struct DaemonProcess {
    child: std::process::Child,
    pid: u32,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// What the daemon's log said about its first pass.
#[derive(Debug, Default)]
struct PassLog {
    /// Whether "pass finished" was logged in time.
    completed: bool,
    started: Option<chrono::DateTime<chrono::Utc>>,
    finished: Option<chrono::DateTime<chrono::Utc>>,
    /// The pass's phase timings as text.
    phases: String,
}

/// The figures of the pass itself.
struct PassFigures {
    /// Its wall time, from the log's timestamps.
    wall: Duration,
    /// Where its time went.
    phases: String,
    /// The daemon's process figures right after it.
    at_end: ProcessFigures,
}

/// The daemon's figures while it idled after the pass.
struct IdleFigures {
    /// When the idle window begins (after [`SETTLE`]).
    half: ProcessFigures,
    /// At the end of the idle time.
    end: ProcessFigures,
    /// The allocator's heap, KiB: (in use, free but kept), when the daemon logged it.
    heap: Option<(u64, u64)>,
}

/// Runs the daemon's first pass over a fleet of `size` instances, then lets it idle, and
/// measures both.
async fn run_size(
    size: usize,
    options: &BenchOptions,
    ledger: Option<&str>,
    out: &mut (dyn std::io::Write + Send),
) -> Result<SizeReport, Failure> {
    let setup = prepare(size, options, ledger).await?;
    let mut daemon = spawn_daemon(size, &setup.exe(), &setup.config())?;
    let log = await_pass(&mut daemon.lines).await;
    let at_pass_end = figures(daemon.pid);
    if !log.completed {
        let _ = daemon.child.kill();
        return Err(Failure::runtime(format!(
            "bench ({size} instances): the daemon's pass did not finish"
        )));
    }
    let pass = PassFigures {
        wall: log.wall_time(),
        phases: log.phases,
        at_end: at_pass_end,
    };
    let _ = writeln!(
        out,
        "  {size} instances: pass done in {:.2}s; idling {}s (daemon pid {})...",
        pass.wall.as_secs_f64(),
        options.idle.as_secs(),
        daemon.pid
    );
    let idle = idle_then_stop(daemon, options).await;
    let mut report = finish(size, options, setup, pass, idle).await;
    if ledger.is_some() {
        report.ledger = "PostgreSQL";
    }
    Ok(report)
}

/// Starts the emulator with the fleet and writes what the daemon needs into a new temporary
/// directory: the key files, its config and its own synced copy of this executable.
async fn prepare(
    size: usize,
    options: &BenchOptions,
    ledger: Option<&str>,
) -> Result<BenchSetup, Failure> {
    let dir = tempfile::Builder::new()
        .prefix("ecs-renewd-bench-")
        .tempdir()
        .map_err(|e| failure(size, "temp dir", &e))?;
    let emulator = ecs_emulator::start(
        fleet(size, options),
        "127.0.0.1:0".parse().expect("a valid address"),
    )
    .await
    .map_err(|e| failure(size, "starting the emulator", &e))?;
    let setup = BenchSetup { emulator, dir };
    write_key_files(size, setup.dir.path())?;
    std::fs::write(
        setup.config(),
        config_text(&setup.emulator, setup.dir.path(), options, ledger),
    )
    .map_err(|e| failure(size, "writing the config", &e))?;
    // The daemon runs from its own copy of the binary: in production no other process maps
    // it, and the pages of a file mapped by two processes (the daemon and this one, which runs
    // the emulator) are not the daemon's alone to hand back when it idles.
    // The copy is synced before the daemon starts, so its writeback does not compete with the
    // ledger's syncs during the pass.
    let exe = setup.exe();
    std::env::current_exe()
        .and_then(|this| std::fs::copy(this, &exe))
        .and_then(|_| std::fs::File::open(&exe)?.sync_all())
        .map_err(|e| failure(size, "copying this executable for the daemon", &e))?;
    // Whatever else is waiting to be written (a build that just finished, the last size's
    // state) goes to disk now, not during the pass, where it would delay the ledger's syncs.
    #[cfg(unix)]
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe {
        libc::sync();
    }
    Ok(setup)
}

/// Writes each account's secret into `<dir>/<account>.secret`, readable by its owner only.
fn write_key_files(size: usize, dir: &Path) -> Result<(), Failure> {
    for name in ACCOUNTS {
        let path = dir.join(format!("{name}.secret"));
        std::fs::write(&path, format!("bench-{name}-secret"))
            .map_err(|e| failure(size, "writing a key file", &e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok(())
}

/// Starts the daemon (`run` with JSON logs) from `exe` and forwards its log lines, read on a
/// thread of their own, to a channel.
fn spawn_daemon(size: usize, exe: &Path, config: &Path) -> Result<DaemonProcess, Failure> {
    let mut child = Command::new(exe)
        .args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,ecs_renewd::memory=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failure(size, "starting the daemon", &e))?;
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(DaemonProcess { child, pid, lines })
}

/// The `timestamp` of a JSON log line.
fn log_timestamp(line: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    ecs_wire::time::parse(value["timestamp"].as_str()?).ok()
}

/// Reads the daemon's log until its first pass finishes (up to ten minutes), noting when the
/// pass started and finished and where its time went.
async fn await_pass(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> PassLog {
    let mut log = PassLog::default();
    let wait = tokio::time::timeout(Duration::from_secs(600), async {
        while let Some(line) = lines.recv().await {
            if line.contains("\"pass starting\"") {
                log.started = log_timestamp(&line);
            }
            if line.contains("\"pass finished\"") {
                log.finished = log_timestamp(&line);
                log.phases = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v["phases"].as_str().map(phase_text))
                    .unwrap_or_default();
                return true;
            }
        }
        false
    })
    .await;
    log.completed = matches!(wait, Ok(true));
    log
}

impl PassLog {
    /// The pass's wall time from its start and finish timestamps (zero when one is missing).
    fn wall_time(&self) -> Duration {
        match (self.started, self.finished) {
            (Some(s), Some(f)) => (f - s).to_std().unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }
}

/// Lets the daemon idle, measuring it halfway and at the end, then stops it (SIGTERM) and waits
/// for it to exit.
async fn idle_then_stop(daemon: DaemonProcess, options: &BenchOptions) -> IdleFigures {
    let DaemonProcess {
        mut child,
        pid,
        lines,
    } = daemon;
    // Keep draining the daemon's log while it idles. CPU and wake-ups are measured after the
    // settling part, so the pass's own wind-down (closing connections) is not counted as idle.
    // The allocator's own account after the pass (live versus freed-but-kept) comes from the
    // daemon's debug line, logged when it returns free memory.
    let drain = tokio::spawn(drain_heap(lines));
    let window = options.idle_window();
    tokio::time::sleep(options.idle - window).await;
    let half = figures(pid);
    tokio::time::sleep(window).await;
    let end = figures(pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    // The daemon has exited, so its log has ended and the drain finishes.
    let heap = drain.await.ok().flatten();
    IdleFigures { half, end, heap }
}

/// Reads the daemon's log to its end; returns the last heap figures it logged, KiB: (in use,
/// free but kept).
async fn drain_heap(mut lines: tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<(u64, u64)> {
    let mut heap = None;
    while let Some(line) = lines.recv().await {
        if line.contains("\"heap after returning free memory\"") {
            heap = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| Some((v["in_use_kib"].as_u64()?, v["free_kib"].as_u64()?)));
        }
    }
    heap
}

/// Reads the calls and renewals from the emulator, shuts it down and puts the size's
/// report together.
async fn finish(
    size: usize,
    options: &BenchOptions,
    setup: BenchSetup,
    pass: PassFigures,
    idle: IdleFigures,
) -> SizeReport {
    let emulator = setup.emulator;
    let stats = emulator.calls();
    let (bound_calls, bound) = bounds(size, options);
    let calls = bound_calls
        .iter()
        .map(|(action, lower)| (*action, (stats.count(*action), *lower)))
        .collect();
    let renewed = emulator.orders().len() as u64;
    emulator.shutdown().await;
    SizeReport {
        size,
        calls,
        pass: pass.wall,
        bound,
        peak_rss_kib: pass.at_end.peak_rss_kib,
        pass_cpu: pass.at_end.cpu_seconds,
        idle_rss_kib: idle.end.rss_kib,
        idle_rss_anon_kib: idle.end.rss_anon_kib,
        idle_rss_file_kib: idle.end.rss_file_kib,
        idle_heap_kib: idle.heap,
        idle_cpu_share: (idle.end.cpu_seconds - idle.half.cpu_seconds).max(0.0)
            / options.idle_window().as_secs_f64().max(1.0),
        idle_wakeups: idle.end.switches.saturating_sub(idle.half.switches) as f64
            / options.idle_window().as_secs_f64().max(1.0),
        renewed,
        phases: pass.phases,
        ledger: "SQLite",
        vs_sqlite: None,
    }
}

/// A fresh database for one size's PostgreSQL run on `server`: its connection string.
async fn database(server: &str, size: usize) -> Result<String, Failure> {
    let name = format!("ecs_renewd_bench_{}_{size}", std::process::id());
    let (client, connection) =
        tokio_postgres::connect(&format!("{server} dbname=postgres"), tokio_postgres::NoTls)
            .await
            .map_err(|e| failure(size, "connecting to PostgreSQL (--postgres)", &e))?;
    let driver = tokio::spawn(connection);
    // Two statements: CREATE DATABASE cannot run inside the transaction a batch makes.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        client.batch_execute(&sql).await.map_err(|e| {
            let words = e
                .as_db_error()
                .map_or(e.to_string(), |d| d.message().to_owned());
            failure(size, "creating the bench database", &words)
        })?;
    }
    drop(client);
    let _ = driver.await;
    Ok(format!("{server} dbname={name}"))
}

/// Renders the reports as Markdown tables.
pub fn render(reports: &[SizeReport], options: &BenchOptions) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(
            out,
            "### {} instances ({} renewed), {} ledger\n",
            r.size, r.renewed, r.ledger
        );
        let _ = writeln!(out, "| action | calls | lower bound |\n|---|---:|---:|");
        for (action, (made, lower)) in &r.calls {
            let mark = if made == lower { "" } else { " ⚠" };
            let _ = writeln!(out, "| {action} | {made}{mark} | {lower} |");
        }
        let total: (u64, u64) = r
            .calls
            .values()
            .fold((0, 0), |acc, (m, l)| (acc.0 + m, acc.1 + l));
        let _ = writeln!(out, "| **all** | **{}** | **{}** |\n", total.0, total.1);
        let ratio = if r.bound.is_zero() {
            0.0
        } else {
            r.pass.as_secs_f64() / r.bound.as_secs_f64()
        };
        let _ = writeln!(out, "| figure | value | target |\n|---|---:|---|");
        let _ = writeln!(
            out,
            "| pass wall time | {:.3} s | bound {:.3} s (rate {}/s, latency {} ms): ratio {:.3}, target ≤ 1.15 |",
            r.pass.as_secs_f64(),
            r.bound.as_secs_f64(),
            options.rate,
            options.latency.as_millis(),
            ratio
        );
        if let Some(ratio) = r.vs_sqlite {
            let _ = writeln!(
                out,
                "| pass wall time over the SQLite run's (this bench run) | {ratio:.3} | ≤ 1.2 |"
            );
        }
        let _ = writeln!(out, "| where the pass's time went | {} | |", r.phases);
        let _ = writeln!(
            out,
            "| peak RSS during the pass | {:.1} MiB | < 64 MiB at 100,000 |",
            r.peak_rss_kib as f64 / 1024.0
        );
        let _ = writeln!(out, "| CPU time of the pass | {:.2} s | |", r.pass_cpu);
        let _ = writeln!(
            out,
            "| RSS after {} s idle | {:.1} MiB (heap and stacks {:.1}, mapped from files {:.1}) | < 16 MiB |",
            options.idle.as_secs(),
            r.idle_rss_kib as f64 / 1024.0,
            r.idle_rss_anon_kib as f64 / 1024.0,
            r.idle_rss_file_kib as f64 / 1024.0
        );
        if let Some((in_use, free)) = r.idle_heap_kib {
            let _ = writeln!(
                out,
                "| allocator after the pass | {:.1} MiB in use, {:.1} MiB free between live blocks | |",
                in_use as f64 / 1024.0,
                free as f64 / 1024.0
            );
        }
        let window = options.idle_window().as_secs();
        let _ = writeln!(
            out,
            "| CPU while idle (the last {window} s) | {:.3} % of a core | < 0.1 % |",
            r.idle_cpu_share * 100.0
        );
        let _ = writeln!(
            out,
            "| wake-ups while idle (context switches of its threads, the last {window} s) | {:.2} per second | ≤ 3 |\n",
            r.idle_wakeups
        );
    }
    out
}

/// Runs the benchmark and prints the tables.
pub async fn run(
    options: BenchOptions,
    out: &mut (dyn std::io::Write + Send),
) -> Result<Vec<SizeReport>, Failure> {
    let mut reports = Vec::new();
    for size in options.sizes.clone() {
        let sqlite = run_size(size, &options, None, out).await?;
        let sqlite_pass = sqlite.pass;
        reports.push(sqlite);
        if let Some(server) = &options.postgres {
            let url = database(server, size).await?;
            let mut shared = run_size(size, &options, Some(&url), out).await?;
            shared.vs_sqlite =
                Some(shared.pass.as_secs_f64() / sqlite_pass.as_secs_f64().max(1e-9));
            reports.push(shared);
        }
    }
    let _ = write!(out, "\n{}", render(&reports, &options));
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_bound_counts_pages_batches_and_renewals_per_source() {
        let (calls, wall) = bounds(1_000, &BenchOptions::default());
        // 20 sources × 50 instances: 1 page each; 2-3 renewals each; 10 drift each.
        assert_eq!(calls[&Action::DescribeInstanceAutoRenewAttribute], 20);
        assert_eq!(calls[&Action::RenewInstance], 60);
        assert_eq!(calls[&Action::DescribeInstances], 20 + 2 * 20);
        assert_eq!(calls[&Action::ModifyInstanceAutoRenewAttribute], 20);
        assert_eq!(calls[&Action::QueryAccountBalance], 2, "one per account");
        assert!(
            wall > Duration::from_millis(100) && wall < Duration::from_secs(2),
            "{wall:?}"
        );
    }
}
