//! Every text of the portal, in English and Swedish, in one place per language.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Sv,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Sv => "sv",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code.trim().to_ascii_lowercase().get(..2)? {
            "en" => Some(Self::En),
            "sv" => Some(Self::Sv),
            _ => None,
        }
    }

    /// The first supported language in an Accept-Language header, by preference order.
    pub fn from_accept_language(header: &str) -> Option<Self> {
        let mut ranked: Vec<(f32, Self)> = header
            .split(',')
            .filter_map(|part| {
                let mut pieces = part.split(';');
                let lang = Self::parse(pieces.next()?)?;
                let q = pieces.find_map(|p| p.trim().strip_prefix("q=")).and_then(|q| q.parse().ok()).unwrap_or(1.0);
                Some((q, lang))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranked.first().map(|(_, lang)| *lang)
    }

    pub fn strings(self) -> &'static Strings {
        match self {
            Self::En => &EN,
            Self::Sv => &SV,
        }
    }
}

pub struct Strings {
    pub title: &'static str,
    pub sign_in: &'static str,
    pub username: &'static str,
    pub password: &'static str,
    pub next: &'static str,
    pub enter_otp: &'static str,
    pub otp_sent: &'static str,
    pub otp_from_app: &'static str,
    pub send_sms_instead: &'static str,
    pub sign_in_failed: &'static str,
    pub no_second_factor: &'static str,
    pub too_many_attempts: &'static str,
    pub sms_failed: &'static str,
    pub general: &'static str,
    pub tokens: &'static str,
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub email: &'static str,
    pub mobile: &'static str,
    pub no_device: &'static str,
    pub add_authenticator: &'static str,
    pub token_name: &'static str,
    pub created: &'static str,
    pub last_used: &'static str,
    pub never: &'static str,
    pub name_step: &'static str,
    pub name_hint: &'static str,
    pub scan_step: &'static str,
    pub scan_hint: &'static str,
    pub secret_hint: &'static str,
    pub confirm_step: &'static str,
    pub confirm_hint: &'static str,
    pub finish: &'static str,
    pub wrong_code: &'static str,
    pub enrollment_expired: &'static str,
    pub enrolled: &'static str,
    pub too_many_tokens: &'static str,
    pub remove: &'static str,
    pub remove_confirm: &'static str,
    pub removed: &'static str,
    pub cancel: &'static str,
    pub sign_out: &'static str,
    pub signed_out: &'static str,
    pub form_expired: &'static str,
    pub unavailable: &'static str,
    pub language: &'static str,
}

static EN: Strings = Strings {
    title: "Two-factor self-service",
    sign_in: "Sign in",
    username: "User name",
    password: "Password",
    next: "Next",
    enter_otp: "Enter OTP",
    otp_sent: "A one-time code was sent by SMS to",
    otp_from_app: "Enter the code from your authenticator app.",
    send_sms_instead: "Send a code by SMS instead",
    sign_in_failed: "Sign-in failed. Check your user name and password.",
    no_second_factor: "You have no authenticator app and no mobile number on file. Contact the help desk to get started.",
    too_many_attempts: "Too many attempts. Wait a while and try again.",
    sms_failed: "The SMS could not be sent. Try again later.",
    general: "General",
    tokens: "Tokens",
    first_name: "First name",
    last_name: "Last name",
    email: "Email",
    mobile: "Mobile",
    no_device: "No device registered",
    add_authenticator: "Add authenticator",
    token_name: "Name",
    created: "Created",
    last_used: "Last used",
    never: "never",
    name_step: "1. Name your authenticator",
    name_hint: "Choose a name you will recognise, for example \"My phone\".",
    scan_step: "2. Scan the QR code",
    scan_hint: "In Microsoft Authenticator choose \"Add work or school account\", then \"Scan QR code\". When the app shows the account, click Next.",
    secret_hint: "Cannot scan? Type this key into the app:",
    confirm_step: "3. Confirm with a code",
    confirm_hint: "Open the account you just added in the app and type the code it shows.",
    finish: "Finish",
    wrong_code: "That code is not right. Try again with the code the app shows now.",
    enrollment_expired: "That took too long; the new authenticator was discarded. Please start again.",
    enrolled: "Your authenticator is ready. Use its code when you sign in.",
    too_many_tokens: "You have as many authenticators as allowed. Remove one first.",
    remove: "Remove",
    remove_confirm: "Remove this authenticator? Its codes will stop working at once.",
    removed: "The authenticator was removed.",
    cancel: "Cancel",
    sign_out: "Sign out",
    signed_out: "You are signed out.",
    form_expired: "The form expired. Please try again.",
    unavailable: "The service cannot be reached right now. Try again in a minute.",
    language: "Svenska",
};

