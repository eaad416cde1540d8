//! The PostgreSQL ledger's schema and leader lease against a real server
//! (`support::postgres`): migrations applied once when two replicas start together, a newer
//! schema refused, the lease taken only once expired with the epoch raised by each take, a
//! write after a takeover fenced and rolled back, a takeover waiting for a fenced write in
//! flight, a session stopped inside a transaction ended by the server so the takeover proceeds,
//! the keeper renewing its term and ending it when the lease is taken or the database stops
//! answering past the deadline, connection errors that say where and why without the
//! password, and `ledger copy` (value for value against the SQLite file read with the test's
//! own SQL; refused into a non-empty database and while a daemon holds the state directory).

use std::time::Duration;

use ecs_renewd::ledger::postgres::{
    Fenced, HaTimings, Lease, LeaseError, Lost, MIGRATIONS, MigrateError, Session, SessionError,
    SessionTimeouts, Term, fence, hold, migrate,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::postgres::fresh_database;

async fn session(url: &str) -> Session {
    Session::connect(url, SessionTimeouts::default())
        .await
        .unwrap()
}

async fn migrated() -> (String, Session) {
    let url = fresh_database().await;
    let mut s = session(&url).await;
    migrate(&mut s.client).await.unwrap();
    (url, s)
}

fn lease(holder: &str) -> Lease {
    Lease {
        holder: holder.into(),
        duration: Duration::from_secs(60),
    }
}

/// Ends the lease now, as its running out would (the test does not wait a lease out).
async fn expire(s: &Session) {
    s.client
        .execute(
            "UPDATE leader_lease SET expires_at = clock_timestamp() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn two_replicas_starting_together_migrate_once() {
    let url = fresh_database().await;
    let (mut a, mut b) = (session(&url).await, session(&url).await);
    let (ra, rb) = tokio::join!(migrate(&mut a.client), migrate(&mut b.client));
    assert_eq!(
        (ra.unwrap(), rb.unwrap()),
        (MIGRATIONS.len() as i32, MIGRATIONS.len() as i32)
    );
    let applied: i64 = a
        .client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, MIGRATIONS.len() as i64);
    let leases: i64 = a
        .client
        .query_one("SELECT count(*) FROM leader_lease", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(leases, 1, "the lease row is seeded once");
    // A third start finds nothing to do.
    assert_eq!(
        migrate(&mut a.client).await.unwrap(),
        MIGRATIONS.len() as i32
    );
}

#[tokio::test]
async fn a_schema_written_by_a_newer_build_is_refused() {
    let (_url, mut s) = migrated().await;
    s.client
        .execute("INSERT INTO schema_migrations (version) VALUES (99)", &[])
        .await
        .unwrap();
    let error = migrate(&mut s.client).await.unwrap_err();
    assert!(
        matches!(error, MigrateError::Newer { found: 99, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("newer ecs-renewd"), "{error}");
}

#[tokio::test]
async fn the_lease_is_taken_only_once_expired_and_each_take_raises_the_epoch() {
    let (_url, s) = migrated().await;
    let (a, b) = (lease("host-a:1:aa"), lease("host-b:2:bb"));
    let term_a = a
        .campaign(&s.client)
        .await
        .unwrap()
        .expect("a free lease is taken");
    assert_eq!(term_a.epoch, 1);
    assert_eq!(
        b.campaign(&s.client).await.unwrap(),
        None,
        "held: not taken"
    );
    a.renew(&s.client, &term_a).await.unwrap();
    expire(&s).await;
    let term_b = b
        .campaign(&s.client)
        .await
        .unwrap()
        .expect("an expired lease is taken");
    assert_eq!(term_b.epoch, 2);
    let lost = a.renew(&s.client, &term_a).await.unwrap_err();
    assert!(
        matches!(lost, LeaseError::Lost(Fenced { epoch: 1, .. })),
        "{lost:?}"
    );
    // Resigning ends the term at once: the next candidate takes over without waiting it out.
    b.resign(&s.client, &term_b).await.unwrap();
    let term_a2 = a
        .campaign(&s.client)
        .await
        .unwrap()
        .expect("a released lease is taken");
    assert_eq!(term_a2.epoch, 3);
}

#[tokio::test]
async fn a_write_after_a_takeover_is_fenced_and_rolled_back() {
    let (_url, mut s) = migrated().await;
    let a = lease("host-a:1:aa");
    let term = a.campaign(&s.client).await.unwrap().unwrap();
    let write = |cents: i64| {
        format!(
            "INSERT INTO spend (day, currency, cents) VALUES ('2026-12-07', 'CNY', {cents}) ON CONFLICT (day, currency) DO UPDATE SET cents = spend.cents + excluded.cents"
        )
    };
    let tx = s.client.transaction().await.unwrap();
    fence(&tx, &term).await.unwrap();
    tx.batch_execute(&write(100)).await.unwrap();
    tx.commit().await.unwrap();
    // Another replica takes the lease (here: by SQL, as a standby would once it expired).
    s.client
        .execute(
            "UPDATE leader_lease SET holder = 'host-b:2:bb', epoch = epoch + 1",
            &[],
        )
        .await
        .unwrap();
    let tx = s.client.transaction().await.unwrap();
    let error = fence(&tx, &term).await.unwrap_err();
    assert!(matches!(error, LeaseError::Lost(_)), "{error:?}");
    assert!(error.to_string().contains("rolled back"), "{error}");
    drop(tx);
    let cents: i64 = s
        .client
        .query_one("SELECT cents FROM spend", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(cents, 100, "only the write under the held lease is there");
}

/// Whether `pid`'s backend waits for a lock.
async fn waits_for_a_lock(s: &Session, pid: i32) -> bool {
    s.client
        .query_one(
            "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0)
}

/// Polls `condition` (each poll a query) until it holds, failing after `limit`.
async fn until(limit: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_takeover_waits_for_a_fenced_write_in_flight_which_then_stands() {
    let (url, mut a_session) = migrated().await;
    let watcher = session(&url).await;
    let a = lease("host-a:1:aa");
    let term = a.campaign(&a_session.client).await.unwrap().unwrap();
    let tx = a_session.client.transaction().await.unwrap();
    fence(&tx, &term).await.unwrap();
    // The standby's takeover (the lease has run out by then) must wait for the write in flight.
    let b_session = session(&url).await;
    let b_pid: i32 = b_session
        .client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let takeover = tokio::spawn(async move {
        b_session
            .client
            .execute(
                "UPDATE leader_lease SET holder = 'host-b:2:bb', epoch = epoch + 1",
                &[],
            )
            .await
            .unwrap()
    });
    until(
        Duration::from_secs(10),
        "the takeover waits for the lease row",
        async || waits_for_a_lock(&watcher, b_pid).await,
    )
    .await;
    assert!(!takeover.is_finished());
    tx.batch_execute("INSERT INTO renewal_days (day, renewals) VALUES ('2026-12-07', 1)")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), takeover)
            .await
            .unwrap()
            .unwrap(),
        1
    );
    let days: i64 = watcher
        .client
        .query_one("SELECT count(*) FROM renewal_days", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        days, 1,
        "the write that held the fence before the takeover stands"
    );
    let tx = a_session.client.transaction().await.unwrap();
    assert!(matches!(fence(&tx, &term).await, Err(LeaseError::Lost(_))));
}

#[tokio::test]
async fn a_leader_stopped_inside_a_transaction_is_ended_by_the_server_and_the_takeover_proceeds() {
    let url = fresh_database().await;
    let short = SessionTimeouts {
        idle_in_transaction: Duration::from_millis(300),
        ..SessionTimeouts::default()
    };
    let mut stuck = Session::connect(&url, short).await.unwrap();
    migrate(&mut stuck.client).await.unwrap();
    let a = lease("host-a:1:aa");
    let term = a.campaign(&stuck.client).await.unwrap().unwrap();
    let tx = stuck.client.transaction().await.unwrap();
    fence(&tx, &term).await.unwrap();
    // The leader now sends nothing more, as if SIGSTOPped inside its transaction.
    let b = session(&url).await;
    let taken = tokio::time::timeout(
        Duration::from_secs(10),
        b.client.execute(
            "UPDATE leader_lease SET holder = 'host-b:2:bb', epoch = epoch + 1",
            &[],
        ),
    )
    .await
    .expect("the server ends the idle transaction, so the takeover does not wait forever")
    .unwrap();
    assert_eq!(taken, 1);
    let after = tx
        .batch_execute("INSERT INTO renewal_days (day, renewals) VALUES ('2026-12-07', 1)")
        .await;
    assert!(after.is_err(), "the stopped leader's session was ended");
}

#[tokio::test]
async fn connection_errors_say_where_and_why_without_the_password() {
    let unparsable = Session::connect("host=/tmp port=notaport", SessionTimeouts::default())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(unparsable, SessionError::Url { .. }),
        "{unparsable:?}"
    );
    let empty = tempfile::tempdir().unwrap();
    let url = format!(
        "host={} port=5999 user=ecs_renewd password=hunter2-secret dbname=ledger",
        empty.path().display()
    );
    let unreachable = Session::connect(&url, SessionTimeouts::default())
        .await
        .err()
        .unwrap();
    let text = format!("{unreachable} {unreachable:?}");
    assert!(
        matches!(unreachable, SessionError::Connect { .. }),
        "{text}"
    );
    assert!(text.contains(".s.PGSQL.5999"), "names the socket: {text}");
    assert!(
        !text.contains("hunter2"),
        "the password never shows: {text}"
    );
}

/// Test timings: lease 3 s, deadline 600 ms, a renewal every 100 ms.
fn quick() -> HaTimings {
    HaTimings {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(100),
    }
}

/// A keeper holding a fresh term on its own session: the term, the session's backend pid,
/// the renewals' channel, the cancel token and the task.
async fn keeper(
    url: &str,
) -> (
    Term,
    i32,
    watch::Receiver<Instant>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), Lost>>,
) {
    let s = session(url).await;
    let pid: i32 = s
        .client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let lease = Lease {
        holder: "host-a:1:aa".into(),
        duration: quick().lease_duration,
    };
    let term = lease.campaign(&s.client).await.unwrap().unwrap();
    let (tx, rx) = watch::channel(Instant::now());
    let cancel = CancellationToken::new();
    let (held, stop) = (term.clone(), cancel.clone());
    let task = tokio::spawn(async move {
        let mut s = s;
        hold(&mut s, &lease, &held, quick(), &tx, &stop, &|_| {}).await
    });
    (term, pid, rx, cancel, task)
}

#[tokio::test]
async fn the_keeper_renews_its_term_and_publishes_each_renewal_until_cancelled() {
    let (url, watcher) = migrated().await;
    let (_term, _pid, mut renewed, cancel, task) = keeper(&url).await;
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), renewed.changed())
            .await
            .expect("a renewal every retry period")
            .unwrap();
    }
    let left: f64 = watcher
        .client
        .query_one(
            "SELECT extract(epoch FROM expires_at - clock_timestamp())::float8 FROM leader_lease",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        left > 2.0,
        "renewed for the lease duration from the server's now: {left} s left"
    );
    cancel.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
}

