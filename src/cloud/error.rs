//! What can go wrong talking to ECS, and the closed failure class that decides what happens
//! next (retry now, back off, stop and alert, skip). The classes are listed in
//! docs/how-it-works.md (*Failure classes*), from the error codes in docs/ecs-api.md §4.

use std::fmt;
use std::time::Duration;

use super::action::Action;
use super::credentials::CredentialError;
use crate::closed_enum;

closed_enum! {
    /// The failure class: drives retries, metric labels and alerts.
    pub enum ErrorClass {
        /// Rate limited: retry after the advised delay.
        Throttled => "throttled",
        /// 5xx, timeouts, resets, mangled bodies: retry with backoff.
        Transient => "transient",
        /// Not enough balance or no usable payment method: back off for minutes to hours.
        Funds => "funds",
        /// A previous order or request is still processing: retry later, same token.
        Busy => "busy",
        /// Credentials or RAM permission: no retry, the source is down.
        Permission => "permission",
        /// The host clock is off: no retry until it is fixed.
        Clock => "clock",
        /// The instance cannot be renewed in its state (PostPaid, released, ...): skip.
        NotApplicable => "not_applicable",
        /// The request itself is wrong (period, token reuse): a config error or a bug.
        Invalid => "invalid",
        /// Anything else.
        Other => "other",
    }
}

impl ErrorClass {
    /// Whether repeating the same request within the run can help.
    pub fn retry_in_run(self) -> bool {
        matches!(self, ErrorClass::Throttled | ErrorClass::Transient)
    }

    /// Whether a later run should try again after a persisted backoff.
    pub fn retry_later(self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::Funds | ErrorClass::Busy
        )
    }
}

const FUNDS: &[&str] = &[
    "InvalidAccountStatus.NotEnoughBalance",
    "Account.Arrearage",
    "InsufficientBalance",
    "InvalidPayMethod",
    "PaymentMethodNotFound",
    "SecurityRisk.3DVerification",
    "InstanceExpiredOrInArrears",
];
const BUSY: &[&str] = &[
    "LastOrderProcessing",
    "Idempotence.Processing",
    "LastTokenProcessing",
    "LastRequestProcessing",
    "Instance.UnPaidOrder",
    "InvalidStatus.Upgrading",
    "OperationConflict",
];
const NOT_APPLICABLE: &[&str] = &[
    "ChargeTypeViolation",
    "InvalidChargeType.NotSupported",
    "IncorrectInstanceStatus",
    "InvalidInstanceId.NotFound",
    "InvalidParameter.InvalidInstanceId",
    "InstanceLockedForSecurity",
    "InstanceSpecModification.NotEffective",
    "OperationDenied.NoStock",
    "InvalidPeriod.ExceededDedicatedHost",
];
const TRANSIENT: &[&str] = &["InternalError", "UnknownError", "SignatureNonceUsed"];
const INVALID: &[&str] = &[
    "IdempotenceParamNotMatch",
    "IdempotentParameterMismatch",
    "InvalidIdempotenceParameter.Mismatch",
    "InvalidTimeStamp.Format",
    "InvalidRegionId.NotFound",
    "MissingParamter",
    "OperationDenied",
];
const PERMISSION: &[&str] = &[
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingSecurityToken",
    "InvalidAction.Unauthorized",
    "RealNameAuthenticationError",
    // BSS: the key may not read the balance (docs/v3-and-bss.md §2.2).
    "NotAuthorized",
];

/// Every code the classification knows, with the HTTP status the service answers it with:
/// each listed code, and one example of each prefix rule. Tests draw from it (the
/// state-machine test answers every action with every one of them), so a code added to the
/// classification is exercised there too.
pub fn classified_codes() -> Vec<(&'static str, u16)> {
    let listed =
        |codes: &'static [&'static str], status: u16| codes.iter().map(move |code| (*code, status));
    let prefixed: [(&str, u16); 16] = [
        ("Throttling", 400),
        ("Throttling.User", 400),
        ("Rejected.Throttling", 429),
        ("InvalidTimeStamp.Expired", 400),
        ("ServiceUnavailable", 503),
        ("Forbidden.RAM", 403),
        ("InvalidAccessKeyId.NotFound", 404),
        ("InvalidSecurityToken.Expired", 400),
        ("Unauthorized", 403),
        ("NoPermission", 403),
        ("InvalidPeriod", 400),
        ("InvalidParameter.Duration", 400),
        ("MissingParameter.InstanceId", 400),
        ("InvalidClientToken.ValueNotSupported", 400),
        ("SomethingNew", 400),
        ("SomethingNew.Server", 502),
    ];
    listed(FUNDS, 403)
        .chain(listed(BUSY, 400))
        .chain(listed(NOT_APPLICABLE, 403))
        .chain(listed(TRANSIENT, 500))
        .chain(listed(INVALID, 400))
        .chain(listed(PERMISSION, 400))
        .chain(prefixed)
        .collect()
}

