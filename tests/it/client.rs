//! The ECS client against a scripted loopback stub: signing on the wire, paging, batching,
//! retries (what, how often, with which nonce), throttling advice, decode errors, redaction.

use crate::support;

use std::time::Duration;

use ecs_renewd::cloud::{AutoRenewTarget, ClientToken, InstanceQuery};
use ecs_renewd::cloud::{CloudError, ErrorClass};
use ecs_wire::Action;
use ecs_wire::secret::Secret;
use ecs_wire::signer;
use ecs_wire::time;
use ecs_wire::types::{PeriodUnit, RenewalStatus};
use serde_json::json;
use support::{LogCapture, Recorded, Reply, Stub, TEST_SECRET, TEST_TOKEN, client_for, fast_retry};

/// Whether the stub received a correctly signed request.
fn signature_ok(request: &Recorded) -> bool {
    let signature = request.param("Signature").unwrap_or_default();
    let expected = signer::sign(
        &request.method,
        request.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &Secret::new(TEST_SECRET),
    );
    expected.signature == signature
}

fn instance(id: &str) -> serde_json::Value {
    json!({"InstanceId": id, "InstanceName": id, "RegionId": "cn-beijing", "ZoneId": "cn-beijing-a",
           "Status": "Running", "InstanceChargeType": "PrePaid", "ExpiredTime": "2026-12-05T16:00Z",
           "InstanceType": "ecs.g6.large", "OperationLocks": {"LockReason": []}})
}

#[tokio::test]
async fn paging_follows_next_token_across_three_pages() {
    let stub = Stub::start(|request, _| {
        assert!(signature_ok(request), "bad signature");
        let (ids, next) = match request.param("NextToken") {
            None => (vec!["i-1", "i-2"], "page-2"),
            Some("page-2") => (vec!["i-3", "i-4"], "page-3"),
            Some("page-3") => (vec!["i-5"], ""),
            Some(other) => panic!("unexpected token {other}"),
        };
        Reply::json(
            200,
            json!({
            "RequestId": "R", "TotalCount": 5, "NextToken": next,
            "Instances": {"Instance": ids.into_iter().map(instance).collect::<Vec<_>>()}}),
        )
    })
    .await;
    let client = client_for(&stub.url(), fast_retry(1));
    let start = time::parse("2026-12-01T00:00Z").unwrap();
    let end = time::parse("2026-12-31T00:00Z").unwrap();
    let all = client
        .describe_instances("cn-beijing", &InstanceQuery::expiring_prepaid(start, end))
        .await
        .unwrap();
    let ids: Vec<&str> = all.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["i-1", "i-2", "i-3", "i-4", "i-5"]);
    let requests = stub.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.param("Action"), Some("DescribeInstances"));
        assert_eq!(request.param("MaxResults"), Some("100"));
        assert_eq!(request.param("Filter.3.Value"), Some("2026-12-01T00:00Z"));
        assert_eq!(request.param("Filter.4.Value"), Some("2026-12-31T00:00Z"));
        assert_eq!(request.param("SecurityToken"), Some(TEST_TOKEN));
        // Nothing travels in the URL: the token stays out of proxy and access logs.
        assert!(
            request
                .params
                .iter()
                .all(|(k, _)| !request.path.contains(k.as_str()))
        );
    }
}

#[tokio::test]
async fn a_503_is_retried_with_a_new_nonce_and_timestamp_signature_each_time() {
    let stub = Stub::start(|request, index| {
        assert!(signature_ok(request), "bad signature on attempt {index}");
        if index == 0 {
            Reply::error(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            )
        } else {
            Reply::json(200, json!({"RequestId": "R2", "OrderId": "ORDER-1"}))
        }
    })
    .await;
    let client = client_for(&stub.url(), fast_retry(3));
    let token = ClientToken::new("renew-token-1").unwrap();
    let receipt = client
        .renew_instance("cn-beijing", "i-1", 1, PeriodUnit::Month, &token)
        .await
        .unwrap();
    assert_eq!(receipt.order_id, "ORDER-1");
    let requests = stub.requests();
    assert_eq!(requests.len(), 2);
    assert_ne!(
        requests[0].param("SignatureNonce"),
        requests[1].param("SignatureNonce")
    );
    assert_ne!(
        requests[0].param("Signature"),
        requests[1].param("Signature")
    );
    // The idempotency token is the same on every attempt.
    assert_eq!(requests[0].param("ClientToken"), Some("renew-token-1"));
    assert_eq!(requests[1].param("ClientToken"), Some("renew-token-1"));
}

