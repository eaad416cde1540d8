//! Checkpoints the ledger's write-ahead log from a thread and connection of its own, so that no
//! commit waits for one. SQLite's automatic checkpoint runs inside whichever commit crosses its
//! threshold: on a 10,000-instance pass that held every source's renewal records behind it for
//! about 300 ms. A passive checkpoint runs beside the writer (WAL mode lets the writer append
//! while it copies), so commits only ever pay for their own sync.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;

use rusqlite::Connection;

/// Commits (a batch of status lines counts for several) between two checkpoints: about as
/// much log as SQLite's own default of 1,000 pages.
const COMMITS_PER_CHECKPOINT: u32 = 300;

/// The background checkpointer of one ledger.
pub(super) struct Checkpointer {
    pokes: Option<SyncSender<()>>,
    commits: AtomicU32,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Opens its own connection to the ledger at `path` and starts the thread.
    pub(super) fn start(path: &Path) -> Result<Checkpointer, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA busy_timeout = 5000;")?;
        // One pending request is enough: requests made while a checkpoint runs fold into it.
        let (pokes, requests) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("ledger-checkpoint".into())
            .spawn(move || {
                for () in requests {
                    if let Err(error) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(%error, "checkpointing the ledger's log failed; retried after the next writes");
                    }
                    // The pages it read are not needed until the next checkpoint.
                    let _ = conn.execute_batch("PRAGMA shrink_memory;");
                }
            })
            .map_err(|error| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                    Some(format!("starting the ledger's checkpoint thread: {error}")),
                )
            })?;
        Ok(Checkpointer {
            pokes: Some(pokes),
            commits: AtomicU32::new(0),
            thread: Some(thread),
        })
    }

    /// Counts `weight` commits; asks for a checkpoint once enough have accumulated.
    pub(super) fn committed(&self, weight: u32) {
        let before = self.commits.fetch_add(weight, Ordering::Relaxed);
        if before + weight >= COMMITS_PER_CHECKPOINT {
            self.commits.store(0, Ordering::Relaxed);
            self.request();
        }
    }

    /// Asks for a checkpoint now (without waiting for it).
    pub(super) fn request(&self) {
        if let Some(pokes) = &self.pokes {
            match pokes.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::warn!("the ledger's checkpoint thread has stopped");
                }
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the checkpoint it may be running.
        self.pokes = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
