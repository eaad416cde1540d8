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
use super::verify::{VerifyTarget, verify};
use super::{Rows, StatusWriter, auto_renew, observe_and_assess, price::price_candidates};
use crate::accounts::AccountClient;
use crate::clock::Clock;
use crate::config::Config;
use crate::ledger::{Ledger, LedgerError, PassRecord, StatusUpdate};
use crate::metrics::{Metrics, PassResult};
use crate::policy::{BeltInput, Candidate, InstanceState, apply_belts};

/// Everything a pass needs; built once by the daemon (rebuilt on reload).
pub struct Engine {
    /// The config.
    pub config: Arc<Config>,
    /// Account clients.
    pub accounts: Vec<AccountClient>,
    /// The ledger.
    pub ledger: Arc<Ledger>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clock.
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
    /// Account.
    pub account: String,
    /// Region.
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
        let mut phases = Phases::start();

        let histories = self.ledger.histories()?;
        let unchecked = self.ledger.unchecked_auto_renew_changes()?;
        let mut watch: HashSet<(String, String)> = histories
            .open
            .iter()
            .map(|o| (o.account.clone(), o.instance_id.clone()))
            .collect();
        watch.extend(
            unchecked
                .iter()
                .map(|(_, account, instance, _)| (account.clone(), instance.clone())),
        );

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
        let mut updates: Vec<StatusUpdate> = Vec::new();
        let mut move_state = |from: InstanceState, to: InstanceState| {
            if let Some(n) = by_state.get_mut(&from) {
                *n = n.saturating_sub(1);
            }
            *by_state.entry(to).or_default() += 1;
        };

