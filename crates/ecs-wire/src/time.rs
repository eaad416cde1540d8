//! ECS time formats: responses carry minute precision (`2024-04-14T16:00Z`) or second precision
//! (`2024-03-08T08:33:06Z`); request filters take minutes; `Timestamp` takes seconds. Also the
//! subscription calendar's day (UTC+8), which the daemon and the emulator both reckon with.

use chrono::{DateTime, FixedOffset, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc};

/// What PostPaid instances report as their `ExpiredTime` (docs/ecs-api.md §3.1).
pub const POSTPAID_EXPIRED_TIME: &str = "2099-12-31T15:59Z";

/// A time string that is in none of the forms ECS uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not an ECS time (expected yyyy-MM-ddTHH:mmZ or yyyy-MM-ddTHH:mm:ssZ)")]
pub struct InvalidTime {
    /// The text that did not parse.
    pub value: String,
}

/// Offset of the subscription calendar: an expiry falls at 00:00 UTC+8, and the provider's
/// auto-renew deductions run on UTC+8 days.
pub fn utc8() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("+08:00 is a valid offset")
}

/// 00:00 UTC+8 at or before `t` (the start of the subscription calendar's day).
pub fn start_of_day_utc8(t: DateTime<Utc>) -> DateTime<Utc> {
    let local = t.with_timezone(&utc8());
    utc8()
        .from_local_datetime(&local.date_naive().and_time(NaiveTime::MIN))
        .single()
        .expect("fixed offsets have no gaps")
        .with_timezone(&Utc)
}

/// Parses `yyyy-MM-ddTHH:mmZ`, `yyyy-MM-ddTHH:mm:ssZ`, or any RFC 3339 time.
pub fn parse(value: &str) -> Result<DateTime<Utc>, InvalidTime> {
    let trimmed = value.trim();
    for format in ["%Y-%m-%dT%H:%MZ", "%Y-%m-%dT%H:%M:%SZ"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(trimmed, format) {
            return Ok(Utc.from_utc_datetime(&naive));
        }
    }
    DateTime::parse_from_rfc3339(trimmed)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| InvalidTime {
            value: value.to_owned(),
        })
}

/// `yyyy-MM-ddTHH:mmZ`, the form of filter values and of `ExpiredTime` in responses.
pub fn format_minutes(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%MZ").to_string()
}

/// `yyyy-MM-ddTHH:mm:ssZ`, the form of the `Timestamp` request parameter.
pub fn format_seconds(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `t` with seconds and below cut off.
pub fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .unwrap_or(t)
}

/// The first whole minute at or after `t`.
pub fn ceil_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = floor_minute(t);
    if floor == t {
        t
    } else {
        floor + chrono::Duration::minutes(1)
    }
}

/// `t` plus `period` × `unit`, computed on the UTC+8 calendar so expiries stay at 00:00 UTC+8
/// (month ends clamp: Jan 31 + 1 month = Feb 28/29; docs/ecs-api.md §8.2 marks this UNCERTAIN).
pub fn add_period(t: DateTime<Utc>, period: u32, unit: crate::types::PeriodUnit) -> DateTime<Utc> {
    let local = t.with_timezone(&utc8());
    let moved = match unit {
        crate::types::PeriodUnit::Week => Some(local + chrono::Duration::weeks(i64::from(period))),
        crate::types::PeriodUnit::Month => local.checked_add_months(chrono::Months::new(period)),
        crate::types::PeriodUnit::Year => {
            local.checked_add_months(chrono::Months::new(period * 12))
        }
    };
    moved.unwrap_or(local).with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minute_and_second_precision() {
        let minute = parse("2024-04-14T16:00Z").unwrap();
        assert_eq!(minute, Utc.with_ymd_and_hms(2024, 4, 14, 16, 0, 0).unwrap());
        let second = parse("2024-03-08T08:33:06Z").unwrap();
        assert_eq!(second, Utc.with_ymd_and_hms(2024, 3, 8, 8, 33, 6).unwrap());
        let rfc = parse("2024-03-08T16:33:06+08:00").unwrap();
        assert_eq!(rfc, Utc.with_ymd_and_hms(2024, 3, 8, 8, 33, 6).unwrap());
        assert!(parse("yesterday").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn formats_round_trip() {
        let t = Utc.with_ymd_and_hms(2024, 4, 14, 16, 0, 59).unwrap();
        assert_eq!(format_minutes(t), "2024-04-14T16:00Z");
        assert_eq!(format_seconds(t), "2024-04-14T16:00:59Z");
        assert_eq!(floor_minute(t), parse("2024-04-14T16:00Z").unwrap());
        assert_eq!(ceil_minute(t), parse("2024-04-14T16:01Z").unwrap());
        let whole = parse("2024-04-14T16:00Z").unwrap();
        assert_eq!(ceil_minute(whole), whole);
    }
}
