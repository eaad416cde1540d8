//! Assess: run `decide` on each observed instance as it streams in and keep only what later
//! steps need: a row per instance (collected for `plan`, streamed into the ledger's status
//! table by the daemon), counts per state, and the full details of the instances that need an
//! action (renewals to price and charge, auto-renew changes).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::observe::Observed;
use crate::cloud::ecs::{AutoRenewTarget, PriceQuote};
use crate::cloud::types::Instance;
use crate::policy::{DecideContext, Decision, History, InstanceState, RenewPlan, Subject, decide};

/// Where the ledger's knowledge of an instance comes from.
pub trait HistorySource {
    /// What is known about `instance_id` of `account`.
    fn history(&self, account: &str, instance_id: &str) -> History;
}

/// No ledger (yet): every instance starts with a clean history.
#[derive(Debug, Default)]
pub struct NoHistory;

impl HistorySource for NoHistory {
    fn history(&self, _account: &str, _instance_id: &str) -> History {
        History::default()
    }
}

/// One instance's assessment, kept for metrics, status and plan.
#[derive(Debug, Clone)]
pub struct Row {
    /// Account.
    pub account: Arc<str>,
    /// Region.
    pub region: Arc<str>,
    /// Instance id.
    pub instance_id: String,
    /// Instance name.
    pub name: String,
    /// Expiry as observed.
    pub expires_at: DateTime<Utc>,
    /// Matched policy.
    pub policy: Option<String>,
    /// State.
    pub state: InstanceState,
    /// When the next action is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Why.
    pub reason: String,
    /// Failed attempts in a row for this expiry.
    pub failed_attempts: u32,
    /// Auto-renew settings differ from the policy.
    pub drift: bool,
    /// The provider's deduction should have happened and has not.
    pub deduction_overdue: bool,
    /// Whether a renewal is planned.
    pub renew: bool,
    /// Whether an auto-renew change is planned.
    pub auto_renew_change: bool,
}

impl Row {
    /// The word `plan` and `status` use for what a pass does with the instance.
    pub fn decision(&self) -> &'static str {
        match self.state {
            InstanceState::Due if self.renew => "renew",
            _ if self.auto_renew_change => "set-auto-renew",
            InstanceState::Ok | InstanceState::Due | InstanceState::Renewing => "none",
            InstanceState::PendingVerification => "verify",
            InstanceState::Backoff => "backoff",
            InstanceState::Failed => "failed",
            InstanceState::Expired => "expired",
            InstanceState::Excluded => "exclude",
        }
    }

    /// The status line for this row.
    pub fn status_line(&self, now: DateTime<Utc>) -> crate::ledger::StatusRow {
        crate::ledger::StatusRow {
            account: self.account.to_string(),
            region: self.region.to_string(),
            instance_id: self.instance_id.clone(),
            name: self.name.clone(),
            expires_at: self.expires_at,
            policy: self.policy.clone(),
            state: self.state.as_str().to_owned(),
            decision: self.decision().to_owned(),
            due_at: self.due_at,
            reason: self.reason.clone(),
            failed_attempts: self.failed_attempts,
            next_retry_at: match self.state {
                InstanceState::Backoff | InstanceState::Failed => self.due_at,
                _ => None,
            },
            drift: self.drift,
            deduction_overdue: self.deduction_overdue,
            last_outcome: None,
            updated_at: now,
        }
    }
}

/// A renewal to price, check against the belts and make.
#[derive(Debug, Clone)]
pub struct RenewCandidate {
    /// Index of its row (when rows are collected).
    pub row: usize,
    /// Failed attempts in a row so far.
    pub failed_attempts: u32,
    /// The reason `decide` gave.
    pub reason: String,
    /// Account.
    pub account: Arc<str>,
    /// The instance as observed.
    pub instance: Instance,
    /// Its auto-renew attributes as observed.
    pub auto_renew: Option<crate::cloud::types::AutoRenewAttribute>,
    /// What to do.
    pub plan: RenewPlan,
    /// Its price, once quoted.
    pub price: Option<PriceQuote>,
    /// Why it could not be priced.
    pub price_error: Option<String>,
}

