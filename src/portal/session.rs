//! Server-side portal sessions: the cookie holds only a random id; everything else stays here.
//! A session exists only once a password has been accepted, so anonymous page loads cost no
//! memory. Each has its own CSRF token, an idle and an absolute timeout, and a new id after
//! sign-in (no session fixation).
//!
//! Bounded and O(1) per request: an `lru::LruCache` (small, widely used, already in our
//! dependency tree; unlike moka or quick_cache it lets us see what it evicts, which the
//! per-account index below needs) holds at most `capacity` sessions and drops the least
//! recently used one first. Each account keeps at most `PER_ACCOUNT` sessions; a new one pushes
//! out its oldest. Expired sessions go when they are next looked up or reach the LRU end.
//!
//! A request reads a copy and leaves the stored session in place, so two requests with one
//! cookie both find it. Changes are made to the stored entry, under the store's lock
//! (`modify`, `rotate`), and only while it still exists: a session that was signed out or given
//! a new id meanwhile never comes back.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lru::LruCache;
use rand::RngCore;

use crate::auth::portal::{Enrollment, SmsChallenge};
use crate::directory::UserProfile;

/// Live sessions one account may hold (browsers, tabs signed in separately); the oldest goes.
pub const PER_ACCOUNT: usize = 10;

/// Expired sessions removed from the LRU end per new session, so the store sheds them without
/// a scan.
const EXPIRED_SWEEP: usize = 4;

#[derive(Debug, Clone)]
pub enum Stage {
    /// Password accepted; waiting for a code.
    SecondFactor {
        user: String,
        profile: UserProfile,
        has_token: bool,
        sms: Option<SmsChallenge>,
        /// An SMS was asked for (or sent at sign-in): one per sign-in, claimed before it is
        /// sent, so two clicks (or tabs) at once send one.
        sms_asked: bool,
    },
    SignedIn {
        user: String,
        profile: UserProfile,
        enrollment: Option<Enrollment>,
    },
}

impl Stage {
    fn account(&self) -> &str {
        match self {
            Self::SecondFactor { user, .. } | Self::SignedIn { user, .. } => user,
        }
    }
}

#[derive(Clone)]
pub struct Session {
    pub csrf: String,
    pub stage: Stage,
    /// A one-time message for the next page ("Your authenticator is ready").
    pub notice: Option<&'static str>,
    account: String,
    created: Instant,
    last_seen: Instant,
}

/// The CSRF token is a credential: it stays out of Debug output.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("account", &self.account)
            .field("stage", &self.stage)
            .field("created", &self.created)
            .field("last_seen", &self.last_seen)
            .finish_non_exhaustive()
    }
}

/// 256 random bits, URL-safe base64 (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Session {
    pub fn new(stage: Stage, now: Instant) -> Self {
        Self { csrf: random_token(), account: stage.account().to_owned(), stage, notice: None, created: now, last_seen: now }
    }

    /// Signed in: a new CSRF token goes with the new session id, and the absolute timeout
    /// counts from here.
    pub fn sign_in(&mut self, user: String, profile: UserProfile, now: Instant) {
        self.account.clone_from(&user);
        self.stage = Stage::SignedIn { user, profile, enrollment: None };
        self.csrf = random_token();
        self.created = now;
    }
}

struct Inner {
    sessions: LruCache<String, Session>,
    /// Each account's session ids, oldest first (at most `PER_ACCOUNT`).
    by_account: HashMap<String, VecDeque<String>>,
}

impl Inner {
    fn unindex(&mut self, account: &str, id: &str) {
        if let Some(ids) = self.by_account.get_mut(account) {
            ids.retain(|other| other != id);
            if ids.is_empty() {
                self.by_account.remove(account);
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        let session = self.sessions.pop(id)?;
        self.unindex(&session.account, id);
        Some(session)
    }
}

pub struct Sessions {
    inner: Mutex<Inner>,
    idle: Duration,
    absolute: Duration,
}

impl Sessions {
    pub fn new(capacity: usize, idle: Duration, absolute: Duration) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self { inner: Mutex::new(Inner { sessions: LruCache::new(capacity), by_account: HashMap::new() }), idle, absolute }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.last_seen) < self.idle && now.saturating_duration_since(session.created) < self.absolute
    }

