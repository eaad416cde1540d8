//! The credentials provider chain: each source, the order between them, the metadata service
//! (token mode, fallback, refresh) against a loopback stub, and that secrets never print.

use crate::support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{TimeZone, Utc};
use ecs_renewd::cloud::credentials::{
    CredentialError, CredentialsConfig, Environment, SourceKind, resolve,
};
use support::{Recorded, Reply, Stub};

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A metadata service stub: token mode, one role, credentials expiring at `expiration`.
/// It counts credential fetches.
async fn metadata_stub(expiration: &'static str, fetches: Arc<AtomicUsize>) -> Stub {
    metadata_stub_with_outage(expiration, fetches, Arc::new(AtomicBool::new(false))).await
}

/// The same stub, answering 503 to everything while `down` is set.
async fn metadata_stub_with_outage(
    expiration: &'static str,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
) -> Stub {
    Stub::start(move |request: &Recorded, _| {
        if down.load(Ordering::SeqCst) {
            return Reply::raw(503, "down");
        }
        let token_ok = request.headers.get("x-aliyun-ecs-metadata-token").map(String::as_str)
            == Some("tok-1");
        match (request.method.as_str(), request.path.as_str()) {
            ("PUT", "/latest/api/token") => {
                assert_eq!(
                    request.headers.get("x-aliyun-ecs-metadata-token-ttl-seconds").map(String::as_str),
                    Some("21600")
                );
                Reply::raw(200, "tok-1")
            }
            ("GET", _) if !token_ok => Reply::raw(401, "token required"),
            ("GET", "/latest/meta-data/ram/security-credentials/") => Reply::raw(200, "renew-role\n"),
            ("GET", "/latest/meta-data/ram/security-credentials/renew-role") => {
                fetches.fetch_add(1, Ordering::SeqCst);
                Reply::json(200, serde_json::json!({
                    "AccessKeyId": "STS.L4aBSCSJVMuKg5U1vFDw",
                    "AccessKeySecret": "wyLTSmsyPGP1ohvvw8xYgB29dlGI8KMiH2pKCNZ9",
                    "Expiration": expiration,
                    "SecurityToken": "CAESrgIIARKAAShQquMnLIlbvEcIxO6wCoqJufs8sWwieUxu45hS9AvKNEte8KRUWiJWJ6Y+YHAPgNwi7yfRecMFydL2uPOgBI7LDio0RBbYLmDfnYGB8sHi",
                    "LastUpdated": "2026-01-01T00:00:00Z",
                    "Code": "Success"
                }))
            }
            _ => Reply::raw(404, "not found"),
        }
    })
    .await
}

/// A metadata URL nothing listens on.
fn dead_metadata_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn fixed_now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(&root.join("keys/main.secret"), "file-secret\n");
        write(&root.join("systemd/access_key_id"), "SYSTEMD_ID");
        write(&root.join("systemd/access_key_secret"), "systemd-secret");
        write(
            &root.join("home/.aliyun/config.json"),
            r#"{"current":"AK","profiles":[
                {"name":"AK","mode":"AK","access_key_id":"CLI_ID","access_key_secret":"cli-secret"},
                {"name":"StsToken","mode":"StsToken","access_key_id":"CLI_STS_ID","access_key_secret":"cli-sts-secret","sts_token":"cli-token"},
                {"name":"EcsRamRole","mode":"EcsRamRole","ram_role_name":"renew-role"},
                {"name":"Sso","mode":"CloudSSO"}]}"#,
        );
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.dir.path().join(rel)
    }

    fn full_env(&self) -> Vec<(String, String)> {
        vec![
            ("ALIBABA_CLOUD_ACCESS_KEY_ID".into(), "ENV_ID".into()),
            (
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET".into(),
                "env-secret".into(),
            ),
            (
                "CREDENTIALS_DIRECTORY".into(),
                self.path("systemd").display().to_string(),
            ),
            ("HOME".into(), self.path("home").display().to_string()),
        ]
    }

    fn file_config(&self, metadata_url: &str) -> CredentialsConfig {
        CredentialsConfig {
            access_key_id: Some("FILE_ID".into()),
            access_key_secret_file: Some(self.path("keys/main.secret")),
            metadata_url: metadata_url.into(),
            ..CredentialsConfig::default()
        }
    }
}

