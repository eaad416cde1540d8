//! The project's own client against the emulator: the guide's flows (list the expiring window
//! across pages, renew with a ClientToken and see the expiry move after the delay, read and set
//! auto-renew for a batch), every injected fault kind, authentication like the service, the
//! lifecycle, and a 100,000-instance fleet.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ecs_emulator::control::{ClockChange, KeySpec};
use ecs_emulator::settings::{AccessKeySpec, AccountSpec, AuthClock, GeneratorSpec, InstanceSpec};
use ecs_emulator::{EmulatorConfig, EmulatorHandle, FaultKind, FaultSpec};
use ecs_renewd::cloud::{Action, EcsClient, signer, time};
use ecs_renewd::cloud::{AutoRenewTarget, ClientToken, InstanceQuery};
use ecs_renewd::cloud::{CloudError, ErrorClass};
use ecs_wire::clock::{Clock, SystemClock};
use ecs_wire::secret::Secret;
use ecs_wire::types::{ChargeType, PeriodUnit, RenewalStatus};
use support::fast_retry;

const KEY: &str = "LTAIemulatortest";
const SECRET: &str = "emulator-test-secret";

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn instance(id: &str, region: &str, expires_in: &str) -> InstanceSpec {
    InstanceSpec {
        id: Some(id.into()),
        account: None,
        region: region.into(),
        zone: None,
        name: Some(format!("name-{id}")),
        charge_type: ChargeType::PrePaid,
        expires_at: None,
        expires_in: Some(expires_in.into()),
        expired_ago: None,
        tags: [("env".to_string(), "prod".to_string())].into(),
        security_groups: vec!["sg-web".into()],
        instance_type: "ecs.g6.large".into(),
        resource_group_id: String::new(),
        monthly_price: 100.0,
        renewal_status: RenewalStatus::Normal,
        auto_renew_duration: 1,
        auto_renew_unit: PeriodUnit::Month,
        deduction_fails: false,
    }
}

/// One account `main` with 1000 CNY, the test key, 250 generated instances in cn-beijing
/// expiring within 30 days, and a few named ones; timestamps checked against the wall clock.
fn fleet() -> EmulatorConfig {
    let mut config = EmulatorConfig {
        accounts: vec![AccountSpec {
            uid: None,
            roles: Vec::new(),
            members: Vec::new(),
            name: "main".into(),
            balance: 1000.0,
            currency: "CNY".into(),
            access_keys: vec![AccessKeySpec {
                id: KEY.into(),
                secret: SECRET.into(),
                security_token: None,
                expires_at: None,
                denied_actions: vec![],
            }],
        }],
        instances: vec![
            instance("i-soon", "cn-hangzhou", "3d"),
            instance("i-later", "cn-hangzhou", "200d"),
            InstanceSpec {
                charge_type: ChargeType::PostPaid,
                ..instance("i-postpaid", "cn-hangzhou", "1d")
            },
            InstanceSpec {
                expires_in: None,
                expired_ago: Some("3d".into()),
                ..instance("i-expired", "cn-hangzhou", "")
            },
        ],
        generate: vec![GeneratorSpec {
            count: 250,
            account: None,
            regions: vec!["cn-beijing".into()],
            expiry_spread: "30d".into(),
            expired_share: 0.0,
            postpaid_share: 0.0,
            auto_renew_share: 0.0,
            not_renewal_share: 0.0,
            tags: Default::default(),
            monthly_price: 10.0,
            id_prefix: "i-bj".into(),
            seed: 7,
        }],
        ..EmulatorConfig::default()
    };
    config.settings.auth_clock = AuthClock::Wall;
    config
}

async fn start(config: EmulatorConfig) -> EmulatorHandle {
    ecs_emulator::start(config, loopback()).await.unwrap()
}

fn client(emulator: &EmulatorHandle) -> EcsClient {
    support::client_with(
        &emulator.url(),
        fast_retry(3),
        KEY,
        SECRET,
        None,
        Arc::new(SystemClock),
    )
}

