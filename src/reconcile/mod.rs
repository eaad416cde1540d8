//! One pass: observe → decide → price → belts → act → verify → record. `plan` runs the first
//! four steps and stops; the daemon and `once` run them all.
//!
//! - `observe`: scan sources page by page (DescribeInstances + auto-renew attributes).
//! - `assess`: decide per instance as pages arrive; keep rows and wanted actions.
//! - `price`: quote the renewals where a limit needs the price.

pub mod act;
pub mod assess;
pub mod auto_renew;
pub mod observe;
pub mod pass;
pub mod price;
pub mod token;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use crate::accounts::AccountClient;
use crate::config::Config;
use crate::policy::DecideContext;
use assess::{Assessment, HistorySource};
use observe::SourceReport;

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
    }
}

/// What was seen of a watched instance (one with an open intent or an unchecked auto-renew
/// change).
#[derive(Debug, Clone)]
pub struct Watched {
    /// Its expiry.
    pub expiry: DateTime<Utc>,
    /// Its auto-renew attributes.
    pub auto_renew: Option<crate::cloud::types::AutoRenewAttribute>,
}

/// Where assessed rows go.
pub enum Rows<'a> {
    /// Kept in the assessment (`plan`).
    Collect,
    /// Written to the ledger's status table as they come (the daemon: nothing per instance
    /// stays in memory).
    Stream(&'a StatusWriter<'a>),
}

/// Writes status lines in batches, for one pass (`generation`).
pub struct StatusWriter<'a> {
    ledger: &'a crate::ledger::Ledger,
    generation: i64,
    buffer: Mutex<Vec<crate::ledger::StatusRow>>,
    error: Mutex<Option<crate::ledger::LedgerError>>,
}

/// Status lines per write.
const STATUS_BATCH: usize = 1000;

impl<'a> StatusWriter<'a> {
    /// A writer for the pass tagged `generation`.
    pub fn new(ledger: &'a crate::ledger::Ledger, generation: i64) -> StatusWriter<'a> {
        StatusWriter {
            ledger,
            generation,
            buffer: Mutex::new(Vec::with_capacity(STATUS_BATCH)),
            error: Mutex::new(None),
        }
    }

    fn push(&self, row: crate::ledger::StatusRow) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        buffer.push(row);
        if buffer.len() >= STATUS_BATCH {
            let batch = std::mem::take(&mut *buffer);
            drop(buffer);
            self.write(&batch);
        }
    }

    fn write(&self, batch: &[crate::ledger::StatusRow]) {
        if let Err(error) = self.ledger.write_status(batch, self.generation) {
            self.error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(error);
        }
    }

    /// Writes what is left; returns the first write error, if any.
    pub fn finish(&self) -> Result<(), crate::ledger::LedgerError> {
        let batch = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() {
            self.write(&batch);
        }
        match self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Scans every source (bounded concurrency) and assesses every instance seen; rows go to
/// `rows`; instances in `watch` (account, instance id) are also reported as seen.
pub async fn observe_and_assess(
    config: &Config,
    accounts: &[AccountClient],
    histories: &(dyn HistorySource + Sync),
    watch: &HashSet<(String, String)>,
    rows: Rows<'_>,
    now: DateTime<Utc>,
) -> (
    Assessment,
    Vec<SourceReport>,
    HashMap<(String, String), Watched>,
) {
    let (sources, mut reports) = observe::list_sources(accounts, &config.scan.home_region).await;
    let window = window(config, now);
    let ctx = decide_context(config);
    let seen = Mutex::new(HashSet::new());
    let watched = Mutex::new(HashMap::new());
    let rows = &rows;
    let results: Vec<(Assessment, SourceReport)> = futures_util::stream::iter(sources)
        .map(|(account, region)| {
            let ctx = ctx.clone();
            let seen = &seen;
            let watched = &watched;
            async move {
                let mut assessment = Assessment::default();
                let mut sink = |observed: observe::Observed| {
                    if !watch.is_empty() {
                        let key = (observed.account.to_string(), observed.instance.id.clone());
                        if watch.contains(&key) {
                            watched.lock().unwrap_or_else(|p| p.into_inner()).insert(
                                key,
                                Watched {
                                    expiry: observed.instance.expired_time,
                                    auto_renew: observed.auto_renew.clone(),
                                },
                            );
                        }
                    }
                    let history = histories.history(&observed.account, &observed.instance.id);
                    let row = {
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        assessment.add(&ctx, &history, observed, &mut seen, now)
                    };
                    match (row, rows) {
                        (Some(row), Rows::Collect) => assessment.rows.push(row),
                        (Some(row), Rows::Stream(writer)) => writer.push(row.status_line(now)),
                        (None, _) => {}
                    }
                };
                let report = observe::scan_source(&account, &region, window, &mut sink).await;
                (assessment, report)
            }
        })
        .buffer_unordered(config.scan.concurrency.max(1))
        .collect()
        .await;
    let mut assessment = Assessment::default();
    for (part, report) in results {
        assessment.merge(part);
        reports.push(report);
    }
    reports.sort_by(|a, b| a.key.cmp(&b.key));
    (
        assessment,
        reports,
        watched.into_inner().unwrap_or_else(|p| p.into_inner()),
    )
}

/// How long a scan of all sources may reasonably take, for logs.
pub fn describe_duration(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Shared handle type for account clients.
pub type Accounts = Arc<Vec<AccountClient>>;
