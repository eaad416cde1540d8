//! The ECS wire format for the six actions ecs-renewd uses (docs/ecs-api.md §3), shared by the client
//! (which decodes it) and the emulator (which encodes it), plus the parsed domain values the rest
//! of the daemon works with. Decoding is lenient about absent fields and strict about types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::closed_enum;
use crate::time;

closed_enum! {
    /// How an instance is billed.
    pub enum ChargeType {
        /// Subscription: paid per period in advance, expires unless renewed.
        PrePaid => "PrePaid",
        /// Pay-as-you-go: never expires, cannot be renewed.
        PostPaid => "PostPaid",
    }
}

closed_enum! {
    /// The auto-renew switch of a subscription instance (docs/ecs-api.md §3.4).
    pub enum RenewalStatus {
        /// The provider renews it automatically before expiry.
        AutoRenewal => "AutoRenewal",
        /// Manual renewal expected.
        Normal => "Normal",
        /// Meant to lapse; only a last reminder before expiry.
        NotRenewal => "NotRenewal",
    }
}

closed_enum! {
    /// The unit of a renewal period or an auto-renew duration.
    pub enum PeriodUnit {
        /// China site only.
        Week => "Week",
        /// The default unit.
        Month => "Month",
        /// Auto-renew durations and renewal prices only.
        Year => "Year",
    }
}

/// Accepts a JSON string or number (`OrderId` is documented as a string; be tolerant).
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(match Either::deserialize(d)? {
        Either::Text(text) => text,
        Either::Number(number) => number.to_string(),
    })
}

/// An error response body (docs/ecs-api.md §4.1). Field names vary in case between gateways.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    /// The request id, for support tickets.
    #[serde(default, alias = "requestId")]
    pub request_id: String,
    /// The host that answered.
    #[serde(default, alias = "hostId")]
    pub host_id: String,
    /// The error code, e.g. `Throttling`.
    #[serde(default, alias = "code")]
    pub code: String,
    /// Human-readable message.
    #[serde(default, alias = "message")]
    pub message: String,
    /// A troubleshooting link.
    #[serde(default, alias = "recommend", skip_serializing_if = "String::is_empty")]
    pub recommend: String,
}

/// `DescribeInstances` response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeInstancesResponse {
    /// Request id.
    #[serde(default)]
    pub request_id: String,
    /// Total matches (meaningless with NextToken paging, but present).
    #[serde(default)]
    pub total_count: u64,
    /// Page number (legacy paging).
    #[serde(default)]
    pub page_number: u64,
    /// Page size (legacy paging).
    #[serde(default)]
    pub page_size: u64,
    /// The cursor for the next page; empty on the last page.
    #[serde(default)]
    pub next_token: String,
    /// The page of instances.
    #[serde(default)]
    pub instances: InstanceSet,
}

/// `Instances: {Instance: [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceSet {
    /// The instances on this page; empty when none match or the field is absent.
    #[serde(default)]
    pub instance: Vec<InstanceRecord>,
}

/// One instance as DescribeInstances reports it (the fields ecs-renewd uses).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceRecord {
    /// `i-...`.
    pub instance_id: String,
    /// Display name.
    #[serde(default)]
    pub instance_name: String,
    /// Region id.
    #[serde(default)]
    pub region_id: String,
    /// Zone id.
    #[serde(default)]
    pub zone_id: String,
    /// `Running`, `Stopped`, ...
    #[serde(default)]
    pub status: String,
    /// `PrePaid` or `PostPaid`.
    #[serde(default)]
    pub instance_charge_type: String,
    /// Expiry, minute precision.
    #[serde(default)]
    pub expired_time: String,
    /// Creation time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub creation_time: String,
    /// e.g. `ecs.g6.large`.
    #[serde(default)]
    pub instance_type: String,
    /// e.g. `ecs.g6`.
    #[serde(default)]
    pub instance_type_family: String,
    /// Resource group id.
    #[serde(default)]
    pub resource_group_id: String,
    /// `month`, `week`, ... (empty for PostPaid).
    #[serde(default)]
    pub sale_cycle: String,
    /// The instance's tags; empty when it has none.
    #[serde(default)]
    pub tags: TagSet,
    /// Security groups.
    #[serde(default)]
    pub security_group_ids: SecurityGroupIdSet,
    /// Locks (e.g. `financial` once expired).
    #[serde(default)]
    pub operation_locks: OperationLocks,
}

