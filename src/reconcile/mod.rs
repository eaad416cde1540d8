//! One pass: observe → decide → price → belts → act → verify → record. `plan` runs the first
//! four steps and stops; the daemon and `once` run them all.
//!
//! - `observe`: scan sources page by page (DescribeInstances + auto-renew attributes).
//! - `assess`: decide per instance as pages arrive; keep rows and wanted actions.
//! - `price`: quote the renewals where a limit needs the price.

pub(crate) mod act;
pub(crate) mod assess;
pub(crate) mod auto_renew;
pub(crate) mod belts;
pub(crate) mod context;
pub(crate) mod funds;
pub(crate) mod observe;
pub(crate) mod outcome;
pub(crate) mod pass;
pub(crate) mod price;
pub(crate) mod token;
pub(crate) mod verify;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use crate::accounts::AccountClient;
use crate::config::Config;
use crate::policy::DecideContext;
pub use act::{RenewOutcome, renew_all};
use assess::Assessment;
pub use assess::{HistorySource, NoHistory};
pub use context::PassContext;
use observe::SourceReport;
pub use pass::{Engine, EngineBase, PassSummary};
pub use token::client_token;

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
    Stream(&'a StatusWriter),
}

/// Writes status lines in batches, for one pass (`generation`), on a thread of its own so the
/// scan never waits on SQLite.
pub struct StatusWriter {
    buffer: Mutex<Vec<crate::ledger::StatusRow>>,
    batches: Mutex<Option<std::sync::mpsc::SyncSender<Vec<crate::ledger::StatusRow>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<Result<(), crate::ledger::LedgerError>>>>,
}

/// Status lines per write.
const STATUS_BATCH: usize = 1000;
/// Batches waiting to be written before the scan is made to wait.
const STATUS_QUEUE: usize = 4;

impl StatusWriter {
    /// Starts a writer for the pass tagged `generation`.
    pub fn start(ledger: std::sync::Arc<crate::ledger::Ledger>, generation: i64) -> StatusWriter {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<crate::ledger::StatusRow>>(STATUS_QUEUE);
        let thread = std::thread::Builder::new()
            .name("status-writer".into())
            .spawn(move || {
                let mut first_error = None;
                for batch in rx {
                    if let Err(error) = ledger.write_status(&batch, generation) {
                        first_error.get_or_insert(error);
                    }
                }
                first_error.map_or(Ok(()), Err)
            })
            .expect("a thread can be started");
        StatusWriter {
            buffer: Mutex::new(Vec::with_capacity(STATUS_BATCH)),
            batches: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    fn push(&self, row: crate::ledger::StatusRow) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        buffer.push(row);
        if buffer.len() >= STATUS_BATCH {
            let batch = std::mem::replace(&mut *buffer, Vec::with_capacity(STATUS_BATCH));
            drop(buffer);
            self.send(batch);
        }
    }

    fn send(&self, batch: Vec<crate::ledger::StatusRow>) {
        if let Some(tx) = self
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            // A send fails only if the thread is gone; its error is returned by `finish`.
            let _ = tx.send(batch);
        }
    }

    /// Writes what is left and waits for the writer; returns the first write error, if any.
    pub async fn finish(&self) -> Result<(), crate::ledger::LedgerError> {
        let rest = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        if !rest.is_empty() {
            self.send(rest);
        }
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        match thread {
            Some(thread) => tokio::task::spawn_blocking(move || thread.join())
                .await
                .ok()
                .and_then(|joined| joined.ok())
                .unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

/// Scans every source (bounded concurrency) and assesses every instance seen; rows go to
/// `rows`; instances whose ids are in `watch` are also reported as seen. An instance listed by
/// two sources (two config entries reaching one cloud account) is assessed once, through the
/// source that listed it first; the other listing is reported as a duplicate.
pub async fn observe_and_assess(
    config: &Config,
    accounts: &[AccountClient],
    histories: &(dyn HistorySource + Sync),
    watch: &HashSet<String>,
    rows: Rows<'_>,
    now: DateTime<Utc>,
) -> (Assessment, Vec<SourceReport>, HashMap<String, Watched>) {
    let (sources, mut reports) = observe::list_sources(accounts, &config.scan.home_region).await;
    let window = window(config, now);
    let mut ctx = decide_context(config);
    ctx.funds_until = config
        .funds
        .enabled
        .then(|| crate::policy::window_end(now, config.funds.horizon));
    let keys: Vec<observe::SourceKey> = sources
        .iter()
        .map(|(account, region)| observe::SourceKey {
            account: account.name.clone(),
            region: region.clone(),
        })
        .collect();
    let seen = Mutex::new(assess::Seen::default());
    let watched = Mutex::new(HashMap::new());
    let rows = &rows;
    let keys = &keys;
    let results: Vec<(Assessment, SourceReport)> =
        futures_util::stream::iter(sources.into_iter().enumerate())
            .map(|(index, (account, region))| {
                let ctx = ctx.clone();
                let seen = &seen;
                let watched = &watched;
                async move {
                    let mut assessment = Assessment::default();
                    let mut sink = |observed: observe::Observed| {
                        if watch.contains(&observed.instance.id) {
                            watched.lock().unwrap_or_else(|p| p.into_inner()).insert(
                                observed.instance.id.clone(),
                                Watched {
                                    expiry: observed.instance.expired_time,
                                    auto_renew: observed.auto_renew.clone(),
                                },
                            );
                        }
                        let history = histories.history(&observed.instance.id);
                        let row = {
                            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                            assessment.add(&ctx, &history, observed, (&mut seen, keys, index), now)
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

/// Shared handle type for account clients.
pub type Accounts = Arc<Vec<AccountClient>>;
