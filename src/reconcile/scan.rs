//! The scan: list each (account, region) source's subscription instances in the expiry window,
//! page by page, with their auto-renew attributes read for the same page (one call per page of
//! 100, the lower bound), and assess each instance (`decide`) as its page arrives, so a large
//! fleet streams through rather than piling up. An empty source is only trusted after a DryRun
//! permission probe: a RAM user without permission sees an empty list, not an error.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use super::assess::{Assessment, HistorySource, Seen};
use super::context::{decide_context, window};
use crate::accounts::AccountClient;
use crate::cloud::ecs::{InstancePage, InstanceQuery};
use crate::cloud::error::CloudError;
use crate::cloud::types::{AutoRenewAttribute, ChargeType, Instance};
use crate::config::{Config, Regions};
use crate::ledger::StatusWriter;
use crate::policy::DecideContext;

/// An (account, region) pair: the unit of scanning, health and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    /// Account name.
    pub account: String,
    /// Region id.
    pub region: String,
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.account, self.region)
    }
}

/// One instance as observed, with its attributes.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Name of the config account entry whose source listed the instance.
    pub account: Arc<str>,
    /// The instance record as DescribeInstances returned it.
    pub instance: Instance,
    /// Its auto-renew attributes (`None` when they could not be read).
    pub auto_renew: Option<AutoRenewAttribute>,
}

/// How scanning a source went.
#[derive(Debug)]
pub struct SourceReport {
    /// Which source.
    pub key: SourceKey,
    /// Instances seen.
    pub instances: usize,
    /// Records that could not be understood (each a message).
    pub undecodable: Vec<String>,
    /// Why auto-renew attributes could not be read for some pages.
    pub auto_renew_errors: Vec<CloudError>,
    /// How long it took.
    pub duration: Duration,
    /// Why the scan failed (the source is then down).
    pub error: Option<CloudError>,
}

impl SourceReport {
    /// Whether the source was scanned completely.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The sources to scan: each account's regions (`all` asks DescribeRegions through
/// `home_region`). Accounts whose region list cannot be had come back as failed reports.
pub async fn list_sources(
    accounts: &[AccountClient],
    home_region: &str,
) -> (Vec<(AccountClient, String)>, Vec<SourceReport>) {
    let mut sources = Vec::new();
    let mut failed = Vec::new();
    for account in accounts {
        match &account.regions {
            Regions::List(list) => {
                sources.extend(list.iter().map(|r| (account.clone(), r.clone())));
            }
            Regions::All => match account.client.describe_regions(home_region).await {
                Ok(regions) => {
                    sources.extend(regions.into_iter().map(|r| (account.clone(), r.region_id)))
                }
                Err(error) => failed.push(SourceReport {
                    key: SourceKey {
                        account: account.name.clone(),
                        region: home_region.to_owned(),
                    },
                    instances: 0,
                    undecodable: Vec::new(),
                    auto_renew_errors: Vec::new(),
                    duration: Duration::ZERO,
                    error: Some(error),
                }),
            },
        }
    }
    (sources, failed)
}

/// Scans one source's expiry window [start, end], handing each instance to `sink`.
pub async fn scan_source(
    account: &AccountClient,
    region: &str,
    window: (DateTime<Utc>, DateTime<Utc>),
    sink: &mut (dyn FnMut(Listed) + Send),
) -> SourceReport {
    let started = tokio::time::Instant::now();
    let mut report = SourceReport {
        key: SourceKey {
            account: account.name.clone(),
            region: region.to_owned(),
        },
        instances: 0,
        undecodable: Vec::new(),
        auto_renew_errors: Vec::new(),
        duration: Duration::ZERO,
        error: None,
    };
    let mut pages = Pages {
        account,
        region,
        query: InstanceQuery::expiring_prepaid(window.0, window.1),
        seen_tokens: HashSet::new(),
    };
    let account_name: Arc<str> = Arc::from(account.name.as_str());
    // Pipelined: while a page's auto-renew attributes are read, the next page is fetched, so a
    // source's scan runs at the rate limit rather than at two round trips per page.
    let mut page = pages.first().await;
    while let Some(current) = take_page(&mut page, &mut report) {
        let next_token = pages.next_token(&current, &mut report);
        let (attributes, next) = tokio::join!(
            auto_renew_of(account, region, &current),
            pages.after(next_token.as_deref())
        );
        hand_on(current, attributes, &account_name, &mut report, sink);
        page = next;
    }
    if report.error.is_none()
        && report.instances == 0
        && let Err(error) = account.client.probe_describe_permission(region).await
    {
        report.error = Some(error);
    }
    report.duration = started.elapsed();
    report
}

/// A source's pages of DescribeInstances, and the NextTokens seen (a token that comes back
/// would page for ever).
struct Pages<'a> {
    account: &'a AccountClient,
    region: &'a str,
    query: InstanceQuery,
    seen_tokens: HashSet<String>,
}

