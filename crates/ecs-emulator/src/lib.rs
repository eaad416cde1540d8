//! A faithful ECS emulator for tests, the demo and policy rehearsal: the eight actions the
//! daemon uses (six of ECS, BSS `QueryAccountBalance` and Resource Manager `ListAccounts`), and
//! STS `AssumeRole`/`AssumeRoleWithOIDC`, with the service's validation, signatures (RPC and V3), idempotency, lifecycle, throttling and
//! failures, on a controllable virtual clock, plus `/_emulator/*` to inject faults and inspect
//! state. `start` serves it on any address (port 0 in tests).
//!
//! - `settings`: the fleet file (TOML) and every UNCERTAIN behaviour as a setting.
//! - `instance`: one emulated instance, its expiry history and lifecycle.
//! - `fleet`: the seeded generator of instances.
//! - `world`: accounts, balances, instances, orders, tokens and the rules between them (no HTTP).
//! - `request`: a request as received, and the checks both signatures share.
//! - `auth`: authentication, the RPC signature.
//! - `auth_v3`: the V3 (ACS3-HMAC-SHA256) signature today's SDKs send.
//! - `actions`: the actions (six of ECS, and BSS `QueryAccountBalance`).
//! - `directory`: Resource Manager `ListAccounts`, a management account's members.
//! - `roles`, `sts`: account ids, RAM roles, OIDC providers; STS `AssumeRole` and
//!   `AssumeRoleWithOIDC`.
//! - `faults`: fault rules and throttling.
//! - `http`: the ECS endpoint.
//! - `control`: `/_emulator/*` and its Rust client.

pub mod actions;
pub mod auth;
pub mod auth_v3;
pub mod control;
pub mod directory;
pub mod faults;
pub mod fleet;
pub mod http;
pub mod instance;
pub mod request;
pub mod roles;
pub mod settings;
pub mod sts;
pub mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

pub use control::ControlClient;
pub use faults::{FaultKind, FaultSpec};
pub use http::CallStats;
pub use settings::{EmulatorConfig, FleetFileError};
pub use world::{Order, World};

use ecs_wire::clock::{Clock, SystemClock, VirtualClock};

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The fleet is inconsistent.
    #[error(transparent)]
    Fleet(#[from] FleetFileError),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address the emulator was asked to listen on.
        addr: SocketAddr,
        /// The I/O error binding it failed with.
        #[source]
        source: std::io::Error,
    },
}

/// A running emulator.
pub struct EmulatorHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    emulator: Arc<http::Emulator>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// `http://ADDR`: the endpoint for clients and for the control API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The virtual clock (share it with an in-process daemon).
    pub fn clock(&self) -> Arc<VirtualClock> {
        self.emulator.clock.clone()
    }

    /// A control client.
    pub fn control(&self) -> ControlClient {
        ControlClient::new(&self.url())
    }

    /// Runs `f` on the world (in-process tests).
    pub fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let now = self.emulator.clock.now();
        let mut state = self.emulator.lock();
        state.world.run_provider_deductions(now);
        f(&mut state.world)
    }

    /// Every order so far.
    pub fn orders(&self) -> Vec<Order> {
        self.with_world(|w| w.orders().to_vec())
    }

    /// Call counters.
    pub fn calls(&self) -> CallStats {
        self.emulator.lock().calls.clone()
    }

    /// Waits until the call counters satisfy `condition` (checked at every arrival and
    /// answer), or `timeout` passes; returns whether they did.
    pub async fn wait_for(
        &self,
        condition: impl Fn(&CallStats) -> bool,
        timeout: std::time::Duration,
    ) -> bool {
        let mut activity = self.emulator.activity.subscribe();
        let emulator = self.emulator.clone();
        tokio::time::timeout(
            timeout,
            activity.wait_for(|_| condition(&emulator.lock().calls)),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// Waits until at least `n` calls have been answered in all.
    pub async fn wait_for_answers(&self, n: u64, timeout: std::time::Duration) -> bool {
        self.wait_for(|calls| calls.answered() >= n, timeout).await
    }

    /// Releases every call a `Hold` fault is holding now; they are processed as usual.
    pub fn release_held(&self) {
        self.emulator
            .releases
            .send_modify(|generation| *generation += 1);
    }

    /// Waits until `n` calls are held by a `Hold` fault at once, or `timeout` passes; returns
    /// whether they were.
    pub async fn wait_for_held(&self, n: u64, timeout: std::time::Duration) -> bool {
        let mut activity = self.emulator.activity.subscribe();
        let emulator = self.emulator.clone();
        tokio::time::timeout(
            timeout,
            activity.wait_for(|_| emulator.held.load(std::sync::atomic::Ordering::SeqCst) >= n),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// Adds a fault rule.
    pub fn add_fault(&self, spec: FaultSpec) {
        self.emulator.lock().faults.add(spec);
    }

    /// Fault rules that can still hit a call.
    pub fn pending_faults(&self) -> usize {
        let now = self.emulator.clock.now();
        self.emulator
            .lock()
            .faults
            .rules()
            .iter()
            .filter(|r| r.count != Some(0) && r.until.is_none_or(|until| now < until))
            .count()
    }

    /// Stops serving and waits for the server to end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Starts the emulator on `listen` with its own virtual clock (from the fleet file's
/// `clock_start`/`clock_speed`, else real time).
pub async fn start(
    config: EmulatorConfig,
    listen: SocketAddr,
) -> Result<EmulatorHandle, StartError> {
    let start = config
        .settings
        .clock_start
        .unwrap_or_else(|| SystemClock.now());
    let clock = Arc::new(VirtualClock::running(start, config.settings.clock_speed));
    start_with_clock(config, listen, clock).await
}

/// Starts the emulator on `listen` with the given clock (shared with an in-process daemon).
pub async fn start_with_clock(
    config: EmulatorConfig,
    listen: SocketAddr,
    clock: Arc<VirtualClock>,
) -> Result<EmulatorHandle, StartError> {
    let world = World::from_config(&config, clock.now(), "fleet")?;
    let emulator = Arc::new(http::Emulator {
        state: Mutex::new(http::State_ {
            world,
            nonces: Default::default(),
            faults: Default::default(),
            calls: Default::default(),
        }),
        clock,
        throttler: Default::default(),
        releases: tokio::sync::watch::Sender::new(0),
        held: Default::default(),
        activity: tokio::sync::watch::channel(0).0,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let app = control::routes()
        .fallback(http::ecs_endpoint)
        .with_state(emulator.clone());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the emulator's server stopped");
        }
    });
    Ok(EmulatorHandle {
        addr,
        emulator,
        shutdown,
        task,
    })
}
