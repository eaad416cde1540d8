use super::sql::args;
use super::*;
use crate::cloud::ecs::AutoRenewTarget;
use crate::cloud::error::ErrorClass;
use crate::cloud::time;
use crate::cloud::types::{PeriodUnit, RenewalStatus};
use crate::money::Money;
use crate::policy::{HistorySource, IntentStatus};

fn t(text: &str) -> DateTime<Utc> {
    time::parse(text).unwrap()
}

const DAY: &str = "2026-03-10";

/// The real PostgreSQL the integration tests use (started here when `.ci/run` did not). Only
/// its shared server is used here; the clusters a test stops and starts are the failover
/// tests'.
#[allow(dead_code)]
#[path = "../../tests/it/support/postgres.rs"]
mod test_postgres;

/// Where a test's ledger lives: every test below runs on both engines.
enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Place {
    /// The ledger there, opened (again) as a process would.
    fn open(&self) -> Ledger {
        match self {
            Place::Sqlite(dir) => Ledger::open(dir.path()).unwrap(),
            Place::Postgres(url) => Ledger::open_postgres(url, Default::default(), 1).unwrap(),
        }
    }
}

/// Runs `test` on a fresh SQLite ledger, then on a fresh PostgreSQL one.
fn on_both(test: impl Fn(&Place)) {
    test(&Place::Sqlite(tempfile::tempdir().unwrap()));
    let url = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test_postgres::fresh_database());
    test(&Place::Postgres(url));
}

fn settle(intent_id: i64, new_expiry: DateTime<Utc>) -> Settle {
    Settle {
        intent_id,
        new_expiry,
    }
}

