//! The long-running service (`ecs-renewd run`): one loop that runs passes one at a time — on
//! cron ticks (with jitter), on due retries from the ledger, at start-up when the last
//! successful pass is older than one cadence, and when the watchdog sees a tick missing —
//! reloads its config on SIGHUP, stops cleanly on SIGTERM, tells systemd how it is doing, and
//! serves the admin HTTP endpoints.
//!
//! - `scheduler`: cron ticks (tokio-cron-scheduler behind an adapter) and the watchdog.
//! - `health`: readiness.
//! - `admin`: /metrics, /healthz, /readyz, /status.
//! - `wake`: when a retry justifies a pass before the schedule.

pub(crate) mod admin;
pub(crate) mod health;
pub(crate) mod scheduler;
pub(crate) mod wake;

pub use scheduler::{Tick, TickReason, next_fire};
pub use wake::RetryWakes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngExt;
use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountError;
use crate::clock::Clock;
use crate::cloud::credentials::Environment;
use crate::config::Config;
use crate::ledger::{Ledger, LedgerError};
use crate::metrics::{Metrics, PassResult};
use crate::reconcile::pass::{Engine, EngineBase, PassSummary};
use health::Health;
use scheduler::{CronSource, SchedulerError, Watchdog, typical_interval};

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The ledger (or its lock) cannot be used.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// An account has no usable credentials.
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// The admin address cannot be bound.
    #[error(
        "cannot listen on {addr} for the admin HTTP server: {source} — change [admin] listen or ECS_RENEWD_ADMIN_LISTEN"
    )]
    Bind {
        /// The configured admin address (`[admin] listen` or ECS_RENEWD_ADMIN_LISTEN).
        addr: SocketAddr,
        /// The I/O error from binding the address or reading the listener's address.
        #[source]
        source: std::io::Error,
    },
    /// The cron scheduler failed.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// The admin bearer token cannot be used.
    #[error(transparent)]
    AdminToken(#[from] admin::auth::TokenError),
}

/// Where ticks come from.
pub enum Ticks {
    /// The configured cron schedule (tokio-cron-scheduler).
    Cron,
    /// Ticks sent by the caller (tests drive the loop directly).
    Manual(mpsc::Sender<Tick>, mpsc::Receiver<Tick>),
}

/// Everything the daemon needs from its caller.
pub struct Setup {
    /// The checked config.
    pub config: Config,
    /// Where it came from (re-read on SIGHUP).
    pub config_path: PathBuf,
    /// The environment (credentials).
    pub env: Environment,
    /// The business clock (the wall clock, or the demo's virtual one).
    pub clock: Arc<dyn Clock>,
    /// The clock cron and the watchdog run on (the wall clock; virtual in tests).
    pub wall: Arc<dyn Clock>,
    /// Fires to stop (SIGTERM/SIGINT).
    pub stop: CancellationToken,
    /// One message per SIGHUP.
    pub reload: mpsc::Receiver<()>,
    /// Tick source.
    pub ticks: Ticks,
    /// How often the watchdog and the DST check run.
    pub check_every: Duration,
    /// A pre-bound admin listener (port 0 in tests); `None` binds the configured address.
    pub admin_listener: Option<tokio::net::TcpListener>,
    /// Receives each pass's summary (the demo and tests watch passes).
    pub passes: Option<mpsc::UnboundedSender<PassSummary>>,
}

/// A started daemon.
pub struct Running {
    /// The admin server's address.
    pub admin_addr: SocketAddr,
    /// The daemon's metrics, shared with the engine and the admin server.
    pub metrics: Arc<Metrics>,
    /// The writable ledger (holding the state directory's lock), shared with the engine.
    pub ledger: Arc<Ledger>,
    /// The loop; ends after `stop` fires.
    pub task: tokio::task::JoinHandle<Result<(), DaemonError>>,
}

fn notify(states: &[NotifyState]) {
    // A no-op when not started by systemd (no NOTIFY_SOCKET).
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "systemd notification failed");
    }
}

