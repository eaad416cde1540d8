//! The aliyun CLI's profile file (`~/.aliyun/config.json`): modes `AK`, `StsToken`,
//! `EcsRamRole` (docs/ecs-api.md §5.3), `RamRoleArn` (the profile's keys assume its role) and
//! `ChainableRamRoleArn` (its `source_profile`, of any mode, assumes it; a cycle of source
//! profiles is an error naming it) and `OIDC` (the role assumed with a token file, as the
//! `oidc` source does), as docs/sts-and-directories.md §4 describes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::imds::ImdsProvider;
use super::{
    AssumeRoleConfig, AssumedRole, Attempt, CredentialError, CredentialProvider, Credentials,
    CredentialsConfig, Environment,
};
use crate::secret::Secret;

#[derive(Deserialize)]
struct CliConfig {
    #[serde(default)]
    current: String,
    #[serde(default)]
    profiles: Vec<CliProfile>,
}

#[derive(Deserialize)]
struct CliProfile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    access_key_secret: Secret,
    #[serde(default)]
    sts_token: Secret,
    #[serde(default)]
    ram_role_name: String,
    #[serde(default)]
    ram_role_arn: String,
    #[serde(default)]
    ram_session_name: String,
    #[serde(default)]
    expired_seconds: u64,
    #[serde(default)]
    external_id: String,
    #[serde(default)]
    sts_region: String,
    #[serde(default)]
    sts_endpoint: String,
    #[serde(default)]
    source_profile: String,
    #[serde(default)]
    oidc_provider_arn: String,
    #[serde(default)]
    oidc_token_file: String,
}

pub(crate) fn from_cli_profile(
    config: &CredentialsConfig,
    env: &Environment,
) -> Result<Attempt, CredentialError> {
    if env.is_true("ALIBABA_CLOUD_CLI_PROFILE_DISABLED") {
        return Ok(Attempt::Absent(
            "ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true".into(),
        ));
    }
    let path = match (&config.cli_config_path, env.home()) {
        (Some(path), _) => path.clone(),
        (None, Some(home)) => home.join(".aliyun").join("config.json"),
        (None, None) => return Ok(Attempt::Absent("HOME is unset".into())),
    };
    let Some(content) = read_cli_config(config, env, &path)? else {
        return Ok(Attempt::Absent(format!("no {}", path.display())));
    };
    let parsed: CliConfig = serde_json::from_str(&content)
        .map_err(|e| cli_error(&path, format!("not valid JSON: {e}")))?;
    let wanted = config
        .cli_profile
        .clone()
        .or_else(|| env.get("ALIBABA_CLOUD_PROFILE").map(str::to_owned))
        .unwrap_or(parsed.current.clone());
    let file = Profiles {
        config,
        env,
        path: &path,
        profiles: parsed.profiles,
    };
    file.provider(&wanted, &mut Vec::new()).map(Attempt::found)
}

/// The profiles of one CLI config file, and what resolving them needs.
struct Profiles<'a> {
    config: &'a CredentialsConfig,
    env: &'a Environment,
    path: &'a Path,
    profiles: Vec<CliProfile>,
}

