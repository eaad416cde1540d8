use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::*;
use crate::cloud::time;
use crate::policy::MatchSection;
use crate::policy::{Matcher, Policy, PolicyAction};

fn t(text: &str) -> DateTime<Utc> {
    time::parse(text).unwrap()
}

fn instance(id: &str, expiry: &str) -> Instance {
    Instance {
        id: id.into(),
        name: format!("web-{id}"),
        region: "cn-hangzhou".into(),
        zone: "cn-hangzhou-g".into(),
        status: "Running".into(),
        charge_type: ChargeType::PrePaid,
        expired_time: t(expiry),
        instance_type: "ecs.g6.large".into(),
        instance_type_family: "ecs.g6".into(),
        resource_group_id: String::new(),
        tags: vec![("env".into(), "prod".into())],
        security_group_ids: vec!["sg-1".into()],
        lock_reasons: vec![],
    }
}

fn attrs(id: &str, status: RenewalStatus) -> AutoRenewAttribute {
    AutoRenewAttribute {
        instance_id: id.into(),
        renewal_status: status,
        duration: if status == RenewalStatus::AutoRenewal {
            1
        } else {
            0
        },
        period_unit: Some(PeriodUnit::Month),
    }
}

fn renew_policy(name: &str, matcher: MatchSection) -> Policy {
    Policy {
        name: name.into(),
        matcher: Matcher::compile(&matcher).unwrap(),
        action: PolicyAction::Renew {
            period: 1,
            unit: PeriodUnit::Month,
            renew_before: Duration::from_secs(7 * 86_400),
            max_price: None,
            keep_auto_renew: None,
        },
        override_not_renewal: false,
    }
}

fn auto_policy(fallback: bool) -> Policy {
    Policy {
        name: "auto".into(),
        matcher: Matcher::default(),
        action: PolicyAction::AutoRenew {
            target: AutoRenewTarget {
                status: RenewalStatus::AutoRenewal,
                duration: 1,
                unit: PeriodUnit::Month,
            },
            fallback: fallback.then(|| super::super::Fallback {
                after: Duration::from_secs(86_400),
                period: 1,
                unit: PeriodUnit::Month,
                max_price: None,
            }),
        },
        override_not_renewal: false,
    }
}

fn ctx(policies: &[Policy]) -> DecideContext<'_> {
    DecideContext {
        policies,
        skip_tag: "ecs-renewd:skip",
        horizon: Duration::from_secs(30 * 86_400),
        release_after: Duration::from_secs(15 * 86_400),
        schedules: vec![],
        funds_until: None,
    }
}

fn run(
    policies: &[Policy],
    instance: &Instance,
    status: RenewalStatus,
    history: &History,
    now: &str,
) -> Decision {
    let a = attrs(&instance.id, status);
    decide(
        &ctx(policies),
        Subject {
            account: "main",
            instance,
            auto_renew: Some(&a),
        },
        history,
        t(now),
    )
}

#[test]
fn a_renew_policy_renews_within_renew_before_and_waits_before() {
    let policies = [renew_policy("prod", MatchSection::default())];
    let i = instance("i-1", "2026-03-20T16:00Z");
    let early = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &History::default(),
        "2026-03-10T00:00Z",
    );
    assert_eq!(
        (early.state, early.renew.is_none()),
        (InstanceState::Ok, true)
    );
    assert_eq!(early.due_at, Some(t("2026-03-13T16:00Z")));
    let due = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &History::default(),
        "2026-03-14T00:00Z",
    );
    assert_eq!(due.state, InstanceState::Due);
    let plan = due.renew.unwrap();
    assert_eq!(
        (plan.period, plan.unit, plan.why),
        (1, PeriodUnit::Month, RenewWhy::Due)
    );
    let expired = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &History::default(),
        "2026-03-22T00:00Z",
    );
    assert_eq!(
        (expired.state, expired.renew.unwrap().why),
        (InstanceState::Due, RenewWhy::Expired)
    );
}

