//! The ledger's PostgreSQL side, for two replicas sharing one ledger (docs/architecture.md,
//! "Two replicas"): a session with the timeouts that keep a stopped peer from blocking a
//! takeover (`session`), the schema as numbered migrations applied once under an advisory lock
//! (`migrations`), the leader lease whose epoch fences every write (`lease`), the loop that
//! keeps it (`keeper`), the sessions behind the ledger's facade (`store`), TLS as libpq's
//! `sslmode` asks (`tls`), and `ledger copy` (`copy`).
//!
//! Why PostgreSQL, why one engine for the ledger and the lease, and why `tokio-postgres`:
//! docs/architecture.md. The statements are hand-written beside the SQLite ones.

mod copy;
mod keeper;
mod lease;
mod migrations;
mod session;
mod store;
mod tls;

pub use crate::policy::lease::{HaTimings, TimingError};
pub use copy::{Copied, CopyError, copy_ledger};
pub use keeper::{Lost, Renewal, hold};
pub use lease::{Fenced, LEASE_NAME, Lease, LeaseError, Term, fence, holder_id};
pub use migrations::{MIGRATIONS, MigrateError, migrate};
pub use session::{Session, SessionError, SessionTimeouts, target};
pub use store::{Leading, OpenError, PgStore, StoreError};
