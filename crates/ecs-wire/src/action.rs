//! The ECS actions ecs-renewd calls: a closed set used for signing, timeouts, retry safety,
//! rate-limit keys and metric labels.

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
    }
}

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
        })
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
