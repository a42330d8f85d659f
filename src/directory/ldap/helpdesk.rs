//! What the help desk asks of the directory: accounts found by part of a name or mail, which
//! of the configured groups (the help desk role, the groups that matter) an account is in, and
//! whether AD lets the account log in.
//!
//! The search text reaches the filter only RFC 4515-escaped, so `*`, `(`, `)` and `\` are
//! characters to look for, never filter syntax (a text with NUL or another control character finds
//! nothing), and the server is asked for no more entries than are shown. Group membership is the login's own (`groups`), so the role costs the DC what a
//! login's groups cost: nothing once the group graph is cached.

use std::collections::HashSet;

use ldap3::{Scope, SearchEntry, SearchOptions, ldap_escape};

use super::failure::Failure;
use super::pool::Role;
use super::{LdapDirectory, ad};
use crate::directory::{Account, AccountStatus, MAX_SEARCH_RESULTS};

/// Words of a search that count; more would only make the filter longer, not the answer better.
const MAX_WORDS: usize = 5;

/// Held by AD (and by inetOrgPerson, RFC 2798): the name shown for an account, often "Surname,
/// Given" — which a search of "given surname" finds through its words.
const DISPLAY_NAME: &str = "displayName";

/// The filter for the help desk's search: entries `user_filter` takes for user accounts (its
/// `{user}` as `*`) where each word of `text` is part of one of `attributes`. One word is "an
/// attribute contains it"; "Anna Svensson" finds the account whose display name is "Svensson,
/// Anna". `None` for a text of no words, and for one with control characters: no name holds
/// them, and a server may cut a value at its NUL (Samba does), finding more than was typed.
pub(super) fn search_filter(user_filter: &str, attributes: &[&str], text: &str) -> Option<String> {
    if text.split_whitespace().any(|word| word.chars().any(char::is_control)) {
        return None;
    }
    let words: Vec<String> = text.split_whitespace().take(MAX_WORDS).map(ldap_escape).map(|w| w.into_owned()).collect();
    if words.is_empty() || attributes.is_empty() {
        return None;
    }
    let accounts = user_filter.replace("{user}", "*");
    let each_word: String = words
        .iter()
        .map(|word| {
            let alternatives: String = attributes.iter().map(|attribute| format!("({attribute}=*{word}*)")).collect();
            format!("(|{alternatives})")
        })
        .collect();
    Some(format!("(&{accounts}{each_word})"))
}

/// The attribute a filter compares `{user}` with, as in `(userPrincipalName={user})`, if one
/// is: the UPN's attribute, found where `upn_filter` says it is.
pub(super) fn attribute_compared_with_user(filter: &str) -> Option<&str> {
    let before = &filter[..filter.find("={user}")?];
    let name = &before[before.rfind('(')? + 1..];
    let is_attribute = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ';');
    is_attribute.then_some(name)
}

impl LdapDirectory {
    /// The attributes the help desk's search looks in, each once: the account name, given
    /// name, surname, display name, mail, and the UPN's attribute when `upn_filter` names one.
    fn searched_attributes(&self) -> Vec<&str> {
        let a = &self.settings.attributes;
        let upn = self.settings.upn_filter.as_deref().and_then(attribute_compared_with_user);
        let mut attributes: Vec<&str> = Vec::new();
        for name in [Some(a.username.as_str()), Some(&a.given_name), Some(&a.surname), Some(DISPLAY_NAME), Some(&a.email), upn]
            .into_iter()
            .flatten()
        {
            if !attributes.iter().any(|seen| seen.eq_ignore_ascii_case(name)) {
                attributes.push(name);
            }
        }
        attributes
    }

