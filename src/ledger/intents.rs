//! The statements behind a renewal's records: the intent (one per ClientToken, so one per
//! instance and expiry cycle), its attempts, the backoff, and counting a charge toward the
//! day's belts — once, as soon as the service is known or suspected to have charged, whichever
//! way that was learned (an order, a lost answer, a busy answer, an interrupted process, an
//! expiry that moved while an attempt was unanswered).

use chrono::{DateTime, Utc};

use super::sql::{DbError, Engine, Tx, args};
use super::{FailureRecord, NewIntent};
use crate::cloud::types::PeriodUnit;
use crate::money::Money;

/// What the intent row holds after it was written: the period and unit every attempt must send
/// (an intent that may have charged keeps its own, whatever the config says now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredIntent {
    /// Row id.
    pub id: i64,
    /// Length to send.
    pub period: u32,
    /// Unit to send.
    pub unit: PeriodUnit,
}

fn unreadable(what: String) -> DbError {
    DbError::Value(what)
}

/// Inserts the intent, or takes the one already written for its token. The stored period
/// and unit are replaced only when no attempt of it can have charged (it was never sent, or
/// every attempt was refused outright); otherwise the stored ones are kept and returned.
pub(super) fn upsert(
    tx: &mut Tx<'_>,
    intent: &NewIntent,
    now: DateTime<Utc>,
) -> Result<StoredIntent, DbError> {
    let existing: Option<Existing> = tx.first(
        "SELECT id, period, unit, maybe_charged, status, price_cents, counted_day FROM intents WHERE client_token = ?1",
        args![intent.client_token],
        |r| {
            Ok(Existing {
                id: r.get(0)?,
                period: r.get(1)?,
                unit: r.get(2)?,
                maybe_charged: r.get(3)?,
                status: r.get(4)?,
                price_cents: r.get(5)?,
                counted_day: r.get(6)?,
            })
        },
    )?;
    match existing {
        None => insert(tx, intent, now),
        Some(existing) => take_existing(tx, existing, intent, now),
    }
}

/// The intent already written for a token.
struct Existing {
    id: i64,
    period: u32,
    unit: String,
    maybe_charged: bool,
    status: String,
    price_cents: Option<i64>,
    counted_day: Option<String>,
}

/// A new intent, `prepared`.
fn insert(
    tx: &mut Tx<'_>,
    intent: &NewIntent,
    now: DateTime<Utc>,
) -> Result<StoredIntent, DbError> {
    let id = tx.one(
        "INSERT INTO intents (account, region, instance_id, old_expiry, period, unit, client_token, policy, why,
                              price_cents, currency, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'prepared', ?12, ?12) RETURNING id",
        args![
            intent.account,
            intent.region,
            intent.instance_id,
            intent.old_expiry,
            intent.period,
            intent.unit.as_str(),
            intent.client_token,
            intent.policy,
            intent.why,
            intent.price.as_ref().map(|p| p.cents),
            intent.price.as_ref().map(|p| p.currency.clone()),
            now,
        ],
        |r| r.get(0),
    )?;
    Ok(StoredIntent {
        id,
        period: intent.period,
        unit: intent.unit,
    })
}

/// The intent already written for the token: its period replaced when no attempt can have
/// charged, else kept; a first quote for the stored period kept (and counted as spend when
/// the intent already counts).
fn take_existing(
    tx: &mut Tx<'_>,
    existing: Existing,
    intent: &NewIntent,
    now: DateTime<Utc>,
) -> Result<StoredIntent, DbError> {
    let Existing { id, period, .. } = existing;
    let price_cents = intent.price.as_ref().map(|p| p.cents);
    let currency = intent.price.as_ref().map(|p| p.currency.clone());
    let stored_unit = PeriodUnit::parse(&existing.unit)
        .ok_or_else(|| unreadable(format!("intent {id}: unit {:?}", existing.unit)))?;
    let same = period == intent.period && stored_unit == intent.unit;
    let may_change =
        !existing.maybe_charged && matches!(existing.status.as_str(), "prepared" | "failed");
    if !same && may_change {
        tx.exec(
            "UPDATE intents SET period = ?2, unit = ?3, policy = ?4, why = ?5, price_cents = ?6, currency = ?7, updated_at = ?8
             WHERE id = ?1",
            args![
                id,
                intent.period,
                intent.unit.as_str(),
                intent.policy,
                intent.why,
                price_cents,
                currency,
                now
            ],
        )?;
        return Ok(StoredIntent {
            id,
            period: intent.period,
            unit: intent.unit,
        });
    }
    if same && existing.price_cents.is_none() && intent.price.is_some() {
        // A quote for the stored period: keep it, and if the intent was already counted, its
        // spend now counts too.
        tx.exec(
            "UPDATE intents SET price_cents = ?2, currency = ?3 WHERE id = ?1",
            args![id, price_cents, currency],
        )?;
        if let (Some(day), Some(price)) = (&existing.counted_day, &intent.price) {
            add_spend(tx, day, price)?;
        }
    }
    tx.exec(
        "UPDATE intents SET updated_at = ?2 WHERE id = ?1",
        args![id, now],
    )?;
    Ok(StoredIntent {
        id,
        period,
        unit: stored_unit,
    })
}