#[test]
fn first_matching_policy_wins() {
    let web = MatchSection {
        name: Some(toml::Spanned::new(0..0, "web-*".to_string())),
        ..MatchSection::default()
    };
    let skip = Policy {
        action: PolicyAction::Skip,
        ..renew_policy("skip-web", web)
    };
    let policies = [skip, renew_policy("rest", MatchSection::default())];
    let d = run(
        &policies,
        &instance("i-1", "2026-03-15T16:00Z"),
        RenewalStatus::Normal,
        &History::default(),
        "2026-03-14T00:00Z",
    );
    assert_eq!(
        (d.policy.as_deref(), d.state),
        (Some("skip-web"), InstanceState::Excluded)
    );
}

#[test]
fn not_renewal_is_respected_unless_the_policy_overrides_it() {
    let mut policies = [renew_policy("prod", MatchSection::default())];
    let i = instance("i-1", "2026-03-15T16:00Z");
    let d = run(
        &policies,
        &i,
        RenewalStatus::NotRenewal,
        &History::default(),
        "2026-03-14T00:00Z",
    );
    assert_eq!(
        (d.state, d.renew.is_none()),
        (InstanceState::Excluded, true)
    );
    assert!(d.reason.contains("override_not_renewal"), "{}", d.reason);
    policies[0].override_not_renewal = true;
    let d = run(
        &policies,
        &i,
        RenewalStatus::NotRenewal,
        &History::default(),
        "2026-03-14T00:00Z",
    );
    assert!(d.renew.is_some());
}

#[test]
fn unknown_auto_renew_attributes_hold_a_renewal() {
    let policies = [renew_policy("prod", MatchSection::default())];
    let i = instance("i-1", "2026-03-15T16:00Z");
    let d = decide(
        &ctx(&policies),
        Subject {
            account: "main",
            instance: &i,
            auto_renew: None,
        },
        &History::default(),
        t("2026-03-14T00:00Z"),
    );
    assert_eq!((d.state, d.renew.is_none()), (InstanceState::Failed, true));
}

#[test]
fn an_ordered_intent_waits_for_verification_and_an_unknown_one_is_resent_with_its_token() {
    let policies = [renew_policy("prod", MatchSection::default())];
    let i = instance("i-1", "2026-03-15T16:00Z");
    let mut history = History {
        intent: Some(IntentView {
            token: "tok-1".into(),
            old_expiry: i.expired_time,
            period: 2,
            unit: PeriodUnit::Month,
            status: IntentStatus::Ordered {
                order_id: "O-1".into(),
            },
            maybe_charged: false,
        }),
        ..History::default()
    };
    let d = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &history,
        "2026-03-14T00:00Z",
    );
    assert_eq!(
        (d.state, d.renew.is_none()),
        (InstanceState::PendingVerification, true)
    );
    history.intent.as_mut().unwrap().status = IntentStatus::Unknown;
    let d = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &history,
        "2026-03-14T00:00Z",
    );
    let plan = d.renew.unwrap();
    assert_eq!(
        (plan.token, plan.period, plan.why),
        (TokenChoice::Reuse("tok-1".into()), 2, RenewWhy::Resume)
    );
}

#[test]
fn a_charge_refused_outright_backs_off_then_retries_with_a_token_derived_from_its_refusals() {
    let policies = [renew_policy("prod", MatchSection::default())];
    let i = instance("i-1", "2026-03-15T16:00Z");
    let history = History {
        intent: Some(IntentView {
            token: "tok-1".into(),
            old_expiry: i.expired_time,
            period: 1,
            unit: PeriodUnit::Month,
            status: IntentStatus::Failed {
                class: ErrorClass::Funds,
                code: "InvalidAccountStatus.NotEnoughBalance".into(),
            },
            maybe_charged: false,
        }),
        failed_attempts: 2,
        retry_at: Some(t("2026-03-14T01:00Z")),
        refusals: 2,
    };
    let waiting = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &history,
        "2026-03-14T00:30Z",
    );
    assert_eq!(
        (waiting.state, waiting.renew.is_none()),
        (InstanceState::Backoff, true)
    );
    assert_eq!(waiting.due_at, Some(t("2026-03-14T01:00Z")));
    let retry = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &history,
        "2026-03-14T01:00Z",
    )
    .renew
    .unwrap();
    // The refusals were error answers: no order exists, so the retry takes the cycle's next
    // token (a provider that remembers a failed token would refuse the old one for ever).
    assert_eq!(
        (retry.token, retry.why),
        (TokenChoice::Derive { refusals: 2 }, RenewWhy::Retry)
    );
}

