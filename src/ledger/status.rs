//! The status table: one line per instance, written by each pass, pruned of instances no
//! longer listed, and read page by page for the per-instance metrics.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::rows::Read;
use super::sql::{Secs, args, values};
use super::{Ledger, LedgerError};
use crate::policy::{InstanceState, NextAction};

/// One instance's line in the status table (the latest pass's view of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusRow {
    /// Name of the config account entry the instance was listed through.
    pub account: String,
    /// The region the instance was scanned in, e.g. cn-hangzhou.
    pub region: String,
    /// The ECS instance id (with `account`, the line's key).
    pub instance_id: String,
    /// The instance's display name, as ECS lists it.
    pub name: String,
    /// When the instance's paid period ends, as last observed or verified.
    pub expires_at: DateTime<Utc>,
    /// Name of the policy that matched the instance (`None`: no policy matched).
    pub policy: Option<String>,
    /// The instance's state (e.g. `due`, `backoff`, `excluded`).
    pub state: InstanceState,
    /// What a pass does next with it.
    pub decision: NextAction,
    /// When the next action is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Why the instance is in this state, in words (from `decide` or the pass's outcome).
    pub reason: String,
    /// Failed attempts in a row.
    pub failed_attempts: u32,
    /// Next retry, when backing off.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// The provider's auto-renew settings differ from the policy.
    pub drift: bool,
    /// The provider's deduction should have extended the expiry by now.
    pub deduction_overdue: bool,
    /// The last money-moving outcome, in words (filled in when read).
    pub last_outcome: Option<String>,
    /// When this line was written.
    pub updated_at: DateTime<Utc>,
}

/// A change to one instance's status line after the pass acted on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    /// Name of the config account entry; with `instance_id`, which line to change.
    pub account: String,
    /// The ECS instance id whose line changes.
    pub instance_id: String,
    /// New state.
    pub state: InstanceState,
    /// What a pass does next with the instance.
    pub decision: NextAction,
    /// New reason.
    pub reason: String,
    /// New due time.
    pub due_at: Option<DateTime<Utc>>,
    /// Failed attempts in a row.
    pub failed_attempts: u32,
    /// Next retry.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// New expiry, when verified.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The per-instance fields metrics need, borrowed from a status row.
#[derive(Debug, Clone, Copy)]
pub struct MetricRow<'a> {
    /// Name of the config account entry (the series' `account` label).
    pub account: &'a str,
    /// The instance's region (the series' `region` label).
    pub region: &'a str,
    /// The ECS instance id (the series' `instance_id` label).
    pub instance_id: &'a str,
    /// Policy (`none` when no policy matched).
    pub policy: &'a str,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// Next action, unix seconds.
    pub next_action_at: Option<i64>,
    /// The instance's state word (the `state` label of `instance_state`).
    pub state: &'a str,
    /// Failed attempts.
    pub failed_attempts: i64,
    /// Whether auto-renew settings differ from the policy (`instance_auto_renew_drift`).
    pub drift: bool,
    /// Deduction overdue.
    pub deduction_overdue: bool,
}

impl Ledger {
    /// Writes (or overwrites) status lines in one transaction, tagged with the
    /// pass's `generation`.
    pub fn write_status(&self, rows: &[StatusRow], generation: i64) -> Result<(), LedgerError> {
        let rows = last_line_per_instance(rows);
        self.write_operational("writing status lines", |tx| {
            tx.insert_rows(
                "instance_status",
                &[
                    "account", "region", "instance_id", "name", "expires_at", "policy", "state",
                    "decision", "due_at", "reason", "failed_attempts", "next_retry_at", "drift",
                    "deduction_overdue", "updated_at", "generation",
                ],
                "ON CONFLICT (account, instance_id) DO UPDATE SET region = excluded.region, name = excluded.name,
                     expires_at = excluded.expires_at, policy = excluded.policy, state = excluded.state,
                     decision = excluded.decision, due_at = excluded.due_at, reason = excluded.reason,
                     failed_attempts = excluded.failed_attempts, next_retry_at = excluded.next_retry_at,
                     drift = excluded.drift, deduction_overdue = excluded.deduction_overdue,
                     updated_at = excluded.updated_at, generation = excluded.generation",
                &rows,
                |row| {
                    values![
                        row.account,
                        row.region,
                        row.instance_id,
                        row.name,
                        Secs(row.expires_at),
                        row.policy,
                        row.state.as_str(),
                        row.decision.as_str(),
                        row.due_at.map(Secs),
                        row.reason,
                        row.failed_attempts,
                        row.next_retry_at.map(Secs),
                        row.drift,
                        row.deduction_overdue,
                        Secs(row.updated_at),
                        generation,
                    ]
                },
            )?;
            Ok(())
        })?;
        // Fifty status lines fill about as many pages as one renewal's record.
        self.committed((rows.len() / 50) as u32 + 1);
        Ok(())
    }

