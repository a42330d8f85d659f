//! Opening the database file: for writing or not at all (never silently a new, empty one),
//! WAL mode with full syncs, a busy timeout, schema migrations by `PRAGMA user_version`, and a
//! refusal of files that are not, or no longer wholly, a radmfa database.

use std::path::Path;

use rusqlite::Connection;

use crate::store::StoreError;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database { message: e.to_string(), source: Some(Box::new(e)) }
    }
}

pub(super) const MIGRATIONS: &[&str] = &[
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
    // 4: answers to requests that used up a code, for the NAS's retries (to any node).
    "CREATE TABLE kept_answers (
        key BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL,
        answer BLOB NOT NULL
     ) WITHOUT ROWID;",
    // 5: which request used a State (a NAS's retry of it is decided again, not refused); portal
    // sessions (sealed), so a restart signs nobody
    // out; the store's identity and the digest of the last copy into it (`radmfa store copy`).
    "ALTER TABLE used_states ADD COLUMN request BLOB;
     CREATE TABLE store_identity (id TEXT NOT NULL, copied BLOB);
     INSERT INTO store_identity (id) VALUES (lower(hex(randomblob(16))));
     CREATE TABLE portal_sessions (
        seq INTEGER PRIMARY KEY,
        key BLOB NOT NULL UNIQUE,
        account TEXT NOT NULL,
        ends_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL
     );
     CREATE INDEX portal_sessions_by_account ON portal_sessions(account, seq);
     CREATE INDEX portal_sessions_by_expiry ON portal_sessions(expires_at);",
    // 6: the audit trail (a row per decision and per helpdesk action, read by account newest
    // first, forgotten by age: `origin` is the event's `from`, an SQL keyword) and the help
    // desk's temporary codes, sealed like seeds (AUTOINCREMENT: an id is never given twice, so a
    // revocation sent from a page shown earlier cannot reach a code issued since).
    "CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        account TEXT NOT NULL,
        action TEXT NOT NULL,
        client TEXT NOT NULL,
        origin TEXT,
        result TEXT NOT NULL,
        reason TEXT NOT NULL,
        actor TEXT,
        detail TEXT
     );
     CREATE INDEX audit_events_by_account ON audit_events(account, at);
     CREATE INDEX audit_events_by_time ON audit_events(at);
     CREATE TABLE temporary_codes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL,
        issued_by TEXT NOT NULL,
        issued_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        uses_left INTEGER NOT NULL,
        sealed TEXT NOT NULL
     );
     CREATE INDEX temporary_codes_by_username ON temporary_codes(username);",
    // 7: the requests that took a temporary code's uses, so a copy of one takes none (hex keys,
    // each ended by a comma).
    "ALTER TABLE temporary_codes ADD COLUMN used_by TEXT NOT NULL DEFAULT '';",
];

/// Opens an existing database for writing, never creating one.
pub(super) fn open_existing(path: &Path) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    if !path.exists() {
        return Err(StoreError::database(format!("{} does not exist", path.display())));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(not_writable_or)?;
    // SQLite falls back to read-only when the file is not writable, and would stay so after the
    // file became writable again: refuse, and let the caller try again.
    if conn.is_readonly(rusqlite::DatabaseName::Main)? {
        return Err(StoreError::NotWritable(format!("{} is read-only for this process", path.display())));
    }
    Ok(conn)
}

pub(super) fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL").map_err(not_writable_or)?;
    // FULL: each batch's commit reaches the disk before its logins are answered, so a power cut
    // cannot forget a used time step or a lockout (measured in BENCHMARKS.md: batching makes
    // the fsync cheap).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// A write that changes nothing, to learn now (not at the first login) whether writes work.
pub(super) fn probe_write(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    conn.execute_batch(&format!("BEGIN IMMEDIATE; PRAGMA user_version = {version}; COMMIT;")).map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        not_writable_or(e)
    })
}

/// Errors that mean "this process cannot write the database now" become `NotWritable`.
pub(super) fn not_writable_or(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(
            ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::SystemIoFailure | ErrorCode::DiskFull,
        ) => StoreError::NotWritable(e.to_string()),
        _ => StoreError::from(e),
    }
}

/// The tables the schema makes. A file whose version says "radmfa" but which lacks one (a
/// table dropped by hand, a partial restore) is refused: a missing `tokens` table would read
/// as "no tokens" for everyone.
const REQUIRED_TABLES: [&str; 11] = [
    "tokens",
    "lockouts",
    "password_lockouts",
    "sms_sends",
    "used_states",
    "challenge_contexts",
    "kept_answers",
    "portal_sessions",
    "store_identity",
    "audit_events",
    "temporary_codes",
];

pub(super) fn check_tables(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut exists = conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?;
    let missing: Vec<&str> = REQUIRED_TABLES.into_iter().filter(|t| !exists.exists([t]).unwrap_or(false)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(StoreError::database(format!("{} lacks the table(s) {}: restore the database from a backup", path.display(), missing.join(", "))))
}

pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::database(format!(
            "the database is schema version {version}, newer than this radmfa knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {migration}; PRAGMA user_version = {}; COMMIT;", i + 1))?;
    }
    Ok(())
}
