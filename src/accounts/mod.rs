//! Turns the configured accounts into ready ECS clients: credentials resolved (so a missing or
//! broken source is found at start-up, not at the first renewal), two entries signing with one
//! AccessKey refused, endpoints, rate limits and retries applied, one shared HTTP connection
//! pool; an account with `[accounts.assume_role]` signs with the role's key, assumed through
//! STS with its base credentials; a Resource Directory's members become accounts of their own
//! (`directory`).

pub mod directory;

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

/// An `[[accounts]]` entry that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Its credentials cannot be had.
    #[error(
        "{path}:{line}:{column}: {table}[{index}].credentials: {} {account:?} has no usable credentials: {source}",
        if *table == "directories" { "directory" } else { "account" }
    )]
    Credentials {
        /// The config file.
        path: String,
        /// `accounts`, or `directories` for a directory's management identity.
        table: &'static str,
        /// Index in the table.
        index: usize,
        /// The `name` of the entry whose credentials failed.
        account: String,
        /// Where the entry's name is.
        line: usize,
        /// Where the entry's name is.
        column: usize,
        /// The credential error: which source failed, and how.
        #[source]
        source: CredentialError,
    },
    /// Two entries sign with the same AccessKey: they reach one cloud account, and both would
    /// act on the same instances.
    #[error(
        "{path}:{line}:{column}: accounts[{index}].credentials: account {account:?} signs with AccessKey {key_id}, which accounts[{first_index}] ({first_account}) at {path}:{first_line}:{first_column} uses too: both entries would act on the same instances (hint: merge them into one entry that lists every region, or give each entry its own RAM user with regions that do not overlap)"
    )]
    SharedKey {
        /// The config file.
        path: String,
        /// The later entry.
        index: usize,
        /// Its name.
        account: String,
        /// Where it starts.
        line: usize,
        /// Where it starts.
        column: usize,
        /// The earlier entry.
        first_index: usize,
        /// Its name.
        first_account: String,
        /// Where it starts.
        first_line: usize,
        /// Where it starts.
        first_column: usize,
        /// The AccessKey ID, shortened (it is not a secret, but need not be spelled out).
        key_id: String,
    },
}

impl AccountError {
    /// The line of the entry the problem is about (for ordering problems by place).
    pub fn line(&self) -> usize {
        match self {
            AccountError::Credentials { line, .. } | AccountError::SharedKey { line, .. } => *line,
        }
    }
}

/// An AccessKey ID as error messages show it: its first four and last three characters.
fn shortened(key_id: &str) -> String {
    let chars: Vec<char> = key_id.chars().collect();
    if chars.len() <= 8 {
        return key_id.to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}…{tail}")
}

/// Resolves every account's credentials: a provider per account, or every problem found
/// (the first, then the rest: each account's own, and two entries signing with one
/// AccessKey), so `check-config` can report them all at once.
pub async fn resolve_all(
    config: &Config,
    env: &Environment,
) -> Result<Vec<credentials::CredentialProvider>, (AccountError, Vec<AccountError>)> {
    let accounts: Vec<(usize, &crate::config::Account)> =
        config.accounts.iter().enumerate().collect();
    let (providers, problems) = resolve_accounts(&config.path, &accounts, env).await;
    let mut problems = problems.into_iter();
    match problems.next() {
        None => Ok(providers.into_iter().map(|(_, p)| p).collect()),
        Some(first) => Err((first, problems.collect())),
    }
}

