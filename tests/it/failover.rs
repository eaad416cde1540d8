//! Two replicas of the real binary on one PostgreSQL ledger, against the emulator, with the
//! issue's test timings (lease 6 s, renew deadline 4 s, retry 1 s): a leader killed, stopped,
//! stopped while its charge is out, told to stop, or fenced out by SQL. After each: at most one
//! order per instance and expiry cycle, every order in the ledger, one leader at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ecs_emulator::settings::InstanceSpec;
use ecs_emulator::{EmulatorConfig, EmulatorHandle, FaultSpec};
use ecs_renewd::ledger::Ledger;
use ecs_wire::Action;
use tokio::time::Instant;

use crate::support::postgres::{Cluster, database_on, fresh_database};
use crate::support::{HARNESS_KEY, free_port, harness_fleet, instance_spec};

/// The lease's timings in these tests.
const LEASE: Duration = Duration::from_secs(6);
const RETRY: Duration = Duration::from_secs(1);

/// An emulator on real time with `n` instances due in 3 days. Renewals show after an hour, so
/// an expiry stands still during a test: a charge whose answer was lost is settled by resending
/// its token (and learning its order), not by seeing the expiry move.
async fn emulator(n: usize) -> EmulatorHandle {
    let mut fleet: EmulatorConfig = harness_fleet("2000-01-01T00:00:00Z", 100_000.0, vec![]);
    fleet.settings.clock_start = None;
    fleet.settings.clock_speed = 1.0;
    fleet.settings.renew_visibility_delay = Duration::from_secs(3600);
    fleet.instances = (1..=n)
        .map(|i| InstanceSpec {
            expires_at: None,
            expires_in: Some("3d".into()),
            ..instance_spec(&format!("i-{i}"), "2000-01-01T00:00Z")
        })
        .collect();
    ecs_emulator::start(fleet, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The replicas' config: a pass every 2 s, the shared ledger at `url`.
fn config(dir: &Path, emulator: &EmulatorHandle, url: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[daemon]\nschedule = \"*/2 * * * * *\"\njitter = \"0s\"\nstate_dir = \"{}\"\nshutdown_grace = \"3s\"\n\
             [scan]\nregions = [\"cn-hangzhou\"]\n[retry]\nverify_timeout = \"1s\"\nverify_interval = \"100ms\"\nbackoff_floor = \"1s\"\n\
             [[accounts]]\nname = \"main\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"env\"\n\
             [accounts.call_retry]\nmax_attempts = 1\n[accounts.read_timeouts]\nRenewInstance = \"1s\"\n\
             [ledger]\nbackend = \"postgres\"\nurl = \"{url}\"\n\
             [ha]\nlease_duration = \"6s\"\nrenew_deadline = \"4s\"\nretry_period = \"1s\"\n\
             [[policies]]\nname = \"renew-all\"\naction = \"renew\"\n",
            dir.join("state").display(),
            emulator.url()
        ),
    )
    .unwrap();
    path
}

/// A replica: `ecs-renewd run` on `config`, its logs in `dir`.
struct Replica {
    child: Child,
    logs: PathBuf,
    admin: u16,
}

impl Replica {
    fn start(config: &Path, dir: &Path, name: &str) -> Replica {
        let logs = dir.join(format!("{name}.log"));
        let admin = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_ecs-renewd"))
            .args(["run", "--config"])
            .arg(config)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", HARNESS_KEY.0)
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", HARNESS_KEY.1)
            .env("ECS_RENEWD_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&logs).unwrap())
            .spawn()
            .unwrap();
        Replica { child, logs, admin }
    }

    /// The value of the unlabelled series `name` on its /metrics page.
    async fn metric(&self, name: &str) -> Option<f64> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let page = client
            .get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        page.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, signal) }, 0);
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.logs).unwrap_or_default()
    }

    /// Its exit code once it has exited, waiting at most `limit`.
    async fn exited(&mut self, limit: Duration) -> Option<i32> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lease row: the pid of its holder (0 when none, or no lease yet), its epoch, whether it
