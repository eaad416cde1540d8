use super::*;
use crate::cloud::ecs::AutoRenewTarget;
use crate::cloud::types::RenewalStatus;

fn t(text: &str) -> DateTime<Utc> {
    time::parse(text).unwrap()
}

fn intent(token: &str) -> NewIntent {
    NewIntent {
        account: "main".into(),
        region: "cn-hangzhou".into(),
        instance_id: "i-1".into(),
        old_expiry: t("2026-03-15T16:00:00Z"),
        period: 1,
        unit: PeriodUnit::Month,
        client_token: token.into(),
        policy: Some("prod".into()),
        why: "due".into(),
        price: Some((10_000, "CNY".into())),
    }
}

#[test]
fn a_second_writer_on_the_same_state_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ledger::open(dir.path()).unwrap();
    let error = Ledger::open(dir.path()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("another ecs-renewd already uses the state directory"),
        "{error}"
    );
    drop(first);
    Ledger::open(dir.path()).unwrap();
}

#[test]
fn a_ledger_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = Connection::open(dir.path().join(LEDGER_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let error = Ledger::open(dir.path()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "ledger {} has schema version 99, newer than this ecs-renewd supports (1): upgrade ecs-renewd, or restore a backup made by this version",
            dir.path().join(LEDGER_FILE).display()
        )
    );
    assert!(matches!(
        Ledger::open_read_only(dir.path()),
        Err(LedgerError::FutureVersion { .. })
    ));
}

#[test]
fn a_corrupted_ledger_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(LEDGER_FILE),
        b"this is not sqlite, just garbage that is long enough to look like a header.....",
    )
    .unwrap();
    let error = Ledger::open(dir.path()).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("cannot be opened: file is not a database"),
        "{text}"
    );
    assert!(text.contains("restore it from a backup"), "{text}");
}

#[test]
fn an_intent_is_prepared_once_per_token_and_its_order_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let now = t("2026-03-10T00:00:00Z");
    let id = ledger.prepare(&intent("tok-1"), now).unwrap();
    assert_eq!(
        ledger.prepare(&intent("tok-1"), now).unwrap(),
        id,
        "the same token is the same intent"
    );
    let h = ledger.histories().unwrap().history("main", "i-1");
    assert_eq!(h.intent.unwrap().status, IntentStatus::Prepared);
    let attempt = ledger.begin_attempt(id, now).unwrap();
    assert_eq!(
        ledger
            .histories()
            .unwrap()
            .history("main", "i-1")
            .intent
            .unwrap()
            .status,
        IntentStatus::Unknown
    );
    ledger
        .finish_ordered(id, attempt, "O-1", "R-1", "2026-03-10", now)
        .unwrap();
    // A replayed token returns the same order: counted once.
    let again = ledger.begin_attempt(id, now).unwrap();
    ledger
        .finish_ordered(id, again, "O-1", "R-2", "2026-03-10", now)
        .unwrap();
    let (renewals, spend) = ledger.day_totals("2026-03-10").unwrap();
    assert_eq!((renewals, spend.get("CNY").copied()), (1, Some(10_000)));
    let h = ledger.histories().unwrap().history("main", "i-1");
    assert_eq!(
        h.intent.unwrap().status,
        IntentStatus::Ordered {
            order_id: "O-1".into()
        }
    );
    assert_eq!(
        ledger.settle(id, t("2026-04-15T16:00:00Z"), now).unwrap(),
        "verified"
    );
    assert!(
        ledger
            .histories()
            .unwrap()
            .history("main", "i-1")
            .intent
            .is_none()
    );
    let records = ledger.money_records(Some("i-1")).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (
            records[0].status.as_str(),
            records[0].order_id.as_deref(),
            records[0].attempts
        ),
        ("verified", Some("O-1"), 2)
    );
}

#[test]
fn failures_count_up_and_set_the_retry_time() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let now = t("2026-03-10T00:00:00Z");
    let id = ledger.prepare(&intent("tok-2"), now).unwrap();
    let failure = FailureRecord {
        code: "InvalidAccountStatus.NotEnoughBalance".into(),
        class: ErrorClass::Funds,
        message: "Your account does not have enough balance.".into(),
        request_id: Some("R".into()),
    };
    for n in 1..=3u32 {
        let attempt = ledger.begin_attempt(id, now).unwrap();
        let failures = ledger
            .finish_failed(id, attempt, &failure, false, t("2026-03-10T00:05:00Z"), now)
            .unwrap();
        assert_eq!(failures, n);
    }
    let h = ledger.histories().unwrap().history("main", "i-1");
    assert_eq!(h.failed_attempts, 3);
    assert_eq!(h.retry_at, Some(t("2026-03-10T00:05:00Z")));
    assert!(matches!(
        h.intent.unwrap().status,
        IntentStatus::Failed {
            class: ErrorClass::Funds,
            ..
        }
    ));
    assert_eq!(
        ledger.next_retry_at().unwrap(),
        Some(t("2026-03-10T00:05:00Z"))
    );
}