/// Resolves the credentials of `accounts` (each with its index in the file at `path`): the
/// providers of those that resolve, and every problem.
pub async fn resolve_accounts(
    path: &std::path::Path,
    accounts: &[(usize, &crate::config::Account)],
    env: &Environment,
) -> (
    Vec<(usize, credentials::CredentialProvider)>,
    Vec<AccountError>,
) {
    let mut providers = Vec::with_capacity(accounts.len());
    let mut problems = Vec::new();
    // Two entries with one AccessKey reach one cloud account: refused. (Two RAM users of one
    // account cannot be told apart here; each instance is then managed once per pass, through
    // the entry that lists it first, and the overlap is reported.)
    let mut key_ids: std::collections::HashMap<String, &crate::config::Account> =
        std::collections::HashMap::new();
    let mut first_index: std::collections::HashMap<String, usize> = Default::default();
    // STS calls (assumed roles) share one HTTP client, made when the first role needs it.
    let mut sts_http: Option<reqwest::Client> = None;
    for (index, account) in accounts.iter().copied() {
        let resolved = credentials::resolve(&account.credentials, env)
            .await
            .map(|base| match &account.assume_role {
                None => base,
                Some(role) => {
                    let http = sts_http.get_or_insert_with(|| shared_http_client(CONNECT_TIMEOUT));
                    assume(base, role, http.clone(), account.credentials.refresh_before)
                }
            });
        let provider = match resolved {
            Ok(provider) => provider,
            Err(source) => {
                problems.push(AccountError::Credentials {
                    path: path.display().to_string(),
                    table: "accounts",
                    index,
                    account: account.name.clone(),
                    line: account.location.0,
                    column: account.location.1,
                    source,
                });
                continue;
            }
        };
        if let Some(key_id) = provider.fixed_key_id() {
            if let Some(first) = key_ids.get(key_id) {
                problems.push(AccountError::SharedKey {
                    path: path.display().to_string(),
                    index,
                    account: account.name.clone(),
                    line: account.location.0,
                    column: account.location.1,
                    first_index: first_index[key_id],
                    first_account: first.name.clone(),
                    first_line: first.location.0,
                    first_column: first.location.1,
                    key_id: shortened(key_id),
                });
                continue;
            }
            key_ids.insert(key_id.to_owned(), account);
            first_index.insert(key_id.to_owned(), index);
        }
        providers.push((index, provider));
    }
    (providers, problems)
}

/// `role` assumed with `base`'s credentials.
pub(crate) fn assume(
    base: credentials::CredentialProvider,
    role: &crate::config::AssumeRole,
    http: reqwest::Client,
    refresh_before: Duration,
) -> credentials::CredentialProvider {
    let warnings = base.warnings().to_vec();
    let assumed = credentials::AssumedRole::new(
        base,
        role.config.clone(),
        role.sts_url.clone(),
        http,
        refresh_before,
    );
    credentials::CredentialProvider::assumed(assumed, warnings)
}

/// What every account's client is made with: one HTTP connection pool, the clock, the call
/// observer (metrics) and the shutdown token. Kept by the directories, whose members' clients
/// are made when they join.
#[derive(Clone)]
pub struct Wiring {
    /// The shared HTTP client.
    pub http: reqwest::Client,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// Counts every call.
    pub observer: Arc<dyn CallObserver>,
    /// No new call starts once it fires.
    pub cancel: CancellationToken,
}

impl Wiring {
    /// The wiring over a new HTTP connection pool.
    pub fn new(
        clock: Arc<dyn Clock>,
        observer: Arc<dyn CallObserver>,
        cancel: CancellationToken,
    ) -> Wiring {
        Wiring {
            http: shared_http_client(CONNECT_TIMEOUT),
            clock,
            observer,
            cancel,
        }
    }

    /// `account`'s client, signing with `provider`'s credentials.
    pub fn client(
        &self,
        account: &crate::config::Account,
        provider: credentials::CredentialProvider,
    ) -> AccountClient {
        let settings = ClientSettings {
            account: account.name.clone(),
            endpoint: account.endpoint.clone(),
            read_timeouts: account.read_timeouts.clone(),
            retry: account.call_retry.clone(),
            rate_limit: account.rate_limit.clone(),
        };
        let client = EcsClient::new(
            settings,
            self.http.clone(),
            Arc::new(provider),
            self.clock.clone(),
        )
        .with_observer(self.observer.clone())
        .with_cancellation(self.cancel.clone());
        AccountClient {
            name: account.name.clone(),
            client: Arc::new(client),
            regions: account.regions.clone(),
        }
    }
}

/// Builds a client for every account; credential warnings (the IMDSv1 fallback, say) are
/// returned alongside. The first problem stops it (`check-config` shows them all).
pub async fn connect(
    config: &Config,
    env: &Environment,
    wiring: &Wiring,
) -> Result<(Vec<AccountClient>, Vec<String>), AccountError> {
    let providers = resolve_all(config, env).await.map_err(|(first, _)| first)?;
    let mut clients = Vec::with_capacity(config.accounts.len());
    let mut warnings = Vec::new();
    for (account, provider) in config.accounts.iter().zip(providers) {
        warnings.extend(
            provider
                .warnings()
                .iter()
                .map(|w| format!("account {}: {w}", account.name)),
        );
        tracing::info!(account = %account.name, credentials = %provider.origin(), "credentials resolved");
        clients.push(wiring.client(account, provider));
    }
    Ok((clients, warnings))
}
