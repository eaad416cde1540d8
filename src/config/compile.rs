//! Compiling the checked file's sections into what the engine runs on: an account entry into
//! an [`Account`], a policy entry into a [`Policy`] (its matcher and its action, with the
//! period rules of the site and the billing currencies of the accounts it covers). Each value
//! that does not fit is reported where it is written; the caller decides what a problem means
//! for the whole file.

use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;

use super::report::{Report, duration_of, line_col};
use super::schema::{AccountSection, ActionKind, ConfigFile, PolicySection, Regions};
use super::{Account, AssumeRole, Limits};
use crate::cloud::credentials::SourceKind;
use crate::cloud::ecs::AutoRenewTarget;
use crate::cloud::endpoint::Endpoint;
use crate::cloud::periods::{self, PeriodRule, Site};
use crate::cloud::types::{PeriodUnit, RenewalStatus};
use crate::money::Money;
use crate::policy::{Fallback, Matcher, Policy, PolicyAction};

/// One `[[accounts]]` entry compiled: its endpoint, credentials, currency and rate limit
/// checked, problems reported.
pub(super) fn compile_account(
    section: &AccountSection,
    key: &str,
    file: &ConfigFile,
    report: &mut Report,
) -> Account {
    let endpoint = account_endpoint(section, key, report);
    check_credentials(section, key, report);
    let regions = section
        .regions
        .clone()
        .unwrap_or_else(|| file.scan.regions.clone());
    let assume_role = account_assume_role(section, (&endpoint, &regions), key, report);
    let currency = account_currency(section, key, report);
    if section.rate_limit.per_second <= 0.0 || section.rate_limit.burst == 0 {
        report.error(
            None,
            &format!("{key}.rate_limit"),
            "per_second must be above 0 and burst at least 1".into(),
            "e.g. per_second = 20 and burst = 5 (ECS throttles per account, region and action)",
        );
    }
    Account {
        name: section.name.get_ref().clone(),
        credentials: section.credentials.clone(),
        assume_role,
        endpoint,
        site: section.site,
        deduction_schedule: section
            .deduction_schedule
            .unwrap_or_else(|| crate::policy::DeductionSchedule::for_site(section.site)),
        funds_enabled: section.funds.enabled,
        currency,
        location: line_col(report.text, section.name.span().start),
        regions,
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

/// An account's assumed role, if it has one: each bad setting reported at the table, and the
/// STS endpoint (`sts_endpoint`, else the account's regional one for its first region).
fn account_assume_role(
    section: &AccountSection,
    (endpoint, regions): (&Endpoint, &Regions),
    key: &str,
    report: &mut Report,
) -> Option<AssumeRole> {
    let table = section.assume_role.as_ref()?;
    let config = table.get_ref();
    for (field, why, hint) in config.problems() {
        report.error(
            Some(table.span()),
            &format!("{key}.assume_role.{field}"),
            why,
            hint,
        );
    }
    let first_region = match regions {
        Regions::List(list) => list.first().map(String::as_str),
        Regions::All => None,
    };
    let url = match &config.sts_endpoint {
        Some(text) => crate::cloud::endpoint::checked(text.clone()),
        None => endpoint.sts_url(first_region),
    };
    match url {
        Ok(sts_url) => Some(AssumeRole {
            config: config.clone(),
            sts_url,
        }),
        Err(e) => {
            report.error(
                Some(table.span()),
                &format!("{key}.assume_role.sts_endpoint"),
                e.to_string(),
                "write an https:// URL (plain http only to a loopback address), or leave it unset",
            );
            None
        }
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

/// Whether a policy's account list covers `name`, an account or a directory (which a member of
/// it, `<directory>/<AccountId>`, listed alone also covers: its settings are the directory's).
fn covers(list: &[String], name: &str) -> bool {
    crate::policy::covers_account(list, name)
        || list.iter().any(|x| {
            x.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// The site whose period rules a policy is checked against: its accounts' site when they agree,
/// else the China site (the more permissive).
pub(super) fn policy_site(section: &PolicySection, accounts: &[Account]) -> Site {
    let sites: HashSet<Site> = accounts
        .iter()
        .filter(|a| covers(&section.matcher.accounts, &a.name))
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
pub(super) fn policy_currencies(section: &PolicySection, accounts: &[Account]) -> Vec<String> {
    let mut currencies: Vec<String> = accounts
        .iter()
        .filter(|a| covers(&section.matcher.accounts, &a.name))
        .map(|a| a.currency.clone())
        .collect();
    currencies.sort();
    currencies.dedup();
    currencies
}

/// What a policy's checks need to know of the accounts it covers.
pub(super) struct PolicyAccounts {
    /// The site whose period rules apply.
    pub site: Site,
    /// The billing currencies of the accounts covered.
    pub currencies: Vec<String>,
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
        report.error(
            span,
            key,
            format!("{amount} is not a positive price"),
            "write the most one renewal may cost, e.g. 300 or \"300 CNY\"",
        );
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
pub(super) fn compile_policy(
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
            let (target, fine) = compile_keep_auto_renew(keep, key, site, report);
            ok &= fine;
            Some(target)
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

/// A renew policy's `keep_auto_renew`: the auto-renew state to keep beside the renewals, its
/// duration checked when it is AutoRenewal; whether it was fine.
fn compile_keep_auto_renew(
    keep: &toml::Spanned<super::schema::KeepAutoRenew>,
    key: &str,
    site: Site,
    report: &mut Report,
) -> (AutoRenewTarget, bool) {
    let k = *keep.get_ref();
    let ok = k.status != RenewalStatus::AutoRenewal
        || check_period(
            report,
            &periods::auto_renew_rule(site),
            k.duration,
            k.period_unit,
            keep.span(),
            &format!("{key}.keep_auto_renew"),
            "auto-renew duration",
        );
    let target = AutoRenewTarget {
        status: k.status,
        duration: k.duration,
        unit: k.period_unit,
    };
    (target, ok)
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

/// Whether `code` looks like an ISO 4217 code (three capital letters), as ECS quotes prices.
pub(super) fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole file (so spans point into `text`) and a report against it.
    fn parsed(text: &str) -> ConfigFile {
        toml::from_str(text).expect("the test's TOML parses")
    }

    fn report(text: &str) -> Report<'_> {
        Report {
            text,
            parsed: None,
            path: std::path::Path::new("t.toml"),
            problems: Vec::new(),
            warnings: Vec::new(),
            readable: Default::default(),
        }
    }

    fn covered(currencies: &[&str]) -> PolicyAccounts {
        PolicyAccounts {
            site: Site::China,
            currencies: currencies.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn compile(text: &str, currencies: &[&str]) -> (Option<Policy>, Vec<String>) {
        let file = parsed(text);
        let mut report = report(text);
        let policy = compile_policy(
            &file.policies[0],
            "policies[0]",
            &covered(currencies),
            &file,
            &Limits {
                max_renewals_per_run: 10,
                max_renewals_per_day: 10,
                max_spend_per_run: Default::default(),
                max_spend_per_day: Default::default(),
                max_fleet_share_per_run: 1.0,
                max_auto_renew_enables_per_run: 10,
            },
            &mut report,
        );
        let problems = report.problems.iter().map(ToString::to_string).collect();
        (policy, problems)
    }

    #[test]
    fn a_renew_policy_compiles_with_its_defaults_and_a_bare_price_in_the_one_currency() {
        let text = "[[policies]]\nname = \"prod\"\naction = \"renew\"\nmax_price = 300\n";
        let (policy, problems) = compile(text, &["CNY"]);
        assert!(problems.is_empty(), "{problems:?}");
        match policy.expect("compiled").action {
            PolicyAction::Renew {
                period,
                unit,
                renew_before,
                max_price,
                keep_auto_renew,
            } => {
                assert_eq!((period, unit), (1, PeriodUnit::Month));
                assert_eq!(renew_before, Duration::from_secs(7 * 86_400));
                assert_eq!(max_price, Some(Money::parse_decimal("300", "CNY").unwrap()));
                assert_eq!(keep_auto_renew, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_renewal_that_would_leave_the_instance_due_again_is_refused_where_it_is_written() {
        let text = "[[policies]]\nname = \"p\"\naction = \"renew\"\nperiod = 1\nperiod_unit = \"Week\"\nrenew_before = \"10d\"\n";
        let (policy, problems) = compile(text, &["CNY"]);
        assert!(policy.is_none());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("t.toml:6:16: policies[0].renew_before: renew_before (10d) is not shorter than the period"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_bare_max_price_over_two_currencies_asks_for_the_currency() {
        let text = "[[policies]]\nname = \"p\"\naction = \"renew\"\nmax_price = 300\n";
        let (policy, problems) = compile(text, &["CNY", "USD"]);
        assert!(policy.is_none());
        assert!(
            problems[0].contains("policies[0].max_price: a bare number, but the accounts this policy covers are billed in CNY and USD"),
            "{problems:?}"
        );
    }

    #[test]
    fn an_auto_renew_fallback_in_years_renews_the_same_length_in_months() {
        let text = "[[policies]]\nname = \"db\"\naction = \"auto-renew\"\nduration = 1\nperiod_unit = \"Year\"\nfallback_renew = true\n";
        let (policy, problems) = compile(text, &["CNY"]);
        assert!(problems.is_empty(), "{problems:?}");
        match policy.expect("compiled").action {
            PolicyAction::AutoRenew { target, fallback } => {
                assert_eq!((target.duration, target.unit), (1, PeriodUnit::Year));
                let fallback = fallback.expect("a fallback");
                assert_eq!((fallback.period, fallback.unit), (12, PeriodUnit::Month));
                assert_eq!(fallback.after, Duration::from_secs(86_400));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_key_of_another_action_is_named_with_the_action_it_belongs_to() {
        let text = "[[policies]]\nname = \"p\"\naction = \"observe\"\nduration = 3\n";
        let (policy, problems) = compile(text, &["CNY"]);
        assert!(policy.is_none());
        assert_eq!(
            problems,
            [
                "t.toml:4:12: policies[0].duration: duration does not apply to action \"observe\" (hint: duration belongs to action auto-renew)"
            ]
        );
    }

    #[test]
    fn an_account_takes_its_sites_currency_and_the_scans_regions_unless_it_names_its_own() {
        let text = "[scan]\nregions = [\"cn-hangzhou\"]\n[[accounts]]\nname = \"intl\"\nsite = \"international\"\n[accounts.credentials]\nsource = \"env\"\n";
        let file = parsed(text);
        let mut report = report(text);
        let account = compile_account(&file.accounts[0], "accounts[0]", &file, &mut report);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(account.currency, "USD");
        assert_eq!(account.location, (4, 8));
        assert_eq!(
            account.deduction_schedule,
            crate::policy::DeductionSchedule::for_site(Site::International)
        );
    }
}
