//! The daemon. In process (ticks driven directly): no overlapping passes under a tick storm,
//! a due retry wakes the daemon without a tick, a stalled scheduler is caught by the watchdog.
//! As a process (the real binary against the emulator): scraped metric values, /readyz
//! turning unready when credentials are revoked, SIGTERM in the middle of a pass, SIGHUP with
//! a broken file.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use ecs_emulator::settings::InstanceSpec;
use ecs_emulator::{EmulatorConfig, EmulatorHandle, FaultSpec};
use ecs_renewd::cloud::credentials::Environment;
use ecs_renewd::config::Config;
use ecs_renewd::daemon::{self, Clocks, ConfigSource, Setup, Signals, TickSource, Ticks};
use ecs_renewd::daemon::{Tick, TickReason};
use ecs_renewd::ledger::Ledger;
use ecs_renewd::reconcile::PassSummary;
use ecs_wire::Action;
use ecs_wire::clock::{Clock, SystemClock, VirtualClock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use support::{HARNESS_KEY, harness_fleet};

const WAIT: Duration = Duration::from_secs(60);

/// An emulator on real time (the binary signs with the wall clock).
async fn real_time_emulator(instances: Vec<InstanceSpec>, balance: f64) -> EmulatorHandle {
    let mut fleet: EmulatorConfig = harness_fleet("2000-01-01T00:00:00Z", balance, instances);
    fleet.settings.clock_start = None;
    fleet.settings.clock_speed = 1.0;
    ecs_emulator::start(fleet, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn config_text(
    emulator: &EmulatorHandle,
    state: &Path,
    schedule: &str,
    admin: &str,
    extra: &str,
) -> String {
    format!(
        "[daemon]\nschedule = \"{schedule}\"\njitter = \"0s\"\nstate_dir = \"{}\"\n[admin]\nlisten = \"{admin}\"\n[scan]\nregions = [\"cn-hangzhou\"]\n[retry]\nverify_timeout = \"2s\"\nverify_interval = \"100ms\"\n[[accounts]]\nname = \"main\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"env\"\n[accounts.rate_limit]\nper_second = 100\nburst = 10\n[accounts.call_retry]\nmax_attempts = 1\n{extra}",
        state.display(),
        emulator.url()
    )
}

const RENEW: &str = "[[policies]]\nname = \"renew-all\"\naction = \"renew\"\n";

// ---------------------------------------------------------------- in process

struct InProcess {
    running: daemon::Running,
    ticks: mpsc::Sender<Tick>,
    passes: mpsc::UnboundedReceiver<PassSummary>,
    stop: CancellationToken,
    _state: tempfile::TempDir,
}

async fn in_process(
    emulator: &EmulatorHandle,
    clock: Arc<dyn Clock>,
    wall: Arc<dyn Clock>,
    extra: &str,
) -> InProcess {
    let state = tempfile::tempdir().unwrap();
    let text = config_text(
        emulator,
        state.path(),
        "0 */15 * * * *",
        "127.0.0.1:0",
        extra,
    );
    let env = Environment::from_pairs([
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", HARNESS_KEY.0),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", HARNESS_KEY.1),
    ]);
    let config = Config::parse(&text, Path::new("daemon.toml"), &env).unwrap();
    let (tick_tx, tick_rx) = mpsc::channel(1);
    let (pass_tx, passes) = mpsc::unbounded_channel();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let running = daemon::start(Setup {
        config: ConfigSource {
            config,
            path: PathBuf::from("daemon.toml"),
            env,
        },
        clocks: Clocks {
            business: clock,
            wall,
        },
        signals: Signals {
            stop: stop.clone(),
            reload: reload_rx,
        },
        ticks: Ticks {
            source: TickSource::Manual(tick_tx.clone(), tick_rx),
            watchdog_every: Duration::from_millis(50),
        },
        admin_listener: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        passes: Some(pass_tx),
    })
    .await
    .unwrap();
    InProcess {
        running,
        ticks: tick_tx,
        passes,
        stop,
        _state: state,
    }
}

async fn next_pass(passes: &mut mpsc::UnboundedReceiver<PassSummary>) -> PassSummary {
    tokio::time::timeout(WAIT, passes.recv())
        .await
        .expect("a pass within the timeout")
        .expect("the daemon is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_storm_never_runs_two_passes_at_once() {
    let emulator =
        real_time_emulator(vec![InstanceSpec::prepaid("i-a").expires_in("20d")], 1000.0).await;
    let mut d = in_process(
        &emulator,
        Arc::new(SystemClock),
        Arc::new(SystemClock),
        RENEW,
    )
    .await;
    let startup = next_pass(&mut d.passes).await;
    // Hold the next pass's scan in the emulator, then storm the loop with ticks while that
    // pass runs: the pass lasts exactly as long as the storm, whatever the machine's speed.
    emulator.add_fault(FaultSpec::hold(Action::DescribeInstances));
    d.ticks
        .send(Tick {
            reason: TickReason::Cron,
            at: SystemClock.now(),
        })
        .await
        .unwrap();
    assert!(
        emulator.wait_for_held(1, WAIT).await,
        "the second pass started"
    );
    // The tick above may have arrived while the loop was still winding up the start-up pass,
    // and then it was (rightly) folded into a follow-up; count only the storm from here.
    let coalesced_before = metric(
        &d.running.metrics.render(&d.running.ledger),
        "ecs_renewd_ticks_coalesced_total",
    )
    .unwrap();
    let mut sent = 0;
    for _ in 0..200 {
        if d.ticks
            .try_send(Tick {
                reason: TickReason::Cron,
                at: SystemClock.now(),
            })
            .is_ok()
        {
            sent += 1;
        }
    }
    emulator.release_held();
    let second = next_pass(&mut d.passes).await;
    let third = next_pass(&mut d.passes).await;
    assert!(
        startup.finished_at <= second.started_at && second.finished_at <= third.started_at,
        "passes never overlap"
    );
    assert!(
        sent <= 1,
        "the bounded channel holds one tick; the rest could not be queued"
    );
    let text = d.running.metrics.render(&d.running.ledger);
    assert!(
        text.contains("ecs_renewd_passes_total{result=\"ok\"} 3"),
        "200 ticks, one follow-up pass: {text}"
    );
    assert_eq!(
        metric(&text, "ecs_renewd_ticks_coalesced_total"),
        Some(coalesced_before + f64::from(sent)),
        "every tick queued during the pass is counted as coalesced: {text}"
    );
    d.stop.cancel();
    d.running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_ticks_are_coalesced_and_counted() {
    let emulator =
        real_time_emulator(vec![InstanceSpec::prepaid("i-a").expires_in("20d")], 1000.0).await;
    let mut d = in_process(
        &emulator,
        Arc::new(SystemClock),
        Arc::new(SystemClock),
        RENEW,
    )
    .await;
    next_pass(&mut d.passes).await;
    emulator.add_fault(FaultSpec::hold(Action::DescribeInstances));
    d.ticks
        .send(Tick {
            reason: TickReason::Cron,
            at: SystemClock.now(),
        })
        .await
        .unwrap();
    assert!(
        emulator.wait_for_held(1, WAIT).await,
        "the second pass started"
    );
    // The tick above may have been folded into a follow-up of the start-up pass (it can arrive
    // while the loop winds that pass up); count from here.
    let coalesced_before = metric(
        &d.running.metrics.render(&d.running.ledger),
        "ecs_renewd_ticks_coalesced_total",
    )
    .unwrap();
    // During the pass a tick arrives: it is folded into one follow-up pass and counted.
    d.ticks
        .send(Tick {
            reason: TickReason::Cron,
            at: SystemClock.now(),
        })
        .await
        .unwrap();
    emulator.release_held();
    next_pass(&mut d.passes).await;
    next_pass(&mut d.passes).await;
    assert_eq!(
        metric(
            &d.running.metrics.render(&d.running.ledger),
            "ecs_renewd_ticks_coalesced_total"
        ),
        Some(coalesced_before + 1.0)
    );
    d.stop.cancel();
    d.running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_retry_wakes_the_daemon_without_a_tick() {
    // The business clock runs 600x: the 5-minute backoff passes in half a second.
    let clock = Arc::new(VirtualClock::running(SystemClock.now(), 600.0));
    let mut fleet: EmulatorConfig = harness_fleet(
        "2000-01-01T00:00:00Z",
        0.0,
        vec![InstanceSpec::prepaid("i-poor").expires_in("3d")],
    );
    fleet.settings.clock_start = None;
    fleet.settings.renew_visibility_delay = Duration::ZERO;
    let emulator =
        ecs_emulator::start_with_clock(fleet, "127.0.0.1:0".parse().unwrap(), clock.clone())
            .await
            .unwrap();
    let mut d = in_process(&emulator, clock.clone(), Arc::new(SystemClock), RENEW).await;
    let first = next_pass(&mut d.passes).await;
    assert_eq!(first.renew_failed, 1, "{first:?}");
    emulator.with_world(|w| w.set_balance("main", 100_000));
    // No tick is ever sent: the ledger's retry time wakes the loop.
    let second = next_pass(&mut d.passes).await;
    assert_eq!(second.renewed, 1, "{second:?}");
    assert_eq!(emulator.orders().len(), 1);
    d.stop.cancel();
    d.running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_that_stops_ticking_is_caught_by_the_watchdog() {
    let emulator =
        real_time_emulator(vec![InstanceSpec::prepaid("i-a").expires_in("20d")], 1000.0).await;
    // The cron wall clock is virtual and frozen: the test moves it.
    let wall = Arc::new(VirtualClock::frozen(
        ecs_wire::time::parse("2026-03-10T00:01:00Z").unwrap(),
    ));
    let mut d = in_process(&emulator, Arc::new(SystemClock), wall.clone(), RENEW).await;
    next_pass(&mut d.passes).await;
    assert!(
        d.running
            .metrics
            .render(&d.running.ledger)
            .contains("ecs_renewd_scheduler_missed_ticks_total 0")
    );
    // The 00:15 tick never comes; past the margin (half the interval, at most 60 s) the
    // watchdog runs the pass itself.
    wall.set(ecs_wire::time::parse("2026-03-10T00:16:01Z").unwrap());
    next_pass(&mut d.passes).await;
    assert!(
        d.running
            .metrics
            .render(&d.running.ledger)
            .contains("ecs_renewd_scheduler_missed_ticks_total 1")
    );
    d.stop.cancel();
    d.running.task.await.unwrap().unwrap();
}

// ---------------------------------------------------------------- as a process

/// A running `ecs-renewd run` whose log lines (JSON) arrive on a channel.
struct Process {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    admin: String,
    config: PathBuf,
    state: PathBuf,
}

fn spawn_run(dir: &Path, emulator: &EmulatorHandle, extra: &str) -> Process {
    let state = dir.join("state");
    let config = dir.join("config.toml");
    let admin = format!("127.0.0.1:{}", support::free_port());
    std::fs::write(
        &config,
        config_text(emulator, &state, "*/2 * * * * *", &admin, extra),
    )
    .unwrap();
    start_process(&config, &state, &admin)
}

fn start_process(config: &Path, state: &Path, admin: &str) -> Process {
    let (child, lines) = support::spawn_daemon(config);
    Process {
        child,
        lines,
        admin: admin.to_owned(),
        config: config.to_owned(),
        state: state.to_owned(),
    }
}

impl Process {
    /// Waits for a log line containing `needle`; returns it.
    async fn wait_for_log(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no log line containing {needle:?}"),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exit(mut self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || self.child.wait().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_show_renewed_failing_and_excluded_instances() {
    let skip = InstanceSpec {
        tags: [("ecs-renewd:skip".to_string(), String::new())].into(),
        ..InstanceSpec::prepaid("i-skip").expires_in("3d")
    };
    let emulator = real_time_emulator(
        vec![
            InstanceSpec::prepaid("i-fail").expires_in("2d"),
            InstanceSpec::prepaid("i-ok").expires_in("4d"),
            skip,
        ],
        1000.0,
    )
    .await;
    // The first renewal (the earliest expiry) is refused for lack of funds.
    emulator.add_fault(FaultSpec::fail_next(
        Action::RenewInstance,
        1,
        "InvalidAccountStatus.NotEnoughBalance",
        403,
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = spawn_run(dir.path(), &emulator, RENEW);
    daemon.wait_for_log("pass finished").await;
    let (status, text) = daemon.get("/metrics").await;
    assert_eq!(status, 200);
    let labels = |id: &str, policy: &str| {
        format!("account=\"main\",region=\"cn-hangzhou\",instance_id=\"{id}\",policy=\"{policy}\"")
    };
    assert_eq!(
        metric(
            &text,
            &format!(
                "ecs_renewd_instance_state{{{},state=\"pending_verification\"}}",
                labels("i-ok", "renew-all")
            )
        )
        .or_else(|| metric(
            &text,
            &format!(
                "ecs_renewd_instance_state{{{},state=\"ok\"}}",
                labels("i-ok", "renew-all")
            )
        )),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "ecs_renewd_instance_state{{{},state=\"backoff\"}}",
                labels("i-fail", "renew-all")
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "ecs_renewd_instance_failed_attempts{{{}}}",
                labels("i-fail", "renew-all")
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "ecs_renewd_instance_state{{{},state=\"excluded\"}}",
                labels("i-skip", "none")
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            &format!(
                "ecs_renewd_instance_expiration_timestamp_seconds{{{}}}",
                labels("i-skip", "none")
            )
        )
        .is_some()
    );
    assert_eq!(
        metric(
            &text,
            "ecs_renewd_renewals_total{class=\"funds\",result=\"failed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "ecs_renewd_renewals_total{class=\"none\",result=\"ok\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "ecs_renewd_source_up{account=\"main\",region=\"cn-hangzhou\"}"
        ),
        Some(1.0)
    );
    assert_eq!(metric(&text, "ecs_renewd_dry_run"), Some(0.0));
    assert_eq!(
        metric(&text, "ecs_renewd_schedule_interval_seconds"),
        Some(2.0)
    );
    // The one process of a SQLite ledger leads alone, under epoch 0, from its start.
    for (name, value) in [
        ("ecs_renewd_leader", 1.0),
        ("ecs_renewd_leader_epoch", 0.0),
        ("ecs_renewd_leader_transitions_total", 1.0),
        ("ecs_renewd_fenced_writes_total", 0.0),
        ("ecs_renewd_lease_renewals_total{result=\"lost\"}", 0.0),
    ] {
        assert_eq!(metric(&text, name), Some(value), "{name}: {text}");
    }
    assert!(text.contains("ecs_renewd_api_requests_total{action=\"RenewInstance\",class=\"funds\",region=\"cn-hangzhou\"} 1"), "{text}");
    let (status, body) = daemon.get("/status").await;
    assert_eq!(status, 200);
    let status_json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status_json["instances"].as_array().unwrap().len(), 3);
    assert_eq!(daemon.get("/healthz").await.0, 200);
    daemon.signal("TERM");
    assert!(daemon.exit().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_when_credentials_are_revoked() {
    let emulator =
        real_time_emulator(vec![InstanceSpec::prepaid("i-a").expires_in("20d")], 1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = spawn_run(dir.path(), &emulator, RENEW);
    daemon.wait_for_log("pass finished").await;
    let (status, body) = daemon.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    emulator.control().revoke_key(HARNESS_KEY.0).await.unwrap();
    daemon.wait_for_log("scanning a source failed").await;
    daemon.wait_for_log("pass finished").await;
    let (status, body) = daemon.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("source main/cn-hangzhou: last scan failed (permission)"),
        "{body}"
    );
    assert!(body.contains("InvalidAccessKeyId.NotFound"), "{body}");
    let (_, text) = daemon.get("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "ecs_renewd_source_up{account=\"main\",region=\"cn-hangzhou\"}"
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_a_pass_leaves_the_ledger_consistent_and_the_next_start_finishes()
{
    let instances = (1..=4)
        .map(|n| InstanceSpec::prepaid(&format!("i-{n}")).expires_in(&format!("{}d", n + 1)))
        .collect();
    let emulator = real_time_emulator(instances, 1000.0).await;
    // The first renewal is held in the emulator until the daemon has taken the stop request.
    emulator.add_fault(FaultSpec::hold(Action::RenewInstance));
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = spawn_run(dir.path(), &emulator, RENEW);
    assert!(emulator.wait_for_held(1, WAIT).await);
    daemon.signal("TERM");
    daemon
        .wait_for_log("stop requested during a pass: no new ECS call starts")
        .await;
    emulator.release_held();
    let (config, state, admin) = (
        daemon.config.clone(),
        daemon.state.clone(),
        daemon.admin.clone(),
    );
    let status = daemon.exit().await;
    assert!(status.success(), "{status:?}");
    // The call in flight finished and was recorded; no new call started after SIGTERM.
    assert_eq!(emulator.calls().count(Action::RenewInstance), 1);
    assert_eq!(emulator.orders().len(), 1);
    {
        let ledger = Ledger::open_read_only(&state).unwrap().unwrap();
        let records = ledger.money_records(None).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            records[0].status, "ordered",
            "recorded with its order: {records:?}"
        );
        assert_eq!(
            records[0].order_id.as_deref(),
            Some(emulator.orders()[0].order_id.as_str())
        );
    }
    let mut again = start_process(&config, &state, &admin);
    again.wait_for_log("pass finished").await;
    let orders = emulator.orders();
    assert_eq!(
        orders.len(),
        4,
        "the restart renewed the other three, and only them"
    );
    let ids: std::collections::HashSet<_> = orders.iter().map(|o| o.instance_id.clone()).collect();
    assert_eq!(ids.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_file_keeps_serving_the_old_config() {
    let emulator =
        real_time_emulator(vec![InstanceSpec::prepaid("i-a").expires_in("20d")], 1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = spawn_run(dir.path(), &emulator, RENEW);
    daemon.wait_for_log("pass finished").await;
    let good = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &daemon.config,
        good.replace("action = \"renew\"", "action = \"renew-now\""),
    )
    .unwrap();
    daemon.signal("HUP");
    let line = daemon.wait_for_log("config reload failed").await;
    assert!(line.contains("unknown value \\\"renew-now\\\""), "{line}");
    let (_, text) = daemon.get("/metrics").await;
    assert_eq!(
        metric(&text, "ecs_renewd_config_last_reload_successful"),
        Some(0.0)
    );
    daemon.wait_for_log("pass finished").await;
    assert_eq!(daemon.get("/healthz").await.0, 200);
    // A good file reloads.
    std::fs::write(
        &daemon.config,
        good.replace("jitter = \"0s\"", "jitter = \"0s\"\ndry_run = true"),
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("config reloaded").await;
    let (_, text) = daemon.get("/metrics").await;
    assert_eq!(
        metric(&text, "ecs_renewd_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "ecs_renewd_dry_run"), Some(1.0));
}
