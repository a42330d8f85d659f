//! The decision's own sections — `[lockout]` and `[usernames]` — and [`AuthSettings`] put
//! together from them and from what `[totp]`, `[sms]` and `[messages]` say about the factors.

use std::time::Duration;

use serde::Deserialize;

use super::messages::MessagesSection;
use super::{AuthSettings, UsernameRules};
use crate::otp::settings::TotpSettings;
use crate::settings::Invalid;
use crate::sms::settings::SmsCodeSettings;
use crate::store::LockoutPolicy;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutSection {
    max_failures: u32,
    #[serde(with = "humantime_serde")]
    duration: Duration,
    #[serde(with = "humantime_serde")]
    max_duration: Duration,
    password_max_failures: u32,
    #[serde(with = "humantime_serde")]
    password_duration: Duration,
    #[serde(with = "humantime_serde")]
    password_max_duration: Duration,
}

// Every missing key comes from here, so each default value is written once.
impl Default for LockoutSection {
    fn default() -> Self {
        Self {
            max_failures: 5,
            duration: Duration::from_secs(300),
            max_duration: Duration::from_secs(3600),
            // Below the 5 to 10 wrong passwords AD domains are commonly set to lock at, so a
            // spray through radmfa stops here first.
            password_max_failures: 4,
            password_duration: Duration::from_secs(15 * 60),
            password_max_duration: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsernamesSection {
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    realms: Vec<String>,
}

/// `[helpdesk]`: what the help desk (portal and CLI) may give a user who lost their phone.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HelpdeskSection {
    #[serde(with = "humantime_serde")]
    max_temporary_code_validity: Duration,
    max_temporary_code_uses: u32,
}

impl Default for HelpdeskSection {
    fn default() -> Self {
        Self { max_temporary_code_validity: Duration::from_secs(3 * 24 * 3600), max_temporary_code_uses: 20 }
    }
}

/// What a temporary code may be issued for (see [`HelpdeskSection`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelpdeskSettings {
    pub max_temporary_code_validity: Duration,
    pub max_temporary_code_uses: u32,
}

impl Default for HelpdeskSettings {
    fn default() -> Self {
        let d = HelpdeskSection::default();
        Self { max_temporary_code_validity: d.max_temporary_code_validity, max_temporary_code_uses: d.max_temporary_code_uses }
    }
}

impl HelpdeskSection {
    fn build(self) -> Result<HelpdeskSettings, Invalid> {
        let validity = self.max_temporary_code_validity;
        if validity < Duration::from_secs(60) || validity > Duration::from_secs(30 * 24 * 3600) {
            return Err(Invalid::new("helpdesk.max_temporary_code_validity", "must be between 1m and 30d"));
        }
        if !(1..=1000).contains(&self.max_temporary_code_uses) {
            return Err(Invalid::new("helpdesk.max_temporary_code_uses", "must be between 1 and 1000"));
        }
        Ok(HelpdeskSettings { max_temporary_code_validity: validity, max_temporary_code_uses: self.max_temporary_code_uses })
    }
}

/// The sections [`AuthSettings`] is made of, each already checked by its owner.
pub struct Sections {
    pub totp: TotpSettings,
    pub sms: SmsCodeSettings,
    pub lockout: LockoutSection,
    pub messages: MessagesSection,
    pub usernames: UsernamesSection,
    pub helpdesk: HelpdeskSection,
    /// How long a NAS retries a request: the server's `cache_ttl`.
    pub retry_window: Duration,
}

impl LockoutSection {
    /// Wrong codes, then wrong passwords (whose failures are forgotten as AD's are).
    fn build(self) -> Result<(LockoutPolicy, LockoutPolicy), Invalid> {
        if self.max_failures == 0 {
            return Err(Invalid::new("lockout.max_failures", "must be at least 1"));
        }
        if self.password_max_failures == 0 {
            return Err(Invalid::new("lockout.password_max_failures", "must be at least 1"));
        }
        let codes =
            LockoutPolicy { max_failures: self.max_failures, duration: self.duration, max_duration: self.max_duration, forget_after: None };
        let passwords = LockoutPolicy {
            max_failures: self.password_max_failures,
            duration: self.password_duration,
            max_duration: self.password_max_duration,
            forget_after: Some(self.password_duration),
        };
        Ok((codes, passwords))
    }
}

impl Sections {
    /// The settings, and warnings for the admin (keys that still parse but no longer act).
    /// Errors name the key from the top of the file (`lockout.max_failures`).
    pub fn build(self) -> Result<(AuthSettings, Vec<String>), Invalid> {
        let (lockout, password_lockout) = self.lockout.build()?;
        let (messages, retired) = self.messages.build().map_err(|e| e.within("messages"))?;
        let warnings = retired
            .into_iter()
            .map(|key| {
                format!(
                    "messages.{key} is no longer sent: every Access-Reject says messages.rejected, so the NAS learns nothing from the reason"
                )
            })
            .collect();
        let settings = AuthSettings {
            totp: self.totp.params,
            totp_window: self.totp.window,
            lockout,
            password_lockout,
            challenge_ttl: self.totp.challenge_timeout,
            sms_validity: self.sms.validity,
            sms_tries: self.sms.tries,
            sms_limits: self.sms.limits,
            sms_answer_within: self.sms.answer_within,
            default_country_code: self.sms.default_country_code,
            messages,
            usernames: UsernameRules { domains: self.usernames.domains, realms: self.usernames.realms },
            retry_window: self.retry_window,
            helpdesk: self.helpdesk.build()?,
        };
        Ok((settings, warnings))
    }
}
