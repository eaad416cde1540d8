//! One typed async function per ECS action ecs-renewd uses (docs/ecs-api.md §3), on top of
//! [`EcsClient::call`]: batching of instance ids (≤100 per call), complete paging, the DryRun
//! permission probe, and conversion of wire records into domain values.

use chrono::{DateTime, Utc};

use super::action::Action;
use super::client::EcsClient;
use super::error::CloudError;
use super::time;
use super::types::{
    AutoRenewAttribute, ChargeType, DescribeAutoRenewResponse, DescribeInstancesResponse,
    DescribeRegionsResponse, DescribeRenewalPriceResponse, EmptyResponse, Instance,
    InstanceDecodeError, PeriodUnit, RegionRecord, RenewInstanceResponse, RenewalStatus,
};
use crate::money::Money;

/// The most ids one call may carry.
pub const MAX_IDS_PER_CALL: usize = 100;

/// Page size for DescribeInstances (the maximum).
pub const PAGE_SIZE: usize = 100;

/// A guard against a service that never ends a paging sequence.
const MAX_PAGES: usize = 100_000;
/// The largest renewal price believed (a trillion currency units): far above any real quote,
/// far below where cents stop fitting an i64.
const MAX_CREDIBLE_PRICE: f64 = 1e12;

/// What DescribeInstances should match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceQuery {
    /// Only this billing method.
    pub charge_type: Option<ChargeType>,
    /// Only instances expiring in [start, end] (sent at minute precision, widened outwards).
    pub expiry_window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Only these ids (≤100).
    pub instance_ids: Option<Vec<String>>,
    /// Only instances carrying all these tags.
    pub tags: Vec<(String, String)>,
    /// Only members of this security group.
    pub security_group_id: Option<String>,
}

impl InstanceQuery {
    /// Subscription instances expiring between `start` and `end`.
    pub fn expiring_prepaid(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        InstanceQuery {
            charge_type: Some(ChargeType::PrePaid),
            expiry_window: Some((start, end)),
            ..InstanceQuery::default()
        }
    }

    fn parameters(&self, region: &str) -> Vec<(&'static str, String)> {
        let mut params = vec![("RegionId", region.to_owned())];
        if let Some(charge_type) = self.charge_type {
            params.push(("InstanceChargeType", charge_type.as_str().to_owned()));
        }
        if let Some((start, end)) = self.expiry_window {
            // The old SDKs' fixed positions 3 and 4 (docs/ecs-api.md §3.1); the service matches by Key.
            params.push(("Filter.3.Key", "ExpiredStartTime".into()));
            params.push((
                "Filter.3.Value",
                time::format_minutes(time::floor_minute(start)),
            ));
            params.push(("Filter.4.Key", "ExpiredEndTime".into()));
            params.push((
                "Filter.4.Value",
                time::format_minutes(time::ceil_minute(end)),
            ));
        }
        if let Some(ids) = &self.instance_ids {
            params.push((
                "InstanceIds",
                serde_json::to_string(ids).expect("a list of strings always serializes"),
            ));
        }
        const TAG_KEYS: [&str; 20] = [
            "Tag.1.Key",
            "Tag.2.Key",
            "Tag.3.Key",
            "Tag.4.Key",
            "Tag.5.Key",
            "Tag.6.Key",
            "Tag.7.Key",
            "Tag.8.Key",
            "Tag.9.Key",
            "Tag.10.Key",
            "Tag.11.Key",
            "Tag.12.Key",
            "Tag.13.Key",
            "Tag.14.Key",
            "Tag.15.Key",
            "Tag.16.Key",
            "Tag.17.Key",
            "Tag.18.Key",
            "Tag.19.Key",
            "Tag.20.Key",
        ];
        const TAG_VALUES: [&str; 20] = [
            "Tag.1.Value",
            "Tag.2.Value",
            "Tag.3.Value",
            "Tag.4.Value",
            "Tag.5.Value",
            "Tag.6.Value",
            "Tag.7.Value",
            "Tag.8.Value",
            "Tag.9.Value",
            "Tag.10.Value",
            "Tag.11.Value",
            "Tag.12.Value",
            "Tag.13.Value",
            "Tag.14.Value",
            "Tag.15.Value",
            "Tag.16.Value",
            "Tag.17.Value",
            "Tag.18.Value",
            "Tag.19.Value",
            "Tag.20.Value",
        ];
        for (i, (key, value)) in self.tags.iter().take(20).enumerate() {
            params.push((TAG_KEYS[i], key.clone()));
            params.push((TAG_VALUES[i], value.clone()));
        }
        if let Some(group) = &self.security_group_id {
            params.push(("SecurityGroupId", group.clone()));
        }
        params
    }
}

