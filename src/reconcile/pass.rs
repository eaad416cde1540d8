//! One reconcile pass from start to finish, and what it reports: observe and assess, settle
//! intents whose expiry moved, check earlier auto-renew changes, price, apply the belts, act,
//! verify, set auto-renew attributes, then publish the per-instance snapshot (metrics and the
//! ledger's status table) and record the pass.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::act::{ActContext, RenewOutcome, renew_all};
use super::assess::RenewCandidate;
use super::observe::SourceReport;
use super::price::{price_candidates, price_charges};
use super::verify::{VerifyTarget, verify};
use super::{Rows, StatusWriter, auto_renew, observe_and_assess};
use crate::accounts::AccountClient;
use crate::clock::Clock;
use crate::config::Config;
use crate::ledger::{Ledger, LedgerError, PassRecord, StatusUpdate};
use crate::metrics::{Metrics, PassResult};
use crate::policy::{InstanceState, apply_belts};

/// Everything a pass needs; built once by the daemon (rebuilt on reload).
pub struct Engine {
    /// The checked config every pass of this engine uses (a reload builds a new engine).
    pub config: Arc<Config>,
    /// Account clients.
    pub accounts: Vec<AccountClient>,
    /// The durable record every charge is written to before it is sent.
    pub ledger: Arc<Ledger>,
    /// Where the pass publishes its counters and gauges (scans, renewals, belts, passes).
    pub metrics: Arc<Metrics>,
    /// The time source for the pass's start and end, its day key and ledger timestamps.
    pub clock: Arc<dyn Clock>,
    /// Shutdown: no new call starts once it fires.
    pub cancel: CancellationToken,
}

/// A pass's summary (logged, stored in the ledger, shown by `once` and systemd's STATUS).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PassSummary {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// ok, partial or failed.
    pub result: String,
    /// Instances seen.
    pub instances: usize,
    /// Sources scanned.
    pub sources: usize,
    /// Sources that failed.
    pub sources_down: Vec<String>,
    /// Renewals ordered in this pass.
    pub renewed: usize,
    /// Renewals refused.
    pub renew_failed: usize,
    /// Renewals whose outcome is unknown (resent next pass with the same token).
    pub renew_unknown: usize,
    /// Renewals verified (new expiry seen) in this pass.
    pub verified: usize,
    /// Renewals still waiting for their new expiry to show.
    pub pending_verification: usize,
    /// Renewals held by safety belts.
    pub held: usize,
    /// Renewals not attempted (expiry moved, re-read failed, shutdown).
    pub skipped: usize,
    /// Dry run: renewals that would have been made.
    pub dry_run_renewals: usize,
    /// Auto-renew changes made.
    pub auto_renew_changed: usize,
    /// Auto-renew changes that failed.
    pub auto_renew_failed: usize,
    /// Spend per currency (priced renewals only).
    pub spend: BTreeMap<String, f64>,
    /// Belts that tripped.
    pub trips: Vec<String>,
    /// Instances per state.
    pub by_state: BTreeMap<String, usize>,
    /// Records that could not be understood.
    pub undecodable: usize,
    /// Each source's scan: ok, or the failure class and message.
    pub source_results: Vec<SourceResult>,
    /// Seconds spent in each phase.
    pub phase_seconds: BTreeMap<String, f64>,
    /// The earliest retry that will be attempted when it is due (after this pass started);
    /// the daemon may wake for it before its schedule. `None` in dry run.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Renewals refused for a reason only a person can fix, still standing.
    pub refused: Vec<super::assess::Refused>,
    /// Sources that listed instances another config entry listed first (two entries reach one
    /// cloud account), with how many and one example.
    pub duplicate_sources: Vec<DuplicateSources>,
    /// Attempts found still out at the start of the pass (the process had stopped): counted
    /// as possibly charged.
    pub interrupted: usize,
}

