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
    /// Access-Reject for a wrong password or code: deliberately says no more than that.
    pub rejected: String,
    pub sms_failed: String,
    pub sms_limit: String,
    pub no_mobile: String,
    pub no_token: String,
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
                sms_failed: "The SMS could not be sent; try again later".into(),
                sms_limit: "Too many SMS codes requested; try again later".into(),
                no_mobile: "No mobile number is registered for you; contact the help desk".into(),
                no_token: "No authenticator app is registered for you; contact the help desk".into(),
                sms_text: "Your one-time code: {code}".into(),
            },
            Language::Sv => Self {
                challenge_totp: "Ange koden från din autentiseringsapp, eller skriv sms".into(),
                challenge_sms: "Ange koden som skickades till {mobile}".into(),
                wrong_code_retry: "Fel kod, försök igen".into(),
                rejected: "Inloggningen misslyckades".into(),
                sms_failed: "Sms:et kunde inte skickas, försök igen senare".into(),
                sms_limit: "För många sms-koder begärda, försök igen senare".into(),
                no_mobile: "Inget mobilnummer finns registrerat för dig, kontakta IT-supporten".into(),
                no_token: "Ingen autentiseringsapp finns registrerad för dig, kontakta IT-supporten".into(),
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
    pub sms_failed: Option<String>,
    pub sms_limit: Option<String>,
    pub no_mobile: Option<String>,
    pub no_token: Option<String>,
    pub sms_text: Option<String>,
}

impl MessagesSection {
    pub fn build(self) -> Result<Messages, String> {
        let mut m = Messages::for_language(self.language.unwrap_or(Language::En));
        let overrides = [
            (self.challenge_totp, &mut m.challenge_totp),
            (self.challenge_sms, &mut m.challenge_sms),
            (self.wrong_code_retry, &mut m.wrong_code_retry),
            (self.rejected, &mut m.rejected),
            (self.sms_failed, &mut m.sms_failed),
            (self.sms_limit, &mut m.sms_limit),
            (self.no_mobile, &mut m.no_mobile),
            (self.no_token, &mut m.no_token),
            (self.sms_text, &mut m.sms_text),
        ];
        for (value, slot) in overrides {
            if let Some(value) = value {
                *slot = value;
            }
        }
        if !m.sms_text.contains("{code}") {
            return Err("messages.sms_text must contain {code}".into());
        }
        Ok(m)
    }
}
