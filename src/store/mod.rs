//! What must be remembered and shared between requests (and, later, between servers): tokens
//! with sealed seeds, the last used time step per token, failure counters and lockouts, SMS
//! sends for rate limits, the nonces of used challenge States, and the portal's sessions.
//!
//! `auth`, the portal and the CLI see only the [`Store`] trait, with seeds opened. Beneath it,
//! [`SealedStore`] seals and opens seeds (binding each to its row and owner) over a
//! [`Backend`] that keeps plain rows and sealed bytes it cannot read: [`sqlite`] is the embedded
//! default (one node), [`postgres`] is shared by any number of nodes, [`memory`] keeps
//! everything in the process (tests, and a check that the seam holds).

pub mod backend;
pub mod event_bounds;
pub mod filing;
pub mod memory;
pub mod postgres;
pub mod sealed;
pub mod settings;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::keys::KeyRing;
use crate::otp::TotpParams;
use crate::secret::Secret;

pub use backend::{Backend, Snapshot};
pub use filing::Filing;
pub use sealed::SealedStore;

pub use crate::clock::UnixTime;

/// A token to create. The store seals its secret.
#[derive(Debug)]
pub struct NewToken {
    pub username: String,
    /// The name the user gave it ("My phone").
    pub name: String,
    pub params: TotpParams,
    pub secret: Secret<Vec<u8>>,
    pub confirmed: bool,
    /// When the request that makes it arrived (an unconfirmed token is purged a while after).
    pub created_at: UnixTime,
}

/// A stored token as the admin listing shows it: no secret, so it needs no key to list.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    pub confirmed: bool,
    /// The id of the key its seed is sealed with.
    pub sealed_with: String,
}

/// A stored token, its secret opened.
#[derive(Debug, Clone)]
pub struct Token {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub params: TotpParams,
    pub secret: Secret<Vec<u8>>,
    pub created_at: UnixTime,
    /// The last time step accepted: codes of this step or earlier are replays.
    pub last_step: Option<u64>,
    pub last_used_at: Option<UnixTime>,
    pub confirmed: bool,
}

/// One row of the audit trail: a RADIUS decision, a portal step, or a helpdesk or admin action.
/// Kept in the store beside the log lines (which stay as they are), so the help desk sees a
/// user's last events on any node; forgotten after `[audit] retention`. Never holds a secret:
/// no password, code or seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: UnixTime,
    /// The account the event is about: its id once the name resolved, else the name as given.
    pub account: String,
    /// What happened: `radius`, a portal step (`portal_signin_password`, ...), or an action
    /// (`unlock`, `remove_token`, `issue_temporary_code`, `revoke_temporary_code`).
    pub action: String,
    /// The NAS client's name, `portal`, `helpdesk` or `cli`.
    pub client: String,
    /// Where it came from: the NAS's address or the calling station, the browser's address.
    pub from: Option<String>,
    /// `accept`, `reject`, `challenge`, `none` (unanswered); `ok` or `failed` for actions.
    pub result: String,
    /// Why (the audit reasons of the log lines: `wrong_code`, `second_factor_locked`, ...).
    pub reason: String,
    /// Who did it, for actions: the helpdesk member's account, or `cli` and the local user.
    pub actor: Option<String>,
    /// What else an admin needs (a token's name, a temporary code's validity), never a secret.
    pub detail: Option<String>,
}

/// A temporary code to keep (issued by the help desk to a user who lost their phone). The
/// store seals the code, bound to its row and owner, like seeds.
#[derive(Debug)]
pub struct NewTemporaryCode {
    pub username: String,
    pub code: Secret<String>,
    /// Who issued it (for the listing; the audit trail has the action).
    pub issued_by: String,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    /// How many logins it is good for.
    pub uses: u32,
}

/// A live temporary code as listings show it: no code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporaryCodeInfo {
    pub id: i64,
    pub username: String,
    pub issued_by: String,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    pub uses_left: u32,
}

/// What became of a temporary code's use (see [`Store::use_temporary_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeUse {
    /// A use taken, by this request.
    Used,
    /// This request took one before: its copy takes none.
    ByThisRequest,
    /// Expired, revoked or used up.
    Spent,
}

