//! The funds forecast's I/O, shared by the pass and `plan`: each account's balance, a price for
//! each upcoming charge (`DescribeRenewalPrice`, reused for `[funds] price_cache`), then the
//! pure [`crate::policy::forecast`] per account. A failed balance or price never fails the
//! pass: the forecast says what is unknown and why, and a source the scan could not list makes
//! its account's forecast incomplete — never covered.
//!
//! **When the balance is read** (one rule, `docs/how-it-works.md`, *The funds forecast*): a
//! remembered balance is used while it is younger than `[funds] balance_interval` — or, while
//! renewals are held for lack of funds, `[funds] top_up_check_interval` — and nothing has charged
//! the account since it was read. A charge is known to have come when this pass renewed one of
//! the account's instances, when a provider deduction morning (08:00 UTC+8) lies between the
//! read and now, or when an instance the last forecast counted has a new expiry (a deduction, or
//! a person renewing it in the console). So a pass reads an account's balance at most twice:
//! once before its renewals (the top-up check, only while renewals are held) and once after
//! them when they charged the account.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};

use super::assess::Upcoming;
use super::scan::{SourceKey, Watched};
use crate::accounts::AccountClient;
use crate::cloud::ErrorClass;
use crate::cloud::bss_urls;
use crate::cloud::periods::price_query_for;
use crate::cloud::time::start_of_day_utc8;
use crate::cloud::types::PeriodUnit;
use crate::config::Config;
use crate::money::Money;
use crate::policy::{BalanceView, Charge, Forecast, Unpriced, WindowCharges, forecast, window_end};

/// A charge's price key: (instance, period, unit).
type QuoteKey = (String, u32, PeriodUnit);

/// What the forecast remembers between passes. Lives as long as the engine: a reload starts
/// afresh (a fixed RAM policy is then tried again at once).
#[derive(Debug, Default)]
pub struct FundsMemory {
    state: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    /// Each account's last balance read, and when.
    balances: HashMap<String, (DateTime<Utc>, BalanceView)>,
    /// Price quotes, and when each was read.
    quotes: HashMap<QuoteKey, (DateTime<Utc>, Money)>,
    /// Accounts whose `DescribeRenewalPrice` was refused for permission or clock, and until
    /// when it is not asked again.
    prices_refused: HashMap<String, DateTime<Utc>>,
    /// Charges that cannot be priced (weekly periods) that were already said so.
    said_unpriceable: HashSet<QuoteKey>,
    /// The instances each account's last forecast counted, with their expiry then: one seen
    /// with another expiry was charged meanwhile.
    counted: HashMap<String, HashMap<String, DateTime<Utc>>>,
}

impl FundsMemory {
    fn lock(&self) -> MutexGuard<'_, Memory> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a quote read elsewhere (`plan` prices its renewals first) for the forecast.
    pub fn remember_price(
        &self,
        instance_id: &str,
        period: u32,
        unit: PeriodUnit,
        price: &Money,
        now: DateTime<Utc>,
    ) {
        self.lock()
            .quotes
            .insert((instance_id.to_owned(), period, unit), (now, price.clone()));
    }