    /// Accounts (as `find` builds them) with every word of `text` in their names or mail: at
    /// most `limit` (and [`MAX_SEARCH_RESULTS`]), which is all the server is asked for. Entries
    /// without a DN (referrals) or without an account name are no accounts.
    pub(super) async fn search_accounts(&self, text: &str, limit: usize) -> Result<Vec<Account>, Failure> {
        let limit = limit.min(MAX_SEARCH_RESULTS);
        let Some(filter) = search_filter(&self.settings.user_filter, &self.searched_attributes(), text) else { return Ok(Vec::new()) };
        if limit == 0 {
            return Ok(Vec::new());
        }
        // At most MAX_SEARCH_RESULTS: fits.
        let size_limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let entries = self
            .pool
            .run(Role::Service, |mut ldap| {
                let filter = &filter;
                async move {
                    ldap.with_search_options(SearchOptions::new().sizelimit(size_limit));
                    let search =
                        self.pool.search(&mut ldap, &self.settings.base_dn, Scope::Subtree, filter, self.account_attributes()).await;
                    let entries = search.and_then(|(entries, result)| match result.rc {
                        // 4, sizeLimitExceeded: these, and there are more.
                        0 | 4 => Ok(entries),
                        _ => Err(Failure::answered("the help desk's search", &result)),
                    });
                    (ldap, entries)
                }
            })
            .await?;
        let username = &self.settings.attributes.username;
        let accounts = entries
            .into_iter()
            .filter(|entry| !entry.dn.is_empty() && super::values(entry, username).iter().any(|v| !v.trim().is_empty()))
            .filter_map(|entry| {
                self.account_of(entry)
                    .map_err(|failure| tracing::debug!(error = %failure.message, "an entry the search found is no account"))
                    .ok()
            })
            .take(limit)
            .collect();
        Ok(accounts)
    }

    /// Which of `configured` (group DNs as configured) the account is in — directly, through
    /// nesting, or as its primary group, exactly as `required_groups` counts — in their order
    /// and spelling. Membership is the account's as it was read (its `memberOf`); what groups
    /// are in comes from the cached group graph.
    pub(super) async fn groups_among(&self, account: &Account, configured: &[String]) -> Result<Vec<String>, Failure> {
        if configured.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = self
            .spelled_dns(configured, |dn| {
                tracing::warn!(group = %dn, "a group asked about was not found in the directory: nobody is in it");
            })
            .await?;
        if wanted.iter().all(Option::is_none) {
            return Ok(Vec::new());
        }
        let held = if self.settings.nested_groups {
            self.membership_of(&account.locator, &account.profile.groups, account.primary_group.as_deref()).await?.all
        } else {
            account.profile.groups.clone()
        };
        let held: HashSet<String> = held.iter().map(|dn| dn.to_ascii_lowercase()).collect();
        let is_held = |spelled: &Option<String>| spelled.as_ref().is_some_and(|dn| held.contains(dn));
        Ok(configured.iter().zip(&wanted).filter(|(_, spelled)| is_held(spelled)).map(|(group, _)| group.clone()).collect())
    }

