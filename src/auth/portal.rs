//! What the self-service portal asks of `auth`: the first factor, a second factor (a code from an
//! enrolled app, or one sent by SMS), and enrollment of new tokens — with the same directory,
//! store, lockout counters, SMS limits and audit trail as RADIUS logins.

use std::net::IpAddr;
use std::time::Duration;

use super::allowance::Guess;
use super::flow::confirmed;
use super::second_factor::Verified;
use super::{Authenticator, Reason, store_down};
use crate::directory::{LoginName, UserProfile};
use crate::otp::sms_code;
use crate::secret::Secret;
use crate::sms::delivery::Delivered;
use crate::store::{Factor, Token, UnixTime};

/// A code sent by SMS during a portal sign-in, kept in the server-side session.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SmsChallenge {
    pub salt: [u8; 16],
    pub hash: [u8; 32],
    pub expires_at: UnixTime,
    pub tries_left: u8,
    /// `+46 70*** **67`, for "Enter the code sent to ...".
    pub masked: String,
}

/// A signed-in user's new token, between "name it" and "confirm a code".
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Enrollment {
    pub token_id: i64,
    pub name: String,
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    pub secret: Secret<Vec<u8>>,
    #[serde(serialize_with = "crate::secret::serialize_exposed")]
    pub uri: Secret<String>,
    pub started_at: UnixTime,
}

/// Who passed the password step: the account everything is keyed on, and what the pages show.
#[derive(Debug, Clone)]
pub struct PortalUser {
    /// The directory's account id (the same for every spelling the user may type).
    pub account: String,
    pub profile: UserProfile,
    pub has_token: bool,
}

/// The portal step an audit line is about (its `step` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortalStep {
    SignInPassword,
    SignInSms,
    SignInCode,
    /// Both factors passed.
    SignedIn,
    Enroll,
}

impl PortalStep {
    fn as_str(self) -> &'static str {
        match self {
            Self::SignInPassword => "sign_in_password",
            Self::SignInSms => "sign_in_sms",
            Self::SignInCode => "sign_in_code",
            Self::SignedIn => "sign_in",
            Self::Enroll => "enroll",
        }
    }
}

/// What a portal step's reason means for the sign-in.
fn portal_result(reason: Reason) -> &'static str {
    match reason {
        Reason::Authenticated | Reason::TemporaryCode => "accept",
        Reason::PasswordVerified => "continue",
        Reason::SmsSent | Reason::SmsPending => "challenge",
        _ => "reject",
    }
}

impl Authenticator {
    /// The name to look up for what a user typed.
    pub fn login_name(&self, typed: &str) -> LoginName {
        self.settings().usernames.login_name(typed)
    }

    /// A key for per-user rate limits: every case and realm spelling of a name shares one.
    pub fn rate_key(&self, typed: &str) -> String {
        super::UsernameRules::legacy_key(&self.login_name(typed))
    }

    /// The password step of a portal sign-in, for the account the typed name resolves to.
    /// Locks (of either factor) are checked before the directory binds.
    pub async fn portal_password(&self, typed: &str, password: &[u8], from: IpAddr, now: UnixTime) -> Result<PortalUser, Reason> {
        let login = self.login_name(typed);
        let audit = |account: &str, reason| self.portal_audit(account, from, PortalStep::SignInPassword, reason);
        // A name not (yet) resolved to an account is logged, but not kept in the trail.
        let log_only = |reason| self.portal_log(login.name(), from, PortalStep::SignInPassword, reason);
        if password.is_empty() {
            return Err(log_only(Reason::EmptyPassword));
        }
        let account = self.resolve_for_password(&login, password).await.map_err(log_only)?;
        self.check_code_lock(&account.id, now).await.map_err(|r| audit(&account.id, r))?;
        let profile = self.check_password(&account, password, false, now).await.map_err(|r| audit(&account.id, r))?;
        // A temporary code from the help desk counts as a token here: it is asked for as one.
        let has_token = self.codes(&account.id, now).await.map_err(|r| audit(&account.id, r))?.any();
        // Neither an app nor a phone: the portal can only say so (never a way past the factor).
        audit(&account.id, if has_token || profile.mobile.is_some() { Reason::PasswordVerified } else { Reason::NoMobile });
        Ok(PortalUser { has_token, account: account.id, profile })
    }

