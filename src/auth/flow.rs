//! The RADIUS flows: the first step (password, perhaps with the code appended) and the answer
//! to a challenge. Both key everything on the account the login name resolved to, and read the
//! time once, as the datagram's arrival.
//!
//! A challenge's code step asks the directory nothing: what its answer needs (the profile, the
//! groups for reply attributes, the mobile number for "sms") was kept, sealed, in the store under
//! the State's nonce by the step that issued it — so any node sharing the store and key file
//! finishes it, and a DC that went down between the two steps does not stop it.

use std::time::Duration;

use super::allowance::Guess;
use super::context;
use super::retry::RetryKey;
use super::second_factor::{SentCode, Tried};
use super::state::{ChallengeState, Stage};
use super::{Authenticator, ClientPolicy, Decision, Login, Mode, NoToken, Reason, store_down};
use crate::directory::UserProfile;
use crate::otp::sms_code;
use crate::sms::delivery::Delivered;
use crate::store::{Factor, SmsChallengeRecord, SmsChallengeUse, StateUse, Token, UnixTime};

impl Authenticator {
    /// A request without State: the password (perhaps with a code appended).
    pub(super) async fn first_step(&self, login: &mut Login<'_>) -> Result<Decision, Reason> {
        let now = login.request.arrival_time();
        let account = self.resolve_for_password(&login.user, login.answer).await?;
        login.account = Some(account.id.clone());
        // A locked second factor is refused before any bind; the password try is counted (and
        // the password lock checked) when the bind is about to be made. Both reads at once: with
        // a shared database they go in one batch.
        let (unlocked, codes) = tokio::join!(self.check_code_lock(&account.id, now), self.codes_for(&account.id, login.answer, now));
        unlocked?;
        let codes = codes?;
        let digits = self.settings().totp.digits as usize;
        let split = match login.request.client.mode {
            Mode::Challenge => None,
            Mode::Append if codes.any() => Some(codes.split(login.answer, digits, true).ok_or(Reason::MissingCode)?),
            Mode::Auto if codes.any() => codes.split(login.answer, digits, false),
            Mode::Append | Mode::Auto => None,
        };
        let (password, code) = match split {
            Some((password, code)) => (password, Some(code)),
            None => (login.answer, None),
        };
        let password = login.request.client.password_encoding.to_utf8(password);
        let client = &login.request.client;
        let profile = self.check_password(&account, &password, client.needs_groups(), now).await?;
        Self::answer_fits(login, &account.id, &profile)?;
        if let Some(code) = code {
            let code = std::str::from_utf8(code).unwrap_or_default();
            let accept = Decision::accept(Reason::Authenticated, client, &profile);
            let retry = self.retry_record(login.request, &accept, now);
            return Ok(self.verify_code(&account.id, &codes, code, now, Some(retry)).await?.accept(accept));
        }
        if codes.any() {
            let state = self.new_state(Stage::Totp, login, &account.id, self.settings().challenge_ttl, now);
            let sealed = self.seal(&state)?;
            self.keep_context(&state, client, &profile).await?;
            return Ok(Decision::challenge(Reason::TotpChallenge, self.settings().messages.challenge_totp.clone(), sealed));
        }
        match client.no_token {
            NoToken::Sms => self.send_sms(login, &account.id, &profile, now).await,
            NoToken::Reject => Err(Reason::NoToken),
            NoToken::PasswordOnly => Ok(Decision::accept(Reason::PasswordOnly, client, &profile)),
        }
    }

