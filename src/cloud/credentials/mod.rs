//! Where an account's AccessKey comes from. A chain of sources, first that yields wins:
//! explicit files named in the config, the environment, systemd credentials, the aliyun CLI
//! profile, the ECS RAM role through the instance metadata service (docs/ecs-api.md §5), and a
//! credentials URI (docs/sts-and-directories.md §3.2); on
//! top of any of them, a RAM role assumed through STS (`assume_role`). Secrets are held in
//! [`Secret`] from the moment they are read.

mod assume_role;
mod cli_profile;
mod imds;
mod oidc;
mod refresh;
mod sources;
mod uri;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use assume_role::{AssumeRoleConfig, AssumedRole, STS_VERSION};
pub use imds::{DEFAULT_METADATA_URL, ImdsProvider, check_metadata_url};
pub use refresh::REFUSAL_PAUSE;
pub use uri::URI_VARIABLE;

use crate::closed_enum;
use crate::secret::Secret;

/// A usable AccessKey, possibly temporary (STS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The AccessKey ID (not secret: it appears in every request).
    pub access_key_id: String,
    /// The AccessKey secret.
    pub access_key_secret: Secret,
    /// The STS token, for temporary credentials.
    pub security_token: Option<Secret>,
    /// When temporary credentials stop working.
    pub expiration: Option<DateTime<Utc>>,
}

/// A snapshot of the process environment. Read once at start-up and passed in, so tests can
/// supply their own without touching the real environment. It holds AccessKey secrets when
/// they come from the environment: `Debug` shows the variable names only, and the values are
/// wiped when dropped.
#[derive(Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        for value in self.vars.values_mut() {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

impl Environment {
    /// The real process environment.
    pub fn from_process() -> Self {
        Environment {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment made of the given variables only.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value; unset and empty are the same.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Whether a variable is set to `true` (any case) or `1`.
    pub fn is_true(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }

    /// `$CREDENTIALS_DIRECTORY`: where systemd's `LoadCredential=` (and the Kubernetes
    /// manifest's Secret) puts credential files. The service manager makes it private to the
    /// daemon, so its files are not held to the secret-file mode rule.
    pub fn credentials_directory(&self) -> Option<PathBuf> {
        self.get("CREDENTIALS_DIRECTORY").map(PathBuf::from)
    }

    /// The home directory.
    pub fn home(&self) -> Option<PathBuf> {
        self.get("HOME").map(PathBuf::from)
    }
}

closed_enum! {
    /// Which credentials source an account uses.
    pub enum SourceKind {
        /// Try every source in order; the first that yields wins.
        Chain => "chain",
        /// `access_key_id` plus `access_key_secret_file` (and `security_token_file`).
        File => "file",
        /// `ALIBABA_CLOUD_ACCESS_KEY_ID`/`_SECRET`/`_SECURITY_TOKEN`, then `ALIYUN_*`, `ALICLOUD_*`.
        Env => "env",
        /// A RAM role assumed with an OIDC token (RRSA on ACK): `AssumeRoleWithOIDC`.
        Oidc => "oidc",
        /// Files in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
        Systemd => "systemd",
        /// The aliyun CLI's `~/.aliyun/config.json`.
        CliProfile => "cli-profile",
        /// The ECS RAM role, through the instance metadata service.
        RamRole => "ram-role",
        /// A credentials URI (`credentials_uri`, or `ALIBABA_CLOUD_CREDENTIALS_URI`).
        Uri => "uri",
    }
}

/// An account's credentials settings, as written in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Which source to use; `chain` tries them all in order.
    #[serde(default = "default_source")]
    pub source: SourceKind,
    /// AccessKey ID for the `file` source (the ID is not a secret).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// A file whose whole content is the AccessKey secret (never the secret inline).
    #[serde(default)]
    pub access_key_secret_file: Option<PathBuf>,
    /// A file holding an STS token, for temporary keys.
    #[serde(default)]
    pub security_token_file: Option<PathBuf>,
    /// Prefix of the systemd credential names: `<prefix>access_key_id`,
    /// `<prefix>access_key_secret`, `<prefix>security_token`.
    #[serde(default)]
    pub systemd_credential_prefix: String,
    /// The aliyun CLI config file (default `~/.aliyun/config.json`).
    #[serde(default)]
    pub cli_config_path: Option<PathBuf>,
    /// The CLI profile (default `$ALIBABA_CLOUD_PROFILE`, else the file's `current`).
    #[serde(default)]
    pub cli_profile: Option<String>,
    /// The RAM role name (default: discovered from the metadata service).
    #[serde(default)]
    pub ram_role_name: Option<String>,
    /// The metadata service base URL.
    #[serde(default = "default_metadata_url")]
    pub metadata_url: String,
    /// For `oidc`: the role (default `$ALIBABA_CLOUD_ROLE_ARN`).
    #[serde(default)]
    pub role_arn: Option<String>,
    /// For `oidc`: the OIDC provider (default `$ALIBABA_CLOUD_OIDC_PROVIDER_ARN`).
    #[serde(default)]
    pub oidc_provider_arn: Option<String>,
    /// For `oidc`: the token file, read at every refresh (default
    /// `$ALIBABA_CLOUD_OIDC_TOKEN_FILE`).
    #[serde(default)]
    pub oidc_token_file: Option<PathBuf>,
    /// For `oidc`: the session name (default `$ALIBABA_CLOUD_ROLE_SESSION_NAME`, else
    /// `ecs-renewd`).
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// For `oidc`: where STS is (default by `$ALIBABA_CLOUD_STS_REGION`, else
    /// `sts.aliyuncs.com`).
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// For `uri`: the credentials URI (default `$ALIBABA_CLOUD_CREDENTIALS_URI`).
    #[serde(default)]
    pub credentials_uri: Option<String>,
    /// Whether to fall back to token-less metadata requests (IMDSv1) when a token cannot be had.
    #[serde(default = "default_true")]
    pub imdsv1_fallback: bool,
    /// Renew temporary credentials this long before they expire.
    #[serde(
        default = "default_refresh_before",
        with = "crate::duration::serde_humantime"
    )]
    pub refresh_before: Duration,
}

