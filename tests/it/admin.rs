//! The admin HTTP server under clients that misbehave: a request head sent a byte at a time,
//! hundreds of idle sockets, a scraper that stops reading in the middle of a large /metrics;
//! /status in pages with filters; the optional bearer token (and its reload). The daemon runs
//! in process against the emulator; every socket is on 127.0.0.1.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use ecs_emulator::EmulatorHandle;
use ecs_renewd::cloud::credentials::Environment;
use ecs_renewd::config::Config;
use ecs_renewd::daemon::{self, Clocks, ConfigSource, Setup, Signals, TickSource, Ticks};
use ecs_renewd::ledger::{Ledger, StatusRow};
use ecs_renewd::reconcile::PassSummary;
use ecs_wire::clock::SystemClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use support::{HARNESS_KEY, harness_fleet, instance_spec};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "admin-token-0123456789abcdef";

/// Status lines written straight into the ledger before the daemon starts, under a source the
/// daemon does not scan (so its passes leave them alone).
const SEEDED: usize = 20_000;

struct Admin {
    addr: SocketAddr,
    metrics: Arc<ecs_renewd::Metrics>,
    passes: mpsc::UnboundedReceiver<PassSummary>,
    reload: mpsc::Sender<()>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), ecs_renewd::ledger::LedgerError>>>,
    _dir: tempfile::TempDir,
    _emulator: EmulatorHandle,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn seeded_row(i: usize) -> StatusRow {
    let at = |s| chrono::Utc.timestamp_opt(s, 0).unwrap();
    StatusRow {
        account: "seeded".into(),
        region: "cn-seed".into(),
        instance_id: format!("i-seed-{i:06}"),
        name: format!("seeded instance number {i}"),
        expires_at: at(1_900_000_000 + i as i64),
        policy: Some("renew".into()),
        state: if i.is_multiple_of(2) {
            ecs_renewd::InstanceState::Failed
        } else {
            ecs_renewd::InstanceState::Backoff
        },
        decision: ecs_renewd::NextAction::Renew,
        due_at: Some(at(1_899_000_000)),
        reason: "seeded for the admin tests".into(),
        failed_attempts: 3,
        next_retry_at: Some(at(1_899_500_000)),
        drift: true,
        deduction_overdue: true,
        last_outcome: None,
        updated_at: at(1_800_000_000),
    }
}

fn private_file(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

fn config_text(emulator: &EmulatorHandle, dir: &Path, admin_extra: &str) -> String {
    format!(
        "[daemon]\nschedule = \"0 0 * * * *\"\njitter = \"0s\"\nstate_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{admin_extra}\n[scan]\nregions = [\"cn-hangzhou\"]\n[[accounts]]\nname = \"main\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"env\"\n[accounts.rate_limit]\nper_second = 100\nburst = 10\n[[policies]]\nname = \"observe\"\naction = \"observe\"\n",
        dir.join("state").display(),
        emulator.url()
    )
}

fn env() -> Environment {
    Environment::from_pairs([
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", HARNESS_KEY.0),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", HARNESS_KEY.1),
    ])
}

