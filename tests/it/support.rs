//! Shared test helpers: a scripted loopback HTTP stub that records every request, helpers to
//! build clients against it, the emulator harness and fleet builders, and the one log capture.

pub mod postgres;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

/// One request as the stub saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, `PUT`...
    pub method: String,
    /// The URL path, without the query string.
    pub path: String,
    /// Lower-cased header names.
    pub headers: HashMap<String, String>,
    /// Query and form-body parameters, decoded, in order.
    pub params: Vec<(String, String)>,
    /// When it arrived.
    pub at: Instant,
}

impl Recorded {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body text, sent as is.
    pub body: String,
    /// Delay before answering.
    pub delay: Duration,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    /// A raw answer.
    pub fn raw(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// An ECS error answer.
    pub fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::json(
            status,
            serde_json::json!({"RequestId": "REQ-ERR", "HostId": "ecs.aliyuncs.com", "Code": code, "Message": message}),
        )
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Answers after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

#[derive(Clone)]
struct StubState {
    handler: Arc<Handler>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// A loopback HTTP server answering with a handler of (request, index of the request).
pub struct Stub {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Stub {
    /// Starts a stub on 127.0.0.1, port 0.
    pub async fn start(
        handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> Stub {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = StubState {
            handler: Arc::new(handler),
            requests: requests.clone(),
        };
        let app = axum::Router::new().fallback(serve).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Stub {
            addr,
            requests,
            _server: server,
        }
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self._server.abort();
    }
}

async fn serve(State(state): State<StubState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut params: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    params.extend(form_urlencoded::parse(&bytes).into_owned());
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        params,
        at: Instant::now(),
    };
    let index = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(recorded.clone());
        requests.len() - 1
    };
    let reply = (state.handler)(&recorded, index);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        axum::http::StatusCode::from_u16(reply.status).unwrap(),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&value).unwrap(),
        );
    }
    response
}

/// The AccessKey the stub-based client tests sign with.
pub const TEST_KEY_ID: &str = "testid";
/// Its secret.
pub const TEST_SECRET: &str = "testsecret-value-123";
/// Its STS token.
pub const TEST_TOKEN: &str = "CAES-sts-token-value-456";

/// A client for account `main` against `base_url`, fast retries, no practical rate limit.
pub fn client_for(
    base_url: &str,
    retry: ecs_renewd::cloud::RetryPolicy,
) -> ecs_renewd::cloud::EcsClient {
    client_with(
        base_url,
        retry,
        TEST_KEY_ID,
        TEST_SECRET,
        Some(TEST_TOKEN),
        Arc::new(ecs_wire::clock::SystemClock),
    )
}

/// A client with the given key, token and clock.
pub fn client_with(
    base_url: &str,
    retry: ecs_renewd::cloud::RetryPolicy,
    key_id: &str,
    secret: &str,
    token: Option<&str>,
    clock: Arc<dyn ecs_wire::clock::Clock>,
) -> ecs_renewd::cloud::EcsClient {
    use ecs_renewd::cloud::Endpoint;
    use ecs_renewd::cloud::RateLimitConfig;
    use ecs_renewd::cloud::credentials::{CredentialProvider, Credentials};
    use ecs_renewd::cloud::{ClientSettings, shared_http_client};
    use ecs_wire::secret::Secret;

    let settings = ClientSettings {
        account: "main".into(),
        endpoint: Endpoint::parse(base_url).unwrap(),
        read_timeouts: Vec::new(),
        retry,
        rate_limit: RateLimitConfig {
            per_second: 10_000.0,
            burst: 100,
            ..RateLimitConfig::default()
        },
    };
    let credentials = CredentialProvider::fixed(
        Credentials {
            access_key_id: key_id.into(),
            access_key_secret: Secret::new(secret),
            security_token: token.map(Secret::new),
            expiration: None,
        },
        "test",
    );
    ecs_renewd::cloud::EcsClient::new(
        settings,
        shared_http_client(Duration::from_secs(2)),
        Arc::new(credentials),
        clock,
    )
}

/// Retries with tiny delays so tests are quick.
pub fn fast_retry(max_attempts: u32) -> ecs_renewd::cloud::RetryPolicy {
    ecs_renewd::cloud::RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
    }
}