/// A page fetched, none (the last page was the last), or the error that ends the scan.
type Fetched = Option<Result<InstancePage, CloudError>>;

impl Pages<'_> {
    /// The first page.
    async fn first(&self) -> Fetched {
        Some(
            self.account
                .client
                .describe_instances_page(self.region, &self.query, None)
                .await,
        )
    }

    /// The page at `token`; nothing when there is no token to follow (the last page).
    async fn after(&self, token: Option<&str>) -> Fetched {
        let token = token?;
        Some(
            self.account
                .client
                .describe_instances_page(self.region, &self.query, Some(token))
                .await,
        )
    }

    /// The token of the page after `page`, unless it came back before (then the scan fails).
    fn next_token(&mut self, page: &InstancePage, report: &mut SourceReport) -> Option<String> {
        let next = page.next_token.clone()?;
        if self.seen_tokens.insert(next.clone()) {
            return Some(next);
        }
        report.error = Some(CloudError::Decode {
            action: crate::cloud::Action::DescribeInstances,
            region: self.region.to_owned(),
            http_status: 200,
            request_id: page.request_id.clone(),
            detail: format!("NextToken {next:?} came back twice; paging would never end"),
            snippet: String::new(),
        });
        None
    }
}

/// The fetched page to work on, if any; a failed fetch ends the scan with its error.
fn take_page(fetched: &mut Fetched, report: &mut SourceReport) -> Option<InstancePage> {
    match fetched.take()? {
        Ok(page) => Some(page),
        Err(error) => {
            report.error = Some(error);
            None
        }
    }
}

/// The auto-renew attributes of a page's subscription instances (one call for up to 100).
async fn auto_renew_of(
    account: &AccountClient,
    region: &str,
    page: &InstancePage,
) -> Result<Vec<AutoRenewAttribute>, CloudError> {
    let prepaid: Vec<String> = page
        .instances
        .iter()
        .filter(|i| i.charge_type == ChargeType::PrePaid)
        .map(|i| i.id.clone())
        .collect();
    if prepaid.is_empty() {
        return Ok(Vec::new());
    }
    account.client.describe_auto_renew(region, &prepaid).await
}

/// Hands a page's instances, each with its attributes, to `sink`; counts them and keeps the
/// page's undecodable records and an attribute call's failure in the report.
fn hand_on(
    page: InstancePage,
    attributes: Result<Vec<AutoRenewAttribute>, CloudError>,
    account: &Arc<str>,
    report: &mut SourceReport,
    sink: &mut (dyn FnMut(Listed) + Send),
) {
    report
        .undecodable
        .extend(page.undecodable.iter().map(ToString::to_string));
    let mut attributes: HashMap<String, AutoRenewAttribute> = match attributes {
        Ok(list) => list
            .into_iter()
            .map(|a| (a.instance_id.clone(), a))
            .collect(),
        Err(error) => {
            report.auto_renew_errors.push(error);
            HashMap::new()
        }
    };
    report.instances += page.instances.len();
    for instance in page.instances {
        let auto_renew = attributes.remove(&instance.id);
        sink(Listed {
            account: account.clone(),
            instance,
            auto_renew,
        });
    }
}

/// What was seen of a watched instance (one with an open intent or an unchecked auto-renew
/// change).
#[derive(Debug, Clone)]
pub struct Watched {
    /// Its expiry.
    pub expiry: DateTime<Utc>,
    /// Its auto-renew attributes.
    pub auto_renew: Option<AutoRenewAttribute>,
}

