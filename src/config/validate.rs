//! From TOML text to a checked `Config`: serde errors become located problems (key path from
//! serde_path_to_error, line and column from toml's spans); then every cross-key rule is
//! checked and all problems are reported together.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use super::schema::{AccountSection, ActionKind, ConfigFile, PolicySection};
use super::{
    Account, AdminSettings, Config, ConfigError, FundsSettings, Limits, Problem, RetrySettings,
    Scan,
};
use crate::cloud::credentials::{Environment, SourceKind};
use crate::cloud::ecs::AutoRenewTarget;
use crate::cloud::endpoint::Endpoint;
use crate::cloud::periods::{self, PeriodRule, Site};
use crate::cloud::types::{PeriodUnit, RenewalStatus};
use crate::money::Money;
use crate::policy::{Fallback, Matcher, Policy, PolicyAction};

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// Collects problems against one file.
struct Report<'a> {
    text: &'a str,
    path: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Report<'_> {
    fn problem(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        message: String,
        hint: &str,
    ) -> Problem {
        let (line, column) = span.map(|s| line_col(self.text, s.start)).unwrap_or((0, 0));
        Problem {
            file: self.path.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message,
            hint: hint.to_owned(),
        }
    }

    fn error(&mut self, span: Option<Range<usize>>, key: &str, message: String, hint: &str) {
        let p = self.problem(span, key, message, hint);
        self.problems.push(p);
    }

    fn warn(&mut self, span: Option<Range<usize>>, key: &str, message: String, hint: &str) {
        let p = self.problem(span, key, message, hint);
        self.warnings.push(p);
    }
}

/// A hint for a serde message.
fn hint_for_serde(message: &str) -> &'static str {
    if message.starts_with("unknown field") {
        "check the spelling; config/example.toml lists every key"
    } else if message.starts_with("missing field") {
        "add the key; config/example.toml shows it"
    } else if message.starts_with("invalid type") {
        "check the value's type: numbers and booleans are written without quotes, durations and names with quotes"
    } else if message.contains("expected one of") {
        "use one of the listed values"
    } else {
        ""
    }
}

pub(super) fn parse_and_check(
    text: &str,
    path: &Path,
    env: &Environment,
) -> Result<Config, ConfigError> {
    let mut report = Report {
        text,
        path,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let (root, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in &syntax {
            report.error(
                e.span(),
                "",
                format!("not valid TOML: {}", e.message().trim()),
                "fix the syntax at this position",
            );
        }
        report.error(
            None,
            "",
            "the check stops at TOML syntax errors".into(),
            "fix the syntax and run check-config again to see any other problems",
        );
        return Err(ConfigError::Invalid {
            problems: report.problems,
        });
    }
    let collected = super::collect::deserialize(root);
    for problem in collected.problems {
        let hint = hint_for_serde(&problem.message);
        report.error(problem.span, &problem.key, problem.message, hint);
    }
    let Some(file) = collected.file else {
        report.error(
            None,
            "",
            "the rules between keys were not checked: the file could not be read far enough".into(),
            "fix the problems above and run check-config again",
        );
        return Err(ConfigError::Invalid {
            problems: in_file_order(report.problems),
        });
    };
    let serde_found = report.problems.len();
    match check(file, &mut report, env) {
        Ok(config) => Ok(config),
        Err(ConfigError::Invalid { problems }) => {
            // The first problems are serde's; a cross-key problem about a key that was set
            // aside (or one inside or around it) would only echo it.
            let related = |key: &str| {
                collected.set_aside.iter().any(|aside| {
                    key == aside
                        || super::collect::is_within(key, aside)
                        || super::collect::is_within(aside, key)
                })
            };
            let kept = problems
                .into_iter()
                .enumerate()
                .filter(|(i, p)| *i < serde_found || !related(&p.key))
                .map(|(_, p)| p)
                .collect();
            Err(ConfigError::Invalid {
                problems: in_file_order(kept),
            })
        }
        Err(other) => Err(other),
    }
}

/// Problems sorted by where they are in the file; those without a place keep their order,
/// after the others.
fn in_file_order(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| {
        if p.line == 0 {
            (usize::MAX, 0)
        } else {
            (p.line, p.column)
        }
    });
    problems
}

fn duration_of(report: &mut Report, value: &toml::Spanned<String>, key: &str) -> Option<Duration> {
    match crate::duration::parse(value.get_ref()) {
        Ok(d) => Some(d),
        Err(e) => {
            report.error(Some(value.span()), key, e.to_string(), "");
            None
        }
    }
}