/// `Tags: {Tag: [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagSet {
    /// One record per tag; empty when the field is absent.
    #[serde(default)]
    pub tag: Vec<TagRecord>,
}

/// One tag.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagRecord {
    /// The tag's key; required in every tag record.
    pub tag_key: String,
    /// The tag's value; empty when the tag has none or the field is absent.
    #[serde(default)]
    pub tag_value: String,
}

/// `SecurityGroupIds: {SecurityGroupId: [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecurityGroupIdSet {
    /// The ids of the security groups the instance belongs to (`sg-...`).
    #[serde(default)]
    pub security_group_id: Vec<String>,
}

/// `OperationLocks: {LockReason: [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OperationLocks {
    /// Why the instance is locked; empty when it is not (expired: `financial`).
    #[serde(default)]
    pub lock_reason: Vec<LockRecord>,
}

/// One lock.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LockRecord {
    /// `financial`, `security`, ...
    pub lock_reason: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lock_msg: String,
}

/// `DescribeInstanceAutoRenewAttribute` response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeAutoRenewResponse {
    /// Request id.
    #[serde(default)]
    pub request_id: String,
    /// Total matches.
    #[serde(default)]
    pub total_count: u64,
    /// Page number.
    #[serde(default)]
    pub page_number: u64,
    /// Page size.
    #[serde(default)]
    pub page_size: u64,
    /// The auto-renew attributes on this page, one record per instance.
    #[serde(default)]
    pub instance_renew_attributes: RenewAttributeSet,
}

/// `InstanceRenewAttributes: {InstanceRenewAttribute: [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RenewAttributeSet {
    /// One record per instance; empty when the field is absent.
    #[serde(default)]
    pub instance_renew_attribute: Vec<RenewAttributeRecord>,
}

/// One instance's auto-renew attributes as reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RenewAttributeRecord {
    /// Instance id.
    pub instance_id: String,
    /// Whether auto-renew is on.
    #[serde(default)]
    pub auto_renew_enabled: bool,
    /// Auto-renew length per cycle (0 when off).
    #[serde(default)]
    pub duration: i64,
    /// Unit of `duration` (casing varies).
    #[serde(default)]
    pub period_unit: String,
    /// `AutoRenewal`, `Normal` or `NotRenewal` (absent in older responses).
    #[serde(default)]
    pub renewal_status: String,
}

/// `RenewInstance` response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RenewInstanceResponse {
    /// Request id.
    #[serde(default)]
    pub request_id: String,
    /// The order that was charged.
    #[serde(deserialize_with = "string_or_number")]
    pub order_id: String,
}

/// A response that carries only a request id (`ModifyInstanceAutoRenewAttribute`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EmptyResponse {
    /// Request id.
    #[serde(default)]
    pub request_id: String,
}

/// `DescribeRenewalPrice` response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeRenewalPriceResponse {
    /// Request id.
    #[serde(default)]
    pub request_id: String,
    /// The quote for the requested renewal; required (no default).
    pub price_info: PriceInfo,
}

/// `PriceInfo: {Price: {...}}`, the quote in a DescribeRenewalPrice answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PriceInfo {
    /// The amounts (list, discount, charged) and their currency.
    pub price: PriceRecord,
}

/// `PriceInfo.Price`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PriceRecord {
    /// `CNY` or `USD`.
    pub currency: String,
    /// List price.
    #[serde(default)]
    pub original_price: f64,
    /// The amount taken off the list price (an amount, not a rate); 0 when absent.
    #[serde(default)]
    pub discount_price: f64,
    /// What is charged: original − discount.
    pub trade_price: f64,
}

/// `DescribeRegions` response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeRegionsResponse {
    /// Request id.
    #[serde(default)]
    pub request_id: String,
    /// Every region the service lists; empty when the field is absent.
    #[serde(default)]
    pub regions: RegionSet,
}

