//! Phase 6, publish: the retry the daemon may wake for, the refusals that stand (a gauge per
//! account and class), the acted-on status lines, the pruning of lines of instances gone from
//! sources scanned completely, what is kept of accounts no longer configured forgotten, the
//! pass's result, and its record in the ledger.

use std::collections::{BTreeMap, HashSet};

use super::act::Acted;
use super::observe::Observed;
use super::status_updates::earliest;
use super::summary::{PassSummary, Phases};
use crate::accounts::directory::LISTING_SOURCE;
use crate::cloud::ErrorClass;
use crate::ledger::{LedgerError, PassRecord};
use crate::metrics::PassResult;
use crate::policy::InstanceState;
use crate::reconcile::assess::Refused;
use crate::reconcile::context::{PassContext, day_key};
use crate::reconcile::scan::SourceReport;

/// Runs the phase and returns the pass's summary.
pub fn publish(
    ctx: &PassContext<'_>,
    mut observed: Observed,
    mut acted: Acted,
    mut summary: PassSummary,
    mut phases: Phases,
) -> Result<PassSummary, LedgerError> {
    summary.next_retry_at = next_retry(ctx, &observed, &acted)?;
    summary.refused.append(&mut observed.assessment.refused);
    summary.refused.append(&mut acted.refused);
    publish_refusals(ctx, &summary.refused);
    let finished = ctx.clock.now();
    ctx.ledger.update_status(&acted.updates, finished)?;
    let (complete, down): (Vec<_>, Vec<_>) = observed.reports.iter().partition(|r| r.ok());
    let key = |r: &&SourceReport| (r.key.account.clone(), r.key.region.clone());
    let complete: Vec<(String, String)> = complete.iter().map(key).collect();
    let down: Vec<(String, String)> = down.iter().map(key).collect();
    ctx.ledger.prune_status(ctx.generation, &complete, &down)?;
    summary.forgotten_sources = forget_gone_accounts(ctx, &observed.reports)?;
    phases.lap("publish");
    summary.phase_seconds = phases.into_seconds();
    summary.finished_at = finished;
    summary.pending_verification = acted
        .by_state
        .get(&InstanceState::PendingVerification)
        .copied()
        .unwrap_or(0);
    summary.by_state = acted
        .by_state
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| (*s, *n))
        .collect();
    let result = pass_result(&observed.reports, &summary);
    summary.result = result;
    ctx.metrics
        .passes_total
        .with_label_values(&[result.as_str()])
        .inc();
    ctx.ledger.record_pass(&PassRecord {
        started_at: summary.started_at,
        finished_at: finished,
        result: result.as_str().to_owned(),
        summary: summary.record_json(),
        next_retry_at: summary.next_retry_at,
    })?;
    tracing::info!(
        result = result.as_str(),
        summary = %summary.line(),
        phases = %serde_json::to_string(&summary.phase_seconds).unwrap_or_default(),
        "pass finished"
    );
    Ok(summary)
}

/// What the daemon may wake for: a retry it will attempt, after this pass began. Nothing is
/// attempted in dry run, nor today once today's renewal count is used up.
fn next_retry(
    ctx: &PassContext<'_>,
    observed: &Observed,
    acted: &Acted,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, LedgerError> {
    let config = ctx.config;
    let today_full = ctx.ledger.renewals_counted(&ctx.day)? >= config.limits.max_renewals_per_day;
    Ok(
        earliest(observed.assessment.next_retry, acted.next_retry).filter(|at| {
            *at > ctx.started && !config.dry_run && !(today_full && day_key(config, *at) == ctx.day)
        }),
    )
}

/// `failed` when every source failed; `partial` when anything needs a look; else `ok`.
fn pass_result(reports: &[SourceReport], summary: &PassSummary) -> PassResult {
    if !reports.is_empty() && reports.iter().all(|r| !r.ok()) {
        PassResult::Failed
    } else if !summary.sources_down.is_empty()
        || summary.renew_failed > 0
        || summary.renew_unknown > 0
        || summary.auto_renew_failed > 0
        || !summary.trips.is_empty()
        || summary.undecodable > 0
        || !summary.refused.is_empty()
        || !summary.duplicate_sources.is_empty()
    {
        PassResult::Partial
    } else {
        PassResult::Ok
    }
}

/// What is kept of accounts no longer configured (an entry removed by a reload, a directory's
/// member no longer listed) is forgotten: their sources' health and series, and their status
/// lines, so no alert stays on an account nobody manages. Not in a pass whose directory
/// listing failed: its members are not known to be gone.
fn forget_gone_accounts(
    ctx: &PassContext<'_>,
    reports: &[SourceReport],
) -> Result<Vec<(String, String)>, LedgerError> {
    let listing_failed = reports
        .iter()
        .any(|r| r.key.region == LISTING_SOURCE && !r.ok());
    if listing_failed {
        return Ok(Vec::new());
    }
    let keep: HashSet<&str> = ctx
        .config
        .accounts
        .iter()
        .map(|a| a.name.as_str())
        .chain(ctx.config.directories.iter().map(|d| d.name.as_str()))
        .collect();
    let gone = ctx.ledger.forget_accounts(&keep)?;
    for (account, region) in &gone {
        let labels = [account.as_str(), region.as_str()];
        let _ = ctx.metrics.source_up.remove_label_values(&labels);
        let _ = ctx.metrics.scan_last_success.remove_label_values(&labels);
        let _ = ctx.metrics.scan_duration.remove_label_values(&labels);
        tracing::info!(%account, %region, "the account is no longer configured (an entry removed, or a directory member no longer listed): its source and status lines are forgotten");
    }
    Ok(gone)
}

/// Renewals refused for a reason only a person can fix: one gauge per account and class.
fn publish_refusals(ctx: &PassContext<'_>, refused: &[Refused]) {
    // Series of accounts no longer configured go away.
    ctx.metrics.renewals_refused.reset();
    let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for account in &ctx.config.accounts {
        for class in [
            ErrorClass::Permission,
            ErrorClass::Clock,
            ErrorClass::Invalid,
        ] {
            counts.insert((account.name.as_str(), class.as_str()), 0);
        }
    }
    for r in refused {
        *counts.entry((&r.account, r.class.as_str())).or_default() += 1;
        tracing::error!(account = %r.account, region = %r.region, instance = %r.instance_id, class = %r.class, code = %r.code,
            "a renewal stands refused for a reason only a person can fix: the instance will lapse unless it is fixed");
    }
    for ((account, class), n) in counts {
        ctx.metrics
            .renewals_refused
            .with_label_values(&[account, class])
            .set(n);
    }
}