fn check(file: ConfigFile, report: &mut Report, env: &Environment) -> Result<Config, ConfigError> {
    let (state_dir, admin_listen) = check_daemon(&file, report, env);
    check_admin(&file.admin, report);
    check_scan(&file, report);
    let (accounts, names) = check_accounts(&file, report);
    let limits = check_limits(&file, report);
    check_retry(&file, report);
    let retry = &file.retry;
    let policies = check_policies(&file, &accounts, &names, &limits, report);
    check_funds_reach(&file, &accounts, &policies, report);

    if !report.problems.is_empty() {
        return Err(ConfigError::Invalid {
            problems: std::mem::take(&mut report.problems),
        });
    }
    Ok(Config {
        path: report.path.to_owned(),
        schedule: file.daemon.schedule.clone(),
        timezone: file.daemon.timezone.0,
        jitter: file.daemon.jitter,
        state_dir,
        dry_run: file.daemon.dry_run,
        shutdown_grace: file.daemon.shutdown_grace,
        admin_listen,
        admin: AdminSettings {
            bearer_token_file: file.admin.bearer_token_file.clone(),
            header_read_timeout: file.admin.header_read_timeout,
            write_timeout: file.admin.write_timeout,
            answer_timeout: file.admin.answer_timeout,
            max_connections: file.admin.max_connections,
            max_status_requests: file.admin.max_status_requests,
        },
        scan: Scan {
            regions: file.scan.regions.clone(),
            home_region: file.scan.home_region.clone(),
            horizon: file.scan.horizon,
            grace: file.scan.grace,
            concurrency: file.scan.concurrency,
            skip_tag: file.scan.skip_tag.clone(),
            release_after: file.scan.release_after,
        },
        accounts,
        limits,
        retry: RetrySettings {
            backoff_floor: retry.backoff_floor,
            backoff_ceiling: retry.backoff_ceiling,
            attempts_before_deadline: retry.attempts_before_deadline,
            verify_timeout: retry.verify_timeout,
            verify_interval: retry.verify_interval,
        },
        funds: FundsSettings {
            enabled: file.funds.enabled,
            horizon: file.funds.horizon,
            balance_interval: file.funds.balance_interval,
            price_cache: file.funds.price_cache,
        },
        policies,
        warnings: std::mem::take(&mut report.warnings),
    })
}

/// `[daemon]`, and the state directory and admin address the environment may override.
fn check_daemon(
    file: &ConfigFile,
    report: &mut Report,
    env: &Environment,
) -> (std::path::PathBuf, std::net::SocketAddr) {
    if has_day_of_month_and_week(&file.daemon.schedule.text) {
        report.warn(
            None,
            "daemon.schedule",
            format!("{:?} restricts both day of month and day of week; they combine with AND, not cron's usual OR", file.daemon.schedule.text),
            "restrict only one of the two",
        );
    }
    let state_dir = env
        .get("ECS_RENEWD_STATE_DIR")
        .map(Into::into)
        .unwrap_or_else(|| file.daemon.state_dir.clone());
    let admin_listen = match env.get("ECS_RENEWD_ADMIN_LISTEN") {
        None => file.admin.listen,
        Some(text) => match text.parse() {
            Ok(addr) => addr,
            Err(_) => {
                report.error(
                    None,
                    "ECS_RENEWD_ADMIN_LISTEN",
                    format!("{text:?} is not an address"),
                    "write HOST:PORT, e.g. 0.0.0.0:9469",
                );
                file.admin.listen
            }
        },
    };
    (state_dir, admin_listen)
}

/// `[scan]`.
fn check_scan(file: &ConfigFile, report: &mut Report) {
    if file.scan.concurrency == 0 {
        report.error(None, "scan.concurrency", "must be at least 1".into(), "");
    }
    if file.scan.horizon.is_zero() {
        report.error(
            None,
            "scan.horizon",
            "must be longer than zero".into(),
            "e.g. \"30d\"",
        );
    }
}

/// `[[accounts]]`: each compiled, and the set of their names.
fn check_accounts(file: &ConfigFile, report: &mut Report) -> (Vec<Account>, HashSet<String>) {
    if file.accounts.is_empty() {
        report.error(
            None,
            "accounts",
            "no [[accounts]]: there is nothing to scan".into(),
            "add an [[accounts]] table with a name and credentials",
        );
    }
    let mut accounts = Vec::new();
    let mut names = HashSet::new();
    for (i, section) in file.accounts.iter().enumerate() {
        let key = format!("accounts[{i}]");
        check_account_name(section, &key, &mut names, report);
        accounts.push(compile_account(section, &key, file, report));
    }
    (accounts, names)
}

