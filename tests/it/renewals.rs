//! Money-safe execution against the emulator, in process with a shared virtual clock: every
//! test asserts the emulator's order list. Each design invariant has a test here (the invariants
//! table in docs/how-it-works.md names them).

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use ecs_emulator::settings::InstanceSpec;
use ecs_emulator::{FaultKind, FaultSpec};
use ecs_renewd::ledger::Ledger;
use ecs_wire::Action;
use ecs_wire::clock::Clock;
use ecs_wire::types::{ChargeType, RenewalStatus};
use support::{Harness, harness_fleet, instance_spec};

const NOW: &str = "2026-03-10T04:00:00Z";
const RENEW_ALL: &str =
    "[[policies]]\nname = \"renew-all\"\naction = \"renew\"\nrenew_before = \"7d\"\n";

/// The balance looked at for a top-up at most once a minute while a renewal is held for funds
/// (the default is 15 minutes), so a test sees the top-up in its next pass.
const TOP_UP_EVERY_MINUTE: &str = "[funds]\ntop_up_check_interval = \"1m\"\n";

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

fn due_fleet(balance: f64) -> ecs_emulator::EmulatorConfig {
    harness_fleet(
        NOW,
        balance,
        vec![instance_spec("i-due", "2026-03-13T16:00Z")],
    )
}

#[tokio::test]
async fn a_renewal_is_charged_once_verified_and_recorded_as_the_cloud_says() {
    let h = Harness::start(due_fleet(1000.0), RENEW_ALL).await;
    let summary = h.pass().await;
    assert_eq!(
        (summary.renewed, summary.verified, summary.result.as_str()),
        (1, 1, "ok"),
        "{summary:?}"
    );
    let orders = h.emulator.orders();
    assert_eq!(orders.len(), 1);
    let records = h.engine.ledger.money_records(Some("i-due")).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, "verified");
    assert_eq!(
        records[0].order_id.as_deref(),
        Some(orders[0].order_id.as_str())
    );
    assert_eq!(records[0].client_token, orders[0].client_token);
    assert_eq!(records[0].new_expiry, Some(orders[0].new_expiry));
    let again = h.pass().await;
    assert_eq!(again.renewed, 0, "the next pass sees the new expiry");
    assert_eq!(h.emulator.orders().len(), 1);
    assert_eq!(h.renew_calls(), 1);
}

#[tokio::test]
async fn invariant_1_the_intent_is_durable_before_the_request_arrives() {
    let h = Arc::new(Harness::start(due_fleet(1000.0), RENEW_ALL).await);
    h.emulator.add_fault(FaultSpec::hold(Action::RenewInstance));
    let running = tokio::spawn({
        let h = h.clone();
        async move { h.pass().await }
    });
    assert!(h.emulator.wait_for_held(1, Duration::from_secs(20)).await);
    // The request is held in the emulator, unprocessed: another reader already sees the intent.
    let reader = Ledger::open_read_only(h.state.path()).unwrap().unwrap();
    let records = reader.money_records(Some("i-due")).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, "sent");
    assert!(h.emulator.orders().is_empty());
    h.emulator.release_held();
    running.await.unwrap();
    assert_eq!(
        h.emulator.orders()[0].client_token,
        records[0].client_token,
        "the request carried the intent's token"
    );
}

#[tokio::test]
async fn invariant_1_a_failed_ledger_write_sends_nothing() {
    let h = Harness::start(due_fleet(1000.0), RENEW_ALL).await;
    // Inject a write error on the intent insert (as a full disk would cause).
    let raw = rusqlite::Connection::open(h.state.path().join("ledger.db")).unwrap();
    raw.execute_batch("CREATE TRIGGER fail_intents BEFORE INSERT ON intents BEGIN SELECT RAISE(FAIL, 'database or disk is full (injected)'); END;")
        .unwrap();
    let error = h.engine.run_pass().await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("ledger write failed while recording a renewal intent"),
        "{error}"
    );
    assert_eq!(h.renew_calls(), 0, "no RenewInstance without its intent");
    assert!(h.emulator.orders().is_empty());
    raw.execute_batch("DROP TRIGGER fail_intents;").unwrap();
    assert_eq!(
        h.pass().await.renewed,
        1,
        "once the disk is writable the renewal happens"
    );
}