    /// Audits a sign-in refused by the portal's rate limits before any check (`key` is the
    /// name's rate-limit key: no directory lookup is made for it).
    pub fn portal_rate_limited(&self, key: &str, from: IpAddr) {
        self.portal_log(key, from, PortalStep::SignInPassword, Reason::RateLimited);
    }

    /// Sends a sign-in code by SMS to the profile's mobile number (same limits as RADIUS).
    pub async fn portal_send_sms(&self, account: &str, profile: &UserProfile, from: IpAddr, now: UnixTime) -> Result<SmsChallenge, Reason> {
        let audit = |reason| self.portal_audit(account, from, PortalStep::SignInSms, reason);
        let answer_by = std::time::Instant::now() + self.settings().sms_answer_within;
        let code = self.reserve_code(account, profile.mobile.as_deref(), now).await.map_err(audit)?;
        let sent = self.send_code(code, account, answer_by).await;
        match sent.delivered {
            Delivered::Sent => audit(Reason::SmsSent),
            Delivered::Pending => audit(Reason::SmsPending),
            // Past the password already: the page may say the SMS failed.
            Delivered::Failed(_) => return Err(audit(Reason::SmsFailed)),
        };
        Ok(SmsChallenge {
            salt: sent.salt,
            hash: sent.hash,
            expires_at: now + self.settings().sms_validity.as_secs() as UnixTime,
            tries_left: self.settings().sms_tries,
            masked: sent.masked,
        })
    }

    /// The second step of a portal sign-in: the SMS code if one was sent, else a code from one of
    /// the user's apps. Wrong codes count towards the same lockout as RADIUS.
    pub async fn portal_code(
        &self,
        account: &str,
        code: &str,
        sms: Option<&mut SmsChallenge>,
        from: IpAddr,
        now: UnixTime,
    ) -> Result<(), Reason> {
        let store = &self.store;
        let audit = |reason| self.portal_audit(account, from, PortalStep::SignInCode, reason);
        if store.locked_until(account, Factor::Code, now).await.map_err(store_down).map_err(audit)?.is_some() {
            return Err(audit(Reason::SecondFactorLocked));
        }
        let code = code.trim();
        match sms {
            Some(challenge) if challenge.expires_at > now && challenge.tries_left > 0 => {
                challenge.tries_left -= 1;
                let attempt = self.begin(account, Factor::Code, now).await.map_err(audit)?;
                if !sms_code::matches(code, &challenge.salt, &challenge.hash) {
                    attempt.settle(Guess::Wrong).await.map_err(audit)?;
                    return Err(audit(Reason::WrongCode));
                }
                attempt.settle(Guess::Right).await.map_err(audit)?;
            }
            Some(_) => return Err(audit(Reason::StateExpired)),
            None => {
                let codes = self.codes(account, now).await.map_err(audit)?;
                if let Verified::Temporary = self.verify_code(account, &codes, code, now, None).await.map_err(audit)? {
                    self.portal_audit(account, from, PortalStep::SignedIn, Reason::TemporaryCode);
                    return Ok(());
                }
            }
        }
        self.portal_audit(account, from, PortalStep::SignedIn, Reason::Authenticated);
        Ok(())
    }

    /// The user's tokens, for the TOKENS tab (confirmed ones; pending enrollments are not shown).
    pub async fn portal_tokens(&self, user: &str) -> Result<Vec<Token>, Reason> {
        Ok(confirmed(self.store.tokens(user).await.map_err(store_down)?))
    }

    /// Starts an enrollment: a new, unconfirmed token (never accepted at login until confirmed).
    pub async fn portal_enroll(
        &self,
        user: &str,
        name: &str,
        issuer: &str,
        max_tokens: usize,
        now: UnixTime,
    ) -> Result<Enrollment, Reason> {
        let store = &self.store;
        let tokens = store.tokens(user).await.map_err(store_down)?;
        if confirmed(tokens).len() >= max_tokens {
            return Err(Reason::TooManyTokens);
        }
        let made = self.make_token(user, name, issuer, false, now).await.map_err(store_down)?;
        Ok(Enrollment { token_id: made.id, name: name.to_owned(), secret: made.secret, uri: made.uri, started_at: now })
    }