/// One page of DescribeInstances.
#[derive(Debug, Clone)]
pub struct InstancePage {
    /// The instances on this page.
    pub instances: Vec<Instance>,
    /// Records that could not be understood (an unparsable `ExpiredTime`, say). They are kept
    /// apart rather than failing the page, so one bad record cannot hide a region's fleet, and
    /// the caller surfaces them.
    pub undecodable: Vec<InstanceDecodeError>,
    /// The cursor for the next page; `None` on the last page.
    pub next_token: Option<String>,
    /// The request id.
    pub request_id: String,
}

/// Every instance a query matched, across pages.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Every instance record that could be decoded, in the order the pages listed them.
    pub instances: Vec<Instance>,
    /// Records that could not be understood.
    pub undecodable: Vec<InstanceDecodeError>,
}

/// A successful renewal: the charge went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewReceipt {
    /// The order id.
    pub order_id: String,
    /// The request id.
    pub request_id: String,
}

/// A quoted renewal price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceQuote {
    /// What would be charged.
    pub trade_price: Money,
    /// The list price.
    pub original_price: Money,
    /// The request id.
    pub request_id: String,
}

/// The auto-renew state to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AutoRenewTarget {
    /// The auto-renew switch to set: `AutoRenewal`, `Normal` or `NotRenewal`.
    pub status: RenewalStatus,
    /// Length per automatic renewal (sent with `AutoRenewal` only).
    pub duration: u32,
    /// Unit of `duration`.
    pub unit: PeriodUnit,
}

/// The result of one batch of a multi-id call.
#[derive(Debug)]
pub struct BatchResult {
    /// The ids in the batch.
    pub instance_ids: Vec<String>,
    /// The request id, or why the batch failed.
    pub result: Result<String, CloudError>,
}

/// An idempotency token for RenewInstance: ≤64 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientToken(String);