fn window(emulator: &EmulatorHandle, ahead_days: i64) -> InstanceQuery {
    let now = emulator.clock().now();
    InstanceQuery::expiring_prepaid(
        now - chrono::Duration::days(15),
        now + chrono::Duration::days(ahead_days),
    )
}

#[tokio::test]
async fn the_expiring_window_is_listed_across_pages() {
    let emulator = start(fleet()).await;
    let client = client(&emulator);
    let listing = client
        .describe_instances("cn-beijing", &window(&emulator, 40))
        .await
        .unwrap();
    assert_eq!(listing.instances.len(), 250);
    assert_eq!(
        emulator.calls().count(Action::DescribeInstances),
        3,
        "100 + 100 + 50"
    );
    let hangzhou = client
        .describe_instances("cn-hangzhou", &window(&emulator, 10))
        .await
        .unwrap();
    let ids: Vec<&str> = hangzhou.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        ["i-expired", "i-soon"],
        "PrePaid only, within the window, expired included"
    );
    let expired = &hangzhou.instances[0];
    assert_eq!(expired.status, "Stopped");
    assert_eq!(expired.lock_reasons, ["financial"]);
    // Subscription expiry is at 00:00 UTC+8.
    assert_eq!(
        hangzhou.instances[1]
            .expired_time
            .format("%H:%M")
            .to_string(),
        "16:00"
    );
}

#[tokio::test]
async fn a_renewal_charges_once_per_token_and_the_new_expiry_shows_after_the_delay() {
    let emulator = start(fleet()).await;
    let client = client(&emulator);
    let before = client
        .describe_instances_by_id("cn-hangzhou", &["i-soon".into()])
        .await
        .unwrap()
        .instances[0]
        .expired_time;
    let token = ClientToken::new("tok-soon-1").unwrap();
    let receipt = client
        .renew_instance("cn-hangzhou", "i-soon", 1, PeriodUnit::Month, &token)
        .await
        .unwrap();
    // Not yet visible.
    let shown = client
        .describe_instances_by_id("cn-hangzhou", &["i-soon".into()])
        .await
        .unwrap()
        .instances[0]
        .expired_time;
    assert_eq!(shown, before);
    emulator.clock().advance(Duration::from_secs(10));
    let shown = client
        .describe_instances_by_id("cn-hangzhou", &["i-soon".into()])
        .await
        .unwrap()
        .instances[0]
        .expired_time;
    assert!(
        shown > before + chrono::Duration::days(27),
        "{before} -> {shown}"
    );
    // The same token again: the same order, no second charge.
    let again = client
        .renew_instance("cn-hangzhou", "i-soon", 1, PeriodUnit::Month, &token)
        .await
        .unwrap();
    assert_eq!(again.order_id, receipt.order_id);
    let orders = emulator.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].price_cents, 10_000);
    // The same token with other parameters is refused.
    let error = client
        .renew_instance("cn-hangzhou", "i-soon", 2, PeriodUnit::Month, &token)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("IdempotenceParamNotMatch"));
    assert_eq!(error.class(), ErrorClass::Invalid);
}

#[tokio::test]
async fn not_applicable_and_funds_failures_come_with_their_codes() {
    let emulator = start(fleet()).await;
    let client = client(&emulator);
    let token = |t: &str| ClientToken::new(t).unwrap();
    let error = client
        .renew_instance(
            "cn-hangzhou",
            "i-postpaid",
            1,
            PeriodUnit::Month,
            &token("a"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.class()),
        (Some("ChargeTypeViolation"), ErrorClass::NotApplicable)
    );
    let error = client
        .renew_instance("cn-hangzhou", "i-nope", 1, PeriodUnit::Month, &token("b"))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.class()),
        (
            Some("InvalidInstanceId.NotFound"),
            ErrorClass::NotApplicable
        )
    );
    let error = client
        .renew_instance("cn-hangzhou", "i-soon", 13, PeriodUnit::Month, &token("c"))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.class()),
        (Some("InvalidPeriod"), ErrorClass::Invalid)
    );
    emulator.control().set_balance("main", 5.0).await.unwrap();
    let error = client
        .renew_instance("cn-hangzhou", "i-soon", 1, PeriodUnit::Month, &token("d"))
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.class()),
        (
            Some("InvalidAccountStatus.NotEnoughBalance"),
            ErrorClass::Funds
        )
    );
    assert!(emulator.orders().is_empty());
    assert_eq!(
        emulator.calls().count(Action::RenewInstance),
        4,
        "none of these is retried"
    );
}

