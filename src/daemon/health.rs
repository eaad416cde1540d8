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
    /// On a shared ledger while another replica leads: whether this one could take over (its
    /// last try reached the database). Sources and refusals are the leader's to judge.
    standby: Option<Result<(), String>>,
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
                standby: None,
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

    /// Standing by (`Some`: whether the database answered the last try) or acting (`None`).
    /// Ready on standby means able to lead — not leading, which would stall every rollout.
    pub fn set_standby(&self, standby: Option<Result<(), String>>) {
        self.lock().standby = standby;
    }

    /// Takes in a pass's per-source results.
    pub fn record(&self, summary: &PassSummary) {
        let mut state = self.lock();
        state.passes += 1;
        state.refused = summary.refused.clone();
        for (account, region) in &summary.forgotten_sources {
            state.sources.remove(&(account.clone(), region.clone()));
        }
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

    /// The verdict at `now`, given each account's credential check. `detailed`: the reasons
    /// name accounts, instances, regions and error codes (for a caller with the admin token, or
    /// when none is set); otherwise they say only what kind of problem and how many, so an open
    /// probe learns nothing of the fleet.
    pub fn readiness(
        &self,
        now: DateTime<Utc>,
        credentials: &[(String, Result<(), String>)],
        detailed: bool,
    ) -> Readiness {
        let state = self.lock();
        let mut reasons = Reasons::default();
        for (account, check) in credentials {
            if let Err(error) = check {
                reasons.add(
                    "accounts whose credentials are unusable",
                    format!("account {account}: credentials unusable: {error}"),
                );
            }
        }
        if let Some(standby) = &state.standby {
            if let Err(why) = standby {
                reasons.add(
                    "ledger database unreachable",
                    format!("standby: the ledger's database cannot be reached: {why}"),
                );
            }
            return reasons.verdict(detailed);
        }
        for r in &state.refused {
            reasons.add(
                &format!("{REFUSED}{}", r.class),
                format!(
                    "account {}: the renewal of {} in {} was refused ({}: {}): the instance will lapse unless this is fixed",
                    r.account, r.instance_id, r.region, r.class, r.code
                ),
            );
        }
        if state.sources.is_empty() {
            reasons.add(NOTHING_SCANNED, NOTHING_SCANNED.into());
        }
        let stale_after =
            chrono::Duration::from_std(state.interval * 2).unwrap_or(chrono::Duration::hours(1));
        for ((account, region), health) in &state.sources {
            if let Some((class, error)) = &health.last_failure
                && matches!(class, ErrorClass::Permission | ErrorClass::Clock)
            {
                reasons.add(
                    &format!("sources failing for {class}"),
                    format!("source {account}/{region}: last scan failed ({class}): {error}"),
                );
                continue;
            }
            match health.last_success {
                Some(at) if now - at <= stale_after => {}
                Some(at) => reasons.add(
                    "sources not scanned completely within two cadences",
                    format!(
                        "source {account}/{region}: last complete scan at {} is older than two cadences",
                        crate::cloud::time::format_seconds(at)
                    ),
                ),
                None => reasons.add(
                    "sources not scanned completely within two cadences",
                    format!("source {account}/{region}: never scanned completely"),
                ),
            }
        }
        reasons.verdict(detailed)
    }
}

/// Why a daemon is not ready: each reason with its kind, for the two forms.
#[derive(Debug, Default)]
struct Reasons {
    /// (kind, the reason with its names), in order.
    all: Vec<(String, String)>,
}

/// The kind of reason a refused renewal is (its count is capped when named).
const REFUSED: &str = "renewals refused for ";

impl Reasons {
    fn add(&mut self, kind: &str, detail: String) {
        self.all.push((kind.to_owned(), detail));
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The reasons one by one; refused renewals named up to `REFUSALS_NAMED`.
    /// The verdict: ready when there is no reason; the reasons named or only counted.
    fn verdict(self, detailed: bool) -> Readiness {
        Readiness {
            ready: self.is_empty(),
            reasons: if detailed {
                self.named()
            } else {
                self.counted()
            },
        }
    }

    fn named(self) -> Vec<String> {
        let refused = self
            .all
            .iter()
            .filter(|(k, _)| k.starts_with(REFUSED))
            .count();
        let mut named = 0;
        let mut out = Vec::new();
        for (kind, detail) in self.all {
            if kind.starts_with(REFUSED) {
                named += 1;
                if named > REFUSALS_NAMED {
                    continue;
                }
            }
            out.push(detail);
        }
        if refused > REFUSALS_NAMED {
            out.push(format!(
                "and {} more refused renewal(s): see `ecs-renewd status`",
                refused - REFUSALS_NAMED
            ));
        }
        out
    }

    /// One line per kind, with how many, in the order first seen.
    fn counted(self) -> Vec<String> {
        let mut kinds: Vec<(String, usize)> = Vec::new();
        for (kind, _) in self.all {
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((kind, 1)),
            }
        }
        kinds
            .into_iter()
            .map(|(kind, n)| {
                if kind == NOTHING_SCANNED {
                    kind
                } else {
                    format!("{kind}: {n}")
                }
            })
            .collect()
    }
}

/// The reason a daemon that has scanned nothing gives.
const NOTHING_SCANNED: &str = "no source has been scanned yet";
