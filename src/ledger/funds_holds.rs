//! Renewals held by a backoff after failing for lack of funds: the funds forecast reads them at
//! the start of a pass and, when the account's available amount now covers some of them
//! (earliest expiry first), ends their wait so the pass retries them at once instead of at the
//! end of a backoff of up to `backoff_ceiling`.

use chrono::{DateTime, Utc};

use super::rows::Read;
use super::sql::args;
use super::{Ledger, LedgerError};
use crate::cloud::types::PeriodUnit;
use crate::money::Money;

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
    /// The region its intent renews in.
    pub region: String,
    /// The period its intent renews for.
    pub period: u32,
    /// Its unit.
    pub unit: PeriodUnit,
    /// The price its intent recorded, if it was priced: what a top-up must cover (a restart
    /// or a reload keeps it, while the forecast's quotes start afresh).
    pub price: Option<Money>,
}

impl Ledger {
    /// The renewals whose last failure was for lack of funds and whose backoff ends after
    /// `now`, earliest expiry first.
    pub fn funds_holds(&self, now: DateTime<Utc>) -> Result<Vec<FundsHold>, LedgerError> {
        self.rows(
            Read::of("reading renewals held for lack of funds", "backoff"),
            "SELECT b.instance_id, b.account, b.old_expiry, b.retry_at, i.region, i.period, i.unit,
                    i.price_cents, i.currency
             FROM backoff b
             JOIN intents i ON i.id = (SELECT MAX(id) FROM intents
                                       WHERE instance_id = b.instance_id AND old_expiry = b.old_expiry)
             WHERE b.last_class = 'funds' AND b.retry_at > ?1 ORDER BY b.old_expiry, b.instance_id",
            args![now],
            |r| {
                let price = match (r.get("price_cents")?, r.get("currency")?) {
                    (Some(cents), Some(currency)) => Some(Money { cents, currency }),
                    _ => None,
                };
                Ok(FundsHold {
                    account: r.get("account")?,
                    instance_id: r.get("instance_id")?,
                    old_expiry: r.time("old_expiry")?,
                    retry_at: r.time("retry_at")?,
                    region: r.get("region")?,
                    period: r.get("period")?,
                    unit: r.unit("unit")?,
                    price,
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
        self.write("ending funds backoffs after a top-up", |tx| {
            let mut ended = 0;
            for id in instance_ids {
                ended += tx.exec(
                    "UPDATE backoff SET retry_at = ?2
                     WHERE instance_id = ?1 AND last_class = 'funds' AND retry_at > ?2",
                    args![id, now],
                )?;
            }
            Ok(ended as usize)
        })
    }
}