/// is live.
async fn lease(url: &str) -> (u32, i64, bool) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // Before the first replica has migrated the database there is no lease yet.
    let Ok(row) = client
        .query_one(
            "SELECT holder, epoch, expires_at > now() FROM leader_lease",
            &[],
        )
        .await
    else {
        return (0, 0, false);
    };
    let holder: String = row.get(0);
    let pid = holder
        .split(':')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (pid, row.get(1), row.get(2))
}

/// Waits (checking every 50 ms) until `condition` holds; fails after `limit`, naming `what`.
async fn until(limit: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Starts replica "a" on an idle ledger and waits until it leads.
async fn leader(config: &Path, dir: &Path, url: &str) -> Replica {
    let a = Replica::start(config, dir, "a");
    leads(
        url,
        &a,
        Duration::from_secs(20),
        "the first replica leading",
    )
    .await;
    a
}

/// Starts replica "b" beside a leader and waits until it stands by (says it does not lead).
async fn standby(config: &Path, dir: &Path) -> Replica {
    let b = Replica::start(config, dir, "b");
    until(Duration::from_secs(20), "the standby up", async || {
        b.metric("ecs_renewd_leader").await == Some(0.0)
    })
    .await;
    b
}

/// Waits until `replica` holds a live lease.
async fn leads(url: &str, replica: &Replica, limit: Duration, what: &str) -> Duration {
    let pid = replica.pid();
    until(limit, what, async || {
        let (holder, _, live) = lease(url).await;
        holder == pid && live
    })
    .await
}

/// How many renewals the ledger holds with their order.
async fn recorded(url: &str) -> usize {
    let ledger = Ledger::open_postgres(url, Default::default(), 1).unwrap();
    ledger
        .money_records(None)
        .unwrap()
        .iter()
        .filter(|r| r.order_id.is_some())
        .count()
}

/// The properties every failover test ends with: one order per instance (each instance was
/// due once), every order in the ledger under its token, and one live leader.
async fn one_order_each_all_recorded(emulator: &EmulatorHandle, url: &str, instances: usize) {
    let orders = emulator.orders();
    let mut ids: Vec<&str> = orders.iter().map(|o| o.instance_id.as_str()).collect();
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!(
        before,
        ids.len(),
        "an instance was charged twice: {orders:?}"
    );
    assert_eq!(
        ids.len(),
        instances,
        "every due instance renewed: {orders:?}"
    );
    let ledger = Ledger::open_postgres(url, Default::default(), 1).unwrap();
    for order in &orders {
        let records = ledger.money_records(Some(&order.instance_id)).unwrap();
        assert!(
            records.iter().any(|r| r.client_token == order.client_token
                && r.order_id.as_deref() == Some(order.order_id.as_str())),
            "order {} of {} is not in the ledger: {records:?}",
            order.order_id,
            order.instance_id
        );
    }
}

struct Setup {
    emulator: EmulatorHandle,
    url: String,
    config: PathBuf,
    dir: tempfile::TempDir,
}

async fn setup(instances: usize) -> Setup {
    let emulator = emulator(instances).await;
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database().await;
    let config = config(dir.path(), &emulator, &url);
    Setup {
        emulator,
        url,
        config,
        dir,
    }
}

/// (i) The leader is killed while one of its charges is out: the standby leads within lease +
/// retry + 1 s, resends that charge with its token (one order), and renews the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease_and_its_open_charge_is_resent_once() {
    let s = setup(3).await;
    s.emulator.add_fault(FaultSpec::hold(Action::RenewInstance));
    let mut a = leader(&s.config, s.dir.path(), &s.url).await;
    let b = Replica::start(&s.config, s.dir.path(), "b");
    assert!(
        s.emulator.wait_for_held(1, Duration::from_secs(30)).await,
        "no renewal arrived: {}",
        a.logs()
    );
    a.signal(libc::SIGKILL);
    a.exited(Duration::from_secs(5)).await;
    // The held charge goes through after its sender died: charged, answer lost.
    s.emulator.release_held();
    let took = leads(&s.url, &b, LEASE + RETRY * 4, "the standby taking over").await;
    assert!(
        took <= LEASE + RETRY + Duration::from_secs(1) + Duration::from_millis(500),
        "{took:?}"
    );
    until(
        Duration::from_secs(30),
        "every order recorded",
        async || recorded(&s.url).await >= 3,
    )
    .await;
    one_order_each_all_recorded(&s.emulator, &s.url, 3).await;
    assert!(b.logs().contains("took the leader lease"), "{}", b.logs());
}

