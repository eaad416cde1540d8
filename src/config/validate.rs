//! From TOML text to a checked `Config`: serde errors become located problems (key path from
//! serde_path_to_error, line and column from toml's spans); then every section and every rule
//! between keys is checked (the sections compiled by `compile`), and all problems are reported
//! together.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::compile::{
    PolicyAccounts, compile_account, compile_policy, is_currency_code, policy_currencies,
    policy_site,
};
use super::report::{Report, hint_for_serde, in_file_order};
use super::schema::{AccountSection, ConfigFile, LedgerSection};
use super::{
    Account, AdminSettings, Config, ConfigError, FundsSettings, LedgerLocation, LedgerUrl, Limits,
    Readable, RetrySettings, Scan,
};
use crate::cloud::credentials::Environment;
use crate::policy::lease::HaTimings;
use crate::policy::{Policy, PolicyAction};

pub(super) fn parse_and_check(
    text: &str,
    path: &Path,
    env: &Environment,
) -> Result<Config, ConfigError> {
    check_text(text, path, env).0
}

/// The config, or every problem of the file; and either way the parts that read without a
/// problem (account entries, the admin token file), whose credentials `check-config` checks
/// too.
pub(super) fn check_text(
    text: &str,
    path: &Path,
    env: &Environment,
) -> (Result<Config, ConfigError>, Readable) {
    let mut report = Report {
        text,
        path,
        parsed: None,
        problems: Vec::new(),
        warnings: Vec::new(),
        readable: Readable::default(),
    };
    let result = check_report(&mut report, env);
    (result, report.readable)
}

/// Reads and checks the report's text.
fn check_report(report: &mut Report<'_>, env: &Environment) -> Result<Config, ConfigError> {
    let text = report.text;
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
            problems: std::mem::take(&mut report.problems),
        });
    }
    report.parsed = Some(root.get_ref().clone());
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
            problems: in_file_order(std::mem::take(&mut report.problems)),
        });
    };
    let serde_found = report.problems.len();
    let set_aside = collected.set_aside.clone();
    match check(file, report, env, &set_aside) {
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

fn check(
    file: ConfigFile,
    report: &mut Report,
    env: &Environment,
    set_aside: &[String],
) -> Result<Config, ConfigError> {
    let (state_dir, admin_listen) = check_daemon(&file, report, env);
    check_admin(&file.admin, report);
    check_scan(&file, report);
    let (accounts, mut names) = check_accounts(&file, report);
    let directories = super::directories::check_directories(&file, &mut names, report);
    let limits = check_limits(&file, report);
    check_retry(&file, report);
    let retry = &file.retry;
    let covered = covered_accounts(&accounts, &directories);
    let policies = check_policies(&file, &covered, &names, &limits, report);
    check_funds_reach(&file, &covered, &policies, report);
    let ledger = check_ledger(&file.ledger, report);
    let ha = check_ha(&file, &covered, report);

    report.readable = readable(&file, (&accounts, &directories), report, set_aside);
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
        directories,
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
            top_up_check_interval: file.funds.top_up_check_interval,
        },
        policies,
        ledger,
        ha,
        warnings: std::mem::take(&mut report.warnings),
    })
}

/// What policies, the forecast's reach and the lease's timings are checked against: the
/// accounts, and each directory as one account (its members' settings), named as policies
/// name all its members.
fn covered_accounts(accounts: &[Account], directories: &[super::Directory]) -> Vec<Account> {
    accounts
        .iter()
        .chain(directories.iter().map(|d| &d.template))
        .cloned()
        .collect()
}

