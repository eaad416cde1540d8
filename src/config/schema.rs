//! The config file's schema as serde reads it: every section and key with its default. Values
//! that can be checked alone (cron, timezone, durations, enums, endpoints) are checked while
//! parsing, so their errors carry the key's line and column; cross-key checks live in
//! `validate`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::closed_enum;
use crate::cloud::credentials::CredentialsConfig;
use crate::cloud::periods::Site;
use crate::cloud::rate_limit::RateLimitConfig;
use crate::cloud::retry::RetryPolicy;
use crate::cloud::types::{PeriodUnit, RenewalStatus};
use crate::duration::serde_humantime;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[daemon]`.
    #[serde(default)]
    pub daemon: DaemonSection,
    /// `[admin]`.
    #[serde(default)]
    pub admin: AdminSection,
    /// `[scan]`.
    #[serde(default)]
    pub scan: ScanSection,
    /// `[[accounts]]`.
    #[serde(default)]
    pub accounts: Vec<AccountSection>,
    /// `[[directories]]`: Resource Directories whose members become accounts.
    #[serde(default)]
    pub directories: Vec<DirectorySection>,
    /// `[limits]`.
    #[serde(default)]
    pub limits: LimitsSection,
    /// `[retry]`.
    #[serde(default)]
    pub retry: RetrySection,
    /// `[funds]`.
    #[serde(default)]
    pub funds: FundsSection,
    /// `[[policies]]`, in order: first match wins.
    #[serde(default)]
    pub policies: Vec<PolicySection>,
    /// `[ledger]`: where the ledger lives.
    #[serde(default)]
    pub ledger: LedgerSection,
    /// `[ha]`: the leader lease's timings (a PostgreSQL ledger shared by replicas).
    #[serde(default)]
    pub ha: HaSection,
}

closed_enum! {
    /// Which engine holds the ledger.
    pub enum Backend {
        /// A SQLite file in the state directory: one process (the default).
        Sqlite => "sqlite",
        /// A PostgreSQL database: replicas share it, one leads under a fenced lease.
        Postgres => "postgres",
    }
}

/// `[ledger]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// The engine.
    #[serde(default = "default_backend")]
    pub backend: Backend,
    /// The PostgreSQL database: libpq key=value pairs or a `postgresql://` URI. It is a secret
    /// when it holds a password: never shown.
    pub url: Option<Spanned<String>>,
    /// The same, read from a file (0600 when it holds a password, like key files).
    pub url_file: Option<Spanned<PathBuf>>,
    /// Connections the ledger may hold (the lease has its own).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

fn default_backend() -> Backend {
    Backend::Sqlite
}
fn default_pool_size() -> usize {
    4
}

impl Default for LedgerSection {
    fn default() -> Self {
        LedgerSection {
            backend: default_backend(),
            url: None,
            url_file: None,
            pool_size: default_pool_size(),
        }
    }
}

/// `[ha]`: client-go's three timings (docs/architecture.md, "Two replicas").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaSection {
    /// How long a take or renewal keeps the lease.
    #[serde(default = "default_lease_duration", with = "serde_humantime")]
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops leading.
    #[serde(default = "default_renew_deadline", with = "serde_humantime")]
    pub renew_deadline: Duration,
    /// Between renewals, and between a standby's tries.
    #[serde(default = "default_retry_period", with = "serde_humantime")]
    pub retry_period: Duration,
}

fn default_lease_duration() -> Duration {
    crate::policy::lease::HaTimings::default().lease_duration
}
fn default_renew_deadline() -> Duration {
    crate::policy::lease::HaTimings::default().renew_deadline
}
fn default_retry_period() -> Duration {
    crate::policy::lease::HaTimings::default().retry_period
}

impl Default for HaSection {
    fn default() -> Self {
        HaSection {
            lease_duration: default_lease_duration(),
            renew_deadline: default_renew_deadline(),
            retry_period: default_retry_period(),
        }
    }
}