/// (vi) SIGTERM: the leader gives the lease up once its pass ends; the standby leads within
/// one retry period (+ 1 s), and the stopped process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_told_to_stop_hands_over_within_one_retry_period() {
    let s = setup(2).await;
    let mut a = leader(&s.config, s.dir.path(), &s.url).await;
    until(
        Duration::from_secs(30),
        "the first renewals recorded",
        async || recorded(&s.url).await >= 2,
    )
    .await;
    let b = Replica::start(&s.config, s.dir.path(), "b");
    // b is up (standing by) before a is told to stop.
    until(Duration::from_secs(20), "the standby trying", async || {
        b.logs().contains("ecs-renewd started")
    })
    .await;
    let (_, epoch, _) = lease(&s.url).await;
    a.signal(libc::SIGTERM);
    let stopped = Instant::now();
    assert_eq!(
        a.exited(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        a.logs()
    );
    leads(
        &s.url,
        &b,
        Duration::from_secs(10),
        "the standby taking over",
    )
    .await;
    let took = stopped.elapsed();
    assert!(
        took <= RETRY * 2 + Duration::from_secs(1) + Duration::from_secs(3),
        "{took:?}"
    );
    assert!(
        a.logs().contains("gave the leader lease up"),
        "{}",
        a.logs()
    );
    assert_eq!(lease(&s.url).await.1, epoch + 1);
    one_order_each_all_recorded(&s.emulator, &s.url, 2).await;
}

/// (vii) The lease stolen by SQL while the leader's charge is out: its next write is fenced,
/// it exits 75, and the charge is not made twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_stolen_mid_pass_fences_the_next_write_and_the_leader_exits_75() {
    let s = setup(1).await;
    s.emulator.add_fault(FaultSpec::hold(Action::RenewInstance));
    let mut a = leader(&s.config, s.dir.path(), &s.url).await;
    assert!(s.emulator.wait_for_held(1, Duration::from_secs(30)).await);
    let (client, connection) = tokio_postgres::connect(&s.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE leader_lease SET holder = 'thief:1:x', epoch = epoch + 1,
                    expires_at = now() + interval '1 hour'",
            &[],
        )
        .await
        .unwrap();
    s.emulator.release_held();
    assert_eq!(
        a.exited(Duration::from_secs(15)).await,
        Some(75),
        "{}",
        a.logs()
    );
    assert_eq!(s.emulator.orders().len(), 1, "charged once");
    assert!(a.logs().contains("leader lease"), "{}", a.logs());
    // The thief never acts; once its lease is gone a replica takes over and settles the
    // charge under its token: still one order, now in the ledger.
    client
        .execute("UPDATE leader_lease SET expires_at = now()", &[])
        .await
        .unwrap();
    let b = Replica::start(&s.config, s.dir.path(), "b");
    leads(&s.url, &b, Duration::from_secs(20), "a new leader").await;
    until(Duration::from_secs(30), "the charge recorded", async || {
        recorded(&s.url).await >= 1
    })
    .await;
    one_order_each_all_recorded(&s.emulator, &s.url, 1).await;
}