#[tokio::test]
async fn auto_renew_is_read_and_set_for_batches_and_validated() {
    let emulator = start(fleet()).await;
    let client = client(&emulator);
    let ids: Vec<String> = (1..=150).map(|n| format!("i-bj{n:07}")).collect();
    let target = AutoRenewTarget {
        status: RenewalStatus::AutoRenewal,
        duration: 3,
        unit: PeriodUnit::Month,
    };
    let results = client.modify_auto_renew("cn-beijing", &ids, target).await;
    assert!(results.iter().all(|b| b.result.is_ok()), "{results:?}");
    let attrs = client
        .describe_auto_renew("cn-beijing", &ids)
        .await
        .unwrap();
    assert_eq!(attrs.len(), 150);
    assert!(
        attrs
            .iter()
            .all(|a| a.renewal_status == RenewalStatus::AutoRenewal && a.duration == 3)
    );
    let bad = AutoRenewTarget {
        status: RenewalStatus::AutoRenewal,
        duration: 4,
        unit: PeriodUnit::Month,
    };
    let results = client.modify_auto_renew("cn-beijing", &ids[..2], bad).await;
    let error = results[0].result.as_ref().unwrap_err();
    assert_eq!(
        (error.code(), error.class()),
        (Some("InvalidParameter.Duration"), ErrorClass::Invalid)
    );
    let error = client
        .describe_auto_renew("cn-hangzhou", &["i-postpaid".into()])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("ChargeTypeViolation"));
    // Auto-renew cannot be switched on for an expired instance.
    let results = client
        .modify_auto_renew("cn-hangzhou", &["i-expired".into()], target)
        .await;
    assert_eq!(
        results[0].result.as_ref().unwrap_err().code(),
        Some("IncorrectInstanceStatus")
    );
}

#[tokio::test]
async fn prices_and_regions_have_the_real_shapes() {
    let emulator = start(fleet()).await;
    let client = client(&emulator);
    let month = client
        .describe_renewal_price("cn-hangzhou", "i-soon", 1, PeriodUnit::Month)
        .await
        .unwrap();
    assert_eq!(month.trade_price.to_string(), "100.00 CNY");
    let year = client
        .describe_renewal_price("cn-hangzhou", "i-soon", 1, PeriodUnit::Year)
        .await
        .unwrap();
    assert_eq!(year.original_price.cents, 120_000);
    assert_eq!(year.trade_price.cents, 102_000);
    let error = client
        .describe_renewal_price("cn-hangzhou", "i-soon", 12, PeriodUnit::Month)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("InvalidPeriod"));
    let regions = client.describe_regions("cn-hangzhou").await.unwrap();
    let pairs: Vec<(&str, &str)> = regions
        .iter()
        .map(|r| (r.region_id.as_str(), r.region_endpoint.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("cn-beijing", "ecs.cn-beijing.aliyuncs.com"),
            ("cn-hangzhou", "ecs.aliyuncs.com")
        ]
    );
}

