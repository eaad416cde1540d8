//! Reading the status table for `status` and the admin `/status`: pages in expiry order,
//! filtered by account, region and state, each line with its instance's last money-moving
//! outcome (read for the page's instances only, so a page costs the same in any fleet), and the
//! report both show (owned here, so the admin server and the CLI share it without one calling
//! into the other).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::rows::{Read, Row};
use super::sql::{Engine, Secs, args};
use super::{Ledger, LedgerError, StatusRow};

/// Which status lines, and where to start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusQuery {
    /// Only this account's lines.
    pub account: Option<String>,
    /// Only this region's lines.
    pub region: Option<String>,
    /// Only lines in this state (`renewed`, `failed`, `backoff`, ...).
    pub state: Option<String>,
    /// Start after this line (from a previous page's `next_after`).
    pub after: Option<StatusCursor>,
    /// At most this many lines (none: all).
    pub limit: Option<usize>,
}

/// A position in expiry order: the last line of a page. Written as
/// `<expiry unix seconds>:<instance id>:<account>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCursor {
    expires_at: i64,
    instance_id: String,
    account: String,
}

impl fmt::Display for StatusCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.expires_at, self.instance_id, self.account
        )
    }
}

impl FromStr for StatusCursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.splitn(3, ':');
        let (Some(secs), Some(instance_id), Some(account)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "{text:?} is not a position: pass the next_after of the previous page"
            ));
        };
        let expires_at = secs.parse().map_err(|_| {
            format!("{text:?} is not a position: pass the next_after of the previous page")
        })?;
        Ok(StatusCursor {
            expires_at,
            instance_id: instance_id.to_owned(),
            account: account.to_owned(),
        })
    }
}

/// The last pass, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastPass {
    /// When the pass began (UTC).
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When the pass ended (UTC).
    pub finished_at: chrono::DateTime<chrono::Utc>,
    /// ok, partial, failed.
    pub result: String,
    /// The pass's stored JSON summary (`PassSummary`); null if it does not parse.
    pub summary: serde_json::Value,
}

/// A source's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStatus {
    /// Name of the config account entry the source scans.
    pub account: String,
    /// The region the source scans, e.g. cn-hangzhou.
    pub region: String,
    /// Last complete scan.
    pub last_success: chrono::DateTime<chrono::Utc>,
}

/// `status --json` (and the admin endpoint `/status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    /// Path of the ledger file the report was read from.
    pub ledger: String,
    /// The last pass.
    pub last_pass: Option<LastPass>,
    /// Each source's last complete scan, by account and region.
    pub sources: Vec<SourceStatus>,
    /// Instances, by expiry.
    pub instances: Vec<StatusRow>,
    /// Where the next page starts (`/status?after=...`), when the page was full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

impl Ledger {
    /// The status report: the last pass, the sources' last complete scans, and one page of
    /// status lines (`StatusQuery::default()`: all of them).
    pub fn status_report(&self, query: &StatusQuery) -> Result<StatusReport, LedgerError> {
        let (instances, next) = self.status_page(query)?;
        Ok(StatusReport {
            ledger: self.path().display().to_string(),
            last_pass: self.last_pass()?.map(|p| LastPass {
                started_at: p.started_at,
                finished_at: p.finished_at,
                result: p.result,
                summary: serde_json::from_str(&p.summary).unwrap_or(serde_json::Value::Null),
            }),
            sources: self.source_successes()?,
            instances,
            next_after: next.map(|cursor| cursor.to_string()),
        })
    }

    /// Every status line, by expiry, with each instance's last money-moving outcome.
    pub fn status_rows(&self) -> Result<Vec<StatusRow>, LedgerError> {
        Ok(self.status_page(&StatusQuery::default())?.0)
    }

