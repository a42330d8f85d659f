//! The decision: an authenticated, decoded request in, `Accept`, `Reject` or `Challenge` out.
//!
//! Knows nothing of sockets or retransmissions (the server answers those from its cache before
//! calling here) and nothing of how a decision is signed. Everything it needs comes through
//! traits — `Directory`, `Store`, `Gateway` — so it is tested with in-memory stand-ins. It writes
//! one audit line per decision.
//!
//! The flows, per client `mode`: *append* (password and code in one field), *challenge*
//! (password, then an Access-Challenge for the code), *auto* (append when the field ends in a
//! code's worth of digits and the user has a token). A user without a token, or one who answers
//! the challenge with `sms`, gets a code by SMS. Wrong codes count towards a lockout of the second
//! factor; a locked user is rejected before any directory bind.

pub mod messages;
pub mod portal;
pub mod reply;
pub mod state;
pub mod username;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::directory::{Denial, Directory, PasswordCheck, UserProfile};
use crate::otp::{phone, sms_code};
use crate::radius::Attribute;
use crate::secret::Secret;
use crate::sms::Gateway;
use crate::store::seal::KeyRing;
use crate::store::{FailureOutcome, LockoutPolicy, SmsLimits, SmsReservation, Store, Token, UnixTime};
pub use messages::Messages;
pub use reply::ReplyTemplate;
use state::{ChallengeState, Stage};
pub use username::UsernameRules;

/// How a client's users give their second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The code appended to the password, in one field.
    Append,
    /// The password, then an Access-Challenge for the code.
    Challenge,
    /// Append when the field ends in a code's worth of digits and the user has a token, else challenge.
    Auto,
}

/// What happens to a user with no confirmed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoToken {
    /// A code by SMS to the directory's mobile number.
    Sms,
    Reject,
    /// The password alone suffices: for a rollout, while users are still enrolling. Audited as
    /// `password_only`.
    PasswordOnly,
}

/// How a NAS encodes User-Password. Most send UTF-8; some older ones send Latin-1, which must
/// become UTF-8 before it is compared with a directory password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum PasswordEncoding {
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    #[serde(rename = "latin-1", alias = "latin1", alias = "iso-8859-1")]
    Latin1,
}

impl PasswordEncoding {
    /// The password as UTF-8 bytes.
    pub fn to_utf8<'a>(&self, raw: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        match self {
            Self::Utf8 => raw.into(),
            Self::Latin1 if raw.is_ascii() => raw.into(),
            Self::Latin1 => raw.iter().map(|&b| char::from(b)).collect::<String>().into_bytes().into(),
        }
    }
}

/// What a NAS client is allowed and given, from its `[[client]]` section.
#[derive(Debug)]
pub struct ClientPolicy {
    pub name: String,
    pub mode: Mode,
    pub no_token: NoToken,
    pub password_encoding: PasswordEncoding,
    /// Attributes added to every Access-Accept for this client.
    pub reply_attributes: Vec<ReplyTemplate>,
    /// Which of the user's groups `{group}` templates expand to (all when unset).
    pub group_filter: Option<Regex>,
}

impl ClientPolicy {
    /// A policy with the defaults: auto mode, SMS for users without a token, no reply attributes.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.into(),
            mode: Mode::Auto,
            no_token: NoToken::Sms,
            password_encoding: PasswordEncoding::Utf8,
            reply_attributes: Vec::new(),
            group_filter: None,
        }
    }
}

/// How the NAS carried the credentials. Only PAP hands us a password we can check against a
/// directory bind; the others are recognised so they are refused with a clear log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Pap,
    Chap,
    MsChap,
    Eap,
    /// No credential attribute at all.
    None,
}

/// The facts auth needs, already authenticated and decoded by the server.
#[derive(Debug)]
pub struct Request {
    /// User-Name as sent (raw: it may not be UTF-8; auth validates it).
    pub user_name: Option<Vec<u8>>,
    pub password: Option<Secret<Vec<u8>>>,
    pub method: Method,
    pub state: Option<Vec<u8>>,
    pub client: Arc<ClientPolicy>,
    pub nas_ip: Option<IpAddr>,
    pub nas_identifier: Option<String>,
    pub calling_station: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Reject,
    Challenge,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Challenge => "challenge",
        }
    }
}

