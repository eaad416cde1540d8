//! Policy matching: every given matcher must match; a policy without matchers covers everything.

use globset::{Glob, GlobMatcher};

use crate::cloud::types::Instance;
use crate::config::MatchSection;

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

    /// Whether `instance` of `account` is covered.
    pub fn matches(&self, account: &str, instance: &Instance) -> bool {
        let listed =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|x| x == value);
        listed(&self.accounts, account)
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
