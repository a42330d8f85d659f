//! The store contract, one suite run against every backend through [`SealedStore`] — SQLite,
//! in-memory and a real PostgreSQL: tokens (sealed seeds, confirm, remove, move, filed by an
//! import), replay, lockout counters, SMS limits, single-use State nonces and challenge contexts, portal
//! sessions, purge, key rotation, copying one store into another, the audit trail (order,
//! limits, bounds, retention) and temporary codes (sealed, live, used once each, revoked). Each backend's own matters (files, migrations, crashes) are tested beside it.

use std::sync::Arc;
use std::time::Duration;

use radmfa::keys::{KeyRing, Keys};
use radmfa::otp::TotpParams;
use radmfa::secret::Secret;
use radmfa::store::backend::UNCONFIRMED_TOKEN_LIFETIME;
use radmfa::store::memory::{MemoryBackend, MemoryStore};
use radmfa::store::postgres::{PostgresBackend, PostgresStore};
use radmfa::store::sqlite::{SqliteBackend, SqliteStore};
use radmfa::store::*;

use crate::postgres;

const SEED: &[u8] = b"seed-bytes-0123456789";

fn new_token(user: &str, confirmed: bool) -> NewToken {
    NewToken {
        username: user.into(),
        name: "phone".into(),
        params: TotpParams::default(),
        secret: Secret::new(SEED.to_vec()),
        confirmed,
        created_at: radmfa::clock::now(),
    }
}

/// Every test of the suite, as `#[tokio::test]`s against the store of backend `$ty` that
/// `$make(keys).await` opens (`None`: the backend's server is not installed, test skipped).
macro_rules! contract_suite {
    ($backend:ident, $ty:ty, $make:path) => {
        mod $backend {
            use super::*;

            fn keys() -> Arc<Keys> {
                Arc::new(Keys::fixed(KeyRing::generate("k1")))
            }

            async fn store_with(keys: &Arc<Keys>) -> Option<Arc<SealedStore<$ty>>> {
                Some(Arc::new($make(Arc::clone(keys)).await?))
            }

            contract_suite!(@plain tokens_round_trip_with_sealed_seeds, a_step_is_accepted_once_and_only_forward,
                failures_lock_with_doubling_and_success_resets, a_right_answer_clears_only_failures_counted_before_its_try_began,
                password_failures_are_forgotten_after_a_quiet_period, tokens_move_from_an_old_spelling_to_the_account_and_still_open,
                sms_limits_per_user_and_global, a_state_nonce_is_consumed_once, only_an_unconfirmed_token_is_abandoned,
                concurrent_failures_all_count_and_lock_once, concurrent_sms_reservations_keep_the_global_limit,
                an_answer_is_kept_with_the_step_that_wins_and_only_then, a_session_lives_until_idle_or_its_end_and_is_purged,
                a_session_changes_only_from_its_current_version, sessions_are_capped_per_account_and_in_all,
                concurrent_session_changes_each_land_once, a_state_raced_by_many_requests_is_used_by_one,
                an_sms_challenge_is_counted_once_per_request_while_its_answer_is_kept,
                retries_of_one_sms_request_raced_reserve_once, confirmations_at_once_never_pass_the_token_limit, a_snapshot_copies_into_another_store_once_and_again_changes_nothing,
                imported_tokens_are_filed_once_usable_and_within_the_limit, one_file_imported_at_once_by_several_files_each_token_once,
                events_come_newest_first_per_account_within_the_limit, events_older_than_the_retention_are_purged,
                a_batch_of_5000_events_is_kept_whole_and_read_back_bounded, event_text_is_kept_within_bounds_and_found_as_kept,
                temporary_codes_are_sealed_opened_and_live_only_while_unexpired_with_uses_left,
                the_last_use_of_a_temporary_code_is_won_once, temporary_codes_are_revoked_one_or_all_and_only_the_users,
                an_account_s_sessions_end_together_and_only_its);
            contract_suite!(@keyed rotation_reseals_every_seed_with_the_new_key, a_seed_the_keys_do_not_open_is_refused_not_guessed,
                purge_forgets_expired_and_used_up_temporary_codes, rotation_reseals_temporary_codes_and_they_still_open,
                a_temporary_code_the_keys_do_not_open_is_no_code_and_stops_a_rotation);
        }
    };
    (@plain $($test:ident),*) => {
        $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let Some(store) = store_with(&keys()).await else { return };
            super::$test(store).await
        })*
    };
    (@keyed $($test:ident),*) => {
        $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let keys = keys();
            let Some(store) = store_with(&keys).await else { return };
            super::$test(store, keys).await
        })*
    };
}

async fn sqlite(keys: Arc<Keys>) -> Option<SqliteStore> {
    Some(SqliteStore::in_memory(keys).unwrap())
}

async fn memory(keys: Arc<Keys>) -> Option<MemoryStore> {
    Some(MemoryStore::in_memory(keys))
}

/// A store on a database of its own in the test PostgreSQL.
pub async fn postgres(keys: Arc<Keys>) -> Option<PostgresStore> {
    let pg = postgres::server()?;
    let settings = postgres::settings(&pg.fresh_database());
    Some(PostgresStore::create(&settings, keys).await.unwrap())
}

contract_suite!(on_sqlite, SqliteBackend, sqlite);
contract_suite!(in_memory, MemoryBackend, memory);
contract_suite!(on_postgres, PostgresBackend, postgres);

async fn tokens_round_trip_with_sealed_seeds<B: Backend>(s: Arc<SealedStore<B>>) {
    let id = s.add_token(new_token("alice", true)).await.unwrap();
    s.add_token(new_token("bob", false)).await.unwrap();
    let tokens = s.tokens("alice").await.unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].id, id);
    assert_eq!(tokens[0].secret.expose(), SEED);
    assert!(tokens[0].confirmed);
    let listed = s.list_tokens(None).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].sealed_with, "k1");
    assert_eq!(s.list_tokens(Some("bob")).await.unwrap().len(), 1);
    assert!(!s.remove_token("bob", id).await.unwrap(), "only the owner removes a token");
    assert!(s.remove_token("alice", id).await.unwrap());
    assert!(s.tokens("alice").await.unwrap().is_empty());
}

async fn only_an_unconfirmed_token_is_abandoned<B: Backend>(s: Arc<SealedStore<B>>) {
    let pending = s.add_token(new_token("alice", false)).await.unwrap();
    let confirmed = s.add_token(new_token("alice", false)).await.unwrap();
    assert!(s.confirm_token("alice", confirmed, 100, 5).await.unwrap());
    assert!(!s.abandon_token("alice", confirmed).await.unwrap(), "confirmed meanwhile (another tab): kept");
    assert!(!s.abandon_token("bob", pending).await.unwrap(), "only the owner's");
    assert!(s.abandon_token("alice", pending).await.unwrap());
    let left: Vec<i64> = s.list_tokens(Some("alice")).await.unwrap().iter().map(|t| t.id).collect();
    assert_eq!(left, [confirmed]);
}

