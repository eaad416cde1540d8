//! The deployment artifacts agree with the code: every metric the Grafana dashboard and the
//! Prometheus rules mention is one the daemon exports, and the RAM policy allows exactly the ECS
//! actions the client calls.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use ecs_renewd::Metrics;
use ecs_wire::Action;
use ecs_wire::clock::SystemClock;

const PREFIX: &str = "ecs_renewd_";
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `ecs_renewd_[a-z0-9_]+` in `text` that starts a word (queries, comments, runbooks).
fn mentioned_metrics(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(PREFIX) {
        let starts_word = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let rest = &text[at + PREFIX.len()..];
        let len = rest.find(|c| !is_name_char(c)).unwrap_or(rest.len());
        if starts_word && len > 0 {
            names.insert(format!("{PREFIX}{}", &rest[..len]));
        }
    }
    names
}

/// The daemon's metric families (registered and per-instance).
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::new(Arc::new(SystemClock));
    let names: BTreeSet<String> = metrics.names().iter().cloned().collect();
    assert!(
        names.contains("ecs_renewd_instance_expiration_timestamp_seconds")
            && names.contains("ecs_renewd_renewals_total"),
        "Metrics::names() is missing families it must have: {names:?}"
    );
    names
}

/// Names in `mentioned` that the daemon does not export (a histogram's `_bucket`, `_sum` and
/// `_count` series count as its family).
fn unknown(mentioned: &BTreeSet<String>, exported: &BTreeSet<String>) -> Vec<String> {
    mentioned
        .iter()
        .filter(|name| {
            !exported.contains(*name)
                && !HISTOGRAM_SUFFIXES.iter().any(|suffix| {
                    name.strip_suffix(suffix)
                        .is_some_and(|family| exported.contains(family))
                })
        })
        .cloned()
        .collect()
}

fn assert_only_exported_metrics(path: &str) -> usize {
    let mentioned = mentioned_metrics(&read(path));
    assert!(
        !mentioned.is_empty(),
        "{path} mentions no ecs_renewd_ metric"
    );
    let unknown = unknown(&mentioned, &exported());
    assert!(
        unknown.is_empty(),
        "{path} mentions metrics the daemon does not export: {unknown:?}"
    );
    mentioned.len()
}

#[test]
fn the_dashboard_queries_only_metrics_the_daemon_exports() {
    let text = read("deploy/grafana/ecs-renewd.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(
        dashboard["panels"].is_array(),
        "the dashboard has no panels"
    );
    assert_only_exported_metrics("deploy/grafana/ecs-renewd.json");
}

#[test]
fn the_alert_rules_use_only_metrics_the_daemon_exports() {
    assert_only_exported_metrics("deploy/prometheus/rules.yml");
}

#[test]
fn the_check_catches_an_unknown_metric() {
    let exported = exported();
    let text = r#"sum(rate(ecs_renewd_api_request_duration_seconds_bucket[5m]))
        + ecs_renewd_renewals_total + ecs_renewd_renewal_failures + not_ecs_renewd_other
        + ecs_renewd_renewal_failures_count"#;
    let mentioned = mentioned_metrics(text);
    assert_eq!(
        mentioned.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "ecs_renewd_api_request_duration_seconds_bucket",
            "ecs_renewd_renewal_failures",
            "ecs_renewd_renewal_failures_count",
            "ecs_renewd_renewals_total",
        ]
    );
    assert_eq!(
        unknown(&mentioned, &exported),
        [
            "ecs_renewd_renewal_failures",
            "ecs_renewd_renewal_failures_count"
        ],
        "a histogram suffix is accepted only on an exported family"
    );
}

#[test]
fn the_ram_policy_allows_exactly_the_actions_the_daemon_calls() {
    // The accounts' policy grants what each account's calls need; `ListAccounts` is the
    // directory management identity's, granted by deploy/ram/directory-management-policy.json.
    let for_accounts = |a: &&Action| **a != Action::ListAccounts;
    let mut wanted: Vec<String> = Action::ALL
        .iter()
        .filter(for_accounts)
        .flat_map(|a| a.ram_actions())
        .map(|a| a.to_string())
        .collect();
    let mut allowed = allowed_actions("deploy/ram-policy.json");
    allowed.sort();
    wanted.sort();
    assert_eq!(allowed, wanted, "deploy/ram-policy.json");
    let management = allowed_actions("deploy/ram/directory-management-policy.json");
    for action in Action::ListAccounts.ram_actions() {
        assert!(
            management.iter().any(|a| a == action),
            "{action} in deploy/ram/directory-management-policy.json"
        );
    }
    assert!(management.iter().any(|a| a == "sts:AssumeRole"));
}

/// Every action an Allow-only RAM policy file grants.
fn allowed_actions(path: &str) -> Vec<String> {
    let policy: serde_json::Value =
        serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    assert_eq!(policy["Version"], "1", "RAM policies are Version \"1\"");
    let statements = policy["Statement"].as_array().expect("Statement is a list");
    let mut allowed = Vec::new();
    for statement in statements {
        assert_eq!(
            statement["Effect"], "Allow",
            "only Allow statements: {statement}"
        );
        allowed.extend(match &statement["Action"] {
            serde_json::Value::String(one) => vec![one.clone()],
            serde_json::Value::Array(many) => many
                .iter()
                .map(|a| a.as_str().expect("actions are strings").to_owned())
                .collect(),
            other => panic!("Action must be a string or a list: {other}"),
        });
    }
    allowed
}
