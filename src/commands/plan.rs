//! `ecs-renewd plan`: what the next pass would do, sorted by expiry — the pass's own phases up to
//! the forecast (scan and decide, settle, price every renewal and apply the safety belts, the
//! funds forecast) over a scratch copy of the ledger, stopping before anything is charged or
//! changed (only `Describe*` calls and the balance).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::clock::Clock;
use crate::cloud::credentials::Environment;
use crate::config::Config;
use crate::duration::format_relative;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::policy::LimitKind;
use crate::reconcile::assess::{Assessment, Row};
use crate::reconcile::pass::Planned;
use crate::reconcile::{Engine, EngineBase};

/// An amount of money in output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Amount {
    /// In currency units.
    pub amount: f64,
    /// ISO currency code of `amount`, as ECS quotes it (`CNY`, `USD`).
    pub currency: String,
}

/// One instance in the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanRow {
    /// Name of the config account entry the instance was listed through.
    pub account: String,
    /// The region the instance was scanned in, e.g. cn-hangzhou.
    pub region: String,
    /// Instance id.
    pub instance_id: String,
    /// The instance's display name, as ECS lists it.
    pub name: String,
    /// Expiry (RFC 3339).
    pub expires_at: DateTime<Utc>,
    /// Seconds until expiry (negative once expired).
    pub expires_in_seconds: i64,
    /// Matched policy.
    pub policy: Option<String>,
    /// What a pass would do: renew, hold, set-auto-renew, none, verify, backoff, failed,
    /// expired, exclude.
    pub decision: String,
    /// The state metric value.
    pub state: String,
    /// When the next action is due.
    pub due_at: Option<DateTime<Utc>>,
    /// The renewal's price.
    pub price: Option<Amount>,
    /// Why, in words; notes a belt that would hold the renewal or a price that is unavailable.
    pub reason: String,
}

/// A source in the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanSource {
    /// Name of the config account entry the source scans.
    pub account: String,
    /// The region the source scans, e.g. cn-hangzhou.
    pub region: String,
    /// Scanned completely?
    pub ok: bool,
    /// Instances seen.
    pub instances: usize,
    /// Why not.
    pub error: Option<String>,
}

/// Spend per currency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanTotal {
    /// ISO currency code the renewals are quoted in (`CNY`, `USD`).
    pub currency: String,
    /// Renewals in it.
    pub renewals: usize,
    /// Their cost.
    pub amount: f64,
}

/// A belt that would trip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanLimit {
    /// The belt's name (a `LimitKind` word, e.g. `spend_per_day`).
    pub limit: String,
    /// What it saw.
    pub detail: String,
}

/// The whole plan (the stable `--json` shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// Whether the config says dry-run.
    pub dry_run: bool,
    /// Each (account, region) scanned, and whether its scan was complete.
    pub sources: Vec<PlanSource>,
    /// Instances, by expiry.
    pub instances: Vec<PlanRow>,
    /// Renewals that would be made.
    pub renewals: usize,
    /// Renewals the belts would hold.
    pub held: usize,
    /// Auto-renew changes that would be made.
    pub auto_renew_changes: usize,
    /// Spend per currency.
    pub totals: Vec<PlanTotal>,
    /// Belts that would trip.
    pub limits: Vec<PlanLimit>,
    /// The funds forecast per account and currency (left out when `[funds]` is off).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub funds: Vec<crate::policy::Forecast>,
}

/// Builds the plan: the pass's own phases up to the forecast (`Engine::plan`), over a scratch
/// copy of the daemon's ledger, so the plan and the next pass decide, hold, trip and forecast
/// alike.
pub async fn build(
    config: &Config,
    env: &Environment,
    clock: Arc<dyn Clock>,
) -> Result<PlanReport, Failure> {
    let scratch = Ledger::scratch_copy(&config.state_dir).map_err(Failure::runtime)?;
    let base = EngineBase {
        ledger: scratch.ledger.clone(),
        metrics: Arc::new(Metrics::new(clock.clone())),
        clock: clock.clone(),
        cancel: CancellationToken::new(),
    };
    let engine = Engine::connect(config.clone(), env, base).await?;
    let planned = engine.plan().await.map_err(Failure::runtime)?;
    Ok(report(config, planned, clock.now()))
}

fn report(config: &Config, planned: Planned, now: DateTime<Utc>) -> PlanReport {
    let Planned {
        observed,
        cleared,
        summary,
    } = planned;
    let assessment = &observed.assessment;
    let held: BTreeMap<usize, LimitKind> = cleared.holds.iter().copied().collect();
    let mut price_of: BTreeMap<usize, Amount> = BTreeMap::new();
    let mut totals: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for c in &assessment.renewals {
        if let Some(q) = &c.price {
            price_of.insert(
                c.row,
                Amount {
                    amount: q.trade_price.as_f64(),
                    currency: q.trade_price.currency.clone(),
                },
            );
            if !held.contains_key(&c.row) {
                let t = totals.entry(q.trade_price.currency.clone()).or_default();
                t.0 += 1;
                t.1 += q.trade_price.cents;
            }
        }
    }
    let mut instances = plan_rows(assessment, &held, &price_of, now);
    instances.sort_by(|a, b| {
        a.expires_at
            .cmp(&b.expires_at)
            .then(a.instance_id.cmp(&b.instance_id))
    });
    PlanReport {
        generated_at: now,
        dry_run: config.dry_run,
        sources: observed
            .reports
            .iter()
            .map(|s| PlanSource {
                account: s.key.account.clone(),
                region: s.key.region.clone(),
                ok: s.ok(),
                instances: s.instances,
                error: s.error.as_ref().map(ToString::to_string),
            })
            .collect(),
        instances,
        renewals: cleared.to_renew.len(),
        held: cleared.held.len(),
        auto_renew_changes: assessment.changes.len(),
        totals: totals
            .into_iter()
            .map(|(currency, (renewals, cents))| PlanTotal {
                currency,
                renewals,
                amount: cents as f64 / 100.0,
            })
            .collect(),
        limits: summary
            .trips
            .iter()
            .map(|t| PlanLimit {
                limit: t.limit.as_str().to_owned(),
                detail: t.detail.clone(),
            })
            .collect(),
        funds: summary.funds,
    }
}