async fn a_step_is_accepted_once_and_only_forward<B: Backend>(s: Arc<SealedStore<B>>) {
    let id = s.add_token(new_token("alice", true)).await.unwrap();
    assert!(s.use_step(id, 100, 0, None).await.unwrap());
    assert!(!s.use_step(id, 100, 0, None).await.unwrap(), "the same step again is a replay");
    assert!(!s.use_step(id, 99, 0, None).await.unwrap(), "an earlier step is a replay");
    assert!(s.use_step(id, 101, 0, None).await.unwrap());
    let unconfirmed = s.add_token(new_token("alice", false)).await.unwrap();
    assert!(!s.use_step(unconfirmed, 500, 0, None).await.unwrap(), "an unconfirmed token is never used");
    // Confirming records the confirming code's step (no replay of it) but no use.
    assert!(s.confirm_token("alice", unconfirmed, 500, 5).await.unwrap());
    assert!(!s.confirm_token("alice", unconfirmed, 501, 5).await.unwrap(), "confirmed once");
    let confirmed = s.tokens("alice").await.unwrap().into_iter().find(|t| t.id == unconfirmed).unwrap();
    assert_eq!((confirmed.confirmed, confirmed.last_step, confirmed.last_used_at), (true, Some(500), None));
    assert!(!s.use_step(unconfirmed, 500, 0, None).await.unwrap(), "the confirming code is used up");
    assert!(s.use_step(unconfirmed, 501, 0, None).await.unwrap());
    // Two concurrent uses of one step: exactly one wins.
    let (a, b) = tokio::join!(s.use_step(id, 200, 0, None), s.use_step(id, 200, 0, None));
    assert!(a.unwrap() ^ b.unwrap());
}

async fn failures_lock_with_doubling_and_success_resets<B: Backend>(s: Arc<SealedStore<B>>) {
    let code = Factor::Code;
    let policy =
        LockoutPolicy { max_failures: 3, duration: Duration::from_secs(60), max_duration: Duration::from_secs(150), forget_after: None };
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

async fn a_right_answer_clears_only_failures_counted_before_its_try_began<B: Backend>(s: Arc<SealedStore<B>>) {
    let policy =
        LockoutPolicy { max_failures: 4, duration: Duration::from_secs(600), max_duration: Duration::from_secs(600), forget_after: None };
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

async fn password_failures_are_forgotten_after_a_quiet_period<B: Backend>(s: Arc<SealedStore<B>>) {
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

async fn tokens_move_from_an_old_spelling_to_the_account_and_still_open<B: Backend>(s: Arc<SealedStore<B>>) {
    let id = s.add_token(new_token("alice@example.test", true)).await.unwrap();
    s.add_token(new_token("bob", true)).await.unwrap();
    assert_eq!(s.move_tokens("alice@example.test", "alice").await.unwrap(), 1);
    assert!(s.tokens("alice@example.test").await.unwrap().is_empty());
    let moved = s.tokens("alice").await.unwrap();
    assert_eq!((moved.len(), moved[0].id), (1, id));
    assert_eq!(moved[0].secret.expose(), SEED, "resealed for its new owner");
    assert_eq!(s.move_tokens("nobody", "alice").await.unwrap(), 0);
    assert_eq!(s.tokens("bob").await.unwrap().len(), 1, "others untouched");
}

async fn sms_limits_per_user_and_global<B: Backend>(s: Arc<SealedStore<B>>) {
    let limits = SmsLimits { per_user: 2, per_user_window: Duration::from_secs(900), global_per_minute: 3 };
    assert_eq!(s.reserve_sms("alice", 1000, limits).await.unwrap(), SmsReservation::Allowed);
    assert_eq!(s.reserve_sms("alice", 1001, limits).await.unwrap(), SmsReservation::Allowed);
    assert_eq!(s.reserve_sms("alice", 1002, limits).await.unwrap(), SmsReservation::UserLimit);
    assert_eq!(s.reserve_sms("bob", 1003, limits).await.unwrap(), SmsReservation::Allowed);
    assert_eq!(s.reserve_sms("carol", 1004, limits).await.unwrap(), SmsReservation::GlobalLimit);
    assert_eq!(s.reserve_sms("carol", 1070, limits).await.unwrap(), SmsReservation::Allowed, "a minute later");
    assert_eq!(s.reserve_sms("alice", 1000 + 901, limits).await.unwrap(), SmsReservation::Allowed, "the user window passed");
}

async fn a_state_nonce_is_consumed_once<B: Backend>(s: Arc<SealedStore<B>>) {
    s.keep_challenge_context(b"nonce-1", 2000, b"sealed".to_vec()).await.unwrap();
    s.keep_challenge_context(b"nonce-2", 2000, b"other".to_vec()).await.unwrap();
    assert_eq!(s.challenge_context(b"nonce-1").await.unwrap().as_deref(), Some(&b"sealed"[..]));
    assert_eq!(s.challenge_context(b"nonce-1").await.unwrap().as_deref(), Some(&b"sealed"[..]), "kept until the State expires");
    assert_eq!(s.consume_state(b"nonce-1", 2000, b"request-a").await.unwrap(), StateUse::First);
    assert_eq!(s.consume_state(b"nonce-1", 2000, b"request-a").await.unwrap(), StateUse::SameRequest, "the NAS's retry of it");
    assert_eq!(s.consume_state(b"nonce-1", 2000, b"request-b").await.unwrap(), StateUse::Used, "another request: a replay");
    s.purge(3000).await.unwrap();
    assert_eq!(s.consume_state(b"nonce-1", 4000, b"request-b").await.unwrap(), StateUse::First, "purged after expiry");
    assert_eq!(s.challenge_context(b"nonce-2").await.unwrap(), None, "a context purged after expiry");
    // An enrollment begun longer ago than an unconfirmed token lives (PostgreSQL purges by the
    // earlier of the node's clock and its own, so the past is made, not the future).
    let now = radmfa::clock::now();
    s.add_token(NewToken { created_at: now - UNCONFIRMED_TOKEN_LIFETIME - 10, ..new_token("alice", false) }).await.unwrap();
    s.add_token(new_token("alice", true)).await.unwrap();
    s.purge(now).await.unwrap();
    let left = s.tokens("alice").await.unwrap();
    assert_eq!(left.len(), 1, "the abandoned enrollment is gone");
    assert!(left[0].confirmed);
}

async fn rotation_reseals_every_seed_with_the_new_key<B: Backend>(s: Arc<SealedStore<B>>, keys: Arc<Keys>) {
    s.add_token(new_token("alice", true)).await.unwrap();
    s.add_token(new_token("bob", false)).await.unwrap();
    let rotated = Arc::new(keys.current().with_new_key());
    assert_eq!(s.reseal_all(Arc::clone(&rotated)).await.unwrap(), 2);
    assert_eq!(s.reseal_all(Arc::clone(&rotated)).await.unwrap(), 0, "nothing left to reseal");
    assert!(s.list_tokens(None).await.unwrap().iter().all(|t| t.sealed_with == "k2"));
    // What the backend keeps opens with the new key alone, each seed bound to its own row.
    for row in s.backend().tokens(None).await.unwrap() {
        let aad = format!("radmfa/token/v1/{}/{}", row.id, row.username);
        assert_eq!(rotated.current_only().open(&row.sealed, aad.as_bytes()).unwrap().as_slice(), SEED);
        assert!(rotated.open(&row.sealed, format!("radmfa/token/v1/{}/mallory", row.id).as_bytes()).is_err(), "another owner's");
    }
}

async fn a_seed_the_keys_do_not_open_is_refused_not_guessed<B: Backend>(s: Arc<SealedStore<B>>, _keys: Arc<Keys>) {
    let id = s.add_token(new_token("alice", true)).await.unwrap();
    let other = Arc::new(KeyRing::generate("k1").with_new_key());
    assert!(matches!(s.reseal_all(other).await, Err(StoreError::Sealed(bad)) if bad == id), "another key file's ring");
    assert_eq!(s.tokens("alice").await.unwrap()[0].secret.expose(), SEED, "left as it was");
}

async fn concurrent_failures_all_count_and_lock_once<B: Backend + 'static>(s: Arc<SealedStore<B>>) {
    let policy =
        LockoutPolicy { max_failures: 5, duration: Duration::from_secs(60), max_duration: Duration::from_secs(600), forget_after: None };
    let tries: Vec<_> = (0..20)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.record_failure("alice", Factor::Code, 1000, policy).await.unwrap() })
        })
        .collect();
    let mut locks = Vec::new();
    for t in tries {
        locks.extend(t.await.unwrap());
    }
    // 20 failures at once: four locks of growing length (each fifth), none lost or doubled.
    assert_eq!(locks.len(), 4, "{locks:?}");
    assert_eq!(s.lockout_state("alice", Factor::Code, 1000, policy).await.unwrap().seq, 20);
    assert_eq!(s.locked_until("alice", Factor::Code, 1000).await.unwrap(), locks.iter().max().copied());
}

