//! The configuration: read a TOML file, check it completely (every problem is reported with
//! file, line, column, key path and a hint), and compile it into the form the daemon uses.
//! Nothing here talks to the network; resolving credentials is the caller's job.

mod collect;
mod compile;
mod directories;
mod report;
mod schema;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::policy::RetrySettings;
pub use schema::{ActionKind, MatchSection, Regions, Schedule, Timezone};

use crate::cloud::credentials::{CredentialsConfig, Environment};
use crate::cloud::endpoint::Endpoint;
use crate::cloud::periods::Site;
use crate::cloud::rate_limit::RateLimitConfig;
use crate::cloud::retry::RetryPolicy;
use crate::policy::Policy;

/// The default config path.
pub const DEFAULT_PATH: &str = "/etc/ecs-renewd/config.toml";

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file the problem is in.
    pub file: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// The key path, e.g. `policies[1].period_unit`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, " (hint: {})", self.hint)?;
        }
        Ok(())
    }
}

/// The admin server's settings besides its address (`[admin]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// The bearer token /metrics and /status require, if any.
    pub bearer_token_file: Option<PathBuf>,
    /// How long a connection may take to send a request head (and may stay idle).
    pub header_read_timeout: Duration,
    /// How long a client may take nothing of an answer.
    pub write_timeout: Duration,
    /// How long a whole answer may take.
    pub answer_timeout: Duration,
    /// Connections at once.
    pub max_connections: usize,
    /// /status requests at once.
    pub max_status_requests: usize,
}

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error(
        "cannot read the config file {path}: {source} — check the path (--config or ECS_RENEWD_CONFIG)"
    )]
    Read {
        /// The config file's path, as given (`--config`, ECS_RENEWD_CONFIG or the default).
        path: PathBuf,
        /// The I/O error from reading the file.
        #[source]
        source: std::io::Error,
    },
    /// The file has problems.
    #[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// The parts of a config file that read without a problem, even when other keys have
/// problems: `check-config` checks their credentials and the admin token in the same run.
#[derive(Debug, Clone, Default)]
pub struct Readable {
    /// Account entries without a problem, with their index in the file.
    pub accounts: Vec<(usize, Account)>,
    /// Directory entries without a problem, with their index in the file.
    pub directories: Vec<(usize, Directory)>,
    /// `[admin] bearer_token_file`, unless it has a problem.
    pub bearer_token_file: Option<PathBuf>,
}

/// One account, compiled.
#[derive(Debug, Clone)]
pub struct Account {
    /// The entry's unique `name`, used in logs, metric labels, ledger rows and policy matching.
    pub name: String,
    /// Credentials source.
    pub credentials: CredentialsConfig,
    /// A RAM role assumed with those credentials, and where STS is called.
    pub assume_role: Option<AssumeRole>,
    /// Where the account's calls go: the public or VPC endpoint, or a custom URL.
    pub endpoint: Endpoint,
    /// Site (period rules).
    pub site: Site,
    /// When the provider tries auto-renew deductions for this account's instances.
    pub deduction_schedule: crate::policy::DeductionSchedule,
    /// Whether the funds forecast queries this account's balance.
    pub funds_enabled: bool,
    /// Billing currency (a bare-number `max_price` is in it).
    pub currency: String,
    /// Where the entry starts in the file (line, column), for problems found later (two
    /// entries with one AccessKey).
    pub location: (usize, usize),
    /// Regions to scan.
    pub regions: Regions,
    /// Client-side rate limit.
    pub rate_limit: RateLimitConfig,
    /// In-pass retries of one call.
    pub call_retry: RetryPolicy,
    /// Per-action read timeout overrides.
    pub read_timeouts: Vec<(crate::cloud::Action, Duration)>,
}

/// `[[directories]]`, compiled: the management identity, how members are found and filtered,
/// and the settings each member account takes.
#[derive(Debug, Clone)]
pub struct Directory {
    /// The directory's name; members are `<name>/<AccountId>`.
    pub name: String,
    /// The management identity (`credentials`, `assume_role`) and the members' settings
    /// (endpoint, regions, site, currency, limits), as an account named after the directory.
    pub template: Account,
    /// The role assumed in each member, its session name and key lifetime.
    pub member_role: MemberRole,
    /// Account or folder ids: only members under one of them, when any are given.
    pub include: Vec<String>,
    /// Account or folder ids whose members are left out.
    pub exclude: Vec<String>,
    /// How often the members are listed again.
    pub refresh: Duration,
    /// Where `ListAccounts` is sent.
    pub list_url: reqwest::Url,
    /// Where the member roles are assumed: the members' regional STS endpoint (by their
    /// endpoint and first region), or a custom endpoint's URL itself.
    pub member_sts_url: reqwest::Url,
}

/// The role assumed in each member of a directory.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRole {
    /// `role_name`: the member's role is `acs:ram::<AccountId>:role/<role_name>`.
    pub name: String,
    /// The session name.
    pub session_name: String,
    /// How long each key lasts.
    pub duration: Duration,
}

/// `[accounts.assume_role]`, checked: the settings and the STS endpoint they resolve to.
#[derive(Debug, Clone, PartialEq)]
pub struct AssumeRole {
    /// The role, session, duration and ExternalId.
    pub config: crate::cloud::credentials::AssumeRoleConfig,
    /// Where AssumeRole is sent.
    pub sts_url: reqwest::Url,
}

