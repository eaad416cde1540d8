//! Auto-renew enforcement: set the attributes the policies want, batched ≤100 ids per call and
//! grouped by target (RenewalStatus, Duration, PeriodUnit) per source. Each accepted change is
//! checked against the next pass's attributes (which every pass reads anyway), so verification
//! costs no extra calls; a change that did not take is recorded as a mismatch and keeps the
//! drift metric up.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::assess::AutoRenewChange;
use crate::accounts::AccountClient;
use crate::cloud::ecs::AutoRenewTarget;
use crate::ledger::{AutoRenewRecord, Ledger, LedgerError};

/// Target groups per source.
type BySource = BTreeMap<(Arc<str>, Arc<str>), Vec<(AutoRenewTarget, Vec<(usize, String)>)>>;

/// Changes grouped by (account, region, target): one set of calls each.
type Groups = BTreeMap<(Arc<str>, Arc<str>, AutoRenewTargetKey), Vec<(usize, String)>>;
use crate::metrics::Metrics;

/// What the changes came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangeReport {
    /// Instances changed.
    pub changed: usize,
    /// Instances whose change failed.
    pub failed: usize,
    /// Rows (assessment indices) whose change failed.
    pub failed_rows: Vec<usize>,
}

/// Applies the changes (nothing when `dry_run`).
pub async fn apply(
    accounts: &[AccountClient],
    ledger: &Ledger,
    metrics: &Metrics,
    changes: Vec<AutoRenewChange>,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<ChangeReport, LedgerError> {
    let mut report = ChangeReport::default();
    let mut groups: Groups = BTreeMap::new();
    for change in changes {
        groups
            .entry((
                change.account.clone(),
                change.region.clone(),
                AutoRenewTargetKey(change.target),
            ))
            .or_default()
            .push((change.row, change.instance_id));
    }
    if dry_run {
        for ((account, region, AutoRenewTargetKey(target)), members) in &groups {
            tracing::info!(account = %account, region = %region, instances = members.len(), status = %target.status,
                "dry run: would set auto-renew attributes");
        }
        return Ok(report);
    }
    // Sources in parallel (each has its own rate limit); within a source, one group at a time.
    let mut by_source: BySource = BTreeMap::new();
    for ((account, region, AutoRenewTargetKey(target)), members) in groups {
        by_source
            .entry((account, region))
            .or_default()
            .push((target, members));
    }
    let calls = by_source
        .into_iter()
        .map(|((account, region), groups)| async move {
            let mut done = Vec::new();
            let Some(client) = accounts.iter().find(|a| *a.name == *account) else {
                return done;
            };
            for (target, members) in groups {
                let ids: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
                let batches = client.client.modify_auto_renew(&region, &ids, target).await;
                done.push((account.clone(), region.clone(), target, members, batches));
            }
            done
        });
    let done: Vec<_> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect();
    // Every call's outcome is recorded in one transaction (one sync to disk for the pass's
    // changes across all sources), before it is counted or logged.
    let codes: Vec<Vec<Option<String>>> = done
        .iter()
        .map(|(_, _, _, _, batches)| {
            batches
                .iter()
                .map(|b| b.result.as_ref().err().map(|e| e.code_or_kind()))
                .collect()
        })
        .collect();
    let mut records = Vec::new();
    for ((account, region, target, _, batches), codes) in done.iter().zip(&codes) {
        for (batch, code) in batches.iter().zip(codes) {
            let record = match (&batch.result, code) {
                (Ok(request_id), _) => AutoRenewRecord {
                    account,
                    region,
                    target,
                    result: "ok",
                    request_id: Some(request_id),
                    error: None,
                },
                (Err(error), code) => AutoRenewRecord {
                    account,
                    region,
                    target,
                    result: "failed",
                    request_id: error.request_id(),
                    error: Some((code.as_deref().unwrap_or_default(), error.class())),
                },
            };
            records.push((record, batch.instance_ids.as_slice()));
        }
    }
    ledger.record_auto_renew_batches(&records, now)?;
    for (account, region, target, members, batches) in &done {
        let rows: BTreeMap<&str, usize> = members
            .iter()
            .map(|(row, id)| (id.as_str(), *row))
            .collect();
        for batch in batches {
            match &batch.result {
                Ok(request_id) => {
                    metrics
                        .auto_renew_changes_total
                        .with_label_values(&["ok"])
                        .inc_by(batch.instance_ids.len() as u64);
                    report.changed += batch.instance_ids.len();
                    tracing::info!(account = %account, region = %region, instances = batch.instance_ids.len(),
                        status = %target.status, duration = target.duration, unit = %target.unit, request_id = %request_id,
                        "auto-renew attributes set");
                }
                Err(error) => {
                    metrics
                        .auto_renew_changes_total
                        .with_label_values(&["failed"])
                        .inc_by(batch.instance_ids.len() as u64);
                    report.failed += batch.instance_ids.len();
                    report.failed_rows.extend(
                        batch
                            .instance_ids
                            .iter()
                            .filter_map(|id| rows.get(id.as_str()).copied()),
                    );
                    tracing::error!(account = %account, region = %region, instances = batch.instance_ids.len(),
                        class = error.class().as_str(), error = %error, "setting auto-renew attributes failed");
                }
            }
        }
    }
    Ok(report)
}

/// `AutoRenewTarget` ordered, for grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AutoRenewTargetKey(AutoRenewTarget);

impl PartialOrd for AutoRenewTargetKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AutoRenewTargetKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.status, self.0.duration, self.0.unit).cmp(&(
            other.0.status,
            other.0.duration,
            other.0.unit,
        ))
    }
}
