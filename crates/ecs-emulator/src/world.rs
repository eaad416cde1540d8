//! The emulated cloud's state and its rules, independent of HTTP: accounts and balances,
//! instances and their lifecycle (expiry, Stopped with a `financial` lock, release), renewals
//! that charge and extend, ClientToken idempotency, auto-renew attributes, and the provider's
//! own auto-renew deductions on the virtual clock. Every method takes `now`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::Serialize;

use super::instance::{Instance, Lifecycle, add_period};
use super::settings::{
    AccessKeySpec, AccountSpec, EmulatorConfig, FailedTokens, FleetFileError, GeneratorSpec,
    InstanceSpec, Settings,
};
use ecs_wire::Action;
use ecs_wire::secret::Secret;
use ecs_wire::time::{start_of_day_utc8, utc8};
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};

/// A service error the emulator answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// HTTP status.
    pub status: u16,
    /// Error code.
    pub code: String,
    /// The human-readable text sent as `Message` in the error body.
    pub message: String,
}

impl Fault {
    /// A fault with a code, status and message.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Fault {
        Fault {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// An instance id the caller cannot see in that region.
    pub fn invalid_instance_id(id: &str) -> Fault {
        Fault::new(
            403,
            "InvalidParameter.InvalidInstanceId",
            format!("The specified instance id {id} is invalid."),
        )
    }

    /// An operation refused for a PostPaid instance; the service words it per action.
    pub fn charge_type_violation(message: &str) -> Fault {
        Fault::new(403, "ChargeTypeViolation", message)
    }
}

/// An emulated account: the balance renewals are charged to, and its currency.
#[derive(Debug, Clone, Serialize)]
pub struct Account {
    /// The account's name from the fleet file; instances and keys refer to it by this name.
    pub name: String,
    /// Balance in cents.
    pub balance_cents: i64,
    /// The currency of the balance and of the orders charged to it, e.g. `CNY`.
    pub currency: String,
}

/// An AccessKey as the emulator knows it.
#[derive(Debug, Clone)]
pub struct AccessKey {
    /// The owning account.
    pub account: String,
    /// The AccessKey secret that requests must be signed with.
    pub secret: Secret,
    /// The STS token it must come with.
    pub security_token: Option<String>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Actions it may not call.
    pub denied_actions: Vec<Action>,
}

/// A renewal the world would carry out, before the balance is checked.
struct PricedRenewal {
    price: i64,
    old_expiry: DateTime<Utc>,
    new_expiry: DateTime<Utc>,
    region: String,
}

/// Why money moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// A RenewInstance call from a client (recorded as `renew`).
    Renew,
    /// The provider's auto-renew deduction.
    AutoRenew,
}

/// A charge that extended an instance, as `/_emulator/orders` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Order {
    /// Order id.
    pub order_id: String,
    /// What charged it: `renew` (RenewInstance) or `auto_renew` (the provider's deduction).
    pub kind: String,
    /// The name of the account charged.
    pub account: String,
    /// The region of the renewed instance.
    pub region: String,
    /// The id of the renewed instance.
    pub instance_id: String,
    /// How many `unit`s the instance was extended by.
    pub period: u32,
    /// The unit of `period`: Week, Month or Year.
    pub unit: PeriodUnit,
    /// Charged, in cents.
    pub price_cents: i64,
    /// The account's currency, which `price_cents` is in.
    pub currency: String,
    /// The ClientToken it was made with.
    pub client_token: Option<String>,
    /// When it was charged, in emulated time (for a provider deduction, its daily slot).
    pub at: DateTime<Utc>,
    /// Expiry before.
    pub old_expiry: DateTime<Utc>,
    /// Expiry after.
    pub new_expiry: DateTime<Utc>,
}

/// A remembered ClientToken.
#[derive(Debug, Clone)]
struct TokenRecord {
    fingerprint: String,
    /// What the request with this token came to.
    outcome: TokenOutcome,
    at: DateTime<Utc>,
}

/// What a request with a ClientToken came to.
#[derive(Debug, Clone)]
enum TokenOutcome {
    /// An order: a repeat gets it again.
    Ordered(String),
    /// Refused (kept only under `FailedTokens::ReplayFailure`): a repeat gets the same fault.
    Refused(Fault),
}

