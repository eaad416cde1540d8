//! The durable ledger (SQLite, WAL, `synchronous=FULL`) of every money-moving intent and
//! outcome, in the state directory: renewal intents written before RenewInstance is sent, each
//! attempt's result, per-instance backoff, auto-renew changes, spend per day and currency,
//! passes, source health and the latest status snapshot. One writer per state directory
//! (`lock`); readers (`status`, `history`, `plan`) open it read-only.
//!
//! One concern per file, each an `impl Ledger` block with the records it reads and writes:
//! `renewals` (intents and attempts; the statements in `intents`), `history` (what `decide`
//! and `history` read), `auto_renew`, `spend` (what the day's belts count), `passes` (passes
//! and sources), `status` (the status table) and `status_lines` (its pages and the report).
//!
//! # Calling the ledger from async code
//! Its calls are synchronous (SQLite, each a transaction synced to disk). Where other work
//! shares the caller's task or thread — the renewal path, where every source's renewals run in
//! one task; the admin server's reads; the memory trim after a pass — the call goes through
//! [`Ledger::blocking`], which runs it on the blocking pool. Elsewhere in a pass it is called
//! inline: the pass is one task, and each call is a single transaction.

mod auto_renew;
mod checkpoint;
mod funds_holds;
mod group_commit;
mod history;
mod intents;
mod lock;
mod migrations;
mod passes;
pub mod postgres;
mod renewals;
mod rows;
mod spend;
pub(crate) mod sql;
mod status;
mod status_lines;
mod status_writer;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

pub use auto_renew::{AutoRenewAnswer, ChangeCheck, PendingAutoRenew, UncheckedChange};
pub use funds_holds::FundsHold;
pub use history::{Histories, HistoryEntry, OpenIntent, RecordKind, RecordStatus, TokenRecord};
pub use intents::StoredIntent;
pub use lock::{LOCK_FILE, LockError, StateLock};
pub use passes::PassRecord;
pub use renewals::{FailureRecord, NewIntent, Settle, Settlement};
pub use spend::{DayTotals, UnpricedCharge};
pub use status::{MetricRow, StatusRow, StatusUpdate};

pub use sql::{DbError, Engine};

use checkpoint::Checkpointer;
use group_commit::CommitQueue;
use sql::{Tx, args};
pub use status_lines::{LastPass, SourceStatus, StatusCursor, StatusQuery, StatusReport};
pub use status_writer::StatusWriter;

/// The ledger's file name in the state directory.
pub const LEDGER_FILE: &str = "ledger.db";