/// Where assessed rows go.
pub enum Rows<'a> {
    /// Kept in the assessment (`plan`).
    Collect,
    /// Written to the ledger's status table as they come (the daemon: nothing per instance
    /// stays in memory).
    Stream(&'a StatusWriter),
}

/// What scanning every source found.
pub struct Scanned {
    /// Every instance's decision, the renewals and auto-renew changes wanted.
    pub assessment: Assessment,
    /// Each source's scan, in source order.
    pub reports: Vec<SourceReport>,
    /// What was seen of the watched instances, by id.
    pub watched: HashMap<String, Watched>,
}

/// What a scan does with each instance, shared by the sources scanned side by side.
struct Assessor<'a> {
    ctx: DecideContext<'a>,
    histories: &'a (dyn HistorySource + Sync),
    watch: &'a HashSet<String>,
    rows: &'a Rows<'a>,
    /// The sources, by index (to name the one that listed an instance first).
    keys: Vec<SourceKey>,
    /// Instances seen by any source so far: the one lock the concurrent sources share, so an
    /// instance two sources list is assessed once.
    seen: Mutex<Seen>,
    now: DateTime<Utc>,
}

/// Scans every source (bounded concurrency) and assesses every instance seen; rows go to
/// `rows`; instances whose ids are in `watch` are also reported as seen. An instance listed by
/// two sources (two config entries reaching one cloud account) is assessed once, through the
/// source that listed it first; the other listing is reported as a duplicate.
pub async fn scan_and_assess(
    config: &Config,
    accounts: &[AccountClient],
    histories: &(dyn HistorySource + Sync),
    watch: &HashSet<String>,
    rows: Rows<'_>,
    now: DateTime<Utc>,
) -> Scanned {
    let (sources, mut reports) = list_sources(accounts, &config.scan.home_region).await;
    let window = window(config, now);
    let mut ctx = decide_context(config);
    ctx.funds_until = config
        .funds
        .enabled
        .then(|| crate::policy::window_end(now, config.funds.horizon));
    let assessor = Assessor {
        ctx,
        histories,
        watch,
        rows: &rows,
        keys: sources
            .iter()
            .map(|(account, region)| SourceKey {
                account: account.name.clone(),
                region: region.clone(),
            })
            .collect(),
        seen: Mutex::new(Seen::default()),
        now,
    };
    let results: Vec<(Assessment, SourceReport, HashMap<String, Watched>)> =
        futures_util::stream::iter(sources.into_iter().enumerate())
            .map(|(index, (account, region))| {
                let assessor = &assessor;
                async move { assessor.source(index, &account, &region, window).await }
            })
            .buffer_unordered(config.scan.concurrency.max(1))
            .collect()
            .await;
    let mut scanned = Scanned {
        assessment: Assessment::default(),
        reports: Vec::new(),
        watched: HashMap::new(),
    };
    for (part, report, watched) in results {
        scanned.assessment.merge(part);
        reports.push(report);
        scanned.watched.extend(watched);
    }
    reports.sort_by(|a, b| a.key.cmp(&b.key));
    scanned.reports = reports;
    scanned
}

impl Assessor<'_> {
    /// Scans one source and assesses each instance as its page arrives.
    async fn source(
        &self,
        index: usize,
        account: &AccountClient,
        region: &str,
        window: (DateTime<Utc>, DateTime<Utc>),
    ) -> (Assessment, SourceReport, HashMap<String, Watched>) {
        let mut assessment = Assessment::default();
        let mut watched = HashMap::new();
        let mut sink = |listed: Listed| {
            if self.watch.contains(&listed.instance.id) {
                watched.insert(
                    listed.instance.id.clone(),
                    Watched {
                        expiry: listed.instance.expired_time,
                        auto_renew: listed.auto_renew.clone(),
                    },
                );
            }
            let history = self.histories.history(&listed.instance.id);
            let row = {
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                let source = (&mut *seen, self.keys.as_slice(), index);
                assessment.add(&self.ctx, &history, listed, source, self.now)
            };
            match (row, self.rows) {
                (Some(row), Rows::Collect) => assessment.rows.push(row),
                (Some(row), Rows::Stream(writer)) => writer.push(row.status_line(self.now)),
                (None, _) => {}
            }
        };
        let report = scan_source(account, region, window, &mut sink).await;
        (assessment, report, watched)
    }
}