/// `[funds]`: the forecast of upcoming charges against each account's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundsSettings {
    /// Whether passes and `plan` make the forecast.
    pub enabled: bool,
    /// How far past the next deduction morning it looks.
    pub horizon: Duration,
    /// The least time between two balance queries of one account.
    pub balance_interval: Duration,
    /// How long a price quote is reused.
    pub price_cache: Duration,
    /// While renewals are held for funds, the least time between two balance queries.
    pub top_up_check_interval: Duration,
}

/// Safety belts in whole cents.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most renewals in one pass.
    pub max_renewals_per_run: u32,
    /// Most renewals per day.
    pub max_renewals_per_day: u32,
    /// Most spend in one pass, per currency (cents).
    pub max_spend_per_run: BTreeMap<String, i64>,
    /// Most spend per day, per currency (cents).
    pub max_spend_per_day: BTreeMap<String, i64>,
    /// Most renewals per pass as a share of the PrePaid fleet seen (1.0 = off).
    pub max_fleet_share_per_run: f64,
    /// Most auto-renew switch-ons per pass.
    pub max_auto_renew_enables_per_run: u32,
}

impl Limits {
    /// Whether any spend limit is set (then every renewal must be priced first).
    pub fn has_spend_limits(&self) -> bool {
        !self.max_spend_per_run.is_empty() || !self.max_spend_per_day.is_empty()
    }
}

/// The scan settings.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Default regions.
    pub regions: Regions,
    /// Where DescribeRegions is asked.
    pub home_region: String,
    /// Window ahead.
    pub horizon: Duration,
    /// Window behind.
    pub grace: Duration,
    /// Sources in parallel.
    pub concurrency: usize,
    /// Skip tag key.
    pub skip_tag: String,
    /// Release period after expiry.
    pub release_after: Duration,
}

/// Where the ledger lives (`[ledger]`).
#[derive(Debug, Clone)]
pub enum LedgerLocation {
    /// A SQLite file in the state directory: one process (the default).
    Sqlite,
    /// A PostgreSQL database that replicas share.
    Postgres {
        /// Its URL, as written or in a file.
        url: LedgerUrl,
        /// Connections the ledger may hold (the lease has its own).
        pool_size: usize,
    },
}

/// The PostgreSQL ledger's URL (it may hold a password: never shown).
#[derive(Debug, Clone)]
pub enum LedgerUrl {
    /// `ledger.url`.
    Inline(crate::secret::Secret),
    /// `ledger.url_file`: read when the ledger is opened, under the secret-file rule.
    File(PathBuf),
}

impl LedgerUrl {
    /// The URL: as written, or read from its file under the secret-file rule (0600, or in
    /// systemd's credentials directory).
    pub fn read(
        &self,
        env: &Environment,
    ) -> Result<crate::secret::Secret, crate::secret::SecretFileError> {
        match self {
            LedgerUrl::Inline(url) => Ok(url.clone()),
            LedgerUrl::File(path) => crate::secret::read_secret_file(
                path,
                "ledger database URL",
                env.credentials_directory().as_deref(),
            ),
        }
    }
}

/// A checked, compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from.
    pub path: PathBuf,
    /// Cron schedule.
    pub schedule: Schedule,
    /// Its timezone.
    pub timezone: chrono_tz::Tz,
    /// Start jitter.
    pub jitter: Duration,
    /// State directory.
    pub state_dir: PathBuf,
    /// Dry run.
    pub dry_run: bool,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Admin HTTP address.
    pub admin_listen: SocketAddr,
    /// The admin server's protection and limits.
    pub admin: AdminSettings,
    /// The `[scan]` settings: default regions, expiry window, concurrency, skip tag.
    pub scan: Scan,
    /// The `[[accounts]]` entries in file order, each with its credentials and regions; during
    /// a pass, each directory's members are appended (`accounts::directory`).
    pub accounts: Vec<Account>,
    /// `[[directories]]`: Resource Directories whose members are accounts too.
    pub directories: Vec<Directory>,
    /// Safety belts.
    pub limits: Limits,
    /// Persisted backoff.
    pub retry: RetrySettings,
    /// The funds forecast.
    pub funds: FundsSettings,
    /// Policies in order.
    pub policies: Vec<Policy>,
    /// Where the ledger lives (`[ledger]`).
    pub ledger: LedgerLocation,
    /// The leader lease's timings (`[ha]`; used with a PostgreSQL ledger).
    pub ha: crate::policy::lease::HaTimings,
    /// Things that work but look wrong.
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Reads and checks `path`; `env` supplies `ECS_RENEWD_STATE_DIR` and
    /// `ECS_RENEWD_ADMIN_LISTEN` overrides.
    pub fn load(path: &Path, env: &Environment) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path, env)
    }

    /// Checks config text; `path` names it in problems.
    pub fn parse(text: &str, path: &Path, env: &Environment) -> Result<Config, ConfigError> {
        validate::parse_and_check(text, path, env)
    }

    /// Reads and checks `path` as `check-config` does: the config or every problem, and the
    /// parts that read without a problem either way. Only a file that cannot be read is an
    /// error here.
    pub fn check(
        path: &Path,
        env: &Environment,
    ) -> Result<(Result<Config, ConfigError>, Readable), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(validate::check_text(&text, path, env))
    }

    /// The account with this name.
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }
}
