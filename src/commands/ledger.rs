//! `ecs-renewd ledger copy --to <url>`: moves a SQLite ledger into an empty PostgreSQL one
//! (docs/operations.md, "Moving the ledger to PostgreSQL"). The daemon must be stopped: the
//! copy takes the state directory's lock, so nothing is written while it reads.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Failure;
use crate::cloud::credentials::Environment;
use crate::config::Config;
use crate::ledger::postgres::{Session, SessionTimeouts, copy_ledger};
use crate::ledger::{LEDGER_FILE, Ledger};
use crate::secret::{Secret, read_secret_file};

/// Where the target database is named.
#[derive(Debug)]
pub enum Target {
    /// On the command line.
    Url(String),
    /// In a file, held to the secret-file rule (0600, or in the service manager's private
    /// credentials directory).
    File(PathBuf),
}

impl Target {
    fn url(self, env: &Environment) -> Result<Secret, Failure> {
        match self {
            Target::Url(url) => Ok(Secret::new(url)),
            Target::File(path) => read_secret_file(
                &path,
                "ledger database URL",
                env.credentials_directory().as_deref(),
            )
            .map_err(Failure::config),
        }
    }
}

/// Copies the ledger of the config at `path` into the database `to` names, and says what it
/// copied.
pub async fn run_copy(
    path: &Path,
    env: &Environment,
    to: Target,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let to = to.url(env)?;
    let config = Config::load(path, env)?;
    if !config.state_dir.join(LEDGER_FILE).exists() {
        return Err(Failure::runtime(format!(
            "no ledger in {} to copy (state_dir of {})",
            config.state_dir.display(),
            path.display()
        )));
    }
    let ledger = Ledger::open(&config.state_dir).map_err(Failure::runtime)?;
    let mut target = Session::connect(to.expose(), SessionTimeouts::default())
        .await
        .map_err(Failure::runtime)?;
    let copied = copy_ledger(&ledger, &mut target)
        .await
        .map_err(Failure::runtime)?;
    let counts: Vec<String> = copied
        .iter()
        .map(|(table, rows)| format!("{table} {rows}"))
        .collect();
    writeln!(
        out,
        "copied {} into the target database: {}",
        ledger.path().display(),
        counts.join(", ")
    )
    .map_err(Failure::runtime)
}