/// A log capture for the current thread: events logged on this thread while the guard lives
/// are written, as text lines, into a shared buffer.
///
/// Every capture (this one and [`AllThreadLogs`]) goes through one global subscriber,
/// installed once, which routes each line to the capture installed on the emitting thread and
/// to the all-threads capture while one runs. A per-thread `set_default` subscriber is not
/// reliable when tests run in parallel: a callsite first registered by a test thread without a
/// subscriber can cache "never enabled" while another thread is installing its own, and that
/// thread's event is then silently dropped (tracing-core's interest cache; see
/// <https://docs.rs/tracing-core/latest/tracing_core/callsite/index.html>). The global
/// subscriber's filter is dynamic (asked at every event), so no callsite is ever cached as
/// disabled, and nothing is formatted while no capture wants it.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// The capture installed on this thread, if any.
    static THREAD_CAPTURE: std::cell::RefCell<Option<LogCapture>> =
        const { std::cell::RefCell::new(None) };
}

/// The all-threads capture while one runs.
static ALL_THREADS: Mutex<Option<LogCapture>> = Mutex::new(None);
/// Whether an all-threads capture runs (read at every event, so kept apart from the mutex).
static ALL_THREADS_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether any capture wants the events of the current thread.
fn capturing() -> bool {
    ALL_THREADS_ON.load(std::sync::atomic::Ordering::Relaxed)
        || THREAD_CAPTURE.with(|slot| slot.borrow().is_some())
}

/// Restores the thread's previous capture (normally none) when dropped.
pub struct CaptureGuard(Option<LogCapture>);

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        THREAD_CAPTURE.with(|slot| *slot.borrow_mut() = previous);
    }
}

/// The global writer: hands each line to the current thread's capture and to the all-threads
/// capture, or drops it.
#[derive(Clone, Copy)]
struct Routed;

impl std::io::Write for Routed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        THREAD_CAPTURE.with(|slot| {
            if let Some(capture) = slot.borrow().as_ref() {
                capture.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        if let Some(all) = ALL_THREADS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            all.0.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Routed {
    type Writer = Routed;
    fn make_writer(&'a self) -> Routed {
        *self
    }
}

/// Installs the global subscriber (once per test binary): every level, span events too (span
/// fields are where a leaked secret could hide), filtered by [`capturing`].
fn install_global_subscriber() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(Routed)
            .with_ansi(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|_, _| {
                capturing()
            }));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::set_global_default(subscriber)
            .expect("the log capture is the only global subscriber in the test binary");
    });
}

