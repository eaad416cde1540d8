//! The leader's lease loop: renews its term every retry period and publishes when the last
//! renewal that succeeded began (what [`HaTimings::may_send`] reads before a charge). It ends
//! with the reason when the term is lost — another holder took the lease, or no renewal
//! succeeded within the renew deadline — and the process then stops acting (and exits, to be
//! restarted as a standby: what controller-runtime and cert-manager do); or when cancelled,
//! after which the caller resigns the lease once its writes are done.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::{Fenced, Lease, LeaseError, Term};
use super::session::Session;
use crate::policy::lease::HaTimings;

/// Why a term ended without being given up.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    /// Another holder has the lease.
    #[error(transparent)]
    Fenced(#[from] Fenced),
    /// No renewal succeeded within the renew deadline.
    #[error(
        "the leader lease was not renewed for {since:?} (renew_deadline {deadline:?}); last error: {last_error} — this process stops acting and restarts as a standby"
    )]
    Deadline {
        /// Since the start of the last renewal that succeeded.
        since: Duration,
        /// The renew deadline.
        deadline: Duration,
        /// What the last try answered.
        last_error: String,
    },
}

/// How one renewal went (for `ecs_renewd_lease_renewals_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed.
    Ok,
    /// Another holder has the lease.
    Lost,
    /// No answer, or an error: tried again next retry period until the deadline.
    Error,
}

impl Renewal {
    /// The metric's `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Renewal::Ok => "ok",
            Renewal::Lost => "lost",
            Renewal::Error => "error",
        }
    }
}

/// Holds `term` until `cancel` (then `Ok`) or until it is lost. `renewed` carries the instant
/// the last successful renewal began; it starts as the instant the term was taken. Each
/// renewal's result goes to `counted`.
pub async fn hold(
    session: &mut Session,
    lease: &Lease,
    term: &Term,
    timings: HaTimings,
    renewed: &watch::Sender<Instant>,
    cancel: &CancellationToken,
    counted: &(dyn Fn(Renewal) + Send + Sync),
) -> Result<(), Lost> {
    let mut last_ok = *renewed.borrow();
    let mut last_error = String::from("none");
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(timings.retry_period) => {}
        }
        let started = Instant::now();
        let left = timings
            .renew_deadline
            .saturating_sub(started.saturating_duration_since(last_ok));
        match tokio::time::timeout(left, renew(session, lease, term)).await {
            Ok(Ok(())) => {
                counted(Renewal::Ok);
                last_ok = started;
                renewed.send_replace(started);
            }
            Ok(Err(LeaseError::Lost(fenced))) => {
                counted(Renewal::Lost);
                return Err(Lost::Fenced(fenced));
            }
            Ok(Err(error)) => {
                counted(Renewal::Error);
                tracing::warn!("the leader lease could not be renewed (retrying): {error}");
                last_error = error.to_string();
            }
            Err(_) => {
                counted(Renewal::Error);
                last_error = format!("no answer within {left:?}");
            }
        }
        let since = Instant::now().saturating_duration_since(last_ok);
        if since >= timings.renew_deadline {
            return Err(Lost::Deadline {
                since,
                deadline: timings.renew_deadline,
                last_error,
            });
        }
    }
}

/// One renewal on `session`, made again first when the server ended it (a restart, a network
/// cut): a database back within the deadline costs no term.
async fn renew(session: &mut Session, lease: &Lease, term: &Term) -> Result<(), LeaseError> {
    if session.client.is_closed()
        && let Err(error) = session.reconnect().await
    {
        tracing::warn!("the lease's session could not be made again: {error}");
    }
    lease.renew(&session.client, term).await
}
