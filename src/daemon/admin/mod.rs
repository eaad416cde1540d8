//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (credentials usable and every source scanned recently), `/status` (the JSON of
//! `ecs-renewd status --json`, a page at a time). Loopback by default; /metrics and /status can
//! require a bearer token. Connection limits live in `listener`, the token in `auth`.

pub mod auth;
mod listener;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt as _;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use chrono::{DateTime, Utc};

use super::health::Health;
use crate::accounts::AccountClient;
use crate::clock::Clock;
use crate::ledger::{Ledger, StatusQuery};
use crate::metrics::{InstancePages, Metrics, ROWS_PER_PAGE};
use crate::reconcile::Engine;
pub use listener::Limits;

/// Status lines per `/status` page unless `limit` says otherwise.
const STATUS_PAGE_DEFAULT: usize = 500;
/// The largest `/status` page.
const STATUS_PAGE_MAX: usize = 5000;

/// What the handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// The daemon's metrics, rendered at /metrics.
    pub metrics: Arc<Metrics>,
    /// A read-only connection to the ledger (for /metrics and /status; readers never block
    /// the daemon's writes).
    pub ledger: Arc<Ledger>,
    /// Readiness inputs.
    pub health: Arc<Health>,
    /// The current account clients (swapped on reload).
    pub accounts: Arc<RwLock<Vec<AccountClient>>>,
    /// The business clock.
    pub clock: Arc<dyn Clock>,
    /// The bearer token /metrics and /status require, if any.
    pub guard: auth::Guard,
    /// Room for concurrent /status requests.
    pub status_slots: Arc<Semaphore>,
}

/// The admin address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} for the admin HTTP server: {source} — change [admin] listen or ECS_RENEWD_ADMIN_LISTEN"
)]
pub struct BindError {
    /// The configured admin address (`[admin] listen` or ECS_RENEWD_ADMIN_LISTEN).
    pub addr: SocketAddr,
    /// The I/O error from binding the address or reading the listener's address.
    #[source]
    pub source: std::io::Error,
}

/// What the server reads besides the engine's parts.
pub struct Serving {
    /// A read-only connection to the ledger (the writer's own when none can be opened).
    pub ledger: Arc<Ledger>,
    /// Readiness inputs.
    pub health: Arc<Health>,
    /// The bearer token /metrics and /status require, if any.
    pub guard: auth::Guard,
    /// A pre-bound listener (port 0 in tests); `None` binds `[admin] listen`.
    pub listener: Option<tokio::net::TcpListener>,
}

/// The running admin server as the daemon's loop holds it: its address, what a reload swaps
/// (the token, the account clients), the exposure warning, and its task.
pub struct AdminServer {
    /// Where it listens.
    pub addr: SocketAddr,
    guard: auth::Guard,
    accounts: Arc<RwLock<Vec<AccountClient>>>,
    /// When the exposure warning was last given (business time).
    warned_at: Option<DateTime<Utc>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// When the exposure warning is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warn {
    /// Now, if exposed: at start and after a reload.
    Now,
    /// After a pass, at most once an hour: a start-up line scrolls away.
    Hourly,
}

