//! A Resource Directory's members as accounts. The management identity's client lists the
//! members (`ListAccounts`) when a pass starts and `refresh` has passed since the last good
//! listing (or the last one failed); each member selected by status, `include` and `exclude`
//! becomes an account `<directory>/<AccountId>` with the directory's settings, signing with
//! `role_name` assumed in it through the management identity. A member keeps its client (and
//! its role's key) while it stays listed; members joining and leaving change the accounts the
//! next pass scans, without a restart. A listing that fails keeps the members listed before,
//! and is reported as the directory's failed source.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use super::{AccountClient, AccountError, Wiring};
use crate::cloud::credentials::{
    self, AssumeRoleConfig, CredentialProvider, Environment, Invalidation,
};
use crate::cloud::error::CloudError;
use crate::cloud::types::DirectoryAccount;
use crate::config::{Account, AssumeRole, Config, Directory};

/// The region a directory's listing is reported under (its source is `<directory>/` this).
pub const LISTING_SOURCE: &str = "resourcemanager";

/// The accounts a pass runs over: the config's entries and the directories' members.
pub struct Roster {
    /// The config with each member appended to `accounts`.
    pub config: Arc<Config>,
    /// A client per account, the members' after the entries'.
    pub accounts: Vec<AccountClient>,
}

/// How a directory's listing stands for a pass: its source `<directory>/resourcemanager` is
/// up unless this pass's listing failed (a pass that did not list it keeps the last good
/// listing's members, so the source stays up).
#[derive(Debug)]
pub struct Listing {
    /// The directory's name.
    pub directory: String,
    /// Why this pass's listing failed, if it did.
    pub error: Option<CloudError>,
}

/// A config's directories, connected: the management identities and the last listings.
pub struct Directories {
    entries: Vec<Entry>,
    wiring: Wiring,
    state: Mutex<State>,
}

/// One directory and its management identity.
struct Entry {
    directory: Directory,
    /// Signs `ListAccounts` with the management identity.
    lister: AccountClient,
    /// The management identity, the base every member's role is assumed with.
    management: Arc<CredentialProvider>,
}

/// Where a directory's listing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// Not listed yet (the process started, or the config was reloaded).
    Never,
    /// Listed well at this time.
    Good(DateTime<Utc>),
    /// The last try failed: listed again at the next pass.
    Failed,
}

impl Entry {
    /// `directory` (number `index` in the file at `path`) with its management identity
    /// resolved, and the client that lists with it.
    async fn connect(
        path: &std::path::Path,
        index: usize,
        directory: &Directory,
        env: &Environment,
        wiring: &Wiring,
    ) -> Result<Entry, AccountError> {
        let management = Arc::new(management(path, index, directory, env, wiring).await?);
        let lister = wiring.client(
            &directory.template,
            CredentialProvider::shared(management.clone(), Invalidation::PassedOn),
        );
        Ok(Entry {
            directory: directory.clone(),
            lister,
            management,
        })
    }
}

/// What the listings found so far.
struct State {
    /// Per directory (in config order): where its listing stands.
    listed: Vec<Listed>,
    /// Per directory: the members selected at the last good listing.
    members: Vec<Vec<DirectoryAccount>>,
    /// Member clients by account name, kept while the member stays.
    clients: HashMap<String, AccountClient>,
    /// The roster the last listing made.
    roster: Option<Arc<Roster>>,
}

impl Directories {
    /// The directories of `config`, each management identity's credentials resolved (a
    /// failure is the directory's `AccountError`, as an account's would be). Nothing is listed
    /// until the first pass.
    pub async fn connect(
        config: &Config,
        env: &Environment,
        wiring: &Wiring,
    ) -> Result<Directories, AccountError> {
        let mut entries = Vec::with_capacity(config.directories.len());
        for (index, directory) in config.directories.iter().enumerate() {
            entries.push(Entry::connect(&config.path, index, directory, env, wiring).await?);
        }
        let state = State {
            listed: vec![Listed::Never; entries.len()],
            members: vec![Vec::new(); entries.len()],
            clients: HashMap::new(),
            roster: None,
        };
        Ok(Directories {
            entries,
            wiring: wiring.clone(),
            state: Mutex::new(state),
        })
    }

