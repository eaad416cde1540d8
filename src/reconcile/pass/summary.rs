//! What a pass reports: its summary (logged, stored in the ledger, shown by `once`, `status`
//! and systemd's STATUS), and the wall time of each phase.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

use crate::cloud::ErrorClass;
use crate::metrics::PassResult;
use crate::money::Money;
use crate::policy::{InstanceState, Trip};

/// A pass's summary (logged, stored in the ledger, shown by `once` and systemd's STATUS).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PassSummary {
    /// When the pass began (the clock's now, UTC).
    pub started_at: DateTime<Utc>,
    /// When the pass ended, after its record was written.
    pub finished_at: DateTime<Utc>,
    /// How the pass went (`ok`, `partial` or `failed` in JSON).
    pub result: PassResult,
    /// Instances seen in the expiry window across all sources.
    pub instances: usize,
    /// Sources (account × region) scanned.
    pub sources: usize,
    /// Sources whose scan failed, as `account/region`.
    pub sources_down: Vec<String>,
    /// Renewals ordered in this pass.
    pub renewed: usize,
    /// Renewals refused.
    pub renew_failed: usize,
    /// Renewals whose outcome is unknown (resent next pass with the same token).
    pub renew_unknown: usize,
    /// Renewals verified (new expiry seen) in this pass.
    pub verified: usize,
    /// Renewals still waiting for their new expiry to show.
    pub pending_verification: usize,
    /// Renewals held by safety belts.
    pub held: usize,
    /// Renewals not attempted (expiry moved, re-read failed, shutdown).
    pub skipped: usize,
    /// Dry run: renewals that would have been made.
    pub dry_run_renewals: usize,
    /// Auto-renew changes made.
    pub auto_renew_changed: usize,
    /// Auto-renew changes that failed.
    pub auto_renew_failed: usize,
    /// Dry run: auto-renew changes that would have been made.
    pub dry_run_auto_renew_changes: usize,
    /// Spend per currency (priced renewals only), summed in cents; a number of currency units
    /// per currency code in JSON.
    #[serde(serialize_with = "amounts")]
    pub spend: BTreeMap<String, Money>,
    /// Belts that tripped (`limit: detail` in JSON).
    #[serde(serialize_with = "trip_lines")]
    pub trips: Vec<Trip>,
    /// Instances per state, states with none left out (keyed by the state's word in JSON).
    #[serde(serialize_with = "state_counts")]
    pub by_state: BTreeMap<InstanceState, usize>,
    /// Instance records that could not be understood (not managed until they can be).
    pub undecodable: usize,
    /// Each source's scan: ok, or the failure class and message.
    pub source_results: Vec<SourceResult>,
    /// Seconds spent in each phase.
    pub phase_seconds: BTreeMap<String, f64>,
    /// The earliest retry that will be attempted when it is due (after this pass started);
    /// the daemon may wake for it before its schedule. `None` in dry run.
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Renewals refused for a reason only a person can fix, still standing.
    pub refused: Vec<crate::reconcile::assess::Refused>,
    /// Sources that listed instances another config entry listed first (two entries reach one
    /// cloud account), with how many and one example.
    pub duplicate_sources: Vec<DuplicateSources>,
    /// Attempts found still out at the start of the pass (the process had stopped): counted
    /// as possibly charged.
    pub interrupted: usize,
    /// The funds forecast per account and currency (empty when `[funds] enabled = false`).
    pub funds: Vec<crate::policy::Forecast>,
    /// Renewals held by a funds backoff that a top-up now covers: retried in this pass.
    pub top_ups: Vec<crate::reconcile::funds::TopUp>,
    /// Sources (account, region) of accounts no longer configured — an entry removed, a
    /// directory's member gone — whose health, series and status lines this pass forgot.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forgotten_sources: Vec<(String, String)>,
}

/// Instances one source listed that another listed first, in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DuplicateSources {
    /// The source the instances were managed through.
    pub kept: String,
    /// The source whose listings were set aside.
    pub dropped: String,
    /// How many instances both listed.
    pub instances: usize,
    /// One of them, for the operator to look up.
    pub example: String,
}

/// How one source's scan went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceResult {
    /// Name of the config account entry scanned.
    pub account: String,
    /// The region scanned, e.g. cn-hangzhou.
    pub region: String,
    /// The failure class, when it failed.
    pub failure_class: Option<ErrorClass>,
    /// The failure, in words, when it failed.
    pub error: Option<String>,
}

/// Spend as JSON has always shown it: currency code → amount in currency units.
fn amounts<S: Serializer>(spend: &BTreeMap<String, Money>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(
        spend
            .iter()
            .map(|(currency, money)| (currency, money.as_f64())),
    )
}

/// Each trip as one line, `limit: detail`.
fn trip_lines<S: Serializer>(trips: &[Trip], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(trips.iter().map(ToString::to_string))
}