/// Why the decision went the way it did: for the audit log, never for the NAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    Authenticated,
    PasswordOnly,
    TotpChallenge,
    SmsSent,
    SmsRetry,
    MissingUserName,
    InvalidUserName,
    MissingPassword,
    EmptyPassword,
    UnsupportedMethod(Method),
    Directory(Denial),
    DirectoryUnavailable,
    StoreUnavailable,
    MissingCode,
    WrongCode,
    CodeReplayed,
    SecondFactorLocked,
    NoToken,
    NoMobile,
    SmsRateLimited,
    SmsFailed,
    InvalidState,
    StateExpired,
    StateMismatch,
    StateReused,
    TooManyTokens,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::PasswordOnly => "password_only",
            Self::TotpChallenge => "totp_challenge",
            Self::SmsSent => "sms_sent",
            Self::SmsRetry => "sms_retry",
            Self::MissingUserName => "missing_user_name",
            Self::InvalidUserName => "invalid_user_name",
            Self::MissingPassword => "missing_password",
            Self::EmptyPassword => "empty_password",
            Self::UnsupportedMethod(Method::Chap) => "chap_not_supported",
            Self::UnsupportedMethod(Method::MsChap) => "mschap_not_supported",
            Self::UnsupportedMethod(_) => "eap_not_supported",
            Self::Directory(denial) => denial.as_str(),
            Self::DirectoryUnavailable => "directory_unavailable",
            Self::StoreUnavailable => "store_unavailable",
            Self::MissingCode => "missing_code",
            Self::WrongCode => "wrong_code",
            Self::CodeReplayed => "code_replayed",
            Self::SecondFactorLocked => "second_factor_locked",
            Self::NoToken => "no_token",
            Self::NoMobile => "no_mobile",
            Self::SmsRateLimited => "sms_rate_limited",
            Self::SmsFailed => "sms_failed",
            Self::InvalidState => "invalid_state",
            Self::StateExpired => "state_expired",
            Self::StateMismatch => "state_mismatch",
            Self::StateReused => "state_reused",
            Self::TooManyTokens => "too_many_tokens",
        }
    }
}

/// What to answer. The server turns it into a signed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Text for the user. Never built from anything the client sent (BlastRADIUS).
    pub reply_message: Option<String>,
    pub state: Option<Vec<u8>>,
    pub attributes: Vec<Attribute>,
    pub reason: Reason,
}

impl Decision {
    fn reject(reason: Reason) -> Self {
        Self { outcome: Outcome::Reject, reply_message: None, state: None, attributes: Vec::new(), reason }
    }

    fn reject_saying(reason: Reason, message: &str) -> Self {
        Self { reply_message: Some(message.to_owned()), ..Self::reject(reason) }
    }

    fn challenge(reason: Reason, message: String, state: Vec<u8>) -> Self {
        Self { outcome: Outcome::Challenge, reply_message: Some(message), state: Some(state), attributes: Vec::new(), reason }
    }

    fn accept(reason: Reason, client: &ClientPolicy, profile: &UserProfile) -> Self {
        Self { outcome: Outcome::Accept, reply_message: None, state: None, attributes: reply::expand_all(client, profile), reason }
    }
}

/// Longest User-Name we take: AD's sAMAccountName is 20, a UPN 1024, but RADIUS carries 253.
const MAX_USER_NAME: usize = 253;

/// The second-factor settings `auth` applies.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Digits of a TOTP code (what `append` splits off the password).
    pub totp_digits: u32,
    /// Time steps accepted either side of now.
    pub totp_window: u64,
    pub lockout: LockoutPolicy,
    /// How long a TOTP challenge waits for its answer.
    pub challenge_ttl: Duration,
    /// How long an SMS code is valid, and how many tries it allows.
    pub sms_validity: Duration,
    pub sms_tries: u8,
    pub sms_limits: SmsLimits,
    pub default_country_code: String,
    pub messages: Messages,
    pub usernames: UsernameRules,
}

/// The services the decision uses.
pub struct Services {
    pub directory: Arc<dyn Directory>,
    pub store: Arc<dyn Store>,
    pub sms: Arc<dyn Gateway>,
    /// Seals challenge States.
    pub keys: Arc<KeyRing>,
}

pub struct Authenticator {
    services: Services,
    settings: AuthSettings,
}

