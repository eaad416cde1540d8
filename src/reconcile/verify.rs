//! Verify: a renewal counts as done only when the instance's ExpiredTime has moved past the
//! expiry it extended. New orders are polled in batches (≤100 ids per DescribeInstances) until
//! they show or the bound passes; what has not shown stays "pending verification" in the ledger
//! and is checked again next pass — never charged again under a new token.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::context::PassContext;
use crate::ledger::{LedgerError, OpenIntent, Settle, Settlement};
use chrono::{DateTime, Utc};

/// An intent to verify.
#[derive(Debug, Clone)]
pub struct VerifyTarget {
    /// Ledger row.
    pub intent_id: i64,
    /// Name of the config account entry whose client re-reads the instance.
    pub account: Arc<str>,
    /// The instance's region, where it is re-read.
    pub region: String,
    /// The ECS instance id whose expiry is checked.
    pub instance_id: String,
    /// The expiry it extends.
    pub old_expiry: DateTime<Utc>,
}

/// A verified target and its new expiry.
#[derive(Debug, Clone)]
pub struct Verified {
    /// What was verified.
    pub target: VerifyTarget,
    /// The expiry now shown.
    pub new_expiry: DateTime<Utc>,
    /// What the intent became: verified (our order) or superseded.
    pub settled: Settlement,
}

/// Polls every `interval` until every target shows a later expiry, `timeout` passes, or
/// shutdown begins; one round only when `timeout` is zero. Settlements count toward the pass's
/// day's belts any charge not counted yet.
pub async fn verify(
    ctx: &PassContext<'_>,
    mut targets: Vec<VerifyTarget>,
    (timeout, interval): (Duration, Duration),
) -> Result<Vec<Verified>, LedgerError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut done = Vec::new();
    loop {
        let shown = shown_expiries(ctx, &targets).await;
        let mut remaining = Vec::new();
        let mut shown_later = Vec::new();
        for target in targets {
            match shown.get(&(target.account.clone(), target.instance_id.clone())) {
                Some(expiry) if *expiry > target.old_expiry => shown_later.push((target, *expiry)),
                _ => remaining.push(target),
            }
        }
        done.extend(settle_round(ctx, shown_later)?);
        targets = remaining;
        if targets.is_empty()
            || timeout.is_zero()
            || tokio::time::Instant::now() + interval > deadline
        {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = ctx.cancel.cancelled() => break,
        }
    }
    for target in &targets {
        tracing::debug!(account = %target.account, instance = %target.instance_id, "new expiry not shown yet");
    }
    if !targets.is_empty() {
        tracing::info!(
            pending = targets.len(),
            "renewals whose new expiry has not shown yet stay pending verification; checked again next pass"
        );
    }
    Ok(done)
}

/// The expiry each target's instance shows now, by (account, instance id); sources are read in
/// parallel (each has its own rate limit), ≤100 ids per call. A failed read is retried in the
/// next round.
async fn shown_expiries(
    ctx: &PassContext<'_>,
    targets: &[VerifyTarget],
) -> BTreeMap<(Arc<str>, String), DateTime<Utc>> {
    let mut groups: BTreeMap<(Arc<str>, String), Vec<String>> = BTreeMap::new();
    for t in targets {
        groups
            .entry((t.account.clone(), t.region.clone()))
            .or_default()
            .push(t.instance_id.clone());
    }
    let reads = groups.into_iter().map(|((account, region), ids)| async move {
        let Some(client) = ctx.account(&account) else {
            // Its entry was removed, or its directory no longer lists it: the renewal stays
            // open with its token, settled when a configured account sees the instance again.
            tracing::warn!(account = %account, region, instances = ?ids, "renewals sent through an account no longer configured cannot be verified: they stay open (a retry reuses their token) until a configured account lists the instances");
            return None;
        };
        match client.client.describe_instances_by_id(&region, &ids).await {
            Ok(listing) => Some((account, listing.instances)),
            Err(error) => {
                tracing::warn!(account = %account, region, error = %error, "verification read failed; retried later");
                None
            }
        }
    });
    let mut shown = BTreeMap::new();
    for (account, instances) in futures_util::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
    {
        for instance in instances {
            shown.insert((account.clone(), instance.id), instance.expired_time);
        }
    }
    shown
}

/// Settles the intents whose new expiry shows, in one transaction for the round: a thousand
/// renewals verified at once are one sync to disk, not a thousand.
fn settle_round(
    ctx: &PassContext<'_>,
    shown_later: Vec<(VerifyTarget, DateTime<Utc>)>,
) -> Result<Vec<Verified>, LedgerError> {
    let settles: Vec<Settle> = shown_later
        .iter()
        .map(|(target, expiry)| Settle {
            intent_id: target.intent_id,
            new_expiry: *expiry,
        })
        .collect();
    let settled = ctx.ledger.settle_all(&settles, &ctx.day, ctx.clock.now())?;
    Ok(shown_later
        .into_iter()
        .zip(settled)
        .map(|((target, expiry), settled)| {
            tracing::info!(account = %target.account, instance = %target.instance_id,
                old_expiry = %target.old_expiry, new_expiry = %expiry, "renewal verified: the new expiry shows");
            Verified {
                target,
                new_expiry: expiry,
                settled,
            }
        })
        .collect())
}

/// An intent that was sent but whose answer never reached the ledger is settled once the
/// expiry moves, without its order id: resending its token only to learn the id would charge
/// again if the provider had forgotten the token. The operator is told where to look.
pub fn warn_if_outcome_unrecorded(open: &OpenIntent, new_expiry: DateTime<Utc>) {
    if open.maybe_charged {
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
