//! Money as whole minor units (cents) with a currency, so limits and spend totals add up
//! exactly; ECS quotes prices as JSON floats with at most two decimals.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount of money in one currency.
// Not `PartialOrd`/`Ord`: amounts in two currencies have no order, so comparisons go through
// `cents` after the currencies were checked to be the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (hundredths of the currency unit).
    pub cents: i64,
    /// ISO currency code as ECS reports it (`CNY`, `USD`).
    pub currency: String,
}

impl Money {
    /// Nothing, in `currency` (where sums start).
    pub fn zero(currency: &str) -> Money {
        Money {
            cents: 0,
            currency: currency.to_owned(),
        }
    }

    /// Builds an amount from a price as ECS reports it (a float with two decimals at most).
    pub fn from_price(price: f64, currency: impl Into<String>) -> Self {
        Money {
            cents: (price * 100.0).round() as i64,
            currency: currency.into(),
        }
    }

    /// Reads an amount as BSS writes it (`"10000.00"`, `"-11.19"`) as an exact decimal: an
    /// optional sign, digits (thousands separators `,` are dropped: whether the API ever sends
    /// them is UNCERTAIN, docs/v3-and-bss.md §2.2), and at most two decimals. Never a float.
    pub fn parse_decimal(text: &str, currency: &str) -> Result<Money, MoneyError> {
        let bad = || MoneyError {
            text: text.to_owned(),
        };
        let cleaned: String = text.trim().chars().filter(|c| *c != ',').collect();
        let (negative, digits) = match cleaned.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, cleaned.strip_prefix('+').unwrap_or(&cleaned)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 2 {
            return Err(bad());
        }
        let whole: i64 = whole.parse().map_err(|_| bad())?;
        let fraction: i64 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
        let cents = whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(fraction))
            .ok_or_else(bad)?;
        Ok(Money {
            cents: if negative { -cents } else { cents },
            currency: currency.to_owned(),
        })
    }

    /// The amount as a float, for metrics.
    pub fn as_f64(&self) -> f64 {
        self.cents as f64 / 100.0
    }
}

/// An amount that is not a decimal with at most two places.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("amount {text:?} is not a decimal number with at most two decimals")]
pub struct MoneyError {
    /// The text as received.
    pub text: String,
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.cents < 0 { "-" } else { "" };
        let abs = self.cents.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_become_exact_cents() {
        assert_eq!(Money::from_price(3712.8, "CNY").cents, 371_280);
        assert_eq!(Money::from_price(0.1 + 0.2, "USD").cents, 30);
        assert_eq!(Money::from_price(3712.8, "CNY").to_string(), "3712.80 CNY");
        assert_eq!(Money::from_price(-0.05, "CNY").to_string(), "-0.05 CNY");
    }

    #[test]
    fn bss_amounts_are_read_as_exact_decimals() {
        let cents = |t: &str| Money::parse_decimal(t, "CNY").map(|m| m.cents);
        assert_eq!(cents("10000.00"), Ok(1_000_000));
        assert_eq!(cents("-11.19"), Ok(-1_119));
        assert_eq!(cents("0.1"), Ok(10));
        assert_eq!(cents("7"), Ok(700));
        assert_eq!(cents("1,234.56"), Ok(123_456));
        assert_eq!(cents(" 87.28 "), Ok(8_728));
        for bad in [
            "",
            "-",
            "1.234",
            "1e3",
            "abc",
            "1.2.3",
            ".5",
            "99999999999999999999",
        ] {
            assert!(cents(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            Money::parse_decimal("-0.05", "USD").unwrap().to_string(),
            "-0.05 USD"
        );
    }
}
