//! Resource Manager `ListAccounts` (2020-03-31, docs/sts-and-directories.md §5.1) as a
//! management account sees its Resource Directory: the fleet accounts named in its
//! `[[accounts.members]]`, page by page, each with its account id (uid), folder, status and
//! path. A caller whose account manages no directory is refused.

use serde_json::Value;

use super::request::{Caller, Params};
use super::settings::MemberSpec;
use super::world::{Fault, World};

/// The largest `PageSize` the service takes.
const MAX_PAGE_SIZE: u64 = 100;
/// The `PageSize` when none is given.
const DEFAULT_PAGE_SIZE: u64 = 10;

/// One page of the caller's directory.
pub fn list_accounts(world: &World, caller: &Caller, params: &Params) -> Result<Value, Fault> {
    let page_number = number(params, "PageNumber", 1, u64::MAX)?;
    let page_size = number(params, "PageSize", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    // The code for a caller outside any directory is not in the reference; the emulator
    // answers the Resource Manager's "no such directory" code.
    let members = world.members(&caller.account).ok_or_else(|| {
        Fault::new(
            404,
            "EntityNotExists.ResourceDirectory",
            "The resource directory does not exist, or the caller is not its management account.",
        )
    })?;
    let directory = format!(
        "rd-{}",
        world.identities().uid(&caller.account).unwrap_or("0")
    );
    let skip = (page_number - 1).saturating_mul(page_size);
    let page: Vec<Value> = members
        .iter()
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .take(page_size as usize)
        .map(|member| record(world, &directory, member))
        .collect();
    Ok(serde_json::json!({
        "TotalCount": members.len(),
        "PageNumber": page_number,
        "PageSize": page_size,
        "Accounts": { "Account": page },
    }))
}

/// A positive whole-number parameter no larger than `max`, or its default.
fn number(params: &Params, name: &str, default: u64, max: u64) -> Result<u64, Fault> {
    let Some(text) = params.non_empty(name) else {
        return Ok(default);
    };
    match text.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Fault::new(
            400,
            &format!("InvalidParameter.{name}"),
            format!("The specified parameter {name} is not valid."),
        )),
    }
}

/// A member as `ListAccounts` shows it.
fn record(world: &World, directory: &str, member: &MemberSpec) -> Value {
    let uid = world.identities().uid(&member.account).unwrap_or("0");
    let folder = member.folder.as_deref().unwrap_or("fd-root");
    serde_json::json!({
        "AccountId": uid,
        "DisplayName": member.display_name.as_deref().unwrap_or(&member.account),
        "Type": "ResourceAccount",
        "Status": member.status.as_deref().unwrap_or("CreateSuccess"),
        "FolderId": folder,
        "ResourceDirectoryId": directory,
        "ResourceDirectoryPath": format!("{directory}/r-root/{folder}/{uid}"),
        "JoinMethod": "created",
        "JoinTime": "2021-01-18T08:01:50.522Z",
        "ModifyTime": "2021-01-18T08:04:37.668Z",
    })
}
