//! `decide`: from (observed instance, auto-renew attributes, ledger history, policies, now) to
//! what should happen — renew now (and with which token, when an earlier attempt is still
//! open), wait, back off, await verification, or leave it alone — with the reason, the due time,
//! the auto-renew change to make and the state to report. Pure and deterministic.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};

use super::{DeductionSchedule, Fallback, Policy, PolicyAction};
use crate::closed_enum;
use crate::cloud::ecs::AutoRenewTarget;
use crate::cloud::error::ErrorClass;
use crate::cloud::time::start_of_day_utc8;
use crate::cloud::types::{AutoRenewAttribute, ChargeType, Instance, PeriodUnit, RenewalStatus};
use crate::money::Money;

closed_enum! {
    /// What a pass does next with an instance: the word `status` and `plan` show.
    pub enum NextAction {
        /// Renew it now.
        Renew => "renew",
        /// Set its auto-renew attributes.
        SetAutoRenew => "set-auto-renew",
        /// Nothing to do now.
        Nothing => "none",
        /// Wait for a renewal's new expiry to show.
        Verify => "verify",
        /// Wait for the retry after a failed or unanswered attempt.
        Backoff => "backoff",
        /// Nothing retrying can fix: a person has to look.
        Failed => "failed",
        /// It expired and is not renewed.
        Expired => "expired",
        /// Not managed for renewal on purpose.
        Exclude => "exclude",
        /// Due, but held by a safety belt.
        Hold => "hold",
    }
}

closed_enum! {
    /// What an instance's state is, for metrics and status (one-hot `instance_state{state}`).
    pub enum InstanceState {
        /// Nothing to do now.
        Ok => "ok",
        /// A renewal is due now.
        Due => "due",
        /// A renewal is being sent.
        Renewing => "renewing",
        /// Renewed; the new expiry has not shown yet.
        PendingVerification => "pending_verification",
        /// A charge failed; waiting to try again.
        Backoff => "backoff",
        /// A charge failed in a way retrying cannot fix, or cannot be attempted.
        Failed => "failed",
        /// Past expiry and not renewed.
        Expired => "expired",
        /// Not managed for renewal on purpose (skip, skip tag, NotRenewal, PostPaid).
        Excluded => "excluded",
    }
}

closed_enum! {
    /// Why a renewal happens.
    pub enum RenewWhy {
        /// Within `renew_before` of expiry.
        Due => "due",
        /// Already expired, not yet released.
        Expired => "expired",
        /// The provider's auto-renew deduction did not happen in time.
        MissedDeduction => "missed_deduction",
        /// An earlier attempt's outcome is unknown; resent with its token.
        Resume => "resume",
        /// An earlier attempt failed; its backoff is over.
        Retry => "retry",
        /// The provider has no deduction attempt left before the expiry (auto-renew switched
        /// on too late, or the last attempt failed): the fallback renews at once.
        NoDeductionLeft => "no_deduction_left",
    }
}

/// Where an open renewal intent stands, as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentStatus {
    /// Written; the request may or may not have been sent.
    Prepared,
    /// Sent; no answer (timeout, crash, shutdown): the charge may have happened.
    Unknown,
    /// The service accepted it: an order exists; the new expiry has not shown yet.
    Ordered {
        /// The order id.
        order_id: String,
    },
    /// The service refused it.
    Failed {
        /// The failure class.
        class: ErrorClass,
        /// The error code.
        code: String,
    },
}

/// The latest renewal intent for an instance's current expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentView {
    /// Its ClientToken.
    pub token: String,
    /// The expiry it meant to extend.
    pub old_expiry: DateTime<Utc>,
    /// How many `unit`s the intent renews for (its RenewInstance Period).
    pub period: u32,
    /// The unit of `period`: Week, Month or Year.
    pub unit: PeriodUnit,
    /// Where it stands.
    pub status: IntentStatus,
    /// Some attempt may have charged without its answer being recorded: the intent keeps its
    /// period (and token) until it is settled.
    pub maybe_charged: bool,
}

/// What the ledger knows about an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The open intent (for the current expiry), if any.
    pub intent: Option<IntentView>,
    /// Failed attempts in a row for the current expiry.
    pub failed_attempts: u32,
    /// Not before this time (persisted backoff).
    pub retry_at: Option<DateTime<Utc>>,
    /// Intents of the current expiry cycle refused outright (an error answer, no attempt left
    /// unanswered): the next fresh token is derived from this count.
    pub refusals: u32,
}

