//! The emulator's fleet file (TOML): behaviour settings, accounts with AccessKeys and balances,
//! instances, and generators for large fleets. Every point docs/ecs-api.md marks UNCERTAIN is a
//! setting here, with the most likely behaviour as its default.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use ecs_wire::Action;
use ecs_wire::closed_enum;
use ecs_wire::duration::serde_humantime;
use ecs_wire::periods::{self, PeriodRule, Site};
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};

/// The whole fleet file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorConfig {
    /// How the emulated service behaves.
    #[serde(default)]
    pub settings: Settings,
    /// Accounts (each with keys and a balance).
    #[serde(default)]
    pub accounts: Vec<AccountSpec>,
    /// Individually described instances.
    #[serde(default)]
    pub instances: Vec<InstanceSpec>,
    /// Generated instances.
    #[serde(default)]
    pub generate: Vec<GeneratorSpec>,
    /// Regions DescribeRegions lists besides those holding instances.
    #[serde(default)]
    pub regions: Vec<String>,
    /// `[[oidc_providers]]`: OIDC identity providers (RRSA's) whose tokens STS
    /// `AssumeRoleWithOIDC` accepts; the emulator signs them (`POST /_emulator/oidc/token`).
    #[serde(default)]
    pub oidc_providers: Vec<OidcProviderSpec>,
}

/// An OIDC identity provider registered in an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderSpec {
    /// Its name: `acs:ram::<uid>:oidc-provider/<name>`.
    pub name: String,
    /// The account it is registered in (default: the first).
    #[serde(default)]
    pub account: Option<String>,
    /// The issuer its tokens carry (`iss`).
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// The audience its tokens must carry (`aud`).
    #[serde(default = "default_audience")]
    pub audience: String,
}

fn default_issuer() -> String {
    "https://oidc-ack-cn-hangzhou.emulator.invalid/cluster".into()
}
fn default_audience() -> String {
    "sts.aliyuncs.com".into()
}

closed_enum! {
    /// Which clock the timestamp window is checked against.
    pub enum AuthClock {
        /// The emulator's virtual clock (faithful when the client shares it).
        Emulated => "emulated",
        /// The host's wall clock (for real clients while the virtual clock is moved).
        Wall => "wall",
    }
}

closed_enum! {
    /// How PeriodUnit is spelled in DescribeInstanceAutoRenewAttribute answers (UNCERTAIN:
    /// the docs show both).
    pub enum UnitCase {
        /// The default: capitalised as the API names units, `Week`, `Month`, `Year`.
        Title => "title",
        /// All lower case: `week`, `month`, `year`.
        Lower => "lower",
    }
}

closed_enum! {
    /// What a ClientToken whose request was refused (an error answer: no order) does when it
    /// comes again. Alibaba's idempotence guide says a retried token "generates the same result
    /// as the last request" and is silent on failed ones (docs/ecs-api.md §6: UNCERTAIN).
    pub enum FailedTokens {
        /// The default: a refused request leaves nothing behind; the token is processed anew.
        ProcessedAnew => "processed-anew",
        /// A refused request's token is remembered with its failure, which every repeat within
        /// `client_token_ttl` gets again (a held renewal sent with it after a top-up fails).
        ReplayFailure => "replay-failure",
    }
}