/// Instances one source listed that another listed first, in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DuplicateSources {
    /// The source the instances were managed through.
    pub kept: String,
    /// The source whose listings were set aside.
    pub dropped: String,
    /// How many.
    pub instances: usize,
    /// One of them.
    pub example: String,
}

/// Wall time per phase of a pass.
struct Phases {
    last: tokio::time::Instant,
    laps: BTreeMap<String, f64>,
}

impl Phases {
    fn start() -> Phases {
        Phases {
            last: tokio::time::Instant::now(),
            laps: BTreeMap::new(),
        }
    }

    fn lap(&mut self, phase: &str) {
        let now = tokio::time::Instant::now();
        self.laps
            .insert(phase.to_owned(), (now - self.last).as_secs_f64());
        self.last = now;
    }
}

/// How one source's scan went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceResult {
    /// Name of the config account entry the source scans.
    pub account: String,
    /// The region the source scans, e.g. cn-hangzhou.
    pub region: String,
    /// The failure class, when it failed.
    pub failure_class: Option<String>,
    /// The failure, when it failed.
    pub error: Option<String>,
}

impl PassSummary {
    /// One line for logs and systemd's STATUS.
    pub fn line(&self) -> String {
        format!(
            "last pass {} at {}: {} instances, {} renewed, {} failed, {} unknown, {} pending verification, {} held, {} auto-renew changes, {} sources down",
            self.result,
            crate::cloud::time::format_seconds(self.finished_at),
            self.instances,
            self.renewed,
            self.renew_failed,
            self.renew_unknown,
            self.pending_verification,
            self.held,
            self.auto_renew_changed,
            self.sources_down.len()
        )
    }
}

/// The calendar day (in the config's timezone) that daily limits count in.
pub fn day_key(config: &Config, now: DateTime<Utc>) -> String {
    now.with_timezone(&config.timezone).date_naive().to_string()
}