/// The emulated cloud.
#[derive(Debug)]
pub struct World {
    /// Behaviour settings.
    pub settings: Settings,
    accounts: BTreeMap<String, Account>,
    keys: HashMap<String, AccessKey>,
    /// Account ids and RAM roles (STS).
    identities: crate::roles::Identities,
    /// Resource Directories: each management account's members, in listing order.
    directories: BTreeMap<String, Vec<crate::settings::MemberSpec>>,
    /// Instances per (account, region), by id: paging walks ids in order.
    sources: BTreeMap<(String, String), BTreeMap<String, Instance>>,
    /// Where each id lives.
    locations: HashMap<String, (String, String)>,
    regions: std::collections::BTreeSet<String>,
    orders: Vec<Order>,
    tokens: HashMap<(String, String), TokenRecord>,
    next_order: u64,
    deductions_through: DateTime<Utc>,
    /// Failed provider deductions (all instances).
    pub failed_deductions: u64,
}

/// A parameter fingerprint for ClientToken matching.
fn fingerprint(instance_id: &str, period: u32, unit: PeriodUnit) -> String {
    format!("RenewInstance|{instance_id}|{period}|{unit}")
}

/// The expiry a fleet-file instance starts with: the PostPaid sentinel, or for PrePaid its
/// `expires_at`, `expires_in` (end of that UTC+8 day) or `expired_ago` (start of that day).
fn initial_expiry(
    spec: &InstanceSpec,
    id: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    match spec.charge_type {
        ChargeType::PostPaid => Ok(ecs_wire::time::parse(ecs_wire::time::POSTPAID_EXPIRED_TIME)
            .expect("the PostPaid constant parses")),
        ChargeType::PrePaid => {
            if let Some(at) = spec.expires_at {
                Ok(at)
            } else if let Some(text) = &spec.expires_in {
                let d = ecs_wire::duration::parse(text)
                    .map_err(|e| format!("instance {id}: expires_in: {e}"))?;
                Ok(
                    start_of_day_utc8(now + Duration::from_std(d).unwrap_or_default())
                        + Duration::days(1),
                )
            } else if let Some(text) = &spec.expired_ago {
                let d = ecs_wire::duration::parse(text)
                    .map_err(|e| format!("instance {id}: expired_ago: {e}"))?;
                Ok(start_of_day_utc8(
                    now - Duration::from_std(d).unwrap_or_default(),
                ))
            } else {
                Err(format!(
                    "instance {id}: a PrePaid instance needs expires_at, expires_in or expired_ago"
                ))
            }
        }
    }
}

/// Builds the `n`th (0-based) fleet-file instance for `account`; an instance without an id
/// gets `i-fleetNNNNNN` from its 1-based position.
fn instance_from_spec(
    spec: &InstanceSpec,
    n: usize,
    account: String,
    now: DateTime<Utc>,
) -> Result<Instance, String> {
    let id = spec
        .id
        .clone()
        .unwrap_or_else(|| format!("i-fleet{:06}", n + 1));
    let expiry = initial_expiry(spec, &id, now)?;
    Ok(Instance {
        id: id.clone(),
        account,
        name: spec.name.clone().unwrap_or_else(|| id.clone()),
        region: spec.region.clone(),
        zone: spec
            .zone
            .clone()
            .unwrap_or_else(|| format!("{}-a", spec.region)),
        charge_type: spec.charge_type,
        expiry: vec![(DateTime::<Utc>::MIN_UTC, expiry)],
        tags: spec
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        security_groups: spec.security_groups.clone(),
        instance_type: spec.instance_type.clone(),
        resource_group_id: spec.resource_group_id.clone(),
        monthly_price_cents: (spec.monthly_price * 100.0).round() as i64,
        renewal_status: spec.renewal_status,
        auto_renew_duration: spec.auto_renew_duration,
        auto_renew_unit: spec.auto_renew_unit,
        deduction_fails: spec.deduction_fails,
        failed_deductions: 0,
    })
}

impl World {
    /// Builds the world from a fleet file at clock time `now`.
    pub fn from_config(
        config: &EmulatorConfig,
        now: DateTime<Utc>,
        origin: &str,
    ) -> Result<World, FleetFileError> {
        let invalid = |message: String| FleetFileError::Invalid {
            path: origin.to_owned(),
            message,
        };
        let mut world = World::empty(config, now);
        world.add_accounts(&config.accounts).map_err(invalid)?;
        // `add_accounts` has checked that there is at least one account.
        let first_account = &config.accounts[0].name;
        world
            .identities
            .add_oidc_providers(&config.oidc_providers, first_account)
            .map_err(invalid)?;
        world
            .add_instances(&config.instances, first_account, now)
            .map_err(invalid)?;
        world
            .add_generated(&config.generate, first_account, now)
            .map_err(invalid)?;
        Ok(world)
    }

