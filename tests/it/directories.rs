//! A Resource Directory's members as accounts (`[[directories]]`), end to end against the
//! emulator's `ListAccounts` and STS: members renewed through the role assumed in each; a
//! member whose role is missing one alerted refusal while the others renew; members joining
//! and leaving picked up at `refresh` without a restart; a member also configured by hand
//! charged once; paging and the include/exclude filters; a listing that fails reported as the
//! directory's source while the members listed before are still managed; `check-config`
//! trying the directory and naming bad keys by file, line and key.

use std::time::Duration;

use ecs_emulator::settings::{AccountSpec, MemberSpec, RoleSpec};
use ecs_emulator::{FaultKind, FaultSpec};
use ecs_renewd::cloud::ErrorClass;
use ecs_wire::Action;

use crate::support::{Harness, harness_fleet, instance_spec};

const NOW: &str = "2026-03-10T04:00:00Z";
const RENEW_ALL: &str =
    "[[policies]]\nname = \"renew-all\"\naction = \"renew\"\nrenew_before = \"7d\"\n";
/// The harness's account ("main", the management account) has the emulator's first uid.
const MAIN_UID: &str = "1000000000000001";
const MEMBER_ROLE: &str = "ResourceDirectoryAccountAccessRole";

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

fn uid(n: usize) -> String {
    format!("{}", 2_000_000_000_000_000u64 + n as u64)
}

/// Member account `name` (uid `uid(n)`), with the member role trusting the management
/// account unless `role` is false.
fn member_account(name: &str, n: usize, role: bool) -> AccountSpec {
    AccountSpec {
        name: name.into(),
        balance: 1000.0,
        currency: "CNY".into(),
        access_keys: Vec::new(),
        uid: Some(uid(n)),
        roles: if role {
            vec![RoleSpec {
                name: MEMBER_ROLE.into(),
                trust: vec![MAIN_UID.into()],
                external_id: None,
                max_session: Some("12h".into()),
            }]
        } else {
            Vec::new()
        },
        members: Vec::new(),
    }
}

fn member(name: &str) -> MemberSpec {
    MemberSpec {
        account: name.into(),
        folder: None,
        status: None,
        display_name: None,
    }
}

/// "main" manages a directory listing `listed`; accounts a, b, c, d exist (c without the
/// member role), each with one instance due.
fn org_fleet(listed: &[&str]) -> ecs_emulator::EmulatorConfig {
    let mut instances = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let mut due = instance_spec(&format!("i-{name}"), "2026-03-13T16:00Z");
        due.account = Some(name.into());
        instances.push(due);
    }
    let mut fleet = harness_fleet(NOW, 1000.0, instances);
    for (n, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
        fleet.accounts.push(member_account(name, n, name != "c"));
    }
    fleet.accounts[0].members = listed.iter().map(|m| member(m)).collect();
    fleet
}

/// The `[[directories]]` entry over the emulator (`settings`: more keys of the entry).
fn directory(emulator: &ecs_emulator::EmulatorHandle, settings: &str) -> String {
    format!(
        "[[directories]]\nname = \"org\"\nendpoint = \"{}\"\nregions = [\"cn-hangzhou\"]\n{settings}[directories.credentials]\nsource = \"env\"\n[directories.rate_limit]\nper_second = 1000\nburst = 100\n{RENEW_ALL}",
        emulator.url()
    )
}

/// A harness whose config also has the directory.
async fn start(fleet: ecs_emulator::EmulatorConfig, settings: &str) -> Harness {
    let probe = Harness::start(fleet, "").await;
    let extra = directory(&probe.emulator, settings);
    drop(probe.engine);
    let engine = Harness::engine(&probe.emulator, &probe.clock, probe.state.path(), &extra).await;
    Harness { engine, ..probe }
}

fn renewed_instances(h: &Harness) -> Vec<String> {
    let mut ids: Vec<String> = h
        .emulator
        .orders()
        .iter()
        .filter(|o| o.kind == "renew")
        .map(|o| o.instance_id.clone())
        .collect();
    ids.sort();
    ids
}

fn calls(h: &Harness, action: &str) -> u64 {
    h.emulator
        .calls()
        .by_action
        .get(action)
        .copied()
        .unwrap_or(0)
}

