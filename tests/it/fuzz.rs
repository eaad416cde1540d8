//! Property-based fuzzing (proptest; cargo-fuzz needs nightly, which this project does not
//! use) of everything that reads untrusted bytes:
//!
//! - (a) config parsing: arbitrary text and bytes, structured garbage, and mutations of
//!   `config/example.toml` never panic and give `Ok` or located problems with a message;
//! - (b) response decoding: arbitrary bodies for every wire type in `ecs_wire::types`,
//!   `Instance::try_from` and `AutoRenewAttribute::from`, and the client's whole decoding
//!   path through a loopback stub (one stub, many bodies);
//! - (c) the emulator's request parser (`Params::decode`) and `authenticate` on arbitrary
//!   input: no panic, and nothing that is not correctly signed gets in;
//! - (d) signatures: a request signed by the client's signer verifies, and every single
//!   character changed in any parameter value or in the signature is refused.
//!
//! CI runs a short, fixed-seed run (a few seconds in a debug build). A long run:
//!
//! ```sh
//! ECS_RENEWD_FUZZ_CASES=200000 cargo test --release --test it fuzz::
//! ECS_RENEWD_FUZZ_CASES=200000 ECS_RENEWD_FUZZ_SEED=7 cargo test --release --test it fuzz::
//! ```
//!
//! `ECS_RENEWD_FUZZ_CASES` sets the cases of every property (and scales the stub run);
//! with it set the seed is random unless `ECS_RENEWD_FUZZ_SEED` fixes it. A failure prints the
//! minimal input proptest shrank it to.
//!
//! Bugs found here (a duration sum past u64::MAX seconds panicking config parsing, endless
//! auto-renew paging on a lying TotalCount) are fixed and kept as regression tests at the end.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ecs_emulator::World;
use ecs_emulator::auth::authenticate;
use ecs_emulator::request::{NonceStore, Params, Request};
use ecs_emulator::settings::AccessKeySpec;
use ecs_renewd::Money;
use ecs_renewd::cloud::CloudError;
use ecs_renewd::cloud::credentials::{Credentials, Environment};
use ecs_renewd::cloud::signed_parameters;
use ecs_renewd::cloud::{ClientToken, InstanceQuery};
use ecs_renewd::config::{Config, ConfigError};
use ecs_wire::Action;
use ecs_wire::secret::Secret;
use ecs_wire::types::{
    AutoRenewAttribute, DescribeAutoRenewResponse, DescribeInstancesResponse,
    DescribeRegionsResponse, DescribeRenewalPriceResponse, EmptyResponse, ErrorBody, Instance,
    InstanceRecord, PeriodUnit, RenewAttributeRecord, RenewInstanceResponse,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{RngSeed, TestRng, TestRunner};
use serde_json::Value;
use support::{HARNESS_KEY, Reply, Stub, client_for, fast_retry, harness_fleet};

/// The seed of the short CI run.
const CI_SEED: u64 = 0x00EC_5E4E_3D00;

/// The number of cases when `ECS_RENEWD_FUZZ_CASES` is not set.
fn fuzz_cases(default: u32) -> u32 {
    std::env::var("ECS_RENEWD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The proptest configuration of every property here: `default` cases and a fixed seed for
/// CI, or `ECS_RENEWD_FUZZ_CASES` cases with a random (or `ECS_RENEWD_FUZZ_SEED`) seed.
fn fuzz_config(default: u32) -> ProptestConfig {
    let long_run = std::env::var_os("ECS_RENEWD_FUZZ_CASES").is_some();
    let seed = match std::env::var("ECS_RENEWD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        Some(seed) => RngSeed::Fixed(seed),
        None if long_run => RngSeed::Random,
        None => RngSeed::Fixed(CI_SEED),
    };
    ProptestConfig {
        cases: fuzz_cases(default),
        rng_seed: seed,
        // No regression files next to the tests: a failure prints its shrunk input.
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------ (a) config parsing

const EXAMPLE: &str = include_str!("../../config/example.toml");

/// Asserts the contract of `Config::parse`: `Ok`, or problems that each name the file and say
/// something. (A panic fails the property by itself.)
fn check_config_answer(text: &str) -> Result<(), TestCaseError> {
    match Config::parse(text, Path::new("fuzz.toml"), &Environment::default()) {
        Ok(config) => {
            prop_assert!(!config.accounts.is_empty(), "accepted without accounts");
            for warning in &config.warnings {
                prop_assert!(!warning.message.is_empty());
            }
        }
        Err(ConfigError::Invalid { problems }) => {
            prop_assert!(!problems.is_empty(), "an error without a problem");
            for problem in &problems {
                prop_assert_eq!(problem.file.as_path(), Path::new("fuzz.toml"));
                prop_assert!(
                    !problem.message.trim().is_empty(),
                    "a problem without a message: {:?}",
                    problem
                );
                prop_assert!(problem.to_string().starts_with("fuzz.toml"));
                // A position, when given, lies inside the text.
                if problem.line > 0 {
                    prop_assert!(problem.line <= text.split('\n').count());
                    prop_assert!(problem.column >= 1);
                }
            }
        }
        Err(other) => prop_assert!(false, "parse can only answer Invalid: {}", other),
    }
    Ok(())
}

/// The largest number the duration generator writes: every u64, so sums overflow.
const DURATION_NUMBER_MAX: u64 = u64::MAX;

fn duration_text() -> impl Strategy<Value = String> {
    let number = prop_oneof![0u64..100, 0u64..=DURATION_NUMBER_MAX];
    let unit = prop::sample::select(vec![
        "ms", "s", "sec", "m", "min", "h", "hours", "d", "day", "w", "weeks", "y", "", "M",
    ]);
    prop::collection::vec(
        (number, unit, prop::sample::select(vec!["", " ", "  "])),
        0..4,
    )
    .prop_map(|terms| {
        terms
            .into_iter()
            .map(|(n, u, sep)| format!("{n}{u}{sep}"))
            .collect()
    })
}

/// Values that stress each kind of key: wrong types, edges, bad units, crons, endpoints.
fn toml_value() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "\"\"",
        "0",
        "-1",
        "1.5",
        "1e308",
        "-0.0",
        "nan",
        "inf",
        "true",
        "\"true\"",
        "[]",
        "{}",
        "[1, \"a\"]",
        "\"all\"",
        "[\"cn-hangzhou\", \"cn-beijing\"]",
        "[\"CN_HANGZHOU\"]",
        "\"0 */15 * * * *\"",
        "\"0 0 0 31 2 *\"",
        "\"* * * * * * *\"",
        "\"0 */0 * * * *\"",
        "\"0 0 8 * * MON-FRI\"",
        "\"0 0 0 1 * SUN\"",
        "\"@hourly\"",
        "\"Asia/Shanghai\"",
        "\"Asia/Nowhere\"",
        "\"http://10.0.0.1\"",
        "\"http://127.0.0.1:9\"",
        "\"ftp://example.com\"",
        "\"https://ecs.{region}.example.com\"",
        "\"https://{region}\"",
        "\"https://user:pw@example.com\"",
        "\"vpc\"",
        "\"public\"",
        "\"0.0.0.0:0\"",
        "\"[::1]:9469\"",
        "\"localhost:9469\"",
        "{ CNY = -1.0 }",
        "{ CNY = 1e308 }",
        "{ CNY = 0.001 }",
        "{ XXX = 1.0 }",
        "9223372036854775807",
        "-9223372036854775808",
        "4294967296",
        "\"\\u0000\"",
        "\"é\"",
        "\"Week\"",
        "\"Year\"",
        "\"Month\"",
        "\"renew\"",
        "\"auto-renew\"",
        "\"not-renewal\"",
        "\"observe\"",
        "\"skip\"",
        "\"web-[\"",
        "\"**\"",
        "{ env = \"*\" }",
        "\"file\"",
        "\"ram-role\"",
        "\"international\"",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        3 => fixed,
        1 => duration_text().prop_map(|d| format!("{d:?}")),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
    ]
}

/// Every key and table name of the schema, to build structured garbage from.
const KEYS: &[&str] = &[
    "schedule",
    "timezone",
    "jitter",
    "state_dir",
    "dry_run",
    "shutdown_grace",
    "listen",
    "regions",
    "home_region",
    "horizon",
    "grace",
    "concurrency",
    "skip_tag",
    "release_after",
    "name",
    "endpoint",
    "site",
    "source",
    "access_key_id",
    "access_key_secret_file",
    "security_token_file",
    "metadata_url",
    "refresh_before",
    "per_second",
    "burst",
    "actions",
    "max_attempts",
    "base_delay",
    "max_delay",
    "max_retry_after",
    "max_renewals_per_run",
    "max_renewals_per_day",
    "max_spend_per_run",
    "max_spend_per_day",
    "max_fleet_share_per_run",
    "backoff_floor",
    "backoff_ceiling",
    "attempts_before_deadline",
    "verify_timeout",
    "verify_interval",
    "action",
    "period",
    "period_unit",
    "renew_before",
    "max_price",
    "keep_auto_renew",
    "duration",
    "fallback_renew",
    "fallback_after",
    "override_not_renewal",
    "accounts",
    "instance_ids",
    "tags",
    "zones",
    "security_group",
    "instance_type_family",
    "resource_group",
];

const TABLES: &[&str] = &[
    "[daemon]",
    "[admin]",
    "[scan]",
    "[[accounts]]",
    "[accounts.credentials]",
    "[accounts.rate_limit]",
    "[accounts.call_retry]",
    "[limits]",
    "[retry]",
    "[[policies]]",
    "[policies.match]",
];

/// Plausible config: sections of schema keys with stressing values, each table once (array
/// tables as often as they come), after a usable account so validation gets past it.
fn structured_config() -> impl Strategy<Value = String> {
    let section = (
        prop::sample::select(TABLES),
        prop::collection::btree_map(prop::sample::select(KEYS), toml_value(), 0..5),
    );
    prop::collection::vec(section, 0..8).prop_map(|sections| {
        let mut text = String::from(
            "[[accounts]]\nname = \"main\"\n[accounts.credentials]\nsource = \"env\"\n",
        );
        let mut seen: std::collections::HashSet<&str> = ["[accounts.credentials]"].into();
        for (table, keys) in sections {
            match table {
                "[[accounts]]" => seen.retain(|t| !t.starts_with("[accounts.")),
                "[[policies]]" => seen.retain(|t| !t.starts_with("[policies.")),
                _ if !seen.insert(table) => continue,
                _ => {}
            }
            text.push_str(table);
            text.push('\n');
            for (key, value) in keys {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        text
    })
}

/// A change to a text.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteChars(usize, usize),
    InsertToken(usize, &'static str),
    InsertChar(usize, char),
    DropLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    ReplaceValue(usize, String),
}

const TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "\"\"\"",
    "\n",
    "#",
    "{",
    "}",
    ",",
    ".",
    " ",
    "\t",
    "\r\n",
    "\\",
    "\u{0}",
    "\u{feff}",
    "é",
    "true",
    "-",
    "0x",
    "1e999",
    "nan",
    "\\u0000",
    "[policies.match]",
    "[[policies]]",
    "[[accounts]]",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<usize>;
    prop_oneof![
        1 => (index(), 1usize..40).prop_map(|(i, n)| Mutation::DeleteChars(i, n)),
        1 => (index(), prop::sample::select(TOKENS)).prop_map(|(i, t)| Mutation::InsertToken(i, t)),
        1 => (index(), any::<char>()).prop_map(|(i, c)| Mutation::InsertChar(i, c)),
        1 => index().prop_map(Mutation::DropLine),
        1 => index().prop_map(Mutation::DuplicateLine),
        1 => (index(), index()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        3 => (index(), toml_value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut text = text.to_owned();
    for m in mutations {
        let chars: Vec<char> = text.chars().collect();
        let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
        text = match m {
            Mutation::DeleteChars(at, n) if !chars.is_empty() => {
                let start = at % chars.len();
                let end = (start + n).min(chars.len());
                chars[..start].iter().chain(&chars[end..]).collect()
            }
            Mutation::InsertToken(at, token) => {
                let at = at % (chars.len() + 1);
                let mut out: String = chars[..at].iter().collect();
                out.push_str(token);
                out.extend(&chars[at..]);
                out
            }
            Mutation::InsertChar(at, c) => {
                let at = at % (chars.len() + 1);
                let mut out: String = chars[..at].iter().collect();
                out.push(*c);
                out.extend(&chars[at..]);
                out
            }
            Mutation::DropLine(i) => {
                lines.remove(i % lines.len());
                lines.join("\n")
            }
            Mutation::DuplicateLine(i) => {
                let i = i % lines.len();
                lines.insert(i, lines[i].clone());
                lines.join("\n")
            }
            Mutation::SwapLines(a, b) => {
                let (a, b) = (a % lines.len(), b % lines.len());
                lines.swap(a, b);
                lines.join("\n")
            }
            Mutation::ReplaceValue(i, value) => {
                // Only lines that assign something: the value after the first " = ".
                let assignments: Vec<usize> = (0..lines.len())
                    .filter(|&n| !lines[n].starts_with('#') && lines[n].contains(" = "))
                    .collect();
                if let Some(&n) = assignments.get(i % assignments.len().max(1)) {
                    let key = lines[n].split(" = ").next().unwrap_or_default().to_owned();
                    lines[n] = format!("{key} = {value}");
                }
                lines.join("\n")
            }
            _ => text,
        };
    }
    text
}

proptest! {
    #![proptest_config(fuzz_config(256))]

    #[test]
    fn config_arbitrary_text_never_panics(text in any::<String>()) {
        check_config_answer(&text)?;
    }

    #[test]
    fn config_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_config_answer(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn config_structured_garbage_never_panics(text in structured_config()) {
        check_config_answer(&text)?;
    }

    #[test]
    fn config_mutated_example_never_panics(mutations in prop::collection::vec(mutation(), 1..6)) {
        check_config_answer(&mutate(EXAMPLE, &mutations))?;
    }
}

#[test]
fn the_unmutated_example_parses_and_a_mutation_can_break_it() {
    // The mutation fuzzer starts from a valid file, and its mutations do reach validation.
    check_config_answer(EXAMPLE).unwrap();
    assert!(Config::parse(EXAMPLE, Path::new("fuzz.toml"), &Environment::default()).is_ok());
    let broken = mutate(EXAMPLE, &[Mutation::InsertToken(0, "[")]);
    assert!(Config::parse(&broken, Path::new("fuzz.toml"), &Environment::default()).is_err());
}

// ------------------------------------------------------------------ (b) response decoding

/// Names of fields in ECS answers (and a few case variants gateways use).
const FIELDS: &[&str] = &[
    "RequestId",
    "requestId",
    "TotalCount",
    "PageNumber",
    "PageSize",
    "NextToken",
    "Instances",
    "Instance",
    "InstanceId",
    "InstanceName",
    "RegionId",
    "ZoneId",
    "Status",
    "InstanceChargeType",
    "ExpiredTime",
    "InstanceType",
    "InstanceTypeFamily",
    "ResourceGroupId",
    "Tags",
    "Tag",
    "TagKey",
    "TagValue",
    "SecurityGroupIds",
    "SecurityGroupId",
    "OperationLocks",
    "LockReason",
    "InstanceRenewAttributes",
    "InstanceRenewAttribute",
    "AutoRenewEnabled",
    "Duration",
    "PeriodUnit",
    "RenewalStatus",
    "OrderId",
    "PriceInfo",
    "Price",
    "Currency",
    "OriginalPrice",
    "DiscountPrice",
    "TradePrice",
    "Regions",
    "Region",
    "RegionEndpoint",
    "LocalName",
    "Code",
    "code",
    "Message",
    "message",
    "HostId",
    "Recommend",
];

/// String values that matter to decoding: times in every shape, enums, edges.
const VALUES: &[&str] = &[
    "",
    "PrePaid",
    "PostPaid",
    "prepaid",
    "2026-03-13T16:00Z",
    "2026-03-13T16:00:00Z",
    "2026-03-13T16:00:00+08:00",
    "2026-03-13T16:00:00.123456789Z",
    "2099-12-31T15:59Z",
    "9999-12-31T23:59Z",
    "0000-01-01T00:00Z",
    "+262143-12-31T23:59:59Z",
    "2026-02-30T00:00Z",
    "2026-03-13T24:00Z",
    "2026-03-13",
    " 2026-03-13T16:00Z ",
    "AutoRenewal",
    "Normal",
    "NotRenewal",
    "Month",
    "week",
    "Year",
    "ecs.g6.large",
    "ecs.",
    ".",
    "..",
    "i-1",
    "financial",
    "CNY",
    "\u{0}",
    "é\u{202e}",
];

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            0.0, -0.0, 1e300, -1e300, 5e-324, 0.005, 99.995, 4368.0
        ])
        .prop_map(Value::from),
        prop::sample::select(VALUES).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![4 => prop::sample::select(FIELDS).prop_map(str::to_owned), 1 => "[A-Za-z]{1,6}"],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON string from the dictionary or random text.
fn text_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(VALUES).prop_map(Value::from),
        1 => ".{0,12}".prop_map(Value::from),
    ]
}

/// Usually `right`, sometimes a value of any type (a gateway that got a type wrong).
fn mostly<S: Strategy<Value = Value>>(right: S) -> impl Strategy<Value = Value> {
    prop_oneof![15 => right, 1 => json_leaf()]
}

const INSTANCE_TEXT_FIELDS: &[&str] = &[
    "InstanceName",
    "RegionId",
    "ZoneId",
    "Status",
    "InstanceChargeType",
    "ExpiredTime",
    "CreationTime",
    "InstanceType",
    "InstanceTypeFamily",
    "ResourceGroupId",
    "SaleCycle",
];

/// An instance record in the right shape, with fuzzed values (and now and then a wrong type).
fn instance_record_json() -> impl Strategy<Value = Value> {
    let tags = prop::collection::vec(
        (mostly(text_value()), mostly(text_value()))
            .prop_map(|(k, v)| serde_json::json!({"TagKey": k, "TagValue": v})),
        0..4,
    )
    .prop_map(|tags| serde_json::json!({"Tag": tags}));
    let groups = prop::collection::vec(mostly(text_value()), 0..3)
        .prop_map(|ids| serde_json::json!({"SecurityGroupId": ids}));
    let locks = prop::collection::vec(
        mostly(text_value()).prop_map(|r| serde_json::json!({"LockReason": r})),
        0..3,
    )
    .prop_map(|locks| serde_json::json!({"LockReason": locks}));
    let charge = prop_oneof![
        4 => prop::sample::select(vec!["PrePaid", "PostPaid"]).prop_map(Value::from),
        1 => text_value(),
    ];
    let expiry = prop_oneof![
        4 => prop::sample::select(&VALUES[4..16]).prop_map(Value::from),
        1 => "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?Z".prop_map(Value::from),
        1 => text_value(),
    ];
    (
        prop::option::weighted(0.95, mostly(text_value())),
        (mostly(charge), mostly(expiry)),
        prop::collection::btree_map(
            prop::sample::select(INSTANCE_TEXT_FIELDS),
            mostly(text_value()),
            0..12,
        ),
        prop::option::of(mostly(tags)),
        prop::option::of(mostly(groups)),
        prop::option::of(mostly(locks)),
    )
        .prop_map(|(id, (charge, expiry), fields, tags, groups, locks)| {
            let mut record = serde_json::Map::new();
            if let Some(id) = id {
                record.insert("InstanceId".into(), id);
            }
            record.insert("InstanceChargeType".into(), charge);
            record.insert("ExpiredTime".into(), expiry);
            for (name, value) in fields {
                record.insert(name.into(), value);
            }
            for (name, value) in [
                ("Tags", tags),
                ("SecurityGroupIds", groups),
                ("OperationLocks", locks),
            ] {
                if let Some(value) = value {
                    record.insert(name.into(), value);
                }
            }
            Value::Object(record)
        })
}

/// A DescribeInstances page in the right shape around fuzzed records.
fn describe_instances_json() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(instance_record_json(), 0..6),
        mostly(text_value()),
    )
        .prop_map(|(records, next)| {
            serde_json::json!({"RequestId": "FUZZ", "NextToken": next, "Instances": {"Instance": records}})
        })
}

/// A DescribeInstanceAutoRenewAttribute page in the right shape with fuzzed values.
fn auto_renew_json() -> impl Strategy<Value = Value> {
    let record = (
        mostly(text_value()),
        mostly(any::<bool>().prop_map(Value::from)),
        mostly(any::<i64>().prop_map(Value::from)),
        mostly(text_value()),
        mostly(text_value()),
    )
        .prop_map(|(id, enabled, duration, unit, status)| {
            serde_json::json!({"InstanceId": id, "AutoRenewEnabled": enabled, "Duration": duration,
                "PeriodUnit": unit, "RenewalStatus": status})
        });
    (prop::collection::vec(record, 0..5), any::<u64>()).prop_map(|(records, total)| {
        serde_json::json!({"RequestId": "FUZZ", "TotalCount": total,
            "InstanceRenewAttributes": {"InstanceRenewAttribute": records}})
    })
}

/// A DescribeRenewalPrice answer with fuzzed amounts (every finite float, huge and tiny).
fn price_json() -> impl Strategy<Value = Value> {
    let amount = prop_oneof![
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            0.0,
            0.005,
            0.015,
            1e17,
            -1e17,
            9.3e16,
            f64::MAX,
            f64::MIN_POSITIVE
        ])
        .prop_map(Value::from),
    ];
    (mostly(text_value()), mostly(amount.clone()), mostly(amount)).prop_map(|(currency, trade, original)| {
        serde_json::json!({"RequestId": "FUZZ", "PriceInfo": {"Price": {"Currency": currency,
            "TradePrice": trade, "OriginalPrice": original, "DiscountPrice": 0.0}, "Rules": {"Rule": []}}})
    })
}

