//! The fleet generator: `count` instances spread over regions, expiries, billing methods,
//! auto-renew states and tags, reproducible from a seed, so a 100,000-instance fleet is one line.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::instance::Instance;
use super::settings::GeneratorSpec;
use ecs_wire::time;
use ecs_wire::time::start_of_day_utc8;
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};

const INSTANCE_TYPES: &[&str] = &[
    "ecs.g6.large",
    "ecs.g7.xlarge",
    "ecs.c7.2xlarge",
    "ecs.r6.large",
    "ecs.t6-c1m2.large",
];

/// Generates the instances a generator spec describes.
pub fn generate(
    spec: &GeneratorSpec,
    account: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Instance>, String> {
    let spread_days = checked_spread_days(spec)?;
    let regions: Vec<String> = if spec.regions.is_empty() {
        vec!["cn-hangzhou".into()]
    } else {
        spec.regions.clone()
    };
    let mut draw = Draw {
        spec,
        rng: StdRng::seed_from_u64(spec.seed),
        spread_days,
        today: start_of_day_utc8(now),
        postpaid_expiry: time::parse(time::POSTPAID_EXPIRED_TIME)
            .expect("the PostPaid constant parses"),
    };
    Ok((0..spec.count)
        .map(|n| draw.instance(n, account, &regions[n % regions.len()]))
        .collect())
}

/// The spec's expiry spread in whole days (at least one), once its shares are checked.
fn checked_spread_days(spec: &GeneratorSpec) -> Result<i64, String> {
    let spread = ecs_wire::duration::parse(&spec.expiry_spread)
        .map_err(|e| format!("generator expiry_spread: {e}"))?;
    for (name, share) in [
        ("expired_share", spec.expired_share),
        ("postpaid_share", spec.postpaid_share),
        ("auto_renew_share", spec.auto_renew_share),
        ("not_renewal_share", spec.not_renewal_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            return Err(format!(
                "generator {name} must be between 0 and 1, not {share}"
            ));
        }
    }
    Ok((spread.as_secs() / 86_400).max(1) as i64)
}

/// The seeded draws that make a generator's instances (in a fixed order, so a seed always
/// makes the same fleet).
struct Draw<'a> {
    spec: &'a GeneratorSpec,
    rng: StdRng,
    spread_days: i64,
    today: DateTime<Utc>,
    postpaid_expiry: DateTime<Utc>,
}

impl Draw<'_> {
    /// Instance number `n` (from 0).
    fn instance(&mut self, n: usize, account: &str, region: &str) -> Instance {
        let spec = self.spec;
        let charge_type = if self.rng.random_bool(spec.postpaid_share) {
            ChargeType::PostPaid
        } else {
            ChargeType::PrePaid
        };
        let expiry = match charge_type {
            ChargeType::PostPaid => self.postpaid_expiry,
            ChargeType::PrePaid if self.rng.random_bool(spec.expired_share) => {
                self.today - Duration::days(self.rng.random_range(1..=10))
            }
            ChargeType::PrePaid => {
                self.today + Duration::days(self.rng.random_range(1..=self.spread_days))
            }
        };
        let roll: f64 = self.rng.random();
        let renewal_status = if charge_type == ChargeType::PostPaid {
            RenewalStatus::Normal
        } else if roll < spec.auto_renew_share {
            RenewalStatus::AutoRenewal
        } else if roll < spec.auto_renew_share + spec.not_renewal_share {
            RenewalStatus::NotRenewal
        } else {
            RenewalStatus::Normal
        };
        let tags = spec
            .tags
            .iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(key, values)| {
                let value = values[self.rng.random_range(0..values.len())].clone();
                (key.clone(), value)
            })
            .collect();
        Instance {
            id: format!("{}{:07}", spec.id_prefix, n + 1),
            account: account.to_owned(),
            name: format!("gen-{}", n + 1),
            region: region.to_owned(),
            zone: format!("{region}-{}", ["a", "b", "c"][n % 3]),
            charge_type,
            expiry: vec![(DateTime::<Utc>::MIN_UTC, expiry)],
            tags,
            security_groups: vec![format!("sg-{}", n % 7)],
            instance_type: INSTANCE_TYPES[n % INSTANCE_TYPES.len()].to_owned(),
            resource_group_id: String::new(),
            monthly_price_cents: (spec.monthly_price * 100.0).round() as i64,
            renewal_status,
            auto_renew_duration: 1,
            auto_renew_unit: PeriodUnit::Month,
            deduction_fails: false,
            failed_deductions: 0,
        }
    }
}
