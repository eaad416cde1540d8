//! The daemon's Prometheus metrics, on its own registry (prefix `ecs_renewd_`, labels from
//! closed sets, never an error message or a secret in a label). Per-instance series are
//! rendered at scrape time straight from the ledger's status table (the latest pass's view), so
//! the daemon holds no per-instance state in memory between passes, and 100,000 instances cost
//! no per-series objects.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Counter, CounterVec, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::clock::Clock;
use crate::cloud::Action;
use crate::cloud::client::CallObserver;
use crate::cloud::error::ErrorClass;
use crate::ledger::{Ledger, LedgerError, MetricRow};
use crate::policy::LimitKind;

/// Metric name prefix.
pub const PREFIX: &str = "ecs_renewd";

/// Renewal results (a label).
pub const RESULT_OK: &str = "ok";
/// A refused renewal.
pub const RESULT_FAILED: &str = "failed";
/// A renewal whose outcome is unknown.
pub const RESULT_UNKNOWN: &str = "unknown";

crate::closed_enum! {
    /// How a pass went (the `passes_total{result}` label, and the pass summary's `result`).
    pub enum PassResult {
        /// Everything scanned and done.
        Ok => "ok",
        /// Something needs a look: a source down, a charge refused or unknown, a belt tripped.
        Partial => "partial",
        /// Nothing could be done: every source failed, or the pass stopped on a ledger error.
        Failed => "failed",
    }
}

impl Default for PassResult {
    /// A pass that has not reached its end has not succeeded.
    fn default() -> Self {
        PassResult::Failed
    }
}

/// Every metric.
pub struct Metrics {
    registry: Registry,
    /// `renewals_total{result,class}`.
    pub renewals_total: IntCounterVec,
    /// `auto_renew_changes_total{result}`.
    pub auto_renew_changes_total: IntCounterVec,
    /// `renewal_spend_total{currency}`.
    pub renewal_spend_total: CounterVec,
    /// `source_up{account,region}`.
    pub source_up: IntGaugeVec,
    /// `scan_last_success_timestamp_seconds{account,region}`.
    pub scan_last_success: GaugeVec,
    /// `scan_duration_seconds{account,region}`.
    pub scan_duration: GaugeVec,
    /// `api_requests_total{action,region,class}`.
    pub api_requests_total: IntCounterVec,
    /// `api_request_duration_seconds{action}`.
    pub api_request_duration: HistogramVec,
    /// `limit_trips_total{limit}`.
    pub limit_trips_total: IntCounterVec,
    /// `passes_total{result}`.
    pub passes_total: IntCounterVec,
    /// `ticks_coalesced_total`: ticks that arrived during a pass and were folded into the next.
    pub ticks_coalesced_total: IntCounter,
    /// `scheduler_missed_ticks_total`: cron ticks not delivered in time; the watchdog ran the pass.
    pub scheduler_missed_ticks_total: IntCounter,
    /// `config_last_reload_successful`: 1 when the last config reload (SIGHUP) succeeded, else 0.
    pub config_last_reload_successful: IntGauge,
    /// `clock_time_seconds` (set at scrape).
    pub clock_time_seconds: Gauge,
    /// `dry_run`: 1 when the config has dry-run on (nothing is changed), else 0.
    pub dry_run: IntGauge,
    /// `schedule_interval_seconds`: the typical interval between scheduled passes, in seconds.
    pub schedule_interval_seconds: Gauge,
    /// `instances_undecodable_total`: records ECS returned that could not be understood.
    pub undecodable_total: IntCounter,
    /// `renewals_refused{account,class}`: instances whose renewal stands refused for a reason
    /// only a person can fix (permission, clock, invalid request).
    pub renewals_refused: IntGaugeVec,
    /// `auto_renew_too_late{account}`: instances relying on the provider's auto-renew with no
    /// deduction attempt left before their expiry.
    pub auto_renew_too_late: IntGaugeVec,
    /// `source_duplicate_instances{account,region}`: instances this source listed that another
    /// config entry listed first in the last pass (two entries reach one cloud account).
    pub source_duplicate_instances: IntGaugeVec,
    /// `admin_connections_closed_total{reason}`: admin connections the server closed because
    /// of a limit (`header_timeout`, `write_timeout`, `answer_timeout`, `evicted`).
    pub admin_connections_closed_total: IntCounterVec,
    /// The funds forecast's gauges.
    pub funds: FundsMetrics,
    /// Leadership: whether this process acts, under which epoch, and its lease.
    pub leadership: LeaderMetrics,
    clock: Arc<dyn Clock>,
    names: Vec<String>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn name(suffix: &str) -> String {
    format!("{PREFIX}_{suffix}")
}

/// The registry being filled, and the name of every family the daemon exports so far.
struct Registrar {
    registry: Registry,
    names: Vec<String>,
}

impl Registrar {
    /// An empty registry; the names start with the per-instance families, which are rendered
    /// from the ledger rather than registered.
    fn new() -> Registrar {
        Registrar {
            registry: Registry::new(),
            names: INSTANCE_FAMILIES.iter().map(|f| name(f.0)).collect(),
        }
    }

