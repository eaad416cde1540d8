//! The actions as the emulator answers them (six of ECS, and BSS `QueryAccountBalance`): parameter validation with the documented
//! codes and statuses (docs/ecs-api.md §3), then the world's rules, then the real response shapes
//! built from the shared wire types.

use std::collections::BTreeMap;
use std::ops::Bound;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::instance::{Instance, Lifecycle};
use super::request::{Caller, Params};
use super::settings::{Settings, UnitCase};
use super::world::{Fault, World};
use ecs_wire::Action;
use ecs_wire::periods;
use ecs_wire::time;
use ecs_wire::types::{
    ChargeType, DescribeAutoRenewResponse, DescribeInstancesResponse, DescribeRegionsResponse,
    DescribeRenewalPriceResponse, InstanceRecord, InstanceSet, LockRecord, OperationLocks,
    PeriodUnit, PriceInfo, PriceRecord, RegionRecord, RegionSet, RenewAttributeRecord,
    RenewAttributeSet, RenewalStatus, SecurityGroupIdSet, TagRecord, TagSet,
};

const MAX_IDS: usize = 100;

fn missing(name: &str) -> Fault {
    Fault::new(
        400,
        "MissingParameter",
        format!(
            "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
        ),
    )
}

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, Fault> {
    params.non_empty(name).ok_or_else(|| missing(name))
}

fn to_value<T: serde::Serialize>(body: &T) -> Value {
    serde_json::to_value(body).expect("wire types always serialize")
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn forbidden() -> Fault {
    Fault::new(
        403,
        "Forbidden.RAM",
        "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
    )
}

/// Runs one action for `caller` at emulated time `now`.
pub fn dispatch(
    world: &mut World,
    caller: &Caller,
    action: Action,
    params: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Fault> {
    if action == Action::QueryAccountBalance && caller.denied_actions.contains(&action) {
        return Err(Fault::new(
            400,
            "NotAuthorized",
            "This API is not authorized for caller.",
        ));
    }
    if action != Action::DescribeInstances && caller.denied_actions.contains(&action) {
        return Err(forbidden());
    }
    match action {
        Action::DescribeInstances => describe_instances(world, caller, params, now),
        Action::DescribeInstanceAutoRenewAttribute => {
            describe_auto_renew(world, caller, params, now)
        }
        Action::ModifyInstanceAutoRenewAttribute => modify_auto_renew(world, caller, params, now),
        Action::RenewInstance => renew_instance(world, caller, params, now),
        Action::DescribeRenewalPrice => describe_renewal_price(world, caller, params, now),
        Action::DescribeRegions => Ok(describe_regions(world)),
        Action::QueryAccountBalance => query_account_balance(world, caller),
        Action::ListAccounts => crate::directory::list_accounts(world, caller, params),
    }
}

/// A filter over instances built from DescribeInstances parameters.
struct InstanceFilter {
    charge_type: Option<ChargeType>,
    status: Option<String>,
    expired_start: Option<DateTime<Utc>>,
    expired_end: Option<DateTime<Utc>>,
    tags: Vec<(String, Option<String>)>,
    security_group: Option<String>,
    zone: Option<String>,
    name_pattern: Option<String>,
    instance_type: Option<String>,
    type_family: Option<String>,
    resource_group: Option<String>,
    lock_reason: Option<String>,
    inclusive: bool,
}

impl InstanceFilter {
    fn matches(&self, instance: &Instance, world: &World, now: DateTime<Utc>) -> bool {
        self.charge_type.is_none_or(|c| c == instance.charge_type)
            && self.matches_status(instance, world, now)
            && self.matches_expiry(instance.shown_expiry(now))
            && self.matches_attributes(instance)
    }

    /// `Status` and `LockReason`.
    fn matches_status(&self, instance: &Instance, world: &World, now: DateTime<Utc>) -> bool {
        let (status, locks) = instance.status(now, &world.settings);
        self.status
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case(status))
            && self
                .lock_reason
                .as_deref()
                .is_none_or(|r| locks.contains(&r))
    }

    /// `ExpiredStartTime` and `ExpiredEndTime`, inclusive or not (a setting: UNCERTAIN).
    fn matches_expiry(&self, expiry: DateTime<Utc>) -> bool {
        let after_start = |start: DateTime<Utc>| {
            if self.inclusive {
                expiry >= start
            } else {
                expiry > start
            }
        };
        let before_end = |end: DateTime<Utc>| {
            if self.inclusive {
                expiry <= end
            } else {
                expiry < end
            }
        };
        self.expired_start.is_none_or(after_start) && self.expired_end.is_none_or(before_end)
    }

    /// Tags (every one given must match), security group, zone, type, family, resource
    /// group and name.
    fn matches_attributes(&self, instance: &Instance) -> bool {
        let tags = self.tags.iter().all(|(key, value)| {
            instance
                .tags
                .iter()
                .any(|(k, v)| k == key && value.as_deref().is_none_or(|want| want == v))
        });
        let family = ecs_wire::types::type_family_of(&instance.instance_type);
        tags && self
            .security_group
            .as_deref()
            .is_none_or(|g| instance.security_groups.iter().any(|s| s == g))
            && self.zone.as_deref().is_none_or(|z| z == instance.zone)
            && self
                .instance_type
                .as_deref()
                .is_none_or(|t| t == instance.instance_type)
            && self.type_family.as_deref().is_none_or(|f| f == family)
            && self
                .resource_group
                .as_deref()
                .is_none_or(|g| g == instance.resource_group_id)
            && self
                .name_pattern
                .as_ref()
                .is_none_or(|pattern| wildcard_match(pattern, &instance.name))
    }
}

/// `*` matches any run of characters.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

fn filter_time(value: &str, reject_seconds: bool) -> Result<DateTime<Utc>, Fault> {
    let invalid = || {
        Fault::new(
            404,
            "InvalidFilterKey.NotFound",
            format!("The filter value {value:?} is not a time in the form yyyy-MM-ddTHH:mmZ."),
        )
    };
    let has_seconds = value.trim_end_matches('Z').matches(':').count() >= 2;
    if has_seconds && reject_seconds {
        return Err(invalid());
    }
    time::parse(value).map_err(|_| invalid())
}

fn page_size(params: &Params, name: &str, default: usize) -> Result<usize, Fault> {
    match params.non_empty(name) {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| n.min(MAX_IDS))
            .ok_or_else(|| {
                Fault::new(
                    400,
                    &format!("InvalidParameter.{name}"),
                    format!("The specified {name} is not valid."),
                )
            }),
    }
}