/// A user past the username and method checks.
struct Login<'a> {
    request: &'a Request,
    /// The normalised account name.
    user: String,
    answer: &'a [u8],
}

impl Authenticator {
    pub fn new(services: Services, settings: AuthSettings) -> Self {
        Self { services, settings }
    }

    /// Decides one Access-Request and writes its audit line.
    pub async fn decide(&self, request: &Request) -> Decision {
        let started = Instant::now();
        let (user, decision) = self.decide_inner(request).await;
        audit(request, user.as_deref(), &decision, started.elapsed());
        decision
    }

    async fn decide_inner(&self, request: &Request) -> (Option<String>, Decision) {
        let user = match request.user_name.as_deref().map(valid_user_name) {
            None => return (None, Decision::reject(Reason::MissingUserName)),
            Some(None) => return (None, Decision::reject(Reason::InvalidUserName)),
            Some(Some(user)) => self.settings.usernames.normalise(user),
        };
        let reject = |reason| (Some(user.clone()), Decision::reject(reason));
        if request.method != Method::Pap {
            tracing::warn!(
                client = %request.client.name,
                method = ?request.method,
                "only PAP is supported: the password must reach the directory in clear; configure the NAS for PAP"
            );
            return reject(match request.method {
                Method::None => Reason::MissingPassword,
                other => Reason::UnsupportedMethod(other),
            });
        }
        let Some(password) = request.password.as_ref() else { return reject(Reason::MissingPassword) };
        if password.expose().is_empty() {
            return reject(Reason::EmptyPassword);
        }
        let login = Login { request, user: user.clone(), answer: password.expose() };
        let decision = match &request.state {
            Some(state) => self.continue_challenge(&login, state).await,
            None => self.first_step(&login).await,
        };
        (Some(user), decision.unwrap_or_else(Decision::reject))
    }

    /// A request without State: the password (perhaps with a code appended).
    async fn first_step(&self, login: &Login<'_>) -> Result<Decision, Reason> {
        let store = &self.services.store;
        if store.locked_until(&login.user, crate::store::now()).await.map_err(store_down)?.is_some() {
            // Rejected before any bind: a locked user must not cost the directory (or AD's own
            // lockout counter) anything.
            return Ok(Decision::reject_saying(Reason::SecondFactorLocked, &self.settings.messages.rejected));
        }
        let tokens = confirmed(store.tokens(&login.user).await.map_err(store_down)?);
        let digits = self.settings.totp_digits as usize;
        let split = match login.request.client.mode {
            Mode::Challenge => None,
            Mode::Append if !tokens.is_empty() => Some(split_code(login.answer, digits).ok_or(Reason::MissingCode)?),
            Mode::Auto if !tokens.is_empty() => split_code(login.answer, digits),
            Mode::Append | Mode::Auto => None,
        };
        let (password, code) = match split {
            Some((password, code)) => (password, Some(code)),
            None => (login.answer, None),
        };
        let password = login.request.client.password_encoding.to_utf8(password);
        let profile = match self.services.directory.check_password(&login.user, &password).await {
            Ok(PasswordCheck::Valid(profile)) => profile,
            Ok(PasswordCheck::Denied(denial)) => {
                return Ok(Decision::reject_saying(Reason::Directory(denial), &self.settings.messages.rejected));
            }
            Err(e) => {
                tracing::error!(error = %e, "directory could not check a password");
                return Err(Reason::DirectoryUnavailable);
            }
        };
        let client = &login.request.client;
        if let Some(code) = code {
            return self.check_totp(login, &tokens, code, &profile).await;
        }
        if !tokens.is_empty() {
            let state = self.new_state(Stage::Totp, login, self.settings.challenge_ttl);
            return Ok(Decision::challenge(
                Reason::TotpChallenge,
                self.settings.messages.challenge_totp.clone(),
                state.seal(&self.services.keys),
            ));
        }
        match client.no_token {
            NoToken::Sms => self.send_sms(login, &profile).await,
            NoToken::Reject => Ok(Decision::reject_saying(Reason::NoToken, &self.settings.messages.no_token)),
            NoToken::PasswordOnly => Ok(Decision::accept(Reason::PasswordOnly, client, &profile)),
        }
    }

