#!/usr/bin/env bash
# Runs the seed guide's flows with the official Alibaba Cloud Python SDKs (pinned versions),
# the older one (HMAC-SHA1) and today's Tea SDK (V3 signature), against the ecs-renewd emulator;
# then the official credentials library (RamRoleArn, OIDC) gets STS keys from the emulator's STS
# and the Tea SDK renews with them. Usage: tests/sdk_compat/run.sh [path/to/ecs-renewd]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=${1:-$root/target/debug/ecs-renewd}
venv=${SDK_COMPAT_VENV:-$root/target/sdk-compat-venv}

SDK_COMPAT_VENV=$venv bash "$here/setup.sh"

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
"$binary" --log-format text emulator --listen "127.0.0.1:$port" --fleet "$here/fleet.toml" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$log"' EXIT
# Wait for the emulator's ready line (a signal, not a fixed sleep), at most 30 s.
for _ in $(seq 300); do
  grep -q "ECS emulator listening" "$log" && break
  kill -0 $pid 2>/dev/null || { cat "$log"; echo "emulator exited"; exit 1; }
  sleep 0.1
done
grep -q "ECS emulator listening" "$log" || { cat "$log"; echo "emulator did not start"; exit 1; }
"$venv/bin/python" "$here/guide_flows.py" "http://127.0.0.1:$port"
"$venv/bin/python" "$here/tea_flows.py" "http://127.0.0.1:$port"
"$venv/bin/python" "$here/credentials_flows.py" "http://127.0.0.1:$port"
