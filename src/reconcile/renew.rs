//! Act: for the renewals the belts allow, per source — re-read the instances by id right
//! before acting and decide again (an expiry that moved is not renewed), write the intent with
//! its ClientToken durably, then send RenewInstance with that token, and record the outcome by
//! failure class: an order, a refusal with its persisted backoff, or an unknown outcome to be
//! resent with the same token. No RenewInstance leaves the process without a committed intent.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::assess::{HistorySource, RenewCandidate};
use super::context::{PassContext, decide_context};
use super::token::client_token;
use crate::accounts::AccountClient;
use crate::cloud::ecs::ClientToken;
use crate::cloud::error::{CloudError, ErrorClass};
use crate::cloud::types::Instance;
use crate::ledger::{FailureRecord, LedgerError, NewIntent, StoredIntent};
use crate::metrics::{RESULT_FAILED, RESULT_OK, RESULT_UNKNOWN};
use crate::money::Money;
use crate::policy::{
    RenewPlan, RenewWhy, Subject, TokenChoice, backoff_delay, deadline_of, decide,
};

/// What happened to one renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewOutcome {
    /// Charged: an order exists; verification follows.
    Ordered {
        /// Ledger row.
        intent_id: i64,
        /// Order id.
        order_id: String,
    },
    /// Refused; retried from `retry_at` (not-applicable answers at a scheduled pass after it).
    Failed {
        /// The failure class, which sets the backoff (and the metrics' class label).
        class: ErrorClass,
        /// The service's error code, or the client's error kind when there was none.
        code: String,
        /// Next attempt.
        retry_at: DateTime<Utc>,
    },
    /// Sent, no answer: resent with the same token from `retry_at`.
    Unknown {
        /// Next attempt.
        retry_at: DateTime<Utc>,
    },
    /// Not attempted now, and why (the expiry moved, the re-read failed, ...).
    Skipped(String),
    /// Dry run: would have renewed.
    DryRun {
        /// The token it would have used.
        token: String,
    },
    /// Shutdown began first; nothing was sent.
    NotSent,
    /// A ledger write failed while renewing it, and the pass stopped. Whatever was written
    /// stays: an intent whose request may have left is resent with its token next pass, never
    /// taken for uncharged.
    Unrecorded,
}

/// One renewal's result.
#[derive(Debug, Clone)]
pub struct RenewalResult {
    /// Row index in the assessment.
    pub row: usize,
    /// Name of the config account entry the renewal went through.
    pub account: Arc<str>,
    /// The instance's region, e.g. cn-hangzhou.
    pub region: String,
    /// The ECS instance id the renewal was for.
    pub instance_id: String,
    /// The expiry it extends.
    pub old_expiry: DateTime<Utc>,
    /// What happened.
    pub outcome: RenewOutcome,
}

/// Renews the allowed candidates; sources in parallel, one renewal at a time per source.
/// A ledger write failure stops all acting and is returned: nothing is charged without
/// its record.
pub async fn renew_all(
    ctx: &PassContext<'_>,
    histories: &(dyn HistorySource + Sync),
    candidates: Vec<RenewCandidate>,
) -> (Vec<RenewalResult>, Option<LedgerError>) {
    let mut groups: BTreeMap<(Arc<str>, String), Vec<RenewCandidate>> = BTreeMap::new();
    for candidate in candidates {
        groups
            .entry((candidate.account.clone(), candidate.instance.region.clone()))
            .or_default()
            .push(candidate);
    }
    let stop = CancellationToken::new();
    let outputs: Vec<(Vec<RenewalResult>, Option<LedgerError>)> =
        futures_util::stream::iter(groups)
            .map(|((account, region), mut group)| {
                let stop = stop.clone();
                async move {
                    group.sort_by_key(|c| c.instance.expired_time);
                    renew_source(ctx, histories, &account, &region, group, &stop).await
                }
            })
            .buffer_unordered(ctx.config.scan.concurrency.max(1))
            .collect()
            .await;
    let mut results = Vec::new();
    let mut ledger_error = None;
    for (part, error) in outputs {
        results.extend(part);
        ledger_error = ledger_error.or(error);
    }
    (results, ledger_error)
}

