//! Decorators that time every call to a directory, a store or an SMS gateway into
//! [`Metrics`], and otherwise pass it through unchanged: the subsystems themselves stay unaware
//! of metrics. Every trait method is forwarded explicitly, those with default bodies too, so a
//! wrapped backend behaves exactly as the bare one.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::Metrics;
use crate::directory::{Account, AccountStatus, Directory, DirectoryError, DirectoryStatus, LoginName, PasswordCheck};
use crate::keys::KeyRing;
use crate::secret::Secret;
use crate::sms::{Gateway, SmsError};
use crate::store::{
    AuditEvent, CodeUse, Factor, Filing, KeptAnswer, LockoutPolicy, LockoutState, NewSession, NewTemporaryCode, NewToken, SessionCaps,
    SessionKey, SmsChallengeRecord, SmsChallengeUse, SmsLimits, SmsReservation, Snapshot, StateUse, Store, StoreError, StoredSession,
    TemporaryCode, TemporaryCodeInfo, Token, TokenInfo, UnixTime,
};

/// Runs `call`, recording how long it took and whether it succeeded.
async fn timed<T, E>(record: impl FnOnce(bool, std::time::Duration), call: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    let started = Instant::now();
    let result = call.await;
    record(result.is_ok(), started.elapsed());
    result
}

pub struct TimedDirectory {
    inner: Arc<dyn Directory>,
    metrics: Arc<Metrics>,
}

impl TimedDirectory {
    pub fn wrap(inner: Arc<dyn Directory>, metrics: Arc<Metrics>) -> Arc<dyn Directory> {
        Arc::new(Self { inner, metrics })
    }
}

#[async_trait]
impl Directory for TimedDirectory {
    async fn find(&self, login: &LoginName) -> Result<Option<Account>, DirectoryError> {
        timed(|ok, took| self.metrics.directory_operation("find", ok, took), self.inner.find(login)).await
    }

    async fn check_password(&self, account: &Account, password: &[u8], with_groups: bool) -> Result<PasswordCheck, DirectoryError> {
        timed(
            |ok, took| self.metrics.directory_operation("check_password", ok, took),
            self.inner.check_password(account, password, with_groups),
        )
        .await
    }

    async fn groups(&self, account: &Account) -> Result<Vec<String>, DirectoryError> {
        timed(|ok, took| self.metrics.directory_operation("groups", ok, took), self.inner.groups(account)).await
    }

    async fn search(&self, text: &str, limit: usize) -> Result<Vec<Account>, DirectoryError> {
        timed(|ok, took| self.metrics.directory_operation("search", ok, took), self.inner.search(text, limit)).await
    }

    async fn member_of(&self, account: &Account, groups: &[String]) -> Result<Vec<String>, DirectoryError> {
        timed(|ok, took| self.metrics.directory_operation("member_of", ok, took), self.inner.member_of(account, groups)).await
    }

    async fn account_status(&self, account: &Account) -> Result<AccountStatus, DirectoryError> {
        timed(|ok, took| self.metrics.directory_operation("account_status", ok, took), self.inner.account_status(account)).await
    }

    async fn warm_up(&self) {
        self.inner.warm_up().await;
    }

    fn log_totals(&self) {
        self.inner.log_totals();
    }

    fn status(&self) -> Option<DirectoryStatus> {
        self.inner.status()
    }

    async fn spend_like_a_check(&self, password: &[u8]) {
        self.inner.spend_like_a_check(password).await;
    }
}

pub struct TimedGateway {
    inner: Arc<dyn Gateway>,
    metrics: Arc<Metrics>,
}

impl TimedGateway {
    pub fn wrap(inner: Arc<dyn Gateway>, metrics: Arc<Metrics>) -> Arc<dyn Gateway> {
        Arc::new(Self { inner, metrics })
    }
}

#[async_trait]
impl Gateway for TimedGateway {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn send_once(&self, to: &str, message: &Secret<String>) -> Result<(), SmsError> {
        let kind = self.inner.kind();
        timed(|ok, took| self.metrics.sms_attempt(kind, ok, took), self.inner.send_once(to, message)).await
    }
}

pub struct TimedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    pub fn wrap(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Arc<dyn Store> {
        Arc::new(Self { inner, metrics })
    }
}

/// Forwards `$method` to the inner store, timed as the operation of the same name.
macro_rules! forward {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        timed(|ok, took| $self.metrics.store_operation(stringify!($method), ok, took), $self.inner.$method($($arg),*)).await
    };
}