    /// A request with State: the answer to a challenge.
    pub(super) async fn continue_challenge(&self, login: &mut Login<'_>, state: &[u8]) -> Result<Decision, Reason> {
        if !login.request.client.challenges {
            return Err(Reason::ChallengeNotAllowed);
        }
        let now = login.request.arrival_time();
        let keys = self.keys.current();
        let state = ChallengeState::open(state, &keys).ok_or(Reason::InvalidState)?;
        if state.expires_at <= now {
            return Err(Reason::StateExpired);
        }
        if !state.belongs_to(login.user.name(), &login.request.client.name) {
            return Err(Reason::StateMismatch);
        }
        let account = state.account.clone();
        login.account = Some(account.clone());
        let store = &self.store;
        let answer = String::from_utf8_lossy(login.answer);
        let answer = answer.trim();
        // The State used up, by this request, and its context read at once — and for a code
        // from an app the tokens and the lock too (the try begun): one batch with a shared
        // database, where each batch waits for a commit. A try begun for a State that turns
        // out used is dropped, counting nothing.
        let key = RetryKey::of(login.request, &self.keys);
        let using = store.consume_state(&state.nonce, state.expires_at, key.as_bytes());
        let code_from_app = state.stage == Stage::Totp && !answer.eq_ignore_ascii_case("sms");
        let (used, kept, code_try) = if code_from_app {
            let (used, kept, codes, attempt) = tokio::join!(
                using,
                store.challenge_context(&state.nonce),
                self.codes_for(&account, answer.as_bytes(), now),
                self.begin(&account, Factor::Code, now)
            );
            (used, kept, Some((codes, attempt)))
        } else {
            let (used, kept) = tokio::join!(using, store.challenge_context(&state.nonce));
            (used, kept, None)
        };
        let tried = match used.map_err(store_down)? {
            StateUse::First => Tried::First,
            // The NAS's retry of this very request, its answer lost or never given (a node
            // stopped, the database stalled): the answer a node gave, or decided again — a
            // Reject now would turn a right answer into a refusal. Decided again, a wrong answer
            // counts nothing (a copy of a captured datagram must not lock the user out).
            StateUse::SameRequest => match self.answered_before(key, now).await? {
                Some(before) => return Ok(before),
                None => Tried::Before,
            },
            StateUse::Used => return self.answered_before(key, now).await?.ok_or(Reason::StateReused),
        };
        let client = &login.request.client;
        let profile = self.context(&state, login, kept.map_err(store_down)?).await?;
        // This request's Proxy-State may leave less room than the first one's did.
        Self::answer_fits(login, &account, &profile)?;
        // A locked second factor is refused by the code try itself (its begin reads the lock).
        match (state.stage, code_try) {
            (Stage::Totp, Some((codes, attempt))) => {
                let (codes, attempt) = (codes?, attempt?);
                // The Accept is kept with the code's use, for this request's retries (which stop
                // at consume_state and look for it).
                let accept = Decision::accept(Reason::Authenticated, client, &profile);
                let retry = self.retry_record(login.request, &accept, now);
                Ok(self.check_code(attempt, &codes, answer, now, Some(retry), tried).await?.accept(accept))
            }
            (Stage::Totp, None) => {
                self.check_code_lock(&account, now).await?;
                self.send_sms(login, &account, &profile, now).await
            }
            (Stage::Sms, _) => {
                let attempt = self.begin(&account, Factor::Code, now).await?;
                if sms_code::matches(answer, &state.code_salt, &state.code_hash) {
                    attempt.settle(Guess::Right).await?;
                    let accept = Decision::accept(Reason::Authenticated, client, &profile);
                    // Not fatal: the login succeeded, and the answer goes out.
                    if let Err(reason) = self.keep_answer(login.request, &accept, now).await {
                        tracing::warn!(
                            reason = reason.as_str(),
                            client = client.name.as_str(),
                            "could not keep an Accept for the NAS's retries"
                        );
                    }
                    return Ok(accept);
                }
                if tried == Tried::Before {
                    attempt.settle(Guess::Unknown).await?;
                    return Err(Reason::StateReused);
                }
                attempt.settle(Guess::Wrong).await?;
                let locked = store.locked_until(&account, Factor::Code, now).await.map_err(store_down)?.is_some();
                if locked || state.tries_left <= 1 {
                    return Err(Reason::WrongCode);
                }
                let retry = state.retry();
                let sealed = self.seal(&retry)?;
                let challenge = Decision::challenge(Reason::SmsRetry, self.settings().messages.wrong_code_retry.clone(), sealed);
                // Kept for this request's retries: the same new State, not another try.
                let (context, kept) =
                    tokio::join!(self.keep_context(&retry, client, &profile), self.keep_answer(login.request, &challenge, now));
                context.and(kept)?;
                Ok(challenge)
            }
        }
    }

    /// Whether the Accept for `profile` fits in the answer to this request: said before a code
    /// is used up or an SMS sent for an Accept that could not be sent.
    fn answer_fits(login: &Login<'_>, account: &str, profile: &UserProfile) -> Result<(), Reason> {
        let client = &login.request.client;
        if client.reply_attributes.is_empty() {
            return Ok(());
        }
        let size: usize = super::reply::expand_all(client, profile).iter().map(crate::radius::Attribute::encoded_len).sum();
        if size > login.request.answer_room {
            tracing::error!(
                user = account,
                client = client.name.as_str(),
                octets = size,
                room = login.request.answer_room,
                "the Accept's reply attributes (the user's groups?) would not fit in one RADIUS packet: rejected; narrow the client's group_filter"
            );
            return Err(Reason::AnswerTooBig);
        }
        Ok(())
    }

    /// Keeps what the code step of `state` will need, sealed, in the store until it expires.
    async fn keep_context(&self, state: &ChallengeState, client: &ClientPolicy, profile: &UserProfile) -> Result<(), Reason> {
        let sealed = self.sealed_context(state, client, profile)?;
        self.store.keep_challenge_context(&state.nonce, state.expires_at, sealed).await.map_err(store_down)
    }

    /// What the code step of `state` will need, sealed for its nonce: of the groups, only those
    /// the client's answer names.
    fn sealed_context(&self, state: &ChallengeState, client: &ClientPolicy, profile: &UserProfile) -> Result<Vec<u8>, Reason> {
        // No Accept names more than a packet holds (the first step checked: each name sent takes
        // at least its length and an attribute header), so neither is more kept — a `{groups}`
        // value too long for its attribute is left out of the Accept anyway.
        let mut room = crate::radius::MAX_PACKET_LEN;
        let groups = profile
            .groups
            .iter()
            .filter(|g| super::reply::names_group(client, g))
            .take_while(|g| room.checked_sub(super::reply::group_name(g).len() + 2).map(|left| room = left).is_some())
            .cloned()
            .collect();
        let profile = UserProfile { groups, ..profile.clone() };
        context::seal(&profile, &state.nonce, &self.keys.current()).map_err(|e| {
            tracing::error!(error = %e, "cannot keep a challenge's context");
            Reason::InvalidState
        })
    }

