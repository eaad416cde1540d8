//! Config validation: a table of mistakes, each answered with the exact located message; every
//! file in config/ parses; environment overrides apply.

use std::path::Path;

use ecs_renewd::cloud::credentials::Environment;
use ecs_renewd::config::{Config, ConfigError};

const BASE: &str = r#"
[[accounts]]
name = "main"
[accounts.credentials]
source = "env"
"#;

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text, Path::new("test.toml"), &Environment::default()) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigError::Invalid { problems }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn each_kind_of_mistake_gets_a_located_message_with_a_hint() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "malformed TOML",
            format!("{BASE}\n[daemon\nschedule = 1"),
            "test.toml:7:8: not valid TOML: unclosed table, expected `]` (hint: fix the syntax at this position)\ntest.toml: the check stops at TOML syntax errors (hint: fix the syntax and run check-config again to see any other problems)",
        ),
        (
            "unknown key",
            format!("[daemon]\nschedulle = \"0 * * * * *\"\n{BASE}"),
            "test.toml:2:1: daemon.schedulle: unknown field `schedulle`, expected one of `schedule`, `timezone`, `jitter`, `state_dir`, `dry_run`, `shutdown_grace` (hint: check the spelling; config/example.toml lists every key)",
        ),
        (
            "wrong type",
            format!("[scan]\nconcurrency = \"four\"\n{BASE}"),
            "test.toml:2:15: scan.concurrency: invalid type: string \"four\", expected usize (hint: check the value's type: numbers and booleans are written without quotes, durations and names with quotes)",
        ),
        (
            "five-field cron",
            format!("[daemon]\nschedule = \"*/15 * * * *\"\n{BASE}"),
            "test.toml:2:12: daemon.schedule: \"*/15 * * * *\" has 5 fields; write six, seconds first, e.g. \"0 */15 * * * *\" (every 15 minutes)",
        ),
        (
            "invalid cron",
            format!("[daemon]\nschedule = \"0 61 * * * *\"\n{BASE}"),
            "test.toml:2:12: daemon.schedule: \"0 61 * * * *\" is not a valid cron expression: Component error: Number out of bounds.",
        ),
        (
            "unknown timezone",
            format!("[daemon]\ntimezone = \"Asia/Beijing\"\n{BASE}"),
            "test.toml:2:12: daemon.timezone: \"Asia/Beijing\" is not a timezone name; use one from the tz database, e.g. \"Asia/Shanghai\" or \"UTC\"",
        ),
        (
            "bad duration",
            format!("[scan]\nhorizon = \"a month\"\n{BASE}"),
            "test.toml:2:11: scan.horizon: \"a month\" is not a duration: write a number and a unit, e.g. \"90s\", \"15m\", \"6h\", \"10d\" or \"1h 30m\"",
        ),
        (
            "impossible period",
            format!("{BASE}\n[[policies]]\nname = \"p\"\naction = \"renew\"\nperiod = 13\n"),
            "test.toml:10:10: policies[0].period: 13 Month is not an allowed renewal period (hint: allowed renewal period values: Week: 1, 2, 3, 4; Month: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 24, 36, 48, 60)",
        ),
        (
            "weeks on the international site",
            "[[accounts]]\nname = \"intl\"\nsite = \"international\"\n[accounts.credentials]\nsource = \"env\"\n[[policies]]\nname = \"w\"\naction = \"renew\"\nperiod = 2\nperiod_unit = \"Week\"\n".to_string(),
            "test.toml:9:10: policies[0].period: 2 Week is not an allowed renewal period (hint: allowed renewal period values: Month: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 24, 36, 48, 60)",
        ),
        (
            "impossible auto-renew duration",
            format!("{BASE}\n[[policies]]\nname = \"a\"\naction = \"auto-renew\"\nduration = 4\n"),
            "test.toml:10:12: policies[0].duration: 4 Month is not an allowed auto-renew duration (hint: allowed auto-renew duration values: Week: 1, 2, 3, 4; Month: 1, 2, 3, 6, 12, 24, 36, 48, 60; Year: 1, 2, 3, 4, 5)",
        ),
        (
            "unknown period unit",
            format!("{BASE}\n[[policies]]\nname = \"p\"\naction = \"renew\"\nperiod_unit = \"Mnth\"\n"),
            "test.toml:10:15: policies[0].period_unit: unknown value \"Mnth\", expected one of: Week, Month, Year (hint: use one of the listed values)",
        ),
        (
            "unknown action",
            format!("{BASE}\n[[policies]]\nname = \"p\"\naction = \"renew-now\"\n"),
            "test.toml:9:10: policies[0].action: unknown value \"renew-now\", expected one of: renew, auto-renew, not-renewal, observe, skip (hint: use one of the listed values)",
        ),
        (
            "key of another action",
            format!("{BASE}\n[[policies]]\nname = \"p\"\naction = \"renew\"\nduration = 1\n"),
            "test.toml:10:12: policies[0].duration: duration does not apply to action \"renew\" (hint: duration belongs to action auto-renew)",
        ),
        (
            "duplicate policy names",
            format!("{BASE}\n[[policies]]\nname = \"p\"\naction = \"observe\"\n[[policies]]\nname = \"p\"\naction = \"skip\"\n"),
            "test.toml:11:8: policies[1].name: policy \"p\" is defined twice (hint: policy names label metrics and must be unique)",
        ),
        (
            "no accounts",
            "[daemon]\ndry_run = true\n".to_string(),
            "test.toml: accounts: no [[accounts]] and no [[directories]]: there is nothing to scan (hint: add an [[accounts]] table with a name and credentials (or a [[directories]] table))",
        ),
        (
            "file source without a secret file",
            "[[accounts]]\nname = \"main\"\n[accounts.credentials]\nsource = \"file\"\naccess_key_id = \"LTAI\"\n".to_string(),
            "test.toml:2:8: accounts[0].credentials: source = \"file\" needs access_key_id and access_key_secret_file (hint: point access_key_secret_file at a file holding only the secret (mode 600))",
        ),
        (
            "a secret written inline",
            "[[accounts]]\nname = \"main\"\n[accounts.credentials]\naccess_key_secret = \"oops\"\n".to_string(),
            "test.toml:4:1: accounts[0].credentials.access_key_secret: unknown field `access_key_secret`, expected one of `source`, `access_key_id`, `access_key_secret_file`, `security_token_file`, `systemd_credential_prefix`, `cli_config_path`, `cli_profile`, `ram_role_name`, `metadata_url`, `role_arn`, `oidc_provider_arn`, `oidc_token_file`, `role_session_name`, `sts_endpoint`, `credentials_uri`, `imdsv1_fallback`, `refresh_before` (hint: check the spelling; config/example.toml lists every key)",
        ),
        (
            "plain http to a remote endpoint",
            "[[accounts]]\nname = \"main\"\nendpoint = \"http://10.1.2.3:8080\"\n".to_string(),
            "test.toml:3:12: accounts[0].endpoint: endpoint \"http://10.1.2.3:8080\" uses plain http to a non-loopback host; use https (plain http is accepted for 127.0.0.1, ::1 and localhost only) (hint: write \"public\", \"vpc\" or an https:// URL)",
        ),
        (
            "a policy naming an unknown account",
            format!("{BASE}\n[[policies]]\nname = \"p\"\naction = \"observe\"\n[policies.match]\naccounts = [\"other\"]\n"),
            "test.toml:8:8: policies[0].match.accounts: no account is named \"other\" (hint: use a name from [[accounts]], a [[directories]] name (all its members) or <directory>/<AccountId>)",
        ),
        (
            "a negative spend limit",
            format!("[limits]\nmax_spend_per_run = {{ CNY = -5.0 }}\n{BASE}"),
            "test.toml:2:29: limits.max_spend_per_run.CNY: -5 is not a positive amount (hint: write the most to spend as a positive number, e.g. { CNY = 5000.0 }; leave the key out for no limit)",
        ),
        (
            "floor above ceiling",
            format!("[retry]\nbackoff_floor = \"7h\"\n{BASE}"),
            "test.toml:2:17: retry.backoff_floor: 7h must be above zero and at most backoff_ceiling (6h) (hint: the defaults are 5m and 6h; raise backoff_ceiling or lower backoff_floor)",
        ),
        (
            "an invalid name glob",
            format!("{BASE}\n[[policies]]\nname = \"p\"\naction = \"observe\"\n[policies.match]\nname = \"web-[\"\n"),
            "test.toml:11:8: policies[0].match.name: \"web-[\" is not a valid glob: error parsing glob 'web-[': unclosed character class; missing ']' (hint: a glob uses *, ? and [...])",
        ),
    ];
    assert!(cases.len() >= 10);
    let mut mismatches = Vec::new();
    for (name, text, expected) in cases {
        let found = problems(&text);
        if found.join("\n") != expected {
            mismatches.push(format!(
                "case {name}:\n  expected {expected:?}\n  found    {found:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn every_problem_of_a_file_is_reported_in_one_run_in_file_order() {
    // Serde stops at its first error; each broken key is set aside and the file read again,
    // so type errors, unknown keys, missing required keys and bad values in different
    // sections and entries all come out together, with the rules between keys.
    let text = r#"[daemon]
schedule = "not a cron"
jiter = "5s"

[admin]
max_connections = "many"

[scan]
concurrency = 0

[[accounts]]
endpoint = "public"
[accounts.credentials]
source = "env"
region = "cn-hangzhou"

[[accounts]]
name = "second"
currency = "EURO"
[accounts.credentials]
source = "nope"

[[policies]]
name = "p1"
action = "renew-now"
period_unit = "Fortnight"

[[policies]]
action = "observe"
"#;
    let found = problems(text);
    let expected = [
        "test.toml:2:12: daemon.schedule: \"not a cron\" has 3 fields",
        "test.toml:3:1: daemon.jiter: unknown field `jiter`",
        "test.toml:6:19: admin.max_connections: invalid type: string \"many\", expected usize",
        "test.toml:9:15: scan.concurrency: must be at least 1 (hint: the number of sources scanned at once",
        "test.toml:11:1: accounts[0]: missing field `name`",
        "test.toml:15:1: accounts[0].credentials.region: unknown field `region`",
        "test.toml:19:12: accounts[1].currency: \"EURO\" is not a currency code",
        "test.toml:21:10: accounts[1].credentials.source: unknown value \"nope\"",
        "test.toml:25:10: policies[0].action: unknown value \"renew-now\"",
        "test.toml:26:15: policies[0].period_unit: unknown value \"Fortnight\"",
        "test.toml:28:1: policies[1]: missing field `name`",
    ];
    assert_eq!(
        found.len(),
        expected.len(),
        "every problem once, nothing echoed: {found:#?}"
    );
    for (line, start) in found.iter().zip(expected) {
        assert!(
            line.starts_with(start),
            "expected {start:?}, found {line:?}"
        );
    }
}

#[test]
fn a_stand_in_for_a_broken_required_key_adds_no_problem_of_its_own() {
    // `action` is reported once; the policy's keys for another action are not then reported
    // as not applying to the stand-in action.
    let text = format!(
        "{BASE}\n[[policies]]\nname = \"p\"\naction = \"autorenew\"\nduration = 2\nfallback_renew = true\n"
    );
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("test.toml:9:10: policies[0].action: unknown value \"autorenew\""),
        "{found:#?}"
    );
}

#[test]
fn all_problems_are_reported_together() {
    let text = format!(
        "{BASE}\n[[policies]]\nname = \"p\"\naction = \"renew\"\nperiod = 13\n[[policies]]\nname = \"p\"\naction = \"observe\"\n"
    );
    assert_eq!(problems(&text).len(), 2);
}

#[test]
fn a_policy_after_a_catch_all_is_a_warning_not_an_error() {
    let text = format!(
        "{BASE}\n[[policies]]\nname = \"all\"\naction = \"observe\"\n[[policies]]\nname = \"never\"\naction = \"renew\"\n"
    );
    let config = Config::parse(&text, Path::new("test.toml"), &Environment::default()).unwrap();
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            "test.toml:11:8: policies[1]: policy \"never\" can never match: policy \"all\" before it matches every instance (hint: first match wins: move the catch-all last or give it a [policies.match])"
        ]
    );
}