/// An account's name: usable characters, and not taken by an earlier account (it is added to
/// `names`).
fn check_account_name(
    section: &AccountSection,
    key: &str,
    names: &mut HashSet<String>,
    report: &mut Report,
) {
    let name = section.name.get_ref().clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        report.error(
            Some(section.name.span()),
            &format!("{key}.name"),
            format!("{name:?} is not a usable account name"),
            "use letters, digits, '-', '_' or '.'",
        );
    }
    if !names.insert(name.clone()) {
        report.error(
            Some(section.name.span()),
            &format!("{key}.name"),
            format!("account {name:?} is defined twice"),
            "give each account its own name",
        );
    }
}

/// One `[[accounts]]` entry compiled: its endpoint, credentials, currency and rate limit
/// checked, problems reported.
fn compile_account(
    section: &AccountSection,
    key: &str,
    file: &ConfigFile,
    report: &mut Report,
) -> Account {
    let endpoint = account_endpoint(section, key, report);
    check_credentials(section, key, report);
    let currency = account_currency(section, key, report);
    if section.rate_limit.per_second <= 0.0 || section.rate_limit.burst == 0 {
        report.error(
            None,
            &format!("{key}.rate_limit"),
            "per_second must be above 0 and burst at least 1".into(),
            "",
        );
    }
    Account {
        name: section.name.get_ref().clone(),
        credentials: section.credentials.clone(),
        endpoint,
        site: section.site,
        deduction_schedule: section
            .deduction_schedule
            .unwrap_or_else(|| crate::policy::DeductionSchedule::for_site(section.site)),
        funds_enabled: section.funds.enabled,
        currency,
        location: line_col(report.text, section.name.span().start),
        regions: section
            .regions
            .clone()
            .unwrap_or_else(|| file.scan.regions.clone()),
        rate_limit: section.rate_limit.clone(),
        call_retry: section.call_retry.clone(),
        read_timeouts: section
            .read_timeouts
            .iter()
            .map(|(action, t)| (*action, t.0))
            .collect(),
    }
}

/// An account's endpoint: public when not given, and public (with a problem reported) when
/// it cannot be parsed.
fn account_endpoint(section: &AccountSection, key: &str, report: &mut Report) -> Endpoint {
    match &section.endpoint {
        None => Endpoint::Public,
        Some(text) => match Endpoint::parse(text.get_ref()) {
            Ok(e) => e,
            Err(e) => {
                report.error(
                    Some(text.span()),
                    &format!("{key}.endpoint"),
                    e.to_string(),
                    "write \"public\", \"vpc\" or an https:// URL",
                );
                Endpoint::Public
            }
        },
    }
}

/// An account's credentials: a secret file with its key ID, and a usable metadata URL.
fn check_credentials(section: &AccountSection, key: &str, report: &mut Report) {
    let credentials = &section.credentials;
    if credentials.source == SourceKind::File && credentials.access_key_secret_file.is_none() {
        report.error(
            Some(section.name.span()),
            &format!("{key}.credentials"),
            "source = \"file\" needs access_key_id and access_key_secret_file".into(),
            "point access_key_secret_file at a file holding only the secret (mode 600)",
        );
    }
    if credentials.access_key_secret_file.is_some()
        && credentials
            .access_key_id
            .as_deref()
            .is_none_or(str::is_empty)
    {
        report.error(
            Some(section.name.span()),
            &format!("{key}.credentials.access_key_id"),
            "access_key_secret_file is set but access_key_id is not".into(),
            "add access_key_id (the ID is not a secret)",
        );
    }
    if let Err(why) = crate::cloud::credentials::check_metadata_url(&credentials.metadata_url) {
        report.error(
            Some(section.name.span()),
            &format!("{key}.credentials.metadata_url"),
            why,
            "leave it unset (http://100.100.100.200 is the service on every ECS instance)",
        );
    }
}

/// An account's billing currency: the one given (a problem reported if it is not a currency
/// code), else the site's default (CNY on the China site, USD on the international site).
fn account_currency(section: &AccountSection, key: &str, report: &mut Report) -> String {
    match &section.currency {
        None => match section.site {
            Site::China => "CNY".to_owned(),
            Site::International => "USD".to_owned(),
        },
        Some(code) => {
            if !is_currency_code(code.get_ref()) {
                report.error(
                    Some(code.span()),
                    &format!("{key}.currency"),
                    format!("{:?} is not a currency code", code.get_ref()),
                    "use the code ECS quotes prices in, e.g. CNY or USD",
                );
            }
            code.get_ref().clone()
        }
    }
}