fn funds() -> FailureRecord {
    FailureRecord {
        code: "InvalidAccountStatus.NotEnoughBalance".into(),
        class: ErrorClass::Funds,
        message: "Your account does not have enough balance.".into(),
        request_id: Some("R".into()),
    }
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
        price: Some(Money {
            cents: 10_000,
            currency: "CNY".into(),
        }),
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
            "ledger {} has schema version 99, newer than this ecs-renewd supports (2): upgrade ecs-renewd, or restore a backup made by this version",
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
    on_both(|place| {
        let ledger = place.open();
        let now = t("2026-03-10T00:00:00Z");
        let id = ledger.prepare(&intent("tok-1"), now).unwrap().id;
        assert_eq!(
            ledger.prepare(&intent("tok-1"), now).unwrap().id,
            id,
            "the same token is the same intent"
        );
        let h = ledger.histories().unwrap().history("i-1");
        assert_eq!(h.intent.unwrap().status, IntentStatus::Prepared);
        let attempt = ledger.begin_attempt(id, now).unwrap();
        assert_eq!(
            ledger
                .histories()
                .unwrap()
                .history("i-1")
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
        let totals = ledger.day_totals("2026-03-10").unwrap();
        assert_eq!(
            (totals.renewals, totals.spend.get("CNY").copied()),
            (1, Some(10_000))
        );
        let h = ledger.histories().unwrap().history("i-1");
        assert_eq!(
            h.intent.unwrap().status,
            IntentStatus::Ordered {
                order_id: "O-1".into()
            }
        );
        assert_eq!(
            ledger
                .settle(id, t("2026-04-15T16:00:00Z"), DAY, now)
                .unwrap(),
            Settlement::Verified
        );
        assert!(ledger.histories().unwrap().history("i-1").intent.is_none());
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
    });
}

#[test]
fn failures_count_up_and_set_the_retry_time() {
    on_both(|place| {
        let ledger = place.open();
        let now = t("2026-03-10T00:00:00Z");
        let id = ledger.prepare(&intent("tok-2"), now).unwrap().id;
        for n in 1..=3u32 {
            let attempt = ledger.begin_attempt(id, now).unwrap();
            let failures = ledger
                .finish_failed(
                    id,
                    attempt,
                    &funds(),
                    false,
                    t("2026-03-10T00:05:00Z"),
                    DAY,
                    now,
                )
                .unwrap();
            assert_eq!(failures, n);
        }
        let h = ledger.histories().unwrap().history("i-1");
        assert_eq!(h.failed_attempts, 3);
        assert_eq!(h.retry_at, Some(t("2026-03-10T00:05:00Z")));
        let view = h.intent.unwrap();
        assert!(matches!(
            view.status,
            IntentStatus::Failed {
                class: ErrorClass::Funds,
                ..
            }
        ));
        assert!(!view.maybe_charged, "refusals charged nothing");
        assert_eq!(
            ledger.day_totals(DAY).unwrap(),
            DayTotals::default(),
            "refusals are not counted"
        );
    });
}

#[test]
fn an_unknown_outcome_is_counted_once_and_keeps_its_period_whatever_comes_after() {
    on_both(|place| {
        let ledger = place.open();
        let now = t("2026-03-10T00:00:00Z");
        let timeout = FailureRecord {
            code: "Transport.Timeout".into(),
            class: ErrorClass::Transient,
            message: "timed out".into(),
            request_id: None,
        };
        let (stored, attempt) = ledger.prepare_and_begin(&intent("tok-u"), now).unwrap();
        ledger
            .finish_failed(stored.id, attempt, &timeout, true, now, DAY, now)
            .unwrap();
        // The next attempt is refused outright: the intent may still have charged.
        let two_months = NewIntent {
            period: 2,
            ..intent("tok-u")
        };
        let (again, attempt) = ledger.prepare_and_begin(&two_months, now).unwrap();
        assert_eq!(
            (again.id, again.period),
            (stored.id, 1),
            "a maybe-charged intent keeps its period"
        );
        ledger
            .finish_failed(again.id, attempt, &funds(), false, now, DAY, now)
            .unwrap();
        let view = ledger.histories().unwrap().history("i-1").intent.unwrap();
        assert!(view.maybe_charged);
        assert_eq!(view.period, 1);
        let totals = ledger.day_totals(DAY).unwrap();
        assert_eq!(
            (totals.renewals, totals.spend.get("CNY").copied()),
            (1, Some(10_000)),
            "counted once, at its price"
        );
        // A settlement of the same intent counts nothing more.
        ledger
            .settle(stored.id, t("2026-04-15T16:00:00Z"), DAY, now)
            .unwrap();
        assert_eq!(ledger.day_totals(DAY).unwrap().renewals, 1);
    });
}

#[test]
fn an_intent_refused_outright_takes_a_new_period_with_the_same_token() {
    on_both(|place| {
        let ledger = place.open();
        let now = t("2026-03-10T00:00:00Z");
        let (stored, attempt) = ledger.prepare_and_begin(&intent("tok-r"), now).unwrap();
        ledger
            .finish_failed(stored.id, attempt, &funds(), false, now, DAY, now)
            .unwrap();
        let (again, _) = ledger
            .prepare_and_begin(
                &NewIntent {
                    period: 2,
                    price: None,
                    ..intent("tok-r")
                },
                now,
            )
            .unwrap();
        assert_eq!((again.id, again.period), (stored.id, 2));
        let records = ledger.money_records(None).unwrap();
        assert_eq!((records.len(), records[0].request.as_str()), (1, "2 Month"));
        assert_eq!(
            records[0].price, None,
            "the old quote was for the old period"
        );
    });
}

#[test]
fn an_attempt_left_out_by_a_stopped_process_is_unknown_and_counted() {
    on_both(|place| {
        let now = t("2026-03-10T00:00:00Z");
        {
            let ledger = place.open();
            ledger.prepare_and_begin(&intent("tok-k"), now).unwrap();
            // The process stops here.
        }
        let ledger = place.open();
        let before = ledger.day_totals(DAY).unwrap();
        assert_eq!(
            (before.renewals, before.spend.get("CNY").copied()),
            (1, Some(10_000)),
            "counted while still out, before any pass marks it"
        );
        assert_eq!(ledger.mark_interrupted(DAY, now).unwrap(), 1);
        assert_eq!(ledger.mark_interrupted(DAY, now).unwrap(), 0);
        let view = ledger.histories().unwrap().history("i-1").intent.unwrap();
        assert_eq!(
            (view.status, view.maybe_charged),
            (IntentStatus::Unknown, true)
        );
        assert_eq!(ledger.day_totals(DAY).unwrap().renewals, 1);
    });
}

#[test]
fn an_unpriced_charge_is_listed_until_its_price_is_recorded() {
    on_both(|place| {
        let ledger = place.open();
        let now = t("2026-03-10T00:00:00Z");
        let (stored, attempt) = ledger
            .prepare_and_begin(
                &NewIntent {
                    price: None,
                    ..intent("tok-p")
                },
                now,
            )
            .unwrap();
        ledger
            .finish_ordered(stored.id, attempt, "O-p", "R-p", DAY, now)
            .unwrap();
        let totals = ledger.day_totals(DAY).unwrap();
        assert_eq!(totals.renewals, 1);
        assert!(totals.spend.is_empty());
        assert_eq!(totals.unpriced, 1);
        assert_eq!(
            ledger.unpriced_charges(DAY).unwrap()[0].intent_id,
            stored.id
        );
        let price = Money {
            cents: 12_345,
            currency: "CNY".into(),
        };
        ledger.price_charge(stored.id, &price).unwrap();
        ledger.price_charge(stored.id, &price).unwrap();
        let totals = ledger.day_totals(DAY).unwrap();
        assert_eq!(totals.spend.get("CNY").copied(), Some(12_345), "once");
        assert_eq!(totals.unpriced, 0);
    });
}

#[test]
fn an_unreadable_row_is_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    let now = t("2026-03-10T00:00:00Z");
    let id = ledger.prepare(&intent("tok-x"), now).unwrap().id;
    ledger
        .conn()
        .execute(
            "UPDATE intents SET old_expiry = 'yesterday' WHERE id = ?1",
            [id],
        )
        .unwrap();
    let error = ledger.histories().unwrap_err().to_string();
    assert!(
        error.contains(&format!(
            "table intents, row {id}: column old_expiry holds \"yesterday\""
        )),
        "{error}"
    );
    let error = ledger.money_records(None).unwrap_err().to_string();
    assert!(error.contains("old_expiry"), "{error}");
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
    let ids = ["i-1".to_string()];
    let rows = ledger
        .begin_auto_renew_changes(
            &[PendingAutoRenew {
                account: "main",
                region: "cn-hangzhou",
                target: &target,
                instance_ids: &ids,
            }],
            now,
        )
        .unwrap();
    ledger
        .finish_auto_renew_changes(
            &[(
                rows[0].as_slice(),
                AutoRenewAnswer {
                    request_id: Some("R"),
                    error: None,
                },
            )],
            now,
        )
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
    let (stored, first) = ledger.prepare_and_begin(&intent("tok-5"), now).unwrap();
    let id = stored.id;
    let h = ledger.histories().unwrap().history("i-1");
    assert_eq!(
        h.intent.unwrap().status,
        IntentStatus::Unknown,
        "sent as soon as it is written: a crash now leaves an intent to verify, not to forget"
    );
    let (again, second) = ledger.prepare_and_begin(&intent("tok-5"), now).unwrap();
    assert_eq!(again.id, id, "the same token is the same intent");
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
    on_both(|place| {
        let ledger = place.open();
        let now = t("2026-03-10T00:00:00Z");
        let other = |token: &str, instance: &str| NewIntent {
            instance_id: instance.into(),
            ..intent(token)
        };
        // An ordered one, a failed one with a backoff, and one never sent.
        let (ordered, attempt) = ledger
            .prepare_and_begin(&other("tok-a", "i-a"), now)
            .unwrap();
        let ordered = ordered.id;
        ledger
            .finish_ordered(ordered, attempt, "O-a", "R-a", "2026-03-10", now)
            .unwrap();
        let (failed, attempt) = ledger
            .prepare_and_begin(&other("tok-b", "i-b"), now)
            .unwrap();
        let failed = failed.id;
        ledger
            .finish_failed(failed, attempt, &funds(), false, now, DAY, now)
            .unwrap();
        let prepared = ledger.prepare(&other("tok-c", "i-c"), now).unwrap().id;
        let backoff = |ledger: &Ledger| ledger.histories().unwrap().history("i-b").retry_at;
        let expiry = t("2026-04-15T16:00:00Z");

        // One id that does not exist spoils the round: nothing of it is kept.
        let error = ledger
            .settle_all(&[settle(ordered, expiry), settle(9_999, expiry)], DAY, now)
            .unwrap_err();
        assert!(error.to_string().contains("settling a renewal"), "{error}");
        assert_eq!(ledger.histories().unwrap().open.len(), 3);
        assert_eq!(backoff(&ledger), Some(now));

        let outcomes = ledger
            .settle_all(
                &[
                    settle(prepared, expiry),
                    settle(ordered, expiry),
                    settle(failed, expiry),
                ],
                DAY,
                now,
            )
            .unwrap();
        assert_eq!(
            outcomes,
            vec![
                Settlement::Superseded,
                Settlement::Verified,
                Settlement::Superseded
            ]
        );
        assert!(ledger.histories().unwrap().open.is_empty());
        let raw = ledger
            .read("counting backoffs", |tx| {
                tx.one("SELECT COUNT(*) FROM backoff", args![], |r| r.get::<i64>(0))
            })
            .unwrap();
        assert_eq!(raw, 0, "backoff cleared");
        let records = ledger.money_records(Some("i-a")).unwrap();
        assert_eq!(
            (records[0].status.as_str(), records[0].new_expiry),
            ("verified", Some(expiry))
        );
    });
}

