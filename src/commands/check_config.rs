//! `ecs-renewd check-config`: parse and validate the config completely, resolve every account's
//! credentials, and say what would run. Exit 0 when usable, 78 (EX_CONFIG) otherwise.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::clock::SystemClock;
use crate::cloud::client::NoObserver;
use crate::cloud::credentials::Environment;
use crate::config::{Config, Regions};

/// Runs the check; the report goes to `out`.
pub async fn run(
    path: &Path,
    env: &Environment,
    out: &mut impl std::io::Write,
) -> Result<(), Failure> {
    let config = Config::load(path, env)?;
    let (accounts, credential_warnings) = crate::accounts::connect(
        &config,
        env,
        Arc::new(SystemClock),
        Arc::new(NoObserver),
        CancellationToken::new(),
    )
    .await?;
    let write = |out: &mut dyn std::io::Write, line: String| {
        let _ = writeln!(out, "{line}");
    };
    for warning in &config.warnings {
        write(out, format!("warning: {warning}"));
    }
    for warning in &credential_warnings {
        write(out, format!("warning: {warning}"));
    }
    write(out, format!("{}: OK", config.path.display()));
    write(
        out,
        format!(
            "  schedule {:?} in {}, jitter {}, state in {}, admin on {}{}",
            config.schedule.text,
            config.timezone,
            crate::duration::format(config.jitter),
            config.state_dir.display(),
            config.admin_listen,
            if config.dry_run { ", DRY RUN" } else { "" }
        ),
    );
    for (account, client) in config.accounts.iter().zip(&accounts) {
        let regions = match &account.regions {
            Regions::All => "all regions".to_owned(),
            Regions::List(list) => list.join(", "),
        };
        write(
            out,
            format!(
                "  account {}: credentials from {}; {regions}",
                account.name,
                client.client.credentials_origin()
            ),
        );
    }
    for policy in &config.policies {
        write(
            out,
            format!("  policy {}: {:?}", policy.name, policy.action),
        );
    }
    Ok(())
}