/// `[limits]`: the safety belts, spend limits in cents per currency.
fn check_limits(file: &ConfigFile, report: &mut Report) -> Limits {
    let mut cents = |map: &BTreeMap<String, f64>, key: &str| -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for (currency, amount) in map {
            if !(amount.is_finite() && *amount > 0.0) {
                report.error(
                    None,
                    &format!("limits.{key}.{currency}"),
                    format!("{amount} is not a positive amount"),
                    "",
                );
            }
            if !is_currency_code(currency) {
                report.error(
                    None,
                    &format!("limits.{key}.{currency}"),
                    format!("{currency:?} is not a currency code"),
                    "use the code ECS reports, e.g. CNY or USD",
                );
            }
            out.insert(currency.clone(), (amount * 100.0).round() as i64);
        }
        out
    };
    let limits = Limits {
        max_renewals_per_run: file.limits.max_renewals_per_run,
        max_renewals_per_day: file.limits.max_renewals_per_day,
        max_spend_per_run: cents(&file.limits.max_spend_per_run, "max_spend_per_run"),
        max_spend_per_day: cents(&file.limits.max_spend_per_day, "max_spend_per_day"),
        max_fleet_share_per_run: file.limits.max_fleet_share_per_run,
        max_auto_renew_enables_per_run: file.limits.max_auto_renew_enables_per_run,
    };
    if !(limits.max_fleet_share_per_run > 0.0 && limits.max_fleet_share_per_run <= 1.0) {
        report.error(
            None,
            "limits.max_fleet_share_per_run",
            format!("{} is not in (0, 1]", limits.max_fleet_share_per_run),
            "1.0 turns the belt off",
        );
    }
    limits
}

/// `[retry]`: the persisted backoff and the verification bounds.
fn check_retry(file: &ConfigFile, report: &mut Report) {
    let retry = &file.retry;
    if retry.backoff_floor.is_zero() || retry.backoff_floor > retry.backoff_ceiling {
        report.error(
            None,
            "retry.backoff_floor",
            format!(
                "{} must be above zero and at most backoff_ceiling ({})",
                crate::duration::format(retry.backoff_floor),
                crate::duration::format(retry.backoff_ceiling)
            ),
            "",
        );
    }
    if retry.attempts_before_deadline == 0 {
        report.error(
            None,
            "retry.attempts_before_deadline",
            "must be at least 1".into(),
            "",
        );
    }
    if retry.verify_interval.is_zero() || retry.verify_interval > retry.verify_timeout {
        report.error(
            None,
            "retry.verify_interval",
            "must be above zero and at most verify_timeout".into(),
            "",
        );
    }
}

/// `[[policies]]`: each compiled against the accounts it covers, in order (first match wins).
fn check_policies(
    file: &ConfigFile,
    accounts: &[Account],
    names: &HashSet<String>,
    limits: &Limits,
    report: &mut Report,
) -> Vec<crate::policy::Policy> {
    let mut policies = Vec::new();
    let mut policy_names = HashSet::new();
    let mut catch_all: Option<String> = None;
    for (i, section) in file.policies.iter().enumerate() {
        let key = format!("policies[{i}]");
        let name = section.name.get_ref().clone();
        if !policy_names.insert(name.clone()) {
            report.error(
                Some(section.name.span()),
                &format!("{key}.name"),
                format!("policy {name:?} is defined twice"),
                "policy names label metrics and must be unique",
            );
        }
        if let Some(earlier) = &catch_all {
            report.warn(Some(section.name.span()), &key, format!("policy {name:?} can never match: policy {earlier:?} before it matches every instance"), "first match wins: move the catch-all last or give it a [policies.match]");
        }
        for account in &section.matcher.accounts {
            if !names.contains(account) {
                report.error(
                    Some(section.name.span()),
                    &format!("{key}.match.accounts"),
                    format!("no account is named {account:?}"),
                    "use a name from [[accounts]]",
                );
            }
        }
        let covered = PolicyAccounts {
            site: policy_site(section, accounts),
            currencies: policy_currencies(section, accounts),
        };
        if let Some(policy) = compile_policy(section, &key, &covered, file, limits, report) {
            if policy.matcher.matches_everything() {
                catch_all.get_or_insert(name.clone());
            }
            policies.push(policy);
        }
    }
    if policies.is_empty() && !file.accounts.is_empty() {
        report.warn(
            None,
            "policies",
            "no [[policies]]: every instance is only observed".into(),
            "add a policy with action = \"renew\" or \"auto-renew\"",
        );
    }
    policies
}

