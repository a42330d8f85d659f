//! One spelling per account: `ALICE`, `EXAMPLE\alice` and `alice@example.test` are the same user
//! when the domain and realm are configured as ours. Tokens, lockouts and SMS limits are all
//! keyed by this form, so no spelling gets a second set of tries.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsernameRules {
    /// NetBIOS domains whose `DOMAIN\user` prefix is dropped (compared case-insensitively).
    pub domains: Vec<String>,
    /// Realms whose `user@realm` suffix is dropped (compared case-insensitively).
    pub realms: Vec<String>,
}

impl UsernameRules {
    /// Trimmed, prefix/suffix of our own domains and realms removed, lower-cased.
    pub fn normalise(&self, raw: &str) -> String {
        let name = raw.trim();
        let name = match name.split_once('\\') {
            Some((domain, user)) if self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) => user,
            _ => name,
        };
        let name = match name.rsplit_once('@') {
            Some((user, realm)) if self.realms.iter().any(|r| r.eq_ignore_ascii_case(realm)) => user,
            _ => name,
        };
        name.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_account_meet() {
        let rules = UsernameRules { domains: vec!["EXAMPLE".into()], realms: vec!["example.test".into()] };
        for spelling in ["alice", " ALICE ", "example\\Alice", "EXAMPLE\\alice", "alice@EXAMPLE.test", "Alice@example.test"] {
            assert_eq!(rules.normalise(spelling), "alice", "{spelling}");
        }
        assert_eq!(rules.normalise("OTHER\\alice"), "other\\alice", "a foreign domain is not ours to strip");
        assert_eq!(rules.normalise("alice@other.test"), "alice@other.test");
        assert_eq!(UsernameRules::default().normalise("EXAMPLE\\Åsa"), "example\\åsa");
    }
}