fn failed_history(class: ErrorClass, code: &str, maybe_charged: bool) -> History {
    History {
        intent: Some(IntentView {
            token: "tok-1".into(),
            old_expiry: t("2026-03-15T16:00Z"),
            period: 1,
            unit: PeriodUnit::Month,
            status: IntentStatus::Failed {
                class,
                code: code.into(),
            },
            maybe_charged,
        }),
        failed_attempts: 1,
        retry_at: Some(t("2026-03-14T01:00Z")),
        refusals: u32::from(!maybe_charged),
    }
}

#[test]
fn a_backoff_names_its_retry_for_the_daemon_but_a_not_applicable_answer_does_not() {
    let policies = [renew_policy("prod", MatchSection::default())];
    let i = instance("i-1", "2026-03-15T16:00Z");
    let funds = failed_history(
        ErrorClass::Funds,
        "InvalidAccountStatus.NotEnoughBalance",
        false,
    );
    let d = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &funds,
        "2026-03-14T00:30Z",
    );
    assert_eq!(d.retry_at, Some(t("2026-03-14T01:00Z")));
    let not_applicable =
        failed_history(ErrorClass::NotApplicable, "IncorrectInstanceStatus", false);
    let d = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &not_applicable,
        "2026-03-14T00:30Z",
    );
    assert_eq!((d.retry_at, d.renew.is_none()), (None, true));
    // After its backoff it gets another look (at whatever pass comes next).
    let d = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &not_applicable,
        "2026-03-14T01:00Z",
    );
    assert_eq!(d.renew.unwrap().token, TokenChoice::Derive { refusals: 1 });
    // A policy that no longer renews is no reason to wake.
    let observe = [Policy {
        action: PolicyAction::Observe,
        ..renew_policy("prod", MatchSection::default())
    }];
    let d = run(
        &observe,
        &i,
        RenewalStatus::Normal,
        &funds,
        "2026-03-14T00:30Z",
    );
    assert_eq!(d.retry_at, None);
}

#[test]
fn an_unknown_outcome_is_resent_after_its_backoff_and_the_daemon_may_wake_for_it() {
    let policies = [renew_policy("prod", MatchSection::default())];
    let i = instance("i-1", "2026-03-15T16:00Z");
    let mut history = failed_history(ErrorClass::Busy, "Idempotence.Processing", true);
    history.intent.as_mut().unwrap().status = IntentStatus::Unknown;
    let waiting = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &history,
        "2026-03-14T00:30Z",
    );
    assert_eq!(
        (waiting.state, waiting.renew.is_none(), waiting.retry_at),
        (InstanceState::Backoff, true, Some(t("2026-03-14T01:00Z")))
    );
    let resend = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &history,
        "2026-03-14T01:00Z",
    )
    .renew
    .unwrap();
    assert_eq!(
        (resend.token, resend.why),
        (TokenChoice::Reuse("tok-1".into()), RenewWhy::Resume)
    );
}

#[test]
fn a_maybe_charged_intent_keeps_its_token_and_period_when_the_policy_changes() {
    let two_months = [Policy {
        action: PolicyAction::Renew {
            period: 2,
            unit: PeriodUnit::Month,
            renew_before: std::time::Duration::from_secs(7 * 86_400),
            max_price: None,
            keep_auto_renew: None,
        },
        ..renew_policy("prod", MatchSection::default())
    }];
    let i = instance("i-1", "2026-03-15T16:00Z");
    for (maybe_charged, period) in [(true, 1), (false, 2)] {
        let history = failed_history(
            ErrorClass::Funds,
            "InvalidAccountStatus.NotEnoughBalance",
            maybe_charged,
        );
        let plan = run(
            &two_months,
            &i,
            RenewalStatus::Normal,
            &history,
            "2026-03-14T02:00Z",
        )
        .renew
        .unwrap();
        let token = if maybe_charged {
            TokenChoice::Reuse("tok-1".into())
        } else {
            TokenChoice::Derive { refusals: 1 }
        };
        assert_eq!(
            (plan.token, plan.period),
            (token, period),
            "maybe charged: {maybe_charged}"
        );
    }
}