    /// The accounts a pass starting at `now` runs over (`config` and `accounts` are the
    /// config's own); each directory due for a listing is listed first.
    pub async fn roster(
        &self,
        config: &Arc<Config>,
        accounts: &[AccountClient],
        now: DateTime<Utc>,
    ) -> (Arc<Roster>, Vec<Listing>) {
        if self.entries.is_empty() {
            let roster = Roster {
                config: config.clone(),
                accounts: accounts.to_vec(),
            };
            return (Arc::new(roster), Vec::new());
        }
        let mut state = self.state.lock().await;
        let mut listings = Vec::new();
        let mut changed = state.roster.is_none();
        for (index, entry) in self.entries.iter().enumerate() {
            let error = if due(state.listed[index], entry.directory.refresh, now) {
                let (error, moved) = list(entry, &mut state, index, now).await;
                changed |= moved;
                error
            } else {
                None
            };
            listings.push(Listing {
                directory: entry.directory.name.clone(),
                error,
            });
        }
        if changed {
            let roster = self.rebuild(&mut state, config, accounts);
            state.roster = Some(Arc::new(roster));
        }
        let roster = state
            .roster
            .clone()
            .expect("a roster is built at the first pass");
        (roster, listings)
    }

    /// The roster over the current members: kept clients for members that stay, new ones for
    /// those that joined; those that left are dropped.
    fn rebuild(&self, state: &mut State, config: &Config, accounts: &[AccountClient]) -> Roster {
        let mut config = config.clone();
        let entries = config.accounts.len();
        let mut all = accounts.to_vec();
        let mut clients = HashMap::new();
        for (entry, members) in self.entries.iter().zip(&state.members) {
            for member in members {
                let account = member_account(&entry.directory, member);
                warn_if_also_configured(&config.accounts[..entries], &account, member);
                let client = state
                    .clients
                    .remove(&account.name)
                    .unwrap_or_else(|| self.member_client(entry, &account));
                clients.insert(account.name.clone(), client.clone());
                all.push(client);
                config.accounts.push(account);
            }
        }
        state.clients = clients;
        Roster {
            config: Arc::new(config),
            accounts: all,
        }
    }

    /// A member's client: its role assumed with the management identity.
    fn member_client(&self, entry: &Entry, account: &Account) -> AccountClient {
        let provider = member_provider(&entry.directory, &entry.management, account, &self.wiring);
        self.wiring.client(account, provider)
    }
}

/// Lists `entry`'s members into `state` (its directory number `index`): the error when the
/// listing failed (the members before are kept), and whether the members changed.
async fn list(
    entry: &Entry,
    state: &mut State,
    index: usize,
    now: DateTime<Utc>,
) -> (Option<CloudError>, bool) {
    let directory = &entry.directory;
    match entry
        .lister
        .client
        .list_directory_accounts(&directory.list_url)
        .await
    {
        Ok(listed) => {
            let selected = selected(directory, listed);
            log_changes(&directory.name, &state.members[index], &selected);
            let changed = state.members[index] != selected;
            state.members[index] = selected;
            state.listed[index] = Listed::Good(now);
            (None, changed)
        }
        Err(error) => {
            tracing::warn!(directory = %directory.name, %error, "listing the directory's members failed: the members listed before in this process are kept, and the listing is tried again next pass");
            state.listed[index] = Listed::Failed;
            (Some(error), false)
        }
    }
}

/// A member's provider: its role assumed with the management identity, whose key a refused
/// member key does not drop.
fn member_provider(
    directory: &Directory,
    management: &Arc<CredentialProvider>,
    account: &Account,
    wiring: &Wiring,
) -> CredentialProvider {
    let role = account
        .assume_role
        .as_ref()
        .expect("a member assumes its role");
    let base = CredentialProvider::shared(management.clone(), Invalidation::Kept);
    super::assume(
        base,
        role,
        wiring.http.clone(),
        directory.template.credentials.refresh_before,
    )
}

/// What `check-config` found trying a directory.
pub struct Tried {
    /// Members listed.
    pub listed: usize,
    /// The accounts the selected members become.
    pub members: Vec<String>,
    /// Members whose role could not be assumed: account name and why (STS's code).
    pub refused: Vec<(String, String)>,
}

/// Tries a directory as `check-config` does: the management identity resolved, the members
/// listed once, and the member role assumed once in each selected member.
pub async fn try_directory(
    path: &std::path::Path,
    index: usize,
    directory: &Directory,
    env: &Environment,
    wiring: &Wiring,
    now: DateTime<Utc>,
) -> Result<Tried, String> {
    let Entry {
        lister, management, ..
    } = Entry::connect(path, index, directory, env, wiring)
        .await
        .map_err(|e| e.to_string())?;
    let (line, column) = directory.template.location;
    let listed = lister
        .client
        .list_directory_accounts(&directory.list_url)
        .await
        .map_err(|e| {
            format!(
                "{}:{line}:{column}: directories[{index}]: listing the members (ListAccounts at {}): {e} (hint: the identity must be the directory's management account or a delegated administrator, with resourcemanager:ListAccounts as deploy/ram/directory-management-policy.json grants)",
                path.display(),
                directory.list_url
            )
        })?;
    let count = listed.len();
    let selected = selected(directory, listed);
    let mut tried = Tried {
        listed: count,
        members: Vec::new(),
        refused: Vec::new(),
    };
    for member in &selected {
        let account = member_account(directory, member);
        let provider = member_provider(directory, &management, &account, wiring);
        if let Err(error) = provider.credentials(now).await {
            tried
                .refused
                .push((account.name.clone(), error.to_string()));
        }
        tried.members.push(account.name);
    }
    Ok(tried)
}

