"""The seed guide's flows with today's official SDK (Tea: alibabacloud-ecs20140526 on
alibabacloud-tea-openapi), which signs with ACS3-HMAC-SHA256 ("V3") by default, against the
emulator. guide_flows.py runs the same flows with the older SDK (HMAC-SHA1); this script runs
after it on the same emulator, so it renews and switches instances that one leaves alone.

Usage: tea_flows.py http://127.0.0.1:PORT
Exits non-zero (with a message) on the first thing that does not behave like ECS.
"""
import datetime
import json

from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_ecs20140526.client import Client
from alibabacloud_tea_openapi import models as openapi

from emulator_control import ENDPOINT, KEY, SECRET, control, failer

REGION = "cn-beijing"
fail = failer("TEA SDK COMPAT")


def client(secret=SECRET):
    config = openapi.Config(
        access_key_id=KEY,
        access_key_secret=secret,
        endpoint=ENDPOINT,
        protocol="http",
        region_id=REGION,
    )
    return Client(config)


def window():
    now = datetime.datetime.now(datetime.timezone.utc)
    start = (now - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%MZ")
    end = (now + datetime.timedelta(days=8)).strftime("%Y-%m-%dT%H:%MZ")
    return start, end


def expiring(tea, next_token=None):
    """One page of the expiry window in NextToken mode (the SDK's current paging)."""
    start, end = window()
    request = ecs.DescribeInstancesRequest(
        region_id=REGION,
        filter=[
            ecs.DescribeInstancesRequestFilter(key="ExpiredStartTime", value=start),
            ecs.DescribeInstancesRequestFilter(key="ExpiredEndTime", value=end),
        ],
        max_results=10,
        next_token=next_token,
    )
    return tea.describe_instances(request).body


def expiry_of(tea, instance_id):
    request = ecs.DescribeInstancesRequest(region_id=REGION, instance_ids=json.dumps([instance_id]))
    return tea.describe_instances(request).body.instances.instance[0].expired_time


def list_window(tea):
    seen, pages, token = [], 0, None
    while True:
        body = expiring(tea, token)
        pages += 1
        seen += [i.instance_id for i in body.instances.instance]
        token = body.next_token
        if not token:
            break
        if pages > 10:
            fail("NextToken paging does not end")
    # guide_flows.py renewed one out of the window; the emulator says which remain in it.
    start, end = (datetime.datetime.fromisoformat(t.replace("Z", ":00+00:00")) for t in window())
    expected = sorted(
        i["id"]
        for i in control("/_emulator/instances")
        if start <= datetime.datetime.fromisoformat(i["shown_expiry"].replace("Z", "+00:00")) <= end
    )
    if pages != -(-len(expected) // 10) or sorted(seen) != expected or len(set(seen)) != len(seen):
        fail("paging: %d pages, %r, expected %r" % (pages, seen, expected))
    print("listed %d expiring instances over %d pages with NextToken (V3 signature)" % (len(seen), pages))
    return seen


def renew_twice(tea, target):
    before = expiry_of(tea, target)
    orders_before = len(control("/_emulator/orders"))
    request = ecs.RenewInstanceRequest(
        instance_id=target, period=1, period_unit="Month", client_token="tea-compat-token-1"
    )
    order = tea.renew_instance(request).body.order_id
    again = tea.renew_instance(request).body.order_id
    if order != again:
        fail("ClientToken replay gave order %s then %s" % (order, again))
    control("/_emulator/clock", {"advance": "10s"})
    after = expiry_of(tea, target)
    if not after > before:
        fail("expiry did not move: %s -> %s" % (before, after))
    new_orders = len(control("/_emulator/orders")) - orders_before
    if new_orders != 1:
        fail("%d orders after one renewal and a replay" % new_orders)
    print("renewed %s: %s -> %s, order %s (replay returned the same order)" % (target, before, after, order))


def auto_renew(tea, ids):
    joined = ",".join(ids)
    describe = ecs.DescribeInstanceAutoRenewAttributeRequest(region_id=REGION, instance_id=joined)
    attrs = tea.describe_instance_auto_renew_attribute(describe).body.instance_renew_attributes.instance_renew_attribute
    if len(attrs) != len(ids) or any(a.auto_renew_enabled for a in attrs):
        fail("unexpected auto-renew state before: %r" % [a.to_map() for a in attrs])
    modify = ecs.ModifyInstanceAutoRenewAttributeRequest(
        region_id=REGION, instance_id=joined, duration=1, auto_renew=True
    )
    tea.modify_instance_auto_renew_attribute(modify)
    attrs = tea.describe_instance_auto_renew_attribute(describe).body.instance_renew_attributes.instance_renew_attribute
    if not all(a.auto_renew_enabled and a.duration == 1 for a in attrs):
        fail("auto-renew not set: %r" % [a.to_map() for a in attrs])
    print("auto-renew enabled for %d instances" % len(attrs))


def wrong_secret_is_rejected():
    try:
        client("not-the-secret").describe_instances(ecs.DescribeInstancesRequest(region_id=REGION))
    except Exception as error:  # the SDK's ClientException/ServerException, by version
        code = getattr(error, "code", None)
        if code != "SignatureDoesNotMatch":
            fail("wrong secret gave %r (%s), expected SignatureDoesNotMatch" % (code, error))
        print("wrong secret rejected: %s" % code)
        return
    fail("a request signed with the wrong secret was accepted")


def main():
    tea = client()
    seen = list_window(tea)
    # guide_flows.py renewed seen[0] and switched seen[1:6]; these are untouched.
    renew_twice(tea, seen[-1])
    auto_renew(tea, seen[-6:-1])
    wrong_secret_is_rejected()
    print("TEA SDK COMPAT OK")


if __name__ == "__main__":
    main()