/// Settings `decide` needs besides the policies.
#[derive(Debug, Clone)]
pub struct DecideContext<'a> {
    /// Policies in order.
    pub policies: &'a [Policy],
    /// The skip tag key.
    pub skip_tag: &'a str,
    /// How far ahead the scan reaches.
    pub horizon: Duration,
    /// How long after expiry an instance is released.
    pub release_after: Duration,
    /// Each account's provider deduction schedule (an account not listed: the China site's).
    pub schedules: Vec<(String, DeductionSchedule)>,
    /// The end of the funds forecast's window, when the forecast is on: the assessment then
    /// keeps each instance's expected charge.
    pub funds_until: Option<DateTime<Utc>>,
}

impl DecideContext<'_> {
    /// The deduction schedule in force for `account`'s instances.
    pub fn schedule_for(&self, account: &str) -> DeductionSchedule {
        self.schedules
            .iter()
            .find(|(name, _)| name == account)
            .map_or(DeductionSchedule::NineDaysDaily, |(_, s)| *s)
    }
}

/// What `decide` looks at.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The account name.
    pub account: &'a str,
    /// The instance as just observed.
    pub instance: &'a Instance,
    /// Its auto-renew attributes (`None` when they could not be read).
    pub auto_renew: Option<&'a AutoRenewAttribute>,
}

/// A renewal to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewPlan {
    /// How many `unit`s to renew for (RenewInstance's Period).
    pub period: u32,
    /// The unit of `period`: Week, Month or Year.
    pub unit: PeriodUnit,
    /// Most it may cost, in the currency it is set in.
    pub max_price: Option<Money>,
    /// Which ClientToken the renewal carries.
    pub token: TokenChoice,
    /// Why the renewal happens (due, expired, missed deduction, resume, retry).
    pub why: RenewWhy,
}

/// Which ClientToken a renewal carries. The same token for as long as any attempt of the
/// intent may have charged (no answer, a 5xx, a busy answer: the service keeps the token's
/// order); a fresh one, derived from the instance, its expiry cycle and the number of this
/// cycle's intents refused outright, only after an error answer proved that no order exists —
/// so a provider that remembers a failed token with its failure cannot hold a renewal after a
/// top-up for ever (docs/ecs-api.md §6: UNCERTAIN), and two hosts or two config entries still
/// derive the same token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenChoice {
    /// Resend the open intent's token.
    Reuse(String),
    /// Derive the token: `refusals` earlier intents of this cycle were refused outright (0 for
    /// the cycle's first intent).
    Derive {
        /// Intents of the current expiry cycle refused outright so far.
        refusals: u32,
    },
}

/// What `decide` concluded for one instance: its state, what to do now, why and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The policy that matched (`None`: no policy; observed only).
    pub policy: Option<String>,
    /// State to report.
    pub state: InstanceState,
    /// A renewal to make now.
    pub renew: Option<RenewPlan>,
    /// An auto-renew change to make now.
    pub auto_renew_change: Option<AutoRenewTarget>,
    /// Whether the provider's auto-renew settings differ from the policy.
    pub drift: bool,
    /// An order for the current expiry was placed and its new expiry has not shown yet: no
    /// renewal of ours is to come for this cycle (an attempt that only may have charged is
    /// resent when the policy renews again, so it is not this).
    pub ordered: bool,
    /// The period of an open intent that may have charged: when it is resent it keeps that
    /// period, whatever the policy says now, so the forecast prices that one.
    pub resend_period: Option<(u32, PeriodUnit)>,
    /// Whether the provider's deduction should have happened by now and has not.
    pub deduction_overdue: bool,
    /// Whether the instance relies on the provider's auto-renew but no deduction attempt is
    /// left before its expiry: auto-renew cannot renew it in time.
    pub auto_renew_too_late: bool,
    /// When the next action is due (renewal, fallback, retry).
    pub due_at: Option<DateTime<Utc>>,
    /// A retry that will be attempted then (the daemon may wake for it before its schedule);
    /// `None` when nothing will be sent then: not-applicable answers wait for a scheduled
    /// pass, and a policy that no longer renews sends nothing.
    pub retry_at: Option<DateTime<Utc>>,
    /// The last attempt was refused for a reason only a person can fix (permission, clock, an
    /// invalid request): loud at once.
    pub refused: Option<Refusal>,
    /// Why, in words.
    pub reason: String,
}