/// Why the ledger cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The state directory cannot be created or used.
    #[error(
        "state directory {path}: {source} — create it and make it writable by the daemon's user (or set state_dir / ECS_RENEWD_STATE_DIR)"
    )]
    StateDir {
        /// The state directory's path, as passed to `Ledger::open`.
        path: String,
        /// The I/O error from creating the directory.
        #[source]
        source: std::io::Error,
    },
    /// Another writer holds the state directory.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The file is not a usable SQLite database.
    #[error(
        "ledger {path} cannot be opened: {source} — if the file is damaged, stop the daemon and restore it from a backup (see docs/operations.md, The ledger and its backup)"
    )]
    Open {
        /// Path of the ledger database file (`ledger.db` in the state directory).
        path: String,
        /// The SQLite error from opening the file, setting its pragmas or reading its version.
        #[source]
        source: rusqlite::Error,
    },
    /// Written by a newer ecs-renewd.
    #[error(
        "ledger {path} has schema version {found}, newer than this ecs-renewd supports ({supported}): upgrade ecs-renewd, or restore a backup made by this version"
    )]
    FutureVersion {
        /// Path of the ledger database file that carries the newer schema.
        path: String,
        /// Its version.
        found: u32,
        /// The newest schema version this build reads and writes (its number of migrations).
        supported: u32,
    },
    /// A write failed (a full disk, an I/O error, a database that went away): nothing of it
    /// was kept.
    #[error(
        "ledger write failed while {what}: {source} — the pass stops; an open renewal keeps its token and is settled or resent with that token next pass, never charged under a new one; check free space and the state directory"
    )]
    Write {
        /// What was being written.
        what: &'static str,
        /// The engine's error that made the write fail.
        #[source]
        source: DbError,
    },
    /// A write of a replica that no longer leads: rolled back, nothing of it kept.
    #[error("ledger write while {what} refused: {source}")]
    Fenced {
        /// What was being written.
        what: &'static str,
        /// Which term was fenced out.
        #[source]
        source: postgres::Fenced,
    },
    /// This process may not send a charge now: it does not lead, or its lease might lapse
    /// while the request is out.
    #[error(
        "no RenewInstance sent: {why} — this process stops acting and restarts as a standby; the renewal's intent keeps its token and is resent with it by the leader"
    )]
    NotLeading {
        /// Why.
        why: String,
    },
    /// The leader lease was lost (taken by another replica, or not renewed within the
    /// deadline): this process stops acting.
    #[error("{reason}")]
    LeaseLost {
        /// What the keeper said.
        reason: String,
    },
    /// The PostgreSQL ledger could not be opened (unreachable, login refused, schema).
    #[error("the ledger's database ({target}): {source}")]
    Database {
        /// Hosts and ports (never the password).
        target: String,
        /// Why.
        #[source]
        source: postgres::OpenError,
    },
    /// The daemon stopped before a write handed to the blocking pool could run.
    #[error(
        "ledger write while {what} did not run: the daemon is stopping, and nothing of it was kept — an open renewal keeps its token and is settled or resent with that token next pass"
    )]
    Interrupted {
        /// What was to be written.
        what: &'static str,
    },
    /// A value in the ledger that this build cannot understand (changed by hand or by
    /// another program, or damaged): the pass stops rather than misread a money record.
    #[error(
        "ledger {path}: table {table}, row {row}: column {column} holds {value:?}, which this ecs-renewd cannot read — the pass stops rather than guess; if the file was edited or damaged, stop the daemon and restore it from a backup (see docs/operations.md, The ledger and its backup), or correct the row with sqlite3"
    )]
    Unreadable {
        /// Path of the ledger database file the value was read from.
        path: String,
        /// The table the value was read from, e.g. `intents`.
        table: &'static str,
        /// The row's key.
        row: String,
        /// The column that holds the value, e.g. `old_expiry`.
        column: &'static str,
        /// What it holds (cut to 80 characters).
        value: String,
    },
    /// A read failed.
    #[error("ledger read failed while {what}: {source}")]
    Read {
        /// What was being read.
        what: &'static str,
        /// The engine's error that made the read fail.
        #[source]
        source: DbError,
    },
}

