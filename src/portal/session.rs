//! Portal sessions, kept in the store (SQLite and PostgreSQL alike): the cookie holds only a
//! random id; the store keeps the rest, sealed with the key file, under the id's SHA-256. Any
//! node behind a load balancer serves any request of a session, and a restart signs nobody out.
//! A session exists only once a password has been accepted, so anonymous page loads store
//! nothing. Each has its own CSRF token, an idle and an absolute timeout, and a new id after
//! sign-in (no session fixation). An account keeps at most `PER_ACCOUNT` sessions (its oldest
//! goes), the store at most `max_sessions` (those nearest to expiry go).
//!
//! A request reads a copy and leaves the stored session in place, so two requests with one
//! cookie both find it. Changes are made on the stored session's version (`modify`, `rotate`):
//! a change computed from a read that another request (on any node) has overtaken is computed
//! again from a fresh read, and a session that was signed out or given a new id meanwhile never
//! comes back.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::i18n::Strings;
use crate::auth::portal::{Enrollment, SmsChallenge};
use crate::directory::UserProfile;
use crate::secret::Secret;
use crate::store::{NewSession, SessionCaps, SessionKey, Store, StoreError, UnixTime};

/// Live sessions one account may hold (browsers, tabs signed in separately); the oldest goes.
pub const PER_ACCOUNT: usize = 10;

/// How often a change is made again from a fresh read when other requests keep changing the
/// same session first; past that the request finds no session (a browser does not send that
/// many at once: a script hammering its own session does).
const CHANGE_TRIES: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
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
        /// Whether the directory last said the user is in a helpdesk group: only whether the
        /// HELPDESK tab is shown. Every helpdesk request asks the directory again.
        #[serde(default)]
        helpdesk: bool,
    },
}

impl Stage {
    fn account(&self) -> &str {
        match self {
            Self::SecondFactor { user, .. } | Self::SignedIn { user, .. } => user,
        }
    }
}

/// A one-time message for the next page, shown in the language of that page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// "Your authenticator is ready".
    Enrolled,
    /// "The authenticator was removed".
    Removed,
    /// The help desk's actions, on the user's page.
    Unlocked,
    NothingToUnlock,
    NoSuchToken,
    Revoked,
    NoneToRevoke,
}

impl Notice {
    pub fn text(self, s: &Strings) -> &'static str {
        match self {
            Self::Enrolled => s.enrolled,
            Self::Removed => s.removed,
            Self::Unlocked => s.unlocked,
            Self::NothingToUnlock => s.nothing_to_unlock,
            Self::NoSuchToken => s.no_such_token,
            Self::Revoked => s.revoked,
            Self::NoneToRevoke => s.none_to_revoke,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub csrf: String,
    pub stage: Stage,
    pub notice: Option<Notice>,
}

/// The CSRF token is a credential: it stays out of Debug output.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("stage", &self.stage).field("notice", &self.notice).finish_non_exhaustive()
    }
}

/// 256 random bits, URL-safe base64 (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The profile as the pages show it: no groups (the portal never shows them, and a member of
/// thousands would make every change of the session write them all again).
fn shown(mut profile: UserProfile) -> UserProfile {
    profile.groups = Vec::new();
    profile
}

impl Session {
    pub fn new(mut stage: Stage) -> Self {
        match &mut stage {
            Stage::SecondFactor { profile, .. } | Stage::SignedIn { profile, .. } => *profile = shown(std::mem::take(profile)),
        }
        Self { csrf: random_token(), stage, notice: None }
    }

    /// Signed in: a new CSRF token goes with the new session id (whose absolute timeout counts
    /// from here).
    pub fn sign_in(&mut self, user: String, profile: UserProfile, helpdesk: bool) {
        self.stage = Stage::SignedIn { user, profile: shown(profile), enrollment: None, helpdesk };
        self.csrf = random_token();
    }

    fn account(&self) -> &str {
        self.stage.account()
    }

    fn encode(&self) -> Result<Secret<Vec<u8>>, StoreError> {
        serde_json::to_vec(self).map(Secret::new).map_err(|e| StoreError::database(format!("portal session: {e}")))
    }

    /// `None` for data this radmfa cannot read (written by another version): no session.
    fn decode(data: &Secret<Vec<u8>>) -> Option<Self> {
        serde_json::from_slice(data.expose()).ok()
    }
}

/// Where a session is kept: the SHA-256 of its id.
fn key_of(id: &str) -> SessionKey {
    Sha256::digest(id.as_bytes()).into()
}

