//! Renewals held by a backoff after failing for lack of funds: the funds forecast reads them at
//! the start of a pass and, when the account's available amount now covers some of them
//! (earliest expiry first), ends their wait so the pass retries them at once instead of at the
//! end of a backoff of up to `backoff_ceiling`.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{Ledger, LedgerError, rows, ts};

/// A renewal waiting out a funds backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundsHold {
    /// The ECS instance id.
    pub instance_id: String,
    /// The config account entry that tried it.
    pub account: String,
    /// The expiry it was renewing: the deadline the holds are ordered by.
    pub old_expiry: DateTime<Utc>,
    /// When its backoff ends.
    pub retry_at: DateTime<Utc>,
}

impl Ledger {
    /// The renewals whose last failure was for lack of funds and whose backoff ends after
    /// `now`, earliest expiry first.
    pub fn funds_holds(&self, now: DateTime<Utc>) -> Result<Vec<FundsHold>, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading renewals held for lack of funds",
            source,
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached(
                "SELECT instance_id, account, old_expiry, retry_at FROM backoff
                 WHERE last_class = 'funds' AND retry_at > ?1 ORDER BY old_expiry, instance_id",
            )
            .map_err(read)?;
        let mut found = statement.query([ts(now)]).map_err(read)?;
        let mut holds = Vec::new();
        while let Some(row) = found.next().map_err(read)? {
            let instance_id: String = row.get(0).map_err(read)?;
            let cell = rows::Cell {
                path: &self.path,
                table: "backoff",
                row: &instance_id,
            };
            let old_expiry = cell.time("old_expiry", &row.get::<_, String>(2).map_err(read)?)?;
            let retry_at = cell.time("retry_at", &row.get::<_, String>(3).map_err(read)?)?;
            holds.push(FundsHold {
                account: row.get(1).map_err(read)?,
                instance_id,
                old_expiry,
                retry_at,
            });
        }
        Ok(holds)
    }

    /// Ends the funds backoff of `instance_ids` at `now` (their failure count stays, so a new
    /// failure backs off from where it was). Returns how many were ended.
    pub fn end_funds_holds(
        &self,
        instance_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<usize, LedgerError> {
        self.in_transaction("ending funds backoffs after a top-up", |tx| {
            let mut update = tx.prepare_cached(
                "UPDATE backoff SET retry_at = ?2
                 WHERE instance_id = ?1 AND last_class = 'funds' AND retry_at > ?2",
            )?;
            let mut ended = 0;
            for id in instance_ids {
                ended += update.execute(params![id, ts(now)])?;
            }
            Ok(ended)
        })
    }
}
