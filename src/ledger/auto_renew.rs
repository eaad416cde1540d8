//! Auto-renew changes: written as pending before they are requested, their answers recorded,
//! and checked against the attributes a later pass reads.

use chrono::{DateTime, Utc};

use super::rows::Read;
use super::sql::{args, values};
use super::{Ledger, LedgerError};
use crate::cloud::error::ErrorClass;

/// Auto-renew changes about to be requested with one call.
#[derive(Debug, Clone, Copy)]
pub struct PendingAutoRenew<'a> {
    /// Name of the config account entry whose client makes the call.
    pub account: &'a str,
    /// The region all of `instance_ids` are in.
    pub region: &'a str,
    /// The attributes to ask for.
    pub target: &'a crate::cloud::ecs::AutoRenewTarget,
    /// Ids of the instances to set to `target`; each gets its own `pending` row.
    pub instance_ids: &'a [String],
}

/// The answer to one auto-renew call.
#[derive(Debug, Clone, Copy)]
pub struct AutoRenewAnswer<'a> {
    /// Request id.
    pub request_id: Option<&'a str>,
    /// Error code and class when it failed.
    pub error: Option<(&'a str, ErrorClass)>,
}

/// An auto-renew change sent in an earlier pass whose effect has not been checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncheckedChange {
    /// The change's ledger row.
    pub id: i64,
    /// Name of the config account entry it was sent through.
    pub account: String,
    /// The ECS instance id it was for.
    pub instance_id: String,
    /// What it set.
    pub target: crate::cloud::ecs::AutoRenewTarget,
}

/// Whether a change was seen in effect in a later scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeCheck {
    /// The change's ledger row.
    pub id: i64,
    /// The attributes read match what the change set.
    pub took_effect: bool,
}

impl Ledger {
    /// Writes the auto-renew changes about to be requested as `pending` rows, all in one
    /// transaction, before any call leaves (intent before act, as for renewals); returns each
    /// batch's row ids in order.
    pub fn begin_auto_renew_changes(
        &self,
        batches: &[PendingAutoRenew<'_>],
        now: DateTime<Utc>,
    ) -> Result<Vec<Vec<i64>>, LedgerError> {
        // One row per instance, all written in one round of pipelined statements.
        let rows: Vec<(&PendingAutoRenew<'_>, &String)> = batches
            .iter()
            .flat_map(|batch| batch.instance_ids.iter().map(move |id| (batch, id)))
            .collect();
        self.write("recording auto-renew changes before they are sent", |tx| {
            let ids = tx.one_each(
                "INSERT INTO auto_renew_changes (at, account, region, instance_id, status, duration, unit, result)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending') RETURNING id",
                &rows,
                |(batch, id)| {
                    values![
                        now,
                        batch.account,
                        batch.region,
                        id,
                        batch.target.status.as_str(),
                        batch.target.duration,
                        batch.target.unit.as_str(),
                    ]
                },
                |r| r.get::<i64>(0),
            )?;
            let mut ids = ids.into_iter();
            Ok(batches
                .iter()
                .map(|batch| ids.by_ref().take(batch.instance_ids.len()).collect())
                .collect())
        })
    }

    /// Records each call's answer on the rows written for it by
    /// [`Ledger::begin_auto_renew_changes`], in one transaction: a pass's changes across all
    /// sources are one sync to disk, not one per call.
    pub fn finish_auto_renew_changes(
        &self,
        answers: &[(&[i64], AutoRenewAnswer<'_>)],
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        self.write("recording auto-renew changes", |tx| {
            // A call's rows were written one after another: one statement per call (≤100
            // rows) rather than one per row.
            for (rows, answer) in answers {
                let contiguous = rows.windows(2).all(|w| w[1] == w[0] + 1);
                let runs: Vec<(i64, i64)> = match (rows.first(), rows.last()) {
                    (Some(first), Some(last)) if contiguous => vec![(*first, *last)],
                    _ => rows.iter().map(|id| (*id, *id)).collect(),
                };
                for (first, last) in runs {
                    tx.exec(
                        "UPDATE auto_renew_changes SET at = ?3, result = ?4, request_id = ?5, error_code = ?6, error_class = ?7
                         WHERE id BETWEEN ?1 AND ?2",
                        args![
                            first,
                            last,
                            now,
                            if answer.error.is_some() { "failed" } else { "ok" },
                            answer.request_id,
                            answer.error.map(|e| e.0.to_owned()),
                            answer.error.map(|e| e.1.as_str())
                        ],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Auto-renew changes not yet checked against a later scan: accepted ones, and pending
    /// ones whose answer was never recorded (the process stopped while they were out).
    pub fn unchecked_auto_renew_changes(&self) -> Result<Vec<UncheckedChange>, LedgerError> {
        self.rows(
            Read::of("reading auto-renew changes", "auto_renew_changes"),
            "SELECT id, account, instance_id, status, duration, unit FROM auto_renew_changes
             WHERE result IN ('pending', 'ok') ORDER BY id",
            args![],
            |r| {
                Ok(UncheckedChange {
                    id: r.get("id")?,
                    account: r.get("account")?,
                    instance_id: r.get("instance_id")?,
                    target: crate::cloud::ecs::AutoRenewTarget {
                        status: r.renewal_status("status")?,
                        duration: r.get("duration")?,
                        unit: r.unit("unit")?,
                    },
                })
            },
        )
    }

    /// Marks accepted auto-renew changes as seen in effect (`verified`) or not (`mismatch`),
    /// all in one transaction.
    pub fn check_auto_renew_changes(&self, checks: &[ChangeCheck]) -> Result<(), LedgerError> {
        if checks.is_empty() {
            return Ok(());
        }
        self.write("checking auto-renew changes", |tx| {
            for check in checks {
                let result = if check.took_effect {
                    "verified"
                } else {
                    "mismatch"
                };
                tx.exec(
                    "UPDATE auto_renew_changes SET result = ?2 WHERE id = ?1",
                    args![check.id, result],
                )?;
            }
            Ok(())
        })
    }
}
