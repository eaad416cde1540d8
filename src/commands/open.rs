//! Opening the configured ledger for a command: SQLite in the state directory, or the
//! PostgreSQL database `[ledger]` names (a URL in a file is read under the secret-file rule:
//! 0600, or in systemd's credentials directory). A command that writes to a shared ledger
//! (`once`) first takes the leader lease, and exits 75 (EX_TEMPFAIL) when another replica
//! holds it or the database cannot be reached: try again later, nothing was sent.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::cloud::credentials::Environment;
use crate::config::{Config, LedgerLocation, LedgerUrl};
use crate::ledger::Ledger;
use crate::ledger::postgres::{Leading, Lease, Session, SessionTimeouts, Term, hold, holder_id};
use crate::secret::Secret;

/// The PostgreSQL ledger's URL, from the config or its file.
pub fn postgres_url(url: &LedgerUrl, env: &Environment) -> Result<Secret, Failure> {
    url.read(env).map_err(Failure::config)
}

/// The ledger for reading (`status`, `history`): `None` when a SQLite one was never written.
pub fn reader(config: &Config, env: &Environment) -> Result<Option<Ledger>, Failure> {
    match &config.ledger {
        LedgerLocation::Sqlite => {
            Ledger::open_read_only(&config.state_dir).map_err(Failure::runtime)
        }
        LedgerLocation::Postgres { url, pool_size } => {
            let url = postgres_url(url, env)?;
            Ledger::open_postgres(url.expose(), SessionTimeouts::default(), *pool_size)
                .map(Some)
                .map_err(Failure::tempfail)
        }
    }
}

/// The term `once` holds on a shared ledger, kept renewed while the pass runs.
pub struct Held {
    lease: Lease,
    term: Term,
    stop: CancellationToken,
    /// Renews the term on the lease's own session; ends with the session, and why the term
    /// was lost if it was.
    keeper: tokio::task::JoinHandle<(Session, Option<String>)>,
}

/// The ledger for one writing pass: SQLite (its lock is the term), or PostgreSQL with the
/// lease taken — every write of the pass fenced by it.
pub async fn writer(config: &Config, env: &Environment) -> Result<(Ledger, Option<Held>), Failure> {
    let (url, pool_size) = match &config.ledger {
        LedgerLocation::Sqlite => {
            let ledger = Ledger::open(&config.state_dir).map_err(Failure::runtime)?;
            return Ok((ledger, None));
        }
        LedgerLocation::Postgres { url, pool_size } => (postgres_url(url, env)?, *pool_size),
    };
    let ledger = Ledger::open_postgres(url.expose(), SessionTimeouts::default(), pool_size)
        .map_err(Failure::tempfail)?;
    let session = Session::connect(url.expose(), SessionTimeouts::default())
        .await
        .map_err(Failure::tempfail)?;
    let lease = Lease {
        holder: holder_id(),
        duration: config.ha.lease_duration,
    };
    let term = match lease.campaign(&session.client).await {
        Ok(Some(term)) => term,
        Ok(None) => {
            return Err(Failure::tempfail(
                "another replica holds the leader lease: this pass would race it, so nothing was done — run again later, or let the leading daemon do it",
            ));
        }
        Err(error) => return Err(Failure::tempfail(error)),
    };
    let (held, renewed) = keep(session, lease, term.clone(), config);
    ledger.lead(Some(Leading {
        term,
        renewed,
        timings: config.ha,
    }));
    Ok((ledger, Some(held)))
}

/// Starts renewing `term` in the background until [`Held::release`]; the receiver says when
/// the last renewal began.
fn keep(
    session: Session,
    lease: Lease,
    term: Term,
    config: &Config,
) -> (Held, watch::Receiver<tokio::time::Instant>) {
    let stop = CancellationToken::new();
    let timings = config.ha;
    let (lease2, term2, stop2) = (lease.clone(), term.clone(), stop.clone());
    let (renewed, receiver) = watch::channel(tokio::time::Instant::now());
    let keeper = tokio::spawn(async move {
        let mut session = session;
        let lost = hold(
            &mut session,
            &lease2,
            &term2,
            timings,
            &renewed,
            &stop2,
            &|_| {},
        )
        .await
        .err()
        .map(|lost| lost.to_string());
        (session, lost)
    });
    let held = Held {
        lease,
        term,
        stop,
        keeper,
    };
    (held, receiver)
}

impl Held {
    /// Stops renewing and gives the lease up (expired at once), so a daemon may take it.
    pub async fn release(self) {
        self.stop.cancel();
        let session = match self.keeper.await {
            Ok((_, Some(lost))) => return tracing::warn!("{lost}"),
            Ok((session, None)) => session,
            Err(_) => return,
        };
        if let Err(error) = self.lease.resign(&session.client, &self.term).await {
            tracing::warn!("giving the leader lease up failed (it expires by itself): {error}");
        }
    }
}
