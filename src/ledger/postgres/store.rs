//! The PostgreSQL ledger's connection behind the ledger's synchronous facade: one session
//! (with [`SessionTimeouts`]) whose driver runs on a runtime thread of the ledger's own, the
//! statements prepared once per session, every write in one transaction that first checks the
//! lease (when this process holds one: [`PgStore::lead`]) — a write fenced out keeps nothing —
//! and a session that ended made again on the next call, never a half-done write.
//!
//! Calls wait for their futures on the calling thread (`sql::block_on`), so the facade works
//! from plain threads and from the daemon's runtime alike.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio_postgres::Statement;

use super::lease::{Fenced, LeaseError, Term, fence};
use super::migrations::{MigrateError, migrate};
use super::session::{Session, SessionError, SessionTimeouts};
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
}

/// A session and the statements prepared on it.
struct Connected {
    session: Session,
    statements: HashMap<String, Statement>,
}

/// The PostgreSQL ledger's connection.
pub struct PgStore {
    /// The URL; it may hold a password, so it is never shown (`Debug` leaves it out).
    url: String,
    timeouts: SessionTimeouts,
    /// Where the database is (hosts and ports, never the password), for messages.
    target: String,
    runtime: Option<tokio::runtime::Runtime>,
    /// The pool: `pool_size` sessions, each made when first needed (and again when it ended).
    pool: Vec<Mutex<Option<Connected>>>,
    /// Where a caller that finds every session busy waits.
    next: std::sync::atomic::AtomicUsize,
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

/// A slot of the pool. A panic while holding a session leaves at worst an open transaction,
/// which the server rolls back when the next call finds the session closed or reuses it.
fn lock(slot: &Mutex<Option<Connected>>) -> MutexGuard<'_, Option<Connected>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
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
        let target = super::session::target(url)?;
        let store = PgStore {
            url: url.to_owned(),
            timeouts,
            target,
            runtime: Some(runtime),
            pool: (0..pool_size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
            leading: Mutex::new(None),
        };
        let mut connected = store.connect()?;
        block_on(migrate(&mut connected.session.client))?;
        *lock(&store.pool[0]) = Some(connected);
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

    fn connect(&self) -> Result<Connected, SessionError> {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the store");
        let (url, timeouts) = (self.url.clone(), self.timeouts);
        // The session's driver task is spawned where it connects: on the ledger's runtime.
        let session =
            block_on(runtime.spawn(async move { Session::connect(&url, timeouts).await }))
                .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))?;
        Ok(Connected {
            session,
            statements: HashMap::new(),
        })
    }

    /// A session of the pool: a free one, else the next in turn (waiting for it).
    fn connection(&self) -> MutexGuard<'_, Option<Connected>> {
        for slot in &self.pool {
            if let Ok(guard) = slot.try_lock() {
                return guard;
            }
        }
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.pool[turn % self.pool.len()])
    }

    /// Runs `work` in one transaction, fenced by the lease when this process holds one (a
    /// write), and commits it; any failure keeps nothing.
    pub fn transaction<T>(
        &self,
        fenced: bool,
        work: impl FnOnce(&mut Tx<'_>) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.connection();
        if guard.as_ref().is_none_or(|c| c.session.client.is_closed()) {
            *guard = None;
            let connected = self
                .connect()
                .map_err(|e| DbError::Connection(e.to_string()))?;
            *guard = Some(connected);
        }
        let Connected {
            session,
            statements,
        } = guard.as_mut().expect("connected above");
        let tx = block_on(session.client.transaction()).map_err(DbError::from)?;
        if fenced && let Some(term) = self.term() {
            block_on(fence(&tx, &term)).map_err(|e| match e {
                LeaseError::Database { source, .. } => StoreError::Db(source.into()),
                LeaseError::Lost(fenced) => StoreError::Fenced(fenced),
            })?;
        }
        let value = work(&mut Tx::Postgres {
            tx: &tx,
            statements,
        })?;
        block_on(tx.commit()).map_err(DbError::from)?;
        Ok(value)
    }
}