/// Classifies a service error code (and the HTTP status, for codes not in the table).
pub fn classify(code: &str, http_status: u16) -> ErrorClass {
    if code.contains("Throttling") || http_status == 429 {
        return ErrorClass::Throttled;
    }
    if code == "InvalidTimeStamp.Expired" {
        return ErrorClass::Clock;
    }
    if FUNDS.contains(&code) {
        return ErrorClass::Funds;
    }
    if BUSY.contains(&code) {
        return ErrorClass::Busy;
    }
    if NOT_APPLICABLE.contains(&code) {
        return ErrorClass::NotApplicable;
    }
    if TRANSIENT.contains(&code) || code.starts_with("ServiceUnavailable") {
        return ErrorClass::Transient;
    }
    if code.starts_with("Forbidden")
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidSecurityToken")
        || code.starts_with("Unauthorized")
        || code.starts_with("NoPermission")
        || PERMISSION.contains(&code)
    {
        return ErrorClass::Permission;
    }
    if INVALID.contains(&code)
        || code.starts_with("InvalidPeriod")
        || code.starts_with("InvalidParameter")
        || code.starts_with("InvalidParamater")
        || code.starts_with("MissingParameter")
        || code.starts_with("InvalidClientToken")
        || code.starts_with("InvalidPriceUnit")
        || code.starts_with("InvalidFilterKey")
    {
        return ErrorClass::Invalid;
    }
    if http_status >= 500 {
        return ErrorClass::Transient;
    }
    ErrorClass::Other
}

/// An error the service returned: HTTP status, code, message and request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What was called.
    pub action: Action,
    /// In which region.
    pub region: String,
    /// HTTP status.
    pub http_status: u16,
    /// Service error code, e.g. `InvalidAccountStatus.NotEnoughBalance`.
    pub code: String,
    /// The service's message (secrets scrubbed).
    pub message: String,
    /// Request id for support tickets (empty when the service sent none).
    pub request_id: String,
    /// The failure class.
    pub class: ErrorClass,
    /// Advised delay before retrying (`x-acs-retry-after` or `Retry-After`).
    pub retry_after: Option<Duration>,
    /// What the operator should do.
    pub hint: String,
}

/// " in <region>", or nothing for a call of no region (BSS, Resource Manager).
fn in_region(region: &str) -> String {
    if region.is_empty() {
        String::new()
    } else {
        format!(" in {region}")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} failed: {} (HTTP {}, request id {}): {}",
            self.action,
            in_region(&self.region),
            self.code,
            self.http_status,
            if self.request_id.is_empty() {
                "none"
            } else {
                &self.request_id
            },
            self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, " — {}", self.hint)?;
        }
        Ok(())
    }
}

/// The default operator hint for a code and class.
pub fn hint_for(code: &str, class: ErrorClass) -> String {
    let text = match (code, class) {
        ("SignatureDoesNotMatch", _) => "check the AccessKey secret configured for this account",
        (c, _) if c.starts_with("InvalidAccessKeyId") => {
            "the AccessKey ID is unknown or disabled: check the credentials configured for this account"
        }
        (c, _) if c.starts_with("InvalidSecurityToken") || c == "MissingSecurityToken" => {
            "the STS token is missing, malformed or expired: refresh the credentials"
        }
        ("InvalidTimeStamp.Expired", _) => {
            "this host's clock is too far from the service's: fix the clock (NTP)"
        }
        (_, ErrorClass::Throttled) => {
            "ECS is throttling this account: lower the account's rate_limit or spread the schedule"
        }
        (_, ErrorClass::Funds) => {
            "top up the account balance or fix its payment method; the renewal is retried with backoff"
        }
        (_, ErrorClass::Permission) => {
            "grant this identity the RAM permissions in deploy/ram-policy.json"
        }
        (_, ErrorClass::Busy) => {
            "a previous order or request is still processing; it is retried later with the same ClientToken"
        }
        (c, ErrorClass::Invalid) if c.contains("Idempot") => {
            "a ClientToken was reused with different parameters: this is a bug, report it with the request id"
        }
        (_, ErrorClass::Invalid) => {
            "the request was rejected as invalid: check the policy's period and unit against the allowed values"
        }
        (_, ErrorClass::NotApplicable) => {
            "the instance cannot take this action in its current state; recorded and skipped"
        }
        _ => "",
    };
    text.to_owned()
}

/// How a request failed below the HTTP level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No connection could be made.
    Connect,
    /// The connection or the response timed out.
    Timeout,
    /// The connection broke, or anything else below HTTP.
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Other => "connection failed",
        })
    }
}

