//! The status writer: a pass's status lines written in batches on a thread of its own, so the
//! scan streaming a large fleet through `decide` never waits on SQLite and nothing per
//! instance piles up in memory.

use std::sync::{Arc, Mutex};

use super::{Ledger, LedgerError, StatusRow};

/// Writes status lines in batches, for one pass (`generation`), on a thread of its own so the
/// scan never waits on SQLite.
pub struct StatusWriter {
    buffer: Mutex<Vec<StatusRow>>,
    batches: Mutex<Option<std::sync::mpsc::SyncSender<Vec<StatusRow>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<Result<(), LedgerError>>>>,
}

/// Status lines per write.
const STATUS_BATCH: usize = 1000;
/// Batches waiting to be written before the scan is made to wait.
const STATUS_QUEUE: usize = 4;

impl StatusWriter {
    /// Starts a writer for the pass tagged `generation`.
    pub fn start(ledger: Arc<Ledger>, generation: i64) -> StatusWriter {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<StatusRow>>(STATUS_QUEUE);
        let thread = std::thread::Builder::new()
            .name("status-writer".into())
            .spawn(move || {
                let mut first_error = None;
                for batch in rx {
                    if let Err(error) = ledger.write_status(&batch, generation) {
                        first_error.get_or_insert(error);
                    }
                }
                first_error.map_or(Ok(()), Err)
            })
            .expect("a thread can be started");
        StatusWriter {
            buffer: Mutex::new(Vec::with_capacity(STATUS_BATCH)),
            batches: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Adds one line; a full batch goes to the writer thread.
    pub fn push(&self, row: StatusRow) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        buffer.push(row);
        if buffer.len() >= STATUS_BATCH {
            let batch = std::mem::replace(&mut *buffer, Vec::with_capacity(STATUS_BATCH));
            drop(buffer);
            self.send(batch);
        }
    }

    fn send(&self, batch: Vec<StatusRow>) {
        if let Some(tx) = self
            .batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            // A send fails only if the thread is gone; its error is returned by `finish`.
            let _ = tx.send(batch);
        }
    }

    /// Writes what is left and waits for the writer; returns the first write error, if any.
    pub async fn finish(&self) -> Result<(), LedgerError> {
        let rest = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        if !rest.is_empty() {
            self.send(rest);
        }
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        match thread {
            Some(thread) => tokio::task::spawn_blocking(move || thread.join())
                .await
                .ok()
                .and_then(|joined| joined.ok())
                .unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}
