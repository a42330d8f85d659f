//! The steps every front end (RADIUS, portal, CLI) shares, written once: resolving a login name
//! to its account, the locks checked before any bind, the password check with its failure
//! count, a TOTP code against the account's tokens (window, replay, lockout), and sending an
//! SMS code (limits, masking, a bounded wait for the gateway).

use std::sync::Arc;

use super::UsernameRules;
use super::allowance::{Guess, Refused};
use super::retry::RetryRecord;
use super::{Authenticator, Decision, Reason, directory_down, store_down};
use crate::directory::{Account, Denial, LoginName, PasswordCheck, UserProfile};
use crate::otp::TotpParams;
use crate::otp::temporary;
use crate::otp::totp;
use crate::otp::{phone, sms_code};
use crate::secret::Secret;
use crate::sms::delivery::{Delivered, Delivery};
use crate::store::{CodeUse, Factor, Filing, NewToken, SmsReservation, StoreError, TemporaryCode, Token, UnixTime};
use std::time::Instant;

/// A try of a factor in flight (see [`super::allowance`]), with what its lock message says.
pub(super) struct Try {
    inner: super::allowance::Try,
    account: String,
    factor: Factor,
    /// The request's time, given when the try began: its outcome is counted at that time too.
    now: UnixTime,
}

impl Try {
    pub(super) async fn settle(self, guess: Guess) -> Result<(), Reason> {
        let Self { inner, account, factor, now } = self;
        let Some(until) = inner.settle(guess, now).await.map_err(store_down)? else {
            return Ok(());
        };
        let user = account.as_str();
        match factor {
            Factor::Code => {
                tracing::warn!(target: "radmfa::audit", user, locked_until = until, "second factor locked after repeated wrong codes")
            }
            Factor::Password => tracing::warn!(
                target: "radmfa::audit",
                user,
                locked_until = until,
                "password step locked after repeated wrong passwords: the directory is not asked for this account until then"
            ),
        }
        Ok(())
    }
}

/// An account's second factors at a login: what a code is checked against.
#[derive(Debug, Default)]
pub(super) struct Codes {
    /// Confirmed tokens only.
    pub tokens: Vec<Token>,
    /// Live temporary codes (see [`crate::store::Store::temporary_codes`]).
    pub temporary: Vec<TemporaryCode>,
}

impl Codes {
    /// Whether the account has any second factor a code can be checked against.
    pub fn any(&self) -> bool {
        !self.tokens.is_empty() || !self.temporary.is_empty()
    }

    /// Splits `password || code` off a field: at a temporary code's length when the field
    /// ends in one of the account's temporary codes, else at an app's code length (`digits`)
    /// when it has tokens. An account with temporary codes only is split at their length only
    /// where a code must be appended (`append`): where the field may be the password alone
    /// (`auto`), a password that ends in eight digits of its own stays whole and is challenged
    /// for its code (a wrong code appended then counts as a wrong password, and the password's
    /// lock bounds the guesses).
    pub fn split<'a>(&self, field: &'a [u8], digits: usize, append: bool) -> Option<(&'a [u8], &'a [u8])> {
        let temporary_split = || super::flow::split_code(field, temporary::DIGITS);
        if let Some((password, code)) = temporary_split()
            && self.temporary.iter().any(|t| temporary::matches(std::str::from_utf8(code).unwrap_or_default(), t.code.expose()))
        {
            return Some((password, code));
        }
        if !self.tokens.is_empty() {
            return super::flow::split_code(field, digits);
        }
        if append && !self.temporary.is_empty() {
            // Checked as password and code, so a wrong code counts once the password is right.
            return temporary_split();
        }
        None
    }
}

/// How a code was right.
#[derive(Debug)]
pub(super) enum Verified {
    /// A code from one of the account's apps.
    App,
    /// One of its temporary codes (a use of it taken).
    Temporary,
    /// The NAS's retry of a request a node accepted before: that Accept again.
    Before(Decision),
}