/// Decodes `bytes` as every wire type; domain conversions of whatever decodes must not panic
/// and must keep what they were given.
fn decode_everything(bytes: &[u8]) -> Result<(), TestCaseError> {
    let _ = serde_json::from_slice::<ErrorBody>(bytes);
    let _ = serde_json::from_slice::<EmptyResponse>(bytes);
    let _ = serde_json::from_slice::<RenewInstanceResponse>(bytes);
    let _ = serde_json::from_slice::<DescribeRegionsResponse>(bytes);
    if let Ok(response) = serde_json::from_slice::<DescribeInstancesResponse>(bytes) {
        for record in response.instances.instance {
            check_instance(record)?;
        }
    }
    if let Ok(record) = serde_json::from_slice::<InstanceRecord>(bytes) {
        check_instance(record)?;
    }
    if let Ok(response) = serde_json::from_slice::<DescribeAutoRenewResponse>(bytes) {
        for record in response.instance_renew_attributes.instance_renew_attribute {
            let id = record.instance_id.clone();
            let attribute = AutoRenewAttribute::from(record);
            prop_assert_eq!(attribute.instance_id, id);
        }
    }
    if let Ok(record) = serde_json::from_slice::<RenewAttributeRecord>(bytes) {
        let _ = AutoRenewAttribute::from(record);
    }
    if let Ok(response) = serde_json::from_slice::<DescribeRenewalPriceResponse>(bytes) {
        let price = response.price_info.price;
        let money = Money::from_price(price.trade_price, price.currency.clone());
        let _ = money.to_string();
        let _ = money.as_f64();
    }
    Ok(())
}

