//! Security checks: no secret or token reaches logs, metrics, status, the ledger or errors, and
//! the client follows no redirect.
//!
//! - (a) No secret anywhere: a demo-like pass with an STS key read from files, with faults whose
//!   answers echo the token and the secret, then every log line (all levels, every thread),
//!   the rendered metrics, the status report, every column of every ledger row (and the ledger
//!   files' raw bytes), and every error, summary and `Debug` we can get hold of are searched
//!   for the AccessKey secret and the STS token, raw, percent-encoded once and twice, and
//!   form-encoded: zero hits, while the same search finds a planted copy of each. Also the
//!   `Debug` of the environment snapshot and of a signature, `check-config`'s report and its
//!   refusal of a token file open to others, and the error for a redirect whose Location
//!   carries the token.
//! - (b) The admin HTTP server binds loopback by default and says so at start-up when it does
//!   not: the real binary with `listen = "0.0.0.0:PORT"` logs "listens beyond loopback"; with a
//!   loopback address it does not.
//! - (c) TLS cannot be bypassed for remote endpoints: plain http to anything but loopback is
//!   refused by config validation, and no config key turns certificate verification off.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use ecs_emulator::settings::{AccessKeySpec, InstanceSpec};
use ecs_emulator::{EmulatorConfig, EmulatorHandle, FaultKind, FaultSpec};
use ecs_renewd::cloud::credentials::Environment;
use ecs_renewd::config::{Config, ConfigError};
use ecs_renewd::ledger::LEDGER_FILE;
use ecs_wire::Action;
use ecs_wire::clock::VirtualClock;
use ecs_wire::signer;
use support::{harness_fleet, instance_spec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

// ------------------------------------------------------------------ (a) no secret anywhere

/// The STS key's ID, secret and token. The secret and token contain characters that percent-
/// and form-encoding change, so each encoding is a different string to look for.
const STS_ID: &str = "STS.NUgYrLnoC37mZZCNnAbez2";
/// A second identity of the same account (its own RAM user), configured with a wrong secret.
const STS_ID_2: &str = "STS.NUgYrLnoC37mZZCNnAbez3";
const STS_SECRET: &str = "Sec+ret/Key=9xQ~w&z%";
const STS_TOKEN: &str = "CAIS+Token/With=Slashes&Plus~qR2%2Fx";
/// A wrong secret configured for a second account (so the service answers
/// SignatureDoesNotMatch, quoting its string to sign, which carries the token).
const WRONG_SECRET: &str = "Wrong+Secret/Value=1";

/// Every form a secret could take in text: raw, percent-encoded once and twice (the string
/// to sign holds the twice-encoded value), and form-encoded.
fn forms(secret: &str) -> Vec<String> {
    let once = signer::percent_encode(secret);
    let twice = signer::percent_encode(&once);
    let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let mut all = vec![secret.to_owned(), once, twice, form];
    all.dedup();
    all
}

fn needles() -> Vec<(String, String)> {
    let mut all = Vec::new();
    for (name, secret) in [
        ("AccessKey secret", STS_SECRET),
        ("STS token", STS_TOKEN),
        ("wrong secret", WRONG_SECRET),
    ] {
        for (i, form) in forms(secret).into_iter().enumerate() {
            all.push((format!("{name} (form {i})"), form));
        }
    }
    all
}

/// Every hit of every needle in `text`, named by where the text came from, with context.
fn hits(place: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (name, needle) in needles() {
        if let Some(at) = text.find(needle.as_str()) {
            let context: String = text[..at]
                .chars()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .chain(text[at..].chars().take(120))
                .collect();
            found.push(format!("{place}: {name} in …{context}…"));
        }
    }
    found
}

const NOW: &str = "2026-03-10T04:00:00Z";

/// A fleet whose account is reached with the STS key; due, auto-renew and later instances.
fn sts_fleet() -> EmulatorConfig {
    let mut fleet = harness_fleet(
        NOW,
        100_000.0,
        vec![
            instance_spec("i-renew-1", "2026-03-12T16:00Z"),
            instance_spec("i-renew-2", "2026-03-13T16:00Z"),
            instance_spec("i-renew-3", "2026-03-14T16:00Z"),
            InstanceSpec {
                tags: [("team".to_string(), "auto".to_string())].into(),
                ..instance_spec("i-auto-1", "2026-03-25T16:00Z")
            },
            instance_spec("i-later", "2026-03-30T16:00Z"),
        ],
    );
    fleet.accounts[0].access_keys = [STS_ID, STS_ID_2]
        .into_iter()
        .map(|id| AccessKeySpec {
            id: id.into(),
            secret: STS_SECRET.into(),
            security_token: Some(STS_TOKEN.into()),
            expires_at: None,
            denied_actions: vec![],
        })
        .collect();
    fleet.settings.renew_visibility_delay = Duration::ZERO;
    fleet
}

/// A message as the service would write it when it quotes its string to sign: the signed
/// parameters of a request carrying the token.
fn server_string_to_sign() -> String {
    signer::string_to_sign(
        "POST",
        [
            ("AccessKeyId", STS_ID),
            ("Action", "RenewInstance"),
            ("SecurityToken", STS_TOKEN),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "0123456789abcdef"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2026-03-10T04:00:00Z"),
            ("Version", "2014-05-26"),
        ],
    )
}

fn write_secret_file(path: &Path, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test]
async fn no_secret_or_token_reaches_logs_metrics_status_ledger_or_errors() {
    let logs = support::AllThreadLogs::start();
    let fleet = sts_fleet();
    let clock = Arc::new(VirtualClock::frozen(fleet.settings.clock_start.unwrap()));
    let emulator =
        ecs_emulator::start_with_clock(fleet, "127.0.0.1:0".parse().unwrap(), clock.clone())
            .await
            .unwrap();

    // Credentials from files, as a hardened deployment has them.
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    write_secret_file(&keys.join("secret"), STS_SECRET);
    write_secret_file(&keys.join("token"), STS_TOKEN);
    write_secret_file(&keys.join("wrong-secret"), WRONG_SECRET);
    let state = dir.path().join("state");
    let text = format!(
        "[daemon]\nstate_dir = \"{state}\"\n[scan]\nregions = [\"cn-hangzhou\"]\n[retry]\nverify_timeout = \"1s\"\nverify_interval = \"50ms\"\n\
         [[accounts]]\nname = \"main\"\nendpoint = \"{url}\"\n[accounts.credentials]\nsource = \"file\"\naccess_key_id = \"{STS_ID}\"\naccess_key_secret_file = \"{keys}/secret\"\nsecurity_token_file = \"{keys}/token\"\n[accounts.rate_limit]\nper_second = 1000\nburst = 100\n[accounts.call_retry]\nmax_attempts = 3\nbase_delay = \"10ms\"\nmax_delay = \"20ms\"\n\
         [[accounts]]\nname = \"mistyped\"\nendpoint = \"{url}\"\n[accounts.credentials]\nsource = \"file\"\naccess_key_id = \"{STS_ID_2}\"\naccess_key_secret_file = \"{keys}/wrong-secret\"\nsecurity_token_file = \"{keys}/token\"\n[accounts.call_retry]\nmax_attempts = 3\nbase_delay = \"10ms\"\nmax_delay = \"20ms\"\n\
         [limits]\nmax_spend_per_run = {{ CNY = 100000.0 }}\n\
         [[policies]]\nname = \"auto\"\naction = \"auto-renew\"\n[policies.match]\ntags = {{ team = \"auto\" }}\n\
         [[policies]]\nname = \"renew-all\"\naction = \"renew\"\nrenew_before = \"7d\"\n",
        state = state.display(),
        url = emulator.url(),
        keys = keys.display(),
    );

    // Faults whose answers quote the secrets.
    let echo = format!(
        "backend error near SecurityToken={} (raw {STS_TOKEN}, twice {}, form {}) AccessKeySecret={STS_SECRET}",
        signer::percent_encode(STS_TOKEN),
        signer::percent_encode(&signer::percent_encode(STS_TOKEN)),
        form_urlencoded::byte_serialize(STS_TOKEN.as_bytes()).collect::<String>(),
    );
    let error = |code: &str, status: u16, message: String| FaultKind::Error {
        code: code.into(),
        status,
        message: Some(message),
        retry_after_ms: None,
    };
    for action in [
        Action::DescribeInstances,
        Action::DescribeRenewalPrice,
        Action::RenewInstance,
        Action::ModifyInstanceAutoRenewAttribute,
    ] {
        emulator.add_fault(FaultSpec {
            account: Some("main".into()),
            ..FaultSpec::next(action, 1, error("InternalError", 500, echo.clone()))
        });
    }
    emulator.add_fault(FaultSpec {
        account: Some("main".into()),
        ..FaultSpec::next(
            Action::RenewInstance,
            1,
            error(
                "SignatureDoesNotMatch",
                400,
                format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{}",
                    server_string_to_sign()
                ),
            ),
        )
    });
    emulator.add_fault(FaultSpec {
        account: Some("main".into()),
        ..FaultSpec::next(
            Action::RenewInstance,
            1,
            error("InvalidAccountStatus.NotEnoughBalance", 403, echo.clone()),
        )
    });
    emulator.add_fault(FaultSpec {
        account: Some("main".into()),
        ..FaultSpec::next(Action::DescribeInstances, 1, FaultKind::Html)
    });

    // Demo-like: several passes while the clock moves, as the daemon would run them.
    let env = Environment::default();
    let config = Config::parse(&text, Path::new("security.toml"), &env).unwrap();
    let config_debug = format!("{config:?}");
    let engine =
        ecs_renewd::commands::once::engine(config, &env, clock.clone(), CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let mut shown: Vec<(String, String)> = vec![("config Debug".into(), config_debug)];
    for pass in 0..4 {
        let summary = engine.run_pass().await.unwrap();
        shown.push((format!("pass {pass} Debug"), format!("{summary:?}")));
        shown.push((
            format!("pass {pass} JSON"),
            serde_json::to_string(&summary).unwrap(),
        ));
        shown.push((
            format!("pass {pass} text"),
            ecs_renewd::commands::once::render(&summary),
        ));
        clock.advance(Duration::from_secs(20 * 60));
    }

    // The faults fired and the passes did real work, so the search below means something.
    let calls = emulator.calls();
    for code in [
        "InternalError",
        "SignatureDoesNotMatch",
        "InvalidAccountStatus.NotEnoughBalance",
        "Html",
    ] {
        assert!(
            calls.by_outcome.get(code).copied().unwrap_or(0) >= 1,
            "{code} never answered: {calls:?}"
        );
    }
    assert!(
        emulator.orders().len() >= 2,
        "renewals happened: {:?}",
        emulator.orders()
    );

    // Errors produced directly by the client, Display and Debug.
    for account in &engine.accounts {
        shown.push((
            format!("client {} Debug", account.name),
            format!("{account:?}"),
        ));
        // Every attempt fails, so the error (with the echo, scrubbed) comes back.
        emulator.add_fault(FaultSpec::next(
            Action::DescribeRegions,
            3,
            error("InternalError", 500, echo.clone()),
        ));
        if let Err(e) = account.client.describe_regions("cn-hangzhou").await {
            shown.push((format!("{} error Display", account.name), e.to_string()));
            shown.push((format!("{} error Debug", account.name), format!("{e:?}")));
        }
        if let Err(e) = account
            .client
            .probe_describe_permission("cn-hangzhou")
            .await
        {
            shown.push((format!("{} probe Display", account.name), e.to_string()));
            shown.push((format!("{} probe Debug", account.name), format!("{e:?}")));
        }
    }

    // Values that hold the secrets, as `Debug` shows them.
    let environment = Environment::from_pairs([
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", STS_ID),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", STS_SECRET),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", STS_TOKEN),
    ]);
    shown.push(("Environment Debug".into(), format!("{environment:?}")));
    let signed = signer::sign(
        "POST",
        [("SecurityToken", STS_TOKEN), ("Action", "RenewInstance")],
        &ecs_wire::secret::Secret::new(STS_SECRET),
    );
    shown.push(("Signed Debug".into(), format!("{signed:?}")));
    // check-config's report on these key files, and its refusal of a token file open to others.
    let config_path = dir.path().join("check.toml");
    std::fs::write(&config_path, &text).unwrap();
    let mut report = Vec::new();
    ecs_renewd::commands::check_config::run(&config_path, &Environment::default(), &mut report)
        .await
        .unwrap();
    shown.push((
        "check-config report".into(),
        String::from_utf8(report).unwrap(),
    ));
    let open_token = keys.join("open-token");
    std::fs::write(&open_token, STS_TOKEN).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open_token, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let loose = text.replace(
        &format!("{}/token", keys.display()),
        &open_token.display().to_string(),
    );
    std::fs::write(&config_path, &loose).unwrap();
    let refusal = ecs_renewd::commands::check_config::run(
        &config_path,
        &Environment::default(),
        &mut Vec::new(),
    )
    .await
    .expect_err("a token file open to others is refused")
    .to_string();
    assert!(refusal.contains("is open to other users"), "{refusal}");
    shown.push(("check-config refusal".into(), refusal));
    // A redirect whose Location carries the token: the error names the host only.
    let location = format!(
        "http://127.0.0.1:9/collect?token={}",
        signer::percent_encode(STS_TOKEN)
    );
    let redirecting = support::Stub::start(move |_, _| {
        support::Reply::raw(307, "").header("location", &location)
    })
    .await;
    let client = support::client_with(
        &redirecting.url(),
        support::fast_retry(1),
        STS_ID,
        STS_SECRET,
        Some(STS_TOKEN),
        Arc::new(ecs_wire::clock::SystemClock),
    );
    let redirected = client.describe_regions("cn-hangzhou").await.unwrap_err();
    assert!(
        redirected
            .to_string()
            .contains("redirect (HTTP 307) to 127.0.0.1:9")
    );
    shown.push(("redirect error Display".into(), redirected.to_string()));
    shown.push(("redirect error Debug".into(), format!("{redirected:?}")));

    // Metrics, status, history.
    shown.push(("metrics".into(), engine.metrics.render(&engine.ledger)));
    let report = ecs_renewd::commands::status::report(&engine.ledger).unwrap();
    let status_json = serde_json::to_string(&report).unwrap();
    shown.push((
        "status text".into(),
        ecs_renewd::commands::status::render_status(&report),
    ));
    shown.push(("status JSON".into(), status_json.clone()));
    shown.push((
        "history".into(),
        format!("{:?}", engine.ledger.money_records(None).unwrap()),
    ));
    // The ledger kept what the service said (scrubbed): the echoed message is there.
    let ledger_rows = dump_ledger(&state);
    assert!(
        ledger_rows.contains("Specified signature is not matched")
            && ledger_rows.contains("backend error near SecurityToken="),
        "the failures are recorded: {ledger_rows}"
    );
    shown.push(("ledger rows".into(), ledger_rows));
    for file in std::fs::read_dir(&state).unwrap() {
        let path = file.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        shown.push((
            format!("raw file {}", path.display()),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    drop(engine);
    let log_text = logs.text();
    assert!(
        log_text.contains("retrying") && log_text.contains("SignatureDoesNotMatch"),
        "the failures were logged"
    );
    // The echoes reached the logs, the ledger and the errors, scrubbed.
    for (place, text) in &shown {
        if place == "ledger rows" || place.starts_with("main error") {
            assert!(
                text.contains("backend error near SecurityToken=[REDACTED]"),
                "{place}: {text}"
            );
        }
    }
    assert!(log_text.contains("backend error near SecurityToken=[REDACTED]"));
    shown.push(("logs".into(), log_text));

    let found: Vec<String> = shown
        .iter()
        .flat_map(|(place, text)| hits(place, text))
        .collect();
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));

    // The search itself finds every form of every secret when one is there.
    for (name, needle) in needles() {
        let planted = format!("a line with {needle} in it");
        assert_eq!(
            hits("planted", &planted).len(),
            needles()
                .iter()
                .filter(|(_, n)| planted.contains(n.as_str()))
                .count(),
            "{name}"
        );
        assert!(!hits("planted", &planted).is_empty(), "{name}");
    }
}

/// Every text column of every row of every table, one line per row.
fn dump_ledger(state: &Path) -> String {
    let conn = rusqlite::Connection::open_with_flags(
        state.join(LEDGER_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(tables.len() >= 5, "{tables:?}");
    let mut out = String::new();
    for table in tables {
        let mut statement = conn.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = statement.column_count();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            out.push_str(&table);
            for i in 0..columns {
                out.push(' ');
                match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        out.push_str(&String::from_utf8_lossy(t))
                    }
                    rusqlite::types::ValueRef::Integer(n) => out.push_str(&n.to_string()),
                    rusqlite::types::ValueRef::Real(x) => out.push_str(&x.to_string()),
                    rusqlite::types::ValueRef::Null => out.push_str("NULL"),
                }
            }
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_search_reports_each_encoding_of_each_secret() {
    // Raw, once, twice and form-encoded are all different strings here, so a scrubber that
    // missed one would be caught.
    for secret in [STS_SECRET, STS_TOKEN, WRONG_SECRET] {
        let forms = forms(secret);
        assert_eq!(forms.len(), 4, "{forms:?}");
        for form in &forms {
            assert!(!hits("t", &format!("x{form}x")).is_empty(), "{form}");
        }
    }
    assert!(hits("t", "nothing secret here").is_empty());
}

// ------------------------------------------------------------------ (b) admin address

const WAIT: Duration = Duration::from_secs(60);

/// An emulator on real time (the binary signs with the wall clock).
async fn real_time_emulator() -> EmulatorHandle {
    let mut fleet = harness_fleet(
        "2000-01-01T00:00:00Z",
        1000.0,
        vec![InstanceSpec {
            expires_at: None,
            expires_in: Some("20d".into()),
            ..instance_spec("i-a", "2000-01-01T00:00Z")
        }],
    );
    fleet.settings.clock_start = None;
    fleet.settings.clock_speed = 1.0;
    ecs_emulator::start(fleet, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// `ecs-renewd run` whose stderr lines arrive on a channel; killed when dropped.
struct Daemon {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(emulator: &EmulatorHandle, admin: &str) -> Daemon {
        Daemon::start_with(emulator, admin, "")
    }

    fn start_with(emulator: &EmulatorHandle, admin: &str, admin_extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config: PathBuf = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nschedule = \"0 0 * * * *\"\njitter = \"0s\"\nstate_dir = \"{}\"\n[admin]\nlisten = \"{admin}\"\n{admin_extra}[scan]\nregions = [\"cn-hangzhou\"]\n[[accounts]]\nname = \"main\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"env\"\n[[policies]]\nname = \"observe\"\naction = \"observe\"\n",
                dir.path().join("state").display(),
                emulator.url()
            ),
        )
        .unwrap();
        let (child, lines) = support::spawn_daemon(&config);
        Daemon {
            child,
            lines,
            _dir: dir,
        }
    }

    /// The lines up to and including the first containing `needle` (panics after WAIT).
    async fn lines_until(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "no log line containing {needle:?} in:\n{}",
            seen.join("\n")
        );
        seen
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_address_beyond_loopback_is_logged_at_start_up() {
    let emulator = real_time_emulator().await;
    let port = support::free_port();
    let mut daemon = Daemon::start(&emulator, &format!("0.0.0.0:{port}"));
    let lines = daemon.lines_until("listens beyond loopback").await;
    let line = lines.last().unwrap();
    assert!(line.contains("\"level\":\"WARN\""), "{line}");
    assert!(line.contains(&format!("0.0.0.0:{port}")), "{line}");
    assert!(line.contains("without a bearer token"), "{line}");
    // Not only at start: a reload (and every pass, at most hourly) says it again.
    daemon.lines_until("ecs-renewd started").await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGHUP) };
    let lines = daemon.lines_until("listens beyond loopback").await;
    assert!(
        lines.last().unwrap().contains("\"level\":\"WARN\""),
        "{lines:?}"
    );
    drop(daemon);

    // With a bearer token there is nothing to warn about.
    let token = tempfile::tempdir().unwrap();
    let token_file = token.path().join("admin.token");
    write_secret_file(&token_file, "a-token-long-enough-0123456789");
    let mut daemon = Daemon::start_with(
        &emulator,
        &format!("0.0.0.0:{}", support::free_port()),
        &format!("bearer_token_file = \"{}\"\n", token_file.display()),
    );
    let lines = daemon.lines_until("ecs-renewd started").await;
    assert!(
        lines.iter().all(|l| !l.contains("beyond loopback")),
        "{lines:?}"
    );
    drop(daemon);

    // On loopback the daemon starts without that warning.
    let mut daemon = Daemon::start(&emulator, &format!("127.0.0.1:{}", support::free_port()));
    let lines = daemon.lines_until("ecs-renewd started").await;
    assert!(
        lines.iter().all(|l| !l.contains("beyond loopback")),
        "{lines:?}"
    );
}

#[test]
fn the_admin_address_is_loopback_by_default() {
    let minimal = "[[accounts]]\nname = \"main\"\n[accounts.credentials]\nsource = \"env\"\n";
    let config = Config::parse(minimal, Path::new("min.toml"), &Environment::default()).unwrap();
    assert_eq!(config.admin_listen.to_string(), "127.0.0.1:9469");
    assert!(config.admin_listen.ip().is_loopback());
}

// ------------------------------------------------------------------ (c) TLS for remote endpoints

fn endpoint_problems(endpoint: &str) -> Vec<String> {
    let text = format!(
        "[[accounts]]\nname = \"main\"\nendpoint = \"{endpoint}\"\n[accounts.credentials]\nsource = \"env\"\n"
    );
    match Config::parse(&text, Path::new("tls.toml"), &Environment::default()) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { problems }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(other) => vec![other.to_string()],
    }
}

#[test]
fn plain_http_to_anything_but_loopback_is_refused() {
    let remote = [
        "http://10.1.2.3",
        "http://192.168.1.10:9470/",
        "http://203.0.113.7/",
        "http://example.com/",
        "http://0.0.0.0:9470/",
        "http://[::ffff:127.0.0.1]/",
        "http://[2001:db8::1]/",
        "http://localhost.example.com/",
        "http://127.0.0.1.nip.io/",
        "http://LOCALHOST.evil/",
        "HTTP://10.0.0.1/",
        "http://{region}.example.com/",
        "http://ecs.{region}.aliyuncs.com/",
    ];
    for endpoint in remote {
        let problems = endpoint_problems(endpoint);
        assert_eq!(problems.len(), 1, "{endpoint}: {problems:?}");
        assert!(
            problems[0].contains("uses plain http to a non-loopback host; use https"),
            "{endpoint}: {problems:?}"
        );
    }
    // User information cannot smuggle a remote host behind a loopback-looking prefix.
    for endpoint in [
        "http://127.0.0.1:80@example.com/",
        "http://localhost@10.0.0.1/",
    ] {
        let problems = endpoint_problems(endpoint);
        assert_eq!(problems.len(), 1, "{endpoint}: {problems:?}");
        assert!(
            problems[0].contains("plain http to a non-loopback host")
                || problems[0].contains("user information"),
            "{endpoint}: {problems:?}"
        );
    }
    // Loopback may use plain http (the emulator); https goes anywhere; so do the presets.
    for endpoint in [
        "http://127.0.0.1:9470",
        "http://127.8.9.10/",
        "http://[::1]:9470/",
        "http://localhost:9470/",
        "http://LocalHost/",
        "https://ecs.example.com/",
        "https://ecs.{region}.aliyuncs.com/",
        "public",
        "vpc",
    ] {
        assert_eq!(
            endpoint_problems(endpoint),
            Vec::<String>::new(),
            "{endpoint}"
        );
    }
}

/// Words that would name a switch for TLS or certificate checking.
const TLS_WORDS: &[&str] = &[
    "insecure",
    "tls",
    "ssl",
    "cert",
    "danger",
    "accept_invalid",
    "skip_verify",
    "no_verify",
    "verify_peer",
    "verify_tls",
    "verify_ssl",
    "ca_file",
    "ca_bundle",
];
/// The only keys with "verify" in them: they bound the check that a renewal's new expiry
/// shows (`[retry]`), nothing to do with TLS.
const RENEWAL_VERIFY_KEYS: &[&str] = &["verify_timeout", "verify_interval"];

fn assert_not_a_tls_switch(key: &str, place: &str) {
    let lower = key.to_ascii_lowercase();
    for word in TLS_WORDS {
        assert!(
            !lower.contains(word),
            "{place}: key {key:?} looks like a TLS switch"
        );
    }
    if lower.contains("verify") {
        assert!(
            RENEWAL_VERIFY_KEYS.contains(&lower.as_str()),
            "{place}: key {key:?} looks like a verification switch"
        );
    }
}

#[test]
fn no_config_key_turns_certificate_verification_off() {
    // Every key the schema knows, table by table, from its own "unknown field" answer.
    let tables = [
        "",
        "[daemon]\n",
        "[admin]\n",
        "[scan]\n",
        "[[accounts]]\nname = \"a\"\n",
        "[[accounts]]\nname = \"a\"\n[accounts.credentials]\n",
        "[[accounts]]\nname = \"a\"\n[accounts.rate_limit]\n",
        "[[accounts]]\nname = \"a\"\n[accounts.call_retry]\n",
        "[limits]\n",
        "[retry]\n",
        "[[policies]]\nname = \"p\"\naction = \"observe\"\n",
        "[[policies]]\nname = \"p\"\naction = \"observe\"\n[policies.match]\n",
    ];
    let mut known = Vec::new();
    for table in tables {
        let text = format!("{table}insecure_skip_verify = true\n");
        let problems = match Config::parse(&text, Path::new("tls.toml"), &Environment::default()) {
            Err(ConfigError::Invalid { problems }) => problems,
            other => panic!("{table}: a TLS switch was accepted: {other:?}"),
        };
        let message = &problems[0].message;
        assert!(
            message.starts_with("unknown field `insecure_skip_verify`, expected "),
            "{table}: {message}"
        );
        // "expected one of `a`, `b`" or, for a table of one key, "expected `a`".
        let listed: Vec<String> = message
            .trim_start_matches("unknown field `insecure_skip_verify`, expected ")
            .trim_start_matches("one of ")
            .split(',')
            .map(|k| k.trim().trim_matches('`').to_owned())
            .collect();
        assert!(!listed.is_empty());
        known.extend(listed);
    }
    assert!(known.len() >= 50, "{known:?}");
    for key in &known {
        assert_not_a_tls_switch(key, "schema");
    }
    // Spellings an operator might try are refused, wherever they are written.
    for key in [
        "tls_verify",
        "verify_tls",
        "insecure",
        "danger_accept_invalid_certs",
        "ca_file",
    ] {
        let text = format!(
            "[[accounts]]\nname = \"main\"\nendpoint = \"https://ecs.example.com\"\n{key} = false\n"
        );
        assert!(
            Config::parse(&text, Path::new("tls.toml"), &Environment::default()).is_err(),
            "{key}"
        );
    }

    // The documented example has no such key either, set or commented out.
    let example = include_str!("../../config/example.toml");
    let mut keys = 0;
    for line in example.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some((key, _)) = line.split_once(" = ")
            && !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            assert_not_a_tls_switch(key, "config/example.toml");
            keys += 1;
        }
    }
    assert!(keys >= 50, "{keys} keys found in config/example.toml");
    let lower = example.to_ascii_lowercase();
    for word in ["insecure", "skip_verify", "danger", "accept_invalid"] {
        assert!(!lower.contains(word), "config/example.toml mentions {word}");
    }
}

