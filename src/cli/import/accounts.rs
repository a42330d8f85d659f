//! Whose token each entry is. Without `--check-users`, no directory is asked: a name is filed
//! under the spelling a login of it looks for first (lower-cased, our realm dropped: its
//! [`UsernameRules::legacy_key`]), which the user's first login moves to the account the
//! directory resolves it to, as it does for `token add --force`. With it, each name is looked
//! up (a few at a time) and filed under its account; unknown names are refused.

use std::collections::{BTreeSet, HashMap};

use futures_util::stream::{self, StreamExt};

use super::CliError;
use crate::auth::{Authenticator, Reason, UsernameRules, shown};
use crate::directory::{Denial, LoginName};

/// Directory look-ups in flight at once: enough to import 10,000 users in seconds, few enough
/// for a DC serving logins meanwhile.
const LOOKUPS_AT_ONCE: usize = 8;

/// Where a name's token is filed, or why it is not.
pub(super) struct Owner {
    pub(super) account: String,
    /// The name as a login looks it up.
    pub(super) login: LoginName,
}

/// The owner of each of `names`; `Err` when the directory cannot be asked (nothing is written).
pub(super) async fn owners(
    auth: &Authenticator,
    names: BTreeSet<String>,
    check: bool,
) -> Result<HashMap<String, Result<Owner, String>>, CliError> {
    if !check {
        return Ok(names
            .into_iter()
            .map(|name| {
                let login = auth.login_name(&name);
                let account = UsernameRules::legacy_key(&login);
                (name, Ok(Owner { account, login }))
            })
            .collect());
    }
    // Found, not resolved: resolving moves tokens, and a dry run or a refused file writes nothing.
    let found: Vec<_> = stream::iter(names)
        .map(|name| async move {
            let login = auth.login_name(&name);
            let found = auth.find(&login).await;
            (name, login, found)
        })
        .buffer_unordered(LOOKUPS_AT_ONCE)
        .collect()
        .await;
    let mut owners = HashMap::with_capacity(found.len());
    for (name, login, found) in found {
        let owner = match found {
            Ok(account) => Ok(Owner { account: account.id, login }),
            Err(Reason::Directory(Denial::NoSuchUser)) => Err("the directory has no such user".to_owned()),
            Err(reason) => {
                return Err(
                    format!("the directory could not be asked about {} ({}); nothing was written", shown(&name), reason.as_str()).into()
                );
            }
        };
        owners.insert(name, owner);
    }
    Ok(owners)
}

/// Who has tokens now, by the spelling a login of their name is filed under first.
pub(super) struct Holders(HashMap<String, BTreeSet<String>>);

impl Holders {
    pub(super) fn of<'a>(owners: impl IntoIterator<Item = &'a str>) -> Self {
        let mut by_spelling: HashMap<String, BTreeSet<String>> = HashMap::new();
        for owner in owners {
            by_spelling.entry(owner.to_lowercase()).or_default().insert(owner.to_owned());
        }
        Self(by_spelling)
    }

    /// Another spelling than `account` of the same name that holds tokens: an account a login
    /// moved them to, which this import (not asking the directory) cannot tell from another.
    pub(super) fn other_spelling(&self, account: &str) -> Option<&str> {
        self.0.get(&account.to_lowercase())?.iter().map(String::as_str).find(|held| *held != account)
    }

    /// Whether tokens are filed under exactly `owner`.
    pub(super) fn holds(&self, owner: &str) -> bool {
        self.0.get(&owner.to_lowercase()).is_some_and(|held| held.contains(owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_spelling_holding_tokens_is_found() {
        let holders = Holders::of(["JSmith", "alice", "bob", "Bob"]);
        assert_eq!(holders.other_spelling("jsmith"), Some("JSmith"), "a login moved jsmith's tokens to the account");
        assert_eq!(holders.other_spelling("alice"), None);
        assert_eq!(holders.other_spelling("carol"), None);
        assert_eq!(holders.other_spelling("bob"), Some("Bob"));
        assert!(holders.holds("JSmith") && !holders.holds("jsmith"));
    }
}
