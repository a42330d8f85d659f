//! A backend that keeps everything in the process, under one lock: gone when the process ends,
//! and never shared between nodes. For tests of other modules (no file, no thread) and as the
//! second implementation of the [`Backend`] contract, which the store test-suite runs against
//! it as against SQLite.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::backend::{
    self, Backend, NewTemporaryCodeRow, NewTokenRow, Reseal, SealNew, SealedSeed, SessionRow, Snapshot, SortNew, Sorted, TemporaryCodeRow,
    TokenRow,
};
use super::event_bounds;
use super::{
    AuditEvent, CodeUse, Factor, Filing, KeptAnswer, LockoutPolicy, LockoutRecord, LockoutState, SealedStore, SessionCaps, SessionKey,
    SmsChallengeRecord, SmsChallengeUse, SmsLimits, SmsReservation, StateUse, StoreError, TemporaryCodeInfo, UnixTime,
};

/// The in-memory store: seeds sealed above the in-memory backend.
pub type MemoryStore = SealedStore<MemoryBackend>;

impl SealedStore<MemoryBackend> {
    /// An empty store whose seeds are sealed with `keys`.
    pub fn in_memory(keys: std::sync::Arc<crate::keys::Keys>) -> Self {
        Self::new(keys, MemoryBackend::default())
    }
}

pub struct MemoryBackend {
    data: Mutex<Data>,
    /// See [`Backend::identity`].
    identity: String,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        use rand::RngCore;
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Self { data: Mutex::default(), identity: id.iter().map(|b| format!("{b:02x}")).collect() }
    }
}

#[derive(Default)]
struct Data {
    tokens: BTreeMap<i64, TokenRow>,
    last_id: i64,
    lockouts: HashMap<(Factor, String), Lockout>,
    /// Who was sent an SMS, and when.
    sms_sends: Vec<(String, UnixTime)>,
    /// Used States: until when, and by which request.
    used_states: HashMap<Vec<u8>, (UnixTime, Vec<u8>)>,
    contexts: HashMap<Vec<u8>, (UnixTime, Vec<u8>)>,
    answers: HashMap<Vec<u8>, (UnixTime, Vec<u8>)>,
    sessions: HashMap<SessionKey, Session>,
    /// Numbers sessions in the order they were made (the oldest of an account goes first).
    last_session: u64,
    /// The digest of the last snapshot imported.
    copied: Option<[u8; 32]>,
    /// The audit trail, oldest first.
    events: Vec<AuditEvent>,
    temporary_codes: BTreeMap<i64, TemporaryCodeRow>,
    /// The requests that took each code's uses.
    code_uses: HashMap<i64, HashSet<Vec<u8>>>,
    last_temporary_code: i64,
}

fn live(code: &TemporaryCodeRow, now: UnixTime) -> bool {
    code.info.expires_at > now && code.info.uses_left > 0
}

/// A portal session as kept (see the SQLite `portal_sessions` table).
#[derive(Debug, Clone)]
struct Session {
    seq: u64,
    account: String,
    ends_at: UnixTime,
    expires_at: UnixTime,
    version: i64,
    sealed: String,
}

/// A factor's failures for one account (see the SQLite `lockouts` tables).
#[derive(Debug, Default, Clone, Copy)]
struct Lockout {
    failures: u32,
    locked_until: Option<UnixTime>,
    /// Locks since the last success: each doubles the next.
    lock_count: u32,
    last_failure_at: Option<UnixTime>,
    seq: u64,
}

impl MemoryBackend {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Data {
    fn insert_token(&mut self, token: NewTokenRow, seal: SealNew) -> i64 {
        self.last_id += 1;
        let id = self.last_id;
        let NewTokenRow { username, name, params, created_at, confirmed } = token;
        let row = TokenRow { id, username, name, params, sealed: seal(id), created_at, last_step: None, last_used_at: None, confirmed };
        self.tokens.insert(id, row);
        id
    }

    fn seeds_of(&self, username: Option<&str>) -> Vec<SealedSeed> {
        let owned = self.tokens.values().filter(|t| username.is_none_or(|u| t.username == u));
        owned.map(|t| SealedSeed { id: t.id, username: t.username.clone(), sealed: t.sealed.clone() }).collect()
    }

    fn snapshot(&self) -> Snapshot {
        let mut lockouts: Vec<LockoutRecord> = self
            .lockouts
            .iter()
            .map(|((factor, username), l)| LockoutRecord {
                username: username.clone(),
                factor: *factor,
                failures: l.failures,
                locked_until: l.locked_until,
                lock_count: l.lock_count,
                last_failure_at: l.last_failure_at,
                seq: l.seq,
            })
            .collect();
        lockouts.sort_by(|a, b| (a.factor.as_str(), &a.username).cmp(&(b.factor.as_str(), &b.username)));
        Snapshot { tokens: self.tokens.values().cloned().collect(), lockouts }
    }