/// A live temporary code, opened: what a login's code is compared with.
#[derive(Debug, Clone)]
pub struct TemporaryCode {
    pub info: TemporaryCodeInfo,
    pub code: Secret<String>,
}

/// An answer kept for the NAS's retries of one request: under the request's key, until it
/// expires (see [`Store::keep_answer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    pub key: Vec<u8>,
    pub expires_at: UnixTime,
    pub answer: Vec<u8>,
}

/// A portal session's key: the SHA-256 of its cookie's value, so the database alone never
/// yields a cookie that works.
pub type SessionKey = [u8; 32];

/// A portal session to keep. The store seals its data (it names the user, their phone, and
/// during an enrollment the new token's seed).
#[derive(Debug)]
pub struct NewSession {
    pub key: SessionKey,
    /// Whose session it is: each account keeps at most [`SessionCaps::per_account`].
    pub account: String,
    /// When it ends however busy it is (the absolute timeout).
    pub ends_at: UnixTime,
    /// When it ends unless used before (the idle timeout); never after `ends_at`.
    pub expires_at: UnixTime,
    pub data: Secret<Vec<u8>>,
}

/// How many portal sessions are kept: per account (the oldest goes first) and in all (those
/// nearest to expiry go first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCaps {
    pub per_account: usize,
    pub total: usize,
}

/// A live portal session, its data opened.
#[derive(Debug)]
pub struct StoredSession {
    /// Changes with every update: an update made from an older read is refused.
    pub version: i64,
    pub data: Secret<Vec<u8>>,
}

/// A factor's failures for one account as kept, for copying a store (`radmfa store copy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutRecord {
    pub username: String,
    pub factor: Factor,
    pub failures: u32,
    pub locked_until: Option<UnixTime>,
    pub lock_count: u32,
    pub last_failure_at: Option<UnixTime>,
    pub seq: u64,
}

/// Which factor a failure counter and lock belong to. Each has its own, so a user who knows
/// the password is not locked out by someone guessing codes, nor the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Factor {
    /// Wrong directory passwords: counted before AD's own lockout counts them, so a password
    /// spray through radmfa stops here instead of locking the users' AD accounts.
    Password,
    /// Wrong TOTP or SMS codes.
    Code,
}

impl Factor {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::Code => "code",
        }
    }
}

/// After how many failures a factor locks, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    /// The first lock; each further lock without a success in between doubles it...
    pub duration: Duration,
    /// ...up to this.
    pub max_duration: Duration,
    /// Failures (and doublings) older than this are forgotten, as AD's "reset account lockout
    /// counter after"; `None` keeps them until a success.
    pub forget_after: Option<Duration>,
}

impl LockoutPolicy {
    /// How long the `n`th consecutive lock (0-based) lasts.
    pub fn lock_duration(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.min(20));
        self.duration.saturating_mul(factor).min(self.max_duration)
    }
}

/// What the store knows of a factor's failures for an account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockoutState {
    /// Locked until then.
    pub locked_until: Option<UnixTime>,
    /// Failures that count now (those older than the policy's `forget_after` do not).
    pub failures: u32,
    /// Numbers the failures: a right answer clears them only if none came since its try began.
    pub seq: u64,
}

/// Limits on SMS sends, against cost and SMS pumping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsLimits {
    pub per_user: u32,
    pub per_user_window: Duration,
    pub global_per_minute: u32,
}

/// An SMS challenge to keep with its send (see [`Store::reserve_sms_challenge`]).
#[derive(Debug, Clone)]
pub struct SmsChallengeRecord {
    /// The challenge State's nonce and expiry, and what its code step needs (sealed).
    pub nonce: Vec<u8>,
    pub expires_at: UnixTime,
    pub context: Vec<u8>,
    /// The Challenge, kept for the NAS's retries of the request (none where retries are
    /// answered by the node's own cache).
    pub answer: Option<KeptAnswer>,
}

/// What [`Store::reserve_sms_challenge`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsChallengeUse {
    /// Counted and kept: send the code.
    Reserved,
    UserLimit,
    GlobalLimit,
    /// The request was challenged before: its kept answer, and no SMS.
    AnsweredBefore(Vec<u8>),
}