/// A renewal the service refused for a reason only a person can fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Permission, clock or invalid.
    pub class: ErrorClass,
    /// The service's code.
    pub code: String,
}

impl Refusal {
    /// The refusal an attempt's failure class makes, if it is one only a person can fix.
    pub fn of(class: ErrorClass, code: &str) -> Option<Refusal> {
        matches!(
            class,
            ErrorClass::Permission | ErrorClass::Clock | ErrorClass::Invalid
        )
        .then(|| Refusal {
            class,
            code: code.to_owned(),
        })
    }
}

impl Decision {
    fn new(policy: Option<&Policy>, state: InstanceState, reason: impl Into<String>) -> Decision {
        Decision {
            policy: policy.map(|p| p.name.clone()),
            state,
            renew: None,
            auto_renew_change: None,
            drift: false,
            ordered: false,
            resend_period: None,
            deduction_overdue: false,
            auto_renew_too_late: false,
            due_at: None,
            retry_at: None,
            refused: None,
            reason: reason.into(),
        }
    }
}

/// The provider's first deduction attempt under the ECS API reference's schedule (08:00 UTC+8
/// nine days before expiry), the China site's default and the emulator's.
pub fn first_deduction(expiry: DateTime<Utc>) -> DateTime<Utc> {
    DeductionSchedule::NineDaysDaily.first(expiry)
}

/// When an `auto-renew` policy's fallback renews: `after` the provider's first deduction
/// attempt under `schedule`, moved out of the provider's deduction hours (08:00–18:00 UTC+8)
/// so the daemon does not race a deduction whose new expiry has not shown yet.
pub fn fallback_point(
    expiry: DateTime<Utc>,
    after: Duration,
    schedule: DeductionSchedule,
) -> DateTime<Utc> {
    let point = schedule.first(expiry)
        + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::days(1));
    let hour_utc8 = (point.hour() + 8) % 24;
    if (8..18).contains(&hour_utc8) {
        start_of_day_utc8(point) + chrono::Duration::hours(18)
    } else {
        point
    }
}

fn differs(actual: Option<&AutoRenewAttribute>, target: &AutoRenewTarget) -> bool {
    match actual {
        None => false,
        Some(a) if target.status != RenewalStatus::AutoRenewal => a.renewal_status != target.status,
        Some(a) => {
            a.renewal_status != RenewalStatus::AutoRenewal
                || a.duration != target.duration
                || a.period_unit.is_some_and(|u| u != target.unit)
        }
    }
}

fn when(t: DateTime<Utc>) -> String {
    crate::cloud::time::format_minutes(t)
}

/// The instance's expiry as seen at `now`.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// The time of the decision.
    now: DateTime<Utc>,
    /// The instance's current expiry.
    expiry: DateTime<Utc>,
    /// Whether `now` is at or past the expiry.
    expired: bool,
}

impl Timing {
    /// The timing of an instance expiring at `expiry`, seen at `now`.
    fn new(expiry: DateTime<Utc>, now: DateTime<Utc>) -> Timing {
        Timing {
            now,
            expiry,
            expired: now >= expiry,
        }
    }

    /// The state to report when nothing is renewing the instance: expired or ok.
    fn unrenewed_state(&self) -> InstanceState {
        if self.expired {
            InstanceState::Expired
        } else {
            InstanceState::Ok
        }
    }
}

/// What a renewing policy (`renew` or `auto-renew`) wants for an instance, before the ledger's
/// history and the hold checks are considered.
#[derive(Debug)]
struct PolicyWants {
    /// The renewal to make now, if one is due.
    plan: Option<RenewPlan>,
    /// The auto-renew attributes to keep.
    target: Option<AutoRenewTarget>,
    /// When the next action is due.
    due_at: Option<DateTime<Utc>>,
    /// Whether the provider's deduction should have happened by now and has not.
    overdue: bool,
    /// Whether no provider deduction attempt is left before the expiry.
    too_late: bool,
    /// Why, in words.
    reason: String,
}