fn check_instance(record: InstanceRecord) -> Result<(), TestCaseError> {
    let id = record.instance_id.clone();
    let charge = record.instance_charge_type.clone();
    match Instance::try_from(record) {
        Ok(instance) => {
            prop_assert_eq!(&instance.id, &id);
            // Charge types are matched without regard to case.
            prop_assert!(
                instance
                    .charge_type
                    .as_str()
                    .eq_ignore_ascii_case(charge.trim())
            );
        }
        Err(error) => {
            let text = error.to_string();
            prop_assert!(
                text.starts_with(&format!("instance {id}: ")),
                "{} does not name {}",
                text,
                id
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(fuzz_config(256))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_everything(&bytes)?;
    }

    #[test]
    fn decoding_arbitrary_json_never_panics(value in json_value()) {
        decode_everything(value.to_string().as_bytes())?;
    }

    #[test]
    fn decoding_fuzzed_auto_renew_and_price_answers_never_panics(
        value in prop_oneof![auto_renew_json(), price_json()]
    ) {
        decode_everything(value.to_string().as_bytes())?;
    }

    #[test]
    fn decoding_fuzzed_instance_pages_never_panics(value in describe_instances_json()) {
        let text = value.to_string();
        decode_everything(text.as_bytes())?;
        // Every prefix of a page (a truncated body) is refused or decoded, never a panic.
        let cut = text.len() / 2;
        if text.is_char_boundary(cut) {
            decode_everything(&text.as_bytes()[..cut])?;
        }
    }

    #[test]
    fn ecs_times_in_any_shape_never_panic(text in prop_oneof![prop::sample::select(VALUES).prop_map(str::to_owned), ".{0,40}", "[0-9+-]{1,7}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?Z"]) {
        if let Ok(t) = ecs_wire::time::parse(&text) {
            // What parses formats back into something that parses to the same minute.
            let again = ecs_wire::time::parse(&ecs_wire::time::format_seconds(t));
            prop_assert_eq!(again.ok(), Some(t.with_timezone(&Utc)).map(|t| {
                chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::seconds(1)).unwrap_or(t)
            }));
        }
    }
}

/// Generates `n` values from `strategy` with a seeded RNG (outside a proptest property).
fn sample<S: Strategy>(strategy: S, n: usize, seed: u64) -> Vec<S::Value> {
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &seed_bytes),
    );
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

