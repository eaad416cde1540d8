//! The actions ecs-renewd calls (ECS's, BSS's `QueryAccountBalance` for the funds forecast,
//! and Resource Manager's `ListAccounts` for a Resource Directory's members): a closed set used for signing, timeouts, retry safety, rate-limit keys and metric
//! labels.

use std::time::Duration;

use crate::closed_enum;

closed_enum! {
    /// An ECS OpenAPI action.
    pub enum Action {
        /// List instances (expiry window, ids, tags).
        DescribeInstances => "DescribeInstances",
        /// Read auto-renew attributes (≤100 ids per call).
        DescribeInstanceAutoRenewAttribute => "DescribeInstanceAutoRenewAttribute",
        /// Set auto-renew attributes (≤100 ids per call).
        ModifyInstanceAutoRenewAttribute => "ModifyInstanceAutoRenewAttribute",
        /// Renew one instance: moves money.
        RenewInstance => "RenewInstance",
        /// Price a renewal.
        DescribeRenewalPrice => "DescribeRenewalPrice",
        /// List regions.
        DescribeRegions => "DescribeRegions",
        /// Read the account's available amount (BSS, docs/v3-and-bss.md §2.2).
        QueryAccountBalance => "QueryAccountBalance",
        /// List a Resource Directory's member accounts (Resource Manager, docs/sts-and-directories.md §5.1).
        ListAccounts => "ListAccounts",
    }
}

/// The ECS API version.
pub const ECS_VERSION: &str = "2014-05-26";
/// The BSS (billing) API version.
pub const BSS_VERSION: &str = "2017-12-14";
/// The Resource Manager API version whose `ListAccounts` lists a directory's members.
pub const RESOURCE_MANAGER_VERSION: &str = "2020-03-31";

/// When a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrySafety {
    /// Reads: repeating changes nothing.
    Read,
    /// Sets attributes to given values: repeating leaves the same result.
    SetToValue,
    /// Charges money: only safe to repeat with the same `ClientToken`.
    NeedsClientToken,
}

impl Action {
    /// The read timeout the official Python SDK uses for this action (docs/ecs-api.md §2,
    /// `timeout_config.json`).
    pub fn default_read_timeout(self) -> Duration {
        Duration::from_secs(match self {
            Action::DescribeInstances => 10,
            Action::DescribeInstanceAutoRenewAttribute => 17,
            Action::ModifyInstanceAutoRenewAttribute => 16,
            Action::RenewInstance => 19,
            Action::DescribeRenewalPrice => 16,
            Action::DescribeRegions => 19,
            Action::QueryAccountBalance => 10,
            Action::ListAccounts => 10,
        })
    }

    /// The RAM actions a key needs to call it. For `QueryAccountBalance` the documents name
    /// two (`bss:DescribeAcccount`, sic, and `bssapi:QueryAccountBalance`) and which one the
    /// gateway checks is UNCERTAIN (docs/v3-and-bss.md §2.2): both are granted.
    pub fn ram_actions(self) -> &'static [&'static str] {
        match self {
            Action::DescribeInstances => &["ecs:DescribeInstances"],
            Action::DescribeInstanceAutoRenewAttribute => {
                &["ecs:DescribeInstanceAutoRenewAttribute"]
            }
            Action::ModifyInstanceAutoRenewAttribute => &["ecs:ModifyInstanceAutoRenewAttribute"],
            Action::RenewInstance => &["ecs:RenewInstance"],
            Action::DescribeRenewalPrice => &["ecs:DescribeRenewalPrice"],
            Action::DescribeRegions => &["ecs:DescribeRegions"],
            Action::QueryAccountBalance => &["bss:DescribeAcccount", "bssapi:QueryAccountBalance"],
            Action::ListAccounts => &["resourcemanager:ListAccounts"],
        }
    }

    /// The API version the action belongs to (`Version` / `x-acs-version`).
    pub fn version(self) -> &'static str {
        match self {
            Action::QueryAccountBalance => BSS_VERSION,
            Action::ListAccounts => RESOURCE_MANAGER_VERSION,
            _ => ECS_VERSION,
        }
    }

    /// Whether the action changes anything in the cloud (dry-run never sends these).
    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            Action::ModifyInstanceAutoRenewAttribute | Action::RenewInstance
        )
    }

    /// How safe a repeat is.
    pub fn retry_safety(self) -> RetrySafety {
        match self {
            Action::RenewInstance => RetrySafety::NeedsClientToken,
            Action::ModifyInstanceAutoRenewAttribute => RetrySafety::SetToValue,
            _ => RetrySafety::Read,
        }
    }
}