#[test]
fn readers_see_what_the_writer_committed() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Ledger::open_read_only(dir.path()).unwrap().is_none());
    let ledger = Ledger::open(dir.path()).unwrap();
    let now = t("2026-03-10T00:00:00Z");
    ledger.prepare(&intent("tok-3"), now).unwrap();
    let target = AutoRenewTarget {
        status: RenewalStatus::AutoRenewal,
        duration: 1,
        unit: PeriodUnit::Month,
    };
    let change = AutoRenewRecord {
        account: "main",
        region: "cn-hangzhou",
        target: &target,
        result: "ok",
        request_id: Some("R"),
        error: None,
    };
    ledger
        .record_auto_renew_batch(&change, &["i-1".to_string()], now)
        .unwrap();
    let reader = Ledger::open_read_only(dir.path()).unwrap().unwrap();
    let records = reader.money_records(None).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].request, "AutoRenewal 1 Month");
    assert!(
        reader.prepare(&intent("tok-4"), now).is_err(),
        "a reader cannot write"
    );
}

#[test]
fn an_intent_and_its_attempt_are_written_together_and_a_resend_keeps_the_intent() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let now = t("2026-03-10T00:00:00Z");
    let (id, first) = ledger.prepare_and_begin(&intent("tok-5"), now).unwrap();
    let h = ledger.histories().unwrap().history("main", "i-1");
    assert_eq!(
        h.intent.unwrap().status,
        IntentStatus::Unknown,
        "sent as soon as it is written: a crash now leaves an intent to verify, not to forget"
    );
    let (again, second) = ledger.prepare_and_begin(&intent("tok-5"), now).unwrap();
    assert_eq!(again, id, "the same token is the same intent");
    assert_ne!(second, first, "each send is its own attempt");
    let records = ledger.money_records(None).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].attempts, 2);

    let reader = Ledger::open_read_only(dir.path()).unwrap().unwrap();
    assert!(reader.prepare_and_begin(&intent("tok-6"), now).is_err());
    assert_eq!(
        ledger.money_records(None).unwrap().len(),
        1,
        "a failed write keeps neither the intent nor the attempt"
    );
}

#[test]
fn a_round_of_settlements_is_all_or_nothing_and_answers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let now = t("2026-03-10T00:00:00Z");
    let other = |token: &str, instance: &str| NewIntent {
        instance_id: instance.into(),
        ..intent(token)
    };
    // An ordered one, a failed one with a backoff, and one never sent.
    let (ordered, attempt) = ledger
        .prepare_and_begin(&other("tok-a", "i-a"), now)
        .unwrap();
    ledger
        .finish_ordered(ordered, attempt, "O-a", "R-a", "2026-03-10", now)
        .unwrap();
    let (failed, attempt) = ledger
        .prepare_and_begin(&other("tok-b", "i-b"), now)
        .unwrap();
    let failure = FailureRecord {
        code: "InvalidAccountStatus.NotEnoughBalance".into(),
        class: ErrorClass::Funds,
        message: "no balance".into(),
        request_id: None,
    };
    ledger
        .finish_failed(failed, attempt, &failure, false, now, now)
        .unwrap();
    let prepared = ledger.prepare(&other("tok-c", "i-c"), now).unwrap();
    let expiry = t("2026-04-15T16:00:00Z");

    // One id that does not exist spoils the round: nothing of it is kept.
    let error = ledger
        .settle_all(&[(ordered, expiry), (9_999, expiry)], now)
        .unwrap_err();
    assert!(error.to_string().contains("settling a renewal"), "{error}");
    assert_eq!(ledger.histories().unwrap().open.len(), 3);
    assert_eq!(ledger.next_retry_at().unwrap(), Some(now));

    let outcomes = ledger
        .settle_all(
            &[(prepared, expiry), (ordered, expiry), (failed, expiry)],
            now,
        )
        .unwrap();
    assert_eq!(outcomes, vec!["superseded", "verified", "superseded"]);
    assert!(ledger.histories().unwrap().open.is_empty());
    assert_eq!(ledger.next_retry_at().unwrap(), None, "backoff cleared");
    let records = ledger.money_records(Some("i-a")).unwrap();
    assert_eq!(
        (records[0].status.as_str(), records[0].new_expiry),
        ("verified", Some(expiry))
    );
}