#[test]
fn a_refusal_only_a_person_can_fix_is_named() {
    let policies = [renew_policy("prod", MatchSection::default())];
    let i = instance("i-1", "2026-03-15T16:00Z");
    let history = failed_history(ErrorClass::Permission, "Forbidden.RAM", false);
    let d = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &history,
        "2026-03-14T00:30Z",
    );
    assert_eq!(
        d.refused,
        Some(Refusal {
            class: ErrorClass::Permission,
            code: "Forbidden.RAM".into()
        })
    );
    let funds = failed_history(
        ErrorClass::Funds,
        "InvalidAccountStatus.NotEnoughBalance",
        false,
    );
    let d = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &funds,
        "2026-03-14T00:30Z",
    );
    assert_eq!(d.refused, None);
}

#[test]
fn an_intent_for_an_older_expiry_does_not_block_the_new_cycle() {
    let policies = [renew_policy("prod", MatchSection::default())];
    let i = instance("i-1", "2026-04-15T16:00Z");
    let history = History {
        intent: Some(IntentView {
            token: "old".into(),
            old_expiry: t("2026-03-15T16:00Z"),
            period: 1,
            unit: PeriodUnit::Month,
            status: IntentStatus::Ordered {
                order_id: "O-1".into(),
            },
            maybe_charged: false,
        }),
        ..History::default()
    };
    let d = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &history,
        "2026-03-16T00:00Z",
    );
    assert_eq!(
        (d.state, d.renew.is_none()),
        (InstanceState::Ok, true),
        "{}",
        d.reason
    );
}

#[test]
fn auto_renew_keeps_the_attributes_and_falls_back_after_a_missed_deduction() {
    let policies = [auto_policy(true)];
    let i = instance("i-1", "2026-03-20T16:00Z");
    // First deduction: 2026-03-12 08:00 UTC+8 = 03-12T00:00Z. Fallback: one day later, moved out of
    // the provider's 08:00–18:00 UTC+8 run: 03-13 18:00 UTC+8 = 03-13T10:00Z.
    assert_eq!(first_deduction(i.expired_time), t("2026-03-12T00:00Z"));
    assert_eq!(
        fallback_point(
            i.expired_time,
            Duration::from_secs(86_400),
            DeductionSchedule::NineDaysDaily
        ),
        t("2026-03-13T10:00Z")
    );
    let drift = run(
        &policies,
        &i,
        RenewalStatus::Normal,
        &History::default(),
        "2026-03-01T00:00Z",
    );
    assert!(drift.drift);
    assert_eq!(
        drift.auto_renew_change.unwrap().status,
        RenewalStatus::AutoRenewal
    );
    let waiting = run(
        &policies,
        &i,
        RenewalStatus::AutoRenewal,
        &History::default(),
        "2026-03-13T09:59Z",
    );
    assert_eq!(
        (
            waiting.renew.is_none(),
            waiting.drift,
            waiting.deduction_overdue
        ),
        (true, false, false)
    );
    let fallback = run(
        &policies,
        &i,
        RenewalStatus::AutoRenewal,
        &History::default(),
        "2026-03-13T10:00Z",
    );
    assert_eq!(fallback.renew.unwrap().why, RenewWhy::MissedDeduction);
    assert!(fallback.deduction_overdue);
    let without = run(
        &[auto_policy(false)],
        &i,
        RenewalStatus::AutoRenewal,
        &History::default(),
        "2026-03-13T10:00Z",
    );
    assert!(without.renew.is_none() && without.deduction_overdue);
}

