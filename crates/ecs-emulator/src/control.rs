//! `/_emulator/*`: the test-only control API, kept apart from the ECS endpoint so it can never
//! be mistaken for ECS. Faults, clock, balances, keys, per-instance tweaks, settings patches,
//! and read-outs of state, orders and call counters.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::faults::FaultSpec;
use super::http::{CallStats, Emulator};
use super::settings::Settings;
use super::world::AccessKey;
use ecs_wire::Action;
use ecs_wire::clock::Clock;
use ecs_wire::secret::Secret;
use ecs_wire::time;

/// The control routes.
pub fn routes() -> axum::Router<Arc<Emulator>> {
    axum::Router::new()
        .route("/_emulator/state", get(state))
        .route("/_emulator/instances", get(instances))
        .route("/_emulator/instances/{id}", post(patch_instance))
        .route("/_emulator/orders", get(orders))
        .route("/_emulator/calls", get(calls).delete(reset_calls))
        .route(
            "/_emulator/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_emulator/release", post(release_held))
        .route("/_emulator/clock", get(clock).post(move_clock))
        .route("/_emulator/balance", post(balance))
        .route("/_emulator/oidc/token", post(oidc_token))
        .route("/_emulator/keys", post(put_key))
        .route("/_emulator/keys/{id}", delete(revoke_key))
        .route("/_emulator/settings", get(settings).post(patch_settings))
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

async fn state(State(emulator): State<Arc<Emulator>>) -> Json<Value> {
    let now = emulator.clock.now();
    let state = emulator.lock();
    let accounts: Vec<Value> = state
        .world
        .accounts()
        .map(|a| json!({"name": a.name, "balance": a.balance_cents as f64 / 100.0, "currency": a.currency}))
        .collect();
    Json(json!({
        "clock": time::format_seconds(now),
        "accounts": accounts,
        "instances": state.world.instance_count(),
        "orders": state.world.orders().len(),
        "failed_deductions": state.world.failed_deductions,
        "faults": state.faults.rules().len(),
    }))
}

/// One instance as the control API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceView {
    /// The instance id, as DescribeInstances reports it.
    pub id: String,
    /// The name of the account that owns the instance.
    pub account: String,
    /// The region the instance lives in, e.g. cn-hangzhou.
    pub region: String,
    /// `PrePaid` / `PostPaid`.
    pub charge_type: String,
    /// Paid-through expiry.
    pub true_expiry: DateTime<Utc>,
    /// Expiry DescribeInstances shows now.
    pub shown_expiry: DateTime<Utc>,
    /// Status now.
    pub status: String,
    /// Auto-renew switch.
    pub renewal_status: String,
    /// Failed provider deductions.
    pub failed_deductions: u32,
    /// Released?
    pub released: bool,
}

async fn instances(State(emulator): State<Arc<Emulator>>) -> Json<Vec<InstanceView>> {
    let now = emulator.clock.now();
    let state = emulator.lock();
    let settings = &state.world.settings;
    Json(
        state
            .world
            .instances()
            .map(|i| InstanceView {
                id: i.id.clone(),
                account: i.account.clone(),
                region: i.region.clone(),
                charge_type: i.charge_type.as_str().into(),
                true_expiry: i.true_expiry(),
                shown_expiry: i.shown_expiry(now),
                status: i.status(now, settings).0.into(),
                renewal_status: i.renewal_status.as_str().into(),
                failed_deductions: i.failed_deductions,
                released: i.lifecycle(now, settings) == super::instance::Lifecycle::Released,
            })
            .collect(),
    )
}

/// Changes to one instance.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct InstancePatch {
    /// New expiry (history reset).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the provider's deductions fail for it.
    #[serde(default)]
    pub deduction_fails: Option<bool>,
}

async fn patch_instance(
    State(emulator): State<Arc<Emulator>>,
    Path(id): Path<String>,
    Json(patch): Json<InstancePatch>,
) -> Response {
    let mut state = emulator.lock();
    let mut found = true;
    if let Some(at) = patch.expires_at {
        found &= state.world.set_expiry(&id, at);
    }
    if let Some(fails) = patch.deduction_fails {
        found &= state.world.set_deduction_fails(&id, fails);
    }
    if found {
        Json(json!({"ok": true})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no instance {id}")})),
        )
            .into_response()
    }
}