impl Verified {
    /// The Accept to send: `accept` (as its reason says how the code was right), or the one
    /// given before.
    pub fn accept(self, accept: Decision) -> Decision {
        match self {
            Self::App => accept,
            Self::Temporary => Decision { reason: Reason::TemporaryCode, ..accept },
            Self::Before(before) => before,
        }
    }
}

/// Whether a request's answer is tried for the first time, or again (the NAS's retry of a
/// request whose State it already used: see [`crate::store::StateUse::SameRequest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tried {
    First,
    Before,
}

/// A fresh SMS code, not sent yet.
#[derive(Debug)]
pub(crate) struct NewCode {
    pub salt: [u8; 16],
    pub hash: [u8; 32],
    /// `+46 70*** **67`.
    pub masked: String,
    mobile: String,
    text: Secret<String>,
}

/// An SMS code on its way: what to check the answer against and how to show the number.
#[derive(Debug)]
pub(crate) struct SentCode {
    pub salt: [u8; 16],
    pub hash: [u8; 32],
    /// `+46 70*** **67`.
    pub masked: String,
    /// How far the gateway got by the time the answer had to go out.
    pub delivered: Delivered,
}

/// A token just made, with what the user's app needs (shown once, then only sealed).
#[derive(Debug)]
pub struct MadeToken {
    pub id: i64,
    pub secret: Secret<Vec<u8>>,
    /// `otpauth://totp/...`, for the QR code.
    pub uri: Secret<String>,
}

/// A token made elsewhere — by the product radmfa replaces, or by a hardware token's vendor —
/// with its seed and parameters, for [`Authenticator::file_tokens`].
#[derive(Debug, Clone)]
pub struct ExistingToken {
    pub account: String,
    pub name: String,
    pub params: TotpParams,
    pub secret: Secret<Vec<u8>>,
}

impl ExistingToken {
    /// Confirmed: its user has it already, so no code of theirs need confirm it.
    fn into_new(self, now: UnixTime) -> NewToken {
        let Self { account, name, params, secret } = self;
        NewToken { username: account, name, params, secret, confirmed: true, created_at: now }
    }
}

impl Authenticator {
    /// Makes a token for `account` with the `[totp]` parameters — the one place tokens are made,
    /// whichever front end enrolls them: a fresh seed, sealed by the store. Unconfirmed ones are
    /// never accepted at login until a code confirms them.
    pub async fn make_token(
        &self,
        account: &str,
        name: &str,
        issuer: &str,
        confirmed: bool,
        now: UnixTime,
    ) -> Result<MadeToken, StoreError> {
        let secret = totp::new_secret();
        let params = self.settings().totp;
        let token =
            NewToken { username: account.to_owned(), name: name.to_owned(), params, secret: secret.clone(), confirmed, created_at: now };
        let id = self.store.add_token(token).await?;
        let uri = params.otpauth_uri(secret.expose(), issuer, account);
        Ok(MadeToken { id, secret, uri })
    }

    /// Files tokens made elsewhere (`radmfa token import`): the other way a token comes to be,
    /// beside [`Self::make_token`]. Their seeds and parameters as given, usable at once; a
    /// seed the account has already is not filed twice, nor a token past `max_tokens` usable
    /// ones (see [`crate::store::filing`]). One step of the store for the whole batch.
    pub async fn file_tokens(&self, tokens: Vec<ExistingToken>, max_tokens: usize, now: UnixTime) -> Result<Vec<Filing>, StoreError> {
        let tokens = tokens.into_iter().map(|t| t.into_new(now)).collect();
        self.store.add_tokens(tokens, max_tokens).await
    }

    /// What [`Self::file_tokens`] would do now, writing nothing.
    pub async fn sort_tokens(&self, tokens: &[ExistingToken], max_tokens: usize) -> Result<Vec<Filing>, StoreError> {
        let tokens: Vec<NewToken> = tokens.iter().map(|t| t.clone().into_new(0)).collect();
        self.store.sort_tokens(&tokens, max_tokens).await
    }

