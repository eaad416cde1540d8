//! Logging: tracing-subscriber with `RUST_LOG` filtering (default `info`), JSON lines by default
//! when stdout is not a terminal, human text otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::closed_enum;

closed_enum! {
    /// How log lines look.
    pub enum LogFormat {
        /// One JSON object per line (for journald, Loki, ...).
        Json => "json",
        /// Human-readable text.
        Text => "text",
    }
}

/// Installs the global subscriber. `format` overrides the terminal-based default;
/// `default_filter` applies when `RUST_LOG` is unset.
pub fn init(format: Option<LogFormat>, default_filter: &str) {
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests that call it twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
}
