//! What the user reads: Reply-Message texts and the SMS text, in Swedish and English.
//!
//! Every text is fixed by configuration; none is built from what the client sent (BlastRADIUS).
//! `{mobile}` (masked) and `{code}` are the only placeholders.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Messages {
    /// Access-Challenge after the password, for a user with an authenticator app.
    pub challenge_totp: String,
    /// Access-Challenge after an SMS was sent; `{mobile}` is the masked number.
    pub challenge_sms: String,
    /// Access-Challenge after a wrong SMS code with tries left.
    pub wrong_code_retry: String,
    /// Every Access-Reject, whatever the reason: deliberately says no more than that.
    pub rejected: String,
    /// The SMS itself; `{code}` is the code.
    pub sms_text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Sv,
}

impl Messages {
    pub fn for_language(language: Language) -> Self {
        match language {
            Language::En => Self {
                challenge_totp: "Enter the code from your authenticator app, or type sms".into(),
                challenge_sms: "Enter the code sent to {mobile}".into(),
                wrong_code_retry: "Wrong code, try again".into(),
                rejected: "Authentication failed".into(),
                sms_text: "Your one-time code: {code}".into(),
            },
            Language::Sv => Self {
                challenge_totp: "Ange koden från din autentiseringsapp, eller skriv sms".into(),
                challenge_sms: "Ange koden som skickades till {mobile}".into(),
                wrong_code_retry: "Fel kod, försök igen".into(),
                rejected: "Inloggningen misslyckades".into(),
                sms_text: "Din engångskod: {code}".into(),
            },
        }
    }
}

/// `[messages]` in the config: a language, and any text overridden.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesSection {
    pub language: Option<Language>,
    pub challenge_totp: Option<String>,
    pub challenge_sms: Option<String>,
    pub wrong_code_retry: Option<String>,
    pub rejected: Option<String>,
    /// Retired (every reject says `rejected`), still accepted so old configs load.
    pub sms_failed: Option<String>,
    pub sms_limit: Option<String>,
    pub no_mobile: Option<String>,
    pub no_token: Option<String>,
    pub sms_text: Option<String>,
}

impl MessagesSection {
    /// The texts, and the retired keys the file still sets. An error names the key within the
    /// section.
    pub fn build(self) -> Result<(Messages, Vec<&'static str>), crate::settings::Invalid> {
        let retired: Vec<&'static str> = [
            ("sms_failed", self.sms_failed.is_some()),
            ("sms_limit", self.sms_limit.is_some()),
            ("no_mobile", self.no_mobile.is_some()),
            ("no_token", self.no_token.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        let mut m = Messages::for_language(self.language.unwrap_or(Language::En));
        let overrides = [
            (self.challenge_totp, &mut m.challenge_totp),
            (self.challenge_sms, &mut m.challenge_sms),
            (self.wrong_code_retry, &mut m.wrong_code_retry),
            (self.rejected, &mut m.rejected),
            (self.sms_text, &mut m.sms_text),
        ];
        for (value, slot) in overrides {
            if let Some(value) = value {
                *slot = value;
            }
        }
        if !m.sms_text.contains("{code}") {
            return Err(crate::settings::Invalid::new("sms_text", "must contain {code}"));
        }
        Ok((m, retired))
    }
}
