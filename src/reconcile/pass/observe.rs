//! Phase 1, observe: count attempts a stopped process left out, load the ledger's histories,
//! scan every source and decide per instance (each status line goes straight to the ledger),
//! then record each source's health and the instances two entries both listed.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::summary::{DuplicateSources, PassSummary, SourceResult};
use crate::accounts::directory::{LISTING_SOURCE, Listing};
use crate::ledger::StatusWriter;
use crate::ledger::{Histories, LedgerError, UncheckedChange};
use crate::reconcile::assess::{Assessment, Duplicate};
use crate::reconcile::context::{Mode, PassContext};
use crate::reconcile::scan::{Rows, Scanned, SourceKey, SourceReport, Watched, scan_and_assess};

/// What the observe phase saw, for the phases after it.
pub struct Observed {
    /// The ledger's histories at the start of the pass (open intents, failures, tokens).
    pub histories: Histories,
    /// Earlier auto-renew changes to check against what this pass read.
    pub unchecked: Vec<UncheckedChange>,
    /// Every instance's decision, the renewals and auto-renew changes wanted.
    pub assessment: Assessment,
    /// Each source's scan.
    pub reports: Vec<SourceReport>,
    /// What was seen of instances with an open intent or an unchecked change, by id.
    pub watched: HashMap<String, Watched>,
}

/// Runs the phase. A ledger failure ends the pass (nothing is charged without its record).
pub async fn observe(
    ctx: &PassContext<'_>,
    listings: Vec<Listing>,
    summary: &mut PassSummary,
) -> Result<Observed, LedgerError> {
    summary.interrupted = ctx.ledger.mark_interrupted(&ctx.day, ctx.started)?;
    if summary.interrupted > 0 {
        tracing::warn!(
            attempts = summary.interrupted,
            "renewal attempts were still out when the last pass or process ended: each may have charged; they are resent with their tokens and counted toward today's limits"
        );
    }
    summary.top_ups = crate::reconcile::funds::end_covered_holds(
        ctx.config,
        ctx.accounts,
        ctx.ledger,
        ctx.funds,
        ctx.started,
    )
    .await?;
    let histories = ctx.ledger.histories()?;
    let unchecked = ctx.ledger.unchecked_auto_renew_changes()?;
    let mut watch: HashSet<String> = histories
        .open
        .iter()
        .map(|o| o.instance_id.clone())
        .collect();
    watch.extend(unchecked.iter().map(|c| c.instance_id.clone()));
    // Instances the last forecast counted: one seen with another expiry was charged since,
    // and the balance remembered from before is stale.
    watch.extend(ctx.funds.counted_instances());

    let writer = StatusWriter::start(ctx.ledger.clone(), ctx.generation);
    let rows = match ctx.mode {
        Mode::Pass => Rows::Stream(&writer),
        Mode::Plan => Rows::Collect,
    };
    let Scanned {
        assessment,
        mut reports,
        watched,
    } = scan_and_assess(
        ctx.config,
        ctx.accounts,
        &histories,
        &watch,
        rows,
        ctx.started,
    )
    .await;
    writer.finish().await?;
    // Each directory's listing is a source: down when this pass's listing failed (members may
    // be missed; those listed before are still scanned), up again once a listing succeeds.
    reports.extend(listings.into_iter().map(listing_report));
    summary.instances = assessment.instances;
    let complete = record_sources(ctx, &reports, summary);
    summary.duplicate_sources = report_duplicates(ctx, &assessment.duplicates, &reports);
    // One transaction for all sources: each is a sync to disk, and a large fleet has many.
    ctx.ledger.record_source_successes(&complete, ctx.started)?;
    Ok(Observed {
        histories,
        unchecked,
        assessment,
        reports,
        watched,
    })
}