/// Whether `[scan] horizon` lists every instance whose charge the funds forecast must count. A
/// charge in the forecast's window (to the next 08:00 UTC+8, plus `[funds] horizon`) can belong
/// to an instance expiring as far past the window as the longest lead before an expiry: an
/// account's first provider deduction, or a `renew` policy's `renew_before`. An instance the
/// scan does not list is not forecast, so a short scan would make a short account look covered.
fn check_funds_reach(
    file: &ConfigFile,
    accounts: &[Account],
    policies: &[Policy],
    report: &mut Report,
) {
    if !file.funds.enabled {
        return;
    }
    let human = crate::duration::format;
    let schedules = accounts.iter().map(|a| {
        let lead = a
            .deduction_schedule
            .longest_lead()
            .to_std()
            .unwrap_or_default();
        let why = format!(
            "account {:?}: the provider's first auto-renew deduction comes up to {} before the expiry",
            a.name,
            human(lead)
        );
        (lead, why)
    });
    let renewals = policies.iter().filter_map(|p| match &p.action {
        PolicyAction::Renew { renew_before, .. } => Some((
            *renew_before,
            format!("policy {:?}: renew_before {}", p.name, human(*renew_before)),
        )),
        _ => None,
    });
    let Some((lead, why)) = schedules.chain(renewals).max_by_key(|(lead, _)| *lead) else {
        return;
    };
    let window = file.funds.horizon + Duration::from_secs(86_400);
    let reach = window + lead;
    if file.scan.horizon >= reach {
        return;
    }
    report.warn(
        None,
        "scan.horizon",
        format!(
            "the funds forecast counts charges up to {} ahead, for instances expiring up to {} ahead ({why}), but [scan] horizon ({}) lists only instances expiring within {}: their charges would be left out and the forecast would say covered when it is not",
            human(window),
            human(reach),
            human(file.scan.horizon),
            human(file.scan.horizon)
        ),
        &format!(
            "raise [scan] horizon to {} or more, or shorten [funds] horizon",
            human(reach)
        ),
    );
}

/// `[admin]`: limits that leave the server usable.
fn check_admin(admin: &super::schema::AdminSection, report: &mut Report) {
    for (key, value) in [
        ("admin.header_read_timeout", admin.header_read_timeout),
        ("admin.write_timeout", admin.write_timeout),
        ("admin.answer_timeout", admin.answer_timeout),
    ] {
        if value < Duration::from_secs(1) || value > Duration::from_secs(3600) {
            report.error(
                None,
                key,
                format!("{} is outside 1s to 1h", crate::duration::format(value)),
                "the defaults are 10s, 30s and 2m",
            );
        }
    }
    if admin.max_connections < 4 {
        report.error(
            None,
            "admin.max_connections",
            format!(
                "{} leaves no room for probes beside a scrape",
                admin.max_connections
            ),
            "use at least 4; the default is 64",
        );
    }
    if admin.max_status_requests == 0 {
        report.error(
            None,
            "admin.max_status_requests",
            "0 would refuse every /status request".into(),
            "use at least 1; the default is 2",
        );
    }
}

/// The site whose period rules a policy is checked against: its accounts' site when they agree,
/// else the China site (the more permissive).
fn policy_site(section: &PolicySection, accounts: &[Account]) -> Site {
    let sites: HashSet<Site> = accounts
        .iter()
        .filter(|a| {
            section.matcher.accounts.is_empty() || section.matcher.accounts.contains(&a.name)
        })
        .map(|a| a.site)
        .collect();
    if sites.len() == 1 {
        *sites.iter().next().expect("one element")
    } else {
        Site::China
    }
}

/// The billing currencies of the accounts a policy covers (a bare-number `max_price` must
/// name one currency).
fn policy_currencies(section: &PolicySection, accounts: &[Account]) -> Vec<String> {
    let mut currencies: Vec<String> = accounts
        .iter()
        .filter(|a| {
            section.matcher.accounts.is_empty() || section.matcher.accounts.contains(&a.name)
        })
        .map(|a| a.currency.clone())
        .collect();
    currencies.sort();
    currencies.dedup();
    currencies
}

fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// What a policy's checks need to know of the accounts it covers.
struct PolicyAccounts {
    site: Site,
    currencies: Vec<String>,
}