/// An auto-renew change to make.
#[derive(Debug, Clone)]
pub struct AutoRenewChange {
    /// Index of its row (when rows are collected).
    pub row: usize,
    /// Account.
    pub account: Arc<str>,
    /// Region.
    pub region: Arc<str>,
    /// Instance id.
    pub instance_id: String,
    /// Target attributes.
    pub target: AutoRenewTarget,
}

/// Everything one pass learned.
#[derive(Debug, Default)]
pub struct Assessment {
    /// One row per instance seen (only when collected).
    pub rows: Vec<Row>,
    /// Renewals wanted.
    pub renewals: Vec<RenewCandidate>,
    /// Auto-renew changes wanted.
    pub changes: Vec<AutoRenewChange>,
    /// Instances per state.
    pub by_state: std::collections::BTreeMap<InstanceState, usize>,
    /// Instances seen.
    pub instances: usize,
}

impl Assessment {
    /// Decides on one observed instance and keeps its wanted actions; returns its row (the
    /// caller collects it or streams it). An instance seen twice in one pass (a paging overlap)
    /// is assessed once, so it can never be renewed twice in a pass.
    pub fn add(
        &mut self,
        ctx: &DecideContext,
        history: &History,
        observed: Observed,
        seen: &mut std::collections::HashSet<u128>,
        now: DateTime<Utc>,
    ) -> Option<Row> {
        if !seen.insert(instance_key(&observed.account, &observed.instance.id)) {
            return None;
        }
        let subject = Subject {
            account: &observed.account,
            instance: &observed.instance,
            auto_renew: observed.auto_renew.as_ref(),
        };
        let decision: Decision = decide(ctx, subject, history, now);
        // Rows are indexed in the order they are returned (collecting callers keep that order).
        let row_index = self.instances;
        self.instances += 1;
        *self.by_state.entry(decision.state).or_default() += 1;
        let region: Arc<str> = Arc::from(observed.instance.region.as_str());
        let row = Row {
            account: observed.account.clone(),
            region: region.clone(),
            instance_id: observed.instance.id.clone(),
            name: observed.instance.name.clone(),
            expires_at: observed.instance.expired_time,
            policy: decision.policy.clone(),
            state: decision.state,
            due_at: decision.due_at,
            reason: decision.reason.clone(),
            failed_attempts: history.failed_attempts,
            drift: decision.drift,
            deduction_overdue: decision.deduction_overdue,
            renew: decision.renew.is_some(),
            auto_renew_change: decision.auto_renew_change.is_some(),
        };
        if let Some(target) = decision.auto_renew_change {
            self.changes.push(AutoRenewChange {
                row: row_index,
                account: observed.account.clone(),
                region,
                instance_id: observed.instance.id.clone(),
                target,
            });
        }
        if let Some(plan) = decision.renew {
            self.renewals.push(RenewCandidate {
                row: row_index,
                failed_attempts: history.failed_attempts,
                reason: decision.reason,
                account: observed.account,
                instance: observed.instance,
                auto_renew: observed.auto_renew,
                plan,
                price: None,
                price_error: None,
            });
        }
        Some(row)
    }

    /// Appends another source's assessment (rows are re-indexed).
    pub fn merge(&mut self, other: Assessment) {
        let offset = self.instances;
        self.rows.extend(other.rows);
        self.instances += other.instances;
        for (state, n) in other.by_state {
            *self.by_state.entry(state).or_default() += n;
        }
        self.renewals
            .extend(other.renewals.into_iter().map(|mut c| {
                c.row += offset;
                c
            }));
        self.changes.extend(other.changes.into_iter().map(|mut c| {
            c.row += offset;
            c
        }));
    }
}

/// A 128-bit key for (account, instance id): enough to tell every instance apart without
/// keeping the strings of the whole fleet.
pub fn instance_key(account: &str, instance_id: &str) -> u128 {
    use sha1::{Digest, Sha1};
    let digest = Sha1::new()
        .chain_update(account.as_bytes())
        .chain_update([0u8])
        .chain_update(instance_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(bytes)
}