impl LedgerError {
    /// Whether this error means the process no longer leads a shared ledger (fenced, the
    /// lease lost, or a charge it may not send): it stops and restarts as a standby, exit 75.
    pub fn ends_the_term(&self) -> bool {
        matches!(
            self,
            LedgerError::Fenced { .. }
                | LedgerError::NotLeading { .. }
                | LedgerError::LeaseLost { .. }
        )
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A scratch copy of a ledger (`Ledger::scratch_copy`), removed with it.
#[derive(Debug)]
pub struct Scratch {
    /// The copy, writable.
    pub ledger: std::sync::Arc<Ledger>,
    /// Its directory, removed when the copy is dropped.
    _dir: tempfile::TempDir,
}

/// The SQLite side of a ledger.
#[derive(Debug)]
struct SqliteStore {
    conn: Mutex<Connection>,
    /// Renewal records written concurrently by different sources share commits.
    commits: CommitQueue,
    /// Checkpoints the log beside the writer (writers only).
    checkpoints: Option<Checkpointer>,
    _lock: Option<StateLock>,
}

/// Where the ledger's rows are. One per process, so the sizes of the two do not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Store {
    /// A SQLite file in the state directory (one process).
    Sqlite(SqliteStore),
    /// A PostgreSQL database shared by replicas.
    Postgres(postgres::PgStore),
}

/// The ledger, on SQLite (a state directory, opened for writing (locked) or read-only) or on
/// PostgreSQL; callers do not learn which.
#[derive(Debug)]
pub struct Ledger {
    store: Store,
    /// The SQLite file, or the database's hosts and ports: what messages name.
    path: PathBuf,
}

impl Ledger {
    /// Opens the ledger for writing: creates the state directory if needed, takes the lock,
    /// applies migrations.
    pub fn open(state_dir: &Path) -> Result<Ledger, LedgerError> {
        std::fs::create_dir_all(state_dir).map_err(|source| LedgerError::StateDir {
            path: state_dir.display().to_string(),
            source,
        })?;
        let lock = StateLock::acquire(state_dir)?;
        let path = state_dir.join(LEDGER_FILE);
        let open_error = |source| LedgerError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(&path).map_err(open_error)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )
        .map_err(open_error)?;
        // Room for every statement a pass runs (about forty): a smaller cache evicts and
        // re-parses the renewal path's statements on every renewal.
        conn.set_prepared_statement_cache_capacity(64);
        let checkpoints = Checkpointer::start(&path).map_err(open_error)?;
        // Checkpoints run on their own thread (`checkpoint`), never inside a commit; the log
        // is cut back to 8 MiB once checkpointed.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 8388608;")
            .map_err(open_error)?;
        let ledger = Ledger {
            store: Store::Sqlite(SqliteStore {
                conn: Mutex::new(conn),
                commits: CommitQueue::default(),
                checkpoints: Some(checkpoints),
                _lock: Some(lock),
            }),
            path,
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    /// Opens the ledger in the PostgreSQL database at `url` (libpq key=value pairs or a
    /// `postgresql://` URI) with `timeouts` and up to `pool_size` sessions, and brings its
    /// schema up to date. Replicas share it; writes are fenced by the lease once this process
    /// holds one ([`Ledger::lead`]).
    pub fn open_postgres(
        url: &str,
        timeouts: postgres::SessionTimeouts,
        pool_size: usize,
    ) -> Result<Ledger, LedgerError> {
        let store = postgres::PgStore::open(url, timeouts, pool_size).map_err(|source| {
            LedgerError::Database {
                target: postgres::target(url).unwrap_or_else(|_| "?".into()),
                source,
            }
        })?;
        Ok(Ledger {
            path: PathBuf::from(format!("postgresql ledger at {}", store.target())),
            store: Store::Postgres(store),
        })
    }

    /// Fences every later write by `leading`'s term (PostgreSQL; `None` ends it). A SQLite
    /// ledger has one writer, its lock holder, and needs no fence.
    pub fn lead(&self, leading: Option<postgres::Leading>) {
        if let Store::Postgres(store) = &self.store {
            store.lead(leading);
        }
    }

    /// Whether a RenewInstance that may take `request_timeout` may be sent now: always on
    /// SQLite (the state directory's lock is the term for the life of the process); on
    /// PostgreSQL only while this process leads and the request would end before its renew
    /// deadline ([`postgres::PgStore::may_send`]). A refusal is [`LedgerError::NotLeading`].
    pub fn may_send(&self, request_timeout: std::time::Duration) -> Result<(), LedgerError> {
        match &self.store {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(store) => store
                .may_send(request_timeout)
                .map_err(|why| LedgerError::NotLeading { why }),
        }
    }

    /// Which engine holds the rows.
    pub fn engine(&self) -> Engine {
        match self.store {
            Store::Sqlite(_) => Engine::Sqlite,
            Store::Postgres(_) => Engine::Postgres,
        }
    }

    /// A writable copy of the ledger in `state_dir` (an empty ledger when there is none) in a
    /// directory of its own, removed when the copy is dropped: `plan` runs the pass's phases
    /// over it, so what a pass would write (status lines, a top-up's ended backoffs) changes
    /// nothing of the daemon's. The copy is one consistent snapshot (`VACUUM INTO`), taken
    /// through a read-only connection while the daemon may be writing.
    pub fn scratch_copy(state_dir: &Path) -> Result<Scratch, LedgerError> {
        let dir = tempfile::Builder::new()
            .prefix("ecs-renewd-plan-")
            .tempdir()
            .map_err(|source| LedgerError::StateDir {
                path: std::env::temp_dir().display().to_string(),
                source,
            })?;
        if let Some(reader) = Ledger::open_read_only(state_dir)? {
            let target = dir.path().join(LEDGER_FILE);
            reader
                .conn()
                .execute("VACUUM INTO ?1", [target.display().to_string()])
                .map_err(|source| LedgerError::Read {
                    what: "copying the ledger for plan",
                    source: source.into(),
                })?;
        }
        let ledger = Ledger::open(dir.path())?;
        Ok(Scratch {
            ledger: std::sync::Arc::new(ledger),
            _dir: dir,
        })
    }

    /// Opens an existing ledger read-only (no lock); `None` when there is none yet.
    pub fn open_read_only(state_dir: &Path) -> Result<Option<Ledger>, LedgerError> {
        let path = state_dir.join(LEDGER_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let open_error = |source| LedgerError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_error)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(open_error)?;
        let ledger = Ledger {
            store: Store::Sqlite(SqliteStore {
                conn: Mutex::new(conn),
                commits: CommitQueue::default(),
                checkpoints: None,
                _lock: None,
            }),
            path,
        };
        let version = ledger.version()?;
        if version > migrations::current_version() {
            return Err(LedgerError::FutureVersion {
                path: ledger.path.display().to_string(),
                found: version,
                supported: migrations::current_version(),
            });
        }
        Ok(Some(ledger))
    }

    /// Path of the ledger database file (`ledger.db` in the state directory), or where the
    /// PostgreSQL ledger is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SQLite connection. Only SQLite's own upkeep (its version, migrations, copies,
    /// cache) calls it; statements go through [`Ledger::write`] and [`Ledger::read`].
    fn conn(&self) -> MutexGuard<'_, Connection> {
        match &self.store {
            // A panic while holding the connection cannot leave a transaction half-committed
            // (SQLite rolls back an unfinished one), so the connection stays usable.
            Store::Sqlite(store) => store.conn.lock().unwrap_or_else(|p| p.into_inner()),
            Store::Postgres(_) => {
                unreachable!("SQLite upkeep is never asked of a PostgreSQL ledger")
            }
        }
    }

