//! The admin HTTP server: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (credentials usable and every source scanned recently), `/status` (the same JSON as
//! `ecs-renewd status --json`). Loopback by default.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use crate::accounts::AccountClient;
use crate::clock::Clock;
use crate::ledger::Ledger;
use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Metrics.
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
}

/// Binds the admin address; a non-loopback address is allowed but logged.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the admin HTTP server listens beyond loopback: /metrics and /status are reachable from the network");
    }
    Ok(listener)
}

/// Serves until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "the admin HTTP server stopped");
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    // Streamed in chunks: a 100,000-instance fleet is never one string in memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = state.metrics.render_registry();
        let mut send = |chunk: &mut String| {
            let _ = tx.blocking_send(Ok(Bytes::from(std::mem::take(chunk))));
        };
        if let Err(error) = crate::metrics::render_instances(&state.ledger, &mut out, &mut send) {
            tracing::error!(%error, "reading per-instance metrics failed");
        }
        send(&mut out);
        state.ledger.shrink_memory();
        crate::memory::release_free_memory();
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

async fn readyz(State(state): State<AdminState>) -> Response {
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
    let verdict = state.health.readiness(state.clock.now(), &checks);
    let code = if verdict.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(verdict)).into_response()
}

async fn status(State(state): State<AdminState>) -> Response {
    let ledger = state.ledger.clone();
    match tokio::task::spawn_blocking(move || crate::commands::status::report(&ledger)).await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