#[test]
fn every_file_in_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = Config::load(&path, &Environment::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(!config.accounts.is_empty(), "{}", path.display());
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "config/ holds the example and the emulator rehearsal"
    );
}

#[test]
fn the_environment_overrides_the_state_dir_and_admin_address() {
    let env = Environment::from_pairs([
        ("ECS_RENEWD_STATE_DIR", "/data/state"),
        ("ECS_RENEWD_ADMIN_LISTEN", "0.0.0.0:9469"),
    ]);
    let config = Config::parse(BASE, Path::new("test.toml"), &env).unwrap();
    assert_eq!(config.state_dir, Path::new("/data/state"));
    assert_eq!(config.admin_listen.to_string(), "0.0.0.0:9469");
    let defaults = Config::parse(BASE, Path::new("test.toml"), &Environment::default()).unwrap();
    assert_eq!(defaults.admin_listen.to_string(), "127.0.0.1:9469");
    assert_eq!(defaults.schedule.text, "0 */15 * * * *");
}

#[tokio::test]
async fn check_config_reports_every_account_and_the_admin_token_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let loose = dir.path().join("loose.secret");
    std::fs::write(&loose, "a-secret").unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "short").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let path = dir.path().join("check.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\nbearer_token_file = \"{}\"\n[[accounts]]\nname = \"first\"\n[accounts.credentials]\nsource = \"file\"\naccess_key_id = \"LTAIfirst\"\naccess_key_secret_file = \"{}\"\n[[accounts]]\nname = \"second\"\n[accounts.credentials]\nsource = \"env\"\n",
            token.display(),
            loose.display()
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    let failure = ecs_renewd::commands::check_config::run(&path, &Environment::default(), &mut out)
        .await
        .expect_err("refused");
    let text = failure.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let file = path.display();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with(&format!(
            "{file}:4:8: accounts[0].credentials: account \"first\" has no usable credentials: the AccessKey secret file {} is open to other users (mode 0644)",
            loose.display()
        )),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{file}:10:8: accounts[1].credentials: account \"second\" has no usable credentials: "
        )),
        "{text}"
    );
    assert!(
        lines[2].contains("[admin] bearer_token_file: the token in")
            && lines[2].contains("has 5 characters"),
        "{text}"
    );
    assert_eq!(lines[3], "3 problem(s)");
}