/// The accounts whose instances the pass scanned (the directory's listing, a source of its
/// own, left out).
fn scanned_accounts(summary: &ecs_renewd::reconcile::PassSummary) -> Vec<String> {
    let mut names: Vec<String> = summary
        .source_results
        .iter()
        .filter(|s| s.region != "resourcemanager")
        .map(|s| s.account.clone())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn members_are_renewed_through_their_role_and_a_missing_role_is_one_alerted_refusal() {
    let h = start(org_fleet(&["a", "b", "c"]), "").await;
    let summary = h.pass().await;
    assert_eq!(renewed_instances(&h), ["i-a", "i-b"], "{summary:?}");
    for order in h.emulator.orders() {
        assert_eq!(
            order.account,
            order.instance_id.trim_start_matches("i-"),
            "charged to the member's own account"
        );
    }
    let refused = format!("org/{}", uid(2));
    let failed: Vec<_> = summary
        .source_results
        .iter()
        .filter(|s| s.error.is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{summary:?}");
    assert_eq!(failed[0].account, refused);
    assert_eq!(failed[0].failure_class, Some(ErrorClass::Permission));
    let error = failed[0].error.as_deref().unwrap();
    assert!(
        error.contains("EntityNotExist.Role") && error.contains(MEMBER_ROLE),
        "{error}"
    );
    assert_eq!(summary.result.as_str(), "partial", "not a failed pass");
    // The refusal is alerted through the source's health.
    let metrics = h.engine.metrics.render_registry();
    let down = format!("ecs_renewd_source_up{{account=\"{refused}\",region=\"cn-hangzhou\"}} 0");
    assert!(metrics.contains(&down), "{down} in\n{metrics}");
    assert_eq!(calls(&h, "ListAccounts"), 1);
    // One AssumeRole per member; the refused one is not asked again within the pause.
    assert_eq!(calls(&h, "AssumeRole"), 3);
    h.advance(minutes(1));
    h.pass().await;
    assert_eq!(calls(&h, "AssumeRole"), 3, "keys kept, the refusal stands");
    assert_eq!(calls(&h, "ListAccounts"), 1, "listed again only at refresh");
}

#[tokio::test]
async fn members_joining_and_leaving_are_picked_up_at_the_refresh_without_a_restart() {
    // Member keys last two hours, so a key is fetched again only for a member that joins.
    let h = start(
        org_fleet(&["a", "b"]),
        "refresh = \"1h\"\nduration = \"2h\"\n",
    )
    .await;
    let first = h.pass().await;
    let members = |ids: &[usize]| -> Vec<String> {
        let mut names: Vec<String> = ids.iter().map(|n| format!("org/{}", uid(*n))).collect();
        names.push("main".into());
        names.sort();
        names
    };
    assert_eq!(scanned_accounts(&first), members(&[0, 1]));
    assert_eq!(renewed_instances(&h), ["i-a", "i-b"]);
    // a leaves, d joins.
    h.emulator
        .with_world(|w| w.set_members("main", vec![member("b"), member("d")]))
        .unwrap();
    h.advance(minutes(30));
    let before_refresh = h.pass().await;
    assert_eq!(
        scanned_accounts(&before_refresh),
        members(&[0, 1]),
        "not listed again before the refresh"
    );
    assert_eq!(renewed_instances(&h), ["i-a", "i-b"]);
    h.advance(minutes(31));
    let after = h.pass().await;
    assert_eq!(scanned_accounts(&after), members(&[1, 3]), "{after:?}");
    assert_eq!(renewed_instances(&h), ["i-a", "i-b", "i-d"]);
    // What was kept of a is forgotten: its source's health and series, its status lines; no
    // alert stays on an account nobody manages.
    let gone = format!("org/{}", uid(0));
    assert_eq!(
        after.forgotten_sources,
        [(gone.clone(), "cn-hangzhou".to_owned())],
        "{after:?}"
    );
    let metrics = h.engine.metrics.render(&h.engine.ledger);
    assert!(
        !metrics.contains(&format!("account=\"{gone}\"")),
        "{metrics}"
    );
    let status = ecs_renewd::commands::status::report(&h.engine.ledger).unwrap();
    let status = serde_json::to_value(&status).unwrap();
    let shown = format!("{} {}", status["sources"], status["instances"]);
    assert!(
        !shown.contains(&gone) && !shown.contains("\"i-a\""),
        "{shown}"
    );
    assert!(
        h.engine
            .ledger
            .source_successes()
            .unwrap()
            .iter()
            .all(|s| s.account != gone)
    );
    assert_eq!(calls(&h, "ListAccounts"), 2);
    // b stayed: its key was kept (one AssumeRole for a, b and d each).
    assert_eq!(calls(&h, "AssumeRole"), 3);
}

#[tokio::test]
async fn a_member_also_configured_by_hand_is_charged_once() {
    let fleet = org_fleet(&["a", "b"]);
    let probe = Harness::start(fleet, "").await;
    let by_hand = format!(
        "[[accounts]]\nname = \"a-by-hand\"\nendpoint = \"{}\"\nregions = [\"cn-hangzhou\"]\n[accounts.credentials]\nsource = \"env\"\n[accounts.assume_role]\nrole_arn = \"acs:ram::{}:role/{MEMBER_ROLE}\"\n",
        probe.emulator.url(),
        uid(0)
    );
    let extra = format!("{by_hand}{}", directory(&probe.emulator, ""));
    drop(probe.engine);
    let engine = Harness::engine(&probe.emulator, &probe.clock, probe.state.path(), &extra).await;
    let h = Harness { engine, ..probe };
    let summary = h.pass().await;
    assert_eq!(renewed_instances(&h), ["i-a", "i-b"], "{summary:?}");
    assert_eq!(summary.duplicate_sources.len(), 1, "{summary:?}");
    h.advance(minutes(5));
    let again = h.pass().await;
    assert_eq!(again.renewed, 0, "{again:?}");
    assert_eq!(renewed_instances(&h), ["i-a", "i-b"]);
}

#[tokio::test]
async fn every_page_is_listed_and_include_and_exclude_pick_the_members() {
    let mut fleet = harness_fleet(NOW, 1000.0, Vec::new());
    let mut listed = Vec::new();
    for n in 0..130 {
        let name = format!("m{n:03}");
        fleet.accounts.push(member_account(&name, n, true));
        let mut spec = member(&name);
        if [7, 64, 121].contains(&n) {
            spec.folder = Some("fd-picked".into());
        }
        listed.push(spec);
    }
    // One member is being created: not an account yet.
    listed[64].status = Some("CreateVerifying".into());
    fleet.accounts[0].members = listed;
    let h = start(
        fleet,
        &format!(
            "include = [\"fd-picked\", \"{}\"]\nexclude = [\"{}\"]\n",
            uid(3),
            uid(7)
        ),
    )
    .await;
    let summary = h.pass().await;
    let mut expected = vec![
        "main".to_owned(),
        format!("org/{}", uid(3)),
        format!("org/{}", uid(121)),
    ];
    expected.sort();
    assert_eq!(scanned_accounts(&summary), expected, "{summary:?}");
    assert_eq!(calls(&h, "ListAccounts"), 2, "two pages of 100");
}

#[tokio::test]
async fn a_failed_listing_is_the_directorys_source_down_and_the_members_listed_before_stay() {
    let h = start(org_fleet(&["a", "b"]), "refresh = \"1h\"\n").await;
    h.pass().await;
    h.advance(minutes(61));
    h.emulator.add_fault(FaultSpec::next(
        Action::ListAccounts,
        10,
        FaultKind::Error {
            code: "ServiceUnavailable".into(),
            status: 503,
            message: None,
            retry_after_ms: None,
        },
    ));
    let summary = h.pass().await;
    let listing = summary
        .source_results
        .iter()
        .find(|s| s.account == "org" && s.region == "resourcemanager")
        .unwrap_or_else(|| panic!("{summary:?}"));
    assert!(
        listing
            .error
            .as_deref()
            .unwrap()
            .contains("ServiceUnavailable"),
        "{listing:?}"
    );
    let members_scanned = summary
        .source_results
        .iter()
        .filter(|s| s.account.starts_with("org/") && s.error.is_none())
        .count();
    assert_eq!(members_scanned, 2, "{summary:?}");
    assert_eq!(summary.result.as_str(), "partial");
    let metrics = h.engine.metrics.render_registry();
    assert!(
        metrics.contains("ecs_renewd_source_up{account=\"org\",region=\"resourcemanager\"} 0"),
        "{metrics}"
    );
    // The next good listing brings the source up again.
    while h.emulator.pending_faults() > 0 {
        h.advance(minutes(1));
        h.pass().await;
    }
    h.advance(minutes(1));
    let recovered = h.pass().await;
    assert_eq!(recovered.result.as_str(), "ok", "{recovered:?}");
    let metrics = h.engine.metrics.render_registry();
    assert!(
        metrics.contains("ecs_renewd_source_up{account=\"org\",region=\"resourcemanager\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn check_config_lists_the_directory_tries_each_member_role_and_names_a_refused_listing() {
    let mut fleet = org_fleet(&["a", "c"]);
    // check-config signs with the wall clock: the emulator runs on it too.
    fleet.settings.clock_start = None;
    fleet.settings.clock_speed = 1.0;
    let emulator = ecs_emulator::start(fleet, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n[[directories]]\nname = \"org\"\nendpoint = \"{}\"\nregions = [\"cn-hangzhou\"]\n[directories.credentials]\nsource = \"env\"\n{RENEW_ALL}",
            dir.path().display(),
            emulator.url(),
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    ecs_renewd::commands::check_config::run(&path, &Harness::env(), &mut out)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8(out).unwrap();
    let (a, c) = (format!("org/{}", uid(0)), format!("org/{}", uid(2)));
    assert!(
        text.contains(&format!(
            "directory org: 2 member(s) listed, 2 managed with role {MEMBER_ROLE}: {a}, {c}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("directories[0]: {c}: its role cannot be assumed"))
            && text.contains("EntityNotExist.Role"),
        "{text}"
    );
    // The directory is gone: the listing is refused, named at the entry.
    emulator.with_world(|w| {
        w.set_members("main", Vec::new()).unwrap();
    });
    let mut out = Vec::new();
    let failure = ecs_renewd::commands::check_config::run(&path, &Harness::env(), &mut out)
        .await
        .expect_err("no directory to list");
    let text = failure.to_string();
    assert!(
        text.contains(&format!("{}:4:", path.display()))
            && text.contains("directories[0]")
            && text.contains("EntityNotExists.ResourceDirectory"),
        "{text}"
    );
}

#[test]
fn bad_directory_keys_are_named_by_file_line_and_key() {
    let text = "[[directories]]\nname = \"org/x\"\nrole_name = \"no spaces allowed\"\nsession_name = \"x\"\nduration = \"5m\"\ninclude = [\"folder-1\"]\nrefresh = \"10s\"\nresource_manager_endpoint = \"http://rm.example.com\"\n[directories.credentials]\nsource = \"env\"\n";
    let env = Harness::env();
    let error = ecs_renewd::config::Config::parse(text, std::path::Path::new("d.toml"), &env)
        .expect_err("every key is wrong");
    let shown = error.to_string();
    for needed in [
        "d.toml:2:8: directories[0].name",
        "d.toml:3:13: directories[0].role_name",
        "d.toml:4:16: directories[0].session_name",
        "d.toml:5:12: directories[0].duration",
        "d.toml:6:11: directories[0].include",
        "d.toml:7:11: directories[0].refresh",
        "d.toml:8:29: directories[0].resource_manager_endpoint",
    ] {
        assert!(shown.contains(needed), "{needed:?} in\n{shown}");
    }
}

/// A directory whose management credentials cannot be had is named as the directory it is.
#[tokio::test]
async fn a_directory_without_usable_credentials_is_named_by_its_own_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n[[directories]]\nname = \"org\"\n[directories.credentials]\nsource = \"file\"\naccess_key_id = \"LTAIx\"\naccess_key_secret_file = \"{}\"\n",
            dir.path().display(),
            dir.path().join("missing").display()
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    let failure = ecs_renewd::commands::check_config::run(
        &path,
        &ecs_renewd::cloud::credentials::Environment::from_pairs(Vec::<(String, String)>::new()),
        &mut out,
    )
    .await
    .expect_err("no credentials");
    let text = failure.to_string();
    assert!(
        text.contains(&format!(
            "{}:4:8: directories[0].credentials: directory \"org\" has no usable credentials",
            path.display()
        )),
        "{text}"
    );
}
