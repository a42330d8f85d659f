//! What a store backend keeps, and the contract it keeps it by: plain rows, and token seeds as
//! sealed text it never opens. Sealing, opening and what binds a seal to its row are
//! [`super::SealedStore`]'s, above every backend, so a backend is only storage (SQL, or maps).
//!
//! Every operation is atomic on its own: of two concurrent `use_step`s of one step exactly one
//! wins, a nonce is consumed once, a reservation counts what it checked.

use async_trait::async_trait;

use super::{
    AuditEvent, CodeUse, Factor, Filing, KeptAnswer, LockoutPolicy, LockoutRecord, LockoutState, SessionCaps, SessionKey,
    SmsChallengeRecord, SmsChallengeUse, SmsLimits, SmsReservation, StateUse, StoreError, TemporaryCodeInfo, UnixTime,
};
use crate::otp::TotpParams;

/// How long SMS sends are kept (for the rate limits and the record): `purge` forgets older ones.
pub const SMS_HISTORY: UnixTime = 24 * 3600;

/// Unconfirmed tokens older than this are deleted by `purge` (the portal refuses to confirm them
/// long before, after its `enrollment_timeout`).
pub const UNCONFIRMED_TOKEN_LIFETIME: UnixTime = 24 * 3600;

/// Audit events `purge_events` deletes per statement: a purge deletes in slices, so it never
/// holds the database (SQLite's one writer, which logins wait for) for long — a slice about as
/// long as writing one batch of the trail (BENCHMARKS.md).
pub const EVENTS_PURGED_AT_ONCE: usize = 1_000;

/// A token to keep; its seed comes sealed (see [`SealNew`]).
#[derive(Debug, Clone)]
pub struct NewTokenRow {
    pub username: String,
    pub name: String,
    pub params: TotpParams,
    pub created_at: UnixTime,
    pub confirmed: bool,
}

/// A kept token, its seed as sealed text.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub params: TotpParams,
    /// The seed, sealed: opaque to the backend.
    pub sealed: String,
    pub created_at: UnixTime,
    pub last_step: Option<u64>,
    pub last_used_at: Option<UnixTime>,
    pub confirmed: bool,
}

/// A kept seed and what its seal is bound to (its row and owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSeed {
    pub id: i64,
    pub username: String,
    pub sealed: String,
}

/// How a request that took a temporary code's use is recorded with the code (`used_by`, text):
/// the hex of its key and a comma, so one entry is found only where it starts (64 hex digits
/// then a comma cannot straddle two entries).
pub fn code_use_entry(request: &[u8]) -> String {
    let mut entry: String = request.iter().map(|b| format!("{b:02x}")).collect();
    entry.push(',');
    entry
}

/// A temporary code to keep; its code comes sealed (see [`SealNew`]).
#[derive(Debug, Clone)]
pub struct NewTemporaryCodeRow {
    pub username: String,
    pub issued_by: String,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    pub uses: u32,
}

/// A kept temporary code, sealed.
#[derive(Debug, Clone)]
pub struct TemporaryCodeRow {
    pub info: TemporaryCodeInfo,
    /// The code, sealed: opaque to the backend.
    pub sealed: String,
}

/// A portal session to keep, its data sealed.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub key: SessionKey,
    pub account: String,
    pub ends_at: UnixTime,
    pub expires_at: UnixTime,
    pub sealed: String,
}

/// What `radmfa store copy` moves from one store to another: every token, its seed as sealed
/// text (the same key file opens it in either), and every factor's counters. Used States,
/// kept answers, SMS sends and portal sessions live minutes and are not copied. Nor are the
/// audit trail (it stays in the source, and the log lines have every event) and temporary codes
/// (they live days at most: the help desk issues new ones from the destination).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub tokens: Vec<TokenRow>,
    pub lockouts: Vec<LockoutRecord>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.lockouts.is_empty()
    }

    /// A SHA-256 over every row, in a fixed order: two stores hold the same tokens and counters
    /// exactly when their snapshots' digests are equal.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        let number = |n: Option<i64>| n.map_or_else(|| b"-".to_vec(), |n| n.to_be_bytes().to_vec());
        let mut tokens: Vec<&TokenRow> = self.tokens.iter().collect();
        tokens.sort_by_key(|t| t.id);
        for t in tokens {
            field(b"token");
            field(&t.id.to_be_bytes());
            field(t.username.as_bytes());
            field(t.name.as_bytes());
            field(t.params.algorithm.as_str().as_bytes());
            field(&u64::from(t.params.digits).to_be_bytes());
            field(&t.params.period.to_be_bytes());
            field(t.sealed.as_bytes());
            field(&t.created_at.to_be_bytes());
            field(&number(t.last_step.map(|s| s as i64)));
            field(&number(t.last_used_at));
            field(&[u8::from(t.confirmed)]);
        }
        let mut lockouts: Vec<&LockoutRecord> = self.lockouts.iter().collect();
        lockouts.sort_by(|a, b| (a.factor.as_str(), &a.username).cmp(&(b.factor.as_str(), &b.username)));
        for l in lockouts {
            field(b"lockout");
            field(l.factor.as_str().as_bytes());
            field(l.username.as_bytes());
            field(&u64::from(l.failures).to_be_bytes());
            field(&number(l.locked_until));
            field(&u64::from(l.lock_count).to_be_bytes());
            field(&number(l.last_failure_at));
            field(&l.seq.to_be_bytes());
        }
        hash.finalize().into()
    }

    /// Whether a store that holds `current`, and recorded `copied` (the digest of the last
    /// snapshot copied into it), may take a copy: only an empty one, or one nothing has changed
    /// since that copy. A destination servers have used since (codes used, tokens removed,
    /// locks counted) would be rolled back by a copy.
    pub fn may_replace(current: &Snapshot, copied: Option<&[u8]>) -> bool {
        match copied {
            // Emptied since (tokens removed, locks lifted) is changed too.
            Some(copied) => copied == current.digest().as_slice(),
            None => current.is_empty(),
        }
    }

    pub fn diverged() -> StoreError {
        StoreError::database(
            "the destination has changed since the last copy into it (codes used, tokens added or removed, or locks counted \
             there: servers use it) and copying again would roll that back. Nothing was copied. Copy only into an empty \
             store, or into one no server has used since the last copy",
        )
    }
}

