//! The daemon's side of the leader lease on a shared (PostgreSQL) ledger. A standby tries to
//! take the lease every `retry_period` (± 20 %) on the lease's own session and makes no cloud
//! call; the leader keeps its term renewed (`ledger::postgres::hold`), fences every ledger
//! write by it and sends a charge only while the lease would outlast it; a term lost (taken,
//! or not renewed within `renew_deadline`) ends the process with exit 75, to be restarted as a
//! standby, as controller-runtime and cert-manager do. On SIGTERM the leader gives the lease
//! up once its pass has ended, so a standby takes over within one retry period.
//!
//! A SQLite ledger has no lease: its one process leads alone for its whole life (the state
//! directory's lock), and none of this runs.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ledger::postgres::{
    Leading, Lease, Lost, Renewal, Session, SessionTimeouts, Term, hold, holder_id,
};
use crate::ledger::{Ledger, LedgerError};
use crate::metrics::Metrics;
use crate::policy::lease::HaTimings;
use crate::secret::Secret;

/// The lease this process campaigns for or holds.
pub(super) struct Leadership {
    url: Secret,
    lease: Lease,
    timings: HaTimings,
    metrics: Arc<Metrics>,
    /// The standby's session (made when needed; the leader's is the keeper's).
    session: Option<Session>,
    /// When the standby tries next.
    next_try: Instant,
    leading: Option<Held>,
}

/// What a try to take the lease came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tried {
    /// This process leads now.
    Leads,
    /// Another replica leads; try again later.
    Standby,
    /// The database did not answer or refused: why.
    Unreachable(String),
}

/// A term being kept.
struct Held {
    term: Term,
    stop: CancellationToken,
    keeper: Option<tokio::task::JoinHandle<(Session, Result<(), Lost>)>>,
}

impl Leadership {
    /// A standby for the ledger at `url`, trying at once.
    pub fn new(url: Secret, timings: HaTimings, metrics: Arc<Metrics>) -> Leadership {
        metrics.leadership.leader.set(0);
        Leadership {
            url,
            lease: Lease {
                holder: holder_id(),
                duration: timings.lease_duration,
            },
            timings,
            metrics,
            session: None,
            next_try: Instant::now(),
            leading: None,
        }
    }

    /// Whether this process leads now.
    pub fn is_leading(&self) -> bool {
        self.leading.is_some()
    }

    /// When the standby tries next.
    pub fn next_try(&self) -> Instant {
        self.next_try
    }

    /// One try to take the lease; on success the ledger's writes are fenced by the new term
    /// and the keeper starts.
    pub async fn campaign(&mut self, ledger: &Ledger) -> Tried {
        self.next_try = Instant::now() + self.timings.campaign_delay(super::passes::jitter());
        let session = match self.session.take() {
            Some(session) if !session.client.is_closed() => session,
            _ => match Session::connect(self.url.expose(), SessionTimeouts::default()).await {
                Ok(session) => session,
                Err(error) => {
                    tracing::warn!("standby: the ledger's database cannot be reached: {error}");
                    return Tried::Unreachable(error.to_string());
                }
            },
        };
        let term = match self.lease.campaign(&session.client).await {
            Ok(Some(term)) => term,
            Ok(None) => {
                self.session = Some(session);
                return Tried::Standby;
            }
            Err(error) => {
                tracing::warn!("standby: taking the leader lease failed: {error}");
                return Tried::Unreachable(error.to_string());
            }
        };
        self.take_office(ledger, session, term);
        Tried::Leads
    }

    fn take_office(&mut self, ledger: &Ledger, session: Session, term: Term) {
        let (renewed_tx, renewed) = watch::channel(Instant::now());
        let stop = CancellationToken::new();
        let (lease, held, timings) = (self.lease.clone(), term.clone(), self.timings);
        let (stopped, metrics) = (stop.clone(), self.metrics.clone());
        let keeper = tokio::spawn(async move {
            let mut session = session;
            let counted = move |r: Renewal| {
                metrics
                    .leadership
                    .lease_renewals_total
                    .with_label_values(&[r.as_str()])
                    .inc();
            };
            let held = hold(
                &mut session,
                &lease,
                &held,
                timings,
                &renewed_tx,
                &stopped,
                &counted,
            )
            .await;
            (session, held)
        });
        ledger.lead(Some(Leading {
            term: term.clone(),
            renewed,
            timings: self.timings,
        }));
        let leadership = &self.metrics.leadership;
        leadership.leader.set(1);
        leadership.epoch.set(term.epoch);
        leadership.transitions_total.inc();
        tracing::info!(holder = %term.holder, epoch = term.epoch, "took the leader lease: this process leads");
        self.leading = Some(Held {
            term,
            stop,
            keeper: Some(keeper),
        });
    }

    /// Resolves when the term is lost, with why (never while standing by).
    pub async fn lost(&mut self) -> LedgerError {
        let Some(keeper) = self.leading.as_mut().and_then(|held| held.keeper.as_mut()) else {
            return std::future::pending().await;
        };
        let reason = match keeper.await {
            Ok((_, Err(lost))) => lost.to_string(),
            Ok((_, Ok(()))) => "the lease keeper stopped".into(),
            Err(error) => format!("the lease keeper failed: {error}"),
        };
        if let Some(held) = self.leading.as_mut() {
            held.keeper = None;
        }
        LedgerError::LeaseLost { reason }
    }

    /// Stops acting: no more writes under the term; the lease is given up (expired at once)
    /// when it is still this process's, so a standby takes it at its next try.
    pub async fn resign(&mut self, ledger: &Ledger) {
        ledger.lead(None);
        let Some(held) = self.leading.take() else {
            return;
        };
        self.metrics.leadership.leader.set(0);
        self.metrics.leadership.transitions_total.inc();
        held.stop.cancel();
        let Some(keeper) = held.keeper else {
            return;
        };
        match keeper.await {
            Ok((session, Ok(()))) => match self.lease.resign(&session.client, &held.term).await {
                Ok(()) => tracing::info!(epoch = held.term.epoch, "gave the leader lease up"),
                Err(error) => {
                    tracing::warn!(
                        "giving the leader lease up failed (it expires by itself): {error}"
                    )
                }
            },
            Ok((_, Err(lost))) => tracing::warn!("{lost}"),
            Err(_) => {}
        }
    }
}
