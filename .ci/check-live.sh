#!/usr/bin/env bash
# promtool check metrics on the live /metrics of the daemon (target/debug/ecs-renewd run) against
# the emulator, after one instance was renewed and another failed for lack of funds, so the
# failing series are part of what is checked. Needs promtool (.ci/check-deploy.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/live-lib.sh

command -v promtool >/dev/null || { echo "promtool is missing (apt-get install prometheus)"; exit 1; }

start_emulator
start_daemon
make_funds_failure

# Without the token: 401; with it, the exposition.
code=$(curl -sS -o /dev/null -w '%{http_code}' "http://$admin_addr/metrics")
[ "$code" = 401 ] || { echo "GET /metrics without the bearer token answered $code, not 401"; exit 1; }
admin_get /metrics >"$live_dir/metrics.txt"
# promtool exits non-zero on a problem; any output at all is also a failure.
if ! problems=$(promtool check metrics <"$live_dir/metrics.txt" 2>&1) || [ -n "$problems" ]; then
  echo "promtool check metrics found problems:"
  echo "$problems"
  exit 1
fi

# The series this check is about must actually be there.
need() { # SERIES_PREFIX WHAT
  grep -qF "$1" "$live_dir/metrics.txt" || { echo "missing from /metrics: $2 ($1)"; missing=1; }
}
missing=0
need 'ecs_renewd_instance_expiration_timestamp_seconds{' "per-instance expiry gauges"
need 'ecs_renewd_instance_state{' "per-instance state"
need 'instance_id="i-ci-poor"' "the failing instance"
need 'ecs_renewd_instance_failed_attempts{' "failed attempts of the failing instance"
need 'state="excluded"' "the skip-tagged instance"
grep -qE '^ecs_renewd_renewals_total\{[^}]*class="funds"[^}]*result="failed"[^}]*\} [1-9]' "$live_dir/metrics.txt" ||
  { echo 'missing from /metrics: ecs_renewd_renewals_total{result="failed",class="funds"} >= 1'; missing=1; }
[ "$missing" = 0 ] || exit 1

families=$(grep -c '^# TYPE ecs_renewd_' "$live_dir/metrics.txt")
samples=$(grep -c '^ecs_renewd_' "$live_dir/metrics.txt")
expiries=$(grep -c '^ecs_renewd_instance_expiration_timestamp_seconds{' "$live_dir/metrics.txt")
echo "ok: promtool check metrics: no problems in the live /metrics of $admin_addr after $(passes_finished) passes"
echo "    $families ecs_renewd_ families, $samples ecs_renewd_ samples, $expiries instance expiry series"
grep -E '^ecs_renewd_(renewals_total\{.*\} [1-9]|instance_failed_attempts|instance_state\{.*(failed|backoff|excluded))' "$live_dir/metrics.txt" |
  sed 's/^/    /'