impl SmsReservation {
    /// What an SMS challenge says when the send is over a limit; `None` when it is allowed.
    pub fn refused(self) -> Option<SmsChallengeUse> {
        match self {
            Self::Allowed => None,
            Self::UserLimit => Some(SmsChallengeUse::UserLimit),
            Self::GlobalLimit => Some(SmsChallengeUse::GlobalLimit),
        }
    }
}

/// What became of a challenge State's use (see [`Store::consume_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateUse {
    /// Used now, for the first time.
    First,
    /// Used before by this very request (the NAS's retry of it, after its answer was lost or
    /// never came): its outcome is not known, so it is decided again.
    SameRequest,
    /// Used before by another request: a replay.
    Used,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsReservation {
    /// Recorded as sent; go ahead.
    Allowed,
    UserLimit,
    GlobalLimit,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (disk, corruption, locked beyond the busy timeout).
    #[error("database: {message}")]
    Database {
        message: String,
        /// The backend's own error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The database cannot be written by this process now (read-only file or file system,
    /// permissions, disk full): retrying later may succeed.
    #[error("the database is not writable: {0}")]
    NotWritable(String),
    /// The database cannot be reached, or cannot serve now (PostgreSQL down, connections lost,
    /// no answer within the timeout): the request is left unanswered and tried again later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A sealed seed does not open with the keys in the key file.
    #[error("token {0}: its seed does not open with the key file (wrong or missing key?)")]
    Sealed(i64),
    /// The store's worker has stopped.
    #[error("the store is shut down")]
    Closed,
}

impl StoreError {
    /// A database failure told in words, with no error of the backend's beneath it.
    pub fn database(message: impl Into<String>) -> Self {
        Self::Database { message: message.into(), source: None }
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    async fn add_token(&self, token: NewToken) -> Result<i64, StoreError>;
    /// Files tokens made elsewhere (an import), in one step: a token whose owner has one with
    /// the same seed already is not kept again, nor a confirmed one that would take its owner
    /// past `max_confirmed` usable tokens (see [`filing`]); the others are kept, and count for
    /// the tokens after them. What became of each, in order.
    async fn add_tokens(&self, tokens: Vec<NewToken>, max_confirmed: usize) -> Result<Vec<Filing>, StoreError>;
    /// What [`Store::add_tokens`] would do with `tokens` now, writing nothing: an import's
    /// check before it writes, and its dry run.
    async fn sort_tokens(&self, tokens: &[NewToken], max_confirmed: usize) -> Result<Vec<Filing>, StoreError>;
    /// The user's tokens, oldest first.
    async fn tokens(&self, username: &str) -> Result<Vec<Token>, StoreError>;
    /// Tokens without their secrets, every user's or one's (admin listing: needs no key).
    async fn list_tokens(&self, username: Option<&str>) -> Result<Vec<TokenInfo>, StoreError>;
    /// Files the tokens kept under `from` (a spelling of the account that older versions
    /// stored) under the account id `to`, resealed for their new owner. Returns how many moved.
    async fn move_tokens(&self, from: &str, to: &str) -> Result<usize, StoreError>;
    async fn remove_token(&self, username: &str, id: i64) -> Result<bool, StoreError>;
    /// Removes the user's token only if it is still unconfirmed (an enrollment given up): a
    /// token confirmed meanwhile, in another tab, stays. True if it removed one.
    async fn abandon_token(&self, username: &str, id: i64) -> Result<bool, StoreError>;
    /// Makes an unconfirmed token usable, recording the confirming code's time step so that code
    /// cannot log in afterwards — only while the user has fewer than `max_confirmed` usable
    /// tokens, checked and done in one step (enrollments finished at once in several sessions
    /// cannot pass the limit together). False if there is no such unconfirmed token of this
    /// user, or the user has as many as allowed.
    async fn confirm_token(&self, username: &str, id: i64, step: u64, max_confirmed: usize) -> Result<bool, StoreError>;
    /// Accepts time step `step` for the token only if it is later than the last accepted one,
    /// atomically: of two requests with the same code, one wins. The winner's `keep` (the
    /// Accept it will send) is kept with it, in the same step: a node that dies after using
    /// the code leaves the answer for the NAS's retry (see [`Store::keep_answer`]).
    async fn use_step(&self, token_id: i64, step: u64, now: UnixTime, keep: Option<KeptAnswer>) -> Result<bool, StoreError>;

    /// Until when the user's `factor` is locked, if it is.
    async fn locked_until(&self, username: &str, factor: Factor, now: UnixTime) -> Result<Option<UnixTime>, StoreError>;
    /// The factor's failures and lock for the account.
    async fn lockout_state(&self, username: &str, factor: Factor, now: UnixTime, policy: LockoutPolicy)
    -> Result<LockoutState, StoreError>;
    /// Counts a wrong answer; `Some(until)` when it locked the factor.
    async fn record_failure(
        &self,
        username: &str,
        factor: Factor,
        now: UnixTime,
        policy: LockoutPolicy,
    ) -> Result<Option<UnixTime>, StoreError>;
    /// A right answer clears the failures and the doubling — only if no failure was counted
    /// since `seen` (the [`LockoutState::seq`] read when its try began).
    async fn record_success(&self, username: &str, factor: Factor, seen: u64) -> Result<(), StoreError>;
    /// Clears both factors' locks and counts (admin). True if there was anything to clear.
    async fn unlock(&self, username: &str) -> Result<bool, StoreError>;

    /// Checks the limits and, if allowed, records the send, in one step.
    async fn reserve_sms(&self, username: &str, now: UnixTime, limits: SmsLimits) -> Result<SmsReservation, StoreError>;

    /// An SMS challenge for a RADIUS request, decided in one step: if the request was challenged
    /// before (its answer is kept, unexpired: the NAS's retry), that answer and no SMS;
    /// otherwise the limits checked and, if allowed, the send counted and the challenge kept
    /// (its context, and its answer for the request's retries). Of two nodes deciding retries
    /// of one request at once, one reserves and the other gets its answer.
    async fn reserve_sms_challenge(
        &self,
        username: &str,
        now: UnixTime,
        limits: SmsLimits,
        challenge: SmsChallengeRecord,
    ) -> Result<SmsChallengeUse, StoreError>;

    /// Marks a challenge State's nonce used, by `request` (the key of the RADIUS request that
    /// brought it): see [`StateUse`].
    async fn consume_state(&self, nonce: &[u8], expires_at: UnixTime, request: &[u8]) -> Result<StateUse, StoreError>;

    /// Keeps what a challenge's code step needs (sealed by the caller) under its State's nonce,
    /// until the State expires: any node sharing the store resumes the challenge without asking
    /// the directory.
    async fn keep_challenge_context(&self, nonce: &[u8], expires_at: UnixTime, context: Vec<u8>) -> Result<(), StoreError>;

    /// What [`Store::keep_challenge_context`] kept under a nonce, until the State expires (the
    /// State's single use is [`Store::consume_state`]'s; a retry of the request that used it
    /// finds the context still there).
    async fn challenge_context(&self, nonce: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Keeps the answer given to a request that used up a code, under the request's key (its
    /// client, Request Authenticator and user), until `expires_at`: the NAS's retry of that
    /// request, sent to any node after the answer was lost, gets the same answer instead of
    /// "code already used".
    async fn keep_answer(&self, answer: KeptAnswer) -> Result<(), StoreError>;

    /// What [`Store::keep_answer`] kept under `key`, unless it expired before `now`.
    async fn kept_answer(&self, key: &[u8], now: UnixTime) -> Result<Option<Vec<u8>>, StoreError>;

    /// Keeps a new portal session, dropping the account's oldest beyond `caps.per_account` and
    /// the sessions nearest to expiry beyond `caps.total`.
    async fn create_session(&self, session: NewSession, caps: SessionCaps) -> Result<(), StoreError>;

    /// The portal session under `key` if it is live at `now`, its idle expiry moved on to
    /// `expires_at` (never past its end), in one step.
    async fn session(&self, key: &SessionKey, now: UnixTime, expires_at: UnixTime) -> Result<Option<StoredSession>, StoreError>;

    /// Replaces a session's data, only if it is still at `version` (no other request changed
    /// it since it was read, on any node). False when it changed or is gone.
    async fn update_session(&self, key: &SessionKey, version: i64, data: Secret<Vec<u8>>) -> Result<bool, StoreError>;

    /// Ends the session under `old` and keeps `new` in its place, in one step, only if `old` is
    /// still at `version`. False when it changed or is gone (then nothing is kept).
    async fn rotate_session(&self, old: &SessionKey, version: i64, new: NewSession, caps: SessionCaps) -> Result<bool, StoreError>;

    async fn remove_session(&self, key: &SessionKey) -> Result<(), StoreError>;

    /// How many portal sessions are kept (live, or expired and not yet purged).
    async fn session_count(&self) -> Result<usize, StoreError>;

    /// Keeps audit events (the trail's writer sends them in batches), in one step.
    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError>;
    /// The account's last `limit` events, newest first.
    async fn events(&self, account: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    /// Forgets events older than `before` (`[audit] retention`). Returns how many.
    async fn purge_events(&self, before: UnixTime) -> Result<usize, StoreError>;

    /// Keeps a temporary code, sealed, in place of any the account had, in one step (two
    /// issued at once leave one). Returns its id and how many it replaced.
    async fn add_temporary_code(&self, code: NewTemporaryCode) -> Result<(i64, usize), StoreError>;
    /// The account's live temporary codes (unexpired at `now`, uses left), opened, oldest first.
    async fn temporary_codes(&self, username: &str, now: UnixTime) -> Result<Vec<TemporaryCode>, StoreError>;
    /// Live temporary codes without the codes, every user's or one's (listings need no key).
    async fn list_temporary_codes(&self, username: Option<&str>, now: UnixTime) -> Result<Vec<TemporaryCodeInfo>, StoreError>;
    /// Uses one of the code's uses for `request` (the key of the RADIUS request, see
    /// [`Store::consume_state`]), only if it is still live at `now` and this request used none
    /// before, atomically: of two logins with the last use, one wins; a copy of a request (the
    /// NAS's retry from another port or node, or a replay) takes no second use. The winner's
    /// `keep` (its Accept) is kept with it, as with [`Store::use_step`].
    async fn use_temporary_code(&self, id: i64, now: UnixTime, request: &[u8], keep: Option<KeptAnswer>) -> Result<CodeUse, StoreError>;
    /// Revokes the account's temporary codes (one, by id, or all). Returns how many.
    async fn revoke_temporary_codes(&self, username: &str, id: Option<i64>) -> Result<usize, StoreError>;

    /// Ends every portal session of the account (a helpdesk action that must not leave a
    /// session opened by what it took away). Returns how many.
    async fn end_sessions(&self, account: &str) -> Result<usize, StoreError>;

    /// Forgets what has expired (used States and their contexts, kept answers, old SMS sends,
    /// portal sessions).
    async fn purge(&self, now: UnixTime) -> Result<(), StoreError>;

    /// Reseals every seed not yet sealed with `ring`'s current key, in one step (`radmfa keys
    /// rotate`). `ring` must still hold the old keys. Returns how many were resealed.
    async fn reseal_all(&self, ring: Arc<KeyRing>) -> Result<usize, StoreError>;

    /// Every token (seeds as sealed text) and every factor's counters, for `radmfa store copy`.
    async fn export(&self) -> Result<Snapshot, StoreError>;

    /// Makes this store's tokens and counters those of `snapshot`, in one step: tokens keep their
    /// ids (their seals name them). Only an empty store, or one nothing has changed in since the
    /// last import (its digest is recorded), takes it; any other is refused before anything is
    /// written (see [`Snapshot::may_replace`]). Importing again what was imported changes nothing.
    async fn import(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// A random id the store was given when it was made: two configurations that name one
    /// database, however spelled, find the same.
    async fn identity(&self) -> Result<String, StoreError>;

    /// Makes what was written safe in the backend's own files (the server does this every few
    /// minutes; SQLite folds its write-ahead log into the database file). By default nothing.
    async fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Where the data lives gone wrong under a running server (the database file deleted or
    /// replaced), in words for the log. By default none.
    fn storage_problem(&self) -> Option<String> {
        None
    }

    /// False while the database cannot be reached (its last operations failed so): requests
    /// are then left unanswered whatever they would have been, so silence tells nothing about
    /// an account. By default always true.
    fn available(&self) -> bool {
        true
    }

    /// Reads what every login needs, touching nothing (while the store is not
    /// [`Store::available`], to learn when it is again; now and then, to compare the node's
    /// clock, `now`, with the database's). By default nothing.
    async fn ping(&self, _now: UnixTime) -> Result<(), StoreError> {
        Ok(())
    }
}