/// Behaviour settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Virtual clock start (default: the host's time at start-up).
    pub clock_start: Option<DateTime<Utc>>,
    /// Virtual seconds per real second (1 follows real time, 0 freezes).
    pub clock_speed: f64,
    /// Which clock request timestamps are checked against.
    pub auth_clock: AuthClock,
    /// Allowed distance between a request's Timestamp and the clock (UNCERTAIN: 15 or 31 min);
    /// used nonces are remembered this long.
    #[serde(with = "serde_humantime")]
    pub timestamp_window: Duration,
    /// HTTP status of `InvalidAccessKeyId.NotFound` (docs say 400, captures show 404).
    pub unknown_key_status: u16,
    /// Delay before a renewal's new ExpiredTime shows in DescribeInstances.
    #[serde(with = "serde_humantime")]
    pub renew_visibility_delay: Duration,
    /// How long an expired instance stays (Stopped) before it is released.
    #[serde(with = "serde_humantime")]
    pub release_after: Duration,
    /// How long a ClientToken is remembered (UNCERTAIN, undocumented).
    #[serde(with = "serde_humantime")]
    pub client_token_ttl: Duration,
    /// What a refused request's ClientToken does when it comes again (UNCERTAIN).
    pub failed_tokens: FailedTokens,
    /// The code RenewInstance answers when the balance is short (UNCERTAIN).
    pub funds_error_code: String,
    /// Its HTTP status.
    pub funds_error_status: u16,
    /// HTTP status of `DryRunOperation` (UNCERTAIN).
    pub dry_run_status: u16,
    /// Whether the ExpiredStartTime/ExpiredEndTime bounds are inclusive (UNCERTAIN).
    pub expiry_filter_inclusive: bool,
    /// Whether filter values with seconds are rejected (UNCERTAIN; the docs say minutes only).
    pub reject_filter_seconds: bool,
    /// PeriodUnit spelling in auto-renew answers.
    pub auto_renew_unit_case: UnitCase,
    /// Which site's period rules apply.
    pub site: Site,
    /// RenewInstance periods (default: the site's documented set).
    pub renew_periods: Option<PeriodRule>,
    /// Auto-renew durations (default: the site's documented set).
    pub auto_renew_durations: Option<PeriodRule>,
    /// Renewals may not reach further than this many years ahead.
    pub max_expiry_years: u32,
    /// Latency added to every ECS call.
    #[serde(with = "serde_humantime")]
    pub latency: Duration,
    /// Throttling per (account, region, action).
    pub throttle: ThrottleSettings,
    /// The provider's own auto-renew deductions.
    pub provider_auto_renew: ProviderAutoRenew,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            clock_start: None,
            clock_speed: 1.0,
            auth_clock: AuthClock::Emulated,
            timestamp_window: Duration::from_secs(15 * 60),
            unknown_key_status: 404,
            renew_visibility_delay: Duration::from_secs(10),
            release_after: Duration::from_secs(15 * 86_400),
            client_token_ttl: Duration::from_secs(24 * 3600),
            failed_tokens: FailedTokens::ProcessedAnew,
            funds_error_code: "InvalidAccountStatus.NotEnoughBalance".into(),
            funds_error_status: 403,
            dry_run_status: 400,
            expiry_filter_inclusive: true,
            reject_filter_seconds: false,
            auto_renew_unit_case: UnitCase::Title,
            site: Site::China,
            renew_periods: None,
            auto_renew_durations: None,
            max_expiry_years: 5,
            latency: Duration::ZERO,
            throttle: ThrottleSettings::default(),
            provider_auto_renew: ProviderAutoRenew::default(),
        }
    }
}

impl Settings {
    /// The RenewInstance period rule in force.
    pub fn renew_rule(&self) -> PeriodRule {
        self.renew_periods
            .clone()
            .unwrap_or_else(|| periods::renew_rule(self.site))
    }

    /// The auto-renew duration rule in force.
    pub fn auto_renew_rule(&self) -> PeriodRule {
        self.auto_renew_durations
            .clone()
            .unwrap_or_else(|| periods::auto_renew_rule(self.site))
    }
}

/// Throttling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// Calls per second per (account, region, action); 0 turns throttling off.
    pub per_second: f64,
    /// Calls allowed at once after a quiet spell.
    pub burst: u32,
    /// Whether throttled answers carry `x-acs-retry-after` (milliseconds).
    pub retry_after_header: bool,
    /// Per-action overrides of `per_second`.
    pub actions: BTreeMap<Action, f64>,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        ThrottleSettings {
            per_second: 0.0,
            burst: 1,
            retry_after_header: true,
            actions: BTreeMap::new(),
        }
    }
}

/// The provider's automatic renewal deductions (docs/ecs-api.md §7, UNCERTAIN schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderAutoRenew {
    /// Whether deductions happen at all.
    pub enabled: bool,
    /// The first attempt this many days before expiry.
    pub days_before: u32,
    /// At this hour, UTC+8.
    pub hour_utc8: u32,
    /// Whether a failed deduction is tried again each day until expiry.
    pub retry_daily: bool,
    /// Makes every deduction fail (an account whose card is declined).
    pub fail: bool,
    /// The days the provider tries, relative to the expiry's UTC+8 day, instead of
    /// `days_before` and `retry_daily` (`[-3, -1, 0, 6, 14]`: the international user guide's
    /// schedule, docs/v3-and-bss.md §3.1). Only attempts before the expiry are made.
    pub attempt_days: Option<Vec<i64>>,
}

impl Default for ProviderAutoRenew {
    fn default() -> Self {
        ProviderAutoRenew {
            enabled: true,
            days_before: 9,
            hour_utc8: 8,
            retry_daily: true,
            fail: false,
            attempt_days: None,
        }
    }
}

