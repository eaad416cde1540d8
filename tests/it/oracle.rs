//! The reference model of what an account will be charged: small, slow and obviously right,
//! sharing no code with the daemon's forecast (`policy::funds`, `reconcile::funds`) nor its
//! decisions. It walks the window moment by moment — each provider deduction morning (08:00
//! UTC+8) and each time ecs-renewd's renewal falls due — from the fleet as the emulator holds
//! it and the policies as the config states them: at every deduction morning each
//! auto-renewing instance whose schedule tries that day, before its expiry, is charged its
//! auto-renew duration; once an instance's renewal by ecs-renewd is due, it is charged its
//! policy's period. Every charge moves the instance's expiry on, so a cycle is renewed once,
//! by whichever came first (the provider when both fall at one moment). The first moment the
//! running total exceeds the balance is the shortfall.
//!
//! The rules it follows are the documented ones (docs/v3-and-bss.md §3.1, docs/configuration.md),
//! written out again here on their own: a deduction schedule is a list of days relative to the
//! expiry's UTC+8 day; a month is a calendar month in UTC+8; a fallback waits a day after the
//! first attempt and never runs between 08:00 and 18:00 UTC+8.

use chrono::{DateTime, Duration, FixedOffset, Months, NaiveTime, TimeZone, Timelike, Utc};
use ecs_wire::types::PeriodUnit;

/// UTC+8, where Alibaba Cloud's days begin.
fn east8() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

/// Midnight UTC+8 of the day `t` falls on.
fn day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let local = t.with_timezone(&east8());
    east8()
        .from_local_datetime(&local.date_naive().and_time(NaiveTime::MIN))
        .unwrap()
        .with_timezone(&Utc)
}

/// `t` moved on by `n` units, on the UTC+8 calendar.
fn plus(t: DateTime<Utc>, n: u32, unit: PeriodUnit) -> DateTime<Utc> {
    let local = t.with_timezone(&east8());
    let moved = match unit {
        PeriodUnit::Week => local + Duration::days(7 * i64::from(n)),
        PeriodUnit::Month => local.checked_add_months(Months::new(n)).unwrap(),
        PeriodUnit::Year => local.checked_add_months(Months::new(12 * n)).unwrap(),
    };
    moved.with_timezone(&Utc)
}

/// The provider's two documented deduction schedules, as days relative to the expiry's UTC+8
/// day, each at 08:00 UTC+8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// T−9 to T+9, daily.
    NineDaysDaily,
    /// T−3, T−1, T, T+6, T+14.
    FiveAttempts,
}

impl Schedule {
    /// The days the provider tries, relative to the expiry's day.
    fn days(self) -> Vec<i64> {
        match self {
            Schedule::NineDaysDaily => (-9..=9).collect(),
            Schedule::FiveAttempts => vec![-3, -1, 0, 6, 14],
        }
    }

    /// Whether the provider tries to renew an instance expiring at `expiry` at the moment `m`
    /// (it only ever tries before the expiry).
    fn tries(self, expiry: DateTime<Utc>, m: DateTime<Utc>) -> bool {
        // The attempt is at 08:00:00 sharp; a moment after it (a pass a second later) is not.
        if m != day_start(m) + Duration::hours(8) || m >= expiry {
            return false;
        }
        let local = m.with_timezone(&east8());
        let offset = (local.date_naive() - expiry.with_timezone(&east8()).date_naive()).num_days();
        self.days().contains(&offset)
    }

    /// The first attempt for an expiry.
    fn first(self, expiry: DateTime<Utc>) -> DateTime<Utc> {
        day_start(expiry) + Duration::days(self.days()[0]) + Duration::hours(8)
    }

    /// Whether any attempt is left at or after `from`, before the expiry.
    fn any_left(self, expiry: DateTime<Utc>, from: DateTime<Utc>) -> bool {
        self.days()
            .iter()
            .map(|d| day_start(expiry) + Duration::days(*d) + Duration::hours(8))
            .any(|a| a >= from && a < expiry)
    }

    /// The last attempt before the expiry.
    fn last_before(self, expiry: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.days()
            .iter()
            .map(|d| day_start(expiry) + Duration::days(*d) + Duration::hours(8))
            .filter(|a| *a < expiry)
            .max()
    }
}

/// How ecs-renewd renews an instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Daemon {
    /// It does not.
    Never,
    /// A `renew` policy: `before` the expiry; the first cycle not before `first_at` (a backoff),
    /// when given.
    Renew {
        period: u32,
        unit: PeriodUnit,
        before: Duration,
        first_at: Option<DateTime<Utc>>,
    },
    /// An `auto-renew` policy's fallback, `after` the provider's first attempt; the first
    /// cycle not before `first_at` (a backoff), when given.
    Fallback {
        period: u32,
        unit: PeriodUnit,
        after: Duration,
        first_at: Option<DateTime<Utc>>,
    },
}

/// One instance as the oracle sees it.
#[derive(Debug, Clone)]
pub struct Subject {
    pub id: String,
    pub expiry: DateTime<Utc>,
    /// The provider's auto-renew (duration, unit) when it is on (or the policy switches it on).
    pub provider: Option<(u32, PeriodUnit)>,
    pub daemon: Daemon,
    /// Price in cents of renewing for (n, unit): what the cloud charges.
    pub prices: Vec<((u32, PeriodUnit), i64)>,
}

