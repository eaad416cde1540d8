//! `ecs-renewd once`: one reconcile pass (for a systemd timer or a cron job), then exit: 0 when
//! everything succeeded, 1 when anything failed (a source down, a charge refused or unknown, a
//! belt tripped).

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Failure;
use super::open::Held;
use crate::clock::Clock;
use crate::cloud::credentials::Environment;
use crate::config::Config;
use crate::ledger::LedgerError;
use crate::metrics::Metrics;
use crate::reconcile::pass::{Engine, EngineBase, PassSummary};

/// Builds the engine: config, ledger (with its lock, or the lease of a shared one), metrics,
/// clients. A shared ledger's term stays renewed while the runtime lives; `once` itself uses
/// [`engine_and_term`] to give it up after its pass.
pub async fn engine(
    config: Config,
    env: &Environment,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) -> Result<Engine, Failure> {
    Ok(engine_and_term(config, env, clock, cancel).await?.0)
}

/// [`engine`], and the term taken on a shared ledger.
pub async fn engine_and_term(
    config: Config,
    env: &Environment,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) -> Result<(Engine, Option<Held>), Failure> {
    let (ledger, held) = super::open::writer(&config, env).await?;
    let metrics = Arc::new(Metrics::new(clock.clone()));
    metrics.dry_run.set(i64::from(config.dry_run));
    let base = EngineBase {
        ledger: Arc::new(ledger),
        metrics,
        clock,
        cancel,
    };
    Ok((Engine::connect(config, env, base).await?, held))
}

/// Runs one pass; `cancel` stops new calls (SIGTERM).
pub async fn run(
    path: &Path,
    env: &Environment,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<bool, Failure> {
    let config = Config::load(path, env)?;
    let (engine, held) = engine_and_term(config, env, clock, cancel).await?;
    let summary = engine.run_pass().await;
    if let Some(held) = held {
        held.release().await;
    }
    let summary = summary.map_err(|error| match error {
        // Another replica took the lease mid-pass: nothing of the refused write was kept.
        LedgerError::Fenced { .. } => Failure::tempfail(error),
        other => Failure::runtime(other),
    })?;
    let text = if json {
        serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n"
    } else {
        render(&summary)
    };
    let _ = out.write_all(text.as_bytes());
    Ok(summary.result == "ok")
}

/// The summary in words.
pub fn render(summary: &PassSummary) -> String {
    let mut out = format!("{}\n", summary.line());
    for source in &summary.sources_down {
        out.push_str(&format!("  source down: {source}\n"));
    }
    for trip in &summary.trips {
        out.push_str(&format!("  limit tripped: {trip}\n"));
    }
    for r in &summary.refused {
        out.push_str(&format!(
            "  renewal refused: {} ({}/{}): {} ({}) — retrying cannot fix this; it will lapse unless it is fixed\n",
            r.instance_id, r.account, r.region, r.code, r.class
        ));
    }
    for d in &summary.duplicate_sources {
        out.push_str(&format!(
            "  overlapping entries: {} lists {} instance(s) that {} lists too (e.g. {}); each was managed once\n",
            d.dropped, d.instances, d.kept, d.example
        ));
    }
    for (currency, amount) in &summary.spend {
        out.push_str(&format!("  spend: {amount:.2} {currency}\n"));
    }
    if summary.dry_run_renewals + summary.dry_run_auto_renew_changes > 0 {
        out.push_str(&format!(
            "  dry run: {} renewal(s) and {} auto-renew change(s) not sent\n",
            summary.dry_run_renewals, summary.dry_run_auto_renew_changes
        ));
    }
    out
}