/// One stub, many bodies: the client's whole path (HTTP, status, body limit, decode, classify,
/// scrub) on fuzzed answers, one request per body.
#[tokio::test]
async fn the_clients_decoding_path_survives_fuzzed_answers_end_to_end() {
    let n = (fuzz_cases(256) as usize / 4).clamp(48, 5000);
    let seed = std::env::var("ECS_RENEWD_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_SEED);
    let bodies: Vec<(u16, String)> = sample(
        (
            prop::sample::select(vec![200u16, 200, 200, 400, 403, 404, 429, 500, 502, 503]),
            prop_oneof![
                2 => json_value().prop_map(|v| v.to_string()),
                2 => describe_instances_json().prop_map(|v| v.to_string()),
                1 => prop_oneof![auto_renew_json(), price_json()].prop_map(|v| v.to_string()),
                1 => prop::collection::vec(any::<u8>(), 0..200)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
                1 => json_value().prop_map(|v| { let t = v.to_string(); t.chars().take(t.chars().count() / 2).collect() }),
            ],
        ),
        n,
        seed,
    );
    let served = Arc::new(bodies.clone());
    let stub = Stub::start(move |_, index| {
        let (status, body) = &served[index % served.len()];
        Reply::raw(*status, body)
    })
    .await;
    let client = client_for(&stub.url(), fast_retry(1));
    let mut outcomes = BTreeMap::<String, usize>::new();
    for (i, (status, body)) in bodies.iter().enumerate() {
        let result: Result<(), CloudError> = match i % 4 {
            0 => client
                .describe_instances_page("cn-hangzhou", &InstanceQuery::default(), None)
                .await
                .map(|_| ()),
            1 => client
                .renew_instance(
                    "cn-hangzhou",
                    "i-1",
                    1,
                    PeriodUnit::Month,
                    &ClientToken::new("fuzz-token").unwrap(),
                )
                .await
                .map(|_| ()),
            2 => client
                .describe_renewal_price("cn-hangzhou", "i-1", 1, PeriodUnit::Month)
                .await
                .map(|_| ()),
            _ => client.describe_regions("cn-hangzhou").await.map(|_| ()),
        };
        let label = match &result {
            Ok(()) => {
                assert!(
                    (200..300).contains(status),
                    "an HTTP {status} answer was taken for a success: {body:?}"
                );
                "ok".to_owned()
            }
            Err(error @ CloudError::Api(api)) => {
                assert!(!(200..300).contains(status), "{error}");
                assert_eq!(api.http_status, *status);
                assert!(!api.code.is_empty());
                format!("api/{}", error.class())
            }
            Err(error @ CloudError::Decode { http_status, .. }) => {
                assert_eq!(*http_status, *status, "{error}");
                "decode".to_owned()
            }
            Err(other) => panic!("body {i} ({status}, {body:?}): unexpected {other:?}"),
        };
        *outcomes.entry(label).or_default() += 1;
    }
    assert_eq!(stub.requests().len(), n, "one request per body");
    // The run reached both sides of the decoder.
    assert!(
        outcomes.get("decode").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    assert!(
        outcomes.keys().any(|k| k == "ok" || k.starts_with("api/")),
        "{outcomes:?}"
    );
}

// ------------------------------------------------------------------ (c) request parser, auth

const NOW: &str = "2026-03-10T04:00:00Z";
const STS: (&str, &str, &str) = ("STS.fuzz", "fuzz-sts-secret", "fuzz-sts-token");

fn now() -> DateTime<Utc> {
    ecs_wire::time::parse(NOW).unwrap()
}

/// The emulator's world: the harness key and an STS key.
fn world() -> World {
    let mut fleet = harness_fleet(NOW, 1000.0, vec![]);
    fleet.accounts[0].access_keys.push(AccessKeySpec {
        id: STS.0.into(),
        secret: STS.1.into(),
        security_token: Some(STS.2.into()),
        expires_at: None,
        denied_actions: vec![],
    });
    World::from_config(&fleet, now(), "fuzz").unwrap()
}

/// Parameters that get past the first checks often: the common ones with plausible and
/// broken values, plus random extras.
fn plausible_params() -> impl Strategy<Value = Vec<(String, String)>> {
    let pick = |values: Vec<&'static str>| {
        prop_oneof![
            12 => prop::sample::select(values).prop_map(|v| Some(v.to_owned())),
            1 => ".{0,8}".prop_map(Some),
            1 => Just(None),
        ]
    };
    (
        pick(vec!["DescribeInstances", "RenewInstance", "NoSuchAction"]),
        pick(vec![HARNESS_KEY.0, STS.0, "LTAIunknown"]),
        pick(vec!["HMAC-SHA1", "HMAC-SHA1", "HMAC-SHA256"]),
        pick(vec!["1.0", "1.0", "2.0"]),
        pick(vec![
            "2026-03-10T04:00:00Z",
            "2026-03-10T04:14:59Z",
            "2026-03-10T03:30:00Z",
            "2026-03-10T04:00Z",
            "1970-01-01T00:00:00Z",
            "+262143-12-31T23:59:59Z",
            "yesterday",
        ]),
        pick(vec!["2014-05-26"]),
        "[A-Za-z0-9+/=]{0,40}",
        "[0-9a-f]{0,32}",
        pick(vec![STS.2, "wrong-token"]),
        prop::collection::vec((".{0,10}", ".{0,10}"), 0..6),
    )
        .prop_map(
            |(action, key, method, version, timestamp, api, signature, nonce, token, extra)| {
                let mut params = Vec::new();
                let mut put = |name: &str, value: Option<String>| {
                    if let Some(value) = value {
                        params.push((name.to_owned(), value));
                    }
                };
                put("Action", action);
                put("AccessKeyId", key);
                put("SignatureMethod", method);
                put("SignatureVersion", version);
                put("Timestamp", timestamp);
                put("Version", api);
                put("Signature", Some(signature));
                put("SignatureNonce", Some(nonce));
                put("SecurityToken", token);
                params.extend(extra);
                params
            },
        )
}

fn form(pairs: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

/// Whether every check before the signature passes for these parameters.
fn reaches_the_signature_check(params: &Params, method: &str) -> bool {
    let get = |n| params.non_empty(n);
    [
        "Action",
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
        "Version",
    ]
    .iter()
    .all(|n| get(n).is_some())
        && get("SignatureMethod") == Some("HMAC-SHA1")
        && get("SignatureVersion") == Some("1.0")
        && ecs_wire::time::parse(get("Timestamp").unwrap_or_default())
            .is_ok_and(|t| (now() - t).abs() <= chrono::TimeDelta::minutes(15))
        && matches!(get("AccessKeyId"), Some(k) if k == HARNESS_KEY.0 || k == STS.0)
        && !method.is_empty()
}

proptest! {
    #![proptest_config(fuzz_config(256))]

    #[test]
    fn the_request_parser_takes_any_bytes(query in ".{0,200}", body in prop::collection::vec(any::<u8>(), 0..300)) {
        let params = Params::decode(Some(&query), Some(&body));
        // Query pairs come first, then body pairs; nothing is invented.
        let from_query = Params::decode(Some(&query), None).pairs().len();
        let from_body = Params::decode(None, Some(&body)).pairs().len();
        prop_assert_eq!(params.pairs().len(), from_query + from_body);
    }

    #[test]
    fn the_request_parser_decodes_what_a_form_encoder_wrote(pairs in prop::collection::vec((".{0,12}", ".{0,12}"), 0..10)) {
        let encoded = form(&pairs);
        let from_body = Params::decode(None, Some(encoded.as_bytes()));
        let from_query = Params::decode(Some(&encoded), None);
        prop_assert_eq!(from_body.pairs(), &pairs[..]);
        prop_assert_eq!(from_query.pairs(), &pairs[..]);
    }

    #[test]
    fn authentication_refuses_arbitrary_requests(
        method in prop_oneof![Just("POST".to_owned()), Just("GET".to_owned()), ".{0,6}"],
        params in prop_oneof![
            3 => plausible_params(),
            1 => prop::collection::vec((".{0,12}", ".{0,30}"), 0..12),
        ],
        raw in any::<bool>(),
    ) {
        let world = world();
        let mut nonces = NonceStore::default();
        // Either decoded from a form body, or from arbitrary bytes around it.
        let decoded = if raw {
            Params::decode(None, Some(form(&params).as_bytes()))
        } else {
            Params::decode(Some(&form(&params)), None)
        };
        let result = authenticate(&Request::rpc(&method, &decoded), &world, &mut nonces, now(), now());
        match result {
            Ok(caller) => prop_assert!(false, "an unsigned request got in as {:?}", caller),
            Err(fault) => {
                prop_assert!((400..500).contains(&fault.status), "{:?}", fault);
                prop_assert!(!fault.code.is_empty() && !fault.message.is_empty());
                if reaches_the_signature_check(&decoded, &method) {
                    prop_assert_eq!(fault.code.as_str(), "SignatureDoesNotMatch");
                }
            }
        }
    }
}

// ------------------------------------------------------------------ (d) signatures

/// Names the signer adds itself, which a random map must not carry.
const COMMON: &[&str] = &[
    "Action",
    "Version",
    "Format",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureNonce",
    "Timestamp",
    "SecurityToken",
    "RegionId",
    "Signature",
];

/// Parameters whose change is caught before the signature is checked (another code, still a
/// refusal): the timestamp window, the key lookup, method and version checks.
const CHECKED_BEFORE_SIGNATURE: &[&str] = &[
    "Timestamp",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
];

fn random_params() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        "[A-Za-z][A-Za-z0-9._-]{0,14}"
            .prop_filter("not a common parameter", |n| !COMMON.contains(&n.as_str())),
        prop_oneof![3 => ".{0,24}", 1 => "[ -~]{0,24}", 1 => Just(String::new())],
        0..8,
    )
}

