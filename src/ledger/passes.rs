//! Passes and sources: each pass's record (its summary and the retry the daemon may wake
//! for), and each source's last complete scan (what readiness is judged by).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Ledger, LedgerError, SourceStatus, rows, ts};

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
        let write = |source| LedgerError::Write {
            what: "recording a pass",
            source,
        };
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(write)?;
        tx.execute(
            "INSERT INTO passes (started_at, finished_at, result, summary, next_retry_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                ts(pass.started_at),
                ts(pass.finished_at),
                pass.result,
                pass.summary,
                pass.next_retry_at.map(ts)
            ],
        )
        .map_err(write)?;
        // Times are stored as fixed-width RFC 3339 text in UTC, so text order is time order.
        tx.execute(
            "DELETE FROM passes WHERE started_at < ?1
               AND id IS NOT (SELECT MAX(id) FROM passes WHERE result = 'ok')",
            params![ts(pass.started_at - PASS_RETENTION)],
        )
        .map_err(write)?;
        tx.commit().map_err(write)
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
    pub fn source_successes(&self) -> Result<Vec<SourceStatus>, LedgerError> {
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
            out.push(SourceStatus {
                account,
                region,
                last_success: at,
            });
        }
        Ok(out)
    }
}