    fn sqlite(&self) -> Option<&SqliteStore> {
        match &self.store {
            Store::Sqlite(store) => Some(store),
            Store::Postgres(_) => None,
        }
    }

    fn version(&self) -> Result<u32, LedgerError> {
        self.conn()
            .query_row("PRAGMA user_version", [], |row| row.get::<_, u32>(0))
            .map_err(|source| LedgerError::Open {
                path: self.path.display().to_string(),
                source,
            })
    }

    fn migrate(&self) -> Result<(), LedgerError> {
        let found = self.version()?;
        let supported = migrations::current_version();
        if found > supported {
            return Err(LedgerError::FutureVersion {
                path: self.path.display().to_string(),
                found,
                supported,
            });
        }
        let fail = |source: rusqlite::Error| LedgerError::Write {
            what: "migrating the ledger",
            source: source.into(),
        };
        let mut conn = self.conn();
        for (index, sql) in migrations::MIGRATIONS
            .iter()
            .enumerate()
            .skip(found as usize)
        {
            let tx = conn.transaction().map_err(fail)?;
            tx.execute_batch(sql).map_err(fail)?;
            tx.pragma_update(None, "user_version", index as u32 + 1)
                .map_err(fail)?;
            tx.commit().map_err(fail)?;
        }
        Ok(())
    }