/// Seals a new token's seed for the row id the backend gave it: called once, inside the
/// operation that keeps the row, so no row is ever kept without its seed.
pub type SealNew = Box<dyn FnOnce(i64) -> String + Send>;

/// A new token as [`SortNew`] left it: kept, with its seal for the id it gets; or not, and why.
pub enum Sorted {
    Keep(NewTokenRow, SealNew),
    Skip(Filing),
}

/// Decides, inside the operation that files a batch of new tokens, which to keep, given the
/// kept tokens of their owners (see [`super::filing`]): one [`Sorted`] per new token, in order.
pub type SortNew = Box<dyn FnOnce(Vec<TokenRow>) -> Result<Vec<Sorted>, StoreError> + Send>;

/// Seals a kept seed anew (for another owner, or with a newer key); `None` leaves it as it is.
/// Called inside the operation that writes the result, for each seed it covers.
pub type Reseal = Box<dyn Fn(&SealedSeed) -> Result<Option<String>, StoreError> + Send>;

#[async_trait]
pub trait Backend: Send + Sync {
    /// Keeps a token; `seal` gives its sealed seed for the id it got. Returns the id.
    async fn add_token(&self, token: NewTokenRow, seal: SealNew) -> Result<i64, StoreError>;
    /// Files a batch of new tokens in one step (see [`super::Store::add_tokens`]): reads the
    /// kept tokens of `owners`, held so that no other filing or confirmation of theirs, on any
    /// node, lands between that read and the writes; keeps what `sort` says, in order. Returns
    /// what became of each.
    async fn add_tokens(&self, owners: Vec<String>, sort: SortNew) -> Result<Vec<Filing>, StoreError>;
    /// Every user's tokens or one's, oldest (lowest id) first.
    async fn tokens(&self, username: Option<&str>) -> Result<Vec<TokenRow>, StoreError>;
    /// Files every token of `from` under `to`, with the seed `reseal` gives (the seal names the
    /// owner), in one step. Returns how many moved.
    async fn move_tokens(&self, from: &str, to: &str, reseal: Reseal) -> Result<usize, StoreError>;
    /// Replaces every seed `reseal` gives a new seal for, in one step. Returns how many.
    async fn reseal_tokens(&self, reseal: Reseal) -> Result<usize, StoreError>;
    async fn remove_token(&self, username: &str, id: i64) -> Result<bool, StoreError>;
    /// See [`super::Store::abandon_token`].
    async fn abandon_token(&self, username: &str, id: i64) -> Result<bool, StoreError>;
    /// See [`super::Store::confirm_token`].
    async fn confirm_token(&self, username: &str, id: i64, step: u64, max_confirmed: usize) -> Result<bool, StoreError>;
    /// See [`super::Store::use_step`].
    async fn use_step(&self, token_id: i64, step: u64, now: UnixTime, keep: Option<KeptAnswer>) -> Result<bool, StoreError>;

