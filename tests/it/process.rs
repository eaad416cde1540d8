//! The real binary against the emulator: a process killed (SIGKILL) between its intent and the
//! answer resends the same ClientToken after a restart and the cloud has one order; a second
//! process on the same state directory refuses to start.

use crate::support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ecs_emulator::settings::InstanceSpec;
use ecs_emulator::{EmulatorConfig, EmulatorHandle, FaultSpec};
use ecs_renewd::ledger::Ledger;
use ecs_wire::Action;
use support::{HARNESS_KEY, harness_fleet, instance_spec};

/// An emulator following real time (the binary signs with the wall clock) with one instance
/// due in 3 days; renewals show after an hour, so the expiry stands still during the test.
async fn emulator() -> EmulatorHandle {
    let mut fleet: EmulatorConfig = harness_fleet("2000-01-01T00:00:00Z", 1000.0, vec![]);
    fleet.settings.clock_start = None;
    fleet.settings.clock_speed = 1.0;
    fleet.settings.renew_visibility_delay = Duration::from_secs(3600);
    fleet.instances = vec![InstanceSpec {
        expires_at: None,
        expires_in: Some("3d".into()),
        ..instance_spec("i-due", "2000-01-01T00:00Z")
    }];
    ecs_emulator::start(fleet, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn write_config(dir: &Path, emulator: &EmulatorHandle) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let state = dir.join("state");
    std::fs::write(
        &path,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n[scan]\nregions = [\"cn-hangzhou\"]\n[retry]\nverify_timeout = \"1s\"\nverify_interval = \"200ms\"\n[[accounts]]\nname = \"main\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"env\"\n[accounts.call_retry]\nmax_attempts = 1\n[[policies]]\nname = \"renew-all\"\naction = \"renew\"\n",
            state.display(),
            emulator.url()
        ),
    )
    .unwrap();
    path
}

fn once(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ecs-renewd"));
    cmd.args(["--log-format", "json", "once", "--config"])
        .arg(config)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", HARNESS_KEY.0)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", HARNESS_KEY.1)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

async fn wait(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_between_intent_and_answer_resends_the_same_token_after_restart() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emulator);
    // Hold the renewal in the emulator and kill the process while it waits.
    emulator.add_fault(FaultSpec::hold(Action::RenewInstance));
    let mut child = once(&config).spawn().unwrap();
    assert!(
        emulator.wait_for_held(1, Duration::from_secs(60)).await,
        "the renewal never arrived"
    );
    child.kill().unwrap(); // SIGKILL
    let killed = wait(child).await;
    assert!(!killed.status.success());
    // The emulator finishes the held request: the charge happened, the answer was lost.
    emulator.release_held();
    assert!(
        emulator
            .wait_for(|c| c.answered() >= 4, Duration::from_secs(30))
            .await
    );
    let orders = emulator.orders();
    assert_eq!(orders.len(), 1);
    {
        let ledger = Ledger::open_read_only(&dir.path().join("state"))
            .unwrap()
            .unwrap();
        let records = ledger.money_records(Some("i-due")).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            records[0].status, "sent",
            "the intent was written before the request left"
        );
        assert_eq!(records[0].client_token, orders[0].client_token);
    }
    // Restart: the open intent is resent with its token; the cloud returns the same order.
    let rerun = wait(once(&config).spawn().unwrap()).await;
    let stdout = String::from_utf8_lossy(&rerun.stdout);
    assert_eq!(
        rerun.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert!(stdout.contains("1 renewed"), "{stdout}");
    assert_eq!(emulator.calls().count(Action::RenewInstance), 2);
    let orders_after = emulator.orders();
    assert_eq!(orders_after, orders, "one order, no second charge");
    let ledger = Ledger::open_read_only(&dir.path().join("state"))
        .unwrap()
        .unwrap();
    let records = ledger.money_records(Some("i-due")).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].order_id.as_deref(),
        Some(orders[0].order_id.as_str())
    );
    assert_eq!(records[0].attempts, 2);
    let logs = String::from_utf8_lossy(&rerun.stderr);
    assert!(
        logs.contains("\"message\":\"renewed\""),
        "one info line per money-moving action: {logs}"
    );
    assert!(logs.contains(&orders[0].order_id), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_state_directory_refuses_to_start() {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &emulator);
    emulator.add_fault(FaultSpec::hold(Action::RenewInstance));
    let first = once(&config).spawn().unwrap();
    assert!(emulator.wait_for_held(1, Duration::from_secs(60)).await);
    let second = wait(once(&config).spawn().unwrap()).await;
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another ecs-renewd already uses the state directory"),
        "{stderr}"
    );
    assert!(
        stderr.contains("run one daemon per state directory"),
        "{stderr}"
    );
    emulator.release_held();
    let first = wait(first).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(emulator.orders().len(), 1);
}