/// Opens the ledger, connects the accounts, binds the admin server, and starts the loop.
pub async fn start(setup: Setup) -> Result<Running, DaemonError> {
    let Setup {
        config,
        config_path,
        env,
        clock,
        wall,
        stop,
        reload,
        ticks,
        check_every,
        admin_listener,
        passes,
    } = setup;
    let guard = admin::auth::Guard::new(admin::auth::configured_token(
        config.admin.bearer_token_file.as_deref(),
        &env,
    )?);
    let ledger = Arc::new(Ledger::open(&config.state_dir)?);
    let metrics = Arc::new(Metrics::new(clock.clone()));
    let interval = typical_interval(&config.schedule, config.timezone, wall.now());
    metrics.dry_run.set(i64::from(config.dry_run));
    metrics
        .schedule_interval_seconds
        .set(interval.as_secs_f64());
    let base = EngineBase {
        ledger: ledger.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        cancel: CancellationToken::new(),
    };
    let engine = Arc::new(Engine::connect(config, &env, base).await?);
    let config = engine.config.clone();
    let listener = match admin_listener {
        Some(listener) => listener,
        None => admin::bind(config.admin_listen)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: config.admin_listen,
                source,
            })?,
    };
    let admin_addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: config.admin_listen,
        source,
    })?;
    let health = Arc::new(Health::new(interval, ledger.source_successes()?));
    let reader = Ledger::open_read_only(&config.state_dir)?
        .map(Arc::new)
        .unwrap_or_else(|| ledger.clone());
    let shared_accounts = Arc::new(RwLock::new(engine.accounts.clone()));
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        listener,
        admin::AdminState {
            metrics: metrics.clone(),
            ledger: reader,
            health: health.clone(),
            accounts: shared_accounts.clone(),
            clock: clock.clone(),
            guard: guard.clone(),
            status_slots: Arc::new(tokio::sync::Semaphore::new(
                config.admin.max_status_requests,
            )),
        },
        admin::Limits {
            header_read_timeout: config.admin.header_read_timeout,
            write_timeout: config.admin.write_timeout,
            answer_timeout: config.admin.answer_timeout,
            max_connections: config.admin.max_connections,
        },
        admin_stop.clone(),
    ));
    let exposure_warned_at = admin::exposed(admin_addr, &guard).then(|| {
        admin::warn_exposed(admin_addr);
        clock.now()
    });
    tracing::info!(admin = %admin_addr, schedule = %config.schedule.text, timezone = %config.timezone,
        state = %config.state_dir.display(), dry_run = config.dry_run, "ecs-renewd started");
    let engine_floor = config.retry.backoff_floor;
    let (tick_tx, tick_rx, use_cron) = match ticks {
        Ticks::Cron => {
            let (tx, rx) = mpsc::channel(1);
            (tx, rx, true)
        }
        Ticks::Manual(tx, rx) => (tx, rx, false),
    };
    let state = LoopState {
        engine,
        config_path,
        env,
        wall,
        stop,
        reload,
        tick_tx,
        tick_rx,
        use_cron,
        check_every,
        passes,
        health,
        shared_accounts,
        admin_stop,
        admin_task: Some(admin_task),
        admin_addr,
        guard,
        exposure_warned_at,
        wakes: wake::RetryWakes::new(engine_floor),
    };
    let task = tokio::spawn(state.run());
    Ok(Running {
        admin_addr,
        metrics,
        ledger,
        task,
    })
}

struct LoopState {
    engine: Arc<Engine>,
    config_path: PathBuf,
    env: Environment,
    wall: Arc<dyn Clock>,
    stop: CancellationToken,
    reload: mpsc::Receiver<()>,
    tick_tx: mpsc::Sender<Tick>,
    tick_rx: mpsc::Receiver<Tick>,
    use_cron: bool,
    check_every: Duration,
    passes: Option<mpsc::UnboundedSender<PassSummary>>,
    health: Arc<Health>,
    shared_accounts: Arc<RwLock<Vec<crate::accounts::AccountClient>>>,
    admin_stop: CancellationToken,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    admin_addr: SocketAddr,
    /// The admin bearer token (re-read on reload).
    guard: admin::auth::Guard,
    /// When the exposed-admin warning was last repeated (business time).
    exposure_warned_at: Option<chrono::DateTime<chrono::Utc>>,
    wakes: wake::RetryWakes,
}