async fn renew_source(
    ctx: &PassContext<'_>,
    histories: &(dyn HistorySource + Sync),
    account: &Arc<str>,
    region: &str,
    group: Vec<RenewCandidate>,
    stop: &CancellationToken,
) -> (Vec<RenewalResult>, Option<LedgerError>) {
    let result = |c: &RenewCandidate, outcome| RenewalResult {
        row: c.row,
        account: account.clone(),
        region: region.to_owned(),
        instance_id: c.instance.id.clone(),
        old_expiry: c.instance.expired_time,
        outcome,
    };
    let skip_all = |why: String| {
        group
            .iter()
            .map(|c| result(c, RenewOutcome::Skipped(why.clone())))
            .collect()
    };
    let Some(client) = ctx.account(account) else {
        return (skip_all("account no longer configured".into()), None);
    };
    // Re-read right before acting (≤100 per call).
    let ids: Vec<String> = group.iter().map(|c| c.instance.id.clone()).collect();
    let fresh: BTreeMap<String, Instance> = match client
        .client
        .describe_instances_by_id(region, &ids)
        .await
    {
        Ok(listing) => listing
            .instances
            .into_iter()
            .map(|i| (i.id.clone(), i))
            .collect(),
        Err(error) => {
            tracing::warn!(account = %account, region, error = %error, "re-read before renewal failed");
            return (
                skip_all(format!(
                    "re-reading before renewal failed, left for the next pass: {error}"
                )),
                None,
            );
        }
    };
    let mut results = Vec::with_capacity(group.len());
    for candidate in &group {
        if ctx.cancel.is_cancelled() || stop.is_cancelled() {
            results.push(result(candidate, RenewOutcome::NotSent));
            continue;
        }
        match renew_one(
            ctx,
            histories,
            client,
            candidate,
            fresh.get(&candidate.instance.id),
        )
        .await
        {
            Ok(outcome) => results.push(result(candidate, outcome)),
            // Every ledger failure takes this one path: acting stops everywhere, and the
            // failure ends the pass.
            Err(error) => {
                stop.cancel();
                results.push(result(candidate, RenewOutcome::Unrecorded));
                return (results, Some(error));
            }
        }
    }
    (results, None)
}

/// One renewal: decide again on the fresh read, write the intent and its attempt, send, record
/// the outcome. A ledger failure is returned as it is: the caller reports the renewal as
/// `Unrecorded` and stops acting.
async fn renew_one(
    ctx: &PassContext<'_>,
    histories: &(dyn HistorySource + Sync),
    client: &AccountClient,
    candidate: &RenewCandidate,
    fresh: Option<&Instance>,
) -> Result<RenewOutcome, LedgerError> {
    let now = ctx.clock.now();
    let checked = match recheck(ctx, histories, candidate, fresh, now) {
        Ok(checked) => checked,
        Err(skipped) => return Ok(skipped),
    };
    let instance = checked.instance;
    if ctx.config.dry_run {
        tracing::info!(account = %candidate.account, region = %instance.region, instance = %instance.id,
            client_token = checked.token.as_str(), period = checked.plan.period, unit = %checked.plan.unit,
            "dry run: would renew");
        return Ok(RenewOutcome::DryRun {
            token: checked.token.as_str().to_owned(),
        });
    }
    let price = candidate.price.as_ref().map(|q| q.trade_price.clone());
    let (stored, attempt_id) = write_intent(ctx, candidate, &checked, price.clone(), now).await?;
    // On a shared ledger the leader sends only while its lease would outlast the request.
    let timeout = client
        .client
        .read_timeout(crate::cloud::Action::RenewInstance);
    if let Err(refused) = ctx.ledger.may_send(timeout) {
        let (intent_id, now) = (stored.id, ctx.clock.now());
        let _ = ctx
            .ledger
            .blocking("recording a renewal not sent", move |ledger| {
                ledger.finish_not_sent(intent_id, attempt_id, now)
            })
            .await;
        return Err(refused);
    }
    // The request carries the period the intent holds (one that may have charged keeps its own).
    let sent = client
        .client
        .renew_instance(
            &instance.region,
            &instance.id,
            stored.period,
            stored.unit,
            &checked.token,
        )
        .await;
    let sent_as = Sent {
        candidate,
        instance,
        stored,
        attempt_id,
        token: &checked.token,
        price: price.as_ref(),
        why: checked.plan.why,
        failed_attempts: checked.failed_attempts,
    };
    match sent {
        Ok(receipt) => record_order(ctx, &sent_as, receipt).await,
        Err(error) if error.not_sent() => {
            let now = ctx.clock.now();
            let (intent_id, attempt_id) = (sent_as.stored.id, sent_as.attempt_id);
            ctx.ledger
                .blocking("recording a renewal not sent", move |ledger| {
                    ledger.finish_not_sent(intent_id, attempt_id, now)
                })
                .await?;
            Ok(RenewOutcome::NotSent)
        }
        Err(error) => record_failure(ctx, &sent_as, error).await,
    }
}