    /// The account a login name denotes, or why there is none.
    pub(crate) async fn find(&self, login: &LoginName) -> Result<Account, Reason> {
        match self.directory().find(login).await {
            Ok(Some(account)) => Ok(account),
            Ok(None) => Err(Reason::Directory(Denial::NoSuchUser)),
            Err(e) => Err(directory_down(&e, "looked a user up")),
        }
    }

    /// Resolves a login name to its account. Tokens a version before one identity per account
    /// filed under this spelling (lower-cased, as typed) move to the account — but only when the
    /// directory says that spelling is this account too: under `kalle` may lie the tokens of
    /// another account than the one `Kalle` (KELVIN SIGN) denotes.
    pub(crate) async fn resolve(&self, login: &LoginName) -> Result<Account, Reason> {
        let account = self.find(login).await?;
        let legacy = UsernameRules::legacy_key(login);
        if legacy != account.id && !self.store.list_tokens(Some(&legacy)).await.map_err(store_down)?.is_empty() {
            let same =
                self.directory().find(&LoginName::normalise(&legacy, &[], &[])).await.ok().flatten().is_some_and(|a| a.id == account.id);
            if same {
                let moved = self.store.move_tokens(&legacy, &account.id).await.map_err(store_down)?;
                tracing::info!(target: "radmfa::audit", user = account.id.as_str(), from = legacy.as_str(), tokens = moved, "tokens filed under another spelling moved to the account");
            }
        }
        Ok(account)
    }

    /// [`Self::resolve`] for a step that checks `password`: a name that denotes no account
    /// costs what a password check would while checks are queued (see
    /// [`crate::directory::Directory::spend_like_a_check`]).
    pub(super) async fn resolve_for_password(&self, login: &LoginName, password: &[u8]) -> Result<Account, Reason> {
        let resolved = self.resolve(login).await;
        if let Err(Reason::Directory(Denial::NoSuchUser)) = resolved {
            self.directory().spend_like_a_check(password).await;
        }
        resolved
    }

    /// Refuses an account whose second factor is locked: checked before any bind, so a locked
    /// account costs the directory nothing. (The password lock is taken by the try itself.)
    pub(super) async fn check_code_lock(&self, account: &str, now: UnixTime) -> Result<(), Reason> {
        if self.store.locked_until(account, Factor::Code, now).await.map_err(store_down)?.is_some() {
            return Err(Reason::SecondFactorLocked);
        }
        Ok(())
    }

    /// The directory's verdict on the password, with the account's groups when `with_groups`.
    /// The try is begun before the bind (tries made at once cannot all reach the directory); a
    /// right password clears the count.
    pub(super) async fn check_password(
        &self,
        account: &Account,
        password: &[u8],
        with_groups: bool,
        now: UnixTime,
    ) -> Result<UserProfile, Reason> {
        let attempt = self.begin(&account.id, Factor::Password, now).await?;
        let verdict = self.directory().check_password(account, password, with_groups).await;
        let outcome = match &verdict {
            Ok(PasswordCheck::Valid(_)) => Guess::Right,
            Ok(PasswordCheck::Denied(Denial::WrongPassword)) => Guess::Wrong,
            // AD says "locked" whatever the password; a vanished entry says nothing either.
            Ok(PasswordCheck::Denied(Denial::AccountLocked | Denial::NoSuchUser)) | Err(_) => Guess::Unknown,
            // Disabled, expired, must change...: AD checked the password first, and it was right.
            Ok(PasswordCheck::Denied(_)) => Guess::Right,
        };
        attempt.settle(outcome).await?;
        match verdict {
            Ok(PasswordCheck::Valid(profile)) => Ok(profile),
            Ok(PasswordCheck::Denied(denial)) => Err(Reason::Directory(denial)),
            Err(e) => Err(directory_down(&e, "checked a password")),
        }
    }