async fn concurrent_sms_reservations_keep_the_global_limit<B: Backend + 'static>(s: Arc<SealedStore<B>>) {
    let limits = SmsLimits { per_user: 1, per_user_window: Duration::from_secs(900), global_per_minute: 7 };
    let sends: Vec<_> = (0..30)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.reserve_sms(&format!("user{}", i % 15), 1000, limits).await.unwrap() })
        })
        .collect();
    let mut allowed = 0;
    for send in sends {
        allowed += usize::from(send.await.unwrap() == SmsReservation::Allowed);
    }
    assert_eq!(allowed, 7, "never more than the global limit, however many ask at once");
}

async fn an_answer_is_kept_with_the_step_that_wins_and_only_then<B: Backend + 'static>(s: Arc<SealedStore<B>>) {
    let id = s.add_token(new_token("alice", true)).await.unwrap();
    let kept = |key: &[u8]| Some(KeptAnswer { key: key.to_vec(), expires_at: 2000, answer: b"accept".to_vec() });
    assert!(s.use_step(id, 100, 1000, kept(b"first")).await.unwrap());
    assert!(!s.use_step(id, 100, 1000, kept(b"replay")).await.unwrap());
    assert_eq!(s.kept_answer(b"first", 1500).await.unwrap().as_deref(), Some(&b"accept"[..]), "kept with the winning step");
    assert_eq!(s.kept_answer(b"replay", 1500).await.unwrap(), None, "nothing kept for a replay");
    assert_eq!(s.kept_answer(b"first", 2001).await.unwrap(), None, "not past its expiry");
    s.keep_answer(KeptAnswer { key: b"sms".to_vec(), expires_at: 2000, answer: b"other".to_vec() }).await.unwrap();
    assert_eq!(s.kept_answer(b"sms", 1500).await.unwrap().as_deref(), Some(&b"other"[..]));
    s.purge(2500).await.unwrap();
    assert_eq!(s.kept_answer(b"sms", 0).await.unwrap(), None, "purged after expiry");
    // Many uses of one step at once (one batch, or two nodes): one wins, one answer is kept.
    let racers: Vec<_> = (0..16u8)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.use_step(id, 200, 1000, kept(&[b'r', i])).await.unwrap() })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        if racer.await.unwrap() {
            winners.push(i as u8);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    for i in 0..16u8 {
        assert_eq!(s.kept_answer(&[b'r', i], 1500).await.unwrap().is_some(), winners.contains(&i), "racer {i}");
    }
}

fn new_session(key: u8, account: &str, now: UnixTime, data: &str) -> NewSession {
    NewSession {
        key: [key; 32],
        account: account.into(),
        ends_at: now + 3600,
        expires_at: now + 600,
        data: Secret::new(data.as_bytes().to_vec()),
    }
}

const CAPS: SessionCaps = SessionCaps { per_account: 10, total: 10_000 };

async fn a_session_lives_until_idle_or_its_end_and_is_purged<B: Backend>(s: Arc<SealedStore<B>>) {
    s.create_session(new_session(1, "alice", 1000, "one"), CAPS).await.unwrap();
    let found = s.session(&[1; 32], 1500, 2100).await.unwrap().expect("live");
    assert_eq!(found.data.expose(), b"one");
    assert!(s.session(&[2; 32], 1500, 2100).await.unwrap().is_none(), "another key");
    assert!(s.session(&[1; 32], 2050, 2650).await.unwrap().is_some(), "each read moved its idle expiry on");
    assert!(s.session(&[1; 32], 2700, 3300).await.unwrap().is_none(), "idle past its expiry");
    s.create_session(new_session(3, "bob", 1000, "three"), CAPS).await.unwrap();
    for now in [1500, 2000, 2500, 3000, 3500] {
        assert!(s.session(&[3; 32], now, now + 600).await.unwrap().is_some(), "busy at {now}");
    }
    assert!(s.session(&[3; 32], 4600, 5200).await.unwrap().is_none(), "past its end however busy: the idle expiry never passes it");
    assert_eq!(s.session_count().await.unwrap(), 2, "expired sessions stay until purged");
    s.create_session(new_session(4, "carol", 5000, "four"), CAPS).await.unwrap();
    s.purge(5000).await.unwrap();
    assert_eq!(s.session_count().await.unwrap(), 1, "purge forgets expired sessions only");
    s.remove_session(&[4; 32]).await.unwrap();
    assert!(s.session(&[4; 32], 5000, 5600).await.unwrap().is_none());
}

