//! The subcommands' bodies. Each returns a `Failure` that `main` turns into an exit code, so
//! no process exit happens below `main`.

pub mod bench;
pub mod check_config;
pub mod demo;
pub mod once;
pub mod plan;
pub mod run;
pub mod status;

use std::fmt;

/// How a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The configuration (or an input file) is wrong: exit 78 (EX_CONFIG).
    Config(String),
    /// Anything else: exit 1.
    Runtime(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Config(m) | Failure::Runtime(m) => f.write_str(m),
        }
    }
}

impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure::Config(e.to_string())
    }
}

impl From<crate::accounts::AccountError> for Failure {
    fn from(e: crate::accounts::AccountError) -> Self {
        Failure::Config(e.to_string())
    }
}
