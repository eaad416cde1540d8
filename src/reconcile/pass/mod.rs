//! One reconcile pass from start to finish. The phases, in order (the pass diagram in
//! docs/how-it-works.md),
//! each a function taking what the ones before it produced and returning what the ones after
//! it need, all reading one `PassContext`:
//!
//! 1. [`observe`]: attempts a stopped process left out, histories, scan and decide per
//!    instance, source health.
//! 2. [`settle`]: intents whose expiry moved; earlier auto-renew changes checked.
//! 3. [`price_and_belts`]: prices where a limit needs them; the safety belts over the batch.
//! 4. [`act`]: the renewals sent (intent before act) and their outcomes' meaning.
//! 5. [`verify_and_auto_renew`]: new expiries seen; auto-renew attributes set meanwhile.
//! 6. [`forecast`]: each account's balance against the charges coming in the funds window;
//!    the instances auto-renew can no longer renew in time.
//! 7. [`publish`]: status lines, refusals, the pass's result and its record.
//!
//! A ledger failure ends the pass at once and is returned: nothing is charged without its
//! record.

pub(crate) mod act;
pub(crate) mod forecast;
pub(crate) mod observe;
pub(crate) mod price_and_belts;
pub(crate) mod publish;
pub(crate) mod settle;
pub(crate) mod status_updates;
pub(crate) mod summary;
pub(crate) mod verify_and_auto_renew;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::accounts::directory::{Directories, Listing, Roster};
use crate::accounts::{AccountClient, AccountError, Wiring};
use crate::clock::Clock;
use crate::cloud::credentials::Environment;
use crate::config::Config;
use crate::ledger::{Ledger, LedgerError};
use crate::metrics::Metrics;
use crate::reconcile::context::{Mode, PassContext, day_key};
use crate::reconcile::funds::FundsMemory;
pub use summary::PassSummary;

/// Everything a pass needs; built by [`Engine::connect`] for `once`, `run`, a reload and
/// the tests.
pub struct Engine {
    /// The config the passes run with (a reload builds a new engine).
    pub config: Arc<Config>,
    /// One API client per config account entry.
    pub accounts: Vec<AccountClient>,
    /// The Resource Directories whose members are accounts too (listed as passes start).
    pub directories: Directories,
    /// The durable record every charge is written to before it is sent.
    pub ledger: Arc<Ledger>,
    /// The daemon's metrics (kept across reloads).
    pub metrics: Arc<Metrics>,
    /// The time source (the wall clock, or a virtual one in tests and the demo).
    pub clock: Arc<dyn Clock>,
    /// Shutdown: no new call starts once it fires.
    pub cancel: CancellationToken,
    /// Balances and price quotes the funds forecast reuses between passes.
    pub funds: FundsMemory,
}

/// What an engine is built over: the parts that outlive a reload.
#[derive(Clone)]
pub struct EngineBase {
    /// The ledger, opened (and locked) once per process.
    pub ledger: Arc<Ledger>,
    /// The metrics, registered once per process.
    pub metrics: Arc<Metrics>,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// Shutdown: no new call starts once it fires; a reloaded engine keeps the same token.
    pub cancel: CancellationToken,
}

impl Engine {
    /// The engine for `config` over `base`: every account's credentials resolved and its
    /// client built, the config's and the credentials' warnings logged. The first account
    /// that cannot be connected stops it (`check-config` shows them all).
    pub async fn connect(
        config: Config,
        env: &Environment,
        base: EngineBase,
    ) -> Result<Engine, AccountError> {
        let wiring = Wiring::new(
            base.clock.clone(),
            base.metrics.clone(),
            base.cancel.clone(),
        );
        let (accounts, warnings) = crate::accounts::connect(&config, env, &wiring).await?;
        let directories = Directories::connect(&config, env, &wiring).await?;
        for warning in config
            .warnings
            .iter()
            .map(ToString::to_string)
            .chain(warnings)
        {
            tracing::warn!(%warning, "configuration warning");
        }
        Ok(Engine {
            config: Arc::new(config),
            accounts,
            directories,
            ledger: base.ledger,
            metrics: base.metrics,
            clock: base.clock,
            cancel: base.cancel,
            funds: Default::default(),
        })
    }

    /// The parts a reloaded engine keeps.
    pub fn base(&self) -> EngineBase {
        EngineBase {
            ledger: self.ledger.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            cancel: self.cancel.clone(),
        }
    }