#[test]
fn a_version_1_ledger_is_migrated_with_its_open_intents_and_backoff() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = Connection::open(dir.path().join(LEDGER_FILE)).unwrap();
        conn.execute_batch(migrations::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO intents (account, region, instance_id, old_expiry, period, unit, client_token, why, status, created_at, updated_at, order_id)
             VALUES ('main', 'cn-hangzhou', 'i-1', '2026-03-15T16:00:00Z', 1, 'Month', 'ern1-a', 'due', 'sent', '2026-03-10T00:00:00Z', '2026-03-10T00:00:00Z', NULL),
                    ('main', 'cn-hangzhou', 'i-2', '2026-03-15T16:00:00Z', 1, 'Month', 'ern1-b', 'due', 'ordered', '2026-03-10T00:00:00Z', '2026-03-10T00:00:00Z', 'O-2');
             INSERT INTO intents (account, region, instance_id, old_expiry, period, unit, client_token, why, status, created_at, updated_at, price_cents, currency, error_code, error_class)
             VALUES ('main', 'cn-hangzhou', 'i-4', '2026-03-15T16:00:00Z', 1, 'Month', 'ern1-c', 'due', 'failed', '2026-03-10T00:00:00Z', '2026-03-10T00:00:00Z', 5000, 'CNY', 'InvalidAccountStatus.NotEnoughBalance', 'funds');
             INSERT INTO attempts (intent_id, started_at, finished_at, outcome) VALUES (3, '2026-03-10T00:00:00Z', '2026-03-10T00:00:01Z', 'unknown'),
                    (3, '2026-03-10T00:05:00Z', '2026-03-10T00:05:01Z', 'failed');
             INSERT INTO backoff (account, instance_id, old_expiry, failures, retry_at, last_class, last_code)
             VALUES ('main', 'i-1', '2026-03-15T16:00:00Z', 2, '2026-03-10T01:00:00Z', 'transient', 'Transport.Timeout'),
                    ('other', 'i-1', '2026-03-15T16:00:00Z', 1, '2026-03-10T00:30:00Z', 'transient', 'Transport.Timeout');
             INSERT INTO auto_renew_changes (at, account, region, instance_id, status, duration, unit, result)
             VALUES ('2026-03-10T00:00:00Z', 'main', 'cn-hangzhou', 'i-3', 'AutoRenewal', 1, 'Month', 'ok');",
        )
        .unwrap();
    }
    let ledger = Ledger::open(dir.path()).unwrap();
    let histories = ledger.histories().unwrap();
    let h = histories.history("i-1");
    let view = h.intent.unwrap();
    assert!(view.maybe_charged, "a sent intent may have charged");
    assert_eq!(
        (h.failed_attempts, h.retry_at),
        (2, Some(t("2026-03-10T01:00:00Z"))),
        "the latest backoff of the instance is kept"
    );
    assert_eq!(ledger.unchecked_auto_renew_changes().unwrap().len(), 1);
    // A refusal recorded over an unanswered attempt: it may have charged, and it is counted.
    let refused = histories.history("i-4").intent.unwrap();
    assert!(refused.maybe_charged);
    let totals = ledger.day_totals("2026-03-10").unwrap();
    assert_eq!(
        (totals.renewals, totals.spend.get("CNY").copied()),
        (2, Some(5_000)),
        "i-1 (sent, unpriced) and i-4 (priced) counted once each"
    );
}

