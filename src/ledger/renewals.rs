//! The renewal path's writes: the intent (written before RenewInstance is sent), its attempts
//! and their outcomes, attempts a stopped process left out, settling an intent once the expiry
//! moved, and pricing a charge made unpriced. The statements themselves are in `intents`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::rows::Read;
use super::sql::{DbError, Engine, args};
use super::{Ledger, LedgerError, StoredIntent, intents, ts};
use crate::closed_enum;
use crate::cloud::error::ErrorClass;
use crate::cloud::types::PeriodUnit;
use crate::money::Money;

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

/// An intent to settle: its row and the expiry its instance now shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    /// The intent's ledger row.
    pub intent_id: i64,
    /// The expiry now shown, past the one the intent extends.
    pub new_expiry: DateTime<Utc>,
}

closed_enum! {
    /// What a settled intent became.
    pub enum Settlement {
        /// Its own order extended the expiry.
        Verified => "verified",
        /// The expiry moved without its order (the provider's auto-renew, a person, or an
        /// attempt whose answer was never recorded).
        Superseded => "superseded",
    }
}

/// The statements that settle a list of intents, given as one JSON parameter
/// `[[intent_id, "new expiry"], …]`: each engine expands JSON in its own words.
struct SettleSql {
    /// The listed intents that may have charged and were never counted.
    uncounted: &'static str,
    /// Clears the backoff of the listed intents' instances.
    clear_backoff: &'static str,
    /// Settles the listed intents; returns each one's id and new status.
    settle: &'static str,
}

const SETTLE_SQLITE: SettleSql = SettleSql {
    uncounted: "SELECT id FROM intents WHERE maybe_charged AND counted_day IS NULL
                  AND id IN (SELECT json_extract(value, '$[0]') FROM json_each(?1))",
    clear_backoff: "DELETE FROM backoff WHERE instance_id IN (
                        SELECT instance_id FROM intents
                        WHERE id IN (SELECT json_extract(value, '$[0]') FROM json_each(?1)))",
    settle: "UPDATE intents SET status = CASE status WHEN 'ordered' THEN 'verified' ELSE 'superseded' END,
                 new_expiry = json_extract(j.value, '$[1]'), verified_at = ?2, updated_at = ?2
             FROM json_each(?1) AS j WHERE intents.id = json_extract(j.value, '$[0]')
             RETURNING intents.id, intents.status",
};

const SETTLE_POSTGRES: SettleSql = SettleSql {
    uncounted: "SELECT id FROM intents WHERE maybe_charged AND counted_day IS NULL
                  AND id IN (SELECT (j.value->>0)::bigint FROM json_array_elements(?1::text::json) AS j)",
    clear_backoff: "DELETE FROM backoff WHERE instance_id IN (
                        SELECT instance_id FROM intents
                        WHERE id IN (SELECT (j.value->>0)::bigint FROM json_array_elements(?1::text::json) AS j))",
    settle: "UPDATE intents SET status = CASE status WHEN 'ordered' THEN 'verified' ELSE 'superseded' END,
                 new_expiry = (j.value->>1)::timestamptz, verified_at = ?2, updated_at = ?2
             FROM json_array_elements(?1::text::json) AS j WHERE intents.id = (j.value->>0)::bigint
             RETURNING intents.id, intents.status",
};

impl Ledger {
    /// Writes (durably) the intent to renew, or finds the one already written for this token
    /// (see [`StoredIntent`]).
    pub fn prepare(
        &self,
        intent: &NewIntent,
        now: DateTime<Utc>,
    ) -> Result<StoredIntent, LedgerError> {
        self.write("recording a renewal intent", |tx| {
            intents::upsert(tx, intent, now)
        })
    }

