//! `ecs-renewd demo` runs from a fresh start and ends with a summary whose money invariants
//! hold: renewals made and verified, funds failures retried after the top-up, no double charge,
//! every order in the ledger.

use std::process::Command;

#[test]
fn the_demo_renews_retries_and_reports_without_double_charges() {
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ecs-renewd"))
        .args(["demo", "--seconds", "16", "--state-dir"])
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
    assert!(state.path().join("ledger.db").exists());
}
