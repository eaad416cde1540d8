//! `Secret`: the only type that holds an AccessKey secret or an STS token. Its `Debug` and
//! `Display` print a redaction, so a secret cannot reach a log line, an error or a panic message
//! by being formatted; the value is wiped from memory when dropped. Also reading a secret from
//! a file: only from a file no other user can read, into memory that is wiped afterwards.

use std::fmt;
use std::io::Read;
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

/// What a secret prints as.
pub const REDACTED: &str = "[REDACTED]";

/// A secret string. Read it with [`Secret::expose`] only where it is sent or signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself, for signing and sending only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty (an empty secret is a configuration mistake).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The empty secret, for optional fields of files read with serde.
impl Default for Secret {
    fn default() -> Self {
        Secret::new(String::new())
    }
}

/// A secret read from a file (the aliyun CLI profile, say) is kept in a `Secret` from the
/// moment it is parsed.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d).map(Secret::new)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Why a secret file was not read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file cannot be read.
    #[error(
        "cannot read the {what} from {path}: {source} — check the path and that the daemon's user may read it"
    )]
    Unreadable {
        /// What the file should hold.
        what: &'static str,
        /// The path of the secret file, as it was given.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty (or white space only).
    #[error("the {what} file {path} is empty — put the value in the file")]
    Empty {
        /// What the file should hold.
        what: &'static str,
        /// The path of the secret file, as it was given.
        path: std::path::PathBuf,
    },
    /// Group or other users have some access to the file (read, write or execute), so the
    /// secret may already be known or replaced. Refused as OpenSSH refuses such a private key.
    #[error(
        "the {what} file {path} is open to other users (mode {mode:04o}), so ecs-renewd refuses to use it — run `chmod 600 {path}` (and check who may have read it)"
    )]
    OpenToOthers {
        /// What the file holds.
        what: &'static str,
        /// The path of the secret file, as it was given.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The permission bits of a file when its group or other users have any access to it.
#[cfg(unix)]
fn open_mode(metadata: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Other platforms have no mode bits to check.
#[cfg(not(unix))]
fn open_mode(_metadata: &std::fs::Metadata) -> Option<u32> {
    None
}

/// Whether `path` lies in `private_dir` once both are resolved (so `..` or a symbolic link
/// cannot borrow the exemption).
fn in_private_dir(path: &Path, private_dir: Option<&Path>) -> bool {
    let Some(dir) = private_dir else {
        return false;
    };
    match (std::fs::canonicalize(path), std::fs::canonicalize(dir)) {
        (Ok(path), Ok(dir)) => path.starts_with(dir),
        _ => false,
    }
}

/// A whole file as text in memory that is wiped when dropped, and its permission bits when
/// group or other users may use it and the file is not in `private_dir`. The mode is read
/// from the file that was read (not looked up again by name). The buffer is sized from the
/// file's length up front, so reading never leaves an unwiped smaller copy behind.
pub fn read_private(
    path: &Path,
    private_dir: Option<&Path>,
) -> std::io::Result<(Zeroizing<String>, Option<u32>)> {
    let mut file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(metadata.len() as usize + 1));
    file.read_to_end(&mut bytes)?;
    let text = match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Zeroizing::new(text),
        Err(error) => {
            let mut raw = error.into_bytes();
            raw.zeroize();
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is not UTF-8 text",
            ));
        }
    };
    let open = open_mode(&metadata).filter(|_| !in_private_dir(path, private_dir));
    Ok((text, open))
}

/// Reads a secret from `path`: refused when the file is open to other users (unless it lies in
/// `private_dir`, a directory made private to the daemon by its service manager, such as
/// systemd's `$CREDENTIALS_DIRECTORY`), trimmed of surrounding white space (editors and `echo`
/// leave a newline), never empty.
pub fn read_secret_file(
    path: &Path,
    what: &'static str,
    private_dir: Option<&Path>,
) -> Result<Secret, SecretFileError> {
    let (content, open) =
        read_private(path, private_dir).map_err(|source| SecretFileError::Unreadable {
            what,
            path: path.to_owned(),
            source,
        })?;
    if let Some(mode) = open {
        return Err(SecretFileError::OpenToOthers {
            what,
            path: path.to_owned(),
            mode,
        });
    }
    let value = content.trim();
    if value.is_empty() {
        return Err(SecretFileError::Empty {
            what,
            path: path.to_owned(),
        });
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = Secret::new("wyLTSmsyPGP1ohvvw8xYgB29dlGI8KMiH2pKCNZ9");
        for shown in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{secret:#?}"),
            format!("{:?}", Some(&secret)),
        ] {
            assert!(!shown.contains("wyLTS"), "{shown}");
            assert!(shown.contains(REDACTED));
        }
        assert_eq!(secret.expose(), "wyLTSmsyPGP1ohvvw8xYgB29dlGI8KMiH2pKCNZ9");
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_open_to_others_is_refused_unless_it_is_in_the_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cret\n").unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644, 0o610] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = read_secret_file(&path, "AccessKey secret", None).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "the AccessKey secret file {0} is open to other users (mode {mode:04o}), so ecs-renewd refuses to use it — run `chmod 600 {0}` (and check who may have read it)",
                    path.display()
                )
            );
            let allowed = read_secret_file(&path, "AccessKey secret", Some(dir.path())).unwrap();
            assert_eq!(allowed.expose(), "s3cret");
        }
        // A path that only looks as if it were in the private directory is not exempt.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let inside = dir.path().join("private");
        std::fs::create_dir(&inside).unwrap();
        let sneaky = inside.join("..").join("key");
        assert!(read_secret_file(&sneaky, "AccessKey secret", Some(&inside)).is_err());
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                read_secret_file(&path, "AccessKey secret", None)
                    .unwrap()
                    .expose(),
                "s3cret"
            );
        }
    }
}