#[tokio::test]
async fn charge_type_violation_is_not_retried() {
    let stub = Stub::start(|_, _| {
        Reply::error(
            403,
            "ChargeTypeViolation",
            "The operation is not permitted due to charge type of the instance.",
        )
    })
    .await;
    let client = client_for(&stub.url(), fast_retry(4));
    let error = client
        .renew_instance(
            "cn-beijing",
            "i-postpaid",
            1,
            PeriodUnit::Month,
            &ClientToken::new("t").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(stub.requests().len(), 1);
    assert_eq!(error.class(), ErrorClass::NotApplicable);
    assert_eq!(error.code(), Some("ChargeTypeViolation"));
    assert_eq!(error.request_id(), Some("REQ-ERR"));
    assert!(
        error.to_string().starts_with(
            "RenewInstance in cn-beijing failed: ChargeTypeViolation (HTTP 403, request id REQ-ERR)"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_renewal_without_a_client_token_is_never_repeated() {
    let stub = Stub::start(|_, _| Reply::error(503, "ServiceUnavailable", "busy")).await;
    let client = client_for(&stub.url(), fast_retry(4));
    let params = [
        ("InstanceId", "i-1".to_owned()),
        ("Period", "1".to_owned()),
        ("PeriodUnit", "Month".to_owned()),
    ];
    let error = client
        .call::<serde_json::Value>(Action::RenewInstance, "cn-beijing", &params)
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Transient);
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn throttling_waits_as_long_as_x_acs_retry_after_says() {
    let stub = Stub::start(|_, index| {
        if index == 0 {
            Reply::error(400, "Throttling", "Request was denied due to request throttling.")
                .header("x-acs-retry-after", "400")
        } else {
            Reply::json(200, json!({"RequestId": "R", "Regions": {"Region": [
                {"RegionId": "cn-hangzhou", "RegionEndpoint": "ecs.aliyuncs.com", "LocalName": "华东1（杭州）"}]}}))
        }
    })
    .await;
    // Backoff without advice would be ≤20 ms here, so a gap of 400 ms shows the advice.
    let client = client_for(&stub.url(), fast_retry(3));
    let regions = client.describe_regions("cn-hangzhou").await.unwrap();
    assert_eq!(regions[0].region_endpoint, "ecs.aliyuncs.com");
    let requests = stub.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(400), "retried after {gap:?}");
}

#[tokio::test]
async fn advice_longer_than_the_ceiling_ends_the_retries() {
    let stub = Stub::start(|_, _| {
        Reply::error(400, "Throttling", "try again after 5 minutes")
            .header("x-acs-retry-after", "300000")
    })
    .await;
    let client = client_for(&stub.url(), fast_retry(3));
    let error = client.describe_regions("cn-hangzhou").await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Throttled);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(300)));
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn malformed_answers_are_typed_decode_errors() {
    let cases: Vec<(&str, Reply, u16)> = vec![
        (
            "html 502",
            Reply::raw(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
            502,
        ),
        ("empty 200", Reply::raw(200, ""), 200),
        (
            "truncated json",
            Reply::raw(
                200,
                r#"{"RequestId":"TRUNC-1","Instances":{"Instance":[{"InstanceId":"i-"#,
            ),
            200,
        ),
        (
            "wrong type",
            Reply::json(
                200,
                json!({"RequestId": "WT-1", "TotalCount": "lots", "Instances": {"Instance": []}}),
            ),
            200,
        ),
        (
            "error without code",
            Reply::json(500, json!({"RequestId": "NC-1"})),
            500,
        ),
    ];
    for (name, reply, status) in cases {
        let stub = Stub::start(move |_, _| reply.clone()).await;
        let client = client_for(&stub.url(), fast_retry(2));
        let error = client
            .describe_instances("cn-beijing", &InstanceQuery::default())
            .await
            .unwrap_err();
        match &error {
            CloudError::Decode {
                http_status,
                action,
                ..
            } => {
                assert_eq!(*http_status, status, "{name}");
                assert_eq!(*action, Action::DescribeInstances, "{name}");
            }
            other => panic!("{name}: expected a decode error, got {other:?}"),
        }
        assert_eq!(error.class(), ErrorClass::Transient, "{name}");
        // A read is retried once more, then the error is returned.
        assert_eq!(stub.requests().len(), 2, "{name}");
    }
}

#[tokio::test]
async fn one_undecodable_record_is_reported_without_hiding_the_rest_of_the_page() {
    let stub = Stub::start(|_, _| {
        Reply::json(
            200,
            json!({"RequestId": "BE-1", "NextToken": "", "Instances": {"Instance": [
            instance("i-good"),
            {"InstanceId": "i-bad", "InstanceChargeType": "PrePaid", "ExpiredTime": "soon"}]}}),
        )
    })
    .await;
    let client = client_for(&stub.url(), fast_retry(1));
    let listing = client
        .describe_instances("cn-beijing", &InstanceQuery::default())
        .await
        .unwrap();
    assert_eq!(listing.instances.len(), 1);
    assert_eq!(listing.instances[0].id, "i-good");
    assert_eq!(listing.undecodable.len(), 1);
    assert_eq!(
        listing.undecodable[0].to_string(),
        "instance i-bad: ExpiredTime: \"soon\" is not an ECS time (expected yyyy-MM-ddTHH:mmZ or yyyy-MM-ddTHH:mm:ssZ)"
    );
}

#[tokio::test]
async fn a_truncated_body_keeps_its_request_id() {
    let stub = Stub::start(|_, _| Reply::raw(200, r#"{"RequestId":"TRUNC-9","Instances":{"#)).await;
    let client = client_for(&stub.url(), fast_retry(1));
    let error = client
        .describe_instances("cn-beijing", &InstanceQuery::default())
        .await
        .unwrap_err();
    assert_eq!(error.request_id(), Some("TRUNC-9"));
}

#[tokio::test]
async fn a_wrong_secret_is_named_and_the_quoted_string_to_sign_is_dropped() {
    let stub = Stub::start(|request, _| {
        let server = signer::string_to_sign(
            &request.method,
            request.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        Reply::error(
            400,
            "SignatureDoesNotMatch",
            &format!("Specified signature is not matched with our calculation. server string to sign is:{server}"),
        )
    })
    .await;
    let logs = LogCapture::default();
    let _guard = logs.install();
    let client = client_for(&stub.url(), fast_retry(3));
    let error = client.describe_regions("cn-hangzhou").await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permission);
    assert_eq!(
        stub.requests().len(),
        1,
        "a permission error is not retried"
    );
    let text = error.to_string();
    assert!(text.contains("the AccessKey secret is wrong"), "{text}");
    assert!(!text.contains("server string to sign"), "{text}");
    for shown in [text, format!("{error:?}"), logs.text()] {
        assert!(!shown.contains(TEST_TOKEN), "token leaked: {shown}");
        assert!(!shown.contains(TEST_SECRET), "secret leaked: {shown}");
    }
}

#[tokio::test]
async fn secrets_echoed_by_the_service_never_reach_errors_or_logs() {
    let encoded_token = signer::percent_encode(TEST_TOKEN);
    let stub = Stub::start(move |_, index| {
        if index == 0 {
            // A transient failure, logged as a retry, whose message quotes the token.
            Reply::error(
                500,
                "InternalError",
                &format!("oops near SecurityToken={encoded_token}"),
            )
        } else {
            Reply::raw(502, &format!("<html>{TEST_TOKEN} {TEST_SECRET}</html>"))
        }
    })
    .await;
    let logs = LogCapture::default();
    let _guard = logs.install();
    let client = client_for(&stub.url(), fast_retry(2));
    let error = client.describe_regions("cn-hangzhou").await.unwrap_err();
    let shown = [
        error.to_string(),
        format!("{error:?}"),
        logs.text(),
        format!("{client:?}"),
    ];
    assert!(
        logs.text().contains("retrying"),
        "the retry is logged: {}",
        logs.text()
    );
    for text in shown {
        assert!(!text.contains(TEST_TOKEN), "token leaked: {text}");
        assert!(
            !text.contains(&signer::percent_encode(TEST_TOKEN)),
            "token leaked: {text}"
        );
        assert!(!text.contains(TEST_SECRET), "secret leaked: {text}");
    }
}

#[tokio::test]
async fn auto_renew_calls_are_split_into_batches_of_one_hundred() {
    let stub = Stub::start(|request, _| match request.param("Action") {
        Some("DescribeInstanceAutoRenewAttribute") => {
            assert_eq!(request.param("PageSize"), Some("100"));
            let ids: Vec<&str> = request.param("InstanceId").unwrap().split(',').collect();
            assert!(ids.len() <= 100);
            let attrs: Vec<_> = ids.iter().map(|id| json!({"InstanceId": id, "AutoRenewEnabled": false,
                "Duration": 0, "PeriodUnit": "", "RenewalStatus": "Normal"})).collect();
            Reply::json(200, json!({"RequestId": "R", "TotalCount": attrs.len(), "PageNumber": 1, "PageSize": 100,
                "InstanceRenewAttributes": {"InstanceRenewAttribute": attrs}}))
        }
        Some("ModifyInstanceAutoRenewAttribute") => {
            assert!(request.param("InstanceId").unwrap().split(',').count() <= 100);
            assert_eq!(request.param("RenewalStatus"), Some("AutoRenewal"));
            assert_eq!(request.param("Duration"), Some("1"));
            assert_eq!(request.param("PeriodUnit"), Some("Month"));
            Reply::json(200, json!({"RequestId": "MOD"}))
        }
        other => panic!("unexpected {other:?}"),
    })
    .await;
    let client = client_for(&stub.url(), fast_retry(1));
    let ids: Vec<String> = (0..250).map(|i| format!("i-{i:04}")).collect();
    let attrs = client
        .describe_auto_renew("cn-beijing", &ids)
        .await
        .unwrap();
    assert_eq!(attrs.len(), 250);
    assert!(
        attrs
            .iter()
            .all(|a| a.renewal_status == RenewalStatus::Normal)
    );
    let target = AutoRenewTarget {
        status: RenewalStatus::AutoRenewal,
        duration: 1,
        unit: PeriodUnit::Month,
    };
    let results = client.modify_auto_renew("cn-beijing", &ids, target).await;
    assert_eq!(
        results
            .iter()
            .map(|b| b.instance_ids.len())
            .collect::<Vec<_>>(),
        [100, 100, 50]
    );
    assert!(results.iter().all(|b| b.result.is_ok()));
    assert_eq!(stub.requests().len(), 6);
}

#[tokio::test]
async fn the_dry_run_probe_tells_permission_from_an_empty_fleet() {
    let allowed = Stub::start(|request, _| {
        assert_eq!(request.param("DryRun"), Some("true"));
        Reply::error(
            400,
            "DryRunOperation",
            "Request validation has been passed with DryRun flag set.",
        )
    })
    .await;
    client_for(&allowed.url(), fast_retry(1))
        .probe_describe_permission("cn-beijing")
        .await
        .unwrap();

    let denied = Stub::start(|_, _| {
        Reply::error(403, "Forbidden.RAM", "User not authorized to operate on the specified resource, or this API doesn't support RAM.")
    })
    .await;
    let error = client_for(&denied.url(), fast_retry(3))
        .probe_describe_permission("cn-beijing")
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::Permission);
    assert!(
        error.to_string().contains("deploy/ram-policy.json"),
        "{error}"
    );
}

#[tokio::test]
async fn renewal_prices_are_exact_cents() {
    let stub = Stub::start(|request, _| {
        assert_eq!(request.param("PriceUnit"), Some("Month"));
        assert_eq!(request.param("ResourceId"), Some("i-1"));
        Reply::json(200, json!({"RequestId": "P", "PriceInfo": {"Price": {"Currency": "CNY",
            "OriginalPrice": 4368.0, "DiscountPrice": 655.2, "TradePrice": 3712.8}, "Rules": {"Rule": []}}}))
    })
    .await;
    let quote = client_for(&stub.url(), fast_retry(1))
        .describe_renewal_price("cn-beijing", "i-1", 1, PeriodUnit::Month)
        .await
        .unwrap();
    assert_eq!(quote.trade_price.cents, 371_280);
    assert_eq!(quote.trade_price.currency, "CNY");
}

#[tokio::test]
async fn a_slow_answer_times_out_as_a_transport_error() {
    let stub = Stub::start(|_, _| {
        Reply::json(200, json!({"RequestId": "late"})).after(Duration::from_secs(5))
    })
    .await;
    let mut client_settings_timeout = client_for(&stub.url(), fast_retry(1));
    client_settings_timeout = client_settings_timeout
        .with_read_timeout(Action::DescribeRegions, Duration::from_millis(200));
    let error = client_settings_timeout
        .describe_regions("cn-hangzhou")
        .await
        .unwrap_err();
    match &error {
        CloudError::Transport { kind, .. } => {
            assert_eq!(*kind, ecs_renewd::cloud::TransportKind::Timeout)
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(error.outcome_unknown());
}

#[tokio::test]
async fn a_redirect_is_never_followed_with_the_signed_body() {
    // Where a followed redirect would resend the body, STS token included.
    let elsewhere = Stub::start(|_, _| Reply::json(200, json!({"RequestId": "stolen"}))).await;
    let target = format!("{}/collect?x=1", elsewhere.url());
    for status in [301, 302, 303, 307, 308] {
        let location = target.clone();
        let stub =
            Stub::start(move |_, _| Reply::raw(status, "").header("location", &location)).await;
        let client = client_for(&stub.url(), fast_retry(3));
        let error = client
            .renew_instance(
                "cn-hangzhou",
                "i-redirected",
                1,
                PeriodUnit::Month,
                &ClientToken::new("ern2-redirect-test").unwrap(),
            )
            .await
            .unwrap_err();
        let host = elsewhere.url().trim_start_matches("http://").to_owned();
        let last = match &error {
            CloudError::AfterUnanswered { last } => last.as_ref(),
            other => other,
        };
        match last {
            CloudError::Redirected {
                http_status,
                location_host,
                ..
            } => {
                assert_eq!(*http_status, status);
                assert_eq!(location_host, &host);
            }
            other => panic!("HTTP {status}: expected a redirect error, got {other:?}"),
        }
        assert_eq!(error.class(), ErrorClass::Transient);
        // A charging call answered by a redirect has an unknown outcome (whatever answered
        // may have passed it on), so it is resent only with the same ClientToken.
        assert!(error.outcome_unknown());
        let text = error.to_string();
        assert!(
            text.contains(&format!("HTTP {status}) to {host}")),
            "{text}"
        );
        assert!(
            !text.contains("collect"),
            "the Location's path is not quoted: {text}"
        );
        assert!(!stub.requests().is_empty());
    }
    assert!(
        elsewhere.requests().is_empty(),
        "a redirect was followed: {:?}",
        elsewhere.requests()
    );
}
