//! What today's belts count: the charges counted toward a day (known or suspected), their
//! spend per currency, and the charges made unpriced.

use std::collections::BTreeMap;

use super::{Ledger, LedgerError, query_one, rows};
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
        let read = |source| LedgerError::Read {
            what: "reading today's renewals",
            source,
        };
        query_one(
            &self.conn(),
            "SELECT COALESCE((SELECT renewals FROM renewal_days WHERE day = ?1), 0)
                  + (SELECT COUNT(*) FROM intents WHERE status = 'sent' AND counted_day IS NULL)",
            [day],
            |r| r.get(0),
        )
        .map_err(read)
    }

    /// What `day`'s belts have counted so far: renewals, spend per currency, and the counted
    /// charges that were made unpriced (a spend limit switched on later needs their price).
    pub fn day_totals(&self, day: &str) -> Result<DayTotals, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading today's totals",
            source,
        };
        let renewals = self.renewals_counted(day)?;
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached("SELECT currency, cents FROM spend WHERE day = ?1")
            .map_err(read)?;
        let mut spend = statement
            .query_map([day], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(read)?
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(read)?;
        drop(statement);
        // Attempts still out (a pass in flight, or a process that stopped while one was out)
        // may have charged: counted here too (`renewals_counted` counts them), so no reader of
        // the belts misses them before the next pass marks and counts them.
        let mut statement = conn
            .prepare_cached(
                "SELECT price_cents, currency FROM intents WHERE status = 'sent' AND counted_day IS NULL",
            )
            .map_err(read)?;
        let mut rows = statement.query([]).map_err(read)?;
        while let Some(r) = rows.next().map_err(read)? {
            if let (Some(cents), Some(currency)) = (
                r.get::<_, Option<i64>>(0).map_err(read)?,
                r.get::<_, Option<String>>(1).map_err(read)?,
            ) {
                let total = spend.entry(currency).or_default();
                *total = total.saturating_add(cents);
            }
        }
        drop(rows);
        drop(statement);
        let unpriced: u32 = query_one(
            &conn,
            "SELECT COUNT(*) FROM intents WHERE counted_day = ?1 AND price_cents IS NULL",
            [day],
            |r| r.get(0),
        )
        .map_err(read)?;
        Ok(DayTotals {
            renewals,
            spend,
            unpriced: unpriced as usize,
        })
    }

    /// The charges counted toward `day` that were made without a price quote.
    pub fn unpriced_charges(&self, day: &str) -> Result<Vec<UnpricedCharge>, LedgerError> {
        let read = |source| LedgerError::Read {
            what: "reading today's unpriced charges",
            source,
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare_cached(
                "SELECT id, account, region, instance_id, period, unit FROM intents
                 WHERE counted_day = ?1 AND price_cents IS NULL ORDER BY id",
            )
            .map_err(read)?;
        let mut rows = statement.query([day]).map_err(read)?;
        let mut unpriced = Vec::new();
        while let Some(r) = rows.next().map_err(read)? {
            let id: i64 = r.get(0).map_err(read)?;
            let key = id.to_string();
            let cell = rows::Cell {
                path: &self.path,
                table: "intents",
                row: &key,
            };
            unpriced.push(UnpricedCharge {
                intent_id: id,
                account: r.get(1).map_err(read)?,
                region: r.get(2).map_err(read)?,
                instance_id: r.get(3).map_err(read)?,
                period: r.get(4).map_err(read)?,
                unit: cell.unit("unit", &r.get::<_, String>(5).map_err(read)?)?,
            });
        }
        Ok(unpriced)
    }
}