#[tokio::test]
async fn every_fault_kind_is_survived_by_the_client_and_charges_once() {
    let emulator = start(fleet()).await;
    let client = client(&emulator);
    let token = |t: &str| ClientToken::new(t).unwrap();
    let cases: Vec<(&str, FaultKind)> = vec![
        (
            "error-503",
            FaultKind::Error {
                code: "ServiceUnavailable".into(),
                status: 503,
                message: None,
                retry_after_ms: None,
            },
        ),
        (
            "throttle",
            FaultKind::Error {
                code: "Throttling".into(),
                status: 400,
                message: None,
                retry_after_ms: Some(50),
            },
        ),
        ("reset", FaultKind::Reset),
        ("html", FaultKind::Html),
        ("malformed", FaultKind::Malformed),
        ("commit-then-drop", FaultKind::CommitThenDrop),
    ];
    for (n, (name, kind)) in cases.into_iter().enumerate() {
        emulator.add_fault(FaultSpec::next(Action::RenewInstance, 1, kind));
        let orders_before = emulator.orders().len();
        let receipt = client
            .renew_instance(
                "cn-beijing",
                &format!("i-bj{:07}", n + 1),
                1,
                PeriodUnit::Month,
                &token(name),
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let orders = emulator.orders();
        assert_eq!(orders.len(), orders_before + 1, "{name}: exactly one order");
        assert_eq!(orders.last().unwrap().order_id, receipt.order_id, "{name}");
        assert_eq!(orders.last().unwrap().client_token.as_deref(), Some(name));
    }
    assert_eq!(
        emulator.calls().count(Action::RenewInstance),
        12,
        "each fault cost one extra attempt"
    );
}

#[tokio::test]
async fn a_timeout_is_retried_with_the_same_token_and_charges_once() {
    let emulator = start(fleet()).await;
    let client =
        client(&emulator).with_read_timeout(Action::RenewInstance, Duration::from_millis(300));
    emulator.add_fault(FaultSpec::latency(Action::RenewInstance, 1500));
    let receipt = client
        .renew_instance(
            "cn-hangzhou",
            "i-soon",
            1,
            PeriodUnit::Month,
            &ClientToken::new("slow").unwrap(),
        )
        .await
        .unwrap();
    // The slow first attempt completes in the emulator after the client gave up; wait for
    // both answers before asserting there is only one order.
    assert!(emulator.wait_for_answers(2, Duration::from_secs(10)).await);
    let orders = emulator.orders();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0].order_id, receipt.order_id);
}

#[tokio::test]
async fn authentication_fails_like_the_service() {
    let emulator = start(fleet()).await;
    let url = emulator.url();
    let wrong_secret = support::client_with(
        &url,
        fast_retry(3),
        KEY,
        "not-the-secret",
        None,
        Arc::new(SystemClock),
    );
    let error = wrong_secret
        .describe_regions("cn-hangzhou")
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.class()),
        (Some("SignatureDoesNotMatch"), ErrorClass::Permission)
    );
    assert!(
        error.to_string().contains("the AccessKey secret is wrong"),
        "{error}"
    );

    let unknown = support::client_with(
        &url,
        fast_retry(3),
        "LTAIunknown",
        SECRET,
        None,
        Arc::new(SystemClock),
    );
    let error = unknown.describe_regions("cn-hangzhou").await.unwrap_err();
    match &error {
        CloudError::Api(api) => assert_eq!(
            (api.code.as_str(), api.http_status),
            ("InvalidAccessKeyId.NotFound", 404)
        ),
        other => panic!("{other:?}"),
    }

    let skewed_clock = Arc::new(ecs_wire::clock::VirtualClock::frozen(
        SystemClock.now() + chrono::Duration::minutes(20),
    ));
    let skewed = support::client_with(&url, fast_retry(3), KEY, SECRET, None, skewed_clock);
    let error = skewed.describe_regions("cn-hangzhou").await.unwrap_err();
    assert_eq!(
        (error.code(), error.class()),
        (Some("InvalidTimeStamp.Expired"), ErrorClass::Clock)
    );
    assert!(error.to_string().contains("fix the clock (NTP)"), "{error}");
    assert_eq!(
        emulator.calls().by_action.values().sum::<u64>(),
        3,
        "none of these is retried"
    );
}