/// State words in alphabetical order, as the counts were always listed.
fn state_counts<S: Serializer>(
    by_state: &BTreeMap<InstanceState, usize>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let words: BTreeMap<&str, usize> = by_state.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    s.collect_map(words)
}

/// How many of a forecast's charges (and unpriced charges) a pass record lists, earliest first:
/// the ones a shortfall is about. The rest are counted (`charges_not_recorded`).
pub const RECORDED_CHARGES: usize = 50;

impl PassSummary {
    /// The JSON the ledger keeps for the pass: the summary, with each forecast's charge list
    /// cut to its earliest [`RECORDED_CHARGES`] (a pass record is written every pass and kept).
    pub fn record_json(&self) -> String {
        let record = PassSummary {
            funds: self
                .funds
                .iter()
                .map(|f| f.for_record(RECORDED_CHARGES))
                .collect(),
            ..self.clone()
        };
        serde_json::to_string(&record).unwrap_or_default()
    }

    /// An empty summary for a pass that began at `started`.
    pub fn starting(started: DateTime<Utc>) -> PassSummary {
        PassSummary {
            started_at: started,
            ..PassSummary::default()
        }
    }

    /// One line for logs and systemd's STATUS.
    pub fn line(&self) -> String {
        format!(
            "last pass {} at {}: {} instances, {} renewed, {} failed, {} unknown, {} pending verification, {} held, {} auto-renew changes, {} sources down",
            self.result,
            crate::cloud::time::format_seconds(self.finished_at),
            self.instances,
            self.renewed,
            self.renew_failed,
            self.renew_unknown,
            self.pending_verification,
            self.held,
            self.auto_renew_changed,
            self.sources_down.len()
        )
    }
}

/// Wall time per phase of a pass.
pub struct Phases {
    last: tokio::time::Instant,
    laps: BTreeMap<String, f64>,
}

impl Phases {
    /// Starts timing at the beginning of the first phase.
    pub fn start() -> Phases {
        Phases {
            last: tokio::time::Instant::now(),
            laps: BTreeMap::new(),
        }
    }

    /// Ends `phase`: its time is the time since the previous lap.
    pub fn lap(&mut self, phase: &str) {
        let now = tokio::time::Instant::now();
        self.laps
            .insert(phase.to_owned(), (now - self.last).as_secs_f64());
        self.last = now;
    }