async fn a_session_changes_only_from_its_current_version<B: Backend>(s: Arc<SealedStore<B>>) {
    s.create_session(new_session(1, "alice", 1000, "v0"), CAPS).await.unwrap();
    let read = s.session(&[1; 32], 1000, 1600).await.unwrap().unwrap();
    assert!(s.update_session(&[1; 32], read.version, Secret::new(b"v1".to_vec())).await.unwrap());
    assert!(!s.update_session(&[1; 32], read.version, Secret::new(b"stale".to_vec())).await.unwrap(), "from a stale read");
    let now = s.session(&[1; 32], 1000, 1600).await.unwrap().unwrap();
    assert_eq!(now.data.expose(), b"v1");
    assert!(!s.rotate_session(&[1; 32], read.version, new_session(2, "alice", 1000, "x"), CAPS).await.unwrap(), "stale");
    assert!(s.session(&[2; 32], 1000, 1600).await.unwrap().is_none(), "a refused rotation keeps nothing");
    assert!(s.rotate_session(&[1; 32], now.version, new_session(2, "alice", 1000, "signed in"), CAPS).await.unwrap());
    assert!(s.session(&[1; 32], 1000, 1600).await.unwrap().is_none(), "the old key is gone");
    assert_eq!(s.session(&[2; 32], 1000, 1600).await.unwrap().unwrap().data.expose(), b"signed in");
    assert!(!s.update_session(&[1; 32], now.version, Secret::new(b"back".to_vec())).await.unwrap(), "never brought back");
    assert!(s.session(&[1; 32], 1000, 1600).await.unwrap().is_none());
}

async fn sessions_are_capped_per_account_and_in_all<B: Backend>(s: Arc<SealedStore<B>>) {
    let caps = SessionCaps { per_account: 3, total: 5 };
    for key in 1..=4u8 {
        s.create_session(new_session(key, "alice", 1000, "a"), caps).await.unwrap();
    }
    assert!(s.session(&[1; 32], 1000, 1600).await.unwrap().is_none(), "alice's oldest went");
    for key in 2..=4u8 {
        assert!(s.session(&[key; 32], 1000, 1600).await.unwrap().is_some());
    }
    // Others' sessions, expiring later: alice's (nearest to expiry) go first past the total.
    for key in 10..=13u8 {
        s.create_session(new_session(key, &format!("user{key}"), 1100, "u"), caps).await.unwrap();
    }
    assert_eq!(s.session_count().await.unwrap(), 5);
    assert!(s.session(&[2; 32], 1000, 1600).await.unwrap().is_none());
    assert!(s.session(&[13; 32], 1100, 1700).await.unwrap().is_some(), "the newest stays");
}

async fn an_account_s_sessions_end_together_and_only_its<B: Backend>(s: Arc<SealedStore<B>>) {
    let caps = SessionCaps { per_account: 10, total: 100 };
    for key in 1..=3u8 {
        s.create_session(new_session(key, "alice", 1000, "a"), caps).await.unwrap();
    }
    s.create_session(new_session(9, "bob", 1000, "b"), caps).await.unwrap();
    assert_eq!(s.end_sessions("alice").await.unwrap(), 3);
    assert_eq!(s.end_sessions("alice").await.unwrap(), 0);
    assert!(s.session(&[1; 32], 1000, 1600).await.unwrap().is_none());
    assert!(s.session(&[9; 32], 1000, 1600).await.unwrap().is_some(), "bob's stays");
}

async fn concurrent_session_changes_each_land_once<B: Backend + 'static>(s: Arc<SealedStore<B>>) {
    s.create_session(new_session(1, "alice", 1000, ""), CAPS).await.unwrap();
    // Eight requests of one session at once, each adding its mark from its own read, trying
    // again from a fresh read when another got in first: every mark lands, once.
    let writers: Vec<_> = (0..8u8)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                for _ in 0..64 {
                    let read = s.session(&[1; 32], 1000, 1600).await.unwrap().unwrap();
                    let mut data = read.data.expose().clone();
                    data.push(b'a' + i);
                    if s.update_session(&[1; 32], read.version, Secret::new(data)).await.unwrap() {
                        return;
                    }
                }
                panic!("writer {i} never got its turn");
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let mut marks = s.session(&[1; 32], 1000, 1600).await.unwrap().unwrap().data.expose().clone();
    marks.sort_unstable();
    assert_eq!(marks, b"abcdefgh");
}

async fn a_snapshot_copies_into_another_store_once_and_again_changes_nothing<B: Backend>(s: Arc<SealedStore<B>>) {
    let source = Arc::new(SqliteStore::in_memory(Arc::new(Keys::fixed(KeyRing::generate("other")))).unwrap());
    assert_ne!(source.identity().await.unwrap(), s.identity().await.unwrap(), "each store has its own identity");
    let gap = source.add_token(new_token("nobody", true)).await.unwrap();
    let alice = source.add_token(new_token("alice", true)).await.unwrap();
    source.remove_token("nobody", gap).await.unwrap();
    let bob = source.add_token(new_token("bob", false)).await.unwrap();
    assert!(source.use_step(alice, 4242, 1000, None).await.unwrap());
    let policy =
        LockoutPolicy { max_failures: 2, duration: Duration::from_secs(60), max_duration: Duration::from_secs(600), forget_after: None };
    source.record_failure("bob", Factor::Code, 1000, policy).await.unwrap();
    source.record_failure("bob", Factor::Code, 1000, policy).await.unwrap();
    source.record_failure("carol", Factor::Password, 1000, policy).await.unwrap();
    let snapshot = source.export().await.unwrap();
    assert_eq!((snapshot.tokens.len(), snapshot.lockouts.len()), (2, 2));

    s.import(snapshot.clone()).await.unwrap();
    s.import(snapshot.clone()).await.unwrap();
    let copied = s.export().await.unwrap();
    assert_eq!(copied.digest(), snapshot.digest(), "every row as it was, once");
    assert_eq!(copied.lockouts, snapshot.lockouts);
    assert_eq!(s.locked_until("bob", Factor::Code, 1000).await.unwrap(), Some(1060), "a lock copied stays a lock");

    // The source goes on (a token removed, a code used); copying again takes that over.
    source.remove_token("bob", bob).await.unwrap();
    assert!(source.use_step(alice, 4243, 1000, None).await.unwrap());
    let later = source.export().await.unwrap();
    s.import(later.clone()).await.unwrap();
    assert_eq!(s.export().await.unwrap().digest(), later.digest(), "the destination is the source again, bob's token gone");
    assert!(!s.use_step(alice, 4243, 1000, None).await.unwrap(), "a step used before the copy is a replay after it");

    // Once a server uses the destination, a copy would roll that back: refused, nothing written.
    let next = s.add_token(new_token("dave", true)).await.unwrap();
    assert!(next > alice, "new tokens get ids after the copied ones");
    assert!(s.import(later.clone()).await.is_err(), "the destination changed since the copy");
    assert!(s.remove_token("dave", next).await.unwrap());
    assert!(s.use_step(alice, 4300, 1000, None).await.unwrap());
    let refused = s.import(later.clone()).await.unwrap_err().to_string();
    assert!(refused.contains("changed since the last copy"), "{refused}");
    let kept = s.export().await.unwrap();
    assert_eq!(kept.tokens.iter().find(|t| t.id == alice).unwrap().last_step, Some(4300), "the later use stays");
    // Emptied since the copy (every token removed, every lock lifted) is changed too.
    for token in kept.tokens {
        assert!(s.remove_token(&token.username, token.id).await.unwrap());
    }
    for user in ["bob", "carol"] {
        s.unlock(user).await.unwrap();
    }
    assert!(s.export().await.unwrap().is_empty());
    assert!(s.import(later).await.is_err(), "an emptied copy is not a new store: removed tokens would come back");
}

