//! The fixed-credential sources: key files named in the config, the environment, and systemd
//! credentials (`$CREDENTIALS_DIRECTORY`).

use std::io;
use std::path::Path;

use super::{
    Attempt, CredentialError, CredentialProvider, Credentials, CredentialsConfig, Environment,
};
use crate::secret::{Secret, read_secret_file};

/// Environment variable families in the order they are consulted: the current names first,
/// then the legacy ones of aliyun-python-sdk-core, aliyun-cli and Terraform.
const ENV_FAMILIES: &[(&str, &str, &str)] = &[
    (
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
    ),
    (
        "ALIYUN_ACCESS_KEY_ID",
        "ALIYUN_ACCESS_KEY_SECRET",
        "ALIYUN_SECURITY_TOKEN",
    ),
    (
        "ALICLOUD_ACCESS_KEY_ID",
        "ALICLOUD_ACCESS_KEY_SECRET",
        "ALICLOUD_SECURITY_TOKEN",
    ),
    (
        "ALICLOUD_ACCESS_KEY",
        "ALICLOUD_SECRET_KEY",
        "ALICLOUD_SECURITY_TOKEN",
    ),
];

/// A value that is not secret (an AccessKey ID), read from a file and trimmed of surrounding
/// white space (a trailing newline is how editors and `echo` leave them).
pub(crate) fn read_value_file(path: &Path, what: &'static str) -> Result<String, CredentialError> {
    let content = std::fs::read_to_string(path).map_err(|source| CredentialError::Unreadable {
        what,
        path: path.to_owned(),
        source,
    })?;
    let value = content.trim().to_owned();
    if value.is_empty() {
        return Err(CredentialError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(value)
}

/// `access_key_id` + `access_key_secret_file` (+ `security_token_file`) from the config.
pub(crate) fn from_files(
    config: &CredentialsConfig,
    env: &Environment,
) -> Result<Attempt, CredentialError> {
    let Some(secret_path) = &config.access_key_secret_file else {
        return Ok(Attempt::Absent("access_key_secret_file not set".into()));
    };
    let Some(access_key_id) = config.access_key_id.clone().filter(|id| !id.is_empty()) else {
        return Err(CredentialError::Incomplete {
            source_name: "file",
            detail: "access_key_secret_file is set but access_key_id is not".into(),
        });
    };
    let private = env.credentials_directory();
    let secret = read_secret_file(secret_path, "AccessKey secret", private.as_deref())?;
    let security_token = match &config.security_token_file {
        Some(path) => Some(read_secret_file(
            path,
            "security token",
            private.as_deref(),
        )?),
        None => None,
    };
    let credentials = Credentials {
        access_key_id,
        access_key_secret: secret,
        security_token,
        expiration: None,
    };
    Ok(Attempt::found(CredentialProvider::fixed(
        credentials,
        format!("key file {}", secret_path.display()),
    )))
}

/// The first environment variable family that has an AccessKey ID.
pub(crate) fn from_env(env: &Environment) -> Result<Attempt, CredentialError> {
    for &(id_var, secret_var, token_var) in ENV_FAMILIES {
        let Some(id) = env.get(id_var) else {
            continue;
        };
        let Some(secret) = env.get(secret_var) else {
            return Err(CredentialError::Incomplete {
                source_name: "env",
                detail: format!("{id_var} is set but {secret_var} is not"),
            });
        };
        let credentials = Credentials {
            access_key_id: id.to_owned(),
            access_key_secret: Secret::new(secret),
            security_token: env.get(token_var).map(Secret::new),
            expiration: None,
        };
        return Ok(Attempt::found(CredentialProvider::fixed(
            credentials,
            format!("environment ({id_var})"),
        )));
    }
    Ok(Attempt::Absent(
        "ALIBABA_CLOUD_ACCESS_KEY_ID, ALIYUN_ACCESS_KEY_ID, ALICLOUD_ACCESS_KEY_ID and ALICLOUD_ACCESS_KEY are unset".into(),
    ))
}

/// `<prefix>access_key_id`, `<prefix>access_key_secret` and optionally `<prefix>security_token`
/// in `$CREDENTIALS_DIRECTORY` (what systemd's `LoadCredential=` provides).
pub(crate) fn from_systemd(
    config: &CredentialsConfig,
    env: &Environment,
) -> Result<Attempt, CredentialError> {
    let Some(dir) = env.credentials_directory() else {
        return Ok(Attempt::Absent("CREDENTIALS_DIRECTORY is unset".into()));
    };
    let prefix = &config.systemd_credential_prefix;
    let id_path = dir.join(format!("{prefix}access_key_id"));
    let secret_path = dir.join(format!("{prefix}access_key_secret"));
    let token_path = dir.join(format!("{prefix}security_token"));
    let id_exists = exists(&id_path)?;
    if !id_exists {
        return Ok(Attempt::Absent(format!("no {}", id_path.display())));
    }
    if !exists(&secret_path)? {
        return Err(CredentialError::Incomplete {
            source_name: "systemd",
            detail: format!(
                "{} exists but {} does not",
                id_path.display(),
                secret_path.display()
            ),
        });
    }
    let id = read_value_file(&id_path, "AccessKey ID")?;
    let secret = read_secret_file(&secret_path, "AccessKey secret", Some(&dir))?;
    let security_token = if exists(&token_path)? {
        Some(read_secret_file(&token_path, "security token", Some(&dir))?)
    } else {
        None
    };
    let credentials = Credentials {
        access_key_id: id,
        access_key_secret: secret,
        security_token,
        expiration: None,
    };
    Ok(Attempt::found(CredentialProvider::fixed(
        credentials,
        format!("systemd credentials in {}", dir.display()),
    )))
}

fn exists(path: &Path) -> Result<bool, CredentialError> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CredentialError::Unreadable {
            what: "systemd credential",
            path: path.to_owned(),
            source,
        }),
    }
}