    /// Confirms an enrollment with a code from the app; the token becomes usable only then, and
    /// only while the user has fewer than `max_tokens`.
    #[allow(clippy::too_many_arguments)] // each is the request's own, or a portal setting
    pub async fn portal_confirm(
        &self,
        user: &str,
        enrollment: &Enrollment,
        code: &str,
        timeout: Duration,
        max_tokens: usize,
        from: IpAddr,
        now: UnixTime,
    ) -> Result<(), Reason> {
        let store = &self.store;
        if now - enrollment.started_at > timeout.as_secs() as UnixTime {
            let _ = store.abandon_token(user, enrollment.token_id).await;
            return Err(self.portal_audit(user, from, PortalStep::Enroll, Reason::StateExpired));
        }
        let params = self.settings().totp;
        let Some(step) = params.matching_step(enrollment.secret.expose(), code.trim(), now.max(0) as u64, self.settings().totp_window)
        else {
            return Err(self.portal_audit(user, from, PortalStep::Enroll, Reason::WrongCode));
        };
        if !store.confirm_token(user, enrollment.token_id, step, max_tokens).await.map_err(store_down)? {
            // Enrollments begun in several sessions, finished after the limit was reached.
            let full = confirmed(store.tokens(user).await.map_err(store_down)?).len() >= max_tokens;
            let reason = if full { Reason::TooManyTokens } else { Reason::NoToken };
            return Err(self.portal_audit(user, from, PortalStep::Enroll, reason));
        }
        tracing::info!(target: "radmfa::audit", user, client = "portal", from = %from, token = enrollment.token_id, name = enrollment.name.as_str(), "portal: token enrolled");
        let detail = format!("token {} \"{}\"", enrollment.token_id, super::shown(&enrollment.name));
        self.portal_event(user, from, "portal_enroll", "ok", "token_enrolled", Some(detail));
        Ok(())
    }

    /// Gives up an enrollment the session no longer holds (replaced by a newer one, or the
    /// session gone): its token is removed only if no code confirmed it meanwhile.
    pub async fn portal_abandon(&self, user: &str, token_id: i64) {
        if let Err(e) = self.store.abandon_token(user, token_id).await {
            // Never usable unconfirmed; the purge removes it a day after it was made.
            tracing::warn!(user, token = token_id, error = %e, "portal: an abandoned enrollment could not be removed");
        }
    }

    pub async fn portal_remove(&self, user: &str, token_id: i64, from: IpAddr) -> Result<bool, Reason> {
        let removed = self.store.remove_token(user, token_id).await.map_err(store_down)?;
        if removed {
            tracing::info!(target: "radmfa::audit", user, client = "portal", from = %from, token = token_id, "portal: token removed");
            self.portal_event(user, from, "portal_remove_token", "ok", "token_removed", Some(format!("token {token_id}")));
        }
        Ok(removed)
    }

    /// One audit line per portal step about an account, naming it and the client's address,
    /// and its event in the trail.
    fn portal_audit(&self, account: &str, from: IpAddr, step: PortalStep, reason: Reason) -> Reason {
        let result = self.portal_log(account, from, step, reason);
        self.portal_event(account, from, &format!("portal_{}", step.as_str()), portal_result(result), result.as_str(), None);
        reason
    }

    /// The audit line alone, for a name that is no account (yet).
    fn portal_log(&self, user: &str, from: IpAddr, step: PortalStep, reason: Reason) -> Reason {
        let result = portal_result(reason);
        tracing::info!(target: "radmfa::audit", user, client = "portal", from = %from, step = step.as_str(), result, reason = reason.as_str(), "portal");
        reason
    }

    /// A portal step's or a user's own action's event in the audit trail.
    fn portal_event(&self, user: &str, from: IpAddr, action: &str, result: &str, reason: &str, detail: Option<String>) {
        self.trail.push(crate::store::AuditEvent {
            at: crate::clock::now(),
            account: user.to_owned(),
            action: action.to_owned(),
            client: "portal".to_owned(),
            from: Some(from.to_string()),
            result: result.to_owned(),
            reason: reason.to_owned(),
            actor: None,
            detail,
        });
    }
}
