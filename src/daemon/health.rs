//! Readiness: the daemon is ready when every account's credentials are usable, no source's last
//! scan failed for permission or clock reasons, no renewal stands refused for such a reason (or
//! as an invalid request), and every source was scanned completely within two cadences. Fed by
//! each pass; seeded from the ledger at start-up.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cloud::ErrorClass;
use crate::ledger::SourceStatus;
use crate::reconcile::pass::PassSummary;

#[derive(Debug, Clone, Default)]
struct SourceHealth {
    last_success: Option<DateTime<Utc>>,
    last_failure: Option<(ErrorClass, String)>,
}

/// The readiness verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Ready?
    pub ready: bool,
    /// Why not (empty when ready).
    pub reasons: Vec<String>,
}

/// What readiness is judged on.
#[derive(Debug)]
pub struct Health {
    inner: Mutex<State>,
}

#[derive(Debug)]
struct State {
    interval: Duration,
    sources: BTreeMap<(String, String), SourceHealth>,
    passes: u64,
    /// Renewals refused for a reason only a person can fix, as of the last pass.
    refused: Vec<crate::reconcile::assess::Refused>,
}

/// How many refused renewals `/readyz` names one by one.
const REFUSALS_NAMED: usize = 5;

impl Health {
    /// Starts from the ledger's record of complete scans.
    pub fn new(interval: Duration, successes: Vec<SourceStatus>) -> Health {
        let sources = successes
            .into_iter()
            .map(|s| {
                (
                    (s.account, s.region),
                    SourceHealth {
                        last_success: Some(s.last_success),
                        last_failure: None,
                    },
                )
            })
            .collect();
        Health {
            inner: Mutex::new(State {
                interval,
                sources,
                passes: 0,
                refused: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the cadence (after a reload).
    pub fn set_interval(&self, interval: Duration) {
        self.lock().interval = interval;
    }

    /// Takes in a pass's per-source results.
    pub fn record(&self, summary: &PassSummary) {
        let mut state = self.lock();
        state.passes += 1;
        state.refused = summary.refused.clone();
        for result in &summary.source_results {
            let entry = state
                .sources
                .entry((result.account.clone(), result.region.clone()))
                .or_default();
            match (&result.failure_class, &result.error) {
                (Some(class), Some(error)) => entry.last_failure = Some((*class, error.clone())),
                _ => {
                    entry.last_success = Some(summary.started_at);
                    entry.last_failure = None;
                }
            }
        }
    }

    /// The verdict at `now`, given each account's credential check.
    pub fn readiness(
        &self,
        now: DateTime<Utc>,
        credentials: &[(String, Result<(), String>)],
    ) -> Readiness {
        let state = self.lock();
        let mut reasons = Vec::new();
        for (account, check) in credentials {
            if let Err(error) = check {
                reasons.push(format!("account {account}: credentials unusable: {error}"));
            }
        }
        for r in state.refused.iter().take(REFUSALS_NAMED) {
            reasons.push(format!(
                "account {}: the renewal of {} in {} was refused ({}: {}): the instance will lapse unless this is fixed",
                r.account, r.instance_id, r.region, r.class, r.code
            ));
        }
        if state.refused.len() > REFUSALS_NAMED {
            reasons.push(format!(
                "and {} more refused renewal(s): see `ecs-renewd status`",
                state.refused.len() - REFUSALS_NAMED
            ));
        }
        if state.sources.is_empty() {
            reasons.push("no source has been scanned yet".into());
        }
        let stale_after =
            chrono::Duration::from_std(state.interval * 2).unwrap_or(chrono::Duration::hours(1));
        for ((account, region), health) in &state.sources {
            if let Some((class, error)) = &health.last_failure
                && matches!(class, ErrorClass::Permission | ErrorClass::Clock)
            {
                reasons.push(format!(
                    "source {account}/{region}: last scan failed ({class}): {error}"
                ));
                continue;
            }
            match health.last_success {
                Some(at) if now - at <= stale_after => {}
                Some(at) => reasons.push(format!(
                    "source {account}/{region}: last complete scan at {} is older than two cadences",
                    crate::cloud::time::format_seconds(at)
                )),
                None => reasons.push(format!("source {account}/{region}: never scanned completely")),
            }
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }
}