/// A draw from [0, 1) for the retry wake-up's jitter.
fn jitter() -> f64 {
    rand::rng().random_range(0.0..1.0)
}

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The first pass after start (the last successful one is not recent).
    Startup,
    /// A cron tick, or the watchdog standing in for a missed one.
    Tick(TickReason),
    /// A retry the last pass planned for is due.
    Retry,
}

/// What waiting between passes ended with.
enum Waited {
    /// A stop was requested.
    Stop,
    /// A pass is to run.
    Wake(Wake),
    /// Something was handled (a reload, a ping, a trim); wait again.
    Nothing,
}

/// The timers the loop waits on between passes.
struct Timers {
    /// The cron job, unless ticks come from elsewhere (tests, the demo).
    cron: Option<CronSource>,
    /// Catches a scheduler that stopped ticking.
    watchdog: Watchdog,
    /// When the cron job last fired (milliseconds since the epoch; 0 before the first).
    last_fire: Arc<AtomicI64>,
    /// systemd's watchdog ping.
    ping: tokio::time::Interval,
    /// Half of systemd's watchdog interval, when systemd asks for pings.
    ping_every: Option<Duration>,
    /// How often the schedule is checked (offset changes, missed ticks).
    check: tokio::time::Interval,
    /// When to return the last pass's memory to the OS.
    trim_at: Option<tokio::time::Instant>,
}

impl LoopState {
    async fn run(mut self) -> Result<(), DaemonError> {
        let mut timers = self.start_timers().await?;
        notify(&[
            NotifyState::Ready,
            NotifyState::Status("started; waiting for the first pass"),
        ]);
        let mut pending = self.first_wake()?;
        let mut result = Ok(());
        loop {
            if let Some(wake) = pending.take() {
                let ping_enabled = timers.ping_every.is_some();
                if let Some(error) = self
                    .run_pass(wake, &mut timers.ping, ping_enabled, &mut timers.watchdog)
                    .await
                {
                    result = Err(error);
                    break;
                }
                if self.stop.is_cancelled() {
                    break;
                }
                pending = self.fold_ticks(&mut timers);
                continue;
            }
            match self.wait_for_wake(&mut timers).await {
                Waited::Stop => break,
                Waited::Wake(wake) => pending = Some(wake),
                Waited::Nothing => {}
            }
        }
        self.shut_down(timers.cron).await;
        result
    }