    /// Registers `metric` (whose definition must be valid), notes its names and returns it.
    fn register<M>(&mut self, metric: prometheus::Result<M>) -> M
    where
        M: prometheus::core::Collector + Clone + 'static,
    {
        let metric = metric.expect("metric definitions are static and valid");
        self.names.extend(
            prometheus::core::Collector::desc(&metric)
                .iter()
                .map(|d| d.fq_name.clone()),
        );
        self.registry
            .register(Box::new(metric.clone()))
            .expect("each metric is registered once");
        metric
    }
}

/// What renewals and auto-renew changes did and cost.
struct RenewalMetrics {
    renewals_total: IntCounterVec,
    auto_renew_changes_total: IntCounterVec,
    renewal_spend_total: CounterVec,
}

impl RenewalMetrics {
    /// Registers `renewals_total`, `auto_renew_changes_total` and `renewal_spend_total`.
    fn register(registrar: &mut Registrar) -> RenewalMetrics {
        let renewals_total = registrar.register(IntCounterVec::new(
            Opts::new(
                name("renewals_total"),
                "RenewInstance outcomes: result ok, failed or unknown (outcome not known yet), with the failure class",
            ),
            &["result", "class"],
        ));
        let auto_renew_changes_total = registrar.register(IntCounterVec::new(
            Opts::new(
                name("auto_renew_changes_total"),
                "ModifyInstanceAutoRenewAttribute changes per instance, by result",
            ),
            &["result"],
        ));
        let renewal_spend_total = registrar.register(CounterVec::new(
            Opts::new(
                name("renewal_spend_total"),
                "Money spent on renewals that were priced, in currency units",
            ),
            &["currency"],
        ));
        RenewalMetrics {
            renewals_total,
            auto_renew_changes_total,
            renewal_spend_total,
        }
    }

    /// Pre-fills every (result, class) of `renewals_total` and every result of
    /// `auto_renew_changes_total` with zero.
    fn prefill(&self) {
        for class in ErrorClass::ALL {
            self.renewals_total
                .with_label_values(&[RESULT_FAILED, class.as_str()]);
            self.renewals_total
                .with_label_values(&[RESULT_UNKNOWN, class.as_str()]);
        }
        self.renewals_total.with_label_values(&[RESULT_OK, "none"]);
        for result in ["ok", "failed"] {
            self.auto_renew_changes_total.with_label_values(&[result]);
        }
    }
}

/// The health of each (account, region) source's scan.
struct SourceMetrics {
    source_up: IntGaugeVec,
    scan_last_success: GaugeVec,
    scan_duration: GaugeVec,
}

impl SourceMetrics {
    /// Registers `source_up`, `scan_last_success_timestamp_seconds` and `scan_duration_seconds`.
    fn register(registrar: &mut Registrar) -> SourceMetrics {
        let source_up = registrar.register(IntGaugeVec::new(
            Opts::new(
                name("source_up"),
                "1 when the last scan of the (account, region) source succeeded completely",
            ),
            &["account", "region"],
        ));
        let scan_last_success = registrar.register(GaugeVec::new(
            Opts::new(
                name("scan_last_success_timestamp_seconds"),
                "When the source was last scanned completely",
            ),
            &["account", "region"],
        ));
        let scan_duration = registrar.register(GaugeVec::new(
            Opts::new(
                name("scan_duration_seconds"),
                "How long the source's last scan took",
            ),
            &["account", "region"],
        ));
        SourceMetrics {
            source_up,
            scan_last_success,
            scan_duration,
        }
    }
}

/// The ECS API attempts.
struct ApiMetrics {
    api_requests_total: IntCounterVec,
    api_request_duration: HistogramVec,
}

impl ApiMetrics {
    /// Registers `api_requests_total` and `api_request_duration_seconds`.
    fn register(registrar: &mut Registrar) -> ApiMetrics {
        let api_requests_total = registrar.register(IntCounterVec::new(
            Opts::new(
                name("api_requests_total"),
                "ECS API attempts by action, region and outcome class (ok or a failure class)",
            ),
            &["action", "region", "class"],
        ));
        let api_request_duration = registrar.register(HistogramVec::new(
            HistogramOpts::new(
                name("api_request_duration_seconds"),
                "ECS API attempt latency",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
            ]),
            &["action"],
        ));
        ApiMetrics {
            api_requests_total,
            api_request_duration,
        }
    }
}

