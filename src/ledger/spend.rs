//! What today's belts count: the charges counted toward a day (known or suspected), their
//! spend per currency, and the charges made unpriced.

use std::collections::BTreeMap;

use super::rows::Read;
use super::sql::args;
use super::{Ledger, LedgerError};
use crate::cloud::types::PeriodUnit;

/// What a day's belts have counted (see [`Ledger::day_totals`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayTotals {
    /// Charges counted (each intent once).
    pub renewals: u32,
    /// Their spend per currency, in cents (priced charges only).
    pub spend: BTreeMap<String, i64>,
    /// Counted charges without a price (see [`Ledger::unpriced_charges`]).
    pub unpriced: usize,
}

/// A counted charge made without a price quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpricedCharge {
    /// Its intent.
    pub intent_id: i64,
    /// Account entry that made it.
    pub account: String,
    /// The instance's region, where its price is asked.
    pub region: String,
    /// The ECS instance id that was charged.
    pub instance_id: String,
    /// Length charged.
    pub period: u32,
    /// Unit charged.
    pub unit: PeriodUnit,
}

impl Ledger {
    /// Charges counted toward `day` so far, each intent once, with the attempts still out
    /// (they may have charged; the next pass counts them).
    pub fn renewals_counted(&self, day: &str) -> Result<u32, LedgerError> {
        self.first_row(
            Read::of("reading today's renewals", "renewal_days"),
            "SELECT COALESCE((SELECT renewals FROM renewal_days WHERE day = ?1), 0)
                  + (SELECT COUNT(*) FROM intents WHERE status = 'sent' AND counted_day IS NULL) AS n",
            args![day],
            |r| r.get("n"),
        )
        .map(Option::unwrap_or_default)
    }

    /// What `day`'s belts have counted so far: renewals, spend per currency, and the counted
    /// charges that were made unpriced (a spend limit switched on later needs their price).
    pub fn day_totals(&self, day: &str) -> Result<DayTotals, LedgerError> {
        let renewals = self.renewals_counted(day)?;
        let read = Read::of("reading today's totals", "spend");
        let mut spend: BTreeMap<String, i64> = self
            .rows(
                read,
                "SELECT currency, cents FROM spend WHERE day = ?1",
                args![day],
                |r| Ok((r.get("currency")?, r.get("cents")?)),
            )?
            .into_iter()
            .collect();
        // Attempts still out (a pass in flight, or a process that stopped while one was out)
        // may have charged: counted here too (`renewals_counted` counts them), so no reader of
        // the belts misses them before the next pass marks and counts them.
        self.each_row(
            Read::of("reading today's totals", "intents"),
            "SELECT id, price_cents, currency FROM intents WHERE status = 'sent' AND counted_day IS NULL",
            args![],
            |r| {
                if let (Some(cents), Some(currency)) = (r.get::<Option<i64>>("price_cents")?, r.get("currency")?) {
                    let total = spend.entry(currency).or_default();
                    *total = total.saturating_add(cents);
                }
                Ok(())
            },
        )?;
        let unpriced: u32 = self
            .first_row(
                Read::of("reading today's totals", "intents"),
                "SELECT COUNT(*) AS n FROM intents WHERE counted_day = ?1 AND price_cents IS NULL",
                args![day],
                |r| r.get("n"),
            )?
            .unwrap_or_default();
        Ok(DayTotals {
            renewals,
            spend,
            unpriced: unpriced as usize,
        })
    }

    /// The charges counted toward `day` that were made without a price quote.
    pub fn unpriced_charges(&self, day: &str) -> Result<Vec<UnpricedCharge>, LedgerError> {
        self.rows(
            Read::of("reading today's unpriced charges", "intents"),
            "SELECT id, account, region, instance_id, period, unit FROM intents
             WHERE counted_day = ?1 AND price_cents IS NULL ORDER BY id",
            args![day],
            |r| {
                Ok(UnpricedCharge {
                    intent_id: r.get("id")?,
                    account: r.get("account")?,
                    region: r.get("region")?,
                    instance_id: r.get("instance_id")?,
                    period: r.get("period")?,
                    unit: r.unit("unit")?,
                })
            },
        )
    }
}