/// Sends one signed request by hand, as an SDK would (GET, parameters in the query).
async fn raw_get(url: &str, params: &[(&str, &str)], secret: &str) -> (u16, serde_json::Value) {
    let signed = signer::sign("GET", params.iter().copied(), &Secret::new(secret));
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        query.append_pair(k, v);
    }
    query.append_pair("Signature", &signed.signature);
    let response = reqwest::get(format!("{url}/?{}", query.finish()))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_replayed_nonce_and_missing_parameters_are_refused() {
    let emulator = start(fleet()).await;
    let stamp = time::format_seconds(SystemClock.now());
    let params = [
        ("Action", "DescribeRegions"),
        ("Version", "2014-05-26"),
        ("Format", "json"),
        ("AccessKeyId", KEY),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "the-same-nonce"),
        ("SignatureType", ""),
        ("Timestamp", stamp.as_str()),
    ];
    let (status, body) = raw_get(&emulator.url(), &params, SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["Regions"]["Region"].is_array());
    let (status, body) = raw_get(&emulator.url(), &params, SECRET).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("SignatureNonceUsed"))
    );
    let (status, body) = raw_get(&emulator.url(), &params[..3], SECRET).await;
    assert_eq!(
        (status, body["Code"].as_str()),
        (400, Some("MissingParameter"))
    );
    assert_eq!(
        body["Message"].as_str(),
        Some(
            "The input parameter \"AccessKeyId\" that is mandatory for processing this request is not supplied."
        )
    );
    assert!(body["RequestId"].as_str().is_some_and(|r| r.len() == 36));
}

#[tokio::test]
async fn an_sts_key_needs_its_token_and_expires() {
    let emulator = start(fleet()).await;
    let expires_at: DateTime<Utc> = emulator.clock().now() + chrono::Duration::hours(1);
    emulator
        .control()
        .put_key(&KeySpec {
            id: "STS.key".into(),
            account: "main".into(),
            secret: "sts-secret".into(),
            security_token: Some("sts-token".into()),
            expires_at: Some(expires_at),
            denied_actions: vec![],
        })
        .await
        .unwrap();
    let url = emulator.url();
    let with_token = support::client_with(
        &url,
        fast_retry(1),
        "STS.key",
        "sts-secret",
        Some("sts-token"),
        Arc::new(SystemClock),
    );
    with_token.describe_regions("cn-hangzhou").await.unwrap();
    let without = support::client_with(
        &url,
        fast_retry(1),
        "STS.key",
        "sts-secret",
        None,
        Arc::new(SystemClock),
    );
    assert_eq!(
        without
            .describe_regions("cn-hangzhou")
            .await
            .unwrap_err()
            .code(),
        Some("MissingSecurityToken")
    );
    emulator
        .control()
        .clock(&ClockChange {
            advance: Some("2h".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let error = with_token
        .describe_regions("cn-hangzhou")
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.class()),
        (Some("InvalidSecurityToken.Expired"), ErrorClass::Permission)
    );
}

#[tokio::test]
async fn an_identity_without_permission_sees_an_empty_list_and_a_denied_dry_run() {
    let emulator = start(fleet()).await;
    emulator
        .control()
        .put_key(&KeySpec {
            id: "LTAIreadonly".into(),
            account: "main".into(),
            secret: "ro".into(),
            security_token: None,
            expires_at: None,
            denied_actions: vec![Action::DescribeInstances, Action::RenewInstance],
        })
        .await
        .unwrap();
    let client = support::client_with(
        &emulator.url(),
        fast_retry(1),
        "LTAIreadonly",
        "ro",
        None,
        Arc::new(SystemClock),
    );
    let listing = client
        .describe_instances("cn-beijing", &window(&emulator, 40))
        .await
        .unwrap();
    assert!(
        listing.instances.is_empty(),
        "no permission looks like an empty fleet"
    );
    let error = client
        .probe_describe_permission("cn-beijing")
        .await
        .unwrap_err();
    assert_eq!(
        (error.code(), error.class()),
        (Some("Forbidden.RAM"), ErrorClass::Permission)
    );
    let allowed = self::client(&emulator);
    allowed
        .probe_describe_permission("cn-beijing")
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_instances_are_released_after_the_release_period() {
    let emulator = start(fleet()).await;
    let client = client(&emulator);
    emulator.clock().advance(Duration::from_secs(13 * 86_400));
    let listing = client
        .describe_instances("cn-hangzhou", &window(&emulator, 1))
        .await
        .unwrap();
    assert!(
        listing.instances.iter().all(|i| i.id != "i-expired"),
        "released 15 days after expiry"
    );
    let error = client
        .renew_instance(
            "cn-hangzhou",
            "i-expired",
            1,
            PeriodUnit::Month,
            &ClientToken::new("late").unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("InvalidInstanceId.NotFound"));
}

#[tokio::test]
async fn the_provider_auto_renew_deduction_runs_on_the_virtual_clock() {
    let mut config = fleet();
    config.instances.push(InstanceSpec {
        renewal_status: RenewalStatus::AutoRenewal,
        ..instance("i-auto", "cn-hangzhou", "20d")
    });
    let emulator = start(config).await;
    let expiry = emulator.with_world(|w| {
        w.instances()
            .find(|i| i.id == "i-auto")
            .unwrap()
            .true_expiry()
    });
    let first = ecs_renewd::first_deduction(expiry);
    emulator.clock().set(first - chrono::Duration::minutes(1));
    assert!(emulator.orders().is_empty(), "not before T-9 08:00 UTC+8");
    emulator.clock().set(first + chrono::Duration::minutes(1));
    let orders = emulator.orders();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(
        (orders[0].instance_id.as_str(), orders[0].kind.as_str()),
        ("i-auto", "auto_renew")
    );
}

#[tokio::test]
async fn a_hundred_thousand_instance_fleet_pages_through_one_regions_window() {
    let mut config = fleet();
    config.generate = vec![GeneratorSpec {
        count: 100_000,
        account: None,
        regions: (0..10).map(|n| format!("cn-region{n}")).collect(),
        expiry_spread: "365d".into(),
        expired_share: 0.02,
        postpaid_share: 0.1,
        auto_renew_share: 0.2,
        not_renewal_share: 0.05,
        tags: [("team".to_string(), vec!["a".to_string(), "b".to_string()])].into(),
        monthly_price: 10.0,
        id_prefix: "i-big".into(),
        seed: 1,
    }];
    let started = tokio::time::Instant::now();
    let emulator = start(config).await;
    let generated_in = started.elapsed();
    assert_eq!(emulator.with_world(|w| w.instance_count()), 100_004);
    let client = client(&emulator);
    let paging = tokio::time::Instant::now();
    let listing = client
        .describe_instances("cn-region3", &window(&emulator, 30))
        .await
        .unwrap();
    let paged_in = paging.elapsed();
    assert!(!listing.instances.is_empty());
    assert!(
        listing
            .instances
            .iter()
            .all(|i| i.region == "cn-region3" && i.charge_type == ChargeType::PrePaid)
    );
    let now = emulator.clock().now();
    assert!(
        listing
            .instances
            .iter()
            .all(|i| i.expired_time
                <= now + chrono::Duration::days(30) + chrono::Duration::minutes(1))
    );
    let pages = emulator.calls().count(Action::DescribeInstances);
    assert_eq!(pages as usize, listing.instances.len().div_ceil(100));
    let peak_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_owned())
        })
        .unwrap_or_default();
    println!(
        "100,000 instances generated in {generated_in:?}; one region's 30-day window ({} instances, {pages} pages) in {paged_in:?}; peak memory {peak_kib}",
        listing.instances.len()
    );
}

