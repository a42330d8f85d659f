//! The SQLite store: one thread owns the connection; operations queue to it and are run in
//! batches, one transaction per batch and a savepoint per operation, so a burst of logins costs
//! one commit instead of one each. WAL mode, a busy timeout, and schema migrations by
//! `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::seal::{KeyRing, Keys};
use super::{Factor, LockoutPolicy, LockoutState, NewToken, SmsLimits, SmsReservation, Store, StoreError, Token, TokenInfo, UnixTime};
use crate::otp::{Algorithm, TotpParams};
use crate::secret::Secret;

/// Operations run per transaction at most: bounds how long one commit holds the others back.
const MAX_BATCH: usize = 512;

/// How many days of SMS sends are kept for the rate limits and the record.
const SMS_HISTORY: UnixTime = 24 * 3600;

/// Unconfirmed tokens older than this are deleted by `purge` (the portal refuses to confirm them
/// long before, after its `enrollment_timeout`).
const UNCONFIRMED_TOKEN_LIFETIME: UnixTime = 24 * 3600;

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL,
        name TEXT NOT NULL,
        algorithm TEXT NOT NULL,
        digits INTEGER NOT NULL,
        period INTEGER NOT NULL,
        secret TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_step INTEGER,
        last_used_at INTEGER,
        confirmed INTEGER NOT NULL DEFAULT 0
     );
     CREATE INDEX tokens_by_username ON tokens(username);
     CREATE TABLE lockouts (
        username TEXT PRIMARY KEY,
        failures INTEGER NOT NULL DEFAULT 0,
        locked_until INTEGER,
        lock_count INTEGER NOT NULL DEFAULT 0
     );
     CREATE TABLE sms_sends (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL,
        sent_at INTEGER NOT NULL
     );
     CREATE INDEX sms_sends_by_user ON sms_sends(username, sent_at);
     CREATE INDEX sms_sends_by_time ON sms_sends(sent_at);
     CREATE TABLE used_states (
        nonce BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 2: a failure counter per factor (wrong passwords apart from wrong codes), forgetting old
    // failures, numbering them (a right answer clears only those counted before its try began).
    "ALTER TABLE lockouts ADD COLUMN last_failure_at INTEGER;
     ALTER TABLE lockouts ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
     -- Rows are numbered from 1 (seq 0 means no row): a right answer then clears these too.
     UPDATE lockouts SET seq = 1;
     CREATE TABLE password_lockouts (
        username TEXT PRIMARY KEY,
        failures INTEGER NOT NULL DEFAULT 0,
        locked_until INTEGER,
        lock_count INTEGER NOT NULL DEFAULT 0,
        last_failure_at INTEGER,
        seq INTEGER NOT NULL DEFAULT 0
     );",
    // 3: what a challenge's code step needs (sealed profile and groups), so it asks no directory.
    "CREATE TABLE challenge_contexts (
        nonce BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL,
        context BLOB NOT NULL
     ) WITHOUT ROWID;",
];

/// The table holding a factor's counters (a fixed name, never input).
fn lockout_table(factor: Factor) -> &'static str {
    match factor {
        Factor::Password => "password_lockouts",
        Factor::Code => "lockouts",
    }
}

type Completion = Box<dyn FnOnce(bool) + Send>;
type Operation = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// What the store thread is asked to do.
enum Job {
    /// An operation, run in the current batch's transaction.
    Operation(Operation),
    /// Fold the write-ahead log into the database file (outside any transaction), so a copy of
    /// the database file alone holds everything written so far.
    Checkpoint(tokio::sync::oneshot::Sender<Result<(), StoreError>>),
}

pub struct SqliteStore {
    /// `None` once dropped: the thread then checkpoints and ends.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    keys: Arc<Keys>,
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

/// Opens an existing database for writing, never creating one.
fn open_existing(path: &Path) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    if !path.exists() {
        return Err(StoreError::Database(format!("{} does not exist", path.display())));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(not_writable_or)?;
    // SQLite falls back to read-only when the file is not writable, and would stay so after the
    // file became writable again: refuse, and let the caller try again.
    if conn.is_readonly(rusqlite::DatabaseName::Main)? {
        return Err(StoreError::NotWritable(format!("{} is read-only for this process", path.display())));
    }
    Ok(conn)
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL").map_err(not_writable_or)?;
    // FULL: each batch's commit reaches the disk before its logins are answered, so a power cut
    // cannot forget a used time step or a lockout (measured in BENCHMARKS.md: batching makes
    // the fsync cheap).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// A write that changes nothing, to learn now (not at the first login) whether writes work.
fn probe_write(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    conn.execute_batch(&format!("BEGIN IMMEDIATE; PRAGMA user_version = {version}; COMMIT;")).map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        not_writable_or(e)
    })
}

