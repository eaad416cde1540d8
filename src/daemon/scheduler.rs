//! When passes run, and the one place that knows cron. A `CronSource` task sleeps until the
//! schedule's next fire time — computed by croner in the configured zone for every fire, so a
//! DST change moves the next fire and nothing has to be re-armed — and pushes a `Tick` into a
//! bounded channel that one loop consumes (a tick that finds the channel full is coalesced and
//! counted). A `Watchdog` computes the expected fire independently and reports one that did
//! not come.
//!
//! The cron library used before (tokio-cron-scheduler) is gone: it polls every 500 ms, and on
//! tokio's timer wheel each poll is two wake-ups (the slot cascade, then the deadline) — four a
//! second while the daemon idles, above its budget of three (BENCHMARKS.md) on its own — and
//! its known defects all had to be worked around here: a timezone job kept the UTC offset it
//! was created with (re-armed at every DST change), repeated jobs could stop for good after a
//! stall, a panicking sync job never ran again, ticks came up to 500 ms late. Sleeping until
//! the next fire costs a few wake-ups a minute. The sleep is taken in slices of at most
//! [`MAX_SLEEP`], each re-reading the wall clock, so a clock stepped by NTP or a host that was
//! suspended delays a fire by one slice at most; fires missed while the process was down are
//! not replayed (the daemon's start-up pass covers them).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config::Schedule;

/// Why a pass starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickReason {
    /// The cron schedule fired.
    Cron,
    /// The watchdog saw a cron tick missing.
    Watchdog,
}

/// A request to run a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// What asked for the pass: the cron schedule or the watchdog.
    pub reason: TickReason,
    /// When it was sent (wall clock).
    pub at: DateTime<Utc>,
}