    /// The quote for `key` if it was read less than `ttl` ago.
    fn price_since(
        &self,
        key: &QuoteKey,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Option<Money> {
        let ttl = Duration::from_std(ttl).unwrap_or_default();
        self.lock()
            .quotes
            .get(key)
            .filter(|(at, _)| now - *at < ttl)
            .map(|(_, price)| price.clone())
    }

    /// The most recent quote for `instance_id`, whatever its period.
    fn latest_price(&self, instance_id: &str) -> Option<Money> {
        self.lock()
            .quotes
            .iter()
            .filter(|((id, _, _), _)| id == instance_id)
            .max_by_key(|(_, (at, _))| *at)
            .map(|(_, (_, price))| price.clone())
    }

    /// `account`'s balance if it was read less than `max_age` ago and no provider deduction
    /// morning (08:00 UTC+8) came between that read and `now`.
    fn fresh_balance(
        &self,
        account: &str,
        now: DateTime<Utc>,
        max_age: std::time::Duration,
    ) -> Option<BalanceView> {
        let max_age = Duration::from_std(max_age).unwrap_or_default();
        let memory = self.lock();
        let (read_at, view) = memory.balances.get(account)?;
        let slot_since = next_deduction_slot(*read_at) <= now;
        (now - *read_at < max_age && !slot_since).then(|| view.clone())
    }

    /// Keeps `account`'s balance as read at `now`.
    fn remember_balance(&self, account: &str, now: DateTime<Utc>, view: BalanceView) {
        self.lock().balances.insert(account.to_owned(), (now, view));
    }

    /// Forgets an account's balance, so the next forecast asks again: something charged it.
    pub fn forget_balance(&self, account: &str) {
        self.lock().balances.remove(account);
    }

    /// The instances the last forecasts counted, to be watched by the next scan.
    pub fn counted_instances(&self) -> Vec<String> {
        self.lock()
            .counted
            .values()
            .flat_map(|ids| ids.keys().cloned())
            .collect()
    }

    /// Whether an instance `account`'s last forecast counted now shows another expiry (it was
    /// charged since), other than those in `renewed` (this pass's own renewals).
    fn expiry_moved(
        &self,
        account: &str,
        watched: &HashMap<String, Watched>,
        renewed: &HashSet<String>,
    ) -> bool {
        let memory = self.lock();
        memory.counted.get(account).is_some_and(|counted| {
            counted.iter().any(|(id, expiry)| {
                !renewed.contains(id) && watched.get(id).is_some_and(|w| w.expiry != *expiry)
            })
        })
    }

    /// Keeps the instances `account`'s forecast counted, with their expiry.
    fn note_counted(&self, account: &str, counted: HashMap<String, DateTime<Utc>>) {
        self.lock().counted.insert(account.to_owned(), counted);
    }

    /// Whether `account`'s prices stand refused at `now`.
    fn prices_refused(&self, account: &str, now: DateTime<Utc>) -> bool {
        self.lock()
            .prices_refused
            .get(account)
            .is_some_and(|until| now < *until)
    }

    /// Records a refusal of `account`'s prices, seen at `now`, until `until`; whether it is
    /// news (no refusal stood at `now`), so it is said once.
    fn refuse_prices(&self, account: &str, now: DateTime<Utc>, until: DateTime<Utc>) -> bool {
        self.lock()
            .prices_refused
            .insert(account.to_owned(), until)
            .is_none_or(|before| before <= now)
    }

    /// Whether `key` was already said to be unpriceable (and notes it).
    fn said_unpriceable(&self, key: &QuoteKey) -> bool {
        !self.lock().said_unpriceable.insert(key.clone())
    }
}

/// The first provider deduction morning (08:00 UTC+8) after `t`.
fn next_deduction_slot(t: DateTime<Utc>) -> DateTime<Utc> {
    let today = start_of_day_utc8(t) + Duration::hours(8);
    if today > t {
        today
    } else {
        today + Duration::days(1)
    }
}

/// What the forecast takes from the pass.
pub struct PassView<'a> {
    /// The charges the scan expects in the window, unpriced.
    pub upcoming: &'a [Upcoming],
    /// Instances this pass renewed: their charge is behind it, and the balance read after it
    /// shows them.
    pub renewed: &'a HashSet<String>,
    /// Sources the scan could not list: their accounts' forecasts are incomplete.
    pub down: &'a [SourceKey],
    /// Instances whose auto-renew attributes could not be read: (account, instance id).
    pub auto_renew_unknown: &'a [(Arc<str>, String)],
    /// Pairs of config entries seen to reach one cloud account (they listed the same
    /// instances): each forecasts the charges of all of them against the one balance.
    pub shared: &'a [(String, String)],
    /// What the scan saw of the instances the last forecasts counted.
    pub watched: &'a HashMap<String, Watched>,
}