    /// What the step that issued `state` kept for its answer (`kept`, taken from the store). A
    /// State issued by a version that kept nothing is served from the directory, as then: the
    /// name must still resolve to the State's account.
    async fn context(&self, state: &ChallengeState, login: &Login<'_>, kept: Option<Vec<u8>>) -> Result<UserProfile, Reason> {
        if let Some(sealed) = kept {
            return context::open(&sealed, &state.nonce, &self.keys.current()).ok_or_else(|| {
                tracing::error!("a challenge's kept context does not open with the key file: was the key replaced?");
                Reason::InvalidState
            });
        }
        tracing::debug!(user = state.account.as_str(), "no context kept for this challenge: asking the directory");
        let found = self.find(&login.user).await?;
        if found.id != state.account {
            return Err(Reason::StateMismatch);
        }
        if !login.request.client.needs_groups() {
            return Ok(found.profile);
        }
        let groups = self.directory().groups(&found).await.map_err(|e| super::directory_down(&e, "listed a user's groups"))?;
        Ok(UserProfile { groups, ..found.profile })
    }

    /// Sends a fresh SMS code to the user's mobile and challenges for it. The send is counted,
    /// and the Challenge kept (its context, and its answer for the request's retries), in one
    /// store step before the SMS goes out: the NAS's retry of this request — its answer lost, or
    /// the store stalled — gets the same Challenge, or a first one, never a second SMS; a retry
    /// no node answered before is a new send, counted against the limits.
    async fn send_sms(&self, login: &Login<'_>, account: &str, profile: &UserProfile, now: UnixTime) -> Result<Decision, Reason> {
        let answer_by = login.request.arrived + self.settings().sms_answer_within;
        let code = self.new_code(profile.mobile.as_deref())?;
        let mut state = self.new_state(Stage::Sms, login, account, self.settings().sms_validity, now);
        state.code_salt = code.salt;
        state.code_hash = code.hash;
        let sealed = self.seal(&state)?;
        let prompt = self.settings().messages.challenge_sms.replace("{mobile}", &code.masked);
        let challenge = Decision::challenge(Reason::SmsSent, prompt, sealed);
        let record = SmsChallengeRecord {
            nonce: state.nonce.to_vec(),
            expires_at: state.expires_at,
            context: self.sealed_context(&state, &login.request.client, profile)?,
            answer: self.kept(RetryKey::of(login.request, &self.keys), &challenge, now),
        };
        let store = &self.store;
        match store.reserve_sms_challenge(account, now, self.settings().sms_limits, record).await.map_err(store_down)? {
            SmsChallengeUse::Reserved => {}
            SmsChallengeUse::UserLimit | SmsChallengeUse::GlobalLimit => return Err(Reason::SmsRateLimited),
            SmsChallengeUse::AnsweredBefore(kept) => return super::retry::decode(&kept).ok_or(Reason::InvalidState),
        }
        let SentCode { delivered, .. } = self.send_code(code, account, answer_by).await;
        // A failed send still gets its challenge: a Reject now would come later than every other
        // one (it waited on the gateway) and so tell that the password was right. The user, who
        // gets no code, logs in again; the failure is logged and counted.
        let reason = match delivered {
            Delivered::Sent => Reason::SmsSent,
            Delivered::Pending => Reason::SmsPending,
            Delivered::Failed(_) => Reason::SmsFailed,
        };
        Ok(Decision { reason, ..challenge })
    }

    fn new_state(&self, stage: Stage, login: &Login<'_>, account: &str, ttl: Duration, now: UnixTime) -> ChallengeState {
        let expires_at: UnixTime = now + ttl.as_secs() as UnixTime;
        ChallengeState::new(stage, login.user.name(), account, &login.request.client.name, expires_at, self.settings().sms_tries)
    }

    fn seal(&self, state: &ChallengeState) -> Result<Vec<u8>, Reason> {
        state.seal(&self.keys.current()).map_err(|e| {
            tracing::error!(error = %e, "cannot make a challenge State");
            Reason::InvalidState
        })
    }
}

pub(super) fn confirmed(tokens: Vec<Token>) -> Vec<Token> {
    tokens.into_iter().filter(|t| t.confirmed).collect()
}

/// Splits `password || code` when the field ends in `digits` digits and something precedes them.
pub(super) fn split_code(field: &[u8], digits: usize) -> Option<(&[u8], &[u8])> {
    let cut = field.len().checked_sub(digits).filter(|&cut| cut > 0)?;
    let (password, code) = field.split_at(cut);
    code.iter().all(u8::is_ascii_digit).then_some((password, code))
}