/// One `[[accounts]]` entry: a name, a balance and the AccessKeys that act for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    /// Name (instances refer to it).
    pub name: String,
    /// Balance in currency units.
    #[serde(default = "default_balance")]
    pub balance: f64,
    /// `CNY` or `USD`.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// AccessKeys that act for this account.
    #[serde(default)]
    pub access_keys: Vec<AccessKeySpec>,
    /// The account's id (digits; default `1000000000000001` for the first account, and so
    /// on): role ARNs and trust lists name it.
    #[serde(default)]
    pub uid: Option<String>,
    /// `[[accounts.roles]]`: RAM roles other accounts' identities may assume (STS AssumeRole).
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
    /// `[[accounts.members]]`: makes this account a Resource Directory's management account
    /// whose `ListAccounts` lists these accounts of the fleet.
    #[serde(default)]
    pub members: Vec<MemberSpec>,
}

/// A member of a management account's Resource Directory (`ListAccounts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// The fleet account's name.
    pub account: String,
    /// The folder it sits in (default `fd-root`).
    #[serde(default)]
    pub folder: Option<String>,
    /// Its membership status (default `CreateSuccess`).
    #[serde(default)]
    pub status: Option<String>,
    /// Its display name (default the fleet account's name).
    #[serde(default)]
    pub display_name: Option<String>,
}

/// A RAM role of an account, for STS `AssumeRole`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// The role's name (`acs:ram::<uid>:role/<name>`).
    pub name: String,
    /// The account ids (uids) whose keys may assume it.
    #[serde(default)]
    pub trust: Vec<String>,
    /// The ExternalId its trust policy requires.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The longest session (`MaxSessionDuration`, 1h–12h; default 1h).
    #[serde(default)]
    pub max_session: Option<String>,
}

fn default_balance() -> f64 {
    100_000.0
}
fn default_currency() -> String {
    "CNY".into()
}

/// An AccessKey (or STS key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeySpec {
    /// AccessKey ID.
    pub id: String,
    /// AccessKey secret.
    pub secret: String,
    /// STS token; when set, requests must carry it as `SecurityToken`.
    #[serde(default)]
    pub security_token: Option<String>,
    /// When the key stops working (STS expiry).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Actions this identity may not call: they answer `Forbidden.RAM`, except
    /// DescribeInstances, which answers an empty list (and DryRun is denied).
    #[serde(default)]
    pub denied_actions: Vec<Action>,
}

/// One instance in the fleet file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceSpec {
    /// Id (default: generated).
    #[serde(default)]
    pub id: Option<String>,
    /// Owning account (default: the first).
    #[serde(default)]
    pub account: Option<String>,
    /// The region the instance lives in, e.g. cn-hangzhou.
    pub region: String,
    /// Zone (default: `<region>-a`).
    #[serde(default)]
    pub zone: Option<String>,
    /// The InstanceName DescribeInstances shows (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// Billing method.
    #[serde(default = "default_charge")]
    pub charge_type: ChargeType,
    /// Absolute expiry (PrePaid).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Expiry relative to the clock start, e.g. `"5d"`; aligned to 00:00 UTC+8.
    #[serde(default)]
    pub expires_in: Option<String>,
    /// Expired this long before the clock start (already expired, not yet released).
    #[serde(default)]
    pub expired_ago: Option<String>,
    /// Tags, key to value; DescribeInstances shows them and its `Tag.N` filters match.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Security groups.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// The instance type (default: ecs.g6.large); InstanceTypeFamily is derived from it.
    #[serde(default = "default_type")]
    pub instance_type: String,
    /// Resource group.
    #[serde(default)]
    pub resource_group_id: String,
    /// Price per month, in the account's currency.
    #[serde(default = "default_price")]
    pub monthly_price: f64,
    /// Auto-renew switch (default Normal).
    #[serde(default = "default_renewal")]
    pub renewal_status: RenewalStatus,
    /// Auto-renew duration.
    #[serde(default = "default_one")]
    pub auto_renew_duration: u32,
    /// Auto-renew unit.
    #[serde(default = "default_month")]
    pub auto_renew_unit: PeriodUnit,
    /// Makes the provider's deductions for this instance fail.
    #[serde(default)]
    pub deduction_fails: bool,
}

