//! Running one pass from the loop: after a cron tick's jitter, as a task of its own so a stop
//! request can bound how long it may finish (`shutdown_grace`); then what its end means —
//! readiness, the retry to wake for, systemd's `STATUS=`, the exposure warning — or, when it
//! stopped on a ledger error, that no charge was made without its record.

use rand::RngExt;

use super::admin::Warn;
use super::service::{Service, Wake};
use super::systemd::{NotifyState, notify};
use crate::ledger::LedgerError;
use crate::metrics::PassResult;
use crate::reconcile::PassSummary;

/// A draw from [0, 1) for the retry wake-up's jitter.
pub(super) fn jitter() -> f64 {
    rand::rng().random_range(0.0..1.0)
}

/// How a pass task ended.
enum Ended {
    /// With its summary.
    Summary(Box<PassSummary>),
    /// On a ledger error (nothing is charged without its record).
    Ledger(LedgerError),
    /// The task failed (a panic).
    Lost(String),
    /// A stop's grace ran out before the pass finished: it was abandoned (the daemon is
    /// stopping; open intents are resent with their tokens at the next start).
    Abandoned,
}

impl Service {
    /// Runs one pass for `wake`.
    pub(super) async fn pass(&mut self, wake: Wake) {
        // A standby makes no cloud call: its ticks and retries are the leader's to run.
        if self.leadership.as_ref().is_some_and(|l| !l.is_leading()) {
            tracing::debug!(?wake, "standby: the pass is the leader's");
            return;
        }
        if matches!(wake, Wake::Tick(_)) && !self.tick_jitter().await {
            return;
        }
        // Ticks that queued up meanwhile are folded into this pass.
        while let Ok(tick) = self.ticks.try_recv() {
            self.timers.watchdog.fired(tick.at);
            self.engine.metrics.ticks_coalesced_total.inc();
        }
        tracing::info!(?wake, "pass starting");
        if let Err(error) = self
            .engine
            .ledger
            .mark_pass_started(self.engine.clock.now())
        {
            tracing::error!(%error, "the pass did not start: its start could not be noted in the ledger");
            self.failed(&format!("last pass failed: {error}"));
            if error.ends_the_term() {
                self.exit = Some(error);
            }
            return;
        }
        match self.run_bounded().await {
            Ended::Summary(summary) => self.passed(*summary),
            Ended::Ledger(error) => {
                tracing::error!(%error, "the pass stopped on a ledger error; no charge is made without its record");
                self.failed(&format!("last pass failed: {error}"));
                if error.ends_the_term() {
                    if matches!(error, LedgerError::Fenced { .. }) {
                        self.engine.metrics.leadership.fenced_writes_total.inc();
                    }
                    self.exit = Some(error);
                }
            }
            Ended::Lost(why) => {
                tracing::error!(error = %why, "the pass task failed");
                self.failed(&format!("last pass failed: {why}"));
            }
            Ended::Abandoned => {
                tracing::error!(
                    "the pass did not finish within the shutdown grace; stopping anyway (open intents are resent with their tokens next start)"
                );
            }
        }
    }

    /// Waits a cron tick's random jitter; false when a stop came first.
    async fn tick_jitter(&self) -> bool {
        let jitter = self.engine.config.jitter;
        if jitter.is_zero() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(jitter.mul_f64(self::jitter())) => true,
            _ = self.signals.stop.cancelled() => false,
        }
    }

    /// The pass as its own task; systemd is pinged meanwhile, and a stop request gives it
    /// `shutdown_grace` to finish (no new call starts; the one in flight and its ledger write
    /// finish).
    async fn run_bounded(&mut self) -> Ended {
        let engine = self.engine.clone();
        let mut task = tokio::spawn(async move { engine.run_pass().await });
        let joined = loop {
            tokio::select! {
                joined = &mut task => break joined,
                _ = super::service::tick_if(&mut self.timers.ping) => notify(&[NotifyState::Watchdog]),
                _ = self.signals.stop.cancelled() => {
                    let grace = self.engine.config.shutdown_grace;
                    notify(&[NotifyState::Stopping]);
                    tracing::warn!(grace = %crate::duration::format(grace),
                        "stop requested during a pass: no new ECS call starts; the one in flight and its ledger write finish");
                    self.engine.cancel.cancel();
                    match tokio::time::timeout(grace, &mut task).await {
                        Ok(joined) => break joined,
                        Err(_) => {
                            task.abort();
                            return Ended::Abandoned;
                        }
                    }
                }
            }
        };
        match joined {
            Ok(Ok(summary)) => Ended::Summary(Box::new(summary)),
            Ok(Err(error)) => Ended::Ledger(error),
            Err(join_error) => Ended::Lost(join_error.to_string()),
        }
    }

    /// A pass that finished: its memory handed back, readiness, the retry to wake for.
    fn passed(&mut self, summary: PassSummary) {
        // A pass over a large fleet frees a lot: hand it back before idling.
        self.engine.ledger.shrink_memory();
        self.engine.ledger.checkpoint_soon();
        crate::memory::release_free_memory();
        self.health.record(&summary);
        self.wakes
            .after_pass(summary.started_at, summary.next_retry_at, jitter());
        if let Some(at) = self.wakes.next() {
            tracing::info!(at = %crate::cloud::time::format_seconds(at), "a retry is due before the schedule: a pass runs for it then");
        }
        notify(&[NotifyState::Status(&summary.line())]);
        self.admin
            .warn_if_exposed(summary.finished_at, Warn::Hourly);
        if let Some(passes) = &self.passes {
            let _ = passes.send(summary);
        }
    }

    /// A pass that ended without a summary: counted as failed; the next one waits for the
    /// schedule rather than retry early.
    fn failed(&mut self, status: &str) {
        self.wakes.forget();
        self.engine
            .metrics
            .passes_total
            .with_label_values(&[PassResult::Failed.as_str()])
            .inc();
        notify(&[NotifyState::Status(status)]);
    }
}
