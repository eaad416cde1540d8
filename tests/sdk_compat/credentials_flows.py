"""The official credentials library (alibabacloud-credentials) gets STS keys from the emulator's
STS, and today's Tea SDK (alibabacloud-ecs20140526) renews with them: the RamRoleArn provider
(AssumeRole signed with the fleet account's AccessKey), the OIDC provider (AssumeRoleWithOIDC
with a token the emulator's RRSA issuer minted, read from a file as in a pod), and roles that do
not trust the caller refused with the emulator's codes, as the library surfaces them. Runs after
guide_flows.py and tea_flows.py on the same emulator and renews instances they left alone.

The STS endpoint: the providers set `protocol = 'https'` on their request
(alibabacloud_credentials/provider/ram_role_arn.py:134, oidc.py:121), but the documented
`sts_endpoint` option is used as the request's host, and Tea's TeaCore.compose_url
(Tea/core.py:124) uses a host that starts with "http://" or "https://" as the URL's start and
drops the protocol. So `sts_endpoint="http://127.0.0.1:PORT"` reaches the emulator over plain
HTTP without patching anything.

Usage: credentials_flows.py http://127.0.0.1:PORT
Exits non-zero (with a message) on the first thing that does not behave like STS and ECS.
"""
import json
import logging
import os
import re
import tempfile

from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_credentials.models import Config as CredentialConfig
from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import models as openapi

from emulator_control import BASE, ENDPOINT, KEY, SECRET, control, failer

REGION = "cn-beijing"
UID = "1234567890123456"  # fleet.toml's account "main"
RENEWER = "acs:ram::%s:role/sdk-renewer" % UID  # trusts the account's own key
RRSA_RENEWER = "acs:ram::%s:role/sdk-rrsa-renewer" % UID  # trusts the OIDC provider sdk-rrsa
UNTRUSTED = "acs:ram::%s:role/sdk-untrusted" % UID  # trusts an account id not in the fleet
fail = failer("CREDENTIALS SDK COMPAT")


def ram_role_arn(role_arn, session="sdk-compat-ramrolearn"):
    """The library's Credential client for RamRoleArn, STS pointed at the emulator."""
    return CredentialClient(
        CredentialConfig(
            type="ram_role_arn",
            access_key_id=KEY,
            access_key_secret=SECRET,
            role_arn=role_arn,
            role_session_name=session,
            sts_endpoint=BASE,  # "http://127.0.0.1:PORT": see the module's docstring
        )
    )


def oidc_role_arn(role_arn, provider_arn, token_file, session="sdk-compat-rrsa"):
    """The library's Credential client for OIDCRoleArn (RRSA), STS pointed at the emulator."""
    return CredentialClient(
        CredentialConfig(
            type="oidc_role_arn",
            role_arn=role_arn,
            oidc_provider_arn=provider_arn,
            oidc_token_file_path=token_file,
            role_session_name=session,
            sts_endpoint=BASE,
        )
    )


def ecs_client(credential):
    """A Tea ECS client that signs with whatever the Credential client holds (the docs' way)."""
    return EcsClient(
        openapi.Config(credential=credential, endpoint=ENDPOINT, protocol="http", region_id=REGION)
    )


def sts_calls(action):
    return control("/_emulator/calls")["by_action"].get(action, 0)


def untouched_instances():
    """Running instances of the expiring window that no earlier script renewed, soonest first."""
    renewed = {order["instance_id"] for order in control("/_emulator/orders")}
    return [
        i["id"]
        for i in sorted(control("/_emulator/instances"), key=lambda i: i["shown_expiry"])
        if i["id"] != "i-sdk-later" and i["id"] not in renewed and i["status"] == "Running"
    ]


def expiry_of(tea, instance_id):
    request = ecs.DescribeInstancesRequest(region_id=REGION, instance_ids=json.dumps([instance_id]))
    found = tea.describe_instances(request).body.instances.instance
    if len(found) != 1:
        fail("DescribeInstances of %s with the STS key found %d instances" % (instance_id, len(found)))
    return found[0].expired_time


def renew(tea, target, token):
    """Renews `target` for a month through `tea`; the expiry moves after the visibility delay."""
    before = expiry_of(tea, target)
    orders_before = len(control("/_emulator/orders"))
    request = ecs.RenewInstanceRequest(instance_id=target, period=1, period_unit="Month", client_token=token)
    order = tea.renew_instance(request).body.order_id
    control("/_emulator/clock", {"advance": "10s"})
    after = expiry_of(tea, target)
    if not after > before:
        fail("expiry of %s did not move: %s -> %s" % (target, before, after))
    if len(control("/_emulator/orders")) - orders_before != 1:
        fail("renewing %s did not make exactly one order" % target)
    return before, after, order


