//! PostgreSQL's own matters, beside the contract every backend keeps (`store_contract`): nodes
//! that start together migrate once, a newer schema is refused, an older one gains the new
//! tables, two nodes (two pools) share tokens and temporary codes and decide a race once, and a database that goes away is "unavailable" (never a
//! wrong answer) and is used again by itself when it is back.

use std::sync::Arc;
use std::time::Duration;

use radmfa::keys::{KeyRing, Keys};
use radmfa::otp::TotpParams;
use radmfa::secret::Secret;
use radmfa::store::postgres::{PostgresBackend, PostgresStore, SCHEMA_VERSION};
use radmfa::store::{NewToken, StateUse, Store, StoreError};

use crate::postgres;

fn keys() -> Arc<Keys> {
    Arc::new(Keys::fixed(KeyRing::generate("k1")))
}

fn token(user: &str) -> NewToken {
    NewToken {
        username: user.into(),
        name: "phone".into(),
        params: TotpParams::default(),
        secret: Secret::new(b"0123456789abcdefghij".to_vec()),
        confirmed: true,
        created_at: radmfa::clock::now(),
    }
}

/// The database's name in a URL of the test server.
fn database_of(url: &str) -> &str {
    url.rsplit('/').next().and_then(|tail| tail.split('?').next()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let Some(pg) = postgres::server() else { return };
    let url = pg.fresh_database();
    let settings = postgres::settings(&url);
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let settings = settings.clone();
            tokio::spawn(async move { PostgresBackend::create(&settings).await.map(|_| ()) })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let db = database_of(&url);
    let versions = pg.psql_in(db, "SELECT string_agg(version::text, ',') FROM radmfa_schema").unwrap();
    assert_eq!(versions, SCHEMA_VERSION.to_string(), "one row, the current version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_this_radmfa_is_refused() {
    let Some(pg) = postgres::server() else { return };
    let url = pg.fresh_database();
    let settings = postgres::settings(&url);
    PostgresBackend::create(&settings).await.unwrap();
    pg.psql_in(database_of(&url), &format!("UPDATE radmfa_schema SET version = {}", SCHEMA_VERSION + 1)).unwrap();
    let refused = PostgresBackend::create(&settings).await.unwrap_err();
    assert!(refused.to_string().contains("newer than this radmfa knows"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_an_empty_database_only_keygen_fills_it() {
    let Some(pg) = postgres::server() else { return };
    let settings = postgres::settings(&pg.fresh_database());
    let refused = PostgresBackend::connect(&settings).await.unwrap_err();
    assert!(refused.to_string().contains("holds no radmfa tables"), "{refused}");
    PostgresBackend::create(&settings).await.unwrap();
    PostgresBackend::connect(&settings).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_tokens_and_a_step_is_used_once_across_them() {
    let Some(pg) = postgres::server() else { return };
    let settings = postgres::settings(&pg.fresh_database());
    let keys = keys();
    let a = PostgresStore::create(&settings, Arc::clone(&keys)).await.unwrap();
    let b = PostgresStore::create(&settings, Arc::clone(&keys)).await.unwrap();
    let id = a.add_token(token("alice")).await.unwrap();
    let on_b = b.tokens("alice").await.unwrap();
    assert_eq!((on_b.len(), on_b[0].id), (1, id));
    assert_eq!(on_b[0].secret.expose(), b"0123456789abcdefghij", "the seed A sealed opens on B");
    for step in 100..150 {
        let (x, y) = tokio::join!(a.use_step(id, step, 0, None), b.use_step(id, step, 0, None));
        assert!(x.unwrap() ^ y.unwrap(), "step {step}: exactly one node accepts it");
    }
    assert_eq!(b.consume_state(b"nonce", i64::MAX, b"one").await.unwrap(), StateUse::First);
    assert_eq!(a.consume_state(b"nonce", i64::MAX, b"two").await.unwrap(), StateUse::Used, "a State used on B is used on A");
    assert_eq!(a.consume_state(b"nonce", i64::MAX, b"one").await.unwrap(), StateUse::SameRequest, "the retry of B's request, on A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_is_not_there_is_unavailable_not_an_answer() {
    let Some(_) = postgres::server() else { return };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let settings = postgres::settings(&format!("postgresql://radmfa@127.0.0.1:{closed}/radmfa?sslmode=disable"));
    match PostgresBackend::create(&settings).await {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("refused") || why.contains("connect"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_by_the_server_are_replaced_by_themselves() {
    let Some(pg) = postgres::server() else { return };
    let url = pg.fresh_database();
    let store = PostgresStore::create(&postgres::settings(&url), keys()).await.unwrap();
    let id = store.add_token(token("alice")).await.unwrap();
    let cut = format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}'", database_of(&url));
    let mut failures = 0;
    for step in 1..=20 {
        if step % 5 == 0 {
            assert_ne!(pg.psql(&cut).unwrap(), "0", "connections were cut");
        }
        match store.use_step(id, step, 0, None).await {
            Ok(accepted) => assert!(accepted),
            Err(StoreError::Unavailable(_)) => failures += 1,
            Err(other) => panic!("a cut connection is Unavailable, not {other}"),
        }
    }
    assert!(failures <= 4, "at most the operation that met each cut fails: {failures}");
    assert!(store.use_step(id, 21, 0, None).await.unwrap(), "and then it works again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_runs_ahead_purges_nothing_still_live_for_the_others() {
    use radmfa::store::{Factor, LockoutPolicy};
    let Some(pg) = postgres::server() else { return };
    let settings = postgres::settings(&pg.fresh_database());
    let store = PostgresStore::create(&settings, keys()).await.unwrap();
    let now = radmfa::clock::now();
    assert_eq!(store.consume_state(b"live", now + 120, b"one").await.unwrap(), StateUse::First);
    store.keep_challenge_context(b"live", now + 120, b"context".to_vec()).await.unwrap();
    let policy =
        LockoutPolicy { max_failures: 1, duration: Duration::from_secs(600), max_duration: Duration::from_secs(600), forget_after: None };
    assert!(store.record_failure("alice", Factor::Code, now, policy).await.unwrap().is_some());
    // A third node, a day ahead, purges.
    store.purge(now + 86_400).await.unwrap();
    assert_eq!(store.consume_state(b"live", now + 120, b"two").await.unwrap(), StateUse::Used, "the used State stays used");
    assert!(store.challenge_context(b"live").await.unwrap().is_some());
    assert!(store.locked_until("alice", Factor::Code, now).await.unwrap().is_some(), "the lock stays");
    // What expired by the database's clock goes.
    store.purge(now + 86_400).await.unwrap();
    assert_eq!(store.consume_state(b"expired", now - 10, b"one").await.unwrap(), StateUse::First);
    store.purge(now).await.unwrap();
    assert_eq!(store.consume_state(b"expired", now - 10, b"two").await.unwrap(), StateUse::First, "purged");
}

/// A database an older radmfa left at schema 3 gains the audit trail and the temporary codes,
/// keeping its tokens; a temporary code is sealed in the database itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_schema_3_gains_the_audit_trail_and_temporary_codes_sealed_at_rest() {
    use radmfa::store::{AuditEvent, NewTemporaryCode};
    let Some(pg) = postgres::server() else { return };
    let url = pg.fresh_database();
    let (settings, db, keys) = (postgres::settings(&url), database_of(&url).to_owned(), keys());
    let id = PostgresStore::create(&settings, Arc::clone(&keys)).await.unwrap().add_token(token("alice")).await.unwrap();
    pg.psql_in(&db, "DROP TABLE audit_events; DROP TABLE temporary_codes; UPDATE radmfa_schema SET version = 3").unwrap();

    let store = PostgresStore::connect(&settings, Arc::clone(&keys)).await.unwrap();
    assert_eq!(pg.psql_in(&db, "SELECT version FROM radmfa_schema").unwrap(), SCHEMA_VERSION.to_string());
    assert_eq!(store.tokens("alice").await.unwrap()[0].id, id, "the tokens kept");
    let event = AuditEvent {
        at: 2000,
        account: "alice".into(),
        action: "issue_temporary_code".into(),
        client: "helpdesk".into(),
        from: Some("198.51.100.4".into()),
        result: "ok".into(),
        reason: "issued".into(),
        actor: Some("helpdesk1".into()),
        detail: Some("valid 1d, 1 use".into()),
    };
    store.record_events(vec![event.clone()]).await.unwrap();
    assert_eq!(store.events("alice", 10).await.unwrap(), vec![event]);
    let code = NewTemporaryCode {
        username: "alice".into(),
        code: Secret::new("58209749".into()),
        issued_by: "helpdesk1".into(),
        issued_at: 2000,
        expires_at: i64::MAX,
        uses: 1,
    };
    store.add_temporary_code(code).await.unwrap();
    assert_eq!(store.temporary_codes("alice", 2000).await.unwrap()[0].code.expose(), "58209749");
    assert_eq!(pg.psql_in(&db, "SELECT count(*) FROM temporary_codes WHERE sealed LIKE 'k1:%'").unwrap(), "1");
    let clear = "SELECT count(*) FROM temporary_codes t WHERE t::text LIKE '%58209749%'";
    assert_eq!(pg.psql_in(&db, clear).unwrap(), "0", "no code in the clear in the row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_temporary_codes_and_the_last_use_is_won_once() {
    use radmfa::store::NewTemporaryCode;
    let Some(pg) = postgres::server() else { return };
    let settings = postgres::settings(&pg.fresh_database());
    let keys = keys();
    let a = PostgresStore::create(&settings, Arc::clone(&keys)).await.unwrap();
    let b = PostgresStore::create(&settings, Arc::clone(&keys)).await.unwrap();
    for round in 0..20 {
        let code = NewTemporaryCode {
            username: "carol".into(),
            code: Secret::new(format!("{:08}", 40_000_000 + round)),
            issued_by: "helpdesk1".into(),
            issued_at: 1000,
            expires_at: 5000,
            uses: 1,
        };
        let (id, _) = a.add_temporary_code(code).await.unwrap();
        let on_b = b.temporary_codes("carol", 1000).await.unwrap();
        assert_eq!(on_b.last().unwrap().code.expose(), &format!("{:08}", 40_000_000 + round), "the code A sealed opens on B");
        let (x, y) = tokio::join!(a.use_temporary_code(id, 1100, b"from a", None), b.use_temporary_code(id, 1100, b"from b", None));
        let used = |u: Result<radmfa::store::CodeUse, _>| u.unwrap() == radmfa::store::CodeUse::Used;
        assert!(used(x) ^ used(y), "round {round}: exactly one node uses the last use");
        // The same request at both nodes (the NAS failing over): one use, and a copy.
        let code = NewTemporaryCode {
            username: "dave".into(),
            code: Secret::new("12121212".into()),
            issued_by: "helpdesk1".into(),
            issued_at: 1000,
            expires_at: 5000,
            uses: 5,
        };
        let (id, _) = a.add_temporary_code(code).await.unwrap();
        let (x, y) =
            tokio::join!(a.use_temporary_code(id, 1100, b"one request", None), b.use_temporary_code(id, 1100, b"one request", None));
        let mut seen = [x.unwrap(), y.unwrap()];
        seen.sort_by_key(|u| *u == radmfa::store::CodeUse::Used);
        assert_eq!(seen, [radmfa::store::CodeUse::ByThisRequest, radmfa::store::CodeUse::Used], "round {round}");
        assert_eq!(b.list_temporary_codes(Some("dave"), 1100).await.unwrap()[0].uses_left, 4);
    }
}