async fn a_state_raced_by_many_requests_is_used_by_one<B: Backend + 'static>(s: Arc<SealedStore<B>>) {
    let racers: Vec<_> = (0..16u8)
        .map(|i| {
            let s = Arc::clone(&s);
            // Two tries of each request: a NAS's retry beside its original.
            tokio::spawn(async move { s.consume_state(b"raced", 2000, &[b'r', i / 2]).await.unwrap() })
        })
        .collect();
    let mut uses = Vec::new();
    for racer in racers {
        uses.push(racer.await.unwrap());
    }
    assert_eq!(uses.iter().filter(|u| **u == StateUse::First).count(), 1, "{uses:?}");
    let first = uses.iter().position(|u| *u == StateUse::First).unwrap();
    for (i, used) in uses.iter().enumerate() {
        let expected = if i == first {
            StateUse::First
        } else if i / 2 == first / 2 {
            StateUse::SameRequest
        } else {
            StateUse::Used
        };
        assert_eq!(*used, expected, "try {i}");
    }
}

fn sms_challenge(nonce: &[u8], key: Option<&[u8]>) -> SmsChallengeRecord {
    SmsChallengeRecord {
        nonce: nonce.to_vec(),
        expires_at: 2000,
        context: b"context".to_vec(),
        answer: key.map(|key| KeptAnswer { key: key.to_vec(), expires_at: 1030, answer: nonce.to_vec() }),
    }
}

async fn an_sms_challenge_is_counted_once_per_request_while_its_answer_is_kept<B: Backend>(s: Arc<SealedStore<B>>) {
    let limits = SmsLimits { per_user: 2, per_user_window: Duration::from_secs(900), global_per_minute: 10 };
    let first = s.reserve_sms_challenge("alice", 1000, limits, sms_challenge(b"n1", Some(b"request-a"))).await.unwrap();
    assert_eq!(first, SmsChallengeUse::Reserved);
    assert_eq!(s.challenge_context(b"n1").await.unwrap().as_deref(), Some(&b"context"[..]), "kept with the count");
    for retry in 1..4 {
        let again = s.reserve_sms_challenge("alice", 1000 + retry, limits, sms_challenge(b"other", Some(b"request-a"))).await.unwrap();
        assert_eq!(again, SmsChallengeUse::AnsweredBefore(b"n1".to_vec()), "the NAS's retry {retry}: the first answer, no SMS");
    }
    assert_eq!(s.challenge_context(b"other").await.unwrap(), None, "nothing kept for an answered retry");
    // Past the answer's life a copy of the request is a new send, counted as any.
    let late = s.reserve_sms_challenge("alice", 1031, limits, sms_challenge(b"n2", Some(b"request-a"))).await.unwrap();
    assert_eq!(late, SmsChallengeUse::Reserved);
    let over = s.reserve_sms_challenge("alice", 1032, limits, sms_challenge(b"n3", Some(b"request-a"))).await.unwrap();
    assert_eq!(over, SmsChallengeUse::UserLimit, "two sends in the window: the limit");
    assert_eq!(s.challenge_context(b"n3").await.unwrap(), None, "nothing kept past the limit");
    // Where retries are answered by the node's cache alone, every request counts.
    assert_eq!(s.reserve_sms_challenge("bob", 1000, limits, sms_challenge(b"b1", None)).await.unwrap(), SmsChallengeUse::Reserved);
    assert_eq!(s.reserve_sms_challenge("bob", 1001, limits, sms_challenge(b"b2", None)).await.unwrap(), SmsChallengeUse::Reserved);
    assert_eq!(s.reserve_sms_challenge("bob", 1002, limits, sms_challenge(b"b3", None)).await.unwrap(), SmsChallengeUse::UserLimit);
}

async fn retries_of_one_sms_request_raced_reserve_once<B: Backend + 'static>(s: Arc<SealedStore<B>>) {
    let limits = SmsLimits { per_user: 10, per_user_window: Duration::from_secs(900), global_per_minute: 100 };
    let racers: Vec<_> = (0..8u8)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                s.reserve_sms_challenge("alice", 1000, limits, sms_challenge(&[b'n', i], Some(b"one-request"))).await.unwrap()
            })
        })
        .collect();
    let mut uses = Vec::new();
    for racer in racers {
        uses.push(racer.await.unwrap());
    }
    assert_eq!(uses.iter().filter(|u| **u == SmsChallengeUse::Reserved).count(), 1, "{uses:?}");
    let winner = uses.iter().position(|u| *u == SmsChallengeUse::Reserved).unwrap() as u8;
    assert!(uses.iter().all(|u| *u == SmsChallengeUse::Reserved || *u == SmsChallengeUse::AnsweredBefore(vec![b'n', winner])));
}