fn instance_record(instance: &Instance, world: &World, now: DateTime<Utc>) -> InstanceRecord {
    let (status, locks) = instance.status(now, &world.settings);
    InstanceRecord {
        instance_id: instance.id.clone(),
        instance_name: instance.name.clone(),
        region_id: instance.region.clone(),
        zone_id: instance.zone.clone(),
        status: status.into(),
        instance_charge_type: instance.charge_type.as_str().into(),
        expired_time: match instance.charge_type {
            ChargeType::PostPaid => time::POSTPAID_EXPIRED_TIME.into(),
            ChargeType::PrePaid => time::format_minutes(instance.shown_expiry(now)),
        },
        creation_time: String::new(),
        instance_type: instance.instance_type.clone(),
        instance_type_family: ecs_wire::types::type_family_of(&instance.instance_type),
        resource_group_id: instance.resource_group_id.clone(),
        sale_cycle: match instance.charge_type {
            ChargeType::PostPaid => String::new(),
            ChargeType::PrePaid => "month".into(),
        },
        tags: TagSet {
            tag: instance
                .tags
                .iter()
                .map(|(k, v)| TagRecord {
                    tag_key: k.clone(),
                    tag_value: v.clone(),
                })
                .collect(),
        },
        security_group_ids: SecurityGroupIdSet {
            security_group_id: instance.security_groups.clone(),
        },
        operation_locks: OperationLocks {
            lock_reason: locks
                .into_iter()
                .map(|r| LockRecord {
                    lock_reason: r.into(),
                    lock_msg: String::new(),
                })
                .collect(),
        },
    }
}