fn without(env: &[(String, String)], name: &str) -> Environment {
    Environment::from_pairs(env.iter().filter(|(k, _)| k != name).cloned())
}

#[tokio::test]
async fn the_chain_takes_the_first_source_that_yields_in_order() {
    let fixture = Fixture::new();
    let fetches = Arc::new(AtomicUsize::new(0));
    let imds = metadata_stub("2099-01-01T00:00:00Z", fetches.clone()).await;
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut env = fixture.full_env();

    // 1. Explicit files in the config win over everything.
    let config = fixture.file_config(&imds.url());
    let provider = resolve(&config, &Environment::from_pairs(env.clone()))
        .await
        .unwrap();
    assert_eq!(
        provider.credentials(now).await.unwrap().access_key_id,
        "FILE_ID"
    );
    assert!(
        provider.origin().starts_with("key file"),
        "{}",
        provider.origin()
    );

    // 2. Then the environment.
    let config = CredentialsConfig {
        metadata_url: imds.url(),
        ..CredentialsConfig::default()
    };
    let provider = resolve(&config, &Environment::from_pairs(env.clone()))
        .await
        .unwrap();
    let credentials = provider.credentials(now).await.unwrap();
    assert_eq!(credentials.access_key_id, "ENV_ID");
    assert_eq!(credentials.access_key_secret.expose(), "env-secret");

    // 3. Then systemd credentials.
    env.retain(|(k, _)| !k.starts_with("ALIBABA_CLOUD_ACCESS_KEY"));
    let provider = resolve(&config, &Environment::from_pairs(env.clone()))
        .await
        .unwrap();
    assert_eq!(
        provider.credentials(now).await.unwrap().access_key_id,
        "SYSTEMD_ID"
    );

    // 4. Then the aliyun CLI profile.
    env.retain(|(k, _)| k != "CREDENTIALS_DIRECTORY");
    let provider = resolve(&config, &Environment::from_pairs(env.clone()))
        .await
        .unwrap();
    assert_eq!(
        provider.credentials(now).await.unwrap().access_key_id,
        "CLI_ID"
    );

    // 5. Then the ECS RAM role.
    let provider = resolve(&config, &without(&env, "HOME")).await.unwrap();
    let credentials = provider.credentials(now).await.unwrap();
    assert_eq!(credentials.access_key_id, "STS.L4aBSCSJVMuKg5U1vFDw");
    assert!(credentials.security_token.is_some());

    // 6. Nothing: every source says why it did not yield.
    let dead = CredentialsConfig {
        metadata_url: dead_metadata_url(),
        ..CredentialsConfig::default()
    };
    let error = resolve(&dead, &without(&env, "HOME")).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, CredentialError::NotFound { .. }));
    for source in [
        "file (",
        "env (",
        "systemd (",
        "cli-profile (",
        "ram-role (",
    ] {
        assert!(text.contains(source), "{source} missing from: {text}");
    }
}

#[tokio::test]
async fn legacy_environment_names_are_read_after_the_current_ones() {
    let config = CredentialsConfig {
        source: SourceKind::Env,
        ..CredentialsConfig::default()
    };
    for (id_var, secret_var, token_var) in [
        (
            "ALIYUN_ACCESS_KEY_ID",
            "ALIYUN_ACCESS_KEY_SECRET",
            "ALIYUN_SECURITY_TOKEN",
        ),
        (
            "ALICLOUD_ACCESS_KEY_ID",
            "ALICLOUD_ACCESS_KEY_SECRET",
            "ALICLOUD_SECURITY_TOKEN",
        ),
        (
            "ALICLOUD_ACCESS_KEY",
            "ALICLOUD_SECRET_KEY",
            "ALICLOUD_SECURITY_TOKEN",
        ),
    ] {
        let env =
            Environment::from_pairs([(id_var, "LEGACY"), (secret_var, "s"), (token_var, "t")]);
        let provider = resolve(&config, &env).await.unwrap();
        let credentials = provider.credentials(fixed_now()).await.unwrap();
        assert_eq!(credentials.access_key_id, "LEGACY", "{id_var}");
        assert_eq!(credentials.security_token.unwrap().expose(), "t");
    }
    let both = Environment::from_pairs([
        ("ALIYUN_ACCESS_KEY_ID", "OLD"),
        ("ALIYUN_ACCESS_KEY_SECRET", "s"),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "NEW"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "s"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "sts"),
    ]);
    let credentials = resolve(&config, &both)
        .await
        .unwrap()
        .credentials(fixed_now())
        .await
        .unwrap();
    assert_eq!(credentials.access_key_id, "NEW");
    assert_eq!(credentials.security_token.unwrap().expose(), "sts");
}