#[tokio::test]
async fn a_lease_taken_by_another_holder_ends_the_keepers_term_at_its_next_renewal() {
    let (url, watcher) = migrated().await;
    let (term, _pid, _renewed, _cancel, task) = keeper(&url).await;
    watcher
        .client
        .execute(
            "UPDATE leader_lease SET holder = 'host-b:2:bb', epoch = epoch + 1",
            &[],
        )
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    match ended {
        Err(Lost::Fenced(Fenced { epoch, .. })) => assert_eq!(epoch, term.epoch),
        other => panic!("expected the term fenced, got {other:?}"),
    }
}

/// A session the server ended (a restart, a cut connection) is made again at the next
/// renewal: the term goes on.
#[tokio::test]
async fn a_keeper_whose_session_was_ended_connects_again_and_keeps_its_term() {
    let (url, watcher) = migrated().await;
    let (_term, pid, mut renewed, cancel, task) = keeper(&url).await;
    watcher
        .client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let ended_at = Instant::now();
    // Two renewals after the session ended: the keeper connected again.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(5), renewed.changed())
            .await
            .expect("a renewal after the session was ended")
            .unwrap();
    }
    assert!(*renewed.borrow() > ended_at);
    assert!(!task.is_finished(), "the term goes on");
    cancel.cancel();
    assert!(matches!(task.await.unwrap(), Ok(())));
}