/// When an `auto-renew` policy acts next and why.
#[derive(Debug)]
struct Schedule {
    /// The fallback renewal to make now, if its point has passed.
    plan: Option<RenewPlan>,
    /// When the provider's deduction or the fallback is due.
    due: DateTime<Utc>,
    /// Why, in words.
    reason: String,
}

/// Decides what should happen to one instance at `now`.
pub fn decide(
    ctx: &DecideContext,
    subject: Subject,
    history: &History,
    now: DateTime<Utc>,
) -> Decision {
    let instance = subject.instance;
    if let Some(excluded) = excluded_instance(instance, ctx.skip_tag) {
        return excluded;
    }
    let policy = ctx
        .policies
        .iter()
        .find(|p| p.matcher.matches(subject.account, instance));
    let at = Timing::new(instance.expired_time, now);
    let schedule = ctx.schedule_for(subject.account);
    let Some(policy) = policy else {
        let mut d = Decision::new(
            None,
            at.unrenewed_state(),
            "no policy matches: observed only",
        );
        d.due_at = Some(at.expiry);
        return flag_too_late(d, subject.auto_renew, schedule, at);
    };
    let status = subject.auto_renew.map(|a| a.renewal_status);

    // What the policy wants: a renewal plan (if due), attribute target, due time.
    let wants = match &policy.action {
        PolicyAction::Skip => {
            return Decision::new(
                Some(policy),
                InstanceState::Excluded,
                format!("policy {} skips it", policy.name),
            );
        }
        PolicyAction::Observe => {
            return flag_too_late(observed(policy, at), subject.auto_renew, schedule, at);
        }
        PolicyAction::NotRenewal => return lapsing(policy, subject.auto_renew),
        PolicyAction::Renew {
            period,
            unit,
            renew_before,
            max_price,
            keep_auto_renew,
        } => renew_wants(
            *period,
            *unit,
            *renew_before,
            max_price,
            *keep_auto_renew,
            at,
        ),
        PolicyAction::AutoRenew { target, fallback } => {
            auto_renew_wants(*target, fallback.as_ref(), schedule, status, at)
        }
    };
    decide_renewal(ctx, subject, history, policy, wants, at)
}

/// The decision for an instance no policy may manage: pay-as-you-go, or carrying the skip tag.
fn excluded_instance(instance: &Instance, skip_tag: &str) -> Option<Decision> {
    if instance.charge_type == ChargeType::PostPaid {
        return Some(Decision::new(
            None,
            InstanceState::Excluded,
            "PostPaid: pay-as-you-go instances do not expire",
        ));
    }
    if instance.tags.iter().any(|(k, _)| k == skip_tag) {
        return Some(Decision::new(
            None,
            InstanceState::Excluded,
            format!("tagged {skip_tag}: excluded whatever the policies say"),
        ));
    }
    None
}

/// The decision under an `observe` policy: reported only, due at expiry.
fn observed(policy: &Policy, at: Timing) -> Decision {
    let mut d = Decision::new(
        Some(policy),
        at.unrenewed_state(),
        format!("policy {} observes it only", policy.name),
    );
    d.due_at = Some(at.expiry);
    d
}

/// An instance no policy renews that relies on the provider's auto-renew (RenewalStatus is
/// AutoRenewal) with no deduction attempt left before its expiry: flagged as the `auto-renew`
/// policy flags it, whatever the policy, since it lapses unless someone renews it.
fn flag_too_late(
    mut d: Decision,
    auto_renew: Option<&AutoRenewAttribute>,
    schedule: DeductionSchedule,
    at: Timing,
) -> Decision {
    let relies = auto_renew.is_some_and(|a| a.renewal_status == RenewalStatus::AutoRenewal);
    if relies && !at.expired && schedule.next_before_expiry(at.expiry, at.now).is_none() {
        d.auto_renew_too_late = true;
        d.reason = format!(
            "{}; auto-renew cannot renew it in time: no deduction attempt of the provider is left before its expiry ({})",
            d.reason,
            when(at.expiry)
        );
    }
    d
}

