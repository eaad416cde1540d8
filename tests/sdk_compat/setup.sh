#!/usr/bin/env bash
# Creates the Python venv with the pinned official Alibaba Cloud SDKs (idempotent).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${SDK_COMPAT_VENV:-$root/target/sdk-compat-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import aliyunsdkcore, aliyunsdkecs' 2>/dev/null || \
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    aliyun-python-sdk-core==2.16.1 aliyun-python-sdk-ecs==4.24.83
