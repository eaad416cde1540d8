//! Shared test helpers: a scripted loopback HTTP stub that records every request, and
//! helpers to build clients against it.
#![allow(dead_code)]

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
    /// The path.
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
    /// Body.
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
    retry: ecs_renewd::cloud::retry::RetryPolicy,
) -> ecs_renewd::cloud::EcsClient {
    client_with(
        base_url,
        retry,
        TEST_KEY_ID,
        TEST_SECRET,
        Some(TEST_TOKEN),
        Arc::new(ecs_renewd::clock::SystemClock),
    )
}

/// A client with the given key, token and clock.
pub fn client_with(
    base_url: &str,
    retry: ecs_renewd::cloud::retry::RetryPolicy,
    key_id: &str,
    secret: &str,
    token: Option<&str>,
    clock: Arc<dyn ecs_renewd::clock::Clock>,
) -> ecs_renewd::cloud::EcsClient {
    use ecs_renewd::cloud::client::{ClientSettings, shared_http_client};
    use ecs_renewd::cloud::credentials::{CredentialProvider, Credentials};
    use ecs_renewd::cloud::endpoint::Endpoint;
    use ecs_renewd::cloud::rate_limit::RateLimitConfig;
    use ecs_renewd::secret::Secret;

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
pub fn fast_retry(max_attempts: u32) -> ecs_renewd::cloud::retry::RetryPolicy {
    ecs_renewd::cloud::retry::RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(5),
    }
}

/// A log capture: a tracing subscriber writing JSON lines into a shared buffer.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs the capture for the current thread (all levels).
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}
