//! A client-side rate limit per (region, action) for one account, because ECS throttles per
//! account, region and action (docs/ecs-api.md §6). GCRA: each call reserves the next slot, so calls
//! are spaced evenly after an initial burst, and waiting callers are served in arrival order.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::action::Action;

/// Rates, in calls per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Calls per second for each (region, action) unless overridden.
    #[serde(default = "default_per_second")]
    pub per_second: f64,
    /// How many calls may go at once after a quiet spell.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Per-action overrides, e.g. `{ RenewInstance = 5 }`.
    #[serde(default)]
    pub actions: HashMap<Action, f64>,
}

fn default_per_second() -> f64 {
    10.0
}
fn default_burst() -> u32 {
    1
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_second: default_per_second(),
            burst: default_burst(),
            actions: HashMap::new(),
        }
    }
}

impl RateLimitConfig {
    /// The rate for an action.
    pub fn rate_for(&self, action: Action) -> f64 {
        self.actions
            .get(&action)
            .copied()
            .unwrap_or(self.per_second)
    }
}

/// The limiter for one account.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    /// Theoretical arrival time of the next call per (region, action).
    next: Mutex<HashMap<(String, Action), Instant>>,
}

impl RateLimiter {
    /// A limiter with the given rates.
    pub fn new(config: RateLimitConfig) -> Self {
        RateLimiter {
            config,
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves a slot and returns when it starts (now, or later under load).
    pub fn reserve(&self, region: &str, action: Action) -> Instant {
        let rate = self.config.rate_for(action);
        let now = Instant::now();
        if !(rate.is_finite() && rate > 0.0) {
            return now;
        }
        let interval = Duration::from_secs_f64(1.0 / rate);
        let tolerance = interval * self.config.burst.saturating_sub(1);
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let tat = next.entry((region.to_owned(), action)).or_insert(now);
        let earliest = tat.checked_sub(tolerance).unwrap_or(now);
        let start = earliest.max(now);
        *tat = (*tat).max(start) + interval;
        start
    }

    /// Waits for a slot.
    pub async fn acquire(&self, region: &str, action: Action) {
        let start = self.reserve(region, action);
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_at_the_rate_per_region_and_action() {
        let limiter = RateLimiter::new(RateLimitConfig {
            per_second: 10.0,
            burst: 1,
            actions: HashMap::from([(Action::RenewInstance, 2.0)]),
        });
        let t0 = Instant::now();
        let slots: Vec<Duration> = (0..4)
            .map(|_| limiter.reserve("cn-hangzhou", Action::DescribeInstances) - t0)
            .collect();
        assert_eq!(
            slots,
            [0, 100, 200, 300].map(Duration::from_millis).to_vec()
        );
        // Another region and another action have their own budget.
        assert_eq!(limiter.reserve("cn-beijing", Action::DescribeInstances), t0);
        assert_eq!(limiter.reserve("cn-hangzhou", Action::RenewInstance), t0);
        assert_eq!(
            limiter.reserve("cn-hangzhou", Action::RenewInstance) - t0,
            Duration::from_millis(500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_the_rate_applies() {
        let limiter = RateLimiter::new(RateLimitConfig {
            per_second: 10.0,
            burst: 3,
            actions: HashMap::new(),
        });
        let t0 = Instant::now();
        let slots: Vec<Duration> = (0..5)
            .map(|_| limiter.reserve("r", Action::DescribeInstances) - t0)
            .collect();
        assert_eq!(
            slots,
            [0, 0, 0, 100, 200].map(Duration::from_millis).to_vec()
        );
        // After a quiet second the burst is available again.
        tokio::time::advance(Duration::from_secs(1)).await;
        let t1 = Instant::now();
        assert_eq!(limiter.reserve("r", Action::DescribeInstances), t1);
        assert_eq!(limiter.reserve("r", Action::DescribeInstances), t1);
    }
}
