//! The steps every front end (RADIUS, portal, CLI) shares, written once: resolving a login name
//! to its account, the locks checked before any bind, the password check with its failure
//! count, a TOTP code against the account's tokens (window, replay, lockout), and sending an
//! SMS code (limits, masking, a bounded wait for the gateway).

use std::sync::Arc;

use super::{Authenticator, Reason, store_down};
use crate::directory::{Account, Denial, PasswordCheck, UserProfile};
use crate::otp::{phone, sms_code};
use crate::secret::Secret;
use crate::store::{Attempt, Factor, SmsReservation, Token, UnixTime};

/// What a counted try turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    Right,
    Wrong,
    /// Neither: the directory could not answer, or answers "locked" whatever the password.
    Unknown,
}

/// An SMS code on its way: what to check the answer against and how to show the number.
#[derive(Debug, Clone)]
pub(crate) struct SentCode {
    pub salt: [u8; 16],
    pub hash: [u8; 32],
    /// `+46 70*** **67`.
    pub masked: String,
    /// The gateway had not confirmed it when `sms_answer_within` ran out.
    pub pending: bool,
}

impl Authenticator {
    /// The account a login name denotes, or why there is none.
    pub(super) async fn find(&self, login: &str) -> Result<Account, Reason> {
        match self.services.directory.find(login).await {
            Ok(Some(account)) => Ok(account),
            Ok(None) => Err(Reason::Directory(Denial::NoSuchUser)),
            Err(e) => {
                tracing::error!(error = %e, "directory could not look a user up");
                Err(Reason::DirectoryUnavailable)
            }
        }
    }

    /// Resolves a (normalised) login name to its account. Tokens an older radmfa filed under
    /// this spelling (it keyed on the name as typed) move to the account, so they keep working
    /// and no spelling is left with a second, empty set.
    pub(crate) async fn resolve(&self, login: &str) -> Result<Account, Reason> {
        let account = self.find(login).await?;
        if login != account.id {
            let moved = self.services.store.move_tokens(login, &account.id).await.map_err(store_down)?;
            if moved > 0 {
                tracing::info!(target: "radmfa::audit", user = account.id.as_str(), from = login, tokens = moved, "tokens filed under another spelling moved to the account");
            }
        }
        Ok(account)
    }

    /// Refuses an account whose second factor is locked: checked before any bind, so a locked
    /// account costs the directory nothing. (The password lock is taken by the try itself.)
    pub(super) async fn check_code_lock(&self, account: &str, now: UnixTime) -> Result<(), Reason> {
        if self.services.store.locked_until(account, Factor::Code, now).await.map_err(store_down)?.is_some() {
            return Err(Reason::SecondFactorLocked);
        }
        Ok(())
    }

    /// The directory's verdict on the password. The try is counted before the bind (so tries
    /// made at once cannot all reach the directory); a right password clears the count.
    pub(super) async fn check_password(&self, account: &Account, password: &[u8], now: UnixTime) -> Result<UserProfile, Reason> {
        let last = self.begin(&account.id, Factor::Password, now).await?;
        let verdict = self.services.directory.check_password(account, password).await;
        let settled = match &verdict {
            Ok(PasswordCheck::Valid(_)) => Settled::Right,
            Ok(PasswordCheck::Denied(Denial::WrongPassword)) => Settled::Wrong,
            // AD says "locked" whatever the password; a vanished entry says nothing either.
            Ok(PasswordCheck::Denied(Denial::AccountLocked | Denial::NoSuchUser)) | Err(_) => Settled::Unknown,
            // Disabled, expired, must change...: AD checked the password first, and it was right.
            Ok(PasswordCheck::Denied(_)) => Settled::Right,
        };
        self.settle(&account.id, Factor::Password, last, settled).await?;
        match verdict {
            Ok(PasswordCheck::Valid(profile)) => Ok(profile),
            Ok(PasswordCheck::Denied(denial)) => Err(Reason::Directory(denial)),
            Err(e) => {
                tracing::error!(error = %e, "directory could not check a password");
                Err(Reason::DirectoryUnavailable)
            }
        }
    }

    /// Tries a code against each confirmed token; the first match whose time step is new wins.
    /// The try is counted first, so codes sent at once cannot all be checked.
    pub(super) async fn verify_totp(&self, account: &str, tokens: &[Token], code: &str, now: UnixTime) -> Result<(), Reason> {
        let last = self.begin(account, Factor::Code, now).await?;
        let store = &self.services.store;
        let mut replayed = false;
        for token in tokens {
            let Some(step) = token.params.matching_step(token.secret.expose(), code, now.max(0) as u64, self.settings.totp_window) else {
                continue;
            };
            if store.use_step(token.id, step, now).await.map_err(store_down)? {
                self.settle(account, Factor::Code, last, Settled::Right).await?;
                return Ok(());
            }
            replayed = true;
        }
        self.settle(account, Factor::Code, last, Settled::Wrong).await?;
        Err(if replayed { Reason::CodeReplayed } else { Reason::WrongCode })
    }