    /// A request with State: the answer to a challenge.
    async fn continue_challenge(&self, login: &Login<'_>, state: &[u8]) -> Result<Decision, Reason> {
        let now = crate::store::now();
        let rejected = |reason| Ok(Decision::reject_saying(reason, &self.settings.messages.rejected));
        let Some(state) = ChallengeState::open(state, &self.services.keys) else { return rejected(Reason::InvalidState) };
        if state.expires_at <= now {
            return rejected(Reason::StateExpired);
        }
        if !state.belongs_to(&login.user, &login.request.client.name) {
            return rejected(Reason::StateMismatch);
        }
        let store = &self.services.store;
        if !store.consume_state(&state.nonce, state.expires_at).await.map_err(store_down)? {
            return rejected(Reason::StateReused);
        }
        if store.locked_until(&login.user, now).await.map_err(store_down)?.is_some() {
            return rejected(Reason::SecondFactorLocked);
        }
        let answer = String::from_utf8_lossy(login.answer);
        let answer = answer.trim();
        match state.stage {
            Stage::Totp if answer.eq_ignore_ascii_case("sms") => {
                let profile = self.profile(&login.user).await?;
                self.send_sms(login, &profile).await
            }
            Stage::Totp => {
                let tokens = confirmed(store.tokens(&login.user).await.map_err(store_down)?);
                let profile = self.profile(&login.user).await?;
                self.check_totp(login, &tokens, answer.as_bytes(), &profile).await
            }
            Stage::Sms if sms_code::matches(answer, &state.code_salt, &state.code_hash) => {
                store.record_success(&login.user).await.map_err(store_down)?;
                let profile = self.profile(&login.user).await?;
                Ok(Decision::accept(Reason::Authenticated, &login.request.client, &profile))
            }
            Stage::Sms => {
                let locked = self.count_failure(&login.user).await?;
                if locked || state.tries_left <= 1 {
                    return rejected(Reason::WrongCode);
                }
                let retry = state.retry();
                Ok(Decision::challenge(Reason::SmsRetry, self.settings.messages.wrong_code_retry.clone(), retry.seal(&self.services.keys)))
            }
        }
    }

    /// Tries the code against each confirmed token; the first match whose step is new wins.
    async fn check_totp(&self, login: &Login<'_>, tokens: &[Token], code: &[u8], profile: &UserProfile) -> Result<Decision, Reason> {
        let now = crate::store::now();
        let code = std::str::from_utf8(code).unwrap_or_default();
        let mut replayed = false;
        for token in tokens {
            let Some(step) = token.params.matching_step(token.secret.expose(), code, now.max(0) as u64, self.settings.totp_window) else {
                continue;
            };
            if self.services.store.use_step(token.id, step, now).await.map_err(store_down)? {
                self.services.store.record_success(&login.user).await.map_err(store_down)?;
                return Ok(Decision::accept(Reason::Authenticated, &login.request.client, profile));
            }
            replayed = true;
        }
        self.count_failure(&login.user).await?;
        let reason = if replayed { Reason::CodeReplayed } else { Reason::WrongCode };
        Ok(Decision::reject_saying(reason, &self.settings.messages.rejected))
    }

    /// Counts a wrong code; true if it locked the second factor.
    async fn count_failure(&self, user: &str) -> Result<bool, Reason> {
        let outcome = self.services.store.record_failure(user, crate::store::now(), self.settings.lockout).await.map_err(store_down)?;
        if let FailureOutcome::Locked { until } = outcome {
            tracing::warn!(target: "radmfa::audit", user = %printable(user), locked_until = until, "second factor locked after repeated wrong codes");
            return Ok(true);
        }
        Ok(false)
    }