/// Errors that mean "this process cannot write the database now" become `NotWritable`.
fn not_writable_or(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(
            ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::SystemIoFailure | ErrorCode::DiskFull,
        ) => StoreError::NotWritable(e.to_string()),
        _ => StoreError::from(e),
    }
}

impl SqliteStore {
    /// Creates a new, empty database (the first start of a fresh install, `keygen`).
    pub fn create(path: &Path, keys: Arc<Keys>) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        if path.exists() {
            return Err(StoreError::Database(format!("{} exists already", path.display())));
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
        Self::start(conn, Some(path.to_path_buf()), keys)
    }

    /// Opens an existing database and migrates it. A missing file is an error (never silently
    /// a new, empty store); so is one radmfa cannot write to ([`StoreError::NotWritable`]).
    pub fn open(path: &Path, keys: Arc<Keys>) -> Result<Self, StoreError> {
        let conn = open_existing(path)?;
        configure(&conn)?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == 0 {
            // An empty file, or radmfa.db copied without its radmfa.db-wal: starting on it would
            // be starting with no tokens, letting every enrolled user in under no_token.
            return Err(StoreError::Database(format!(
                "{} holds no radmfa tables (an empty file, or a copy made without its -wal file?): \
                 restore the database from a backup; to start over with no tokens, move the key file away",
                path.display()
            )));
        }
        migrate(&conn)?;
        check_tables(&conn, path)?;
        Self::start(conn, Some(path.to_path_buf()), keys)
    }

    pub fn in_memory(keys: Arc<Keys>) -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        configure(&conn)?;
        migrate(&conn)?;
        Self::start(conn, None, keys)
    }

    fn start(conn: Connection, path: Option<PathBuf>, keys: Arc<Keys>) -> Result<Self, StoreError> {
        probe_write(&conn)?;
        let file = path.as_deref().and_then(FileIdentity::of);
        let (jobs, queue) = mpsc::channel::<Job>();
        let reopen_from = path.clone();
        let thread = std::thread::Builder::new()
            .name("radmfa-store".into())
            .spawn(move || run(conn, reopen_from, queue))
            .map_err(|e| StoreError::Database(format!("cannot start the store thread: {e}")))?;
        Ok(Self { jobs: Some(jobs), thread: Some(thread), keys, path, file })
    }

    /// Folds the write-ahead log into the database file, so a copy of radmfa.db alone (a
    /// backup) holds everything written so far. The server does this every few minutes and at
    /// shutdown.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Job::Checkpoint(reply))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.as_ref().ok_or(StoreError::Closed)?.send(job).map_err(|_| StoreError::Closed)
    }

    /// Whether the database file is still the one opened. Deleted or replaced under a running
    /// server, the data it writes goes to a file nobody will open again.
    pub fn file_problem(&self) -> Option<String> {
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
                let _ = reply.send(if committed { result } else { Err(StoreError::Database("commit failed".into())) });
            });
            (ok, completion)
        });
        self.send(Job::Operation(operation))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Reseals every seed not yet sealed with `keys`' current key, in one transaction
    /// (`radmfa keys rotate`). `keys` must still hold the old keys. Returns how many were resealed.
    pub async fn reseal_all(&self, keys: Arc<KeyRing>) -> Result<usize, StoreError> {
        self.call(move |conn| {
            let current = format!("{}:%", keys.current_id());
            let rows: Vec<(i64, String, String)> = conn
                .prepare("SELECT id, username, secret FROM tokens WHERE secret NOT LIKE ?1")?
                .query_map([&current], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            for (id, username, sealed) in &rows {
                let aad = token_aad(*id, username);
                let seed = keys.open(sealed, &aad).map_err(|_| StoreError::Sealed(*id))?;
                conn.execute("UPDATE tokens SET secret = ?1 WHERE id = ?2", params![keys.seal(&seed, &aad), id])?;
            }
            Ok(rows.len())
        })
        .await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue ends the thread, which folds the write-ahead log into the file
        // first: wait for it, so a process that exits next leaves a complete database file.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn checkpoint(conn: &Connection, mode: &str) -> Result<(), StoreError> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))?;
    Ok(())
}

/// The tables every login needs. A file whose version says "radmfa" but which lacks one (a
/// table dropped by hand, a partial restore) is refused: a missing `tokens` table would read
/// as "no tokens" for everyone.
const REQUIRED_TABLES: [&str; 6] = ["tokens", "lockouts", "password_lockouts", "sms_sends", "used_states", "challenge_contexts"];

fn check_tables(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut exists = conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?;
    let missing: Vec<&str> = REQUIRED_TABLES.into_iter().filter(|t| !exists.exists([t]).unwrap_or(false)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(StoreError::Database(format!("{} lacks the table(s) {}: restore the database from a backup", path.display(), missing.join(", "))))
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "the database is schema version {version}, newer than this radmfa knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {migration}; PRAGMA user_version = {}; COMMIT;", i + 1))?;
    }
    Ok(())
}