/// The parts that read without a problem: the account entries none of whose keys has one (or
/// was set aside), and the admin token file unless its key has one.
fn readable(
    file: &ConfigFile,
    (accounts, directories): (&[Account], &[super::Directory]),
    report: &Report,
    set_aside: &[String],
) -> Readable {
    let troubled = |key: &str| {
        report
            .problems
            .iter()
            .map(|p| p.key.as_str())
            .chain(set_aside.iter().map(String::as_str))
            .any(|k| k == key || super::collect::is_within(k, key))
    };
    Readable {
        accounts: accounts
            .iter()
            .enumerate()
            .filter(|(i, _)| !troubled(&format!("accounts[{i}]")))
            .map(|(i, a)| (i, a.clone()))
            .collect(),
        directories: directories
            .iter()
            .enumerate()
            .filter(|(i, _)| !troubled(&format!("directories[{i}]")))
            .map(|(i, d)| (i, d.clone()))
            .collect(),
        bearer_token_file: file
            .admin
            .bearer_token_file
            .clone()
            .filter(|_| !troubled("admin.bearer_token_file")),
    }
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

/// `[ledger]`: a PostgreSQL ledger needs one URL (inline or in a file) that parses; a SQLite
/// one takes none.
fn check_ledger(section: &LedgerSection, report: &mut Report) -> LedgerLocation {
    use crate::config::schema::Backend;
    let url = match (&section.url, &section.url_file) {
        (Some(url), Some(_)) => {
            report.error(
                Some(url.span()),
                "ledger.url",
                "both url and url_file are set".into(),
                "keep one: url_file when the URL holds a password",
            );
            None
        }
        // The parser's error names the key it could not read, never a value (a password).
        (Some(url), None) => match crate::pg_url::split(url.get_ref()).and_then(|(rest, _)| {
            rest.parse::<tokio_postgres::Config>()
                .map_err(|e| e.to_string())
        }) {
            Ok(_) => Some(LedgerUrl::Inline(crate::secret::Secret::new(
                url.get_ref().clone(),
            ))),
            Err(error) => {
                report.error(
                    Some(url.span()),
                    "ledger.url",
                    format!("the database URL does not parse: {error}"),
                    "give libpq key=value pairs (host=/run/postgresql dbname=ecs_renewd user=ecs_renewd) or a postgresql:// URI",
                );
                None
            }
        },
        (None, Some(file)) => Some(LedgerUrl::File(file.get_ref().clone())),
        (None, None) => None,
    };
    if section.pool_size == 0 || section.pool_size > 64 {
        report.error(
            None,
            "ledger.pool_size",
            format!("{} connections", section.pool_size),
            "set 1 to 64 (default 4)",
        );
    }
    match (section.backend, url) {
        (Backend::Sqlite, None) => LedgerLocation::Sqlite,
        (Backend::Sqlite, Some(_)) => {
            report.error(
                None,
                "ledger.backend",
                "a database URL is set but the backend is sqlite".into(),
                "set backend = \"postgres\", or remove url / url_file",
            );
            LedgerLocation::Sqlite
        }
        (Backend::Postgres, Some(url)) => LedgerLocation::Postgres {
            url,
            pool_size: section.pool_size,
        },
        (Backend::Postgres, None) => {
            if section.url.is_none() && section.url_file.is_none() {
                report.error(
                    None,
                    "ledger.url",
                    "backend = \"postgres\" needs the database".into(),
                    "set url (libpq key=value or postgresql://) or url_file",
                );
            }
            LedgerLocation::Sqlite
        }
    }
}

/// `[ha]`: client-go's rules over the lease's timings, and a deadline longer than any
/// account's RenewInstance read timeout (a charge must be able to end before the term can).
fn check_ha(file: &ConfigFile, accounts: &[Account], report: &mut Report) -> HaTimings {
    let ha = HaTimings {
        lease_duration: file.ha.lease_duration,
        renew_deadline: file.ha.renew_deadline,
        retry_period: file.ha.retry_period,
    };
    let request = accounts
        .iter()
        .map(|a| {
            a.read_timeouts
                .iter()
                .find(|(action, _)| *action == crate::cloud::Action::RenewInstance)
                .map_or(
                    crate::cloud::Action::RenewInstance.default_read_timeout(),
                    |(_, t)| *t,
                )
        })
        .max()
        .unwrap_or(crate::cloud::Action::RenewInstance.default_read_timeout());
    if let Err(error) = ha.check(request) {
        report.error(
            None,
            "ha",
            error.to_string(),
            "keep lease_duration > renew_deadline > 1.2 × retry_period, and renew_deadline above the RenewInstance read timeout",
        );
    }
    ha
}

/// `[scan]`.
fn check_scan(file: &ConfigFile, report: &mut Report) {
    if file.scan.concurrency == 0 {
        report.error(
            None,
            "scan.concurrency",
            "must be at least 1".into(),
            "the number of sources scanned at once; the default is 10",
        );
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
    if file.accounts.is_empty() && file.directories.is_empty() {
        report.error(
            None,
            "accounts",
            "no [[accounts]] and no [[directories]]: there is nothing to scan".into(),
            "add an [[accounts]] table with a name and credentials (or a [[directories]] table)",
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
    if !is_usable_name(&name) {
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

/// Whether `name` can name an account or a directory: letters, digits, '-', '_' and '.' (a
/// directory's members add `/<AccountId>`, so no entry's name has a '/').
pub(super) fn is_usable_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
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
                    "write the most to spend as a positive number, e.g. { CNY = 5000.0 }; leave the key out for no limit",
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
            "the defaults are 5m and 6h; raise backoff_ceiling or lower backoff_floor",
        );
    }
    if retry.attempts_before_deadline == 0 {
        report.error(
            None,
            "retry.attempts_before_deadline",
            "must be at least 1".into(),
            "how many attempts must still fit before the deadline; the default is 3",
        );
    }
    if retry.verify_interval.is_zero() || retry.verify_interval > retry.verify_timeout {
        report.error(
            None,
            "retry.verify_interval",
            "must be above zero and at most verify_timeout".into(),
            "the defaults are 5s (interval) and 60s (timeout)",
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
            if !names.contains(account) && !is_directory_member(account, &file.directories) {
                report.error(
                    Some(section.name.span()),
                    &format!("{key}.match.accounts"),
                    format!("no account is named {account:?}"),
                    "use a name from [[accounts]], a [[directories]] name (all its members) or <directory>/<AccountId>",
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
    if policies.is_empty() && !(file.accounts.is_empty() && file.directories.is_empty()) {
        report.warn(
            None,
            "policies",
            "no [[policies]]: every instance is only observed".into(),
            "add a policy with action = \"renew\" or \"auto-renew\"",
        );
    }
    policies
}

/// Whether `name` is `<directory>/<AccountId>` for a configured directory.
fn is_directory_member(name: &str, directories: &[super::schema::DirectorySection]) -> bool {
    name.split_once('/').is_some_and(|(directory, id)| {
        directories.iter().any(|d| d.name.get_ref() == directory)
            && !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
    })
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

fn has_day_of_month_and_week(schedule: &str) -> bool {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    fields.len() == 6
        && fields[3] != "*"
        && fields[3] != "?"
        && fields[5] != "*"
        && fields[5] != "?"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(text: &str) -> Result<Config, Vec<String>> {
        let env = Environment::from_pairs([("X", "")]);
        parse_and_check(text, Path::new("t.toml"), &env).map_err(|e| match e {
            ConfigError::Invalid { problems } => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        })
    }

    #[test]
    fn the_ledger_and_lease_settings_are_checked_and_a_url_never_shown() {
        let base = "[[accounts]]\nname = \"a\"\n[accounts.credentials]\nsource = \"env\"\n[[policies]]\nname = \"p\"\naction = \"renew\"\n";
        let with = |extra: &str| check_text(&format!("{base}{extra}"));
        assert!(matches!(with("").unwrap().ledger, LedgerLocation::Sqlite));
        let shared = with(
            "[ledger]\nbackend = \"postgres\"\nurl = \"host=/run/postgresql password=hunter2\"\n",
        )
        .unwrap();
        assert!(matches!(
            shared.ledger,
            LedgerLocation::Postgres { pool_size: 4, .. }
        ));
        assert!(
            !format!("{shared:?}").contains("hunter2"),
            "the URL is a secret"
        );
        for (extra, key, says) in [
            (
                "[ledger]\nbackend = \"postgres\"\n",
                "ledger.url",
                "needs the database",
            ),
            (
                "[ledger]\nurl = \"host=/x\"\n",
                "ledger.backend",
                "backend is sqlite",
            ),
            (
                "[ledger]\nbackend = \"postgres\"\nurl = \"port=x password=hunter2\"\n",
                "ledger.url",
                "does not parse",
            ),
            (
                "[ledger]\nbackend = \"postgres\"\nurl = \"host=/x\"\nurl_file = \"/f\"\n",
                "ledger.url",
                "both",
            ),
            ("[ledger]\npool_size = 0\n", "ledger.pool_size", "1 to 64"),
            ("[ha]\nlease_duration = \"40s\"\n", "ha", "lease"),
            (
                "[ha]\nrenew_deadline = \"11s\"\nretry_period = \"10s\"\n",
                "ha",
                "retry",
            ),
            (
                "[ha]\nlease_duration = \"15s\"\nrenew_deadline = \"12s\"\nretry_period = \"2s\"\n",
                "ha",
                "RenewInstance",
            ),
        ] {
            let problems = with(extra).unwrap_err();
            let found = problems.iter().find(|p| p.contains(&format!(": {key}:")));
            assert!(
                found.is_some_and(|p| p.contains(says)),
                "{extra}: {problems:?}"
            );
            assert!(!problems.concat().contains("hunter2"), "{problems:?}");
        }
        let quick = "[accounts.read_timeouts]\nRenewInstance = \"3s\"\n";
        let text = format!(
            "[[accounts]]\nname = \"a\"\n[accounts.credentials]\nsource = \"env\"\n{quick}[ha]\nlease_duration = \"6s\"\nrenew_deadline = \"4s\"\nretry_period = \"1s\"\n"
        );
        assert_eq!(check_text(&text).unwrap().ha.renew_deadline.as_secs(), 4);
    }

    #[test]
    fn assume_role_settings_are_checked_where_they_are_written() {
        let base = "[[accounts]]\nname = \"a\"\n[accounts.credentials]\nsource = \"env\"\n";
        let policy = "[[policies]]\nname = \"p\"\naction = \"renew\"\n";
        let arn = "role_arn = \"acs:ram::1234567890123456:role/ecs-renewd\"\n";
        let good = check_text(&format!("{base}[accounts.assume_role]\n{arn}{policy}")).unwrap();
        let role = good.accounts[0].assume_role.as_ref().unwrap();
        assert_eq!(role.sts_url.as_str(), "https://sts.aliyuncs.com/");
        for (settings, key, says) in [
            (
                "role_arn = \"acs:ram::12x:role/r\"\n",
                "role_arn",
                "not a RAM role ARN",
            ),
            ("session_name = \"a b\"\n", "session_name", "2 to 64"),
            ("duration = \"5m\"\n", "duration", "15m to 12h"),
            ("external_id = \"x\"\n", "external_id", "trust policy"),
            (
                "sts_endpoint = \"http://sts.example.com/\"\n",
                "sts_endpoint",
                "plain http",
            ),
        ] {
            let settings = if settings.starts_with("role_arn") {
                settings.to_owned()
            } else {
                format!("{arn}{settings}")
            };
            let text = format!("{base}[accounts.assume_role]\n{settings}{policy}");
            let problems = check_text(&text).unwrap_err();
            let key = format!("accounts[0].assume_role.{key}");
            let found = problems.iter().find(|p| p.contains(&format!(": {key}:")));
            assert!(
                found.is_some_and(|p| p.contains(says) && p.starts_with("t.toml:5:")),
                "{settings}: {problems:?}"
            );
        }
    }

    #[test]
    fn every_problem_of_the_file_comes_back_in_one_run_in_file_order() {
        let text = "[scan]\nconcurrency = 0\n[[accounts]]\nname = \"a b\"\n[accounts.credentials]\nsource = \"env\"\n[[policies]]\nname = \"p\"\naction = \"renew\"\nperiod = 99\n";
        let problems = check_text(text).unwrap_err();
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(": ").nth(1).unwrap_or(""))
            .collect();
        assert!(keys.contains(&"accounts[0].name"), "{problems:?}");
        assert!(keys.contains(&"policies[0].period"), "{problems:?}");
        assert!(keys.contains(&"scan.concurrency"), "{problems:?}");
        let located: Vec<&String> = problems
            .iter()
            .filter(|p| p.starts_with("t.toml:4:"))
            .collect();
        assert_eq!(located.len(), 1, "the name is located: {problems:?}");
    }

    #[test]
    fn a_day_of_month_and_a_day_of_week_together_warn() {
        assert!(has_day_of_month_and_week("0 0 8 1 * MON"));
        assert!(!has_day_of_month_and_week("0 0 8 * * MON"));
        assert!(!has_day_of_month_and_week("0 0 8 1 * ?"));
    }

    #[test]
    fn a_good_file_compiles_with_its_warnings_kept() {
        let text = "[[accounts]]\nname = \"a\"\n[accounts.credentials]\nsource = \"env\"\n";
        let config = check_text(text).expect("a good file");
        assert_eq!(config.accounts.len(), 1);
        let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("no [[policies]]: every instance is only observed")),
            "{warnings:?}"
        );
    }
}