#[tokio::test]
async fn invariant_2_commit_then_drop_is_retried_with_the_same_token_and_charges_once() {
    let h = Harness::start(due_fleet(1000.0), RENEW_ALL).await;
    h.emulator.add_fault(FaultSpec::next(
        Action::RenewInstance,
        1,
        FaultKind::CommitThenDrop,
    ));
    let summary = h.pass().await;
    assert_eq!(summary.renewed, 1, "{summary:?}");
    assert_eq!(h.renew_calls(), 2, "the dropped answer was retried");
    let orders = h.emulator.orders();
    assert_eq!(orders.len(), 1, "still one order");
    let records = h.engine.ledger.money_records(Some("i-due")).unwrap();
    assert_eq!(
        records[0].order_id.as_deref(),
        Some(orders[0].order_id.as_str())
    );
    assert_eq!(records[0].client_token, orders[0].client_token);
}

#[tokio::test]
async fn invariant_2_an_unknown_outcome_is_resent_next_pass_with_the_same_token() {
    let mut fleet = due_fleet(1000.0);
    // The new expiry never shows while the clock stands still: the outcome stays unknown.
    fleet.settings.renew_visibility_delay = Duration::from_secs(3600);
    let h = Harness::start(fleet, &format!("#harness:max_attempts=1\n{RENEW_ALL}")).await;
    h.emulator.add_fault(FaultSpec::next(
        Action::RenewInstance,
        1,
        FaultKind::CommitThenDrop,
    ));
    let first = h.pass().await;
    assert_eq!((first.renew_unknown, first.renewed), (1, 0), "{first:?}");
    let orders = h.emulator.orders();
    assert_eq!(orders.len(), 1, "the first drop had charged");
    let token = orders[0].client_token.clone();
    h.advance(minutes(6));
    let second = h.pass().await;
    assert_eq!(second.renewed, 1, "{second:?}");
    assert_eq!(
        h.emulator.orders().len(),
        1,
        "resending with the same token did not charge again"
    );
    let records = h.engine.ledger.money_records(Some("i-due")).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].client_token, token);
    assert_eq!(
        records[0].order_id.as_deref(),
        Some(orders[0].order_id.as_str())
    );
}

