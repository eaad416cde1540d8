//! BSS `QueryAccountBalance` (docs/v3-and-bss.md §2): the account's available amount, asked of
//! the billing endpoint of the account's site, with the fallback Terraform uses: a
//! `NotApplicable` answer (the key belongs to the other site) is asked again of the other
//! site's endpoint. Amounts are exact decimals ([`Money::parse_decimal`]).

use reqwest::Url;

use super::action::Action;
use super::client::EcsClient;
use super::endpoint::{Endpoint, EndpointError};
use super::error::{ApiError, CloudError, classify, hint_for};
use super::periods::Site;
use super::types::QueryAccountBalanceResponse;
use crate::money::{Money, MoneyError};

/// The China site's billing endpoint (also for cn-hongkong).
pub const CHINA_ENDPOINT: &str = "https://business.aliyuncs.com/";
/// The international site's billing endpoint.
pub const INTERNATIONAL_ENDPOINT: &str = "https://business.ap-southeast-1.aliyuncs.com/";

/// The billing endpoints to try, in order, for an account: its site's, then the other site's.
/// An account whose ECS calls go to a custom URL (an emulator, a gateway) asks that URL both
/// times.
pub fn bss_urls(endpoint: &Endpoint, site: Site) -> Result<Vec<Url>, EndpointError> {
    let fixed = |text: &str| Url::parse(text).expect("a constant URL parses");
    Ok(match endpoint {
        Endpoint::Custom(_) => {
            let url = endpoint.url_for("cn-hangzhou")?;
            vec![url.clone(), url]
        }
        Endpoint::Public | Endpoint::Vpc => match site {
            Site::China => vec![fixed(CHINA_ENDPOINT), fixed(INTERNATIONAL_ENDPOINT)],
            Site::International => vec![fixed(INTERNATIONAL_ENDPOINT), fixed(CHINA_ENDPOINT)],
        },
    })
}

/// Why no balance could be had.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// The call failed (permission, transport, throttling, …).
    #[error(transparent)]
    Call(#[from] CloudError),
    /// The answer carried an amount that is not a decimal.
    #[error("QueryAccountBalance answered an unreadable amount: {0}")]
    Amount(#[from] MoneyError),
}

impl EcsClient {
    /// The account's `AvailableAmount` (what charges can draw on; may be negative), asking
    /// each of `urls` in turn until one is not `NotApplicable`.
    pub async fn query_account_balance(&self, urls: &[Url]) -> Result<Money, BalanceError> {
        let mut last = None;
        for url in urls {
            let answer = self
                .call_url::<QueryAccountBalanceResponse>(Action::QueryAccountBalance, "", url, &[])
                .await;
            match answer {
                Err(CloudError::Api(api)) if api.code == "NotApplicable" => {
                    tracing::info!(
                        account = %self.account(),
                        endpoint = %url,
                        "QueryAccountBalance is not applicable on this site's endpoint; asking the other site's"
                    );
                    last = Some(CloudError::Api(api));
                }
                Err(error) => return Err(error.into()),
                Ok(answer) => return read(answer.body),
            }
        }
        Err(last.expect("at least one endpoint was asked").into())
    }
}

/// The balance in an answer; `Success: false` (some BSS paths answer so with HTTP 200) is the
/// error it names.
fn read(body: QueryAccountBalanceResponse) -> Result<Money, BalanceError> {
    match body.data {
        Some(data) if body.success => Ok(Money::parse_decimal(
            &data.available_amount,
            &data.currency,
        )?),
        _ => {
            let code = if body.code.is_empty() {
                "Success.False".to_owned()
            } else {
                body.code
            };
            let class = classify(&code, 200);
            Err(BalanceError::Call(CloudError::Api(Box::new(ApiError {
                action: Action::QueryAccountBalance,
                region: String::new(),
                http_status: 200,
                hint: hint_for(&code, class),
                code,
                message: body.message,
                request_id: body.request_id,
                class,
                retry_after: None,
            }))))
        }
    }
}
