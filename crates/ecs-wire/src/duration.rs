//! Human-readable durations in config files and output: `90s`, `15m`, `6h`, `10d`, `1h 30m`.

use std::time::Duration;

/// The longest duration accepted anywhere: a century. Longer ones are typos, and `now ± d`
/// must stay inside the calendar for every duration that parses.
pub const LONGEST: Duration = Duration::from_secs(36_500 * 86_400);

/// A duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDuration {
    /// Not `<number><unit>` terms, or a sum that does not fit.
    #[error(
        "{text:?} is not a duration: write a number and a unit, e.g. \"90s\", \"15m\", \"6h\", \"10d\" or \"1h 30m\""
    )]
    Malformed {
        /// The text as given.
        text: String,
    },
    /// Longer than [`LONGEST`].
    #[error(
        "{text:?} is longer than 36500d (a century), the longest duration accepted: check the number and the unit"
    )]
    TooLong {
        /// The text as given.
        text: String,
    },
}

/// Parses `<number><unit>` terms separated by optional spaces; units `ms`, `s`, `m`, `h`, `d`, `w`.
pub fn parse(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration::Malformed {
        text: text.to_owned(),
    };
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit_secs: u64 = match &rest[..unit_len] {
            "ms" => {
                total = total
                    .checked_add(Duration::from_millis(number))
                    .ok_or_else(invalid)?;
                rest = rest[unit_len..].trim_start();
                continue;
            }
            "s" | "sec" | "secs" => 1,
            "m" | "min" | "mins" => 60,
            "h" | "hour" | "hours" => 3600,
            "d" | "day" | "days" => 86_400,
            "w" | "week" | "weeks" => 7 * 86_400,
            _ => return Err(invalid()),
        };
        let secs = number.checked_mul(unit_secs).ok_or_else(invalid)?;
        total = total
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(invalid)?;
        rest = rest[unit_len..].trim_start();
    }
    if total > LONGEST {
        return Err(InvalidDuration::TooLong {
            text: text.to_owned(),
        });
    }
    Ok(total)
}

/// Formats a duration in the largest whole units, e.g. `1d 2h`, `15m`, `500ms`.
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut parts = Vec::new();
    let mut secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    let millis = d.subsec_millis();
    if millis > 0 {
        parts.push(format!("{millis}ms"));
    }
    parts.join(" ")
}

/// Formats a signed span (e.g. "in 3d 4h" / "2h ago") for tables.
pub fn format_relative(seconds: i64) -> String {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    // Round to minutes for readability.
    let rounded = Duration::from_secs(magnitude.as_secs() / 60 * 60);
    let text = if rounded.is_zero() {
        "<1m".to_owned()
    } else {
        let full = format(rounded);
        // Keep the two largest units.
        full.split(' ').take(2).collect::<Vec<_>>().join(" ")
    };
    if seconds >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("10d").unwrap(), Duration::from_secs(864_000));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("2w").unwrap(), Duration::from_secs(14 * 86_400));
        let overflowing = format!("{}s {}ms", u64::MAX, u64::MAX);
        assert_eq!(parse("36500d").unwrap(), LONGEST);
        assert!(matches!(
            parse("36500d 1s"),
            Err(InvalidDuration::TooLong { .. })
        ));
        assert!(matches!(
            parse("15000000w"),
            Err(InvalidDuration::TooLong { .. })
        ));
        for bad in ["", "15", "m", "15 minutes later", "1y", "-5m", &overflowing] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["1d 2h", "15m", "500ms", "0s", "1h 30m 5s"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
        assert_eq!(format_relative(3 * 86_400 + 4 * 3600 + 59), "in 3d 4h");
        assert_eq!(format_relative(-7200), "2h ago");
        assert_eq!(format_relative(10), "in <1m");
    }
}

/// `#[serde(with = "crate::duration::serde_humantime")]` for `Duration` fields written as
/// human-readable strings.
pub mod serde_humantime {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as e.g. `"1h 30m"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*d))
    }

    /// Reads e.g. `"15m"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }
}