/// Reconcile passes and the safety belts that tripped in them.
struct PassMetrics {
    limit_trips_total: IntCounterVec,
    passes_total: IntCounterVec,
}

impl PassMetrics {
    /// Registers `limit_trips_total` and `passes_total`.
    fn register(registrar: &mut Registrar) -> PassMetrics {
        let limit_trips_total = registrar.register(IntCounterVec::new(
            Opts::new(
                name("limit_trips_total"),
                "Safety belts that tripped and held renewals",
            ),
            &["limit"],
        ));
        let passes_total = registrar.register(IntCounterVec::new(
            Opts::new(name("passes_total"), "Reconcile passes by result"),
            &["result"],
        ));
        PassMetrics {
            limit_trips_total,
            passes_total,
        }
    }

    /// Pre-fills every limit of `limit_trips_total` and every result of `passes_total`
    /// with zero.
    fn prefill(&self) {
        for limit in LimitKind::ALL {
            self.limit_trips_total.with_label_values(&[limit.as_str()]);
        }
        for result in [PassResult::Ok, PassResult::Partial, PassResult::Failed] {
            self.passes_total.with_label_values(&[result.as_str()]);
        }
    }
}

/// Registers `admin_connections_closed_total` with every reason pre-filled with zero.
fn register_admin(registrar: &mut Registrar) -> IntCounterVec {
    let admin_connections_closed_total = registrar.register(IntCounterVec::new(
        Opts::new(
            name("admin_connections_closed_total"),
            "Admin HTTP connections closed by a limit: header_timeout (no complete request head in time, idle keep-alive connections included), write_timeout (the client took nothing of an answer), answer_timeout (an answer took too long), evicted (closed at the connection cap to let a new one in)",
        ),
        &["reason"],
    ));
    for reason in [
        "header_timeout",
        "write_timeout",
        "answer_timeout",
        "evicted",
    ] {
        admin_connections_closed_total.with_label_values(&[reason]);
    }
    admin_connections_closed_total
}

/// The scheduler, the config and the daemon's clock.
struct DaemonMetrics {
    ticks_coalesced_total: IntCounter,
    scheduler_missed_ticks_total: IntCounter,
    config_last_reload_successful: IntGauge,
    clock_time_seconds: Gauge,
    dry_run: IntGauge,
    schedule_interval_seconds: Gauge,
}

