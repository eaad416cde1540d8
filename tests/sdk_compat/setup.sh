#!/usr/bin/env bash
# Creates the Python venv with the pinned official Alibaba Cloud SDKs (idempotent): the older
# aliyun-python-sdk (HMAC-SHA1 signature), today's Tea SDK (ACS3-HMAC-SHA256, "V3") and the
# official credentials library (alibabacloud-credentials: RamRoleArn and OIDC providers via STS).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${SDK_COMPAT_VENV:-$root/target/sdk-compat-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
pins=(aliyun-python-sdk-core==2.16.1 aliyun-python-sdk-ecs==4.24.83
  alibabacloud-ecs20140526==7.11.8 alibabacloud-tea-openapi==0.4.6
  alibabacloud-credentials==1.0.12)
# Installs when an import fails or an installed version is not its pin (alibabacloud-credentials
# also comes in as tea-openapi's dependency, at whatever version pip picked then).
check='
import sys
from importlib.metadata import version
import aliyunsdkcore, aliyunsdkecs, alibabacloud_ecs20140526, alibabacloud_credentials
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    assert version(name) == wanted, pin
'
"$venv/bin/python" -c "$check" "${pins[@]}" 2>/dev/null || \
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
