//! Group commit: writes made at the same moment from different threads share one transaction,
//! so one sync to disk makes all of them durable. Each write runs in its own savepoint, so a
//! write that fails is undone alone; a caller is told `Ok` only once the commit holding its
//! write has succeeded.
//!
//! There is no writer thread: a caller queues its write, then takes the connection. If another
//! caller committed the write meanwhile, its answer is waiting; otherwise this caller commits
//! everything queued so far. Answers are handed out before the connection is released, so a
//! caller holding the connection whose answer is not there yet knows its write is still queued.

use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, Transaction};

/// A write waiting for a shared commit.
trait QueuedWrite: Send {
    /// Runs the write in the batch's transaction; on failure returns a copy of its error (the
    /// write keeps the original for its caller).
    fn run(&mut self, tx: &Transaction<'_>) -> Result<(), rusqlite::Error>;
    /// Hands the caller its answer, given how the batch ended.
    fn finish(self: Box<Self>, batch: Result<(), &rusqlite::Error>);
}

struct Queued<T, F> {
    write: Option<F>,
    result: Option<rusqlite::Result<T>>,
    reply: Sender<rusqlite::Result<T>>,
}

impl<T, F> QueuedWrite for Queued<T, F>
where
    T: Send,
    F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
        let Some(write) = self.write.take() else {
            return Ok(());
        };
        let result = write(tx);
        let copy = result.as_ref().map(|_| ()).map_err(copy_error);
        self.result = Some(result);
        copy
    }

    fn finish(self: Box<Self>, batch: Result<(), &rusqlite::Error>) {
        let answer = match (self.result, batch) {
            // The write's own failure is its answer whatever became of the batch.
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(batch)) => Err(copy_error(batch)),
            (None, Ok(())) => Err(abandoned("the write was never run")),
        };
        // The caller may have gone (a panic on its side); nothing is waiting for the answer.
        let _ = self.reply.send(answer);
    }
}

/// The queue of writes waiting for a commit.
#[derive(Default)]
pub(super) struct CommitQueue {
    waiting: Mutex<Vec<Box<dyn QueuedWrite>>>,
}

impl std::fmt::Debug for CommitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitQueue").finish_non_exhaustive()
    }
}

impl CommitQueue {
    /// Runs `write` in a transaction shared with the writes queued at the same time and
    /// returns once that transaction has committed (or the write failed). `lock` takes
    /// the connection.
    pub(super) fn write<'c, T, F>(
        &self,
        lock: impl FnOnce() -> MutexGuard<'c, Connection>,
        write: F,
    ) -> rusqlite::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = std::sync::mpsc::channel();
        self.waiting().push(Box::new(Queued {
            write: Some(write),
            result: None,
            reply,
        }));
        let mut conn = lock();
        if let Some(result) = ready(&answer) {
            return result;
        }
        let batch = std::mem::take(&mut *self.waiting());
        commit_batch(&mut conn, batch);
        drop(conn);
        answer
            .recv()
            .unwrap_or_else(|_| Err(abandoned("the shared commit was abandoned")))
    }

    fn waiting(&self) -> MutexGuard<'_, Vec<Box<dyn QueuedWrite>>> {
        // The queue is only pushed to and taken whole; a panic cannot leave it half-changed.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The answer, if another caller has already committed this write (or dropped it).
fn ready<T>(answer: &Receiver<rusqlite::Result<T>>) -> Option<rusqlite::Result<T>> {
    match answer.try_recv() {
        Ok(result) => Some(result),
        Err(TryRecvError::Empty) => None,
        // The committing caller panicked with this write in hand: it was not committed.
        Err(TryRecvError::Disconnected) => Some(Err(abandoned("the shared commit was abandoned"))),
    }
}

/// Runs the batch, each write in a savepoint, commits, and answers every caller.
fn commit_batch(conn: &mut Connection, batch: Vec<Box<dyn QueuedWrite>>) {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(error) => {
            for write in batch {
                write.finish(Err(&error));
            }
            return;
        }
    };
    let mut ran: Vec<Box<dyn QueuedWrite>> = Vec::with_capacity(batch.len());
    let mut batch = batch.into_iter();
    let mut failure = None;
    for mut write in batch.by_ref() {
        // Statements kept prepared: parsing them costs more than running them.
        let run = |sql: &str| {
            tx.prepare_cached(sql)
                .and_then(|mut s| s.execute([]))
                .map(drop)
        };
        let outcome = run("SAVEPOINT queued_write").and_then(|()| match write.run(&tx) {
            Ok(()) => run("RELEASE queued_write"),
            // Undo this write alone, unless SQLite has already rolled the whole transaction
            // back (it does on some errors, such as a full disk): then the batch is lost.
            Err(error) if tx.is_autocommit() => Err(error),
            Err(_) => run("ROLLBACK TO queued_write").and_then(|()| run("RELEASE queued_write")),
        });
        ran.push(write);
        if let Err(error) = outcome {
            failure = Some(error);
            break;
        }
    }
    let result = match failure {
        Some(error) => Err(error),
        None => tx.commit(),
    };
    let batch_result = result.as_ref().map(|_| ());
    for write in ran.into_iter().chain(batch) {
        write.finish(batch_result);
    }
}