async fn start_with(admin_extra: &str, seed: usize) -> Result<Admin, daemon::DaemonError> {
    let mut fleet = harness_fleet(
        "2000-01-01T00:00:00Z",
        1000.0,
        vec![ecs_emulator::settings::InstanceSpec {
            expires_at: None,
            expires_in: Some("20d".into()),
            ..instance_spec("i-main-1", "2000-01-01T00:00Z")
        }],
    );
    fleet.settings.clock_start = None;
    fleet.settings.clock_speed = 1.0;
    let emulator = ecs_emulator::start(fleet, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    if seed > 0 {
        let ledger = Ledger::open(&dir.path().join("state")).unwrap();
        let rows: Vec<StatusRow> = (0..seed).map(seeded_row).collect();
        ledger.write_status(&rows, 1).unwrap();
    }
    let admin_extra = admin_extra.replace("{dir}", &dir.path().display().to_string());
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_text(&emulator, dir.path(), &admin_extra)).unwrap();
    let config = Config::load(&path, &env()).unwrap();
    let (tick_tx, tick_rx) = mpsc::channel(1);
    let (pass_tx, passes) = mpsc::unbounded_channel();
    let (reload, reload_rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let running = daemon::start(Setup {
        config: ConfigSource {
            config,
            path,
            env: env(),
        },
        clocks: Clocks {
            business: Arc::new(SystemClock),
            wall: Arc::new(SystemClock),
        },
        signals: Signals {
            stop: stop.clone(),
            reload: reload_rx,
        },
        ticks: Ticks {
            source: TickSource::Manual(tick_tx, tick_rx),
            watchdog_every: Duration::from_millis(50),
        },
        admin_listener: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        passes: Some(pass_tx),
    })
    .await?;
    let mut admin = Admin {
        addr: running.admin_addr,
        metrics: running.metrics.clone(),
        passes,
        reload,
        stop,
        task: Some(running.task),
        _dir: dir,
        _emulator: emulator,
    };
    tokio::time::timeout(WAIT, admin.passes.recv())
        .await
        .expect("the start-up pass within the timeout")
        .expect("the daemon runs");
    Ok(admin)
}

impl Admin {
    /// Connections the server closed for `reason` so far.
    fn closed(&self, reason: &str) -> u64 {
        self.metrics
            .admin_connections_closed_total
            .with_label_values(&[reason])
            .get()
    }

    /// Waits until at least `count` connections were closed for `reason`.
    async fn wait_closed(&self, reason: &str, count: u64) {
        let reached = tokio::time::timeout(WAIT, async {
            let mut poll = tokio::time::interval(Duration::from_millis(20));
            while self.closed(reason) < count {
                poll.tick().await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "{reason}: {} closed, {count} expected",
            self.closed(reason)
        );
    }
}

async fn start(admin_extra: &str, seed: usize) -> Admin {
    start_with(admin_extra, seed).await.unwrap()
}

/// GET `path` with an optional bearer token: status and body.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .unwrap()
        .get(format!("http://{addr}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Reads until the server closes the connection (EOF or reset); the bytes read.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_a_byte_a_second_is_cut_off_while_probes_answer() {
    let admin = start("header_read_timeout = \"2s\"", 0).await;
    let mut slow = TcpStream::connect(admin.addr).await.unwrap();
    let (mut reader, mut writer) = slow.split();
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n\r\n";
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        for byte in head {
            tokio::select! {
                _ = ticks.tick() => {}
                read = reader.read_u8() => return read.is_err(),
            }
            if writer.write_all(&[*byte]).await.is_err() {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "the server kept a connection that trickles its request head"
    );
    admin.wait_closed("header_timeout", 1).await;
    assert_eq!(
        get(admin.addr, "/healthz", None).await,
        (200, "ok\n".into())
    );

    // A request with a body is refused before anything reads it.
    let response = reqwest::Client::new()
        .get(format!("http://{}/healthz", admin.addr))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_sockets_do_not_keep_probes_out() {
    let admin = start("max_connections = 16\nheader_read_timeout = \"30s\"", 0).await;
    let mut idle = Vec::new();
    for i in 0..300u32 {
        let mut stream = TcpStream::connect(admin.addr).await.unwrap();
        // Half of them have started a request head: hyper would keep those open on a
        // graceful close, so an evicted connection is closed outright.
        if i.is_multiple_of(2) {
            stream.write_all(b"GET /stat").await.unwrap();
        }
        idle.push(stream);
    }
    // Probes still get in: the oldest idle connections make room.
    for _ in 0..5 {
        assert_eq!(
            get(admin.addr, "/healthz", None).await,
            (200, "ok\n".into())
        );
    }
    // And the server holds at most its cap: all but the newest few idle sockets were closed
    // (long before the 30 s head timeout).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let ends = idle
        .iter_mut()
        .map(|stream| tokio::time::timeout_at(deadline, until_closed(stream)));
    let closed = futures_util::future::join_all(ends)
        .await
        .iter()
        .filter(|ended| ended.is_ok())
        .count();
    assert!(
        closed >= 300 - 16,
        "only {closed} of 300 idle sockets were closed"
    );
    assert!(admin.closed("evicted") >= 300 - 16);
}

/// Asks for /metrics with a tiny receive window and then reads nothing.
async fn stalled_scrape(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraper_that_stops_reading_blocks_no_other_scrape() {
    let admin = start("write_timeout = \"2s\"", SEEDED).await;
    let mut stalled = stalled_scrape(admin.addr).await;
    // Another scrape and a /status page complete while the first client takes nothing.
    let (status, metrics) = get(admin.addr, "/metrics", None).await;
    assert_eq!(status, 200);
    let expiries = metrics
        .lines()
        .filter(|l| l.starts_with("ecs_renewd_instance_expiration_timestamp_seconds{"))
        .count();
    assert_eq!(expiries, SEEDED + 1, "every instance once");
    for family in [
        "instance_expiration_timestamp_seconds",
        "instance_state",
        "instance_deduction_overdue",
    ] {
        let header = format!("# TYPE ecs_renewd_{family} gauge");
        assert_eq!(metrics.matches(&header).count(), 1, "{family}: one header");
    }
    let (status, _) = get(admin.addr, "/status?limit=10", None).await;
    assert_eq!(status, 200);
    // The stalled client is cut off after the write timeout, mid-answer.
    admin.wait_closed("write_timeout", 1).await;
    let taken = tokio::time::timeout(WAIT, until_closed(&mut stalled))
        .await
        .expect("the stalled scrape was cut off");
    assert!(
        taken.len() < metrics.len(),
        "the stalled client got the whole answer ({} bytes)",
        taken.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraper_that_reads_slowly_but_steadily_is_cut_off_at_the_answer_timeout() {
    let admin = start("answer_timeout = \"2s\"", SEEDED).await;
    let mut slow = stalled_scrape(admin.addr).await;
    // A little every 50 ms: never a stall as long as the write timeout (30 s). Read until
    // the server has given the answer up (what it had written before stays queued in the
    // kernel for the client to read; that is not waited for).
    let taken = tokio::time::timeout(WAIT, async {
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        let mut buf = [0u8; 4096];
        let mut taken = 0;
        while admin.closed("answer_timeout") == 0 {
            ticks.tick().await;
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => taken += n,
            }
        }
        taken
    })
    .await
    .expect("the slow scrape was ended");
    admin.wait_closed("answer_timeout", 1).await;
    assert!(taken < 15_000_000, "the slow client got the whole answer");
    assert_eq!(admin.closed("write_timeout"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_comes_in_pages_with_filters() {
    let admin = start("", 2_500).await;
    let page = |path: String| async move {
        let (status, body) = get(admin.addr, &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    // The default page is 500 lines; following next_after visits every line once, in order.
    let mut seen = Vec::new();
    let mut path = "/status".to_owned();
    loop {
        let json = page(path.clone()).await;
        let instances = json["instances"].as_array().unwrap();
        assert!(instances.len() <= 500);
        seen.extend(
            instances
                .iter()
                .map(|i| i["instance_id"].as_str().unwrap().to_owned()),
        );
        match json.get("next_after").and_then(|n| n.as_str()) {
            Some(next) => {
                path = format!(
                    "/status?after={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                )
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 2_500 + 1);
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no line twice");
    // Filters.
    let failed = page("/status?account=seeded&state=failed&limit=5000".into()).await;
    let failed = failed["instances"].as_array().unwrap();
    assert_eq!(failed.len(), 1_250);
    assert!(failed.iter().all(|i| i["state"] == "failed"));
    let main = page("/status?account=main".into()).await;
    assert_eq!(main["instances"].as_array().unwrap().len(), 1);
    let region = page("/status?region=cn-seed&limit=3".into()).await;
    assert_eq!(region["instances"].as_array().unwrap().len(), 3);
    assert!(region["next_after"].is_string());
    // Mistakes are 400s that say what is allowed.
    for bad in [
        "/status?limit=0",
        "/status?limit=5001",
        "/status?after=nonsense",
        "/status?acount=main",
    ] {
        let (status, body) = get(admin.addr, bad, None).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("parameters: account, region, state, limit, after"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_metrics_and_status_but_not_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    private_file(&token_file, &format!("{TOKEN}\n"));
    let admin = start(
        &format!("bearer_token_file = \"{}\"", token_file.display()),
        0,
    )
    .await;
    for path in ["/metrics", "/status"] {
        let response = reqwest::get(format!("http://{}{path}", admin.addr))
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{path}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"ecs-renewd\""
        );
        assert_eq!(
            get(admin.addr, path, Some("wrong-token-0123456789"))
                .await
                .0,
            401
        );
        assert_eq!(get(admin.addr, path, Some(TOKEN)).await.0, 200, "{path}");
    }
    assert_eq!(get(admin.addr, "/healthz", None).await.0, 200);
    assert_ne!(get(admin.addr, "/readyz", None).await.0, 401);

    // A reload reads the token file again.
    let next = "rotated-token-abcdef0123456789";
    private_file(&token_file, next);
    admin.reload.send(()).await.unwrap();
    let rotated = tokio::time::timeout(WAIT, async {
        loop {
            if get(admin.addr, "/metrics", Some(next)).await.0 == 200 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(rotated.is_ok(), "the new token was not taken up");
    assert_eq!(get(admin.addr, "/metrics", Some(TOKEN)).await.0, 401);
    drop(admin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_open_to_others_or_too_short_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let loose = dir.path().join("loose.token");
    private_file(&loose, TOKEN);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let error = start_with(&format!("bearer_token_file = \"{}\"", loose.display()), 0)
        .await
        .err()
        .expect("refused");
    assert_eq!(
        error.to_string(),
        format!(
            "[admin] bearer_token_file: the admin bearer token file {0} is open to other users (mode 0644), so ecs-renewd refuses to use it — run `chmod 600 {0}` (and check who may have read it)",
            loose.display()
        )
    );
    let short = dir.path().join("short.token");
    private_file(&short, "abc");
    let error = start_with(&format!("bearer_token_file = \"{}\"", short.display()), 0)
        .await
        .err()
        .expect("refused");
    assert!(
        error
            .to_string()
            .contains("has 3 characters; use at least 16"),
        "{error}"
    );
}

#[test]
fn admin_limits_that_would_lock_everyone_out_are_refused() {
    let text = "[admin]\nmax_connections = 2\nmax_status_requests = 0\nheader_read_timeout = \"0s\"\n[[accounts]]\nname = \"main\"\n[accounts.credentials]\nsource = \"env\"\n";
    let error = Config::parse(text, &PathBuf::from("admin.toml"), &env())
        .expect_err("refused")
        .to_string();
    for key in [
        "admin.header_read_timeout",
        "admin.max_connections",
        "admin.max_status_requests",
    ] {
        assert!(error.contains(key), "{key} missing from: {error}");
    }
}
