//! The PostgreSQL ledger's connections behind the ledger's synchronous facade: a
//! `deadpool-postgres` pool of sessions (with [`SessionTimeouts`]) whose drivers run on a
//! runtime thread of the ledger's own, statements prepared once per session (the pool's
//! statement cache), every write in one transaction that first checks the lease (when this
//! process holds one: [`PgStore::lead`]) — a write fenced out keeps nothing — and a session
//! that ended replaced on the next call (the pool's recycling check), never a half-done write.
//!
//! Calls wait for their futures on the calling thread (`sql::block_on`), so the facade works
//! from plain threads and from the daemon's runtime alike.

use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::{
    Connect, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Timeouts,
};

use super::lease::{Fenced, LeaseError, Term, fence};
use super::migrations::{MigrateError, migrate};
use super::session::{SessionError, SessionTimeouts, Target};
use crate::ledger::sql::{DbError, Tx, block_on};
use crate::policy::lease::HaTimings;

/// Why a PostgreSQL ledger call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A statement, or the connection, failed: nothing of the call was kept.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The lease is no longer this process's: another replica leads.
    #[error(transparent)]
    Fenced(Fenced),
}

/// Why a PostgreSQL ledger could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No session could be had.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The schema could not be brought up to date.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The ledger's runtime thread could not be started.
    #[error("starting the ledger's database thread: {0}")]
    Runtime(std::io::Error),
    /// The pool could not be built.
    #[error("building the ledger's database pool: {0}")]
    Pool(String),
}

/// The PostgreSQL ledger's connection.
pub struct PgStore {
    /// Where the database is (hosts and ports, never the password), for messages.
    target: String,
    runtime: Option<tokio::runtime::Runtime>,
    /// Up to `pool_size` sessions, each made when first needed (and again when it ended).
    pool: Pool,
    /// How long a caller may wait for a session of the pool (every one busy or connecting).
    wait: Duration,
    leading: Mutex<Option<Leading>>,
}

/// This process's term on the shared ledger, and what says whether a charge may still leave.
#[derive(Debug, Clone)]
pub struct Leading {
    /// The term every write is fenced by.
    pub term: Term,
    /// When the last successful renewal of the lease began (the keeper publishes it).
    pub renewed: tokio::sync::watch::Receiver<tokio::time::Instant>,
    /// The lease's timings.
    pub timings: HaTimings,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropped from async code too (the daemon ending): a runtime must not be shut down
        // by waiting there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Makes the pool's sessions from the ledger's [`Target`], so they have the same settings,
/// TLS and driver as the lease's own session.
struct Sessions(Target);

impl Connect for Sessions {
    fn connect(
        &self,
        _: &tokio_postgres::Config,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>,
    > {
        Box::pin(self.0.connect())
    }
}

impl PgStore {
    /// Connects to `url` and brings the schema up to date; up to `pool_size` sessions are used
    /// at once (concurrent sources write in parallel, and the admin server reads meanwhile).
    pub fn open(
        url: &str,
        timeouts: SessionTimeouts,
        pool_size: usize,
    ) -> Result<PgStore, OpenError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ledger-postgres")
            .enable_all()
            .build()
            .map_err(OpenError::Runtime)?;
        let sessions = Target::new(url, timeouts)?;
        let target = sessions.described().to_owned();
        // A session is checked only for being closed when it is taken from the pool: a
        // statement on a session the server ended fails, and keeps nothing, anyway.
        let manager = Manager::from_connect(
            tokio_postgres::Config::new(),
            Sessions(sessions),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Long enough for one busy session's statement to end and another to be made.
        let wait = timeouts.statement + timeouts.connect;
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(wait),
                create: Some(timeouts.connect + Duration::from_secs(1)),
                recycle: None,
            })
            .build()
            .map_err(|e| OpenError::Pool(e.to_string()))?;
        let store = PgStore {
            target,
            runtime: Some(runtime),
            pool,
            wait,
            leading: Mutex::new(None),
        };
        let mut session = store.session()?;
        block_on(migrate(&mut session))?;
        drop(session);
        Ok(store)
    }

    /// Where the database is (hosts and ports), for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// From now on every write first checks that `leading`'s term still holds the lease;
    /// `None` ends that (a standby, or a process that resigned, writes nothing that needs it).
    pub fn lead(&self, leading: Option<Leading>) {
        *self.leading.lock().unwrap_or_else(|p| p.into_inner()) = leading;
    }

    /// The term writes are fenced by, if any.
    pub fn term(&self) -> Option<Term> {
        self.leading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| l.term.clone())
    }

    /// Whether a request that may take `request_timeout` may leave now: only while this
    /// process leads, and only if it would end before the renew deadline counted from the last
    /// successful renewal (`HaTimings::may_send`): by then the term is renewed again or this
    /// process has stopped acting, so no other leader acts while the request is out.
    pub fn may_send(&self, request_timeout: std::time::Duration) -> Result<(), String> {
        let leading = self.leading.lock().unwrap_or_else(|p| p.into_inner());
        let Some(leading) = leading.as_ref() else {
            return Err("this process does not hold the leader lease".into());
        };
        let renewed = *leading.renewed.borrow();
        let now = tokio::time::Instant::now();
        if leading.timings.may_send(renewed, now, request_timeout) {
            Ok(())
        } else {
            Err(format!(
                "the lease was last renewed {:?} ago; a request of up to {request_timeout:?} could outlast the renew deadline ({:?})",
                now.saturating_duration_since(renewed),
                leading.timings.renew_deadline
            ))
        }
    }

    /// A session of the pool: a free one, else a new one while fewer than `pool_size` are
    /// open, else the first to come free (waiting up to `wait`). Made and waited for within
    /// the ledger's runtime, so connections and their drivers live there.
    fn session(&self) -> Result<Object, SessionError> {
        let _inside = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the store")
            .enter();
        block_on(self.pool.get()).map_err(|error| {
            let target = self.target.clone();
            match error {
                PoolError::Backend(source) => SessionError::Connect { target, source },
                PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => SessionError::Pool {
                    target,
                    why: format!(
                        "every one of the ledger's {} database sessions stayed busy for {:?} — raise [ledger] pool_size, or check the database for slow statements",
                        self.pool.status().max_size,
                        self.wait
                    ),
                },
                other => SessionError::Pool {
                    target,
                    why: other.to_string(),
                },
            }
        })
    }

    /// Closes the pool's idle sessions (their buffers grew to the pass's largest statements,
    /// and each holds a server process); the next call opens one again.
    pub fn close_idle_sessions(&self) {
        self.pool.retain(|_, _| false);
    }

    /// Runs `work` in one transaction, fenced by the lease when this process holds one (a
    /// write), and commits it; any failure keeps nothing.
    pub fn transaction<T>(
        &self,
        fenced: bool,
        work: impl FnOnce(&mut Tx<'_>) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        let mut session = self
            .session()
            .map_err(|e| DbError::Connection(e.to_string()))?;
        let tx = block_on(session.transaction()).map_err(DbError::from)?;
        if fenced && let Some(term) = self.term() {
            block_on(fence(&tx, &term)).map_err(|e| match e {
                LeaseError::Database { source, .. } => StoreError::Db(source.into()),
                LeaseError::Lost(fenced) => StoreError::Fenced(fenced),
            })?;
        }
        let value = work(&mut Tx::Postgres(&tx))?;
        block_on(tx.commit()).map_err(DbError::from)?;
        Ok(value)
    }
}