impl AdminServer {
    /// Binds (unless given a listener) and serves the engine's metrics, ledger and accounts.
    pub async fn start(engine: &Engine, serving: Serving) -> Result<AdminServer, BindError> {
        let config = &engine.config;
        let bind_error = |source| BindError {
            addr: config.admin_listen,
            source,
        };
        let listener = match serving.listener {
            Some(listener) => listener,
            None => tokio::net::TcpListener::bind(config.admin_listen)
                .await
                .map_err(bind_error)?,
        };
        let addr = listener.local_addr().map_err(bind_error)?;
        let accounts = Arc::new(RwLock::new(engine.accounts.clone()));
        let state = AdminState {
            metrics: engine.metrics.clone(),
            ledger: serving.ledger,
            health: serving.health,
            accounts: accounts.clone(),
            clock: engine.clock.clone(),
            guard: serving.guard.clone(),
            status_slots: Arc::new(Semaphore::new(config.admin.max_status_requests)),
        };
        let limits = Limits {
            header_read_timeout: config.admin.header_read_timeout,
            write_timeout: config.admin.write_timeout,
            answer_timeout: config.admin.answer_timeout,
            max_connections: config.admin.max_connections,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, state, limits, stop.clone()));
        let mut server = AdminServer {
            addr,
            guard: serving.guard,
            accounts,
            warned_at: None,
            stop,
            task,
        };
        server.warn_if_exposed(engine.clock.now(), Warn::Now);
        Ok(server)
    }

    /// Whether the server is reachable from the network without a token.
    pub fn exposed(&self) -> bool {
        !self.addr.ip().is_loopback() && !self.guard.is_protected()
    }

    /// Warns that the server is exposed, if it is: now, or at most hourly.
    pub fn warn_if_exposed(&mut self, now: DateTime<Utc>, when: Warn) {
        let recent = self
            .warned_at
            .is_some_and(|at| now - at < chrono::Duration::hours(1));
        if !self.exposed() || (when == Warn::Hourly && recent) {
            return;
        }
        tracing::warn!(addr = %self.addr, "the admin HTTP server listens beyond loopback without a bearer token: anyone who can reach it can read /metrics and /status (instance names, order ids, errors) — set [admin] bearer_token_file or listen on 127.0.0.1");
        self.warned_at = Some(now);
    }

    /// A reloaded config's token and account clients (the server's limits change only with a
    /// restart).
    pub fn reloaded(&mut self, token: Option<crate::secret::Secret>, accounts: &[AccountClient]) {
        self.guard.set(token);
        *self.accounts.write().unwrap_or_else(|p| p.into_inner()) = accounts.to_vec();
    }

    /// Stops serving and waits for the server to finish.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Serves until `shutdown` fires.
async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let protected = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route_layer(middleware::from_fn_with_state(
            state.guard.clone(),
            auth::require_token,
        ));
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .layer(middleware::from_fn(no_request_bodies));
    let closed = state.metrics.admin_connections_closed_total.clone();
    let app = app.with_state(state);
    listener::serve(listener, app, limits, closed, shutdown).await;
}

/// Every endpoint is a GET without a body: a request that announces one is refused before
/// anything reads it.
async fn no_request_bodies(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    if announced {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            "the admin endpoints take no request body\n",
        )
            .into_response();
    }
    next.run(request).await
}

async fn metrics(State(state): State<AdminState>) -> Response {
    // Streamed page by page: the fleet is never one string in memory, and the ledger's read
    // connection is held only while a page is read, never while the client takes it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let head = state.metrics.render_registry();
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        let mut pages = InstancePages::default();
        loop {
            let read = AssertUnwindSafe(state.ledger.blocking(
                "reading per-instance metrics",
                move |ledger| {
                    let mut out = String::with_capacity(64 * 1024);
                    let more = pages.next_page(ledger, ROWS_PER_PAGE, &mut out)?;
                    Ok((pages, out, more))
                },
            ))
            .catch_unwind()
            .await;
            let (next, out, more) = match read {
                Ok(Ok(page)) => page,
                Err(_) => {
                    tracing::error!("reading per-instance metrics panicked");
                    let _ = tx
                        .send(Err(std::io::Error::other(
                            "reading per-instance metrics failed",
                        )))
                        .await;
                    return;
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "reading per-instance metrics failed");
                    // An error ends the answer abruptly: Prometheus records a failed scrape
                    // instead of a silently shortened one.
                    let _ = tx.send(Err(std::io::Error::other(error.to_string()))).await;
                    return;
                }
            };
            pages = next;
            if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
            if !more {
                break;
            }
        }
        drop(tx);
        // Best effort: a panic here is not the scrape's concern.
        let _ = AssertUnwindSafe(state.ledger.blocking(
            "releasing memory after a scrape",
            |ledger| {
                ledger.shrink_memory();
                crate::memory::release_free_memory();
                Ok(())
            },
        ))
        .catch_unwind()
        .await;
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn readyz(State(state): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    // Probes need no token; the fleet's details do (as /status does).
    let detailed = state.guard.admits(headers.get(header::AUTHORIZATION));
    let accounts: Vec<AccountClient> = state
        .accounts
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut checks = Vec::with_capacity(accounts.len());
    for account in &accounts {
        checks.push((
            account.name.clone(),
            account
                .client
                .check_credentials()
                .await
                .map_err(|e| e.to_string()),
        ));
    }
    let verdict = state.health.readiness(state.clock.now(), &checks, detailed);
    let code = if verdict.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(verdict)).into_response()
}