impl Subject {
    fn price(&self, n: u32, unit: PeriodUnit) -> i64 {
        self.prices
            .iter()
            .find(|(k, _)| *k == (n, unit))
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("{}: no price for {n} {unit}", self.id))
    }
}

/// A charge the oracle expects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expected {
    pub at: DateTime<Utc>,
    pub id: String,
    /// `ecs-renewd` or `auto-renew`.
    pub by: &'static str,
    pub cents: i64,
}

/// The fallback point of an expiry: the first attempt plus `after`, moved to 18:00 UTC+8 when
/// it falls between 08:00 and 18:00 UTC+8.
fn fallback_at(schedule: Schedule, expiry: DateTime<Utc>, after: Duration) -> DateTime<Utc> {
    let point = schedule.first(expiry) + after;
    let hour = point.with_timezone(&east8()).hour();
    if (8..18).contains(&hour) {
        day_start(point) + Duration::hours(18)
    } else {
        point
    }
}

/// When the daemon renews the cycle ending at `expiry`, considering it from `from` (`None`:
/// it does not).
fn daemon_due(
    subject: &Subject,
    schedule: Schedule,
    expiry: DateTime<Utc>,
    from: DateTime<Utc>,
    first_cycle: bool,
) -> Option<(DateTime<Utc>, u32, PeriodUnit)> {
    match subject.daemon {
        Daemon::Never => None,
        Daemon::Renew {
            period,
            unit,
            before,
            first_at,
        } => {
            let mut at = (expiry - before).max(from);
            if first_cycle && let Some(f) = first_at {
                at = at.max(f);
            }
            Some((at, period, unit))
        }
        Daemon::Fallback {
            period,
            unit,
            after,
            first_at,
        } => {
            let at = if schedule.any_left(expiry, from) {
                fallback_at(schedule, expiry, after)
            } else {
                // No attempt left: once the day of the last one is over, at the latest at the
                // expiry (at once when there was never one).
                schedule
                    .last_before(expiry)
                    .map(|a| day_start(a) + Duration::hours(18))
                    .unwrap_or(from)
                    .min(expiry)
            };
            let mut at = at.max(from);
            if first_cycle && let Some(f) = first_at {
                at = at.max(f);
            }
            Some((at, period, unit))
        }
    }
}

/// The moment after `m` the walk looks at next: the next deduction morning (08:00 UTC+8, when
/// alone the provider acts), or the daemon's due time when that comes sooner. Nothing happens
/// between the two, so the walk steps slot by slot instead of minute by minute.
fn next_moment(m: DateTime<Utc>, due: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let eight = day_start(m) + Duration::hours(8);
    let slot = if eight > m {
        eight
    } else {
        eight + Duration::days(1)
    };
    match due {
        Some(at) if at > m && at < slot => at,
        _ => slot,
    }
}

/// Every charge of `subjects` from `now` to `until`, walked slot by slot.
pub fn charges(
    subjects: &[Subject],
    schedule: Schedule,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<Expected> {
    let mut out = Vec::new();
    for subject in subjects {
        let mut expiry = subject.expiry;
        let mut first_cycle = true;
        let mut cycle_from = now;
        let mut m = now;
        while m <= until {
            let due = daemon_due(subject, schedule, expiry, cycle_from, first_cycle);
            if let Some((duration, unit)) = subject.provider
                && schedule.tries(expiry, m)
            {
                out.push(Expected {
                    at: m,
                    id: subject.id.clone(),
                    by: "auto-renew",
                    cents: subject.price(duration, unit),
                });
                expiry = plus(expiry, duration, unit);
                first_cycle = false;
                cycle_from = m + Duration::seconds(1);
            } else if let Some((at, period, unit)) = due
                && m >= at
            {
                out.push(Expected {
                    at: m,
                    id: subject.id.clone(),
                    by: "ecs-renewd",
                    cents: subject.price(period, unit),
                });
                let base = if m < expiry { expiry } else { day_start(m) };
                expiry = plus(base, period, unit);
                first_cycle = false;
                cycle_from = m + Duration::seconds(1);
            }
            let due = daemon_due(subject, schedule, expiry, cycle_from, first_cycle);
            m = next_moment(m, due.map(|d| d.0));
        }
    }
    out.sort();
    out
}

/// The first moment the running total of `charges` exceeds `balance` cents.
pub fn shortfall(charges: &[Expected], balance: i64) -> Option<DateTime<Utc>> {
    let mut total = 0;
    let mut times: Vec<DateTime<Utc>> = charges.iter().map(|c| c.at).collect();
    times.dedup();
    for t in times {
        total += charges
            .iter()
            .filter(|c| c.at == t)
            .map(|c| c.cents)
            .sum::<i64>();
        if total > balance {
            return Some(t);
        }
    }
    None
}

/// The end of a forecast window: the next 08:00 UTC+8 after `now`, plus `horizon`.
pub fn window_end(now: DateTime<Utc>, horizon: Duration) -> DateTime<Utc> {
    let eight = day_start(now) + Duration::hours(8);
    let next = if eight > now {
        eight
    } else {
        eight + Duration::days(1)
    };
    next + horizon
}