    /// Runs `write` in one transaction and commits it; any failure keeps nothing of it. On
    /// PostgreSQL the transaction first checks the lease when this process holds one: a
    /// replica that no longer leads writes nothing ([`LedgerError::Fenced`]).
    fn write<T>(
        &self,
        what: &'static str,
        write: impl FnOnce(&mut Tx<'_>) -> Result<T, DbError>,
    ) -> Result<T, LedgerError> {
        self.transaction(what, true, write, |source| LedgerError::Write {
            what,
            source,
        })
    }

    /// [`Ledger::write`] for operational records — status lines, passes, source scans — which
    /// the next pass writes again: on PostgreSQL their commit does not wait for the server's
    /// disk (`synchronous_commit = off` for the transaction; a crash loses at most the last
    /// fraction of a second of them, never a money record, and never out of order). SQLite
    /// syncs them as every write.
    fn write_operational<T>(
        &self,
        what: &'static str,
        write: impl FnOnce(&mut Tx<'_>) -> Result<T, DbError>,
    ) -> Result<T, LedgerError> {
        self.write(what, |tx| {
            if tx.engine() == Engine::Postgres {
                tx.exec("SET LOCAL synchronous_commit = off", args![])?;
            }
            write(tx)
        })
    }

    /// Runs the reads of `read` on one connection (one snapshot on PostgreSQL).
    fn read<T>(
        &self,
        what: &'static str,
        read: impl FnOnce(&mut Tx<'_>) -> Result<T, DbError>,
    ) -> Result<T, LedgerError> {
        match &self.store {
            Store::Sqlite(_) => read(&mut Tx::Sqlite(&self.conn()))
                .map_err(|source| LedgerError::Read { what, source }),
            Store::Postgres(_) => self.transaction(what, false, read, |source| LedgerError::Read {
                what,
                source,
            }),
        }
    }

    fn transaction<T>(
        &self,
        what: &'static str,
        fenced: bool,
        work: impl FnOnce(&mut Tx<'_>) -> Result<T, DbError>,
        failed: impl Fn(DbError) -> LedgerError,
    ) -> Result<T, LedgerError> {
        match &self.store {
            Store::Sqlite(store) => {
                let mut conn = self.conn();
                let tx = conn.transaction().map_err(|e| failed(e.into()))?;
                let value = match work(&mut Tx::Sqlite(&tx)) {
                    Ok(value) => value,
                    Err(error) => return Err(failed(error)),
                };
                tx.commit().map_err(|e| failed(e.into()))?;
                drop(conn);
                if let Some(checkpoints) = &store.checkpoints {
                    checkpoints.committed(1);
                }
                Ok(value)
            }
            Store::Postgres(store) => {
                store
                    .transaction(fenced, work)
                    .map_err(|error| match error {
                        postgres::StoreError::Db(source) => failed(source),
                        postgres::StoreError::Fenced(source) => {
                            LedgerError::Fenced { what, source }
                        }
                    })
            }
        }
    }

    /// Counts commits towards the next background checkpoint (SQLite).
    fn committed(&self, weight: u32) {
        if let Some(checkpoints) = self.sqlite().and_then(|s| s.checkpoints.as_ref()) {
            checkpoints.committed(weight);
        }
    }

    /// Asks for the log to be checkpointed now, in the background (after a pass; SQLite).
    pub fn checkpoint_soon(&self) {
        if let Some(checkpoints) = self.sqlite().and_then(|s| s.checkpoints.as_ref()) {
            checkpoints.request();
        }
    }

    /// [`Ledger::write`] for the writes sources make concurrently while renewing: on SQLite,
    /// writes made at the same moment share one transaction (one sync to disk), each in its
    /// own savepoint, and each returns only once the commit holding it has succeeded. On
    /// PostgreSQL each is its own fenced transaction.
    fn write_shared<T, F>(&self, what: &'static str, write: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, DbError> + Send + 'static,
    {
        let Some(store) = self.sqlite() else {
            return self.write(what, write);
        };
        let value = store
            .commits
            .write(
                || self.conn(),
                move |tx| write(&mut Tx::Sqlite(tx)).map_err(sql::into_sqlite),
            )
            .map_err(|source| LedgerError::Write {
                what,
                source: sql::from_sqlite(source),
            })?;
        self.committed(1);
        Ok(value)
    }

    /// Runs `call` on the blocking pool and waits for it (see the module's notes). A panic in
    /// `call` is resumed here (the admin server and the memory trim catch it: their work is
    /// not worth ending the daemon for); a call cut short because the runtime is stopping is
    /// [`LedgerError::Interrupted`], naming `what`.
    pub async fn blocking<T, F>(
        self: &std::sync::Arc<Self>,
        what: &'static str,
        call: F,
    ) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
    {
        let ledger = std::sync::Arc::clone(self);
        match tokio::task::spawn_blocking(move || call(&ledger)).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(LedgerError::Interrupted { what }),
        }
    }

    /// Closes the PostgreSQL pool's idle sessions while the daemon idles after a pass (their
    /// read and write buffers hold the pass's largest statements); SQLite has none.
    pub fn close_idle_sessions(&self) {
        if let Store::Postgres(store) = &self.store {
            store.close_idle_sessions();
        }
    }

    /// Releases the connection's page cache (after a pass, or a scrape of a large fleet).
    pub fn shrink_memory(&self) {
        if self.sqlite().is_none() {
            return;
        }
        if let Err(error) = self.conn().execute_batch("PRAGMA shrink_memory;") {
            tracing::debug!(%error, "shrinking the ledger's cache failed");
        }
    }
}

#[cfg(test)]
mod tests;
