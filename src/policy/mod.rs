//! Policies and the pure decision engine: which policy covers an instance (first match wins),
//! what should happen to it now, which safety belts a batch trips, and how long a failed charge
//! waits, and the leader lease's timing rules (`lease`: which timings are safe, whether a
//! leader may still send a charge). No I/O, no clock: `now` is always a parameter.

mod backoff;
mod belts;
mod decide;
mod deduction;
mod funds;
pub mod lease;
mod matcher;

use std::time::Duration;

pub use backoff::RetrySettings;
pub use backoff::{backoff_delay, deadline_of};
pub use belts::{BeltInput, Candidate, LimitKind, Trip, apply_belts, auto_renew_enables_belt};
pub use decide::{
    DecideContext, Decision, History, InstanceState, IntentStatus, IntentView, NextAction, Refusal,
    RenewPlan, RenewWhy, Subject, TokenChoice, decide, first_deduction,
};
pub use deduction::DeductionSchedule;
pub use funds::{
    BalanceView, Charge, ChargeBy, ChargeSeed, Forecast, Gap, Unpriced, WindowCharges, charges_for,
    forecast, window_end,
};
pub use matcher::{MatchSection, Matcher, covers_account};

use crate::cloud::ecs::AutoRenewTarget;
use crate::cloud::types::PeriodUnit;
use crate::money::Money;

/// Where what is known of an instance's past comes from (the ledger, in the daemon), by
/// instance id: ids are unique across accounts, and two config entries can reach the same
/// account. Owned here so the ledger implements it without depending on the pass.
pub trait HistorySource {
    /// What is known about `instance_id`.
    fn history(&self, instance_id: &str) -> History;
}

/// No ledger (yet): every instance starts with a clean history.
#[derive(Debug, Default)]
pub struct NoHistory;

impl HistorySource for NoHistory {
    fn history(&self, _instance_id: &str) -> History {
        History::default()
    }
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Unique name (a metric label).
    pub name: String,
    /// Which instances it covers.
    pub matcher: Matcher,
    /// What it does.
    pub action: PolicyAction,
    /// Whether it acts on instances whose RenewalStatus is NotRenewal.
    pub override_not_renewal: bool,
}

/// What a policy does.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyAction {
    /// RenewInstance within `renew_before` of expiry (or once expired, before release).
    Renew {
        /// How many `unit`s each renewal buys (RenewInstance's Period).
        period: u32,
        /// The unit of `period`: Week, Month or Year.
        unit: PeriodUnit,
        /// How long before expiry.
        renew_before: Duration,
        /// Most one renewal may cost.
        max_price: Option<Money>,
        /// Auto-renew state to keep at the same time.
        keep_auto_renew: Option<AutoRenewTarget>,
    },
    /// Keep the provider's auto-renew on; optionally renew if its deduction fails.
    AutoRenew {
        /// The attributes to keep.
        target: AutoRenewTarget,
        /// Direct renewal when the deduction has not happened.
        fallback: Option<Fallback>,
    },
    /// Keep RenewalStatus = NotRenewal.
    NotRenewal,
    /// Metrics and status only.
    Observe,
    /// Do nothing; the instance is reported in state `excluded`.
    Skip,
}

/// The fallback of an `auto-renew` policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    /// How long after the provider's first deduction attempt (by the account's
    /// [`DeductionSchedule`]).
    pub after: Duration,
    /// Renewal length.
    pub period: u32,
    /// Renewal unit.
    pub unit: PeriodUnit,
    /// Most one renewal may cost.
    pub max_price: Option<Money>,
}
