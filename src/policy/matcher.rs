//! Policy matching: every given matcher must match; a policy without matchers covers everything.

use std::collections::BTreeMap;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use toml::Spanned;

use crate::cloud::types::Instance;

/// What a policy matches, as written in `[policies.match]`: every given matcher must match;
/// none given matches everything. Owned here, so the policy layer compiles it without
/// depending on the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    /// Account names.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Region ids.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Zone ids.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Instance ids.
    #[serde(default)]
    pub instance_ids: Vec<String>,
    /// A glob on the instance name (`*`, `?`, `[...]`).
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// Tags that must all be present with these values (`"*"` matches any value).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// A security group the instance must be in.
    #[serde(default)]
    pub security_group: Option<String>,
    /// An instance type family, e.g. `ecs.g6`.
    #[serde(default)]
    pub instance_type_family: Option<String>,
    /// A resource group id.
    #[serde(default)]
    pub resource_group: Option<String>,
}

/// A compiled `[policies.match]`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    accounts: Vec<String>,
    regions: Vec<String>,
    zones: Vec<String>,
    instance_ids: Vec<String>,
    name: Option<(String, GlobMatcher)>,
    tags: Vec<(String, String)>,
    security_group: Option<String>,
    instance_type_family: Option<String>,
    resource_group: Option<String>,
}

impl Matcher {
    /// Compiles a match section; the error says why the name glob is invalid.
    pub fn compile(section: &MatchSection) -> Result<Matcher, String> {
        let name = match section.name.as_ref().map(|n| n.get_ref().as_str()) {
            None => None,
            Some(pattern) => {
                let glob = Glob::new(pattern)
                    .map_err(|e| format!("{pattern:?} is not a valid glob: {e}"))?;
                Some((pattern.to_owned(), glob.compile_matcher()))
            }
        };
        Ok(Matcher {
            accounts: section.accounts.clone(),
            regions: section.regions.clone(),
            zones: section.zones.clone(),
            instance_ids: section.instance_ids.clone(),
            name,
            tags: section
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            security_group: section.security_group.clone(),
            instance_type_family: section.instance_type_family.clone(),
            resource_group: section.resource_group.clone(),
        })
    }

    /// Whether this matcher covers every instance.
    pub fn matches_everything(&self) -> bool {
        self.accounts.is_empty()
            && self.regions.is_empty()
            && self.zones.is_empty()
            && self.instance_ids.is_empty()
            && self.name.is_none()
            && self.tags.is_empty()
            && self.security_group.is_none()
            && self.instance_type_family.is_none()
            && self.resource_group.is_none()
    }

    /// Whether `instance` of `account` is covered (`account` as [`covers_account`] reads it).
    pub fn matches(&self, account: &str, instance: &Instance) -> bool {
        let listed =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|x| x == value);
        covers_account(&self.accounts, account)
            && listed(&self.regions, &instance.region)
            && listed(&self.zones, &instance.zone)
            && listed(&self.instance_ids, &instance.id)
            && self
                .name
                .as_ref()
                .is_none_or(|(_, g)| g.is_match(&instance.name))
            && self.tags.iter().all(|(key, value)| {
                instance
                    .tags
                    .iter()
                    .any(|(k, v)| k == key && (value == "*" || v == value))
            })
            && self
                .security_group
                .as_ref()
                .is_none_or(|g| instance.security_group_ids.iter().any(|s| s == g))
            && self
                .instance_type_family
                .as_ref()
                .is_none_or(|f| *f == instance.instance_type_family)
            && self
                .resource_group
                .as_ref()
                .is_none_or(|g| *g == instance.resource_group_id)
    }
}

/// Whether a policy's `match.accounts` covers `account`: every account when empty, else an
/// account listed by name, or a Resource Directory's member (`<directory>/<AccountId>`) whose
/// directory is listed.
pub fn covers_account(list: &[String], account: &str) -> bool {
    list.is_empty()
        || list.iter().any(|x| {
            x == account
                || account
                    .strip_prefix(x.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}