    fn reserve_sms(&mut self, username: &str, now: UnixTime, limits: SmsLimits) -> SmsReservation {
        let user_since = now - limits.per_user_window.as_secs() as UnixTime;
        let by_user = self.sms_sends.iter().filter(|(user, at)| user == username && *at > user_since).count();
        if by_user >= limits.per_user as usize {
            return SmsReservation::UserLimit;
        }
        let global = self.sms_sends.iter().filter(|(_, at)| *at > now - 60).count();
        if global >= limits.global_per_minute as usize {
            return SmsReservation::GlobalLimit;
        }
        self.sms_sends.push((username.to_owned(), now));
        SmsReservation::Allowed
    }

    /// Keeps a session within the caps: the account's oldest go, then those nearest to expiry.
    fn insert_session(&mut self, row: SessionRow, caps: SessionCaps) {
        let mut own: Vec<(u64, SessionKey)> =
            self.sessions.iter().filter(|(_, s)| s.account == row.account).map(|(k, s)| (s.seq, *k)).collect();
        own.sort_unstable();
        let surplus = (own.len() + 1).saturating_sub(caps.per_account.max(1));
        for (_, key) in own.into_iter().take(surplus) {
            self.sessions.remove(&key);
        }
        let surplus = (self.sessions.len() + 1).saturating_sub(caps.total.max(1));
        if surplus > 0 {
            let mut nearest: Vec<(UnixTime, u64, SessionKey)> = self.sessions.iter().map(|(k, s)| (s.expires_at, s.seq, *k)).collect();
            nearest.sort_unstable();
            for (_, _, key) in nearest.into_iter().take(surplus) {
                self.sessions.remove(&key);
            }
        }
        self.last_session += 1;
        let SessionRow { key, account, ends_at, expires_at, sealed } = row;
        self.sessions.insert(key, Session { seq: self.last_session, account, ends_at, expires_at, version: 0, sealed });
    }

    /// Every new seal `reseal` gives, or its first error (then nothing is written).
    fn resealed(seeds: &[SealedSeed], reseal: &Reseal) -> Result<Vec<(i64, Option<String>)>, StoreError> {
        seeds.iter().map(|seed| Ok((seed.id, reseal(seed)?))).collect()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn add_token(&self, token: NewTokenRow, seal: SealNew) -> Result<i64, StoreError> {
        Ok(self.data().insert_token(token, seal))
    }

    async fn add_tokens(&self, owners: Vec<String>, sort: SortNew) -> Result<Vec<Filing>, StoreError> {
        // One lock held from the read to the last write: the step is atomic.
        let owners: HashSet<String> = owners.into_iter().collect();
        let mut data = self.data();
        let kept = data.tokens.values().filter(|t| owners.contains(&t.username)).cloned().collect();
        let sorted = sort(kept)?;
        let filings = sorted.into_iter().map(|sorted| match sorted {
            Sorted::Keep(token, seal) => {
                data.insert_token(token, seal);
                Filing::Added
            }
            Sorted::Skip(filing) => filing,
        });
        Ok(filings.collect())
    }

    async fn tokens(&self, username: Option<&str>) -> Result<Vec<TokenRow>, StoreError> {
        Ok(self.data().tokens.values().filter(|t| username.is_none_or(|u| t.username == u)).cloned().collect())
    }

    async fn move_tokens(&self, from: &str, to: &str, reseal: Reseal) -> Result<usize, StoreError> {
        let mut data = self.data();
        let resealed = Data::resealed(&data.seeds_of(Some(from)), &reseal)?;
        for (id, sealed) in &resealed {
            if let Some(token) = data.tokens.get_mut(id) {
                token.username = to.to_owned();
                if let Some(sealed) = sealed {
                    token.sealed.clone_from(sealed);
                }
            }
        }
        Ok(resealed.len())
    }

    async fn reseal_tokens(&self, reseal: Reseal) -> Result<usize, StoreError> {
        let mut data = self.data();
        let resealed = Data::resealed(&data.seeds_of(None), &reseal)?;
        let mut count = 0;
        for (id, sealed) in resealed {
            if let (Some(token), Some(sealed)) = (data.tokens.get_mut(&id), sealed) {
                token.sealed = sealed;
                count += 1;
            }
        }
        Ok(count)
    }

    async fn remove_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        let mut data = self.data();
        let owned = data.tokens.get(&id).is_some_and(|t| t.username == username);
        Ok(owned && data.tokens.remove(&id).is_some())
    }

