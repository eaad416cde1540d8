//! `ecs-renewd status` and `ecs-renewd history`: read the ledger (read-only; the daemon may be
//! running) and show per-instance status from the last pass, or the money-moving records.

use std::path::Path;

use super::Failure;
use crate::cloud::credentials::Environment;
use crate::config::Config;
use crate::ledger::{HistoryEntry, Ledger, StatusQuery};

pub use crate::ledger::{LastPass, SourceStatus, StatusReport};

/// Reads the status from a ledger.
pub fn report(ledger: &Ledger) -> Result<StatusReport, Failure> {
    ledger
        .status_report(&StatusQuery::default())
        .map_err(Failure::runtime)
}

fn open(path: &Path, env: &Environment) -> Result<Ledger, Failure> {
    let config = Config::load(path, env)?;
    super::open::reader(&config, env)?.ok_or_else(|| {
        Failure::runtime(format!(
            "no ledger in {} yet: run `ecs-renewd once` or start the daemon first",
            config.state_dir.display()
        ))
    })
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

/// What the last pass found that needs a person: renewals refused for a reason retrying
/// cannot fix, and config entries that list the same instances.
fn standing_problems(report: &StatusReport) -> String {
    let Some(summary) = report.last_pass.as_ref().map(|p| &p.summary) else {
        return String::new();
    };
    let text = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap_or("?").to_owned();
    let mut out = String::new();
    for r in summary["refused"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "REFUSED: {} ({}/{}): the renewal was refused ({}: {}); it will lapse unless this is fixed\n",
            text(r, "instance_id"),
            text(r, "account"),
            text(r, "region"),
            text(r, "class"),
            text(r, "code")
        ));
    }
    for d in summary["duplicate_sources"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "OVERLAP: {} lists {} instance(s) that {} lists too (e.g. {}): two config entries reach one cloud account; each instance is managed once\n",
            text(d, "dropped"),
            d["instances"].as_u64().unwrap_or(0),
            text(d, "kept"),
            text(d, "example")
        ));
    }
    out
}

/// Renders a status report as text.
pub fn render_status(report: &StatusReport) -> String {
    let mut out = String::new();
    match &report.last_pass {
        Some(pass) => out.push_str(&format!(
            "last pass: {} at {}\n",
            pass.result,
            pass.finished_at.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        None => out.push_str("no pass recorded yet\n"),
    }
    out.push_str(&standing_problems(report));
    let rows = report
        .instances
        .iter()
        .map(|r| {
            vec![
                r.account.clone(),
                r.region.clone(),
                r.instance_id.clone(),
                when(Some(r.expires_at)),
                r.policy.clone().unwrap_or_else(|| "-".into()),
                r.state.to_string(),
                r.decision.to_string(),
                r.failed_attempts.to_string(),
                when(r.next_retry_at),
                r.last_outcome.clone().unwrap_or_else(|| "-".into()),
                r.reason.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ACCOUNT",
            "REGION",
            "INSTANCE",
            "EXPIRES (UTC)",
            "POLICY",
            "STATE",
            "DECISION",
            "FAILED",
            "NEXT RETRY",
            "LAST OUTCOME",
            "WHY",
        ],
        rows,
    ));
    out
}

/// `ecs-renewd status`: the ledger's status report (opened read-only), as a table or JSON.
pub fn run_status(
    path: &Path,
    env: &Environment,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<(), Failure> {
    let ledger = open(path, env)?;
    let report = report(&ledger)?;
    let text = if json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        render_status(&report)
    };
    out.write_all(text.as_bytes()).map_err(Failure::runtime)
}

/// `ecs-renewd history`: the ledger's money-moving records, optionally for one instance.
pub fn run_history(
    path: &Path,
    env: &Environment,
    instance: Option<&str>,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<(), Failure> {
    let ledger = open(path, env)?;
    let entries: Vec<HistoryEntry> = ledger.money_records(instance).map_err(Failure::runtime)?;
    let text = if json {
        serde_json::to_string_pretty(&entries).unwrap_or_default() + "\n"
    } else {
        table(
            &[
                "AT (UTC)",
                "KIND",
                "ACCOUNT",
                "REGION",
                "INSTANCE",
                "REQUEST",
                "STATUS",
                "ATTEMPTS",
                "ORDER",
                "PRICE",
                "ERROR",
                "CLIENT TOKEN",
            ],
            entries
                .iter()
                .map(|e| {
                    vec![
                        e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        e.kind.to_string(),
                        e.account.clone(),
                        e.region.clone(),
                        e.instance_id.clone(),
                        e.request.clone(),
                        if e.maybe_charged && e.status != "unknown" {
                            format!("{} (may have charged)", e.status)
                        } else {
                            e.status.to_string()
                        },
                        e.attempts.to_string(),
                        e.order_id.clone().unwrap_or_else(|| "-".into()),
                        e.price.clone().unwrap_or_else(|| "-".into()),
                        e.error.clone().unwrap_or_else(|| "-".into()),
                        e.client_token.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect(),
        )
    };
    out.write_all(text.as_bytes()).map_err(Failure::runtime)
}