/// Changes the character at `at` (modulo the length) of `value` (or adds one to an empty
/// value) to `to`, or to another character when `to` is what was there.
fn change_one_char(value: &str, at: usize, to: char) -> String {
    let mut chars: Vec<char> = value.chars().collect();
    if chars.is_empty() {
        return to.to_string();
    }
    let i = at % chars.len();
    chars[i] = if chars[i] == to {
        if to == 'a' { 'b' } else { 'a' }
    } else {
        to
    };
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(fuzz_config(256))]

    #[test]
    fn a_signed_request_verifies_and_any_changed_character_is_refused(
        params in random_params(),
        action in prop::sample::select(Action::ALL.to_vec()),
        sts in any::<bool>(),
        nonce in "[0-9a-f]{32}",
        which in any::<usize>(),
        at in any::<usize>(),
        to in any::<char>(),
    ) {
        let (key, secret, token) = if sts {
            (STS.0, STS.1, Some(STS.2))
        } else {
            (HARNESS_KEY.0, HARNESS_KEY.1, None)
        };
        let credentials = Credentials {
            access_key_id: key.into(),
            access_key_secret: Secret::new(secret),
            security_token: token.map(Secret::new),
            expiration: None,
        };
        let extra: Vec<(&str, String)> = params.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let signed = signed_parameters(action, "cn-hangzhou", &extra, &credentials, &nonce, now());
        let mut pairs = signed.parameters.clone();
        pairs.push(("Signature".into(), signed.signature.clone()));

        let world = world();
        let mut nonces = NonceStore::default();
        let decoded = Params::decode(None, Some(form(&pairs).as_bytes()));
        let caller = authenticate(&Request::rpc("POST", &decoded), &world, &mut nonces, now(), now());
        prop_assert!(caller.is_ok(), "a correctly signed request was refused: {:?}", caller.err());
        prop_assert_eq!(caller.unwrap().account, "main");

        // One character changed in one value (the signature included).
        let i = which % pairs.len();
        let name = pairs[i].0.clone();
        let mut changed = pairs.clone();
        changed[i].1 = change_one_char(&pairs[i].1, at, to);
        prop_assert_ne!(&changed[i].1, &pairs[i].1);
        let mut nonces = NonceStore::default();
        let decoded = Params::decode(None, Some(form(&changed).as_bytes()));
        match authenticate(&Request::rpc("POST", &decoded), &world, &mut nonces, now(), now()) {
            Ok(caller) => prop_assert!(false, "{} changed to {:?} was accepted as {:?}", name, changed[i].1, caller),
            Err(fault) => {
                if !CHECKED_BEFORE_SIGNATURE.contains(&name.as_str()) {
                    prop_assert_eq!(fault.code.as_str(), "SignatureDoesNotMatch", "{} changed: {:?}", name, fault);
                }
            }
        }

        // The same request signed with another secret is refused too.
        let wrong = ecs_wire::signer::sign(
            "POST",
            signed.parameters.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            &Secret::new(format!("{secret}x")),
        );
        let mut forged = signed.parameters.clone();
        forged.push(("Signature".into(), wrong.signature.clone()));
        let mut nonces = NonceStore::default();
        let decoded = Params::decode(None, Some(form(&forged).as_bytes()));
        let refused = authenticate(&Request::rpc("POST", &decoded), &world, &mut nonces, now(), now());
        prop_assert_eq!(refused.err().map(|f| f.code), Some("SignatureDoesNotMatch".to_owned()));
    }
}

