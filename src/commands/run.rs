//! `ecs-renewd run`: the daemon, with SIGTERM/SIGINT stopping it gracefully and SIGHUP
//! reloading the config.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::clock::SystemClock;
use crate::cloud::credentials::Environment;
use crate::config::Config;
use crate::daemon::{self, Clocks, ConfigSource, DaemonError, Setup, Signals, TickSource, Ticks};

/// Forwards stop signals to `stop` and SIGHUP to `reload`.
pub fn wire_signals(stop: CancellationToken, reload: mpsc::Sender<()>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                tracing::error!("cannot install signal handlers");
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: stopping"); stop.cancel(); }
                    _ = int.recv() => { tracing::info!("SIGINT: stopping"); stop.cancel(); }
                    _ = hup.recv() => { tracing::info!("SIGHUP: reloading the config"); let _ = reload.try_send(()); }
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = reload;
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        }
    });
}

/// Runs the daemon until stopped.
pub async fn run(path: &Path, env: Environment) -> Result<(), Failure> {
    let config = Config::load(path, &env)?;
    let stop = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(1);
    wire_signals(stop.clone(), reload_tx);
    let running = daemon::start(Setup {
        config: ConfigSource {
            config,
            path: path.to_owned(),
            env,
        },
        clocks: Clocks {
            business: Arc::new(SystemClock),
            wall: Arc::new(SystemClock),
        },
        signals: Signals {
            stop,
            reload: reload_rx,
        },
        ticks: Ticks {
            source: TickSource::Cron,
            // A missed fire is caught within a minute past its margin; looking more often would
            // cost idle wake-ups (BENCHMARKS.md).
            watchdog_every: Duration::from_secs(60),
        },
        admin_listener: None,
        passes: None,
    })
    .await
    .map_err(|e| match e {
        DaemonError::Accounts(e) => Failure::config(e),
        DaemonError::AdminToken(e) => Failure::config(e),
        DaemonError::LedgerUrl(e) => Failure::config(e),
        // The shared ledger's database is down or refuses: try again later (systemd and
        // Kubernetes restart the process).
        DaemonError::Ledger(e @ crate::ledger::LedgerError::Database { .. }) => {
            Failure::tempfail(e)
        }
        other => Failure::runtime(other),
    })?;
    match running.task.await {
        Ok(Ok(())) => Ok(()),
        // The term ended (fenced, lost, or a charge it could no longer send): restart as a
        // standby.
        Ok(Err(error)) if error.ends_the_term() => Err(Failure::tempfail(error)),
        Ok(Err(error)) => Err(Failure::runtime(error)),
        Err(error) => Err(Failure::runtime(format!("the daemon loop failed: {error}"))),
    }
}

/// `ecs-renewd healthcheck`: GET /healthz; exit 0 when it answers 200 (for container
/// HEALTHCHECKs, which have no shell or curl).
pub async fn healthcheck(url: Option<String>, env: &Environment) -> Result<(), Failure> {
    let url = url.unwrap_or_else(|| {
        let listen = env
            .get("ECS_RENEWD_ADMIN_LISTEN")
            .unwrap_or("127.0.0.1:9469");
        let port = listen.rsplit(':').next().unwrap_or("9469");
        format!("http://127.0.0.1:{port}/healthz")
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
        .map_err(Failure::runtime)?;
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(Failure::runtime(format!(
            "{url} answered {}",
            response.status()
        ))),
        Err(error) => Err(Failure::runtime(format!("{url}: {}", error.without_url()))),
    }
}