async fn orders(State(emulator): State<Arc<Emulator>>) -> Json<Value> {
    let state = emulator.lock();
    Json(serde_json::to_value(state.world.orders()).expect("orders serialize"))
}

async fn calls(State(emulator): State<Arc<Emulator>>) -> Json<CallStats> {
    Json(emulator.lock().calls.clone())
}

async fn reset_calls(State(emulator): State<Arc<Emulator>>) -> Json<Value> {
    emulator.lock().calls = CallStats::default();
    Json(json!({"ok": true}))
}

/// Releases every call a `hold` fault is holding; answers how many were held.
async fn release_held(State(emulator): State<Arc<Emulator>>) -> Json<Value> {
    let held = emulator.held.load(std::sync::atomic::Ordering::SeqCst);
    emulator.releases.send_modify(|generation| *generation += 1);
    Json(json!({"released": held}))
}

async fn list_faults(State(emulator): State<Arc<Emulator>>) -> Json<Vec<FaultSpec>> {
    Json(emulator.lock().faults.rules().to_vec())
}

async fn add_fault(
    State(emulator): State<Arc<Emulator>>,
    Json(spec): Json<FaultSpec>,
) -> Json<Value> {
    emulator.lock().faults.add(spec);
    Json(json!({"ok": true}))
}

async fn clear_faults(State(emulator): State<Arc<Emulator>>) -> Json<Value> {
    emulator.lock().faults.clear();
    Json(json!({"ok": true}))
}

async fn clock(State(emulator): State<Arc<Emulator>>) -> Json<Value> {
    Json(
        json!({"now": time::format_seconds(emulator.clock.now()), "speed": emulator.clock.speed()}),
    )
}

/// A clock change: any of set, advance, speed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClockChange {
    /// Jump to this time.
    #[serde(default)]
    pub set: Option<DateTime<Utc>>,
    /// Move forward by this much (e.g. `"3d"`).
    #[serde(default)]
    pub advance: Option<String>,
    /// New speed (0 freezes).
    #[serde(default)]
    pub speed: Option<f64>,
}

async fn move_clock(
    State(emulator): State<Arc<Emulator>>,
    Json(change): Json<ClockChange>,
) -> Response {
    if let Some(t) = change.set {
        emulator.clock.set(t);
    }
    if let Some(text) = &change.advance {
        match ecs_wire::duration::parse(text) {
            Ok(d) => emulator.clock.advance(d),
            Err(e) => return bad_request(e.to_string()),
        }
    }
    if let Some(speed) = change.speed {
        emulator.clock.set_speed(speed);
    }
    let now = emulator.clock.now();
    emulator.lock().world.run_provider_deductions(now);
    Json(json!({"now": time::format_seconds(now)})).into_response()
}

/// A balance change.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BalanceChange {
    /// The name of the account to change; an unknown name answers 400.
    pub account: String,
    /// New balance.
    #[serde(default)]
    pub set: Option<f64>,
    /// Amount to add (negative to take).
    #[serde(default)]
    pub add: Option<f64>,
}

async fn balance(
    State(emulator): State<Arc<Emulator>>,
    Json(change): Json<BalanceChange>,
) -> Response {
    let mut state = emulator.lock();
    let Some(current) = state
        .world
        .account(&change.account)
        .map(|a| a.balance_cents)
    else {
        return bad_request(format!("no account {:?}", change.account));
    };
    let mut cents = current;
    if let Some(set) = change.set {
        cents = (set * 100.0).round() as i64;
    }
    if let Some(add) = change.add {
        cents += (add * 100.0).round() as i64;
    }
    state.world.set_balance(&change.account, cents);
    Json(json!({"balance": cents as f64 / 100.0})).into_response()
}