fn default_source() -> SourceKind {
    SourceKind::Chain
}
fn default_metadata_url() -> String {
    DEFAULT_METADATA_URL.to_owned()
}
fn default_true() -> bool {
    true
}
fn default_refresh_before() -> Duration {
    // The metadata service hands out a new token 30 min before the old one expires; the
    // official Python library treats a token as stale 15 min before expiry.
    Duration::from_secs(15 * 60)
}

impl Default for CredentialsConfig {
    fn default() -> Self {
        CredentialsConfig {
            source: default_source(),
            access_key_id: None,
            access_key_secret_file: None,
            security_token_file: None,
            systemd_credential_prefix: String::new(),
            cli_config_path: None,
            cli_profile: None,
            ram_role_name: None,
            role_arn: None,
            oidc_provider_arn: None,
            oidc_token_file: None,
            role_session_name: None,
            sts_endpoint: None,
            credentials_uri: None,
            metadata_url: default_metadata_url(),
            imdsv1_fallback: true,
            refresh_before: default_refresh_before(),
        }
    }
}

/// Why no credentials could be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A file named by the config or the environment cannot be read.
    #[error(
        "cannot read the {what} from {path}: {source} — check the path and that the daemon's user may read it"
    )]
    Unreadable {
        /// What the file should hold.
        what: &'static str,
        /// The file's path, as the config or the environment names it.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A file that should hold a value is empty.
    #[error("the {what} file {path} is empty — put the value in the file")]
    Empty {
        /// What the file should hold.
        what: &'static str,
        /// The path of the empty file.
        path: PathBuf,
    },

    /// A secret file cannot be used (unreadable, empty, or open to other users).
    #[error(transparent)]
    SecretFile(#[from] crate::secret::SecretFileError),

    /// A source is half configured (an ID without a secret, say).
    #[error("the {source_name} credentials source is incomplete: {detail}")]
    Incomplete {
        /// Which source.
        source_name: &'static str,
        /// What is missing.
        detail: String,
    },

    /// The aliyun CLI config cannot be used.
    #[error("aliyun CLI config {path}: {detail}")]
    CliProfile {
        /// The aliyun CLI config file read (by default `~/.aliyun/config.json`).
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },

    /// The instance metadata service failed.
    #[error("ECS RAM role via the metadata service at {url}: {detail}")]
    Metadata {
        /// Base URL.
        url: String,
        /// What failed.
        detail: String,
    },

    /// Temporary credentials could not be fetched (STS would not give a role's key, a
    /// credentials URI failed) and no key fetched before still works.
    #[error("{what}: {detail}")]
    Temporary {
        /// What was fetched: "assuming RAM role acs:…", "the credentials URI …".
        what: String,
        /// The source's code, message and request id with advice, or why it could not be asked.
        detail: String,
    },

    /// Every source was tried and none yielded.
    #[error(
        "no credentials found; tried: {tried} — configure the account's credentials (see config/example.toml)"
    )]
    NotFound {
        /// Each source and why it did not yield.
        tried: String,
    },
}