/// A renewal that still stands on the fresh read.
struct Checked<'a> {
    instance: &'a Instance,
    plan: RenewPlan,
    policy: Option<String>,
    token: ClientToken,
    failed_attempts: u32,
}

/// Decides again on what was just read (with the attributes seen in the scan): the renewal
/// and its token, or why it is not made now.
fn recheck<'a>(
    ctx: &PassContext<'_>,
    histories: &(dyn HistorySource + Sync),
    candidate: &RenewCandidate,
    fresh: Option<&'a Instance>,
    now: DateTime<Utc>,
) -> Result<Checked<'a>, RenewOutcome> {
    let Some(instance) = fresh else {
        return Err(RenewOutcome::Skipped(
            "not listed any more (released?)".into(),
        ));
    };
    if instance.expired_time != candidate.instance.expired_time {
        return Err(RenewOutcome::Skipped(format!(
            "expiry moved from {} to {} since the scan (provider auto-renew or a person): not renewed",
            crate::cloud::time::format_minutes(candidate.instance.expired_time),
            crate::cloud::time::format_minutes(instance.expired_time)
        )));
    }
    let history = histories.history(&instance.id);
    let subject = Subject {
        account: &candidate.account,
        instance,
        auto_renew: candidate.auto_renew.as_ref(),
    };
    let decision = decide(&decide_context(ctx.config), subject, &history, now);
    let Some(plan) = decision.renew else {
        return Err(RenewOutcome::Skipped(format!(
            "decided again: {}",
            decision.reason
        )));
    };
    let token = match &plan.token {
        TokenChoice::Reuse(existing) => {
            ClientToken::new(existing.clone()).map_err(RenewOutcome::Skipped)?
        }
        TokenChoice::Derive { refusals } => {
            client_token(&instance.id, instance.expired_time, *refusals)
        }
    };
    Ok(Checked {
        instance,
        plan,
        policy: decision.policy,
        token,
        failed_attempts: history.failed_attempts,
    })
}

/// Intent before act: the intent and its attempt are durable before the request leaves.
async fn write_intent(
    ctx: &PassContext<'_>,
    candidate: &RenewCandidate,
    checked: &Checked<'_>,
    price: Option<Money>,
    now: DateTime<Utc>,
) -> Result<(StoredIntent, i64), LedgerError> {
    let instance = checked.instance;
    let intent = NewIntent {
        account: candidate.account.to_string(),
        region: instance.region.clone(),
        instance_id: instance.id.clone(),
        old_expiry: instance.expired_time,
        period: checked.plan.period,
        unit: checked.plan.unit,
        client_token: checked.token.as_str().to_owned(),
        policy: checked.policy.clone(),
        why: checked.plan.why.as_str().to_owned(),
        price,
    };
    ctx.ledger
        .blocking(
            "recording a renewal intent and its attempt",
            move |ledger| ledger.prepare_and_begin(&intent, now),
        )
        .await
        .inspect_err(|error| {
            tracing::error!(error = %error, instance = %instance.id, "ledger write failed: no renewal is sent");
        })
}

/// A renewal request that left the process.
struct Sent<'a> {
    candidate: &'a RenewCandidate,
    instance: &'a Instance,
    stored: StoredIntent,
    attempt_id: i64,
    token: &'a ClientToken,
    price: Option<&'a Money>,
    why: RenewWhy,
    failed_attempts: u32,
}