/// Marks the intent sent and opens an attempt row; returns the attempt's id.
pub(super) fn begin_attempt(
    tx: &mut Tx<'_>,
    intent_id: i64,
    now: DateTime<Utc>,
) -> Result<i64, DbError> {
    tx.exec(
        "UPDATE intents SET status = 'sent', attempts = attempts + 1, updated_at = ?2 WHERE id = ?1",
        args![intent_id, now],
    )?;
    // On PostgreSQL an attempt carries the epoch of the leader that started it (the write is
    // fenced, so the lease row holds this process's epoch): a later leader knows an older
    // epoch's open attempt as possibly sent.
    let sql = match tx.engine() {
        Engine::Sqlite => "INSERT INTO attempts (intent_id, started_at) VALUES (?1, ?2) RETURNING id",
        Engine::Postgres => {
            "INSERT INTO attempts (intent_id, started_at, epoch)
             VALUES (?1, ?2, (SELECT epoch FROM leader_lease WHERE name = 'ecs-renewd')) RETURNING id"
        }
    };
    tx.one(sql, args![intent_id, now], |r| r.get(0))
}

fn add_spend(tx: &mut Tx<'_>, day: &str, price: &Money) -> Result<(), DbError> {
    tx.exec(
        "INSERT INTO spend (day, currency, cents) VALUES (?1, ?2, ?3)
         ON CONFLICT (day, currency) DO UPDATE SET cents = spend.cents + excluded.cents",
        args![day, price.currency, price.cents],
    )?;
    Ok(())
}

/// Counts the intent toward `day`'s belts (its renewal and, when priced, its spend) unless it
/// was counted before: every intent is one ClientToken, so at most one charge.
pub(super) fn count_charge(tx: &mut Tx<'_>, intent_id: i64, day: &str) -> Result<(), DbError> {
    let counted: Option<(Option<i64>, Option<String>)> = tx.first(
        "UPDATE intents SET counted_day = ?2 WHERE id = ?1 AND counted_day IS NULL RETURNING price_cents, currency",
        args![intent_id, day],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let Some((price, currency)) = counted else {
        return Ok(());
    };
    tx.exec(
        "INSERT INTO renewal_days (day, renewals) VALUES (?1, 1)
         ON CONFLICT (day) DO UPDATE SET renewals = renewal_days.renewals + 1",
        args![day],
    )?;
    if let (Some(cents), Some(currency)) = (price, currency) {
        add_spend(tx, day, &Money { cents, currency })?;
    }
    Ok(())
}

/// Records the order of an attempt, counts the charge, clears the backoff.
pub(super) fn finish_ordered(
    tx: &mut Tx<'_>,
    intent_id: i64,
    attempt_id: i64,
    order_id: &str,
    request_id: &str,
    day: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let instance_id: String = tx.one(
        "SELECT instance_id FROM intents WHERE id = ?1",
        args![intent_id],
        |r| r.get(0),
    )?;
    tx.exec(
        "UPDATE intents SET status = 'ordered', order_id = ?2, request_id = ?3, error_code = NULL, error_class = NULL,
                            error_message = NULL, updated_at = ?4 WHERE id = ?1",
        args![intent_id, order_id, request_id, now],
    )?;
    tx.exec(
        "UPDATE attempts SET finished_at = ?2, outcome = 'ok', order_id = ?3, request_id = ?4 WHERE id = ?1",
        args![attempt_id, now, order_id, request_id],
    )?;
    count_charge(tx, intent_id, day)?;
    tx.exec(
        "DELETE FROM backoff WHERE instance_id = ?1",
        args![instance_id],
    )?;
    Ok(())
}

/// How a failed attempt ended, for [`finish_failed`].
#[derive(Debug, Clone)]
pub(super) struct Failed<'a> {
    pub failure: &'a FailureRecord,
    /// The charge may have happened (its answer was lost, or a busy answer said a charge with
    /// this token is in flight).
    pub unknown: bool,
    pub retry_at: DateTime<Utc>,
    pub day: &'a str,
}

