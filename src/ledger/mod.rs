//! The durable ledger (SQLite, WAL, `synchronous=FULL`) of every money-moving intent and
//! outcome, in the state directory: renewal intents written before RenewInstance is sent, each
//! attempt's result, per-instance backoff, auto-renew changes, spend per day and currency,
//! passes, source health and the latest status snapshot. One writer per state directory
//! (`lock`); readers (`status`, `history`, `plan`) open it read-only.

mod checkpoint;
mod group_commit;
mod intents;
mod lock;
mod migrations;
mod rows;
mod status_lines;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

pub use intents::StoredIntent;
pub use lock::{LOCK_FILE, LockError, StateLock};

use crate::cloud::error::ErrorClass;
use crate::cloud::types::PeriodUnit;
use crate::money::Money;
use crate::policy::{History, HistorySource, IntentStatus, IntentView};
use checkpoint::Checkpointer;
use group_commit::CommitQueue;
pub use status_lines::{LastPass, SourceStatus, StatusCursor, StatusQuery, StatusReport};

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
        "ledger {path} cannot be opened: {source} — if the file is damaged, stop the daemon and restore it from a backup (see README, Backups)"
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
        "ledger {path}: table {table}, row {row}: column {column} holds {value:?}, which this ecs-renewd cannot read — the pass stops rather than guess; if the file was edited or damaged, stop the daemon and restore it from a backup (see README, Backups), or correct the row with sqlite3"
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

/// A renewal about to be made.
#[derive(Debug, Clone)]
pub struct NewIntent {
    /// Name of the config account entry the instance was listed through.
    pub account: String,
    /// The instance's region, e.g. cn-hangzhou (RenewInstance's RegionId).
    pub region: String,
    /// The ECS instance id to renew.
    pub instance_id: String,
    /// The expiry being extended.
    pub old_expiry: DateTime<Utc>,
    /// How many `unit`s to renew for (RenewInstance's Period).
    pub period: u32,
    /// The unit of `period`: Week, Month or Year (RenewInstance's PeriodUnit).
    pub unit: PeriodUnit,
    /// The ClientToken every attempt will carry.
    pub client_token: String,
    /// Name of the policy that called for the renewal, if one matched.
    pub policy: Option<String>,
    /// Why (due, expired, missed_deduction, resume, retry).
    pub why: String,
    /// The quoted price, if priced.
    pub price: Option<Money>,
}

/// What the service answered for a failed or unknown attempt.
#[derive(Debug, Clone)]
pub struct FailureRecord {
    /// Error code or kind.
    pub code: String,
    /// The failure class, which decides the backoff and labels metrics and alerts.
    pub class: ErrorClass,
    /// Message (secrets are never in it: the client scrubs them).
    pub message: String,
    /// Request id, if any.
    pub request_id: Option<String>,
}

/// An intent whose outcome is not final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIntent {
    /// Row id.
    pub id: i64,
    /// Name of the config account entry the intent was written under.
    pub account: String,
    /// The instance's region, e.g. cn-hangzhou.
    pub region: String,
    /// The ECS instance id the intent renews.
    pub instance_id: String,
    /// The expiry it extends.
    pub old_expiry: DateTime<Utc>,
    /// Whether an attempt may have charged without its answer being recorded.
    pub maybe_charged: bool,
}

/// The open intents and backoffs, loaded once per pass, by instance id.
#[derive(Debug, Default)]
pub struct Histories {
    by_instance: HashMap<String, History>,
    /// Every open intent.
    pub open: Vec<OpenIntent>,
}

impl HistorySource for Histories {
    fn history(&self, instance_id: &str) -> History {
        self.by_instance
            .get(instance_id)
            .cloned()
            .unwrap_or_default()
    }
}

/// One instance's line in the status table (the latest pass's view of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    /// Name of the config account entry the instance was listed through.
    pub account: String,
    /// The region the instance was scanned in, e.g. cn-hangzhou.
    pub region: String,
    /// The ECS instance id (with `account`, the line's key).
    pub instance_id: String,
    /// The instance's display name, as ECS lists it.
    pub name: String,
    /// When the instance's paid period ends, as last observed or verified.
    pub expires_at: DateTime<Utc>,
    /// Name of the policy that matched the instance (`None`: no policy matched).
    pub policy: Option<String>,
    /// The instance's state word (an `InstanceState`, e.g. `due`, `backoff`, `excluded`).
    pub state: String,
    /// Decision word.
    pub decision: String,
    /// When the next action is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Why the instance is in this state, in words (from `decide` or the pass's outcome).
    pub reason: String,
    /// Failed attempts in a row.
    pub failed_attempts: u32,
    /// Next retry, when backing off.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// The provider's auto-renew settings differ from the policy.
    pub drift: bool,
    /// The provider's deduction should have extended the expiry by now.
    pub deduction_overdue: bool,
    /// The last money-moving outcome, in words (filled in when read).
    pub last_outcome: Option<String>,
    /// When this line was written.
    pub updated_at: DateTime<Utc>,
}