impl ClientToken {
    /// Checks the service's rules (docs/ecs-api.md §6).
    pub fn new(value: impl Into<String>) -> Result<Self, String> {
        let value = value.into();
        if value.is_empty() || value.len() > 64 || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "ClientToken {value:?} must be 1 to 64 printable ASCII characters"
            ));
        }
        Ok(ClientToken(value))
    }

    /// The token's text, as sent in RenewInstance's ClientToken parameter.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl EcsClient {
    /// One page of DescribeInstances (NextToken paging, 100 per page).
    pub async fn describe_instances_page(
        &self,
        region: &str,
        query: &InstanceQuery,
        next_token: Option<&str>,
    ) -> Result<InstancePage, CloudError> {
        if let Some(ids) = &query.instance_ids
            && ids.len() > MAX_IDS_PER_CALL
        {
            return Err(CloudError::Refused {
                action: Action::DescribeInstances,
                region: region.to_owned(),
                detail: format!(
                    "{} instance ids in one call; at most {MAX_IDS_PER_CALL}",
                    ids.len()
                ),
            });
        }
        let mut params = query.parameters(region);
        params.push(("MaxResults", PAGE_SIZE.to_string()));
        if let Some(token) = next_token {
            params.push(("NextToken", token.to_owned()));
        }
        let answer = self
            .call::<DescribeInstancesResponse>(Action::DescribeInstances, region, &params)
            .await?;
        let body = answer.body;
        let mut instances = Vec::with_capacity(body.instances.instance.len());
        let mut undecodable = Vec::new();
        for record in body.instances.instance {
            match Instance::try_from(record) {
                Ok(instance) => instances.push(instance),
                Err(error) => undecodable.push(error),
            }
        }
        let next_token = (!body.next_token.is_empty()).then_some(body.next_token);
        Ok(InstancePage {
            instances,
            undecodable,
            next_token,
            request_id: body.request_id,
        })
    }

    /// Every page of DescribeInstances, handed to `each_page` as it arrives (so a large fleet
    /// need not be held in memory at once).
    pub async fn for_each_instance_page(
        &self,
        region: &str,
        query: &InstanceQuery,
        mut each_page: impl FnMut(Vec<Instance>, Vec<InstanceDecodeError>),
    ) -> Result<usize, CloudError> {
        let mut token: Option<String> = None;
        let mut seen_tokens = std::collections::HashSet::new();
        let mut total = 0;
        for _ in 0..MAX_PAGES {
            let page = self
                .describe_instances_page(region, query, token.as_deref())
                .await?;
            total += page.instances.len();
            each_page(page.instances, page.undecodable);
            match page.next_token {
                None => return Ok(total),
                Some(next) => {
                    if !seen_tokens.insert(next.clone()) {
                        return Err(CloudError::Decode {
                            action: Action::DescribeInstances,
                            region: region.to_owned(),
                            http_status: 200,
                            request_id: page.request_id,
                            detail: format!(
                                "NextToken {next:?} came back twice; paging would never end"
                            ),
                            snippet: String::new(),
                        });
                    }
                    token = Some(next);
                }
            }
        }
        Err(CloudError::Decode {
            action: Action::DescribeInstances,
            region: region.to_owned(),
            http_status: 200,
            request_id: "none".into(),
            detail: format!("more than {MAX_PAGES} pages"),
            snippet: String::new(),
        })
    }

    /// Every instance matching `query`, all pages.
    pub async fn describe_instances(
        &self,
        region: &str,
        query: &InstanceQuery,
    ) -> Result<Listing, CloudError> {
        let mut all = Listing::default();
        self.for_each_instance_page(region, query, |instances, undecodable| {
            all.instances.extend(instances);
            all.undecodable.extend(undecodable);
        })
        .await?;
        Ok(all)
    }

    /// The given instances, re-read by id in batches of ≤100. Ids the service does not know
    /// (released instances) are simply absent from the result.
    pub async fn describe_instances_by_id(
        &self,
        region: &str,
        ids: &[String],
    ) -> Result<Listing, CloudError> {
        let mut all = Listing::default();
        for batch in ids.chunks(MAX_IDS_PER_CALL) {
            let query = InstanceQuery {
                instance_ids: Some(batch.to_vec()),
                ..InstanceQuery::default()
            };
            self.for_each_instance_page(region, &query, |instances, undecodable| {
                all.instances.extend(instances);
                all.undecodable.extend(undecodable);
            })
            .await?;
        }
        Ok(all)
    }

    /// Proves that this identity may call DescribeInstances in `region`: a RAM user without
    /// permission gets an empty list, not an error (docs/ecs-api.md §3.1), so an empty scan is only
    /// trusted after this probe. `Ok` when the service answers `DryRunOperation`.
    pub async fn probe_describe_permission(&self, region: &str) -> Result<(), CloudError> {
        let params = [
            ("RegionId", region.to_owned()),
            ("DryRun", "true".to_owned()),
            ("MaxResults", "10".to_owned()),
        ];
        match self
            .call::<DescribeInstancesResponse>(Action::DescribeInstances, region, &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(CloudError::Api(api)) if api.code == "DryRunOperation" => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Auto-renew attributes of subscription instances, ≤100 ids per call.
    pub async fn describe_auto_renew(
        &self,
        region: &str,
        ids: &[String],
    ) -> Result<Vec<AutoRenewAttribute>, CloudError> {
        let mut all = Vec::with_capacity(ids.len());
        for batch in ids.chunks(MAX_IDS_PER_CALL) {
            let joined = batch.join(",");
            let mut page_number = 1u64;
            let mut seen = std::collections::HashSet::with_capacity(batch.len());
            loop {
                let params = [
                    ("RegionId", region.to_owned()),
                    ("InstanceId", joined.clone()),
                    // The default page size is 10: without this a batch of 100 would come back
                    // a tenth read.
                    ("PageSize", MAX_IDS_PER_CALL.to_string()),
                    ("PageNumber", page_number.to_string()),
                ];
                let answer = self
                    .call::<DescribeAutoRenewResponse>(
                        Action::DescribeInstanceAutoRenewAttribute,
                        region,
                        &params,
                    )
                    .await?;
                let body = answer.body;
                let records = body.instance_renew_attributes.instance_renew_attribute;
                let got = records.len();
                let before = seen.len();
                seen.extend(records.iter().map(|record| record.instance_id.clone()));
                if got > 0 && seen.len() == before {
                    // A page of records already read: a TotalCount that overstates what
                    // exists would otherwise keep us paging for ever.
                    return Err(CloudError::Decode {
                        action: Action::DescribeInstanceAutoRenewAttribute,
                        region: region.to_owned(),
                        http_status: 200,
                        request_id: body.request_id.clone(),
                        detail: format!(
                            "page {page_number} repeated records already read while TotalCount \
                             claimed {}; paging would never end",
                            body.total_count
                        ),
                        snippet: String::new(),
                    });
                }
                all.extend(records.into_iter().map(AutoRenewAttribute::from));
                // The batch names at most `batch.len()` instances, so no honest answer holds
                // more, whatever TotalCount says.
                let expected = body.total_count.min(batch.len() as u64);
                if got == 0 || seen.len() as u64 >= expected {
                    break;
                }
                page_number += 1;
            }
        }
        Ok(all)
    }

    /// Sets auto-renew attributes, ≤100 ids per call; one result per batch.
    pub async fn modify_auto_renew(
        &self,
        region: &str,
        ids: &[String],
        target: AutoRenewTarget,
    ) -> Vec<BatchResult> {
        let mut results = Vec::new();
        for batch in ids.chunks(MAX_IDS_PER_CALL) {
            let mut params = vec![
                ("RegionId", region.to_owned()),
                ("InstanceId", batch.join(",")),
                ("RenewalStatus", target.status.as_str().to_owned()),
                (
                    "AutoRenew",
                    (target.status == RenewalStatus::AutoRenewal).to_string(),
                ),
            ];
            // As Terraform does: a length only goes with AutoRenewal.
            if target.status == RenewalStatus::AutoRenewal {
                params.push(("Duration", target.duration.to_string()));
                params.push(("PeriodUnit", target.unit.as_str().to_owned()));
            }
            let result = self
                .call::<EmptyResponse>(Action::ModifyInstanceAutoRenewAttribute, region, &params)
                .await
                .map(|answer| answer.body.request_id);
            results.push(BatchResult {
                instance_ids: batch.to_vec(),
                result,
            });
        }
        results
    }

    /// Renews one subscription instance: this charges money. The ClientToken makes every
    /// repeat of the same renewal (retries here, later passes, after a crash) charge once.
    pub async fn renew_instance(
        &self,
        region: &str,
        instance_id: &str,
        period: u32,
        unit: PeriodUnit,
        client_token: &ClientToken,
    ) -> Result<RenewReceipt, CloudError> {
        let params = [
            ("RegionId", region.to_owned()),
            ("InstanceId", instance_id.to_owned()),
            ("Period", period.to_string()),
            ("PeriodUnit", unit.as_str().to_owned()),
            ("ClientToken", client_token.as_str().to_owned()),
        ];
        let answer = self
            .call::<RenewInstanceResponse>(Action::RenewInstance, region, &params)
            .await?;
        Ok(RenewReceipt {
            order_id: answer.body.order_id,
            request_id: answer.body.request_id,
        })
    }

    /// Prices a renewal. DescribeRenewalPrice takes `PriceUnit` Month or Year only.
    pub async fn describe_renewal_price(
        &self,
        region: &str,
        instance_id: &str,
        period: u32,
        unit: PeriodUnit,
    ) -> Result<PriceQuote, CloudError> {
        if unit == PeriodUnit::Week {
            return Err(CloudError::Refused {
                action: Action::DescribeRenewalPrice,
                region: region.to_owned(),
                detail:
                    "DescribeRenewalPrice cannot price weekly renewals (PriceUnit is Month or Year)"
                        .into(),
            });
        }
        let params = [
            ("RegionId", region.to_owned()),
            ("ResourceId", instance_id.to_owned()),
            ("ResourceType", "instance".to_owned()),
            ("Period", period.to_string()),
            ("PriceUnit", unit.as_str().to_owned()),
        ];
        let answer = self
            .call::<DescribeRenewalPriceResponse>(Action::DescribeRenewalPrice, region, &params)
            .await?;
        let price = answer.body.price_info.price;
        for (field, value) in [
            ("TradePrice", price.trade_price),
            ("OriginalPrice", price.original_price),
        ] {
            if !(0.0..=MAX_CREDIBLE_PRICE).contains(&value) {
                // A quote no limit can be checked against: the caller treats the renewal as
                // unpriced, which every price and spend limit holds.
                return Err(CloudError::Decode {
                    action: Action::DescribeRenewalPrice,
                    region: region.to_owned(),
                    http_status: 200,
                    request_id: answer.body.request_id,
                    detail: format!(
                        "{field} {value} for {instance_id} is not a credible price \
                         (negative, not a number, or above {MAX_CREDIBLE_PRICE})"
                    ),
                    snippet: String::new(),
                });
            }
        }
        Ok(PriceQuote {
            trade_price: Money::from_price(price.trade_price, price.currency.clone()),
            original_price: Money::from_price(price.original_price, price.currency),
            request_id: answer.body.request_id,
        })
    }

    /// Every region the account can use, asked through `via_region`'s endpoint.
    pub async fn describe_regions(
        &self,
        via_region: &str,
    ) -> Result<Vec<RegionRecord>, CloudError> {
        let params = [
            ("RegionId", via_region.to_owned()),
            ("InstanceChargeType", "PrePaid".to_owned()),
        ];
        let answer = self
            .call::<DescribeRegionsResponse>(Action::DescribeRegions, via_region, &params)
            .await?;
        Ok(answer.body.regions.region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_window_is_sent_at_minute_precision_widened_outwards() {
        let start = time::parse("2024-04-01T10:20:30Z").unwrap();
        let end = time::parse("2024-04-15T10:20:30Z").unwrap();
        let params = InstanceQuery::expiring_prepaid(start, end).parameters("cn-beijing");
        let get = |name: &str| {
            params
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("Filter.3.Key"), Some("ExpiredStartTime"));
        assert_eq!(get("Filter.3.Value"), Some("2024-04-01T10:20Z"));
        assert_eq!(get("Filter.4.Key"), Some("ExpiredEndTime"));
        assert_eq!(get("Filter.4.Value"), Some("2024-04-15T10:21Z"));
        assert_eq!(get("InstanceChargeType"), Some("PrePaid"));
    }

    #[test]
    fn instance_ids_travel_as_a_json_array() {
        let query = InstanceQuery {
            instance_ids: Some(vec!["i-a".into(), "i-b".into()]),
            ..InstanceQuery::default()
        };
        let params = query.parameters("r");
        assert!(params.contains(&("InstanceIds", r#"["i-a","i-b"]"#.to_owned())));
    }

    #[test]
    fn client_tokens_follow_the_service_rules() {
        assert!(ClientToken::new("a".repeat(64)).is_ok());
        assert!(ClientToken::new("a".repeat(65)).is_err());
        assert!(ClientToken::new("").is_err());
        assert!(ClientToken::new("has space").is_err());
        assert!(ClientToken::new("中").is_err());
    }
}