/// Found by the state machine's long run: an attempt that may have charged, then failed for
/// funds, leaves the instance pending verification while the policy does not renew (here the
/// fallback waits for the day's deduction run to end). The intent is resent when the policy
/// renews again, so that charge is due then and the forecast counts it; only an order placed
/// leaves nothing of ours to come for the cycle.
#[test]
fn a_maybe_charged_renewal_resent_later_is_due_then_and_forecast() {
    use crate::policy::{ChargeBy, charges_for};
    let policies = [auto_policy(true)];
    let i = instance("i-1", "2026-03-29T16:00Z");
    let open = |status| History {
        intent: Some(IntentView {
            token: "tok-1".into(),
            old_expiry: i.expired_time,
            period: 1,
            unit: PeriodUnit::Month,
            status,
            maybe_charged: true,
        }),
        failed_attempts: 7,
        retry_at: Some(t("2026-03-29T03:58Z")),
        refusals: 0,
    };
    let now = "2026-03-29T04:00Z";
    let window = (t(now), t("2026-04-06T00:00Z"));
    let a = attrs("i-1", RenewalStatus::AutoRenewal);
    let failed = open(IntentStatus::Failed {
        class: ErrorClass::Funds,
        code: "InvalidAccountStatus.NotEnoughBalance".into(),
    });
    for history in [failed, open(IntentStatus::Unknown)] {
        let d = run(&policies, &i, RenewalStatus::AutoRenewal, &history, now);
        assert_eq!(
            (d.state, d.renew.is_none(), d.due_at),
            (
                InstanceState::PendingVerification,
                true,
                Some(t("2026-03-29T10:00Z"))
            ),
            "{history:?}"
        );
        let seeds = charges_for(
            &d,
            Some(&policies[0]),
            &i,
            Some(&a),
            DeductionSchedule::NineDaysDaily,
            window,
        );
        assert_eq!(
            seeds.first().map(|s| (s.at, s.by)),
            Some((t("2026-03-29T10:00Z"), ChargeBy::Daemon)),
            "{history:?}"
        );
    }
    let ordered = open(IntentStatus::Ordered {
        order_id: "o-1".into(),
    });
    let d = run(&policies, &i, RenewalStatus::AutoRenewal, &ordered, now);
    assert_eq!(d.state, InstanceState::PendingVerification);
    let seeds = charges_for(
        &d,
        Some(&policies[0]),
        &i,
        Some(&a),
        DeductionSchedule::NineDaysDaily,
        window,
    );
    assert_eq!(seeds, vec![]);
}

/// An intent that may have charged is resent with its own period, whatever the policy says
/// now (a reload changed it): the forecast prices that period, not the policy's.
#[test]
fn the_forecast_prices_a_resend_at_the_intents_period() {
    use crate::policy::charges_for;
    let policies = [renew_policy("renew", MatchSection::default())];
    let i = instance("i-1", "2026-03-20T16:00Z");
    let history = History {
        intent: Some(IntentView {
            token: "tok-1".into(),
            old_expiry: i.expired_time,
            period: 2,
            unit: PeriodUnit::Month,
            status: IntentStatus::Unknown,
            maybe_charged: true,
        }),
        failed_attempts: 1,
        retry_at: None,
        refusals: 0,
    };
    let a = attrs("i-1", RenewalStatus::Normal);
    let window = (t("2026-03-10T00:00Z"), t("2026-03-20T00:00Z"));
    for now in ["2026-03-10T00:00Z", "2026-03-14T00:00Z"] {
        let d = run(&policies, &i, RenewalStatus::Normal, &history, now);
        let window = (t(now), window.1);
        let seeds = charges_for(
            &d,
            Some(&policies[0]),
            &i,
            Some(&a),
            DeductionSchedule::NineDaysDaily,
            window,
        );
        assert_eq!(
            seeds.first().map(|s| (s.period, s.unit)),
            Some((2, PeriodUnit::Month)),
            "at {now}: {d:?}"
        );
    }
}

// ---- properties ----

prop_compose! {
    fn arb_instance()(
        id in "i-[a-z0-9]{4}",
        days in -14i64..60,
        postpaid in any::<bool>(),
        skip_tag in any::<bool>(),
        prod in any::<bool>(),
    ) -> Instance {
        let base = t("2026-06-01T16:00Z");
        let mut i = instance(&id, "2026-06-01T16:00Z");
        i.expired_time = base + chrono::Duration::days(days);
        if postpaid { i.charge_type = ChargeType::PostPaid; }
        if skip_tag { i.tags.push(("ecs-renewd:skip".into(), String::new())); }
        if !prod { i.tags = vec![("env".into(), "dev".into())]; }
        i
    }
}

fn arb_status() -> impl Strategy<Value = RenewalStatus> {
    prop_oneof![
        Just(RenewalStatus::Normal),
        Just(RenewalStatus::AutoRenewal),
        Just(RenewalStatus::NotRenewal)
    ]
}