/// `/status` query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusParams {
    account: Option<String>,
    region: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

impl StatusParams {
    fn query(self) -> Result<StatusQuery, String> {
        let limit = self.limit.unwrap_or(STATUS_PAGE_DEFAULT);
        if limit == 0 || limit > STATUS_PAGE_MAX {
            return Err(format!(
                "limit={limit}: a page holds 1 to {STATUS_PAGE_MAX} instances"
            ));
        }
        let after = self.after.map(|a| a.parse()).transpose()?;
        let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
        Ok(StatusQuery {
            account: nonempty(self.account),
            region: nonempty(self.region),
            state: nonempty(self.state),
            after,
            limit: Some(limit),
        })
    }
}

async fn status(
    State(state): State<AdminState>,
    params: Result<Query<StatusParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let bad_request = |why: String| {
        (
            StatusCode::BAD_REQUEST,
            format!("{why} (parameters: account, region, state, limit, after)\n"),
        )
            .into_response()
    };
    let query = match params
        .map_err(|e| e.body_text())
        .and_then(|Query(p)| p.query())
    {
        Ok(query) => query,
        Err(why) => return bad_request(why),
    };
    // Each answer is built in memory: a few at once, the rest asked to come back. The permit
    // goes with the work, so a client that hangs up does not free it while its page is built.
    let Ok(permit) = state.status_slots.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many /status requests at once; retry in a second\n",
        )
            .into_response();
    };
    // The permit is held until the answer is encoded, so at most `max_status_requests` are in
    // memory at once; a panic while building one answers 500, as a failed read does.
    let answer = AssertUnwindSafe(state.ledger.blocking(
        "reading the status report",
        move |ledger| {
            let _permit = permit;
            ledger
                .status_report(&query)
                .map(|report| serde_json::to_vec(&report))
        },
    ))
    .catch_unwind()
    .await;
    let Ok(answer) = answer else {
        tracing::error!("building the status report panicked");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "building the status report failed; see the daemon's log\n",
        )
            .into_response();
    };
    match answer {
        Ok(Ok(json)) => (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(json),
        )
            .into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;

    fn state(slots: usize) -> (AdminState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(dir.path()).unwrap());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let state = AdminState {
            metrics: Arc::new(Metrics::new(clock.clone())),
            ledger,
            health: Arc::new(Health::new(
                std::time::Duration::from_secs(3600),
                Vec::new(),
            )),
            accounts: Arc::new(RwLock::new(Vec::new())),
            clock,
            guard: auth::Guard::default(),
            status_slots: Arc::new(Semaphore::new(slots)),
        };
        (state, dir)
    }

    fn params() -> Result<Query<StatusParams>, axum::extract::rejection::QueryRejection> {
        Ok(Query(StatusParams {
            account: None,
            region: None,
            state: None,
            limit: None,
            after: None,
        }))
    }

    #[tokio::test]
    async fn status_requests_beyond_the_cap_are_asked_to_come_back() {
        let (state, _dir) = state(1);
        let held = state.status_slots.clone().try_acquire_owned().unwrap();
        let busy = status(State(state.clone()), params()).await;
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        drop(held);
        let answered = status(State(state), params()).await;
        assert_eq!(answered.status(), StatusCode::OK);
    }
}
