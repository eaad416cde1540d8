#!/usr/bin/env bash
# Creates the Python venv with the pinned official Alibaba Cloud SDKs (idempotent): the older
# aliyun-python-sdk (HMAC-SHA1 signature) and today's Tea SDK (ACS3-HMAC-SHA256, "V3").
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${SDK_COMPAT_VENV:-$root/target/sdk-compat-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c 'import aliyunsdkcore, aliyunsdkecs, alibabacloud_ecs20140526' 2>/dev/null || \
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    aliyun-python-sdk-core==2.16.1 aliyun-python-sdk-ecs==4.24.83 \
    alibabacloud-ecs20140526==7.11.8 alibabacloud-tea-openapi==0.4.6