impl DaemonMetrics {
    /// Registers the tick counters, `config_last_reload_successful`, `clock_time_seconds`,
    /// `dry_run` and `schedule_interval_seconds`.
    fn register(registrar: &mut Registrar) -> DaemonMetrics {
        let ticks_coalesced_total = registrar.register(IntCounter::new(
            name("ticks_coalesced_total"),
            "Ticks that arrived while a pass was running and were folded into the next one",
        ));
        let scheduler_missed_ticks_total = registrar.register(IntCounter::new(
            name("scheduler_missed_ticks_total"),
            "Cron ticks the scheduler did not deliver in time; the watchdog ran the pass itself",
        ));
        let config_last_reload_successful = registrar.register(IntGauge::new(
            name("config_last_reload_successful"),
            "1 when the last config reload (SIGHUP) succeeded",
        ));
        let clock_time_seconds = registrar.register(Gauge::new(
            name("clock_time_seconds"),
            "The daemon's wall clock at scrape time, to detect clock skew",
        ));
        let dry_run = registrar.register(IntGauge::new(
            name("dry_run"),
            "1 when dry-run is on: nothing is changed",
        ));
        let schedule_interval_seconds = registrar.register(Gauge::new(
            name("schedule_interval_seconds"),
            "The typical interval between scheduled passes",
        ));
        DaemonMetrics {
            ticks_coalesced_total,
            scheduler_missed_ticks_total,
            config_last_reload_successful,
            clock_time_seconds,
            dry_run,
            schedule_interval_seconds,
        }
    }
}

/// Instances that need a person: undecodable records, refused renewals, duplicates.
struct FleetMetrics {
    undecodable_total: IntCounter,
    renewals_refused: IntGaugeVec,
    auto_renew_too_late: IntGaugeVec,
    source_duplicate_instances: IntGaugeVec,
}

impl FleetMetrics {
    /// Registers `instances_undecodable_total`, `renewals_refused`
    /// and `source_duplicate_instances`.
    fn register(registrar: &mut Registrar) -> FleetMetrics {
        let undecodable_total = registrar.register(IntCounter::new(
            name("instances_undecodable_total"),
            "Instance records from ECS that could not be understood (they are not managed until they can be)",
        ));
        let renewals_refused = registrar.register(IntGaugeVec::new(
            Opts::new(
                name("renewals_refused"),
                "Instances whose renewal the service refused for a reason only a person can fix (class permission, clock or invalid), as of the last pass",
            ),
            &["account", "class"],
        ));
        let auto_renew_too_late = registrar.register(IntGaugeVec::new(
            Opts::new(
                name("auto_renew_too_late"),
                "Instances relying on the provider's auto-renew with no deduction attempt left before their expiry, as of the last pass: auto-renew cannot renew them in time",
            ),
            &["account"],
        ));
        let source_duplicate_instances = registrar.register(IntGaugeVec::new(
            Opts::new(
                name("source_duplicate_instances"),
                "Instances this source listed that another config entry listed first in the last pass: two entries reach one cloud account",
            ),
            &["account", "region"],
        ));
        FleetMetrics {
            undecodable_total,
            renewals_refused,
            auto_renew_too_late,
            source_duplicate_instances,
        }
    }
}

/// Registers `build_info` and sets its series for this version to 1.
fn register_build_info(registrar: &mut Registrar) {
    let build_info = registrar.register(IntGaugeVec::new(
        Opts::new(name("build_info"), "Build information"),
        &["version"],
    ));
    build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
}

/// Leadership (docs/architecture.md, "Two replicas"): the acting process exports
/// `leader 1`, a standby `leader 0`, so `sum(ecs_renewd_leader)` over the replicas is 1 when
/// all is well. The names are fixed (issue 24): dashboards and alerts use them.
pub struct LeaderMetrics {
    /// `leader`: 1 while this process acts (renews, writes the ledger), 0 on standby.
    pub leader: IntGauge,
    /// `leader_epoch`: the fencing epoch of this process's term (0 for the one process of a
    /// SQLite ledger).
    pub epoch: IntGauge,
    /// `leader_transitions_total`: times this process became leader or stopped being one.
    pub transitions_total: IntCounter,
    /// `lease_renewals_total{result}` (`ok`, `lost`, `error`): the leader's lease renewals.
    pub lease_renewals_total: IntCounterVec,
    /// `fenced_writes_total`: ledger writes refused because another process took the lease.
    pub fenced_writes_total: IntCounter,
}

