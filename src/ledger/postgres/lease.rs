//! The leader lease: one row of `leader_lease`, whose `epoch` is the fencing token. A
//! candidate takes the row only once it has expired, by the database server's clock (never
//! the replicas' clocks, which may disagree), and each take raises the epoch. Every write of
//! the leader runs in a transaction that first locks the row `FOR SHARE` with its holder and
//! epoch: a takeover's `UPDATE` waits for writes in flight and, once it commits, every later
//! write of the old leader finds no row and rolls back ([`Fenced`]). `FOR SHARE`, not
//! `FOR KEY SHARE`: the latter does not conflict with an `UPDATE` of non-key columns, so a
//! takeover would not wait (measured, docs/architecture.md "Two replicas").

use std::time::Duration;

use tokio_postgres::{Client, Transaction};

/// The lease row's name.
pub const LEASE_NAME: &str = "ecs-renewd";

/// A term of leadership: who holds the lease and under which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// This process: host, pid and a random part, so a restarted process is never taken for
    /// its predecessor.
    pub holder: String,
    /// The fencing token: raised by every take.
    pub epoch: i64,
}

/// A write was refused because this process no longer holds the lease under its epoch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the leader lease is no longer held by {holder} under epoch {epoch}: another replica took over, so this write was rolled back — this process stops and restarts as a standby"
)]
pub struct Fenced {
    /// The holder this process was.
    pub holder: String,
    /// The epoch it held.
    pub epoch: i64,
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease was taken by another holder (or the row is gone).
    #[error(transparent)]
    Lost(#[from] Fenced),
    /// The database did not answer, or refused.
    #[error("the leader lease could not be {what}: {source}")]
    Database {
        /// What was being done: "taken", "renewed", "released", "checked".
        what: &'static str,
        /// The client's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// This process's holder name: `host:pid:random`.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The lease row of one database, as this process campaigns for it and holds it.
#[derive(Debug, Clone)]
pub struct Lease {
    /// This process's holder name.
    pub holder: String,
    /// How long a take or renewal keeps the lease.
    pub duration: Duration,
}

impl Lease {
    /// Takes the lease if it has expired: the new term, or `None` while another holds it.
    pub async fn campaign(&self, client: &Client) -> Result<Option<Term>, LeaseError> {
        let row = client
            .query_opt(
                "UPDATE leader_lease
                    SET holder = $2, epoch = epoch + 1,
                        expires_at = clock_timestamp() + make_interval(secs => $3),
                        renewed_at = clock_timestamp()
                  WHERE name = $1 AND expires_at < clock_timestamp()
              RETURNING epoch",
                &[&LEASE_NAME, &self.holder, &self.duration.as_secs_f64()],
            )
            .await
            .map_err(|source| LeaseError::Database {
                what: "taken",
                source,
            })?;
        Ok(row.map(|r| Term {
            holder: self.holder.clone(),
            epoch: r.get(0),
        }))
    }

    /// Extends `term` by the lease duration from now (the server's now); [`Fenced`] when
    /// another holder has taken it.
    pub async fn renew(&self, client: &Client, term: &Term) -> Result<(), LeaseError> {
        let rows = client
            .execute(
                "UPDATE leader_lease
                    SET expires_at = clock_timestamp() + make_interval(secs => $4),
                        renewed_at = clock_timestamp()
                  WHERE name = $1 AND holder = $2 AND epoch = $3",
                &[
                    &LEASE_NAME,
                    &term.holder,
                    &term.epoch,
                    &self.duration.as_secs_f64(),
                ],
            )
            .await
            .map_err(|source| LeaseError::Database {
                what: "renewed",
                source,
            })?;
        if rows == 1 {
            Ok(())
        } else {
            Err(fenced(term).into())
        }
    }

    /// Gives the lease up (it expires now), so a standby takes over at its next try. Call it
    /// only once every write under `term` is done. Releasing a lease already lost is no error.
    pub async fn resign(&self, client: &Client, term: &Term) -> Result<(), LeaseError> {
        client
            .execute(
                "UPDATE leader_lease SET expires_at = clock_timestamp()
                  WHERE name = $1 AND holder = $2 AND epoch = $3",
                &[&LEASE_NAME, &term.holder, &term.epoch],
            )
            .await
            .map_err(|source| LeaseError::Database {
                what: "released",
                source,
            })?;
        Ok(())
    }
}

/// The first statement of every fenced write: locks the lease row `FOR SHARE` if `term` still
/// holds it; [`Fenced`] (the caller rolls back) if not.
pub async fn fence(tx: &Transaction<'_>, term: &Term) -> Result<(), LeaseError> {
    let row = tx
        .query_opt(
            "SELECT 1 FROM leader_lease
              WHERE name = $1 AND holder = $2 AND epoch = $3 FOR SHARE",
            &[&LEASE_NAME, &term.holder, &term.epoch],
        )
        .await
        .map_err(|source| LeaseError::Database {
            what: "checked",
            source,
        })?;
    row.map(|_| ()).ok_or_else(|| fenced(term).into())
}

fn fenced(term: &Term) -> Fenced {
    Fenced {
        holder: term.holder.clone(),
        epoch: term.epoch,
    }
}
