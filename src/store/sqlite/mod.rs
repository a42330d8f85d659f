//! The SQLite backend, the embedded default: one file beside the key file, one thread that owns
//! the connection (`worker`: operations batched into transactions), the file opened, configured
//! and migrated by `connection`, and the contract's SQL in `queries`. Seeds reach it sealed
//! ([`crate::store::SealedStore`] above it seals them): it holds no key.

mod connection;
mod queries;
#[cfg(test)]
mod tests;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::Connection;

use super::{SealedStore, StoreError};
use crate::keys::Keys;
use connection::{check_tables, configure, migrate, open_existing, probe_write};
use worker::{Completion, Job, Operation, checkpoint, run};

/// The SQLite store as `auth` and the CLI use it: seeds sealed above the SQLite backend.
pub type SqliteStore = SealedStore<SqliteBackend>;

pub struct SqliteBackend {
    /// `None` once dropped: the thread then checkpoints and ends.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: Option<PathBuf>,
    /// The file opened, to notice it being deleted or replaced.
    file: Option<FileIdentity>,
}

/// Which file a path names: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self { device: m.dev(), inode: m.ino() })
    }
}

impl SealedStore<SqliteBackend> {
    /// See [`SqliteBackend::create`].
    pub fn create(path: &Path, keys: Arc<Keys>) -> Result<Self, StoreError> {
        Ok(Self::new(keys, SqliteBackend::create(path)?))
    }

    /// See [`SqliteBackend::open`].
    pub fn open(path: &Path, keys: Arc<Keys>) -> Result<Self, StoreError> {
        Ok(Self::new(keys, SqliteBackend::open(path)?))
    }

    pub fn in_memory(keys: Arc<Keys>) -> Result<Self, StoreError> {
        Ok(Self::new(keys, SqliteBackend::in_memory()?))
    }
}

impl SqliteBackend {
    /// Creates a new, empty database (the first start of a fresh install, `keygen`).
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        if path.exists() {
            return Err(StoreError::database(format!("{} exists already", path.display())));
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // Seeds are sealed, but user names and usage times are nobody else's business.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        configure(&conn)?;
        migrate(&conn)?;
        // The schema goes into the database file itself, not only its write-ahead log.
        checkpoint(&conn, "TRUNCATE")?;
        Self::start(conn, Some(path.to_path_buf()))
    }

    /// Opens an existing database and migrates it. A missing file is an error (never silently
    /// a new, empty store); so is one radmfa cannot write to ([`StoreError::NotWritable`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = open_existing(path)?;
        configure(&conn)?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == 0 {
            // An empty file, or radmfa.db copied without its radmfa.db-wal: starting on it would
            // be starting with no tokens, letting every enrolled user in under no_token.
            return Err(StoreError::database(format!(
                "{} holds no radmfa tables (an empty file, or a copy made without its -wal file?): \
                 restore the database from a backup; to start over with no tokens, move the key file away",
                path.display()
            )));
        }
        migrate(&conn)?;
        check_tables(&conn, path)?;
        Self::start(conn, Some(path.to_path_buf()))
    }

    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        configure(&conn)?;
        migrate(&conn)?;
        Self::start(conn, None)
    }

    fn start(conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        probe_write(&conn)?;
        let file = path.as_deref().and_then(FileIdentity::of);
        let (jobs, queue) = mpsc::channel::<Job>();
        let reopen_from = path.clone();
        let thread = std::thread::Builder::new()
            .name("radmfa-store".into())
            .spawn(move || run(conn, reopen_from, queue))
            .map_err(|e| StoreError::database(format!("cannot start the store thread: {e}")))?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread), path, file })
    }

    /// Folds the write-ahead log into the database file, so a copy of radmfa.db alone (a
    /// backup) holds everything written so far. The server does this every few minutes and at
    /// shutdown.
    async fn fold_log(&self) -> Result<(), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Job::Checkpoint(reply))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.as_ref().ok_or(StoreError::Closed)?.send(job).map_err(|_| StoreError::Closed)
    }

    /// Whether the database file is still the one opened. Deleted or replaced under a running
    /// server, the data it writes goes to a file nobody will open again.
    fn file_problem(&self) -> Option<String> {
        let (path, opened) = (self.path.as_deref()?, self.file?);
        match FileIdentity::of(path) {
            None => Some(format!("{} was deleted while radmfa runs", path.display())),
            Some(now) if now != opened => Some(format!("{} was replaced by another file while radmfa runs", path.display())),
            Some(_) => None,
        }
    }

    /// Runs `work` on the store thread inside the current batch's transaction.
    async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let operation: Operation = Box::new(move |conn| {
            let result = work(conn);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |committed| {
                let _ = reply.send(if committed { result } else { Err(StoreError::database("commit failed")) });
            });
            (ok, completion)
        });
        self.send(Job::Operation(operation))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        // Closing the queue ends the thread, which folds the write-ahead log into the file
        // first: wait for it, so a process that exits next leaves a complete database file.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