/// The longest the cron source sleeps before it reads the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The first fire time strictly after `after`, evaluated in `tz` (croner handles DST gaps
/// and repeats).
pub fn next_fire(
    schedule: &Schedule,
    tz: chrono_tz::Tz,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule
        .cron
        .find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The typical interval between fires (for metrics and readiness), measured at `now`.
pub fn typical_interval(schedule: &Schedule, tz: chrono_tz::Tz, now: DateTime<Utc>) -> Duration {
    let first = next_fire(schedule, tz, now);
    let second = first.and_then(|f| next_fire(schedule, tz, f));
    match (first, second) {
        (Some(a), Some(b)) => (b - a).to_std().unwrap_or(Duration::from_secs(900)),
        _ => Duration::from_secs(900),
    }
}

/// A schedule in its zone.
type Timetable = (Schedule, chrono_tz::Tz);

/// The running cron source: a task that ticks at the schedule's fire times.
pub struct CronSource {
    timetable: watch::Sender<Timetable>,
    task: tokio::task::JoinHandle<()>,
}

/// Where a cron source sends its ticks, and what it counts.
pub struct TickSink {
    /// The loop's bounded channel (capacity one: ticks during a pass fold into one).
    pub tx: mpsc::Sender<Tick>,
    /// Ticks that found the channel full.
    pub coalesced: IntCounter,
    /// When the source last fired (milliseconds since the epoch; 0 before the first), for the
    /// watchdog: a coalesced tick fired too.
    pub last_fire: Arc<AtomicI64>,
}

impl CronSource {
    /// Starts ticking at `schedule`'s fire times in `tz`, read off `wall`.
    pub fn start(
        schedule: Schedule,
        tz: chrono_tz::Tz,
        wall: Arc<dyn Clock>,
        sink: TickSink,
    ) -> CronSource {
        let (timetable, changes) = watch::channel((schedule, tz));
        let task = tokio::spawn(fire(changes, wall, sink));
        CronSource { timetable, task }
    }

    /// Switches to a new schedule or timezone (config reload); the next fire is computed anew.
    pub fn replace(&self, schedule: Schedule, tz: chrono_tz::Tz) {
        self.timetable.send_replace((schedule, tz));
    }

    /// Stops ticking.
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The cron source's task: sleep until the next fire (in slices), tick, repeat.
async fn fire(mut changes: watch::Receiver<Timetable>, wall: Arc<dyn Clock>, sink: TickSink) {
    let mut after = wall.now();
    loop {
        let (schedule, tz) = changes.borrow_and_update().clone();
        let next = next_fire(&schedule, tz, after);
        let wait = next.map_or(MAX_SLEEP, |at| wall.real_wait_until(at).min(MAX_SLEEP));
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                after = wall.now();
                continue;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let now = wall.now();
        let Some(due) = next.filter(|at| *at <= now) else {
            continue;
        };
        // Fires passed while the host slept are not made up one by one: one tick stands for
        // them, and the next fire is the first after now.
        after = due.max(now);
        sink.last_fire
            .store(now.timestamp_millis(), Ordering::SeqCst);
        let tick = Tick {
            reason: TickReason::Cron,
            at: now,
        };
        match sink.tx.try_send(tick) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => sink.coalesced.inc(),
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Watches for cron ticks that do not come: from the last fire, computes the next expected
/// fire independently; if it has passed by more than `margin` with no fire since, reports it.
#[derive(Debug, Clone)]
pub struct Watchdog {
    schedule: Schedule,
    tz: chrono_tz::Tz,
    margin: chrono::Duration,
    last: DateTime<Utc>,
}

impl Watchdog {
    /// A watchdog that starts counting at `now`; the margin is half the interval, between
    /// 2 s and 60 s (the scheduler polls every 500 ms).
    pub fn new(schedule: Schedule, tz: chrono_tz::Tz, now: DateTime<Utc>) -> Watchdog {
        let interval = typical_interval(&schedule, tz, now);
        let margin = (interval / 2).clamp(Duration::from_secs(2), Duration::from_secs(60));
        Watchdog {
            schedule,
            tz,
            margin: chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::seconds(30)),
            last: now,
        }
    }

    /// The cron job fired (or a pass ran for its fire time) at `at`.
    pub fn fired(&mut self, at: DateTime<Utc>) {
        if at > self.last {
            self.last = at;
        }
    }

    /// When the next fire is expected.
    pub fn expected(&self) -> Option<DateTime<Utc>> {
        next_fire(&self.schedule, self.tz, self.last)
    }

    /// If a fire is overdue by more than the margin at `now`, its expected time; the watchdog
    /// then counts it as handled.
    pub fn check(&mut self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let expected = self.expected()?;
        if now > expected + self.margin {
            self.last = now;
            Some(expected)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::time;

    fn t(text: &str) -> DateTime<Utc> {
        time::parse(text).unwrap()
    }

    #[test]
    fn fire_times_follow_the_zone_across_a_dst_change() {
        // New York moves from UTC-5 to UTC-4 on 2026-03-08 at 02:00 local.
        let schedule = Schedule::parse("0 0 9 * * *").unwrap();
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            next_fire(&schedule, ny, t("2026-03-07T00:00:00Z")),
            Some(t("2026-03-07T14:00:00Z"))
        );
        assert_eq!(
            next_fire(&schedule, ny, t("2026-03-08T00:00:00Z")),
            Some(t("2026-03-08T13:00:00Z"))
        );
    }

    #[test]
    fn a_fire_time_in_the_skipped_hour_still_fires_once() {
        let schedule = Schedule::parse("0 30 2 * * *").unwrap();
        let ny = chrono_tz::America::New_York;
        let fire = next_fire(&schedule, ny, t("2026-03-08T05:00:00Z")).unwrap();
        assert!(
            fire > t("2026-03-08T05:00:00Z") && fire < t("2026-03-09T08:00:00Z"),
            "{fire}"
        );
    }

    #[test]
    fn the_watchdog_reports_a_tick_that_did_not_come() {
        let schedule = Schedule::parse("0 */15 * * * *").unwrap();
        let start = t("2026-03-10T00:01:00Z");
        let mut dog = Watchdog::new(schedule, chrono_tz::UTC, start);
        assert_eq!(dog.expected(), Some(t("2026-03-10T00:15:00Z")));
        assert_eq!(
            dog.check(t("2026-03-10T00:15:30Z")),
            None,
            "within the margin"
        );
        dog.fired(t("2026-03-10T00:15:00Z"));
        assert_eq!(dog.check(t("2026-03-10T00:31:00Z")), None);
        // The scheduler stalls: no fire at 00:30 or after.
        assert_eq!(
            dog.check(t("2026-03-10T00:31:01Z")),
            Some(t("2026-03-10T00:30:00Z"))
        );
        assert_eq!(dog.check(t("2026-03-10T00:31:02Z")), None, "reported once");
        assert_eq!(
            dog.check(t("2026-03-10T00:46:02Z")),
            Some(t("2026-03-10T00:45:00Z")),
            "and again next time"
        );
    }

    #[test]
    fn the_interval_is_measured_from_the_schedule() {
        let every_two = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(
            typical_interval(&every_two, chrono_tz::UTC, t("2026-03-10T00:00:00Z")),
            Duration::from_secs(2)
        );
        let quarter = Schedule::parse("0 */15 * * * *").unwrap();
        assert_eq!(
            typical_interval(&quarter, chrono_tz::UTC, t("2026-03-10T00:00:00Z")),
            Duration::from_secs(900)
        );
    }

    use crate::clock::VirtualClock;

    /// A cron source over a virtual wall clock that runs with tokio's (paused) time.
    fn source(
        schedule: &str,
        wall: Arc<VirtualClock>,
    ) -> (CronSource, mpsc::Receiver<Tick>, IntCounter) {
        let (tx, rx) = mpsc::channel(1);
        let coalesced = IntCounter::new("c", "c").unwrap();
        let sink = TickSink {
            tx,
            coalesced: coalesced.clone(),
            last_fire: Arc::new(AtomicI64::new(0)),
        };
        let cron = CronSource::start(
            Schedule::parse(schedule).unwrap(),
            chrono_tz::UTC,
            wall,
            sink,
        );
        (cron, rx, coalesced)
    }

    #[tokio::test(start_paused = true)]
    async fn the_source_ticks_at_each_fire_time_and_follows_a_new_schedule() {
        let wall = Arc::new(VirtualClock::running(t("2026-03-10T00:00:50Z"), 1.0));
        let (cron, mut rx, _) = source("0 */15 * * * *", wall.clone());
        let first = rx.recv().await.unwrap();
        assert_eq!(first.reason, TickReason::Cron);
        assert_eq!(
            first.at,
            t("2026-03-10T00:15:00Z"),
            "on time, to the second"
        );
        let second = rx.recv().await.unwrap();
        assert_eq!(second.at, t("2026-03-10T00:30:00Z"));
        cron.replace(Schedule::parse("0 0 * * * *").unwrap(), chrono_tz::UTC);
        let third = rx.recv().await.unwrap();
        assert_eq!(third.at, t("2026-03-10T01:00:00Z"), "the new schedule");
        cron.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_that_finds_the_channel_full_is_coalesced_and_a_clock_jump_is_one_tick() {
        let wall = Arc::new(VirtualClock::running(t("2026-03-10T00:00:00Z"), 1.0));
        let (cron, mut rx, coalesced) = source("0 * * * * *", wall.clone());
        // Nobody reads for three minutes: one tick waits, two are coalesced.
        tokio::time::sleep(Duration::from_secs(185)).await;
        assert_eq!(coalesced.get(), 2);
        assert_eq!(rx.recv().await.unwrap().at, t("2026-03-10T00:01:00Z"));
        // The wall clock jumps two hours (a suspended host): one tick, not 120.
        wall.advance(Duration::from_secs(7200));
        let tick = tokio::time::timeout(MAX_SLEEP * 2, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(tick.at >= t("2026-03-10T02:03:00Z"), "{tick:?}");
        assert_eq!(coalesced.get(), 2, "the jump made no pile of ticks");
        cron.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn across_a_dst_change_the_source_fires_at_the_same_local_hour() {
        let wall = Arc::new(VirtualClock::running(t("2026-03-07T13:00:00Z"), 1.0));
        let (tx, mut rx) = mpsc::channel(1);
        let sink = TickSink {
            tx,
            coalesced: IntCounter::new("c", "c").unwrap(),
            last_fire: Arc::new(AtomicI64::new(0)),
        };
        let schedule = Schedule::parse("0 0 9 * * *").unwrap();
        let cron = CronSource::start(schedule, chrono_tz::America::New_York, wall, sink);
        // 09:00 in New York: UTC-5 before 2026-03-08 02:00 local, UTC-4 after.
        assert_eq!(rx.recv().await.unwrap().at, t("2026-03-07T14:00:00Z"));
        assert_eq!(rx.recv().await.unwrap().at, t("2026-03-08T13:00:00Z"));
        cron.shutdown().await;
    }
}
