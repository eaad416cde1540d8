//! Reading the ledger: one helper runs a read statement and hands each row to a mapping, and
//! the row's getters read values strictly. A value this build cannot understand (a timestamp
//! that does not parse, an unknown period unit, failure class or status) is an error that names
//! the table, the row, the column and the value — never a silent default and never a skipped
//! row: a money record misread is worse than a pass that stops and says why. So each read is
//! one statement and one mapping, with nothing else around it.

use chrono::{DateTime, Utc};

use super::sql::{Bind, Cell, DbError, FromCell, SqlRow};
use super::{Ledger, LedgerError, RecordStatus};
use crate::cloud::error::ErrorClass;
use crate::cloud::types::{PeriodUnit, RenewalStatus};
use crate::policy::{InstanceState, NextAction};

/// What a read is about, for its errors: what was being done, and the table its rows are from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Read {
    /// What was being read, e.g. "loading open intents" (the error says "while …").
    pub what: &'static str,
    /// The table the rows come from, e.g. `intents`.
    pub table: &'static str,
}

impl Read {
    /// A read of `table` while doing `what`.
    pub const fn of(what: &'static str, table: &'static str) -> Read {
        Read { what, table }
    }

    fn failed(self, source: DbError) -> LedgerError {
        LedgerError::Read {
            what: self.what,
            source,
        }
    }
}

/// A [`LedgerError`] carried through a statement's row loop, which speaks [`DbError`].
struct Carried(LedgerError);

impl Ledger {
    /// Runs the read `sql` with `args` and calls `each` on every row, in order. The row's
    /// key (named in errors) is its first column: a statement whose rows are keyed by two
    /// columns selects them joined first (`account || '/' || instance_id`).
    pub(super) fn each_row(
        &self,
        read: Read,
        sql: &str,
        args: &[&dyn Bind],
        mut each: impl FnMut(&Row<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut carried = None;
        let result = self.read(read.what, |tx| {
            tx.each(sql, args, |row| {
                each(&Row {
                    row,
                    read,
                    ledger: self,
                })
                .map_err(|error| {
                    carried = Some(Carried(error));
                    DbError::Value("stopped".into())
                })
            })
        });
        match (result, carried) {
            (_, Some(Carried(error))) => Err(error),
            (Ok(()), None) => Ok(()),
            (Err(LedgerError::Read { source, .. }), None) => Err(read.failed(source)),
            (Err(other), None) => Err(other),
        }
    }

    /// Every row of the read `sql`, each through `map`.
    pub(super) fn rows<T>(
        &self,
        read: Read,
        sql: &str,
        args: &[&dyn Bind],
        mut map: impl FnMut(&Row<'_>) -> Result<T, LedgerError>,
    ) -> Result<Vec<T>, LedgerError> {
        let mut out = Vec::new();
        self.each_row(read, sql, args, |row| {
            out.push(map(row)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of the read `sql` through `map`, if there is one.
    pub(super) fn first_row<T>(
        &self,
        read: Read,
        sql: &str,
        args: &[&dyn Bind],
        map: impl FnOnce(&Row<'_>) -> Result<T, LedgerError>,
    ) -> Result<Option<T>, LedgerError> {
        let mut map = Some(map);
        let mut out = None;
        self.each_row(read, sql, args, |row| {
            if let Some(map) = map.take() {
                out = Some(map(row)?);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// One row of a read. Columns are named, as the statement names them; every getter's error
/// says which.
pub(super) struct Row<'a> {
    row: &'a SqlRow<'a>,
    read: Read,
    ledger: &'a Ledger,
}

impl<'a> Row<'a> {
    /// The column's value, read strictly: a value of another type is unreadable.
    pub fn get<T: FromCell<'a>>(&self, column: &'static str) -> Result<T, LedgerError> {
        let cell = self.row.cell(column).map_err(|e| self.read.failed(e))?;
        T::from_cell(cell).map_err(|held| self.unreadable(column, &held.describe()))
    }

    /// A text column, borrowed from the row (no copy: the metrics page reads 100,000 of them).
    pub fn text(&self, column: &'static str) -> Result<&'a str, LedgerError> {
        self.get(column)
    }

    /// The row's key for errors: its first column, as text.
    fn key(&self) -> String {
        match self.row.cell(0) {
            Ok(Cell::Null) | Err(_) => "?".into(),
            Ok(cell) => cell.describe(),
        }
    }

    /// The error for a `value` of `column` this build cannot read.
    pub fn unreadable(&self, column: &'static str, value: &str) -> LedgerError {
        LedgerError::Unreadable {
            path: self.ledger.path.display().to_string(),
            table: self.read.table,
            row: self.key(),
            column,
            value: value.chars().take(80).collect(),
        }
    }

    /// A text column read through `parse`; a value it refuses is unreadable.
    fn parsed<T>(
        &self,
        column: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, LedgerError> {
        let text = self.text(column)?;
        parse(text).ok_or_else(|| self.unreadable(column, text))
    }

    /// An optional text column read through `parse`.
    fn parsed_opt<T>(
        &self,
        column: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, LedgerError> {
        match self.get::<Option<String>>(column)? {
            None => Ok(None),
            Some(text) => parse(&text)
                .map(Some)
                .ok_or_else(|| self.unreadable(column, &text)),
        }
    }

    /// A time: RFC 3339 text or Unix seconds (SQLite), `timestamptz` (PostgreSQL).
    pub fn time(&self, column: &'static str) -> Result<DateTime<Utc>, LedgerError> {
        self.get(column)
    }

    /// A time, or NULL.
    pub fn opt_time(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, LedgerError> {
        self.get(column)
    }

    /// A period unit (`Week`, `Month`, `Year`).
    pub fn unit(&self, column: &'static str) -> Result<PeriodUnit, LedgerError> {
        self.parsed(column, PeriodUnit::parse)
    }

    /// A failure class, which must be present.
    pub fn class(&self, column: &'static str) -> Result<ErrorClass, LedgerError> {
        self.parsed_opt(column, ErrorClass::parse)?
            .ok_or_else(|| self.unreadable(column, "NULL"))
    }

    /// An auto-renew switch word (`AutoRenewal`, `Normal`, `NotRenewal`).
    pub fn renewal_status(&self, column: &'static str) -> Result<RenewalStatus, LedgerError> {
        self.parsed(column, RenewalStatus::parse)
    }

    /// An instance state word (`due`, `backoff`, ...).
    pub fn state(&self, column: &'static str) -> Result<InstanceState, LedgerError> {
        self.parsed(column, InstanceState::parse)
    }

    /// A next-action word (`renew`, `verify`, ...).
    pub fn next_action(&self, column: &'static str) -> Result<NextAction, LedgerError> {
        self.parsed(column, NextAction::parse)
    }

    /// A money record's status or result word (`sent`, `verified`, `ok`, ...).
    pub fn record_status(&self, column: &'static str) -> Result<RecordStatus, LedgerError> {
        self.parsed(column, RecordStatus::parse)
    }

    /// A text column that must be present for this row's status.
    pub fn required(&self, column: &'static str) -> Result<String, LedgerError> {
        self.get::<Option<String>>(column)?
            .ok_or_else(|| self.unreadable(column, "NULL"))
    }
}