/// A token to mint: `POST /_emulator/oidc/token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    /// The provider's name or ARN.
    pub provider: String,
    /// `sub` (default `system:serviceaccount:ecs-renewd:ecs-renewd`).
    #[serde(default)]
    pub subject: Option<String>,
    /// `aud` (default the provider's).
    #[serde(default)]
    pub audience: Option<String>,
    /// Validity (default `1h`), on the emulator's clock.
    #[serde(default)]
    pub valid_for: Option<String>,
}

/// Mints a token of an OIDC provider of the fleet (what the kubelet projects into a pod).
async fn oidc_token(
    State(emulator): State<Arc<Emulator>>,
    Json(request): Json<TokenRequest>,
) -> Response {
    let valid_for = match request.valid_for.as_deref().map(ecs_wire::duration::parse) {
        None => Duration::from_secs(3600),
        Some(Ok(d)) => d,
        Some(Err(e)) => return bad_request(format!("valid_for: {e}")),
    };
    let now = emulator.clock.now();
    let state = emulator.lock();
    let Some(provider) = state.world.identities().oidc_provider(&request.provider) else {
        return bad_request(format!("no oidc provider {:?}", request.provider));
    };
    let subject = request
        .subject
        .as_deref()
        .unwrap_or("system:serviceaccount:ecs-renewd:ecs-renewd");
    let expires = now + chrono::Duration::from_std(valid_for).unwrap_or_default();
    let token = provider.mint(subject, request.audience.as_deref(), now, expires);
    Json(json!({"token": token, "provider_arn": provider.arn})).into_response()
}

/// A key to add or replace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySpec {
    /// AccessKey ID.
    pub id: String,
    /// Owning account.
    pub account: String,
    /// The AccessKey secret that requests must be signed with.
    pub secret: String,
    /// STS token.
    #[serde(default)]
    pub security_token: Option<String>,
    /// When the key stops working (STS expiry); absent, it never does.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Denied actions.
    #[serde(default)]
    pub denied_actions: Vec<Action>,
}

async fn put_key(State(emulator): State<Arc<Emulator>>, Json(spec): Json<KeySpec>) -> Response {
    let mut state = emulator.lock();
    if state.world.account(&spec.account).is_none() {
        return bad_request(format!("no account {:?}", spec.account));
    }
    state.world.put_key(
        &spec.id,
        AccessKey {
            account: spec.account,
            secret: Secret::new(spec.secret),
            security_token: spec.security_token,
            expires_at: spec.expires_at,
            denied_actions: spec.denied_actions,
        },
    );
    Json(json!({"ok": true})).into_response()
}

async fn revoke_key(State(emulator): State<Arc<Emulator>>, Path(id): Path<String>) -> Json<Value> {
    Json(json!({"revoked": emulator.lock().world.revoke_key(&id)}))
}

async fn settings(State(emulator): State<Arc<Emulator>>) -> Json<Settings> {
    Json(emulator.lock().world.settings.clone())
}

/// Merges a partial settings object (JSON merge patch) into the settings.
async fn patch_settings(
    State(emulator): State<Arc<Emulator>>,
    Json(patch): Json<Value>,
) -> Response {
    let mut state = emulator.lock();
    let mut current = serde_json::to_value(&state.world.settings).expect("settings serialize");
    merge(&mut current, patch);
    match serde_json::from_value::<Settings>(current) {
        Ok(settings) => {
            state.world.settings = settings;
            Json(json!({"ok": true})).into_response()
        }
        Err(e) => bad_request(format!("settings: {e}")),
    }
}

fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// Drives `/_emulator/*` from tests and tools.
#[derive(Debug, Clone)]
pub struct ControlClient {
    base: String,
    http: reqwest::Client,
}

/// A control call that failed.
#[derive(Debug, thiserror::Error)]
#[error("emulator control {what}: {detail}")]
pub struct ControlError {
    what: String,
    detail: String,
}