#[tokio::test]
async fn a_half_configured_source_is_an_error_not_a_reason_to_move_on() {
    let env = Environment::from_pairs([("ALIBABA_CLOUD_ACCESS_KEY_ID", "ID")]);
    let error = resolve(&CredentialsConfig::default(), &env)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the env credentials source is incomplete: ALIBABA_CLOUD_ACCESS_KEY_ID is set but ALIBABA_CLOUD_ACCESS_KEY_SECRET is not"
    );

    let fixture = Fixture::new();
    let config = CredentialsConfig {
        access_key_id: Some("ID".into()),
        access_key_secret_file: Some(fixture.path("keys/missing.secret")),
        ..CredentialsConfig::default()
    };
    let error = resolve(&config, &Environment::default()).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("cannot read the AccessKey secret from "),
        "{text}"
    );
    assert!(text.contains("missing.secret"), "{text}");
    assert!(
        text.contains("check the path and that the daemon's user may read it"),
        "{text}"
    );
}

#[tokio::test]
async fn systemd_credentials_honour_the_prefix_and_an_optional_token() {
    let fixture = Fixture::new();
    write(&fixture.path("systemd/prod.access_key_id"), "PROD_ID");
    write(
        &fixture.path("systemd/prod.access_key_secret"),
        "prod-secret",
    );
    write(&fixture.path("systemd/prod.security_token"), "prod-token");
    let config = CredentialsConfig {
        source: SourceKind::Systemd,
        systemd_credential_prefix: "prod.".into(),
        ..CredentialsConfig::default()
    };
    let env = Environment::from_pairs([(
        "CREDENTIALS_DIRECTORY",
        fixture.path("systemd").display().to_string(),
    )]);
    let credentials = resolve(&config, &env)
        .await
        .unwrap()
        .credentials(fixed_now())
        .await
        .unwrap();
    assert_eq!(credentials.access_key_id, "PROD_ID");
    assert_eq!(credentials.access_key_secret.expose(), "prod-secret");
    assert_eq!(credentials.security_token.unwrap().expose(), "prod-token");
}

#[tokio::test]
async fn cli_profiles_select_by_env_and_support_ak_sts_and_ram_role() {
    let fixture = Fixture::new();
    let fetches = Arc::new(AtomicUsize::new(0));
    let imds = metadata_stub("2099-01-01T00:00:00Z", fetches.clone()).await;
    let config = CredentialsConfig {
        source: SourceKind::CliProfile,
        metadata_url: imds.url(),
        ..CredentialsConfig::default()
    };
    let home = (
        "HOME".to_owned(),
        fixture.path("home").display().to_string(),
    );
    let with_profile = |name: &str| {
        Environment::from_pairs([home.clone(), ("ALIBABA_CLOUD_PROFILE".into(), name.into())])
    };

    let sts = resolve(&config, &with_profile("StsToken")).await.unwrap();
    let credentials = sts.credentials(fixed_now()).await.unwrap();
    assert_eq!(credentials.access_key_id, "CLI_STS_ID");
    assert_eq!(credentials.security_token.unwrap().expose(), "cli-token");

    let role = resolve(&config, &with_profile("EcsRamRole")).await.unwrap();
    let credentials = role.credentials(fixed_now()).await.unwrap();
    assert_eq!(credentials.access_key_id, "STS.L4aBSCSJVMuKg5U1vFDw");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    let error = resolve(&config, &with_profile("Sso")).await.unwrap_err();
    assert!(
        error.to_string().contains("has mode \"CloudSSO\", which ecs-renewd does not support; use AK, StsToken, EcsRamRole, RamRoleArn, ChainableRamRoleArn or OIDC"),
        "{error}"
    );
    let error = resolve(&config, &with_profile("Nope")).await.unwrap_err();
    assert!(
        error.to_string().ends_with("no profile named \"Nope\""),
        "{error}"
    );
}

