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
use super::auth::authenticate;
use super::faults::{FaultKind, Faults, Throttler};
use super::request::{Caller, NonceStore, Params, Request};
use super::settings::{AuthClock, ThrottleSettings};
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
    /// The emulated cloud: accounts, keys, instances, orders and settings.
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
    /// Bumped by each release: a call held by a `Hold` fault waits until it moves on.
    pub releases: tokio::sync::watch::Sender<u64>,
    /// Calls held by a `Hold` fault right now.
    pub held: std::sync::atomic::AtomicU64,
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

/// The service an action belongs to, as its error bodies name it: host and product.
fn service_of(action: &str) -> (&'static str, &'static str) {
    match action {
        "AssumeRole" | "AssumeRoleWithOIDC" => ("sts.aliyuncs.com", "Sts"),
        "ListAccounts" => ("resourcemanager.aliyuncs.com", "ResourceManager"),
        "QueryAccountBalance" => ("business.aliyuncs.com", "BssOpenApi"),
        _ => ("ecs.aliyuncs.com", "Ecs"),
    }
}

/// The error body of `fault` for a call of `action`.
fn fault_response(
    fault: &Fault,
    action: &str,
    request_id: &str,
    retry_after: Option<Duration>,
) -> Response {
    let (host, product) = service_of(action);
    let body = ErrorBody {
        request_id: request_id.to_owned(),
        host_id: host.into(),
        code: fault.code.clone(),
        message: fault.message.clone(),
        recommend: format!(
            "https://api.aliyun.com/troubleshoot?q={}&product={product}&requestId={request_id}",
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

/// What the locked first stage of a call decided, with the settings the unlocked rest needs.
struct Admission {
    /// The admitted call, or the fault (authentication, unknown action) to answer with.
    result: Result<Call, Fault>,
    throttle: ThrottleSettings,
    latency: Duration,
}

/// An authenticated call of a known action, with the injected fault it drew, if any.
struct Call {
    caller: Caller,
    action: Action,
    region: String,
    fault: Option<FaultKind>,
}

/// A response and the outcome it is counted under in [`CallStats::by_outcome`].
struct Answer {
    response: Response,
    label: String,
}

/// Answers one ECS call: admission under the lock, throttling, latency and injected faults,
/// then the action itself and the (possibly broken) answer.
async fn handle(
    emulator: Arc<Emulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = decode_params(&uri, &headers, &body);
    let query = query_pairs(&uri);
    let header_pairs = lowercase_headers(&headers);
    let request = Request {
        method: method.as_str(),
        path: uri.path(),
        query: &query,
        params: &params,
        headers: &header_pairs,
        body: &body,
    };
    let request_id = request_id();
    let now = emulator.clock.now();
    if crate::sts::is_sts(request.version()) {
        return sts_call(&emulator, &request, &request_id, now);
    }
    let Admission {
        result,
        throttle,
        latency,
    } = admit(&emulator, &request, now);
    // Outside the state lock: waiters read the state while holding the watch.
    emulator.activity.send_modify(|n| *n += 1);
    let call = match result {
        Ok(call) => call,
        Err(fault) => {
            return finish(
                &emulator,
                fault_response(&fault, request.action_name(), &request_id, None),
                &fault.code,
            );
        }
    };
    if let Some(response) = throttle_response(&emulator, &throttle, &call, &request_id) {
        return response;
    }
    emulate_latency(latency, call.fault.as_ref()).await;
    if call.fault == Some(FaultKind::Hold) {
        hold_until_released(&emulator).await;
    }
    if let Some(response) =
        refusal_response(&emulator, (call.fault.as_ref(), call.action), &request_id)
    {
        return response;
    }
    let answer = run_action(&emulator, &call, &params, &request_id);
    deliver(&emulator, call.fault, answer).await
}

/// Decodes the query string and, when the body is a form, the body's parameters too.
fn decode_params(uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Params {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    Params::decode(uri.query(), is_form.then_some(&body[..]))
}

/// The query's parameters alone, decoded (V3 signs these).
fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The headers with lowercase names (V3 signs names lowercase); values that are not text are
/// left out, so a signature listing them fails.
fn lowercase_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// Under the state lock: runs due provider deductions, counts the call, authenticates it and
/// draws an injected fault. Sleeping and answering happen outside the lock.
fn admit(emulator: &Emulator, request: &Request<'_>, now: DateTime<Utc>) -> Admission {
    let mut state = emulator.lock();
    state.world.run_provider_deductions(now);
    let action_name = request.action_name().to_owned();
    let version = request.version().to_owned();
    *state
        .calls
        .by_action
        .entry(action_name.clone())
        .or_default() += 1;
    let auth_now = auth_now(&state.world, now);
    let State_ {
        world,
        nonces,
        faults,
        ..
    } = &mut *state;
    let result = authenticate(request, world, nonces, auth_now, now).and_then(|caller| {
        resolve_call(
            caller,
            (&action_name, &version),
            request.params,
            faults,
            now,
        )
    });
    Admission {
        result,
        throttle: world.settings.throttle.clone(),
        latency: world.settings.latency,
    }
}

/// The clock a request's timestamp window is checked against.
fn auth_now(world: &World, now: DateTime<Utc>) -> DateTime<Utc> {
    match world.settings.auth_clock {
        AuthClock::Emulated => now,
        AuthClock::Wall => SystemClock.now(),
    }
}

/// Answers an STS call (`crate::sts`): counted, authenticated (but `AssumeRoleWithOIDC`, which
/// its token proves) and run under the state lock.
/// STS answers at once: no latency, throttling or injected faults.
fn sts_call(
    emulator: &Emulator,
    request: &Request<'_>,
    request_id: &str,
    now: DateTime<Utc>,
) -> Response {
    let outcome = {
        let mut state = emulator.lock();
        *state
            .calls
            .by_action
            .entry(request.action_name().to_owned())
            .or_default() += 1;
        let auth_now = auth_now(&state.world, now);
        let State_ { world, nonces, .. } = &mut *state;
        let action = request.action_name();
        if crate::sts::is_anonymous(action) {
            crate::sts::dispatch_anonymous(world, action, request.params, now)
        } else {
            authenticate(request, world, nonces, auth_now, now).and_then(|caller| {
                crate::sts::dispatch(world, &caller, action, request.params, now)
            })
        }
    };
    emulator.activity.send_modify(|n| *n += 1);
    match outcome {
        Ok(mut value) => {
            value["RequestId"] = Value::String(request_id.to_owned());
            finish(emulator, json_response(200, &value, request_id), "OK")
        }
        Err(fault) => finish(
            emulator,
            fault_response(&fault, request.action_name(), request_id, None),
            &fault.code,
        ),
    }
}

/// Resolves an authenticated caller's action (unknown names, and a name asked of another API
/// version, ECS's or BSS's, fail) and takes the first injected fault matching the action,
/// region and account.
fn resolve_call(
    caller: Caller,
    (action_name, version): (&str, &str),
    params: &Params,
    faults: &mut Faults,
    now: DateTime<Utc>,
) -> Result<Call, Fault> {
    let action = Action::parse(action_name)
        .filter(|action| action.version() == version)
        .ok_or_else(|| {
            Fault::new(
                404,
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            )
        })?;
    let region = params.get("RegionId").unwrap_or("").to_owned();
    let fault = faults.take(Some(action), &region, &caller.account, now);
    Ok(Call {
        caller,
        action,
        region,
        fault,
    })
}

/// The (counted) Throttling answer when the call exceeds its real-time rate, else `None`.
fn throttle_response(
    emulator: &Emulator,
    throttle: &ThrottleSettings,
    call: &Call,
    request_id: &str,
) -> Option<Response> {
    let wait = emulator
        .throttler
        .check(throttle, &call.caller.account, &call.region, call.action)
        .err()?;
    let fault = Fault::new(
        400,
        "Throttling",
        "Request was denied due to request throttling.",
    );
    let advice = throttle.retry_after_header.then_some(wait);
    Some(finish(
        emulator,
        fault_response(&fault, call.action.as_str(), request_id, advice),
        "Throttling",
    ))
}

/// Waits, unprocessed, until the next release (one that happens after the call arrived).
async fn hold_until_released(emulator: &Emulator) {
    use std::sync::atomic::Ordering;
    let mut releases = emulator.releases.subscribe();
    let arrived = *releases.borrow_and_update();
    emulator.held.fetch_add(1, Ordering::SeqCst);
    // Waiters on `activity` see the held count change.
    emulator.activity.send_modify(|n| *n += 1);
    let _ = releases.wait_for(|generation| *generation > arrived).await;
    emulator.held.fetch_sub(1, Ordering::SeqCst);
}

/// Sleeps for the configured latency plus any injected latency fault.
async fn emulate_latency(latency: Duration, fault: Option<&FaultKind>) {
    let mut delay = latency;
    if let Some(FaultKind::Latency { ms }) = fault {
        delay += Duration::from_millis(*ms);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// The (counted) answer for an injected fault that replaces the action, so nothing is
/// processed: an error, a reset connection or a gateway's HTML page. `None` otherwise.
fn refusal_response(
    emulator: &Emulator,
    (fault, action): (Option<&FaultKind>, Action),
    request_id: &str,
) -> Option<Response> {
    match fault? {
        FaultKind::Error {
            code,
            status,
            message,
            retry_after_ms,
        } => {
            let fault = Fault::new(
                *status,
                code,
                message
                    .clone()
                    .unwrap_or_else(|| format!("Injected fault {code}.")),
            );
            let advice = retry_after_ms.map(Duration::from_millis);
            Some(finish(
                emulator,
                fault_response(&fault, action.as_str(), request_id, advice),
                &fault.code,
            ))
        }
        FaultKind::Reset => Some(finish(emulator, broken_response(), "Reset")),
        FaultKind::Html => {
            let response = (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "text/html")],
                HTML_502,
            )
                .into_response();
            Some(finish(emulator, response, "Html"))
        }
        _ => None,
    }
}

/// Runs the action at the clock's time now (after any latency) and builds its JSON answer.
fn run_action(emulator: &Emulator, call: &Call, params: &Params, request_id: &str) -> Answer {
    let now = emulator.clock.now();
    let outcome = {
        let mut state = emulator.lock();
        state.world.run_provider_deductions(now);
        actions::dispatch(&mut state.world, &call.caller, call.action, params, now)
    };
    match outcome {
        Ok(mut value) => {
            value["RequestId"] = Value::String(request_id.to_owned());
            Answer {
                response: json_response(200, &value, request_id),
                label: "OK".to_owned(),
            }
        }
        Err(fault) => Answer {
            response: fault_response(&fault, call.action.as_str(), request_id, None),
            label: fault.code.clone(),
        },
    }
}

/// Counts and sends the action's answer, or breaks it as an injected fault asks (the action
/// has taken effect either way): a dropped connection or a truncated body.
async fn deliver(emulator: &Emulator, fault: Option<FaultKind>, answer: Answer) -> Response {
    match fault {
        Some(FaultKind::CommitThenDrop) => finish(emulator, broken_response(), "CommitThenDrop"),
        Some(FaultKind::Malformed) => {
            let text = response_text(answer.response).await;
            let cut = text.len() / 2;
            let truncated = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                text[..cut].to_owned(),
            )
                .into_response();
            finish(emulator, truncated, "Malformed")
        }
        _ => finish(emulator, answer.response, &answer.label),
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
