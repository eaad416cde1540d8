//! Accounts reached through an assumed RAM role (`[accounts.assume_role]`), end to end against
//! the emulator's STS: the role's instances renewed with the role's key and one AssumeRole per
//! key; each refusal (ExternalId missing or wrong, a role that does not trust the caller, no
//! such role) one clear permission failure that names the code and the role, asked again only
//! after the pause; keys that expire between passes fetched again before they do, with no call
//! refused for an expired token; `check-config` trying each role; the aliyun CLI's role
//! profiles; RRSA (AssumeRoleWithOIDC with the projected token, read again at each refresh).

use std::time::Duration;

use ecs_emulator::settings::{AccountSpec, RoleSpec};
use ecs_renewd::cloud::ErrorClass;
use ecs_renewd::cloud::credentials::REFUSAL_PAUSE;

use crate::support::{Harness, harness_fleet, instance_spec};

const NOW: &str = "2026-03-10T04:00:00Z";
const RENEW_ALL: &str =
    "[[policies]]\nname = \"renew-all\"\naction = \"renew\"\nrenew_before = \"7d\"\n";
/// The harness's own account ("main", the first of the fleet) has the emulator's first uid.
const MAIN_UID: &str = "1000000000000001";
const PROD_UID: &str = "2000000000000002";
const PROD_ROLE: &str = "acs:ram::2000000000000002:role/ecs-renewd";

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

fn role(external_id: Option<&str>, trust: &[&str]) -> RoleSpec {
    RoleSpec {
        name: "ecs-renewd".into(),
        trust: trust.iter().map(|t| (*t).to_owned()).collect(),
        external_id: external_id.map(str::to_owned),
        max_session: None,
    }
}

/// The harness's account holds no instance; "prod" (uid `PROD_UID`) holds one due for renewal
/// and has `role`.
fn org_fleet(role: RoleSpec) -> ecs_emulator::EmulatorConfig {
    let mut due = instance_spec("i-prod", "2026-03-13T16:00Z");
    due.account = Some("prod".into());
    let mut fleet = harness_fleet(NOW, 1000.0, vec![due]);
    fleet.accounts.push(AccountSpec {
        name: "prod".into(),
        balance: 1000.0,
        currency: "CNY".into(),
        access_keys: Vec::new(),
        uid: Some(PROD_UID.into()),
        roles: vec![role],
        members: Vec::new(),
    });
    fleet
}

/// The harness's account entry assumes the prod role (`settings`: more keys of the table).
fn assuming(settings: &str) -> String {
    format!("[accounts.assume_role]\nrole_arn = \"{PROD_ROLE}\"\n{settings}{RENEW_ALL}")
}

fn assume_role_calls(emulator: &ecs_emulator::EmulatorHandle) -> u64 {
    emulator
        .calls()
        .by_action
        .get("AssumeRole")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn an_assumed_role_renews_the_roles_instances_with_one_sts_call_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let external_id_file = dir.path().join("external-id");
    std::fs::write(&external_id_file, "ext-1234\n").unwrap();
    let settings = format!("external_id_file = \"{}\"\n", external_id_file.display());
    let h = Harness::start(
        org_fleet(role(Some("ext-1234"), &[MAIN_UID])),
        &assuming(&settings),
    )
    .await;
    let summary = h.pass().await;
    assert_eq!(
        (summary.renewed, summary.verified, summary.result.as_str()),
        (1, 1, "ok"),
        "{summary:?}"
    );
    let orders = h.emulator.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(
        (orders[0].account.as_str(), orders[0].instance_id.as_str()),
        ("prod", "i-prod"),
        "charged to the role's account"
    );
    assert_eq!(
        assume_role_calls(&h.emulator),
        1,
        "one key for the whole pass"
    );
    h.advance(minutes(10));
    let again = h.pass().await;
    assert_eq!(again.result, "ok", "{again:?}");
    assert_eq!(assume_role_calls(&h.emulator), 1, "the key lasts an hour");
    assert_eq!(h.emulator.orders().len(), 1);
}