def sts_key(credential, kind):
    model = credential.get_credential()
    if not model.access_key_id.startswith("STS.") or not model.security_token:
        fail("%s gave no STS key: %r" % (kind, model.to_map()))
    if model.type != kind:
        fail("credential type %r, expected %r" % (model.type, kind))
    return model


def assume_role_then_renew(target):
    assumed = sts_calls("AssumeRole")
    credential = ram_role_arn(RENEWER)
    model = sts_key(credential, "ram_role_arn")
    print("RamRoleArn: STS key %s... for %s (provider %s)" % (model.access_key_id[:8], RENEWER, model.provider_name))
    before, after, order = renew(ecs_client(credential), target, "credentials-compat-ram-1")
    # The library caches the key until 15 minutes before its Expiration, so one AssumeRole
    # served the three ECS calls: the emulator's Expiration parsed as a time in the future.
    if sts_calls("AssumeRole") - assumed != 1:
        fail("%d AssumeRole calls for one key" % (sts_calls("AssumeRole") - assumed))
    print("renewed %s with the assumed role's key: %s -> %s, order %s (one AssumeRole)" % (target, before, after, order))


def mint_token_file(directory):
    minted = control(
        "/_emulator/oidc/token",
        {"provider": "sdk-rrsa", "subject": "system:serviceaccount:ecs-renewd:ecs-renewd", "valid_for": "1h"},
    )
    path = os.path.join(directory, "token")
    with open(path, "w") as out:
        out.write(minted["token"])
    return minted["provider_arn"], path


def oidc_then_renew(target, provider_arn, token_file):
    exchanged = sts_calls("AssumeRoleWithOIDC")
    credential = oidc_role_arn(RRSA_RENEWER, provider_arn, token_file)
    model = sts_key(credential, "oidc_role_arn")
    print("OIDCRoleArn: STS key %s... for %s via %s" % (model.access_key_id[:8], RRSA_RENEWER, provider_arn))
    before, after, order = renew(ecs_client(credential), target, "credentials-compat-rrsa-1")
    if sts_calls("AssumeRoleWithOIDC") - exchanged != 1:
        fail("%d AssumeRoleWithOIDC calls for one key" % (sts_calls("AssumeRoleWithOIDC") - exchanged))
    print("renewed %s with the RRSA key: %s -> %s, order %s (one AssumeRoleWithOIDC)" % (target, before, after, order))


def refused(credential, status, code, what):
    """The library raises CredentialException with STS's HTTP status and body in its message
    (its `code` is None: the code is only in the body)."""
    # The library logs every failed refresh to stderr, once per handler its modules added to
    # the "credentials" logger: noise for a refusal that is expected here.
    logging.getLogger("credentials").setLevel(logging.CRITICAL)
    try:
        model = credential.get_credential()
    except CredentialException as error:
        found = re.search(r"http_code: (\d+), result: (\{.*\})", error.message, re.S)
        if not found:
            fail("%s: the library said %r" % (what, error.message))
        body = json.loads(found.group(2))
        if int(found.group(1)) != status or body.get("Code") != code:
            fail("%s: HTTP %s %r, expected %d %s" % (what, found.group(1), body, status, code))
        print("%s refused: %d %s" % (what, status, code))
        return
    finally:
        logging.getLogger("credentials").setLevel(logging.INFO)
    fail("%s: got a key %s" % (what, model.access_key_id))


def main():
    targets = untouched_instances()
    if len(targets) < 2:
        fail("fewer than two instances left to renew: %r" % targets)
    assume_role_then_renew(targets[0])
    with tempfile.TemporaryDirectory() as directory:
        provider_arn, token_file = mint_token_file(directory)
        oidc_then_renew(targets[1], provider_arn, token_file)
        refused(oidc_role_arn(RENEWER, provider_arn, token_file), 401, "AuthenticationFail.NoPermission",
                "OIDC for a role not trusting the provider")
    refused(ram_role_arn(UNTRUSTED), 403, "NoPermission", "AssumeRole of a role not trusting the account")
    print("CREDENTIALS SDK COMPAT OK")


if __name__ == "__main__":
    main()