impl Profiles<'_> {
    /// The provider of profile `name`; `chain` holds the profiles that led to it (a
    /// `ChainableRamRoleArn`'s sources), so a cycle is found.
    fn provider(
        &self,
        name: &str,
        chain: &mut Vec<String>,
    ) -> Result<CredentialProvider, CredentialError> {
        let path = self.path;
        if chain.iter().any(|seen| seen == name) {
            chain.push(name.to_owned());
            return Err(cli_error(
                path,
                format!("source_profile makes a cycle: {}", chain.join(" -> ")),
            ));
        }
        chain.push(name.to_owned());
        let Some(profile) = self.profiles.iter().find(|p| p.name == name) else {
            return Err(cli_error(path, format!("no profile named {name:?}")));
        };
        let origin = format!("aliyun CLI profile {name:?} in {}", path.display());
        match profile.mode.as_str() {
            "AK" => fixed_profile(path, origin, false, profile),
            "StsToken" => fixed_profile(path, origin, true, profile),
            "EcsRamRole" => {
                let role =
                    (!profile.ram_role_name.is_empty()).then(|| profile.ram_role_name.clone());
                let provider = ImdsProvider::new(
                    &self.config.metadata_url,
                    role,
                    self.config.imdsv1_fallback
                        && !self.env.is_true("ALIBABA_CLOUD_IMDSV1_DISABLED"),
                    self.config.refresh_before,
                );
                Ok(CredentialProvider::metadata(provider))
            }
            "RamRoleArn" => {
                let with_token = !profile.sts_token.is_empty();
                let base = fixed_profile(path, origin, with_token, profile)?;
                self.assume(profile, base)
            }
            "ChainableRamRoleArn" => {
                if profile.source_profile.is_empty() {
                    return Err(cli_error(
                        path,
                        format!("ChainableRamRoleArn profile {name:?} lacks source_profile"),
                    ));
                }
                let base = self.provider(&profile.source_profile, chain)?;
                self.assume(profile, base)
            }
            "OIDC" => self.oidc(profile),
            other => Err(cli_error(
                path,
                format!(
                    "profile {name:?} has mode {other:?}, which ecs-renewd does not support; use AK, StsToken, EcsRamRole, RamRoleArn, ChainableRamRoleArn or OIDC"
                ),
            )),
        }
    }

    /// An `OIDC` profile: `ram_role_arn` assumed with the token in `oidc_token_file` for
    /// `oidc_provider_arn` (the CLI asks for an hour: so does this).
    fn oidc(&self, profile: &CliProfile) -> Result<CredentialProvider, CredentialError> {
        let name = &profile.name;
        let wrong = |what: &str| cli_error(self.path, format!("OIDC profile {name:?}: {what}"));
        if !super::assume_role::valid_role_arn(&profile.ram_role_arn) {
            return Err(wrong("ram_role_arn is not a RAM role ARN"));
        }
        if !super::oidc::valid_provider_arn(&profile.oidc_provider_arn) {
            return Err(wrong("oidc_provider_arn is not an OIDC provider ARN"));
        }
        if profile.oidc_token_file.is_empty() {
            return Err(wrong("oidc_token_file is not set"));
        }
        let session_name = match profile.ram_session_name.as_str() {
            "" => "ecs-renewd".to_owned(),
            given => given.to_owned(),
        };
        if !super::assume_role::valid_session_name(&session_name) {
            return Err(wrong(
                "ram_session_name: use 2 to 64 letters, digits and . @ - _",
            ));
        }
        let endpoint = self.sts_endpoint(profile)?;
        let role = super::oidc::OidcRole {
            role_arn: profile.ram_role_arn.clone(),
            provider_arn: profile.oidc_provider_arn.clone(),
            token_file: PathBuf::from(&profile.oidc_token_file),
            session_name,
        };
        Ok(super::oidc::provider(
            role,
            endpoint,
            self.config.refresh_before,
        ))
    }

    /// STS for `profile`: `sts_endpoint` (https unless it names a scheme), else
    /// `sts.<sts_region>.aliyuncs.com`, else `sts.aliyuncs.com`.
    fn sts_endpoint(&self, profile: &CliProfile) -> Result<reqwest::Url, CredentialError> {
        let endpoint = match (profile.sts_endpoint.as_str(), profile.sts_region.as_str()) {
            ("", "") => "https://sts.aliyuncs.com/".to_owned(),
            ("", region) => format!("https://sts.{region}.aliyuncs.com/"),
            (endpoint, _) if endpoint.contains("://") => endpoint.to_owned(),
            (endpoint, _) => format!("https://{endpoint}/"),
        };
        crate::cloud::endpoint::checked(endpoint).map_err(|e| {
            cli_error(
                self.path,
                format!("profile {:?}: sts_endpoint: {e}", profile.name),
            )
        })
    }

    /// `profile`'s role, assumed with `base`: `ram_role_arn`, `ram_session_name`,
    /// `expired_seconds` (default 3600), `external_id`, and STS at `sts_endpoint` (https
    /// unless it names a scheme), else `sts.<sts_region>.aliyuncs.com`, else
    /// `sts.aliyuncs.com`.
    fn assume(
        &self,
        profile: &CliProfile,
        base: CredentialProvider,
    ) -> Result<CredentialProvider, CredentialError> {
        let name = &profile.name;
        let session_name = if profile.ram_session_name.is_empty() {
            "ecs-renewd".to_owned()
        } else {
            profile.ram_session_name.clone()
        };
        let role = AssumeRoleConfig {
            role_arn: profile.ram_role_arn.clone(),
            external_id: (!profile.external_id.is_empty()).then(|| profile.external_id.clone()),
            external_id_file: None,
            session_name,
            duration: Duration::from_secs(match profile.expired_seconds {
                0 => 3600,
                n => n,
            }),
            sts_endpoint: None,
        };
        if let Some((key, why, _)) = role.problems().into_iter().next() {
            return Err(cli_error(
                self.path,
                format!("profile {name:?}: {key}: {why}"),
            ));
        }
        let endpoint = self.sts_endpoint(profile)?;
        let warnings = base.warnings().to_vec();
        let http = crate::cloud::client::shared_http_client(Duration::from_secs(5));
        let assumed = AssumedRole::new(base, role, endpoint, http, self.config.refresh_before);
        Ok(CredentialProvider::assumed(assumed, warnings))
    }
}

/// The CLI config's text, held to a key file's rule (it holds AccessKey secrets); `None` when
/// the default file does not exist (a file named in the config must).
fn read_cli_config(
    config: &CredentialsConfig,
    env: &Environment,
    path: &std::path::Path,
) -> Result<Option<zeroize::Zeroizing<String>>, CredentialError> {
    let private = env.credentials_directory();
    match crate::secret::read_private(path, private.as_deref()) {
        Ok((_, Some(mode))) => Err(crate::secret::SecretFileError::OpenToOthers {
            what: "aliyun CLI config",
            path: path.to_owned(),
            mode,
        }
        .into()),
        Ok((content, None)) => Ok(Some(content)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.cli_config_path.is_none() => {
            Ok(None)
        }
        Err(source) => Err(CredentialError::Unreadable {
            what: "aliyun CLI config",
            path: path.to_owned(),
            source,
        }),
    }
}

/// An `AK` or `StsToken` profile's fixed keys (a `RamRoleArn` profile's base).
fn fixed_profile(
    path: &Path,
    origin: String,
    with_token: bool,
    profile: &CliProfile,
) -> Result<CredentialProvider, CredentialError> {
    let name = &profile.name;
    if profile.access_key_id.is_empty() || profile.access_key_secret.is_empty() {
        return Err(cli_error(
            path,
            format!("profile {name:?} lacks access_key_id or access_key_secret"),
        ));
    }
    if with_token && profile.sts_token.is_empty() {
        return Err(cli_error(
            path,
            format!("StsToken profile {name:?} lacks sts_token"),
        ));
    }
    let credentials = Credentials {
        access_key_id: profile.access_key_id.clone(),
        access_key_secret: profile.access_key_secret.clone(),
        security_token: with_token.then(|| profile.sts_token.clone()),
        expiration: None,
    };
    Ok(CredentialProvider::fixed(credentials, origin))
}

fn cli_error(path: &Path, detail: String) -> CredentialError {
    CredentialError::CliProfile {
        path: PathBuf::from(path),
        detail,
    }
}