/// The management identity: the directory's credentials, and its own role when it has one.
async fn management(
    path: &std::path::Path,
    index: usize,
    directory: &Directory,
    env: &Environment,
    wiring: &Wiring,
) -> Result<CredentialProvider, AccountError> {
    let template = &directory.template;
    let base = credentials::resolve(&template.credentials, env)
        .await
        .map_err(|source| AccountError::Credentials {
            path: path.display().to_string(),
            table: "directories",
            index,
            account: directory.name.clone(),
            line: template.location.0,
            column: template.location.1,
            source,
        })?;
    Ok(match &template.assume_role {
        None => base,
        Some(role) => super::assume(
            base,
            role,
            wiring.http.clone(),
            template.credentials.refresh_before,
        ),
    })
}

/// Whether a directory whose listing stands at `listed` is listed again at `now`: never
/// listed, the last try failed, or `refresh` has passed since the last good listing.
pub fn due(listed: Listed, refresh: std::time::Duration, now: DateTime<Utc>) -> bool {
    let refresh = chrono::Duration::from_std(refresh).unwrap_or(chrono::Duration::MAX);
    match listed {
        Listed::Never | Listed::Failed => true,
        Listed::Good(at) => now - at >= refresh,
    }
}

/// The statuses of a member that is in the directory (docs/sts-and-directories.md §5.1): made,
/// invited and joined, or a resource account being promoted (still one while that runs).
/// `Create*` steps other than success are accounts not made yet.
fn usable(status: &str) -> bool {
    matches!(status, "CreateSuccess" | "InviteSuccess") || status.starts_with("Promote")
}

/// The listed members the directory manages: usable, with an account id of digits (it goes
/// into a role ARN), under an `include` id when any is given and under no `exclude` id. An
/// id is "above" a member when it is the member's account id, its folder, or any folder on
/// its path.
pub fn selected(directory: &Directory, listed: Vec<DirectoryAccount>) -> Vec<DirectoryAccount> {
    let under = |member: &DirectoryAccount, id: &String| {
        member.account_id == *id
            || member.folder_id == *id
            || member
                .resource_directory_path
                .split('/')
                .any(|part| part == id)
    };
    listed
        .into_iter()
        .filter(|m| {
            let id_ok = !m.account_id.is_empty() && m.account_id.bytes().all(|b| b.is_ascii_digit());
            if !id_ok {
                tracing::warn!(directory = %directory.name, account_id = %m.account_id, "a listed member's account id is not digits: it is left out");
            }
            id_ok && usable(&m.status)
        })
        .filter(|m| directory.include.is_empty() || directory.include.iter().any(|id| under(m, id)))
        .filter(|m| !directory.exclude.iter().any(|id| under(m, id)))
        .collect()
}

/// A member as an account: the directory's settings, named `<directory>/<AccountId>`, with
/// the member role to assume.
pub fn member_account(directory: &Directory, member: &DirectoryAccount) -> Account {
    let mut account = directory.template.clone();
    account.name = format!("{}/{}", directory.name, member.account_id);
    let role = &directory.member_role;
    account.assume_role = Some(AssumeRole {
        config: AssumeRoleConfig {
            role_arn: format!("acs:ram::{}:role/{}", member.account_id, role.name),
            external_id: None,
            external_id_file: None,
            session_name: role.session_name.clone(),
            duration: role.duration,
            sts_endpoint: None,
        },
        sts_url: directory.member_sts_url.clone(),
    });
    account
}

/// Logs who joined and who left since the last listing (display names are in logs only:
/// they are free text that can change, so metric labels carry the account id).
fn log_changes(directory: &str, before: &[DirectoryAccount], now: &[DirectoryAccount]) {
    let ids = |list: &[DirectoryAccount]| -> HashSet<String> {
        list.iter().map(|m| m.account_id.clone()).collect()
    };
    let (was, is) = (ids(before), ids(now));
    for member in now.iter().filter(|m| !was.contains(&m.account_id)) {
        tracing::info!(directory, account_id = %member.account_id, display_name = %member.display_name, "a directory member is managed from now on");
    }
    for member in before.iter().filter(|m| !is.contains(&m.account_id)) {
        tracing::info!(directory, account_id = %member.account_id, display_name = %member.display_name, "a directory member is no longer listed: it is no longer managed");
    }
}

