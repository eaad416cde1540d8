//! Assess: run `decide` on each observed instance as it streams in and keep only what later
//! steps need — a compact row per instance (for metrics, status and plan) and the full details
//! of the instances that need an action (renewals to price and charge, auto-renew changes).

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

/// A renewal to price, check against the belts and make.
#[derive(Debug, Clone)]
pub struct RenewCandidate {
    /// Index of its row.
    pub row: usize,
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
    /// Index of its row.
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
    /// One row per instance seen.
    pub rows: Vec<Row>,
    /// Renewals wanted.
    pub renewals: Vec<RenewCandidate>,
    /// Auto-renew changes wanted.
    pub changes: Vec<AutoRenewChange>,
}

impl Assessment {
    /// Adds one observed instance: decides and records. An instance seen twice in one pass
    /// (a paging overlap) is assessed once, so it can never be renewed twice in a pass.
    pub fn add(
        &mut self,
        ctx: &DecideContext,
        history: &History,
        observed: Observed,
        seen: &mut std::collections::HashSet<(Arc<str>, String)>,
        now: DateTime<Utc>,
    ) {
        if !seen.insert((observed.account.clone(), observed.instance.id.clone())) {
            return;
        }
        let subject = Subject {
            account: &observed.account,
            instance: &observed.instance,
            auto_renew: observed.auto_renew.as_ref(),
        };
        let decision: Decision = decide(ctx, subject, history, now);
        let row_index = self.rows.len();
        let region: Arc<str> = Arc::from(observed.instance.region.as_str());
        self.rows.push(Row {
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
        });
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
                account: observed.account,
                instance: observed.instance,
                auto_renew: observed.auto_renew,
                plan,
                price: None,
                price_error: None,
            });
        }
    }

    /// Appends another source's assessment (rows are re-indexed).
    pub fn merge(&mut self, other: Assessment) {
        let offset = self.rows.len();
        self.rows.extend(other.rows);
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