    /// Runs one pass. A ledger failure ends the pass early (nothing is charged without its
    /// record) and is returned.
    pub async fn run_pass(&self) -> Result<PassSummary, LedgerError> {
        let started = self.clock.now();
        let span =
            tracing::info_span!("pass", started = %crate::cloud::time::format_seconds(started));
        tracing::Instrument::instrument(self.pass(started), span).await
    }

    /// The context of a pass that begins at `started`, over the config's own accounts.
    pub fn context(&self, started: DateTime<Utc>) -> PassContext<'_> {
        self.context_over(&self.config, &self.accounts, started)
    }

    /// The accounts a pass starting at `started` runs over: the config's entries and the
    /// directories' members (listed first when due), and how each directory's listing stands.
    pub async fn roster(&self, started: DateTime<Utc>) -> (Arc<Roster>, Vec<Listing>) {
        self.directories
            .roster(&self.config, &self.accounts, started)
            .await
    }

    /// The context of a pass over `config` and `accounts` (a roster's) that begins at
    /// `started`.
    fn context_over<'a>(
        &'a self,
        config: &'a Config,
        accounts: &'a [AccountClient],
        started: DateTime<Utc>,
    ) -> PassContext<'a> {
        PassContext {
            config,
            accounts,
            ledger: &self.ledger,
            metrics: &self.metrics,
            clock: self.clock.as_ref(),
            cancel: &self.cancel,
            funds: &self.funds,
            started,
            day: day_key(config, started),
            generation: started.timestamp_millis(),
            mode: Mode::Pass,
        }
    }

    /// The phases, in order.
    async fn pass(&self, started: DateTime<Utc>) -> Result<PassSummary, LedgerError> {
        let (roster, listings) = self.roster(started).await;
        let ctx = self.context_over(&roster.config, &roster.accounts, started);
        let mut summary = PassSummary::starting(started);
        let mut phases = summary::Phases::start();

        let mut observed = observe::observe(&ctx, listings, &mut summary).await?;
        phases.lap("observe");
        let settled = settle::settle(&ctx, &observed, &mut summary)?;
        phases.lap("settle");
        let cleared =
            price_and_belts::price_and_belts(&ctx, &mut observed.assessment, &mut summary).await?;
        phases.lap("price_and_belts");
        let by_state = observed.assessment.by_state.clone();
        let mut acted =
            act::act(&ctx, &observed.histories, by_state, cleared, &mut summary).await?;
        phases.lap("act");
        // Verification takes the new orders; the forecast needs to know them too, and the
        // accounts that renewals without an answer may have charged.
        let orders = acted.verify_targets.clone();
        let maybe_charged = acted.maybe_charged.clone();
        let changes = std::mem::take(&mut observed.assessment.changes);
        verify_and_auto_renew::verify_and_auto_renew(
            &ctx,
            &observed.histories,
            settled.out_of_window,
            changes,
            &mut acted,
            &mut summary,
        )
        .await?;
        phases.lap("verify_and_auto_renew");
        forecast::forecast(&ctx, &observed, (&orders, &maybe_charged), &mut summary).await;
        phases.lap("forecast");
        publish::publish(&ctx, observed, acted, summary, phases)
    }

    /// What a pass starting now would do, without doing it: the same phases up to the
    /// forecast — observe, settle, price and belts, forecast — stopping before anything is
    /// charged or changed. Run over a scratch copy of the ledger (`Ledger::scratch_copy`), so
    /// what they write is thrown away; only `Describe*` calls and the balance are made.
    pub async fn plan(&self) -> Result<Planned, LedgerError> {
        let started = self.clock.now();
        let (roster, listings) = self.roster(started).await;
        let ctx = PassContext {
            mode: Mode::Plan,
            ..self.context_over(&roster.config, &roster.accounts, started)
        };
        let mut summary = PassSummary::starting(started);
        let mut observed = observe::observe(&ctx, listings, &mut summary).await?;
        settle::settle(&ctx, &observed, &mut summary)?;
        let cleared =
            price_and_belts::price_and_belts(&ctx, &mut observed.assessment, &mut summary).await?;
        forecast::forecast(&ctx, &observed, (&[], &[]), &mut summary).await;
        Ok(Planned {
            observed,
            cleared,
            summary,
        })
    }
}

/// What `plan` shows: what the phases before acting found and decided.
pub struct Planned {
    /// Every instance's row and decision, the sources' scans.
    pub observed: observe::Observed,
    /// The renewals the belts let through, and those they hold.
    pub cleared: price_and_belts::Cleared,
    /// Trips, holds, top-ups and the funds forecast, as the pass's summary carries them.
    pub summary: PassSummary,
}