#[tokio::test]
async fn official_sdk_style_requests_are_accepted() {
    // GET and POST with everything in the query, lowercase format, capitalized booleans,
    // generic Filter numbering: what the Python SDKs send (docs/ecs-api.md §1.4, §8).
    let emulator = start(fleet()).await;
    let stamp = time::format_seconds(SystemClock.now());
    let params = [
        ("Action", "DescribeInstances"),
        ("Version", "2014-05-26"),
        ("Format", "json"),
        ("AccessKeyId", KEY),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", "n-1"),
        ("Timestamp", stamp.as_str()),
        ("RegionId", "cn-hangzhou"),
        ("Filter.1.Key", "ExpiredStartTime"),
        ("Filter.1.Value", "2000-01-01T00:00Z"),
        ("Filter.2.Key", "ExpiredEndTime"),
        ("Filter.2.Value", "2099-01-01T00:00Z"),
        ("InstanceChargeType", "PrePaid"),
        ("DryRun", "False"),
        ("PageSize", "2"),
        ("PageNumber", "2"),
    ];
    let (status, body) = raw_get(&emulator.url(), &params, SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["TotalCount"], 3);
    let ids: Vec<&str> = body["Instances"]["Instance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i-soon"], "page 2 of 2 with PageSize 2");
}