/// A cron expression with a seconds field, checked when read.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// As written.
    pub text: String,
    /// `text` parsed (seconds first); the scheduler finds each next fire time with it.
    pub cron: croner::Cron,
}

impl Schedule {
    /// Parses six-field cron (seconds first), as tokio-cron-scheduler does.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let fields = text.split_whitespace().count();
        if fields != 6 {
            return Err(format!(
                "{text:?} has {fields} fields; write six, seconds first, e.g. \"0 */15 * * * *\" (every 15 minutes)"
            ));
        }
        // The same parser settings as tokio-cron-scheduler uses to compute the next tick.
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(text)
            .map_err(|e| format!("{text:?} is not a valid cron expression: {e}"))?;
        Ok(Schedule {
            text: text.to_owned(),
            cron,
        })
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A timezone name from the tz database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timezone(pub chrono_tz::Tz);

impl<'de> Deserialize<'de> for Timezone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<chrono_tz::Tz>().map(Timezone).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not a timezone name; use one from the tz database, e.g. \"Asia/Shanghai\" or \"UTC\""
            ))
        })
    }
}

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// When passes run: cron with a seconds field.
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// The timezone the schedule is read in.
    #[serde(default = "default_timezone")]
    pub timezone: Timezone,
    /// Each pass starts up to this much later than its tick, at random.
    #[serde(default = "default_jitter", with = "serde_humantime")]
    pub jitter: Duration,
    /// Where the ledger and the lock live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Run everything except the calls that change something.
    #[serde(default)]
    pub dry_run: bool,
    /// How long a stop may wait for the call in flight.
    #[serde(default = "default_grace", with = "serde_humantime")]
    pub shutdown_grace: Duration,
}

fn default_schedule() -> Schedule {
    Schedule::parse("0 */15 * * * *").expect("the default schedule parses")
}
fn default_timezone() -> Timezone {
    Timezone(chrono_tz::UTC)
}
fn default_jitter() -> Duration {
    Duration::from_secs(30)
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/ecs-renewd")
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            schedule: default_schedule(),
            timezone: default_timezone(),
            jitter: default_jitter(),
            state_dir: default_state_dir(),
            dry_run: false,
            shutdown_grace: default_grace(),
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Where /metrics, /healthz, /readyz and /status are served.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A file holding a bearer token that /metrics and /status require (`Authorization:
    /// Bearer <token>`); /healthz and /readyz stay open for probes.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// A connection that has not sent a complete request head this long after it opened, or
    /// after its previous answer, is closed (slow or idle clients).
    #[serde(
        default = "default_header_read_timeout",
        with = "crate::duration::serde_humantime"
    )]
    pub header_read_timeout: Duration,
    /// A client that takes nothing of an answer for this long is cut off.
    #[serde(
        default = "default_write_timeout",
        with = "crate::duration::serde_humantime"
    )]
    pub write_timeout: Duration,
    /// An answer still being sent after this long is ended (a client that reads slowly but
    /// steadily cannot hold its connection for ever).
    #[serde(
        default = "default_answer_timeout",
        with = "crate::duration::serde_humantime"
    )]
    pub answer_timeout: Duration,
    /// At most this many connections at once; beyond it the oldest idle one is closed, or the
    /// oldest busy one when none is idle.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// At most this many /status requests answered at once; more get 503.
    #[serde(default = "default_max_status_requests")]
    pub max_status_requests: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9469))
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_write_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_answer_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_max_connections() -> usize {
    64
}
fn default_max_status_requests() -> usize {
    2
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: default_listen(),
            bearer_token_file: None,
            header_read_timeout: default_header_read_timeout(),
            write_timeout: default_write_timeout(),
            answer_timeout: default_answer_timeout(),
            max_connections: default_max_connections(),
            max_status_requests: default_max_status_requests(),
        }
    }
}