    /// One page of status lines by expiry (then instance, then account), and the position of
    /// its last line when more may follow.
    pub fn status_page(
        &self,
        query: &StatusQuery,
    ) -> Result<(Vec<StatusRow>, Option<StatusCursor>), LedgerError> {
        let after = query.after.as_ref();
        let mut out = self.rows(
            Read::of("reading the status lines", "instance_status"),
            "SELECT account || '/' || instance_id AS key, account, region, instance_id, name, expires_at, policy,
                    state, decision, due_at, reason, failed_attempts, next_retry_at, drift, deduction_overdue,
                    updated_at
             FROM instance_status
             -- Each parameter is compared before it is tested for NULL: PostgreSQL takes its
             -- type from the comparison.
             WHERE (account = ?1 OR ?1 IS NULL) AND (region = ?2 OR ?2 IS NULL) AND (state = ?3 OR ?3 IS NULL)
               AND ((expires_at, instance_id, account) > (?4, ?5, ?6) OR ?4 IS NULL)
             ORDER BY expires_at, instance_id, account LIMIT ?7",
            args![
                query.account,
                query.region,
                query.state,
                after.map(|a| Secs(
                    DateTime::<Utc>::from_timestamp(a.expires_at, 0).unwrap_or_default()
                )),
                after.map(|a| &a.instance_id),
                after.map(|a| &a.account),
                query.limit.map_or(i64::MAX, |l| l as i64)
            ],
            status_row,
        )?;
        let outcomes = self.last_outcomes_of(&out)?;
        for row in &mut out {
            row.last_outcome = outcomes
                .get(&(row.account.clone(), row.instance_id.clone()))
                .cloned();
        }
        let next = match (query.limit, out.last()) {
            (Some(limit), Some(last)) if out.len() == limit => Some(StatusCursor {
                expires_at: last.expires_at.timestamp(),
                instance_id: last.instance_id.clone(),
                account: last.account.clone(),
            }),
            _ => None,
        };
        Ok((out, next))
    }

    /// The last money-moving outcome of each of `lines`' instances, in words.
    fn last_outcomes_of(
        &self,
        lines: &[StatusRow],
    ) -> Result<HashMap<(String, String), String>, LedgerError> {
        if lines.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = serde_json::to_string(
            &lines
                .iter()
                .map(|l| [l.account.as_str(), l.instance_id.as_str()])
                .collect::<Vec<_>>(),
        )
        .expect("a list of string pairs always serializes");
        // The keys travel as one JSON parameter; each engine expands JSON in its own words.
        let sql = match self.engine() {
            Engine::Sqlite => {
                "SELECT id, account, instance_id, status, order_id, error_code, error_class, updated_at FROM intents
                 WHERE id IN (SELECT (SELECT MAX(i.id) FROM intents i
                                      WHERE i.account = k.value ->> 0 AND i.instance_id = k.value ->> 1)
                              FROM json_each(?1) k)"
            }
            Engine::Postgres => {
                "SELECT id, account, instance_id, status, order_id, error_code, error_class, updated_at FROM intents
                 WHERE id IN (SELECT (SELECT MAX(i.id) FROM intents i
                                      WHERE i.account = k.value ->> 0 AND i.instance_id = k.value ->> 1)
                              FROM json_array_elements(?1::text::json) k)"
            }
        };
        let rows = self.rows(
            Read::of("reading last outcomes", "intents"),
            sql,
            args![keys],
            |r| {
                let (status, at) = (r.text("status")?, super::ts(r.time("updated_at")?));
                let words = match (
                    r.get::<Option<String>>("order_id")?,
                    r.get::<Option<String>>("error_code")?,
                ) {
                    (Some(order), _) => format!("{status} (order {order}) at {at}"),
                    (None, Some(code)) => {
                        let class: Option<String> = r.get("error_class")?;
                        format!("{status}: {code} ({}) at {at}", class.unwrap_or_default())
                    }
                    (None, None) => format!("{status} at {at}"),
                };
                Ok(((r.get("account")?, r.get("instance_id")?), words))
            },
        )?;
        Ok(rows.into_iter().collect())
    }
}

/// One status line as the status table holds it (times in unix seconds).
fn status_row(r: &Row<'_>) -> Result<StatusRow, LedgerError> {
    Ok(StatusRow {
        account: r.get("account")?,
        region: r.get("region")?,
        instance_id: r.get("instance_id")?,
        name: r.get("name")?,
        expires_at: r.time("expires_at")?,
        policy: r.get("policy")?,
        state: r.state("state")?,
        decision: r.next_action("decision")?,
        due_at: r.opt_time("due_at")?,
        reason: r.get("reason")?,
        failed_attempts: r.get("failed_attempts")?,
        next_retry_at: r.opt_time("next_retry_at")?,
        drift: r.get("drift")?,
        deduction_overdue: r.get("deduction_overdue")?,
        last_outcome: None,
        updated_at: r.time("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written() {
        let cursor = StatusCursor {
            expires_at: 1_767_225_600,
            instance_id: "i-bp1".into(),
            account: "prod:cn".into(),
        };
        assert_eq!(cursor.to_string().parse::<StatusCursor>(), Ok(cursor));
        assert!("i-bp1".parse::<StatusCursor>().is_err());
        assert!("x:i-bp1:prod".parse::<StatusCursor>().is_err());
    }
}