/// (ii) The leader stopped (SIGSTOP) while its charge is held: the standby takes over and
/// resends the same ClientToken; the old leader, continued, is fenced at its next write or
/// renewal and exits 75. One order. The metrics say who leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_its_charge_resent_under_its_token_and_on_waking_it_exits_75() {
    let s = setup(1).await;
    s.emulator.add_fault(FaultSpec::hold(Action::RenewInstance));
    let mut a = leader(&s.config, s.dir.path(), &s.url).await;
    let b = Replica::start(&s.config, s.dir.path(), "b");
    assert!(s.emulator.wait_for_held(1, Duration::from_secs(30)).await);
    until(
        Duration::from_secs(20),
        "both replicas' metrics",
        async || {
            a.metric("ecs_renewd_leader").await == Some(1.0)
                && b.metric("ecs_renewd_leader").await == Some(0.0)
        },
    )
    .await;
    let (_, first_epoch, _) = lease(&s.url).await;
    a.signal(libc::SIGSTOP);
    let took = leads(&s.url, &b, LEASE + RETRY * 4, "the standby taking over").await;
    assert!(took <= LEASE + RETRY + Duration::from_secs(2), "{took:?}");
    until(
        Duration::from_secs(30),
        "the resent charge recorded",
        async || recorded(&s.url).await >= 1,
    )
    .await;
    assert!(
        s.emulator.calls().count(Action::RenewInstance) >= 2,
        "resent"
    );
    assert_eq!(b.metric("ecs_renewd_leader").await, Some(1.0));
    assert_eq!(
        b.metric("ecs_renewd_leader_epoch").await,
        Some((first_epoch + 1) as f64)
    );
    // The held request of the paused leader goes through now: the same token, the same order.
    s.emulator.release_held();
    a.signal(libc::SIGCONT);
    assert_eq!(
        a.exited(Duration::from_secs(15)).await,
        Some(75),
        "{}",
        a.logs()
    );
    one_order_each_all_recorded(&s.emulator, &s.url, 1).await;
    assert_eq!(lease(&s.url).await.0, b.pid(), "one leader at the end");
}

/// (iii) The leader stopped inside an open transaction (its fenced write holds the lease row
/// `FOR SHARE`): the server ends that session after `idle_in_transaction_session_timeout`
/// (10 s), and the standby's take, which waited for the lock, goes through — within that
/// timeout + lease + retry. Without the timeout the takeover would wait forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_inside_a_transaction_is_replaced_once_the_server_ends_its_session() {
    let s = setup(1).await;
    let mut a = leader(&s.config, s.dir.path(), &s.url).await;
    until(
        Duration::from_secs(30),
        "the first renewal recorded",
        async || recorded(&s.url).await >= 1,
    )
    .await;
    let b = Replica::start(&s.config, s.dir.path(), "b");
    // Hold the lease row so the leader's next fenced write waits inside its transaction.
    let (mut client, connection) = tokio_postgres::connect(&s.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tx = client.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM leader_lease FOR UPDATE", &[])
        .await
        .unwrap();
    let (watcher, connection) = tokio_postgres::connect(&s.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    until(
        Duration::from_secs(20),
        "a fenced write waiting",
        async || {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                  WHERE wait_event_type = 'Lock' AND query LIKE '%FOR SHARE%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            waiting > 0
        },
    )
    .await;
    a.signal(libc::SIGSTOP);
    tx.commit().await.unwrap();
    let stopped = Instant::now();
    leads(
        &s.url,
        &b,
        Duration::from_secs(40),
        "the standby taking over",
    )
    .await;
    let took = stopped.elapsed();
    let limit = Duration::from_secs(10) + LEASE + RETRY + Duration::from_secs(3);
    assert!(took <= limit, "{took:?}");
    a.signal(libc::SIGCONT);
    assert_eq!(
        a.exited(Duration::from_secs(15)).await,
        Some(75),
        "{}",
        a.logs()
    );
    one_order_each_all_recorded(&s.emulator, &s.url, 1).await;
}

/// A cluster of the test's own (it stops and starts it) and a database on it.
async fn own_cluster() -> (Cluster, String) {
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .unwrap()
        .unwrap_or_else(|why| panic!("these tests need PostgreSQL: {why}"));
    let url = database_on(&cluster.url()).await;
    (cluster, url)
}

async fn stop(mut cluster: Cluster) -> Cluster {
    tokio::task::spawn_blocking(move || {
        cluster.stop_immediate();
        cluster
    })
    .await
    .unwrap()
}

async fn restart(mut cluster: Cluster) -> Cluster {
    tokio::task::spawn_blocking(move || {
        cluster.restart().unwrap();
        cluster
    })
    .await
    .unwrap()
}

/// `replica`'s /readyz: its status and body.
async fn readyz(replica: &Replica) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{}/readyz", replica.admin))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// (iv) PostgreSQL stopped (immediate) for longer than the renew deadline while a charge is
/// out: no RenewInstance leaves while it is down (the answer cannot be recorded, so the pass
/// stops; the leader's term ends at the deadline: exit 75); the standby says it cannot lead;
/// once the database is back one replica leads and settles the charge under its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_past_the_deadline_sends_nothing_then_one_leader_resumes() {
    let (cluster, url) = own_cluster().await;
    let emulator = emulator(2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &emulator, &url);
    emulator.add_fault(FaultSpec::hold(Action::RenewInstance));
    let mut a = leader(&config, dir.path(), &url).await;
    let b = standby(&config, dir.path()).await;
    assert!(emulator.wait_for_held(1, Duration::from_secs(30)).await);
    let cluster = stop(cluster).await;
    let sent = emulator.calls().count(Action::RenewInstance);
    emulator.release_held();
    // The leader's term ends at its renew deadline (4 s): exit 75.
    assert_eq!(
        a.exited(Duration::from_secs(15)).await,
        Some(75),
        "{}",
        a.logs()
    );
    assert!(a.logs().contains("not renewed"), "{}", a.logs());
    assert_eq!(
        emulator.calls().count(Action::RenewInstance),
        sent,
        "no RenewInstance while the database is down"
    );
    let (status, body) = readyz(&b).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("database"), "{body}");
    let _cluster = restart(cluster).await;
    leads(
        &url,
        &b,
        LEASE + RETRY * 6,
        "the standby leading once the database is back",
    )
    .await;
    until(
        Duration::from_secs(30),
        "both renewals recorded",
        async || recorded(&url).await >= 2,
    )
    .await;
    one_order_each_all_recorded(&emulator, &url, 2).await;
    until(
        Duration::from_secs(20),
        "the new leader ready",
        async || readyz(&b).await.0 == 200,
    )
    .await;
}