#[tokio::test]
async fn each_refusal_is_one_clear_permission_failure_asked_again_only_after_a_pause() {
    let cases = [
        (
            "ExternalId missing",
            role(Some("ext-1234"), &[MAIN_UID]),
            "",
        ),
        (
            "ExternalId wrong",
            role(Some("ext-1234"), &[MAIN_UID]),
            "external_id = \"ext-9999\"\n",
        ),
        ("not trusted", role(None, &["3000000000000003"]), ""),
    ];
    for (case, role, settings) in cases {
        let h = Harness::start(org_fleet(role), &assuming(settings)).await;
        let summary = h.pass().await;
        let source = &summary.source_results[0];
        assert_eq!(
            source.failure_class,
            Some(ErrorClass::Permission),
            "{case}: {summary:?}"
        );
        let error = source.error.as_deref().unwrap_or_default();
        for needed in ["NoPermission", PROD_ROLE, "request id", "trust policy"] {
            assert!(error.contains(needed), "{case}: {needed:?} in {error}");
        }
        assert_eq!(h.renew_calls(), 0, "{case}");
        assert_eq!(assume_role_calls(&h.emulator), 1, "{case}");
        h.advance(minutes(1));
        h.pass().await;
        assert_eq!(
            assume_role_calls(&h.emulator),
            1,
            "{case}: the refusal stands"
        );
        h.advance(REFUSAL_PAUSE);
        h.pass().await;
        assert_eq!(
            assume_role_calls(&h.emulator),
            2,
            "{case}: asked again after the pause"
        );
        assert!(h.emulator.orders().is_empty(), "{case}");
    }
}

#[tokio::test]
async fn a_role_that_does_not_exist_is_named_with_advice() {
    let h = Harness::start(
        org_fleet(role(None, &[MAIN_UID])),
        &format!(
            "[accounts.assume_role]\nrole_arn = \"acs:ram::{PROD_UID}:role/missing\"\n{RENEW_ALL}"
        ),
    )
    .await;
    let summary = h.pass().await;
    let error = summary.source_results[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("EntityNotExist.Role") && error.contains("no such role"),
        "{error}"
    );
}

