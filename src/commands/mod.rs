//! The subcommands' bodies. Each returns a `Failure` that `main` turns into an exit code, so
//! no process exit happens below `main`.

pub mod check_config;
pub mod ledger;
pub mod once;
pub mod open;
pub mod plan;
pub mod run;
pub mod status;

use std::fmt;

/// What kind of failure a command had: it decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The configuration (or an input file) is wrong: exit 78 (EX_CONFIG).
    Config,
    /// Anything else: exit 1.
    Runtime,
    /// Try again later, nothing was done: exit 75 (EX_TEMPFAIL) — another replica leads, or
    /// the shared ledger's database cannot be reached.
    TempFail,
}

/// How a command failed: its kind, and the error itself with its chain of sources (not
/// flattened into a string, so the cause stays inspectable, as bors keeps its errors).
#[derive(Debug)]
pub struct Failure {
    /// Config or runtime.
    pub kind: FailureKind,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl Failure {
    /// A configuration failure (exit 78); a message or an error.
    pub fn config(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Failure {
        Failure {
            kind: FailureKind::Config,
            error: error.into(),
        }
    }

    /// Any other failure (exit 1); a message or an error.
    pub fn runtime(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Failure {
        Failure {
            kind: FailureKind::Runtime,
            error: error.into(),
        }
    }

    /// A failure worth retrying later (exit 75).
    pub fn tempfail(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Failure {
        Failure {
            kind: FailureKind::TempFail,
            error: error.into(),
        }
    }

    /// The exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            FailureKind::Config => 78,
            FailureKind::Runtime => 1,
            FailureKind::TempFail => 75,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

impl From<crate::config::ConfigError> for Failure {
    fn from(e: crate::config::ConfigError) -> Self {
        Failure::config(e)
    }
}

impl From<crate::accounts::AccountError> for Failure {
    fn from(e: crate::accounts::AccountError) -> Self {
        Failure::config(e)
    }
}