    /// Records that an attempt is being sent (before it leaves the process).
    pub fn begin_attempt(&self, intent_id: i64, now: DateTime<Utc>) -> Result<i64, LedgerError> {
        self.write("recording a renewal attempt", |tx| {
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
        self.write_shared("recording a renewal intent and its attempt", move |tx| {
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
        self.write_shared("recording a renewal's order", move |tx| {
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
        self.write_shared("recording a failed renewal", move |tx| {
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
        self.write_shared("recording an unsent renewal", move |tx| {
            intents::finish_not_sent(tx, intent_id, attempt_id, now)
        })
    }

    /// Whether any attempt is still out (an intent sent and never answered): after a takeover,
    /// the last leader's pass may not have finished.
    pub fn attempts_out(&self) -> Result<bool, LedgerError> {
        Ok(self
            .first_row(
                Read::of("looking for attempts still out", "intents"),
                "SELECT EXISTS (SELECT 1 FROM intents WHERE status = 'sent') AS any",
                args![],
                |r| r.get("any"),
            )?
            .unwrap_or_default())
    }

    /// Marks attempts that were still out when the previous pass or process ended as unknown
    /// outcomes (they may have charged) and counts them toward `day`; returns how many. Run at
    /// the start of a pass, when no attempt of this writer can be out.
    pub fn mark_interrupted(&self, day: &str, now: DateTime<Utc>) -> Result<usize, LedgerError> {
        // Nearly always there is none: a read, not a write transaction (a sync to disk) per pass.
        let any: bool = self
            .first_row(
                Read::of("looking for interrupted renewal attempts", "intents"),
                "SELECT EXISTS (SELECT 1 FROM intents WHERE status = 'sent') AS any",
                args![],
                |r| r.get("any"),
            )?
            .unwrap_or_default();
        if !any {
            return Ok(0);
        }
        self.write("recording interrupted renewal attempts", |tx| {
            intents::mark_interrupted(tx, day, now)
        })
    }

    /// Closes an intent whose instance's expiry moved past its old expiry: `Verified` if the
    /// order was ours, `Superseded` otherwise. Clears the backoff.
    pub fn settle(
        &self,
        intent_id: i64,
        new_expiry: DateTime<Utc>,
        day: &str,
        now: DateTime<Utc>,
    ) -> Result<Settlement, LedgerError> {
        let settled = self.settle_all(
            &[Settle {
                intent_id,
                new_expiry,
            }],
            day,
            now,
        )?;
        settled.first().copied().ok_or(LedgerError::Interrupted {
            what: "settling a renewal",
        })
    }

    /// [`Ledger::settle`] for many intents in one transaction (one sync to disk, not one each);
    /// returns what each became, in order. An intent that may have charged and was never
    /// counted (written before counting existed) is counted toward `day`.
    pub fn settle_all(
        &self,
        intents: &[Settle],
        day: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Settlement>, LedgerError> {
        if intents.is_empty() {
            return Ok(Vec::new());
        }
        // Set-based: a verification round settles hundreds of intents, and three statements
        // per intent cost more than the sync. The list travels as one JSON parameter.
        let list = serde_json::Value::Array(
            intents
                .iter()
                .map(|s| serde_json::json!([s.intent_id, ts(s.new_expiry)]))
                .collect(),
        )
        .to_string();
        let sql = match self.engine() {
            Engine::Sqlite => &SETTLE_SQLITE,
            Engine::Postgres => &SETTLE_POSTGRES,
        };
        self.write("settling a renewal", |tx| {
            let uncounted: Vec<i64> = tx.all(sql.uncounted, args![list], |r| r.get(0))?;
            for id in uncounted {
                intents::count_charge(tx, id, day)?;
            }
            tx.exec(sql.clear_backoff, args![list])?;
            let settled: HashMap<i64, String> = tx
                .all(sql.settle, args![list, now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .into_iter()
                .collect();
            // Every intent asked for must exist, and come back settled; a missing one (or a
            // status this build does not know) keeps nothing of the round.
            intents
                .iter()
                .map(|s| {
                    settled
                        .get(&s.intent_id)
                        .and_then(|text| Settlement::parse(text))
                })
                .collect::<Option<Vec<Settlement>>>()
                .ok_or_else(|| DbError::Value("an intent to settle is not in the ledger".into()))
        })
    }

    /// Sets the price of a counted charge made unpriced, adding it to its day's spend.
    pub fn price_charge(&self, intent_id: i64, price: &Money) -> Result<(), LedgerError> {
        self.write("recording the price of an earlier charge", |tx| {
            intents::price_charge(tx, intent_id, price)
        })
    }
}
