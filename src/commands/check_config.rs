//! `ecs-renewd check-config`: parse and validate the config completely, resolve every account's
//! credentials, and say what would run. Exit 0 when usable, 78 (EX_CONFIG) otherwise.

use super::Failure;
use crate::cloud::credentials::Environment;
use crate::config::{Config, ConfigError, LedgerLocation, Regions};
use std::path::Path;

/// Runs the check; the report goes to `out`. Every problem is reported in one run, in file
/// order: the file's own, each account's credentials (of the entries that read without a
/// problem, even when other keys have problems) and the admin token file.
pub async fn run(
    path: &Path,
    env: &Environment,
    out: &mut impl std::io::Write,
) -> Result<(), Failure> {
    let (checked, readable) = Config::check(path, env)?;
    let mut problems: Vec<(usize, String)> = match &checked {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { problems }) => problems
            .iter()
            .map(|p| (line_or_last(p.line), p.to_string()))
            .collect(),
        Err(other) => vec![(usize::MAX, other.to_string())],
    };
    let accounts: Vec<(usize, &crate::config::Account)> =
        readable.accounts.iter().map(|(i, a)| (*i, a)).collect();
    let (providers, credential_problems) =
        crate::accounts::resolve_accounts(path, &accounts, env).await;
    problems.extend(
        credential_problems
            .iter()
            .map(|p| (p.line(), p.to_string())),
    );
    problems.extend(try_roles(path, &accounts, &providers).await);
    let (directory_problems, directory_lines) =
        try_directories(path, &readable.directories, env).await;
    problems.extend(directory_problems);
    let token_file = readable.bearer_token_file.as_deref();
    if let Err(error) = crate::daemon::admin::auth::configured_token(token_file, env) {
        problems.push((usize::MAX, format!("{}: {error}", path.display())));
    }
    let config = match checked {
        Ok(config) if problems.is_empty() => config,
        _ => {
            problems.sort_by_key(|(line, _)| *line);
            let count = problems.len();
            let lines: Vec<String> = problems.into_iter().map(|(_, text)| text).collect();
            return Err(Failure::config(format!(
                "{}\n{count} problem(s)",
                lines.join("\n")
            )));
        }
    };
    let ledger = check_ledger(&config, env)
        .await
        .map_err(|why| Failure::config(format!("{}: {why}\n1 problem(s)", path.display())))?;
    let providers: Vec<_> = providers.into_iter().map(|(_, p)| p).collect();
    let credential_warnings: Vec<String> = config
        .accounts
        .iter()
        .zip(&providers)
        .flat_map(|(account, provider)| {
            provider
                .warnings()
                .iter()
                .map(move |w| format!("account {}: {w}", account.name))
        })
        .collect();
    for warning in config
        .warnings
        .iter()
        .map(ToString::to_string)
        .chain(credential_warnings)
    {
        let _ = writeln!(out, "warning: {warning}");
    }
    describe(&config, &providers, out);
    for line in directory_lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "  ledger: {ledger}");
    Ok(())
}

/// Fetches each account's keys once where they come from a service (STS `AssumeRole` with its
/// base credentials, `AssumeRoleWithOIDC`, a credentials URI), so a role that does not exist,
/// does not trust the identity or wants another ExternalId, a refused token or a URI that does
/// not answer is reported now, with the service's code, rather than at the first pass.
async fn try_roles(
    path: &Path,
    accounts: &[(usize, &crate::config::Account)],
    providers: &[(usize, crate::cloud::credentials::CredentialProvider)],
) -> Vec<(usize, String)> {
    use crate::clock::Clock;
    let mut problems = Vec::new();
    for (index, provider) in providers {
        let Some(account) = accounts.iter().find(|(i, _)| i == index).map(|(_, a)| *a) else {
            continue;
        };
        if !provider.is_fetched() {
            continue;
        }
        let now = crate::clock::SystemClock.now();
        if let Err(error) = provider.credentials(now).await {
            let (line, column) = account.location;
            let table = if account.assume_role.is_some() {
                "assume_role"
            } else {
                "credentials"
            };
            problems.push((
                line,
                format!(
                    "{}:{line}:{column}: accounts[{index}].{table}: {error}",
                    path.display()
                ),
            ));
        }
    }
    problems
}

