//! Reading ledger values strictly. A value this build cannot understand (a timestamp that does
//! not parse, an unknown period unit, failure class or status) is an error that names the
//! table, the row, the column and the value — never a silent default and never a skipped row:
//! a money record misread is worse than a pass that stops and says why.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::LedgerError;
use crate::cloud::error::ErrorClass;
use crate::cloud::time;
use crate::cloud::types::{PeriodUnit, RenewalStatus};
use crate::policy::{InstanceState, NextAction};

/// Where a value was read from, for the error.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cell<'a> {
    /// The ledger file.
    pub path: &'a Path,
    /// The table the value comes from, e.g. `intents` (named in the error).
    pub table: &'static str,
    /// The row's key (its id, or its natural key).
    pub row: &'a str,
}

impl Cell<'_> {
    fn unreadable(&self, column: &'static str, value: &str) -> LedgerError {
        LedgerError::Unreadable {
            path: self.path.display().to_string(),
            table: self.table,
            row: self.row.to_owned(),
            column,
            value: value.chars().take(80).collect(),
        }
    }

    /// An RFC 3339 timestamp.
    pub fn time(&self, column: &'static str, text: &str) -> Result<DateTime<Utc>, LedgerError> {
        time::parse(text).map_err(|_| self.unreadable(column, text))
    }

    /// Unix seconds.
    pub fn seconds(&self, column: &'static str, secs: i64) -> Result<DateTime<Utc>, LedgerError> {
        DateTime::<Utc>::from_timestamp(secs, 0)
            .ok_or_else(|| self.unreadable(column, &secs.to_string()))
    }

    /// A period unit (`Week`, `Month`, `Year`).
    pub fn unit(&self, column: &'static str, text: &str) -> Result<PeriodUnit, LedgerError> {
        PeriodUnit::parse(text).ok_or_else(|| self.unreadable(column, text))
    }

    /// A failure class.
    pub fn class(&self, column: &'static str, text: &str) -> Result<ErrorClass, LedgerError> {
        ErrorClass::parse(text).ok_or_else(|| self.unreadable(column, text))
    }

    /// An auto-renew switch word (`AutoRenewal`, `Normal`, `NotRenewal`).
    pub fn renewal_status(
        &self,
        column: &'static str,
        text: &str,
    ) -> Result<RenewalStatus, LedgerError> {
        RenewalStatus::parse(text).ok_or_else(|| self.unreadable(column, text))
    }

    /// An instance state word (`due`, `backoff`, ...).
    pub fn state(&self, column: &'static str, text: &str) -> Result<InstanceState, LedgerError> {
        InstanceState::parse(text).ok_or_else(|| self.unreadable(column, text))
    }

    /// A next-action word (`renew`, `verify`, ...).
    pub fn next_action(&self, column: &'static str, text: &str) -> Result<NextAction, LedgerError> {
        NextAction::parse(text).ok_or_else(|| self.unreadable(column, text))
    }

    /// A money record's status or result word (`sent`, `verified`, `ok`, ...).
    pub fn record_status(
        &self,
        column: &'static str,
        text: &str,
    ) -> Result<super::RecordStatus, LedgerError> {
        super::RecordStatus::parse(text).ok_or_else(|| self.unreadable(column, text))
    }

    /// A value that must be present for this row's status.
    pub fn present<'v>(
        &self,
        column: &'static str,
        value: Option<&'v str>,
    ) -> Result<&'v str, LedgerError> {
        value.ok_or_else(|| self.unreadable(column, "NULL"))
    }

    /// Any other value that did not fit (an unknown status word).
    pub fn other(&self, column: &'static str, text: &str) -> LedgerError {
        self.unreadable(column, text)
    }
}