impl LeaderMetrics {
    fn register(registrar: &mut Registrar) -> LeaderMetrics {
        let leader = registrar.register(IntGauge::new(
            name("leader"),
            "1 while this process is the leader (it renews and writes the ledger), 0 on standby",
        ));
        let epoch = registrar.register(IntGauge::new(
            name("leader_epoch"),
            "The fencing epoch of this process's leadership term (0: the one process of a SQLite ledger)",
        ));
        let transitions_total = registrar.register(IntCounter::new(
            name("leader_transitions_total"),
            "Times this process became leader or stopped being one",
        ));
        let lease_renewals_total = registrar.register(IntCounterVec::new(
            Opts::new(
                name("lease_renewals_total"),
                "The leader's lease renewals by result (ok, lost, error)",
            ),
            &["result"],
        ));
        let fenced_writes_total = registrar.register(IntCounter::new(
            name("fenced_writes_total"),
            "Ledger writes refused because another process took the leader lease",
        ));
        for result in ["ok", "lost", "error"] {
            lease_renewals_total.with_label_values(&[result]);
        }
        LeaderMetrics {
            leader,
            epoch,
            transitions_total,
            lease_renewals_total,
            fenced_writes_total,
        }
    }

    /// This process leads alone: a SQLite ledger has one writer, held by the state
    /// directory's lock for the life of the process, which is its term (epoch 0).
    pub fn lead_alone(&self) {
        self.leader.set(1);
        self.epoch.set(0);
        self.transitions_total.inc();
    }
}

/// The funds forecast: each account's available amount, the charges coming in the window, and
/// when they first exceed it.
pub struct FundsMetrics {
    /// `account_available_amount{account,currency}`.
    pub available: GaugeVec,
    /// `upcoming_charges{account,currency,by}` (`by`: `ecs-renewd` or `auto-renew`).
    pub upcoming: GaugeVec,
    /// `funds_shortfall_timestamp_seconds{account,currency}`: absent when covered.
    pub shortfall_at: GaugeVec,
    /// `upcoming_charges_unpriced{account,currency}`: charges in the window left out of
    /// `upcoming_charges` because they could not be priced.
    pub unpriced: IntGaugeVec,
    /// `funds_forecast_incomplete{account,reason}`: 1 while the account's forecast cannot see
    /// something (a source down, unpriced charges, the balance, auto-renew attributes), 0
    /// otherwise.
    pub incomplete: IntGaugeVec,
}

impl FundsMetrics {
    fn register(registrar: &mut Registrar) -> FundsMetrics {
        let available = registrar.register(GaugeVec::new(
            Opts::new(
                name("account_available_amount"),
                "The account's available amount (BSS QueryAccountBalance AvailableAmount); may be negative",
            ),
            &["account", "currency"],
        ));
        let upcoming = registrar.register(GaugeVec::new(
            Opts::new(
                name("upcoming_charges"),
                "Renewal charges expected in the forecast window, by who makes them (ecs-renewd or the provider's auto-renew)",
            ),
            &["account", "currency", "by"],
        ));
        let shortfall_at = registrar.register(GaugeVec::new(
            Opts::new(
                name("funds_shortfall_timestamp_seconds"),
                "When the running total of upcoming charges first exceeds the available amount; absent when covered",
            ),
            &["account", "currency"],
        ));
        let unpriced = registrar.register(IntGaugeVec::new(
            Opts::new(
                name("upcoming_charges_unpriced"),
                "Charges in the forecast window that could not be priced (DescribeRenewalPrice failed or cannot price the period): not in upcoming_charges, which is then a floor",
            ),
            &["account", "currency"],
        ));
        let incomplete = registrar.register(IntGaugeVec::new(
            Opts::new(
                name("funds_forecast_incomplete"),
                "1 while the account's funds forecast cannot see something, by reason (source_down: a source could not be scanned; unpriced: charges without a price; balance_unknown: the balance could not be read; auto_renew_unknown: auto-renew attributes could not be read): never read as covered",
            ),
            &["account", "reason"],
        ));
        FundsMetrics {
            available,
            upcoming,
            shortfall_at,
            unpriced,
            incomplete,
        }
    }

