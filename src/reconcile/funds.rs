//! The funds forecast's I/O, shared by the pass and `plan`: each account's balance (at most one
//! `QueryAccountBalance` per `[funds] balance_interval`), a price for each upcoming charge
//! (`DescribeRenewalPrice`, reused for `[funds] price_cache`), then the pure
//! [`crate::policy::forecast`] per account. A failed balance or price never fails the pass: the
//! forecast says what is unknown and why.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::assess::Upcoming;
use crate::accounts::AccountClient;
use crate::cloud::bss_urls;
use crate::cloud::types::PeriodUnit;
use crate::config::Config;
use crate::money::Money;
use crate::policy::{BalanceView, Charge, Forecast, Unpriced, WindowCharges, forecast, window_end};

/// A price quote by (instance, period, unit), with when it was read.
type Quotes = HashMap<(String, u32, PeriodUnit), (DateTime<Utc>, Money)>;

/// What the forecast remembers between passes: balances and price quotes with when they were
/// read. Lives as long as the engine (a reload starts afresh).
#[derive(Debug, Default)]
pub struct FundsMemory {
    balances: Mutex<HashMap<String, (DateTime<Utc>, BalanceView)>>,
    prices: Mutex<Quotes>,
}

impl FundsMemory {
    fn quotes(&self) -> std::sync::MutexGuard<'_, Quotes> {
        self.prices.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn balances(&self) -> std::sync::MutexGuard<'_, HashMap<String, (DateTime<Utc>, BalanceView)>> {
        self.balances.lock().unwrap_or_else(|p| p.into_inner())
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
        self.quotes()
            .insert((instance_id.to_owned(), period, unit), (now, price.clone()));
    }

    /// The quote for `instance_id`, `period` and `unit` if it was read less than `ttl` ago.
    fn price_since(
        &self,
        (instance_id, period, unit): (&str, u32, PeriodUnit),
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Option<Money> {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or_default();
        self.quotes()
            .get(&(instance_id.to_owned(), period, unit))
            .filter(|(at, _)| now - *at < ttl)
            .map(|(_, price)| price.clone())
    }

    /// `account`'s balance if it was read less than `interval` ago.
    fn balance_since(
        &self,
        account: &str,
        now: DateTime<Utc>,
        interval: std::time::Duration,
    ) -> Option<BalanceView> {
        let interval = chrono::Duration::from_std(interval).unwrap_or_default();
        self.balances()
            .get(account)
            .filter(|(at, _)| now - *at < interval)
            .map(|(_, view)| view.clone())
    }

    /// Keeps `account`'s balance as read at `now`.
    fn remember_balance(&self, account: &str, now: DateTime<Utc>, view: BalanceView) {
        self.balances().insert(account.to_owned(), (now, view));
    }

    /// The most recent quote for `instance_id`, whatever its period.
    fn latest_price(&self, instance_id: &str) -> Option<Money> {
        self.quotes()
            .iter()
            .filter(|((id, _, _), _)| id == instance_id)
            .max_by_key(|(_, (at, _))| *at)
            .map(|(_, (_, price))| price.clone())
    }

    /// Forgets an account's balance, so the next forecast asks again: the pass charged it.
    pub fn forget_balance(&self, account: &str) {
        self.balances().remove(account);
    }
}

/// The forecast of every configured account, from the pass's upcoming charges; instances in
/// `settled` (renewed in this pass: the balance read after it already shows the charge) are
/// left out. Empty when `[funds] enabled = false`.
pub async fn forecast_accounts(
    config: &Config,
    accounts: &[AccountClient],
    memory: &FundsMemory,
    upcoming: &[Upcoming],
    settled: &HashSet<String>,
    now: DateTime<Utc>,
) -> Vec<Forecast> {
    if !config.funds.enabled {
        return Vec::new();
    }
    let until = window_end(now, config.funds.horizon);
    // Accounts are forecast side by side: the pass waits for one balance call, not one each.
    let each = config.accounts.iter().filter_map(|account| {
        let client = accounts.iter().find(|a| a.name == account.name)?;
        Some(async move {
            let balance = balance_of(config, account, client, memory, now).await;
            let mut charges = WindowCharges {
                billing_currency: account.currency.clone(),
                ..WindowCharges::default()
            };
            for item in upcoming
                .iter()
                .filter(|u| *u.account == *account.name && !settled.contains(&u.instance_id))
            {
                let instance_id = item.instance_id.clone();
                let (at, by) = (item.seed.at, item.seed.by);
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
            forecast(&account.name, &balance, charges, until)
        })
    });
    let all: Vec<Forecast> = futures_util::future::join_all(each)
        .await
        .into_iter()
        .flatten()
        .collect();
    for f in &all {
        if f.shortfall_at.is_some() {
            tracing::warn!(account = %f.account, currency = %f.currency, "{}", f.describe());
        } else {
            tracing::info!(account = %f.account, currency = %f.currency, "{}", f.describe());
        }
    }
    all
}

/// The account's balance: remembered when read within `balance_interval`, else asked.
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
    if let Some(view) = memory.balance_since(&account.name, now, config.funds.balance_interval) {
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
/// (logged) when it cannot be priced: the forecast names it as unpriced.
async fn price_of(
    config: &Config,
    client: &AccountClient,
    memory: &FundsMemory,
    item: &Upcoming,
    now: DateTime<Utc>,
) -> Option<Money> {
    let key = (item.instance_id.as_str(), item.seed.period, item.seed.unit);
    if let Some(price) = memory.price_since(key, now, config.funds.price_cache) {
        return Some(price);
    }
    match client
        .client
        .describe_renewal_price(
            &item.region,
            &item.instance_id,
            item.seed.period,
            item.seed.unit,
        )
        .await
    {
        Ok(quote) => {
            memory.remember_price(key.0, key.1, key.2, &quote.trade_price, now);
            Some(quote.trade_price)
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
/// balance afresh and ends the backoff of those it now covers (earliest expiry first, at the
/// price the forecast last quoted; one without a quote waits out its backoff), so this pass
/// retries them. The forecast reuses the balance read here unless the pass charged the account
/// (then it reads it again, after the charges).
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
        // The forecast reuses it unless this pass charges the account (then it asks again).
        let view = ask_balance(account, client).await;
        memory.remember_balance(&account.name, now, view.clone());
        let BalanceView::Known(available) = view else {
            continue;
        };
        let mut left = available.cents;
        let mut retried = Vec::new();
        for hold in held {
            let Some(price) = memory.latest_price(&hold.instance_id) else {
                continue;
            };
            if price.currency == available.currency && price.cents <= left {
                left -= price.cents;
                retried.push(hold.instance_id.clone());
            }
        }
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