    /// AD's state of the account, from a base read of its entry. An entry that is gone cannot
    /// log in: disabled, the rest unknown.
    pub(super) async fn status_of(&self, account: &Account) -> Result<AccountStatus, Failure> {
        let dn = account.locator.as_str();
        let entry: Option<SearchEntry> = self
            .pool
            .run(Role::Service, |mut ldap| async move {
                let read = self.pool.search(&mut ldap, dn, Scope::Base, "(objectClass=*)", ad::STATUS_ATTRIBUTES.to_vec()).await;
                let entry = read.and_then(|(entries, result)| match result.rc {
                    0 => Ok(entries.into_iter().find(|e| !e.dn.is_empty())),
                    32 => Ok(None),
                    _ => Err(Failure::answered("reading an account's state", &result)),
                });
                (ldap, entry)
            })
            .await?;
        match entry {
            Some(entry) => Ok(ad::account_status(&entry)),
            None => {
                tracing::debug!(dn = %dn, "the account's entry is gone");
                Ok(AccountStatus { disabled: true, ..AccountStatus::default() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_FILTER: &str = "(&(objectClass=user)(sAMAccountName={user}))";
    const ATTRIBUTES: [&str; 3] = ["sAMAccountName", "sn", "mail"];

    fn filter(text: &str) -> String {
        search_filter(USER_FILTER, &ATTRIBUTES, text).unwrap()
    }

    #[test]
    fn one_word_is_looked_for_in_each_attribute_of_user_accounts() {
        assert_eq!(filter("  alice "), "(&(&(objectClass=user)(sAMAccountName=*))(|(sAMAccountName=*alice*)(sn=*alice*)(mail=*alice*)))");
    }

    #[test]
    fn each_word_must_be_in_some_attribute() {
        assert_eq!(
            filter("Anna\tSvensson"),
            "(&(&(objectClass=user)(sAMAccountName=*))(|(sAMAccountName=*Anna*)(sn=*Anna*)(mail=*Anna*))(|(sAMAccountName=*Svensson*)(sn=*Svensson*)(mail=*Svensson*)))"
        );
        let long = filter("a b c d e f g");
        assert_eq!(long.matches("(|").count(), MAX_WORDS, "{long}");
    }

    #[test]
    fn filter_syntax_in_the_text_is_escaped() {
        let injected = filter("*)(|(cn=*");
        assert_eq!(
            injected,
            "(&(&(objectClass=user)(sAMAccountName=*))(|(sAMAccountName=*\\2a\\29\\28|\\28cn=\\2a*)(sn=*\\2a\\29\\28|\\28cn=\\2a*)(mail=*\\2a\\29\\28|\\28cn=\\2a*)))"
        );
        assert_eq!(filter("a\\b"), "(&(&(objectClass=user)(sAMAccountName=*))(|(sAMAccountName=*a\\5cb*)(sn=*a\\5cb*)(mail=*a\\5cb*)))");
        assert_eq!(ldap_escape("x\0y"), "x\\00y", "NUL, were it let through");
        assert_eq!(search_filter(USER_FILTER, &ATTRIBUTES, "agatha\0"), None, "Samba would look for `agatha`");
        assert_eq!(search_filter(USER_FILTER, &ATTRIBUTES, "a\u{7}b c"), None);
        // Whatever the text, the filter has the parentheses of its own clauses, no more.
        for text in ["*)(|(cn=*", "))))", "((((", "\\29", ")(objectClass=*"] {
            let built = filter(text);
            assert_eq!((built.matches('(').count(), built.matches(')').count()), (8, 8), "{text}: {built}");
        }
    }

    #[test]
    fn non_ascii_is_sent_as_utf8() {
        assert_eq!(filter("Åsa"), "(&(&(objectClass=user)(sAMAccountName=*))(|(sAMAccountName=*Åsa*)(sn=*Åsa*)(mail=*Åsa*)))");
        assert!(filter("öberg").contains("(sn=*öberg*)"), "UTF-8 needs no escaping (RFC 4515)");
    }

    #[test]
    fn a_text_of_no_words_searches_nothing() {
        assert_eq!(search_filter(USER_FILTER, &ATTRIBUTES, ""), None);
        assert_eq!(search_filter(USER_FILTER, &ATTRIBUTES, " \t\n "), None);
    }

    #[test]
    fn a_user_filter_of_another_server_is_kept() {
        assert_eq!(search_filter("(uid={user})", &["uid"], "bo"), Some("(&(uid=*)(|(uid=*bo*)))".into()));
    }

    #[test]
    fn the_upn_attribute_is_where_upn_filter_compares_the_name() {
        assert_eq!(attribute_compared_with_user("(&(objectClass=user)(userPrincipalName={user}))"), Some("userPrincipalName"));
        assert_eq!(attribute_compared_with_user("(mail={user})"), Some("mail"));
        assert_eq!(attribute_compared_with_user("(&(objectClass=user)(userPrincipalName=*{user}))"), None);
        assert_eq!(attribute_compared_with_user("(|{user})"), None);
    }
}