    async fn locked_until(&self, username: &str, factor: Factor, now: UnixTime) -> Result<Option<UnixTime>, StoreError>;
    /// See [`super::Store::lockout_state`].
    async fn lockout_state(&self, username: &str, factor: Factor, now: UnixTime, policy: LockoutPolicy)
    -> Result<LockoutState, StoreError>;
    /// See [`super::Store::record_failure`].
    async fn record_failure(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<Option<UnixTime>, StoreError>;
    /// See [`super::Store::record_success`].
    async fn record_success(&self, username: &str, factor: Factor, seen: u64) -> Result<(), StoreError>;
    async fn unlock(&self, username: &str) -> Result<bool, StoreError>;

    async fn reserve_sms(&self, username: &str, now: UnixTime, limits: SmsLimits) -> Result<SmsReservation, StoreError>;
    /// See [`super::Store::reserve_sms_challenge`].
    async fn reserve_sms_challenge(
        &self,
        username: &str,
        now: UnixTime,
        limits: SmsLimits,
        challenge: SmsChallengeRecord,
    ) -> Result<SmsChallengeUse, StoreError>;

    /// See [`super::Store::consume_state`].
    async fn consume_state(&self, nonce: &[u8], expires_at: UnixTime, request: &[u8]) -> Result<StateUse, StoreError>;
    async fn keep_challenge_context(&self, nonce: &[u8], expires_at: UnixTime, context: Vec<u8>) -> Result<(), StoreError>;
    /// See [`super::Store::challenge_context`].
    async fn challenge_context(&self, nonce: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// See [`super::Store::keep_answer`].
    async fn keep_answer(&self, answer: KeptAnswer) -> Result<(), StoreError>;
    /// See [`super::Store::kept_answer`].
    async fn kept_answer(&self, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError>;

    /// See [`super::Store::create_session`].
    async fn create_session(&self, session: SessionRow, caps: SessionCaps) -> Result<(), StoreError>;
    /// See [`super::Store::session`]: the version and the sealed data.
    async fn session(&self, key: &SessionKey, now: UnixTime, expires_at: UnixTime) -> Result<Option<(i64, String)>, StoreError>;
    /// See [`super::Store::update_session`].
    async fn update_session(&self, key: &SessionKey, version: i64, sealed: String) -> Result<bool, StoreError>;
    /// See [`super::Store::rotate_session`].
    async fn rotate_session(&self, old: &SessionKey, version: i64, new: SessionRow, caps: SessionCaps) -> Result<bool, StoreError>;
    async fn remove_session(&self, key: &SessionKey) -> Result<(), StoreError>;
    async fn session_count(&self) -> Result<usize, StoreError>;

    /// See [`super::Store::export`].
    async fn export(&self) -> Result<Snapshot, StoreError>;
    /// See [`super::Store::import`]; [`Snapshot::may_replace`] decides what refuses it.
    async fn import(&self, snapshot: Snapshot) -> Result<(), StoreError>;
    /// See [`super::Store::identity`].
    async fn identity(&self) -> Result<String, StoreError>;

    /// See [`super::Store::record_events`].
    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError>;
    /// See [`super::Store::events`].
    async fn events(&self, account: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    /// See [`super::Store::purge_events`].
    async fn purge_events(&self, before: UnixTime) -> Result<usize, StoreError>;

    /// Keeps a temporary code in place of the account's others, in one step; `seal` gives its
    /// sealed code for the id it got. Returns the id and how many it replaced.
    async fn add_temporary_code(&self, code: NewTemporaryCodeRow, seal: SealNew) -> Result<(i64, usize), StoreError>;
    /// Live temporary codes (unexpired at `now`, uses left), every user's or one's, oldest first.
    async fn temporary_codes(&self, username: Option<&str>, now: UnixTime) -> Result<Vec<TemporaryCodeRow>, StoreError>;
    /// See [`super::Store::use_temporary_code`].
    async fn use_temporary_code(&self, id: i64, now: UnixTime, request: &[u8], keep: Option<KeptAnswer>) -> Result<CodeUse, StoreError>;
    /// See [`super::Store::end_sessions`].
    async fn end_sessions(&self, account: &str) -> Result<usize, StoreError>;
    /// See [`super::Store::revoke_temporary_codes`].
    async fn revoke_temporary_codes(&self, username: &str, id: Option<i64>) -> Result<usize, StoreError>;
    /// Replaces every temporary code's seal `reseal` gives a new one for (key rotation; the
    /// [`SealedSeed`] passed names the code's row and owner). Returns how many.
    async fn reseal_temporary_codes(&self, reseal: Reseal) -> Result<usize, StoreError>;

    /// Forgets what has expired: used States, contexts, kept answers and portal sessions past
    /// their expiry, SMS sends older than [`SMS_HISTORY`], locks that ran out, unconfirmed
    /// tokens older than [`UNCONFIRMED_TOKEN_LIFETIME`], temporary codes expired or used up.
    /// (Audit events have their own retention: [`Backend::purge_events`].)
    async fn purge(&self, now: UnixTime) -> Result<(), StoreError>;

    /// Makes what was written safe in the backend's own files (SQLite folds its write-ahead log
    /// into the database file, so a copy of that file alone is a backup). By default nothing.
    async fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Where the data lives gone wrong under a running server (SQLite: the database file deleted
    /// or replaced), in words for the log. By default none.
    fn storage_problem(&self) -> Option<String> {
        None
    }

    /// See [`super::Store::available`].
    fn available(&self) -> bool {
        true
    }

    /// See [`super::Store::ping`].
    async fn ping(&self, _now: UnixTime) -> Result<(), StoreError> {
        Ok(())
    }
}
