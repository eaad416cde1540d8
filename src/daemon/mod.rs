//! The long-running service (`ecs-renewd run`): one loop that runs passes one at a time — on
//! cron ticks (with jitter), on due retries from the ledger, at start-up when the last
//! successful pass is older than one cadence, and when the watchdog sees a tick missing —
//! reloads its config on SIGHUP, stops cleanly on SIGTERM, tells systemd how it is doing, and
//! serves the admin HTTP endpoints.
//!
//! - `service`: the loop, one `select!` between passes; `passes`: running one pass;
//!   `reload`: reading the config again.
//! - `scheduler`: cron ticks (croner) and the watchdog; `wake`: when a retry justifies a pass
//!   before the schedule.
//! - `health`: readiness; `admin`: /metrics, /healthz, /readyz, /status; `systemd`: what
//!   systemd is told.
//! - `leadership`: on a shared (PostgreSQL) ledger, the standby's tries for the lease and the
//!   leader's term (docs/architecture.md, "Two replicas").

pub(crate) mod admin;
pub(crate) mod health;
mod leadership;
mod passes;
mod reload;
pub(crate) mod scheduler;
mod service;
mod systemd;
pub(crate) mod wake;

pub use scheduler::{Tick, TickReason, next_fire};
pub use wake::RetryWakes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountError;
use crate::clock::Clock;
use crate::cloud::credentials::Environment;
use crate::config::Config;
use crate::ledger::{Ledger, LedgerError};
use crate::metrics::Metrics;
use crate::reconcile::{Engine, EngineBase, PassSummary};
use admin::{AdminServer, Serving};
use health::Health;
use reload::Reloader;
use scheduler::typical_interval;
use service::Service;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The shared ledger's URL file cannot be used.
    #[error(transparent)]
    LedgerUrl(#[from] crate::secret::SecretFileError),
    /// The ledger (or its lock) cannot be used.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// An account has no usable credentials.
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// The admin address cannot be bound.
    #[error(transparent)]
    Bind(#[from] admin::BindError),
    /// The admin bearer token cannot be used.
    #[error(transparent)]
    AdminToken(#[from] admin::auth::TokenError),
}

/// The checked config, where it came from (re-read on SIGHUP), and the environment it was
/// read with (credentials).
pub struct ConfigSource {
    /// The checked config.
    pub config: Config,
    /// Its file.
    pub path: PathBuf,
    /// The environment.
    pub env: Environment,
}

/// The two clocks the daemon reads.
pub struct Clocks {
    /// Business time: decisions, the ledger's times (the wall clock, or the demo's virtual
    /// one).
    pub business: Arc<dyn Clock>,
    /// The clock cron and the watchdog run on (the wall clock; virtual in tests).
    pub wall: Arc<dyn Clock>,
}

/// What the process asks of the daemon.
pub struct Signals {
    /// Fires to stop (SIGTERM/SIGINT).
    pub stop: CancellationToken,
    /// One message per SIGHUP.
    pub reload: mpsc::Receiver<()>,
}

/// Where ticks come from, and how often the watchdog looks for one that did not come.
pub struct Ticks {
    /// The cron schedule, or the caller.
    pub source: TickSource,
    /// How often the watchdog looks.
    pub watchdog_every: Duration,
}

/// Where ticks come from.
pub enum TickSource {
    /// The configured cron schedule.
    Cron,
    /// Ticks sent by the caller (tests drive the loop directly).
    Manual(mpsc::Sender<Tick>, mpsc::Receiver<Tick>),
}

/// Everything the daemon needs from its caller.
pub struct Setup {
    /// The config and where it came from.
    pub config: ConfigSource,
    /// Business time and wall time.
    pub clocks: Clocks,
    /// Stop and reload requests.
    pub signals: Signals,
    /// Where ticks come from.
    pub ticks: Ticks,
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
    /// The loop; ends after the stop signal fires.
    pub task: tokio::task::JoinHandle<Result<(), LedgerError>>,
}

/// Opens the ledger, connects the accounts, starts the admin server, and starts the loop.
pub async fn start(setup: Setup) -> Result<Running, DaemonError> {
    let Setup {
        config: ConfigSource { config, path, env },
        clocks,
        signals,
        ticks,
        admin_listener,
        passes,
    } = setup;
    let token = admin::auth::configured_token(config.admin.bearer_token_file.as_deref(), &env)?;
    let metrics = Arc::new(Metrics::new(clocks.business.clone()));
    let (ledger, leadership) = open_ledger(&config, &env, &metrics).map_err(|e| *e)?;
    let ledger = Arc::new(ledger);
    let base = EngineBase {
        ledger: ledger.clone(),
        metrics: metrics.clone(),
        clock: clocks.business.clone(),
        cancel: CancellationToken::new(),
    };
    let engine = Arc::new(Engine::connect(config, &env, base).await?);
    let interval = publish_schedule(&engine, clocks.wall.now());
    let health = Arc::new(Health::new(interval, ledger.source_successes()?));
    let reader = match leadership {
        Some(_) => ledger.clone(),
        None => Ledger::open_read_only(&engine.config.state_dir)?
            .map(Arc::new)
            .unwrap_or_else(|| ledger.clone()),
    };
    if leadership.is_some() {
        health.set_standby(Some(Ok(())));
    }
    let serving = Serving {
        ledger: reader,
        health: health.clone(),
        guard: admin::auth::Guard::new(token),
        listener: admin_listener,
    };
    let admin = AdminServer::start(&engine, serving).await?;
    let admin_addr = admin.addr;
    let config = &engine.config;
    tracing::info!(admin = %admin_addr, schedule = %config.schedule.text, timezone = %config.timezone,
        state = %config.state_dir.display(), dry_run = config.dry_run, "ecs-renewd started");
    let service = Service::new(
        engine,
        Reloader { path, env },
        (clocks.wall, signals),
        ticks,
        (health, admin),
        passes,
        leadership,
    );
    Ok(Running {
        admin_addr,
        metrics,
        ledger,
        task: tokio::spawn(service.run()),
    })
}

/// The configured ledger: SQLite (its lock on the state directory, held until the process
/// ends, is its term: it leads alone), or a shared PostgreSQL one and the lease to campaign for.
fn open_ledger(
    config: &Config,
    env: &Environment,
    metrics: &Arc<Metrics>,
) -> Result<(Ledger, Option<leadership::Leadership>), Box<DaemonError>> {
    let fail = |error: DaemonError| Box::new(error);
    match &config.ledger {
        crate::config::LedgerLocation::Sqlite => {
            let ledger = Ledger::open(&config.state_dir).map_err(|e| fail(e.into()))?;
            metrics.leadership.lead_alone();
            Ok((ledger, None))
        }
        crate::config::LedgerLocation::Postgres { url, pool_size } => {
            let url = url.read(env).map_err(|e| fail(e.into()))?;
            let timeouts = crate::ledger::postgres::SessionTimeouts::default();
            let ledger = Ledger::open_postgres(url.expose(), timeouts, *pool_size)
                .map_err(|e| fail(e.into()))?;
            let leadership = leadership::Leadership::new(url, config.ha, metrics.clone());
            Ok((ledger, Some(leadership)))
        }
    }
}

/// The config's dry-run flag and cadence as metrics; returns the cadence.
fn publish_schedule(engine: &Engine, now: DateTime<Utc>) -> Duration {
    let config = &engine.config;
    let interval = typical_interval(&config.schedule, config.timezone, now);
    engine.metrics.dry_run.set(i64::from(config.dry_run));
    engine
        .metrics
        .schedule_interval_seconds
        .set(interval.as_secs_f64());
    interval
}