    /// A world with the fleet file's settings and regions but no accounts, keys or instances;
    /// the provider's deductions start from `now`.
    fn empty(config: &EmulatorConfig, now: DateTime<Utc>) -> World {
        World {
            settings: config.settings.clone(),
            accounts: BTreeMap::new(),
            keys: HashMap::new(),
            identities: Default::default(),
            directories: BTreeMap::new(),
            sources: BTreeMap::new(),
            locations: HashMap::new(),
            regions: config.regions.iter().cloned().collect(),
            orders: Vec::new(),
            tokens: HashMap::new(),
            next_order: 230_000_000_001,
            deductions_through: now,
            failed_deductions: 0,
        }
    }

    /// Adds the fleet file's accounts with their access keys; fails when there are none or an
    /// account or key name repeats.
    fn add_accounts(&mut self, specs: &[AccountSpec]) -> Result<(), String> {
        if specs.is_empty() {
            return Err(
                "no [[accounts]]: the emulator needs at least one account with an access key"
                    .into(),
            );
        }
        for (index, spec) in specs.iter().enumerate() {
            if self.accounts.contains_key(&spec.name) {
                return Err(format!("account {:?} is listed twice", spec.name));
            }
            self.identities.add(index, spec)?;
            self.accounts.insert(
                spec.name.clone(),
                Account {
                    name: spec.name.clone(),
                    balance_cents: (spec.balance * 100.0).round() as i64,
                    currency: spec.currency.clone(),
                },
            );
            self.add_access_keys(&spec.name, &spec.access_keys)?;
        }
        for spec in specs.iter().filter(|s| !s.members.is_empty()) {
            self.set_members(&spec.name, spec.members.clone())?;
        }
        Ok(())
    }

    /// Makes `management` a Resource Directory's management account listing `members` (an
    /// empty list ends its directory); tests change members between passes this way.
    pub fn set_members(
        &mut self,
        management: &str,
        members: Vec<crate::settings::MemberSpec>,
    ) -> Result<(), String> {
        for member in &members {
            if !self.accounts.contains_key(&member.account) || member.account == management {
                return Err(format!(
                    "account {management:?}: member {:?} is not another account of the fleet",
                    member.account
                ));
            }
        }
        if members.is_empty() {
            self.directories.remove(management);
        } else {
            self.directories.insert(management.to_owned(), members);
        }
        Ok(())
    }

    /// The members of the directory `management` manages, if it manages one.
    pub fn members(&self, management: &str) -> Option<&[crate::settings::MemberSpec]> {
        self.directories.get(management).map(Vec::as_slice)
    }

    /// Account ids and RAM roles.
    pub fn identities(&self) -> &crate::roles::Identities {
        &self.identities
    }

    /// Account ids and RAM roles, to change (a test editing a role's trust policy).
    pub fn identities_mut(&mut self) -> &mut crate::roles::Identities {
        &mut self.identities
    }

    /// Every key STS minted so far: its ID, secret and token (tests look for them where they
    /// must never appear).
    pub fn minted_keys(&self) -> Vec<(String, String, Option<String>)> {
        self.keys
            .iter()
            .filter(|(id, _)| id.starts_with("STS."))
            .map(|(id, key)| {
                (
                    id.clone(),
                    key.secret.expose().to_owned(),
                    key.security_token.clone(),
                )
            })
            .collect()
    }

    /// Every key STS minted stops working at `now` (as if each had reached its expiry): the
    /// next call signed with one is refused `InvalidSecurityToken.Expired`. Returns how many.
    pub fn expire_sts_keys(&mut self, now: DateTime<Utc>) -> usize {
        let mut expired = 0;
        for (id, key) in &mut self.keys {
            if id.starts_with("STS.") && key.expires_at.is_none_or(|at| at > now) {
                key.expires_at = Some(now);
                expired += 1;
            }
        }
        expired
    }