/// Which regions to scan: `"all"` (asked with DescribeRegions) or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regions {
    /// Every region DescribeRegions lists.
    All,
    /// Only these region ids (e.g. cn-hangzhou), as written.
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Regions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "all" => Ok(Regions::All),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "regions = {w:?}: write \"all\" or a list such as [\"cn-hangzhou\", \"cn-beijing\"]"
            ))),
            Raw::List(list) => {
                for region in &list {
                    if region.is_empty()
                        || !region
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    {
                        return Err(serde::de::Error::custom(format!(
                            "{region:?} is not a region id (lowercase letters, digits and '-')"
                        )));
                    }
                }
                Ok(Regions::List(list))
            }
        }
    }
}

/// `[scan]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSection {
    /// Regions to scan.
    #[serde(default = "default_regions")]
    pub regions: Regions,
    /// Where DescribeRegions is asked when `regions = "all"`.
    #[serde(default = "default_home_region")]
    pub home_region: String,
    /// How far ahead of now the expiry window reaches.
    #[serde(default = "default_horizon", with = "serde_humantime")]
    pub horizon: Duration,
    /// How far behind now it reaches (expired but not yet released instances).
    #[serde(default = "default_grace_behind", with = "serde_humantime")]
    pub grace: Duration,
    /// How many (account, region) sources are scanned at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Instances carrying this tag key are excluded, whatever the policies say.
    #[serde(default = "default_skip_tag")]
    pub skip_tag: String,
    /// How long an expired instance stays before release (15 days on ECS): the deadline for
    /// renewing it.
    #[serde(default = "default_release_after", with = "serde_humantime")]
    pub release_after: Duration,
}

fn default_regions() -> Regions {
    Regions::All
}
fn default_home_region() -> String {
    "cn-hangzhou".into()
}
fn default_horizon() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_grace_behind() -> Duration {
    Duration::from_secs(15 * 86_400)
}
fn default_concurrency() -> usize {
    4
}
fn default_skip_tag() -> String {
    "ecs-renewd:skip".into()
}
fn default_release_after() -> Duration {
    Duration::from_secs(15 * 86_400)
}

impl Default for ScanSection {
    fn default() -> Self {
        ScanSection {
            regions: default_regions(),
            home_region: default_home_region(),
            horizon: default_horizon(),
            grace: default_grace_behind(),
            concurrency: default_concurrency(),
            skip_tag: default_skip_tag(),
            release_after: default_release_after(),
        }
    }
}

/// `[[accounts]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSection {
    /// A name for logs, metrics and policy matching.
    pub name: Spanned<String>,
    /// Where its AccessKey comes from.
    #[serde(default)]
    pub credentials: CredentialsConfig,
    /// `[accounts.assume_role]`: a RAM role assumed with those credentials (STS AssumeRole).
    #[serde(default)]
    pub assume_role: Option<Spanned<crate::cloud::credentials::AssumeRoleConfig>>,
    /// `public` (default), `vpc`, or a URL (an emulator, a gateway).
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    /// The currency the account is billed in (ISO code as ECS quotes it); a `max_price`
    /// written as a bare number is in it. Default: CNY on the China site, USD on the
    /// international site.
    #[serde(default)]
    pub currency: Option<Spanned<String>>,
    /// Which site's period rules apply.
    #[serde(default)]
    pub site: Site,
    /// When the provider tries auto-renew deductions (UNCERTAIN per site, docs/v3-and-bss.md
    /// §3.1): `t9-daily` or `t3-five-attempts`. Default: the site's documented one.
    #[serde(default)]
    pub deduction_schedule: Option<crate::policy::DeductionSchedule>,
    /// `[accounts.funds]`: this account's part in the funds forecast.
    #[serde(default)]
    pub funds: AccountFundsSection,
    /// Regions for this account (default: `[scan] regions`).
    #[serde(default)]
    pub regions: Option<Regions>,
    /// Client-side rate limit per (region, action).
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// In-pass retries of a single call.
    #[serde(default)]
    pub call_retry: RetryPolicy,
    /// Per-action read timeouts, e.g. `{ RenewInstance = "20s" }` (defaults: the official
    /// SDK's per-action values).
    #[serde(default)]
    pub read_timeouts: BTreeMap<crate::cloud::Action, ReadTimeout>,
}