/// The decision under a `NotRenewal` policy: excluded, with a switch to NotRenewal when the
/// provider's auto-renew setting differs.
fn lapsing(policy: &Policy, auto_renew: Option<&AutoRenewAttribute>) -> Decision {
    let target = AutoRenewTarget {
        status: RenewalStatus::NotRenewal,
        duration: 0,
        unit: PeriodUnit::Month,
    };
    let mut d = Decision::new(
        Some(policy),
        InstanceState::Excluded,
        format!("policy {} lets it lapse (NotRenewal)", policy.name),
    );
    d.drift = differs(auto_renew, &target);
    d.auto_renew_change = d.drift.then_some(target);
    d
}

/// What a `renew` policy wants: a renewal of `period` `unit`s once within `renew_before` of
/// expiry (or once expired), and its `keep_auto_renew` attributes.
fn renew_wants(
    period: u32,
    unit: PeriodUnit,
    renew_before: Duration,
    max_price: &Option<Money>,
    keep_auto_renew: Option<AutoRenewTarget>,
    at: Timing,
) -> PolicyWants {
    let Timing {
        now,
        expiry,
        expired,
    } = at;
    let due = expiry - chrono::Duration::from_std(renew_before).unwrap_or_default();
    let plan = (now >= due).then_some(RenewPlan {
        period,
        unit,
        max_price: max_price.clone(),
        token: TokenChoice::Derive { refusals: 0 },
        why: if expired {
            RenewWhy::Expired
        } else {
            RenewWhy::Due
        },
    });
    let reason = if expired {
        format!(
            "expired at {} and not released: renew {period} {unit}",
            when(expiry)
        )
    } else if plan.is_some() {
        format!(
            "expires {}, within renew_before: renew {period} {unit}",
            when(expiry)
        )
    } else {
        format!("renews {period} {unit} from {}", when(due))
    };
    PolicyWants {
        plan,
        target: keep_auto_renew,
        due_at: Some(due),
        overdue: false,
        too_late: false,
        reason,
    }
}

/// What an `auto-renew` policy wants: its attributes kept (unless expired), and the fallback
/// renewal once the provider's deduction is overdue.
fn auto_renew_wants(
    target: AutoRenewTarget,
    fallback: Option<&Fallback>,
    schedule: DeductionSchedule,
    status: Option<RenewalStatus>,
    at: Timing,
) -> PolicyWants {
    let Timing {
        now,
        expiry,
        expired,
    } = at;
    let first = schedule.first(expiry);
    let overdue_at = match fallback {
        Some(Fallback { after, .. }) => fallback_point(expiry, *after, schedule),
        None => first + chrono::Duration::days(1),
    };
    let overdue = now >= overdue_at && status == Some(RenewalStatus::AutoRenewal) || expired;
    let too_late = !expired
        && target.status == RenewalStatus::AutoRenewal
        && schedule.next_before_expiry(expiry, now).is_none();
    let schedule = if too_late {
        too_late_schedule(fallback, schedule, at)
    } else {
        auto_renew_schedule(fallback, schedule, at)
    };
    // Auto-renew cannot be switched on for an expired instance.
    let target = (!expired).then_some(target);
    PolicyWants {
        plan: schedule.plan,
        target,
        due_at: Some(schedule.due),
        overdue,
        too_late,
        reason: schedule.reason,
    }
}

/// When a fallback renews an instance the provider can no longer renew in time: once the day's
/// deduction run is over (18:00 UTC+8 of the last attempt's day, so it never races a deduction
/// whose new expiry has not shown yet), at the latest at the expiry; `now` when the schedule
/// has no attempt before the expiry at all.
pub fn too_late_point(
    deductions: DeductionSchedule,
    expiry: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    deductions
        .attempts(expiry)
        .into_iter()
        .rfind(|a| *a < expiry)
        .map(|a| start_of_day_utc8(a) + chrono::Duration::hours(18))
        .unwrap_or(now)
        .min(expiry)
}

