//! Server-side portal sessions: the cookie holds only a random id; everything else stays here.
//! Each session has its own CSRF token, an idle and an absolute timeout, and a new id after
//! sign-in (no session fixation). The store is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngCore;

use super::i18n::Lang;
use crate::auth::portal::{Enrollment, SmsChallenge};
use crate::directory::UserProfile;

const MAX_SESSIONS: usize = 50_000;

#[derive(Debug, Clone)]
pub enum Stage {
    Anonymous,
    /// Password accepted; waiting for a code.
    SecondFactor {
        user: String,
        profile: UserProfile,
        has_token: bool,
        sms: Option<SmsChallenge>,
    },
    SignedIn {
        user: String,
        profile: UserProfile,
        enrollment: Option<Enrollment>,
    },
}

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    pub lang: Option<Lang>,
    pub stage: Stage,
    /// A one-time message for the next page ("Your authenticator is ready").
    pub notice: Option<&'static str>,
    created: Instant,
    last_seen: Instant,
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Session {
    fn new(now: Instant) -> Self {
        Self { csrf: random_token(), lang: None, stage: Stage::Anonymous, notice: None, created: now, last_seen: now }
    }

    /// Signed in: a new CSRF token goes with the new session id.
    pub fn sign_in(&mut self, user: String, profile: UserProfile) {
        self.stage = Stage::SignedIn { user, profile, enrollment: None };
        self.csrf = random_token();
        self.created = Instant::now();
    }
}

pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
    absolute: Duration,
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration) -> Self {
        Self { map: Mutex::new(HashMap::new()), idle, absolute }
    }

    fn live(&self, session: &Session, now: Instant) -> bool {
        now.duration_since(session.last_seen) < self.idle && now.duration_since(session.created) < self.absolute
    }

    /// The session for a cookie's id, taken out of the store for this request; a new anonymous
    /// one (with a new id) when there is none or it timed out.
    pub fn take(&self, id: Option<&str>, now: Instant) -> (String, Session) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = id {
            if let Some(session) = map.remove(id) {
                if self.live(&session, now) {
                    return (id.to_owned(), session);
                }
            }
        }
        (random_token(), Session::new(now))
    }

    /// Puts a session back after the request.
    pub fn put(&self, id: String, mut session: Session, now: Instant) {
        session.last_seen = now;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| now.duration_since(s.last_seen) < self.idle && now.duration_since(s.created) < self.absolute);
        }
        if map.len() < MAX_SESSIONS {
            map.insert(id, session);
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_come_back_until_they_time_out() {
        let store = Sessions::new(Duration::from_secs(60), Duration::from_secs(600));
        let t0 = Instant::now();
        let (id, mut session) = store.take(None, t0);
        session.lang = Some(Lang::Sv);
        let csrf = session.csrf.clone();
        store.put(id.clone(), session, t0);
        let (same, session) = store.take(Some(&id), t0 + Duration::from_secs(30));
        assert_eq!((same.as_str(), session.csrf.as_str(), session.lang), (id.as_str(), csrf.as_str(), Some(Lang::Sv)));
        store.put(same, session, t0 + Duration::from_secs(30));
        let (fresh, session) = store.take(Some(&id), t0 + Duration::from_secs(95));
        assert_ne!(fresh, id, "idle too long: a new session");
        assert_ne!(session.csrf, csrf);
        let (unknown, _) = store.take(Some("made-up"), t0);
        assert_ne!(unknown, "made-up", "an id we did not issue is never adopted");
    }
}
