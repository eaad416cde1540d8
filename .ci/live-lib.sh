# shellcheck shell=bash
# Shared by .ci/check-live.sh and .ci/prometheus-it.sh (sourced, not run): the emulator with
# deploy/ci/fleet.toml and the real daemon (target/debug/ecs-renewd run) against it, on loopback,
# in a temporary directory that is removed on exit together with every process started here.
#
# Waiting is always bounded: poll a condition until it holds or a deadline passes, and give up
# early when a process we wait on has died.

live_bin=${LIVE_BIN:-target/debug/ecs-renewd}
live_fleet=deploy/ci/fleet.toml
live_key_id=LTAIcilive # deploy/ci/fleet.toml's AccessKey
live_key_secret=ci-live-secret
live_dir=$(mktemp -d)
live_pids=()
# The admin bearer token the daemon requires for /metrics and /status (as shipped configs do
# once the daemon listens beyond loopback).
live_token=ci-live-admin-token-0123456789abcdef

live_cleanup() {
  local pid
  for pid in "${live_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${live_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$live_dir"
}
trap live_cleanup EXIT

# wait_until SECONDS WHAT CMD...: run CMD every 0.2 s until it succeeds; fail after SECONDS.
wait_until() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      echo "timed out after ${limit} s waiting for $what" >&2
      return 1
    fi
    sleep 0.2
  done
}

# alive PID NAME LOG: fail (showing the log's tail) when the process has exited.
alive() {
  kill -0 "$1" 2>/dev/null && return 0
  echo "$2 exited early; last lines of $3:" >&2
  tail -n 20 "$3" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

emulator_listening() {
  alive "$emulator_pid" emulator "$live_dir/emulator.log"
  grep -q 'listening on http://' "$live_dir/emulator.out"
}

# start_emulator: sets emulator_url and emulator_pid.
start_emulator() {
  [ -x "$live_bin" ] || { echo "$live_bin is missing: run cargo build first" >&2; exit 1; }
  : >"$live_dir/emulator.out"
  "$live_bin" --log-format json emulator --listen 127.0.0.1:0 --fleet "$live_fleet" \
    >"$live_dir/emulator.out" 2>"$live_dir/emulator.log" &
  emulator_pid=$!
  live_pids+=("$emulator_pid")
  wait_until 30 "the emulator to listen" emulator_listening
  emulator_url=$(sed -n 's#.*listening on \(http://[^ ]*\) .*#\1#p' "$live_dir/emulator.out")
}

# admin_get PATH: GET an admin endpoint with the bearer token.
admin_get() {
  curl -fsS -H "Authorization: Bearer $live_token" "http://$admin_addr$1"
}

# passes_finished: how many passes the daemon has logged as finished.
passes_finished() {
  grep -c '"pass finished"' "$live_dir/daemon.log" || true
}

# passes_after N: whether more than N passes have finished (and the daemon still runs).
passes_after() {
  alive "$daemon_pid" daemon "$live_dir/daemon.log"
  (($(passes_finished) > $1))
}

# wait_for_pass AFTER: wait until more than AFTER passes have finished.
wait_for_pass() {
  wait_until 60 "pass $(($1 + 1)) to finish" passes_after "$1"
}

# start_daemon: writes the config, starts `ecs-renewd run`, waits for its first finished pass;
# sets admin_addr and daemon_pid.
start_daemon() {
  admin_addr=127.0.0.1:$(free_port)
  (umask 077 && printf '%s\n' "$live_token" >"$live_dir/admin.token")
  cat >"$live_dir/config.toml" <<EOF
[daemon]
schedule = "*/2 * * * * *"
jitter = "0s"
state_dir = "$live_dir/state"

[admin]
listen = "$admin_addr"
bearer_token_file = "$live_dir/admin.token"

[scan]
regions = ["cn-hangzhou"]

[retry]
verify_timeout = "10s"
verify_interval = "500ms"

[[accounts]]
name = "main"
endpoint = "$emulator_url"
[accounts.credentials]
source = "env"

[[policies]]
name = "renew-web"
action = "renew"
period = 1
period_unit = "Month"
renew_before = "7d"
[policies.match]
name = "web-*"
EOF
  : >"$live_dir/daemon.log"
  # The environment must not override the config (the container's variables, for instance).
  env -u ECS_RENEWD_STATE_DIR -u ECS_RENEWD_ADMIN_LISTEN -u ECS_RENEWD_CONFIG \
    ALIBABA_CLOUD_ACCESS_KEY_ID=$live_key_id ALIBABA_CLOUD_ACCESS_KEY_SECRET=$live_key_secret \
    RUST_LOG=info "$live_bin" --log-format json run --config "$live_dir/config.toml" \
    >/dev/null 2>"$live_dir/daemon.log" &
  daemon_pid=$!
  live_pids+=("$daemon_pid")
  wait_for_pass 0
}

funds_failed() {
  alive "$daemon_pid" daemon "$live_dir/daemon.log"
  grep '"renewal failed"' "$live_dir/daemon.log" | grep '"i-ci-poor"' | grep -q '"funds"'
}

# make_funds_failure: move i-ci-poor into the renewal window; the balance left after the first
# renewal cannot pay for it. Waits for the failure and for the pass that publishes it.
make_funds_failure() {
  local at
  at=$(date -u -d '+3 days' +%Y-%m-%dT%H:%M:%SZ)
  curl -fsS -o /dev/null -X POST -H 'content-type: application/json' \
    -d "{\"expires_at\": \"$at\"}" "$emulator_url/_emulator/instances/i-ci-poor"
  wait_until 60 "the renewal of i-ci-poor to fail for lack of funds" funds_failed
  wait_for_pass "$(passes_finished)"
}