/// Whether a shared provider's user passes `invalidate` on to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// The user's refused key is the shared key: it is dropped.
    PassedOn,
    /// The user's key is its own (a role assumed with the shared key): the shared key stays.
    Kept,
}

/// A resolved credentials source that hands out credentials, refreshing temporary ones.
pub struct CredentialProvider {
    origin: String,
    warnings: Vec<String>,
    kind: ProviderKind,
}

enum ProviderKind {
    Static(Credentials),
    Imds(ImdsProvider),
    Refreshing(Box<refresh::Refreshing>),
    Assumed(Box<AssumedRole>),
    /// One provider several others build on (a directory's management identity, the base of
    /// every member's role): its keys are fetched and refreshed once for all of them. Whether
    /// a user's `invalidate` reaches it: the lister's does (its own calls were refused), a
    /// member role's does not (a member's key refused says nothing of the management key).
    Shared(Arc<CredentialProvider>, Invalidation),
}

impl fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialProvider")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl CredentialProvider {
    /// Fixed credentials (from a file, the environment, systemd or a CLI profile).
    pub fn fixed(credentials: Credentials, origin: impl Into<String>) -> Self {
        CredentialProvider {
            origin: origin.into(),
            warnings: Vec::new(),
            kind: ProviderKind::Static(credentials),
        }
    }

    /// Credentials from the metadata service, refreshed before they expire.
    pub fn metadata(provider: ImdsProvider) -> Self {
        CredentialProvider {
            origin: provider.describe(),
            warnings: Vec::new(),
            kind: ProviderKind::Imds(provider),
        }
    }

    /// Temporary credentials fetched and refreshed (a credentials URI).
    fn refreshing(refreshing: refresh::Refreshing, origin: String) -> Self {
        CredentialProvider {
            origin,
            warnings: Vec::new(),
            kind: ProviderKind::Refreshing(Box::new(refreshing)),
        }
    }

    /// The role `assumed` names, assumed with its base credentials; the base's warnings stay.
    pub fn assumed(assumed: AssumedRole, warnings: Vec<String>) -> Self {
        CredentialProvider {
            origin: assumed.describe(),
            warnings,
            kind: ProviderKind::Assumed(Box::new(assumed)),
        }
    }

    /// `shared`, used by more than one; its keys are fetched once for every user.
    pub fn shared(shared: Arc<CredentialProvider>, invalidation: Invalidation) -> Self {
        CredentialProvider {
            origin: shared.origin.clone(),
            warnings: Vec::new(),
            kind: ProviderKind::Shared(shared, invalidation),
        }
    }

    /// Whether the keys are fetched from a service (STS for an assumed role or OIDC, a
    /// credentials URI): `check-config` fetches them once to find a refusal now.
    pub fn is_fetched(&self) -> bool {
        match &self.kind {
            ProviderKind::Refreshing(_) | ProviderKind::Assumed(_) => true,
            ProviderKind::Shared(shared, _) => shared.is_fetched(),
            ProviderKind::Static(_) | ProviderKind::Imds(_) => false,
        }
    }

    fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    /// The AccessKey ID of fixed credentials (temporary ones from the metadata service change
    /// and are not compared).
    pub fn fixed_key_id(&self) -> Option<&str> {
        match &self.kind {
            ProviderKind::Static(credentials) => Some(&credentials.access_key_id),
            ProviderKind::Shared(shared, _) => shared.fixed_key_id(),
            ProviderKind::Imds(_) | ProviderKind::Refreshing(_) | ProviderKind::Assumed(_) => None,
        }
    }

    /// Where the credentials come from, for logs and `check-config` (never the secret).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Things the operator should fix that do not stop the daemon (a world-readable key file).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Forgets cached temporary credentials (the service rejected them), so the next call
    /// fetches fresh ones. Fixed credentials are kept: re-reading them cannot help.
    pub async fn invalidate(&self) {
        match &self.kind {
            ProviderKind::Static(_) => {}
            ProviderKind::Imds(provider) => provider.invalidate().await,
            ProviderKind::Refreshing(source) => source.invalidate().await,
            ProviderKind::Assumed(role) => role.invalidate().await,
            ProviderKind::Shared(shared, Invalidation::PassedOn) => shared.invalidate_boxed().await,
            ProviderKind::Shared(_, Invalidation::Kept) => {}
        }
    }

    /// [`CredentialProvider::invalidate`], boxed: an assumed role's base is a provider too.
    fn invalidate_boxed(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.invalidate())
    }

    /// [`CredentialProvider::credentials`], boxed: an assumed role's base is a provider too.
    #[allow(clippy::type_complexity)]
    fn credentials_boxed(
        &self,
        now: DateTime<Utc>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Credentials, CredentialError>> + Send + '_>>
    {
        Box::pin(self.credentials(now))
    }

    /// The credentials to sign with at `now`, refreshing temporary ones that are close
    /// to expiry.
    pub async fn credentials(&self, now: DateTime<Utc>) -> Result<Credentials, CredentialError> {
        match &self.kind {
            ProviderKind::Static(credentials) => Ok(credentials.clone()),
            ProviderKind::Imds(provider) => provider.credentials(now).await,
            ProviderKind::Refreshing(source) => source.credentials(now).await,
            ProviderKind::Assumed(role) => role.credentials(now).await,
            ProviderKind::Shared(shared, _) => shared.credentials_boxed(now).await,
        }
    }
}