fn arb_history(expiry: DateTime<Utc>) -> impl Strategy<Value = History> {
    let status = prop_oneof![
        Just(IntentStatus::Prepared),
        Just(IntentStatus::Unknown),
        Just(IntentStatus::Ordered {
            order_id: "O".into()
        }),
        Just(IntentStatus::Failed {
            class: ErrorClass::Funds,
            code: "X".into()
        }),
        Just(IntentStatus::Failed {
            class: ErrorClass::Permission,
            code: "Y".into()
        }),
    ];
    (
        proptest::option::of(status),
        0u32..5,
        proptest::option::of(-3i64..3),
        any::<bool>(),
    )
        .prop_map(move |(s, n, r, maybe_charged)| History {
            intent: s.map(|status| IntentView {
                token: "tok".into(),
                old_expiry: expiry,
                period: 1,
                unit: PeriodUnit::Month,
                status,
                maybe_charged,
            }),
            failed_attempts: n,
            retry_at: r.map(|h| t("2026-05-30T00:00Z") + chrono::Duration::hours(h)),
            refusals: n,
        })
}

fn prod_only_policies() -> Vec<Policy> {
    let prod = MatchSection {
        tags: [("env".to_string(), "prod".to_string())].into(),
        ..MatchSection::default()
    };
    vec![renew_policy("prod", prod), auto_policy(true)]
        .into_iter()
        .take(1)
        .collect()
}

proptest! {
    #[test]
    fn unmatched_postpaid_skip_tagged_or_not_renewal_instances_are_never_renewed(
        (i, history) in arb_instance().prop_flat_map(|i| { let e = i.expired_time; (Just(i), arb_history(e)) }),
        status in arb_status(),
        hours in 0i64..(70 * 24),
    ) {
        let policies = prod_only_policies();
        let now = t("2026-05-25T00:00Z") + chrono::Duration::hours(hours);
        let a = attrs(&i.id, status);
        let d = decide(&ctx(&policies), Subject { account: "main", instance: &i, auto_renew: Some(&a) }, &history, now);
        let unmatched = !i.tags.iter().any(|(k, v)| k == "env" && v == "prod");
        let skip_tagged = i.tags.iter().any(|(k, _)| k == "ecs-renewd:skip");
        if i.charge_type == ChargeType::PostPaid || skip_tagged || unmatched || status == RenewalStatus::NotRenewal {
            prop_assert!(d.renew.is_none(), "renewed: {:?} / {:?}", i, d);
        }
    }

    #[test]
    fn deciding_twice_gives_the_same_answer(
        (i, history) in arb_instance().prop_flat_map(|i| { let e = i.expired_time; (Just(i), arb_history(e)) }),
        status in arb_status(),
        hours in 0i64..(70 * 24),
        fallback in any::<bool>(),
    ) {
        let policies = vec![renew_policy("prod", MatchSection { tags: [("env".to_string(), "prod".to_string())].into(), ..MatchSection::default() }), auto_policy(fallback)];
        let now = t("2026-05-25T00:00Z") + chrono::Duration::hours(hours);
        let a = attrs(&i.id, status);
        let subject = Subject { account: "main", instance: &i, auto_renew: Some(&a) };
        prop_assert_eq!(decide(&ctx(&policies), subject, &history, now), decide(&ctx(&policies), subject, &history, now));
    }

    #[test]
    fn an_expiry_beyond_the_horizon_is_left_alone(
        days_beyond in 1i64..400,
        status in arb_status(),
        fallback in any::<bool>(),
    ) {
        let policies = vec![Policy { override_not_renewal: true, ..renew_policy("all", MatchSection::default()) }];
        let mut i = instance("i-far", "2026-06-01T16:00Z");
        let now = t("2026-06-01T00:00Z");
        // The expiry moved (provider auto-renew, a human) past now + horizon.
        i.expired_time = now + chrono::Duration::days(30 + days_beyond);
        let a = attrs(&i.id, status);
        for policies in [&policies, &vec![auto_policy(fallback)]] {
            let d = decide(&ctx(policies), Subject { account: "main", instance: &i, auto_renew: Some(&a) }, &History::default(), now);
            prop_assert!(d.renew.is_none(), "{:?}", d);
        }
    }

    #[test]
    fn a_renewal_never_reuses_a_token_of_another_expiry(
        (i, history) in arb_instance().prop_flat_map(|i| { let e = i.expired_time; (Just(i), arb_history(e - chrono::Duration::days(30))) }),
        hours in 0i64..(70 * 24),
    ) {
        let policies = vec![renew_policy("all", MatchSection::default())];
        let now = t("2026-05-25T00:00Z") + chrono::Duration::hours(hours);
        let a = attrs(&i.id, RenewalStatus::Normal);
        let d = decide(&ctx(&policies), Subject { account: "main", instance: &i, auto_renew: Some(&a) }, &history, now);
        if let Some(plan) = d.renew {
            prop_assert_eq!(plan.token, TokenChoice::Derive { refusals: 0 });
        }
    }

    #[test]
    fn a_token_is_kept_while_an_attempt_may_have_charged_and_moved_on_only_after_a_refusal(
        (i, history) in arb_instance().prop_flat_map(|i| { let e = i.expired_time; (Just(i), arb_history(e)) }),
        hours in 0i64..(70 * 24),
    ) {
        let policies = vec![renew_policy("all", MatchSection::default())];
        let now = t("2026-05-25T00:00Z") + chrono::Duration::hours(hours);
        let a = attrs(&i.id, RenewalStatus::Normal);
        let d = decide(&ctx(&policies), Subject { account: "main", instance: &i, auto_renew: Some(&a) }, &history, now);
        if let (Some(plan), Some(intent)) = (d.renew, &history.intent) {
            let refused = matches!(intent.status, IntentStatus::Failed { .. }) && !intent.maybe_charged;
            if refused {
                prop_assert_eq!(plan.token, TokenChoice::Derive { refusals: history.refusals });
            } else {
                prop_assert_eq!(plan.token, TokenChoice::Reuse(intent.token.clone()));
            }
        }
    }
}

