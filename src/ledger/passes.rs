//! Passes and sources: each pass's record (its summary and the retry the daemon may wake
//! for), and each source's last complete scan (what readiness is judged by).

use chrono::{DateTime, Utc};

use super::rows::Read;
use super::sql::{Engine, args, values};
use super::{Ledger, LedgerError, SourceStatus};

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

/// How long pass records are kept. They are operational, not money records (intents and
/// attempts, kept for good, are): one is written every pass (96 a day at the default cadence),
/// and only the last one and the last successful one are read.
pub const PASS_RETENTION: chrono::Duration = chrono::Duration::days(30);

impl Ledger {
    /// Records a pass, and in the same transaction drops the records that started more than
    /// [`PASS_RETENTION`] before it — except the last successful pass, however old.
    pub fn record_pass(&self, pass: &PassRecord) -> Result<(), LedgerError> {
        self.write_operational("recording a pass", |tx| {
            tx.exec(
                "INSERT INTO passes (started_at, finished_at, result, summary, next_retry_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                args![
                    pass.started_at,
                    pass.finished_at,
                    pass.result,
                    pass.summary,
                    pass.next_retry_at
                ],
            )?;
            // SQLite stores times as fixed-width RFC 3339 text in UTC, so text order is time
            // order there too.
            tx.exec(
                "DELETE FROM passes WHERE started_at < ?1
                   AND id IS DISTINCT FROM (SELECT MAX(id) FROM passes WHERE result = 'ok')",
                args![pass.started_at - PASS_RETENTION],
            )?;
            Ok(())
        })
    }

    /// Notes in the lease row that a pass starts at `now` (PostgreSQL; nothing on SQLite): a
    /// replica taking over learns from it whether the last leader's pass finished.
    pub fn mark_pass_started(&self, now: DateTime<Utc>) -> Result<(), LedgerError> {
        if self.engine() == Engine::Sqlite {
            return Ok(());
        }
        self.write("noting the start of a pass", |tx| {
            tx.exec(
                "UPDATE leader_lease SET pass_started_at = ?1 WHERE name = 'ecs-renewd'",
                args![now],
            )?;
            Ok(())
        })
    }

    /// Whether the last pass a leader started has no record (it did not finish: the process
    /// stopped or lost its term during it). Always `false` on SQLite.
    pub fn last_pass_unfinished(&self) -> Result<bool, LedgerError> {
        if self.engine() == Engine::Sqlite {
            return Ok(false);
        }
        Ok(self
            .first_row(
                Read::of("reading whether the last pass finished", "leader_lease"),
                "SELECT name, (pass_started_at IS NOT NULL AND NOT EXISTS (
                     SELECT 1 FROM passes WHERE started_at >= leader_lease.pass_started_at)) AS unfinished
                   FROM leader_lease WHERE name = 'ecs-renewd'",
                args![],
                |r| r.get("unfinished"),
            )?
            .unwrap_or(false))
    }

    /// The latest pass whose result was `ok`.
    pub fn last_successful_pass(&self) -> Result<Option<DateTime<Utc>>, LedgerError> {
        self.first_row(
            Read::of("reading the last pass", "passes"),
            "SELECT id, finished_at FROM passes WHERE result = 'ok' ORDER BY id DESC LIMIT 1",
            args![],
            |r| r.time("finished_at"),
        )
    }

    /// The latest pass of any result.
    pub fn last_pass(&self) -> Result<Option<PassRecord>, LedgerError> {
        self.first_row(
            Read::of("reading the last pass", "passes"),
            "SELECT id, started_at, finished_at, result, summary, next_retry_at FROM passes
             ORDER BY id DESC LIMIT 1",
            args![],
            |r| {
                Ok(PassRecord {
                    started_at: r.time("started_at")?,
                    finished_at: r.time("finished_at")?,
                    result: r.get("result")?,
                    summary: r.get("summary")?,
                    next_retry_at: r.opt_time("next_retry_at")?,
                })
            },
        )
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
        // A source comes once: it is one (account entry, region) of the pass.
        self.write_operational("recording source scans", |tx| {
            tx.insert_rows(
                "sources",
                &["account", "region", "last_success"],
                "ON CONFLICT (account, region) DO UPDATE SET last_success = excluded.last_success",
                sources,
                |(account, region)| values![*account, *region, at],
            )?;
            Ok(())
        })
    }

    /// When each source was last scanned completely.
    pub fn source_successes(&self) -> Result<Vec<SourceStatus>, LedgerError> {
        self.rows(
            Read::of("reading source scans", "sources"),
            "SELECT account || '/' || region AS key, account, region, last_success FROM sources
             ORDER BY account, region",
            args![],
            |r| {
                Ok(SourceStatus {
                    account: r.get("account")?,
                    region: r.get("region")?,
                    last_success: r.time("last_success")?,
                })
            },
        )
    }

    /// Forgets what the ledger keeps of accounts not in `keep` (an entry removed by a reload,
    /// a directory's member no longer listed): their sources' last scans and their status
    /// lines, in one transaction. Returns the (account, region) sources forgotten. Intents
    /// and outcomes are kept: they are the record of money.
    pub fn forget_accounts(
        &self,
        keep: &std::collections::HashSet<&str>,
    ) -> Result<Vec<(String, String)>, LedgerError> {
        let gone: Vec<(String, String)> = self
            .source_successes()?
            .into_iter()
            .filter(|s| !keep.contains(s.account.as_str()))
            .map(|s| (s.account, s.region))
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let accounts: std::collections::BTreeSet<&String> = gone.iter().map(|(a, _)| a).collect();
        self.write_operational("forgetting accounts no longer configured", |tx| {
            for account in &accounts {
                tx.exec("DELETE FROM sources WHERE account = ?1", args![account])?;
                tx.exec(
                    "DELETE FROM instance_status WHERE account = ?1",
                    args![account],
                )?;
            }
            Ok(())
        })?;
        Ok(gone)
    }
}
