//! Auto-renew enforcement: set the attributes the policies want, batched ≤100 ids per call and
//! grouped by target (RenewalStatus, Duration, PeriodUnit) per source. Each change is written
//! as pending before its call leaves, as a renewal's intent is, and its answer recorded after.
//! Each accepted change is checked against the next pass's attributes (which every pass reads
//! anyway), so verification costs no extra calls; a change that did not take is recorded as a
//! mismatch and keeps the drift metric up. There is no re-read right before the call: the
//! docs/how-it-works.md says why (*Auto-renew changes and the money-safety rules*).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::assess::AutoRenewChange;
use super::context::PassContext;
use crate::accounts::AccountClient;
use crate::cloud::ecs::{AutoRenewTarget, BatchResult};
use crate::ledger::{AutoRenewAnswer, Ledger, LedgerError, PendingAutoRenew};
use crate::metrics::Metrics;

/// What the changes came to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangeReport {
    /// Instances changed.
    pub changed: usize,
    /// Dry run: instances whose change would have been sent.
    pub dry_run: usize,
    /// Instances whose change failed.
    pub failed: usize,
    /// Rows (assessment indices) whose change failed.
    pub failed_rows: Vec<usize>,
}

/// The changes of one (account, region, target): one set of calls.
struct Group {
    account: Arc<str>,
    region: Arc<str>,
    target: AutoRenewTarget,
    /// The instances, in the order the calls batch them.
    ids: Vec<String>,
    /// Each instance's assessment row.
    rows: Vec<usize>,
    /// Each instance's ledger row, once written as pending (same order as `ids`).
    ledger_rows: Vec<i64>,
}

/// What a group is keyed by: (account, region, target).
type GroupKey = (Arc<str>, Arc<str>, AutoRenewTargetKey);

fn group(changes: Vec<AutoRenewChange>) -> Vec<Group> {
    let mut groups: BTreeMap<GroupKey, Vec<(usize, String)>> = BTreeMap::new();
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
    groups
        .into_iter()
        .map(|((account, region, AutoRenewTargetKey(target)), members)| {
            let (rows, ids) = members.into_iter().unzip();
            Group {
                account,
                region,
                target,
                ids,
                rows,
                ledger_rows: Vec::new(),
            }
        })
        .collect()
}

/// Applies the changes (nothing in dry run).
pub async fn apply(
    ctx: &PassContext<'_>,
    changes: Vec<AutoRenewChange>,
) -> Result<ChangeReport, LedgerError> {
    let (accounts, ledger, metrics) = (ctx.accounts, ctx.ledger.as_ref(), ctx.metrics);
    let (dry_run, now) = (ctx.config.dry_run, ctx.clock.now());
    let mut groups = group(changes);
    if dry_run {
        for g in &groups {
            tracing::info!(account = %g.account, region = %g.region, instances = g.ids.len(), status = %g.target.status,
                "dry run: would set auto-renew attributes");
        }
        return Ok(ChangeReport {
            dry_run: groups.iter().map(|g| g.ids.len()).sum(),
            ..ChangeReport::default()
        });
    }
    if groups.is_empty() {
        return Ok(ChangeReport::default());
    }
    write_pending(ledger, &mut groups, now)?;
    let done = send(accounts, &groups).await;
    // Every call's answer is recorded on its rows in one transaction (one sync to disk for the
    // pass's changes across all sources), before it is counted or logged.
    // A group's batches come back in order, each the next run of its ids: a batch's ledger
    // rows (and assessment rows) are the same run of the group's.
    let mut offsets = vec![0usize; groups.len()];
    let spans: Vec<std::ops::Range<usize>> = done
        .iter()
        .map(|(g, batch)| {
            let start = offsets[*g];
            offsets[*g] += batch.instance_ids.len();
            start..offsets[*g]
        })
        .collect();
    let rows: Vec<&[i64]> = done
        .iter()
        .zip(&spans)
        .map(|((g, _), span)| &groups[*g].ledger_rows[span.clone()])
        .collect();
    let codes: Vec<Option<String>> = done
        .iter()
        .map(|(_, b)| b.result.as_ref().err().map(|e| e.code_or_kind()))
        .collect();
    let answers: Vec<(&[i64], AutoRenewAnswer<'_>)> = done
        .iter()
        .zip(&rows)
        .zip(&codes)
        .map(|(((_, batch), rows), code)| {
            let answer = match &batch.result {
                Ok(request_id) => AutoRenewAnswer {
                    request_id: Some(request_id),
                    error: None,
                },
                Err(error) => AutoRenewAnswer {
                    request_id: error.request_id(),
                    error: Some((code.as_deref().unwrap_or_default(), error.class())),
                },
            };
            (*rows, answer)
        })
        .collect();
    ledger.finish_auto_renew_changes(&answers, now)?;
    Ok(report(metrics, &groups, &done, &spans))
}

/// Intent before act: every change about to be requested is written as pending, in one
/// transaction, before any call leaves.
fn write_pending(
    ledger: &Ledger,
    groups: &mut [Group],
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let pending: Vec<PendingAutoRenew<'_>> = groups
        .iter()
        .map(|g| PendingAutoRenew {
            account: &g.account,
            region: &g.region,
            target: &g.target,
            instance_ids: &g.ids,
        })
        .collect();
    let rows = ledger.begin_auto_renew_changes(&pending, now)?;
    for (g, rows) in groups.iter_mut().zip(rows) {
        g.ledger_rows = rows;
    }
    Ok(())
}

/// Sends every group's calls: sources in parallel (each has its own rate limit), one group at a
/// time within a source. Returns each batch's answer with its group's index.
async fn send(accounts: &[AccountClient], groups: &[Group]) -> Vec<(usize, BatchResult)> {
    let mut by_source: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (index, g) in groups.iter().enumerate() {
        by_source
            .entry((&g.account, &g.region))
            .or_default()
            .push(index);
    }
    let calls = by_source
        .into_iter()
        .map(|((account, region), indices)| async move {
            let mut done = Vec::new();
            let Some(client) = accounts.iter().find(|a| a.name == account) else {
                return done;
            };
            for index in indices {
                let g = &groups[index];
                for batch in client
                    .client
                    .modify_auto_renew(region, &g.ids, g.target)
                    .await
                {
                    done.push((index, batch));
                }
            }
            done
        });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Counts, logs and reports the recorded answers.
fn report(
    metrics: &Metrics,
    groups: &[Group],
    done: &[(usize, BatchResult)],
    spans: &[std::ops::Range<usize>],
) -> ChangeReport {
    let mut report = ChangeReport::default();
    for ((index, batch), span) in done.iter().zip(spans) {
        let g = &groups[*index];
        let n = batch.instance_ids.len();
        match &batch.result {
            Ok(request_id) => {
                metrics
                    .auto_renew_changes_total
                    .with_label_values(&["ok"])
                    .inc_by(n as u64);
                report.changed += n;
                tracing::info!(account = %g.account, region = %g.region, instances = n,
                    status = %g.target.status, duration = g.target.duration, unit = %g.target.unit, request_id = %request_id,
                    "auto-renew attributes set");
            }
            Err(error) => {
                metrics
                    .auto_renew_changes_total
                    .with_label_values(&["failed"])
                    .inc_by(n as u64);
                report.failed += n;
                report.failed_rows.extend_from_slice(&g.rows[span.clone()]);
                tracing::error!(account = %g.account, region = %g.region, instances = n,
                    class = error.class().as_str(), error = %error, "setting auto-renew attributes failed");
            }
        }
    }
    report
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