    /// A key STS mints for `account` (an assumed role's), expiring at `expires_at`. Minted keys
    /// a day past their expiry are forgotten (until then a late caller hears "expired").
    pub fn mint_sts_key(
        &mut self,
        account: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> crate::roles::Minted {
        self.keys.retain(|id, key| {
            !(id.starts_with("STS.")
                && key
                    .expires_at
                    .is_some_and(|t| t + chrono::Duration::days(1) < now))
        });
        let minted = crate::roles::mint();
        self.keys.insert(
            minted.id.clone(),
            AccessKey {
                account: account.to_owned(),
                secret: Secret::new(minted.secret.clone()),
                security_token: Some(minted.token.clone()),
                expires_at: Some(expires_at),
                denied_actions: Vec::new(),
            },
        );
        minted
    }

    /// Adds `account`'s access keys; fails when a key id is already known.
    fn add_access_keys(&mut self, account: &str, specs: &[AccessKeySpec]) -> Result<(), String> {
        for key in specs {
            if self.keys.contains_key(&key.id) {
                return Err(format!("access key {:?} is listed twice", key.id));
            }
            self.keys.insert(
                key.id.clone(),
                AccessKey {
                    account: account.to_owned(),
                    secret: Secret::new(key.secret.clone()),
                    security_token: key.security_token.clone(),
                    expires_at: key.expires_at,
                    denied_actions: key.denied_actions.clone(),
                },
            );
        }
        Ok(())
    }

    /// Adds the fleet file's listed instances; one without an account belongs
    /// to `first_account`.
    fn add_instances(
        &mut self,
        specs: &[InstanceSpec],
        first_account: &str,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        for (n, spec) in specs.iter().enumerate() {
            let account = spec
                .account
                .clone()
                .unwrap_or_else(|| first_account.to_owned());
            if !self.accounts.contains_key(&account) {
                return Err(format!(
                    "instance #{} names unknown account {account:?}",
                    n + 1
                ));
            }
            let instance = instance_from_spec(spec, n, account, now)?;
            self.insert(instance)?;
        }
        Ok(())
    }

    /// Adds the instances the fleet file's generators describe; a generator without an
    /// account generates for `first_account`.
    fn add_generated(
        &mut self,
        specs: &[GeneratorSpec],
        first_account: &str,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        for spec in specs {
            let account = spec
                .account
                .clone()
                .unwrap_or_else(|| first_account.to_owned());
            if !self.accounts.contains_key(&account) {
                return Err(format!("a generator names unknown account {account:?}"));
            }
            for instance in super::fleet::generate(spec, &account, now)? {
                self.insert(instance)?;
            }
        }
        Ok(())
    }

    /// Adds an instance.
    pub fn insert(&mut self, instance: Instance) -> Result<(), String> {
        if self.locations.contains_key(&instance.id) {
            return Err(format!("instance id {:?} is used twice", instance.id));
        }
        let key = (instance.account.clone(), instance.region.clone());
        self.locations.insert(instance.id.clone(), key.clone());
        self.regions.insert(instance.region.clone());
        self.sources
            .entry(key)
            .or_default()
            .insert(instance.id.clone(), instance);
        Ok(())
    }

    /// The key with this id.
    pub fn key(&self, id: &str) -> Option<&AccessKey> {
        self.keys.get(id)
    }

    /// Adds or replaces a key (rotation, expiry, revocation in tests).
    pub fn put_key(&mut self, id: &str, key: AccessKey) {
        self.keys.insert(id.to_owned(), key);
    }

    /// Removes a key.
    pub fn revoke_key(&mut self, id: &str) -> bool {
        self.keys.remove(id).is_some()
    }

    /// The account with this name, if there is one.
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.get(name)
    }