#[tokio::test]
async fn the_metadata_service_is_used_in_token_mode_with_role_discovery() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let imds = metadata_stub("2099-01-01T00:00:00Z", fetches.clone()).await;
    let config = CredentialsConfig {
        source: SourceKind::RamRole,
        metadata_url: imds.url(),
        imdsv1_fallback: false,
        ..CredentialsConfig::default()
    };
    let provider = resolve(&config, &Environment::default()).await.unwrap();
    let credentials = provider.credentials(fixed_now()).await.unwrap();
    assert_eq!(
        credentials.access_key_secret.expose(),
        "wyLTSmsyPGP1ohvvw8xYgB29dlGI8KMiH2pKCNZ9"
    );
    let requests = imds.requests();
    let paths: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("PUT", "/latest/api/token"),
            ("GET", "/latest/meta-data/ram/security-credentials/"),
            (
                "GET",
                "/latest/meta-data/ram/security-credentials/renew-role"
            ),
        ]
    );
}

/// A metadata service in token-less (v1) mode only: the token endpoint is forbidden.
async fn v1_only_stub() -> Stub {
    Stub::start(
        |request: &Recorded, _| match (request.method.as_str(), request.path.as_str()) {
            ("PUT", _) => Reply::raw(403, "forbidden"),
            ("GET", "/latest/meta-data/ram/security-credentials/role-v1") => Reply::json(
                200,
                serde_json::json!({
            "AccessKeyId": "STS.V1", "AccessKeySecret": "v1-secret", "SecurityToken": "v1-token",
            "Expiration": "2099-01-01T00:00:00Z", "Code": "Success"}),
            ),
            _ => Reply::raw(404, ""),
        },
    )
    .await
}

#[tokio::test]
async fn without_a_token_the_v1_fallback_is_used_unless_disabled() {
    let imds = v1_only_stub().await;
    let mut config = CredentialsConfig {
        source: SourceKind::RamRole,
        metadata_url: imds.url(),
        ram_role_name: Some("role-v1".into()),
        ..CredentialsConfig::default()
    };
    let provider = resolve(&config, &Environment::default()).await.unwrap();
    assert_eq!(
        provider
            .credentials(fixed_now())
            .await
            .unwrap()
            .access_key_id,
        "STS.V1"
    );

    config.imdsv1_fallback = false;
    let error = resolve(&config, &Environment::default()).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the token-less fallback is disabled"),
        "{error}"
    );

    config.imdsv1_fallback = true;
    let env = Environment::from_pairs([("ALIBABA_CLOUD_IMDSV1_DISABLED", "true")]);
    assert!(resolve(&config, &env).await.is_err());
}

#[tokio::test]
async fn role_credentials_are_refreshed_before_they_expire() {
    let fetches = Arc::new(AtomicUsize::new(0));
    // Expires at 01:00; with the default 15-minute margin, a refresh is due from 00:45.
    let imds = metadata_stub("2026-01-01T01:00:00Z", fetches.clone()).await;
    let config = CredentialsConfig {
        source: SourceKind::RamRole,
        metadata_url: imds.url(),
        ..CredentialsConfig::default()
    };
    let provider = resolve(&config, &Environment::default()).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    let at = |h, m| Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).unwrap();
    provider.credentials(at(0, 30)).await.unwrap();
    provider.credentials(at(0, 44)).await.unwrap();
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "still fresh: served from the cache"
    );
    provider.credentials(at(0, 46)).await.unwrap();
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "within 15 min of expiry: fetched again"
    );
}