impl LogCapture {
    /// Installs the capture for the current thread (all levels) until the guard is dropped.
    pub fn install(&self) -> CaptureGuard {
        install_global_subscriber();
        let previous = THREAD_CAPTURE.with(|slot| slot.borrow_mut().replace(self.clone()));
        CaptureGuard(previous)
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A capture of every event from every thread (the ledger's writer thread and hyper's
/// internals included) while it lives, for checks that nothing anywhere logs a secret. Other
/// tests running meanwhile are captured too, which only widens such a check. One at a time:
/// a second waits for the first to end (`ALL_THREADS_TURN`).
pub struct AllThreadLogs {
    capture: LogCapture,
    /// Held while the capture lives; released when it is dropped.
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// Held by the one all-threads capture there may be at a time.
static ALL_THREADS_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl AllThreadLogs {
    /// Starts capturing, once any other all-threads capture has ended.
    pub fn start() -> AllThreadLogs {
        install_global_subscriber();
        let turn = ALL_THREADS_TURN.lock().unwrap_or_else(|p| p.into_inner());
        let capture = LogCapture::default();
        let mut slot = ALL_THREADS.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(capture.clone());
        ALL_THREADS_ON.store(true, std::sync::atomic::Ordering::Relaxed);
        AllThreadLogs {
            capture,
            _turn: turn,
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.capture.text()
    }
}

impl Drop for AllThreadLogs {
    fn drop(&mut self) {
        ALL_THREADS_ON.store(false, std::sync::atomic::Ordering::Relaxed);
        *ALL_THREADS.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// An in-process emulator and engine sharing one frozen virtual clock.
pub struct Harness {
    /// The running emulator; the config's one account (`main`) points at it.
    pub emulator: ecs_emulator::EmulatorHandle,
    /// The shared clock.
    pub clock: Arc<ecs_wire::clock::VirtualClock>,
    /// The engine built over the emulator, with its ledger in `state`.
    pub engine: ecs_renewd::reconcile::Engine,
    /// The state directory.
    pub state: tempfile::TempDir,
}

/// The account key the harness uses.
pub const HARNESS_KEY: (&str, &str) = ("LTAIharness", "harness-secret");

/// A fleet with one account (`main`, CNY) holding `instances`, at `now`.
pub fn harness_fleet(
    now: &str,
    balance: f64,
    instances: Vec<ecs_emulator::settings::InstanceSpec>,
) -> ecs_emulator::EmulatorConfig {
    use ecs_emulator::settings::{AccessKeySpec, AccountSpec};
    let mut config = ecs_emulator::EmulatorConfig {
        accounts: vec![AccountSpec {
            uid: None,
            roles: Vec::new(),
            members: Vec::new(),
            name: "main".into(),
            balance,
            currency: "CNY".into(),
            access_keys: vec![AccessKeySpec {
                id: HARNESS_KEY.0.into(),
                secret: HARNESS_KEY.1.into(),
                security_token: None,
                expires_at: None,
                denied_actions: vec![],
            }],
        }],
        instances,
        ..Default::default()
    };
    config.settings.clock_start = Some(ecs_wire::time::parse(now).unwrap());
    config.settings.clock_speed = 0.0;
    config.settings.renew_visibility_delay = Duration::ZERO;
    config
}

/// A PrePaid instance in cn-hangzhou expiring at `expires` (`2026-03-12T16:00Z`).
pub fn instance_spec(id: &str, expires: &str) -> ecs_emulator::settings::InstanceSpec {
    ecs_emulator::settings::InstanceSpec::prepaid(id)
        .expires_at(ecs_wire::time::parse(expires).unwrap())
}

/// A loopback port free at the time of asking, for a process that binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

tokio::task_local! {
    /// Set by [`on_postgres`]: harnesses started inside keep their ledger in PostgreSQL.
    static ON_POSTGRES: ();
}

/// Runs `test` with the ledger of every harness it starts in a fresh PostgreSQL database (the
/// money-safety tests run once on each engine). Engines a test builds on the same state share
/// one ledger and one term, as the engines of one process would.
pub async fn on_postgres<F: std::future::Future>(test: F) -> F::Output {
    ON_POSTGRES.scope((), test).await
}

/// The file in a harness's state directory that names its PostgreSQL ledger, when it has one.
const LEDGER_URL_FILE: &str = "ledger-url";

/// Puts the ledger of the config written for `dir` in a fresh PostgreSQL database: its URL in
/// `dir`'s url file, which [`ledger_section`] names.
pub async fn ledger_in_postgres(dir: &std::path::Path) {
    let url = postgres::fresh_database().await;
    let file = dir.join(LEDGER_URL_FILE);
    std::fs::write(&file, url).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The `[ledger]` table for a config written for `dir`: PostgreSQL when [`ledger_in_postgres`]
/// set it up, else none (SQLite).
pub fn ledger_section(dir: &std::path::Path) -> String {
    let url_file = dir.join(LEDGER_URL_FILE);
    if url_file.exists() {
        format!(
            "\n[ledger]\nbackend = \"postgres\"\nurl_file = \"{}\"\n",
            url_file.display()
        )
    } else {
        String::new()
    }
}

/// The ledgers (and their terms) of the PostgreSQL harnesses of this process, by database.
type SharedLedgers = Mutex<
    HashMap<
        String,
        (
            Arc<ecs_renewd::ledger::Ledger>,
            Option<ecs_renewd::commands::open::Held>,
        ),
    >,
>;

fn shared_ledgers() -> &'static SharedLedgers {
    static SHARED: std::sync::OnceLock<SharedLedgers> = std::sync::OnceLock::new();
    SHARED.get_or_init(Default::default)
}

impl Harness {
    /// Starts the emulator and builds the engine; `policies` is TOML appended to the config
    /// (policies, limits, retry overrides).
    pub async fn start(fleet: ecs_emulator::EmulatorConfig, extra: &str) -> Harness {
        let start = fleet
            .settings
            .clock_start
            .expect("harness fleets set clock_start");
        let clock = Arc::new(ecs_wire::clock::VirtualClock::frozen(start));
        let emulator =
            ecs_emulator::start_with_clock(fleet, "127.0.0.1:0".parse().unwrap(), clock.clone())
                .await
                .unwrap();
        let state = tempfile::tempdir().unwrap();
        if ON_POSTGRES.try_with(|_| ()).is_ok() {
            ledger_in_postgres(state.path()).await;
        }
        let engine = Self::engine(&emulator, &clock, state.path(), extra).await;
        Harness {
            emulator,
            clock,
            engine,
            state,
        }
    }

    /// The config text for the emulator and state directory.
    pub fn config_text(
        emulator: &ecs_emulator::EmulatorHandle,
        state: &std::path::Path,
        extra: &str,
    ) -> String {
        let retry = if extra.contains("[retry]") {
            ""
        } else {
            "[retry]\nverify_timeout = \"2s\"\nverify_interval = \"50ms\"\n"
        };
        // `#harness:dry_run` and `#harness:max_attempts=N` lines set keys of tables the
        // harness writes itself.
        let dry_run = if extra.contains("#harness:dry_run") {
            "dry_run = true\n"
        } else {
            ""
        };
        let attempts = extra
            .lines()
            .find_map(|l| l.strip_prefix("#harness:max_attempts="))
            .map(|n| format!("max_attempts = {n}\n"))
            .unwrap_or_default();
        let ledger = ledger_section(state);
        format!(
            "[daemon]\n{dry_run}state_dir = \"{}\"\n[scan]\nregions = [\"cn-hangzhou\"]\n{retry}[[accounts]]\nname = \"main\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"env\"\n[accounts.rate_limit]\nper_second = 1000\nburst = 100\n[accounts.call_retry]\nbase_delay = \"10ms\"\nmax_delay = \"50ms\"\n{attempts}{extra}{ledger}",
            state.display(),
            emulator.url()
        )
    }

    /// Builds an engine (as a restarted daemon would).
    pub async fn engine(
        emulator: &ecs_emulator::EmulatorHandle,
        clock: &Arc<ecs_wire::clock::VirtualClock>,
        state: &std::path::Path,
        extra: &str,
    ) -> ecs_renewd::reconcile::Engine {
        let text = Self::config_text(emulator, state, extra);
        let config = ecs_renewd::config::Config::parse(
            &text,
            std::path::Path::new("harness.toml"),
            &Self::env(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
        if let ecs_renewd::config::LedgerLocation::Postgres { url, .. } = &config.ledger {
            return Self::shared_engine(config.clone(), url, clock).await;
        }
        match ecs_renewd::commands::once::engine(
            config,
            &Self::env(),
            clock.clone(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        {
            Ok(engine) => engine,
            Err(e) => panic!("{e}"),
        }
    }

    /// The credentials environment.
    /// An engine on the PostgreSQL ledger at `url`: the one ledger (and term) of this
    /// process for that database, taken on first use.
    pub async fn shared_engine(
        config: ecs_renewd::config::Config,
        url: &ecs_renewd::config::LedgerUrl,
        clock: &Arc<ecs_wire::clock::VirtualClock>,
    ) -> ecs_renewd::reconcile::Engine {
        let key = url.read(&Self::env()).unwrap().expose().to_owned();
        let known = shared_ledgers()
            .lock()
            .unwrap()
            .get(&key)
            .map(|(l, _)| l.clone());
        let ledger = match known {
            Some(ledger) => ledger,
            None => {
                let (ledger, held) = ecs_renewd::commands::open::writer(&config, &Self::env())
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                let ledger = Arc::new(ledger);
                shared_ledgers()
                    .lock()
                    .unwrap()
                    .insert(key, (ledger.clone(), held));
                ledger
            }
        };
        let metrics = Arc::new(ecs_renewd::Metrics::new(clock.clone()));
        let base = ecs_renewd::reconcile::EngineBase {
            ledger,
            metrics,
            clock: clock.clone(),
            cancel: tokio_util::sync::CancellationToken::new(),
        };
        ecs_renewd::reconcile::Engine::connect(config, &Self::env(), base)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn env() -> ecs_renewd::cloud::credentials::Environment {
        ecs_renewd::cloud::credentials::Environment::from_pairs([
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", HARNESS_KEY.0),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", HARNESS_KEY.1),
        ])
    }

    /// One pass.
    pub async fn pass(&self) -> ecs_renewd::reconcile::PassSummary {
        self.engine.run_pass().await.unwrap()
    }

    /// Moves the shared clock.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// RenewInstance calls the emulator received.
    pub fn renew_calls(&self) -> u64 {
        self.emulator.calls().count(ecs_wire::Action::RenewInstance)
    }
}

/// Starts `ecs-renewd run --config CONFIG` with the harness key in its environment and JSON
/// logs at info; its stderr lines arrive on the channel (drained by a thread, so the child
/// never blocks on a full pipe).
pub fn spawn_daemon(
    config: &std::path::Path,
) -> (
    std::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ecs-renewd"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", HARNESS_KEY.0)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", HARNESS_KEY.1)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the ecs-renewd binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}