/// The forecast of every configured account. Empty when `[funds] enabled = false`.
pub async fn forecast_accounts(
    config: &Config,
    accounts: &[AccountClient],
    memory: &FundsMemory,
    view: PassView<'_>,
    now: DateTime<Utc>,
) -> Vec<Forecast> {
    if !config.funds.enabled {
        return Vec::new();
    }
    let until = window_end(now, config.funds.horizon);
    forget_stale_balances(config, memory, &view, now);
    // Accounts are forecast side by side: the pass waits for one balance call, not one each.
    let each = config.accounts.iter().filter_map(|account| {
        let client = accounts.iter().find(|a| a.name == account.name)?;
        let view = &view;
        Some(async move {
            let balance = balance_of(config, account, client, memory, now).await;
            let charges = account_charges(config, account, client, memory, view, now).await;
            forecast(&account.name, &balance, charges, until)
        })
    });
    let all: Vec<Forecast> = futures_util::future::join_all(each)
        .await
        .into_iter()
        .flatten()
        .collect();
    for f in &all {
        if f.covered() {
            tracing::info!(account = %f.account, currency = %f.currency, "{}", f.describe());
        } else {
            tracing::warn!(account = %f.account, currency = %f.currency, "{}", f.describe());
        }
    }
    all
}

/// Forgets the balance of every entry whose cloud account was charged since it was read: an
/// instance it counted moved its expiry, or its remembered balance is gone (this pass's
/// orders, a renewal whose answer was lost) or too old (an entry not asking, with
/// `[accounts.funds] enabled = false`, makes none ask). Entries reaching one cloud account
/// share one balance, so what makes one of them ask again makes all of them ask: otherwise
/// one shows the balance after a charge and another the balance from before it.
fn forget_stale_balances(
    config: &Config,
    memory: &FundsMemory,
    view: &PassView<'_>,
    now: DateTime<Utc>,
) {
    let interval = config.funds.balance_interval;
    let stale: Vec<&str> = config
        .accounts
        .iter()
        .filter(|a| a.funds_enabled)
        .map(|a| a.name.as_str())
        .filter(|name| {
            memory.expiry_moved(name, view.watched, view.renewed)
                || memory.fresh_balance(name, now, interval).is_none()
        })
        .collect();
    for name in stale {
        for entry in one_cloud_account(name, view.shared) {
            memory.forget_balance(entry);
        }
    }
}

/// `entry` and the entries `shared` links it to, directly or through others.
fn one_cloud_account<'a>(entry: &'a str, shared: &'a [(String, String)]) -> HashSet<&'a str> {
    let mut group = HashSet::from([entry]);
    loop {
        let before = group.len();
        for (a, b) in shared {
            if group.contains(a.as_str()) || group.contains(b.as_str()) {
                group.insert(a);
                group.insert(b);
            }
        }
        if group.len() == before {
            return group;
        }
    }
}

/// One account's charges in the window, each priced or named unpriced, and the sources whose
/// charges are missing; the instances counted are remembered for the next pass. Entries seen
/// to reach the same cloud account are counted together: each has only its share of the
/// instances (each instance is managed through one entry), but one balance pays for all.
async fn account_charges(
    config: &Config,
    account: &crate::config::Account,
    client: &AccountClient,
    memory: &FundsMemory,
    view: &PassView<'_>,
    now: DateTime<Utc>,
) -> WindowCharges {
    let group = one_cloud_account(&account.name, view.shared);
    let mine_entry = |name: &str| group.contains(name);
    let mut charges = WindowCharges {
        billing_currency: account.currency.clone(),
        sources_down: view
            .down
            .iter()
            .filter(|k| mine_entry(&k.account))
            .map(ToString::to_string)
            .collect(),
        auto_renew_unknown: view
            .auto_renew_unknown
            .iter()
            .filter(|(a, id)| mine_entry(a) && !view.renewed.contains(id))
            .map(|(_, id)| id.clone())
            .collect(),
        ..WindowCharges::default()
    };
    let mut counted = HashMap::new();
    let mine = view
        .upcoming
        .iter()
        .filter(|u| mine_entry(&u.account) && !view.renewed.contains(&u.instance_id));
    for item in mine {
        counted.insert(item.instance_id.clone(), item.expiry);
        let (instance_id, at, by) = (item.instance_id.clone(), item.seed.at, item.seed.by);
        match price_of(config, client, memory, item, now).await {
            Some(amount) => charges.priced.push(Charge {
                instance_id,
                amount,
                at,
                by,
            }),
            None => charges.unpriced.push(Unpriced {
                instance_id,
                at,
                by,
            }),
        }
    }
    memory.note_counted(&account.name, counted);
    charges
}