/// `Regions: {Region: [...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegionSet {
    /// One record per region; empty when the field is absent.
    #[serde(default)]
    pub region: Vec<RegionRecord>,
}

/// One region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegionRecord {
    /// e.g. `cn-hangzhou`.
    pub region_id: String,
    /// e.g. `ecs.aliyuncs.com`.
    #[serde(default)]
    pub region_endpoint: String,
    /// Localized name.
    #[serde(default)]
    pub local_name: String,
    /// `available` or `soldOut`; often absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
}

/// An instance as the daemon works with it: parsed times and closed enums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `i-...`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Region id.
    pub region: String,
    /// Zone id.
    pub zone: String,
    /// `Running`, `Stopped`, ...
    pub status: String,
    /// Billing method.
    pub charge_type: ChargeType,
    /// When the paid period ends.
    pub expired_time: DateTime<Utc>,
    /// e.g. `ecs.g6.large`.
    pub instance_type: String,
    /// e.g. `ecs.g6`.
    pub instance_type_family: String,
    /// Resource group id (may be empty).
    pub resource_group_id: String,
    /// Tags as (key, value).
    pub tags: Vec<(String, String)>,
    /// Security group ids.
    pub security_group_ids: Vec<String>,
    /// Operation lock reasons (e.g. `financial`).
    pub lock_reasons: Vec<String>,
}

/// A field of an instance record that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceDecodeError {
    /// `ExpiredTime` in no known form.
    #[error("instance {instance_id}: ExpiredTime: {source}")]
    ExpiredTime {
        /// Which instance.
        instance_id: String,
        /// Why the `ExpiredTime` text did not parse.
        #[source]
        source: time::InvalidTime,
    },
    /// An unknown `InstanceChargeType`.
    #[error("instance {instance_id}: unknown InstanceChargeType {value:?}")]
    ChargeType {
        /// Which instance.
        instance_id: String,
        /// The `InstanceChargeType` text as received.
        value: String,
    },
}

impl TryFrom<InstanceRecord> for Instance {
    type Error = InstanceDecodeError;

    fn try_from(record: InstanceRecord) -> Result<Self, Self::Error> {
        let charge_type = ChargeType::parse(&record.instance_charge_type).ok_or_else(|| {
            InstanceDecodeError::ChargeType {
                instance_id: record.instance_id.clone(),
                value: record.instance_charge_type.clone(),
            }
        })?;
        let expired_time = time::parse(&record.expired_time).map_err(|source| {
            InstanceDecodeError::ExpiredTime {
                instance_id: record.instance_id.clone(),
                source,
            }
        })?;
        let instance_type_family = if record.instance_type_family.is_empty() {
            type_family_of(&record.instance_type)
        } else {
            record.instance_type_family
        };
        Ok(Instance {
            id: record.instance_id,
            name: record.instance_name,
            region: record.region_id,
            zone: record.zone_id,
            status: record.status,
            charge_type,
            expired_time,
            instance_type: record.instance_type,
            instance_type_family,
            resource_group_id: record.resource_group_id,
            tags: record
                .tags
                .tag
                .into_iter()
                .map(|t| (t.tag_key, t.tag_value))
                .collect(),
            security_group_ids: record.security_group_ids.security_group_id,
            lock_reasons: record
                .operation_locks
                .lock_reason
                .into_iter()
                .map(|l| l.lock_reason)
                .collect(),
        })
    }
}

/// `ecs.g6.large` → `ecs.g6` (the family is the type without its size suffix).
pub fn type_family_of(instance_type: &str) -> String {
    match instance_type.rsplit_once('.') {
        Some((family, _size)) if family.contains('.') => family.to_owned(),
        _ => instance_type.to_owned(),
    }
}

/// An instance's auto-renew attributes as the daemon works with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoRenewAttribute {
    /// Instance id.
    pub instance_id: String,
    /// The auto-renew switch; from `AutoRenewEnabled` when `RenewalStatus` is absent.
    pub renewal_status: RenewalStatus,
    /// Length per automatic renewal (0 when not auto-renewing).
    pub duration: u32,
    /// Unit of `duration`, when reported.
    pub period_unit: Option<PeriodUnit>,
}

