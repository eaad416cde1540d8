//! Money as whole minor units (cents) with a currency, so limits and spend totals add up
//! exactly; ECS quotes prices as JSON floats with at most two decimals.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount of money in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Money {
    /// Minor units (hundredths of the currency unit).
    pub cents: i64,
    /// ISO currency code as ECS reports it (`CNY`, `USD`).
    pub currency: String,
}

impl Money {
    /// Builds an amount from a price as ECS reports it (a float with two decimals at most).
    pub fn from_price(price: f64, currency: impl Into<String>) -> Self {
        Money {
            cents: (price * 100.0).round() as i64,
            currency: currency.into(),
        }
    }

    /// The amount as a float, for metrics.
    pub fn as_f64(&self) -> f64 {
        self.cents as f64 / 100.0
    }
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
}