/// Records a refused or unanswered attempt and when to try again; returns the failures in a
/// row. An unknown outcome makes the intent "maybe charged" for good and counts it.
pub(super) fn finish_failed(
    tx: &mut Tx<'_>,
    intent_id: i64,
    attempt_id: i64,
    failed: &Failed<'_>,
    now: DateTime<Utc>,
) -> Result<u32, DbError> {
    let Failed {
        failure,
        unknown,
        retry_at,
        day,
    } = failed;
    let outcome = if *unknown { "unknown" } else { "failed" };
    let (account, instance_id, old_expiry, maybe_charged): (String, String, DateTime<Utc>, bool) =
        tx.one(
            "SELECT account, instance_id, old_expiry, maybe_charged FROM intents WHERE id = ?1",
            args![intent_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
    tx.exec(
        "UPDATE intents SET status = ?2, maybe_charged = ?3, error_code = ?4, error_class = ?5, error_message = ?6,
                            request_id = ?7, updated_at = ?8
         WHERE id = ?1",
        args![
            intent_id,
            outcome,
            maybe_charged || *unknown,
            failure.code,
            failure.class.as_str(),
            failure.message,
            failure.request_id,
            now
        ],
    )?;
    tx.exec(
        "UPDATE attempts SET finished_at = ?2, outcome = ?3, error_code = ?4, error_class = ?5, error_message = ?6, request_id = ?7
         WHERE id = ?1",
        args![
            attempt_id,
            now,
            outcome,
            failure.code,
            failure.class.as_str(),
            failure.message,
            failure.request_id
        ],
    )?;
    if *unknown {
        count_charge(tx, intent_id, day)?;
    }
    tx.exec(
        "INSERT INTO backoff (instance_id, account, old_expiry, failures, retry_at, last_class, last_code)
         VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)
         ON CONFLICT (instance_id) DO UPDATE SET
             failures = CASE WHEN backoff.old_expiry = excluded.old_expiry THEN backoff.failures + 1 ELSE 1 END,
             account = excluded.account, old_expiry = excluded.old_expiry, retry_at = excluded.retry_at,
             last_class = excluded.last_class, last_code = excluded.last_code",
        args![
            instance_id,
            account,
            old_expiry,
            *retry_at,
            failure.class.as_str(),
            failure.code
        ],
    )?;
    tx.one(
        "SELECT failures FROM backoff WHERE instance_id = ?1",
        args![instance_id],
        |r| r.get(0),
    )
}

/// Records that an attempt was not sent after all (shutdown began first). The intent goes back
/// to where the earlier attempts left it: "unknown" if one may have charged, "failed" (with its
/// class and code, which the attempt did not touch) if one was refused, else "prepared".
pub(super) fn finish_not_sent(
    tx: &mut Tx<'_>,
    intent_id: i64,
    attempt_id: i64,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    tx.exec(
        "UPDATE intents SET status = CASE WHEN maybe_charged THEN 'unknown'
                                          WHEN error_class IS NOT NULL THEN 'failed'
                                          ELSE 'prepared' END,
                            attempts = attempts - 1, updated_at = ?2 WHERE id = ?1",
        args![intent_id, now],
    )?;
    tx.exec(
        "UPDATE attempts SET finished_at = ?2, outcome = 'not_sent' WHERE id = ?1",
        args![attempt_id, now],
    )?;
    Ok(())
}

/// Attempts still out when a pass starts were interrupted (the process stopped, or a ledger
/// write failed after the request left): each may have charged. Their intents become
/// "unknown" and are counted; returns how many.
pub(super) fn mark_interrupted(
    tx: &mut Tx<'_>,
    day: &str,
    now: DateTime<Utc>,
) -> Result<usize, DbError> {
    tx.exec(
        "UPDATE attempts SET finished_at = ?1, outcome = 'unknown', error_code = 'Interrupted',
                             error_message = 'the process stopped while this attempt was out: it may have charged'
         WHERE outcome IS NULL AND intent_id IN (SELECT id FROM intents WHERE status = 'sent')",
        args![now],
    )?;
    let ids: Vec<i64> = tx.all(
        "UPDATE intents SET status = 'unknown', maybe_charged = TRUE, updated_at = ?1 WHERE status = 'sent' RETURNING id",
        args![now],
        |r| r.get(0),
    )?;
    for id in &ids {
        count_charge(tx, *id, day)?;
    }
    Ok(ids.len())
}

/// Sets the price of a counted charge that was made unpriced (a spend limit switched on later
/// in the day needs it), and adds it to that day's spend.
pub(super) fn price_charge(tx: &mut Tx<'_>, intent_id: i64, price: &Money) -> Result<(), DbError> {
    let day: Option<String> = tx.first(
        "UPDATE intents SET price_cents = ?2, currency = ?3
             WHERE id = ?1 AND price_cents IS NULL AND counted_day IS NOT NULL RETURNING counted_day",
        args![intent_id, price.cents, price.currency],
        |r| r.get(0),
    )?;
    if let Some(day) = day {
        add_spend(tx, &day, price)?;
    }
    Ok(())
}
