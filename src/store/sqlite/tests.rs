//! SQLite's own matters: what the file holds (no seed in the clear), opening and creating
//! (never an empty database in place of a missing one), backups, and databases written by
//! earlier versions. The store contract itself is tested for every backend in
//! `tests/it/store_contract.rs`.

use std::sync::Arc;

use rusqlite::Connection;

use super::SqliteStore;
use crate::keys::{KeyRing, Keys};
use crate::otp::TotpParams;
use crate::secret::Secret;
use crate::store::{NewToken, Store, StoreError};

fn new_token(user: &str, confirmed: bool) -> NewToken {
    NewToken {
        username: user.into(),
        name: "phone".into(),
        params: TotpParams::default(),
        secret: Secret::new(b"seed-bytes-0123456789".to_vec()),
        confirmed,
        created_at: crate::clock::now(),
    }
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
    assert_eq!(s.storage_problem(), None);
    std::fs::remove_file(&path).unwrap();
    assert!(s.storage_problem().unwrap().contains("deleted"));
    std::fs::write(&path, b"").unwrap();
    assert!(s.storage_problem().unwrap().contains("replaced"));
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

/// A seed sealed as every version so far sealed it (`<key id>:<base64>`, bound to
/// `radmfa/token/v1/<id>/<user>`) opens, lists and moves: databases already written keep working.
#[tokio::test]
async fn a_seed_sealed_by_an_earlier_version_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("radmfa.db");
    let ring = KeyRing::generate("k1");
    drop(SqliteStore::create(&path, Arc::new(Keys::fixed(KeyRing::generate("k9")))).unwrap());
    let sealed = ring.seal(b"written-by-an-old-radmfa", b"radmfa/token/v1/7/alice@example.test");
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO tokens (id, username, name, algorithm, digits, period, secret, created_at, confirmed)
             VALUES (7, 'alice@example.test', 'phone', 'SHA1', 6, 30, ?1, 1000, 1)",
            [&sealed],
        )
        .unwrap();
    let s = SqliteStore::open(&path, Arc::new(Keys::fixed(ring))).unwrap();
    let listed = s.list_tokens(None).await.unwrap();
    assert_eq!((listed[0].id, listed[0].sealed_with.as_str()), (7, "k1"));
    assert_eq!(s.tokens("alice@example.test").await.unwrap()[0].secret.expose(), b"written-by-an-old-radmfa");
    assert_eq!(s.move_tokens("alice@example.test", "alice").await.unwrap(), 1);
    assert_eq!(s.tokens("alice").await.unwrap()[0].secret.expose(), b"written-by-an-old-radmfa");
}

/// A database written before the audit trail (schema 5) opens, gains the trail and the
/// temporary codes, and keeps what it held.
#[tokio::test]
async fn a_database_of_schema_5_gains_the_audit_trail_and_temporary_codes() {
    use crate::store::{AuditEvent, NewTemporaryCode};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("radmfa.db");
    let ring = KeyRing::generate("k1");
    {
        let conn = Connection::open(&path).unwrap();
        for (i, migration) in super::connection::MIGRATIONS[..5].iter().enumerate() {
            conn.execute_batch(&format!("BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;", i + 1)).unwrap();
        }
        let sealed = ring.seal(b"seed-of-schema-5", b"radmfa/token/v1/1/alice@example.test");
        conn.execute(
            "INSERT INTO tokens (id, username, name, algorithm, digits, period, secret, created_at, confirmed)
             VALUES (1, 'alice@example.test', 'phone', 'SHA1', 6, 30, ?1, 1000, 1)",
            [&sealed],
        )
        .unwrap();
    }
    let tables = |path: &std::path::Path| -> (i64, i64) {
        let conn = Connection::open(path).unwrap();
        let count = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('audit_events', 'temporary_codes')", [], |r| {
                r.get(0)
            })
            .unwrap();
        (conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap(), count)
    };
    assert_eq!(tables(&path), (5, 0));

    let s = SqliteStore::open(&path, Arc::new(Keys::fixed(ring))).unwrap();
    assert_eq!(s.tokens("alice@example.test").await.unwrap()[0].secret.expose(), b"seed-of-schema-5", "kept");
    let event = AuditEvent {
        at: 2000,
        account: "alice@example.test".into(),
        action: "radius".into(),
        client: "vpn".into(),
        from: None,
        result: "accept".into(),
        reason: "ok".into(),
        actor: None,
        detail: None,
    };
    s.record_events(vec![event.clone()]).await.unwrap();
    assert_eq!(s.events("alice@example.test", 10).await.unwrap(), vec![event]);
    let code = NewTemporaryCode {
        username: "alice@example.test".into(),
        code: Secret::new("48151623".into()),
        issued_by: "helpdesk@example.test".into(),
        issued_at: 2000,
        expires_at: 9000,
        uses: 1,
    };
    s.add_temporary_code(code).await.unwrap();
    assert_eq!(s.temporary_codes("alice@example.test", 2000).await.unwrap()[0].code.expose(), "48151623");
    drop(s);
    assert_eq!(tables(&path), (super::connection::MIGRATIONS.len() as i64, 2));
}