impl ControlClient {
    /// A client for the emulator at `base_url` (e.g. `http://127.0.0.1:PORT`).
    pub fn new(base_url: &str) -> ControlClient {
        ControlClient {
            base: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .no_proxy()
                .build()
                .expect("a plain reqwest client builds"),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T, ControlError> {
        let error = |detail: String| ControlError {
            what: format!("{method} {path}"),
            detail,
        };
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| error(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| error(e.to_string()))?;
        if !status.is_success() {
            return Err(error(format!("HTTP {status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| error(format!("{e}: {text}")))
    }

    /// Adds a fault rule.
    pub async fn add_fault(&self, spec: &FaultSpec) -> Result<(), ControlError> {
        let _: Value = self
            .send(
                reqwest::Method::POST,
                "/_emulator/faults",
                Some(serde_json::to_value(spec).expect("faults serialize")),
            )
            .await?;
        Ok(())
    }

    /// Fails the next `count` calls of `action` with `code`/`status`.
    pub async fn fail_next(
        &self,
        action: Action,
        count: u64,
        code: &str,
        status: u16,
    ) -> Result<(), ControlError> {
        self.add_fault(&FaultSpec::fail_next(action, count, code, status))
            .await
    }

    /// Removes every fault rule.
    pub async fn clear_faults(&self) -> Result<(), ControlError> {
        let _: Value = self
            .send(reqwest::Method::DELETE, "/_emulator/faults", None)
            .await?;
        Ok(())
    }

    /// Moves the clock.
    pub async fn clock(&self, change: &ClockChange) -> Result<DateTime<Utc>, ControlError> {
        let value: Value = self
            .send(
                reqwest::Method::POST,
                "/_emulator/clock",
                Some(serde_json::to_value(change).expect("serializes")),
            )
            .await?;
        let text = value["now"].as_str().unwrap_or_default();
        time::parse(text).map_err(|e| ControlError {
            what: "clock".into(),
            detail: e.to_string(),
        })
    }

    /// Sets an account's balance.
    pub async fn set_balance(&self, account: &str, amount: f64) -> Result<(), ControlError> {
        let body = json!({"account": account, "set": amount});
        let _: Value = self
            .send(reqwest::Method::POST, "/_emulator/balance", Some(body))
            .await?;
        Ok(())
    }

    /// Every order.
    pub async fn orders(&self) -> Result<Vec<super::world::Order>, ControlError> {
        self.send(reqwest::Method::GET, "/_emulator/orders", None)
            .await
    }

    /// Call counters.
    pub async fn calls(&self) -> Result<CallStats, ControlError> {
        self.send(reqwest::Method::GET, "/_emulator/calls", None)
            .await
    }

    /// Resets the call counters.
    pub async fn reset_calls(&self) -> Result<(), ControlError> {
        let _: Value = self
            .send(reqwest::Method::DELETE, "/_emulator/calls", None)
            .await?;
        Ok(())
    }

    /// Every instance.
    pub async fn instances(&self) -> Result<Vec<InstanceView>, ControlError> {
        self.send(reqwest::Method::GET, "/_emulator/instances", None)
            .await
    }

    /// Changes one instance.
    pub async fn patch_instance(
        &self,
        id: &str,
        patch: &InstancePatch,
    ) -> Result<(), ControlError> {
        let body = serde_json::to_value(patch).expect("serializes");
        let _: Value = self
            .send(
                reqwest::Method::POST,
                &format!("/_emulator/instances/{id}"),
                Some(body),
            )
            .await?;
        Ok(())
    }

    /// Merges a settings patch.
    pub async fn patch_settings(&self, patch: Value) -> Result<(), ControlError> {
        let _: Value = self
            .send(reqwest::Method::POST, "/_emulator/settings", Some(patch))
            .await?;
        Ok(())
    }

    /// Adds or replaces a key.
    pub async fn put_key(&self, spec: &KeySpec) -> Result<(), ControlError> {
        let body = serde_json::to_value(spec).expect("serializes");
        let _: Value = self
            .send(reqwest::Method::POST, "/_emulator/keys", Some(body))
            .await?;
        Ok(())
    }

    /// Revokes a key.
    pub async fn revoke_key(&self, id: &str) -> Result<(), ControlError> {
        let _: Value = self
            .send(
                reqwest::Method::DELETE,
                &format!("/_emulator/keys/{id}"),
                None,
            )
            .await?;
        Ok(())
    }

    /// The state summary.
    pub async fn state(&self) -> Result<Value, ControlError> {
        self.send(reqwest::Method::GET, "/_emulator/state", None)
            .await
    }
}