#[test]
fn every_position_of_one_signature_is_guarded() {
    // Exhaustively, for one request: each character of every value, changed, is refused.
    let credentials = Credentials {
        access_key_id: HARNESS_KEY.0.into(),
        access_key_secret: Secret::new(HARNESS_KEY.1),
        security_token: None,
        expiration: None,
    };
    let signed = signed_parameters(
        Action::RenewInstance,
        "cn-hangzhou",
        &[
            ("InstanceId", "i-1".into()),
            ("ClientToken", "tok-1".into()),
        ],
        &credentials,
        "0123456789abcdef0123456789abcdef",
        now(),
    );
    let mut pairs = signed.parameters.clone();
    pairs.push(("Signature".into(), signed.signature.clone()));
    let world = world();
    let mut refused = 0;
    for i in 0..pairs.len() {
        for at in 0..pairs[i].1.chars().count() {
            let mut changed = pairs.clone();
            changed[i].1 = change_one_char(&pairs[i].1, at, 'Z');
            let decoded = Params::decode(None, Some(form(&changed).as_bytes()));
            let mut nonces = NonceStore::default();
            let result = authenticate(
                &Request::rpc("POST", &decoded),
                &world,
                &mut nonces,
                now(),
                now(),
            );
            assert!(
                result.is_err(),
                "{} changed to {:?}",
                pairs[i].0,
                changed[i].1
            );
            refused += 1;
        }
    }
    assert!(refused > 100, "{refused}");
    // And the unchanged request is accepted (so the refusals above mean something).
    let decoded = Params::decode(None, Some(form(&pairs).as_bytes()));
    assert!(
        authenticate(
            &Request::rpc("POST", &decoded),
            &world,
            &mut NonceStore::default(),
            now(),
            now()
        )
        .is_ok()
    );
}