    /// Every account.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values()
    }

    /// Sets an account's balance (cents).
    pub fn set_balance(&mut self, account: &str, cents: i64) -> bool {
        match self.accounts.get_mut(account) {
            Some(a) => {
                a.balance_cents = cents;
                true
            }
            None => false,
        }
    }

    /// Every region (for DescribeRegions).
    pub fn regions(&self) -> impl Iterator<Item = &String> {
        self.regions.iter()
    }

    /// Every order so far, oldest first.
    pub fn orders(&self) -> &[Order] {
        &self.orders
    }

    /// How many instances there are.
    pub fn instance_count(&self) -> usize {
        self.locations.len()
    }

    /// The instances of (account, region), by id.
    pub fn source(&self, account: &str, region: &str) -> Option<&BTreeMap<String, Instance>> {
        self.sources.get(&(account.to_owned(), region.to_owned()))
    }

    /// Every instance.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.sources.values().flat_map(|m| m.values())
    }

    /// One instance of `account` (any region), unless released at `now`.
    pub fn instance(&self, account: &str, id: &str, now: DateTime<Utc>) -> Option<&Instance> {
        let (owner, region) = self.locations.get(id)?;
        if owner != account {
            return None;
        }
        let instance = self
            .sources
            .get(&(owner.clone(), region.clone()))?
            .get(id)?;
        (instance.lifecycle(now, &self.settings) != Lifecycle::Released).then_some(instance)
    }

    fn instance_mut(
        &mut self,
        account: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Option<&mut Instance> {
        let settings = self.settings.clone();
        let (owner, region) = self.locations.get(id)?.clone();
        if owner != account {
            return None;
        }
        let instance = self.sources.get_mut(&(owner, region))?.get_mut(id)?;
        (instance.lifecycle(now, &settings) != Lifecycle::Released).then_some(instance)
    }

    /// Forgets ClientTokens older than the retention window.
    fn expire_tokens(&mut self, now: DateTime<Utc>) {
        let ttl = Duration::from_std(self.settings.client_token_ttl).unwrap_or(Duration::days(1));
        self.tokens.retain(|_, record| now - record.at < ttl);
    }

    fn not_found(id: &str) -> Fault {
        Fault::new(
            404,
            "InvalidInstanceId.NotFound",
            format!("The specified InstanceId does not exist: {id}."),
        )
    }

    /// RenewInstance: charges the account and extends the instance, once per ClientToken.
    pub fn renew(
        &mut self,
        account: &str,
        instance_id: &str,
        period: u32,
        unit: PeriodUnit,
        client_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<String, Fault> {
        self.expire_tokens(now);
        let fp = fingerprint(instance_id, period, unit);
        if let Some(replayed) = self.replay_token(account, client_token, &fp) {
            return replayed;
        }
        let charged = self.charge_renewal(account, instance_id, (period, unit), client_token, now);
        if let Some(token) = client_token {
            let outcome = match &charged {
                Ok(order_id) => Some(TokenOutcome::Ordered(order_id.clone())),
                Err(fault) if self.settings.failed_tokens == FailedTokens::ReplayFailure => {
                    Some(TokenOutcome::Refused(fault.clone()))
                }
                Err(_) => None,
            };
            if let Some(outcome) = outcome {
                self.tokens.insert(
                    (account.to_owned(), token.to_owned()),
                    TokenRecord {
                        fingerprint: fp,
                        outcome,
                        at: now,
                    },
                );
            }
        }
        charged
    }

    /// A renewal checked, priced and charged against the balance: the order id, or the fault
    /// it is refused with.
    fn charge_renewal(
        &mut self,
        account: &str,
        instance_id: &str,
        (period, unit): (u32, PeriodUnit),
        client_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<String, Fault> {
        let renewal = self.priced_renewal(account, instance_id, (period, unit), now)?;
        let balance = self
            .accounts
            .get(account)
            .map(|a| a.balance_cents)
            .unwrap_or(0);
        if balance < renewal.price {
            return Err(Fault::new(
                self.settings.funds_error_status,
                &self.settings.funds_error_code,
                "Your account does not have enough balance.",
            ));
        }
        Ok(self.charge(
            account,
            &renewal.region,
            instance_id,
            period,
            unit,
            renewal.price,
            client_token,
            OrderKind::Renew,
            now,
            renewal.old_expiry,
            renewal.new_expiry,
        ))
    }

    /// The answer a ClientToken already used gives: its order (or, under
    /// `FailedTokens::ReplayFailure`, its refusal) again, or `IdempotenceParamNotMatch` when the
    /// request differs; `None` for a new token.
    fn replay_token(
        &self,
        account: &str,
        client_token: Option<&str>,
        fingerprint: &str,
    ) -> Option<Result<String, Fault>> {
        let token = client_token?;
        let record = self.tokens.get(&(account.to_owned(), token.to_owned()))?;
        if record.fingerprint == fingerprint {
            return Some(match &record.outcome {
                TokenOutcome::Ordered(order_id) => Ok(order_id.clone()),
                TokenOutcome::Refused(fault) => Err(fault.clone()),
            });
        }
        Some(Err(Fault::new(
            400,
            "IdempotenceParamNotMatch",
            "Request uses a client token in a previous request but is not identical to that request.",
        )))
    }

    /// A renewal the service would accept (ahead of the balance check): its price and the
    /// expiry it moves, or the fault it is refused with.
    fn priced_renewal(
        &self,
        account: &str,
        instance_id: &str,
        (period, unit): (u32, PeriodUnit),
        now: DateTime<Utc>,
    ) -> Result<PricedRenewal, Fault> {
        let settings = &self.settings;
        if !settings.renew_rule().allows(period, unit) {
            return Err(Fault::new(
                400,
                "InvalidPeriod",
                format!(
                    "The specified period is not valid: {period} {unit} (allowed {}).",
                    settings.renew_rule().describe()
                ),
            ));
        }
        let instance = self
            .instance(account, instance_id, now)
            .ok_or_else(|| Self::not_found(instance_id))?;
        if instance.charge_type == ChargeType::PostPaid {
            return Err(Fault::charge_type_violation(
                "The operation is not permitted due to charge type of the instance.",
            ));
        }
        let (price, _) = instance.price_cents(period, unit);
        let old_expiry = instance.true_expiry();
        let base = if now < old_expiry {
            old_expiry
        } else {
            start_of_day_utc8(now)
        };
        let new_expiry = add_period(base, period, unit);
        let limit = add_period(now, settings.max_expiry_years * 12, PeriodUnit::Month);
        if new_expiry > limit {
            return Err(Fault::new(
                400,
                "InvalidPeriod.ExceededMaximumExpirationDate",
                "The renewal would exceed the maximum expiration date; shorten the period.",
            ));
        }
        Ok(PricedRenewal {
            price,
            old_expiry,
            new_expiry,
            region: instance.region.clone(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn charge(
        &mut self,
        account: &str,
        region: &str,
        instance_id: &str,
        period: u32,
        unit: PeriodUnit,
        price: i64,
        client_token: Option<&str>,
        kind: OrderKind,
        now: DateTime<Utc>,
        old_expiry: DateTime<Utc>,
        new_expiry: DateTime<Utc>,
    ) -> String {
        let delay = Duration::from_std(self.settings.renew_visibility_delay).unwrap_or_default();
        let currency = {
            let acc = self
                .accounts
                .get_mut(account)
                .expect("the instance's account exists");
            acc.balance_cents -= price;
            acc.currency.clone()
        };
        if let Some(instance) = self.instance_mut(account, instance_id, now) {
            instance.expiry.push((now + delay, new_expiry));
        }
        let order_id = self.next_order.to_string();
        self.next_order += 1;
        self.orders.push(Order {
            order_id: order_id.clone(),
            kind: match kind {
                OrderKind::Renew => "renew".into(),
                OrderKind::AutoRenew => "auto_renew".into(),
            },
            account: account.to_owned(),
            region: region.to_owned(),
            instance_id: instance_id.to_owned(),
            period,
            unit,
            price_cents: price,
            currency,
            client_token: client_token.map(str::to_owned),
            at: now,
            old_expiry,
            new_expiry,
        });
        order_id
    }

    /// Sets auto-renew attributes for a batch, all or nothing.
    pub fn set_auto_renew(
        &mut self,
        account: &str,
        ids: &[String],
        status: RenewalStatus,
        duration: Option<u32>,
        unit: PeriodUnit,
        now: DateTime<Utc>,
    ) -> Result<(), Fault> {
        for id in ids {
            let instance = self
                .instance(account, id, now)
                .ok_or_else(|| Fault::invalid_instance_id(id))?;
            if instance.charge_type == ChargeType::PostPaid {
                return Err(Fault::charge_type_violation(
                    "Pay-As-You-Go instances do not support this operation.",
                ));
            }
            if status == RenewalStatus::AutoRenewal
                && instance.lifecycle(now, &self.settings) != Lifecycle::Active
            {
                return Err(Fault::new(
                    403,
                    "IncorrectInstanceStatus",
                    format!("Auto-renewal cannot be enabled on expired instance {id}."),
                ));
            }
        }
        for id in ids {
            if let Some(instance) = self.instance_mut(account, id, now) {
                instance.renewal_status = status;
                if status == RenewalStatus::AutoRenewal {
                    instance.auto_renew_duration = duration.unwrap_or(1);
                    instance.auto_renew_unit = unit;
                }
            }
        }
        Ok(())
    }

    /// Runs the provider's auto-renew deductions due up to `now`: from `days_before` days before
    /// expiry, at `hour_utc8` each day, until one succeeds or the instance expires.
    pub fn run_provider_deductions(&mut self, now: DateTime<Utc>) {
        let schedule = self.settings.provider_auto_renew.clone();
        if !schedule.enabled || now <= self.deductions_through {
            self.deductions_through = self.deductions_through.max(now);
            return;
        }
        // Deduction slots: each day at hour_utc8 in UTC+8.
        let mut slot = start_of_day_utc8(self.deductions_through)
            + Duration::hours(i64::from(schedule.hour_utc8));
        if slot <= self.deductions_through {
            slot += Duration::days(1);
        }
        while slot <= now {
            self.deduct_at(slot, &schedule);
            slot += Duration::days(1);
        }
        self.deductions_through = now;
    }

    fn deduct_at(&mut self, slot: DateTime<Utc>, schedule: &super::settings::ProviderAutoRenew) {
        let window = Duration::days(i64::from(schedule.days_before));
        let mut due = Vec::new();
        for instance in self.instances() {
            if instance.charge_type != ChargeType::PrePaid
                || instance.renewal_status != RenewalStatus::AutoRenewal
            {
                continue;
            }
            let expiry = instance.true_expiry();
            let tries = match &schedule.attempt_days {
                Some(days) => {
                    let day = (start_of_day_utc8(slot) - start_of_day_utc8(expiry)).num_days();
                    slot < expiry && days.contains(&day)
                }
                None => {
                    let first_slot = start_of_day_utc8(expiry - window)
                        + Duration::hours(i64::from(schedule.hour_utc8));
                    let in_window = slot >= first_slot && slot < expiry;
                    let tried_before = instance.failed_deductions > 0;
                    in_window && (schedule.retry_daily || !tried_before || slot == first_slot)
                }
            };
            if tries {
                due.push((instance.account.clone(), instance.id.clone()));
            }
        }
        for (account, id) in due {
            let Some(instance) = self.instance(&account, &id, slot) else {
                continue;
            };
            let (price, _) =
                instance.price_cents(instance.auto_renew_duration, instance.auto_renew_unit);
            let old_expiry = instance.true_expiry();
            let new_expiry = add_period(
                old_expiry,
                instance.auto_renew_duration,
                instance.auto_renew_unit,
            );
            let (period, unit, region) = (
                instance.auto_renew_duration,
                instance.auto_renew_unit,
                instance.region.clone(),
            );
            let fails = schedule.fail
                || instance.deduction_fails
                || self
                    .accounts
                    .get(&account)
                    .is_none_or(|a| a.balance_cents < price);
            if fails {
                self.failed_deductions += 1;
                if let Some(instance) = self.instance_mut(&account, &id, slot) {
                    instance.failed_deductions += 1;
                }
                continue;
            }
            self.charge(
                &account,
                &region,
                &id,
                period,
                unit,
                price,
                None,
                OrderKind::AutoRenew,
                slot,
                old_expiry,
                new_expiry,
            );
        }
    }

    /// Moves every instance's expiry by `delta` (tests that need an instance due now).
    pub fn set_expiry(&mut self, id: &str, expiry: DateTime<Utc>) -> bool {
        let Some((account, region)) = self.locations.get(id).cloned() else {
            return false;
        };
        match self
            .sources
            .get_mut(&(account, region))
            .and_then(|m| m.get_mut(id))
        {
            Some(instance) => {
                instance.expiry = vec![(DateTime::<Utc>::MIN_UTC, expiry)];
                true
            }
            None => false,
        }
    }

    /// Makes the provider's deductions fail (or work again) for one instance.
    pub fn set_deduction_fails(&mut self, id: &str, fails: bool) -> bool {
        let Some((account, region)) = self.locations.get(id).cloned() else {
            return false;
        };
        match self
            .sources
            .get_mut(&(account, region))
            .and_then(|m| m.get_mut(id))
        {
            Some(instance) => {
                instance.deduction_fails = fails;
                true
            }
            None => false,
        }
    }

    /// The weekday, for tests of the calendar.
    pub fn weekday_utc8(t: DateTime<Utc>) -> chrono::Weekday {
        t.with_timezone(&utc8()).weekday()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{AccountSpec, InstanceSpec};
    use ecs_wire::time;

    fn world(instances: Vec<InstanceSpec>, balance: f64) -> (World, DateTime<Utc>) {
        let now = time::parse("2026-03-10T04:00:00Z").unwrap();
        let mut config = EmulatorConfig::single_account("ak", "sk");
        config.accounts[0] = AccountSpec {
            uid: None,
            roles: Vec::new(),
            members: Vec::new(),
            balance,
            ..config.accounts[0].clone()
        };
        config.instances = instances;
        (World::from_config(&config, now, "test").unwrap(), now)
    }

    fn prepaid(id: &str, expires: &str) -> InstanceSpec {
        InstanceSpec {
            id: Some(id.into()),
            account: None,
            region: "cn-hangzhou".into(),
            zone: None,
            name: None,
            charge_type: ChargeType::PrePaid,
            expires_at: Some(time::parse(expires).unwrap()),
            expires_in: None,
            expired_ago: None,
            tags: Default::default(),
            security_groups: vec![],
            instance_type: "ecs.g6.large".into(),
            resource_group_id: String::new(),
            monthly_price: 100.0,
            renewal_status: RenewalStatus::Normal,
            auto_renew_duration: 1,
            auto_renew_unit: PeriodUnit::Month,
            deduction_fails: false,
        }
    }

    #[test]
    fn a_running_instance_extends_from_its_old_expiry_and_shows_it_after_the_delay() {
        let (mut w, now) = world(vec![prepaid("i-1", "2026-03-14T16:00Z")], 1000.0);
        let order = w
            .renew("default", "i-1", 1, PeriodUnit::Month, Some("t1"), now)
            .unwrap();
        let instance = w.instance("default", "i-1", now).unwrap();
        assert_eq!(
            instance.true_expiry(),
            time::parse("2026-04-14T16:00Z").unwrap()
        );
        assert_eq!(
            instance.shown_expiry(now),
            time::parse("2026-03-14T16:00Z").unwrap()
        );
        assert_eq!(
            instance.shown_expiry(now + Duration::seconds(10)),
            time::parse("2026-04-14T16:00Z").unwrap()
        );
        assert_eq!(w.account("default").unwrap().balance_cents, 90_000);
        // The same token and parameters: the same order, no second charge.
        assert_eq!(
            w.renew("default", "i-1", 1, PeriodUnit::Month, Some("t1"), now)
                .unwrap(),
            order
        );
        assert_eq!(w.orders().len(), 1);
        // The same token, other parameters: refused.
        let fault = w
            .renew("default", "i-1", 2, PeriodUnit::Month, Some("t1"), now)
            .unwrap_err();
        assert_eq!(fault.code, "IdempotenceParamNotMatch");
    }

    #[test]
    fn an_expired_instance_starts_a_new_cycle_on_the_renewal_day() {
        let (mut w, now) = world(vec![prepaid("i-1", "2026-03-01T16:00Z")], 1000.0);
        assert_eq!(
            w.instance("default", "i-1", now)
                .unwrap()
                .status(now, &w.settings),
            ("Stopped", vec!["financial"])
        );
        w.renew("default", "i-1", 1, PeriodUnit::Month, None, now)
            .unwrap();
        // 2026-03-10T04:00Z is 12:00 on 03-10 in UTC+8: the cycle runs 03-10 .. 04-10 00:00 UTC+8.
        assert_eq!(
            w.instance("default", "i-1", now).unwrap().true_expiry(),
            time::parse("2026-04-09T16:00Z").unwrap()
        );
    }

    #[test]
    fn too_little_balance_charges_nothing() {
        let (mut w, now) = world(vec![prepaid("i-1", "2026-03-14T16:00Z")], 50.0);
        let fault = w
            .renew("default", "i-1", 1, PeriodUnit::Month, Some("t"), now)
            .unwrap_err();
        assert_eq!(
            (fault.status, fault.code.as_str()),
            (403, "InvalidAccountStatus.NotEnoughBalance")
        );
        assert!(w.orders().is_empty());
        assert_eq!(w.account("default").unwrap().balance_cents, 5_000);
    }

    #[test]
    fn an_instance_is_released_after_the_release_period() {
        let (w, now) = world(vec![prepaid("i-1", "2026-03-01T16:00Z")], 1000.0);
        assert!(
            w.instance("default", "i-1", now).is_some(),
            "expired 8 days ago: still there"
        );
        let later = now + Duration::days(10);
        assert!(w.instance("default", "i-1", later).is_none());
    }

    #[test]
    fn the_provider_deducts_nine_days_before_expiry_at_eight_utc8_and_retries_daily() {
        let mut spec = prepaid("i-1", "2026-03-20T16:00Z");
        spec.renewal_status = RenewalStatus::AutoRenewal;
        let (mut w, now) = world(vec![spec], 1000.0);
        w.set_deduction_fails("i-1", true);
        // First slot: 2026-03-12 08:00 UTC+8 = 03-12T00:00Z (expiry 03-21 00:00 UTC+8, minus 9 days).
        w.run_provider_deductions(time::parse("2026-03-11T23:59Z").unwrap());
        assert_eq!(w.failed_deductions, 0);
        w.run_provider_deductions(time::parse("2026-03-13T01:00Z").unwrap());
        assert_eq!(w.failed_deductions, 2, "03-12 and 03-13 attempts");
        w.set_deduction_fails("i-1", false);
        w.run_provider_deductions(time::parse("2026-03-14T01:00Z").unwrap());
        assert_eq!(w.orders().len(), 1);
        assert_eq!(w.orders()[0].kind, "auto_renew");
        assert_eq!(
            w.orders()[0].new_expiry,
            time::parse("2026-04-20T16:00Z").unwrap()
        );
        let _ = now;
    }
}