/// Tries each directory once: its management identity, one listing of its members, and the
/// member role assumed in each selected member. A listing that fails is a problem (with the
/// service's code); a member whose role cannot be assumed is a warning (the daemon manages the
/// others and alerts on it), as is a directory with no member selected.
async fn try_directories(
    path: &Path,
    directories: &[(usize, crate::config::Directory)],
    env: &Environment,
) -> (Vec<(usize, String)>, Vec<String>) {
    use crate::clock::Clock;
    let wiring = crate::accounts::Wiring::new(
        std::sync::Arc::new(crate::clock::SystemClock),
        std::sync::Arc::new(crate::cloud::NoObserver),
        tokio_util::sync::CancellationToken::new(),
    );
    let (mut problems, mut lines) = (Vec::new(), Vec::new());
    for (index, directory) in directories {
        let now = crate::clock::SystemClock.now();
        let tried =
            crate::accounts::directory::try_directory(path, *index, directory, env, &wiring, now)
                .await;
        match tried {
            Err(problem) => problems.push((directory.template.location.0, problem)),
            Ok(tried) => {
                lines.push(format!(
                    "  directory {}: {} member(s) listed, {} managed with role {}{}",
                    directory.name,
                    tried.listed,
                    tried.members.len(),
                    directory.member_role.name,
                    if tried.members.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", tried.members.join(", "))
                    }
                ));
                let (line, column) = directory.template.location;
                let at = format!("{}:{line}:{column}: directories[{index}]", path.display());
                if tried.members.is_empty() {
                    lines.push(format!("warning: {at}: no member of directory {} is selected (hint: check include, exclude and the members' statuses)", directory.name));
                }
                lines.extend(tried.refused.iter().map(|(member, why)| {
                    format!("warning: {at}: {member}: its role cannot be assumed, so its instances will not be managed until it can: {why} (hint: create role {} in that account trusting the management account, as deploy/ram/trust-directory-member.json shows, or add its id to exclude)", directory.member_role.name)
                }));
            }
        }
    }
    (problems, lines)
}

/// Where the ledger is; a PostgreSQL one is connected to (its URL file read under the
/// secret-file rule), so an unreachable database or a refused login is reported now.
async fn check_ledger(config: &Config, env: &Environment) -> Result<String, String> {
    use crate::ledger::postgres::{Session, SessionTimeouts, target};
    let url = match &config.ledger {
        LedgerLocation::Sqlite => {
            return Ok(format!(
                "SQLite in {}",
                config.state_dir.join(crate::ledger::LEDGER_FILE).display()
            ));
        }
        LedgerLocation::Postgres { url, .. } => {
            url.read(env).map_err(|e| format!("ledger.url_file: {e}"))?
        }
    };
    let session = Session::connect(url.expose(), SessionTimeouts::default())
        .await
        .map_err(|e| format!("ledger: {e}"))?;
    session.client.simple_query("SELECT 1").await.map_err(|e| {
        format!(
            "ledger: the database at {} did not answer: {e}",
            target(url.expose()).unwrap_or_default()
        )
    })?;
    Ok(format!(
        "PostgreSQL at {}, reachable; [ha] lease {}, deadline {}, retry {}",
        target(url.expose()).unwrap_or_default(),
        crate::duration::format(config.ha.lease_duration),
        crate::duration::format(config.ha.renew_deadline),
        crate::duration::format(config.ha.retry_period),
    ))
}

/// A problem without a place comes after those with one.
fn line_or_last(line: usize) -> usize {
    if line == 0 { usize::MAX - 1 } else { line }
}

/// What would run: the schedule, each account's credential source and regions, each policy.
fn describe(
    config: &Config,
    providers: &[crate::cloud::credentials::CredentialProvider],
    out: &mut impl std::io::Write,
) {
    let mut write = |line: String| {
        let _ = writeln!(out, "{line}");
    };
    write(format!("{}: OK", config.path.display()));
    write(format!(
        "  schedule {:?} in {}, jitter {}, state in {}, admin on {}{}{}",
        config.schedule.text,
        config.timezone,
        crate::duration::format(config.jitter),
        config.state_dir.display(),
        config.admin_listen,
        if config.admin.bearer_token_file.is_some() {
            " (bearer token for /metrics and /status)"
        } else {
            ""
        },
        if config.dry_run { ", DRY RUN" } else { "" }
    ));
    for (account, provider) in config.accounts.iter().zip(providers) {
        let regions = match &account.regions {
            Regions::All => "all regions".to_owned(),
            Regions::List(list) => list.join(", "),
        };
        write(format!(
            "  account {}: credentials from {}; {regions}",
            account.name,
            provider.origin()
        ));
    }
    for policy in &config.policies {
        write(format!("  policy {}: {:?}", policy.name, policy.action));
    }
}
