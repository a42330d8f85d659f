//! What the self-service portal asks of `auth`: the first factor, a second factor (a code from an
//! enrolled app, or one sent by SMS), and enrollment of new tokens — with the same directory,
//! store, lockout counters, SMS limits and audit trail as RADIUS logins.

use std::time::Duration;

use super::{Authenticator, Reason, confirmed, printable};
use crate::directory::{PasswordCheck, UserProfile};
use crate::otp::{phone, sms_code, totp};
use crate::secret::Secret;
use crate::store::{NewToken, SmsReservation, Token, UnixTime};

/// A code sent by SMS during a portal sign-in, kept in the server-side session.
#[derive(Debug, Clone)]
pub struct SmsChallenge {
    pub salt: [u8; 16],
    pub hash: [u8; 32],
    pub expires_at: UnixTime,
    pub tries_left: u8,
    /// `+46 70*** **67`, for "Enter the code sent to ...".
    pub masked: String,
}

/// A signed-in user's new token, between "name it" and "confirm a code".
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub token_id: i64,
    pub name: String,
    pub secret: Secret<Vec<u8>>,
    pub uri: Secret<String>,
    pub started_at: UnixTime,
}

impl Authenticator {
    /// The normalised account name for what a user typed.
    pub fn account(&self, typed: &str) -> String {
        self.settings.usernames.normalise(typed)
    }

    /// The password step of a portal sign-in. Returns the profile and whether the user has a
    /// confirmed token. A locked second factor is refused before the directory is asked.
    pub async fn portal_password(&self, user: &str, password: &[u8]) -> Result<(UserProfile, bool), Reason> {
        let store = &self.services.store;
        if password.is_empty() {
            return Err(self.portal_audit(user, "sign_in_password", Reason::EmptyPassword));
        }
        if store.locked_until(user, crate::store::now()).await.map_err(super::store_down)?.is_some() {
            return Err(self.portal_audit(user, "sign_in_password", Reason::SecondFactorLocked));
        }
        let profile = match self.services.directory.check_password(user, password).await {
            Ok(PasswordCheck::Valid(profile)) => profile,
            Ok(PasswordCheck::Denied(denial)) => return Err(self.portal_audit(user, "sign_in_password", Reason::Directory(denial))),
            Err(e) => {
                tracing::error!(error = %e, "directory could not check a password");
                return Err(self.portal_audit(user, "sign_in_password", Reason::DirectoryUnavailable));
            }
        };
        let has_token = !confirmed(store.tokens(user).await.map_err(super::store_down)?).is_empty();
        Ok((profile, has_token))
    }

    /// Sends a sign-in code by SMS to the profile's mobile number (same limits as RADIUS).
    pub async fn portal_send_sms(&self, user: &str, profile: &UserProfile) -> Result<SmsChallenge, Reason> {
        let Some(mobile) = profile.mobile.as_deref().and_then(|m| phone::to_e164(m, &self.settings.default_country_code)) else {
            return Err(Reason::NoMobile);
        };
        match self.services.store.reserve_sms(user, crate::store::now(), self.settings.sms_limits).await.map_err(super::store_down)? {
            SmsReservation::Allowed => {}
            _ => return Err(self.portal_audit(user, "sign_in_sms", Reason::SmsRateLimited)),
        }
        let code = sms_code::generate();
        let salt = super::state::random16();
        let text = Secret::new(self.settings.messages.sms_text.replace("{code}", code.expose()));
        if let Err(e) = crate::sms::send_with_retry(self.services.sms.as_ref(), &mobile, &text).await {
            tracing::error!(gateway = self.services.sms.kind(), error = %e, "SMS could not be sent");
            return Err(self.portal_audit(user, "sign_in_sms", Reason::SmsFailed));
        }
        Ok(SmsChallenge {
            salt,
            hash: sms_code::hash(code.expose(), &salt),
            expires_at: crate::store::now() + self.settings.sms_validity.as_secs() as UnixTime,
            tries_left: self.settings.sms_tries,
            masked: phone::mask(&mobile),
        })
    }