#[tokio::test]
async fn a_failed_refresh_keeps_using_credentials_that_still_work() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let imds =
        metadata_stub_with_outage("2026-01-01T01:00:00Z", fetches.clone(), down.clone()).await;
    let config = CredentialsConfig {
        source: SourceKind::RamRole,
        metadata_url: imds.url(),
        ..CredentialsConfig::default()
    };
    let provider = resolve(&config, &Environment::default()).await.unwrap();
    down.store(true, Ordering::SeqCst); // the metadata service fails from now on
    let at = |h, m| Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).unwrap();
    let cached = provider.credentials(at(0, 50)).await.unwrap();
    assert_eq!(cached.access_key_id, "STS.L4aBSCSJVMuKg5U1vFDw");
    // Within a minute of expiry they are no longer handed out.
    assert!(provider.credentials(at(0, 59)).await.is_err());
}

#[cfg(unix)]
#[tokio::test]
async fn key_files_and_cli_profiles_open_to_other_users_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Fixture::new();
    let path = fixture.path("keys/open.secret");
    write(&path, "open-secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = CredentialsConfig {
        access_key_id: Some("ID".into()),
        access_key_secret_file: Some(path.clone()),
        ..CredentialsConfig::default()
    };
    let error = resolve(&config, &Environment::default()).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "the AccessKey secret file {0} is open to other users (mode 0640), so ecs-renewd refuses to use it — run `chmod 600 {0}` (and check who may have read it)",
            path.display()
        )
    );
    // The same file in $CREDENTIALS_DIRECTORY (private to the service) is accepted.
    let private = Environment::from_pairs([(
        "CREDENTIALS_DIRECTORY",
        fixture.path("keys").display().to_string(),
    )]);
    assert_eq!(
        resolve(&config, &private).await.unwrap().fixed_key_id(),
        Some("ID")
    );

    // A security token file is held to the same rule.
    let token = fixture.path("keys/open.token");
    write(&token, "tok");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o604)).unwrap();
    let with_token = CredentialsConfig {
        access_key_id: Some("FILE_ID".into()),
        access_key_secret_file: Some(fixture.path("keys/main.secret")),
        security_token_file: Some(token.clone()),
        ..CredentialsConfig::default()
    };
    let error = resolve(&with_token, &Environment::default())
        .await
        .unwrap_err();
    assert!(
        error.to_string().starts_with(&format!(
            "the security token file {} is open to other users (mode 0604)",
            token.display()
        )),
        "{error}"
    );

    // The aliyun CLI profile holds secrets too.
    let profile = fixture.path("home/.aliyun/config.json");
    std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cli = CredentialsConfig {
        source: SourceKind::CliProfile,
        ..CredentialsConfig::default()
    };
    let home = Environment::from_pairs([("HOME", fixture.path("home").display().to_string())]);
    let error = resolve(&cli, &home).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "the aliyun CLI config file {0} is open to other users (mode 0644), so ecs-renewd refuses to use it — run `chmod 600 {0}` (and check who may have read it)",
            profile.display()
        )
    );
    std::fs::set_permissions(&profile, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        resolve(&cli, &home).await.unwrap().fixed_key_id(),
        Some("CLI_ID")
    );
}

#[tokio::test]
async fn the_v1_fallback_is_a_warning_for_the_operator() {
    let imds = v1_only_stub().await;
    let config = CredentialsConfig {
        source: SourceKind::RamRole,
        metadata_url: imds.url(),
        ram_role_name: Some("role-v1".into()),
        ..CredentialsConfig::default()
    };
    let logs = support::LogCapture::default();
    let guard = logs.install();
    let provider = resolve(&config, &Environment::default()).await.unwrap();
    drop(guard);
    assert_eq!(
        provider.warnings(),
        [format!(
            "the metadata service at {} gave no session token, so RAM role credentials are fetched without one (IMDSv1); set imdsv1_fallback = false once the instance enforces hardened mode",
            imds.url()
        )]
    );
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains(" WARN ") && l.contains("without one (IMDSv1)")),
        "{text}"
    );
    // In token mode there is no such warning.
    let fetches = Arc::new(AtomicUsize::new(0));
    let hardened = metadata_stub("2099-01-01T00:00:00Z", fetches).await;
    let config = CredentialsConfig {
        source: SourceKind::RamRole,
        metadata_url: hardened.url(),
        ..CredentialsConfig::default()
    };
    assert!(
        resolve(&config, &Environment::default())
            .await
            .unwrap()
            .warnings()
            .is_empty()
    );
}