#[test]
fn the_http_clients_never_disable_certificate_checks() {
    // A static check over the sources: reqwest's switches for turning certificate and host
    // name verification off appear nowhere.
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 20);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for switch in [
            "danger_accept_invalid_certs",
            "danger_accept_invalid_hostnames",
            "tls_built_in_root_certs(false)",
            "https_only(false)",
        ] {
            assert!(
                !text.contains(switch),
                "{} contains {switch}",
                file.display()
            );
        }
    }
}

/// (a) again for the keys STS mints and the OIDC token: a pod on RRSA and a Resource
/// Directory's member reached through its role, two passes an hour apart (so each key is
/// fetched again, and the token file read again), then every log line, the metrics, the
/// status, the summaries, `check-config`'s report and the ledger's rows are searched for every
/// minted secret and token and for the OIDC token, in every encoding: zero hits.
#[tokio::test]
async fn minted_keys_and_the_oidc_token_reach_no_log_metric_status_or_ledger() {
    use ecs_emulator::settings::{AccountSpec, MemberSpec, OidcProviderSpec, RoleSpec};
    use ecs_wire::clock::Clock;
    let logs = support::AllThreadLogs::start();
    let provider_arn = "acs:ram::2000000000000002:oidc-provider/ack-rrsa-c1";
    let mut due = support::instance_spec("i-prod", "2026-03-13T16:00Z");
    due.account = Some("prod".into());
    let mut fleet = harness_fleet(NOW, 1000.0, vec![due]);
    let role = |name: &str, trust: &str| RoleSpec {
        name: name.into(),
        trust: vec![trust.into()],
        external_id: None,
        max_session: None,
    };
    fleet.accounts.push(AccountSpec {
        name: "prod".into(),
        balance: 1000.0,
        currency: "CNY".into(),
        access_keys: Vec::new(),
        uid: Some("2000000000000002".into()),
        roles: vec![
            role("ResourceDirectoryAccountAccessRole", "1000000000000001"),
            role("pod", provider_arn),
        ],
        members: Vec::new(),
    });
    fleet.accounts[0].members = vec![MemberSpec {
        account: "prod".into(),
        folder: None,
        status: None,
        display_name: None,
    }];
    fleet.oidc_providers.push(OidcProviderSpec {
        name: "ack-rrsa-c1".into(),
        account: Some("prod".into()),
        issuer: "https://oidc.example.invalid/c1".into(),
        audience: "sts.aliyuncs.com".into(),
    });
    let clock = Arc::new(VirtualClock::frozen(ecs_wire::time::parse(NOW).unwrap()));
    let emulator =
        ecs_emulator::start_with_clock(fleet, "127.0.0.1:0".parse().unwrap(), clock.clone())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let mut tokens = Vec::new();
    let mut write_token = || {
        let token = emulator.with_world(|w| {
            let provider = w.identities().oidc_provider("ack-rrsa-c1").unwrap();
            let issued = clock.now();
            provider.mint(
                "system:serviceaccount:x:y",
                None,
                issued,
                issued + chrono::Duration::hours(1),
            )
        });
        write_secret_file(&token_file, &token);
        tokens.push(token);
    };
    write_token();
    let state = dir.path().join("state");
    let url = emulator.url();
    let text = format!(
        "[daemon]\nstate_dir = \"{state}\"\n[scan]\nregions = [\"cn-hangzhou\"]\n[retry]\nverify_timeout = \"1s\"\nverify_interval = \"50ms\"\n\
         [[accounts]]\nname = \"pod\"\nendpoint = \"{url}\"\n[accounts.credentials]\nsource = \"oidc\"\nrole_arn = \"acs:ram::2000000000000002:role/pod\"\noidc_provider_arn = \"{provider_arn}\"\noidc_token_file = \"{token}\"\nsts_endpoint = \"{url}\"\n\
         [[directories]]\nname = \"org\"\nendpoint = \"{url}\"\n[directories.credentials]\nsource = \"env\"\n\
         [[policies]]\nname = \"renew-all\"\naction = \"renew\"\nrenew_before = \"7d\"\n",
        state = state.display(),
        token = token_file.display(),
    );
    let env = support::Harness::env();
    let config = Config::parse(&text, Path::new("minted.toml"), &env).unwrap();
    let engine =
        ecs_renewd::commands::once::engine(config, &env, clock.clone(), CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    let mut shown: Vec<(String, String)> = Vec::new();
    for pass in 0..2 {
        let summary = engine.run_pass().await.unwrap();
        assert!(
            summary.source_results.iter().all(|s| s.error.is_none()),
            "{summary:?}"
        );
        shown.push((format!("pass {pass} Debug"), format!("{summary:?}")));
        shown.push((
            format!("pass {pass} JSON"),
            serde_json::to_string(&summary).unwrap(),
        ));
        shown.push((
            format!("pass {pass} text"),
            ecs_renewd::commands::once::render(&summary),
        ));
        clock.advance(Duration::from_secs(3600));
        write_token();
    }
    assert_eq!(emulator.orders().len(), 1, "the instance renewed once");
    let config_path = dir.path().join("check.toml");
    std::fs::write(&config_path, &text).unwrap();
    let mut report = Vec::new();
    // check-config signs with the wall clock, which the emulator's frozen clock is not: its
    // refusals are part of what is searched too.
    let _ = ecs_renewd::commands::check_config::run(&config_path, &env, &mut report).await;
    shown.push((
        "check-config report".into(),
        String::from_utf8(report).unwrap(),
    ));
    shown.push(("metrics".into(), engine.metrics.render(&engine.ledger)));
    let status = ecs_renewd::commands::status::report(&engine.ledger).unwrap();
    shown.push((
        "status JSON".into(),
        serde_json::to_string(&status).unwrap(),
    ));
    shown.push(("ledger rows".into(), dump_ledger(&state)));
    shown.push(("logs".into(), logs.text()));

    let minted = emulator.with_world(|w| w.minted_keys());
    assert!(
        minted.len() >= 4,
        "two keys each for the pod and the member: {minted:?}"
    );
    let mut needles: Vec<(String, String)> = Vec::new();
    for (id, secret, token) in &minted {
        needles.extend(
            forms(secret)
                .into_iter()
                .map(|f| (format!("secret of {id}"), f)),
        );
        if let Some(token) = token {
            needles.extend(
                forms(token)
                    .into_iter()
                    .map(|f| (format!("token of {id}"), f)),
            );
        }
    }
    for (i, token) in tokens.iter().enumerate() {
        needles.extend(
            forms(token)
                .into_iter()
                .map(|f| (format!("OIDC token {i}"), f)),
        );
    }
    let found: Vec<String> = shown
        .iter()
        .flat_map(|(place, text)| {
            needles
                .iter()
                .filter(|(_, needle)| text.contains(needle.as_str()))
                .map(move |(name, _)| format!("{place}: {name}"))
        })
        .collect();
    assert!(found.is_empty(), "secrets shown: {found:#?}");
    // The search finds a planted copy, so zero hits mean something.
    let planted = format!("…{}…", minted[0].1);
    assert!(needles.iter().any(|(_, n)| planted.contains(n.as_str())));
}