/// Any failure of a call to ECS.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The service answered with an error.
    #[error("{0}")]
    Api(Box<ApiError>),

    /// No usable HTTP exchange (connect, timeout, reset). For a charging call the outcome is
    /// unknown; repeating it with the same ClientToken is safe.
    #[error("{action}{}: {kind} talking to {endpoint}", in_region(.region))]
    Transport {
        /// What was called.
        action: Action,
        /// In which region.
        region: String,
        /// Scheme, host and port (never the query).
        endpoint: String,
        /// What kind of failure.
        kind: TransportKind,
        /// The HTTP client's error, stripped of the URL.
        #[source]
        source: reqwest::Error,
    },

    /// An answer that is not the JSON it should be (an HTML error page, a truncated body,
    /// a field of the wrong type).
    #[error(
        "{action}{}: the answer (HTTP {http_status}, request id {request_id}) could not be decoded: {detail}; it starts with {snippet:?}",
        in_region(.region)
    )]
    Decode {
        /// What was called.
        action: Action,
        /// In which region.
        region: String,
        /// HTTP status of the answer.
        http_status: u16,
        /// Request id if one could be found, else `none`.
        request_id: String,
        /// What was wrong.
        detail: String,
        /// The first bytes of the body (secrets scrubbed).
        snippet: String,
    },

    /// An answer that sends the request elsewhere (HTTP 3xx). Signed requests carry the STS
    /// token and must not be resent to another host, so redirects are never followed; the
    /// answer came from something between ecs-renewd and the service (a proxy, a captive
    /// portal, a wrong endpoint), so it is treated as transient.
    #[error(
        "{action}{}: the answer was a redirect (HTTP {http_status}) to {location_host}, which ecs-renewd does not follow with a signed request — check the account's endpoint and any proxy in between",
        in_region(.region)
    )]
    Redirected {
        /// What was called.
        action: Action,
        /// In which region.
        region: String,
        /// The 3xx status.
        http_status: u16,
        /// The host named by `Location` (never its path or query), or `no Location header`.
        location_host: String,
    },

    /// No usable credentials for the account.
    #[error("account {account}: {source}")]
    Credentials {
        /// Which account.
        account: String,
        /// The credential error: which source failed, and how.
        #[source]
        source: CredentialError,
    },

    /// A request the client refuses to send (it would be rejected or is unsafe).
    #[error("{action}{}: {detail}", in_region(.region))]
    Refused {
        /// What was to be called.
        action: Action,
        /// In which region.
        region: String,
        /// Why the client will not send it, in words (e.g. too many ids in one call).
        detail: String,
    },

    /// Shutdown began before the call was sent; nothing was sent.
    #[error("{action}{}: not sent, the daemon is shutting down", in_region(.region))]
    ShuttingDown {
        /// What was to be called.
        action: Action,
        /// In which region.
        region: String,
    },

    /// The last attempt failed, but an earlier attempt of the same call got no answer and may
    /// have been carried out: for a charging call the outcome is unknown, whatever the last
    /// answer says (a busy answer, a refusal for funds, or shutdown before the next attempt).
    #[error(
        "{last} (an earlier attempt got no answer and may have been carried out: the outcome is unknown)"
    )]
    AfterUnanswered {
        /// The last attempt's failure.
        last: Box<CloudError>,
    },
}

impl CloudError {
    /// The failure class.
    pub fn class(&self) -> ErrorClass {
        match self {
            CloudError::AfterUnanswered { last } => last.class(),
            CloudError::Api(api) => api.class,
            CloudError::Transport { .. }
            | CloudError::Decode { .. }
            | CloudError::Redirected { .. } => ErrorClass::Transient,
            CloudError::Credentials { .. } => ErrorClass::Permission,
            CloudError::Refused { .. } => ErrorClass::Invalid,
            CloudError::ShuttingDown { .. } => ErrorClass::Transient,
        }
    }

