//! When passes run. The only importer of tokio-cron-scheduler, kept to what it does well: its
//! async cron job only pushes a `Tick` into a bounded channel that one loop consumes (a tick
//! that finds the channel full is coalesced and counted). Its known defects are handled here:
//! a timezone job keeps the UTC offset it was created with, so the job is re-armed when the
//! zone's offset changes (DST); repeated jobs are never used; and a `Watchdog` computes the next
//! fire time independently with croner and reports a tick that did not come in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Offset, TimeZone, Utc};
use prometheus::IntCounter;
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};
use uuid::Uuid;

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

/// The scheduler could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("the cron scheduler failed while {what}: {source}")]
pub struct SchedulerError {
    what: &'static str,
    /// The library's error (a fieldless enum: its name is all it says).
    #[source]
    source: tokio_cron_scheduler::JobSchedulerError,
}

fn scheduler_error(
    what: &'static str,
) -> impl Fn(tokio_cron_scheduler::JobSchedulerError) -> SchedulerError {
    move |source| SchedulerError { what, source }
}

/// The zone's UTC offset at `now`, in seconds.
pub fn offset_at(tz: chrono_tz::Tz, now: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&now.naive_utc())
        .fix()
        .local_minus_utc()
}

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

/// The running cron job.
pub struct CronSource {
    scheduler: JobScheduler,
    job: Option<Uuid>,
    schedule: Schedule,
    tz: chrono_tz::Tz,
    armed_offset: i32,
    tx: mpsc::Sender<Tick>,
    coalesced: IntCounter,
    last_fire: Arc<AtomicI64>,
}

impl CronSource {
    /// Starts the scheduler with one async job for `schedule` in `tz`.
    pub async fn start(
        schedule: Schedule,
        tz: chrono_tz::Tz,
        tx: mpsc::Sender<Tick>,
        coalesced: IntCounter,
        last_fire: Arc<AtomicI64>,
        now: DateTime<Utc>,
    ) -> Result<CronSource, SchedulerError> {
        let scheduler = JobScheduler::new()
            .await
            .map_err(scheduler_error("starting"))?;
        let mut source = CronSource {
            scheduler,
            job: None,
            schedule,
            tz,
            armed_offset: offset_at(tz, now),
            tx,
            coalesced,
            last_fire,
        };
        source.arm(now).await?;
        source
            .scheduler
            .start()
            .await
            .map_err(scheduler_error("starting"))?;
        Ok(source)
    }

    async fn arm(&mut self, now: DateTime<Utc>) -> Result<(), SchedulerError> {
        if let Some(old) = self.job.take() {
            self.scheduler
                .remove(&old)
                .await
                .map_err(scheduler_error("removing the old job"))?;
        }
        let tx = self.tx.clone();
        let coalesced = self.coalesced.clone();
        let last_fire = self.last_fire.clone();
        // An async job: a panic in it cannot poison the scheduler (sync jobs never run again).
        let job = Job::new_async_tz(self.schedule.text.as_str(), self.tz, move |_, _| {
            let tx = tx.clone();
            let coalesced = coalesced.clone();
            let last_fire = last_fire.clone();
            Box::pin(async move {
                #[allow(clippy::disallowed_methods)] // the wall clock is what cron is about
                let at = Utc::now();
                last_fire.store(at.timestamp_millis(), Ordering::SeqCst);
                match tx.try_send(Tick {
                    reason: TickReason::Cron,
                    at,
                }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => coalesced.inc(),
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            })
        })
        .map_err(scheduler_error("creating the job"))?;
        self.job = Some(
            self.scheduler
                .add(job)
                .await
                .map_err(scheduler_error("adding the job"))?,
        );
        self.armed_offset = offset_at(self.tz, now);
        tracing::debug!(schedule = %self.schedule.text, tz = %self.tz, offset = self.armed_offset, "cron job armed");
        Ok(())
    }

    /// Re-arms the job when the zone's offset differs from the one it was armed with (a DST
    /// change); returns whether it did.
    pub async fn rearm_if_offset_changed(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<bool, SchedulerError> {
        if offset_at(self.tz, now) == self.armed_offset {
            return Ok(false);
        }
        tracing::info!(tz = %self.tz, old_offset = self.armed_offset, new_offset = offset_at(self.tz, now), "timezone offset changed: re-arming the cron job");
        self.arm(now).await?;
        Ok(true)
    }

    /// Switches to a new schedule or timezone (config reload).
    pub async fn replace(
        &mut self,
        schedule: Schedule,
        tz: chrono_tz::Tz,
        now: DateTime<Utc>,
    ) -> Result<(), SchedulerError> {
        self.schedule = schedule;
        self.tz = tz;
        self.arm(now).await
    }

    /// For tests: pretend the job was armed with another offset.
    #[cfg(test)]
    pub fn set_armed_offset_for_test(&mut self, offset: i32) {
        self.armed_offset = offset;
    }

    /// The current job id (tests check that a re-arm made a new job).
    #[cfg(test)]
    pub fn job_id(&self) -> Option<Uuid> {
        self.job
    }

    /// Stops the scheduler.
    pub async fn shutdown(mut self) {
        if let Err(error) = self.scheduler.shutdown().await {
            tracing::warn!(?error, "stopping the cron scheduler failed");
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
        assert_eq!(offset_at(ny, t("2026-03-08T06:00:00Z")), -5 * 3600);
        assert_eq!(offset_at(ny, t("2026-03-08T08:00:00Z")), -4 * 3600);
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

    #[tokio::test]
    async fn the_job_is_re_armed_when_the_offset_changes() {
        let schedule = Schedule::parse("0 0 9 * * *").unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let now = t("2026-03-08T12:00:00Z");
        let counter = IntCounter::new("c", "c").unwrap();
        let mut source = CronSource::start(
            schedule,
            chrono_tz::America::New_York,
            tx,
            counter,
            Arc::new(AtomicI64::new(0)),
            now,
        )
        .await
        .unwrap();
        let first = source.job_id();
        assert!(
            !source.rearm_if_offset_changed(now).await.unwrap(),
            "same offset: kept"
        );
        // As if the job had been armed before the change (UTC-5).
        source.set_armed_offset_for_test(-5 * 3600);
        assert!(source.rearm_if_offset_changed(now).await.unwrap());
        assert_ne!(source.job_id(), first, "a new job with the new offset");
        source.shutdown().await;
    }
}
