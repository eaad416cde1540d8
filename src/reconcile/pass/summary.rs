//! What a pass reports: its summary (logged, stored in the ledger, shown by `once`, `status`
//! and systemd's STATUS), and the wall time of each phase.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A pass's summary (logged, stored in the ledger, shown by `once` and systemd's STATUS).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PassSummary {
    /// When the pass began (the clock's now, UTC).
    pub started_at: DateTime<Utc>,
    /// When the pass ended, after its record was written.
    pub finished_at: DateTime<Utc>,
    /// `ok`, `partial` or `failed` (a `PassResult` word).
    pub result: String,
    /// Instances seen in the expiry window across all sources.
    pub instances: usize,
    /// Sources (account × region) scanned.
    pub sources: usize,
    /// Sources whose scan failed, as `account/region`.
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
    /// Belts that tripped, as `limit: detail`.
    pub trips: Vec<String>,
    /// Instances per state word, states with none left out.
    pub by_state: BTreeMap<String, usize>,
    /// Instance records that could not be understood (not managed until they can be).
    pub undecodable: usize,
    /// Each source's scan: ok, or the failure class and message.
    pub source_results: Vec<SourceResult>,
    /// Seconds spent in each phase.
    pub phase_seconds: BTreeMap<String, f64>,
    /// The earliest retry that will be attempted when it is due (after this pass started);
    /// the daemon may wake for it before its schedule. `None` in dry run.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Renewals refused for a reason only a person can fix, still standing.
    pub refused: Vec<crate::reconcile::assess::Refused>,
    /// Sources that listed instances another config entry listed first (two entries reach one
    /// cloud account), with how many and one example.
    pub duplicate_sources: Vec<DuplicateSources>,
    /// Attempts found still out at the start of the pass (the process had stopped): counted
    /// as possibly charged.
    pub interrupted: usize,
    /// The funds forecast per account and currency (empty when `[funds] enabled = false`).
    pub funds: Vec<crate::policy::Forecast>,
    /// Renewals held by a funds backoff that a top-up now covers: retried in this pass.
    pub top_ups: Vec<crate::reconcile::funds::TopUp>,
}

/// Instances one source listed that another listed first, in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DuplicateSources {
    /// The source the instances were managed through.
    pub kept: String,
    /// The source whose listings were set aside.
    pub dropped: String,
    /// How many instances both listed.
    pub instances: usize,
    /// One of them, for the operator to look up.
    pub example: String,
}

/// How one source's scan went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceResult {
    /// Name of the config account entry scanned.
    pub account: String,
    /// The region scanned, e.g. cn-hangzhou.
    pub region: String,
    /// The failure class (an `ErrorClass` word), when it failed.
    pub failure_class: Option<String>,
    /// The failure, in words, when it failed.
    pub error: Option<String>,
}

/// How many of a forecast's charges (and unpriced charges) a pass record lists, earliest first:
/// the ones a shortfall is about. The rest are counted (`charges_not_recorded`).
pub const RECORDED_CHARGES: usize = 50;

impl PassSummary {
    /// The JSON the ledger keeps for the pass: the summary, with each forecast's charge list
    /// cut to its earliest [`RECORDED_CHARGES`] (a pass record is written every pass and kept).
    pub fn record_json(&self) -> String {
        let record = PassSummary {
            funds: self
                .funds
                .iter()
                .map(|f| f.for_record(RECORDED_CHARGES))
                .collect(),
            ..self.clone()
        };
        serde_json::to_string(&record).unwrap_or_default()
    }

    /// An empty summary for a pass that began at `started`.
    pub fn starting(started: DateTime<Utc>) -> PassSummary {
        PassSummary {
            started_at: started,
            ..PassSummary::default()
        }
    }

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

/// Wall time per phase of a pass.
pub struct Phases {
    last: tokio::time::Instant,
    laps: BTreeMap<String, f64>,
}

impl Phases {
    /// Starts timing at the beginning of the first phase.
    pub fn start() -> Phases {
        Phases {
            last: tokio::time::Instant::now(),
            laps: BTreeMap::new(),
        }
    }

    /// Ends `phase`: its time is the time since the previous lap.
    pub fn lap(&mut self, phase: &str) {
        let now = tokio::time::Instant::now();
        self.laps
            .insert(phase.to_owned(), (now - self.last).as_secs_f64());
        self.last = now;
    }

    /// Seconds per phase.
    pub fn into_seconds(self) -> BTreeMap<String, f64> {
        self.laps
    }
}
