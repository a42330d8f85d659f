//! The store thread: it owns the connection and runs the operations queued to it in batches,
//! one transaction per batch and a savepoint per operation, so a burst of logins costs one
//! commit instead of one each. A batch that fails to commit (read-only, disk full) fails its
//! operations, and the next batch tries a fresh connection, so service resumes once the file
//! takes writes again.

use std::path::PathBuf;
use std::sync::mpsc;

use rusqlite::Connection;

use super::connection::{configure, not_writable_or, open_existing};
use crate::store::StoreError;

/// Operations run per transaction at most: bounds how long one commit holds the others back.
const MAX_BATCH: usize = 512;

pub(super) type Completion = Box<dyn FnOnce(bool) + Send>;
pub(super) type Operation = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// What the store thread is asked to do.
pub(super) enum Job {
    /// An operation, run in the current batch's transaction.
    Operation(Operation),
    /// Fold the write-ahead log into the database file (outside any transaction), so a copy of
    /// the database file alone holds everything written so far.
    Checkpoint(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

pub(super) fn checkpoint(conn: &Connection, mode: &str) -> Result<(), StoreError> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))?;
    Ok(())
}

pub(super) fn run(mut conn: Connection, path: Option<PathBuf>, queue: mpsc::Receiver<Job>) {
    let mut broken = false;
    let mut next = queue.recv().ok();
    while let Some(job) = next.take() {
        let first = match job {
            Job::Checkpoint(reply) => {
                let _ = reply.send(checkpoint(&conn, "PASSIVE"));
                next = queue.recv().ok();
                continue;
            }
            Job::Operation(operation) => operation,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(Job::Operation(operation)) => batch.push(operation),
                // A checkpoint waits for the batch before it (it cannot run inside a transaction).
                Ok(checkpoint) => {
                    next = Some(checkpoint);
                    break;
                }
                Err(_) => break,
            }
        }
        if broken {
            // The last batch failed to write (read-only, disk full, I/O error): a fresh
            // connection sees the file as it is now, so service resumes once it is writable.
            if let Some(fresh) = path.as_deref().and_then(|p| open_existing(p).ok()).filter(|c| configure(c).is_ok()) {
                conn = fresh;
                tracing::info!("store: the database is writable again");
            }
        }
        broken = !run_batch(&conn, batch, broken);
        if next.is_none() {
            next = queue.recv().ok();
        }
    }
    // Everyone is done with the store: leave everything in the database file itself.
    if let Err(e) = checkpoint(&conn, "TRUNCATE") {
        tracing::warn!(error = %e, "store: the write-ahead log could not be folded into the database at close");
    }
}

/// Runs operations in one transaction, a savepoint each; true if it committed.
fn run_batch(conn: &Connection, batch: Vec<Operation>, already_broken: bool) -> bool {
    let began = conn.execute_batch("BEGIN IMMEDIATE").is_ok();
    let mut completions = Vec::with_capacity(batch.len());
    for operation in batch {
        let _ = conn.execute_batch("SAVEPOINT op");
        let (ok, completion) = operation(conn);
        // A failed operation leaves no half-done writes behind, and the batch goes on.
        let end = if ok { "RELEASE op" } else { "ROLLBACK TO op; RELEASE op" };
        let _ = conn.execute_batch(end);
        completions.push(completion);
    }
    let commit =
        if began { conn.execute_batch("COMMIT").map_err(not_writable_or) } else { Err(StoreError::NotWritable("BEGIN failed".into())) };
    let committed = commit.is_ok();
    if let Err(e) = commit {
        let _ = conn.execute_batch("ROLLBACK");
        if !already_broken {
            tracing::error!(error = %e, "store: a transaction failed to commit; its operations report errors until the database takes writes again");
        }
    }
    for completion in completions {
        completion(committed);
    }
    committed
}