#[tokio::test]
async fn a_database_that_stops_answering_ends_the_term_at_the_renew_deadline() {
    let (url, watcher) = migrated().await;
    let (_term, pid, renewed, _cancel, task) = keeper(&url).await;
    // The database takes no new connection and the server ends the keeper's session: every
    // later renewal (and every try to connect again) fails, as with a database down.
    let dbname = url.rsplit("dbname=").next().unwrap().trim();
    let elsewhere = session(&url.replace(&format!("dbname={dbname}"), "dbname=postgres")).await;
    elsewhere
        .client
        .batch_execute(&format!(
            "ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS false"
        ))
        .await
        .unwrap();
    watcher
        .client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let last_ok = *renewed.borrow();
    match ended {
        Err(Lost::Deadline {
            since, deadline, ..
        }) => {
            assert!(since >= deadline, "{since:?} < {deadline:?}");
            assert!(last_ok.elapsed() >= quick().renew_deadline);
        }
        other => panic!("expected the deadline to pass, got {other:?}"),
    }
}

/// A ledger with a row in every table: a renewal made, one failed for funds (backoff), an
/// auto-renew switched on, passes, sources and status lines.
async fn populated_ledger() -> crate::support::Harness {
    use crate::support::{Harness, harness_fleet, instance_spec};
    let mut cheap = instance_spec("i-cheap", "2026-03-12T16:00Z");
    cheap.monthly_price = 100.0;
    let mut dear = instance_spec("i-dear", "2026-03-13T16:00Z");
    dear.monthly_price = 500.0;
    let mut auto = instance_spec("i-auto", "2026-03-25T16:00Z");
    auto.tags = [("team".to_string(), "auto".to_string())].into();
    let fleet = harness_fleet("2026-03-10T04:00:00Z", 300.0, vec![cheap, dear, auto]);
    let policies = r#"
[[policies]]
name = "auto"
action = "auto-renew"
[policies.match]
tags = { team = "auto" }
[[policies]]
name = "renew-all"
action = "renew"
max_price = 10000.0
renew_before = "7d"
"#;
    let h = Harness::start(fleet, policies).await;
    h.pass().await;
    h.advance(Duration::from_secs(3600));
    h.pass().await;
    h
}