async fn confirmations_at_once_never_pass_the_token_limit<B: Backend + 'static>(s: Arc<SealedStore<B>>) {
    s.add_token(new_token("alice", true)).await.unwrap();
    let mut pending = Vec::new();
    for _ in 0..6 {
        pending.push(s.add_token(new_token("alice", false)).await.unwrap());
    }
    // Six sessions finish their enrollments at once; alice may have three tokens.
    let racers: Vec<_> = pending
        .into_iter()
        .map(|id| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.confirm_token("alice", id, 100, 3).await.unwrap() })
        })
        .collect();
    let mut confirmed = 0;
    for racer in racers {
        confirmed += usize::from(racer.await.unwrap());
    }
    assert_eq!(confirmed, 2, "two more, to three");
    assert_eq!(s.tokens("alice").await.unwrap().iter().filter(|t| t.confirmed).count(), 3);
}

fn imported(user: &str, seed: &[u8]) -> NewToken {
    NewToken {
        username: user.into(),
        name: "imported".into(),
        params: TotpParams { digits: 8, ..TotpParams::default() },
        secret: Secret::new(seed.to_vec()),
        confirmed: true,
        created_at: 1_000,
    }
}

async fn imported_tokens_are_filed_once_usable_and_within_the_limit<B: Backend>(s: Arc<SealedStore<B>>) {
    use Filing::*;
    s.add_token(new_token("alice", true)).await.unwrap();
    let batch = || {
        vec![
            imported("alice", SEED),
            imported("alice", b"alice-second-0123456789"),
            imported("alice", b"alice-third-0123456789"),
            imported("bob", SEED),
            imported("bob", b"bob-own-0123456789"),
        ]
    };
    // A preview decides as the import would, and writes nothing.
    let preview = s.sort_tokens(&batch(), 2).await.unwrap();
    assert_eq!(preview, [AlreadyThere, Added, OverLimit, Added, Added], "alice has the first seed; her limit is 2");
    assert_eq!(s.list_tokens(None).await.unwrap().len(), 1);
    assert_eq!(s.add_tokens(batch(), 2).await.unwrap(), preview);
    let bob = s.tokens("bob").await.unwrap();
    assert_eq!(bob.len(), 2);
    assert!(bob.iter().all(|t| t.confirmed && t.params.digits == 8 && t.created_at == 1_000 && t.last_step.is_none()), "usable at once");
    assert_eq!(bob[1].secret.expose(), b"bob-own-0123456789", "sealed and opened for its owner and row");
    assert!(s.use_step(bob[0].id, 100, 0, None).await.unwrap());
    // The same file again adds nothing.
    assert_eq!(s.add_tokens(batch(), 5).await.unwrap(), [AlreadyThere, AlreadyThere, Added, AlreadyThere, AlreadyThere]);
    assert_eq!(s.add_tokens(batch(), 5).await.unwrap(), [AlreadyThere; 5]);
    assert_eq!(s.list_tokens(None).await.unwrap().len(), 5);
    // Filed tokens move and reseal with their owner as any other.
    assert_eq!(s.move_tokens("bob", "Bob").await.unwrap(), 2);
    assert_eq!(s.tokens("Bob").await.unwrap()[1].secret.expose(), b"bob-own-0123456789");
    assert_eq!(s.add_tokens(vec![], 5).await.unwrap(), []);
}

async fn one_file_imported_at_once_by_several_files_each_token_once<B: Backend + 'static>(s: Arc<SealedStore<B>>) {
    let batch = || (0..20u8).map(|i| imported(&format!("user{}", i % 7), &[b's', i, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9])).collect::<Vec<_>>();
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.add_tokens(batch(), 3).await.unwrap() })
        })
        .collect();
    let mut added = 0;
    for racer in racers {
        added += racer.await.unwrap().iter().filter(|f| **f == Filing::Added).count();
    }
    // Seven users with 3, 3, 3, 3, 3, 3, 2 of the seeds, at most 3 each: 20 tokens, once.
    assert_eq!(added, 20);
    let tokens = s.list_tokens(None).await.unwrap();
    assert_eq!(tokens.len(), 20);
    assert!((0..7).all(|u| tokens.iter().filter(|t| t.username == format!("user{u}")).count() <= 3));
}

fn event(at: UnixTime, account: &str, reason: &str) -> AuditEvent {
    AuditEvent {
        at,
        account: account.into(),
        action: "radius".into(),
        client: "vpn".into(),
        from: Some("192.0.2.10".into()),
        result: "reject".into(),
        reason: reason.into(),
        actor: None,
        detail: None,
    }
}

/// The reasons of events, in the order read.
fn reasons(events: &[AuditEvent]) -> Vec<&str> {
    events.iter().map(|e| e.reason.as_str()).collect()
}

async fn events_come_newest_first_per_account_within_the_limit<B: Backend>(s: Arc<SealedStore<B>>) {
    // Out of time order (nodes), over two batches, with ties in time.
    s.record_events(vec![event(100, "alice", "a100"), event(300, "alice", "a300"), event(250, "bob", "b250")]).await.unwrap();
    s.record_events(vec![]).await.unwrap();
    let action = AuditEvent {
        at: 300,
        account: "alice".into(),
        action: "unlock".into(),
        client: "helpdesk".into(),
        from: Some("198.51.100.4".into()),
        result: "ok".into(),
        reason: "a300-later".into(),
        actor: Some("helpdesk1".into()),
        detail: Some("code lock".into()),
    };
    s.record_events(vec![event(200, "alice", "a200"), action.clone()]).await.unwrap();
    let alice = s.events("alice", 10).await.unwrap();
    assert_eq!(reasons(&alice), ["a300-later", "a300", "a200", "a100"], "newest first; a tie, the later insert first");
    assert_eq!(alice[0], action, "every field as recorded");
    assert_eq!(alice[1].actor, None);
    assert_eq!(reasons(&s.events("alice", 2).await.unwrap()), ["a300-later", "a300"], "the newest within the limit");
    assert_eq!(reasons(&s.events("bob", 10).await.unwrap()), ["b250"], "only the account's");
    assert!(s.events("carol", 10).await.unwrap().is_empty());
    assert!(s.events("alice", 0).await.unwrap().is_empty());
    assert_eq!(s.events("alice", usize::MAX).await.unwrap().len(), 4, "a limit past any bound is clamped, not wrapped");
}

async fn events_older_than_the_retention_are_purged<B: Backend>(s: Arc<SealedStore<B>>) {
    s.record_events(vec![event(100, "alice", "old"), event(200, "alice", "edge"), event(300, "bob", "new")]).await.unwrap();
    assert_eq!(s.purge_events(100).await.unwrap(), 0, "nothing before 100");
    assert_eq!(s.purge_events(200).await.unwrap(), 1, "only what is older than the bound");
    assert_eq!(reasons(&s.events("alice", 10).await.unwrap()), ["edge"]);
    s.purge(UnixTime::MAX).await.unwrap();
    assert_eq!(reasons(&s.events("bob", 10).await.unwrap()), ["new"], "purge leaves the trail to its retention");
    assert_eq!(s.purge_events(301).await.unwrap(), 2);
    assert!(s.events("bob", 10).await.unwrap().is_empty());
}