/// The result of asking one source.
pub(crate) enum Attempt {
    /// The source yielded.
    Found(Box<CredentialProvider>),
    /// The source is not set up here (and why), so the chain moves on.
    Absent(String),
}

impl Attempt {
    fn found(provider: CredentialProvider) -> Attempt {
        Attempt::Found(Box::new(provider))
    }
}

/// Resolves an account's credentials source: for `chain`, the first source that yields.
/// A source that is present but broken (an unreadable key file, a half-set environment) is an
/// error rather than a reason to move on, so a typo never silently selects other credentials.
pub async fn resolve(
    config: &CredentialsConfig,
    env: &Environment,
) -> Result<CredentialProvider, CredentialError> {
    let order: &[SourceKind] = match config.source {
        SourceKind::Chain => &[
            SourceKind::File,
            SourceKind::Env,
            SourceKind::Oidc,
            SourceKind::Systemd,
            SourceKind::CliProfile,
            SourceKind::RamRole,
            SourceKind::Uri,
        ],
        SourceKind::File => &[SourceKind::File],
        SourceKind::Env => &[SourceKind::Env],
        SourceKind::Oidc => &[SourceKind::Oidc],
        SourceKind::Systemd => &[SourceKind::Systemd],
        SourceKind::CliProfile => &[SourceKind::CliProfile],
        SourceKind::RamRole => &[SourceKind::RamRole],
        SourceKind::Uri => &[SourceKind::Uri],
    };
    let mut tried = Vec::new();
    for &kind in order {
        let attempt = match kind {
            SourceKind::File => sources::from_files(config, env)?,
            SourceKind::Env => sources::from_env(env)?,
            SourceKind::Oidc => oidc::from_oidc(config, env)?,
            SourceKind::Systemd => sources::from_systemd(config, env)?,
            SourceKind::CliProfile => cli_profile::from_cli_profile(config, env)?,
            SourceKind::RamRole => imds::from_ram_role(config, env).await?,
            SourceKind::Uri => uri::from_uri(config, env)?,
            SourceKind::Chain => unreachable!("the chain lists concrete sources only"),
        };
        match attempt {
            Attempt::Found(provider) => return Ok(*provider),
            Attempt::Absent(why) => tried.push(format!("{kind} ({why})")),
        }
    }
    Err(CredentialError::NotFound {
        tried: tried.join(", "),
    })
}