/// DescribeInstances' parameters, validated in the order ECS checks them.
struct InstancesRequest<'a> {
    region: &'a str,
    filter: InstanceFilter,
    /// The `InstanceIds` JSON array, when given.
    ids: Option<Vec<String>>,
    paging: Paging,
}

/// Which page of DescribeInstances results to answer.
struct Paging {
    size: usize,
    /// 1 in NextToken mode.
    page_number: usize,
    /// The instance id a NextToken continues after.
    after: Option<String>,
}

/// One page of matching instances, with the counts the response reports.
struct InstancesPage {
    records: Vec<InstanceRecord>,
    /// Matches on all pages.
    total: usize,
    /// Whether matches follow this page (then a NextToken is answered).
    more: bool,
}

impl<'a> InstancesRequest<'a> {
    /// Validates the parameters; `denied` decides a DryRun's answer, so a caller without
    /// permission learns it from a DryRun too.
    fn parse(world: &World, params: &'a Params, denied: bool) -> Result<Self, Fault> {
        let region = required(params, "RegionId")?;
        reject_dry_run(world, params, denied)?;
        let filter = InstanceFilter::from_params(params, &world.settings)?;
        let ids = instance_ids(params)?;
        let paging = Paging::from_params(params)?;
        Ok(InstancesRequest {
            region,
            filter,
            ids,
            paging,
        })
    }
}

/// A DryRun request never runs: it fails with Forbidden.RAM for a denied caller, otherwise with
/// DryRunOperation (at the configured status).
fn reject_dry_run(world: &World, params: &Params, denied: bool) -> Result<(), Fault> {
    let dry_run = params
        .non_empty("DryRun")
        .and_then(parse_bool)
        .unwrap_or(false);
    if !dry_run {
        return Ok(());
    }
    Err(if denied {
        forbidden()
    } else {
        Fault::new(
            world.settings.dry_run_status,
            "DryRunOperation",
            "Request validation has been passed with DryRun flag set.",
        )
    })
}

/// The optional `InstanceChargeType` parameter.
fn charge_type_param(params: &Params) -> Result<Option<ChargeType>, Fault> {
    match params.non_empty("InstanceChargeType") {
        None => Ok(None),
        Some(text) => Ok(Some(ChargeType::parse(text).ok_or_else(|| {
            Fault::new(
                404,
                "InvalidInstanceChargeType.NotFound",
                format!("The InstanceChargeType {text:?} does not exist."),
            )
        })?)),
    }
}

/// The optional `InstanceIds` JSON array (at most 100 ids).
fn instance_ids(params: &Params) -> Result<Option<Vec<String>>, Fault> {
    match params.get("InstanceIds") {
        None | Some("") => Ok(None),
        Some(text) => {
            let ids: Vec<String> = serde_json::from_str(text).map_err(|_| {
                Fault::new(
                    400,
                    "InvalidInstanceIds.Malformed",
                    "The specified InstanceIds is not a valid JSON array.",
                )
            })?;
            if ids.len() > MAX_IDS {
                return Err(Fault::new(
                    400,
                    "InvalidInstanceIds.ValueNotSupported",
                    "The specified InstanceIds has more than 100 ids.",
                ));
            }
            Ok(Some(ids))
        }
    }
}

impl InstanceFilter {
    /// Builds the filter from DescribeInstances' parameters: the plain ones, then the
    /// `Filter.N` keys, then the `Tag.N` pairs.
    fn from_params(params: &Params, settings: &Settings) -> Result<Self, Fault> {
        let charge_type = charge_type_param(params)?;
        let mut filter = InstanceFilter {
            charge_type,
            status: params.non_empty("Status").map(str::to_owned),
            expired_start: None,
            expired_end: None,
            tags: Vec::new(),
            security_group: params.non_empty("SecurityGroupId").map(str::to_owned),
            zone: params.non_empty("ZoneId").map(str::to_owned),
            name_pattern: params.non_empty("InstanceName").map(str::to_owned),
            instance_type: params.non_empty("InstanceType").map(str::to_owned),
            type_family: params.non_empty("InstanceTypeFamily").map(str::to_owned),
            resource_group: params.non_empty("ResourceGroupId").map(str::to_owned),
            lock_reason: params.non_empty("LockReason").map(str::to_owned),
            inclusive: settings.expiry_filter_inclusive,
        };
        filter.apply_filter_keys(params, settings.reject_filter_seconds)?;
        filter.tags = tag_filters(params);
        Ok(filter)
    }