#[tokio::test]
async fn invariant_3_an_expiry_that_moved_after_the_scan_is_not_renewed() {
    let h = Harness::start(due_fleet(1000.0), RENEW_ALL).await;
    let config = h.engine.config.clone();
    let histories = h.engine.ledger.histories().unwrap();
    let now = h.clock.now();
    let ecs_renewd::reconcile::Scanned { assessment, .. } = ecs_renewd::reconcile::scan_and_assess(
        &config,
        &h.engine.accounts,
        &histories,
        &Default::default(),
        ecs_renewd::reconcile::Rows::Collect,
        now,
    )
    .await;
    assert_eq!(assessment.renewals.len(), 1);
    // A person renews it between the scan and the act.
    h.emulator.with_world(|w| {
        w.renew(
            "main",
            "i-due",
            1,
            ecs_wire::types::PeriodUnit::Month,
            Some("console"),
            now,
        )
        .unwrap()
    });
    let ctx = h.engine.context(now);
    assert_eq!(ctx.day, "2026-03-10");
    let (results, error) =
        ecs_renewd::reconcile::renew_all(&ctx, &histories, assessment.renewals.clone()).await;
    assert!(error.is_none());
    match &results[0].outcome {
        ecs_renewd::reconcile::RenewOutcome::Skipped(why) => assert!(
            why.starts_with("expiry moved from 2026-03-13T16:00Z to 2026-04-13T16:00Z"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.emulator.orders().len(), 1, "only the person's order");
    assert_eq!(h.renew_calls(), 0);
}

#[tokio::test]
async fn invariant_4_an_unverified_renewal_stays_pending_and_is_never_charged_again() {
    let mut fleet = due_fleet(1000.0);
    fleet.settings.renew_visibility_delay = Duration::from_secs(600);
    let h = Harness::start(
        fleet,
        &format!("{RENEW_ALL}[retry]\nverify_timeout = \"300ms\"\nverify_interval = \"100ms\"\n"),
    )
    .await;
    let first = h.pass().await;
    assert_eq!(
        (first.renewed, first.verified, first.pending_verification),
        (1, 0, 1),
        "{first:?}"
    );
    h.advance(minutes(5));
    let second = h.pass().await;
    assert_eq!(
        (second.renewed, second.pending_verification),
        (0, 1),
        "{second:?}"
    );
    assert_eq!(
        h.renew_calls(),
        1,
        "pending verification is never re-charged"
    );
    h.advance(minutes(6));
    let third = h.pass().await;
    assert_eq!((third.renewed, third.verified), (0, 1), "{third:?}");
    assert_eq!(h.emulator.orders().len(), 1);
    assert_eq!(
        h.engine.ledger.money_records(Some("i-due")).unwrap()[0].status,
        "verified"
    );
}

#[tokio::test]
async fn invariant_5_a_second_writer_is_refused() {
    let h = Harness::start(due_fleet(1000.0), RENEW_ALL).await;
    let error = Ledger::open(h.state.path()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("another ecs-renewd already uses the state directory"),
        "{error}"
    );
}

#[tokio::test]
async fn invariant_6_instances_outside_policy_are_never_renewed() {
    let soon = "2026-03-12T16:00Z";
    let fleet = harness_fleet(
        NOW,
        1000.0,
        vec![
            InstanceSpec {
                tags: [("env".to_string(), "prod".to_string())].into(),
                ..instance_spec("i-prod", soon)
            },
            instance_spec("i-unmatched", soon),
            InstanceSpec {
                tags: [("env".to_string(), "prod".to_string())].into(),
                renewal_status: RenewalStatus::NotRenewal,
                ..instance_spec("i-notrenewal", soon)
            },
            InstanceSpec {
                tags: [
                    ("env".to_string(), "prod".to_string()),
                    ("ecs-renewd:skip".to_string(), String::new()),
                ]
                .into(),
                ..instance_spec("i-skiptag", soon)
            },
            InstanceSpec {
                tags: [("env".to_string(), "prod".to_string())].into(),
                charge_type: ChargeType::PostPaid,
                ..instance_spec("i-postpaid", soon)
            },
        ],
    );
    let policy = "[[policies]]\nname = \"prod\"\naction = \"renew\"\n[policies.match]\ntags = { env = \"prod\" }\n";
    let h = Harness::start(fleet, policy).await;
    h.pass().await;
    let renewed: Vec<String> = h
        .emulator
        .orders()
        .into_iter()
        .map(|o| o.instance_id)
        .collect();
    assert_eq!(renewed, ["i-prod"]);
    let status = h.engine.ledger.status_rows().unwrap();
    let state = |id: &str| {
        status
            .iter()
            .find(|r| r.instance_id == id)
            .map(|r| r.state.as_str())
    };
    assert_eq!(
        state("i-unmatched"),
        Some("ok"),
        "unmatched: observed, alerts still apply"
    );
    assert_eq!(state("i-notrenewal"), Some("excluded"));
    assert_eq!(state("i-skiptag"), Some("excluded"));
    assert_eq!(
        state("i-postpaid"),
        None,
        "PostPaid instances are not in the PrePaid scan"
    );
}

#[tokio::test]
async fn invariant_7_every_instance_in_the_window_has_an_expiry_gauge_a_state_and_failures_count() {
    let fleet = harness_fleet(
        NOW,
        0.0,
        vec![
            instance_spec("i-poor", "2026-03-12T16:00Z"),
            instance_spec("i-later", "2026-03-30T16:00Z"),
        ],
    );
    let h = Harness::start(fleet, RENEW_ALL).await;
    h.pass().await;
    let text = h.engine.metrics.render(&h.engine.ledger);
    for id in ["i-poor", "i-later"] {
        assert!(text.contains(&format!("ecs_renewd_instance_expiration_timestamp_seconds{{account=\"main\",region=\"cn-hangzhou\",instance_id=\"{id}\",policy=\"renew-all\"}}")), "{text}");
    }
    assert!(text.contains("ecs_renewd_instance_state{account=\"main\",region=\"cn-hangzhou\",instance_id=\"i-poor\",policy=\"renew-all\",state=\"backoff\"} 1"), "{text}");
    assert!(text.contains("ecs_renewd_instance_state{account=\"main\",region=\"cn-hangzhou\",instance_id=\"i-later\",policy=\"renew-all\",state=\"ok\"} 1"), "{text}");
    assert!(text.contains("ecs_renewd_instance_failed_attempts{account=\"main\",region=\"cn-hangzhou\",instance_id=\"i-poor\",policy=\"renew-all\"} 1"), "{text}");
    assert!(
        text.contains("ecs_renewd_renewals_total{class=\"funds\",result=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ecs_renewd_source_up{account=\"main\",region=\"cn-hangzhou\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn insufficient_balance_backs_off_on_schedule_then_renews_after_a_top_up() {
    let h = Harness::start(due_fleet(0.0), &format!("{RENEW_ALL}{TOP_UP_EVERY_MINUTE}")).await;
    let first = h.pass().await;
    assert_eq!(first.renew_failed, 1, "{first:?}");
    let history = h.engine.ledger.histories().unwrap();
    let record = ecs_renewd::reconcile::HistorySource::history(&history, "i-due");
    assert_eq!(record.failed_attempts, 1);
    let first_retry = record.retry_at.unwrap();
    assert_eq!(
        first_retry,
        h.clock.now() + chrono::Duration::minutes(5),
        "5 minutes after the first failure"
    );
    // A pass before the retry is due makes no attempt.
    h.advance(minutes(2));
    assert_eq!(h.pass().await.renew_failed, 0);
    assert_eq!(h.renew_calls(), 1);
    // At the retry: the second failure, then 10 minutes.
    h.advance(minutes(3));
    let second = h.pass().await;
    assert_eq!(second.renew_failed, 1);
    assert_eq!(h.renew_calls(), 2);
    let record = ecs_renewd::reconcile::HistorySource::history(
        &h.engine.ledger.histories().unwrap(),
        "i-due",
    );
    assert_eq!(
        (record.failed_attempts, record.retry_at),
        (2, Some(h.clock.now() + chrono::Duration::minutes(10)))
    );
    assert_eq!(
        second.next_retry_at, record.retry_at,
        "the daemon wakes for it"
    );
    // A pass before the retry time without a top-up makes no attempt.
    h.advance(minutes(4));
    h.pass().await;
    assert_eq!(h.renew_calls(), 2, "no charge attempt beyond the schedule");
    // Top up: the next pass sees the balance cover the held renewal and retries it at once,
    // five minutes before its backoff would have ended (issue 17).
    h.emulator
        .control()
        .set_balance("main", 500.0)
        .await
        .unwrap();
    h.advance(minutes(1));
    let renewed = h.pass().await;
    assert_eq!((renewed.renewed, renewed.verified), (1, 1), "{renewed:?}");
    assert_eq!(renewed.top_ups[0].retried, vec!["i-due".to_string()]);
    assert_eq!(h.renew_calls(), 3);
    assert_eq!(h.emulator.orders().len(), 1);
    // Each refusal was an error answer (no order exists), so each retry took a fresh token
    // derived from the cycle and its refusals: three intents, the last one verified.
    let records = h.engine.ledger.money_records(Some("i-due")).unwrap();
    let summary: Vec<(u32, &str)> = records
        .iter()
        .map(|r| (r.attempts, r.status.as_str()))
        .collect();
    assert_eq!(
        summary,
        [(1, "failed"), (1, "failed"), (1, "verified")],
        "{records:#?}"
    );
    let mut tokens: Vec<&str> = records
        .iter()
        .filter_map(|r| r.client_token.as_deref())
        .collect();
    tokens.dedup();
    assert_eq!(tokens.len(), 3, "three tokens");
}

/// Alibaba's idempotence guide is silent on whether a ClientToken whose request was refused is
/// remembered with its failure (docs/ecs-api.md §6, UNCERTAIN). Under that reading a held
/// renewal resent with the same token after a top-up would fail for ever and the instance
/// would lapse; after a definite refusal (an error answer: no order exists) the next attempt
/// takes a fresh token derived from the intent's cycle and its refusals.
#[tokio::test]
async fn a_renewal_refused_for_funds_renews_after_a_top_up_when_the_provider_replays_failed_tokens()
{
    let mut fleet = due_fleet(0.0);
    fleet.settings.failed_tokens = ecs_emulator::settings::FailedTokens::ReplayFailure;
    let h = Harness::start(fleet, &format!("{RENEW_ALL}{TOP_UP_EVERY_MINUTE}")).await;
    assert_eq!(h.pass().await.renew_failed, 1);
    h.emulator
        .control()
        .set_balance("main", 500.0)
        .await
        .unwrap();
    h.advance(minutes(1));
    let renewed = h.pass().await;
    assert_eq!((renewed.renewed, renewed.verified), (1, 1), "{renewed:?}");
    let orders = h.emulator.orders();
    assert_eq!(orders.len(), 1, "one order");
    let records = h.engine.ledger.money_records(Some("i-due")).unwrap();
    let tokens: Vec<&str> = records
        .iter()
        .filter_map(|r| r.client_token.as_deref())
        .collect();
    assert_eq!(tokens.len(), 2, "{records:#?}");
    assert_ne!(tokens[0], tokens[1], "a fresh token after the refusal");
    assert_eq!(orders[0].client_token.as_deref(), Some(tokens[1]));
}

#[tokio::test]
async fn a_missed_provider_deduction_is_renewed_by_the_fallback_once() {
    let fleet = harness_fleet(
        NOW,
        1000.0,
        vec![InstanceSpec {
            renewal_status: RenewalStatus::AutoRenewal,
            deduction_fails: true,
            ..instance_spec("i-auto", "2026-03-20T16:00Z")
        }],
    );
    let policy = "[[policies]]\nname = \"auto\"\naction = \"auto-renew\"\nfallback_renew = true\n";
    let h = Harness::start(fleet, policy).await;
    assert_eq!(
        h.pass().await.renewed,
        0,
        "before the first deduction nothing happens"
    );
    // First deduction 03-12 08:00 UTC+8 fails; fallback point 03-13 18:00 UTC+8 = 03-13T10:00Z.
    h.clock
        .set(ecs_wire::time::parse("2026-03-13T09:00:00Z").unwrap());
    let before = h.pass().await;
    assert_eq!(before.renewed, 0);
    assert!(
        h.engine
            .metrics
            .render(&h.engine.ledger)
            .contains("ecs_renewd_instance_deduction_overdue"),
        "overdue shows before the fallback acts"
    );
    h.clock
        .set(ecs_wire::time::parse("2026-03-13T10:05:00Z").unwrap());
    assert_eq!(h.pass().await.renewed, 1);
    h.advance(minutes(30));
    assert_eq!(h.pass().await.renewed, 0);
    let orders = h.emulator.orders();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].kind, "renew");
    assert!(h.emulator.with_world(|w| w.failed_deductions) >= 2);
}

#[tokio::test]
async fn a_spend_limit_trip_charges_nothing_it_covers() {
    let fleet = harness_fleet(
        NOW,
        1000.0,
        vec![
            instance_spec("i-a", "2026-03-12T16:00Z"),
            instance_spec("i-b", "2026-03-13T16:00Z"),
        ],
    );
    let h = Harness::start(
        fleet,
        &format!("[limits]\nmax_spend_per_run = {{ CNY = 150.0 }}\n{RENEW_ALL}"),
    )
    .await;
    let summary = h.pass().await;
    assert_eq!(
        (summary.renewed, summary.held, summary.result.as_str()),
        (0, 2, "partial"),
        "{summary:?}"
    );
    assert_eq!(
        summary
            .trips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["spend_per_run: 200.00 CNY in one pass, limit 150.00 CNY"]
    );
    assert!(h.emulator.orders().is_empty());
    assert_eq!(h.renew_calls(), 0);
    assert!(
        h.engine
            .metrics
            .render(&h.engine.ledger)
            .contains("ecs_renewd_limit_trips_total{limit=\"spend_per_run\"} 1")
    );
}

#[tokio::test]
async fn dry_run_sends_no_mutating_call() {
    let fleet = harness_fleet(
        NOW,
        1000.0,
        vec![
            instance_spec("i-due", "2026-03-12T16:00Z"),
            InstanceSpec {
                tags: [("team".to_string(), "auto".to_string())].into(),
                ..instance_spec("i-auto", "2026-03-25T16:00Z")
            },
        ],
    );
    let policies = "#harness:dry_run\n[[policies]]\nname = \"auto\"\naction = \"auto-renew\"\n[policies.match]\ntags = { team = \"auto\" }\n[[policies]]\nname = \"rest\"\naction = \"renew\"\n";
    let h = Harness::start(fleet, policies).await;
    let summary = h.pass().await;
    assert_eq!(
        (summary.dry_run_renewals, summary.renewed),
        (1, 0),
        "{summary:?}"
    );
    assert_eq!(h.emulator.calls().mutating(), 0);
    assert!(h.emulator.orders().is_empty());
    assert!(
        h.engine.ledger.money_records(None).unwrap().is_empty(),
        "dry run writes no money records"
    );
}

#[tokio::test]
async fn auto_renew_drift_is_corrected_in_batches_and_checked_next_pass() {
    let instances = (0..150)
        .map(|n| InstanceSpec {
            tags: [("team".to_string(), "auto".to_string())].into(),
            ..instance_spec(&format!("i-{n:03}"), "2026-03-28T16:00Z")
        })
        .collect();
    let h = Harness::start(
        harness_fleet(NOW, 1000.0, instances),
        "[[policies]]\nname = \"auto\"\naction = \"auto-renew\"\nduration = 3\n",
    )
    .await;
    let first = h.pass().await;
    assert_eq!(first.auto_renew_changed, 150, "{first:?}");
    assert_eq!(
        h.emulator
            .calls()
            .count(Action::ModifyInstanceAutoRenewAttribute),
        2,
        "≤100 per call"
    );
    let second = h.pass().await;
    assert_eq!(second.auto_renew_changed, 0);
    let records = h.engine.ledger.money_records(Some("i-000")).unwrap();
    assert_eq!(
        (
            records[0].kind.as_str(),
            records[0].status.as_str(),
            records[0].request.as_str()
        ),
        ("auto_renew", "verified", "AutoRenewal 3 Month")
    );
}

#[tokio::test]
async fn permission_errors_stop_retrying_and_are_surfaced() {
    let h = Harness::start(due_fleet(1000.0), RENEW_ALL).await;
    h.emulator.add_fault(FaultSpec::fail_next(
        Action::RenewInstance,
        5,
        "Forbidden.RAM",
        403,
    ));
    let summary = h.pass().await;
    assert_eq!(summary.renew_failed, 1);
    assert_eq!(h.renew_calls(), 1, "no in-pass retry");
    h.advance(minutes(60));
    h.pass().await;
    assert_eq!(h.renew_calls(), 1, "no retry an hour later either");
    let status = h.engine.ledger.status_rows().unwrap();
    assert_eq!(status[0].state.as_str(), "failed");
    assert!(
        h.engine
            .metrics
            .render(&h.engine.ledger)
            .contains("ecs_renewd_renewals_total{class=\"permission\",result=\"failed\"} 1")
    );
}
