//! The official Alibaba Cloud Python SDKs run the seed guide's flows against the emulator binary
//! with signature checking on: paging through the expiring window, a renewal with a ClientToken
//! sent twice for one order whose expiry moves after the delay, batch auto-renew, and a wrong
//! secret rejected. Twice: with the older SDK (aliyun-python-sdk-core 2.16.1,
//! aliyun-python-sdk-ecs 4.24.83, HMAC-SHA1) and with today's Tea SDK in its default mode
//! (alibabacloud-ecs20140526 7.11.8 on alibabacloud-tea-openapi 0.4.6, ACS3-HMAC-SHA256 "V3",
//! NextToken paging). Then the official credentials library (alibabacloud-credentials 1.0.12)
//! gets STS keys from the emulator's STS — RamRoleArn (AssumeRole signed with the account's
//! key) and OIDCRoleArn (AssumeRoleWithOIDC with an RRSA token file) — the Tea SDK renews an
//! instance with each, and roles that do not trust the caller are refused with STS's codes.
//! `tests/sdk_compat/setup.sh` (run by `.ci/run`) prepares the venv; the script prepares it
//! too when it is missing.

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
        output.status.success()
            && stdout.contains("TEA SDK COMPAT OK")
            && stdout.contains("CREDENTIALS SDK COMPAT OK"),
        "the SDK check failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for line in [
        "over 3 pages",
        "replay returned the same order",
        "auto-renew enabled for 5 instances",
        "wrong secret rejected",
        "with NextToken (V3 signature)",
        "wrong secret rejected: SignatureDoesNotMatch",
        "with the assumed role's key",
        "(one AssumeRole)",
        "with the RRSA key",
        "(one AssumeRoleWithOIDC)",
        "OIDC for a role not trusting the provider refused: 401 AuthenticationFail.NoPermission",
        "AssumeRole of a role not trusting the account refused: 403 NoPermission",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}