/// `[[directories]]`: a Resource Directory whose member accounts are managed without an entry
/// each. The management identity (`credentials`, optional `assume_role`) lists the members and
/// assumes `role_name` in each; the other keys are the members' settings, as an
/// `[[accounts]]` entry's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySection {
    /// Members are named `<name>/<AccountId>`; policies may match the name for all of them.
    pub name: Spanned<String>,
    /// The management account's (or a delegated administrator's) credentials.
    #[serde(default)]
    pub credentials: CredentialsConfig,
    /// A role of the management account assumed with those credentials first.
    #[serde(default)]
    pub assume_role: Option<Spanned<crate::cloud::credentials::AssumeRoleConfig>>,
    /// The role assumed in each member.
    #[serde(default = "default_member_role")]
    pub role_name: String,
    /// The session name of the member roles' sessions.
    #[serde(default = "default_member_session")]
    pub session_name: String,
    /// How long each member key lasts.
    #[serde(default = "default_member_duration", with = "serde_humantime")]
    pub duration: Duration,
    /// Account ids or folder ids (`fd-…`, any folder above the member): only these, when given.
    #[serde(default)]
    pub include: Vec<String>,
    /// Account ids or folder ids left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// How often the members are listed again.
    #[serde(default = "default_directory_refresh", with = "serde_humantime")]
    pub refresh: Duration,
    /// Where `ListAccounts` goes (default `https://resourcemanager.aliyuncs.com`, or the
    /// `endpoint` when that is a URL).
    #[serde(default)]
    pub resource_manager_endpoint: Option<Spanned<String>>,
    /// The members' endpoint: `public` (default), `vpc`, or a URL.
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    /// The members' billing currency.
    #[serde(default)]
    pub currency: Option<Spanned<String>>,
    /// The members' site.
    #[serde(default)]
    pub site: Site,
    /// The members' auto-renew deduction schedule.
    #[serde(default)]
    pub deduction_schedule: Option<crate::policy::DeductionSchedule>,
    /// `[directories.funds]`: the members' part in the funds forecast.
    #[serde(default)]
    pub funds: AccountFundsSection,
    /// The members' regions (default: `[scan] regions`).
    #[serde(default)]
    pub regions: Option<Regions>,
    /// Client-side rate limit per member, region and action.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// In-pass retries of a single call.
    #[serde(default)]
    pub call_retry: RetryPolicy,
    /// Per-action read timeouts.
    #[serde(default)]
    pub read_timeouts: BTreeMap<crate::cloud::Action, ReadTimeout>,
}

fn default_member_role() -> String {
    "ResourceDirectoryAccountAccessRole".into()
}
fn default_member_session() -> String {
    "ecs-renewd".into()
}
fn default_member_duration() -> Duration {
    Duration::from_secs(3600)
}
fn default_directory_refresh() -> Duration {
    Duration::from_secs(3600)
}

impl DirectorySection {
    /// The members' settings as an `[[accounts]]` entry (named after the directory, with the
    /// management identity's credentials), so they are checked by the same code.
    pub fn as_account(&self) -> AccountSection {
        AccountSection {
            name: self.name.clone(),
            credentials: self.credentials.clone(),
            assume_role: self.assume_role.clone(),
            endpoint: self.endpoint.clone(),
            currency: self.currency.clone(),
            site: self.site,
            deduction_schedule: self.deduction_schedule,
            funds: self.funds.clone(),
            regions: self.regions.clone(),
            rate_limit: self.rate_limit.clone(),
            call_retry: self.call_retry.clone(),
            read_timeouts: self.read_timeouts.clone(),
        }
    }
}

/// A read timeout written as a duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTimeout(pub Duration);