// ------------------------------------------------------------------ regressions

/// Found by fuzzing: an `ms` term was added with an unchecked `+=`, so a sum past u64::MAX
/// seconds panicked inside `Config::parse` (`check-config` and a SIGHUP reload crashed).
#[test]
fn a_duration_sum_past_u64_seconds_is_a_located_problem() {
    let text = "[scan]\nhorizon = \"18446744073709551615s 1000ms\"\n[[accounts]]\nname = \"main\"\n[accounts.credentials]\nsource = \"env\"\n";
    let parsed = std::panic::catch_unwind(|| {
        Config::parse(text, Path::new("fuzz.toml"), &Environment::default()).map(|_| ())
    });
    let answer = parsed.expect("Config::parse panicked");
    let problems = match answer {
        Err(ConfigError::Invalid { problems }) => problems,
        other => panic!("expected a located problem, got {other:?}"),
    };
    assert_eq!(
        problems[0].to_string(),
        "fuzz.toml:2:11: scan.horizon: \"18446744073709551615s 1000ms\" is not a duration: write a number and a unit, e.g. \"90s\", \"15m\", \"6h\", \"10d\" or \"1h 30m\""
    );
}

/// Found by fuzzing: `describe_auto_renew` paged until it had read `TotalCount` records, so an
/// answer claiming a huge `TotalCount` while repeating the same record paged for ever. A batch
/// names at most its own ids, so it now reads no more than that, and a page of repeats is an error.
#[tokio::test]
async fn a_lying_total_count_ends_auto_renew_paging() {
    let stub = Stub::start(|_, _| {
        Reply::json(
            200,
            serde_json::json!({"RequestId": "R", "TotalCount": u64::MAX, "PageNumber": 1, "PageSize": 100,
                "InstanceRenewAttributes": {"InstanceRenewAttribute": [
                    {"InstanceId": "i-1", "AutoRenewEnabled": false, "Duration": 0, "PeriodUnit": "", "RenewalStatus": "Normal"}]}}),
        )
    })
    .await;
    let client = client_for(&stub.url(), fast_retry(1));
    let finished = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.describe_auto_renew("cn-hangzhou", &["i-1".to_owned()]),
    )
    .await;
    let records = finished
        .unwrap_or_else(|_| panic!("still paging after {} requests", stub.requests().len()))
        .expect("one id asked, one record read");
    assert_eq!(records.len(), 1);
    assert_eq!(stub.requests().len(), 1, "a batch of one reads one page");
    let two = ["i-1".to_owned(), "i-2".to_owned()];
    let repeated = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.describe_auto_renew("cn-hangzhou", &two),
    )
    .await
    .expect("paging ends");
    let error = repeated.expect_err("a page of repeats is not an answer");
    assert!(
        error.to_string().contains("repeated records already read"),
        "{error}"
    );
    assert_eq!(
        stub.requests().len(),
        3,
        "gave up on the first repeated page"
    );
}
