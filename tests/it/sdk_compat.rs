//! The official Alibaba Cloud Python SDK (aliyun-python-sdk-core 2.16.1, aliyun-python-sdk-ecs
//! 4.24.83) runs the seed guide's flows against the emulator binary with signature checking on:
//! paging through the expiring window, a renewal with a ClientToken whose expiry moves after the
//! delay, batch auto-renew, and a wrong secret rejected. `tests/sdk_compat/setup.sh` (run by
//! `.ci/run`) prepares the venv; the script prepares it too when it is missing.

use std::process::Command;

#[test]
fn the_official_python_sdk_runs_the_guide_flows_against_the_emulator() {
    let binary = env!("CARGO_BIN_EXE_ecs-renewd");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_compat/run.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(binary)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("SDK COMPAT OK"),
        "the SDK check failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for line in [
        "over 3 pages",
        "replay returned the same order",
        "auto-renew enabled for 5 instances",
        "wrong secret rejected",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}