#[tokio::test]
async fn keys_are_fetched_again_before_they_expire_so_no_call_meets_an_expired_token() {
    let h = Harness::start(
        org_fleet(role(None, &[MAIN_UID])),
        &assuming("duration = \"15m\"\n"),
    )
    .await;
    // Six passes ten minutes apart over keys that last fifteen: each pass is past the last
    // key's refresh point (halfway through its life) and fetches the next one first.
    for pass in 0..6 {
        let summary = h.pass().await;
        assert!(
            summary.source_results.iter().all(|s| s.error.is_none()),
            "pass {pass}: {summary:?}"
        );
        h.advance(minutes(10));
    }
    assert_eq!(assume_role_calls(&h.emulator), 6);
    let outcomes = h.emulator.calls().by_outcome;
    assert!(
        outcomes
            .keys()
            .all(|code| !code.starts_with("InvalidSecurityToken")),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn check_config_assumes_each_role_once_and_reports_a_refusal_with_its_code() {
    let mut fleet = org_fleet(role(Some("ext-1234"), &[MAIN_UID]));
    // check-config signs with the wall clock: the emulator runs on it too.
    fleet.settings.clock_start = None;
    fleet.settings.clock_speed = 1.0;
    let emulator = ecs_emulator::start(fleet, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let write = |settings: &str| {
        std::fs::write(
            &path,
            format!(
                "[daemon]\nstate_dir = \"{}\"\n[[accounts]]\nname = \"main\"\nendpoint = \"{}\"\nregions = [\"cn-hangzhou\"]\n[accounts.credentials]\nsource = \"env\"\n[accounts.assume_role]\nrole_arn = \"{PROD_ROLE}\"\n{settings}{RENEW_ALL}",
                dir.path().display(),
                emulator.url()
            ),
        )
        .unwrap()
    };
    write("external_id = \"ext-9999\"\n");
    let mut out = Vec::new();
    let failure = ecs_renewd::commands::check_config::run(&path, &Harness::env(), &mut out)
        .await
        .expect_err("the role refuses");
    let text = failure.to_string();
    let at = format!("{}:4:", path.display());
    assert!(
        text.contains(&at)
            && text.contains("accounts[0].assume_role")
            && text.contains("NoPermission")
            && !text.contains("ext-9999"),
        "{text}"
    );
    write("external_id = \"ext-1234\"\n");
    ecs_renewd::commands::check_config::run(&path, &Harness::env(), &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let calls = emulator.calls().by_action.get("AssumeRole").copied();
    assert_eq!(calls, Some(2), "one AssumeRole per check");
}

/// The aliyun CLI's role modes against the emulator's STS: `RamRoleArn` (the profile's own
/// keys assume its role), `ChainableRamRoleArn` (another profile's credentials do), and a
/// cycle of source profiles, refused with the cycle named.
#[tokio::test]
async fn cli_profiles_assume_their_roles_directly_or_through_a_source_profile() {
    use ecs_renewd::cloud::credentials::{CredentialsConfig, Environment, SourceKind, resolve};
    use ecs_wire::clock::Clock;
    let mut fleet = org_fleet(role(None, &[MAIN_UID]));
    fleet.settings.clock_start = None;
    fleet.settings.clock_speed = 1.0;
    let emulator = ecs_emulator::start(fleet, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let sts = emulator.url();
    let (id, secret) = crate::support::HARNESS_KEY;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let profiles = serde_json::json!({"current": "chained", "profiles": [
        {"name": "base", "mode": "AK", "access_key_id": id, "access_key_secret": secret},
        {"name": "chained", "mode": "ChainableRamRoleArn", "source_profile": "base",
         "ram_role_arn": PROD_ROLE, "ram_session_name": "cli", "sts_endpoint": sts},
        {"name": "direct", "mode": "RamRoleArn", "access_key_id": id, "access_key_secret": secret,
         "ram_role_arn": PROD_ROLE, "ram_session_name": "cli", "expired_seconds": 900,
         "sts_endpoint": sts},
        {"name": "loop-a", "mode": "ChainableRamRoleArn", "source_profile": "loop-b",
         "ram_role_arn": PROD_ROLE, "sts_endpoint": sts},
        {"name": "loop-b", "mode": "ChainableRamRoleArn", "source_profile": "loop-a",
         "ram_role_arn": PROD_ROLE, "sts_endpoint": sts}
    ]});
    std::fs::write(&path, profiles.to_string()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = |profile: &str| CredentialsConfig {
        source: SourceKind::CliProfile,
        cli_config_path: Some(path.clone()),
        cli_profile: Some(profile.into()),
        ..CredentialsConfig::default()
    };
    let env = Environment::default();
    let now = emulator.clock().now();
    for (profile, calls) in [("chained", 1), ("direct", 2)] {
        let provider = resolve(&config(profile), &env).await.unwrap();
        let key = provider
            .credentials(now)
            .await
            .unwrap_or_else(|e| panic!("{profile}: {e}"));
        assert!(key.access_key_id.starts_with("STS."), "{profile}");
        assert!(key.security_token.is_some(), "{profile}");
        assert_eq!(
            emulator.calls().by_action.get("AssumeRole").copied(),
            Some(calls),
            "{profile}"
        );
    }
    let cycle = resolve(&config("loop-a"), &env)
        .await
        .unwrap_err()
        .to_string();
    assert!(cycle.contains("loop-a -> loop-b -> loop-a"), "{cycle}");
}

/// RRSA: a role assumed with the OIDC token the kubelet projects, named by the variables
/// ack-pod-identity-webhook injects; the token file is read again at every refresh (a token
/// the provider's audience does not match is refused while the current key still serves; the
/// next good token gets a new key); the chain finds the source; a half-set environment is an
/// error naming what is missing.
#[tokio::test]
async fn rrsa_assumes_the_role_with_the_projected_token_read_again_at_each_refresh() {
    use ecs_emulator::settings::OidcProviderSpec;
    use ecs_renewd::cloud::credentials::{CredentialsConfig, Environment, SourceKind, resolve};
    use ecs_wire::clock::Clock;
    let provider_arn = format!("acs:ram::{PROD_UID}:oidc-provider/ack-rrsa-c1");
    let mut fleet = org_fleet(role(None, &[&provider_arn]));
    fleet.oidc_providers.push(OidcProviderSpec {
        name: "ack-rrsa-c1".into(),
        account: Some("prod".into()),
        issuer: "https://oidc-ack-cn-hangzhou.example.invalid/c1".into(),
        audience: "sts.aliyuncs.com".into(),
    });
    fleet.settings.clock_start = None;
    fleet.settings.clock_speed = 1.0;
    let emulator = ecs_emulator::start(fleet, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let token = |audience: Option<&str>| {
        emulator.with_world(|w| {
            let provider = w.identities().oidc_provider("ack-rrsa-c1").unwrap();
            let issued = emulator.clock().now();
            provider.mint(
                "system:serviceaccount:ecs-renewd:ecs-renewd",
                audience,
                issued,
                issued + chrono::Duration::hours(1),
            )
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token(None)).unwrap();
    let env = Environment::from_pairs([
        ("ALIBABA_CLOUD_ROLE_ARN", PROD_ROLE.to_owned()),
        ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", provider_arn.clone()),
        (
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ]);
    let config = CredentialsConfig {
        source: SourceKind::Oidc,
        sts_endpoint: Some(emulator.url()),
        ..CredentialsConfig::default()
    };
    let calls = || {
        emulator
            .calls()
            .by_action
            .get("AssumeRoleWithOIDC")
            .copied()
            .unwrap_or(0)
    };
    let provider = resolve(&config, &env).await.unwrap();
    let start = emulator.clock().now();
    let first = provider.credentials(start).await.unwrap();
    assert!(first.access_key_id.starts_with("STS."));
    assert_eq!(calls(), 1);

    // The kubelet rotates the token: here to one for another audience. The refresh (past the
    // key's refresh point) reads it, STS refuses it, the current key still serves.
    std::fs::write(&token_file, token(Some("someone-else"))).unwrap();
    let later = start + chrono::Duration::minutes(50);
    let held = provider.credentials(later).await.unwrap();
    assert_eq!(held.access_key_id, first.access_key_id);
    assert_eq!(calls(), 2);
    let refused = emulator.calls().by_outcome;
    assert_eq!(
        refused.get("AuthenticationFail.OIDCToken.AudienceNotMatch"),
        Some(&1),
        "{refused:?}"
    );
    // A good token again: after the refusal's pause, a new key.
    std::fs::write(&token_file, token(None)).unwrap();
    let fresh = provider
        .credentials(later + chrono::Duration::minutes(6))
        .await
        .unwrap();
    assert_ne!(fresh.access_key_id, first.access_key_id);
    assert_eq!(calls(), 3);

    // The chain finds it (after the keys of the environment, which are unset here).
    let chain = CredentialsConfig {
        sts_endpoint: Some(emulator.url()),
        ..CredentialsConfig::default()
    };
    let found = resolve(&chain, &env).await.unwrap();
    assert!(found.origin().contains("OIDC token"), "{}", found.origin());

    // The aliyun CLI's OIDC mode reads the same file.
    let cli = dir.path().join("config.json");
    let profiles = serde_json::json!({"current": "rrsa", "profiles": [
        {"name": "rrsa", "mode": "OIDC", "ram_role_arn": PROD_ROLE,
         "oidc_provider_arn": provider_arn, "oidc_token_file": token_file,
         "ram_session_name": "cli", "sts_endpoint": emulator.url()}
    ]});
    std::fs::write(&cli, profiles.to_string()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let from_cli = CredentialsConfig {
        source: SourceKind::CliProfile,
        cli_config_path: Some(cli),
        ..CredentialsConfig::default()
    };
    let profile = resolve(&from_cli, &Environment::default()).await.unwrap();
    profile.credentials(emulator.clock().now()).await.unwrap();
    assert_eq!(calls(), 4);

    let half = Environment::from_pairs([("ALIBABA_CLOUD_ROLE_ARN", PROD_ROLE)]);
    let error = resolve(&config, &half).await.unwrap_err().to_string();
    assert!(
        error.contains("ALIBABA_CLOUD_OIDC_PROVIDER_ARN")
            && error.contains("ALIBABA_CLOUD_OIDC_TOKEN_FILE"),
        "{error}"
    );
}

/// A key that expires in the middle of a pass: the renewal is held in the emulator while the
/// clock passes the key's expiry; the calls after it (verification) sign with a key fetched
/// again first, so no call is refused for an expired token.
#[tokio::test]
async fn a_key_expiring_mid_pass_is_fetched_again_before_the_next_call() {
    use ecs_emulator::FaultSpec;
    use ecs_wire::Action;
    let h = Harness::start(
        org_fleet(role(None, &[MAIN_UID])),
        &assuming("duration = \"15m\"\n"),
    )
    .await;
    h.emulator.add_fault(FaultSpec::hold(Action::RenewInstance));
    let (summary, ()) = tokio::join!(h.engine.run_pass(), async {
        assert!(
            h.emulator.wait_for_held(1, Duration::from_secs(10)).await,
            "the renewal reaches the emulator"
        );
        h.advance(minutes(16));
        h.emulator.release_held();
    });
    let summary = summary.unwrap();
    assert_eq!((summary.renewed, summary.verified), (1, 1), "{summary:?}");
    assert_eq!(
        assume_role_calls(&h.emulator),
        2,
        "a second key for the calls after expiry"
    );
    let outcomes = h.emulator.calls().by_outcome;
    assert!(
        outcomes
            .keys()
            .all(|code| !code.starts_with("InvalidSecurityToken")),
        "{outcomes:?}"
    );
}

/// `plan` reads through the assumed role as a pass does, and sends nothing that changes
/// anything.
#[tokio::test]
async fn plan_works_through_an_assumed_role() {
    let h = Harness::start(org_fleet(role(None, &[MAIN_UID])), &assuming("")).await;
    let text = Harness::config_text(&h.emulator, h.state.path(), &assuming(""));
    let config =
        ecs_renewd::config::Config::parse(&text, std::path::Path::new("p.toml"), &Harness::env())
            .unwrap();
    drop(h.engine);
    let report = ecs_renewd::commands::plan::build(&config, &Harness::env(), h.clock.clone())
        .await
        .unwrap();
    let rows: Vec<(&str, &str)> = report
        .instances
        .iter()
        .map(|r| (r.instance_id.as_str(), r.decision.as_str()))
        .collect();
    assert_eq!(rows, [("i-prod", "renew")], "{report:?}");
    assert_eq!(report.renewals, 1);
    assert_eq!(assume_role_calls(&h.emulator), 1);
    assert!(h.emulator.orders().is_empty(), "plan charges nothing");
}

/// The daemon on RRSA, end to end: `source = "oidc"` with the variables the webhook injects,
/// a start-up pass renewing the role's instance, and a pass an hour later that reads the
/// rotated token file again for its new key.
#[tokio::test]
async fn the_daemon_runs_on_rrsa_and_reads_the_rotated_token_for_each_new_key() {
    use ecs_emulator::settings::OidcProviderSpec;
    use ecs_renewd::cloud::credentials::Environment;
    use ecs_renewd::daemon::{self, Clocks, ConfigSource, Setup, Signals, Tick, TickReason};
    use ecs_renewd::daemon::{TickSource, Ticks};
    use ecs_wire::clock::{Clock, VirtualClock};
    use std::sync::Arc;
    let provider_arn = format!("acs:ram::{PROD_UID}:oidc-provider/ack-rrsa-c1");
    let mut fleet = org_fleet(role(None, &[&provider_arn]));
    fleet.oidc_providers.push(OidcProviderSpec {
        name: "ack-rrsa-c1".into(),
        account: Some("prod".into()),
        issuer: "https://oidc-ack-cn-hangzhou.example.invalid/c1".into(),
        audience: "sts.aliyuncs.com".into(),
    });
    let clock = Arc::new(VirtualClock::frozen(ecs_wire::time::parse(NOW).unwrap()));
    let emulator =
        ecs_emulator::start_with_clock(fleet, "127.0.0.1:0".parse().unwrap(), clock.clone())
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let write_token = |subject: &str| {
        let token = emulator.with_world(|w| {
            let provider = w.identities().oidc_provider("ack-rrsa-c1").unwrap();
            let issued = clock.now();
            provider.mint(subject, None, issued, issued + chrono::Duration::hours(1))
        });
        std::fs::write(&token_file, token).unwrap();
    };
    write_token("system:serviceaccount:ecs-renewd:ecs-renewd");
    let text = format!(
        "[daemon]\nschedule = \"0 0 * * * *\"\njitter = \"0s\"\nstate_dir = \"{}\"\n[scan]\nregions = [\"cn-hangzhou\"]\n[retry]\nverify_timeout = \"2s\"\nverify_interval = \"50ms\"\n[[accounts]]\nname = \"prod\"\nendpoint = \"{}\"\n[accounts.credentials]\nsource = \"oidc\"\nsts_endpoint = \"{}\"\n{RENEW_ALL}",
        dir.path().join("state").display(),
        emulator.url(),
        emulator.url()
    );
    let env = Environment::from_pairs([
        ("ALIBABA_CLOUD_ROLE_ARN", PROD_ROLE.to_owned()),
        ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", provider_arn.clone()),
        (
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ]);
    let config = ecs_renewd::config::Config::parse(&text, std::path::Path::new("rrsa.toml"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    let (tick_tx, tick_rx) = tokio::sync::mpsc::channel(1);
    let (pass_tx, mut passes) = tokio::sync::mpsc::unbounded_channel();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let stop = tokio_util::sync::CancellationToken::new();
    let wall = Arc::new(VirtualClock::frozen(clock.now()));
    let running = daemon::start(Setup {
        config: ConfigSource {
            config,
            path: "rrsa.toml".into(),
            env,
        },
        clocks: Clocks {
            business: clock.clone(),
            wall: wall.clone(),
        },
        signals: Signals {
            stop: stop.clone(),
            reload: reload_rx,
        },
        ticks: Ticks {
            source: TickSource::Manual(tick_tx.clone(), tick_rx),
            watchdog_every: Duration::from_millis(50),
        },
        admin_listener: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        passes: Some(pass_tx),
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut next_pass = async || {
        tokio::time::timeout(Duration::from_secs(30), passes.recv())
            .await
            .expect("a pass within the timeout")
            .expect("the daemon runs")
    };
    let startup = next_pass().await;
    assert_eq!(
        (startup.renewed, startup.result.as_str()),
        (1, "ok"),
        "{startup:?}"
    );
    let oidc_calls = || {
        emulator
            .calls()
            .by_action
            .get("AssumeRoleWithOIDC")
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(oidc_calls(), 1);
    // An hour on, the kubelet has rotated the token (another subject: the trust policy of
    // the emulator's role names the provider, not the subject, so it is accepted).
    clock.advance(Duration::from_secs(3600));
    wall.advance(Duration::from_secs(3600));
    write_token("system:serviceaccount:ecs-renewd:rotated");
    tick_tx
        .send(Tick {
            reason: TickReason::Cron,
            at: wall.now(),
        })
        .await
        .unwrap();
    let later = next_pass().await;
    assert_eq!(later.result.as_str(), "ok", "{later:?}");
    assert_eq!(oidc_calls(), 2, "a new key, with the token read again");
    assert_eq!(emulator.orders().len(), 1, "nothing charged twice");
    stop.cancel();
    running.task.await.unwrap().unwrap();
}

/// `check-config` on RRSA: a token file that is missing or cannot be read is named with the
/// entry's place and the key (it is read at every refresh, but said at once); the exchange is
/// tried once, so STS out of reach is reported too, without the token.
#[tokio::test]
async fn check_config_names_a_missing_or_unreadable_oidc_token_file_and_a_refused_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let write = |token_file: &std::path::Path| {
        std::fs::write(
            &path,
            format!(
                "[daemon]\nstate_dir = \"{}\"\n[[accounts]]\nname = \"pod\"\n[accounts.credentials]\nsource = \"oidc\"\nrole_arn = \"{PROD_ROLE}\"\noidc_provider_arn = \"acs:ram::{PROD_UID}:oidc-provider/ack-rrsa-c1\"\noidc_token_file = \"{}\"\nsts_endpoint = \"http://127.0.0.1:9/\"\n",
                dir.path().display(),
                token_file.display()
            ),
        )
        .unwrap()
    };
    let env =
        ecs_renewd::cloud::credentials::Environment::from_pairs(Vec::<(String, String)>::new());
    let missing = dir.path().join("no-such-token");
    let not_a_file = dir.path().to_path_buf();
    for (case, token_file) in [("missing", &missing), ("unreadable", &not_a_file)] {
        write(token_file);
        let mut out = Vec::new();
        let failure = ecs_renewd::commands::check_config::run(&path, &env, &mut out)
            .await
            .expect_err(case);
        let text = failure.to_string();
        assert!(
            text.contains(&format!("{}:4:8: accounts[0].credentials", path.display()))
                && text.contains("oidc_token_file")
                && text.contains(&token_file.display().to_string()),
            "{case}: {text}"
        );
    }
    // A token file that reads, but STS cannot be reached: reported by the fetch check-config
    // makes, under the entry's credentials.
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").unwrap();
    write(&token);
    let mut out = Vec::new();
    let failure = ecs_renewd::commands::check_config::run(&path, &env, &mut out)
        .await
        .expect_err("STS is not there");
    let text = failure.to_string();
    assert!(
        text.contains(&format!("{}:4:8: accounts[0].credentials:", path.display()))
            && !text.contains("eyJhbGciOiJSUzI1NiJ9"),
        "{text}"
    );
}