/// A directory's listing as the source `<directory>/resourcemanager`.
fn listing_report(listing: Listing) -> SourceReport {
    SourceReport {
        key: SourceKey {
            account: listing.directory,
            region: LISTING_SOURCE.to_owned(),
        },
        instances: 0,
        undecodable: Vec::new(),
        auto_renew_errors: Vec::new(),
        duration: std::time::Duration::ZERO,
        error: listing.error,
    }
}

/// Per source: metrics, logs and the summary's source results; returns the sources
/// scanned completely.
fn record_sources<'r>(
    ctx: &PassContext<'_>,
    reports: &'r [SourceReport],
    summary: &mut PassSummary,
) -> Vec<(&'r str, &'r str)> {
    summary.sources = reports.len();
    let metrics = ctx.metrics;
    let mut scanned = Vec::new();
    for report in reports {
        let labels = [report.key.account.as_str(), report.key.region.as_str()];
        metrics
            .scan_duration
            .with_label_values(&labels)
            .set(report.duration.as_secs_f64());
        metrics
            .undecodable_total
            .inc_by(report.undecodable.len() as u64);
        summary.undecodable += report.undecodable.len();
        for record in &report.undecodable {
            tracing::error!(source = %report.key, record = %record, "an instance record could not be understood; it is not managed until it can be");
        }
        summary.source_results.push(SourceResult {
            account: report.key.account.clone(),
            region: report.key.region.clone(),
            failure_class: report.error.as_ref().map(|e| e.class()),
            error: report.error.as_ref().map(ToString::to_string),
        });
        match &report.error {
            None => {
                metrics.source_up.with_label_values(&labels).set(1);
                metrics
                    .scan_last_success
                    .with_label_values(&labels)
                    .set(ctx.started.timestamp() as f64);
                scanned.push((report.key.account.as_str(), report.key.region.as_str()));
            }
            Some(error) => {
                metrics.source_up.with_label_values(&labels).set(0);
                summary.sources_down.push(report.key.to_string());
                tracing::error!(source = %report.key, class = error.class().as_str(), error = %error, "scanning a source failed: its instances are not managed this pass");
            }
        }
        for error in &report.auto_renew_errors {
            tracing::warn!(source = %report.key, error = %error, "auto-renew attributes could not be read for part of the source");
        }
    }
    scanned
}

/// Two config entries that reach one cloud account list the same instances: each is
/// managed once (through the source that listed it first), and the overlap is said in the
/// log, the summary (so `status`) and `source_duplicate_instances`.
fn report_duplicates(
    ctx: &PassContext<'_>,
    duplicates: &[Duplicate],
    reports: &[SourceReport],
) -> Vec<DuplicateSources> {
    let mut pairs: BTreeMap<(String, String), DuplicateSources> = BTreeMap::new();
    for d in duplicates {
        let entry = pairs
            .entry((d.kept.clone(), d.dropped.clone()))
            .or_insert_with(|| DuplicateSources {
                kept: d.kept.clone(),
                dropped: d.dropped.clone(),
                instances: 0,
                example: d.instance_id.clone(),
            });
        entry.instances += 1;
    }
    // Series of sources no longer scanned (an entry removed by a reload) go away.
    ctx.metrics.source_duplicate_instances.reset();
    let mut per_source: BTreeMap<&str, i64> = BTreeMap::new();
    for pair in pairs.values() {
        *per_source.entry(&pair.dropped).or_default() += pair.instances as i64;
        tracing::warn!(kept = %pair.kept, dropped = %pair.dropped, instances = pair.instances, example = %pair.example,
            "two config entries list the same instances (they reach one cloud account): each is managed once and the funds forecast counts their charges together; merge the entries into one");
    }
    for report in reports {
        let name = report.key.to_string();
        ctx.metrics
            .source_duplicate_instances
            .with_label_values(&[report.key.account.as_str(), report.key.region.as_str()])
            .set(per_source.get(name.as_str()).copied().unwrap_or(0));
    }
    pairs.into_values().collect()
}