/// The config of [`write_config`] on a shared PostgreSQL ledger at `url`, with the failover
/// tests' timings (lease 6 s, deadline 4 s, retry 1 s; RenewInstance's read timeout under the
/// deadline, as `[ha]` requires).
fn write_shared_config(dir: &Path, emulator: &EmulatorHandle, url: &str) -> std::path::PathBuf {
    let path = write_config(dir, emulator);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[[policies]]",
        &format!(
            "[accounts.read_timeouts]\nRenewInstance = \"3s\"\n[ledger]\nbackend = \"postgres\"\nurl = \"{url}\"\n[ha]\nlease_duration = \"6s\"\nrenew_deadline = \"4s\"\nretry_period = \"1s\"\n[[policies]]"
        ),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The money path of the test above on a PostgreSQL ledger: the killed process's intent is in
/// the shared ledger; its lease, held by the dead process, keeps a second `once` from acting
/// (exit 75, nothing sent) until it expires; then the same token is resent — one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_ledger_a_killed_process_blocks_others_until_its_lease_expires_then_its_token_is_resent()
 {
    let emulator = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let url = support::postgres::fresh_database().await;
    let config = write_shared_config(dir.path(), &emulator, &url);
    emulator.add_fault(FaultSpec::hold(Action::RenewInstance));
    let mut child = once(&config).spawn().unwrap();
    assert!(
        emulator.wait_for_held(1, Duration::from_secs(60)).await,
        "the renewal never arrived"
    );
    child.kill().unwrap(); // SIGKILL, lease held
    assert!(!wait(child).await.status.success());
    emulator.release_held();
    assert!(
        emulator
            .wait_for(|c| c.answered() >= 4, Duration::from_secs(30))
            .await
    );
    let orders = emulator.orders();
    assert_eq!(orders.len(), 1);
    let shared = || Ledger::open_postgres(&url, Default::default(), 1).unwrap();
    let records = shared().money_records(Some("i-due")).unwrap();
    assert_eq!((records.len(), records[0].status.as_str()), (1, "sent"));
    assert_eq!(records[0].client_token, orders[0].client_token);

    // The dead process's term has not expired: a second process does nothing, says why.
    let blocked = wait(once(&config).spawn().unwrap()).await;
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    assert_eq!(blocked.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("another replica holds the leader lease"),
        "{stderr}"
    );
    assert_eq!(emulator.calls().count(Action::RenewInstance), 1);

    // Once it expires (6 s), a run takes the lease and resends the same token.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rerun = loop {
        let out = wait(once(&config).spawn().unwrap()).await;
        if out.status.code() != Some(75) || tokio::time::Instant::now() > deadline {
            break out;
        }
    };
    let stdout = String::from_utf8_lossy(&rerun.stdout);
    assert_eq!(
        rerun.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert!(stdout.contains("1 renewed"), "{stdout}");
    assert_eq!(emulator.calls().count(Action::RenewInstance), 2);
    assert_eq!(emulator.orders(), orders, "one order, no second charge");
    let records = shared().money_records(Some("i-due")).unwrap();
    assert_eq!(
        (
            records.len(),
            records[0].order_id.as_deref(),
            records[0].attempts
        ),
        (1, Some(orders[0].order_id.as_str()), 2)
    );
    // Each attempt carries the epoch of the term that sent it: the dead process's and then
    // the next one's.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let epochs: Vec<i64> = client
        .query("SELECT epoch FROM attempts ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(epochs.len(), 2);
    assert!(epochs[0] < epochs[1], "{epochs:?}");
    // `status` reads the shared ledger.
    let status = Command::new(env!("CARGO_BIN_EXE_ecs-renewd"))
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("i-due"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}