#[test]
fn an_attempt_not_sent_leaves_the_intent_where_the_earlier_attempts_left_it() {
    on_both(|place| {
        let ledger = place.open();
        let now = t("2026-03-10T00:00:00Z");
        let (stored, attempt) = ledger.prepare_and_begin(&intent("tok-n"), now).unwrap();
        ledger
            .finish_failed(stored.id, attempt, &funds(), false, now, DAY, now)
            .unwrap();
        let (_, attempt) = ledger.prepare_and_begin(&intent("tok-n"), now).unwrap();
        ledger.finish_not_sent(stored.id, attempt, now).unwrap();
        let view = ledger.histories().unwrap().history("i-1").intent.unwrap();
        assert!(
            matches!(
                view.status,
                IntentStatus::Failed {
                    class: ErrorClass::Funds,
                    ..
                }
            ),
            "{view:?}"
        );
    });
}

fn pass_at(started: DateTime<Utc>, result: &str) -> PassRecord {
    PassRecord {
        started_at: started,
        finished_at: started,
        result: result.into(),
        summary: "{}".into(),
        next_retry_at: None,
    }
}

fn pass_starts(ledger: &Ledger) -> Vec<DateTime<Utc>> {
    ledger
        .read("reading passes", |tx| {
            tx.all("SELECT started_at FROM passes ORDER BY id", args![], |r| {
                r.get(0)
            })
        })
        .unwrap()
}

