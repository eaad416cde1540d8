//! When the daemon runs a pass outside its cron schedule: only for a retry that the pass will
//! attempt — the last pass names the earliest one (`PassSummary::next_retry_at`: a backoff of a
//! renewal its policy still wants; never a not-applicable answer, a renewal held by a belt in
//! that pass, a source that was down, anything in dry run, or a retry due later the same day
//! once that day's renewal count is used up) — never sooner than `backoff_floor`
//! after the previous pass began, and later by a random jitter of up to a fifth of the floor, so
//! retries do not wake many daemons in step. Everything else waits for the schedule. A retry
//! time that was already due when a pass ran, and that the pass left untouched, is no reason to
//! wake: that is what once made one not-applicable answer run twenty passes a second.
//!
//! Pure: time and the jitter draw are parameters; the daemon's loop and the state-machine test
//! drive the same code.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The daemon's next retry wake-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryWakes {
    floor: Duration,
    next: Option<DateTime<Utc>>,
}

impl RetryWakes {
    /// No wake-up planned yet; retries at least `floor` apart.
    pub fn new(floor: Duration) -> RetryWakes {
        RetryWakes { floor, next: None }
    }

    /// After a pass that started at `started` and names `retry` (its `next_retry_at`);
    /// `jitter` is a draw from [0, 1).
    pub fn after_pass(
        &mut self,
        started: DateTime<Utc>,
        retry: Option<DateTime<Utc>>,
        jitter: f64,
    ) {
        self.next = retry_wake(started, retry, self.floor, jitter);
    }

    /// After a pass that ended without a summary (a ledger error): wait for the schedule
    /// rather than retry a failing pass early.
    pub fn forget(&mut self) {
        self.next = None;
    }

    /// A reloaded config's floor, for the wake-ups planned from now on.
    pub fn set_floor(&mut self, floor: Duration) {
        self.floor = floor;
    }

    /// When to run a pass for retries, if at all.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        self.next
    }
}

/// The wake-up for `retry` after a pass that started at `started`: none unless the retry lies
/// after the pass began; never within `floor` of that start; jittered by up to a
/// fifth of `floor`.
pub fn retry_wake(
    started: DateTime<Utc>,
    retry: Option<DateTime<Utc>>,
    floor: Duration,
    jitter: f64,
) -> Option<DateTime<Utc>> {
    let retry = retry.filter(|at| *at > started)?;
    let floor_at = started + chrono::Duration::from_std(floor).unwrap_or(chrono::Duration::MAX);
    let spread =
        chrono::Duration::from_std(floor.mul_f64(jitter.clamp(0.0, 1.0) / 5.0)).unwrap_or_default();
    Some(retry.max(floor_at) + spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::minutes(minutes)
    }

    const FLOOR: Duration = Duration::from_secs(300);

    #[test]
    fn a_retry_due_before_the_pass_began_is_no_reason_to_wake() {
        assert_eq!(retry_wake(t(10), Some(t(10)), FLOOR, 0.0), None);
        assert_eq!(retry_wake(t(10), Some(t(3)), FLOOR, 0.0), None);
        assert_eq!(retry_wake(t(10), None, FLOOR, 0.0), None);
    }

    #[test]
    fn a_later_retry_wakes_at_its_time_but_never_within_the_floor() {
        assert_eq!(retry_wake(t(10), Some(t(30)), FLOOR, 0.0), Some(t(30)));
        assert_eq!(retry_wake(t(10), Some(t(11)), FLOOR, 0.0), Some(t(15)));
    }

    #[test]
    fn the_jitter_adds_at_most_a_fifth_of_the_floor() {
        let latest = retry_wake(t(10), Some(t(30)), FLOOR, 0.999_999).unwrap();
        assert!(latest > t(30) && latest <= t(31), "{latest}");
        let mut wakes = RetryWakes::new(FLOOR);
        wakes.after_pass(t(0), Some(t(1)), 0.5);
        assert_eq!(wakes.next(), Some(t(5) + chrono::Duration::seconds(30)));
        wakes.forget();
        assert_eq!(wakes.next(), None);
    }
}