/// README promises every problem in one run, each located: a file with problems of its own
/// still has the credentials of its readable entries and its admin token checked, and a range
/// or a rule between keys is located where its key is written.
#[tokio::test]
async fn check_config_reports_credentials_and_the_token_with_the_files_own_problems_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let loose = dir.path().join("loose.secret");
    std::fs::write(&loose, "a-secret").unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "short").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let path = dir.path().join("check.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\nbearer_token_file = \"{}\"\n[scan]\nconcurrency = 0\n[retry]\nbackoff_floor = \"7h\"\n[[accounts]]\nname = \"first\"\n[accounts.credentials]\nsource = \"file\"\naccess_key_id = \"LTAIfirst\"\naccess_key_secret_file = \"{}\"\n[[accounts]]\nname = \"bad name\"\n[accounts.credentials]\nsource = \"env\"\n",
            token.display(),
            loose.display()
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    let failure = ecs_renewd::commands::check_config::run(&path, &Environment::default(), &mut out)
        .await
        .expect_err("refused");
    let text = failure.to_string();
    let file = path.display();
    let lines: Vec<&str> = text.lines().collect();
    let expected_starts = [
        format!("{file}:4:15: scan.concurrency: must be at least 1 (hint: "),
        format!(
            "{file}:6:17: retry.backoff_floor: 7h must be above zero and at most backoff_ceiling (6h) (hint: "
        ),
        format!(
            "{file}:8:8: accounts[0].credentials: account \"first\" has no usable credentials: the AccessKey secret file {} is open to other users (mode 0644)",
            loose.display()
        ),
        format!("{file}:14:8: accounts[1].name: \"bad name\" is not a usable account name"),
    ];
    for (line, start) in lines.iter().zip(&expected_starts) {
        assert!(
            line.starts_with(start.as_str()),
            "expected {start:?}\nfound {line:?}\nin {text}"
        );
    }
    assert!(
        lines[4].contains("[admin] bearer_token_file: the token in")
            && lines[4].contains("has 5 characters"),
        "{text}"
    );
    assert_eq!(lines[5], "5 problem(s)", "{text}");
    assert_eq!(
        lines.len(),
        6,
        "the entry with a problem is not checked further: {text}"
    );
}

