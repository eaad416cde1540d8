#!/usr/bin/env bash
# A real Prometheus (Debian's package) with the shipped scrape config and alert rules, pointed at
# the daemon (target/debug/ecs-renewd run) running against the emulator. One instance's renewal
# is made to fail for lack of funds after Prometheus has scraped the funds-failure counter at 0.
# Asserts through Prometheus' HTTP API that the instance expiry series is there and that
# EcsRenewdRenewalFundsFailure is pending or firing, and that the funds forecast's
# EcsRenewdFundsShortBeforeDeduction fires for the account (its balance no longer covers the
# renewal still due). Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/live-lib.sh

deadline=${PROMETHEUS_IT_DEADLINE:-90}
alert=EcsRenewdRenewalFundsFailure
funds_alert=EcsRenewdFundsShortBeforeDeduction

if ! command -v prometheus >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends prometheus >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends prometheus >/dev/null; }
fi
py=python3
if [ -x target/ci-venv/bin/python ]; then py=target/ci-venv/bin/python; fi
"$py" -c 'import yaml' 2>/dev/null || { echo "PyYAML is missing: run .ci/check-deploy.sh first"; exit 1; }

start_emulator
start_daemon

# The shipped config, changed only where a test must: the target is this daemon's admin
# address, scrapes and rule evaluations every second, no Alertmanager; the rules file as shipped;
# the bearer token in the file the shipped scrape config names, beside the config.
prom_addr=127.0.0.1:$(free_port)
mkdir "$live_dir/prometheus" "$live_dir/tsdb"
cp deploy/prometheus/rules.yml "$live_dir/prometheus/rules.yml"
(umask 077 && printf '%s\n' "$live_token" >"$live_dir/prometheus/ecs-renewd.token")
"$py" - deploy/prometheus/prometheus.yml "$live_dir/prometheus/prometheus.yml" "$admin_addr" <<'PY'
import sys, yaml
source, target, admin = sys.argv[1:]
config = yaml.safe_load(open(source))
config["global"]["scrape_interval"] = "1s"
config["global"]["evaluation_interval"] = "1s"
config.pop("alerting", None)
jobs = [j for j in config["scrape_configs"] if j["job_name"] == "ecs-renewd"]
assert len(jobs) == 1, "deploy/prometheus/prometheus.yml: no single ecs-renewd job"
jobs[0]["static_configs"] = [{"targets": [admin]}]
assert jobs[0]["authorization"]["credentials_file"] == "ecs-renewd.token", jobs[0].get("authorization")
assert config["rule_files"] == ["rules.yml"], config["rule_files"]
yaml.safe_dump(config, open(target, "w"), sort_keys=False)
PY
promtool check config "$live_dir/prometheus/prometheus.yml" >/dev/null

: >"$live_dir/prometheus.log"
prometheus --config.file="$live_dir/prometheus/prometheus.yml" \
  --storage.tsdb.path="$live_dir/tsdb" --web.listen-address="$prom_addr" \
  >"$live_dir/prometheus.log" 2>&1 &
prom_pid=$!
live_pids+=("$prom_pid")

# query PROMQL: the API's JSON answer.
query() {
  curl -fsS -G "http://$prom_addr/api/v1/query" --data-urlencode "query=$1"
}
# value PROMQL: the first sample's value, or nothing.
value() {
  query "$1" | "$py" -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
prometheus_ready() {
  alive "$prom_pid" prometheus "$live_dir/prometheus.log"
  curl -fsS -o /dev/null "http://$prom_addr/-/ready" 2>/dev/null
}
start=$SECONDS
wait_until 30 "Prometheus to be ready" prometheus_ready

# increase() needs a sample from before the failure: wait for the counter's zero to be scraped.
funds_zero_scraped() {
  alive "$prom_pid" prometheus "$live_dir/prometheus.log"
  [ "$(value 'ecs_renewd_renewals_total{job="ecs-renewd",result="failed",class="funds"}')" = 0 ]
}
wait_until 30 "Prometheus to scrape the daemon" funds_zero_scraped

make_funds_failure

series=0
state=none
alert_state() { # an alert's state (default: the funds-failure alert) in /api/v1/alerts, or "none"
  curl -fsS "http://$prom_addr/api/v1/alerts" | "$py" -c '
import json, sys
alerts = [a for a in json.load(sys.stdin)["data"]["alerts"] if a["labels"]["alertname"] == sys.argv[1]]
states = {a["state"] for a in alerts}
print("firing" if "firing" in states else "pending" if "pending" in states else "none")' "${1:-$alert}"
}
asserted() {
  alive "$prom_pid" prometheus "$live_dir/prometheus.log"
  alive "$daemon_pid" daemon "$live_dir/daemon.log"
  series=$(value 'count(ecs_renewd_instance_expiration_timestamp_seconds{job="ecs-renewd"})')
  state=$(alert_state)
  [ "${series:-0}" -gt 0 ] && [ "$state" != none ]
}
if ! wait_until "$deadline" "the expiry series and $alert pending or firing" asserted; then
  echo "FAILED: instance expiry series: ${series:-0}, $alert: $state"
  echo "rule groups:"
  curl -fsS "http://$prom_addr/api/v1/rules" | head -c 3000
  echo
  tail -n 20 "$live_dir/prometheus.log"
  exit 1
fi

funds_state=none
forecast_short() {
  alive "$prom_pid" prometheus "$live_dir/prometheus.log"
  alive "$daemon_pid" daemon "$live_dir/daemon.log"
  funds_state=$(alert_state "$funds_alert")
  [ "$funds_state" = firing ]
}
if ! wait_until "$deadline" "$funds_alert firing" forecast_short; then
  echo "FAILED: $funds_alert: $funds_state"
  curl -fsS -G "http://$prom_addr/api/v1/query" \
    --data-urlencode 'query={__name__=~"ecs_renewd_(account_available_amount|upcoming_charges|funds_shortfall_timestamp_seconds)"}' | head -c 3000
  echo
  exit 1
fi

# The daemon refuses scrapes without the token, so the series above came with it.
code=$(curl -sS -o /dev/null -w '%{http_code}' "http://$admin_addr/metrics")
[ "$code" = 401 ] || { echo "GET /metrics without the bearer token answered $code, not 401"; exit 1; }
up=$(value 'up{job="ecs-renewd"}')
[ "$up" = 1 ] || { echo "up{job=\"ecs-renewd\"} is ${up:-absent}, not 1"; exit 1; }

echo "ok: Prometheus $(prometheus --version 2>&1 | sed -n '1s/^prometheus, version \([^ ]*\).*/\1/p') scraped $admin_addr with the shipped config and rules"
echo "    scraped with the bearer token from the shipped credentials_file (without it: 401)"
echo "    ecs_renewd_instance_expiration_timestamp_seconds: $series series"
echo "    $alert: $state, $funds_alert: $funds_state (after $((SECONDS - start)) s)"
echo "    all alerts:"
curl -fsS "http://$prom_addr/api/v1/alerts" | "$py" -c '
import json, sys
for a in sorted(json.load(sys.stdin)["data"]["alerts"], key=lambda a: a["labels"]["alertname"]):
    l = a["labels"]
    print(("      %s %s %s" % (l["alertname"], a["state"], l.get("instance_id", ""))).rstrip())'
