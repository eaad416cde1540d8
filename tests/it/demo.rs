//! `ecs-renewd demo` runs from a fresh start and ends with a summary whose money invariants
//! hold: renewals made and verified, the lean account's shortfall forecast before its first
//! failure, funds failures retried after the top-up, no double charge, every order in the
//! ledger, and every instance that lapsed named with its policy and why.

use std::process::Command;

#[test]
fn the_demo_renews_retries_and_reports_without_double_charges() {
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ecs-renewd"))
        .args(["demo", "--seconds", "24", "--state-dir"])
        .arg(state.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("double charges (orders per instance and expiry cycle > 1): 0; orders without a ledger record: 0"), "{stdout}");
    assert!(
        stdout.contains("every one verified by its new expiry: true"),
        "{stdout}"
    );
    assert!(stdout.contains("account lean topped up"), "{stdout}");
    let renewed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("renewed by ecs-renewd: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(renewed >= 5, "{stdout}");
    assert!(
        stdout.contains("failure(s) for lack of funds before the top-up"),
        "{stdout}"
    );
    // The forecast warns right after the first pass, before any of lean's renewals fails
    // (its third is due two days in) and before the top-up.
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle));
    let warned = at("FUNDS SHORT: account lean").expect("the lean account's warning");
    assert_eq!(Some(warned), at("pass  1 ").map(|p| p + 1), "{stdout}");
    assert!(warned < at("account lean topped up").unwrap(), "{stdout}");
    assert!(
        stdout.contains("lapsed during the run (expired, not renewed): "),
        "{stdout}"
    );
    assert!(
        stdout.contains("db-auto: auto-renew cannot renew it in time: "),
        "{stdout}"
    );
    assert!(state.path().join("ledger.db").exists());
    // `history` shows the run's own (virtual, six hours a second) times: 24 s cover six days,
    // so the last charge is days after the real time now.
    use ecs_wire::clock::Clock as _;
    let ledger = ecs_renewd::ledger::Ledger::open_read_only(state.path())
        .unwrap()
        .expect("the demo's ledger");
    let latest = ledger
        .money_records(None)
        .unwrap()
        .iter()
        .map(|r| r.at)
        .max()
        .expect("charges in the history");
    assert!(
        latest > ecs_wire::clock::SystemClock.now() + chrono::Duration::days(2),
        "history times follow the run's clock: the latest is {latest}"
    );
}
