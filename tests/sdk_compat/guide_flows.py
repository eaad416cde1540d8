"""The seed guide's flows, run with the official Alibaba Cloud Python SDK against the emulator.

Usage: guide_flows.py http://127.0.0.1:PORT
Exits non-zero (with a message) on the first thing that does not behave like ECS.
"""
import datetime
import json

from aliyunsdkcore.acs_exception.exceptions import ClientException, ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkecs.request.v20140526.DescribeInstanceAutoRenewAttributeRequest import (
    DescribeInstanceAutoRenewAttributeRequest,
)
from aliyunsdkecs.request.v20140526.DescribeInstancesRequest import DescribeInstancesRequest
from aliyunsdkecs.request.v20140526.ModifyInstanceAutoRenewAttributeRequest import (
    ModifyInstanceAutoRenewAttributeRequest,
)
from aliyunsdkecs.request.v20140526.RenewInstanceRequest import RenewInstanceRequest

from emulator_control import ENDPOINT, KEY, SECRET, control, failer

fail = failer("SDK COMPAT")


def send(client, request):
    request.set_endpoint(ENDPOINT)
    request.set_accept_format("json")
    return json.loads(client.do_action_with_exception(request))


def window():
    now = datetime.datetime.now(datetime.timezone.utc)
    start = (now - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%MZ")
    end = (now + datetime.timedelta(days=8)).strftime("%Y-%m-%dT%H:%MZ")
    return start, end


def describe_need_renew_instance(client, page_size=10, page_number=1, instance_id=None, check_need_renew=True):
    request = DescribeInstancesRequest()
    if check_need_renew:
        start, end = window()
        request.set_Filter3Key("ExpiredStartTime")
        request.set_Filter3Value(start)
        request.set_Filter4Key("ExpiredEndTime")
        request.set_Filter4Value(end)
    if instance_id is not None:
        request.set_InstanceIds(json.dumps([instance_id]))
    request.set_PageNumber(page_number)
    request.set_PageSize(page_size)
    return send(client, request)


def main():
    client = AcsClient(KEY, SECRET, "cn-beijing")

    # 1. The expiring window, page by page, as the guide's renew_job does.
    seen, page = [], 1
    while True:
        response = describe_need_renew_instance(client, page_number=page)
        batch = response["Instances"]["Instance"]
        if response["TotalCount"] != 25:
            fail("TotalCount %r, expected 25" % response["TotalCount"])
        seen += [i["InstanceId"] for i in batch]
        if len(batch) < 10:
            break
        page += 1
    if page != 3 or len(seen) != 25 or len(set(seen)) != 25 or "i-sdk-later" in seen:
        fail("paging: %d pages, %d instances %r" % (page, len(seen), seen))
    print("listed %d expiring instances over %d pages" % (len(seen), page))

    # 2. Renew one with a ClientToken; the expiry moves after the delay.
    target = seen[0]
    before = describe_need_renew_instance(client, instance_id=target, check_need_renew=False)["Instances"]["Instance"][0]["ExpiredTime"]
    renew = RenewInstanceRequest()
    renew.set_InstanceId(target)
    renew.set_Period(1)
    renew.set_PeriodUnit("Month")
    renew.set_ClientToken("sdk-compat-token-1")
    order = send(client, renew)["OrderId"]
    again = send(client, renew)["OrderId"]
    if order != again:
        fail("ClientToken replay gave order %s then %s" % (order, again))
    still = describe_need_renew_instance(client, instance_id=target, check_need_renew=False)["Instances"]["Instance"][0]["ExpiredTime"]
    if still != before:
        fail("the new expiry showed before the delay")
    control("/_emulator/clock", {"advance": "10s"})
    after = describe_need_renew_instance(client, instance_id=target, check_need_renew=False)["Instances"]["Instance"][0]["ExpiredTime"]
    if not after > before:
        fail("expiry did not move: %s -> %s" % (before, after))
    orders = control("/_emulator/orders")
    if len(orders) != 1:
        fail("%d orders after one renewal and a replay" % len(orders))
    print("renewed %s: %s -> %s, order %s (replay returned the same order)" % (target, before, after, order))

    # 3. Auto-renew for a batch: read, set, read back (the guide's setting_instance_auto_renew).
    ids = ",".join(seen[1:6])
    describe = DescribeInstanceAutoRenewAttributeRequest()
    describe.set_InstanceId(ids)
    attrs = send(client, describe)["InstanceRenewAttributes"]["InstanceRenewAttribute"]
    if any(a["AutoRenewEnabled"] for a in attrs) or len(attrs) != 5:
        fail("unexpected auto-renew state before: %r" % attrs)
    modify = ModifyInstanceAutoRenewAttributeRequest()
    modify.set_InstanceId(ids)
    modify.set_Duration(1)
    modify.set_AutoRenew(True)
    send(client, modify)
    attrs = send(client, describe)["InstanceRenewAttributes"]["InstanceRenewAttribute"]
    if not all(a["AutoRenewEnabled"] and a["Duration"] == 1 for a in attrs):
        fail("auto-renew not set: %r" % attrs)
    print("auto-renew enabled for %d instances" % len(attrs))

    # 4. Signature checking is on: a wrong secret is rejected.
    wrong = AcsClient(KEY, "not-the-secret", "cn-beijing")
    try:
        send(wrong, DescribeInstancesRequest())
        fail("a request signed with the wrong secret was accepted")
    except (ServerException, ClientException) as error:
        code = error.get_error_code()
        if code not in ("SignatureDoesNotMatch", "InvalidAccessKeySecret"):
            fail("wrong secret gave %s, expected SignatureDoesNotMatch" % code)
        print("wrong secret rejected: %s" % code)

    print("SDK COMPAT OK")


if __name__ == "__main__":
    main()
