//! Mobile numbers: normalised to E.164 for gateways, masked for Reply-Messages.

/// E.164 (`+46701234567`) from how people write numbers: spaces, dashes, dots and brackets
/// dropped, `00` read as `+`, and a national number (leading `0`) given the default country code.
pub fn to_e164(raw: &str, default_country_code: &str) -> Option<String> {
    let cleaned: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}')).collect();
    let digits = if let Some(rest) = cleaned.strip_prefix('+') {
        rest.to_owned()
    } else if let Some(rest) = cleaned.strip_prefix("00") {
        rest.to_owned()
    } else if let Some(rest) = cleaned.strip_prefix('0') {
        format!("{}{rest}", default_country_code.trim_start_matches('+'))
    } else {
        return None;
    };
    let valid = (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    valid.then(|| format!("+{digits}"))
}

/// `+46 70*** **67`: enough for the user to recognise their phone, too little to harvest.
pub fn mask(e164: &str) -> String {
    let digits = e164.trim_start_matches('+');
    if digits.len() < 8 {
        return "***".into();
    }
    let (country, rest) = digits.split_at(2);
    let (head, _) = rest.split_at(2);
    let tail = &digits[digits.len() - 2..];
    format!("+{country} {head}*** **{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_normalise_to_e164() {
        assert_eq!(to_e164("+46701234567", "46").as_deref(), Some("+46701234567"));
        assert_eq!(to_e164("070-123 45 67", "46").as_deref(), Some("+46701234567"));
        assert_eq!(to_e164("0046 70 123 45 67", "46").as_deref(), Some("+46701234567"));
        assert_eq!(to_e164("(070) 123.45.67", "+46").as_deref(), Some("+46701234567"));
        assert_eq!(to_e164("701234567", "46"), None, "no country, no trunk prefix: ambiguous");
        assert_eq!(to_e164("+46 70 CALL ME", "46"), None);
        assert_eq!(to_e164("+123", "46"), None);
        assert_eq!(to_e164("", "46"), None);
    }

    #[test]
    fn masking_keeps_country_prefix_and_last_two() {
        assert_eq!(mask("+46701234567"), "+46 70*** **67");
        assert_eq!(mask("+4412"), "***");
    }
}