/// When no provider deduction attempt is left before the expiry: the fallback renews once the
/// day's deduction run is over (18:00 UTC+8 of the last attempt's day, so it never races a
/// deduction whose new expiry has not shown yet; at the latest at the expiry), without waiting
/// for a fallback point still ahead; without a fallback it is said loudly.
fn too_late_schedule(
    fallback: Option<&Fallback>,
    deductions: DeductionSchedule,
    at: Timing,
) -> Schedule {
    let Timing { now, expiry, .. } = at;
    let point = too_late_point(deductions, expiry, now);
    let cannot = format!(
        "auto-renew cannot renew it in time: no deduction attempt of the provider is left before its expiry ({})",
        when(expiry)
    );
    match fallback {
        Some(f) => Schedule {
            plan: (now >= point).then(|| RenewPlan {
                period: f.period,
                unit: f.unit,
                max_price: f.max_price.clone(),
                token: TokenChoice::Derive { refusals: 0 },
                why: RenewWhy::NoDeductionLeft,
            }),
            due: point,
            reason: if now >= point {
                format!("{cannot}: renew {} {} now", f.period, f.unit)
            } else {
                format!("{cannot}: renew {} {} at {}", f.period, f.unit, when(point))
            },
        },
        None => Schedule {
            plan: None,
            due: expiry,
            reason: format!("{cannot}; it lapses unless renewed by hand (or set fallback_renew)"),
        },
    }
}

/// When an `auto-renew` policy acts and why: the fallback renewal once its point has passed,
/// else the fallback point, the expiry or the provider's first deduction.
fn auto_renew_schedule(
    fallback: Option<&Fallback>,
    deductions: DeductionSchedule,
    at: Timing,
) -> Schedule {
    let Timing {
        now,
        expiry,
        expired,
    } = at;
    let first = deductions.first(expiry);
    match fallback {
        Some(f) if now >= fallback_point(expiry, f.after, deductions) => Schedule {
            plan: Some(RenewPlan {
                period: f.period,
                unit: f.unit,
                max_price: f.max_price.clone(),
                token: TokenChoice::Derive { refusals: 0 },
                why: if expired {
                    RenewWhy::Expired
                } else {
                    RenewWhy::MissedDeduction
                },
            }),
            due: fallback_point(expiry, f.after, deductions),
            reason: format!(
                "the provider's deduction has not extended the expiry ({}) by the fallback point: renew {} {}",
                when(expiry),
                f.period,
                f.unit
            ),
        },
        Some(f) => Schedule {
            plan: None,
            due: fallback_point(expiry, f.after, deductions),
            reason: format!(
                "auto-renew; falls back to renewing at {}",
                when(fallback_point(expiry, f.after, deductions))
            ),
        },
        None if expired => Schedule {
            plan: None,
            due: expiry,
            reason: format!("auto-renew did not renew it: expired at {}", when(expiry)),
        },
        None => {
            // The next attempt, not the first: that one may be days behind (and failed).
            let next = deductions.next_before_expiry(expiry, now).unwrap_or(first);
            Schedule {
                plan: None,
                due: next,
                reason: if next == first {
                    format!("auto-renew; the provider deducts from {}", when(first))
                } else {
                    format!(
                        "auto-renew; the provider's next deduction attempt is at {}",
                        when(next)
                    )
                },
            }
        }
    }
}

/// The decision under a renewing policy: what it wants, unless a hold check stops it or an open
/// intent for this expiry decides how (and whether) to act.
fn decide_renewal(
    ctx: &DecideContext,
    subject: Subject,
    history: &History,
    policy: &Policy,
    wants: PolicyWants,
    at: Timing,
) -> Decision {
    let mut decision = Decision::new(Some(policy), at.unrenewed_state(), wants.reason);
    decision.drift = wants
        .target
        .is_some_and(|t| differs(subject.auto_renew, &t));
    decision.auto_renew_change = wants.target.filter(|t| differs(subject.auto_renew, t));

    let wanted = wants.plan.is_some();
    if held_back(&mut decision, ctx, subject, policy, wanted, at) {
        return decision;
    }

    // An open intent for this very expiry decides how (and whether) to act.
    if let Some(intent) = history
        .intent
        .as_ref()
        .filter(|i| i.old_expiry == at.expiry)
    {
        let open = OpenIntent {
            intent,
            wanted: wants.plan,
            due_at: wants.due_at,
            history,
            now: at.now,
        };
        return with_open_intent(decision, &open);
    }

    decision.deduction_overdue = wants.overdue;
    decision.auto_renew_too_late = wants.too_late;
    if let Some(plan) = wants.plan {
        decision.state = InstanceState::Due;
        decision.renew = Some(plan);
    }
    decision.due_at = wants.due_at;
    decision
}