/// The account's balance: remembered when read within `balance_interval` and nothing charged
/// the account since, else asked.
async fn balance_of(
    config: &Config,
    account: &crate::config::Account,
    client: &AccountClient,
    memory: &FundsMemory,
    now: DateTime<Utc>,
) -> BalanceView {
    if !account.funds_enabled {
        return BalanceView::Unknown(
            "not queried ([accounts.funds] enabled = false for this account)".into(),
        );
    }
    if let Some(view) = memory.fresh_balance(&account.name, now, config.funds.balance_interval) {
        return view;
    }
    let view = ask_balance(account, client).await;
    memory.remember_balance(&account.name, now, view.clone());
    view
}

/// `QueryAccountBalance` for `account`, the reason in words when it cannot be had (logged).
async fn ask_balance(account: &crate::config::Account, client: &AccountClient) -> BalanceView {
    let urls = match bss_urls(&account.endpoint, account.site) {
        Ok(urls) => urls,
        Err(error) => return BalanceView::Unknown(error.to_string()),
    };
    match client.client.query_account_balance(&urls).await {
        Ok(available) => BalanceView::Known(available),
        Err(error) => {
            tracing::warn!(
                account = %account.name,
                %error,
                "the account's balance could not be read: its funds forecast is unknown (grant bss:DescribeAcccount and bssapi:QueryAccountBalance, or set [accounts.funds] enabled = false)"
            );
            BalanceView::Unknown(error.to_string())
        }
    }
}

/// The charge's price: a quote read within `price_cache`, else `DescribeRenewalPrice`. `None`
/// when it cannot be priced: the forecast names it as unpriced. A period the action cannot
/// price (weeks) is said once; a refusal for permission or clock ends the account's pricing
/// for `price_cache` (or a reload), said once, naming the RAM action to grant.
async fn price_of(
    config: &Config,
    client: &AccountClient,
    memory: &FundsMemory,
    item: &Upcoming,
    now: DateTime<Utc>,
) -> Option<Money> {
    let key = (item.instance_id.clone(), item.seed.period, item.seed.unit);
    if let Some(price) = memory.price_since(&key, now, config.funds.price_cache) {
        return Some(price);
    }
    let Some((period, unit)) = price_query_for(item.seed.period, item.seed.unit) else {
        if !memory.said_unpriceable(&key) {
            tracing::warn!(account = %client.name, instance_id = %item.instance_id,
                "an upcoming charge of {} {} cannot be priced (DescribeRenewalPrice takes 1-9 months or whole years): the funds forecast names it but cannot add it to the sum",
                item.seed.period, item.seed.unit);
        }
        return None;
    };
    if memory.prices_refused(&client.name, now) {
        return None;
    }
    let asked = client
        .client
        .describe_renewal_price(&item.region, &item.instance_id, period, unit)
        .await;
    match asked {
        Ok(quote) => {
            memory.remember_price(key.0.as_str(), key.1, key.2, &quote.trade_price, now);
            Some(quote.trade_price)
        }
        Err(error) if matches!(error.class(), ErrorClass::Permission | ErrorClass::Clock) => {
            let until = now + Duration::from_std(config.funds.price_cache).unwrap_or_default();
            if memory.refuse_prices(&client.name, now, until) {
                tracing::warn!(account = %client.name, %error,
                    "DescribeRenewalPrice was refused: the funds forecast leaves this account's charges unpriced until {} (grant the RAM action ecs:DescribeRenewalPrice, or fix the clock; a reload tries again at once)",
                    crate::cloud::time::format_minutes(until));
            }
            None
        }
        Err(error) => {
            tracing::warn!(
                account = %client.name,
                instance_id = %item.instance_id,
                %error,
                "an upcoming charge could not be priced: the funds forecast names it but cannot add it to the sum"
            );
            None
        }
    }
}

