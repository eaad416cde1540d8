//! The emulator's ECS endpoint: decodes GET/POST requests (query and form body), counts them,
//! authenticates, throttles, applies injected faults, runs the action and answers in the real
//! JSON envelope (or a deliberately broken one).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rand::RngExt;
use serde::Serialize;
use serde_json::Value;

use super::actions;
use super::auth::{NonceStore, Params, authenticate};
use super::faults::{FaultKind, Faults, Throttler};
use super::settings::AuthClock;
use super::world::{Fault, World};
use ecs_wire::Action;
use ecs_wire::clock::{Clock, SystemClock, VirtualClock};
use ecs_wire::types::ErrorBody;

/// Calls received, for tests ("plan makes no mutating call", "one order per renewal").
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CallStats {
    /// Requests per action name (unknown actions too), whatever their outcome.
    pub by_action: BTreeMap<String, u64>,
    /// Answers per error code (`OK` for successes).
    pub by_outcome: BTreeMap<String, u64>,
}

impl CallStats {
    /// Requests for one action.
    pub fn count(&self, action: Action) -> u64 {
        self.by_action.get(action.as_str()).copied().unwrap_or(0)
    }

    /// Answers in all.
    pub fn answered(&self) -> u64 {
        self.by_outcome.values().sum()
    }

    /// Requests for actions that change something.
    pub fn mutating(&self) -> u64 {
        Action::ALL
            .iter()
            .filter(|a| a.is_mutating())
            .map(|a| self.count(*a))
            .sum()
    }
}

/// Everything behind the emulator's lock.
#[derive(Debug)]
pub struct State_ {
    /// The cloud.
    pub world: World,
    /// Used nonces.
    pub nonces: NonceStore,
    /// Injected faults.
    pub faults: Faults,
    /// Call counters.
    pub calls: CallStats,
}

/// The running emulator's shared parts.
#[derive(Debug)]
pub struct Emulator {
    /// State behind one lock: calls are short.
    pub state: Mutex<State_>,
    /// The virtual clock.
    pub clock: Arc<VirtualClock>,
    /// Real-time throttling.
    pub throttler: Throttler,
    /// Bumped whenever a call arrives or is answered (tests wait on it instead of sleeping).
    pub activity: tokio::sync::watch::Sender<u64>,
}

impl Emulator {
    /// Locks the state (a poisoned lock means a handler panicked; the state is still usable
    /// for inspection in tests).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn request_id() -> String {
    let n: u128 = rand::rng().random();
    let hex = format!("{n:032X}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn json_response(status: u16, body: &Value, request_id: &str) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        body.to_string(),
    )
        .into_response();
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert("x-acs-request-id", value);
    }
    response
}

fn fault_response(fault: &Fault, request_id: &str, retry_after: Option<Duration>) -> Response {
    let body = ErrorBody {
        request_id: request_id.to_owned(),
        host_id: "ecs.aliyuncs.com".into(),
        code: fault.code.clone(),
        message: fault.message.clone(),
        recommend: format!(
            "https://api.aliyun.com/troubleshoot?q={}&product=Ecs&requestId={request_id}",
            fault.code
        ),
    };
    let value = serde_json::to_value(&body).expect("an error body always serializes");
    let mut response = json_response(fault.status, &value, request_id);
    if let Some(delay) = retry_after
        && let Ok(value) = (delay.as_millis().max(1)).to_string().parse()
    {
        response.headers_mut().insert("x-acs-retry-after", value);
    }
    response
}

/// A response whose body fails after the headers: the client sees a broken connection.
fn broken_response() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "emulated connection reset",
        ))
    });
    Response::new(Body::from_stream(stream))
}

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>Tengine</center>\r\n</body>\r\n</html>\r\n";

