//! Renewals held by a backoff after failing for lack of funds: the funds forecast reads them at
//! the start of a pass and, when the account's available amount now covers some of them
//! (earliest expiry first), ends their wait so the pass retries them at once instead of at the
//! end of a backoff of up to `backoff_ceiling`.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::rows::Read;
use super::{Ledger, LedgerError, ts};

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
        self.rows(
            Read::of("reading renewals held for lack of funds", "backoff"),
            "SELECT instance_id, account, old_expiry, retry_at FROM backoff
             WHERE last_class = 'funds' AND retry_at > ?1 ORDER BY old_expiry, instance_id",
            [ts(now)],
            |r| {
                Ok(FundsHold {
                    account: r.get("account")?,
                    instance_id: r.get("instance_id")?,
                    old_expiry: r.time("old_expiry")?,
                    retry_at: r.time("retry_at")?,
                })
            },
        )
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
