//! Assess: run `decide` on each observed instance as it streams in and keep only what later
//! steps need: a row per instance (collected for `plan`, streamed into the ledger's status
//! table by the daemon), counts per state, and the full details of the instances that need an
//! action (renewals to price and charge, auto-renew changes).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::scan::{Listed, SourceKey};
use crate::cloud::ErrorClass;
use crate::cloud::ecs::{AutoRenewTarget, PriceQuote};
use crate::cloud::types::{ChargeType, Instance};
use crate::policy::{
    ChargeSeed, DecideContext, Decision, History, InstanceState, NextAction, RenewPlan, Subject,
    charges_for, decide,
};
pub use crate::policy::{HistorySource, NoHistory};

/// One instance's assessment, kept for metrics, status and plan.
#[derive(Debug, Clone)]
pub struct Row {
    /// Name of the config account entry the instance was listed through.
    pub account: Arc<str>,
    /// The region the instance was listed in, e.g. cn-hangzhou.
    pub region: Arc<str>,
    /// Instance id.
    pub instance_id: String,
    /// Instance name.
    pub name: String,
    /// Expiry as observed.
    pub expires_at: DateTime<Utc>,
    /// Matched policy.
    pub policy: Option<String>,
    /// The state `decide` gave the instance, as metrics and status show it.
    pub state: InstanceState,
    /// When the next action is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Why the instance is in this state, in words (from `decide`).
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
    /// What a pass does with the instance (the word `plan` and `status` show).
    pub fn decision(&self) -> NextAction {
        match self.state {
            InstanceState::Due if self.renew => NextAction::Renew,
            _ if self.auto_renew_change => NextAction::SetAutoRenew,
            InstanceState::Ok | InstanceState::Due | InstanceState::Renewing => NextAction::Nothing,
            InstanceState::PendingVerification => NextAction::Verify,
            InstanceState::Backoff => NextAction::Backoff,
            InstanceState::Failed => NextAction::Failed,
            InstanceState::Expired => NextAction::Expired,
            InstanceState::Excluded => NextAction::Exclude,
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
            state: self.state,
            decision: self.decision(),
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

impl Row {
    /// The row of an instance `decide` has just decided on.
    fn of(observed: &Listed, region: &Arc<str>, decision: &Decision, failed_attempts: u32) -> Row {
        Row {
            account: observed.account.clone(),
            region: region.clone(),
            instance_id: observed.instance.id.clone(),
            name: observed.instance.name.clone(),
            expires_at: observed.instance.expired_time,
            policy: decision.policy.clone(),
            state: decision.state,
            due_at: decision.due_at,
            reason: decision.reason.clone(),
            failed_attempts,
            drift: decision.drift,
            deduction_overdue: decision.deduction_overdue,
            renew: decision.renew.is_some(),
            auto_renew_change: decision.auto_renew_change.is_some(),
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
    /// Name of the config account entry whose client prices and renews it.
    pub account: Arc<str>,
    /// The instance as observed.
    pub instance: Instance,
    /// Its auto-renew attributes as observed.
    pub auto_renew: Option<crate::cloud::types::AutoRenewAttribute>,
    /// What to do.
    pub plan: RenewPlan,
    /// Its intent may already have charged (and is counted toward today's belts): a resend
    /// with the same token cannot charge again.
    pub counted: bool,
    /// Its last attempt was refused for a reason only a person can fix (still standing if it
    /// is not attempted in this pass).
    pub refused: Option<Refused>,
    /// Its price, once quoted.
    pub price: Option<PriceQuote>,
    /// Why it could not be priced.
    pub price_error: Option<String>,
}

impl RenewCandidate {
    /// The renewal `decide` wants for an instance (row `row`, its ledger `history`).
    fn of(
        observed: Listed,
        (row, history): (usize, &History),
        plan: RenewPlan,
        reason: String,
        refused: Option<Refused>,
    ) -> RenewCandidate {
        // A resend of an intent that may have charged for this very expiry is already counted.
        let counted = history
            .intent
            .as_ref()
            .is_some_and(|i| i.maybe_charged && i.old_expiry == observed.instance.expired_time);
        RenewCandidate {
            row,
            counted,
            refused,
            failed_attempts: history.failed_attempts,
            reason,
            account: observed.account,
            instance: observed.instance,
            auto_renew: observed.auto_renew,
            plan,
            price: None,
            price_error: None,
        }
    }
}

/// An auto-renew change to make.
#[derive(Debug, Clone)]
pub struct AutoRenewChange {
    /// Index of its row (when rows are collected).
    pub row: usize,
    /// Name of the config account entry whose client makes the change.
    pub account: Arc<str>,
    /// The instance's region (changes are sent per account, region and target).
    pub region: Arc<str>,
    /// Instance id.
    pub instance_id: String,
    /// Target attributes.
    pub target: AutoRenewTarget,
}

/// An instance listed by a second source after the first one (two config entries that reach
/// one cloud account): assessed once, through the first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Duplicate {
    /// The id of the instance both sources listed.
    pub instance_id: String,
    /// The source it is managed through this pass (`account/region`).
    pub kept: String,
    /// The source whose listing was set aside.
    pub dropped: String,
}

/// A renewal the service refused for a reason only a person can fix, still standing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refused {
    /// Account entry.
    pub account: String,
    /// The instance's region, e.g. cn-hangzhou.
    pub region: String,
    /// The ECS instance id whose renewal was refused.
    pub instance_id: String,
    /// Permission, clock or invalid.
    pub class: ErrorClass,
    /// The service's code.
    pub code: String,
}

/// The instances seen so far in a pass, by id, with the source (an index into the pass's
/// source list) that listed each first.
#[derive(Debug, Default)]
pub struct Seen {
    first: std::collections::HashMap<[u8; 16], u32>,
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
    /// The earliest retry that will be attempted when it is due (the daemon may wake for it).
    pub next_retry: Option<DateTime<Utc>>,
    /// Standing refusals of instances not renewed in this pass.
    pub refused: Vec<Refused>,
    /// Listings set aside because another source listed the same instance first.
    pub duplicates: Vec<Duplicate>,
    /// The charges expected within the funds forecast's window (when it is on), unpriced.
    pub upcoming: Vec<Upcoming>,
    /// Instances relying on the provider's auto-renew with no deduction attempt left before
    /// their expiry: (account, instance id).
    pub too_late: Vec<(Arc<str>, String)>,
    /// PrePaid instances whose auto-renew attributes could not be read while a provider
    /// deduction attempt falls in the funds forecast's window: (account, instance id).
    pub auto_renew_unknown: Vec<(Arc<str>, String)>,
}

/// A charge expected for one instance, before it is priced.
#[derive(Debug, Clone)]
pub struct Upcoming {
    /// The config account entry it was listed through.
    pub account: Arc<str>,
    /// Its region (prices are asked there).
    pub region: Arc<str>,
    /// The instance.
    pub instance_id: String,
    /// Its expiry as the scan saw it (a later scan that sees another one knows it was charged).
    pub expiry: DateTime<Utc>,
    /// When, by whom, for how long.
    pub seed: ChargeSeed,
}

impl Assessment {
    /// Decides on one observed instance and keeps its wanted actions; returns its row (the
    /// caller collects it or streams it). An instance seen twice in one pass (a paging overlap,
    /// or two config entries that reach one cloud account) is assessed once, so it can never
    /// be renewed twice in a pass; a second source's listing is recorded as a duplicate.
    pub fn add(
        &mut self,
        ctx: &DecideContext,
        history: &History,
        observed: Listed,
        (seen, sources, source): (&mut Seen, &[SourceKey], usize),
        now: DateTime<Utc>,
    ) -> Option<Row> {
        let first = match seen.first.entry(instance_key(&observed.instance.id)) {
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(source as u32);
                return Some(self.assess(ctx, history, observed, now));
            }
            std::collections::hash_map::Entry::Occupied(occupied) => *occupied.get() as usize,
        };
        if first != source {
            let name = |i: usize| sources.get(i).map(ToString::to_string).unwrap_or_default();
            self.duplicates.push(Duplicate {
                instance_id: observed.instance.id.clone(),
                kept: name(first),
                dropped: name(source),
            });
        }
        // Listed again by the same source (a paging overlap) or by another: act on it once.
        None
    }

    fn assess(
        &mut self,
        ctx: &DecideContext,
        history: &History,
        observed: Listed,
        now: DateTime<Utc>,
    ) -> Row {
        let subject = Subject {
            account: &observed.account,
            instance: &observed.instance,
            auto_renew: observed.auto_renew.as_ref(),
        };
        let decision: Decision = decide(ctx, subject, history, now);
        if decision.auto_renew_too_late {
            self.too_late
                .push((observed.account.clone(), observed.instance.id.clone()));
        }
        self.add_upcoming(ctx, &decision, &observed, now);
        // Rows are indexed in the order they are returned (collecting callers keep that order).
        let row_index = self.instances;
        self.instances += 1;
        *self.by_state.entry(decision.state).or_default() += 1;
        if let Some(at) = decision.retry_at {
            self.next_retry = Some(self.next_retry.map_or(at, |t| t.min(at)));
        }
        let region: Arc<str> = Arc::from(observed.instance.region.as_str());
        let refused = decision.refused.as_ref().map(|refusal| Refused {
            account: observed.account.to_string(),
            region: region.to_string(),
            instance_id: observed.instance.id.clone(),
            class: refusal.class,
            code: refusal.code.clone(),
        });
        if let (Some(refused), None) = (&refused, &decision.renew) {
            self.refused.push(refused.clone());
        }
        let row = Row::of(&observed, &region, &decision, history.failed_attempts);
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
            self.renewals.push(RenewCandidate::of(
                observed,
                (row_index, history),
                plan,
                decision.reason,
                refused,
            ));
        }
        row
    }

    /// The instance's next charge, when it falls in the funds forecast's window.
    fn add_upcoming(
        &mut self,
        ctx: &DecideContext,
        decision: &Decision,
        observed: &Listed,
        now: DateTime<Utc>,
    ) {
        let Some(until) = ctx.funds_until else {
            return;
        };
        let policy = decision
            .policy
            .as_ref()
            .and_then(|name| ctx.policies.iter().find(|p| &p.name == name));
        let schedule = ctx.schedule_for(&observed.account);
        let instance = &observed.instance;
        if observed.auto_renew.is_none()
            && instance.charge_type == ChargeType::PrePaid
            && schedule
                .next_before_expiry(instance.expired_time, now)
                .is_some_and(|at| at <= until)
        {
            self.auto_renew_unknown
                .push((observed.account.clone(), instance.id.clone()));
        }
        let seeds = charges_for(
            decision,
            policy,
            &observed.instance,
            observed.auto_renew.as_ref(),
            schedule,
            (now, until),
        );
        let region: Arc<str> = Arc::from(observed.instance.region.as_str());
        self.upcoming.extend(seeds.into_iter().map(|seed| Upcoming {
            account: observed.account.clone(),
            region: region.clone(),
            instance_id: observed.instance.id.clone(),
            expiry: observed.instance.expired_time,
            seed,
        }));
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
        self.next_retry = match (self.next_retry, other.next_retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.refused.extend(other.refused);
        self.upcoming.extend(other.upcoming);
        self.too_late.extend(other.too_late);
        self.auto_renew_unknown.extend(other.auto_renew_unknown);
        self.duplicates.extend(other.duplicates);
    }
}

/// A 128-bit key for an instance id: enough to tell every instance apart without keeping the
/// strings of the whole fleet.
pub fn instance_key(instance_id: &str) -> [u8; 16] {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(instance_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes
}