    /// Seconds per phase.
    pub fn into_seconds(self) -> BTreeMap<String, f64> {
        self.laps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;
    use crate::policy::{Charge, ChargeBy, Forecast};
    use crate::reconcile::assess::Refused;
    use crate::reconcile::funds::TopUp;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn cny(cents: i64) -> Money {
        Money {
            cents,
            currency: "CNY".into(),
        }
    }

    /// A pass with every field set, as `status --json`, `once --json` and the ledger show it.
    fn sample() -> PassSummary {
        PassSummary {
            started_at: at("2026-12-01T02:00:00Z"),
            finished_at: at("2026-12-01T02:00:07Z"),
            result: PassResult::Partial,
            instances: 6,
            sources: 2,
            sources_down: vec!["prod/cn-shanghai".into()],
            renewed: 2,
            renew_failed: 1,
            renew_unknown: 1,
            verified: 2,
            pending_verification: 0,
            held: 1,
            skipped: 1,
            dry_run_renewals: 0,
            auto_renew_changed: 3,
            auto_renew_failed: 0,
            dry_run_auto_renew_changes: 0,
            spend: [
                ("CNY".to_owned(), cny(123_450)),
                (
                    "USD".to_owned(),
                    Money {
                        cents: 1000,
                        currency: "USD".into(),
                    },
                ),
            ]
            .into(),
            trips: vec![Trip {
                limit: crate::policy::LimitKind::RenewalsPerRun,
                detail: "3 renewals, limit 2".into(),
            }],
            by_state: [
                (InstanceState::Ok, 3),
                (InstanceState::Due, 1),
                (InstanceState::Backoff, 2),
            ]
            .into(),
            undecodable: 0,
            source_results: vec![
                SourceResult {
                    account: "prod".into(),
                    region: "cn-hangzhou".into(),
                    failure_class: None,
                    error: None,
                },
                SourceResult {
                    account: "prod".into(),
                    region: "cn-shanghai".into(),
                    failure_class: Some(ErrorClass::Permission),
                    error: Some("Forbidden.RAM".into()),
                },
            ],
            phase_seconds: [("observe".to_owned(), 1.5)].into(),
            next_retry_at: Some(at("2026-12-01T02:05:00Z")),
            refused: vec![Refused {
                account: "prod".into(),
                region: "cn-hangzhou".into(),
                instance_id: "i-1".into(),
                class: ErrorClass::Permission,
                code: "Forbidden.RAM".into(),
            }],
            duplicate_sources: vec![DuplicateSources {
                kept: "prod/cn-hangzhou".into(),
                dropped: "prod-2/cn-hangzhou".into(),
                instances: 1,
                example: "i-2".into(),
            }],
            interrupted: 1,
            funds: vec![Forecast {
                account: "prod".into(),
                currency: "CNY".into(),
                available: Some(cny(10_000)),
                unknown: None,
                charges: vec![Charge {
                    instance_id: "i-3".into(),
                    amount: cny(30_000),
                    at: at("2026-12-02T00:00:00Z"),
                    by: ChargeBy::Provider,
                }],
                unpriced: Vec::new(),
                sources_down: Vec::new(),
                auto_renew_unknown: Vec::new(),
                charges_not_recorded: 0,
                unpriced_not_recorded: 0,
                upcoming: cny(30_000),
                by_daemon: cny(0),
                by_provider: cny(30_000),
                shortfall_at: Some(at("2026-12-02T00:00:00Z")),
                short_by: Some(cny(20_000)),
                until: at("2026-12-09T00:00:00Z"),
            }],
            top_ups: vec![TopUp {
                account: "prod".into(),
                available: cny(10_000),
                retried: vec!["i-4".into()],
            }],
            forgotten_sources: vec![("org/2000000000000002".into(), "cn-hangzhou".into())],
        }
    }

    /// The JSON of a pass keeps its shape and words whatever the types behind it (operators'
    /// scripts read `status --json`, and the ledger keeps every record).
    #[test]
    fn the_json_of_a_pass_keeps_its_shape() {
        let json: serde_json::Value = serde_json::from_str(&sample().record_json()).unwrap();
        let pinned: serde_json::Value = serde_json::from_str(PINNED).unwrap();
        assert_eq!(json, pinned, "{json}");
    }

    const PINNED: &str = r#"{
  "auto_renew_changed": 3,
  "forgotten_sources": [["org/2000000000000002", "cn-hangzhou"]],
  "auto_renew_failed": 0,
  "dry_run_auto_renew_changes": 0,
  "by_state": {
    "backoff": 2,
    "due": 1,
    "ok": 3
  },
  "dry_run_renewals": 0,
  "duplicate_sources": [
    {
      "dropped": "prod-2/cn-hangzhou",
      "example": "i-2",
      "instances": 1,
      "kept": "prod/cn-hangzhou"
    }
  ],
  "finished_at": "2026-12-01T02:00:07Z",
  "funds": [
    {
      "account": "prod",
      "available": {
        "cents": 10000,
        "currency": "CNY"
      },
      "by_daemon": {
        "cents": 0,
        "currency": "CNY"
      },
      "by_provider": {
        "cents": 30000,
        "currency": "CNY"
      },
      "charges": [
        {
          "amount": {
            "cents": 30000,
            "currency": "CNY"
          },
          "at": "2026-12-02T00:00:00Z",
          "by": "auto-renew",
          "instance_id": "i-3"
        }
      ],
      "currency": "CNY",
      "short_by": {
        "cents": 20000,
        "currency": "CNY"
      },
      "shortfall_at": "2026-12-02T00:00:00Z",
      "until": "2026-12-09T00:00:00Z",
      "upcoming": {
        "cents": 30000,
        "currency": "CNY"
      }
    }
  ],
  "held": 1,
  "instances": 6,
  "interrupted": 1,
  "next_retry_at": "2026-12-01T02:05:00Z",
  "pending_verification": 0,
  "phase_seconds": {
    "observe": 1.5
  },
  "refused": [
    {
      "account": "prod",
      "class": "permission",
      "code": "Forbidden.RAM",
      "instance_id": "i-1",
      "region": "cn-hangzhou"
    }
  ],
  "renew_failed": 1,
  "renew_unknown": 1,
  "renewed": 2,
  "result": "partial",
  "skipped": 1,
  "source_results": [
    {
      "account": "prod",
      "error": null,
      "failure_class": null,
      "region": "cn-hangzhou"
    },
    {
      "account": "prod",
      "error": "Forbidden.RAM",
      "failure_class": "permission",
      "region": "cn-shanghai"
    }
  ],
  "sources": 2,
  "sources_down": [
    "prod/cn-shanghai"
  ],
  "spend": {
    "CNY": 1234.5,
    "USD": 10.0
  },
  "started_at": "2026-12-01T02:00:00Z",
  "top_ups": [
    {
      "account": "prod",
      "available": {
        "cents": 10000,
        "currency": "CNY"
      },
      "retried": [
        "i-4"
      ]
    }
  ],
  "trips": [
    "renewals_per_run: 3 renewals, limit 2"
  ],
  "undecodable": 0,
  "verified": 2
}"#;
}