/// A change to one instance's status line after the pass acted on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// Name of the config account entry; with `instance_id`, which line to change.
    pub account: String,
    /// The ECS instance id whose line changes.
    pub instance_id: String,
    /// New state.
    pub state: String,
    /// New decision word.
    pub decision: String,
    /// New reason.
    pub reason: String,
    /// New due time.
    pub due_at: Option<DateTime<Utc>>,
    /// Failed attempts in a row.
    pub failed_attempts: u32,
    /// Next retry.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// New expiry, when verified.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The per-instance fields metrics need, borrowed from a status row.
#[derive(Debug, Clone, Copy)]
pub struct MetricRow<'a> {
    /// Name of the config account entry (the series' `account` label).
    pub account: &'a str,
    /// The instance's region (the series' `region` label).
    pub region: &'a str,
    /// The ECS instance id (the series' `instance_id` label).
    pub instance_id: &'a str,
    /// Policy (`none` when no policy matched).
    pub policy: &'a str,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// Next action, unix seconds.
    pub next_action_at: Option<i64>,
    /// The instance's state word (the `state` label of `instance_state`).
    pub state: &'a str,
    /// Failed attempts.
    pub failed_attempts: i64,
    /// Whether auto-renew settings differ from the policy (`instance_auto_renew_drift`).
    pub drift: bool,
    /// Deduction overdue.
    pub deduction_overdue: bool,
}

/// One money-moving record for `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// `renewal` or `auto_renew`.
    pub kind: String,
    /// Name of the config account entry the record was made through.
    pub account: String,
    /// The instance's region, e.g. cn-hangzhou.
    pub region: String,
    /// The ECS instance id the record is about.
    pub instance_id: String,
    /// What was asked (e.g. `1 Month`, `AutoRenewal 1 Month`).
    pub request: String,
    /// ClientToken (renewals).
    pub client_token: Option<String>,
    /// Status / result.
    pub status: String,
    /// Order id.
    pub order_id: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Quoted price.
    pub price: Option<String>,
    /// Error code and class.
    pub error: Option<String>,
    /// Requests sent for a renewal (unsent ones not counted); 1 for an auto-renew change.
    pub attempts: u32,
    /// Expiry before.
    pub old_expiry: Option<DateTime<Utc>>,
    /// Expiry after, once verified.
    pub new_expiry: Option<DateTime<Utc>>,
    /// An attempt may have charged without its answer being recorded (renewals).
    pub maybe_charged: bool,
}

/// Auto-renew changes about to be requested with one call.
#[derive(Debug, Clone, Copy)]
pub struct PendingAutoRenew<'a> {
    /// Name of the config account entry whose client makes the call.
    pub account: &'a str,
    /// The region all of `instance_ids` are in.
    pub region: &'a str,
    /// The attributes to ask for.
    pub target: &'a crate::cloud::ecs::AutoRenewTarget,
    /// Ids of the instances to set to `target`; each gets its own `pending` row.
    pub instance_ids: &'a [String],
}

/// The answer to one auto-renew call.
#[derive(Debug, Clone, Copy)]
pub struct AutoRenewAnswer<'a> {
    /// Request id.
    pub request_id: Option<&'a str>,
    /// Error code and class when it failed.
    pub error: Option<(&'a str, ErrorClass)>,
}

/// A pass as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassRecord {
    /// When the pass began (the clock's now, UTC).
    pub started_at: DateTime<Utc>,
    /// When the pass ended (the clock's now as it began publishing, UTC).
    pub finished_at: DateTime<Utc>,
    /// ok, partial or failed.
    pub result: String,
    /// A JSON summary.
    pub summary: String,
    /// The retry the pass left for the daemon to wake for (one it will attempt then).
    pub next_retry_at: Option<DateTime<Utc>>,
}

/// What a day's belts have counted (see [`Ledger::day_totals`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayTotals {
    /// Charges counted (each intent once).
    pub renewals: u32,
    /// Their spend per currency, in cents (priced charges only).
    pub spend: BTreeMap<String, i64>,
    /// Counted charges without a price (see [`Ledger::unpriced_charges`]).
    pub unpriced: usize,
}

