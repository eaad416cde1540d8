//! `[[directories]]` checked and compiled: the members' settings through the same checks as an
//! `[[accounts]]` entry's (the management identity's credentials and role included), the role
//! assumed in each member, the filters and the refresh interval, each problem at its key.

use std::collections::HashSet;
use std::time::Duration;

use super::compile::compile_account;
use super::report::Report;
use super::schema::{ConfigFile, DirectorySection};
use super::{Directory, MemberRole};
use crate::cloud::credentials::AssumeRoleConfig;

/// The shortest `refresh`: `ListAccounts` is one call per page, but there is no point in
/// listing more often than passes run.
const SHORTEST_REFRESH: Duration = Duration::from_secs(60);

/// Every `[[directories]]` entry compiled (those with problems too, the problems reported);
/// `names` holds the account names taken, and gets each directory's.
pub(super) fn check_directories(
    file: &ConfigFile,
    names: &mut HashSet<String>,
    report: &mut Report,
) -> Vec<Directory> {
    let mut directories = Vec::new();
    for (i, section) in file.directories.iter().enumerate() {
        let key = format!("directories[{i}]");
        check_name(section, &key, names, report);
        let member_role = member_role(section, &key, report);
        check_filters(section, &key, report);
        if section.refresh < SHORTEST_REFRESH {
            report.error(
                None,
                &format!("{key}.refresh"),
                format!(
                    "{} is shorter than a minute",
                    crate::duration::format(section.refresh)
                ),
                "list the members at most once a minute, e.g. refresh = \"1h\"",
            );
        }
        let template = compile_account(&section.as_account(), &key, file, report);
        let list_url = list_url(section, &template.endpoint, &key, report);
        let member_sts_url = member_sts_url(&template, &key, report);
        directories.push(Directory {
            name: section.name.get_ref().clone(),
            template,
            member_role,
            include: section.include.clone(),
            exclude: section.exclude.clone(),
            refresh: section.refresh,
            list_url,
            member_sts_url,
        });
    }
    directories
}

/// The directory's name: an account name (members are `<name>/<AccountId>`), not taken by an
/// account or another directory.
fn check_name(
    section: &DirectorySection,
    key: &str,
    names: &mut HashSet<String>,
    report: &mut Report,
) {
    let name = section.name.get_ref();
    if !super::validate::is_usable_name(name) {
        report.error(
            Some(section.name.span()),
            &format!("{key}.name"),
            format!("{name:?} is not a usable directory name"),
            "use letters, digits, '-', '_' or '.' (members are named <name>/<AccountId>)",
        );
    }
    if !names.insert(name.clone()) {
        report.error(
            Some(section.name.span()),
            &format!("{key}.name"),
            format!("{name:?} is already the name of an account or a directory"),
            "give each account and directory its own name",
        );
    }
}

/// The role assumed in each member: `role_name`, `session_name` and `duration` checked as an
/// `[accounts.assume_role]` table's would be.
fn member_role(section: &DirectorySection, key: &str, report: &mut Report) -> MemberRole {
    let sample = AssumeRoleConfig {
        role_arn: format!("acs:ram::1000000000000000:role/{}", section.role_name),
        external_id: None,
        external_id_file: None,
        session_name: section.session_name.clone(),
        duration: section.duration,
        sts_endpoint: None,
    };
    for (field, why, hint) in sample.problems() {
        let (field, why, hint) = if field == "role_arn" {
            (
                "role_name",
                format!("{:?} is not a RAM role name", section.role_name),
                "use 1 to 64 letters, digits and . - _ (default ResourceDirectoryAccountAccessRole)",
            )
        } else {
            (field, why, hint)
        };
        report.error(None, &format!("{key}.{field}"), why, hint);
    }
    MemberRole {
        name: section.role_name.clone(),
        session_name: section.session_name.clone(),
        duration: section.duration,
    }
}

/// `include` and `exclude`: account ids (digits) or folder ids (`fd-…`, `r-…` for the root).
fn check_filters(section: &DirectorySection, key: &str, report: &mut Report) {
    for (list, field) in [(&section.include, "include"), (&section.exclude, "exclude")] {
        for id in list.iter().filter(|id| !is_member_or_folder_id(id)) {
            report.error(
                None,
                &format!("{key}.{field}"),
                format!("{id:?} is neither an account id nor a folder id"),
                "write an account id (digits, e.g. \"1234567890123456\") or a folder id (\"fd-…\", \"r-…\" for the root)",
            );
        }
    }
}

/// Whether `id` can name a member (digits) or a folder (`fd-…`, `r-…`).
fn is_member_or_folder_id(id: &str) -> bool {
    let folder = |rest: &str| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        || id.strip_prefix("fd-").is_some_and(folder)
        || id.strip_prefix("r-").is_some_and(folder)
}

/// Where `ListAccounts` goes: `resource_manager_endpoint`, else by the members' endpoint.
fn list_url(
    section: &DirectorySection,
    endpoint: &crate::cloud::Endpoint,
    key: &str,
    report: &mut Report,
) -> reqwest::Url {
    let url = match &section.resource_manager_endpoint {
        Some(text) => crate::cloud::endpoint::checked(text.get_ref().clone()),
        None => endpoint.resource_manager_url(),
    };
    url.unwrap_or_else(|e| {
        report.error(
            section.resource_manager_endpoint.as_ref().map(|t| t.span()),
            &format!("{key}.resource_manager_endpoint"),
            e.to_string(),
            "write an https:// URL (plain http only to a loopback address), or leave it unset",
        );
        reqwest::Url::parse("https://resourcemanager.aliyuncs.com/").expect("a constant URL")
    })
}

/// Where the member roles are assumed: the members' STS endpoint by their endpoint and first
/// region.
fn member_sts_url(template: &super::Account, key: &str, report: &mut Report) -> reqwest::Url {
    let first_region = match &template.regions {
        super::Regions::List(list) => list.first().map(String::as_str),
        super::Regions::All => None,
    };
    template.endpoint.sts_url(first_region).unwrap_or_else(|e| {
        report.error(
            None,
            &format!("{key}.endpoint"),
            format!("the member roles' STS endpoint: {e}"),
            "write \"public\", \"vpc\" or an https:// URL",
        );
        reqwest::Url::parse("https://sts.aliyuncs.com/").expect("a constant URL")
    })
}

#[cfg(test)]
mod tests {
    use super::is_member_or_folder_id;

    #[test]
    fn members_and_folders_are_told_from_other_text() {
        for good in ["1234567890123456", "fd-QRzuim3x", "r-Wm12"] {
            assert!(is_member_or_folder_id(good), "{good}");
        }
        for bad in ["", "fd-", "org/123", "12ab", "folder"] {
            assert!(!is_member_or_folder_id(bad), "{bad}");
        }
    }
}