impl From<RenewAttributeRecord> for AutoRenewAttribute {
    fn from(record: RenewAttributeRecord) -> Self {
        // Older responses carry only AutoRenewEnabled (see the seed guide's sample output).
        let renewal_status =
            RenewalStatus::parse(&record.renewal_status).unwrap_or(if record.auto_renew_enabled {
                RenewalStatus::AutoRenewal
            } else {
                RenewalStatus::Normal
            });
        AutoRenewAttribute {
            instance_id: record.instance_id,
            renewal_status,
            duration: u32::try_from(record.duration).unwrap_or(0),
            period_unit: PeriodUnit::parse(&record.period_unit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DescribeInstances answer in the shape of a real capture (docs/ecs-api.md §3.1, TROUBLE).
    const REAL_SHAPE: &str = r#"{
      "PageNumber": 1, "TotalCount": 2, "PageSize": 100, "NextToken": "",
      "RequestId": "473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E",
      "Instances": {"Instance": [
        {"InstanceId": "i-bp67acfmxazb4p****", "InstanceName": "web-1", "RegionId": "cn-hangzhou",
         "ZoneId": "cn-hangzhou-g", "Status": "Running", "InstanceChargeType": "PrePaid",
         "ExpiredTime": "2024-04-14T16:00Z", "CreationTime": "2024-03-14T22:32Z",
         "InstanceType": "ecs.g6.large", "InstanceTypeFamily": "ecs.g6", "SaleCycle": "month",
         "Tags": {"Tag": [{"TagKey": "env", "TagValue": "prod"}]},
         "SecurityGroupIds": {"SecurityGroupId": ["sg-1"]},
         "OperationLocks": {"LockReason": []}, "VpcAttributes": {"VpcId": "vpc-1"}},
        {"InstanceId": "i-2", "InstanceChargeType": "PostPaid", "ExpiredTime": "2099-12-31T15:59Z",
         "InstanceType": "ecs.c7.xlarge",
         "OperationLocks": {"LockReason": [{"LockReason": "financial"}]}}
      ]}
    }"#;

    #[test]
    fn decodes_the_real_describe_instances_shape() {
        let response: DescribeInstancesResponse = serde_json::from_str(REAL_SHAPE).unwrap();
        assert_eq!(response.next_token, "");
        let instances: Vec<Instance> = response
            .instances
            .instance
            .into_iter()
            .map(|r| Instance::try_from(r).unwrap())
            .collect();
        assert_eq!(instances[0].charge_type, ChargeType::PrePaid);
        assert_eq!(
            instances[0].expired_time,
            time::parse("2024-04-14T16:00Z").unwrap()
        );
        assert_eq!(instances[0].tags, vec![("env".into(), "prod".into())]);
        assert_eq!(instances[1].charge_type, ChargeType::PostPaid);
        assert_eq!(instances[1].instance_type_family, "ecs.c7");
        assert_eq!(instances[1].lock_reasons, vec!["financial".to_string()]);
    }

    #[test]
    fn auto_renew_attributes_from_the_seed_guide_sample_output() {
        let body = r#"{"InstanceRenewAttributes":{"InstanceRenewAttribute":[{"Duration":1,"InstanceId":"i-1111","AutoRenewEnabled":true},{"Duration":0,"InstanceId":"i-2222","AutoRenewEnabled":false}]},"RequestId":"7F4D14B0-D0D2-48C7-B310-B1DF713D4331"}"#;
        let response: DescribeAutoRenewResponse = serde_json::from_str(body).unwrap();
        let attrs: Vec<AutoRenewAttribute> = response
            .instance_renew_attributes
            .instance_renew_attribute
            .into_iter()
            .map(Into::into)
            .collect();
        assert_eq!(attrs[0].renewal_status, RenewalStatus::AutoRenewal);
        assert_eq!(attrs[1].renewal_status, RenewalStatus::Normal);
        let lower = r#"{"InstanceId":"i-3","AutoRenewEnabled":true,"Duration":1,"PeriodUnit":"week","RenewalStatus":"AutoRenewal"}"#;
        let attr: AutoRenewAttribute = serde_json::from_str::<RenewAttributeRecord>(lower)
            .unwrap()
            .into();
        assert_eq!(attr.period_unit, Some(PeriodUnit::Week));
    }

    #[test]
    fn order_id_may_be_a_string_or_a_number() {
        let a: RenewInstanceResponse =
            serde_json::from_str(r#"{"RequestId":"r","OrderId":"1234567890"}"#).unwrap();
        let b: RenewInstanceResponse =
            serde_json::from_str(r#"{"RequestId":"r","OrderId":1234567890}"#).unwrap();
        assert_eq!(a.order_id, b.order_id);
    }

    #[test]
    fn a_wrong_type_is_an_error_not_a_default() {
        let wrong = r#"{"RequestId":"r","TotalCount":"many","Instances":{"Instance":[]}}"#;
        assert!(serde_json::from_str::<DescribeInstancesResponse>(wrong).is_err());
    }
}

/// BSS `QueryAccountBalance` response (docs/v3-and-bss.md §2.2). Amounts are strings with two
/// decimals ("10000.00", "-11.19"), read as exact decimals, never floats.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueryAccountBalanceResponse {
    /// `"200"` on success (BSS paths differ: check `success`).
    #[serde(default)]
    pub code: String,
    /// Human-readable status.
    #[serde(default)]
    pub message: String,
    /// The request id.
    #[serde(default)]
    pub request_id: String,
    /// Whether the call succeeded (some BSS paths answer HTTP 200 with `false`).
    #[serde(default)]
    pub success: bool,
    /// The balance, absent on failure.
    #[serde(default)]
    pub data: Option<AccountBalance>,
}

/// The `Data` of `QueryAccountBalance`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountBalance {
    /// Available credit: cash plus credit limit minus what is unsettled; may be negative.
    pub available_amount: String,
    /// Cash balance.
    #[serde(default)]
    pub available_cash_amount: String,
    /// Credit-control limit.
    #[serde(default)]
    pub credit_amount: String,
    /// MYbank credit line.
    #[serde(default)]
    pub mybank_credit_amount: String,
    /// `CNY`, `USD` or `JPY`.
    pub currency: String,
    /// Ecosystem (reseller) quota; newer, often absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_limit: Option<String>,
}

/// Resource Manager `ListAccounts` (2020-03-31) response, one page (docs/sts-and-directories.md
/// §5.1).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAccountsResponse {
    /// The request id.
    #[serde(default)]
    pub request_id: String,
    /// Members in the whole directory (every page).
    pub total_count: u64,
    /// This page's number, from 1.
    #[serde(default)]
    pub page_number: u64,
    /// Entries per page asked for.
    #[serde(default)]
    pub page_size: u64,
    /// The page's members.
    #[serde(default)]
    pub accounts: DirectoryAccounts,
}

/// The `Accounts` wrapper of `ListAccounts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DirectoryAccounts {
    /// The members on the page.
    #[serde(default)]
    pub account: Vec<DirectoryAccount>,
}

/// One member account of a Resource Directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DirectoryAccount {
    /// The member's account id (its uid, 16 digits).
    pub account_id: String,
    /// The name shown for it (free text, may change).
    #[serde(default)]
    pub display_name: String,
    /// `CloudAccount` (invited) or `ResourceAccount` (created in the directory).
    #[serde(default, rename = "Type")]
    pub kind: String,
    /// `CreateSuccess`, `InviteSuccess`, `PromoteSuccess`, the `Promote*` and `Create*` steps.
    #[serde(default)]
    pub status: String,
    /// The folder it sits in.
    #[serde(default)]
    pub folder_id: String,
    /// `rd-…/r-…/fd-…/…/<AccountId>`: every folder above it.
    #[serde(default)]
    pub resource_directory_path: String,
    /// `invited` or `created`.
    #[serde(default)]
    pub join_method: String,
}