/// What the act phase's outcomes mean for the rest of the pass.
#[derive(Default)]
struct Acted {
    updates: Vec<StatusUpdate>,
    verify_targets: Vec<VerifyTarget>,
    next_retry: Option<DateTime<Utc>>,
    refused: Vec<super::assess::Refused>,
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Engine {
    /// Runs one pass. A ledger failure ends the pass early (nothing is charged without its
    /// record) and is returned.
    pub async fn run_pass(&self) -> Result<PassSummary, LedgerError> {
        let started = self.clock.now();
        let span =
            tracing::info_span!("pass", started = %crate::cloud::time::format_seconds(started));
        tracing::Instrument::instrument(self.pass(started), span).await
    }

    async fn pass(&self, started: DateTime<Utc>) -> Result<PassSummary, LedgerError> {
        let config = &self.config;
        let mut summary = PassSummary {
            started_at: started,
            ..PassSummary::default()
        };
        let generation = started.timestamp_millis();
        let day = day_key(config, started);
        let mut phases = Phases::start();

        summary.interrupted = self.ledger.mark_interrupted(&day, started)?;
        if summary.interrupted > 0 {
            tracing::warn!(
                attempts = summary.interrupted,
                "renewal attempts were still out when the last pass or process ended: each may have charged; they are resent with their tokens and counted toward today's limits"
            );
        }
        let histories = self.ledger.histories()?;
        let unchecked = self.ledger.unchecked_auto_renew_changes()?;
        let mut watch: HashSet<String> = histories
            .open
            .iter()
            .map(|o| o.instance_id.clone())
            .collect();
        watch.extend(unchecked.iter().map(|(_, _, instance, _)| instance.clone()));

        // Observe and decide; each instance's status line goes straight to the ledger.
        let writer = StatusWriter::start(self.ledger.clone(), generation);
        let (mut assessment, reports, watched) = observe_and_assess(
            config,
            &self.accounts,
            &histories,
            &watch,
            Rows::Stream(&writer),
            started,
        )
        .await;
        writer.finish().await?;
        phases.lap("observe");
        let mut by_state = assessment.by_state.clone();
        let scanned = self.record_sources(&reports, started, &mut summary);
        self.report_duplicates(&assessment.duplicates, &reports, &mut summary);
        // One transaction for all sources (and below, for all settlements and checks): each
        // is a sync to disk, and a pass over a large fleet has thousands of them.
        self.ledger.record_source_successes(&scanned, started)?;

        // Settle intents whose expiry moved. Open intents whose instance is not in the window
        // (a renewal whose answer was never recorded can carry it past the horizon) get one
        // look by id in the verify phase, whatever their status, so none stays open for ever.
        let out_of_window = self.settle_moved(&histories, &watched, &day, &mut summary)?;
        self.check_auto_renew_changes(&unchecked, &watched)?;
        phases.lap("settle");

        let (to_renew, held_updates) = self
            .price_and_belts(&mut assessment, &day, &mut summary)
            .await?;
        phases.lap("price_and_belts");

        // Act.
        let act = ActContext {
            config,
            accounts: &self.accounts,
            ledger: &self.ledger,
            metrics: &self.metrics,
            clock: self.clock.as_ref(),
            histories: &histories,
            cancel: &self.cancel,
            day: day.clone(),
        };
        let (results, ledger_error) = renew_all(&act, to_renew.clone()).await;
        let mut acted = Acted {
            updates: held_updates,
            ..Acted::default()
        };
        apply_outcomes(&to_renew, &results, &mut acted, &mut summary, &mut by_state);
        if let Some(error) = ledger_error {
            self.ledger
                .update_status(&acted.updates, self.clock.now())?;
            return Err(error);
        }
        phases.lap("act");

        self.verify_and_auto_renew(
            &histories,
            out_of_window,
            &mut acted,
            assessment.changes.clone(),
            &mut summary,
            &mut by_state,
        )
        .await?;
        phases.lap("verify_and_auto_renew");

        // What the daemon may wake for: a retry it will attempt, after this pass began. Nothing
        // is attempted in dry run, nor today once today's renewal count is used up.
        let today_full = self.ledger.renewals_counted(&day)? >= config.limits.max_renewals_per_day;
        summary.next_retry_at = earliest(assessment.next_retry, acted.next_retry).filter(|at| {
            *at > started && !config.dry_run && !(today_full && day_key(config, *at) == day)
        });
        summary.refused.append(&mut assessment.refused);
        summary.refused.append(&mut acted.refused);
        self.publish_refusals(&summary.refused);
        summary.instances = assessment.instances;
        self.publish(
            generation,
            &reports,
            &acted.updates,
            summary,
            by_state,
            phases,
        )
    }

    /// Per source: metrics, logs and the summary's source results; returns the sources
    /// scanned completely.
    fn record_sources<'r>(
        &self,
        reports: &'r [SourceReport],
        started: DateTime<Utc>,
        summary: &mut PassSummary,
    ) -> Vec<(&'r str, &'r str)> {
        summary.sources = reports.len();
        let mut scanned = Vec::new();
        for report in reports {
            let labels = [report.key.account.as_str(), report.key.region.as_str()];
            self.metrics
                .scan_duration
                .with_label_values(&labels)
                .set(report.duration.as_secs_f64());
            self.metrics
                .undecodable_total
                .inc_by(report.undecodable.len() as u64);
            summary.undecodable += report.undecodable.len();
            for record in &report.undecodable {
                tracing::error!(source = %report.key, record = %record, "an instance record could not be understood; it is not managed until it can be");
            }
            summary.source_results.push(SourceResult {
                account: report.key.account.clone(),
                region: report.key.region.clone(),
                failure_class: report.error.as_ref().map(|e| e.class().as_str().to_owned()),
                error: report.error.as_ref().map(ToString::to_string),
            });
            match &report.error {
                None => {
                    self.metrics.source_up.with_label_values(&labels).set(1);
                    self.metrics
                        .scan_last_success
                        .with_label_values(&labels)
                        .set(started.timestamp() as f64);
                    scanned.push((report.key.account.as_str(), report.key.region.as_str()));
                }
                Some(error) => {
                    self.metrics.source_up.with_label_values(&labels).set(0);
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
        &self,
        duplicates: &[super::assess::Duplicate],
        reports: &[SourceReport],
        summary: &mut PassSummary,
    ) {
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
        self.metrics.source_duplicate_instances.reset();
        let mut per_source: BTreeMap<&str, i64> = BTreeMap::new();
        for pair in pairs.values() {
            *per_source.entry(&pair.dropped).or_default() += pair.instances as i64;
            tracing::warn!(kept = %pair.kept, dropped = %pair.dropped, instances = pair.instances, example = %pair.example,
                "two config entries list the same instances (they reach one cloud account): each is managed once; merge the entries or give them regions that do not overlap");
        }
        for report in reports {
            let name = report.key.to_string();
            self.metrics
                .source_duplicate_instances
                .with_label_values(&[report.key.account.as_str(), report.key.region.as_str()])
                .set(per_source.get(name.as_str()).copied().unwrap_or(0));
        }
        summary.duplicate_sources = pairs.into_values().collect();
    }

    /// Settles intents whose instance's expiry moved; returns the open intents whose instance
    /// was not seen (they get one look by id in the verify phase).
    fn settle_moved(
        &self,
        histories: &crate::ledger::Histories,
        watched: &std::collections::HashMap<String, super::Watched>,
        day: &str,
        summary: &mut PassSummary,
    ) -> Result<Vec<VerifyTarget>, LedgerError> {
        let mut out_of_window = Vec::new();
        let mut moved = Vec::new();
        for open in &histories.open {
            match watched.get(&open.instance_id) {
                Some(seen) if seen.expiry > open.old_expiry => moved.push((open, seen.expiry)),
                Some(_) => {}
                None => out_of_window.push(VerifyTarget {
                    intent_id: open.id,
                    account: Arc::from(open.account.as_str()),
                    region: open.region.clone(),
                    instance_id: open.instance_id.clone(),
                    old_expiry: open.old_expiry,
                }),
            }
        }
        let settled = self.ledger.settle_all(
            &moved
                .iter()
                .map(|(open, expiry)| (open.id, *expiry))
                .collect::<Vec<_>>(),
            day,
            self.clock.now(),
        )?;
        for ((open, expiry), settled) in moved.iter().zip(&settled) {
            warn_if_outcome_unrecorded(open, *expiry);
            summary.verified += usize::from(settled == "verified");
        }
        Ok(out_of_window)
    }

    /// Checks earlier auto-renew changes against the attributes this pass read.
    fn check_auto_renew_changes(
        &self,
        unchecked: &[(i64, String, String, crate::cloud::ecs::AutoRenewTarget)],
        watched: &std::collections::HashMap<String, super::Watched>,
    ) -> Result<(), LedgerError> {
        let mut checks = Vec::new();
        for (id, account, instance, target) in unchecked {
            if let Some(attrs) = watched.get(instance).and_then(|w| w.auto_renew.as_ref()) {
                let took = attrs.renewal_status == target.status
                    && (target.status != crate::cloud::types::RenewalStatus::AutoRenewal
                        || attrs.duration == target.duration);
                checks.push((*id, took));
                if !took {
                    tracing::warn!(account = %account, instance = %instance, "an auto-renew change did not take effect");
                }
            }
        }
        self.ledger.check_auto_renew_changes(&checks)
    }

    /// Prices where a limit needs it (and today's unpriced charges when a spend limit is set),
    /// then applies the belts over the whole batch: renewals and switching auto-renew on.
    /// Returns the renewals allowed and the status lines of those held.
    async fn price_and_belts(
        &self,
        assessment: &mut super::assess::Assessment,
        day: &str,
        summary: &mut PassSummary,
    ) -> Result<(Vec<RenewCandidate>, Vec<StatusUpdate>), LedgerError> {
        let config = &self.config;
        let needs_price =
            |c: &RenewCandidate| c.plan.max_price.is_some() || config.limits.has_spend_limits();
        price_candidates(
            &self.accounts,
            &mut assessment.renewals,
            config.scan.concurrency,
            needs_price,
        )
        .await;
        let mut today = self.ledger.day_totals(day)?;
        if config.limits.has_spend_limits() && today.unpriced > 0 {
            // A spend limit switched on later in the day: the day's earlier charges were made
            // unpriced. Their price now is what they cost (same instance, same period).
            let unpriced = self.ledger.unpriced_charges(day)?;
            for (intent_id, price) in price_charges(&self.accounts, &unpriced).await {
                self.ledger.price_charge(intent_id, &price)?;
            }
            today = self.ledger.day_totals(day)?;
        }
        let (candidates, input) =
            super::belts::belt_inputs(config, &assessment.renewals, &today, assessment.instances);
        let belts = apply_belts(&candidates, &input);
        let mut trips = belts.trips.clone();
        if let Some(trip) = self.hold_auto_renew_enables(assessment) {
            trips.push(trip);
        }
        let mut tripped = HashSet::new();
        for trip in &trips {
            if tripped.insert(trip.limit) {
                self.metrics
                    .limit_trips_total
                    .with_label_values(&[trip.limit.as_str()])
                    .inc();
            }
            tracing::error!(limit = trip.limit.as_str(), detail = %trip.detail, "safety belt tripped: what it covers is not done");
            summary
                .trips
                .push(format!("{}: {}", trip.limit, trip.detail));
        }
        let mut held = Vec::new();
        for (key, limit) in &belts.held {
            let c = &assessment.renewals[*key];
            summary.held += 1;
            summary.refused.extend(c.refused.clone());
            held.push(update_for(
                c,
                InstanceState::Due,
                "hold",
                format!("{} — held: the {limit} limit tripped", c.reason),
                None,
                c.failed_attempts,
            ));
        }
        let allowed: HashSet<usize> = belts.allowed.iter().copied().collect();
        let to_renew = assessment
            .renewals
            .iter()
            .enumerate()
            .filter(|(key, _)| allowed.contains(key))
            .map(|(_, c)| c.clone())
            .collect();
        Ok((to_renew, held))
    }

    /// Switching auto-renew on commits the provider to charge at every deduction day: a batch
    /// larger than `max_auto_renew_enables_per_run` is held whole (switching it off never is).
    fn hold_auto_renew_enables(
        &self,
        assessment: &mut super::assess::Assessment,
    ) -> Option<crate::policy::Trip> {
        let enabling = |c: &super::assess::AutoRenewChange| {
            c.target.status == crate::cloud::types::RenewalStatus::AutoRenewal
        };
        let enables = assessment.changes.iter().filter(|c| enabling(c)).count();
        let trip = crate::policy::auto_renew_enables_belt(
            enables,
            self.config.limits.max_auto_renew_enables_per_run,
        )?;
        assessment.changes.retain(|c| !enabling(c));
        Some(trip)
    }

    /// Verifies new orders (polling until they show), gives open intents out of the window one
    /// look, and sets auto-renew attributes meanwhile.
    async fn verify_and_auto_renew(
        &self,
        histories: &crate::ledger::Histories,
        out_of_window: Vec<VerifyTarget>,
        acted: &mut Acted,
        changes: Vec<super::assess::AutoRenewChange>,
        summary: &mut PassSummary,
        by_state: &mut BTreeMap<InstanceState, usize>,
    ) -> Result<(), LedgerError> {
        let config = &self.config;
        let verify_targets = std::mem::take(&mut acted.verify_targets);
        let day = day_key(config, summary.started_at);
        // Verification only reads, and every renewal has been sent by now, so the auto-renew
        // changes go out at the same time.
        let verification = async {
            let mut verified = Vec::new();
            if self.cancel.is_cancelled() {
                return Ok(verified);
            }
            for (targets, timeout) in [
                (out_of_window, Duration::ZERO),
                (verify_targets, config.retry.verify_timeout),
            ] {
                if targets.is_empty() {
                    continue;
                }
                verified.extend(
                    verify(
                        &self.accounts,
                        &self.ledger,
                        self.clock.as_ref(),
                        targets,
                        (timeout, config.retry.verify_interval),
                        &day,
                        &self.cancel,
                    )
                    .await?,
                );
            }
            Ok::<_, LedgerError>(verified)
        };
        let auto_renew_changes = async {
            if self.cancel.is_cancelled() {
                return Ok(None);
            }
            auto_renew::apply(
                &self.accounts,
                &self.ledger,
                &self.metrics,
                changes,
                config.dry_run,
                self.clock.now(),
            )
            .await
            .map(Some)
        };
        let (verified, auto_renew_report) = tokio::join!(verification, auto_renew_changes);
        let verified = verified?;
        if let Some(report) = auto_renew_report? {
            summary.auto_renew_changed = report.changed;
            summary.auto_renew_failed = report.failed;
        }
        for v in verified.iter().filter(|v| v.settled != "verified") {
            if let Some(open) = histories.open.iter().find(|o| o.id == v.target.intent_id) {
                warn_if_outcome_unrecorded(open, v.new_expiry);
            }
        }
        apply_verified(verified, acted, summary, by_state);
        Ok(())
    }

    /// Renewals refused for a reason only a person can fix: one gauge per account and class.
    fn publish_refusals(&self, refused: &[super::assess::Refused]) {
        // Series of accounts no longer configured go away.
        self.metrics.renewals_refused.reset();
        let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for account in &self.config.accounts {
            for class in [
                crate::cloud::error::ErrorClass::Permission,
                crate::cloud::error::ErrorClass::Clock,
                crate::cloud::error::ErrorClass::Invalid,
            ] {
                counts.insert((account.name.as_str(), class.as_str()), 0);
            }
        }
        for r in refused {
            *counts.entry((&r.account, &r.class)).or_default() += 1;
            tracing::error!(account = %r.account, region = %r.region, instance = %r.instance_id, class = %r.class, code = %r.code,
                "a renewal stands refused for a reason only a person can fix: the instance will lapse unless it is fixed");
        }
        for ((account, class), n) in counts {
            self.metrics
                .renewals_refused
                .with_label_values(&[account, class])
                .set(n);
        }
    }

    /// Writes the acted-on lines, drops the lines of instances gone from sources scanned
    /// completely (a failed source keeps its last lines, and their alerts), and records
    /// the pass.
    fn publish(
        &self,
        generation: i64,
        reports: &[SourceReport],
        updates: &[StatusUpdate],
        mut summary: PassSummary,
        by_state: BTreeMap<InstanceState, usize>,
        mut phases: Phases,
    ) -> Result<PassSummary, LedgerError> {
        let finished = self.clock.now();
        self.ledger.update_status(updates, finished)?;
        let complete: Vec<(String, String)> = reports
            .iter()
            .filter(|r| r.ok())
            .map(|r| (r.key.account.clone(), r.key.region.clone()))
            .collect();
        self.ledger.prune_status(generation, &complete)?;
        phases.lap("publish");
        summary.phase_seconds = phases.laps;
        summary.finished_at = finished;
        summary.pending_verification = by_state
            .get(&InstanceState::PendingVerification)
            .copied()
            .unwrap_or(0);
        summary.by_state = by_state
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| (s.as_str().to_owned(), *n))
            .collect();
        let result = if !reports.is_empty() && reports.iter().all(|r| !r.ok()) {
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
        };
        summary.result = result.as_str().to_owned();
        self.metrics
            .passes_total
            .with_label_values(&[result.as_str()])
            .inc();
        self.ledger.record_pass(&PassRecord {
            started_at: summary.started_at,
            finished_at: finished,
            result: result.as_str().to_owned(),
            summary: serde_json::to_string(&summary).unwrap_or_default(),
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
}

/// Moves one instance between state counts.
fn move_state(
    by_state: &mut BTreeMap<InstanceState, usize>,
    from: InstanceState,
    to: InstanceState,
) {
    if let Some(n) = by_state.get_mut(&from) {
        *n = n.saturating_sub(1);
    }
    *by_state.entry(to).or_default() += 1;
}

/// What each renewal's outcome means: its status line, the summary's counts, what to verify,
/// the retry to wake for, and standing refusals.
fn apply_outcomes(
    to_renew: &[RenewCandidate],
    results: &[super::act::RenewalResult],
    acted: &mut Acted,
    summary: &mut PassSummary,
    by_state: &mut BTreeMap<InstanceState, usize>,
) {
    let by_id: std::collections::HashMap<&str, &RenewCandidate> = to_renew
        .iter()
        .map(|c| (c.instance.id.as_str(), c))
        .collect();
    let mut spend: BTreeMap<String, f64> = BTreeMap::new();
    for r in results {
        let Some(c) = by_id.get(r.instance_id.as_str()).copied() else {
            continue;
        };
        let update = match &r.outcome {
            RenewOutcome::Ordered {
                intent_id,
                order_id,
            } => {
                summary.renewed += 1;
                move_state(
                    by_state,
                    InstanceState::Due,
                    InstanceState::PendingVerification,
                );
                if let Some(q) = &c.price {
                    *spend.entry(q.trade_price.currency.clone()).or_default() +=
                        q.trade_price.as_f64();
                }
                acted.verify_targets.push(VerifyTarget {
                    intent_id: *intent_id,
                    account: r.account.clone(),
                    region: r.region.clone(),
                    instance_id: r.instance_id.clone(),
                    old_expiry: r.old_expiry,
                });
                update_for(
                    c,
                    InstanceState::PendingVerification,
                    "verify",
                    format!("renewed: order {order_id}; waiting for the new expiry to show"),
                    None,
                    c.failed_attempts,
                )
            }
            RenewOutcome::Failed {
                class,
                code,
                retry_at,
            } => {
                summary.renew_failed += 1;
                if *class != crate::cloud::error::ErrorClass::NotApplicable {
                    acted.next_retry = earliest(acted.next_retry, Some(*retry_at));
                }
                if let Some(refusal) = crate::policy::Refusal::of(*class, code) {
                    acted.refused.push(super::assess::Refused {
                        account: r.account.to_string(),
                        region: r.region.clone(),
                        instance_id: r.instance_id.clone(),
                        class: refusal.class.as_str().to_owned(),
                        code: refusal.code,
                    });
                }
                let state = if class.retry_later() {
                    InstanceState::Backoff
                } else {
                    InstanceState::Failed
                };
                move_state(by_state, InstanceState::Due, state);
                let reason = format!(
                    "renewal failed: {code} ({class}); next attempt at {}",
                    crate::cloud::time::format_minutes(*retry_at)
                );
                let word = if state == InstanceState::Backoff {
                    "backoff"
                } else {
                    "failed"
                };
                update_for(
                    c,
                    state,
                    word,
                    reason,
                    Some(*retry_at),
                    c.failed_attempts + 1,
                )
            }
            RenewOutcome::Unknown { retry_at } => {
                summary.renew_unknown += 1;
                acted.next_retry = earliest(acted.next_retry, Some(*retry_at));
                move_state(by_state, InstanceState::Due, InstanceState::Backoff);
                let reason = format!(
                    "renewal outcome unknown; resent with the same ClientToken at {}",
                    crate::cloud::time::format_minutes(*retry_at)
                );
                update_for(
                    c,
                    InstanceState::Backoff,
                    "backoff",
                    reason,
                    Some(*retry_at),
                    c.failed_attempts + 1,
                )
            }
            RenewOutcome::Skipped(why) => {
                summary.skipped += 1;
                acted.refused.extend(c.refused.clone());
                update_for(
                    c,
                    InstanceState::Due,
                    "renew",
                    why.clone(),
                    None,
                    c.failed_attempts,
                )
            }
            RenewOutcome::DryRun { token } => {
                summary.dry_run_renewals += 1;
                acted.refused.extend(c.refused.clone());
                let reason = format!("{} (dry run: not sent; ClientToken {token})", c.reason);
                update_for(
                    c,
                    InstanceState::Due,
                    "renew",
                    reason,
                    None,
                    c.failed_attempts,
                )
            }
            RenewOutcome::NotSent => {
                summary.skipped += 1;
                acted.refused.extend(c.refused.clone());
                let reason = format!("{} (not sent: shutting down)", c.reason);
                update_for(
                    c,
                    InstanceState::Due,
                    "renew",
                    reason,
                    None,
                    c.failed_attempts,
                )
            }
        };
        acted.updates.push(update);
    }
    summary.spend = spend;
}

/// Verified renewals: their status lines become `ok` with the new expiry.
fn apply_verified(
    verified: Vec<super::verify::Verified>,
    acted: &mut Acted,
    summary: &mut PassSummary,
    by_state: &mut BTreeMap<InstanceState, usize>,
) {
    let update_index: std::collections::HashMap<String, usize> = acted
        .updates
        .iter()
        .enumerate()
        .map(|(index, u)| (u.instance_id.clone(), index))
        .collect();
    for v in verified {
        summary.verified += usize::from(v.settled == "verified");
        let reason = if v.settled == "verified" {
            format!(
                "renewed and verified: expires {}",
                crate::cloud::time::format_minutes(v.new_expiry)
            )
        } else {
            format!(
                "expiry moved to {} without a recorded order",
                crate::cloud::time::format_minutes(v.new_expiry)
            )
        };
        match update_index.get(&v.target.instance_id).copied() {
            Some(index) => {
                let update = &mut acted.updates[index];
                move_state(
                    by_state,
                    InstanceState::PendingVerification,
                    InstanceState::Ok,
                );
                update.state = InstanceState::Ok.as_str().to_owned();
                update.decision = "none".to_owned();
                update.reason = reason;
                update.due_at = None;
                update.expires_at = Some(v.new_expiry);
            }
            None => acted.updates.push(StatusUpdate {
                account: v.target.account.to_string(),
                instance_id: v.target.instance_id.clone(),
                state: InstanceState::Ok.as_str().to_owned(),
                decision: "none".to_owned(),
                reason,
                due_at: None,
                failed_attempts: 0,
                next_retry_at: None,
                expires_at: Some(v.new_expiry),
            }),
        }
    }
}

/// The status change of one renewal candidate.
fn update_for(
    c: &RenewCandidate,
    state: InstanceState,
    decision: &str,
    reason: String,
    retry_at: Option<DateTime<Utc>>,
    failed_attempts: u32,
) -> StatusUpdate {
    StatusUpdate {
        account: c.account.to_string(),
        instance_id: c.instance.id.clone(),
        state: state.as_str().to_owned(),
        decision: decision.to_owned(),
        reason,
        due_at: retry_at,
        failed_attempts,
        next_retry_at: retry_at,
        expires_at: None,
    }
}

/// An intent that was sent but whose answer never reached the ledger is settled once the
/// expiry moves, without its order id: resending its token only to learn the id would charge
/// again if the provider had forgotten the token. The operator is told where to look.
fn warn_if_outcome_unrecorded(open: &crate::ledger::OpenIntent, new_expiry: DateTime<Utc>) {
    if open.maybe_charged {
        tracing::warn!(
            account = %open.account,
            instance = %open.instance_id,
            intent = open.id,
            new_expiry = %new_expiry,
            "a renewal whose answer was never recorded is settled: the expiry moved, so the instance is not lapsing; \
             its order id is unknown here; `ecs-renewd history --instance` shows the ClientToken to find it in billing"
        );
    }
}