impl<'de> Deserialize<'de> for ReadTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let duration = crate::duration::parse(&text).map_err(serde::de::Error::custom)?;
        if duration.is_zero() {
            return Err(serde::de::Error::custom(
                "a read timeout must be longer than zero",
            ));
        }
        Ok(ReadTimeout(duration))
    }
}

/// A `max_price` as written: a bare number, or an amount with its currency.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PriceLimit {
    /// In the covered accounts' billing currency.
    Number(f64),
    /// `"300 CNY"`, `"12.50 USD"`.
    Text(String),
}

/// `[limits]`: safety belts checked for the whole batch before anything is charged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Most renewals in one pass.
    #[serde(default = "default_per_run")]
    pub max_renewals_per_run: u32,
    /// Most renewals per day (in `[daemon] timezone`).
    #[serde(default = "default_per_day")]
    pub max_renewals_per_day: u32,
    /// Most spend in one pass, per currency, e.g. `{ CNY = 20000 }`.
    #[serde(default)]
    pub max_spend_per_run: BTreeMap<String, f64>,
    /// Most spend per day, per currency.
    #[serde(default)]
    pub max_spend_per_day: BTreeMap<String, f64>,
    /// Most renewals in one pass as a share of the PrePaid instances seen (1.0 = off).
    #[serde(default = "default_share")]
    pub max_fleet_share_per_run: f64,
    /// Most instances whose auto-renew is switched on in one pass (each commits the provider to
    /// charge at its deduction days).
    #[serde(default = "default_enables")]
    pub max_auto_renew_enables_per_run: u32,
}

fn default_enables() -> u32 {
    1000
}

fn default_per_run() -> u32 {
    100
}
fn default_per_day() -> u32 {
    500
}
fn default_share() -> f64 {
    1.0
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_renewals_per_run: default_per_run(),
            max_renewals_per_day: default_per_day(),
            max_spend_per_run: BTreeMap::new(),
            max_spend_per_day: BTreeMap::new(),
            max_fleet_share_per_run: default_share(),
            max_auto_renew_enables_per_run: default_enables(),
        }
    }
}

/// `[retry]`: persisted backoff of failed charges across passes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// The first backoff after a funds or busy failure.
    #[serde(default = "default_floor", with = "serde_humantime")]
    pub backoff_floor: Duration,
    /// The longest backoff.
    #[serde(default = "default_ceiling", with = "serde_humantime")]
    pub backoff_ceiling: Duration,
    /// The backoff shrinks near the deadline so that this many attempts still fit.
    #[serde(default = "default_attempts_fit")]
    pub attempts_before_deadline: u32,
    /// How long to wait for a renewal's new expiry to show before leaving it to the next pass.
    #[serde(default = "default_verify_timeout", with = "serde_humantime")]
    pub verify_timeout: Duration,
    /// How often to look while verifying.
    #[serde(default = "default_verify_interval", with = "serde_humantime")]
    pub verify_interval: Duration,
}

/// `[funds]`: the forecast of upcoming charges against each account's balance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FundsSection {
    /// Whether passes and `plan` make the forecast.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How far past the next deduction morning (08:00 UTC+8) the forecast looks.
    #[serde(default = "default_funds_horizon", with = "serde_humantime")]
    pub horizon: Duration,
    /// At most one `QueryAccountBalance` per account per this long (`0s`: every pass).
    #[serde(default = "default_balance_interval", with = "serde_humantime")]
    pub balance_interval: Duration,
    /// How long a renewal price quote is reused for the forecast (per instance and period).
    #[serde(default = "default_price_cache", with = "serde_humantime")]
    pub price_cache: Duration,
    /// While renewals are held for lack of funds: at most one `QueryAccountBalance` per
    /// account per this long, to see a top-up (`0s`: every pass).
    #[serde(default = "default_top_up_check_interval", with = "serde_humantime")]
    pub top_up_check_interval: Duration,
}

/// `[accounts.funds]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountFundsSection {
    /// Whether this account's balance is queried (turn off for a key that may not call
    /// `QueryAccountBalance`; its charges are still listed, with the balance unknown).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for AccountFundsSection {
    fn default() -> Self {
        AccountFundsSection { enabled: true }
    }
}