#[test]
fn a_scan_horizon_too_short_for_the_funds_forecast_is_a_warning() {
    let warnings = |text: &str| -> Vec<String> {
        Config::parse(text, Path::new("test.toml"), &Environment::default())
            .unwrap()
            .warnings
            .iter()
            .map(ToString::to_string)
            .filter(|w| w.contains("scan.horizon"))
            .collect()
    };
    // The forecast looks 8 days ahead (to the next 08:00 UTC+8, plus 7 days); the provider's
    // first deduction comes up to 10 days before the expiry: instances expiring up to 18 days
    // ahead are charged in that window, and a 10-day scan does not list them.
    let short = format!("[scan]\nhorizon = \"10d\"\n{BASE}");
    assert_eq!(
        warnings(&short),
        [
            "test.toml:2:11: scan.horizon: the funds forecast counts charges up to 8d ahead, for instances expiring up to 18d ahead (account \"main\": the provider's first auto-renew deduction comes up to 10d before the expiry), but [scan] horizon (10d) lists only instances expiring within 10d: their charges would be left out and the forecast would say covered when it is not (hint: raise [scan] horizon to 18d or more, or shorten [funds] horizon)"
        ]
    );
    // A renew policy's renew_before reaches further than the deduction schedule.
    let renew_early = format!(
        "[scan]\nhorizon = \"20d\"\n{BASE}\n[[policies]]\nname = \"p\"\naction = \"renew\"\nperiod = 1\nrenew_before = \"15d\"\n"
    );
    let found = warnings(&renew_early);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .contains("for instances expiring up to 23d ahead (policy \"p\": renew_before 15d)"),
        "{found:#?}"
    );
    // Covered: the defaults (30 days), or no forecast.
    assert!(warnings(BASE).is_empty());
    assert!(
        warnings(&format!(
            "[scan]\nhorizon = \"10d\"\n[funds]\nenabled = false\n{BASE}"
        ))
        .is_empty()
    );
}
