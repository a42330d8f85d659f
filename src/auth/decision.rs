//! What a decision says: the verdict the NAS is told, each outcome carrying what it needs and
//! nothing else (an Accept has no State, a Challenge no reply attributes), and the reason,
//! which only the audit line sees.

use super::{ClientPolicy, Method, reply};
use crate::directory::{Denial, UserProfile};
use crate::radius::Attribute;

/// Which kind of answer a decision is: for counters and the audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Reject,
    Challenge,
    /// Nothing is sent (the directory is busy, the store cannot be used): the NAS retransmits,
    /// or asks its other server.
    NoAnswer,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Reject => "reject",
            Self::Challenge => "challenge",
            Self::NoAnswer => "none",
        }
    }
}

/// Why the decision went the way it did: for the audit log, never for the NAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    Authenticated,
    /// Authenticated with a temporary code the help desk issued.
    TemporaryCode,
    PasswordOnly,
    TotpChallenge,
    SmsSent,
    /// The challenge went out while the SMS gateway was still busy with the code.
    SmsPending,
    SmsRetry,
    MissingUserName,
    InvalidUserName,
    MissingPassword,
    EmptyPassword,
    UnsupportedMethod(Method),
    Directory(Denial),
    DirectoryUnavailable,
    /// The directory did not answer in time: left unanswered rather than rejected.
    DirectoryBusy,
    StoreUnavailable,
    /// The Accept's reply attributes (many groups?) would not fit in one RADIUS packet.
    AnswerTooBig,
    MissingCode,
    WrongCode,
    CodeReplayed,
    SecondFactorLocked,
    /// Too many wrong passwords for this account lately: refused before the directory binds.
    PasswordLocked,
    NoToken,
    NoMobile,
    SmsRateLimited,
    SmsFailed,
    InvalidState,
    StateExpired,
    StateMismatch,
    /// An answer to a challenge from a NAS now set not to take challenges (`challenges =
    /// false` since a reload): it could only lead to another challenge or an SMS.
    ChallengeNotAllowed,
    StateReused,
    /// The NAS's retry of a request a node accepted (its code or State now used): the same
    /// Accept again.
    RetryOfAccepted,
    /// The NAS's retry of a request a node challenged (an SMS went out for it): the same
    /// Challenge again, and no second SMS.
    RetryOfChallenge,
    TooManyTokens,
    /// Too many tries from one address or for one name lately (the portal's limits).
    RateLimited,
    /// The portal's password step passed; the second factor comes next.
    PasswordVerified,
    /// Not decided within `request_timeout`: no answer was sent.
    TimedOut,
    /// Given up undecided (the server stopping): no answer was sent.
    Abandoned,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::TemporaryCode => "temporary_code",
            Self::PasswordOnly => "password_only",
            Self::TotpChallenge => "totp_challenge",
            Self::SmsSent => "sms_sent",
            Self::SmsPending => "sms_pending",
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
            Self::DirectoryBusy => "directory_busy",
            Self::AnswerTooBig => "answer_too_big",
            Self::StoreUnavailable => "store_unavailable",
            Self::MissingCode => "missing_code",
            Self::WrongCode => "wrong_code",
            Self::CodeReplayed => "code_replayed",
            Self::SecondFactorLocked => "second_factor_locked",
            Self::PasswordLocked => "password_locked",
            Self::NoToken => "no_token",
            Self::NoMobile => "no_mobile",
            Self::SmsRateLimited => "sms_rate_limited",
            Self::SmsFailed => "sms_failed",
            Self::InvalidState => "invalid_state",
            Self::StateExpired => "state_expired",
            Self::StateMismatch => "state_mismatch",
            Self::ChallengeNotAllowed => "challenge_not_allowed",
            Self::StateReused => "state_reused",
            Self::RetryOfAccepted => "retry_of_accepted",
            Self::RetryOfChallenge => "retry_of_challenge",
            Self::TooManyTokens => "too_many_tokens",
            Self::RateLimited => "rate_limited",
            Self::PasswordVerified => "password_verified",
            Self::TimedOut => "timed_out",
            Self::Abandoned => "abandoned",
        }
    }
}

/// What to answer, and why. The server turns the verdict into a signed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
}

/// What the NAS is told. Text for the user is never built from anything the client sent
/// (BlastRADIUS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Access-Accept with the client's reply attributes, expanded for the user.
    Accept { attributes: Vec<Attribute> },
    /// Access-Reject. `message` is always the one `rejected` text, so the reason cannot be read
    /// from it.
    Reject { message: String },
    /// Access-Challenge: the prompt, and the sealed State the answer must bring back.
    Challenge { message: String, state: Vec<u8> },
    /// Nothing is sent (the directory is busy, the store cannot be used): the NAS retransmits,
    /// or asks its other server.
    NoAnswer,
}

impl Decision {
    pub(super) fn reject(reason: Reason, message: String) -> Self {
        Self { verdict: Verdict::Reject { message }, reason }
    }

    pub(super) fn no_answer(reason: Reason) -> Self {
        Self { verdict: Verdict::NoAnswer, reason }
    }

    pub(super) fn challenge(reason: Reason, message: String, state: Vec<u8>) -> Self {
        Self { verdict: Verdict::Challenge { message, state }, reason }
    }

    pub(super) fn accept(reason: Reason, client: &ClientPolicy, profile: &UserProfile) -> Self {
        Self { verdict: Verdict::Accept { attributes: reply::expand_all(client, profile) }, reason }
    }

    pub fn outcome(&self) -> Outcome {
        self.verdict.outcome()
    }

    /// The Reply-Message text, if the verdict has one.
    pub fn reply_message(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Reject { message } | Verdict::Challenge { message, .. } => Some(message),
            Verdict::Accept { .. } | Verdict::NoAnswer => None,
        }
    }

    /// A Challenge's State.
    pub fn state(&self) -> Option<&[u8]> {
        match &self.verdict {
            Verdict::Challenge { state, .. } => Some(state),
            _ => None,
        }
    }

    /// A Challenge's State, taken out of the decision.
    pub fn into_state(self) -> Option<Vec<u8>> {
        match self.verdict {
            Verdict::Challenge { state, .. } => Some(state),
            _ => None,
        }
    }

    /// An Accept's reply attributes (none for any other verdict).
    pub fn attributes(&self) -> &[Attribute] {
        match &self.verdict {
            Verdict::Accept { attributes } => attributes,
            _ => &[],
        }
    }
}

impl Verdict {
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Accept { .. } => Outcome::Accept,
            Self::Reject { .. } => Outcome::Reject,
            Self::Challenge { .. } => Outcome::Challenge,
            Self::NoAnswer => Outcome::NoAnswer,
        }
    }
}