/// Renewals whose funds backoff a top-up ended, by account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopUp {
    /// The config account entry.
    pub account: String,
    /// Its available amount now.
    pub available: Money,
    /// The instances retried in this pass instead of after their backoff, earliest expiry
    /// first.
    pub retried: Vec<String>,
}

/// At the start of a pass: for each account with renewals held by a funds backoff, reads the
/// balance (at most once per `top_up_check_interval`) and ends the backoff of those it now
/// covers (earliest expiry first, at the last quote, or the price the intent recorded, or a
/// quote asked now), so this pass retries them. The forecast reuses the balance read here
/// unless the pass charges the account (then it reads it again, after the charges).
pub async fn end_covered_holds(
    config: &Config,
    accounts: &[AccountClient],
    ledger: &crate::ledger::Ledger,
    memory: &FundsMemory,
    now: DateTime<Utc>,
) -> Result<Vec<TopUp>, crate::ledger::LedgerError> {
    if !config.funds.enabled {
        return Ok(Vec::new());
    }
    let holds = ledger.funds_holds(now)?;
    let mut top_ups = Vec::new();
    for account in config.accounts.iter().filter(|a| a.funds_enabled) {
        let held: Vec<_> = holds.iter().filter(|h| h.account == account.name).collect();
        let Some(client) = accounts.iter().find(|a| a.name == account.name) else {
            continue;
        };
        if held.is_empty() {
            continue;
        }
        let interval = config.funds.top_up_check_interval;
        let view = match memory.fresh_balance(&account.name, now, interval) {
            Some(view) => view,
            None => {
                let view = ask_balance(account, client).await;
                memory.remember_balance(&account.name, now, view.clone());
                view
            }
        };
        let BalanceView::Known(available) = view else {
            continue;
        };
        let retried = covered_holds(client, memory, &held, &available, now).await;
        if retried.is_empty() {
            continue;
        }
        ledger.end_funds_holds(&retried, now)?;
        tracing::info!(
            account = %account.name,
            available = %available,
            instances = ?retried,
            "the account's available amount now covers {} renewal(s) held for lack of funds: retried in this pass instead of after their backoff",
            retried.len()
        );
        top_ups.push(TopUp {
            account: account.name.clone(),
            available,
            retried,
        });
    }
    Ok(top_ups)
}

/// The held renewals `available` covers, earliest expiry first, each at its price: the last
/// quote, the price its intent recorded, or a quote asked now (a held renewal without any
/// waits out its backoff).
async fn covered_holds(
    client: &AccountClient,
    memory: &FundsMemory,
    held: &[&crate::ledger::FundsHold],
    available: &Money,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut left = available.cents;
    let mut retried = Vec::new();
    for hold in held {
        let price = match memory
            .latest_price(&hold.instance_id)
            .or(hold.price.clone())
        {
            Some(price) => Some(price),
            None => quote_hold(client, memory, hold, now).await,
        };
        let Some(price) = price else {
            continue;
        };
        if price.currency == available.currency && price.cents <= left {
            left -= price.cents;
            retried.push(hold.instance_id.clone());
        }
    }
    retried
}

/// A quote for a held renewal that has none (after a restart or a reload).
async fn quote_hold(
    client: &AccountClient,
    memory: &FundsMemory,
    hold: &crate::ledger::FundsHold,
    now: DateTime<Utc>,
) -> Option<Money> {
    let (period, unit) = price_query_for(hold.period, hold.unit)?;
    let quote = client
        .client
        .describe_renewal_price(&hold.region, &hold.instance_id, period, unit)
        .await
        .ok()?;
    memory.remember_price(
        &hold.instance_id,
        hold.period,
        hold.unit,
        &quote.trade_price,
        now,
    );
    Some(quote.trade_price)
}