async fn a_batch_of_5000_events_is_kept_whole_and_read_back_bounded<B: Backend>(s: Arc<SealedStore<B>>) {
    let batch: Vec<AuditEvent> = (0..5_000).map(|i| event(10_000 + i / 3, &format!("user{}", i % 4), &format!("r{i}"))).collect();
    s.record_events(batch).await.unwrap();
    s.record_events(vec![event(1, "user1", "first")]).await.unwrap();
    let read = s.events("user1", usize::MAX).await.unwrap();
    assert_eq!(read.len(), radmfa::store::event_bounds::MAX_EVENTS_READ, "1,251 kept, a read returns the bound");
    assert!(read.iter().all(|e| e.account == "user1"));
    assert!(read.windows(2).all(|w| w[0].at >= w[1].at), "newest first");
    assert_eq!(read[0].reason, "r4997", "the newest: the last of the batch for user1");
    // More than one purge slice.
    assert_eq!(s.purge_events(UnixTime::MAX).await.unwrap(), 5_001);
    assert!(s.events("user1", 10).await.unwrap().is_empty());
}

async fn event_text_is_kept_within_bounds_and_found_as_kept<B: Backend>(s: Arc<SealedStore<B>>) {
    use radmfa::store::event_bounds::{MAX_ACCOUNT, MAX_DETAIL};
    // "€" is three bytes: the bound falls inside one.
    let long = "€".repeat(400);
    let mut e = event(100, &long, "wrong_code");
    e.detail = Some("x".repeat(10 * MAX_DETAIL));
    e.from = Some("nas\0id".into());
    s.record_events(vec![e]).await.unwrap();
    let read = s.events(&long, 10).await.unwrap();
    assert_eq!(read.len(), 1, "found by the name it was recorded under");
    assert_eq!(read[0].account, "€".repeat(MAX_ACCOUNT / 3), "cut at a character boundary");
    assert_eq!(read[0].detail.as_deref().map(str::len), Some(MAX_DETAIL));
    assert_eq!(read[0].from.as_deref(), Some("nas\u{fffd}id"), "NUL replaced, the batch kept");
}

fn temporary_code(user: &str, code: &str, expires_at: UnixTime, uses: u32) -> NewTemporaryCode {
    NewTemporaryCode {
        username: user.into(),
        code: Secret::new(code.into()),
        issued_by: "helpdesk1".into(),
        issued_at: 1000,
        expires_at,
        uses,
    }
}

async fn temporary_codes_are_sealed_opened_and_live_only_while_unexpired_with_uses_left<B: Backend>(s: Arc<SealedStore<B>>) {
    let (first, replaced) = s.add_temporary_code(temporary_code("alice", "12345678", 5000, 2)).await.unwrap();
    assert_eq!(replaced, 0);
    let (short, _) = s.add_temporary_code(temporary_code("carol", "87654321", 1010, 1)).await.unwrap();
    let (bobs, _) = s.add_temporary_code(temporary_code("bob", "11223344", 5000, 1)).await.unwrap();
    // What the backend keeps is sealed, bound to the row.
    for row in s.backend().temporary_codes(None, 1000).await.unwrap() {
        assert!(row.sealed.starts_with("k1:"), "sealed with the current key");
        for code in ["12345678", "87654321", "11223344"] {
            assert!(!row.sealed.contains(code), "no code in the clear");
        }
    }
    let alice = s.temporary_codes("alice", 1000).await.unwrap();
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].code.expose().as_str(), "12345678");
    let info = TemporaryCodeInfo {
        id: first,
        username: "alice".into(),
        issued_by: "helpdesk1".into(),
        issued_at: 1000,
        expires_at: 5000,
        uses_left: 2,
    };
    assert_eq!(alice[0].info, info);
    assert_eq!(s.list_temporary_codes(None, 1000).await.unwrap().len(), 3);
    assert_eq!(s.list_temporary_codes(Some("bob"), 1000).await.unwrap()[0].id, bobs);
    // Expiry: live while now < expires_at.
    assert_eq!(s.list_temporary_codes(Some("carol"), 1009).await.unwrap().len(), 1);
    assert!(s.list_temporary_codes(Some("carol"), 1010).await.unwrap().is_empty(), "expired at its expiry");
    assert_eq!(s.use_temporary_code(short, 1010, b"r1", None).await.unwrap(), CodeUse::Spent, "an expired code is not used");
    assert_eq!(s.use_temporary_code(short, 1009, b"r1", None).await.unwrap(), CodeUse::Used);
    // Uses: each counted once, by one request each, none past the last.
    assert_eq!(s.use_temporary_code(first, 1100, b"r1", None).await.unwrap(), CodeUse::Used);
    assert_eq!(s.list_temporary_codes(Some("alice"), 1000).await.unwrap()[0].uses_left, 1);
    assert_eq!(s.use_temporary_code(first, 1100, b"r1", None).await.unwrap(), CodeUse::ByThisRequest, "a copy takes no use");
    assert_eq!(s.list_temporary_codes(Some("alice"), 1000).await.unwrap()[0].uses_left, 1);
    assert_eq!(s.use_temporary_code(first, 1100, b"r2", None).await.unwrap(), CodeUse::Used);
    assert_eq!(s.use_temporary_code(first, 1100, b"r3", None).await.unwrap(), CodeUse::Spent, "used up");
    assert_eq!(s.use_temporary_code(first, 1100, b"r2", None).await.unwrap(), CodeUse::ByThisRequest, "the last use's copy too");
    assert!(s.temporary_codes("alice", 1000).await.unwrap().is_empty(), "used up codes are not live");
    assert_eq!(s.use_temporary_code(9_999_999, 1100, b"r1", None).await.unwrap(), CodeUse::Spent, "no such code");
    assert_eq!(s.temporary_codes("bob", 1000).await.unwrap()[0].code.expose(), "11223344", "bob's untouched");
    // A new code replaces the account's others, in one step.
    let (newer, replaced) = s.add_temporary_code(temporary_code("bob", "55667788", 5000, 1)).await.unwrap();
    assert_eq!(replaced, 1);
    assert_eq!(s.list_temporary_codes(Some("bob"), 1000).await.unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), [newer]);
}