    /// Shows the pass's forecasts; series of accounts and currencies no longer forecast (and
    /// shortfalls that are covered now) go away. `accounts` (those with the forecast on) get
    /// an incomplete series per reason, 0 when complete.
    pub fn publish(&self, forecasts: &[crate::policy::Forecast], accounts: &[&str]) {
        self.available.reset();
        self.upcoming.reset();
        self.shortfall_at.reset();
        self.unpriced.reset();
        self.incomplete.reset();
        for account in accounts {
            for gap in crate::policy::Gap::ALL {
                let gaps = forecasts
                    .iter()
                    .filter(|f| f.account == *account)
                    .flat_map(|f| f.gaps());
                let open = gaps.into_iter().any(|g| g == *gap);
                self.incomplete
                    .with_label_values(&[account, gap.as_str()])
                    .set(i64::from(open));
            }
        }
        for f in forecasts {
            let labels = [f.account.as_str(), f.currency.as_str()];
            self.unpriced
                .with_label_values(&labels)
                .set(f.unpriced.len() as i64);
            if let Some(available) = &f.available {
                self.available
                    .with_label_values(&labels)
                    .set(available.as_f64());
            }
            for (by, amount) in [("ecs-renewd", &f.by_daemon), ("auto-renew", &f.by_provider)] {
                self.upcoming
                    .with_label_values(&[labels[0], labels[1], by])
                    .set(amount.as_f64());
            }
            if let Some(at) = f.shortfall_at {
                self.shortfall_at
                    .with_label_values(&labels)
                    .set(at.timestamp() as f64);
            }
        }
    }
}

impl Metrics {
    /// Creates and registers every metric; closed label sets are pre-filled with zeros so
    /// `increase()` works from the first failure.
    pub fn new(clock: Arc<dyn Clock>) -> Metrics {
        let mut registrar = Registrar::new();
        let renewals = RenewalMetrics::register(&mut registrar);
        let sources = SourceMetrics::register(&mut registrar);
        let api = ApiMetrics::register(&mut registrar);
        let passes = PassMetrics::register(&mut registrar);
        let admin_connections_closed_total = register_admin(&mut registrar);
        let daemon = DaemonMetrics::register(&mut registrar);
        let fleet = FleetMetrics::register(&mut registrar);
        let funds = FundsMetrics::register(&mut registrar);
        let leadership = LeaderMetrics::register(&mut registrar);
        register_build_info(&mut registrar);
        daemon.config_last_reload_successful.set(1);
        registrar
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process collector is registered once");
        renewals.prefill();
        passes.prefill();
        Metrics {
            registry: registrar.registry,
            renewals_total: renewals.renewals_total,
            auto_renew_changes_total: renewals.auto_renew_changes_total,
            renewal_spend_total: renewals.renewal_spend_total,
            source_up: sources.source_up,
            scan_last_success: sources.scan_last_success,
            scan_duration: sources.scan_duration,
            api_requests_total: api.api_requests_total,
            api_request_duration: api.api_request_duration,
            limit_trips_total: passes.limit_trips_total,
            passes_total: passes.passes_total,
            ticks_coalesced_total: daemon.ticks_coalesced_total,
            scheduler_missed_ticks_total: daemon.scheduler_missed_ticks_total,
            config_last_reload_successful: daemon.config_last_reload_successful,
            clock_time_seconds: daemon.clock_time_seconds,
            dry_run: daemon.dry_run,
            schedule_interval_seconds: daemon.schedule_interval_seconds,
            undecodable_total: fleet.undecodable_total,
            renewals_refused: fleet.renewals_refused,
            auto_renew_too_late: fleet.auto_renew_too_late,
            source_duplicate_instances: fleet.source_duplicate_instances,
            admin_connections_closed_total,
            funds,
            leadership,
            clock,
            names: registrar.names,
        }
    }

    /// Every metric family this daemon exports (`ecs_renewd_*`), whether or not it has a sample
    /// yet; histograms add `_bucket`, `_sum` and `_count`, and `process_*` comes from the
    /// process collector.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Counts a spend.
    pub fn add_spend(&self, currency: &str, amount: f64) {
        let counter: Counter = self.renewal_spend_total.with_label_values(&[currency]);
        counter.inc_by(amount);
    }

    /// The registry's metrics (everything but the per-instance families) as text.
    pub fn render_registry(&self) -> String {
        self.clock_time_seconds
            .set(self.clock.now().timestamp_millis() as f64 / 1000.0);
        let mut out = String::new();
        if let Err(error) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }

    /// Everything, per-instance families from `status`, as one string (tests, small fleets;
    /// the admin server streams the same text in chunks).
    pub fn render(&self, status: &Ledger) -> String {
        let mut out = self.render_registry();
        if let Err(error) = render_instances(status, &mut out) {
            tracing::error!(%error, "reading per-instance metrics failed");
        }
        out
    }
}