fn default_true() -> bool {
    true
}
fn default_top_up_check_interval() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_funds_horizon() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_balance_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_price_cache() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for FundsSection {
    fn default() -> Self {
        FundsSection {
            enabled: true,
            horizon: default_funds_horizon(),
            balance_interval: default_balance_interval(),
            price_cache: default_price_cache(),
            top_up_check_interval: default_top_up_check_interval(),
        }
    }
}

fn default_floor() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_ceiling() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn default_attempts_fit() -> u32 {
    3
}
fn default_verify_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_verify_interval() -> Duration {
    Duration::from_secs(5)
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            backoff_floor: default_floor(),
            backoff_ceiling: default_ceiling(),
            attempts_before_deadline: default_attempts_fit(),
            verify_timeout: default_verify_timeout(),
            verify_interval: default_verify_interval(),
        }
    }
}

closed_enum! {
    /// What a policy does with the instances it matches.
    pub enum ActionKind {
        /// RenewInstance when within `renew_before` of expiry (or expired, not released).
        Renew => "renew",
        /// Keep the provider's auto-renew on; optionally renew if its deduction fails.
        AutoRenew => "auto-renew",
        /// Keep RenewalStatus = NotRenewal (meant to lapse).
        NotRenewal => "not-renewal",
        /// Metrics and status only.
        Observe => "observe",
        /// Excluded, and said so in status.
        Skip => "skip",
    }
}

/// An auto-renew state to keep (with a `renew` policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepAutoRenew {
    /// The auto-renew switch to keep: `AutoRenewal`, `Normal` or `NotRenewal`.
    pub status: RenewalStatus,
    /// Length per automatic renewal (with AutoRenewal).
    #[serde(default = "default_one")]
    pub duration: u32,
    /// Its unit.
    #[serde(default = "default_month")]
    pub period_unit: PeriodUnit,
}

fn default_one() -> u32 {
    1
}
fn default_month() -> PeriodUnit {
    PeriodUnit::Month
}

pub use crate::policy::MatchSection;

/// `[[policies]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Unique name (a metric label).
    pub name: Spanned<String>,
    /// Which instances it covers.
    #[serde(default, rename = "match")]
    pub matcher: MatchSection,
    /// What it does.
    pub action: ActionKind,
    /// `renew`: how much to renew (default 1).
    #[serde(default)]
    pub period: Option<Spanned<u32>>,
    /// `renew`/`auto-renew`: the unit (default Month).
    #[serde(default)]
    pub period_unit: Option<Spanned<PeriodUnit>>,
    /// `renew`: how long before expiry to renew (default 7 days).
    #[serde(default)]
    pub renew_before: Option<Spanned<String>>,
    /// `renew`/`auto-renew` fallback: the most one renewal may cost — a number in the billing
    /// currency of the accounts the policy covers, or an amount with its currency
    /// (`"300 CNY"`).
    #[serde(default)]
    pub max_price: Option<Spanned<PriceLimit>>,
    /// `renew`: an auto-renew state to keep at the same time.
    #[serde(default)]
    pub keep_auto_renew: Option<Spanned<KeepAutoRenew>>,
    /// `auto-renew`: length per automatic renewal (default 1).
    #[serde(default)]
    pub duration: Option<Spanned<u32>>,
    /// `auto-renew`: renew directly if the provider's deduction has not extended the expiry
    /// by the fallback point.
    #[serde(default)]
    pub fallback_renew: Option<Spanned<bool>>,
    /// `auto-renew`: the fallback point, after the first documented deduction (T−9 days,
    /// 08:00 UTC+8); default one day.
    #[serde(default)]
    pub fallback_after: Option<Spanned<String>>,
    /// `renew`/`auto-renew`: act even on instances whose RenewalStatus is NotRenewal.
    #[serde(default)]
    pub override_not_renewal: Option<Spanned<bool>>,
}
