//! Reconciling the fleet with its policies, in three tiers; each calls only the tier below it:
//!
//! 1. **Phases** (`pass/`): one pass from start to finish, each phase a function over the
//!    previous phases' output — observe, settle, price and belts, act, verify and auto-renew,
//!    forecast, publish. [`Engine`] runs them in order; `plan` runs them up to the forecast.
//! 2. **Steps** (the files here): the I/O a phase calls — `scan` (list sources, page by page,
//!    and assess each instance as it arrives, with `assess`), `price` (DescribeRenewalPrice),
//!    `belts` (what the belts see), `renew` (the worker that writes an intent and sends
//!    RenewInstance), `verify` (new expiries seen), `auto_renew` (the attributes set), `funds`
//!    (balances and quotes for the forecast); and the pure pieces they share: `context` (what a
//!    pass reads), `outcome` (outcome → state), `token` (the ClientToken).
//! 3. **Policy** (`crate::policy`): the pure decisions the steps apply — `decide`, the belts,
//!    backoff, the forecast's arithmetic.
//!
//! This file only names the modules and what the rest of the crate uses of them.

pub(crate) mod assess;
pub(crate) mod auto_renew;
pub(crate) mod belts;
pub(crate) mod context;
pub(crate) mod funds;
pub(crate) mod outcome;
pub(crate) mod pass;
pub(crate) mod price;
pub(crate) mod renew;
pub(crate) mod scan;
pub(crate) mod token;
pub(crate) mod verify;

pub use assess::{HistorySource, NoHistory};
pub use context::PassContext;
pub use pass::{Engine, EngineBase, PassSummary};
pub use renew::{RenewOutcome, renew_all};
pub use scan::{Rows, Scanned, scan_and_assess};
pub use token::client_token;