/// (v) PostgreSQL down for less than the renew deadline: the leader keeps its term (its
/// sessions are made again), the standby stays a standby — no transition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_shorter_than_the_deadline_changes_no_leader() {
    let (cluster, url) = own_cluster().await;
    let emulator = emulator(1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &emulator, &url);
    let mut a = leader(&config, dir.path(), &url).await;
    until(
        Duration::from_secs(30),
        "the renewal recorded",
        async || recorded(&url).await >= 1,
    )
    .await;
    let b = standby(&config, dir.path()).await;
    let (_, epoch, _) = lease(&url).await;
    let renewals = a
        .metric("ecs_renewd_lease_renewals_total{result=\"ok\"}")
        .await;
    let cluster = stop(cluster).await;
    // An outage of a fixed length, well under the 4 s deadline (its length is the test's
    // input, not a wait for something to happen).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _cluster = restart(cluster).await;
    // Two more successful renewals by the same leader after the database came back.
    until(Duration::from_secs(10), "renewals resuming", async || {
        a.metric("ecs_renewd_lease_renewals_total{result=\"ok\"}")
            .await
            >= renewals.map(|n| n + 2.0)
    })
    .await;
    assert_eq!(
        a.exited(Duration::from_millis(10)).await,
        None,
        "{}",
        a.logs()
    );
    let (holder, now_epoch, live) = lease(&url).await;
    assert_eq!((holder, now_epoch, live), (a.pid(), epoch, true));
    assert_eq!(b.metric("ecs_renewd_leader").await, Some(0.0));
    assert_eq!(
        a.metric("ecs_renewd_leader_transitions_total").await,
        Some(1.0)
    );
}

/// The takeover rule: a leader killed in the middle of a pass that had nothing out (its scan
/// held) leaves a pass without a record; the replica taking over runs a pass at once, though
/// the last successful pass is recent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_cut_short_by_a_takeover_is_run_again_at_once() {
    let s = setup(1).await;
    let mut a = leader(&s.config, s.dir.path(), &s.url).await;
    until(
        Duration::from_secs(30),
        "a first pass recorded",
        async || recorded(&s.url).await >= 1,
    )
    .await;
    let b = standby(&s.config, s.dir.path()).await;
    // The next pass holds at its scan: started, nothing out.
    s.emulator
        .add_fault(FaultSpec::hold(Action::DescribeInstances));
    assert!(s.emulator.wait_for_held(1, Duration::from_secs(30)).await);
    a.signal(libc::SIGKILL);
    a.exited(Duration::from_secs(5)).await;
    s.emulator.release_held();
    leads(&s.url, &b, LEASE + RETRY * 4, "the standby taking over").await;
    until(Duration::from_secs(10), "a pass at takeover", async || {
        b.logs().contains("Takeover")
    })
    .await;
}
