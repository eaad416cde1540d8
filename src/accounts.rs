//! Turns the configured accounts into ready ECS clients: credentials resolved (so a missing or
//! broken source is found at start-up, not at the first renewal), endpoints, rate limits and
//! retries applied, one shared HTTP connection pool.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cloud::EcsClient;
use crate::cloud::client::{CallObserver, ClientSettings, shared_http_client};
use crate::cloud::credentials::{self, CredentialError, Environment};
use crate::config::{Config, Regions};

/// Connect timeout for every ECS call (the official SDKs use 5 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One account, ready to call.
#[derive(Debug, Clone)]
pub struct AccountClient {
    /// The account's name.
    pub name: String,
    /// Its client.
    pub client: Arc<EcsClient>,
    /// The regions it scans.
    pub regions: Regions,
}

/// An account whose credentials cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("{path}: accounts[{index}] ({account}): no usable credentials: {source}")]
pub struct AccountError {
    /// The config file.
    pub path: String,
    /// Index in `[[accounts]]`.
    pub index: usize,
    /// Name.
    pub account: String,
    /// Why.
    #[source]
    pub source: CredentialError,
}

/// Builds a client for every account; credential warnings (a world-readable key file) are
/// returned alongside.
pub async fn connect(
    config: &Config,
    env: &Environment,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn CallObserver>,
    cancel: CancellationToken,
) -> Result<(Vec<AccountClient>, Vec<String>), AccountError> {
    let http = shared_http_client(CONNECT_TIMEOUT);
    let mut clients = Vec::with_capacity(config.accounts.len());
    let mut warnings = Vec::new();
    for (index, account) in config.accounts.iter().enumerate() {
        let provider = credentials::resolve(&account.credentials, env)
            .await
            .map_err(|source| AccountError {
                path: config.path.display().to_string(),
                index,
                account: account.name.clone(),
                source,
            })?;
        warnings.extend(
            provider
                .warnings()
                .iter()
                .map(|w| format!("account {}: {w}", account.name)),
        );
        tracing::info!(account = %account.name, credentials = %provider.origin(), "credentials resolved");
        let settings = ClientSettings {
            account: account.name.clone(),
            endpoint: account.endpoint.clone(),
            read_timeouts: account.read_timeouts.clone(),
            retry: account.call_retry.clone(),
            rate_limit: account.rate_limit.clone(),
        };
        let client = EcsClient::new(settings, http.clone(), Arc::new(provider), clock.clone())
            .with_observer(observer.clone())
            .with_cancellation(cancel.clone());
        clients.push(AccountClient {
            name: account.name.clone(),
            client: Arc::new(client),
            regions: account.regions.clone(),
        });
    }
    Ok((clients, warnings))
}