async fn record_order(
    ctx: &PassContext<'_>,
    sent: &Sent<'_>,
    receipt: crate::cloud::ecs::RenewReceipt,
) -> Result<RenewOutcome, LedgerError> {
    let now = ctx.clock.now();
    let (intent_id, attempt_id) = (sent.stored.id, sent.attempt_id);
    let (order_id, request_id, day) = (
        receipt.order_id.clone(),
        receipt.request_id.clone(),
        ctx.day.clone(),
    );
    if let Err(error) = ctx
        .ledger
        .blocking("recording a renewal's order", move |ledger| {
            ledger.finish_ordered(intent_id, attempt_id, &order_id, &request_id, &day, now)
        })
        .await
    {
        // The order exists; its record could not be completed. The intent stays 'sent', is
        // marked unknown at the next pass and resent with the same token, which returns
        // this order.
        tracing::error!(error = %error, order_id = %receipt.order_id, "ledger write failed after an order");
        return Err(error);
    }
    ctx.metrics
        .renewals_total
        .with_label_values(&[RESULT_OK, "none"])
        .inc();
    if let Some(price) = sent.price {
        ctx.metrics.add_spend(&price.currency, price.as_f64());
    }
    let instance = sent.instance;
    tracing::info!(
        account = %sent.candidate.account, region = %instance.region, instance = %instance.id,
        client_token = sent.token.as_str(), order_id = %receipt.order_id, request_id = %receipt.request_id,
        price = %sent.price.map(ToString::to_string).unwrap_or_else(|| "not priced".into()),
        period = sent.stored.period, unit = %sent.stored.unit, why = sent.why.as_str(),
        "renewed"
    );
    Ok(RenewOutcome::Ordered {
        intent_id,
        order_id: receipt.order_id,
    })
}

/// The wait before the next attempt after a failure of `class`.
fn retry_wait(
    ctx: &PassContext<'_>,
    class: ErrorClass,
    unknown: bool,
    failures: u32,
    expiry: DateTime<Utc>,
    now: DateTime<Utc>,
) -> std::time::Duration {
    let deadline = deadline_of(expiry, ctx.config.scan.release_after, now);
    if unknown || class.retry_later() || class == ErrorClass::NotApplicable {
        // Not-applicable answers (an instance that was starting, say) get another look too,
        // at a scheduled pass after the same doubling backoff.
        backoff_delay(failures, now, deadline, &ctx.config.retry)
    } else {
        // Permission, clock, invalid: no quick retry; the longest pause that still leaves
        // attempts before the deadline, so a fix is picked up.
        backoff_delay(u32::MAX, now, deadline, &ctx.config.retry)
    }
}

async fn record_failure(
    ctx: &PassContext<'_>,
    sent: &Sent<'_>,
    error: CloudError,
) -> Result<RenewOutcome, LedgerError> {
    let now = ctx.clock.now();
    let class = error.class();
    // A busy answer means a request with this token (or another order) is still being
    // processed: the charge may be happening. Treated as unknown, never as "not charged".
    let unknown = error.outcome_unknown() || class == ErrorClass::Busy;
    let wait = retry_wait(
        ctx,
        class,
        unknown,
        sent.failed_attempts + 1,
        sent.instance.expired_time,
        now,
    );
    let retry_at = now + chrono::Duration::from_std(wait).unwrap_or_default();
    let record = FailureRecord {
        code: error.code_or_kind(),
        class,
        message: error.to_string(),
        request_id: error.request_id().map(str::to_owned),
    };
    let kept = record.clone();
    let (intent_id, attempt_id, day) = (sent.stored.id, sent.attempt_id, ctx.day.clone());
    // The attempt stays out if this fails: the next pass marks it unknown and resends.
    ctx.ledger
        .blocking("recording a failed renewal", move |ledger| {
            ledger.finish_failed(intent_id, attempt_id, &kept, unknown, retry_at, &day, now)
        })
        .await?;
    let label = if unknown {
        RESULT_UNKNOWN
    } else {
        RESULT_FAILED
    };
    ctx.metrics
        .renewals_total
        .with_label_values(&[label, class.as_str()])
        .inc();
    let (account, instance) = (&sent.candidate.account, sent.instance);
    if unknown {
        tracing::warn!(account = %account, region = %instance.region, instance = %instance.id, client_token = sent.token.as_str(),
            error = %error, retry_at = %retry_at, "renewal outcome unknown; it will be resent with the same token");
        return Ok(RenewOutcome::Unknown { retry_at });
    }
    tracing::error!(account = %account, region = %instance.region, instance = %instance.id, client_token = sent.token.as_str(),
        class = class.as_str(), code = %record.code, request_id = record.request_id.as_deref().unwrap_or("none"),
        error = %error, retry_at = %retry_at, "renewal failed");
    Ok(RenewOutcome::Failed {
        class,
        code: record.code,
        retry_at,
    })
}