/// An `AutoRenewal` instance whose provider has no deduction attempt left before its expiry
/// (auto-renew switched on after the last 08:00 UTC+8 attempt) will lapse: it is flagged, and
/// with `fallback_renew` renewed at once rather than at a fallback point still ahead.
#[test]
fn auto_renew_too_late_for_any_deduction_is_flagged_and_the_fallback_renews_at_once() {
    // Expiry 03-12 00:00 UTC+8; the last attempt before it was 03-11 08:00 UTC+8 (03-11T00:00Z).
    let i = instance("i-late", "2026-03-11T16:00Z");
    let mut late_fallback = auto_policy(true);
    if let PolicyAction::AutoRenew {
        fallback: Some(f), ..
    } = &mut late_fallback.action
    {
        // T−9 08:00 UTC+8 + 8.5 days = 03-11 20:00 UTC+8 (03-11T12:00Z): still ahead at 02:00Z.
        f.after = Duration::from_secs(8 * 86_400 + 12 * 3600);
    }
    // At 10:00 UTC+8 the day's deduction run may still show its result: it waits for 18:00.
    let d = run(
        &[late_fallback.clone()],
        &i,
        RenewalStatus::AutoRenewal,
        &History::default(),
        "2026-03-11T02:00Z",
    );
    assert!(d.auto_renew_too_late, "{}", d.reason);
    assert!(d.renew.is_none(), "{}", d.reason);
    assert_eq!(d.due_at, Some(t("2026-03-11T10:00Z")));
    let now = "2026-03-11T10:30Z";
    let d = run(
        &[late_fallback],
        &i,
        RenewalStatus::AutoRenewal,
        &History::default(),
        now,
    );
    assert!(d.auto_renew_too_late, "{}", d.reason);
    let plan = d
        .renew
        .as_ref()
        .expect("renewed at once, before the fallback point");
    assert_eq!(plan.why, RenewWhy::NoDeductionLeft);
    assert!(
        d.reason.contains("auto-renew cannot renew it in time"),
        "{}",
        d.reason
    );

    let d = run(
        &[auto_policy(false)],
        &i,
        RenewalStatus::AutoRenewal,
        &History::default(),
        now,
    );
    assert!(d.auto_renew_too_late);
    assert!(d.renew.is_none());
    assert!(
        d.reason.contains("auto-renew cannot renew it in time"),
        "{}",
        d.reason
    );

    // A day earlier an attempt is still ahead (03-11 08:00 UTC+8): not flagged.
    let d = run(
        &[auto_policy(false)],
        &i,
        RenewalStatus::AutoRenewal,
        &History::default(),
        "2026-03-10T02:00Z",
    );
    assert!(!d.auto_renew_too_late, "{}", d.reason);
}