    async fn abandon_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        let mut data = self.data();
        let unconfirmed = data.tokens.get(&id).is_some_and(|t| t.username == username && !t.confirmed);
        Ok(unconfirmed && data.tokens.remove(&id).is_some())
    }

    async fn confirm_token(&self, username: &str, id: i64, step: u64, max_confirmed: usize) -> Result<bool, StoreError> {
        let mut data = self.data();
        if data.tokens.values().filter(|t| t.username == username && t.confirmed).count() >= max_confirmed {
            return Ok(false);
        }
        match data.tokens.get_mut(&id) {
            Some(token) if token.username == username && !token.confirmed => {
                token.confirmed = true;
                token.last_step = Some(step);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn use_step(&self, token_id: i64, step: u64, now: UnixTime, keep: Option<KeptAnswer>) -> Result<bool, StoreError> {
        let mut data = self.data();
        match data.tokens.get_mut(&token_id) {
            Some(token) if token.confirmed && token.last_step.is_none_or(|last| last < step) => {
                token.last_step = Some(step);
                token.last_used_at = Some(now);
                if let Some(kept) = keep {
                    data.answers.insert(kept.key, (kept.expires_at, kept.answer));
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn locked_until(&self, username: &str, factor: Factor, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        let data = self.data();
        Ok(data.lockouts.get(&(factor, username.to_owned())).and_then(|l| l.locked_until).filter(|&t| t > now))
    }

    async fn lockout_state(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<LockoutState, StoreError> {
        let data = self.data();
        let Some(l) = data.lockouts.get(&(factor, username.to_owned())) else { return Ok(LockoutState::default()) };
        let forgotten = policy.forget_after.is_some_and(|f| l.last_failure_at.is_some_and(|at| at < now - f.as_secs() as UnixTime));
        Ok(LockoutState {
            locked_until: l.locked_until.filter(|&until| until > now),
            failures: if forgotten { 0 } else { l.failures },
            seq: l.seq,
        })
    }

    async fn record_failure(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<Option<UnixTime>, StoreError> {
        let mut data = self.data();
        let l = data.lockouts.entry((factor, username.to_owned())).or_default();
        if let Some(forget) = policy.forget_after {
            // Failures (and doublings) from long ago no longer count, once no lock is running.
            let old = l.last_failure_at.is_some_and(|at| at < now - forget.as_secs() as UnixTime);
            if old && l.locked_until.is_none_or(|until| until <= now) {
                (l.failures, l.lock_count) = (0, 0);
            }
        }
        l.failures += 1;
        l.last_failure_at = Some(now);
        l.seq += 1;
        if l.failures < policy.max_failures.max(1) {
            return Ok(None);
        }
        let until = now + policy.lock_duration(l.lock_count).as_secs() as UnixTime;
        (l.failures, l.locked_until, l.lock_count) = (0, Some(until), l.lock_count + 1);
        Ok(Some(until))
    }

    async fn record_success(&self, username: &str, factor: Factor, seen: u64) -> Result<(), StoreError> {
        let mut data = self.data();
        let key = (factor, username.to_owned());
        // Only when no failure was counted since the try began (seq unchanged).
        if data.lockouts.get(&key).is_some_and(|l| l.seq == seen) {
            data.lockouts.remove(&key);
        }
        Ok(())
    }

    async fn unlock(&self, username: &str) -> Result<bool, StoreError> {
        let mut data = self.data();
        let code = data.lockouts.remove(&(Factor::Code, username.to_owned())).is_some();
        let password = data.lockouts.remove(&(Factor::Password, username.to_owned())).is_some();
        Ok(code || password)
    }

    async fn reserve_sms(&self, username: &str, now: UnixTime, limits: SmsLimits) -> Result<SmsReservation, StoreError> {
        Ok(self.data().reserve_sms(username, now, limits))
    }

    async fn reserve_sms_challenge(
        &self,
        username: &str,
        now: UnixTime,
        limits: SmsLimits,
        challenge: SmsChallengeRecord,
    ) -> Result<SmsChallengeUse, StoreError> {
        let mut data = self.data();
        if let Some(kept) = &challenge.answer
            && let Some((_, answer)) = data.answers.get(&kept.key).filter(|(expires_at, _)| *expires_at >= now)
        {
            return Ok(SmsChallengeUse::AnsweredBefore(answer.clone()));
        }
        if let Some(refused) = data.reserve_sms(username, now, limits).refused() {
            return Ok(refused);
        }
        let SmsChallengeRecord { nonce, expires_at, context, answer } = challenge;
        data.contexts.insert(nonce, (expires_at, context));
        if let Some(kept) = answer {
            data.answers.insert(kept.key, (kept.expires_at, kept.answer));
        }
        Ok(SmsChallengeUse::Reserved)
    }

    async fn consume_state(&self, nonce: &[u8], expires_at: UnixTime, request: &[u8]) -> Result<StateUse, StoreError> {
        let mut data = self.data();
        if let Some((_, by)) = data.used_states.get(nonce) {
            return Ok(if by.as_slice() == request { StateUse::SameRequest } else { StateUse::Used });
        }
        data.used_states.insert(nonce.to_vec(), (expires_at, request.to_vec()));
        Ok(StateUse::First)
    }

    async fn keep_challenge_context(&self, nonce: &[u8], expires_at: UnixTime, context: Vec<u8>) -> Result<(), StoreError> {
        self.data().contexts.insert(nonce.to_vec(), (expires_at, context));
        Ok(())
    }

    async fn challenge_context(&self, nonce: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data().contexts.get(nonce).map(|(_, context)| context.clone()))
    }

    async fn keep_answer(&self, kept: KeptAnswer) -> Result<(), StoreError> {
        self.data().answers.insert(kept.key, (kept.expires_at, kept.answer));
        Ok(())
    }

    async fn kept_answer(&self, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data().answers.get(key).filter(|(expires_at, _)| *expires_at >= now).map(|(_, answer)| answer.clone()))
    }

    async fn create_session(&self, session: SessionRow, caps: SessionCaps) -> Result<(), StoreError> {
        self.data().insert_session(session, caps);
        Ok(())
    }

    async fn session(&self, key: &SessionKey, now: UnixTime, expires_at: UnixTime) -> Result<Option<(i64, String)>, StoreError> {
        let mut data = self.data();
        let Some(session) = data.sessions.get_mut(key).filter(|s| s.expires_at > now) else { return Ok(None) };
        session.expires_at = expires_at.min(session.ends_at);
        Ok(Some((session.version, session.sealed.clone())))
    }

    async fn update_session(&self, key: &SessionKey, version: i64, sealed: String) -> Result<bool, StoreError> {
        let mut data = self.data();
        let Some(session) = data.sessions.get_mut(key).filter(|s| s.version == version) else { return Ok(false) };
        session.version += 1;
        session.sealed = sealed;
        Ok(true)
    }

    async fn rotate_session(&self, old: &SessionKey, version: i64, new: SessionRow, caps: SessionCaps) -> Result<bool, StoreError> {
        let mut data = self.data();
        if data.sessions.get(old).is_none_or(|s| s.version != version) {
            return Ok(false);
        }
        data.sessions.remove(old);
        data.insert_session(new, caps);
        Ok(true)
    }

    async fn remove_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.data().sessions.remove(key);
        Ok(())
    }

    async fn session_count(&self) -> Result<usize, StoreError> {
        Ok(self.data().sessions.len())
    }

    async fn export(&self) -> Result<Snapshot, StoreError> {
        Ok(self.data().snapshot())
    }

    async fn import(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut data = self.data();
        if !Snapshot::may_replace(&data.snapshot(), data.copied.as_ref().map(|d| d.as_slice())) {
            return Err(Snapshot::diverged());
        }
        data.copied = Some(snapshot.digest());
        data.tokens = snapshot.tokens.into_iter().map(|t| (t.id, t)).collect();
        data.last_id = data.last_id.max(data.tokens.keys().max().copied().unwrap_or(0));
        data.lockouts = snapshot
            .lockouts
            .into_iter()
            .map(|l| {
                let kept = Lockout {
                    failures: l.failures,
                    locked_until: l.locked_until,
                    lock_count: l.lock_count,
                    last_failure_at: l.last_failure_at,
                    seq: l.seq,
                };
                ((l.factor, l.username), kept)
            })
            .collect();
        Ok(())
    }

    async fn identity(&self) -> Result<String, StoreError> {
        Ok(self.identity.clone())
    }

    async fn purge(&self, now: UnixTime) -> Result<(), StoreError> {
        let mut data = self.data();
        data.sessions.retain(|_, s| s.expires_at > now);
        data.used_states.retain(|_, (expires_at, _)| *expires_at >= now);
        data.contexts.retain(|_, (expires_at, _)| *expires_at >= now);
        data.answers.retain(|_, (expires_at, _)| *expires_at >= now);
        data.sms_sends.retain(|(_, at)| *at >= now - backend::SMS_HISTORY);
        for l in data.lockouts.values_mut() {
            l.locked_until = l.locked_until.filter(|&until| until >= now);
        }
        // Enrollments abandoned before their confirming code: never usable, so never kept long.
        data.tokens.retain(|_, t| t.confirmed || t.created_at >= now - backend::UNCONFIRMED_TOKEN_LIFETIME);
        data.temporary_codes.retain(|_, code| live(code, now));
        let Data { temporary_codes, code_uses, .. } = &mut *data;
        code_uses.retain(|id, _| temporary_codes.contains_key(id));
        Ok(())
    }

    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.data().events.extend(events.into_iter().map(event_bounds::bounded));
        Ok(())
    }

    async fn events(&self, account: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let account = event_bounds::account_key(account);
        let data = self.data();
        // Latest insert first, then a stable sort by time: newest first, ties newest insert
        // first, also when events of one account arrive out of time order (nodes).
        let mut found: Vec<&AuditEvent> = data.events.iter().rev().filter(|e| e.account == account).collect();
        found.sort_by_key(|e| std::cmp::Reverse(e.at));
        Ok(found.into_iter().take(event_bounds::read_limit(limit)).cloned().collect())
    }

    async fn purge_events(&self, before: UnixTime) -> Result<usize, StoreError> {
        let mut data = self.data();
        let was = data.events.len();
        data.events.retain(|e| e.at >= before);
        Ok(was - data.events.len())
    }

    async fn add_temporary_code(&self, code: NewTemporaryCodeRow, seal: SealNew) -> Result<(i64, usize), StoreError> {
        let mut data = self.data();
        let was = data.temporary_codes.len();
        data.temporary_codes.retain(|_, c| c.info.username != code.username);
        let replaced = was - data.temporary_codes.len();
        data.last_temporary_code += 1;
        let id = data.last_temporary_code;
        let NewTemporaryCodeRow { username, issued_by, issued_at, expires_at, uses } = code;
        let info = TemporaryCodeInfo { id, username, issued_by, issued_at, expires_at, uses_left: uses };
        data.temporary_codes.insert(id, TemporaryCodeRow { info, sealed: seal(id) });
        Ok((id, replaced))
    }

    async fn temporary_codes(&self, username: Option<&str>, now: UnixTime) -> Result<Vec<TemporaryCodeRow>, StoreError> {
        let data = self.data();
        Ok(data.temporary_codes.values().filter(|c| live(c, now) && username.is_none_or(|u| c.info.username == u)).cloned().collect())
    }

    async fn use_temporary_code(&self, id: i64, now: UnixTime, request: &[u8], keep: Option<KeptAnswer>) -> Result<CodeUse, StoreError> {
        let mut data = self.data();
        let Data { temporary_codes, code_uses, answers, .. } = &mut *data;
        let used_by = code_uses.entry(id).or_default();
        match temporary_codes.get_mut(&id) {
            Some(_) if used_by.contains(request) => Ok(CodeUse::ByThisRequest),
            Some(code) if live(code, now) => {
                code.info.uses_left -= 1;
                used_by.insert(request.to_vec());
                if let Some(kept) = keep {
                    answers.insert(kept.key, (kept.expires_at, kept.answer));
                }
                Ok(CodeUse::Used)
            }
            _ => Ok(CodeUse::Spent),
        }
    }

    async fn end_sessions(&self, account: &str) -> Result<usize, StoreError> {
        let mut data = self.data();
        let was = data.sessions.len();
        data.sessions.retain(|_, s| s.account != account);
        Ok(was - data.sessions.len())
    }

    async fn revoke_temporary_codes(&self, username: &str, id: Option<i64>) -> Result<usize, StoreError> {
        let mut data = self.data();
        let was = data.temporary_codes.len();
        data.temporary_codes.retain(|&code_id, c| c.info.username != username || id.is_some_and(|id| id != code_id));
        Ok(was - data.temporary_codes.len())
    }

    async fn reseal_temporary_codes(&self, reseal: Reseal) -> Result<usize, StoreError> {
        let mut data = self.data();
        let codes: Vec<SealedSeed> = data
            .temporary_codes
            .values()
            .map(|code| SealedSeed { id: code.info.id, username: code.info.username.clone(), sealed: code.sealed.clone() })
            .collect();
        // Every new seal first: one that fails leaves every code as it was.
        let resealed = Data::resealed(&codes, &reseal)?;
        let mut count = 0;
        for (id, sealed) in resealed {
            if let (Some(code), Some(sealed)) = (data.temporary_codes.get_mut(&id), sealed) {
                code.sealed = sealed;
                count += 1;
            }
        }
        Ok(count)
    }
}
