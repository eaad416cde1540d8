//! Resource Manager `ListAccounts` (docs/sts-and-directories.md §5.1): every member of the
//! caller's Resource Directory, page after page of 100, through the same client (signing,
//! retries, rate limit, error model) as ECS calls. Paging stops at a short or empty page (and
//! after `MOST_PAGES`, so it cannot loop forever); fewer members than `TotalCount` is a failed
//! listing.

use reqwest::Url;

use super::action::Action;
use super::client::EcsClient;
use super::error::CloudError;
use super::types::{DirectoryAccount, ListAccountsResponse};

/// Members asked for per page (the service's largest).
const PAGE_SIZE: u64 = 100;
/// The most pages read (100,000 members): a service that answers full pages forever is a
/// failed listing, not an endless one.
const MOST_PAGES: u64 = 1000;

impl EcsClient {
    /// Every member account of the directory the client's identity manages, in the order
    /// listed (a member on two pages, when the directory changed between them, comes once).
    /// Pages are read until one is short; fewer members than `TotalCount` says (the directory
    /// changed while it was read, or pages were lost) is a failed listing, so a partial one
    /// never stands for the directory.
    pub async fn list_directory_accounts(
        &self,
        url: &Url,
    ) -> Result<Vec<DirectoryAccount>, CloudError> {
        let mut members: Vec<DirectoryAccount> = Vec::new();
        let mut total = 0;
        let mut request_id = String::new();
        for page in 1..=MOST_PAGES {
            let params = [
                ("PageNumber", page.to_string()),
                ("PageSize", PAGE_SIZE.to_string()),
            ];
            let answer = self
                .call_url::<ListAccountsResponse>(Action::ListAccounts, "", url, &params)
                .await?
                .body;
            (total, request_id) = (answer.total_count, answer.request_id);
            let listed = answer.accounts.account;
            let full = listed.len() as u64 == PAGE_SIZE;
            for member in listed {
                if !members.iter().any(|m| m.account_id == member.account_id) {
                    members.push(member);
                }
            }
            if !full {
                return complete(members, total, request_id);
            }
        }
        Err(short_listing(
            format!("{MOST_PAGES} full pages and still more (TotalCount {total})"),
            request_id,
        ))
    }
}

/// The members read, unless they are fewer than `TotalCount` says.
fn complete(
    members: Vec<DirectoryAccount>,
    total: u64,
    request_id: String,
) -> Result<Vec<DirectoryAccount>, CloudError> {
    if (members.len() as u64) < total {
        return Err(short_listing(
            format!(
                "{} members read, but TotalCount says {total} (the directory may have changed while it was read)",
                members.len()
            ),
            request_id,
        ));
    }
    Ok(members)
}

/// A listing that cannot stand for the directory: transient, so the next pass lists again.
fn short_listing(detail: String, request_id: String) -> CloudError {
    CloudError::Decode {
        action: Action::ListAccounts,
        region: String::new(),
        http_status: 200,
        request_id: if request_id.is_empty() {
            "none".into()
        } else {
            request_id
        },
        detail,
        snippet: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> DirectoryAccount {
        DirectoryAccount {
            account_id: id.into(),
            ..DirectoryAccount::default()
        }
    }

    #[test]
    fn fewer_members_than_total_count_is_a_failed_listing_and_more_is_not() {
        let two = vec![member("1"), member("2")];
        assert_eq!(complete(two.clone(), 2, "r".into()).unwrap().len(), 2);
        assert_eq!(complete(two.clone(), 1, "r".into()).unwrap().len(), 2);
        let short = complete(two, 3, "r-9".into()).unwrap_err();
        assert_eq!(short.class(), crate::cloud::ErrorClass::Transient);
        let text = short.to_string();
        assert!(
            text.contains("2 members read, but TotalCount says 3") && text.contains("r-9"),
            "{text}"
        );
    }
}
