//! What systemd is told (`sd_notify`): ready, the last pass in `STATUS=`, watchdog pings when
//! the unit sets `WatchdogSec`, stopping. Silent when not started by systemd (no
//! `NOTIFY_SOCKET`).

use std::time::Duration;

pub use sd_notify::NotifyState;

/// Sends `states`; a failure is logged at debug (the daemon runs on without systemd).
pub fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "systemd notification failed");
    }
}

/// How often to ping systemd's watchdog: half its interval, when the unit asks for pings.
pub fn ping_every() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
