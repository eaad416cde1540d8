//! An emulated ECS instance: where it lives, its expiry history (a renewal shows after a delay),
//! billing and auto-renew state, and what its life looks like at a moment (active, expired with
//! a `financial` lock, released). The world keeps instances; the fleet generator makes them.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::settings::Settings;
pub use ecs_wire::time::add_period;
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};

/// An emulated ECS instance: where it lives, its expiry history, billing and auto-renew state.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    /// The instance id; unique across every account and region.
    pub id: String,
    /// Owning account.
    pub account: String,
    /// The InstanceName DescribeInstances shows (fleet-file default: the id).
    pub name: String,
    /// The region the instance lives in, e.g. cn-hangzhou.
    pub region: String,
    /// The zone within the region (ZoneId); fleet-file instances default to `<region>-a`.
    pub zone: String,
    /// Billing method.
    pub charge_type: ChargeType,
    /// (visible from, expiry): the expiry history; the last entry is the true expiry, the last
    /// one visible at `now` is what DescribeInstances shows.
    pub expiry: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Tags as (key, value) pairs; DescribeInstances shows them and its `Tag.N` filters match.
    pub tags: Vec<(String, String)>,
    /// Security groups.
    pub security_groups: Vec<String>,
    /// The instance type, e.g. ecs.g6.large; InstanceTypeFamily is derived from it.
    pub instance_type: String,
    /// Resource group.
    pub resource_group_id: String,
    /// Price per month in cents.
    pub monthly_price_cents: i64,
    /// Auto-renew switch.
    pub renewal_status: RenewalStatus,
    /// Auto-renew duration.
    pub auto_renew_duration: u32,
    /// Auto-renew unit.
    pub auto_renew_unit: PeriodUnit,
    /// Whether the provider's deductions fail for this instance.
    pub deduction_fails: bool,
    /// Failed provider deductions so far.
    pub failed_deductions: u32,
}

/// What an instance's life looks like at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Paid for.
    Active,
    /// Past expiry, not yet released.
    Expired,
    /// `release_after` (default 15 days) past expiry: ECS calls no longer find it.
    Released,
}

impl Instance {
    /// The true (paid-through) expiry.
    pub fn true_expiry(&self) -> DateTime<Utc> {
        self.expiry
            .last()
            .map(|(_, e)| *e)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The expiry DescribeInstances shows at `now` (a renewal shows after a delay).
    pub fn shown_expiry(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.expiry
            .iter()
            .rev()
            .find(|(visible_from, _)| *visible_from <= now)
            .or(self.expiry.first())
            .map(|(_, e)| *e)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Active, expired or released at `now`.
    pub fn lifecycle(&self, now: DateTime<Utc>, settings: &Settings) -> Lifecycle {
        if self.charge_type == ChargeType::PostPaid {
            return Lifecycle::Active;
        }
        let expiry = self.true_expiry();
        if now < expiry {
            Lifecycle::Active
        } else if now
            < expiry + Duration::from_std(settings.release_after).unwrap_or(Duration::days(15))
        {
            Lifecycle::Expired
        } else {
            Lifecycle::Released
        }
    }

    /// The API `Status` and lock reasons at `now`: an expired instance is Stopped with a
    /// `financial` lock, except that with auto-renew on it keeps running for up to 15 days.
    pub fn status(
        &self,
        now: DateTime<Utc>,
        settings: &Settings,
    ) -> (&'static str, Vec<&'static str>) {
        match self.lifecycle(now, settings) {
            Lifecycle::Expired if self.renewal_status == RenewalStatus::AutoRenewal => {
                ("Running", Vec::new())
            }
            Lifecycle::Expired => ("Stopped", vec!["financial"]),
            _ => ("Running", Vec::new()),
        }
    }

    /// The price of a renewal in cents: months at the monthly price, years (and whole years
    /// of months: 12 months are one year, as the price API, which takes 1-9 months, quotes
    /// them) at 12 months less 15 %, weeks at a quarter month. Returns (trade, original).
    pub fn price_cents(&self, period: u32, unit: PeriodUnit) -> (i64, i64) {
        if unit == PeriodUnit::Month && period >= 12 && period.is_multiple_of(12) {
            return self.price_cents(period / 12, PeriodUnit::Year);
        }
        let monthly = self.monthly_price_cents;
        let period = i64::from(period);
        match unit {
            PeriodUnit::Month => (monthly * period, monthly * period),
            PeriodUnit::Year => {
                let original = monthly * 12 * period;
                (original * 85 / 100, original)
            }
            PeriodUnit::Week => ((monthly * period + 3) / 4, (monthly * period + 3) / 4),
        }
    }
}
