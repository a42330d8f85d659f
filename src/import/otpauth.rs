//! `--format otpauth`: one `otpauth://totp/Issuer:user?secret=...` URI a line, as authenticator
//! apps and most products export them (Google's Key Uri Format). Blank lines and `#` comments
//! are skipped. The user is the label's account part; the token's name the `issuer` parameter,
//! else the label's issuer part, else the default. Counter-based (`hotp`) URIs are refused.

use percent_encoding::percent_decode_str;
use zeroize::Zeroizing;

use super::{Entry, Imported, Options, Place, Refused, number, token};
use crate::otp::{Algorithm, TotpParams, totp};

/// Every line's entry.
pub fn read(text: &str, options: &Options<'_>) -> Vec<Entry> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        entries.push(Entry { place: Place::Line(index as u64 + 1), read: uri(line, options.default_name) });
    }
    entries
}

/// One URI's token. Nothing of the URI but its label is repeated in a refusal.
fn uri(line: &str, default_name: &str) -> Result<Imported, Refused> {
    let not_uri = || Refused::new(None, "not an otpauth:// URI");
    let (scheme, rest) = line.split_once("://").ok_or_else(not_uri)?;
    if !scheme.eq_ignore_ascii_case("otpauth") {
        return Err(not_uri());
    }
    let (kind, rest) = rest.split_once('/').ok_or_else(not_uri)?;
    let rest = rest.split_once('#').map_or(rest, |(uri, _fragment)| uri);
    let (label, query) = rest.split_once('?').unwrap_or((rest, ""));
    let label = percent_decode_str(label).decode_utf8().map_err(|_| Refused::new(None, "the label is not UTF-8"))?;
    // `Issuer:account`, or `account` alone; a space may follow the colon.
    let (label_issuer, user) = match label.split_once(':') {
        Some((issuer, account)) => (Some(issuer.trim()), account.trim()),
        None => (None, label.trim()),
    };
    let refused = |reason: &str| Refused::new(Some(user).filter(|u| !u.is_empty()), reason);
    if kind.eq_ignore_ascii_case("hotp") {
        return Err(refused("an HOTP (counter-based) token: radmfa takes TOTP only"));
    }
    if !kind.eq_ignore_ascii_case("totp") {
        return Err(refused("neither otpauth://totp/ nor otpauth://hotp/"));
    }
    let mut params = TotpParams::default();
    let (mut secret, mut issuer) = (None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.to_ascii_lowercase().as_str() {
            // Two would leave which one the user's app took to a guess.
            "secret" if secret.is_some() => return Err(refused("secret given twice")),
            "secret" => secret = Some(Zeroizing::new(value.into_owned())),
            "issuer" => issuer = Some(value.into_owned()),
            "digits" => params.digits = number("digits", &value).map_err(|e| refused(&e))?,
            "period" => params.period = number("period", &value).map_err(|e| refused(&e))?,
            "algorithm" => {
                params.algorithm = value.parse::<Algorithm>().map_err(|_| refused("algorithm: SHA1, SHA256 or SHA512"))?;
            }
            // image, counter, and what other products add: nothing a TOTP token needs.
            _ => {}
        }
    }
    let secret = secret.ok_or_else(|| refused("no secret"))?;
    let secret = totp::from_base32(&secret).map_err(|e| refused(&format!("secret: {e}")))?;
    let name = issuer.as_deref().or(label_issuer).unwrap_or_default();
    token(user, name, default_name, params, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    fn entries(text: &str) -> Vec<Entry> {
        read(text, &Options { default_name: "Authenticator", ..Options::default() })
    }

    #[test]
    fn uris_as_apps_and_products_export_them() {
        let text = format!(
            "# exported 2026-12-01\n\n\
             otpauth://totp/Example%20Region:alice@example.test?secret={SECRET_B32}&issuer=Example%20Region\n\
             otpauth://TOTP/Old%20VPN:%20bob?secret={}&digits=8&period=60&algorithm=SHA256\r\n\
             otpauth://totp/carol?secret={SECRET_B32}&image=https%3A%2F%2Fexample.test%2Flogo.png#frag\n",
            SECRET_B32.to_lowercase()
        );
        let entries = entries(&text);
        let places: Vec<_> = entries.iter().map(|e| e.place.to_string()).collect();
        assert_eq!(places, ["line 3", "line 4", "line 5"]);
        let tokens: Vec<&Imported> = entries.iter().map(|e| e.read.as_ref().unwrap()).collect();
        assert_eq!((tokens[0].user.as_str(), tokens[0].name.as_str()), ("alice@example.test", "Example Region"));
        assert_eq!(tokens[0].secret.expose(), b"12345678901234567890");
        assert_eq!(tokens[0].params, TotpParams::default());
        assert_eq!((tokens[1].user.as_str(), tokens[1].name.as_str()), ("bob", "Old VPN"), "the label's issuer when no parameter");
        assert_eq!(tokens[1].params, TotpParams { algorithm: Algorithm::Sha256, digits: 8, period: 60 });
        assert_eq!(tokens[1].secret.expose(), b"12345678901234567890");
        assert_eq!((tokens[2].user.as_str(), tokens[2].name.as_str()), ("carol", "Authenticator"));
    }

    #[test]
    fn every_bad_line_is_refused_by_itself_and_never_with_its_secret() {
        let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
        let lines = [
            ("https://example.test/alice", None, "not an otpauth:// URI"),
            ("otpauth:totp/alice", None, "not an otpauth:// URI"),
            ("otpauth://totp", None, "not an otpauth:// URI"),
            (
                "otpauth://hotp/Example:dave?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&counter=4",
                Some("dave"),
                "an HOTP (counter-based) token: radmfa takes TOTP only",
            ),
            ("otpauth://motp/dave?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", Some("dave"), "neither otpauth://totp/ nor otpauth://hotp/"),
            ("otpauth://totp/Example:dave", Some("dave"), "no secret"),
            (
                "otpauth://totp/dave?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PX1",
                Some("dave"),
                "secret: not base32 (a character other than A-Z and 2-7)",
            ),
            ("otpauth://totp/dave?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&digits=six", Some("dave"), "digits: not a number"),
            ("otpauth://totp/dave?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&digits=10", Some("dave"), "digits must be 6, 7 or 8"),
            ("otpauth://totp/dave?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&period=0", Some("dave"), "period must be 1..=300 seconds"),
            (
                "otpauth://totp/dave?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&algorithm=MD5",
                Some("dave"),
                "algorithm: SHA1, SHA256 or SHA512",
            ),
            ("otpauth://totp/dave?secret=JBSWY3DP", Some("dave"), "the secret is 5 bytes: too short (at least 10; 20 is usual)"),
            ("otpauth://totp/erin?secret=GEZDGNBVGY3TQOJQ&secret=GEZDGNBVGY3TQOJR", Some("erin"), "secret given twice"),
            ("otpauth://totp/Example:?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", None, "no user"),
            ("otpauth://totp/%FF?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", None, "the label is not UTF-8"),
        ];
        let text: String = lines.iter().map(|(line, ..)| format!("{line}\n")).collect();
        let entries = entries(&text);
        assert_eq!(entries.len(), lines.len());
        for (entry, (line, user, reason)) in entries.iter().zip(lines) {
            let refused = entry.read.as_ref().unwrap_err();
            assert_eq!((refused.user.as_deref(), refused.reason.as_str()), (user, reason), "{line}");
            assert!(!refused.reason.contains(&secret[..8]) && !format!("{entry:?}").contains(&secret[..8]), "{line}");
        }
    }
}
