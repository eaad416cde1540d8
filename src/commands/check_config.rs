//! `ecs-renewd check-config`: parse and validate the config completely, resolve every account's
//! credentials, and say what would run. Exit 0 when usable, 78 (EX_CONFIG) otherwise.

use super::Failure;
use crate::cloud::credentials::Environment;
use crate::config::{Config, ConfigError, Regions};
use std::path::Path;

/// Runs the check; the report goes to `out`. Every problem is reported, in file order: the
/// file's own first (the credentials cannot be checked before the file reads), then each
/// account's credentials and the admin token.
pub async fn run(
    path: &Path,
    env: &Environment,
    out: &mut impl std::io::Write,
) -> Result<(), Failure> {
    let config = Config::load(path, env).map_err(|error| match error {
        ConfigError::Invalid { problems } => Failure::config(format!(
            "{}\n{} problem(s); the credentials and the admin token are checked once the file itself has none",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            problems.len()
        )),
        other => other.into(),
    })?;
    let providers = resolve_or_report(&config, env).await?;
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
    Ok(())
}

/// Every account's credentials resolved, and the admin token read; every problem, by line.
async fn resolve_or_report(
    config: &Config,
    env: &Environment,
) -> Result<Vec<crate::cloud::credentials::CredentialProvider>, Failure> {
    let mut problems: Vec<(usize, String)> = Vec::new();
    let providers = match crate::accounts::resolve_all(config, env).await {
        Ok(providers) => providers,
        Err((first, rest)) => {
            problems.extend(
                std::iter::once(first)
                    .chain(rest)
                    .map(|p| (p.line(), p.to_string())),
            );
            Vec::new()
        }
    };
    let token_file = config.admin.bearer_token_file.as_deref();
    if let Err(error) = crate::daemon::admin::auth::configured_token(token_file, env) {
        problems.push((usize::MAX, format!("{}: {error}", config.path.display())));
    }
    if problems.is_empty() {
        return Ok(providers);
    }
    problems.sort_by_key(|(line, _)| *line);
    let count = problems.len();
    let lines: Vec<String> = problems.into_iter().map(|(_, text)| text).collect();
    Err(Failure::config(format!(
        "{}\n{count} problem(s)",
        lines.join("\n")
    )))
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
