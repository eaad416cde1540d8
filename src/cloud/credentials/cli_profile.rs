//! The aliyun CLI's profile file (`~/.aliyun/config.json`): modes `AK`, `StsToken` and
//! `EcsRamRole` (docs/ecs-api.md §5.3).

use std::path::PathBuf;

use serde::Deserialize;

use super::imds::ImdsProvider;
use super::{
    Attempt, CredentialError, CredentialProvider, Credentials, CredentialsConfig, Environment,
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
    let Some(profile) = parsed.profiles.into_iter().find(|p| p.name == wanted) else {
        return Err(cli_error(&path, format!("no profile named {wanted:?}")));
    };
    let origin = format!("aliyun CLI profile {wanted:?} in {}", path.display());
    match profile.mode.as_str() {
        "AK" => fixed_profile(&path, origin, false, profile),
        "StsToken" => fixed_profile(&path, origin, true, profile),
        "EcsRamRole" => {
            let role = (!profile.ram_role_name.is_empty()).then_some(profile.ram_role_name);
            let provider = ImdsProvider::new(
                &config.metadata_url,
                role,
                config.imdsv1_fallback && !env.is_true("ALIBABA_CLOUD_IMDSV1_DISABLED"),
                config.refresh_before,
            );
            Ok(Attempt::found(CredentialProvider::metadata(provider)))
        }
        other => Err(cli_error(
            &path,
            format!(
                "profile {wanted:?} has mode {other:?}, which ecs-renewd does not support; use AK, StsToken or EcsRamRole"
            ),
        )),
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

/// An `AK` or `StsToken` profile's fixed keys.
fn fixed_profile(
    path: &std::path::Path,
    origin: String,
    with_token: bool,
    profile: CliProfile,
) -> Result<Attempt, CredentialError> {
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
        access_key_id: profile.access_key_id,
        access_key_secret: profile.access_key_secret,
        security_token: with_token.then_some(profile.sts_token),
        expiration: None,
    };
    Ok(Attempt::found(CredentialProvider::fixed(
        credentials,
        origin,
    )))
}

fn cli_error(path: &std::path::Path, detail: String) -> CredentialError {
    CredentialError::CliProfile {
        path: PathBuf::from(path),
        detail,
    }
}