/// The ECS endpoint (any path, GET or POST). The work runs in its own task: like a real
/// server, the emulator finishes a call (a renewal charges) even when the client hangs up.
pub async fn ecs_endpoint(
    State(emulator): State<Arc<Emulator>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match tokio::spawn(handle(emulator, method, uri, headers, body)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "an emulator request handler failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn handle(
    emulator: Arc<Emulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let params = Params::decode(uri.query(), is_form.then_some(&body[..]));
    let request_id = request_id();
    let now = emulator.clock.now();

    // Authenticate and pick a fault under the lock; sleep and answer outside it.
    let prepared = {
        let mut state = emulator.lock();
        state.world.run_provider_deductions(now);
        let action_name = params.get("Action").unwrap_or("").to_owned();
        *state
            .calls
            .by_action
            .entry(action_name.clone())
            .or_default() += 1;
        let auth_now = match state.world.settings.auth_clock {
            AuthClock::Emulated => now,
            AuthClock::Wall => SystemClock.now(),
        };
        let State_ {
            world,
            nonces,
            faults,
            ..
        } = &mut *state;
        let result = authenticate(method.as_str(), &params, world, nonces, auth_now, now).and_then(
            |caller| {
                let action = Action::parse(&action_name).ok_or_else(|| {
                    Fault::new(
                        404,
                        "InvalidAction.NotFound",
                        "Specified api is not found, please check your url and method.",
                    )
                })?;
                let region = params.get("RegionId").unwrap_or("").to_owned();
                let fault = faults.take(Some(action), &region, &caller.account, now);
                Ok((caller, action, region, fault))
            },
        );
        let throttle = world.settings.throttle.clone();
        let latency = world.settings.latency;
        (result, throttle, latency)
    };
    let (result, throttle, latency) = prepared;
    // Outside the state lock: waiters read the state while holding the watch.
    emulator.activity.send_modify(|n| *n += 1);
    let (caller, action, region, fault) = match result {
        Ok(ok) => ok,
        Err(fault) => {
            return finish(
                &emulator,
                fault_response(&fault, &request_id, None),
                &fault.code,
            );
        }
    };
    if let Err(wait) = emulator
        .throttler
        .check(&throttle, &caller.account, &region, action)
    {
        let fault = Fault::new(
            400,
            "Throttling",
            "Request was denied due to request throttling.",
        );
        let advice = throttle.retry_after_header.then_some(wait);
        return finish(
            &emulator,
            fault_response(&fault, &request_id, advice),
            "Throttling",
        );
    }
    let mut delay = latency;
    if let Some(FaultKind::Latency { ms }) = &fault {
        delay += Duration::from_millis(*ms);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match &fault {
        Some(FaultKind::Error {
            code,
            status,
            message,
            retry_after_ms,
        }) => {
            let fault = Fault::new(
                *status,
                code,
                message
                    .clone()
                    .unwrap_or_else(|| format!("Injected fault {code}.")),
            );
            let advice = retry_after_ms.map(Duration::from_millis);
            return finish(
                &emulator,
                fault_response(&fault, &request_id, advice),
                &fault.code,
            );
        }
        Some(FaultKind::Reset) => return finish(&emulator, broken_response(), "Reset"),
        Some(FaultKind::Html) => {
            let response = (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                HTML_502,
            )
                .into_response();
            return finish(&emulator, response, "Html");
        }
        _ => {}
    }

    // The action runs at the clock's time now (after any latency).
    let now = emulator.clock.now();
    let outcome = {
        let mut state = emulator.lock();
        state.world.run_provider_deductions(now);
        actions::dispatch(&mut state.world, &caller, action, &params, now)
    };
    let (response, label) = match outcome {
        Ok(mut value) => {
            value["RequestId"] = Value::String(request_id.clone());
            (json_response(200, &value, &request_id), "OK".to_owned())
        }
        Err(fault) => (
            fault_response(&fault, &request_id, None),
            fault.code.clone(),
        ),
    };
    match fault {
        Some(FaultKind::CommitThenDrop) => finish(&emulator, broken_response(), "CommitThenDrop"),
        Some(FaultKind::Malformed) => {
            let text = response_text(response).await;
            let cut = text.len() / 2;
            let truncated = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                text[..cut].to_owned(),
            )
                .into_response();
            finish(&emulator, truncated, "Malformed")
        }
        _ => finish(&emulator, response, &label),
    }
}

async fn response_text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn finish(emulator: &Emulator, response: Response, outcome: &str) -> Response {
    *emulator
        .lock()
        .calls
        .by_outcome
        .entry(outcome.to_owned())
        .or_default() += 1;
    emulator.activity.send_modify(|n| *n += 1);
    response
}

/// The emulated time, for control endpoints.
pub fn now(emulator: &Emulator) -> DateTime<Utc> {
    emulator.clock.now()
}
