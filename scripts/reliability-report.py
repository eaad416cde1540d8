#!/usr/bin/env python3
"""Writes RELIABILITY.md from the figures the reliability tests leave in target/reliability/.

The figures are produced by the tests themselves, never typed in:
  soak-<variant>.json   tests/it/soak.rs, chaos soak (in process)
  kills-<variant>.json  tests/it/soak.rs, SIGKILL-and-restart run of the real binary
  bad-inputs-<group>.json  tests/it/bad_input.rs (config, credentials, ledger, api), every
                        bad input with its exact answer
  state-machine-<variant>.json  tests/money_safety/state_machine.rs, the model-based test
  fuzz-<variant>.log    the output of the fuzz run (`cargo test --test it fuzz:: ... | tee`)

Usage: python3 scripts/reliability-report.py [--variant long] [--out RELIABILITY.md]
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "target" / "reliability"
# The long fuzz run; its log is tee'd to target/reliability/fuzz-<variant>.log. A log may name
# another command in a "# command: ..." line.
FUZZ_COMMAND = (
    "ECS_RENEWD_FUZZ_CASES=200000 ECS_RENEWD_FUZZ_SEED=20261126 cargo test --release --test it fuzz::"
)

FAULT_WORDS = {
    "5xx": "HTTP 5xx answers (InternalError, ServiceUnavailable)",
    "reset": "connections reset before an answer",
    "timeout": "requests that hang past the read timeout",
    "throttling_burst": "Throttling bursts (HTTP 400 Throttling.User)",
    "commit_then_drop": "RenewInstance committed by the cloud, answer dropped",
    "malformed": "malformed response bodies",
    "balance_outage": "balance outages of one to four days (InvalidAccountStatus.NotEnoughBalance)",
    "region_down_1d": "a region unreachable for a day",
    "credentials_revoked": "access keys revoked (InvalidAccessKeyId.NotFound) then restored",
    "sts_rotations": "STS credential rotations on the RAM-role account",
}


def load(name):
    path = FIGURES / name
    if not path.exists():
        sys.exit(f"{path} is missing: run the command in RELIABILITY.md's header first")
    return json.loads(path.read_text())


def number(value):
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,}"


def soak_section(soak):
    lines = [
        "## Chaos soak",
        "",
        f"`{soak['command']}`",
        "",
        f"{number(soak['instances'])} instances in four regions and two accounts (one on "
        f"rotating RAM-role credentials), {soak['simulated_days']} simulated days, seed "
        f"{soak['seed']}. The reconcile engine and the emulator share a virtual clock; every "
        "fault below was injected at a seeded random moment.",
        "",
        "| fault | injected |",
        "|---|---:|",
    ]
    for kind, count in sorted(soak["faults_injected"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {FAULT_WORDS.get(kind, kind)} | {number(count)} |")
    passes = soak["passes"]
    lines += [
        "",
        "| outcome | figure |",
        "|---|---:|",
        f"| passes (ok / partial: a source down or a charge refused) | "
        f"{number(passes.get('ok', 0))} / {number(passes.get('partial', 0))} |",
        f"| renewal orders placed by the daemon | {number(soak['renewal_orders_by_the_daemon'])} |",
        f"| orders placed by the provider's own auto-renew | {number(soak['provider_auto_renew_orders'])} |",
        f"| orders in the emulator's order book | {number(soak['orders'])} |",
        f"| **double charges** (two orders for one instance and expiry) | **{soak['double_charges']}** |",
        f"| **lapses** (renew-policy instance expired while funds and region were up) | **{soak['lapses']}** |",
        f"| lapses excused by an injected outage | {soak['lapses_excused_by_outages']} |",
        f"| **orders without a ledger record** | **{soak['orders_without_ledger_record']}** |",
        f"| **ledger orders without a cloud order** | **{soak['ledger_orders_without_cloud_order']}** |",
        f"| failed or unknown attempts in the ledger / counted in metrics | "
        f"{number(soak['failed_or_unknown_attempts_in_ledger'])} / "
        f"{number(soak['failed_or_unknown_renewals_in_metrics'])} |",
        f"| API calls counted by the daemon / received by the emulator | "
        f"{number(soak['api_calls_counted_by_the_daemon'])} / "
        f"{number(soak['api_calls_received_by_the_emulator'])} |",
        "",
    ]
    return lines


def kills_section(kills, variant):
    return [
        "## SIGKILL and restart",
        "",
        f"`ECS_RENEWD_SOAK={variant} ECS_RENEWD_SOAK_SEED={kills['seed']} cargo test --release "
        "--test it soak:: -- --nocapture` (same run as the soak)",
        "",
        "The real binary (`ecs-renewd run`, a pass every second) renews against an emulator that "
        "answers RenewInstance only after 60 ms, so a kill often lands between the ledger intent "
        "and the recorded answer. Each run is killed with SIGKILL after a random 1-6 of its "
        "RenewInstance requests reached the emulator (or after 3 s when nothing is left to renew) "
        "and restarted on the same ledger; a last run finishes the work.",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| SIGKILLs | {kills['sigkills']} |",
        f"| SIGKILLs after the run had sent RenewInstance requests | "
        f"{kills['sigkills_after_a_renewal_was_sent']} |",
        f"| instances / instances renewed | {kills['instances']} / {kills['instances_renewed']} |",
        f"| RenewInstance calls (resends after restarts included) | {kills['renew_instance_calls']} |",
        f"| orders | {kills['orders']} |",
        f"| **double charges** | **{kills['double_charges']}** |",
        f"| **orders without a ledger record** | **{kills['orders_without_ledger_record']}** |",
        f"| **ledger orders without a cloud order** | **{kills['ledger_orders_without_cloud_order']}** |",
        "",
    ]


def bad_inputs_section(cases):
    lost = [c for c in cases if not c["nothing_lost"]]
    lines = [
        "## Bad inputs",
        "",
        "`cargo test --test it bad_input::`",
        "",
        f"{len(cases)} bad inputs — config files, credentials, ledger files, service answers, a "
        "permission revoked mid-run — each with the exact answer the operator gets. \"Nothing "
        "lost\" means: no panic, no charge without its ledger record, no half-written ledger row, "
        f"the previous state kept. Cases where something was lost: **{len(lost)}**.",
        "",
        "Three bugs these cases found are fixed and kept as tests in `tests/it/bad_input.rs`: a "
        "horizon, grace or renew_before of millions of weeks passed validation and panicked the "
        "pass (durations are now capped at a century); two quotes near i64::MAX cents overflowed "
        "the spend belt (implausible quotes now count as unpriced and totals saturate); an intent "
        "whose charge went through while the ledger could not record it was never settled once "
        "its instance left the window (open intents out of the window now get one look by id).",
        "",
        "| input | answer | nothing lost |",
        "|---|---|:-:|",
    ]
    for case in cases:
        answer = case["answer"].replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {case['case']} | {answer} | {'yes' if case['nothing_lost'] else '**no**'} |"
        )
    lines.append("")
    return lines


def state_machine_section(sm):
    lines = [
        "## State-machine test",
        "",
        f"`{sm['command']}`",
        "",
        "Random sequences of operations against the real engine, the daemon's wake-up rule and "
        "the emulator: time passing through hourly cron ticks and the retry wake-ups each pass "
        "asks for, every classified error code and every transport fault on every action of a "
        "pass, commit-then-drop, config reloads (period, policy, dry run, limits, a second entry "
        "for the same cloud account added, the first removed), balance changes, console "
        "renewals and auto-renew switches, releases, kills in the middle of a renewal and "
        "restarts. After every pass and every step: at most one order of ours per instance and "
        "expiry (and none before an earlier one showed), every order recorded and counted by the "
        "belts, no lapse of a due renew-policy instance after a calm pass, API calls and passes "
        "within what the cadence and the retries justify, balance reads within the rule of "
        "docs/how-it-works.md, retry passes never within the backoff floor, and the pass's funds "
        "forecast against the oracle (tests/it/oracle.rs): never covered while the oracle is "
        "short, the same charges after a quiet pass. Each case runs under one of the two "
        "readings of a refused ClientToken (the emulator's failed_tokens). A failure is shrunk "
        "to a minimal sequence.",
        "",
        "| figure | value |",
        "|---|---:|",
    ]
    for key, words in [
        ("cases", "cases"),
        ("max_steps", "steps per case, at most"),
        ("steps", "steps run"),
        ("passes", "passes"),
        ("retry_passes", "passes run for a retry alone"),
        ("api_calls", "API calls"),
        ("orders_of_ours", "orders placed by ecs-renewd"),
        ("faults_injected", "fault rules injected"),
        ("reloads", "config reloads"),
        ("restarts", "restarts"),
        ("kills_during_renewal", "kills during a renewal"),
        ("calm_pass_lapse_checks", "calm passes checked for lapses"),
        ("forecast_oracle_checks", "forecasts checked against the oracle"),
        ("quiet_forecast_oracle_checks", "of them after a quiet pass (charges compared)"),
        ("cases_replaying_failed_tokens", "cases whose provider replays a refused token"),
        ("seconds", "seconds"),
    ]:
        if key in sm:
            lines.append(f"| {words} | {number(sm[key])} |")
    lines += ["", f"Result: {'passed' if sm['passed'] else 'FAILED'}.", ""]
    return lines


def oracle_section(oracle):
    lines = [
        "## The funds forecast against the oracle",
        "",
        f"`{oracle['command']}`",
        "",
        "Random fleets (every policy action, RenewalStatus, both deduction schedules, period units, "
        "currencies, expiries around 08:00 and 18:00 UTC+8 and 16:00Z, balances, one region down) "
        "started in the emulator; `plan`'s forecast is compared with tests/it/oracle.rs, a model "
        "that shares no code with the forecast: with every source up the same charges and "
        "shortfall, and never covered while the oracle is short.",
        "",
        "| figure | value |",
        "|---|---:|",
    ]
    for key, words in [
        ("cases", "cases"),
        ("cases_with_charges", "cases with charges in the window"),
        ("oracle_charges", "charges the oracle expected"),
        ("provider_charges", "of them by the provider's auto-renew"),
        ("cases_short", "cases where the account is short"),
        ("cases_with_unpriced", "cases with an unpriced charge"),
        ("cases_with_a_source_down", "cases with a region down"),
        ("seconds", "seconds"),
    ]:
        if key in oracle:
            lines.append(f"| {words} | {number(oracle[key])} |")
    lines += ["", f"Result: {'passed' if oracle['passed'] else 'FAILED'}.", ""]
    return lines


def fuzz_section(log_text, variant):
    results = re.findall(r"^test (\S+) \.\.\. (ok|FAILED|ignored)$", log_text, re.M)
    summary = re.findall(r"^test result: .*$", log_text, re.M)
    command = re.search(r"^# command: (.*)$", log_text, re.M)
    lines = [
        "## Fuzzing",
        "",
        f"`{command.group(1) if command else FUZZ_COMMAND}`",
        "",
        "Property-based fuzzing (proptest) of config parsing, response decoding (types and the "
        "client end to end), the emulator's request parser and authentication, and signature "
        "verification: the case count of the command below for every property (the client's "
        "end-to-end property exchanges a quarter of it with a stub, at most 5,000). Two bugs it found — a duration sum past u64::MAX seconds panicking config "
        "parsing, and endless auto-renew paging on a lying TotalCount — are fixed and kept as "
        "regression tests.",
        "",
        "| property | result |",
        "|---|---|",
    ]
    for name, result in results:
        lines.append(f"| `{name}` | {result} |")
    lines += ["", *(f"`{line}`" for line in summary), ""]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="long")
    parser.add_argument("--out", default=str(ROOT / "RELIABILITY.md"))
    args = parser.parse_args()

    soak = load(f"soak-{args.variant}.json")
    kills = load(f"kills-{args.variant}.json")
    # One file per group of tests/it/bad_input.rs, joined in the table's order.
    bad = [
        case
        for group in ("config", "credentials", "ledger", "api")
        for case in load(f"bad-inputs-{group}.json")
    ]
    fuzz_log = FIGURES / f"fuzz-{args.variant}.log"
    sm_path = FIGURES / f"state-machine-{args.variant}.json"
    sm = json.loads(sm_path.read_text()) if sm_path.exists() else None
    oracle_path = FIGURES / f"forecast-oracle-{args.variant}.json"
    oracle = json.loads(oracle_path.read_text()) if oracle_path.exists() else None

    lines = [
        "# Reliability",
        "",
        "Generated by `python3 scripts/reliability-report.py` from the figures the tests write to "
        "`target/reliability/`; do not edit by hand. To reproduce:",
        "",
        "```sh",
        soak["command"],
        "cargo test --release --test it bad_input::",
        f"{FUZZ_COMMAND} 2>&1 | tee target/reliability/fuzz-{args.variant}.log",
        *([sm["command"]] if sm else []),
        *([oracle["command"]] if oracle else []),
        f"python3 scripts/reliability-report.py --variant {args.variant}",
        "```",
        "",
        "CI runs the smaller `ci` variant of the soak (2,000 instances, 60 days, 20 SIGKILLs), "
        "every bad input, 256 fuzz cases per property, 24 state-machine cases and 128 oracle "
        "cases on every push; "
        "the figures below come from the long variant.",
        "",
        "The two questions: **can this charge twice?** Double charges below: "
        f"{soak['double_charges'] + kills['double_charges']}. **Can an instance lapse without "
        f"anyone being told?** Lapses below: {soak['lapses']}; every failed or unknown attempt "
        "in the ledger is also counted in the metrics the alerts read.",
        "",
    ]
    lines += soak_section(soak)
    lines += kills_section(kills, args.variant)
    lines += bad_inputs_section(bad)
    if sm:
        lines += state_machine_section(sm)
    else:
        print(f"note: {sm_path} missing; the state-machine section is left out", file=sys.stderr)
    if oracle:
        lines += oracle_section(oracle)
    else:
        print(f"note: {oracle_path} missing; the oracle section is left out", file=sys.stderr)
    if fuzz_log.exists():
        lines += fuzz_section(fuzz_log.read_text(), args.variant)
    else:
        print(f"note: {fuzz_log} missing; the fuzzing section is left out", file=sys.stderr)
    Path(args.out).write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