/// A `max_price` as money: a bare number in the covered accounts' one billing currency, or an
/// amount with its currency.
fn max_price_of(
    report: &mut Report,
    value: &toml::Spanned<super::schema::PriceLimit>,
    key: &str,
    currencies: &[String],
) -> Option<Money> {
    use super::schema::PriceLimit;
    let span = Some(value.span());
    let (amount, currency) = match value.get_ref() {
        PriceLimit::Number(amount) => match currencies {
            [one] => (*amount, one.clone()),
            _ => {
                report.error(
                    span,
                    key,
                    format!(
                        "a bare number, but the accounts this policy covers are billed in {}",
                        if currencies.is_empty() {
                            "no known currency".to_owned()
                        } else {
                            currencies.join(" and ")
                        }
                    ),
                    "write the amount with its currency, e.g. max_price = \"300 CNY\"",
                );
                return None;
            }
        },
        PriceLimit::Text(text) => {
            let parsed = text.split_once(' ').and_then(|(amount, currency)| {
                Some((
                    amount.trim().parse::<f64>().ok()?,
                    currency.trim().to_owned(),
                ))
            });
            match parsed {
                Some((amount, currency)) if is_currency_code(&currency) => (amount, currency),
                _ => {
                    report.error(
                        span,
                        key,
                        format!("{text:?} is not an amount with a currency"),
                        "write e.g. \"300 CNY\" or \"12.50 USD\"",
                    );
                    return None;
                }
            }
        }
    };
    if !(amount.is_finite() && amount > 0.0) {
        report.error(span, key, format!("{amount} is not a positive price"), "");
        return None;
    }
    Some(Money {
        cents: (amount * 100.0).round() as i64,
        currency,
    })
}

/// The shortest a renewal of `period` × `unit` can extend an expiry by.
fn shortest_length(period: u32, unit: PeriodUnit) -> Duration {
    let days = match unit {
        PeriodUnit::Week => 7,
        PeriodUnit::Month => 28,
        PeriodUnit::Year => 365,
    };
    Duration::from_secs(u64::from(period) * days * 86_400)
}

fn has_day_of_month_and_week(schedule: &str) -> bool {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    fields.len() == 6
        && fields[3] != "*"
        && fields[3] != "?"
        && fields[5] != "*"
        && fields[5] != "?"
}

/// Keys that belong to some actions only.
const ACTION_KEYS: &[(&str, &[ActionKind])] = &[
    ("period", &[ActionKind::Renew]),
    ("renew_before", &[ActionKind::Renew]),
    ("keep_auto_renew", &[ActionKind::Renew]),
    ("duration", &[ActionKind::AutoRenew]),
    ("fallback_renew", &[ActionKind::AutoRenew]),
    ("fallback_after", &[ActionKind::AutoRenew]),
    ("period_unit", &[ActionKind::Renew, ActionKind::AutoRenew]),
    ("max_price", &[ActionKind::Renew, ActionKind::AutoRenew]),
    (
        "override_not_renewal",
        &[ActionKind::Renew, ActionKind::AutoRenew],
    ),
];

fn check_period(
    report: &mut Report,
    rule: &PeriodRule,
    value: u32,
    unit: PeriodUnit,
    span: Range<usize>,
    key: &str,
    what: &str,
) -> bool {
    if rule.allows(value, unit) {
        return true;
    }
    let hint = format!("allowed {what} values: {}", rule.describe());
    report.error(
        Some(span),
        key,
        format!("{value} {unit} is not an allowed {what}"),
        &hint,
    );
    false
}

/// One `[[policies]]` entry compiled: its keys checked against its action, its matcher and
/// action compiled; `None` when any of it is wrong (every problem is reported).
fn compile_policy(
    section: &PolicySection,
    key: &str,
    covered: &PolicyAccounts,
    file: &ConfigFile,
    limits: &Limits,
    report: &mut Report,
) -> Option<Policy> {
    let name = section.name.get_ref().clone();
    let mut ok = check_action_keys(section, key, report);
    let matcher = compile_matcher(section, key, report)?;
    let compiled = compile_action(section, key, covered, file, limits, report);
    ok &= compiled.ok;
    let override_not_renewal = section
        .override_not_renewal
        .as_ref()
        .map(|b| *b.get_ref())
        .unwrap_or(false);
    ok.then_some(Policy {
        name,
        matcher,
        action: compiled.action,
        override_not_renewal,
    })
}