/// Each assessed instance as a plan row, with its price and why (a belt that would hold it,
/// or a price that could not be had).
fn plan_rows(
    assessment: &Assessment,
    held: &BTreeMap<usize, LimitKind>,
    price_of: &BTreeMap<usize, Amount>,
    now: DateTime<Utc>,
) -> Vec<PlanRow> {
    let mut reasons: BTreeMap<usize, String> = BTreeMap::new();
    for c in &assessment.renewals {
        if let Some(e) = &c.price_error {
            reasons.insert(
                c.row,
                format!("{}; price unavailable: {e}", assessment.rows[c.row].reason),
            );
        }
    }
    assessment
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| PlanRow {
            account: row.account.to_string(),
            region: row.region.to_string(),
            instance_id: row.instance_id.clone(),
            name: row.name.clone(),
            expires_at: row.expires_at,
            expires_in_seconds: (row.expires_at - now).num_seconds(),
            policy: row.policy.clone(),
            decision: decision_word(row, held.contains_key(&i)).to_owned(),
            state: row.state.as_str().to_owned(),
            due_at: row.due_at,
            price: price_of.get(&i).cloned(),
            reason: match (held.get(&i), reasons.get(&i)) {
                (Some(limit), _) => format!("{} — held: the {limit} limit would trip", row.reason),
                (None, Some(r)) => r.clone(),
                (None, None) => row.reason.clone(),
            },
        })
        .collect()
}

fn decision_word(row: &Row, held: bool) -> &'static str {
    if row.renew && held {
        "hold"
    } else {
        row.decision().as_str()
    }
}

/// Renders the plan as a table.
pub fn render_text(plan: &PlanReport) -> String {
    let header = [
        "ACCOUNT",
        "REGION",
        "INSTANCE",
        "NAME",
        "EXPIRES (UTC)",
        "",
        "POLICY",
        "DECISION",
        "DUE (UTC)",
        "PRICE",
        "WHY",
    ];
    let rows: Vec<[String; 11]> = plan
        .instances
        .iter()
        .map(|r| {
            [
                r.account.clone(),
                r.region.clone(),
                r.instance_id.clone(),
                r.name.clone(),
                r.expires_at.format("%Y-%m-%d %H:%M").to_string(),
                format_relative(r.expires_in_seconds),
                r.policy.clone().unwrap_or_else(|| "-".into()),
                r.decision.clone(),
                r.due_at
                    .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into()),
                r.price
                    .as_ref()
                    .map(|p| format!("{:.2} {}", p.amount, p.currency))
                    .unwrap_or_else(|| "-".into()),
                r.reason.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&header.map(String::from));
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push('\n');
    out.push_str(&render_summary(plan));
    out
}

/// The lines under the table: sources down, counts, spend, funds, limits, dry run.
fn render_summary(plan: &PlanReport) -> String {
    let mut out = String::new();
    for s in plan.sources.iter().filter(|s| !s.ok) {
        out.push_str(&format!(
            "SOURCE DOWN {}/{}: {}\n",
            s.account,
            s.region,
            s.error.as_deref().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "{} instance(s); {} renewal(s) would be made, {} held by limits; {} auto-renew change(s)\n",
        plan.instances.len(),
        plan.renewals,
        plan.held,
        plan.auto_renew_changes
    ));
    for t in &plan.totals {
        out.push_str(&format!(
            "  spend: {:.2} {} for {} renewal(s)\n",
            t.amount, t.currency, t.renewals
        ));
    }
    for f in &plan.funds {
        let mark = if f.shortfall_at.is_some() {
            "FUNDS SHORT"
        } else {
            "funds"
        };
        out.push_str(&format!("{mark}: {}\n", f.describe()));
    }
    if plan.limits.is_empty() {
        out.push_str("  limits: none would trip\n");
    }
    for l in &plan.limits {
        out.push_str(&format!("  limit {} would trip: {}\n", l.limit, l.detail));
    }
    if plan.dry_run {
        out.push_str("  (the config sets dry_run: the daemon would make no changes)\n");
    }
    out
}

/// Runs `plan` and prints it.
pub async fn run(
    path: &Path,
    env: &Environment,
    clock: Arc<dyn Clock>,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<bool, Failure> {
    let config = Config::load(path, env)?;
    let plan = build(&config, env, clock).await?;
    let text = if json {
        serde_json::to_string_pretty(&plan).map_err(Failure::runtime)? + "\n"
    } else {
        render_text(&plan)
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Failure::runtime(format!("writing the plan: {e}")))?;
    Ok(plan.sources.iter().all(|s| s.ok))
}