/// An `[[accounts]]` entry assuming a role in the member's account reaches the same cloud
/// account: said, since each instance is then acted on once, through whichever lists it first
/// (the pass's duplicate-source rule), never twice.
fn warn_if_also_configured(accounts: &[Account], member: &Account, listed: &DirectoryAccount) {
    let uid_of = |arn: &str| {
        arn.strip_prefix("acs:ram::")
            .and_then(|rest| rest.split_once(':'))
            .map(|(uid, _)| uid.to_owned())
    };
    for entry in accounts {
        let same = entry
            .assume_role
            .as_ref()
            .and_then(|r| uid_of(&r.config.role_arn))
            .is_some_and(|uid| uid == listed.account_id);
        if same {
            tracing::warn!(account = %entry.name, member = %member.name, "an [[accounts]] entry and a directory member reach the same cloud account: each instance is acted on once per pass, through the one that lists it first; remove the entry or exclude the member");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap()
            + chrono::Duration::minutes(minutes)
    }

    #[test]
    fn a_directory_is_listed_when_never_listed_after_a_failure_or_once_refresh_has_passed() {
        let hour = std::time::Duration::from_secs(3600);
        let table = [
            (Listed::Never, 0, true),
            (Listed::Failed, 0, true),
            (Listed::Good(at(0)), 59, false),
            (Listed::Good(at(0)), 60, true),
            (Listed::Good(at(0)), 61, true),
        ];
        for (listed, now, want) in table {
            assert_eq!(due(listed, hour, at(now)), want, "{listed:?} at +{now}m");
        }
    }

    fn member(id: &str, folder: &str, status: &str) -> DirectoryAccount {
        DirectoryAccount {
            account_id: id.into(),
            status: status.into(),
            folder_id: folder.into(),
            resource_directory_path: format!("rd-1/r-root/fd-parent/{folder}/{id}"),
            ..DirectoryAccount::default()
        }
    }

    fn directory(include: &[&str], exclude: &[&str]) -> Directory {
        let text = "[[directories]]\nname = \"org\"\nendpoint = \"http://127.0.0.1:1/\"\nregions = [\"cn-hangzhou\"]\n[directories.credentials]\nsource = \"env\"\n";
        let env = Environment::from_pairs(Vec::<(String, String)>::new());
        let mut config = Config::parse(text, std::path::Path::new("d.toml"), &env).unwrap();
        let mut directory = config.directories.remove(0);
        directory.include = include.iter().map(|s| (*s).to_owned()).collect();
        directory.exclude = exclude.iter().map(|s| (*s).to_owned()).collect();
        directory
    }

    fn ids(members: Vec<DirectoryAccount>) -> Vec<String> {
        members.into_iter().map(|m| m.account_id).collect()
    }

    #[test]
    fn members_are_selected_by_status_id_and_the_folders_above_them() {
        let listed = || {
            vec![
                member("11", "fd-a", "CreateSuccess"),
                member("12", "fd-a", "InviteSuccess"),
                member("13", "fd-b", "PromoteVerifying"),
                member("14", "fd-b", "CreateVerifying"),
                member("x15", "fd-b", "CreateSuccess"),
            ]
        };
        let all = ids(selected(&directory(&[], &[]), listed()));
        assert_eq!(all, ["11", "12", "13"], "usable statuses, digit ids");
        let under_parent = ids(selected(&directory(&["fd-parent"], &[]), listed()));
        assert_eq!(
            under_parent,
            ["11", "12", "13"],
            "a folder above the member's own"
        );
        let picked = ids(selected(&directory(&["fd-a", "13"], &["12"]), listed()));
        assert_eq!(picked, ["11", "13"]);
        let none = ids(selected(&directory(&["fd-c"], &[]), listed()));
        assert!(none.is_empty());
    }

    #[test]
    fn a_member_is_an_account_named_after_it_assuming_the_member_role_in_it() {
        let directory = directory(&[], &[]);
        let account = member_account(
            &directory,
            &member("2000000000000002", "fd-a", "CreateSuccess"),
        );
        assert_eq!(account.name, "org/2000000000000002");
        let role = account.assume_role.unwrap();
        assert_eq!(
            role.config.role_arn,
            "acs:ram::2000000000000002:role/ResourceDirectoryAccountAccessRole"
        );
        assert_eq!(role.config.session_name, "ecs-renewd");
        assert_eq!(role.sts_url.as_str(), "http://127.0.0.1:1/");
        assert_eq!(account.regions, directory.template.regions);
    }
}
