//! One writer per state directory: an exclusive lock on `ecs-renewd.lock`, held for the life of
//! the process (the OS releases it when the process dies, even by SIGKILL).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "ecs-renewd.lock";

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "another ecs-renewd already uses the state directory {dir} (it holds {path}); run one daemon per state directory — stop the other one or give this one its own state_dir"
    )]
    Held {
        /// The state directory another process already uses.
        dir: String,
        /// The lock file.
        path: String,
    },
    /// The file cannot be opened or locked.
    #[error(
        "cannot lock {path}: {source} — check that the state directory exists and is writable by the daemon's user"
    )]
    Io {
        /// The lock file.
        path: String,
        /// The I/O error from opening or locking the lock file.
        #[source]
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes the lock in `dir` without waiting.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.display().to_string(),
                    path: path.display().to_string(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        // The pid is for the operator's eyes only; the lock itself is what counts.
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(StateLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