    /// Tries a code against each confirmed token, and a temporary code's shape against the
    /// account's temporary codes; the first match whose time step is new (or that has a use
    /// left) wins. The try is begun first, so codes sent at once cannot all be checked.
    ///
    /// In a RADIUS request (`retry`), the Accept to come is kept with the code's use; a code
    /// already used in a request a node accepted before is the NAS's retry of that request: its
    /// Accept again ([`Verified::Before`]), and no wrong try counted.
    pub(super) async fn verify_code(
        &self,
        account: &str,
        codes: &Codes,
        code: &str,
        now: UnixTime,
        retry: Option<RetryRecord>,
    ) -> Result<Verified, Reason> {
        let attempt = self.begin(account, Factor::Code, now).await?;
        self.check_code(attempt, codes, code, now, retry, Tried::First).await
    }

    /// [`Self::verify_code`] with the try already begun. A try made `Tried::Before` (the NAS's
    /// retry of a request already decided once) counts no failure: the first decision counted
    /// it, and replayed copies of a captured datagram must not lock the user out.
    pub(super) async fn check_code(
        &self,
        attempt: Try,
        codes: &Codes,
        code: &str,
        now: UnixTime,
        retry: Option<RetryRecord>,
        tried: Tried,
    ) -> Result<Verified, Reason> {
        let store = &self.store;
        let mut replayed = false;
        for token in &codes.tokens {
            let Some(step) = token.params.matching_step(token.secret.expose(), code, now.max(0) as u64, self.settings().totp_window) else {
                continue;
            };
            let keep = retry.as_ref().and_then(|r| r.keep.clone());
            if store.use_step(token.id, step, now, keep).await.map_err(store_down)? {
                attempt.settle(Guess::Right).await?;
                return Ok(Verified::App);
            }
            replayed = true;
        }
        if temporary::looks_like(code) {
            // A portal sign-in is no RADIUS request: a key of its own, never seen again.
            let request = retry.as_ref().map_or_else(|| super::state::random16().repeat(2), |r| r.key.as_bytes().to_vec());
            // Each compared whole, in constant time; at most one per account.
            for temporary in codes.temporary.iter().filter(|t| temporary::matches(code, t.code.expose())) {
                let keep = retry.as_ref().and_then(|r| r.keep.clone());
                let used = store.use_temporary_code(temporary.info.id, now, &request, keep).await.map_err(store_down)?;
                if used == CodeUse::ByThisRequest {
                    // A copy of a request that took a use (the NAS's retry from another port or
                    // node, or a replay): the Accept a node kept for it, or a refusal — never a
                    // second use, and no failure counted (copies must not lock the user out).
                    attempt.settle(Guess::Unknown).await?;
                    if let Some(retry) = retry
                        && let Some(accepted) = self.answered_before(retry.key, now).await?
                    {
                        return Ok(Verified::Before(accepted));
                    }
                    return Err(Reason::CodeReplayed);
                }
                if used == CodeUse::Used {
                    attempt.settle(Guess::Right).await?;
                    tracing::info!(
                        target: "radmfa::audit",
                        user = temporary.info.username.as_str(),
                        code = temporary.info.id,
                        uses_left = temporary.info.uses_left.saturating_sub(1),
                        "temporary code used"
                    );
                    return Ok(Verified::Temporary);
                }
                // Its last use taken meanwhile (by this request's own first try, perhaps).
                replayed = true;
            }
        }
        if replayed
            && let Some(retry) = retry
            && let Some(accepted) = self.answered_before(retry.key, now).await?
        {
            attempt.settle(Guess::Unknown).await?;
            return Ok(Verified::Before(accepted));
        }
        if tried == Tried::Before {
            attempt.settle(Guess::Unknown).await?;
            return Err(Reason::StateReused);
        }
        attempt.settle(Guess::Wrong).await?;
        Err(if replayed { Reason::CodeReplayed } else { Reason::WrongCode })
    }

    /// The account's second factors for a login: its confirmed tokens and its live temporary
    /// codes, read at once (one batch with a shared database).
    pub(super) async fn codes(&self, account: &str, now: UnixTime) -> Result<Codes, Reason> {
        let (tokens, temporary) = tokio::join!(self.store.tokens(account), self.store.temporary_codes(account, now));
        Ok(Codes { tokens: super::flow::confirmed(tokens.map_err(store_down)?), temporary: temporary.map_err(store_down)? })
    }