    /// The cron job (unless ticks come from elsewhere), the watchdog and the other timers the
    /// loop waits on.
    async fn start_timers(&self) -> Result<Timers, DaemonError> {
        let config = self.engine.config.clone();
        let last_fire = Arc::new(AtomicI64::new(0));
        let cron = if self.use_cron {
            Some(
                CronSource::start(
                    config.schedule.clone(),
                    config.timezone,
                    self.tick_tx.clone(),
                    self.engine.metrics.ticks_coalesced_total.clone(),
                    last_fire.clone(),
                    self.wall.now(),
                )
                .await?,
            )
        } else {
            None
        };
        let ping_every = sd_notify::watchdog_enabled().map(|d| d / 2);
        Ok(Timers {
            cron,
            watchdog: Watchdog::new(config.schedule.clone(), config.timezone, self.wall.now()),
            last_fire,
            ping: tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600))),
            ping_every,
            check: tokio::time::interval(self.check_every),
            trim_at: None,
        })
    }

    /// A start-up pass unless the last successful one is recent; and the retry the last pass
    /// planned for, kept across a restart.
    fn first_wake(&mut self) -> Result<Option<Wake>, LedgerError> {
        let config = &self.engine.config;
        let interval = chrono::Duration::from_std(typical_interval(
            &config.schedule,
            config.timezone,
            self.wall.now(),
        ))
        .unwrap_or(chrono::Duration::minutes(15));
        let last_ok = self.engine.ledger.last_successful_pass()?;
        let now = self.engine.clock.now();
        let pending = match last_ok {
            Some(at) if now - at < interval => {
                tracing::info!(last_success = %at, "the last successful pass is recent: waiting for the schedule");
                None
            }
            _ => Some(Wake::Startup),
        };
        if let Some(last) = self.engine.ledger.last_pass()? {
            self.wakes
                .after_pass(last.started_at, last.next_retry_at, jitter());
        }
        Ok(pending)
    }

    /// After a pass: ticks that arrived during it are folded into one follow-up pass (and
    /// counted), and the memory trim is scheduled.
    fn fold_ticks(&mut self, timers: &mut Timers) -> Option<Wake> {
        let mut arrived = 0;
        while let Ok(tick) = self.tick_rx.try_recv() {
            timers.watchdog.fired(tick.at);
            arrived += 1;
        }
        // A second return of free memory once the pass's pooled connections have closed: their
        // buffers are freed after the first one, and glibc returns freed memory only when
        // asked. The code the pass ran is handed back then too (not after every scrape, whose
        // own code would only be read back in at the next one).
        timers.trim_at = Some(
            tokio::time::Instant::now()
                + crate::cloud::client::POOL_IDLE_TIMEOUT
                + Duration::from_secs(5),
        );
        (arrived > 0).then(|| {
            self.engine.metrics.ticks_coalesced_total.inc_by(arrived);
            Wake::Tick(TickReason::Cron)
        })
    }

    /// Waits for the next thing to do between passes: a stop, a tick, a due retry, a reload,
    /// the scheduler's check, a systemd watchdog ping or the memory trim.
    async fn wait_for_wake(&mut self, timers: &mut Timers) -> Waited {
        let retry_wait = self
            .wakes
            .next()
            .map(|at| self.engine.clock.real_wait_until(at));
        let trim_at = timers.trim_at;
        tokio::select! {
            _ = self.stop.cancelled() => Waited::Stop,
            Some(tick) = self.tick_rx.recv() => {
                timers.watchdog.fired(tick.at);
                Waited::Wake(Wake::Tick(tick.reason))
            }
            _ = tokio::time::sleep(retry_wait.unwrap_or(Duration::from_secs(3600))), if retry_wait.is_some() => {
                Waited::Wake(Wake::Retry)
            }
            Some(()) = self.reload.recv() => {
                self.reload_and_rearm(timers).await;
                Waited::Nothing
            }
            _ = timers.check.tick() => self.check_schedule(timers).await,
            _ = timers.ping.tick(), if timers.ping_every.is_some() => {
                notify(&[NotifyState::Watchdog]);
                Waited::Nothing
            }
            _ = tokio::time::sleep_until(trim_at.unwrap_or_else(tokio::time::Instant::now)), if trim_at.is_some() => {
                timers.trim_at = None;
                self.trim_memory().await;
                Waited::Nothing
            }
        }
    }

    /// SIGHUP: reloads the config and, when the schedule changed, re-arms the cron job and
    /// the watchdog.
    async fn reload_and_rearm(&mut self, timers: &mut Timers) {
        let Some((schedule, tz)) = self.reload_config().await else {
            return;
        };
        if let Some(cron) = timers.cron.as_mut()
            && let Err(error) = cron.replace(schedule.clone(), tz, self.wall.now()).await
        {
            tracing::error!(%error, "re-arming the cron job after a reload failed; the watchdog keeps passes running");
        }
        timers.watchdog = Watchdog::new(schedule, tz, self.wall.now());
    }

    /// The periodic check: re-arms cron after a timezone offset change, and runs the pass the
    /// scheduler missed.
    async fn check_schedule(&self, timers: &mut Timers) -> Waited {
        let now = self.wall.now();
        if let Some(cron) = timers.cron.as_mut()
            && let Err(error) = cron.rearm_if_offset_changed(now).await
        {
            tracing::error!(%error, "re-arming the cron job after a timezone offset change failed");
        }
        let fired = timers.last_fire.load(Ordering::SeqCst);
        if fired > 0
            && let Some(at) = DateTime::<Utc>::from_timestamp_millis(fired)
        {
            timers.watchdog.fired(at);
        }
        match timers.watchdog.check(now) {
            Some(expected) => {
                self.engine.metrics.scheduler_missed_ticks_total.inc();
                tracing::warn!(expected = %expected, "the scheduler did not tick in time: running the pass anyway");
                Waited::Wake(Wake::Tick(TickReason::Watchdog))
            }
            None => Waited::Nothing,
        }
    }

    /// Returns freed memory and the pass's code pages to the OS. Best effort: a panic here
    /// must not end the loop.
    async fn trim_memory(&self) {
        use futures_util::FutureExt as _;
        let trim = self
            .engine
            .ledger
            .blocking("releasing memory after a pass", |ledger| {
                ledger.shrink_memory();
                crate::memory::release_free_memory();
                crate::memory::release_code_pages();
                Ok(())
            });
        let _ = std::panic::AssertUnwindSafe(trim).catch_unwind().await;
    }

    /// Tells systemd, stops the cron job and the admin server.
    async fn shut_down(&mut self, cron: Option<CronSource>) {
        notify(&[NotifyState::Stopping]);
        tracing::info!("stopping");
        if let Some(cron) = cron {
            cron.shutdown().await;
        }
        self.admin_stop.cancel();
        if let Some(task) = self.admin_task.take() {
            let _ = task.await;
        }
    }

    /// Runs one pass as its own task, so a stop request can bound how long it may finish.
    /// Returns a ledger error that must stop the daemon.
    async fn run_pass(
        &mut self,
        wake: Wake,
        ping: &mut tokio::time::Interval,
        pinging: bool,
        watchdog: &mut Watchdog,
    ) -> Option<DaemonError> {
        let config = self.engine.config.clone();
        if matches!(wake, Wake::Tick(_)) && !config.jitter.is_zero() {
            let delay = config.jitter.mul_f64(rand::rng().random_range(0.0..1.0));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => return None,
            }
        }
        // Ticks that queued up meanwhile are folded into this pass.
        while let Ok(tick) = self.tick_rx.try_recv() {
            watchdog.fired(tick.at);
            self.engine.metrics.ticks_coalesced_total.inc();
        }
        tracing::info!(?wake, "pass starting");
        let engine = self.engine.clone();
        let mut task = tokio::spawn(async move { engine.run_pass().await });
        let outcome = loop {
            tokio::select! {
                joined = &mut task => break joined,
                _ = ping.tick(), if pinging => notify(&[NotifyState::Watchdog]),
                _ = self.stop.cancelled() => {
                    notify(&[NotifyState::Stopping]);
                    tracing::warn!(grace = %crate::duration::format(config.shutdown_grace),
                        "stop requested during a pass: no new ECS call starts; the one in flight and its ledger write finish");
                    self.engine.cancel.cancel();
                    match tokio::time::timeout(config.shutdown_grace, &mut task).await {
                        Ok(joined) => break joined,
                        Err(_) => {
                            tracing::error!("the pass did not finish within the shutdown grace; stopping anyway (open intents are resent with their tokens next start)");
                            task.abort();
                            return None;
                        }
                    }
                }
            }
        };
        match outcome {
            Ok(Ok(summary)) => {
                // A pass over a large fleet frees a lot: hand it back before idling.
                self.engine.ledger.shrink_memory();
                self.engine.ledger.checkpoint_soon();
                crate::memory::release_free_memory();
                self.health.record(&summary);
                self.wakes
                    .after_pass(summary.started_at, summary.next_retry_at, jitter());
                if let Some(at) = self.wakes.next() {
                    tracing::info!(at = %crate::cloud::time::format_seconds(at), "a retry is due before the schedule: a pass runs for it then");
                }
                notify(&[NotifyState::Status(&summary.line())]);
                self.repeat_exposure_warning(summary.finished_at);
                if let Some(passes) = &self.passes {
                    let _ = passes.send(summary);
                }
                None
            }
            Ok(Err(error)) => {
                self.wakes.forget();
                tracing::error!(%error, "the pass stopped on a ledger error; no charge is made without its record");
                self.engine
                    .metrics
                    .passes_total
                    .with_label_values(&[PassResult::Failed.as_str()])
                    .inc();
                notify(&[NotifyState::Status(&format!("last pass failed: {error}"))]);
                None
            }
            Err(join_error) => {
                self.wakes.forget();
                tracing::error!(error = %join_error, "the pass task failed");
                self.engine
                    .metrics
                    .passes_total
                    .with_label_values(&[PassResult::Failed.as_str()])
                    .inc();
                None
            }
        }
    }

    /// Repeats the exposed-admin warning after a pass, at most once an hour, for as long as the
    /// server is reachable from the network without a token (a start-up line scrolls away).
    fn repeat_exposure_warning(&mut self, now: chrono::DateTime<chrono::Utc>) {
        if !admin::exposed(self.admin_addr, &self.guard) {
            return;
        }
        if self
            .exposure_warned_at
            .is_some_and(|at| now - at < chrono::Duration::hours(1))
        {
            return;
        }
        admin::warn_exposed(self.admin_addr);
        self.exposure_warned_at = Some(now);
    }

    /// Reads, checks and swaps in the config; on any failure keeps the old one. Returns the
    /// new schedule and timezone when it changed.
    async fn reload_config(&mut self) -> Option<(crate::config::Schedule, chrono_tz::Tz)> {
        let old = self.engine.config.clone();
        let metrics = self.engine.metrics.clone();
        let mut config = match Config::load(&self.config_path, &self.env) {
            Ok(config) => config,
            Err(error) => {
                metrics.config_last_reload_successful.set(0);
                tracing::error!(%error, "config reload failed: keeping the running config");
                return None;
            }
        };
        if config.state_dir != old.state_dir {
            tracing::warn!(old = %old.state_dir.display(), new = %config.state_dir.display(), "state_dir changes take effect after a restart");
            config.state_dir = old.state_dir.clone();
        }
        if config.admin_listen != old.admin_listen {
            tracing::warn!(old = %old.admin_listen, new = %config.admin_listen, "the admin address changes after a restart");
        }
        let limits = |a: &crate::config::AdminSettings| {
            (
                a.header_read_timeout,
                a.write_timeout,
                a.answer_timeout,
                a.max_connections,
                a.max_status_requests,
            )
        };
        if limits(&config.admin) != limits(&old.admin) {
            tracing::warn!(
                "the admin server's timeouts and caps change after a restart (the bearer token is re-read now)"
            );
        }
        let token = match admin::auth::configured_token(
            config.admin.bearer_token_file.as_deref(),
            &self.env,
        ) {
            Ok(token) => token,
            Err(error) => {
                metrics.config_last_reload_successful.set(0);
                tracing::error!(%error, "config reload failed: keeping the running config");
                return None;
            }
        };
        let engine = match Engine::connect(config, &self.env, self.engine.base()).await {
            Ok(engine) => engine,
            Err(error) => {
                metrics.config_last_reload_successful.set(0);
                tracing::error!(%error, "config reload failed: keeping the running config");
                return None;
            }
        };
        let config = engine.config.clone();
        let schedule_changed =
            config.schedule.text != old.schedule.text || config.timezone != old.timezone;
        let interval = typical_interval(&config.schedule, config.timezone, self.wall.now());
        metrics.dry_run.set(i64::from(config.dry_run));
        metrics
            .schedule_interval_seconds
            .set(interval.as_secs_f64());
        self.health.set_interval(interval);
        self.wakes.set_floor(config.retry.backoff_floor);
        self.guard.set(token);
        if admin::exposed(self.admin_addr, &self.guard) {
            admin::warn_exposed(self.admin_addr);
            self.exposure_warned_at = Some(self.engine.clock.now());
        }
        *self
            .shared_accounts
            .write()
            .unwrap_or_else(|p| p.into_inner()) = engine.accounts.clone();
        let schedule = (config.schedule.clone(), config.timezone);
        self.engine = Arc::new(engine);
        metrics.config_last_reload_successful.set(1);
        tracing::info!("config reloaded");
        schedule_changed.then_some(schedule)
    }
}