#[tokio::test]
async fn a_failing_metadata_service_is_asked_again_only_after_a_growing_wait() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let imds =
        metadata_stub_with_outage("2026-01-01T01:00:00Z", fetches.clone(), down.clone()).await;
    let config = CredentialsConfig {
        source: SourceKind::RamRole,
        metadata_url: imds.url(),
        ..CredentialsConfig::default()
    };
    let provider = resolve(&config, &Environment::default()).await.unwrap();
    // Each attempt starts with a session-token request.
    let asked = || imds.requests().iter().filter(|r| r.method == "PUT").count();
    let before = asked();
    down.store(true, Ordering::SeqCst);
    // Past expiry: every call needs fresh credentials, and the service is down.
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 2, 0, 0).unwrap();
    let secs = |s| t0 + chrono::Duration::seconds(s);
    for _ in 0..20 {
        assert!(provider.credentials(t0).await.is_err());
    }
    assert_eq!(
        asked() - before,
        1,
        "one request for twenty calls in the first second"
    );
    assert!(provider.credentials(secs(1)).await.is_err());
    assert_eq!(asked() - before, 2, "asked again after 1 s");
    assert!(provider.credentials(secs(2)).await.is_err());
    assert_eq!(asked() - before, 2, "then waits 2 s");
    assert!(provider.credentials(secs(3)).await.is_err());
    assert_eq!(asked() - before, 3);
    // The wait never grows past a minute.
    let mut at = 3;
    for _ in 0..12 {
        at += 61;
        assert!(provider.credentials(secs(at)).await.is_err());
    }
    assert_eq!(asked() - before, 15);
    // Once the service is back, the next attempt after the wait succeeds.
    down.store(false, Ordering::SeqCst);
    assert!(provider.credentials(secs(at + 61)).await.is_ok());
    // A rejected credential (invalidate) is worth an attempt at once.
    provider.invalidate().await;
    down.store(true, Ordering::SeqCst);
    let n = asked();
    assert!(provider.credentials(secs(at + 62)).await.is_err());
    assert_eq!(asked(), n + 1);
}

#[tokio::test]
async fn a_redirect_from_the_metadata_service_is_not_followed() {
    let elsewhere = Stub::start(|_, _| Reply::raw(200, "role-elsewhere")).await;
    let location = format!(
        "{}/latest/meta-data/ram/security-credentials/",
        elsewhere.url()
    );
    let imds = Stub::start(move |request: &Recorded, _| match request.method.as_str() {
        "PUT" => Reply::raw(200, "tok-1"),
        _ => Reply::raw(307, "").header("location", &location),
    })
    .await;
    let config = CredentialsConfig {
        source: SourceKind::RamRole,
        metadata_url: imds.url(),
        ..CredentialsConfig::default()
    };
    let error = resolve(&config, &Environment::default()).await.unwrap_err();
    let host = elsewhere.url().trim_start_matches("http://").to_owned();
    let host = host.split(':').next().unwrap().to_owned();
    assert!(
        error.to_string().contains(&format!(
            "answered a redirect (HTTP 307 Temporary Redirect) to {host}, which is not followed"
        )),
        "{error}"
    );
    assert!(elsewhere.requests().is_empty());
}

#[test]
fn the_metadata_url_must_be_the_metadata_service() {
    use ecs_renewd::cloud::credentials::check_metadata_url;
    for ok in [
        "http://100.100.100.200",
        "http://100.100.100.200/",
        "http://169.254.169.254",
        "http://127.0.0.1:8080",
        "http://[::1]:9",
        "http://[fe80::1]",
    ] {
        assert_eq!(check_metadata_url(ok), Ok(()), "{ok}");
    }
    for (bad, why) in [
        ("https://100.100.100.200", "uses https://"),
        ("http://metadata.example.com", "not a host name"),
        (
            "http://10.0.0.1",
            "only 100.100.100.200, a link-local or a loopback",
        ),
        (
            "http://user:pw@100.100.100.200",
            "carries a user name or password",
        ),
        ("100.100.100.200", "is not a URL"),
    ] {
        let error = check_metadata_url(bad).unwrap_err();
        assert!(error.contains(why), "{bad}: {error}");
        assert!(!error.contains("pw"), "{bad}: {error}");
    }
}

