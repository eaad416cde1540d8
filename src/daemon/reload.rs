//! A config reload (SIGHUP): the file is read, checked and its accounts connected in full
//! before anything changes; then the loop swaps the new engine in between passes. Any failure
//! keeps the running config, logs why and sets `config_last_reload_successful` to 0.

use std::path::PathBuf;

use super::admin::auth::{TokenError, configured_token};
use crate::accounts::AccountError;
use crate::cloud::credentials::Environment;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::reconcile::Engine;
use crate::secret::Secret;

/// Where the config comes from, and the environment it is read with.
pub struct Reloader {
    /// The config file (re-read on SIGHUP).
    pub path: PathBuf,
    /// The environment (credentials, overrides).
    pub env: Environment,
}

/// What a successful reload brings in.
pub struct Reloaded {
    /// The engine over the new config (the ledger, metrics, clock and shutdown kept).
    pub engine: Engine,
    /// The admin bearer token, read again.
    pub token: Option<Secret>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read or is not a valid config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The admin bearer token cannot be used.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// An account has no usable credentials.
    #[error(transparent)]
    Accounts(#[from] AccountError),
}

impl Reloader {
    /// Reads, checks and connects the config; `running` is the engine it would replace.
    pub async fn load(&self, running: &Engine) -> Result<Reloaded, ReloadError> {
        let mut config = Config::load(&self.path, &self.env)?;
        keep_restart_only_settings(&mut config, &running.config);
        let token = configured_token(config.admin.bearer_token_file.as_deref(), &self.env)?;
        let engine = Engine::connect(config, &self.env, running.base()).await?;
        Ok(Reloaded { engine, token })
    }
}

/// Says why a reload failed; the running config stays.
pub fn reload_failed(metrics: &Metrics, error: &ReloadError) {
    metrics.config_last_reload_successful.set(0);
    tracing::error!(%error, "config reload failed: keeping the running config");
}

/// Settings that change only with a restart: the state directory is kept as it is (the ledger
/// and its lock are open), and the admin server's address and limits are warned about.
fn keep_restart_only_settings(new: &mut Config, old: &Config) {
    if new.state_dir != old.state_dir {
        tracing::warn!(old = %old.state_dir.display(), new = %new.state_dir.display(), "state_dir changes take effect after a restart");
        new.state_dir = old.state_dir.clone();
    }
    if new.admin_listen != old.admin_listen {
        tracing::warn!(old = %old.admin_listen, new = %new.admin_listen, "the admin address changes after a restart");
    }
    let limits = |a: &crate::config::AdminSettings| {
        (
            a.header_read_timeout,
            a.write_timeout,
            a.answer_timeout,
            a.max_connections,
            a.max_status_requests,
        )
    };
    if limits(&new.admin) != limits(&old.admin) {
        tracing::warn!(
            "the admin server's timeouts and caps change after a restart (the bearer token is re-read now)"
        );
    }
}
