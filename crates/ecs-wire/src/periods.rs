//! The period and duration values ECS accepts (docs/ecs-api.md §3.3, §3.5, §3.6). The documented sets
//! differ between sites and doc versions (UNCERTAIN), so validation works against a `Site` and
//! the union of the documented values; the service has the last word.

use serde::{Deserialize, Serialize};

use crate::closed_enum;
use crate::types::PeriodUnit;

closed_enum! {
    /// Which Alibaba Cloud site the account is on: weekly periods exist on the China site only.
    #[derive(Default)]
    pub enum Site {
        /// aliyun.com: Week, Month (and Year for auto-renew).
        #[default]
        China => "china",
        /// alibabacloud.com: Month (and Year for auto-renew).
        International => "international",
    }
}

/// Allowed values per unit for one kind of request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodRule {
    /// Allowed weekly values (empty: weeks not allowed).
    #[serde(default)]
    pub week: Vec<u32>,
    /// Allowed monthly values.
    #[serde(default)]
    pub month: Vec<u32>,
    /// Allowed yearly values (empty: years not allowed).
    #[serde(default)]
    pub year: Vec<u32>,
}

impl PeriodRule {
    /// Whether `value` × `unit` is allowed.
    pub fn allows(&self, value: u32, unit: PeriodUnit) -> bool {
        self.values(unit).contains(&value)
    }

    /// The allowed values for `unit`.
    pub fn values(&self, unit: PeriodUnit) -> &[u32] {
        match unit {
            PeriodUnit::Week => &self.week,
            PeriodUnit::Month => &self.month,
            PeriodUnit::Year => &self.year,
        }
    }

    /// A readable list, e.g. `Month: 1, 2, 3, 6, 12; Year: 1, 2, 3`.
    pub fn describe(&self) -> String {
        PeriodUnit::ALL
            .iter()
            .filter(|unit| !self.values(**unit).is_empty())
            .map(|unit| {
                let values: Vec<String> = self.values(*unit).iter().map(u32::to_string).collect();
                format!("{unit}: {}", values.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn weeks(site: Site) -> Vec<u32> {
    match site {
        Site::China => vec![1, 2, 3, 4],
        Site::International => Vec::new(),
    }
}

/// RenewInstance `Period`/`PeriodUnit`: Week 1-4 (China), Month 1-12, 24, 36, 48, 60.
pub fn renew_rule(site: Site) -> PeriodRule {
    PeriodRule {
        week: weeks(site),
        month: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 24, 36, 48, 60],
        year: Vec::new(),
    }
}

/// ModifyInstanceAutoRenewAttribute `Duration`/`PeriodUnit`: Week 1-4 (China), Month 1, 2, 3,
/// 6, 12, 24, 36, 48, 60, Year 1-5.
pub fn auto_renew_rule(site: Site) -> PeriodRule {
    PeriodRule {
        week: weeks(site),
        month: vec![1, 2, 3, 6, 12, 24, 36, 48, 60],
        year: vec![1, 2, 3, 4, 5],
    }
}

/// DescribeRenewalPrice `Period`/`PriceUnit`: Month 1-9, Year 1-3.
pub fn price_rule() -> PeriodRule {
    PeriodRule {
        week: Vec::new(),
        month: vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
        year: vec![1, 2, 3],
    }
}

/// How to ask DescribeRenewalPrice about a renewal of `period` × `unit`: whole years are
/// priced in years (12 months → 1 Year), since the price API takes at most 9 months.
/// `None` when the price API cannot express it (weeks, 10 or 11 months, 48 or 60 months).
pub fn price_query_for(period: u32, unit: PeriodUnit) -> Option<(u32, PeriodUnit)> {
    let rule = price_rule();
    match unit {
        PeriodUnit::Month if rule.allows(period, PeriodUnit::Month) => {
            Some((period, PeriodUnit::Month))
        }
        PeriodUnit::Month
            if period.is_multiple_of(12) && rule.allows(period / 12, PeriodUnit::Year) =>
        {
            Some((period / 12, PeriodUnit::Year))
        }
        PeriodUnit::Year if rule.allows(period, PeriodUnit::Year) => {
            Some((period, PeriodUnit::Year))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_exist_on_the_china_site_only() {
        assert!(renew_rule(Site::China).allows(2, PeriodUnit::Week));
        assert!(!renew_rule(Site::International).allows(2, PeriodUnit::Week));
        assert!(!renew_rule(Site::China).allows(13, PeriodUnit::Month));
        assert!(auto_renew_rule(Site::China).allows(3, PeriodUnit::Year));
        assert!(!auto_renew_rule(Site::China).allows(4, PeriodUnit::Month));
    }

    #[test]
    fn whole_years_are_priced_in_years() {
        assert_eq!(
            price_query_for(3, PeriodUnit::Month),
            Some((3, PeriodUnit::Month))
        );
        assert_eq!(
            price_query_for(12, PeriodUnit::Month),
            Some((1, PeriodUnit::Year))
        );
        assert_eq!(
            price_query_for(36, PeriodUnit::Month),
            Some((3, PeriodUnit::Year))
        );
        assert_eq!(price_query_for(11, PeriodUnit::Month), None);
        assert_eq!(price_query_for(1, PeriodUnit::Week), None);
    }
}
