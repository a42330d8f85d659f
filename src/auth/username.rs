//! From the User-Name a NAS sent to the name the directory is asked about: trimmed, our own
//! NetBIOS domain (`EXAMPLE\alice`) dropped, our own realm (`alice@example.test`) noted as a
//! fallback. Never case-folded: the directory decides which account a name denotes, and every
//! spelling it resolves to one account meets that account's tokens, lockouts and SMS limits.

use crate::directory::LoginName;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsernameRules {
    /// NetBIOS domains whose `DOMAIN\user` prefix is dropped (compared case-insensitively).
    pub domains: Vec<String>,
    /// Realms whose `user@realm` is also tried as `user` (compared case-insensitively).
    pub realms: Vec<String>,
}

impl UsernameRules {
    /// The name to look up: trimmed, a `DOMAIN\` prefix of ours dropped; for `user@realm` with a
    /// realm of ours, `user` as the fallback.
    pub fn login_name(&self, raw: &str) -> LoginName {
        LoginName::normalise(raw, &self.domains, &self.realms)
    }

    /// Where versions before one identity per account filed this login's tokens: the name
    /// lower-cased, without our realm.
    pub fn legacy_key(login: &LoginName) -> String {
        login.local_part().unwrap_or(login.name()).to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_domain_is_dropped_our_realm_is_a_fallback_and_case_is_kept() {
        let rules = UsernameRules { domains: vec!["EXAMPLE".into()], realms: vec!["example.test".into()] };
        let login = |raw: &str| rules.login_name(raw);
        let plain = |name: &str| UsernameRules::default().login_name(name);
        assert_eq!(login(" Alice "), plain("Alice"), "trimmed, the case kept for the directory");
        assert_eq!(login("example\\Alice"), plain("Alice"));
        let upn = login("Alice@EXAMPLE.test");
        assert_eq!((upn.name(), upn.local_part()), ("Alice@EXAMPLE.test", Some("Alice")));
        assert_eq!(login("OTHER\\alice"), plain("OTHER\\alice"), "a foreign domain is not ours to strip");
        assert_eq!(login("alice@other.test"), plain("alice@other.test"), "a UPN is looked up as a UPN");
        assert_eq!(login("@example.test").local_part(), None);
        assert_eq!(login("\u{212a}alle"), plain("\u{212a}alle"), "KELVIN SIGN is not folded to k");
        assert_eq!(UsernameRules::legacy_key(&login("Alice@EXAMPLE.test")), "alice");
        assert_eq!(UsernameRules::legacy_key(&login("alice@other.test")), "alice@other.test");
    }
}