/// Where each action-specific key is written in a policy entry (`None`: not given), in the
/// order their problems are reported.
fn action_key_spans(section: &PolicySection) -> Vec<(&'static str, Option<Range<usize>>)> {
    vec![
        ("period", section.period.as_ref().map(|s| s.span())),
        (
            "renew_before",
            section.renew_before.as_ref().map(|s| s.span()),
        ),
        (
            "keep_auto_renew",
            section.keep_auto_renew.as_ref().map(|s| s.span()),
        ),
        ("duration", section.duration.as_ref().map(|s| s.span())),
        (
            "fallback_renew",
            section.fallback_renew.as_ref().map(|s| s.span()),
        ),
        (
            "fallback_after",
            section.fallback_after.as_ref().map(|s| s.span()),
        ),
        (
            "period_unit",
            section.period_unit.as_ref().map(|s| s.span()),
        ),
        ("max_price", section.max_price.as_ref().map(|s| s.span())),
        (
            "override_not_renewal",
            section.override_not_renewal.as_ref().map(|s| s.span()),
        ),
    ]
}

/// Reports each key a policy entry sets that its action does not use; whether there was none.
fn check_action_keys(section: &PolicySection, key: &str, report: &mut Report) -> bool {
    let mut ok = true;
    for (field, span) in action_key_spans(section) {
        let Some(span) = span else { continue };
        let allowed = ACTION_KEYS
            .iter()
            .find(|(k, _)| *k == field)
            .map(|(_, a)| *a)
            .unwrap_or(&[]);
        if !allowed.contains(&section.action) {
            let names: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
            report.error(
                Some(span),
                &format!("{key}.{field}"),
                format!(
                    "{field} does not apply to action {:?}",
                    section.action.as_str()
                ),
                &format!("{field} belongs to action {}", names.join(" or ")),
            );
            ok = false;
        }
    }
    ok
}

/// A policy's `[policies.match]` compiled; `None` (with the problem reported) when its name
/// glob is invalid.
fn compile_matcher(section: &PolicySection, key: &str, report: &mut Report) -> Option<Matcher> {
    match Matcher::compile(&section.matcher) {
        Ok(m) => Some(m),
        Err(message) => {
            let span = section.matcher.name.as_ref().map(|n| n.span());
            report.error(
                span,
                &format!("{key}.match.name"),
                message,
                "a glob uses *, ? and [...]",
            );
            None
        }
    }
}

/// A policy's compiled action, and whether every value it took was fine.
struct CompiledAction {
    action: PolicyAction,
    ok: bool,
}

/// A policy's action compiled from its entry: the period unit, `max_price` and the keys of
/// the action itself.
fn compile_action(
    section: &PolicySection,
    key: &str,
    covered: &PolicyAccounts,
    file: &ConfigFile,
    limits: &Limits,
    report: &mut Report,
) -> CompiledAction {
    let mut ok = true;
    let unit = section
        .period_unit
        .as_ref()
        .map(|u| *u.get_ref())
        .unwrap_or(PeriodUnit::Month);
    let unit_span = section
        .period_unit
        .as_ref()
        .map(|u| u.span())
        .unwrap_or(section.name.span());
    let max_price = match &section.max_price {
        None => None,
        Some(value) => {
            let price = max_price_of(
                report,
                value,
                &format!("{key}.max_price"),
                &covered.currencies,
            );
            ok &= price.is_some();
            price
        }
    };
    let input = ActionInput {
        section,
        key,
        unit,
        unit_span,
        site: covered.site,
        max_price,
    };
    let (action, fine) = match section.action {
        ActionKind::Renew => compile_renew(input, file, limits, report),
        ActionKind::AutoRenew => compile_auto_renew(input, report),
        ActionKind::NotRenewal => (PolicyAction::NotRenewal, true),
        ActionKind::Observe => (PolicyAction::Observe, true),
        ActionKind::Skip => (PolicyAction::Skip, true),
    };
    CompiledAction {
        action,
        ok: ok && fine,
    }
}

/// What compiling a policy's action needs from the rest of its entry.
struct ActionInput<'a> {
    section: &'a PolicySection,
    key: &'a str,
    unit: PeriodUnit,
    unit_span: Range<usize>,
    site: Site,
    max_price: Option<Money>,
}

/// A policy's period or duration and where it is written: 1 (the default) at the unit's place
/// when it is not given.
fn length_or_one(
    value: &Option<toml::Spanned<u32>>,
    unit_span: &Range<usize>,
) -> (u32, Range<usize>) {
    value
        .as_ref()
        .map_or((1, unit_span.clone()), |v| (*v.get_ref(), v.span()))
}

