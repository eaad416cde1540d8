//! Reading the ledger's history: the open intents and backoffs `decide` needs at the start of
//! a pass (`Histories`), and the money records `ecs-renewd history` shows.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Ledger, LedgerError, rows};
use crate::closed_enum;
use crate::money::Money;
use crate::policy::{History, HistorySource, IntentStatus, IntentView};

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

closed_enum! {
    /// What a money-moving record is.
    pub enum RecordKind {
        /// A RenewInstance intent and its attempts.
        Renewal => "renewal",
        /// A ModifyInstanceAutoRenewAttribute change.
        AutoRenew => "auto_renew",
    }
}

closed_enum! {
    /// Where a record stands: a renewal intent's status or an auto-renew change's result, as
    /// the ledger stores them.
    pub enum RecordStatus {
        /// Written, not sent yet.
        Prepared => "prepared",
        /// An attempt is out (or was, when the process stopped).
        Sent => "sent",
        /// Sent without an answer: may have charged; resent with its token.
        Unknown => "unknown",
        /// The service answered with an order.
        Ordered => "ordered",
        /// Refused; retried after its backoff.
        Failed => "failed",
        /// The new expiry showed after our order.
        Verified => "verified",
        /// The expiry moved without our order.
        Superseded => "superseded",
        /// An auto-renew change written, its answer not recorded yet.
        Pending => "pending",
        /// An auto-renew change the service accepted.
        Accepted => "ok",
        /// An auto-renew change that a later scan did not see in effect.
        Mismatch => "mismatch",
    }
}

/// A record's error as `history` shows it: the code and its class, when there is a code.
fn error_words(code: Option<String>, class: Option<String>) -> Option<String> {
    code.map(|code| format!("{code} ({})", class.unwrap_or_default()))
}

/// One money-moving record for `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// A renewal or an auto-renew change.
    pub kind: RecordKind,
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
    /// Where the record stands (the intent's status, or the change's result).
    pub status: RecordStatus,
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

impl HistorySource for Histories {
    fn history(&self, instance_id: &str) -> History {
        self.by_instance
            .get(instance_id)
            .cloned()
            .unwrap_or_default()
    }
}

/// One intent's ClientToken, its order (when one is recorded) and its status word, for
/// checks that every charge in the cloud has its record and every record its charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// The ClientToken the intent's requests carried.
    pub client_token: String,
    /// The order the service returned, when one was recorded.
    pub order_id: Option<String>,
    /// The intent's status as stored (`ordered`, `verified`, `failed`, ...).
    pub status: String,
}

impl Ledger {
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
                kind: RecordKind::Renewal,
                account: text(2)?,
                region: text(3)?,
                instance_id: text(4)?,
                request: format!(
                    "{} {}",
                    r.get::<_, u32>(5).map_err(read)?,
                    cell.unit("unit", &text(6)?)?
                ),
                client_token: Some(text(7)?),
                status: cell.record_status("status", &text(8)?)?,
                order_id: optional(9)?,
                request_id: optional(10)?,
                price: match (price, optional(12)?) {
                    (Some(cents), Some(currency)) => Some(Money { cents, currency }.to_string()),
                    _ => None,
                },
                error: error_words(optional(13)?, optional(14)?),
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
                kind: RecordKind::AutoRenew,
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
                status: cell.record_status("result", &text(8)?)?,
                order_id: None,
                request_id: optional(9)?,
                price: None,
                error: error_words(optional(10)?, optional(11)?),
                attempts: 1,
                old_expiry: None,
                new_expiry: None,
                maybe_charged: false,
            });
        }
        Ok(entries)
    }

    /// Every intent's token and order id (for invariant checks against the cloud's orders).
    pub fn tokens_and_orders(&self) -> Result<Vec<TokenRecord>, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading tokens",
            source,
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT client_token, order_id, status FROM intents ORDER BY id")
            .map_err(read)?;
        let rows = statement
            .query_map([], |r| {
                Ok(TokenRecord {
                    client_token: r.get(0)?,
                    order_id: r.get(1)?,
                    status: r.get(2)?,
                })
            })
            .map_err(read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read)?;
        Ok(rows)
    }
}