    /// Applies what the pass did to the lines of the instances it acted on.
    pub fn update_status(
        &self,
        updates: &[StatusUpdate],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.write_operational("updating status lines", |tx| {
            tx.exec_many(
                "UPDATE instance_status SET state = ?3, decision = ?4, reason = ?5, due_at = ?6, failed_attempts = ?7,
                     next_retry_at = ?8, expires_at = COALESCE(?9, expires_at), updated_at = ?10
                 WHERE account = ?1 AND instance_id = ?2",
                updates,
                |u| {
                    values![
                        u.account,
                        u.instance_id,
                        u.state.as_str(),
                        u.decision.as_str(),
                        u.reason,
                        u.due_at.map(Secs),
                        u.failed_attempts,
                        u.next_retry_at.map(Secs),
                        u.expires_at.map(Secs),
                        Secs(now),
                    ]
                },
            )?;
            Ok(())
        })?;
        self.committed((updates.len() / 50) as u32 + 1);
        Ok(())
    }

    /// Drops the lines of instances the pass with `generation` did not see (released, or out
    /// of the window) in the sources it scanned completely.
    pub fn prune_status(
        &self,
        generation: i64,
        complete: &[(String, String)],
        down: &[(String, String)],
    ) -> Result<(), LedgerError> {
        self.write_operational("pruning status lines", |tx| {
            for (account, region) in complete {
                tx.exec(
                    "DELETE FROM instance_status WHERE generation < ?1 AND account = ?2 AND region = ?3",
                    args![generation, account, region],
                )?;
            }
            // A source that could not be scanned keeps its lines (its instances are not known
            // to be gone), except those of instances another entry listed in this pass:
            // instance ids are unique across Alibaba Cloud, so the newer line stands for the
            // instance.
            for (account, region) in down {
                tx.exec(
                    "DELETE FROM instance_status WHERE account = ?2 AND region = ?3 AND generation < ?1
                       AND instance_id IN (SELECT s.instance_id FROM instance_status s
                                           WHERE s.generation = ?1 AND s.account <> ?2)",
                    args![generation, account, region],
                )?;
            }
            Ok(())
        })
    }

    /// The fields metrics need for up to `limit` status lines after the key `after` (account,
    /// instance), in key order, one at a time. Returns the last key when the page was full
    /// (more may follow). The read connection is held only for the page: a scrape that pages
    /// through the fleet never keeps it (or a read snapshot) while its client is slow.
    pub fn metric_rows_page(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
        mut each: impl FnMut(MetricRow<'_>),
    ) -> Result<Option<(String, String)>, LedgerError> {
        // Two statements, so SQLite starts each later page at its key in the primary-key index
        // (`?1 IS NULL OR ...` in one statement would scan from the start on every page). Both
        // number the limit ?3, so they bind the same parameters.
        let sql = match after {
            None => {
                "SELECT account, region, instance_id, COALESCE(policy, 'none') AS policy, expires_at, due_at, state,
                        failed_attempts, drift, deduction_overdue
                 FROM instance_status
                 WHERE CAST(?1 AS text) IS NULL AND CAST(?2 AS text) IS NULL
                 ORDER BY account, instance_id LIMIT ?3"
            }
            Some(_) => {
                "SELECT account, region, instance_id, COALESCE(policy, 'none') AS policy, expires_at, due_at, state,
                        failed_attempts, drift, deduction_overdue
                 FROM instance_status
                 WHERE (account, instance_id) > (?1, ?2)
                 ORDER BY account, instance_id LIMIT ?3"
            }
        };
        let (after_account, after_instance) = after.unzip();
        let mut count = 0;
        let mut last = None;
        self.each_row(
            Read::of("reading status lines for metrics", "instance_status"),
            sql,
            args![after_account, after_instance, limit as i64],
            |r| {
                let row = MetricRow {
                    account: r.text("account")?,
                    region: r.text("region")?,
                    instance_id: r.text("instance_id")?,
                    policy: r.text("policy")?,
                    expires_at: r.time("expires_at")?.timestamp(),
                    next_action_at: r.opt_time("due_at")?.map(|t| t.timestamp()),
                    state: r.text("state")?,
                    failed_attempts: r.get("failed_attempts")?,
                    drift: r.get("drift")?,
                    deduction_overdue: r.get("deduction_overdue")?,
                };
                count += 1;
                if count == limit {
                    last = Some((row.account.to_owned(), row.instance_id.to_owned()));
                }
                each(row);
                Ok(())
            },
        )?;
        Ok(last)
    }
}

/// The lines to write, with only the last of an instance that comes twice (what writing them
/// one after another leaves): one statement may not change a row twice.
fn last_line_per_instance(rows: &[StatusRow]) -> Vec<&StatusRow> {
    fn key(row: &StatusRow) -> (&str, &str) {
        (&row.account, &row.instance_id)
    }
    let last: std::collections::HashMap<_, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| (key(row), i))
        .collect();
    rows.iter()
        .enumerate()
        .filter(|(i, row)| last[&key(row)] == *i)
        .map(|(_, row)| row)
        .collect()
}