/// A database of schema 6 (temporary codes without the requests that used them) gains them,
/// its live code kept and usable once per request.
#[tokio::test]
async fn a_database_of_schema_6_gains_the_requests_of_temporary_code_uses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("radmfa.db");
    let ring = KeyRing::generate("k1");
    {
        let conn = Connection::open(&path).unwrap();
        for (i, migration) in super::connection::MIGRATIONS[..6].iter().enumerate() {
            conn.execute_batch(&format!("BEGIN; {migration}; PRAGMA user_version = {}; COMMIT;", i + 1)).unwrap();
        }
        let sealed = ring.seal(b"48151623", b"radmfa/temporary-code/v1/1/alice");
        conn.execute(
            "INSERT INTO temporary_codes (id, username, issued_by, issued_at, expires_at, uses_left, sealed)
             VALUES (1, 'alice', 'hanna', 1000, 9000, 2, ?1)",
            [&sealed],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path, Arc::new(Keys::fixed(ring))).unwrap();
    assert_eq!(s.temporary_codes("alice", 2000).await.unwrap()[0].code.expose(), "48151623", "kept");
    assert_eq!(s.use_temporary_code(1, 2000, b"request", None).await.unwrap(), crate::store::CodeUse::Used);
    assert_eq!(s.use_temporary_code(1, 2000, b"request", None).await.unwrap(), crate::store::CodeUse::ByThisRequest);
    assert_eq!(s.list_temporary_codes(Some("alice"), 2000).await.unwrap()[0].uses_left, 1);
}

#[tokio::test]
async fn the_file_holds_no_temporary_code_in_the_clear() {
    use crate::store::NewTemporaryCode;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("radmfa.db");
    let keys = Arc::new(Keys::fixed(KeyRing::generate("k1")));
    let code = "73920584";
    {
        let s = SqliteStore::create(&path, Arc::clone(&keys)).unwrap();
        let new = NewTemporaryCode {
            username: "carol@example.test".into(),
            code: Secret::new(code.into()),
            issued_by: "helpdesk@example.test".into(),
            issued_at: 1000,
            expires_at: i64::MAX,
            uses: 3,
        };
        let (id, _) = s.add_temporary_code(new).await.unwrap();
        assert_eq!(s.use_temporary_code(id, 1000, b"request", None).await.unwrap(), crate::store::CodeUse::Used);
        assert_eq!(s.temporary_codes("carol@example.test", 1000).await.unwrap()[0].code.expose(), code);
    }
    let mut bytes = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    assert!(bytes.windows(b"carol@example.test".len()).any(|w| w == b"carol@example.test"), "the file was read");
    assert!(!bytes.windows(code.len()).any(|w| w == code.as_bytes()), "the code is sealed at rest");
    let other = SqliteStore::open(&path, Arc::new(Keys::fixed(KeyRing::generate("k1")))).unwrap();
    assert!(other.temporary_codes("carol@example.test", 1000).await.unwrap().is_empty(), "another key file opens no code");
    assert_eq!(other.list_temporary_codes(None, 1000).await.unwrap().len(), 1, "listed without a key");
}
