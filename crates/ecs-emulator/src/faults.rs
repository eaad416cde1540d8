//! Fault injection and throttling: rules that fail, delay, garble or drop matching calls, and a
//! per-(account, region, action) rate limit in real time that answers `Throttling`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::settings::ThrottleSettings;
use ecs_wire::Action;

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this error; nothing is processed.
    Error {
        /// The error code the answer's body carries, e.g. `Throttling`.
        code: String,
        /// HTTP status.
        status: u16,
        /// The body's message (default: `Injected fault <code>.`).
        #[serde(default)]
        message: Option<String>,
        /// `x-acs-retry-after`, milliseconds.
        #[serde(default)]
        retry_after_ms: Option<u64>,
    },
    /// Break the connection; nothing is processed.
    Reset,
    /// A 502 HTML page from a "gateway"; nothing is processed.
    Html,
    /// Process the call, then send a truncated body.
    Malformed,
    /// Process the call (a renewal charges), then break the connection.
    CommitThenDrop,
    /// Wait, then process normally (longer than the client's timeout: a timeout).
    Latency {
        /// How long to wait, in milliseconds, on top of the `latency` setting.
        ms: u64,
    },
    /// Hold the call, unprocessed, until the test releases it (`EmulatorHandle::release_held`
    /// or `POST /_emulator/release`), then process normally: a call in flight for exactly as
    /// long as a test needs, without guessing a latency.
    Hold,
}

/// A fault rule: which calls it hits and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// Only this action (any when absent).
    #[serde(default)]
    pub action: Option<Action>,
    /// Only this region.
    #[serde(default)]
    pub region: Option<String>,
    /// Only this account.
    #[serde(default)]
    pub account: Option<String>,
    /// Hit this many calls, then vanish (unlimited when absent).
    #[serde(default)]
    pub count: Option<u64>,
    /// Vanish at this emulated time.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// What to do.
    pub kind: FaultKind,
}

impl FaultSpec {
    /// Fails the next `count` calls of `action` with `code` and `status`.
    pub fn fail_next(action: Action, count: u64, code: &str, status: u16) -> FaultSpec {
        FaultSpec {
            action: Some(action),
            region: None,
            account: None,
            count: Some(count),
            until: None,
            kind: FaultKind::Error {
                code: code.into(),
                status,
                message: None,
                retry_after_ms: None,
            },
        }
    }

    /// Applies `kind` to the next `count` calls of `action`.
    pub fn next(action: Action, count: u64, kind: FaultKind) -> FaultSpec {
        FaultSpec {
            action: Some(action),
            region: None,
            account: None,
            count: Some(count),
            until: None,
            kind,
        }
    }

    /// Delays the next call of `action` by `ms` milliseconds (a timeout when that is longer
    /// than the client waits).
    pub fn latency(action: Action, ms: u64) -> FaultSpec {
        FaultSpec::next(action, 1, FaultKind::Latency { ms })
    }

    /// Holds the next call of `action`, unprocessed, until it is released.
    pub fn hold(action: Action) -> FaultSpec {
        FaultSpec::next(action, 1, FaultKind::Hold)
    }
}

/// The active rules.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<FaultSpec>,
}

impl Faults {
    /// Adds a rule.
    pub fn add(&mut self, rule: FaultSpec) {
        self.rules.push(rule);
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// Every rule held, in the order added; `take` uses the first that matches.
    pub fn rules(&self) -> &[FaultSpec] {
        &self.rules
    }

    /// The first rule that matches a call, used up by one.
    pub fn take(
        &mut self,
        action: Option<Action>,
        region: &str,
        account: &str,
        now: DateTime<Utc>,
    ) -> Option<FaultKind> {
        self.rules
            .retain(|r| r.count != Some(0) && r.until.is_none_or(|until| now < until));
        let rule = self.rules.iter_mut().find(|r| {
            r.action.is_none_or(|a| Some(a) == action)
                && r.region.as_deref().is_none_or(|x| x == region)
                && r.account.as_deref().is_none_or(|x| x == account)
        })?;
        if let Some(count) = rule.count.as_mut() {
            *count -= 1;
        }
        Some(rule.kind.clone())
    }
}

/// Real-time throttling per (account, region, action).
#[derive(Debug, Default)]
pub struct Throttler {
    next: Mutex<HashMap<(String, String, Action), Instant>>,
}

impl Throttler {
    /// `Ok` when the call may proceed, else how long until it would.
    pub fn check(
        &self,
        settings: &ThrottleSettings,
        account: &str,
        region: &str,
        action: Action,
    ) -> Result<(), Duration> {
        let rate = settings
            .actions
            .get(&action)
            .copied()
            .unwrap_or(settings.per_second);
        if !(rate.is_finite() && rate > 0.0) {
            return Ok(());
        }
        let interval = Duration::from_secs_f64(1.0 / rate);
        let tolerance = interval * settings.burst.saturating_sub(1);
        let now = Instant::now();
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let tat = next
            .entry((account.to_owned(), region.to_owned(), action))
            .or_insert(now);
        let earliest = tat.checked_sub(tolerance).unwrap_or(now);
        if earliest > now {
            return Err(earliest - now);
        }
        *tat = (*tat).max(now) + interval;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_rule_hits_exactly_that_many_matching_calls() {
        let mut faults = Faults::default();
        faults.add(FaultSpec::fail_next(
            Action::RenewInstance,
            2,
            "InternalError",
            500,
        ));
        let now = DateTime::<Utc>::MIN_UTC;
        assert!(
            faults
                .take(Some(Action::DescribeInstances), "r", "a", now)
                .is_none()
        );
        assert!(
            faults
                .take(Some(Action::RenewInstance), "r", "a", now)
                .is_some()
        );
        assert!(
            faults
                .take(Some(Action::RenewInstance), "r", "a", now)
                .is_some()
        );
        assert!(
            faults
                .take(Some(Action::RenewInstance), "r", "a", now)
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_admits_the_rate_and_says_how_long_to_wait() {
        let throttler = Throttler::default();
        let settings = ThrottleSettings {
            per_second: 10.0,
            burst: 2,
            ..ThrottleSettings::default()
        };
        let call = || throttler.check(&settings, "a", "r", Action::DescribeInstances);
        assert!(call().is_ok());
        assert!(call().is_ok());
        assert_eq!(call(), Err(Duration::from_millis(100)));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(call().is_ok());
    }
}