        summary.sources = reports.len();
        let mut scanned: Vec<(&str, &str)> = Vec::new();
        for report in &reports {
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
                    scanned.push((&report.key.account, &report.key.region));
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
        // One transaction for all sources (and below, for all settlements and checks): each
        // is a sync to disk, and a pass over a large fleet has thousands of them.
        self.ledger.record_source_successes(&scanned, started)?;

        // Settle intents whose expiry moved. Open intents whose instance is not in the window
        // (a renewal whose answer was never recorded can carry it past the horizon) get one
        // look by id in the verify phase, whatever their status, so none stays open for ever.
        let mut verify_targets = Vec::new();
        let mut out_of_window = Vec::new();
        let mut moved = Vec::new();
        for open in &histories.open {
            match watched.get(&(open.account.clone(), open.instance_id.clone())) {
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
            self.clock.now(),
        )?;
        for ((open, expiry), settled) in moved.iter().zip(&settled) {
            warn_if_outcome_unrecorded(open, *expiry);
            summary.verified += usize::from(settled == "verified");
        }
        let mut checks = Vec::new();
        for (id, account, instance, target) in &unchecked {
            if let Some(attrs) = watched
                .get(&(account.clone(), instance.clone()))
                .and_then(|w| w.auto_renew.as_ref())
            {
                let took = attrs.renewal_status == target.status
                    && (target.status != crate::cloud::types::RenewalStatus::AutoRenewal
                        || attrs.duration == target.duration);
                checks.push((*id, took));
                if !took {
                    tracing::warn!(account = %account, instance = %instance, "an auto-renew change did not take effect");
                }
            }
        }
        self.ledger.check_auto_renew_changes(&checks)?;

        phases.lap("settle");

        // Price where a limit needs it, then the belts over the whole batch.
        let needs_price = |c: &super::assess::RenewCandidate| {
            c.plan.max_price_cents.is_some() || config.limits.has_spend_limits()
        };
        price_candidates(
            &self.accounts,
            &mut assessment.renewals,
            config.scan.concurrency,
            needs_price,
        )
        .await;
        let day = day_key(config, started);
        let (renewed_today, spent_today) = self.ledger.day_totals(&day)?;
        let candidates: Vec<Candidate> = assessment
            .renewals
            .iter()
            .enumerate()
            .map(|(key, c)| Candidate {
                key,
                label: c.instance.id.clone(),
                price: c
                    .price
                    .as_ref()
                    .map(|q| (q.trade_price.cents, q.trade_price.currency.clone())),
                max_price_cents: c.plan.max_price_cents,
            })
            .collect();
        let belts = apply_belts(
            &candidates,
            &BeltInput {
                max_per_run: config.limits.max_renewals_per_run,
                max_per_day: config.limits.max_renewals_per_day,
                renewed_today,
                max_spend_per_run: config.limits.max_spend_per_run.clone(),
                max_spend_per_day: config.limits.max_spend_per_day.clone(),
                spent_today,
                max_fleet_share: config.limits.max_fleet_share_per_run,
                fleet_size: assessment.instances,
            },
        );
        let mut tripped = HashSet::new();
        for trip in &belts.trips {
            if tripped.insert(trip.limit) {
                self.metrics
                    .limit_trips_total
                    .with_label_values(&[trip.limit.as_str()])
                    .inc();
            }
            tracing::error!(limit = trip.limit.as_str(), detail = %trip.detail, "safety belt tripped: the renewals it covers are not charged");
            summary
                .trips
                .push(format!("{}: {}", trip.limit, trip.detail));
        }
        for (key, limit) in &belts.held {
            let c = &assessment.renewals[*key];
            summary.held += 1;
            updates.push(update_for(
                c,
                InstanceState::Due,
                "hold",
                format!("{} — held: the {limit} limit tripped", c.reason),
                None,
                c.failed_attempts,
            ));
        }
        let allowed: HashSet<usize> = belts.allowed.iter().copied().collect();
        let to_renew: Vec<_> = assessment
            .renewals
            .iter()
            .enumerate()
            .filter(|(key, _)| allowed.contains(key))
            .map(|(_, c)| c.clone())
            .collect();

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
        let by_key: std::collections::HashMap<u128, &super::assess::RenewCandidate> = to_renew
            .iter()
            .map(|c| (super::assess::instance_key(&c.account, &c.instance.id), c))
            .collect();
        let candidate_of = |account: &str, id: &str| {
            by_key
                .get(&super::assess::instance_key(account, id))
                .copied()
        };
        let mut spend: BTreeMap<String, f64> = BTreeMap::new();
        for r in &results {
            let Some(c) = candidate_of(&r.account, &r.instance_id) else {
                continue;
            };
            match &r.outcome {
                RenewOutcome::Ordered {
                    intent_id,
                    order_id,
                } => {
                    summary.renewed += 1;
                    move_state(InstanceState::Due, InstanceState::PendingVerification);
                    if let Some(q) = &c.price {
                        *spend.entry(q.trade_price.currency.clone()).or_default() +=
                            q.trade_price.as_f64();
                    }
                    updates.push(update_for(
                        c,
                        InstanceState::PendingVerification,
                        "verify",
                        format!("renewed: order {order_id}; waiting for the new expiry to show"),
                        None,
                        c.failed_attempts,
                    ));
                    verify_targets.push(VerifyTarget {
                        intent_id: *intent_id,
                        account: r.account.clone(),
                        region: r.region.clone(),
                        instance_id: r.instance_id.clone(),
                        old_expiry: r.old_expiry,
                    });
                }
                RenewOutcome::Failed {
                    class,
                    code,
                    retry_at,
                } => {
                    summary.renew_failed += 1;
                    let state = if class.retry_later() {
                        InstanceState::Backoff
                    } else {
                        InstanceState::Failed
                    };
                    move_state(InstanceState::Due, state);
                    let reason = format!(
                        "renewal failed: {code} ({class}); next attempt at {}",
                        crate::cloud::time::format_minutes(*retry_at)
                    );
                    let word = if state == InstanceState::Backoff {
                        "backoff"
                    } else {
                        "failed"
                    };
                    updates.push(update_for(
                        c,
                        state,
                        word,
                        reason,
                        Some(*retry_at),
                        c.failed_attempts + 1,
                    ));
                }
                RenewOutcome::Unknown { retry_at } => {
                    summary.renew_unknown += 1;
                    move_state(InstanceState::Due, InstanceState::Backoff);
                    let reason = format!(
                        "renewal outcome unknown; resent with the same ClientToken at {}",
                        crate::cloud::time::format_minutes(*retry_at)
                    );
                    updates.push(update_for(
                        c,
                        InstanceState::Backoff,
                        "backoff",
                        reason,
                        Some(*retry_at),
                        c.failed_attempts + 1,
                    ));
                }
                RenewOutcome::Skipped(why) => {
                    summary.skipped += 1;
                    updates.push(update_for(
                        c,
                        InstanceState::Due,
                        "renew",
                        why.clone(),
                        None,
                        c.failed_attempts,
                    ));
                }
                RenewOutcome::DryRun { token } => {
                    summary.dry_run_renewals += 1;
                    updates.push(update_for(
                        c,
                        InstanceState::Due,
                        "renew",
                        format!("{} (dry run: not sent; ClientToken {token})", c.reason),
                        None,
                        c.failed_attempts,
                    ));
                }
                RenewOutcome::NotSent => {
                    summary.skipped += 1;
                    updates.push(update_for(
                        c,
                        InstanceState::Due,
                        "renew",
                        format!("{} (not sent: shutting down)", c.reason),
                        None,
                        c.failed_attempts,
                    ));
                }
            }
        }
        summary.spend = spend;
        if let Some(error) = ledger_error {
            self.ledger.update_status(&updates, self.clock.now())?;
            return Err(error);
        }

        phases.lap("act");

        // Verify new orders, polling until they show; one look at open intents out of the window.
        // Verification only reads, and every renewal has been sent by now, so the auto-renew
        // changes go out at the same time.
        let verification = async {
            let mut verified = Vec::new();
            if self.cancel.is_cancelled() {
                return Ok(verified);
            }
            if !out_of_window.is_empty() {
                verified = verify(
                    &self.accounts,
                    &self.ledger,
                    self.clock.as_ref(),
                    out_of_window,
                    Duration::ZERO,
                    config.retry.verify_interval,
                    &self.cancel,
                )
                .await?;
            }
            if !verify_targets.is_empty() {
                verified.extend(
                    verify(
                        &self.accounts,
                        &self.ledger,
                        self.clock.as_ref(),
                        verify_targets,
                        config.retry.verify_timeout,
                        config.retry.verify_interval,
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
                assessment.changes.clone(),
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
        let update_index: std::collections::HashMap<(String, String), usize> = updates
            .iter()
            .enumerate()
            .map(|(index, u)| ((u.account.to_string(), u.instance_id.clone()), index))
            .collect();
        for v in verified {
            summary.verified += usize::from(v.settled == "verified");
            let this_pass = update_index
                .get(&(v.target.account.to_string(), v.target.instance_id.clone()))
                .copied();
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
            match this_pass {
                Some(index) => {
                    let update = &mut updates[index];
                    move_state(InstanceState::PendingVerification, InstanceState::Ok);
                    update.state = InstanceState::Ok.as_str().to_owned();
                    update.decision = "none".to_owned();
                    update.reason = reason;
                    update.due_at = None;
                    update.expires_at = Some(v.new_expiry);
                }
                None => updates.push(StatusUpdate {
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

        phases.lap("verify_and_auto_renew");

        // Publish: the acted-on lines, then drop the lines of instances gone from sources
        // scanned completely (a failed source keeps its last lines, and their alerts).
        let finished = self.clock.now();
        self.ledger.update_status(&updates, finished)?;
        let complete: Vec<(String, String)> = reports
            .iter()
            .filter(|r| r.ok())
            .map(|r| (r.key.account.clone(), r.key.region.clone()))
            .collect();
        self.ledger.prune_status(generation, &complete)?;
        phases.lap("publish");
        summary.phase_seconds = phases.laps;
        summary.finished_at = finished;
        summary.instances = assessment.instances;
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
            started_at: started,
            finished_at: finished,
            result: result.as_str().to_owned(),
            summary: serde_json::to_string(&summary).unwrap_or_default(),
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

/// The status change of one renewal candidate.
fn update_for(
    c: &super::assess::RenewCandidate,
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
    if matches!(open.status.as_str(), "sent" | "unknown") {
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