/// A counted charge made without a price quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpricedCharge {
    /// Its intent.
    pub intent_id: i64,
    /// Account entry that made it.
    pub account: String,
    /// The instance's region, where its price is asked.
    pub region: String,
    /// The ECS instance id that was charged.
    pub instance_id: String,
    /// Length charged.
    pub period: u32,
    /// Unit charged.
    pub unit: PeriodUnit,
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

    /// The open intents and backoffs, as `decide` needs them, by instance id (ids are unique
    /// across accounts, and two config entries may reach one account). A row this build cannot
    /// read stops the load with an error naming it.
    pub fn histories(&self) -> Result<Histories, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "loading open intents",
            source,
        };
        let conn = self.conn();
        let mut histories = Histories::default();
        let mut statement = conn
            .prepare(
                "SELECT id, account, region, instance_id, old_expiry, period, unit, client_token, status, order_id,
                        error_code, error_class, maybe_charged
                 FROM intents WHERE status IN ('prepared','sent','unknown','ordered','failed') ORDER BY id",
            )
            .map_err(read)?;
        let mut rows = statement.query([]).map_err(read)?;
        while let Some(row) = rows.next().map_err(read)? {
            let id: i64 = row.get(0).map_err(read)?;
            let key = id.to_string();
            let cell = rows::Cell {
                path: &self.path,
                table: "intents",
                row: &key,
            };
            let text = |i: usize| row.get::<_, String>(i).map_err(read);
            let optional = |i: usize| row.get::<_, Option<String>>(i).map_err(read);
            let old_expiry = cell.time("old_expiry", &text(4)?)?;
            let unit = cell.unit("unit", &text(6)?)?;
            let maybe_charged: bool = row.get(12).map_err(read)?;
            let status = match text(8)?.as_str() {
                "prepared" => IntentStatus::Prepared,
                "sent" | "unknown" => IntentStatus::Unknown,
                "ordered" => IntentStatus::Ordered {
                    order_id: cell
                        .present("order_id", optional(9)?.as_deref())?
                        .to_owned(),
                },
                "failed" => IntentStatus::Failed {
                    class: cell.class(
                        "error_class",
                        cell.present("error_class", optional(11)?.as_deref())?,
                    )?,
                    code: cell
                        .present("error_code", optional(10)?.as_deref())?
                        .to_owned(),
                },
                other => return Err(cell.other("status", other)),
            };
            let instance_id = text(3)?;
            let history = histories
                .by_instance
                .entry(instance_id.clone())
                .or_default();
            // The latest intent wins (rows come in id order).
            history.intent = Some(IntentView {
                token: text(7)?,
                old_expiry,
                period: row.get(5).map_err(read)?,
                unit,
                status,
                maybe_charged,
            });
            histories.open.push(OpenIntent {
                id,
                account: text(1)?,
                region: text(2)?,
                instance_id,
                old_expiry,
                maybe_charged,
            });
        }
        drop(rows);
        drop(statement);
        let mut statement = conn
            .prepare("SELECT instance_id, old_expiry, failures, retry_at FROM backoff")
            .map_err(read)?;
        let mut rows = statement.query([]).map_err(read)?;
        while let Some(row) = rows.next().map_err(read)? {
            let instance_id: String = row.get(0).map_err(read)?;
            let cell = rows::Cell {
                path: &self.path,
                table: "backoff",
                row: &instance_id,
            };
            let old_expiry = cell.time("old_expiry", &row.get::<_, String>(1).map_err(read)?)?;
            let retry_at = cell.time("retry_at", &row.get::<_, String>(3).map_err(read)?)?;
            let failures: u32 = row.get(2).map_err(read)?;
            let Some(history) = histories.by_instance.get_mut(&instance_id) else {
                continue;
            };
            if history
                .intent
                .as_ref()
                .is_some_and(|i| i.old_expiry == old_expiry)
            {
                history.failed_attempts = failures;
                history.retry_at = Some(retry_at);
            }
        }
        Ok(histories)
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

    /// Writes (durably) the intent to renew, or finds the one already written for this token
    /// (see [`StoredIntent`]).
    pub fn prepare(
        &self,
        intent: &NewIntent,
        now: DateTime<Utc>,
    ) -> Result<StoredIntent, LedgerError> {
        self.in_transaction("recording a renewal intent", |tx| {
            intents::upsert(tx, intent, now)
        })
    }

    /// Records that an attempt is being sent (before it leaves the process).
    pub fn begin_attempt(&self, intent_id: i64, now: DateTime<Utc>) -> Result<i64, LedgerError> {
        self.in_transaction("recording a renewal attempt", |tx| {
            intents::begin_attempt(tx, intent_id, now)
        })
    }

    /// [`Ledger::prepare`] and [`Ledger::begin_attempt`] in one transaction — one sync to disk
    /// before the request leaves, not two. Returns the stored intent (whose period and unit
    /// the request must carry) and the attempt's id.
    pub fn prepare_and_begin(
        &self,
        intent: &NewIntent,
        now: DateTime<Utc>,
    ) -> Result<(StoredIntent, i64), LedgerError> {
        let intent = intent.clone();
        self.in_shared_transaction("recording a renewal intent and its attempt", move |tx| {
            let stored = intents::upsert(tx, &intent, now)?;
            Ok((stored, intents::begin_attempt(tx, stored.id, now)?))
        })
    }

    /// Records a successful renewal: the order, counted toward `day`'s belts once, in one
    /// transaction; clears the instance's backoff.
    pub fn finish_ordered(
        &self,
        intent_id: i64,
        attempt_id: i64,
        order_id: &str,
        request_id: &str,
        day: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let (order_id, request_id, day) =
            (order_id.to_owned(), request_id.to_owned(), day.to_owned());
        self.in_shared_transaction("recording a renewal's order", move |tx| {
            intents::finish_ordered(tx, intent_id, attempt_id, &order_id, &request_id, &day, now)
        })
    }

    /// Records a refused or unanswered attempt and when to try again. `unknown` marks an
    /// attempt whose charge may have happened: the intent is then "maybe charged" for good
    /// (resent with its token and period, never replaced) and counted toward `day`'s belts.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_failed(
        &self,
        intent_id: i64,
        attempt_id: i64,
        failure: &FailureRecord,
        unknown: bool,
        retry_at: DateTime<Utc>,
        day: &str,
        now: DateTime<Utc>,
    ) -> Result<u32, LedgerError> {
        let (failure, day) = (failure.clone(), day.to_owned());
        self.in_shared_transaction("recording a failed renewal", move |tx| {
            let failed = intents::Failed {
                failure: &failure,
                unknown,
                retry_at,
                day: &day,
            };
            intents::finish_failed(tx, intent_id, attempt_id, &failed, now)
        })
    }

    /// Records that an attempt was not sent after all (shutdown began first).
    pub fn finish_not_sent(
        &self,
        intent_id: i64,
        attempt_id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.in_shared_transaction("recording an unsent renewal", move |tx| {
            intents::finish_not_sent(tx, intent_id, attempt_id, now)
        })
    }

    /// Marks attempts that were still out when the previous pass or process ended as unknown
    /// outcomes (they may have charged) and counts them toward `day`; returns how many. Run at
    /// the start of a pass, when no attempt of this writer can be out.
    pub fn mark_interrupted(&self, day: &str, now: DateTime<Utc>) -> Result<usize, LedgerError> {
        // Nearly always there is none: a read, not a write transaction (a sync to disk) per pass.
        let any: bool = query_one(
            &self.conn(),
            "SELECT EXISTS (SELECT 1 FROM intents WHERE status = 'sent')",
            [],
            |r| r.get(0),
        )
        .map_err(|source| LedgerError::Read {
            what: "looking for interrupted renewal attempts",
            source,
        })?;
        if !any {
            return Ok(0);
        }
        self.in_transaction("recording interrupted renewal attempts", |tx| {
            intents::mark_interrupted(tx, day, now)
        })
    }

    /// Closes an intent whose instance's expiry moved past its old expiry: `verified` if the
    /// order was ours, `superseded` otherwise. Clears the backoff.
    pub fn settle(
        &self,
        intent_id: i64,
        observed_expiry: DateTime<Utc>,
        day: &str,
        now: DateTime<Utc>,
    ) -> Result<String, LedgerError> {
        let mut settled = self.settle_all(&[(intent_id, observed_expiry)], day, now)?;
        Ok(settled.pop().unwrap_or_default())
    }

    /// [`Ledger::settle`] for many intents in one transaction (one sync to disk, not one each);
    /// returns what each became, in order. An intent that may have charged and was never
    /// counted (written before counting existed) is counted toward `day`.
    pub fn settle_all(
        &self,
        intents: &[(i64, DateTime<Utc>)],
        day: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, LedgerError> {
        if intents.is_empty() {
            return Ok(Vec::new());
        }
        // Set-based: a verification round settles hundreds of intents, and three statements
        // per intent cost more than the sync. The list travels as one JSON parameter.
        let list = serde_json::Value::Array(
            intents
                .iter()
                .map(|(id, expiry)| serde_json::json!([id, ts(*expiry)]))
                .collect(),
        )
        .to_string();
        self.in_transaction("settling a renewal", |tx| {
            let uncounted: Vec<i64> = tx
                .prepare_cached(
                    "SELECT id FROM intents WHERE maybe_charged = 1 AND counted_day IS NULL
                       AND id IN (SELECT json_extract(value, '$[0]') FROM json_each(?1))",
                )?
                .query_map([&list], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for id in uncounted {
                intents::count_charge(tx, id, day)?;
            }
            exec(
                tx,
                "DELETE FROM backoff WHERE instance_id IN (
                     SELECT instance_id FROM intents
                     WHERE id IN (SELECT json_extract(value, '$[0]') FROM json_each(?1)))",
                [&list],
            )?;
            let settled: HashMap<i64, String> = tx
                .prepare_cached(
                    "UPDATE intents SET status = CASE status WHEN 'ordered' THEN 'verified' ELSE 'superseded' END,
                         new_expiry = json_extract(j.value, '$[1]'), verified_at = ?2, updated_at = ?2
                     FROM json_each(?1) AS j WHERE intents.id = json_extract(j.value, '$[0]')
                     RETURNING intents.id, intents.status",
                )?
                .query_map(params![list, ts(now)], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            // Every intent asked for must exist; a missing one keeps nothing of the round.
            intents
                .iter()
                .map(|(id, _)| settled.get(id).cloned())
                .collect::<Option<Vec<String>>>()
                .ok_or(rusqlite::Error::QueryReturnedNoRows)
        })
    }

    /// Sets the price of a counted charge made unpriced, adding it to its day's spend.
    pub fn price_charge(&self, intent_id: i64, price: &Money) -> Result<(), LedgerError> {
        self.in_transaction("recording the price of an earlier charge", |tx| {
            intents::price_charge(tx, intent_id, price)
        })
    }

    /// Writes the auto-renew changes about to be requested as `pending` rows, all in one
    /// transaction, before any call leaves (intent before act, as for renewals); returns each
    /// batch's row ids in order.
    pub fn begin_auto_renew_changes(
        &self,
        batches: &[PendingAutoRenew<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Vec<i64>>, LedgerError> {
        self.in_transaction("recording auto-renew changes before they are sent", |tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO auto_renew_changes (at, account, region, instance_id, status, duration, unit, result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending')",
            )?;
            let mut ids = Vec::with_capacity(batches.len());
            for batch in batches {
                let mut rows = Vec::with_capacity(batch.instance_ids.len());
                for id in batch.instance_ids {
                    insert.execute(params![
                        ts(now),
                        batch.account,
                        batch.region,
                        id,
                        batch.target.status.as_str(),
                        batch.target.duration,
                        batch.target.unit.as_str(),
                    ])?;
                    rows.push(tx.last_insert_rowid());
                }
                ids.push(rows);
            }
            Ok(ids)
        })
    }

    /// Records each call's answer on the rows written for it by
    /// [`Ledger::begin_auto_renew_changes`], in one transaction: a pass's changes across all
    /// sources are one sync to disk, not one per call.
    pub fn finish_auto_renew_changes(
        &self,
        answers: &[(&[i64], AutoRenewAnswer<'_>)],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.in_transaction("recording auto-renew changes", |tx| {
            // A call's rows were written one after another: one statement per call (≤100
            // rows) rather than one per row.
            let mut update_run = tx.prepare_cached(
                "UPDATE auto_renew_changes SET at = ?3, result = ?4, request_id = ?5, error_code = ?6, error_class = ?7
                 WHERE id BETWEEN ?1 AND ?2",
            )?;
            for (rows, answer) in answers {
                let contiguous = rows.windows(2).all(|w| w[1] == w[0] + 1);
                let runs: Vec<(i64, i64)> = match (rows.first(), rows.last()) {
                    (Some(first), Some(last)) if contiguous => vec![(*first, *last)],
                    _ => rows.iter().map(|id| (*id, *id)).collect(),
                };
                for (first, last) in runs {
                    update_run.execute(params![
                        first,
                        last,
                        ts(now),
                        if answer.error.is_some() { "failed" } else { "ok" },
                        answer.request_id,
                        answer.error.map(|e| e.0.to_owned()),
                        answer.error.map(|e| e.1.as_str())
                    ])?;
                }
            }
            Ok(())
        })
    }

    /// Auto-renew changes not yet checked against a later scan: accepted ones, and pending
    /// ones whose answer was never recorded (the process stopped while they were out).
    pub fn unchecked_auto_renew_changes(
        &self,
    ) -> Result<Vec<(i64, String, String, crate::cloud::ecs::AutoRenewTarget)>, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading auto-renew changes",
            source,
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT id, account, instance_id, status, duration, unit FROM auto_renew_changes
                 WHERE result IN ('pending', 'ok') ORDER BY id",
            )
            .map_err(read)?;
        let mut rows = statement.query([]).map_err(read)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(read)? {
            let id: i64 = r.get(0).map_err(read)?;
            let key = id.to_string();
            let cell = rows::Cell {
                path: &self.path,
                table: "auto_renew_changes",
                row: &key,
            };
            let target = crate::cloud::ecs::AutoRenewTarget {
                status: cell.renewal_status("status", &r.get::<_, String>(3).map_err(read)?)?,
                duration: r.get(4).map_err(read)?,
                unit: cell.unit("unit", &r.get::<_, String>(5).map_err(read)?)?,
            };
            out.push((id, r.get(1).map_err(read)?, r.get(2).map_err(read)?, target));
        }
        Ok(out)
    }

    /// Marks accepted auto-renew changes as seen in effect (`verified`) or not (`mismatch`),
    /// all in one transaction.
    pub fn check_auto_renew_changes(&self, checks: &[(i64, bool)]) -> Result<(), LedgerError> {
        if checks.is_empty() {
            return Ok(());
        }
        self.in_transaction("checking auto-renew changes", |tx| {
            let mut update =
                tx.prepare_cached("UPDATE auto_renew_changes SET result = ?2 WHERE id = ?1")?;
            for (id, verified) in checks {
                update.execute(params![id, if *verified { "verified" } else { "mismatch" }])?;
            }
            Ok(())
        })
    }

    /// Charges counted toward `day` so far, each intent once, with the attempts still out
    /// (they may have charged; the next pass counts them).
    pub fn renewals_counted(&self, day: &str) -> Result<u32, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading today's renewals",
            source,
        };
        query_one(
            &self.conn(),
            "SELECT COALESCE((SELECT renewals FROM renewal_days WHERE day = ?1), 0)
                  + (SELECT COUNT(*) FROM intents WHERE status = 'sent' AND counted_day IS NULL)",
            [day],
            |r| r.get(0),
        )
        .map_err(read)
    }

    /// What `day`'s belts have counted so far: renewals, spend per currency, and the counted
    /// charges that were made unpriced (a spend limit switched on later needs their price).
    pub fn day_totals(&self, day: &str) -> Result<DayTotals, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading today's totals",
            source,
        };
        let renewals = self.renewals_counted(day)?;
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached("SELECT currency, cents FROM spend WHERE day = ?1")
            .map_err(read)?;
        let mut spend = statement
            .query_map([day], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(read)?
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(read)?;
        drop(statement);
        // Attempts still out (a pass in flight, or a process that stopped while one was out)
        // may have charged: counted here too (`renewals_counted` counts them), so no reader of
        // the belts misses them before the next pass marks and counts them.
        let mut statement = conn
            .prepare_cached(
                "SELECT price_cents, currency FROM intents WHERE status = 'sent' AND counted_day IS NULL",
            )
            .map_err(read)?;
        let mut rows = statement.query([]).map_err(read)?;
        while let Some(r) = rows.next().map_err(read)? {
            if let (Some(cents), Some(currency)) = (
                r.get::<_, Option<i64>>(0).map_err(read)?,
                r.get::<_, Option<String>>(1).map_err(read)?,
            ) {
                let total = spend.entry(currency).or_default();
                *total = total.saturating_add(cents);
            }
        }
        drop(rows);
        drop(statement);
        let unpriced: u32 = query_one(
            &conn,
            "SELECT COUNT(*) FROM intents WHERE counted_day = ?1 AND price_cents IS NULL",
            [day],
            |r| r.get(0),
        )
        .map_err(read)?;
        Ok(DayTotals {
            renewals,
            spend,
            unpriced: unpriced as usize,
        })
    }

    /// The charges counted toward `day` that were made without a price quote.
    pub fn unpriced_charges(&self, day: &str) -> Result<Vec<UnpricedCharge>, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading today's unpriced charges",
            source,
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached(
                "SELECT id, account, region, instance_id, period, unit FROM intents
                 WHERE counted_day = ?1 AND price_cents IS NULL ORDER BY id",
            )
            .map_err(read)?;
        let mut rows = statement.query([day]).map_err(read)?;
        let mut unpriced = Vec::new();
        while let Some(r) = rows.next().map_err(read)? {
            let id: i64 = r.get(0).map_err(read)?;
            let key = id.to_string();
            let cell = rows::Cell {
                path: &self.path,
                table: "intents",
                row: &key,
            };
            unpriced.push(UnpricedCharge {
                intent_id: id,
                account: r.get(1).map_err(read)?,
                region: r.get(2).map_err(read)?,
                instance_id: r.get(3).map_err(read)?,
                period: r.get(4).map_err(read)?,
                unit: cell.unit("unit", &r.get::<_, String>(5).map_err(read)?)?,
            });
        }
        Ok(unpriced)
    }

    /// Records a pass.
    pub fn record_pass(&self, pass: &PassRecord) -> Result<(), LedgerError> {
        self.conn()
            .execute(
                "INSERT INTO passes (started_at, finished_at, result, summary, next_retry_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    ts(pass.started_at),
                    ts(pass.finished_at),
                    pass.result,
                    pass.summary,
                    pass.next_retry_at.map(ts)
                ],
            )
            .map(|_| ())
            .map_err(|source| LedgerError::Write { what: "recording a pass", source })
    }

    /// The latest pass whose result was `ok`.
    pub fn last_successful_pass(&self) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let found: Option<(i64, String)> = self
            .conn()
            .query_row(
                "SELECT id, finished_at FROM passes WHERE result = 'ok' ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|source| LedgerError::Read {
                what: "reading the last pass",
                source,
            })?;
        let Some((id, finished)) = found else {
            return Ok(None);
        };
        let key = id.to_string();
        rows::Cell {
            path: &self.path,
            table: "passes",
            row: &key,
        }
        .time("finished_at", &finished)
        .map(Some)
    }

    /// The latest pass of any result.
    pub fn last_pass(&self) -> Result<Option<PassRecord>, LedgerError> {
        type Row = (i64, String, String, String, String, Option<String>);
        let found: Option<Row> = self
            .conn()
            .query_row(
                "SELECT id, started_at, finished_at, result, summary, next_retry_at FROM passes ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()
            .map_err(|source| LedgerError::Read {
                what: "reading the last pass",
                source,
            })?;
        let Some((id, started, finished, result, summary, next_retry)) = found else {
            return Ok(None);
        };
        let key = id.to_string();
        let cell = rows::Cell {
            path: &self.path,
            table: "passes",
            row: &key,
        };
        Ok(Some(PassRecord {
            started_at: cell.time("started_at", &started)?,
            finished_at: cell.time("finished_at", &finished)?,
            result,
            summary,
            next_retry_at: next_retry
                .map(|t| cell.time("next_retry_at", &t))
                .transpose()?,
        }))
    }

    /// Records complete scans of sources (account, region), all in one transaction.
    pub fn record_source_successes(
        &self,
        sources: &[(&str, &str)],
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        if sources.is_empty() {
            return Ok(());
        }
        self.in_transaction("recording source scans", |tx| {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO sources (account, region, last_success) VALUES (?1, ?2, ?3)
                 ON CONFLICT (account, region) DO UPDATE SET last_success = excluded.last_success",
            )?;
            for (account, region) in sources {
                upsert.execute(params![account, region, ts(at)])?;
            }
            Ok(())
        })
    }

    /// When each source was last scanned completely.
    pub fn source_successes(&self) -> Result<Vec<(String, String, DateTime<Utc>)>, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading source scans",
            source,
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT account, region, last_success FROM sources ORDER BY account, region")
            .map_err(read)?;
        let mut rows = statement.query([]).map_err(read)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(read)? {
            let (account, region): (String, String) =
                (r.get(0).map_err(read)?, r.get(1).map_err(read)?);
            let key = format!("{account}/{region}");
            let at = rows::Cell {
                path: &self.path,
                table: "sources",
                row: &key,
            }
            .time("last_success", &r.get::<_, String>(2).map_err(read)?)?;
            out.push((account, region, at));
        }
        Ok(out)
    }

    /// Writes (or overwrites) status lines in one transaction, tagged with the
    /// pass's `generation`.
    pub fn write_status(&self, rows: &[StatusRow], generation: i64) -> Result<(), LedgerError> {
        let write = |source| LedgerError::Write {
            what: "writing status lines",
            source,
        };
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(write)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO instance_status (account, region, instance_id, name, expires_at, policy, state, decision,
                         due_at, reason, failed_attempts, next_retry_at, drift, deduction_overdue, updated_at, generation)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                )
                .map_err(write)?;
            for row in rows {
                insert
                    .execute(params![
                        row.account,
                        row.region,
                        row.instance_id,
                        row.name,
                        row.expires_at.timestamp(),
                        row.policy,
                        row.state,
                        row.decision,
                        row.due_at.map(|t| t.timestamp()),
                        row.reason,
                        row.failed_attempts,
                        row.next_retry_at.map(|t| t.timestamp()),
                        row.drift,
                        row.deduction_overdue,
                        row.updated_at.timestamp(),
                        generation,
                    ])
                    .map_err(write)?;
            }
        }
        tx.commit().map_err(write)?;
        drop(conn);
        // Fifty status lines fill about as many pages as one renewal's record.
        self.committed((rows.len() / 50) as u32 + 1);
        Ok(())
    }

    /// Applies what the pass did to the lines of the instances it acted on.
    pub fn update_status(
        &self,
        updates: &[StatusUpdate],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let write = |source| LedgerError::Write {
            what: "updating status lines",
            source,
        };
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(write)?;
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE instance_status SET state = ?3, decision = ?4, reason = ?5, due_at = ?6, failed_attempts = ?7,
                         next_retry_at = ?8, expires_at = COALESCE(?9, expires_at), updated_at = ?10
                     WHERE account = ?1 AND instance_id = ?2",
                )
                .map_err(write)?;
            for u in updates {
                update
                    .execute(params![
                        u.account,
                        u.instance_id,
                        u.state,
                        u.decision,
                        u.reason,
                        u.due_at.map(|t| t.timestamp()),
                        u.failed_attempts,
                        u.next_retry_at.map(|t| t.timestamp()),
                        u.expires_at.map(|t| t.timestamp()),
                        now.timestamp(),
                    ])
                    .map_err(write)?;
            }
        }
        tx.commit().map_err(write)?;
        drop(conn);
        self.committed((updates.len() / 50) as u32 + 1);
        Ok(())
    }

    /// Drops the lines of instances the pass with `generation` did not see (released, or out
    /// of the window) in the sources it scanned completely.
    pub fn prune_status(
        &self,
        generation: i64,
        complete: &[(String, String)],
    ) -> Result<(), LedgerError> {
        let write = |source| LedgerError::Write {
            what: "pruning status lines",
            source,
        };
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(write)?;
        for (account, region) in complete {
            exec(
                &tx,
                "DELETE FROM instance_status WHERE generation < ?1 AND account = ?2 AND region = ?3",
                params![generation, account, region],
            )
            .map_err(write)?;
        }
        tx.commit().map_err(write)
    }

    /// Releases the connection's page cache (after a pass, or a scrape of a large fleet).
    pub fn shrink_memory(&self) {
        if let Err(error) = self.conn().execute_batch("PRAGMA shrink_memory;") {
            tracing::debug!(%error, "shrinking the ledger's cache failed");
        }
    }

    /// The fields metrics need for up to `limit` status lines after the key `after` (account,
    /// instance), in key order, one at a time. Returns the last key when the page was full
    /// (more may follow). The read connection is held only for the page: a scrape that pages
    /// through the fleet never keeps it (or a read snapshot) while its client is slow.
    pub fn metric_rows_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
        mut each: impl FnMut(MetricRow<'_>),
    ) -> Result<Option<(String, String)>, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading status lines for metrics",
            source,
        };
        // Two statements, so SQLite starts each later page at its key in the primary-key index
        // (`?1 IS NULL OR ...` in one statement would scan from the start on every page). Both
        // number the limit ?3, so they bind the same parameters.
        let sql = match after {
            None => {
                "SELECT account, region, instance_id, COALESCE(policy, 'none'), expires_at, due_at, state, failed_attempts,
                        drift, deduction_overdue
                 FROM instance_status
                 WHERE ?1 IS NULL AND ?2 IS NULL
                 ORDER BY account, instance_id LIMIT ?3"
            }
            Some(_) => {
                "SELECT account, region, instance_id, COALESCE(policy, 'none'), expires_at, due_at, state, failed_attempts,
                        drift, deduction_overdue
                 FROM instance_status
                 WHERE (account, instance_id) > (?1, ?2)
                 ORDER BY account, instance_id LIMIT ?3"
            }
        };
        let conn = self.conn();
        let mut statement = conn.prepare_cached(sql).map_err(read)?;
        let (after_account, after_instance) = after.unzip();
        let mut rows = statement
            .query(rusqlite::params![
                after_account,
                after_instance,
                limit as i64
            ])
            .map_err(read)?;
        let mut count = 0;
        let mut last = None;
        while let Some(r) = rows.next().map_err(read)? {
            let text = |i| r.get_ref(i).and_then(|v| v.as_str().map_err(Into::into));
            let row = MetricRow {
                account: text(0).map_err(read)?,
                region: text(1).map_err(read)?,
                instance_id: text(2).map_err(read)?,
                policy: text(3).map_err(read)?,
                expires_at: r.get(4).map_err(read)?,
                next_action_at: r.get(5).map_err(read)?,
                state: text(6).map_err(read)?,
                failed_attempts: r.get(7).map_err(read)?,
                drift: r.get(8).map_err(read)?,
                deduction_overdue: r.get(9).map_err(read)?,
            };
            count += 1;
            if count == limit {
                last = Some((row.account.to_owned(), row.instance_id.to_owned()));
            }
            each(row);
        }
        Ok(last)
    }

    /// Every money-moving record (renewal intents and auto-renew changes), oldest first,
    /// optionally for one instance.
    pub fn money_records(&self, instance: Option<&str>) -> Result<Vec<HistoryEntry>, LedgerError> {
        let mut entries = self.renewal_records(instance)?;
        entries.extend(self.auto_renew_records(instance)?);
        entries.sort_by_key(|e| e.at);
        Ok(entries)
    }

    fn renewal_records(&self, instance: Option<&str>) -> Result<Vec<HistoryEntry>, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading history",
            source,
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT id, created_at, account, region, instance_id, period, unit, client_token, status, order_id, request_id,
                        price_cents, currency, error_code, error_class, attempts, old_expiry, new_expiry, maybe_charged
                 FROM intents WHERE ?1 IS NULL OR instance_id = ?1 ORDER BY id",
            )
            .map_err(read)?;
        let mut rows = statement.query([instance]).map_err(read)?;
        let mut entries = Vec::new();
        while let Some(r) = rows.next().map_err(read)? {
            let key = r.get::<_, i64>(0).map_err(read)?.to_string();
            let cell = rows::Cell {
                path: &self.path,
                table: "intents",
                row: &key,
            };
            let text = |i: usize| r.get::<_, String>(i).map_err(read);
            let optional = |i: usize| r.get::<_, Option<String>>(i).map_err(read);
            let price: Option<i64> = r.get(11).map_err(read)?;
            entries.push(HistoryEntry {
                at: cell.time("created_at", &text(1)?)?,
                kind: "renewal".into(),
                account: text(2)?,
                region: text(3)?,
                instance_id: text(4)?,
                request: format!(
                    "{} {}",
                    r.get::<_, u32>(5).map_err(read)?,
                    cell.unit("unit", &text(6)?)?
                ),
                client_token: Some(text(7)?),
                status: text(8)?,
                order_id: optional(9)?,
                request_id: optional(10)?,
                price: match (price, optional(12)?) {
                    (Some(cents), Some(currency)) => Some(Money { cents, currency }.to_string()),
                    _ => None,
                },
                error: optional(13)?.map(|code| {
                    format!(
                        "{code} ({})",
                        optional(14).ok().flatten().unwrap_or_default()
                    )
                }),
                attempts: r.get(15).map_err(read)?,
                old_expiry: Some(cell.time("old_expiry", &text(16)?)?),
                new_expiry: optional(17)?
                    .map(|t| cell.time("new_expiry", &t))
                    .transpose()?,
                maybe_charged: r.get(18).map_err(read)?,
            });
        }
        Ok(entries)
    }

    fn auto_renew_records(&self, instance: Option<&str>) -> Result<Vec<HistoryEntry>, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading history",
            source,
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT id, at, account, region, instance_id, status, duration, unit, result, request_id, error_code, error_class
                 FROM auto_renew_changes WHERE ?1 IS NULL OR instance_id = ?1 ORDER BY id",
            )
            .map_err(read)?;
        let mut rows = statement.query([instance]).map_err(read)?;
        let mut entries = Vec::new();
        while let Some(r) = rows.next().map_err(read)? {
            let key = r.get::<_, i64>(0).map_err(read)?.to_string();
            let cell = rows::Cell {
                path: &self.path,
                table: "auto_renew_changes",
                row: &key,
            };
            let text = |i: usize| r.get::<_, String>(i).map_err(read);
            let optional = |i: usize| r.get::<_, Option<String>>(i).map_err(read);
            entries.push(HistoryEntry {
                at: cell.time("at", &text(1)?)?,
                kind: "auto_renew".into(),
                account: text(2)?,
                region: text(3)?,
                instance_id: text(4)?,
                request: format!(
                    "{} {} {}",
                    cell.renewal_status("status", &text(5)?)?,
                    r.get::<_, u32>(6).map_err(read)?,
                    cell.unit("unit", &text(7)?)?
                ),
                client_token: None,
                status: text(8)?,
                order_id: None,
                request_id: optional(9)?,
                price: None,
                error: optional(10)?.map(|code| {
                    format!(
                        "{code} ({})",
                        optional(11).ok().flatten().unwrap_or_default()
                    )
                }),
                attempts: 1,
                old_expiry: None,
                new_expiry: None,
                maybe_charged: false,
            });
        }
        Ok(entries)
    }

    /// Every intent's token and order id (for invariant checks against the cloud's orders).
    pub fn tokens_and_orders(&self) -> Result<Vec<(String, Option<String>, String)>, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading tokens",
            source,
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT client_token, order_id, status FROM intents ORDER BY id")
            .map_err(read)?;
        let rows = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read)?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests;