    /// [`Self::codes`] for a RADIUS request whose `field` holds the code (appended, or as the
    /// challenge's answer): temporary codes are read only where they can matter — the field ends
    /// in a temporary code's worth of digits, or the account has no token (then whether it has a
    /// temporary code decides between asking for a code and its `no_token` policy). Most logins,
    /// with an app's 6 digits, cost the store no read more than before temporary codes.
    pub(super) async fn codes_for(&self, account: &str, field: &[u8], now: UnixTime) -> Result<Codes, Reason> {
        let tail = field.len().checked_sub(temporary::DIGITS).map(|cut| &field[cut..]);
        if tail.is_some_and(|tail| tail.iter().all(u8::is_ascii_digit)) {
            return self.codes(account, now).await;
        }
        let tokens = super::flow::confirmed(self.store.tokens(account).await.map_err(store_down)?);
        let temporary = match tokens.is_empty() {
            true => self.store.temporary_codes(account, now).await.map_err(store_down)?,
            false => Vec::new(),
        };
        Ok(Codes { tokens, temporary })
    }

    /// Begins a try of `factor`: refused when it is locked; while the allowance is taken by
    /// tries in flight, waits for one of them to end (the request's deadline bounds the wait).
    pub(super) async fn begin(&self, account: &str, factor: Factor, now: UnixTime) -> Result<Try, Reason> {
        let policy = match factor {
            Factor::Code => self.settings().lockout,
            Factor::Password => self.settings().password_lockout,
        };
        match self.allowance.begin(&self.store, account, factor, now, policy).await {
            Ok(inner) => Ok(Try { inner, account: account.to_owned(), factor, now }),
            Err(Refused::Locked) => Err(match factor {
                Factor::Code => Reason::SecondFactorLocked,
                Factor::Password => Reason::PasswordLocked,
            }),
            Err(Refused::Store(e)) => Err(store_down(e)),
        }
    }

    /// A fresh code for the mobile number, not yet counted nor sent: what the answer needs is
    /// kept with the count (see [`crate::store::Store::reserve_sms_challenge`]), then it is sent.
    pub(crate) fn new_code(&self, mobile: Option<&str>) -> Result<NewCode, Reason> {
        let Some(mobile) = mobile.and_then(|m| phone::to_e164(m, &self.settings().default_country_code)) else {
            return Err(Reason::NoMobile);
        };
        let code = sms_code::generate();
        let salt = super::state::random16();
        let text = Secret::new(self.settings().messages.sms_text.replace("{code}", code.expose()));
        Ok(NewCode { salt, hash: sms_code::hash(code.expose(), &salt), masked: phone::mask(&mobile), mobile, text })
    }

    /// A fresh code, its SMS counted within the limits (the portal's sign-in).
    pub(crate) async fn reserve_code(&self, account: &str, mobile: Option<&str>, now: UnixTime) -> Result<NewCode, Reason> {
        let code = self.new_code(mobile)?;
        match self.store.reserve_sms(account, now, self.settings().sms_limits).await.map_err(store_down)? {
            SmsReservation::Allowed => Ok(code),
            SmsReservation::UserLimit | SmsReservation::GlobalLimit => Err(Reason::SmsRateLimited),
        }
    }

    /// Sends a code whose SMS was counted. Waits for the gateway until `answer_by` at the latest (the
    /// request's arrival + `sms_answer_within`): a slower one finishes in the background, its
    /// result logged and counted, so the answer goes out before the NAS gives up.
    pub(crate) async fn send_code(&self, code: NewCode, account: &str, answer_by: Instant) -> SentCode {
        let NewCode { salt, hash, masked, mobile, text } = code;
        let delivery = Delivery::start(self.sms.load_full().as_ref().clone(), mobile, text, Arc::clone(&self.sms_stats), account);
        let delivered = delivery.wait_until(answer_by.into()).await;
        SentCode { salt, hash, masked, delivered }
    }
}
