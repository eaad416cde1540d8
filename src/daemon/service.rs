//! The daemon's loop: one `select!` over what can happen between passes — a stop, a cron tick,
//! a due retry, a reload, the watchdog's check, systemd's watchdog ping, the memory trim — and
//! one pass at a time when something asks for it (`passes.rs`). Ticks that arrive during a pass
//! fold into one follow-up pass. Shaped after rust-lang/bors' `try_main`: every long-lived
//! future is in the one `select!`, and what ends the loop is logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::admin::{AdminServer, Warn};
use super::health::Health;
use super::leadership::{Leadership, Tried};
use super::reload::{Reloaded, Reloader, reload_failed};
use super::scheduler::{CronSource, Tick, TickReason, TickSink, Watchdog, typical_interval};
use super::systemd::{NotifyState, notify, ping_every};
use super::wake::RetryWakes;
use super::{Signals, TickSource, Ticks};
use crate::clock::Clock;
use crate::ledger::LedgerError;
use crate::reconcile::{Engine, PassSummary};

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// The first pass after start (the last successful one is not recent).
    Startup,
    /// A cron tick, or the watchdog standing in for a missed one.
    Tick(TickReason),
    /// A retry the last pass planned for is due.
    Retry,
    /// This process just took the lease of a shared ledger and the last leader's work may be
    /// unfinished (an attempt still out, or no success within a cadence).
    Takeover,
}

/// What waiting between passes ended with.
enum Waited {
    /// A stop was requested.
    Stop,
    /// A pass is to run.
    Wake(Wake),
    /// Something was handled (a reload, a ping, a trim, a try for the lease); wait again.
    Nothing,
    /// The leader lease was lost: stop acting (exit 75).
    Lost(LedgerError),
}

/// The timers the loop waits on between passes, besides cron.
pub(super) struct Timers {
    /// Catches a cron source that stopped ticking.
    pub watchdog: Watchdog,
    /// When cron last fired (milliseconds since the epoch): a tick the channel could not take
    /// still fired.
    pub last_fire: Arc<AtomicI64>,
    /// How often the watchdog looks.
    pub check: tokio::time::Interval,
    /// systemd's watchdog ping, when the unit asks for one.
    pub ping: Option<tokio::time::Interval>,
    /// When to return the last pass's memory to the OS.
    pub trim_at: Option<tokio::time::Instant>,
}

/// The running daemon between `start` and its end.
pub(super) struct Service {
    /// What passes run with (a reload swaps it).
    pub engine: Arc<Engine>,
    /// How a reload reads the config again.
    pub reloader: Reloader,
    /// The clock cron and the watchdog run on.
    pub wall: Arc<dyn Clock>,
    /// Stop and reload requests.
    pub signals: Signals,
    /// The ticks asking for a pass.
    pub ticks: mpsc::Receiver<Tick>,
    /// The cron source, unless ticks come from elsewhere (tests).
    pub cron: Option<CronSource>,
    /// The watchdog, systemd's ping, the memory trim.
    pub timers: Timers,
    /// Readiness inputs (each pass's sources and refusals).
    pub health: Arc<Health>,
    /// The admin server (a reload gives it the new token and accounts).
    pub admin: AdminServer,
    /// The retry the daemon may wake for.
    pub wakes: RetryWakes,
    /// Receives each pass's summary (the demo and tests watch passes).
    pub passes: Option<mpsc::UnboundedSender<PassSummary>>,
    /// The lease, on a shared ledger (`None`: SQLite, this process leads alone).
    pub leadership: Option<Leadership>,
    /// Why the loop must end without being asked (the term lost): exit 75.
    pub exit: Option<LedgerError>,
}

impl Service {
    /// The loop over `engine`, ticking by `ticks`.
    pub fn new(
        engine: Arc<Engine>,
        reloader: Reloader,
        (wall, signals): (Arc<dyn Clock>, Signals),
        ticks: Ticks,
        (health, admin): (Arc<Health>, AdminServer),
        passes: Option<mpsc::UnboundedSender<PassSummary>>,
        leadership: Option<Leadership>,
    ) -> Service {
        let config = &engine.config;
        let last_fire = Arc::new(AtomicI64::new(0));
        let (rx, cron) = match ticks.source {
            TickSource::Manual(_, rx) => (rx, None),
            TickSource::Cron => {
                let (tx, rx) = mpsc::channel(1);
                let sink = TickSink {
                    tx,
                    coalesced: engine.metrics.ticks_coalesced_total.clone(),
                    last_fire: last_fire.clone(),
                };
                let cron =
                    CronSource::start(config.schedule.clone(), config.timezone, wall.clone(), sink);
                (rx, Some(cron))
            }
        };
        let timers = Timers {
            watchdog: Watchdog::new(config.schedule.clone(), config.timezone, wall.now()),
            last_fire,
            check: tokio::time::interval(ticks.watchdog_every),
            ping: ping_every().map(tokio::time::interval),
            trim_at: None,
        };
        let wakes = RetryWakes::new(config.retry.backoff_floor);
        Service {
            engine,
            reloader,
            wall,
            signals,
            ticks: rx,
            cron,
            timers,
            health,
            admin,
            wakes,
            passes,
            leadership,
            exit: None,
        }
    }