    /// A copy of the session for a cookie's id, marked as seen now; `None` when there is none
    /// or it timed out (then it is removed).
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        self.modify(id, now, |session| session.clone())
    }

    /// Applies `change` to the stored session under the store's lock (for what concurrent
    /// requests must not both do, such as spending one of an SMS code's tries).
    pub fn modify<R>(&self, id: &str, now: Instant, change: impl FnOnce(&mut Session) -> R) -> Option<R> {
        let mut inner = self.lock();
        let live = self.live(inner.sessions.peek(id)?, now);
        if !live {
            inner.remove(id);
            return None;
        }
        let session = inner.sessions.get_mut(id)?;
        session.last_seen = now;
        Some(change(session))
    }

    /// Stores a new session under a new id and returns the id.
    pub fn create(&self, mut session: Session, now: Instant) -> String {
        session.last_seen = now;
        let id = random_token();
        let mut inner = self.lock();
        self.sweep_expired(&mut inner, now);
        let account = session.account.clone();
        let ids = inner.by_account.entry(account.clone()).or_default();
        let mut pushed_out = Vec::new();
        while ids.len() >= PER_ACCOUNT {
            pushed_out.extend(ids.pop_front());
        }
        ids.push_back(id.clone());
        for old in pushed_out {
            inner.sessions.pop(&old);
        }
        if let Some((evicted_id, evicted)) = inner.sessions.push(id.clone(), session) {
            inner.unindex(&evicted.account, &evicted_id);
        }
        id
    }

    fn sweep_expired(&self, inner: &mut Inner, now: Instant) {
        for _ in 0..EXPIRED_SWEEP {
            let expired = inner.sessions.peek_lru().is_some_and(|(_, oldest)| !self.live(oldest, now));
            if !expired {
                return;
            }
            if let Some((id, session)) = inner.sessions.pop_lru() {
                inner.unindex(&session.account, &id);
            }
        }
    }

    /// Moves a session to a new id (the old one stops working), changed by `change` on the way;
    /// `None` when the old id is gone (signed out, timed out, or a concurrent request already
    /// moved it).
    pub fn rotate(&self, old_id: &str, now: Instant, change: impl FnOnce(&mut Session)) -> Option<String> {
        let mut session = {
            let mut inner = self.lock();
            let live = self.live(inner.sessions.peek(old_id)?, now);
            let session = inner.remove(old_id)?;
            live.then_some(session)?
        };
        change(&mut session);
        Some(self.create(session, now))
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many accounts have sessions (the per-account index never outgrows the store).
    #[cfg(test)]
    fn accounts(&self) -> usize {
        self.lock().by_account.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed_in(user: &str, now: Instant) -> Session {
        let profile = UserProfile { username: user.to_owned(), ..UserProfile::default() };
        Session::new(Stage::SignedIn { user: user.to_owned(), profile, enrollment: None }, now)
    }

    #[test]
    fn sessions_come_back_until_they_time_out() {
        let store = Sessions::new(100, Duration::from_secs(60), Duration::from_secs(600));
        let t0 = Instant::now();
        let session = signed_in("alice", t0);
        let csrf = session.csrf.clone();
        let id = store.create(session, t0);
        let later = store.get(&id, t0 + Duration::from_secs(30)).expect("still live");
        assert_eq!(later.csrf, csrf);
        assert!(store.get(&id, t0 + Duration::from_secs(30)).is_some(), "reading does not remove it");
        assert!(store.get(&id, t0 + Duration::from_secs(95)).is_none(), "idle too long");
        assert!(store.is_empty(), "an expired session is removed when looked up");
        assert!(store.get("made-up", t0).is_none(), "an id we did not issue is never adopted");
    }

    #[test]
    fn the_absolute_timeout_holds_however_busy_the_session() {
        let store = Sessions::new(100, Duration::from_secs(60), Duration::from_secs(120));
        let t0 = Instant::now();
        let id = store.create(signed_in("alice", t0), t0);
        for s in [50, 100] {
            assert!(store.get(&id, t0 + Duration::from_secs(s)).is_some());
        }
        assert!(store.get(&id, t0 + Duration::from_secs(125)).is_none());
    }

    #[test]
    fn the_store_and_each_account_are_capped() {
        let store = Sessions::new(50, Duration::from_secs(60), Duration::from_secs(600));
        let t0 = Instant::now();
        let first = store.create(signed_in("alice", t0), t0);
        let mut alice = vec![first.clone()];
        for _ in 1..PER_ACCOUNT + 3 {
            alice.push(store.create(signed_in("alice", t0), t0));
        }
        assert_eq!(store.len(), PER_ACCOUNT, "alice's oldest sessions went");
        assert!(store.get(&first, t0).is_none());
        assert!(store.get(&alice[alice.len() - 1], t0).is_some());
        for n in 0..200 {
            store.create(signed_in(&format!("user{n}"), t0), t0);
        }
        assert_eq!(store.len(), 50, "capacity");
        assert_eq!(store.accounts(), 50, "the index follows evictions");
    }

    #[test]
    fn updates_never_bring_back_a_removed_or_rotated_session() {
        let store = Sessions::new(10, Duration::from_secs(60), Duration::from_secs(600));
        let t0 = Instant::now();
        let id = store.create(signed_in("alice", t0), t0);
        let new_id = store.rotate(&id, t0, |_| ()).unwrap();
        assert!(store.modify(&id, t0, |_| ()).is_none(), "the old id stays gone");
        assert!(store.rotate(&id, t0, |_| ()).is_none(), "a second rotation of the old id fails");
        store.remove(&new_id);
        assert!(store.modify(&new_id, t0, |_| ()).is_none());
        assert!(store.is_empty());
        assert_eq!(store.accounts(), 0);
    }

    #[test]
    fn expired_sessions_are_shed_as_new_ones_come() {
        let store = Sessions::new(100, Duration::from_secs(60), Duration::from_secs(600));
        let t0 = Instant::now();
        for n in 0..20 {
            store.create(signed_in(&format!("user{n}"), t0), t0);
        }
        let later = t0 + Duration::from_secs(120);
        for n in 0..5 {
            store.create(signed_in(&format!("late{n}"), later), later);
        }
        assert_eq!(store.len(), 25 - 5 * EXPIRED_SWEEP);
    }

    #[test]
    fn debug_output_leaves_out_the_csrf_token() {
        let session = signed_in("alice", Instant::now());
        assert!(!format!("{session:?}").contains(&session.csrf));
    }
}