    /// Applies the `Filter.N.Key`/`Filter.N.Value` pairs in the order they came; only the
    /// expiry times filter, creation times are accepted and ignored, other keys fail.
    fn apply_filter_keys(&mut self, params: &Params, reject_seconds: bool) -> Result<(), Fault> {
        for (name, key) in params.pairs() {
            // Filters are matched by Key, whatever N is (the Tea SDK numbers them 1..n).
            let Some(n) = name
                .strip_prefix("Filter.")
                .and_then(|r| r.strip_suffix(".Key"))
            else {
                continue;
            };
            let value = params.get(&format!("Filter.{n}.Value")).unwrap_or_default();
            match key.as_str() {
                "ExpiredStartTime" => {
                    self.expired_start = Some(filter_time(value, reject_seconds)?)
                }
                "ExpiredEndTime" => self.expired_end = Some(filter_time(value, reject_seconds)?),
                "CreationStartTime" | "CreationEndTime" => {}
                other => {
                    return Err(Fault::new(
                        404,
                        "InvalidFilterKey.NotFound",
                        format!("The filter key {other:?} is not supported."),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The `Tag.N.Key`/`Tag.N.Value` pairs for N in 1..=20 (either case of `key`/`value`); a tag
/// without a value matches any value.
fn tag_filters(params: &Params) -> Vec<(String, Option<String>)> {
    let mut tags = Vec::new();
    for n in 1..=20 {
        let key = params
            .non_empty(&format!("Tag.{n}.Key"))
            .or_else(|| params.non_empty(&format!("Tag.{n}.key")));
        if let Some(key) = key {
            let value = params
                .get(&format!("Tag.{n}.Value"))
                .or_else(|| params.get(&format!("Tag.{n}.value")));
            tags.push((key.to_owned(), value.map(str::to_owned)));
        }
    }
    tags
}

impl Paging {
    /// Reads the paging parameters: NextToken mode (NextToken or MaxResults given) ignores
    /// PageSize and PageNumber; page-number mode validates them.
    fn from_params(params: &Params) -> Result<Self, Fault> {
        let token_mode =
            params.non_empty("NextToken").is_some() || params.non_empty("MaxResults").is_some();
        let size = if token_mode {
            // Below 10 or unset → 10; above 100 → 100 (the current SDK doc).
            params
                .non_empty("MaxResults")
                .and_then(|m| m.parse::<usize>().ok())
                .map(|m| m.clamp(10, MAX_IDS))
                .unwrap_or(10)
        } else {
            page_size(params, "PageSize", 10)?
        };
        let page_number = match params.non_empty("PageNumber") {
            Some(text) if !token_mode => text
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    Fault::new(
                        400,
                        "InvalidParameter.PageNumber",
                        "The specified PageNumber is not valid.",
                    )
                })?,
            _ => 1,
        };
        let after = next_token_param(params)?;
        Ok(Paging {
            size,
            page_number,
            after,
        })
    }
}

/// The instance id an `nt.`-prefixed NextToken continues after.
fn next_token_param(params: &Params) -> Result<Option<String>, Fault> {
    match params.non_empty("NextToken") {
        None => Ok(None),
        Some(token) => Ok(Some(
            token
                .strip_prefix("nt.")
                .ok_or_else(|| {
                    Fault::new(
                        400,
                        "InvalidParameter.NextToken",
                        "The specified NextToken is not valid.",
                    )
                })?
                .to_owned(),
        )),
    }
}

/// The instances to consider, in id order, after the NextToken's id: the requested ids
/// (sorted, deduplicated, unknown ones dropped) or the whole source.
fn candidates<'a>(
    source: &'a BTreeMap<String, Instance>,
    ids: Option<&'a [String]>,
    after: Option<&'a str>,
) -> Box<dyn Iterator<Item = &'a Instance> + 'a> {
    match ids {
        Some(ids) => {
            let mut wanted: Vec<&String> = ids.iter().collect();
            wanted.sort();
            wanted.dedup();
            Box::new(
                wanted
                    .into_iter()
                    .filter(move |id| match after {
                        Some(a) => id.as_str() > a,
                        None => true,
                    })
                    .filter_map(|id| source.get(id)),
            )
        }
        None => {
            let lower = match after {
                Some(id) => Bound::Excluded(id.to_owned()),
                None => Bound::Unbounded,
            };
            Box::new(source.range((lower, Bound::Unbounded)).map(|(_, i)| i))
        }
    }
}

/// Walks the unreleased candidates that match the filter, counting them all and keeping the
/// requested page's records.
fn find_page(
    world: &World,
    source: &BTreeMap<String, Instance>,
    request: &InstancesRequest,
    now: DateTime<Utc>,
) -> InstancesPage {
    let paging = &request.paging;
    let visible = |i: &&Instance| i.lifecycle(now, &world.settings) != Lifecycle::Released;
    let skip = (paging.page_number - 1) * paging.size;
    let mut page = InstancesPage {
        records: Vec::with_capacity(paging.size),
        total: 0,
        more: false,
    };
    for instance in candidates(source, request.ids.as_deref(), paging.after.as_deref())
        .filter(visible)
        .filter(|i| request.filter.matches(i, world, now))
    {
        page.total += 1;
        if page.total <= skip {
            continue;
        }
        if page.records.len() < paging.size {
            page.records.push(instance_record(instance, world, now));
        } else {
            page.more = true;
        }
    }
    page
}

/// The DescribeInstances body for a page; a NextToken names the page's last id when more
/// matches follow.
fn instances_response(page: InstancesPage, paging: &Paging) -> Value {
    let next_token = match (page.more, page.records.last()) {
        (true, Some(last)) => format!("nt.{}", last.instance_id),
        _ => String::new(),
    };
    to_value(&DescribeInstancesResponse {
        request_id: String::new(),
        total_count: page.total as u64,
        page_number: paging.page_number as u64,
        page_size: paging.size as u64,
        next_token,
        instances: InstanceSet {
            instance: page.records,
        },
    })
}

/// DescribeInstances: a caller denied this action passes validation but sees no instances.
fn describe_instances(
    world: &World,
    caller: &Caller,
    params: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Fault> {
    let denied = caller.denied_actions.contains(&Action::DescribeInstances);
    let request = InstancesRequest::parse(world, params, denied)?;
    let empty = BTreeMap::new();
    let source = if denied {
        &empty
    } else {
        world
            .source(&caller.account, request.region)
            .unwrap_or(&empty)
    };
    let page = find_page(world, source, &request, now);
    Ok(instances_response(page, &request.paging))
}

fn comma_ids(params: &Params) -> Result<Vec<String>, Fault> {
    let ids: Vec<String> = params
        .get("InstanceId")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if ids.len() > MAX_IDS {
        return Err(Fault::new(
            403,
            "InvalidParameter.ToManyInstanceIds",
            "InstanceId should be less than 100.",
        ));
    }
    Ok(ids)
}

/// An optional parameter read by `parse`: absent (or empty) is `None`, a value `parse` refuses
/// is `fault(value)`.
fn optional<T>(
    params: &Params,
    name: &str,
    parse: impl FnOnce(&str) -> Option<T>,
    fault: impl FnOnce(&str) -> Fault,
) -> Result<Option<T>, Fault> {
    match params.non_empty(name) {
        None => Ok(None),
        Some(text) => parse(text).map(Some).ok_or_else(|| fault(text)),
    }
}

fn unit_text(unit: PeriodUnit, case: UnitCase) -> String {
    match case {
        UnitCase::Title => unit.as_str().to_owned(),
        UnitCase::Lower => unit.as_str().to_ascii_lowercase(),
    }
}

fn describe_auto_renew(
    world: &World,
    caller: &Caller,
    params: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Fault> {
    let region = required(params, "RegionId")?;
    let ids = comma_ids(params)?;
    let status_filter = optional(params, "RenewalStatus", RenewalStatus::parse, |text| {
        Fault::new(
            403,
            "InvalidParameter.RenewalStatus",
            format!("The specified RenewalStatus {text:?} is not valid."),
        )
    })?;
    if ids.is_empty() && status_filter.is_none() {
        return Err(Fault::new(
            403,
            "MissingParameter.InstanceId",
            "InstanceId and RenewalStatus may not both be empty.",
        ));
    }
    let size = page_size(params, "PageSize", 10)?;
    let page_number = params
        .non_empty("PageNumber")
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let mut selected = attribute_subjects(world, caller, region, &ids, now)?;
    if let Some(status) = status_filter {
        selected.retain(|i| i.renewal_status == status);
    }
    let total = selected.len();
    let case = world.settings.auto_renew_unit_case;
    let records: Vec<RenewAttributeRecord> = selected
        .into_iter()
        .skip((page_number - 1) * size)
        .take(size)
        .map(|i| attribute_record(i, case))
        .collect();
    Ok(to_value(&DescribeAutoRenewResponse {
        request_id: String::new(),
        total_count: total as u64,
        page_number: page_number as u64,
        page_size: size as u64,
        instance_renew_attributes: RenewAttributeSet {
            instance_renew_attribute: records,
        },
    }))
}

/// The instances whose attributes are asked: those named (each must be a subscription
/// instance of the caller in `region`), or every subscription instance of the region.
fn attribute_subjects<'w>(
    world: &'w World,
    caller: &Caller,
    region: &str,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<&'w Instance>, Fault> {
    if ids.is_empty() {
        let source = world.source(&caller.account, region);
        return Ok(source
            .into_iter()
            .flat_map(|s| s.values())
            .filter(|i| {
                i.charge_type == ChargeType::PrePaid
                    && i.lifecycle(now, &world.settings) != Lifecycle::Released
            })
            .collect());
    }
    let mut selected = Vec::with_capacity(ids.len());
    for id in ids {
        let instance = world
            .instance(&caller.account, id, now)
            .filter(|i| i.region == region)
            .ok_or_else(|| Fault::invalid_instance_id(id))?;
        if instance.charge_type == ChargeType::PostPaid {
            return Err(Fault::charge_type_violation(
                "Pay-As-You-Go instances do not support this operation.",
            ));
        }
        selected.push(instance);
    }
    Ok(selected)
}

/// One instance's auto-renew attributes as the service writes them.
fn attribute_record(i: &Instance, case: UnitCase) -> RenewAttributeRecord {
    let on = i.renewal_status == RenewalStatus::AutoRenewal;
    RenewAttributeRecord {
        instance_id: i.id.clone(),
        auto_renew_enabled: on,
        duration: if on {
            i64::from(i.auto_renew_duration)
        } else {
            0
        },
        period_unit: unit_text(i.auto_renew_unit, case),
        renewal_status: i.renewal_status.as_str().into(),
    }
}

fn modify_auto_renew(
    world: &mut World,
    caller: &Caller,
    params: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Fault> {
    let region = required(params, "RegionId")?;
    let ids = comma_ids(params)?;
    if ids.is_empty() {
        return Err(Fault::new(
            403,
            "MissingParameter.InstanceId",
            "The input parameter \"InstanceId\" that is mandatory for processing this request is not supplied.",
        ));
    }
    let auto_renew = optional(params, "AutoRenew", parse_bool, |text| {
        Fault::new(
            400,
            "InvalidParameter.AutoRenew",
            format!("The specified AutoRenew {text:?} is not a boolean."),
        )
    })?
    .unwrap_or(false);
    // RenewalStatus takes precedence over AutoRenew.
    let status = optional(params, "RenewalStatus", RenewalStatus::parse, |text| {
        Fault::new(
            403,
            "InvalidParameter.RenewalStatus",
            format!("The specified RenewalStatus {text:?} is not valid."),
        )
    })?
    .unwrap_or(if auto_renew {
        RenewalStatus::AutoRenewal
    } else {
        RenewalStatus::Normal
    });
    let unit = optional(params, "PeriodUnit", PeriodUnit::parse, |text| {
        Fault::new(
            403,
            "InvalidPeriodUnit.ValueNotSupported",
            format!("The specified PeriodUnit {text:?} is not supported."),
        )
    })?
    .unwrap_or(PeriodUnit::Month);
    let duration = optional(
        params,
        "Duration",
        |t| t.parse::<u32>().ok(),
        |text| {
            Fault::new(
                403,
                "InvalidParameter.Duration",
                format!("The specified Duration {text:?} is not valid."),
            )
        },
    )?;
    if status == RenewalStatus::AutoRenewal {
        check_auto_renew_length(world, duration.unwrap_or(1), unit)?;
    }
    for id in &ids {
        if world
            .instance(&caller.account, id, now)
            .is_none_or(|i| i.region != region)
        {
            return Err(Fault::invalid_instance_id(id));
        }
    }
    world.set_auto_renew(&caller.account, &ids, status, duration, unit, now)?;
    Ok(serde_json::json!({}))
}

/// An auto-renew duration and unit the site allows.
fn check_auto_renew_length(world: &World, value: u32, unit: PeriodUnit) -> Result<(), Fault> {
    let rule = world.settings.auto_renew_rule();
    if rule.values(unit).is_empty() {
        return Err(Fault::new(
            403,
            "InvalidPeriodUnit.ValueNotSupported",
            format!("The PeriodUnit {unit} is not supported on this site."),
        ));
    }
    if !rule.allows(value, unit) {
        return Err(Fault::new(
            403,
            "InvalidParameter.Duration",
            format!(
                "The specified Duration {value} is not valid for {unit} (allowed {}).",
                rule.describe()
            ),
        ));
    }
    Ok(())
}

fn renew_instance(
    world: &mut World,
    caller: &Caller,
    params: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Fault> {
    let instance_id = required(params, "InstanceId")?;
    let period_text = params.non_empty("Period").ok_or_else(|| {
        Fault::new(
            400,
            "MissingParamter",
            "The specified parameter \"Period\" is not null.",
        )
    })?;
    let period: u32 = period_text.parse().map_err(|_| {
        Fault::new(
            400,
            "InvalidPeriod",
            format!("The specified period {period_text:?} is not valid."),
        )
    })?;
    let unit = match params.non_empty("PeriodUnit") {
        None => PeriodUnit::Month,
        Some(text) => PeriodUnit::parse(text)
            .filter(|u| !world.settings.renew_rule().values(*u).is_empty())
            .ok_or_else(|| {
                Fault::new(
                    400,
                    "InvalidPeriodUnit.ValueNotSupported",
                    format!("The specified PeriodUnit {text:?} is not supported."),
                )
            })?,
    };
    let token = params.non_empty("ClientToken");
    if let Some(token) = token
        && (token.len() > 64 || !token.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(Fault::new(
            400,
            "InvalidClientToken.ValueNotSupported",
            "The ClientToken provided is invalid.",
        ));
    }
    let order_id = world.renew(&caller.account, instance_id, period, unit, token, now)?;
    Ok(serde_json::json!({ "OrderId": order_id }))
}

fn describe_renewal_price(
    world: &World,
    caller: &Caller,
    params: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Fault> {
    required(params, "RegionId")?;
    let resource_id = required(params, "ResourceId")?;
    if let Some(kind) = params.non_empty("ResourceType")
        && kind != "instance"
    {
        return Err(Fault::new(
            400,
            "InvalidResourceType.ValueNotSupported",
            format!("The ResourceType {kind:?} is not supported."),
        ));
    }
    let priceable = |t: &str| PeriodUnit::parse(t).filter(|u| *u != PeriodUnit::Week);
    let unit = optional(params, "PriceUnit", priceable, |text| {
        Fault::new(
            400,
            "InvalidPriceUnit.ValueNotSupported",
            format!("The PriceUnit {text:?} is not supported."),
        )
    })?
    .unwrap_or(PeriodUnit::Month);
    let period = optional(
        params,
        "Period",
        |t| t.parse::<u32>().ok(),
        |text| {
            Fault::new(
                400,
                "InvalidPeriod",
                format!("The specified period {text:?} is not valid."),
            )
        },
    )?
    .unwrap_or(1);
    if !periods::price_rule().allows(period, unit) {
        return Err(Fault::new(
            400,
            "InvalidPeriod",
            format!(
                "The period {period} {unit} cannot be priced (allowed {}).",
                periods::price_rule().describe()
            ),
        ));
    }
    let instance = world
        .instance(&caller.account, resource_id, now)
        .ok_or_else(|| {
            Fault::new(
                404,
                "InvalidInstanceId.NotFound",
                format!("The specified InstanceId does not exist: {resource_id}."),
            )
        })?;
    if instance.charge_type == ChargeType::PostPaid {
        return Err(Fault::charge_type_violation(
            "The operation is not permitted due to charge type of the instance.",
        ));
    }
    let currency = world
        .account(&caller.account)
        .map(|a| a.currency.clone())
        .unwrap_or_else(|| "CNY".into());
    Ok(price_answer(instance.price_cents(period, unit), currency))
}

/// A DescribeRenewalPrice answer for (trade, original) prices in cents.
fn price_answer((trade, original): (i64, i64), currency: String) -> Value {
    let as_float = |cents: i64| cents as f64 / 100.0;
    let mut value = to_value(&DescribeRenewalPriceResponse {
        request_id: String::new(),
        price_info: PriceInfo {
            price: PriceRecord {
                currency,
                original_price: as_float(original),
                discount_price: as_float(original - trade),
                trade_price: as_float(trade),
            },
        },
    });
    value["PriceInfo"]["Rules"] = serde_json::json!({"Rule": []});
    value
}

/// BSS `QueryAccountBalance` (docs/v3-and-bss.md §2.2): the caller's account balance, which
/// the emulator's charges (renewals, provider deductions) reduce, as two-decimal strings.
fn query_account_balance(world: &World, caller: &Caller) -> Result<Value, Fault> {
    let account = world
        .account(&caller.account)
        .ok_or_else(|| Fault::new(400, "InvalidOwner", "The caller's account is not known."))?;
    let amount = cents_text(account.balance_cents);
    Ok(serde_json::json!({
        "Code": "200",
        "Message": "success",
        "Success": true,
        "Data": {
            "AvailableAmount": amount,
            "AvailableCashAmount": amount,
            "CreditAmount": "0.00",
            "MybankCreditAmount": "0.00",
            "Currency": account.currency,
            "QuotaLimit": "0.00",
        },
    }))
}

/// Cents as the service writes amounts: `-11.19`, `10000.00`.
fn cents_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn describe_regions(world: &World) -> Value {
    let region = world
        .regions()
        .map(|id| RegionRecord {
            region_id: id.clone(),
            region_endpoint: if id == "cn-hangzhou" {
                "ecs.aliyuncs.com".into()
            } else {
                format!("ecs.{id}.aliyuncs.com")
            },
            local_name: id.clone(),
            status: String::new(),
        })
        .collect();
    to_value(&DescribeRegionsResponse {
        request_id: String::new(),
        regions: RegionSet { region },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_the_instance_name_filter() {
        assert!(wildcard_match("web-*", "web-1"));
        assert!(wildcard_match("*-db", "prod-db"));
        assert!(wildcard_match("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard_match("web-*", "db-1"));
        assert!(wildcard_match("exact", "exact"));
        assert!(!wildcard_match("exact", "exactly"));
    }
}
