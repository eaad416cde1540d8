//! Resource Manager `ListAccounts` (docs/sts-and-directories.md §5.1): every member of the
//! caller's Resource Directory, page after page of 100, through the same client (signing,
//! retries, rate limit, error model) as ECS calls. Paging stops at `TotalCount`, and also at a
//! short or empty page, so a directory changing while it is read cannot loop forever.

use reqwest::Url;

use super::action::Action;
use super::client::EcsClient;
use super::error::CloudError;
use super::types::{DirectoryAccount, ListAccountsResponse};

/// Members asked for per page (the service's largest).
const PAGE_SIZE: u64 = 100;

impl EcsClient {
    /// Every member account of the directory the client's identity manages, in the order
    /// listed (a member on two pages, when the directory changed between them, comes once).
    pub async fn list_directory_accounts(
        &self,
        url: &Url,
    ) -> Result<Vec<DirectoryAccount>, CloudError> {
        let mut members: Vec<DirectoryAccount> = Vec::new();
        for page in 1.. {
            let params = [
                ("PageNumber", page.to_string()),
                ("PageSize", PAGE_SIZE.to_string()),
            ];
            let answer = self
                .call_url::<ListAccountsResponse>(Action::ListAccounts, "", url, &params)
                .await?
                .body;
            let listed = answer.accounts.account;
            let short = (listed.len() as u64) < PAGE_SIZE;
            for member in listed {
                if !members.iter().any(|m| m.account_id == member.account_id) {
                    members.push(member);
                }
            }
            if short || page * PAGE_SIZE >= answer.total_count {
                break;
            }
        }
        Ok(members)
    }
}
