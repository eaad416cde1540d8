//! Time as an input: the `Clock` that I/O code asks for "now" (decision code takes `now` as a
//! parameter instead). The daemon uses the wall clock; the emulator, the demo and the tests use a
//! `VirtualClock` that can be frozen, set, advanced, or run faster than real time.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A source of the current UTC time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// How long to sleep in real time until this clock reads `t` (zero if it already does).
    fn real_wait_until(&self, t: DateTime<Utc>) -> Duration {
        (t - self.now()).to_std().unwrap_or(Duration::ZERO)
    }
}

/// The host's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place the wall clock is read
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A controllable clock. It runs at `speed` virtual seconds per real second from an anchor
/// (`speed = 0` freezes it), measured with tokio's clock so paused-time tests drive it too.
#[derive(Debug)]
pub struct VirtualClock {
    state: Mutex<VirtualState>,
}

#[derive(Debug, Clone, Copy)]
struct VirtualState {
    anchor_virtual: DateTime<Utc>,
    anchor_real: Instant,
    speed: f64,
}

impl VirtualState {
    fn now(&self) -> DateTime<Utc> {
        if self.speed == 0.0 {
            return self.anchor_virtual;
        }
        let real = Instant::now().saturating_duration_since(self.anchor_real);
        let virtual_elapsed = real.as_secs_f64() * self.speed;
        let micros = (virtual_elapsed * 1_000_000.0).min(i64::MAX as f64) as i64;
        self.anchor_virtual + chrono::Duration::microseconds(micros)
    }
}

impl VirtualClock {
    /// A clock frozen at `start` until it is set or advanced.
    pub fn frozen(start: DateTime<Utc>) -> Self {
        Self::running(start, 0.0)
    }

    /// A clock that starts at `start` and runs `speed` times faster than real time.
    pub fn running(start: DateTime<Utc>, speed: f64) -> Self {
        VirtualClock {
            state: Mutex::new(VirtualState {
                anchor_virtual: start,
                anchor_real: Instant::now(),
                speed: sanitize_speed(speed),
            }),
        }
    }

    /// Jumps to `t` (forwards or backwards); the speed is kept.
    pub fn set(&self, t: DateTime<Utc>) {
        let mut state = self.lock();
        state.anchor_virtual = t;
        state.anchor_real = Instant::now();
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut state = self.lock();
        let now = state.now();
        // Saturates at the end of the calendar rather than panicking on repeated advances.
        state.anchor_virtual = chrono::Duration::from_std(d)
            .ok()
            .and_then(|delta| now.checked_add_signed(delta))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        state.anchor_real = Instant::now();
    }

    /// Changes how many virtual seconds pass per real second (0 freezes the clock).
    pub fn set_speed(&self, speed: f64) {
        let mut state = self.lock();
        state.anchor_virtual = state.now();
        state.anchor_real = Instant::now();
        state.speed = sanitize_speed(speed);
    }

    /// Virtual seconds per real second.
    pub fn speed(&self) -> f64 {
        self.lock().speed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VirtualState> {
        // The state is plain data updated in one statement; a poisoned lock still holds a
        // consistent value, so recover it rather than propagate another thread's panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        self.lock().now()
    }

    fn real_wait_until(&self, t: DateTime<Utc>) -> Duration {
        let state = *self.lock();
        let ahead = (t - state.now()).to_std().unwrap_or(Duration::ZERO);
        if ahead.is_zero() {
            Duration::ZERO
        } else if state.speed == 0.0 {
            // A frozen clock never gets there by itself: wait "forever" (a day at a time).
            Duration::from_secs(86_400)
        } else {
            ahead.div_f64(state.speed)
        }
    }
}

fn sanitize_speed(speed: f64) -> f64 {
    if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_frozen_clock_moves_only_when_told() {
        let clock = VirtualClock::frozen(t0());
        assert_eq!(clock.now(), t0());
        clock.advance(Duration::from_secs(3600));
        assert_eq!(clock.now(), t0() + chrono::Duration::hours(1));
        clock.set(t0());
        assert_eq!(clock.now(), t0());
    }

    #[test]
    fn waits_are_converted_to_real_time_at_the_clock_speed() {
        let fast = VirtualClock::running(t0(), 3600.0);
        let wait = fast.real_wait_until(t0() + chrono::Duration::hours(2));
        assert!(
            wait <= Duration::from_secs(2) && wait > Duration::from_millis(1900),
            "{wait:?}"
        );
        assert_eq!(
            fast.real_wait_until(t0() - chrono::Duration::hours(1)),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_clock_follows_tokio_time_at_its_speed() {
        let clock = VirtualClock::running(t0(), 3600.0);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.now(), t0() + chrono::Duration::hours(2));
        clock.set_speed(0.0);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), t0() + chrono::Duration::hours(2));
    }
}