    /// Counts a try of `factor` before it is made. `Ok(last)`: go ahead (`last`: this try used
    /// up the allowance). Refused with the factor's lock reason.
    pub(super) async fn begin(&self, account: &str, factor: Factor, now: UnixTime) -> Result<bool, Reason> {
        match self.services.store.begin_attempt(account, factor, now, self.policy(factor)).await.map_err(store_down)? {
            Attempt::Allowed { last } => Ok(last),
            Attempt::Locked { .. } => Err(match factor {
                Factor::Code => Reason::SecondFactorLocked,
                Factor::Password => Reason::PasswordLocked,
            }),
        }
    }

    /// What a counted try turned out to be: a right answer clears the count, a wrong one stays
    /// counted (and says so when it locked the factor), one that said nothing is given back.
    pub(super) async fn settle(&self, account: &str, factor: Factor, last: bool, settled: Settled) -> Result<(), Reason> {
        let store = &self.services.store;
        match settled {
            Settled::Right => store.record_success(account, factor).await.map_err(store_down),
            Settled::Unknown => store.refund_attempt(account, factor, last, self.policy(factor)).await.map_err(store_down),
            Settled::Wrong if last => {
                let until = store.locked_until(account, factor, crate::store::now()).await.map_err(store_down)?.unwrap_or_default();
                match factor {
                    Factor::Code => {
                        tracing::warn!(target: "radmfa::audit", user = account, locked_until = until, "second factor locked after repeated wrong codes")
                    }
                    Factor::Password => tracing::warn!(
                        target: "radmfa::audit",
                        user = account,
                        locked_until = until,
                        "password step locked after repeated wrong passwords: the directory is not asked for this account until then"
                    ),
                }
                Ok(())
            }
            Settled::Wrong => Ok(()),
        }
    }

    fn policy(&self, factor: Factor) -> crate::store::LockoutPolicy {
        match factor {
            Factor::Code => self.settings.lockout,
            Factor::Password => self.settings.password_lockout,
        }
    }

    /// Sends a fresh code to the mobile number, within the limits. Waits for the gateway at
    /// most `sms_answer_within`: a slower one finishes in the background (its result logged and
    /// counted), so the caller can answer before the NAS gives up.
    pub(crate) async fn send_code(&self, account: &str, mobile: Option<&str>, now: UnixTime) -> Result<SentCode, Reason> {
        let Some(mobile) = mobile.and_then(|m| phone::to_e164(m, &self.settings.default_country_code)) else {
            return Err(Reason::NoMobile);
        };
        match self.services.store.reserve_sms(account, now, self.settings.sms_limits).await.map_err(store_down)? {
            SmsReservation::Allowed => {}
            SmsReservation::UserLimit | SmsReservation::GlobalLimit => return Err(Reason::SmsRateLimited),
        }
        let code = sms_code::generate();
        let salt = super::state::random16();
        let sent = SentCode { salt, hash: sms_code::hash(code.expose(), &salt), masked: phone::mask(&mobile), pending: false };
        let text = Secret::new(self.settings.messages.sms_text.replace("{code}", code.expose()));
        let gateway = Arc::clone(&self.services.sms);
        let mut sending = tokio::spawn(async move { crate::sms::send_with_retry(gateway.as_ref(), &mobile, &text).await });
        let stats = Arc::clone(&self.sms_stats);
        let kind = self.services.sms.kind();
        match tokio::time::timeout(self.settings.sms_answer_within, &mut sending).await {
            Ok(Ok(Ok(()))) => {
                stats.sent.inc();
                Ok(sent)
            }
            Ok(result) => {
                let error = result.map_or_else(|e| e.to_string(), |r| r.err().map(|e| e.to_string()).unwrap_or_default());
                tracing::error!(gateway = kind, error = error.as_str(), "SMS could not be sent");
                stats.failed.inc();
                Err(Reason::SmsFailed)
            }
            Err(_) => {
                stats.pending.inc();
                let account = account.to_owned();
                tokio::spawn(async move {
                    match sending.await {
                        Ok(Ok(())) => {
                            stats.late_sent.inc();
                            tracing::info!(gateway = kind, user = account.as_str(), "SMS taken by the gateway after the answer went out");
                        }
                        result => {
                            stats.late_failed.inc();
                            let error = result.map_or_else(|e| e.to_string(), |r| r.err().map(|e| e.to_string()).unwrap_or_default());
                            tracing::error!(
                                gateway = kind,
                                user = account.as_str(),
                                error = error.as_str(),
                                "SMS failed after the challenge went out: the user gets no code"
                            );
                        }
                    }
                });
                Ok(SentCode { pending: true, ..sent })
            }
        }
    }
}