    /// The second step of a portal sign-in: the SMS code if one was sent, else a code from one of
    /// the user's apps. Wrong codes count towards the same lockout as RADIUS.
    pub async fn portal_code(&self, user: &str, code: &str, sms: Option<&mut SmsChallenge>) -> Result<(), Reason> {
        let now = crate::store::now();
        let store = &self.services.store;
        if store.locked_until(user, now).await.map_err(super::store_down)?.is_some() {
            return Err(self.portal_audit(user, "sign_in_code", Reason::SecondFactorLocked));
        }
        let code = code.trim();
        let right = match sms {
            Some(challenge) if challenge.expires_at > now && challenge.tries_left > 0 => {
                challenge.tries_left -= 1;
                sms_code::matches(code, &challenge.salt, &challenge.hash)
            }
            Some(_) => return Err(self.portal_audit(user, "sign_in_code", Reason::StateExpired)),
            None => {
                let tokens = confirmed(store.tokens(user).await.map_err(super::store_down)?);
                let mut used = false;
                for token in &tokens {
                    if let Some(step) =
                        token.params.matching_step(token.secret.expose(), code, now.max(0) as u64, self.settings.totp_window)
                    {
                        if store.use_step(token.id, step, now).await.map_err(super::store_down)? {
                            used = true;
                            break;
                        }
                    }
                }
                used
            }
        };
        if !right {
            self.count_failure(user).await?;
            return Err(self.portal_audit(user, "sign_in_code", Reason::WrongCode));
        }
        store.record_success(user).await.map_err(super::store_down)?;
        self.portal_audit(user, "sign_in", Reason::Authenticated);
        Ok(())
    }

    /// The user's tokens, for the TOKENS tab (confirmed ones; pending enrollments are not shown).
    pub async fn portal_tokens(&self, user: &str) -> Result<Vec<Token>, Reason> {
        Ok(confirmed(self.services.store.tokens(user).await.map_err(super::store_down)?))
    }

    /// Starts an enrollment: a new, unconfirmed token (never accepted at login until confirmed).
    pub async fn portal_enroll(&self, user: &str, name: &str, issuer: &str, max_tokens: usize) -> Result<Enrollment, Reason> {
        let store = &self.services.store;
        let tokens = store.tokens(user).await.map_err(super::store_down)?;
        if confirmed(tokens).len() >= max_tokens {
            return Err(Reason::TooManyTokens);
        }
        let secret = totp::new_secret();
        let params = crate::otp::TotpParams { digits: self.settings.totp_digits, ..Default::default() };
        let token_id = store
            .add_token(NewToken { username: user.to_owned(), name: name.to_owned(), params, secret: secret.clone(), confirmed: false })
            .await
            .map_err(super::store_down)?;
        let uri = params.otpauth_uri(secret.expose(), issuer, user);
        Ok(Enrollment { token_id, name: name.to_owned(), secret, uri, started_at: crate::store::now() })
    }

    /// Confirms an enrollment with a code from the app; the token becomes usable only then.
    pub async fn portal_confirm(&self, user: &str, enrollment: &Enrollment, code: &str, timeout: Duration) -> Result<(), Reason> {
        let now = crate::store::now();
        let store = &self.services.store;
        if now - enrollment.started_at > timeout.as_secs() as UnixTime {
            let _ = store.remove_token(user, enrollment.token_id).await;
            return Err(self.portal_audit(user, "enroll", Reason::StateExpired));
        }
        let params = crate::otp::TotpParams { digits: self.settings.totp_digits, ..Default::default() };
        let Some(step) = params.matching_step(enrollment.secret.expose(), code.trim(), now.max(0) as u64, self.settings.totp_window) else {
            return Err(self.portal_audit(user, "enroll", Reason::WrongCode));
        };
        if !store.confirm_token(user, enrollment.token_id, step).await.map_err(super::store_down)? {
            return Err(self.portal_audit(user, "enroll", Reason::NoToken));
        }
        tracing::info!(target: "radmfa::audit", user = %printable(user), token = enrollment.token_id, name = %printable(&enrollment.name), "portal: token enrolled");
        Ok(())
    }

    pub async fn portal_remove(&self, user: &str, token_id: i64) -> Result<bool, Reason> {
        let removed = self.services.store.remove_token(user, token_id).await.map_err(super::store_down)?;
        if removed {
            tracing::info!(target: "radmfa::audit", user = %printable(user), token = token_id, "portal: token removed");
        }
        Ok(removed)
    }

    fn portal_audit(&self, user: &str, step: &'static str, reason: Reason) -> Reason {
        let result = if reason == Reason::Authenticated { "accept" } else { "reject" };
        tracing::info!(target: "radmfa::audit", user = %printable(user), client = "portal", step, result, reason = reason.as_str(), "portal");
        reason
    }
}