/// Applies the checks that hold a renewing policy back before any history counts: a NotRenewal
/// setting it respects, unreadable attributes, an expiry beyond the horizon. True when one did.
fn held_back(
    decision: &mut Decision,
    ctx: &DecideContext,
    subject: Subject,
    policy: &Policy,
    wanted: bool,
    at: Timing,
) -> bool {
    let status = subject.auto_renew.map(|a| a.renewal_status);
    if status == Some(RenewalStatus::NotRenewal) && !policy.override_not_renewal {
        decision.state = InstanceState::Excluded;
        decision.auto_renew_change = None;
        decision.drift = false;
        decision.reason = format!(
            "RenewalStatus is NotRenewal and policy {} does not set override_not_renewal: left to lapse",
            policy.name
        );
        return true;
    }
    if wanted && subject.auto_renew.is_none() && !policy.override_not_renewal {
        decision.state = InstanceState::Failed;
        decision.reason = "auto-renew attributes could not be read, so a NotRenewal setting cannot be ruled out: renewal held until they can".into();
        decision.due_at = Some(at.now);
        return true;
    }
    if at.expiry - at.now > chrono::Duration::from_std(ctx.horizon).unwrap_or_default() {
        decision.state = InstanceState::Ok;
        decision.reason = format!("expires {}, beyond the horizon", when(at.expiry));
        decision.deduction_overdue = false;
        return true;
    }
    false
}

/// An open renewal intent for the instance's current expiry, with what deciding about it needs.
struct OpenIntent<'a> {
    /// The open intent: its token, period and where its attempts stand.
    intent: &'a IntentView,
    /// The renewal the policy wants now, if any.
    wanted: Option<RenewPlan>,
    /// When the policy renews, when not now: an intent that may have charged is resent then
    /// (unless the expiry moves first), so a charge may still come.
    due_at: Option<DateTime<Utc>>,
    /// What the ledger knows about the instance.
    history: &'a History,
    /// The time of the decision.
    now: DateTime<Utc>,
}

/// The decision when an intent for the instance's current expiry is open. Every attempt for
/// this expiry carries the intent's token (one per instance and expiry cycle); one that may
/// have charged also keeps the intent's period, so a changed config can never turn it into a
/// second, different charge.
fn with_open_intent(mut decision: Decision, open: &OpenIntent) -> Decision {
    let (intent, history, now) = (open.intent, open.history, open.now);
    decision.resend_period = intent.maybe_charged.then_some((intent.period, intent.unit));
    match &intent.status {
        IntentStatus::Ordered { order_id } => {
            decision.state = InstanceState::PendingVerification;
            decision.ordered = true;
            decision.reason =
                format!("order {order_id} placed; waiting for the new expiry to show");
            decision.deduction_overdue = false;
            decision
        }
        IntentStatus::Unknown
            if open.wanted.is_some() && history.retry_at.is_some_and(|r| now < r) =>
        {
            unknown_in_backoff(decision, open)
        }
        IntentStatus::Prepared | IntentStatus::Unknown => unknown_outcome(decision, open),
        IntentStatus::Failed { class, code } => after_failure(decision, open, *class, code),
    }
}

/// The renewal that resends `intent` with its token: with the intent's period when an attempt
/// may have charged, else with the plan's.
fn resend(intent: &IntentView, plan: &RenewPlan, why: RenewWhy) -> RenewPlan {
    RenewPlan {
        token: TokenChoice::Reuse(intent.token.clone()),
        ..retry(intent, plan, why)
    }
}

/// The renewal after an intent's attempts: its period kept when an attempt may have charged,
/// else the plan's; the token is the plan's (a fresh one derived for the cycle).
fn retry(intent: &IntentView, plan: &RenewPlan, why: RenewWhy) -> RenewPlan {
    RenewPlan {
        period: if intent.maybe_charged {
            intent.period
        } else {
            plan.period
        },
        unit: if intent.maybe_charged {
            intent.unit
        } else {
            plan.unit
        },
        max_price: plan.max_price.clone(),
        token: plan.token.clone(),
        why,
    }
}