impl CallObserver for Metrics {
    fn attempt_finished(
        &self,
        _account: &str,
        action: Action,
        region: &str,
        outcome: Result<(), ErrorClass>,
        elapsed: Duration,
    ) {
        let class = match outcome {
            Ok(()) => "ok",
            Err(class) => class.as_str(),
        };
        self.api_requests_total
            .with_label_values(&[action.as_str(), region, class])
            .inc();
        self.api_request_duration
            .with_label_values(&[action.as_str()])
            .observe(elapsed.as_secs_f64());
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How a per-instance family's value is read from a status line (absent: no sample).
type Sample = fn(&MetricRow<'_>) -> Option<String>;

/// The per-instance families: suffix, help, value.
const INSTANCE_FAMILIES: [(&str, &str, Sample); 6] = [
    (
        "instance_expiration_timestamp_seconds",
        "When the instance's paid period ends (kept after expiry until release)",
        |r| Some(r.expires_at.to_string()),
    ),
    (
        "instance_next_action_timestamp_seconds",
        "When the next action on the instance is due",
        |r| r.next_action_at.map(|t| t.to_string()),
    ),
    (
        "instance_state",
        "The instance's state; the series of its current state is 1",
        |_| Some("1".into()),
    ),
    (
        "instance_failed_attempts",
        "Failed renewal attempts in a row for the current expiry (absent when none)",
        |r| (r.failed_attempts > 0).then(|| r.failed_attempts.to_string()),
    ),
    (
        "instance_auto_renew_drift",
        "1 when the provider's auto-renew settings differ from the policy",
        |r| r.drift.then(|| "1".into()),
    ),
    (
        "instance_deduction_overdue",
        "1 when the provider's auto-renew deduction should have extended the expiry by now and has not",
        |r| r.deduction_overdue.then(|| "1".into()),
    ),
];

/// Status lines read per page while rendering the per-instance families.
pub const ROWS_PER_PAGE: usize = 1000;

/// A position in the per-instance families: which family, and after which status line. Each
/// page is read from the ledger on its own (the connection is free between pages), so pages
/// written while a pass updates the status table may mix the two views; each series is still
/// one instance's own line.
#[derive(Debug, Default)]
pub struct InstancePages {
    family: usize,
    after: Option<(String, String)>,
}

impl InstancePages {
    /// Appends the next page (up to `rows` status lines of one family) to `out`. Returns
    /// false once every family is written.
    pub fn next_page(
        &mut self,
        status: &Ledger,
        rows: usize,
        out: &mut String,
    ) -> Result<bool, LedgerError> {
        let Some(&(suffix, help, value)) = INSTANCE_FAMILIES.get(self.family) else {
            return Ok(false);
        };
        if self.after.is_none() {
            let _ = writeln!(out, "# HELP {PREFIX}_{suffix} {help}");
            let _ = writeln!(out, "# TYPE {PREFIX}_{suffix} gauge");
        }
        let after = self.after.as_ref().map(|(a, i)| (a.as_str(), i.as_str()));
        let last = status.metric_rows_page(after, rows, |r| {
            let Some(value) = value(&r) else { return };
            let _ = write!(
                out,
                "{PREFIX}_{suffix}{{account=\"{}\",region=\"{}\",instance_id=\"{}\",policy=\"{}\"",
                escape(r.account),
                escape(r.region),
                escape(r.instance_id),
                escape(r.policy)
            );
            if suffix == "instance_state" {
                let _ = write!(out, ",state=\"{}\"", escape(r.state));
            }
            let _ = writeln!(out, "}} {value}");
        })?;
        match last {
            Some(key) => self.after = Some(key),
            None => {
                self.family += 1;
                self.after = None;
            }
        }
        Ok(self.family < INSTANCE_FAMILIES.len())
    }
}

/// Writes every per-instance family from the ledger's status lines into `out`.
pub fn render_instances(status: &Ledger, out: &mut String) -> Result<(), LedgerError> {
    let mut pages = InstancePages::default();
    while pages.next_page(status, ROWS_PER_PAGE, out)? {}
    Ok(())
}