#[tokio::test]
async fn secrets_never_appear_when_credentials_or_providers_are_formatted() {
    let fixture = Fixture::new();
    let provider = resolve(
        &fixture.file_config("http://127.0.0.1:1"),
        &Environment::default(),
    )
    .await
    .unwrap();
    let credentials = provider.credentials(fixed_now()).await.unwrap();
    for shown in [
        format!("{provider:?}"),
        format!("{credentials:?}"),
        format!("{credentials:#?}"),
        provider.origin().to_owned(),
    ] {
        assert!(!shown.contains("file-secret"), "{shown}");
    }
}

/// A credentials server: the five-field JSON with `token`, expiring at 01:00; counts GETs.
async fn uri_stub(token: &'static str, fetches: Arc<AtomicUsize>) -> Stub {
    Stub::start(move |request: &Recorded, _| {
        assert_eq!(request.method, "GET");
        fetches.fetch_add(1, Ordering::SeqCst);
        Reply::json(
            200,
            serde_json::json!({
                "Code": "Success",
                "AccessKeyId": "STS.uri",
                "AccessKeySecret": "uri-secret",
                "SecurityToken": token,
                "Expiration": "2026-01-01T01:00:00Z"
            }),
        )
    })
    .await
}

#[tokio::test]
async fn a_credentials_uri_is_read_and_refreshed_before_expiry_and_an_empty_token_is_none() {
    let at = |h, m| Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).unwrap();
    let fetches = Arc::new(AtomicUsize::new(0));
    let server = uri_stub("uri-token", fetches.clone()).await;
    let config = CredentialsConfig {
        source: SourceKind::Uri,
        credentials_uri: Some(format!("{}/creds?key=query-secret", server.url())),
        ..CredentialsConfig::default()
    };
    let provider = resolve(&config, &Environment::default()).await.unwrap();
    let origin = provider.origin();
    assert!(
        origin.contains("/creds") && !origin.contains("query-secret"),
        "{origin}"
    );
    let key = provider.credentials(at(0, 30)).await.unwrap();
    assert_eq!(key.access_key_id, "STS.uri");
    assert_eq!(key.security_token.unwrap().expose(), "uri-token");
    provider.credentials(at(0, 44)).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "fresh: held");
    provider.credentials(at(0, 46)).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "within 15 min of expiry");
    assert_eq!(
        server.requests()[0].path,
        "/creds",
        "the query is sent, the path kept"
    );

    // From the environment, as the official chain reads it; an empty token is none.
    let bare = uri_stub("", Arc::new(AtomicUsize::new(0))).await;
    let env = Environment::from_pairs([("ALIBABA_CLOUD_CREDENTIALS_URI", bare.url())]);
    let uri_only = CredentialsConfig {
        source: SourceKind::Uri,
        ..CredentialsConfig::default()
    };
    let provider = resolve(&uri_only, &env).await.unwrap();
    let key = provider.credentials(at(0, 30)).await.unwrap();
    assert!(key.security_token.is_none());
}

#[tokio::test]
async fn a_failing_credentials_uri_says_where_without_its_query_or_the_answer() {
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let server = Stub::start(|_: &Recorded, _| {
        Reply::json(
            200,
            serde_json::json!({"Code": "Failed", "AccessKeySecret": "leaked-secret"}),
        )
    })
    .await;
    let config = CredentialsConfig {
        source: SourceKind::Uri,
        credentials_uri: Some(format!("{}/creds?key=query-secret", server.url())),
        ..CredentialsConfig::default()
    };
    let provider = resolve(&config, &Environment::default()).await.unwrap();
    let error = provider.credentials(at).await.unwrap_err().to_string();
    assert!(
        error.contains("Code")
            && error.contains("/creds")
            && !error.contains("query-secret")
            && !error.contains("leaked-secret"),
        "{error}"
    );
    let absent = resolve(
        &CredentialsConfig {
            source: SourceKind::Uri,
            ..CredentialsConfig::default()
        },
        &Environment::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(absent.contains("ALIBABA_CLOUD_CREDENTIALS_URI"), "{absent}");
}