/// A copy of an SQLite error for another caller (the type is not `Clone`).
fn copy_error(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

fn abandoned(why: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some(why.to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn open() -> (tempfile::TempDir, Arc<Mutex<Connection>>) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER NOT NULL CHECK (v >= 0));",
        )
        .unwrap();
        (dir, Arc::new(Mutex::new(conn)))
    }

    fn values(conn: &Mutex<Connection>) -> Vec<i64> {
        let conn = conn.lock().unwrap();
        let mut statement = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        statement
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn insert(v: i64) -> impl FnOnce(&Transaction<'_>) -> rusqlite::Result<i64> + Send + 'static {
        move |tx| {
            tx.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
            Ok(tx.last_insert_rowid())
        }
    }

    #[test]
    fn writes_queued_together_share_one_commit_and_a_failed_one_is_undone_alone() {
        let (_dir, conn) = open();
        let queue = CommitQueue::default();
        // Queue two writes while the connection is taken, as callers do while a commit syncs.
        let held = conn.lock().unwrap();
        let (first_reply, first) = std::sync::mpsc::channel();
        let (second_reply, second) = std::sync::mpsc::channel();
        queue.waiting().push(Box::new(Queued {
            write: Some(insert(-1)),
            result: None,
            reply: first_reply,
        }));
        queue.waiting().push(Box::new(Queued {
            write: Some(insert(2)),
            result: None,
            reply: second_reply,
        }));
        drop(held);
        // The next caller commits all three: its own and the two queued.
        let own = queue.write(|| conn.lock().unwrap(), insert(3)).unwrap();
        assert!(own > 0);
        assert!(
            matches!(
                first.try_recv(),
                Ok(Err(rusqlite::Error::SqliteFailure(..)))
            ),
            "the write that broke the CHECK gets its own error"
        );
        assert!(matches!(second.try_recv(), Ok(Ok(_))));
        assert_eq!(values(&conn), vec![2, 3]);
        assert!(queue.waiting().is_empty());
    }

    #[test]
    fn concurrent_callers_each_get_their_own_answer_and_every_write_is_kept() {
        let (_dir, conn) = open();
        let queue = Arc::new(CommitQueue::default());
        let start = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (queue, conn, start) = (queue.clone(), conn.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let value = if i == 5 { -5 } else { i };
                    queue.write(|| conn.lock().unwrap(), insert(value)).is_ok()
                })
            })
            .collect();
        let ok: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(ok, vec![true, true, true, true, true, false, true, true]);
        assert_eq!(values(&conn), vec![0, 1, 2, 3, 4, 6, 7]);
    }

    #[test]
    fn a_failed_commit_fails_every_write_in_the_batch() {
        let (_dir, conn) = open();
        // A deferred foreign-key-like check that fails only at COMMIT.
        conn.lock()
            .unwrap()
            .execute_batch(
                "PRAGMA foreign_keys = ON;
                 CREATE TABLE parent (id INTEGER PRIMARY KEY);
                 CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
            )
            .unwrap();
        let queue = CommitQueue::default();
        let held = conn.lock().unwrap();
        let (reply, other) = std::sync::mpsc::channel();
        queue.waiting().push(Box::new(Queued {
            write: Some(insert(1)),
            result: None,
            reply,
        }));
        drop(held);
        let orphan = queue.write(
            || conn.lock().unwrap(),
            |tx: &Transaction<'_>| tx.execute("INSERT INTO child (p) VALUES (42)", []),
        );
        assert!(orphan.is_err(), "the commit failed");
        assert!(
            matches!(other.try_recv(), Ok(Err(_))),
            "the other write was not committed, so it is not told it was"
        );
        assert_eq!(values(&conn), Vec::<i64>::new());
    }
}