/// The decision when an intent went unanswered (or was answered busy) and its backoff is not
/// over: it is resent with its token once it is.
fn unknown_in_backoff(mut decision: Decision, open: &OpenIntent) -> Decision {
    // Unanswered, or answered busy: resent with its token once its backoff is over (a
    // charge may be in flight; sending again at once would only be answered busy).
    let retry_at = open.history.retry_at.unwrap_or(open.now);
    decision.state = InstanceState::Backoff;
    decision.due_at = Some(retry_at);
    decision.retry_at = Some(retry_at);
    decision.reason = format!(
        "an earlier renewal's outcome is unknown: resent with its ClientToken {} at {}",
        open.intent.token,
        when(retry_at)
    );
    decision
}

/// The decision when an intent's outcome is unknown: resend it with its token and period if the
/// policy still renews, else wait for the expiry to tell.
fn unknown_outcome(mut decision: Decision, open: &OpenIntent) -> Decision {
    let intent = open.intent;
    match &open.wanted {
        Some(plan) => {
            decision.state = InstanceState::Due;
            decision.renew = Some(RenewPlan {
                period: intent.period,
                unit: intent.unit,
                ..resend(intent, plan, RenewWhy::Resume)
            });
            decision.reason = format!(
                "an earlier renewal's outcome is unknown: resend it with its ClientToken {}",
                intent.token
            );
        }
        None => {
            decision.state = InstanceState::PendingVerification;
            decision.due_at = open.due_at;
            decision.reason = format!(
                "an earlier renewal's outcome is unknown and the policy does not renew now: the expiry will tell{}",
                resent_then(open.due_at)
            );
        }
    }
    decision
}

/// The words for an intent that may have charged and is resent when the policy renews again.
fn resent_then(due_at: Option<DateTime<Utc>>) -> String {
    due_at.map_or_else(String::new, |at| {
        format!(
            " (resent with its token from {} unless the expiry moves first)",
            when(at)
        )
    })
}

/// The decision after an intent's last attempt failed with `code` (`class`): wait out its
/// backoff, retry with its token, or report the failure when the policy no longer renews.
fn after_failure(
    mut decision: Decision,
    open: &OpenIntent,
    class: ErrorClass,
    code: &str,
) -> Decision {
    let OpenIntent {
        intent,
        wanted,
        history,
        now,
        ..
    } = open;
    decision.refused = wanted.as_ref().and_then(|_| Refusal::of(class, code));
    let charged = if intent.maybe_charged {
        " (an earlier attempt may have charged: resent with the same token and period)"
    } else {
        ""
    };
    match (history.retry_at.filter(|r| now < r), wanted) {
        (Some(retry_at), _) => {
            decision.state = if class.retry_later() || intent.maybe_charged {
                InstanceState::Backoff
            } else {
                InstanceState::Failed
            };
            decision.due_at = Some(retry_at);
            // Not-applicable answers get their next look at a scheduled pass: the
            // daemon does not wake for them.
            decision.retry_at =
                (wanted.is_some() && class != ErrorClass::NotApplicable).then_some(retry_at);
            decision.reason = format!(
                "renewal failed {} time(s), last with {code} ({class}){charged}; next attempt at {}",
                history.failed_attempts,
                when(retry_at)
            );
        }
        (None, Some(plan)) => {
            decision.state = InstanceState::Due;
            // An attempt that may have charged keeps its token; one refused outright (an error
            // answer: no order) leaves nothing to repeat, and the next takes a fresh token.
            decision.renew = Some(if intent.maybe_charged {
                resend(intent, plan, RenewWhy::Retry)
            } else {
                RenewPlan {
                    token: TokenChoice::Derive {
                        refusals: history.refusals,
                    },
                    ..retry(intent, plan, RenewWhy::Retry)
                }
            });
            decision.reason = format!(
                "retry after {code} ({class}){charged}, attempt {}",
                history.failed_attempts + 1
            );
        }
        (None, None) => {
            decision.state = if intent.maybe_charged {
                InstanceState::PendingVerification
            } else {
                InstanceState::Ok
            };
            decision.due_at = open.due_at;
            decision.reason = format!(
                "the last renewal attempt failed with {code} ({class}){charged} and the policy does not renew now{}",
                resent_then(open.due_at.filter(|_| intent.maybe_charged))
            );
        }
    }
    decision
}

#[cfg(test)]
mod tests;