    /// Runs passes until a stop is requested.
    pub async fn run(mut self) -> Result<(), LedgerError> {
        notify(&[
            NotifyState::Ready,
            NotifyState::Status("started; waiting for the first pass"),
        ]);
        // A standby runs nothing until it leads (`take_lead`).
        let mut wake = match self.leadership {
            None => self.first_wake()?,
            Some(_) => None,
        };
        loop {
            if let Some(reason) = wake.take() {
                self.pass(reason).await;
                if self.signals.stop.is_cancelled() || self.exit.is_some() {
                    break;
                }
                wake = self.fold_ticks();
                continue;
            }
            match self.wait().await {
                Waited::Stop => break,
                Waited::Wake(reason) => wake = Some(reason),
                Waited::Nothing => {}
                Waited::Lost(error) => {
                    tracing::error!(%error, "the leader lease was lost: this process stops acting");
                    self.exit = Some(error);
                    break;
                }
            }
        }
        let exit = self.exit.take();
        self.shut_down().await;
        exit.map_or(Ok(()), Err)
    }

    /// A standby's try for the lease; on taking it, the wake for a pass at once when the last
    /// leader's pass did not finish (its start is noted in the lease row and it has no record,
    /// or an attempt of it is still out) or no pass succeeded within a cadence.
    async fn take_lead(&mut self) -> Waited {
        let Some(leadership) = self.leadership.as_mut() else {
            return Waited::Nothing;
        };
        match leadership.campaign(&self.engine.ledger).await {
            Tried::Standby => {
                self.health.set_standby(Some(Ok(())));
                return Waited::Nothing;
            }
            Tried::Unreachable(why) => {
                self.health.set_standby(Some(Err(why)));
                return Waited::Nothing;
            }
            Tried::Leads => self.health.set_standby(None),
        }
        let ledger = self.engine.ledger.clone();
        let unfinished = || {
            ledger.last_pass_unfinished().unwrap_or(true) || ledger.attempts_out().unwrap_or(true)
        };
        match self.first_wake() {
            Ok(Some(_)) => Waited::Wake(Wake::Takeover),
            Ok(None) if unfinished() => Waited::Wake(Wake::Takeover),
            Ok(None) => Waited::Nothing,
            Err(error) => {
                tracing::warn!(%error, "reading the last pass after taking the lease failed: running a pass");
                Waited::Wake(Wake::Takeover)
            }
        }
    }