/// `action = "renew"`: the period, `renew_before` (shorter than the period), the auto-renew
/// state to keep; whether every value was fine.
fn compile_renew(
    input: ActionInput<'_>,
    file: &ConfigFile,
    limits: &Limits,
    report: &mut Report,
) -> (PolicyAction, bool) {
    let ActionInput {
        section,
        key,
        unit,
        unit_span,
        site,
        max_price,
    } = input;
    let mut ok = true;
    let (period, period_span) = length_or_one(&section.period, &unit_span);
    let period_ok = check_period(
        report,
        &periods::renew_rule(site),
        period,
        unit,
        period_span.clone(),
        &format!("{key}.period"),
        "renewal period",
    );
    ok &= period_ok;
    let renew_before = match &section.renew_before {
        None => Duration::from_secs(7 * 86_400),
        Some(text) => duration_of(report, text, &format!("{key}.renew_before")).unwrap_or_default(),
    };
    let shortest = shortest_length(period, unit);
    if period_ok && renew_before >= shortest {
        report.error(
            section.renew_before.as_ref().map(|r| r.span()).or(Some(period_span.clone())),
            &format!("{key}.renew_before"),
            format!(
                "renew_before ({}) is not shorter than the period ({period} {unit}, {} at the least): each renewal would leave the instance due again, and it would be renewed on every pass",
                crate::duration::format(renew_before),
                crate::duration::format(shortest)
            ),
            "shorten renew_before below the period, or renew for longer",
        );
        ok = false;
    }
    if renew_before > file.scan.horizon {
        report.warn(
            section.renew_before.as_ref().map(|r| r.span()),
            &format!("{key}.renew_before"),
            format!("renew_before ({}) reaches beyond [scan] horizon ({}): instances are only seen {} before expiry", crate::duration::format(renew_before), crate::duration::format(file.scan.horizon), crate::duration::format(file.scan.horizon)),
            "raise [scan] horizon or shorten renew_before",
        );
    }
    if limits.has_spend_limits() && periods::price_query_for(period, unit).is_none() {
        report.warn(Some(period_span), &format!("{key}.period"), format!("{period} {unit} cannot be priced by DescribeRenewalPrice, so spend limits will hold these renewals"), "use a period of 1-9 months or whole years");
    }
    let keep_auto_renew = match &section.keep_auto_renew {
        None => None,
        Some(keep) => {
            let k = *keep.get_ref();
            if k.status == RenewalStatus::AutoRenewal {
                ok &= check_period(
                    report,
                    &periods::auto_renew_rule(site),
                    k.duration,
                    k.period_unit,
                    keep.span(),
                    &format!("{key}.keep_auto_renew"),
                    "auto-renew duration",
                );
            }
            Some(AutoRenewTarget {
                status: k.status,
                duration: k.duration,
                unit: k.period_unit,
            })
        }
    };
    let action = PolicyAction::Renew {
        period,
        unit,
        renew_before,
        max_price,
        keep_auto_renew,
    };
    (action, ok)
}

/// `action = "auto-renew"`: the duration and the optional fallback renewal; whether every
/// value was fine.
fn compile_auto_renew(input: ActionInput<'_>, report: &mut Report) -> (PolicyAction, bool) {
    let ActionInput {
        section,
        key,
        unit,
        unit_span,
        site,
        max_price,
    } = input;
    let mut ok = true;
    let (duration, duration_span) = length_or_one(&section.duration, &unit_span);
    ok &= check_period(
        report,
        &periods::auto_renew_rule(site),
        duration,
        unit,
        duration_span.clone(),
        &format!("{key}.duration"),
        "auto-renew duration",
    );
    let fallback_renew = section
        .fallback_renew
        .as_ref()
        .map(|b| *b.get_ref())
        .unwrap_or(false);
    let after = match &section.fallback_after {
        None => Duration::from_secs(86_400),
        Some(text) => {
            duration_of(report, text, &format!("{key}.fallback_after")).unwrap_or_default()
        }
    };
    let fallback = if fallback_renew {
        // RenewInstance takes Week or Month: years become months.
        let (renew_period, renew_unit) = match unit {
            PeriodUnit::Year => (duration * 12, PeriodUnit::Month),
            other => (duration, other),
        };
        ok &= check_period(
            report,
            &periods::renew_rule(site),
            renew_period,
            renew_unit,
            duration_span,
            &format!("{key}.duration"),
            "renewal period (fallback_renew renews the same length)",
        );
        Some(Fallback {
            after,
            period: renew_period,
            unit: renew_unit,
            max_price,
        })
    } else {
        None
    };
    let action = PolicyAction::AutoRenew {
        target: AutoRenewTarget {
            status: RenewalStatus::AutoRenewal,
            duration,
            unit,
        },
        fallback,
    };
    (action, ok)
}
