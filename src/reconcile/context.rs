//! `PassContext`: what every phase of one pass reads — the engine's parts and the pass's own
//! facts (when it started, the day its charges count in). One value handed to each phase
//! instead of each phase taking its own list of arguments.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::funds::FundsMemory;
use crate::accounts::AccountClient;
use crate::clock::Clock;
use crate::config::Config;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::policy::DecideContext;

/// The context of one pass, borrowed from its `Engine` for the pass's length.
pub struct PassContext<'a> {
    /// The config in force for the pass (a reload takes effect at the next pass).
    pub config: &'a Config,
    /// One API client per config account entry, found by the entry's name.
    pub accounts: &'a [AccountClient],
    /// The durable record every charge is written to before it is sent (shared with the
    /// blocking pool, where writes made from async code run).
    pub ledger: &'a Arc<Ledger>,
    /// Where outcomes, spend, belt trips and per-source health are counted.
    pub metrics: &'a Metrics,
    /// The time source for ledger timestamps and retry times.
    pub clock: &'a dyn Clock,
    /// Shutdown: no new call starts once it fires.
    pub cancel: &'a CancellationToken,
    /// Balances and price quotes the funds forecast reuses between passes.
    pub funds: &'a FundsMemory,
    /// When the pass began (the clock's now, UTC); decisions are made at this time.
    pub started: DateTime<Utc>,
    /// The calendar day (in the config's timezone) the pass's charges count toward.
    pub day: String,
    /// The pass's generation (its start in milliseconds): status lines written by the pass
    /// carry it, so lines of instances no longer listed can be pruned.
    pub generation: i64,
    /// A pass, or `plan` (the same phases up to the forecast, over a scratch ledger).
    pub mode: Mode,
}

/// What the phases run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A pass: status lines stream into the ledger; prices are asked where a limit needs them.
    Pass,
    /// `plan`: every instance's row is kept to be shown, and every renewal is priced.
    Plan,
}

impl PassContext<'_> {
    /// Whether `account` names a configured entry, and its client.
    pub fn account(&self, name: &str) -> Option<&AccountClient> {
        self.accounts.iter().find(|a| *a.name == *name)
    }
}

/// The calendar day (in the config's timezone) that daily limits count in.
pub fn day_key(config: &Config, now: DateTime<Utc>) -> String {
    now.with_timezone(&config.timezone).date_naive().to_string()
}

/// The expiry window scanned at `now`: from `grace` behind to `horizon` ahead.
pub fn window(config: &Config, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let behind = chrono::Duration::from_std(config.scan.grace).unwrap_or_default();
    let ahead = chrono::Duration::from_std(config.scan.horizon).unwrap_or_default();
    (now - behind, now + ahead)
}

/// The settings `decide` takes from the config.
pub fn decide_context(config: &Config) -> DecideContext<'_> {
    DecideContext {
        policies: &config.policies,
        skip_tag: &config.scan.skip_tag,
        horizon: config.scan.horizon,
        release_after: config.scan.release_after,
        schedules: config
            .accounts
            .iter()
            .map(|a| (a.name.clone(), a.deduction_schedule))
            .collect(),
        funds_until: None,
    }
}