static SV: Strings = Strings {
    title: "Självservice för tvåfaktorsinloggning",
    sign_in: "Logga in",
    username: "Användarnamn",
    password: "Lösenord",
    next: "Nästa",
    enter_otp: "Ange engångskod",
    otp_sent: "En engångskod har skickats med sms till",
    otp_from_app: "Ange koden från din autentiseringsapp.",
    send_sms_instead: "Skicka en kod med sms i stället",
    sign_in_failed: "Inloggningen misslyckades. Kontrollera användarnamn och lösenord.",
    no_second_factor: "Du har varken autentiseringsapp eller mobilnummer registrerat. Kontakta IT-supporten för att komma igång.",
    too_many_attempts: "För många försök. Vänta en stund och försök igen.",
    sms_failed: "Sms:et kunde inte skickas. Försök igen senare.",
    general: "Allmänt",
    tokens: "Tokens",
    first_name: "Förnamn",
    last_name: "Efternamn",
    email: "E-post",
    mobile: "Mobil",
    no_device: "Ingen enhet registrerad",
    add_authenticator: "Lägg till autentiseringsapp",
    token_name: "Namn",
    created: "Skapad",
    last_used: "Senast använd",
    never: "aldrig",
    name_step: "1. Namnge din autentiseringsapp",
    name_hint: "Välj ett namn du känner igen, till exempel \"Min telefon\".",
    scan_step: "2. Skanna QR-koden",
    scan_hint: "I Microsoft Authenticator väljer du \"Lägg till arbets- eller skolkonto\" och sedan \"Skanna QR-kod\". När appen visar kontot klickar du på Nästa.",
    secret_hint: "Går det inte att skanna? Skriv in den här nyckeln i appen:",
    confirm_step: "3. Bekräfta med en kod",
    confirm_hint: "Öppna kontot du just lade till i appen och skriv koden som visas.",
    finish: "Slutför",
    wrong_code: "Koden stämmer inte. Försök igen med koden som appen visar nu.",
    enrollment_expired: "Det tog för lång tid, så den nya autentiseringsappen togs bort. Börja om.",
    enrolled: "Din autentiseringsapp är klar. Använd dess kod när du loggar in.",
    too_many_tokens: "Du har så många autentiseringsappar som tillåts. Ta bort en först.",
    remove: "Ta bort",
    remove_confirm: "Ta bort den här autentiseringsappen? Dess koder slutar fungera direkt.",
    removed: "Autentiseringsappen togs bort.",
    cancel: "Avbryt",
    sign_out: "Logga ut",
    signed_out: "Du är utloggad.",
    form_expired: "Formuläret har gått ut. Försök igen.",
    unavailable: "Tjänsten går inte att nå just nu. Försök igen om en stund.",
    language: "English",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_preferred_supported_language() {
        assert_eq!(Lang::from_accept_language("sv-SE,sv;q=0.9,en;q=0.8"), Some(Lang::Sv));
        assert_eq!(Lang::from_accept_language("de-DE,en;q=0.5,sv;q=0.7"), Some(Lang::Sv));
        assert_eq!(Lang::from_accept_language("en-GB"), Some(Lang::En));
        assert_eq!(Lang::from_accept_language("fr, de"), None);
        assert_eq!(Lang::from_accept_language(""), None);
    }
}