    /// The service error code, if the service answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CloudError::AfterUnanswered { last } => last.code(),
            CloudError::Api(api) => Some(&api.code),
            _ => None,
        }
    }

    /// The request id, if known.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            CloudError::AfterUnanswered { last } => last.request_id(),
            CloudError::Api(api) if !api.request_id.is_empty() => Some(&api.request_id),
            CloudError::Decode { request_id, .. } if request_id != "none" => Some(request_id),
            _ => None,
        }
    }

    /// The advised retry delay, if the service gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CloudError::AfterUnanswered { last } => last.retry_after(),
            CloudError::Api(api) => api.retry_after,
            _ => None,
        }
    }

    /// A short label for the ledger: the service code, or the kind of local failure.
    pub fn code_or_kind(&self) -> String {
        match self {
            CloudError::AfterUnanswered { last } => last.code_or_kind(),
            CloudError::Api(api) => api.code.clone(),
            CloudError::Transport { kind, .. } => match kind {
                TransportKind::Connect => "Transport.Connect".into(),
                TransportKind::Timeout => "Transport.Timeout".into(),
                TransportKind::Other => "Transport.Other".into(),
            },
            CloudError::Decode { .. } => "Decode".into(),
            CloudError::Redirected { .. } => "Redirected".into(),
            CloudError::Credentials { .. } => "Credentials".into(),
            CloudError::Refused { .. } => "Refused".into(),
            CloudError::ShuttingDown { .. } => "ShuttingDown".into(),
        }
    }

    /// Whether the request may have reached the service and had an effect (for a charging
    /// call: whether the outcome is unknown rather than a known failure).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            CloudError::AfterUnanswered { .. } => true,
            CloudError::Transport { kind, .. } => *kind != TransportKind::Connect,
            CloudError::Decode { http_status, .. } => *http_status < 400 || *http_status >= 500,
            // Whatever answered may have passed the request on before answering: unknown.
            CloudError::Redirected { .. } => true,
            CloudError::Api(api) => api.class == ErrorClass::Transient,
            _ => false,
        }
    }

    /// Whether nothing of the call was sent (shutdown began before its first attempt).
    pub fn not_sent(&self) -> bool {
        matches!(self, CloudError::ShuttingDown { .. })
    }

    /// This error, marked as following an attempt that may have been carried out.
    pub fn after_unanswered(self) -> CloudError {
        if self.outcome_unknown() {
            self
        } else {
            CloudError::AfterUnanswered {
                last: Box::new(self),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_table_classifies_each_example() {
        let table = [
            ("Throttling", 400, ErrorClass::Throttled),
            ("Throttling.User", 400, ErrorClass::Throttled),
            ("Rejected.Throttling", 400, ErrorClass::Throttled),
            ("Anything", 429, ErrorClass::Throttled),
            ("InternalError", 500, ErrorClass::Transient),
            ("ServiceUnavailable", 503, ErrorClass::Transient),
            (
                "ServiceUnavailable.RegionMaintaining",
                503,
                ErrorClass::Transient,
            ),
            ("Whatever", 502, ErrorClass::Transient),
            (
                "InvalidAccountStatus.NotEnoughBalance",
                403,
                ErrorClass::Funds,
            ),
            ("Account.Arrearage", 403, ErrorClass::Funds),
            ("InsufficientBalance", 400, ErrorClass::Funds),
            ("LastOrderProcessing", 400, ErrorClass::Busy),
            ("Idempotence.Processing", 400, ErrorClass::Busy),
            ("LastTokenProcessing", 403, ErrorClass::Busy),
            ("Instance.UnPaidOrder", 403, ErrorClass::Busy),
            ("Forbidden.RAM", 403, ErrorClass::Permission),
            ("InvalidAccessKeyId.NotFound", 404, ErrorClass::Permission),
            ("SignatureDoesNotMatch", 400, ErrorClass::Permission),
            ("InvalidTimeStamp.Expired", 400, ErrorClass::Clock),
            ("ChargeTypeViolation", 403, ErrorClass::NotApplicable),
            ("IncorrectInstanceStatus", 403, ErrorClass::NotApplicable),
            ("InvalidInstanceId.NotFound", 404, ErrorClass::NotApplicable),
            ("InvalidPeriod", 400, ErrorClass::Invalid),
            ("InvalidParameter.Duration", 403, ErrorClass::Invalid),
            ("IdempotenceParamNotMatch", 400, ErrorClass::Invalid),
            ("SomethingNew", 400, ErrorClass::Other),
        ];
        for (code, status, class) in table {
            assert_eq!(classify(code, status), class, "{code} / {status}");
        }
    }

    #[test]
    fn the_table_of_classified_codes_covers_every_class() {
        let classes: std::collections::BTreeSet<ErrorClass> = classified_codes()
            .into_iter()
            .map(|(code, status)| classify(code, status))
            .collect();
        assert_eq!(classes.len(), ErrorClass::ALL.len(), "{classes:?}");
    }

    #[test]
    fn an_api_error_names_code_status_request_id_and_what_to_do() {
        let error = ApiError {
            action: Action::RenewInstance,
            region: "cn-hangzhou".into(),
            http_status: 400,
            code: "InvalidTimeStamp.Expired".into(),
            message: "Specified time stamp or date value is expired.".into(),
            request_id: "A-1".into(),
            class: ErrorClass::Clock,
            retry_after: None,
            hint: hint_for("InvalidTimeStamp.Expired", ErrorClass::Clock),
        };
        assert_eq!(
            error.to_string(),
            "RenewInstance in cn-hangzhou failed: InvalidTimeStamp.Expired (HTTP 400, request id A-1): Specified time stamp or date value is expired. — this host's clock is too far from the service's: fix the clock (NTP)"
        );
    }
}