pub struct Sessions {
    store: Arc<dyn Store>,
    idle: UnixTime,
    absolute: UnixTime,
    caps: SessionCaps,
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, max_sessions: usize, idle: Duration, absolute: Duration) -> Self {
        let seconds = |d: Duration| UnixTime::try_from(d.as_secs()).unwrap_or(UnixTime::MAX / 4).max(1);
        Self {
            store,
            idle: seconds(idle),
            absolute: seconds(absolute),
            caps: SessionCaps { per_account: PER_ACCOUNT, total: max_sessions },
        }
    }

    /// The session under `key` and its version, if live at `now` (its idle time starts again).
    async fn read(&self, key: &SessionKey, now: UnixTime) -> Result<Option<(i64, Session)>, StoreError> {
        let Some(stored) = self.store.session(key, now, now.saturating_add(self.idle)).await? else { return Ok(None) };
        Ok(Session::decode(&stored.data).map(|session| (stored.version, session)))
    }

    /// A copy of the session for a cookie's id; `None` when there is none or it timed out.
    pub async fn get(&self, id: &str, now: UnixTime) -> Result<Option<Session>, StoreError> {
        Ok(self.read(&key_of(id), now).await?.map(|(_, session)| session))
    }

    /// Applies `change` to the stored session (for what concurrent requests must not both do,
    /// such as spending one of an SMS code's tries). `change` may run more than once, each time
    /// on a fresher copy; what it returns from the run that was stored is returned.
    pub async fn modify<R>(&self, id: &str, now: UnixTime, mut change: impl FnMut(&mut Session) -> R) -> Result<Option<R>, StoreError> {
        let key = key_of(id);
        for _ in 0..CHANGE_TRIES {
            let Some((version, mut session)) = self.read(&key, now).await? else { return Ok(None) };
            let result = change(&mut session);
            if self.store.update_session(&key, version, session.encode()?).await? {
                return Ok(Some(result));
            }
        }
        Ok(None)
    }

    fn new_row(&self, id: &str, session: &Session, now: UnixTime) -> Result<NewSession, StoreError> {
        let ends_at = now.saturating_add(self.absolute);
        Ok(NewSession {
            key: key_of(id),
            account: session.account().to_owned(),
            ends_at,
            expires_at: now.saturating_add(self.idle).min(ends_at),
            data: session.encode()?,
        })
    }

    /// Keeps a new session under a new id and returns the id.
    pub async fn create(&self, session: &Session, now: UnixTime) -> Result<String, StoreError> {
        let id = random_token();
        self.store.create_session(self.new_row(&id, session, now)?, self.caps).await?;
        Ok(id)
    }

    /// Moves a session to a new id (the old one stops working, and the absolute timeout starts
    /// again), changed by `change` on the way; `None` when the old id is gone (signed out,
    /// timed out, or a concurrent request already moved it).
    pub async fn rotate(&self, old_id: &str, now: UnixTime, mut change: impl FnMut(&mut Session)) -> Result<Option<String>, StoreError> {
        let old = key_of(old_id);
        for _ in 0..CHANGE_TRIES {
            let Some((version, mut session)) = self.read(&old, now).await? else { return Ok(None) };
            change(&mut session);
            let id = random_token();
            if self.store.rotate_session(&old, version, self.new_row(&id, &session, now)?, self.caps).await? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    pub async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.store.remove_session(&key_of(id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyRing, Keys};
    use crate::store::memory::MemoryStore;

    fn sessions(max: usize, idle: u64, absolute: u64) -> (Sessions, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::in_memory(Arc::new(Keys::fixed(KeyRing::generate("k1")))));
        (Sessions::new(store.clone(), max, Duration::from_secs(idle), Duration::from_secs(absolute)), store)
    }

    fn signed_in(user: &str) -> Session {
        let profile = UserProfile { username: user.to_owned(), ..UserProfile::default() };
        Session::new(Stage::SignedIn { user: user.to_owned(), profile, enrollment: None, helpdesk: false })
    }

    const T0: UnixTime = 1_800_000_000;

    #[tokio::test]
    async fn sessions_come_back_until_they_time_out() {
        let (store, _) = sessions(100, 60, 600);
        let session = signed_in("alice");
        let id = store.create(&session, T0).await.unwrap();
        let later = store.get(&id, T0 + 30).await.unwrap().expect("still live");
        assert_eq!(later.csrf, session.csrf);
        assert!(store.get(&id, T0 + 30).await.unwrap().is_some(), "reading does not remove it");
        assert!(store.get(&id, T0 + 89).await.unwrap().is_some(), "each read starts the idle time again");
        assert!(store.get(&id, T0 + 150).await.unwrap().is_none(), "idle too long");
        assert!(store.get("made-up", T0).await.unwrap().is_none(), "an id we did not issue is never adopted");
    }

    #[tokio::test]
    async fn the_absolute_timeout_holds_however_busy_the_session() {
        let (store, _) = sessions(100, 60, 120);
        let id = store.create(&signed_in("alice"), T0).await.unwrap();
        for s in [50, 100] {
            assert!(store.get(&id, T0 + s).await.unwrap().is_some());
        }
        assert!(store.get(&id, T0 + 121).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_store_and_each_account_are_capped() {
        let (store, _) = sessions(50, 60, 600);
        let first = store.create(&signed_in("alice"), T0).await.unwrap();
        let mut alice = vec![first.clone()];
        for _ in 1..PER_ACCOUNT + 3 {
            alice.push(store.create(&signed_in("alice"), T0).await.unwrap());
        }
        let live = |ids: Vec<String>| {
            let store = &store;
            async move {
                let mut n = 0;
                for id in ids {
                    n += usize::from(store.get(&id, T0).await.unwrap().is_some());
                }
                n
            }
        };
        assert_eq!(live(alice.clone()).await, PER_ACCOUNT, "alice's oldest sessions went");
        assert!(store.get(&first, T0).await.unwrap().is_none());
        assert!(store.get(&alice[alice.len() - 1], T0).await.unwrap().is_some());
        let mut others = Vec::new();
        for n in 0..200 {
            others.push(store.create(&signed_in(&format!("user{n}")), T0 + 1).await.unwrap());
        }
        let all: Vec<String> = alice.into_iter().chain(others.iter().cloned()).collect();
        assert_eq!(live(all).await, 50, "capacity");
        assert!(store.get(&others[199], T0 + 1).await.unwrap().is_some(), "the newest stays");
    }

    #[tokio::test]
    async fn updates_never_bring_back_a_removed_or_rotated_session() {
        let (store, _) = sessions(10, 60, 600);
        let id = store.create(&signed_in("alice"), T0).await.unwrap();
        let new_id = store.rotate(&id, T0, |_| ()).await.unwrap().unwrap();
        assert!(store.modify(&id, T0, |_| ()).await.unwrap().is_none(), "the old id stays gone");
        assert!(store.rotate(&id, T0, |_| ()).await.unwrap().is_none(), "a second rotation of the old id fails");
        store.remove(&new_id).await.unwrap();
        assert!(store.modify(&new_id, T0, |_| ()).await.unwrap().is_none());
        assert!(store.get(&new_id, T0).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn concurrent_changes_each_land_once() {
        let (store, _) = sessions(10, 60, 600);
        let store = Arc::new(store);
        let id = store.create(&signed_in("alice"), T0).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (store, id) = (Arc::clone(&store), id.clone());
            tasks.push(tokio::spawn(async move { store.modify(&id, T0, |s| s.csrf.push('.')).await.unwrap().is_some() }));
        }
        let mut landed = 0;
        for task in tasks {
            landed += usize::from(task.await.unwrap());
        }
        let csrf = store.get(&id, T0).await.unwrap().unwrap().csrf;
        assert_eq!(csrf.matches('.').count(), landed, "each change that says it landed is in the session, once");
        assert_eq!(landed, 4);
    }

    #[tokio::test]
    async fn the_store_holds_the_session_sealed_under_a_hash_of_its_id() {
        let (store, backend) = sessions(10, 60, 600);
        let mut session = signed_in("alice");
        if let Stage::SignedIn { profile, .. } = &mut session.stage {
            profile.mobile = Some("+46701234567".into());
        }
        let id = store.create(&session, T0).await.unwrap();
        let kept = crate::store::Backend::session(backend.backend(), &key_of(&id), T0, T0 + 60).await.unwrap().unwrap();
        assert!(!kept.1.contains("+4670") && !kept.1.contains(&session.csrf), "sealed, not in clear");
    }

    #[tokio::test]
    async fn a_session_keeps_no_groups() {
        let (store, _) = sessions(10, 60, 600);
        let profile =
            UserProfile { username: "alice".into(), groups: vec!["CN=G1,DC=example,DC=test".into(); 4000], ..UserProfile::default() };
        let stage = Stage::SecondFactor { user: "alice".into(), profile: profile.clone(), has_token: true, sms: None, sms_asked: false };
        let id = store.create(&Session::new(stage), T0).await.unwrap();
        let new_id = store.rotate(&id, T0, |s| s.sign_in("alice".into(), profile.clone(), false)).await.unwrap().unwrap();
        let Stage::SignedIn { profile, .. } = store.get(&new_id, T0).await.unwrap().unwrap().stage else { panic!("signed in") };
        assert!(profile.groups.is_empty());
    }

    #[test]
    fn a_session_kept_before_the_helpdesk_flag_still_reads_without_the_role() {
        let kept = br#"{"csrf":"c","stage":{"SignedIn":{"user":"alice","profile":{"username":"alice","given_name":null,"surname":null,"email":null,"mobile":null,"groups":[]},"enrollment":null}},"notice":null}"#;
        let session = Session::decode(&Secret::new(kept.to_vec())).expect("still readable");
        assert!(matches!(session.stage, Stage::SignedIn { helpdesk: false, .. }), "{session:?}");
    }

    #[test]
    fn debug_output_leaves_out_the_csrf_token() {
        let session = signed_in("alice");
        assert!(!format!("{session:?}").contains(&session.csrf));
    }
}