    /// Sends a fresh SMS code to the user's mobile and challenges for it.
    async fn send_sms(&self, login: &Login<'_>, profile: &UserProfile) -> Result<Decision, Reason> {
        let messages = &self.settings.messages;
        let Some(mobile) = profile.mobile.as_deref().and_then(|m| phone::to_e164(m, &self.settings.default_country_code)) else {
            return Ok(Decision::reject_saying(Reason::NoMobile, &messages.no_mobile));
        };
        match self.services.store.reserve_sms(&login.user, crate::store::now(), self.settings.sms_limits).await.map_err(store_down)? {
            SmsReservation::Allowed => {}
            SmsReservation::UserLimit | SmsReservation::GlobalLimit => {
                return Ok(Decision::reject_saying(Reason::SmsRateLimited, &messages.sms_limit));
            }
        }
        let code = sms_code::generate();
        let mut state = self.new_state(Stage::Sms, login, self.settings.sms_validity);
        state.code_salt = state::random16();
        state.code_hash = sms_code::hash(code.expose(), &state.code_salt);
        let text = Secret::new(messages.sms_text.replace("{code}", code.expose()));
        if let Err(e) = crate::sms::send_with_retry(self.services.sms.as_ref(), &mobile, &text).await {
            tracing::error!(gateway = self.services.sms.kind(), error = %e, "SMS could not be sent");
            return Ok(Decision::reject_saying(Reason::SmsFailed, &messages.sms_failed));
        }
        let prompt = messages.challenge_sms.replace("{mobile}", &phone::mask(&mobile));
        Ok(Decision::challenge(Reason::SmsSent, prompt, state.seal(&self.services.keys)))
    }

    fn new_state(&self, stage: Stage, login: &Login<'_>, ttl: Duration) -> ChallengeState {
        let expires_at: UnixTime = crate::store::now() + ttl.as_secs() as UnixTime;
        ChallengeState::new(stage, &login.user, &login.request.client.name, expires_at, self.settings.sms_tries)
    }

    async fn profile(&self, user: &str) -> Result<UserProfile, Reason> {
        match self.services.directory.profile(user).await {
            Ok(Some(profile)) => Ok(profile),
            Ok(None) => Err(Reason::Directory(Denial::NoSuchUser)),
            Err(e) => {
                tracing::error!(error = %e, "directory could not look a user up");
                Err(Reason::DirectoryUnavailable)
            }
        }
    }
}

fn store_down(e: crate::store::StoreError) -> Reason {
    tracing::error!(error = %e, "store failed");
    Reason::StoreUnavailable
}

fn confirmed(tokens: Vec<Token>) -> Vec<Token> {
    tokens.into_iter().filter(|t| t.confirmed).collect()
}

/// Splits `password || code` when the field ends in `digits` digits and something precedes them.
fn split_code(field: &[u8], digits: usize) -> Option<(&[u8], &[u8])> {
    let cut = field.len().checked_sub(digits).filter(|&cut| cut > 0)?;
    let (password, code) = field.split_at(cut);
    code.iter().all(u8::is_ascii_digit).then_some((password, code))
}

/// A User-Name we are willing to look up: UTF-8, not blank, no control characters.
fn valid_user_name(raw: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(raw).ok()?;
    let ok = !name.trim().is_empty() && name.len() <= MAX_USER_NAME && !name.chars().any(char::is_control);
    ok.then_some(name)
}

fn audit(request: &Request, user: Option<&str>, decision: &Decision, elapsed: Duration) {
    // Absent values are logged as empty strings, so every line has every field.
    let raw_user = request.user_name.as_deref().map(String::from_utf8_lossy);
    let user = user.map(str::to_owned).or(raw_user.map(|u| u.into_owned())).unwrap_or_default();
    let nas_ip = request.nas_ip.map(|ip| ip.to_string()).unwrap_or_default();
    tracing::info!(
        target: "radmfa::audit",
        user = %printable(&user),
        client = %request.client.name,
        nas_ip = %nas_ip,
        nas_identifier = %printable(request.nas_identifier.as_deref().unwrap_or_default()),
        calling_station = %printable(request.calling_station.as_deref().unwrap_or_default()),
        result = decision.outcome.as_str(),
        reason = decision.reason.as_str(),
        elapsed_ms = (elapsed.as_secs_f64() * 1e5).round() / 100.0,
        "decision"
    );
}

/// Client-supplied text made safe for a log line: control characters escaped, so a crafted
/// User-Name cannot start a forged line in a text log.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect::<String>().into()
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod encoding_tests {
    use super::PasswordEncoding;

    #[test]
    fn latin1_passwords_become_utf8() {
        assert_eq!(PasswordEncoding::Latin1.to_utf8(b"L\xf6senord").as_ref(), "Lösenord".as_bytes());
        assert_eq!(PasswordEncoding::Latin1.to_utf8(b"plain").as_ref(), b"plain");
        assert_eq!(PasswordEncoding::Utf8.to_utf8("Lösenord".as_bytes()).as_ref(), "Lösenord".as_bytes());
    }
}