#[async_trait]
impl Store for TimedStore {
    async fn add_token(&self, token: NewToken) -> Result<i64, StoreError> {
        forward!(self.add_token(token))
    }
    async fn add_tokens(&self, tokens: Vec<NewToken>, max_confirmed: usize) -> Result<Vec<Filing>, StoreError> {
        forward!(self.add_tokens(tokens, max_confirmed))
    }
    async fn sort_tokens(&self, tokens: &[NewToken], max_confirmed: usize) -> Result<Vec<Filing>, StoreError> {
        forward!(self.sort_tokens(tokens, max_confirmed))
    }
    async fn tokens(&self, username: &str) -> Result<Vec<Token>, StoreError> {
        forward!(self.tokens(username))
    }
    async fn list_tokens(&self, username: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        forward!(self.list_tokens(username))
    }
    async fn move_tokens(&self, from: &str, to: &str) -> Result<usize, StoreError> {
        forward!(self.move_tokens(from, to))
    }
    async fn remove_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        forward!(self.remove_token(username, id))
    }
    async fn abandon_token(&self, username: &str, id: i64) -> Result<bool, StoreError> {
        forward!(self.abandon_token(username, id))
    }
    async fn confirm_token(&self, username: &str, id: i64, step: u64, max_confirmed: usize) -> Result<bool, StoreError> {
        forward!(self.confirm_token(username, id, step, max_confirmed))
    }
    async fn use_step(&self, token_id: i64, step: u64, now: UnixTime, keep: Option<KeptAnswer>) -> Result<bool, StoreError> {
        forward!(self.use_step(token_id, step, now, keep))
    }
    async fn locked_until(&self, username: &str, factor: Factor, now: UnixTime) -> Result<Option<UnixTime>, StoreError> {
        forward!(self.locked_until(username, factor, now))
    }
    async fn lockout_state(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<LockoutState, StoreError> {
        forward!(self.lockout_state(username, factor, now, policy))
    }
    async fn record_failure(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<Option<UnixTime>, StoreError> {
        forward!(self.record_failure(username, factor, now, policy))
    }
    async fn record_success(&self, username: &str, factor: Factor, seen: u64) -> Result<(), StoreError> {
        forward!(self.record_success(username, factor, seen))
    }
    async fn unlock(&self, username: &str) -> Result<bool, StoreError> {
        forward!(self.unlock(username))
    }
    async fn reserve_sms(&self, username: &str, now: UnixTime, limits: SmsLimits) -> Result<SmsReservation, StoreError> {
        forward!(self.reserve_sms(username, now, limits))
    }
    async fn reserve_sms_challenge(
        &self,
        username: &str,
        now: UnixTime,
        limits: SmsLimits,
        challenge: SmsChallengeRecord,
    ) -> Result<SmsChallengeUse, StoreError> {
        forward!(self.reserve_sms_challenge(username, now, limits, challenge))
    }
    async fn consume_state(&self, nonce: &[u8], expires_at: UnixTime, request: &[u8]) -> Result<StateUse, StoreError> {
        forward!(self.consume_state(nonce, expires_at, request))
    }
    async fn keep_challenge_context(&self, nonce: &[u8], expires_at: UnixTime, context: Vec<u8>) -> Result<(), StoreError> {
        forward!(self.keep_challenge_context(nonce, expires_at, context))
    }
    async fn challenge_context(&self, nonce: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        forward!(self.challenge_context(nonce))
    }
    async fn keep_answer(&self, answer: KeptAnswer) -> Result<(), StoreError> {
        forward!(self.keep_answer(answer))
    }
    async fn kept_answer(&self, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError> {
        forward!(self.kept_answer(key, now))
    }
    async fn create_session(&self, session: NewSession, caps: SessionCaps) -> Result<(), StoreError> {
        forward!(self.create_session(session, caps))
    }
    async fn session(&self, key: &SessionKey, now: UnixTime, expires_at: UnixTime) -> Result<Option<StoredSession>, StoreError> {
        forward!(self.session(key, now, expires_at))
    }
    async fn update_session(&self, key: &SessionKey, version: i64, data: Secret<Vec<u8>>) -> Result<bool, StoreError> {
        forward!(self.update_session(key, version, data))
    }
    async fn rotate_session(&self, old: &SessionKey, version: i64, new: NewSession, caps: SessionCaps) -> Result<bool, StoreError> {
        forward!(self.rotate_session(old, version, new, caps))
    }
    async fn remove_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        forward!(self.remove_session(key))
    }
    async fn session_count(&self) -> Result<usize, StoreError> {
        forward!(self.session_count())
    }
    async fn purge(&self, now: UnixTime) -> Result<(), StoreError> {
        forward!(self.purge(now))
    }

    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        forward!(self.record_events(events))
    }

    async fn events(&self, account: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        forward!(self.events(account, limit))
    }

    async fn purge_events(&self, before: UnixTime) -> Result<usize, StoreError> {
        forward!(self.purge_events(before))
    }

    async fn add_temporary_code(&self, code: NewTemporaryCode) -> Result<(i64, usize), StoreError> {
        forward!(self.add_temporary_code(code))
    }

    async fn temporary_codes(&self, username: &str, now: UnixTime) -> Result<Vec<TemporaryCode>, StoreError> {
        forward!(self.temporary_codes(username, now))
    }

    async fn list_temporary_codes(&self, username: Option<&str>, now: UnixTime) -> Result<Vec<TemporaryCodeInfo>, StoreError> {
        forward!(self.list_temporary_codes(username, now))
    }

    async fn use_temporary_code(&self, id: i64, now: UnixTime, request: &[u8], keep: Option<KeptAnswer>) -> Result<CodeUse, StoreError> {
        forward!(self.use_temporary_code(id, now, request, keep))
    }

    async fn end_sessions(&self, account: &str) -> Result<usize, StoreError> {
        forward!(self.end_sessions(account))
    }

    async fn revoke_temporary_codes(&self, username: &str, id: Option<i64>) -> Result<usize, StoreError> {
        forward!(self.revoke_temporary_codes(username, id))
    }
    async fn reseal_all(&self, ring: Arc<KeyRing>) -> Result<usize, StoreError> {
        forward!(self.reseal_all(ring))
    }
    async fn export(&self) -> Result<Snapshot, StoreError> {
        forward!(self.export())
    }
    async fn import(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        forward!(self.import(snapshot))
    }
    async fn identity(&self) -> Result<String, StoreError> {
        forward!(self.identity())
    }
    async fn checkpoint(&self) -> Result<(), StoreError> {
        forward!(self.checkpoint())
    }
    fn storage_problem(&self) -> Option<String> {
        self.inner.storage_problem()
    }
    fn available(&self) -> bool {
        self.inner.available()
    }
    async fn ping(&self, now: UnixTime) -> Result<(), StoreError> {
        forward!(self.ping(now))
    }
}