/// Pass records are operational, not money records (those are intents and attempts, kept for
/// good): one is written every pass, so only the last 30 days are kept — and always the last
/// successful one, which readiness and `status` read however old it is.
#[test]
fn pass_records_older_than_the_retention_are_pruned_but_the_last_success_is_kept() {
    on_both(|place| {
        let ledger = place.open();
        let start = t("2026-01-01T00:00:00Z");
        let day = chrono::Duration::days(1);
        ledger.record_pass(&pass_at(start, "ok")).unwrap();
        for n in 1..=40 {
            ledger
                .record_pass(&pass_at(start + day * n, "failed"))
                .unwrap();
        }
        let kept = pass_starts(&ledger);
        // The last ok pass (day 0), then days 10..=40 (within 30 days of the newest).
        assert_eq!(kept.first(), Some(&start));
        assert_eq!(kept.get(1), Some(&(start + day * 10)));
        assert_eq!(kept.len(), 1 + 31, "{kept:?}");
        assert_eq!(ledger.last_successful_pass().unwrap(), Some(start));
    });
}

/// Status lines come back field for field from either engine (PostgreSQL writes them as one
/// JSON list: NULLs, quotes and non-ASCII names must survive it), and a batch naming an
/// instance twice keeps its last line, as writing them one after another would.
#[test]
fn status_lines_read_back_as_written_and_the_last_of_a_repeated_instance_stands() {
    let line = |id: &str, name: &str, due: Option<&str>| StatusRow {
        account: "main".into(),
        region: "cn-hangzhou".into(),
        instance_id: id.into(),
        name: name.into(),
        expires_at: t("2026-03-15T16:00:00Z"),
        policy: due.map(|_| "prod".into()),
        state: crate::policy::InstanceState::Due,
        decision: crate::policy::NextAction::Renew,
        due_at: due.map(t),
        reason: "due \"soon\"".into(),
        failed_attempts: 2,
        next_retry_at: None,
        drift: due.is_some(),
        deduction_overdue: false,
        last_outcome: None,
        updated_at: t("2026-03-10T08:00:00Z"),
    };
    on_both(|place| {
        let ledger = place.open();
        let first = line("i-1", "web \\ 1", None);
        let second = line("i-2", "数据库", Some("2026-03-12T00:00:00Z"));
        let again = line("i-1", "web 1 (renamed)", Some("2026-03-13T00:00:00Z"));
        ledger
            .write_status(&[first, second.clone(), again.clone()], 7)
            .unwrap();
        let mut read = ledger.status_rows().unwrap();
        read.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        assert_eq!(read, vec![again, second]);
    });
}