async fn the_last_use_of_a_temporary_code_is_won_once<B: Backend + 'static>(s: Arc<SealedStore<B>>) {
    let kept = |key: Vec<u8>| Some(KeptAnswer { key, expires_at: 2000, answer: b"accept".to_vec() });
    for round in 0..10u8 {
        let (id, _) = s.add_temporary_code(temporary_code("alice", "24681357", 5000, 1)).await.unwrap();
        let (request_a, request_b) = ([round, b'a'], [round, b'b']);
        let (a, b) = tokio::join!(
            s.use_temporary_code(id, 1100, &request_a, kept(vec![round, b'a'])),
            s.use_temporary_code(id, 1100, &request_b, kept(vec![round, b'b']))
        );
        let (a, b) = (a.unwrap() == CodeUse::Used, b.unwrap() == CodeUse::Used);
        assert!(a ^ b, "round {round}: exactly one of two uses of the last one wins");
        assert_eq!(s.kept_answer(&[round, b'a'], 1500).await.unwrap().is_some(), a, "the winner's answer is kept, only its");
        assert_eq!(s.kept_answer(&[round, b'b'], 1500).await.unwrap().is_some(), b);
    }
    // Many at once on a code with three uses: three win; copies of one request, one.
    let (id, _) = s.add_temporary_code(temporary_code("bob", "13572468", 5000, 3)).await.unwrap();
    let racers: Vec<_> = (0..12u8)
        .map(|i| {
            let s = Arc::clone(&s);
            // Requests 0..6 each sent twice.
            tokio::spawn(async move { s.use_temporary_code(id, 1100, &[i % 6], None).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        won += usize::from(racer.await.unwrap() == CodeUse::Used);
    }
    assert_eq!(won, 3);
}

async fn temporary_codes_are_revoked_one_or_all_and_only_the_users<B: Backend>(s: Arc<SealedStore<B>>) {
    let (a, _) = s.add_temporary_code(temporary_code("alice", "10000001", 5000, 1)).await.unwrap();
    let (c, _) = s.add_temporary_code(temporary_code("bob", "10000003", 5000, 1)).await.unwrap();
    assert_eq!(s.revoke_temporary_codes("bob", Some(a)).await.unwrap(), 0, "not bob's to revoke");
    assert_eq!(s.revoke_temporary_codes("alice", Some(a)).await.unwrap(), 1);
    assert!(s.list_temporary_codes(Some("alice"), 1000).await.unwrap().is_empty());
    assert_eq!(s.use_temporary_code(a, 1100, b"r", None).await.unwrap(), CodeUse::Spent, "a revoked code is not used");
    s.add_temporary_code(temporary_code("alice", "10000002", 5000, 1)).await.unwrap();
    assert_eq!(s.revoke_temporary_codes("alice", None).await.unwrap(), 1);
    assert_eq!(s.revoke_temporary_codes("alice", None).await.unwrap(), 0);
    assert_eq!(s.list_temporary_codes(None, 1000).await.unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), [c], "bob's stays");
    // The newest revoked: its id is not given again (a revocation from a page shown before
    // must not reach a code issued since).
    assert_eq!(s.revoke_temporary_codes("bob", Some(c)).await.unwrap(), 1);
    let (d, _) = s.add_temporary_code(temporary_code("bob", "10000004", 5000, 1)).await.unwrap();
    assert!(d > c, "a new code never takes a revoked one's id");
}

async fn purge_forgets_expired_and_used_up_temporary_codes<B: Backend>(s: Arc<SealedStore<B>>, keys: Arc<Keys>) {
    let (expired, _) = s.add_temporary_code(temporary_code("alice", "20000001", 1500, 1)).await.unwrap();
    let (used_up, _) = s.add_temporary_code(temporary_code("bob", "20000002", 5000, 1)).await.unwrap();
    let (live, _) = s.add_temporary_code(temporary_code("carol", "20000003", 5000, 2)).await.unwrap();
    assert_eq!(s.use_temporary_code(used_up, 1100, b"r", None).await.unwrap(), CodeUse::Used);
    assert_eq!(s.use_temporary_code(live, 1100, b"r", None).await.unwrap(), CodeUse::Used);
    s.purge(1000).await.unwrap();
    assert_eq!(s.list_temporary_codes(None, 1000).await.unwrap().len(), 2, "nothing live purged");
    s.purge(2000).await.unwrap();
    // Rows still kept are all resealed by a rotation: only the live one is left.
    let rotated = Arc::new(keys.current().with_new_key());
    assert_eq!(s.reseal_all(rotated).await.unwrap(), 1, "the expired and the used-up codes are gone");
    assert!(s.list_temporary_codes(None, 1000).await.unwrap().iter().all(|c| c.id == live), "not {expired}, the expiry");
    assert_eq!(s.list_temporary_codes(None, 2000).await.unwrap()[0].uses_left, 1);
}

async fn rotation_reseals_temporary_codes_and_they_still_open<B: Backend>(s: Arc<SealedStore<B>>, keys: Arc<Keys>) {
    s.add_token(new_token("alice", true)).await.unwrap();
    s.add_temporary_code(temporary_code("alice", "31415926", 5000, 1)).await.unwrap();
    let rotated = Arc::new(keys.current().with_new_key());
    assert_eq!(s.reseal_all(Arc::clone(&rotated)).await.unwrap(), 2, "the seed and the code");
    assert_eq!(s.reseal_all(Arc::clone(&rotated)).await.unwrap(), 0, "nothing left to reseal");
    for row in s.backend().temporary_codes(None, 1000).await.unwrap() {
        assert!(row.sealed.starts_with("k2:"));
        let aad = format!("radmfa/temporary-code/v1/{}/{}", row.info.id, row.info.username);
        assert_eq!(rotated.current_only().open(&row.sealed, aad.as_bytes()).unwrap().as_slice(), b"31415926");
        let other = format!("radmfa/temporary-code/v1/{}/mallory", row.info.id);
        assert!(rotated.open(&row.sealed, other.as_bytes()).is_err(), "bound to its owner");
    }
    // This store's key file holds the old key alone: the code, sealed with the new one, is no
    // code to it (where a key file lacks the key, a temporary code cannot log in).
    assert!(s.temporary_codes("alice", 1000).await.unwrap().is_empty());
    assert_eq!(s.list_temporary_codes(Some("alice"), 1000).await.unwrap().len(), 1, "still listed");
}

async fn a_temporary_code_the_keys_do_not_open_is_no_code_and_stops_a_rotation<B: Backend>(s: Arc<SealedStore<B>>, _keys: Arc<Keys>) {
    let (id, _) = s.add_temporary_code(temporary_code("alice", "27182818", 5000, 1)).await.unwrap();
    let other = Arc::new(KeyRing::generate("k1").with_new_key());
    assert!(matches!(s.reseal_all(other).await, Err(StoreError::Sealed(bad)) if bad == id), "another key file's ring");
    assert_eq!(s.temporary_codes("alice", 1000).await.unwrap()[0].code.expose(), "27182818", "left as it was");
}