/// A SQLite table's columns in order, and those of its primary key.
fn sqlite_columns(conn: &rusqlite::Connection, table: &str) -> (Vec<String>, String) {
    let columns: Vec<(String, i64)> = conn
        .prepare(&format!("PRAGMA table_info({table})"))
        .unwrap()
        .query_map([], |r| Ok((r.get(1)?, r.get(5)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key: Vec<&str> = columns
        .iter()
        .filter(|c| c.1 > 0)
        .map(|c| c.0.as_str())
        .collect();
    let key = key.join(", ");
    (columns.into_iter().map(|c| c.0).collect(), key)
}

/// Every row of every table of the SQLite ledger at `path`, as the PostgreSQL column types
/// say to compare them: times as microseconds since the epoch (RFC 3339 text or Unix seconds
/// in SQLite), flags as 0/1, the rest as text. Read with its own SQL, not the copy's tables.
fn sqlite_rows(
    path: &std::path::Path,
    types: &std::collections::BTreeMap<(String, String), String>,
) -> std::collections::BTreeMap<String, Vec<Vec<Option<String>>>> {
    use rusqlite::types::ValueRef;
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut all = std::collections::BTreeMap::new();
    for table in tables {
        let (columns, key) = sqlite_columns(&conn, &table);
        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
        let sql = format!("SELECT {} FROM {table} ORDER BY {}", names.join(", "), key);
        let mut statement = conn.prepare(&sql).unwrap();
        let rows = statement
            .query_map([], |row| {
                Ok(names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        let ty = types
                            .get(&(table.clone(), name.to_string()))
                            .map(String::as_str);
                        match (row.get_ref(i).unwrap(), ty) {
                            (ValueRef::Null, _) => None,
                            (ValueRef::Integer(n), Some("timestamp with time zone")) => {
                                Some((n * 1_000_000).to_string())
                            }
                            (ValueRef::Text(t), Some("timestamp with time zone")) => Some(
                                chrono::DateTime::parse_from_rfc3339(
                                    std::str::from_utf8(t).unwrap(),
                                )
                                .unwrap()
                                .timestamp_micros()
                                .to_string(),
                            ),
                            (ValueRef::Integer(n), _) => Some(n.to_string()),
                            (ValueRef::Text(t), _) => Some(String::from_utf8_lossy(t).into_owned()),
                            (other, _) => panic!("{table}.{name}: unexpected {other:?}"),
                        }
                    })
                    .collect::<Vec<_>>())
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        all.insert(table, rows);
    }
    all
}

/// The same tables of the PostgreSQL ledger, the same columns in SQLite's order and keys.
async fn postgres_rows(
    s: &Session,
    like: &std::collections::BTreeMap<String, Vec<Vec<Option<String>>>>,
    sqlite: &std::path::Path,
    types: &std::collections::BTreeMap<(String, String), String>,
) -> std::collections::BTreeMap<String, Vec<Vec<Option<String>>>> {
    let conn =
        rusqlite::Connection::open_with_flags(sqlite, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut all = std::collections::BTreeMap::new();
    for table in like.keys() {
        let (columns, key) = sqlite_columns(&conn, table);
        let select: Vec<String> = columns
            .iter()
            .map(|name| {
                match types
                    .get(&(table.clone(), name.clone()))
                    .map(String::as_str)
                {
                    Some("timestamp with time zone") => {
                        format!("(extract(epoch FROM {name}) * 1000000)::bigint::text")
                    }
                    Some("boolean") => format!("{name}::int::text"),
                    Some(_) => format!("{name}::text"),
                    None => panic!("{table}.{name} has no column in PostgreSQL"),
                }
            })
            .collect();
        let sql = format!("SELECT {} FROM {table} ORDER BY {}", select.join(", "), key);
        let rows = s.client.query(&sql, &[]).await.unwrap();
        all.insert(
            table.clone(),
            rows.iter()
                .map(|r| {
                    (0..columns.len())
                        .map(|i| r.get::<_, Option<String>>(i))
                        .collect()
                })
                .collect(),
        );
    }
    all
}

#[tokio::test]
async fn a_sqlite_ledger_copies_into_an_empty_postgres_one_value_for_value_and_only_once() {
    use ecs_renewd::ledger::postgres::{CopyError, copy_ledger};
    let h = populated_ledger().await;
    let url = fresh_database().await;
    let mut target = session(&url).await;
    let copied = copy_ledger(&h.engine.ledger, &mut target).await.unwrap();
    for (table, rows) in &copied {
        assert!(
            *rows > 0,
            "the test's ledger should have rows in {table}: {copied:?}"
        );
    }
    let types: std::collections::BTreeMap<(String, String), String> = target
        .client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let path = h.engine.ledger.path().to_owned();
    let before = sqlite_rows(&path, &types);
    let after = postgres_rows(&target, &before, &path, &types).await;
    assert_eq!(
        before.len(),
        copied.len(),
        "every SQLite table is copied: {:?}",
        before.keys()
    );
    for (table, rows) in &before {
        assert_eq!(rows, &after[table], "table {table}");
    }
    // The ledger's facade reads the same from either engine: `status` (its report, but for
    // the line naming where the ledger is), `history`, the day's belts, the open intents.
    let shared = ecs_renewd::ledger::Ledger::open_postgres(&url, Default::default(), 1).unwrap();
    let sqlite = &h.engine.ledger;
    let query = ecs_renewd::ledger::StatusQuery::default();
    let (mut a, mut b) = (
        sqlite.status_report(&query).unwrap(),
        shared.status_report(&query).unwrap(),
    );
    assert!(!a.instances.is_empty());
    (a.ledger, b.ledger) = (String::new(), String::new());
    assert_eq!(a, b);
    assert_eq!(
        sqlite.money_records(None).unwrap(),
        shared.money_records(None).unwrap()
    );
    assert_eq!(
        sqlite.day_totals("2026-03-10").unwrap(),
        shared.day_totals("2026-03-10").unwrap()
    );
    assert_eq!(
        format!("{:?}", sqlite.histories().unwrap().open),
        format!("{:?}", shared.histories().unwrap().open)
    );
    assert_eq!(sqlite.last_pass().unwrap(), shared.last_pass().unwrap());
    // New rows take ids after the copied ones.
    let max: i64 = target
        .client
        .query_one("SELECT max(id) FROM passes", &[])
        .await
        .unwrap()
        .get(0);
    let next: i64 = target
        .client
        .query_one(
            "INSERT INTO passes (started_at, finished_at, result, summary) VALUES (now(), now(), 'ok', '{}') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(next > max, "{next} after {max}");
    // A second copy into the same database is refused, and changes nothing.
    let again = copy_ledger(&h.engine.ledger, &mut target)
        .await
        .unwrap_err();
    assert!(
        matches!(
            again,
            CopyError::NotEmpty {
                table: "intents",
                ..
            }
        ),
        "{again:?}"
    );
    assert!(again.to_string().contains("new database"), "{again}");
    let intents: i64 = target
        .client
        .query_one("SELECT count(*) FROM intents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(intents as u64, copied[0].1);
}

#[tokio::test]
async fn ledger_copy_moves_a_stopped_daemons_ledger_and_refuses_while_one_runs_or_the_url_file_is_open()
 {
    use crate::support::{HARNESS_KEY, Harness};
    let h = populated_ledger().await;
    let config = h.state.path().join("config.toml");
    std::fs::write(
        &config,
        Harness::config_text(&h.emulator, h.state.path(), ""),
    )
    .unwrap();
    let url = fresh_database().await;
    let copy_to = |target: &[&std::ffi::OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ecs-renewd"))
            .args(["ledger", "copy", "--config"])
            .arg(&config)
            .args(target)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", HARNESS_KEY.0)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", HARNESS_KEY.1)
            .output()
            .unwrap()
    };
    // The engine still holds the state directory, as a running daemon would.
    let refused = copy_to(&["--to".as_ref(), url.as_ref()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another ecs-renewd already uses the state directory"),
        "{stderr}"
    );
    let crate::support::Harness { engine, state, .. } = h;
    drop(engine);
    // From a file: refused while others may read it, as key files are.
    let url_file = state.path().join("ledger-url");
    std::fs::write(&url_file, format!("{url}\n")).unwrap();
    let from_file = || copy_to(&["--to-file".as_ref(), url_file.as_os_str()]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = from_file();
    let stderr = String::from_utf8_lossy(&open.stderr);
    assert_eq!(open.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let done = from_file();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(stdout.contains("intents 3, attempts"), "{stdout}");
    let s = session(&url).await;
    let intents: i64 = s
        .client
        .query_one("SELECT count(*) FROM intents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(intents, 3);
    drop(state);
}

/// `check-config` connects to a PostgreSQL ledger: a reachable one is reported with its
/// timings, a refused login or an open URL file is a problem (exit 78) that names the ledger
/// and never the password.
#[tokio::test]
async fn check_config_connects_to_the_ledgers_database_and_reports_a_refused_login() {
    use crate::support::HARNESS_KEY;
    let url = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let check = |ledger: &str| {
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            format!(
                "[daemon]\nstate_dir = \"{}\"\n[[accounts]]\nname = \"main\"\n[accounts.credentials]\nsource = \"env\"\n[[policies]]\nname = \"p\"\naction = \"renew\"\n{ledger}",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_ecs-renewd"))
            .args(["check-config", "--config"])
            .arg(&path)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", HARNESS_KEY.0)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", HARNESS_KEY.1)
            .output()
            .unwrap()
    };
    let ok = check(&format!(
        "[ledger]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
    ));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("ledger: PostgreSQL at") && stdout.contains("reachable"),
        "{stdout}"
    );
    let refused = check(&format!(
        "[ledger]\nbackend = \"postgres\"\nurl = \"{} user=nobody password=hunter2\"\n",
        url.replace("user=postgres", "")
    ));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("ledger: cannot connect"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let url_file = dir.path().join("ledger-url");
    std::fs::write(&url_file, &url).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = check(&format!(
        "[ledger]\nbackend = \"postgres\"\nurl_file = \"{}\"\n",
        url_file.display()
    ));
    let stderr = String::from_utf8_lossy(&open.stderr);
    assert_eq!(open.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("ledger.url_file") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

/// A CA and a server certificate for `localhost`, made with the openssl command line: the
/// CA's certificate, the server's certificate and key.
fn certificates(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let file = |f: &str| dir.join(format!("{name}-{f}"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command (apt-get install -y openssl)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca_key, ca, key, csr, cert, ext) = (
        file("ca.key"),
        file("ca.crt"),
        file("server.key"),
        file("server.csr"),
        file("server.crt"),
        file("ext.cnf"),
    );
    let s = |p: &std::path::PathBuf| p.to_str().unwrap().to_owned();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &s(&ca_key),
        "-out",
        &s(&ca),
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(&ext, "subjectAltName=DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca),
        "-CAkey",
        &s(&ca_key),
        "-CAcreateserial",
        "-out",
        &s(&cert),
        "-days",
        "2",
        "-extfile",
        &s(&ext),
    ]);
    (ca, cert, key)
}

/// TLS as libpq's `sslmode` asks: `verify-full` against `sslrootcert` connects encrypted and
/// refuses a server whose certificate another CA signed; `require` encrypts without
/// verifying; `verify-ca` is refused with advice, naming no password.
#[tokio::test]
async fn tls_sessions_verify_the_server_as_sslmode_asks() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path(), "ours");
    let (other_ca, _, _) = certificates(dir.path(), "other");
    let cluster = tokio::task::spawn_blocking(move || {
        crate::support::postgres::Cluster::start_tls(&cert, &key)
    })
    .await
    .unwrap()
    .unwrap();
    let port = cluster.tls_port().unwrap();
    let db = crate::support::postgres::database_on(&cluster.url()).await;
    let dbname = db.rsplit("dbname=").next().unwrap();
    let tcp = |tls: &str| format!("host=localhost port={port} user=postgres dbname={dbname} {tls}");
    let encrypted = async |url: String| -> bool {
        let s = Session::connect(&url, SessionTimeouts::default())
            .await
            .unwrap();
        s.client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    };
    assert!(
        encrypted(tcp(&format!(
            "sslmode=verify-full sslrootcert={}",
            ca.display()
        )))
        .await
    );
    assert!(encrypted(tcp("sslmode=require")).await);
    assert!(!encrypted(tcp("sslmode=disable")).await);
    let wrong = Session::connect(
        &tcp(&format!(
            "sslmode=verify-full sslrootcert={} password=hunter2",
            other_ca.display()
        )),
        SessionTimeouts::default(),
    )
    .await
    .err()
    .expect("a server signed by another CA is refused");
    let words = format!("{wrong} {:?}", std::error::Error::source(&wrong));
    assert!(words.contains("cannot connect"), "{words}");
    assert!(!words.contains("hunter2"), "{words}");
    let refused = Session::connect(
        &tcp("sslmode=verify-ca password=hunter2"),
        SessionTimeouts::default(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        refused.contains("verify-full") && !refused.contains("hunter2"),
        "{refused}"
    );
    // The ledger itself over TLS.
    let ledger = ecs_renewd::ledger::Ledger::open_postgres(
        &tcp(&format!("sslmode=verify-full sslrootcert={}", ca.display())),
        SessionTimeouts::default(),
        1,
    )
    .unwrap();
    assert!(ledger.last_pass().unwrap().is_none());
    drop(cluster);
}

/// Sessions of the ledger's pool that the server ended (a restart, a failover of the
/// database, an administrator's `pg_terminate_backend`) are replaced on the next call: that
/// call's transaction had not begun, so it is made again on a new session, and succeeds.
#[tokio::test]
async fn a_write_after_the_server_ended_every_pool_session_is_made_on_a_new_one() {
    let (url, watcher) = migrated().await;
    let ledger =
        ecs_renewd::ledger::Ledger::open_postgres(&url, SessionTimeouts::default(), 2).unwrap();
    let now: chrono::DateTime<chrono::Utc> = "2026-12-07T07:00:00Z".parse().unwrap();
    ledger.mark_pass_started(now).unwrap();
    let ended = watcher
        .client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(ended >= 1, "the pool had a session to end");
    until(
        Duration::from_secs(5),
        "the ended sessions to be gone",
        async || {
            let left: i64 = watcher
                .client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            left == 0
        },
    )
    .await;
    ledger.mark_pass_started(now).unwrap();
    assert!(ledger.last_pass_unfinished().unwrap());
}