/// Builders for tests and tools: `InstanceSpec::prepaid("i-1").expires_in("3d")`.
impl InstanceSpec {
    /// A PrePaid instance named after its id in cn-hangzhou: ecs.g6.large at 100 a month, no
    /// auto-renew, no tags, expiring at the clock start until an expiry is set.
    pub fn prepaid(id: &str) -> InstanceSpec {
        InstanceSpec {
            id: Some(id.into()),
            account: None,
            region: "cn-hangzhou".into(),
            zone: None,
            name: Some(id.into()),
            charge_type: default_charge(),
            expires_at: None,
            expires_in: None,
            expired_ago: None,
            tags: BTreeMap::new(),
            security_groups: Vec::new(),
            instance_type: default_type(),
            resource_group_id: String::new(),
            monthly_price: default_price(),
            renewal_status: default_renewal(),
            auto_renew_duration: default_one(),
            auto_renew_unit: default_month(),
            deduction_fails: false,
        }
    }

    /// Expires at `at`.
    pub fn expires_at(self, at: DateTime<Utc>) -> InstanceSpec {
        InstanceSpec {
            expires_at: Some(at),
            expires_in: None,
            expired_ago: None,
            ..self
        }
    }

    /// Expires this long after the clock start (`"3d"`), aligned to 00:00 UTC+8.
    pub fn expires_in(self, after: &str) -> InstanceSpec {
        InstanceSpec {
            expires_at: None,
            expires_in: Some(after.into()),
            expired_ago: None,
            ..self
        }
    }
}

fn default_charge() -> ChargeType {
    ChargeType::PrePaid
}
fn default_type() -> String {
    "ecs.g6.large".into()
}
fn default_price() -> f64 {
    100.0
}
fn default_renewal() -> RenewalStatus {
    RenewalStatus::Normal
}
fn default_one() -> u32 {
    1
}
fn default_month() -> PeriodUnit {
    PeriodUnit::Month
}

/// A generator: `count` instances spread over regions and expiries, reproducible by `seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSpec {
    /// How many.
    pub count: usize,
    /// Owning account (default: the first).
    #[serde(default)]
    pub account: Option<String>,
    /// Regions, round-robin (default: cn-hangzhou).
    #[serde(default)]
    pub regions: Vec<String>,
    /// Expiries spread uniformly from `expired_share` in the past up to this far ahead.
    #[serde(default = "default_spread")]
    pub expiry_spread: String,
    /// Share already expired (within the release period).
    #[serde(default)]
    pub expired_share: f64,
    /// Share PostPaid.
    #[serde(default)]
    pub postpaid_share: f64,
    /// Share with auto-renew on.
    #[serde(default)]
    pub auto_renew_share: f64,
    /// Share with NotRenewal.
    #[serde(default)]
    pub not_renewal_share: f64,
    /// Tags: each key takes one of its values at random.
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<String>>,
    /// Monthly price.
    #[serde(default = "default_price")]
    pub monthly_price: f64,
    /// Id prefix (ids are `<prefix><n>`).
    #[serde(default = "default_prefix")]
    pub id_prefix: String,
    /// Random seed.
    #[serde(default)]
    pub seed: u64,
}

fn default_spread() -> String {
    "60d".into()
}
fn default_prefix() -> String {
    "i-gen".into()
}

/// A fleet file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FleetFileError {
    /// Cannot read it.
    #[error("cannot read the fleet file {path}: {source}")]
    Read {
        /// The path that could not be read.
        path: String,
        /// The I/O error reading it failed with.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for the schema.
    #[error("fleet file {path}: {message}")]
    Parse {
        /// Names the fleet file: its path, or the `origin` given to `parse`.
        path: String,
        /// What toml said (with line and column).
        message: String,
    },
    /// Valid TOML but inconsistent.
    #[error("fleet file {path}: {message}")]
    Invalid {
        /// Names the fleet file: its path, or a label such as `fleet`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl EmulatorConfig {
    /// Reads a fleet file.
    pub fn load(path: &Path) -> Result<EmulatorConfig, FleetFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses fleet-file text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<EmulatorConfig, FleetFileError> {
        toml::from_str(text).map_err(|e| FleetFileError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// A one-account configuration with the given key, for tests and the demo.
    pub fn single_account(key_id: &str, secret: &str) -> EmulatorConfig {
        EmulatorConfig {
            accounts: vec![AccountSpec {
                uid: None,
                roles: Vec::new(),
                members: Vec::new(),
                name: "default".into(),
                balance: default_balance(),
                currency: default_currency(),
                access_keys: vec![AccessKeySpec {
                    id: key_id.into(),
                    secret: secret.into(),
                    security_token: None,
                    expires_at: None,
                    denied_actions: Vec::new(),
                }],
            }],
            ..EmulatorConfig::default()
        }
    }
}
