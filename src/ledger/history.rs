//! Reading the ledger's history: the open intents and backoffs `decide` needs at the start of
//! a pass (`Histories`), and the money records `ecs-renewd history` shows.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::rows::{Read, Row};
use super::sql::args;
use super::{Ledger, LedgerError};
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
        let read = Read::of("loading open intents", "intents");
        let mut histories = Histories::default();
        // Intents refused outright, per (instance, expiry cycle): the next token is derived
        // from their count.
        let mut refusals: HashMap<(String, DateTime<Utc>), u32> = HashMap::new();
        self.each_row(
            read,
            "SELECT id, account, region, instance_id, old_expiry, period, unit, client_token, status, order_id,
                    error_code, error_class, maybe_charged
             FROM intents WHERE status IN ('prepared','sent','unknown','ordered','failed') ORDER BY id",
            args![],
            |r| {
                let (open, intent) = open_intent(r)?;
                let cycle = (open.instance_id.clone(), open.old_expiry);
                if matches!(intent.status, IntentStatus::Failed { .. }) && !intent.maybe_charged {
                    *refusals.entry(cycle.clone()).or_default() += 1;
                }
                // The latest intent wins (rows come in id order).
                let history = histories.by_instance.entry(cycle.0.clone()).or_default();
                history.refusals = refusals.get(&cycle).copied().unwrap_or(0);
                history.intent = Some(intent);
                histories.open.push(open);
                Ok(())
            },
        )?;
        self.each_row(
            Read::of("loading open intents", "backoff"),
            "SELECT instance_id, old_expiry, failures, retry_at FROM backoff",
            args![],
            |r| {
                let (old_expiry, retry_at) = (r.time("old_expiry")?, r.time("retry_at")?);
                let failures: u32 = r.get("failures")?;
                let instance_id: String = r.get("instance_id")?;
                let Some(history) = histories.by_instance.get_mut(&instance_id) else {
                    return Ok(());
                };
                if history
                    .intent
                    .as_ref()
                    .is_some_and(|i| i.old_expiry == old_expiry)
                {
                    history.failed_attempts = failures;
                    history.retry_at = Some(retry_at);
                }
                Ok(())
            },
        )?;
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
        self.rows(
            Read::of("reading history", "intents"),
            "SELECT id, created_at, account, region, instance_id, period, unit, client_token, status, order_id, request_id,
                    price_cents, currency, error_code, error_class, attempts, old_expiry, new_expiry, maybe_charged
             FROM intents WHERE CAST(?1 AS text) IS NULL OR instance_id = ?1 ORDER BY id",
            args![instance],
            |r| {
                let price = match (r.get("price_cents")?, r.get("currency")?) {
                    (Some(cents), Some(currency)) => Some(Money { cents, currency }.to_string()),
                    _ => None,
                };
                Ok(HistoryEntry {
                    at: r.time("created_at")?,
                    kind: RecordKind::Renewal,
                    account: r.get("account")?,
                    region: r.get("region")?,
                    instance_id: r.get("instance_id")?,
                    request: format!("{} {}", r.get::<u32>("period")?, r.unit("unit")?),
                    client_token: Some(r.get("client_token")?),
                    status: r.record_status("status")?,
                    order_id: r.get("order_id")?,
                    request_id: r.get("request_id")?,
                    price,
                    error: error_words(r.get("error_code")?, r.get("error_class")?),
                    attempts: r.get("attempts")?,
                    old_expiry: Some(r.time("old_expiry")?),
                    new_expiry: r.opt_time("new_expiry")?,
                    maybe_charged: r.get("maybe_charged")?,
                })
            },
        )
    }

    fn auto_renew_records(&self, instance: Option<&str>) -> Result<Vec<HistoryEntry>, LedgerError> {
        self.rows(
            Read::of("reading history", "auto_renew_changes"),
            "SELECT id, at, account, region, instance_id, status, duration, unit, result, request_id, error_code, error_class
             FROM auto_renew_changes WHERE CAST(?1 AS text) IS NULL OR instance_id = ?1 ORDER BY id",
            args![instance],
            |r| {
                Ok(HistoryEntry {
                    at: r.time("at")?,
                    kind: RecordKind::AutoRenew,
                    account: r.get("account")?,
                    region: r.get("region")?,
                    instance_id: r.get("instance_id")?,
                    request: format!(
                        "{} {} {}",
                        r.renewal_status("status")?,
                        r.get::<u32>("duration")?,
                        r.unit("unit")?
                    ),
                    client_token: None,
                    status: r.record_status("result")?,
                    order_id: None,
                    request_id: r.get("request_id")?,
                    price: None,
                    error: error_words(r.get("error_code")?, r.get("error_class")?),
                    attempts: 1,
                    old_expiry: None,
                    new_expiry: None,
                    maybe_charged: false,
                })
            },
        )
    }

    /// Every intent's token and order id (for invariant checks against the cloud's orders).
    pub fn tokens_and_orders(&self) -> Result<Vec<TokenRecord>, LedgerError> {
        self.rows(
            Read::of("reading tokens", "intents"),
            "SELECT id, client_token, order_id, status FROM intents ORDER BY id",
            args![],
            |r| {
                Ok(TokenRecord {
                    client_token: r.get("client_token")?,
                    order_id: r.get("order_id")?,
                    status: r.get("status")?,
                })
            },
        )
    }
}

/// An open intent's row: the intent as the pass sees it, and as `decide` sees it.
fn open_intent(r: &Row<'_>) -> Result<(OpenIntent, IntentView), LedgerError> {
    let status = match r.text("status")? {
        "prepared" => IntentStatus::Prepared,
        "sent" | "unknown" => IntentStatus::Unknown,
        "ordered" => IntentStatus::Ordered {
            order_id: r.required("order_id")?,
        },
        "failed" => IntentStatus::Failed {
            class: r.class("error_class")?,
            code: r.required("error_code")?,
        },
        other => return Err(r.unreadable("status", other)),
    };
    let old_expiry = r.time("old_expiry")?;
    let maybe_charged: bool = r.get("maybe_charged")?;
    let open = OpenIntent {
        id: r.get("id")?,
        account: r.get("account")?,
        region: r.get("region")?,
        instance_id: r.get("instance_id")?,
        old_expiry,
        maybe_charged,
    };
    let intent = IntentView {
        token: r.get("client_token")?,
        old_expiry,
        period: r.get("period")?,
        unit: r.unit("unit")?,
        status,
        maybe_charged,
    };
    Ok((open, intent))
}