fn run(mut conn: Connection, path: Option<PathBuf>, queue: mpsc::Receiver<Job>) {
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

/// Binds a sealed seed to its row and owner: copied to another row, it does not open.
fn token_aad(id: i64, username: &str) -> Vec<u8> {
    format!("radmfa/token/v1/{id}/{username}").into_bytes()
}

fn read_token(keys: &Keys, row: &rusqlite::Row<'_>) -> Result<Token, StoreError> {
    let id: i64 = row.get(0)?;
    let username: String = row.get(1)?;
    let sealed: String = row.get(6)?;
    let algorithm: String = row.get(3)?;
    let secret = keys.open(&sealed, &token_aad(id, &username)).map_err(|_| StoreError::Sealed(id))?;
    Ok(Token {
        id,
        name: row.get(2)?,
        params: TotpParams {
            algorithm: algorithm.parse::<Algorithm>().map_err(StoreError::Database)?,
            digits: row.get(4)?,
            period: row.get::<_, i64>(5)?.max(1) as u64,
        },
        secret: Secret::new(secret.to_vec()),
        created_at: row.get(7)?,
        last_step: row.get::<_, Option<i64>>(8)?.map(|s| s as u64),
        last_used_at: row.get(9)?,
        confirmed: row.get(10)?,
        username,
    })
}

const TOKEN_COLUMNS: &str = "id, username, name, algorithm, digits, period, secret, created_at, last_step, last_used_at, confirmed";

fn query_tokens(conn: &Connection, keys: &Keys, filter: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Token>, StoreError> {
    let mut statement = conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens {filter} ORDER BY id"))?;
    let mut rows = statement.query(args)?;
    let mut tokens = Vec::new();
    while let Some(row) = rows.next()? {
        tokens.push(read_token(keys, row)?);
    }
    Ok(tokens)
}

#[async_trait]
impl Store for SqliteStore {
    async fn add_token(&self, token: NewToken) -> Result<i64, StoreError> {
        let keys = Arc::clone(&self.keys);
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO tokens (username, name, algorithm, digits, period, secret, created_at, confirmed)
                 VALUES (?1, ?2, ?3, ?4, ?5, '', ?6, ?7)",
                params![
                    token.username,
                    token.name,
                    token.params.algorithm.as_str(),
                    token.params.digits,
                    token.params.period as i64,
                    super::now(),
                    token.confirmed
                ],
            )?;
            let id = conn.last_insert_rowid();
            let sealed = keys.current().seal(token.secret.expose(), &token_aad(id, &token.username));
            conn.execute("UPDATE tokens SET secret = ?1 WHERE id = ?2", params![sealed, id])?;
            Ok(id)
        })
        .await
    }

    async fn tokens(&self, username: &str) -> Result<Vec<Token>, StoreError> {
        let keys = Arc::clone(&self.keys);
        let username = username.to_owned();
        self.call(move |conn| query_tokens(conn, &keys, "WHERE username = ?1", &[&username])).await
    }

    async fn list_tokens(&self, username: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        let username = username.map(str::to_owned);
        self.call(move |conn| {
            let mut statement = conn.prepare(
                "SELECT id, username, name, created_at, last_used_at, confirmed, secret FROM tokens
                 WHERE ?1 IS NULL OR username = ?1 ORDER BY id",
            )?;
            let rows = statement.query_map([&username], |r| {
                let sealed: String = r.get(6)?;
                Ok(TokenInfo {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    name: r.get(2)?,
                    created_at: r.get(3)?,
                    last_used_at: r.get(4)?,
                    confirmed: r.get(5)?,
                    sealed_with: sealed.split_once(':').map(|(id, _)| id.to_owned()).unwrap_or_default(),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn move_tokens(&self, from: &str, to: &str) -> Result<usize, StoreError> {
        if from == to {
            return Ok(0);
        }
        let keys = Arc::clone(&self.keys);
        let (from, to) = (from.to_owned(), to.to_owned());
        self.call(move |conn| {
            let rows: Vec<(i64, String)> = conn
                .prepare_cached("SELECT id, secret FROM tokens WHERE username = ?1")?
                .query_map([&from], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (id, sealed) in &rows {
                // The seal names its owner, so a moved seed is sealed anew for the account.
                let seed = keys.open(sealed, &token_aad(*id, &from)).map_err(|_| StoreError::Sealed(*id))?;
                conn.execute(
                    "UPDATE tokens SET username = ?1, secret = ?2 WHERE id = ?3",
                    params![to, keys.current().seal(&seed, &token_aad(*id, &to)), id],
                )?;
            }
            Ok(rows.len())
        })
        .await
    }

    async fn remove_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| Ok(conn.execute("DELETE FROM tokens WHERE id = ?1 AND username = ?2", params![id, username])? == 1)).await
    }

    async fn confirm_token(&self, username: &str, id: i64, step: u64) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| {
            let sql = "UPDATE tokens SET confirmed = 1, last_step = ?3 WHERE id = ?1 AND username = ?2 AND confirmed = 0";
            Ok(conn.execute(sql, params![id, username, step as i64])? == 1)
        })
        .await
    }

    async fn use_step(&self, token_id: i64, step: u64, now: UnixTime) -> Result<bool, StoreError> {
        self.call(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE tokens SET last_step = ?1, last_used_at = ?2
                     WHERE id = ?3 AND confirmed = 1 AND (last_step IS NULL OR last_step < ?1)",
                )?
                .execute(params![step as i64, now, token_id])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn locked_until(&self, username: &str, factor: Factor, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| {
            let sql = format!("SELECT locked_until FROM {} WHERE username = ?1", lockout_table(factor));
            let until: Option<Option<UnixTime>> = conn.prepare_cached(&sql)?.query_row([&username], |r| r.get(0)).optional()?;
            Ok(until.flatten().filter(|&t| t > now))
        })
        .await
    }

    async fn lockout_state(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<LockoutState, StoreError> {
        let username = username.to_owned();
        let table = lockout_table(factor);
        self.call(move |conn| {
            let sql = format!("SELECT failures, locked_until, last_failure_at, seq FROM {table} WHERE username = ?1");
            let row: Option<(u32, Option<UnixTime>, Option<UnixTime>, u64)> =
                conn.prepare_cached(&sql)?.query_row([&username], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).optional()?;
            let Some((failures, locked_until, last_failure, seq)) = row else { return Ok(LockoutState::default()) };
            let forgotten = policy.forget_after.is_some_and(|f| last_failure.is_some_and(|at| at < now - f.as_secs() as UnixTime));
            Ok(LockoutState {
                locked_until: locked_until.filter(|&until| until > now),
                failures: if forgotten { 0 } else { failures },
                seq,
            })
        })
        .await
    }

    async fn record_failure(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<Option<UnixTime>, StoreError> {
        let username = username.to_owned();
        let table = lockout_table(factor);
        self.call(move |conn| {
            conn.prepare_cached(&format!("INSERT INTO {table} (username) VALUES (?1) ON CONFLICT(username) DO NOTHING"))?
                .execute([&username])?;
            if let Some(forget) = policy.forget_after {
                // Failures (and doublings) from long ago no longer count, once no lock is running.
                conn.prepare_cached(&format!(
                    "UPDATE {table} SET failures = 0, lock_count = 0 WHERE username = ?1 AND last_failure_at < ?2
                     AND (locked_until IS NULL OR locked_until <= ?3)"
                ))?
                .execute(params![username, now - forget.as_secs() as UnixTime, now])?;
            }
            let (failures, lock_count): (u32, u32) = conn
                .prepare_cached(&format!(
                    "UPDATE {table} SET failures = failures + 1, last_failure_at = ?2, seq = seq + 1 WHERE username = ?1
                     RETURNING failures, lock_count"
                ))?
                .query_row(params![username, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if failures < policy.max_failures.max(1) {
                return Ok(None);
            }
            let until = now + policy.lock_duration(lock_count).as_secs() as UnixTime;
            conn.prepare_cached(&format!(
                "UPDATE {table} SET failures = 0, locked_until = ?1, lock_count = lock_count + 1 WHERE username = ?2"
            ))?
            .execute(params![until, username])?;
            Ok(Some(until))
        })
        .await
    }

    async fn record_success(&self, username: &str, factor: Factor, seen: u64) -> Result<(), StoreError> {
        let username = username.to_owned();
        self.call(move |conn| {
            // Only when no failure was counted since the try began (seq unchanged): a wrong try
            // that finished meanwhile stays counted, as AD counted it.
            let sql = format!("DELETE FROM {} WHERE username = ?1 AND seq = ?2", lockout_table(factor));
            conn.prepare_cached(&sql)?.execute(params![username, seen as i64])?;
            Ok(())
        })
        .await
    }

    async fn unlock(&self, username: &str) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| {
            let code = conn.execute("DELETE FROM lockouts WHERE username = ?1", [&username])?;
            let password = conn.execute("DELETE FROM password_lockouts WHERE username = ?1", [&username])?;
            Ok(code + password > 0)
        })
        .await
    }

    async fn reserve_sms(&self, username: &str, now: UnixTime, limits: SmsLimits) -> Result<SmsReservation, StoreError> {
        let username = username.to_owned();
        self.call(move |conn| {
            let user_since = now - limits.per_user_window.as_secs() as UnixTime;
            let by_user: u32 = conn
                .prepare_cached("SELECT COUNT(*) FROM sms_sends WHERE username = ?1 AND sent_at > ?2")?
                .query_row(params![username, user_since], |r| r.get(0))?;
            if by_user >= limits.per_user {
                return Ok(SmsReservation::UserLimit);
            }
            let global: u32 =
                conn.prepare_cached("SELECT COUNT(*) FROM sms_sends WHERE sent_at > ?1")?.query_row([now - 60], |r| r.get(0))?;
            if global >= limits.global_per_minute {
                return Ok(SmsReservation::GlobalLimit);
            }
            conn.prepare_cached("INSERT INTO sms_sends (username, sent_at) VALUES (?1, ?2)")?.execute(params![username, now])?;
            Ok(SmsReservation::Allowed)
        })
        .await
    }

    async fn consume_state(&self, nonce: &[u8], expires_at: UnixTime) -> Result<bool, StoreError> {
        let nonce = nonce.to_vec();
        self.call(move |conn| {
            let inserted = conn
                .prepare_cached("INSERT OR IGNORE INTO used_states (nonce, expires_at) VALUES (?1, ?2)")?
                .execute(params![nonce, expires_at])?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn keep_challenge_context(&self, nonce: &[u8], expires_at: UnixTime, context: Vec<u8>) -> Result<(), StoreError> {
        let nonce = nonce.to_vec();
        self.call(move |conn| {
            conn.prepare_cached("INSERT OR REPLACE INTO challenge_contexts (nonce, expires_at, context) VALUES (?1, ?2, ?3)")?
                .execute(params![nonce, expires_at, context])?;
            Ok(())
        })
        .await
    }

    async fn take_challenge_context(&self, nonce: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let nonce = nonce.to_vec();
        self.call(move |conn| {
            let context = conn
                .prepare_cached("DELETE FROM challenge_contexts WHERE nonce = ?1 RETURNING context")?
                .query_row([nonce], |r| r.get(0))
                .optional()?;
            Ok(context)
        })
        .await
    }

    async fn purge(&self, now: UnixTime) -> Result<(), StoreError> {
        self.call(move |conn| {
            conn.execute("DELETE FROM used_states WHERE expires_at < ?1", [now])?;
            conn.execute("DELETE FROM challenge_contexts WHERE expires_at < ?1", [now])?;
            conn.execute("DELETE FROM sms_sends WHERE sent_at < ?1", [now - SMS_HISTORY])?;
            conn.execute("UPDATE lockouts SET locked_until = NULL WHERE locked_until < ?1", [now])?;
            conn.execute("UPDATE password_lockouts SET locked_until = NULL WHERE locked_until < ?1", [now])?;
            // Enrollments abandoned before their confirming code: never usable, so never kept long.
            conn.execute("DELETE FROM tokens WHERE confirmed = 0 AND created_at < ?1", [now - UNCONFIRMED_TOKEN_LIFETIME])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store() -> SqliteStore {
        SqliteStore::in_memory(Arc::new(Keys::fixed(KeyRing::generate("k1")))).unwrap()
    }

    fn new_token(user: &str, confirmed: bool) -> NewToken {
        NewToken {
            username: user.into(),
            name: "phone".into(),
            params: TotpParams::default(),
            secret: Secret::new(b"seed-bytes-0123456789".to_vec()),
            confirmed,
        }
    }

    #[tokio::test]
    async fn tokens_round_trip_with_sealed_seeds() {
        let s = store();
        let id = s.add_token(new_token("alice", true)).await.unwrap();
        s.add_token(new_token("bob", false)).await.unwrap();
        let tokens = s.tokens("alice").await.unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].id, id);
        assert_eq!(tokens[0].secret.expose(), b"seed-bytes-0123456789");
        assert!(tokens[0].confirmed);
        let listed = s.list_tokens(None).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].sealed_with, "k1");
        assert_eq!(s.list_tokens(Some("bob")).await.unwrap().len(), 1);
        assert!(!s.remove_token("bob", id).await.unwrap(), "only the owner removes a token");
        assert!(s.remove_token("alice", id).await.unwrap());
        assert!(s.tokens("alice").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_step_is_accepted_once_and_only_forward() {
        let s = store();
        let id = s.add_token(new_token("alice", true)).await.unwrap();
        assert!(s.use_step(id, 100, 0).await.unwrap());
        assert!(!s.use_step(id, 100, 0).await.unwrap(), "the same step again is a replay");
        assert!(!s.use_step(id, 99, 0).await.unwrap(), "an earlier step is a replay");
        assert!(s.use_step(id, 101, 0).await.unwrap());
        let unconfirmed = s.add_token(new_token("alice", false)).await.unwrap();
        assert!(!s.use_step(unconfirmed, 500, 0).await.unwrap(), "an unconfirmed token is never used");
        // Confirming records the confirming code's step (no replay of it) but no use.
        assert!(s.confirm_token("alice", unconfirmed, 500).await.unwrap());
        assert!(!s.confirm_token("alice", unconfirmed, 501).await.unwrap(), "confirmed once");
        let confirmed = s.tokens("alice").await.unwrap().into_iter().find(|t| t.id == unconfirmed).unwrap();
        assert_eq!((confirmed.confirmed, confirmed.last_step, confirmed.last_used_at), (true, Some(500), None));
        assert!(!s.use_step(unconfirmed, 500, 0).await.unwrap(), "the confirming code is used up");
        assert!(s.use_step(unconfirmed, 501, 0).await.unwrap());
        // Two concurrent uses of one step: exactly one wins.
        let s = Arc::new(s);
        let (a, b) = tokio::join!(s.use_step(id, 200, 0), s.use_step(id, 200, 0));
        assert!(a.unwrap() ^ b.unwrap());
    }

    #[tokio::test]
    async fn failures_lock_with_doubling_and_success_resets() {
        let s = store();
        let code = Factor::Code;
        let policy = LockoutPolicy {
            max_failures: 3,
            duration: Duration::from_secs(60),
            max_duration: Duration::from_secs(150),
            forget_after: None,
        };
        assert_eq!(s.record_failure("alice", code, 1000, policy).await.unwrap(), None);
        assert_eq!(s.record_failure("alice", code, 1000, policy).await.unwrap(), None);
        assert_eq!(s.record_failure("alice", code, 1000, policy).await.unwrap(), Some(1060), "the third wrong answer locks");
        let state = s.lockout_state("alice", code, 1030, policy).await.unwrap();
        assert_eq!((state.locked_until, state.seq), (Some(1060), 3));
        assert_eq!(s.locked_until("alice", Factor::Password, 1030).await.unwrap(), None, "each factor has its own lock");
        assert_eq!(s.locked_until("alice", code, 1060).await.unwrap(), None, "released at the deadline");
        for _ in 0..2 {
            s.record_failure("alice", code, 2000, policy).await.unwrap();
        }
        assert_eq!(s.record_failure("alice", code, 2000, policy).await.unwrap(), Some(2120), "doubled");
        for _ in 0..3 {
            s.record_failure("alice", code, 3000, policy).await.unwrap();
        }
        assert_eq!(s.locked_until("alice", code, 3000).await.unwrap(), Some(3150), "capped at max_duration");
        let seen = s.lockout_state("alice", code, 3000, policy).await.unwrap().seq;
        s.record_success("alice", code, seen).await.unwrap();
        assert_eq!(s.locked_until("alice", code, 3000).await.unwrap(), None, "a right answer lifts it");
        assert_eq!(s.record_failure("alice", code, 4000, policy).await.unwrap(), None);
        assert!(s.unlock("alice").await.unwrap());
    }

    #[tokio::test]
    async fn a_right_answer_clears_only_failures_counted_before_its_try_began() {
        let s = store();
        let policy = LockoutPolicy {
            max_failures: 4,
            duration: Duration::from_secs(600),
            max_duration: Duration::from_secs(600),
            forget_after: None,
        };
        s.record_failure("alice", Factor::Password, 1000, policy).await.unwrap();
        let seen = s.lockout_state("alice", Factor::Password, 1000, policy).await.unwrap().seq;
        // A wrong try finished while the right one was still on its way.
        s.record_failure("alice", Factor::Password, 1001, policy).await.unwrap();
        s.record_success("alice", Factor::Password, seen).await.unwrap();
        assert_eq!(s.lockout_state("alice", Factor::Password, 1002, policy).await.unwrap().failures, 2, "both stay counted");
        let seen = s.lockout_state("alice", Factor::Password, 1002, policy).await.unwrap().seq;
        s.record_success("alice", Factor::Password, seen).await.unwrap();
        assert_eq!(s.lockout_state("alice", Factor::Password, 1003, policy).await.unwrap(), LockoutState::default());
    }

    #[tokio::test]
    async fn password_failures_are_forgotten_after_a_quiet_period() {
        let s = store();
        let pw = Factor::Password;
        let policy = LockoutPolicy {
            max_failures: 3,
            duration: Duration::from_secs(600),
            max_duration: Duration::from_secs(3600),
            forget_after: Some(Duration::from_secs(900)),
        };
        for at in [1000, 1100] {
            s.record_failure("alice", pw, at, policy).await.unwrap();
        }
        assert_eq!(s.lockout_state("alice", pw, 1100 + 901, policy).await.unwrap().failures, 0, "two typos a quarter of an hour ago");
        assert_eq!(s.record_failure("alice", pw, 1100 + 901, policy).await.unwrap(), None);
        for at in [3000, 3001] {
            s.record_failure("alice", pw, at, policy).await.unwrap();
        }
        assert_eq!(s.record_failure("alice", pw, 3002, policy).await.unwrap(), Some(3602));
        assert_eq!(s.locked_until("alice", Factor::Code, 3100).await.unwrap(), None, "the code factor is untouched");
        assert!(s.unlock("alice").await.unwrap(), "unlock clears the password lock too");
        assert_eq!(s.locked_until("alice", pw, 3100).await.unwrap(), None);
    }

    #[tokio::test]
    async fn tokens_move_from_an_old_spelling_to_the_account_and_still_open() {
        let s = store();
        let id = s.add_token(new_token("alice@example.test", true)).await.unwrap();
        s.add_token(new_token("bob", true)).await.unwrap();
        assert_eq!(s.move_tokens("alice@example.test", "alice").await.unwrap(), 1);
        assert!(s.tokens("alice@example.test").await.unwrap().is_empty());
        let moved = s.tokens("alice").await.unwrap();
        assert_eq!((moved.len(), moved[0].id), (1, id));
        assert_eq!(moved[0].secret.expose(), b"seed-bytes-0123456789", "resealed for its new owner");
        assert_eq!(s.move_tokens("nobody", "alice").await.unwrap(), 0);
        assert_eq!(s.tokens("bob").await.unwrap().len(), 1, "others untouched");
    }

    #[tokio::test]
    async fn sms_limits_per_user_and_global() {
        let s = store();
        let limits = SmsLimits { per_user: 2, per_user_window: Duration::from_secs(900), global_per_minute: 3 };
        assert_eq!(s.reserve_sms("alice", 1000, limits).await.unwrap(), SmsReservation::Allowed);
        assert_eq!(s.reserve_sms("alice", 1001, limits).await.unwrap(), SmsReservation::Allowed);
        assert_eq!(s.reserve_sms("alice", 1002, limits).await.unwrap(), SmsReservation::UserLimit);
        assert_eq!(s.reserve_sms("bob", 1003, limits).await.unwrap(), SmsReservation::Allowed);
        assert_eq!(s.reserve_sms("carol", 1004, limits).await.unwrap(), SmsReservation::GlobalLimit);
        assert_eq!(s.reserve_sms("carol", 1070, limits).await.unwrap(), SmsReservation::Allowed, "a minute later");
        assert_eq!(s.reserve_sms("alice", 1000 + 901, limits).await.unwrap(), SmsReservation::Allowed, "the user window passed");
    }

    #[tokio::test]
    async fn a_state_nonce_is_consumed_once() {
        let s = store();
        s.keep_challenge_context(b"nonce-1", 2000, b"sealed".to_vec()).await.unwrap();
        s.keep_challenge_context(b"nonce-2", 2000, b"other".to_vec()).await.unwrap();
        assert_eq!(s.take_challenge_context(b"nonce-1").await.unwrap().as_deref(), Some(&b"sealed"[..]));
        assert_eq!(s.take_challenge_context(b"nonce-1").await.unwrap(), None, "forgotten as it is read");
        assert!(s.consume_state(b"nonce-1", 2000).await.unwrap());
        assert!(!s.consume_state(b"nonce-1", 2000).await.unwrap());
        s.purge(3000).await.unwrap();
        assert!(s.consume_state(b"nonce-1", 4000).await.unwrap(), "purged after expiry");
        assert_eq!(s.take_challenge_context(b"nonce-2").await.unwrap(), None, "an unread context purged after expiry");
        s.add_token(new_token("alice", false)).await.unwrap();
        s.add_token(new_token("alice", true)).await.unwrap();
        s.purge(crate::store::now() + UNCONFIRMED_TOKEN_LIFETIME + 1).await.unwrap();
        let left = s.tokens("alice").await.unwrap();
        assert_eq!(left.len(), 1, "the abandoned enrollment is gone");
        assert!(left[0].confirmed);
    }

    #[tokio::test]
    async fn the_file_holds_no_seed_and_opens_with_no_other_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("radmfa.db");
        let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
        let seed = b"distinctive-seed-value";
        {
            let s = SqliteStore::create(&path, Arc::clone(&keys)).unwrap();
            let mut t = new_token("alice", true);
            t.secret = Secret::new(seed.to_vec());
            s.add_token(t).await.unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
            bytes.extend(wal);
        }
        let b32 = crate::otp::totp::base32(seed);
        assert!(!bytes.windows(seed.len()).any(|w| w == seed));
        assert!(!bytes.windows(b32.expose().len()).any(|w| w == b32.expose().as_bytes()));
        let other = SqliteStore::open(&path, Arc::new(Keys::fixed(KeyRing::generate("k1")))).unwrap();
        assert!(matches!(other.tokens("alice").await, Err(StoreError::Sealed(_))));
        let rotated = Arc::new(keys.current().with_new_key());
        let s = SqliteStore::open(&path, Arc::clone(&keys)).unwrap();
        assert_eq!(s.reseal_all(Arc::clone(&rotated)).await.unwrap(), 1);
        let only_new = SqliteStore::open(&path, Arc::new(Keys::fixed(rotated.current_only()))).unwrap();
        assert_eq!(only_new.tokens("alice").await.unwrap()[0].secret.expose(), seed);
    }

    #[tokio::test]
    async fn a_missing_database_is_never_created_by_open_and_a_vanished_one_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("radmfa.db");
        let keys = || Arc::new(Keys::fixed(KeyRing::generate("k1")));
        assert!(SqliteStore::open(&path, keys()).is_err());
        assert!(!path.exists(), "open never makes an empty database");
        let s = SqliteStore::create(&path, keys()).unwrap();
        assert!(SqliteStore::create(&path, keys()).is_err(), "create never replaces one");
        assert_eq!(s.file_problem(), None);
        std::fs::remove_file(&path).unwrap();
        assert!(s.file_problem().unwrap().contains("deleted"));
        std::fs::write(&path, b"").unwrap();
        assert!(s.file_problem().unwrap().contains("replaced"));
        drop(s);
        let refused = SqliteStore::open(&path, keys()).err().expect("an empty file is no radmfa database");
        assert!(refused.to_string().contains("holds no radmfa tables"), "{refused}");

        // A radmfa database with a table gone (dropped by hand, a partial restore) is refused too:
        // no tokens table would read as "nobody has a token".
        let other = dir.path().join("other.db");
        drop(SqliteStore::create(&other, keys()).unwrap());
        Connection::open(&other).unwrap().execute_batch("DROP TABLE tokens").unwrap();
        let refused = SqliteStore::open(&other, keys()).err().expect("a table is missing");
        assert!(refused.to_string().contains("lacks the table(s) tokens"), "{refused}");
    }

    #[tokio::test]
    async fn the_database_file_alone_holds_everything_after_close_or_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("radmfa.db");
        let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
        let copy = |name: &str| {
            let to = dir.path().join(name);
            std::fs::copy(&path, &to).unwrap();
            to
        };
        let s = SqliteStore::create(&path, Arc::clone(&keys)).unwrap();
        s.add_token(new_token("alice", true)).await.unwrap();
        s.checkpoint().await.unwrap();
        let backup = copy("backup-while-running.db");
        s.add_token(new_token("bob", true)).await.unwrap();
        drop(s);
        let at_stop = copy("backup-after-stop.db");
        let running = SqliteStore::open(&backup, Arc::clone(&keys)).unwrap();
        assert_eq!(running.tokens("alice").await.unwrap().len(), 1, "the checkpoint put alice's token in the file");
        let stopped = SqliteStore::open(&at_stop, Arc::clone(&keys)).unwrap();
        assert_eq!(stopped.list_tokens(None).await.unwrap().len(), 2, "closing put everything in the file");
    }
}