    /// A start-up pass unless the last successful one is recent; and the retry the last pass
    /// planned for, kept across a restart.
    fn first_wake(&mut self) -> Result<Option<Wake>, LedgerError> {
        let config = &self.engine.config;
        let interval = typical_interval(&config.schedule, config.timezone, self.wall.now());
        let interval =
            chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::minutes(15));
        let now = self.engine.clock.now();
        let wake = match self.engine.ledger.last_successful_pass()? {
            Some(at) if now - at < interval => {
                tracing::info!(last_success = %at, "the last successful pass is recent: waiting for the schedule");
                None
            }
            _ => Some(Wake::Startup),
        };
        if let Some(last) = self.engine.ledger.last_pass()? {
            self.wakes
                .after_pass(last.started_at, last.next_retry_at, super::passes::jitter());
        }
        Ok(wake)
    }

    /// After a pass: ticks that arrived during it fold into one follow-up pass (and are
    /// counted), and the memory trim is scheduled.
    fn fold_ticks(&mut self) -> Option<Wake> {
        let mut arrived = 0;
        while let Ok(tick) = self.ticks.try_recv() {
            self.timers.watchdog.fired(tick.at);
            arrived += 1;
        }
        // A second return of free memory once the pass's pooled connections have closed: their
        // buffers are freed after the first one, and glibc returns freed memory only when
        // asked. The code the pass ran is handed back then too (not after every scrape, whose
        // own code would only be read back in at the next one).
        self.timers.trim_at = Some(
            tokio::time::Instant::now()
                + crate::cloud::client::POOL_IDLE_TIMEOUT
                + Duration::from_secs(5),
        );
        (arrived > 0).then(|| {
            self.engine.metrics.ticks_coalesced_total.inc_by(arrived);
            Wake::Tick(TickReason::Cron)
        })
    }

    /// Waits for the next thing to do between passes.
    async fn wait(&mut self) -> Waited {
        let retry = self
            .wakes
            .next()
            .map(|at| self.engine.clock.real_wait_until(at));
        let trim_at = self.timers.trim_at;
        let pinging = self.timers.ping.is_some();
        let standby = self
            .leadership
            .as_ref()
            .filter(|l| !l.is_leading())
            .map(|l| l.next_try());
        let leading = self.leadership.as_ref().is_some_and(Leadership::is_leading);
        tokio::select! {
            _ = self.signals.stop.cancelled() => Waited::Stop,
            _ = tokio::time::sleep_until(standby.unwrap_or_else(tokio::time::Instant::now)), if standby.is_some() => {
                self.take_lead().await
            }
            error = lost(&mut self.leadership), if leading => Waited::Lost(error),
            Some(tick) = self.ticks.recv() => {
                self.timers.watchdog.fired(tick.at);
                Waited::Wake(Wake::Tick(tick.reason))
            }
            _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {
                Waited::Wake(Wake::Retry)
            }
            Some(()) = self.signals.reload.recv() => {
                self.reload().await;
                Waited::Nothing
            }
            _ = self.timers.check.tick() => self.check_watchdog(),
            _ = tick_if(&mut self.timers.ping), if pinging => {
                notify(&[NotifyState::Watchdog]);
                Waited::Nothing
            }
            _ = tokio::time::sleep_until(trim_at.unwrap_or_else(tokio::time::Instant::now)), if trim_at.is_some() => {
                self.timers.trim_at = None;
                self.trim_memory().await;
                Waited::Nothing
            }
        }
    }

    /// SIGHUP: the new config swapped in, or the running one kept.
    async fn reload(&mut self) {
        match self.reloader.load(&self.engine).await {
            Ok(reloaded) => self.swap_in(reloaded),
            Err(error) => reload_failed(&self.engine.metrics, &error),
        }
    }

    /// Takes a reloaded config in: the schedule, the retry floor, the admin server's token and
    /// accounts, and the engine the next pass runs with.
    fn swap_in(&mut self, Reloaded { engine, token }: Reloaded) {
        let (old, new) = (self.engine.config.clone(), engine.config.clone());
        let interval = super::publish_schedule(&engine, self.wall.now());
        self.health.set_interval(interval);
        self.wakes.set_floor(new.retry.backoff_floor);
        self.admin.reloaded(token, &engine.accounts);
        self.admin.warn_if_exposed(engine.clock.now(), Warn::Now);
        if new.schedule.text != old.schedule.text || new.timezone != old.timezone {
            if let Some(cron) = &self.cron {
                cron.replace(new.schedule.clone(), new.timezone);
            }
            self.timers.watchdog =
                Watchdog::new(new.schedule.clone(), new.timezone, self.wall.now());
        }
        self.engine = Arc::new(engine);
        self.engine.metrics.config_last_reload_successful.set(1);
        tracing::info!("config reloaded");
    }

    /// The watchdog's look: runs the pass the cron source missed.
    fn check_watchdog(&mut self) -> Waited {
        let fired = self.timers.last_fire.load(Ordering::SeqCst);
        if let Some(at) = DateTime::<Utc>::from_timestamp_millis(fired).filter(|_| fired > 0) {
            self.timers.watchdog.fired(at);
        }
        match self.timers.watchdog.check(self.wall.now()) {
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
                ledger.close_idle_sessions();
                crate::memory::release_free_memory();
                crate::memory::release_code_pages();
                Ok(())
            });
        let _ = std::panic::AssertUnwindSafe(trim).catch_unwind().await;
    }

    /// Tells systemd, gives the lease up, stops the cron source and the admin server.
    async fn shut_down(mut self) {
        notify(&[NotifyState::Stopping]);
        tracing::info!("stopping");
        if let Some(leadership) = self.leadership.as_mut() {
            leadership.resign(&self.engine.ledger).await;
        }
        if let Some(cron) = self.cron {
            cron.shutdown().await;
        }
        self.admin.shutdown().await;
    }
}

/// Resolves when a held term is lost (pending without a lease).
async fn lost(leadership: &mut Option<Leadership>) -> LedgerError {
    match leadership {
        Some(leadership) => leadership.lost().await,
        None => std::future::pending().await,
    }
}

/// The next tick of `interval`, if there is one (a `select!` branch guarded by its presence).
pub(super) async fn tick_if(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
