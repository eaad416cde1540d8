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
    connected: Mutex<Option<Connected>>,
    term: Mutex<Option<Term>>,
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

impl PgStore {
    /// Connects to `url` and brings the schema up to date.
    pub fn open(url: &str, timeouts: SessionTimeouts) -> Result<PgStore, OpenError> {
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
            connected: Mutex::new(None),
            term: Mutex::new(None),
        };
        let mut connected = store.connect()?;
        block_on(migrate(&mut connected.session.client))?;
        *store.connection() = Some(connected);
        Ok(store)
    }

    /// Where the database is (hosts and ports), for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// From now on every write first checks that `term` still holds the lease; `None` ends
    /// that (a standby, or a process that resigned, writes nothing that needs it).
    pub fn lead(&self, term: Option<Term>) {
        *self.term.lock().unwrap_or_else(|p| p.into_inner()) = term;
    }

    /// The term writes are fenced by, if any.
    pub fn term(&self) -> Option<Term> {
        self.term.lock().unwrap_or_else(|p| p.into_inner()).clone()
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

    fn connection(&self) -> MutexGuard<'_, Option<Connected>> {
        // A panic while holding the session leaves at worst an open transaction, which the
        // server rolls back when the next call finds the session closed or reuses it.
        self.connected.lock().unwrap_or_else(|p| p.into_inner())
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
