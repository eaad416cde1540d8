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

use checkpoint::Checkpointer;
use group_commit::CommitQueue;
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
    /// A write failed (a full disk, an I/O error): nothing of it was kept.
    #[error(
        "ledger write failed while {what}: {source} — the pass stops; an open renewal keeps its token and is settled or resent with that token next pass, never charged under a new one; check free space and the state directory"
    )]
    Write {
        /// What was being written.
        what: &'static str,
        /// The SQLite error that made the write fail.
        #[source]
        source: rusqlite::Error,
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
        /// The SQLite error that made the read fail.
        #[source]
        source: rusqlite::Error,
    },
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Runs a statement kept prepared on the connection: the renewal path runs the same few
/// statements for every renewal, and parsing them each time costs more than running them.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// [`exec`] for a query that returns one row.
fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, row)
}

/// A scratch copy of a ledger (`Ledger::scratch_copy`), removed with it.
#[derive(Debug)]
pub struct Scratch {
    /// The copy, writable.
    pub ledger: std::sync::Arc<Ledger>,
    /// Its directory, removed when the copy is dropped.
    _dir: tempfile::TempDir,
}

/// The SQLite ledger in a state directory, opened for writing (locked) or read-only.
#[derive(Debug)]
pub struct Ledger {
    conn: Mutex<Connection>,
    /// Renewal records written concurrently by different sources share commits.
    commits: CommitQueue,
    /// Checkpoints the log beside the writer (writers only).
    checkpoints: Option<Checkpointer>,
    path: PathBuf,
    _lock: Option<StateLock>,
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
            conn: Mutex::new(conn),
            commits: CommitQueue::default(),
            checkpoints: Some(checkpoints),
            path,
            _lock: Some(lock),
        };
        ledger.migrate()?;
        Ok(ledger)
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
                    source,
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
            conn: Mutex::new(conn),
            commits: CommitQueue::default(),
            checkpoints: None,
            path,
            _lock: None,
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

    /// Path of the ledger database file (`ledger.db` in the state directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the connection cannot leave a transaction half-committed
        // (SQLite rolls back an unfinished one), so the connection stays usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut conn = self.conn();
        for (index, sql) in migrations::MIGRATIONS
            .iter()
            .enumerate()
            .skip(found as usize)
        {
            let tx = conn.transaction().map_err(|source| LedgerError::Write {
                what: "migrating the ledger",
                source,
            })?;
            tx.execute_batch(sql).map_err(|source| LedgerError::Write {
                what: "migrating the ledger",
                source,
            })?;
            tx.pragma_update(None, "user_version", index as u32 + 1)
                .map_err(|source| LedgerError::Write {
                    what: "migrating the ledger",
                    source,
                })?;
            tx.commit().map_err(|source| LedgerError::Write {
                what: "migrating the ledger",
                source,
            })?;
        }
        Ok(())
    }

    /// Runs `write` in one transaction and commits it; any failure keeps nothing of it.
    fn in_transaction<T>(
        &self,
        what: &'static str,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let fail = |source| LedgerError::Write { what, source };
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(fail)?;
        let value = write(&tx).map_err(fail)?;
        tx.commit().map_err(fail)?;
        drop(conn);
        self.committed(1);
        Ok(value)
    }

    /// Counts commits towards the next background checkpoint.
    fn committed(&self, weight: u32) {
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.committed(weight);
        }
    }

    /// Asks for the log to be checkpointed now, in the background (after a pass).
    pub fn checkpoint_soon(&self) {
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.request();
        }
    }

    /// [`Ledger::in_transaction`] for the writes sources make concurrently while renewing:
    /// writes made at the same moment share one transaction (one sync to disk), each in its own
    /// savepoint, and each returns only once the commit holding it has succeeded.
    fn in_shared_transaction<T, F>(&self, what: &'static str, write: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let value = self
            .commits
            .write(|| self.conn(), write)
            .map_err(|source| LedgerError::Write { what, source })?;
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

    /// Releases the connection's page cache (after a pass, or a scrape of a large fleet).
    pub fn shrink_memory(&self) {
        if let Err(error) = self.conn().execute_batch("PRAGMA shrink_memory;") {
            tracing::debug!(%error, "shrinking the ledger's cache failed");
        }
    }
}

#[cfg(test)]
mod tests;
