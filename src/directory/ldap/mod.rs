//! Active Directory (and other LDAP servers) as the directory, through the ldap3 crate.
//!
//! A service account searches for the entry a login name denotes — a name with `@` as a UPN
//! first, as AD itself resolves it — and its `username_attribute` (sAMAccountName), exactly as
//! AD returns it, is the account id everything else is keyed on. The password is then checked by
//! binding as the entry's DN on a connection kept for binds, and groups are read only after that
//! bind succeeded, and only when something needs them (`required_groups`, or reply attributes
//! that name groups): from the entry's `memberOf` (read by the user search) and, for nested
//! membership, a cached graph of what groups are in (`groups`). An append login thus costs the
//! DC one search and one bind, groups or not. Connections and servers are `pool`'s, what a
//! failed operation means `failure`'s. TLS is LDAPS or StartTLS with certificate checking on (a
//! CA file, or the system's roots: `crate::tls`). User input reaches filters only through RFC 4515
//! escaping. AD's bind sub-codes (52e, 533, 775, ...) become audit reasons (`ad`). What the help
//! desk asks — a search, which groups, the account's state — is `helpdesk`'s.

mod ad;
mod failure;
mod groups;
mod helpdesk;
mod pool;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ldap3::{Ldap, Scope, SearchEntry, ldap_escape};

use super::{Account, AccountStatus, Denial, Directory, DirectoryError, LoginName, MAX_ACCOUNT_ID, PasswordCheck, UserProfile};
use crate::secret::Secret;
pub(crate) use crate::tls::client_config;
use failure::Failure;
pub use pool::ServerProbe;
use pool::{Pool, Role};

#[derive(Debug, Clone)]
pub struct LdapSettings {
    /// `ldaps://host:636` or `ldap://host:389` (with `starttls`), tried in order.
    pub urls: Vec<String>,
    pub bind_dn: String,
    pub bind_password: Secret<String>,
    pub base_dn: String,
    /// With `{user}`, e.g. `(&(objectClass=user)(sAMAccountName={user}))`.
    pub user_filter: String,
    /// Used instead for names with `@` (user principal names).
    pub upn_filter: Option<String>,
    /// Group DNs; a user must be in one of them (directly or nested). Empty: no requirement.
    pub required_groups: Vec<String>,
    /// Resolve nested groups (and AD's primary group) through the group graph; else use
    /// `memberOf` as it stands.
    pub nested_groups: bool,
    /// How long what a group is a member of (and a configured group's DN) is trusted before it is
    /// read again.
    pub group_cache_ttl: Duration,
    pub ca_file: Option<PathBuf>,
    pub tls_insecure_skip_verify: bool,
    pub starttls: bool,
    /// For one operation (and for connecting): past it, the server is taken to be busy.
    pub timeout: Duration,
    pub dead_server_backoff: Duration,
    /// Connections of each kind (service, user binds) opened at start.
    pub pool_size: usize,
    /// LDAP operations in flight at once per server (searches and binds), each on a connection
    /// of its own that is kept: more wait, one NAS at a time in turn.
    pub max_connections: usize,
    pub attributes: AttributeMap,
}

/// Which LDAP attributes hold what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeMap {
    pub username: String,
    pub given_name: String,
    pub surname: String,
    pub email: String,
    /// Tried in order: the first present one is the mobile number.
    pub mobile: Vec<String>,
    pub member_of: String,
}

pub struct LdapDirectory {
    settings: Arc<LdapSettings>,
    pool: Pool,
    groups: groups::GroupCache,
}

impl LdapDirectory {
    pub fn new(settings: LdapSettings) -> Result<Self, String> {
        let settings = Arc::new(settings);
        let pool = Pool::new(Arc::clone(&settings))?;
        let groups = groups::GroupCache::new(settings.group_cache_ttl);
        Ok(Self { settings, pool, groups })
    }

    /// Connects to every server as a login would, and says what worked and what did not (for
    /// `check-config --connect`).
    pub async fn probe(&self) -> Vec<ServerProbe> {
        self.pool.probe().await
    }

    /// Binds as `dn` with `password` on a connection kept for binds.
    async fn user_bind(&self, dn: &str, password: &str) -> Result<ldap3::LdapResult, Failure> {
        self.pool
            .run(Role::UserBind, |mut ldap| async move {
                let result = self.pool.bind(&mut ldap, dn, password).await;
                (ldap, result)
            })
            .await
    }

    /// Finds the one entry for a login name: a name with `@` by its UPN, and only when no account
    /// has that UPN by the name before a realm of ours (AD's own order). None, or more than one
    /// entry for a search, is no user.
    async fn find_entry(&self, ldap: &mut Ldap, login: &LoginName) -> Result<Option<SearchEntry>, Failure> {
        match &self.settings.upn_filter {
            Some(upn) if login.name.contains('@') => {
                if let Some(entry) = self.search_one(ldap, upn, &login.name).await? {
                    return Ok(Some(entry));
                }
                match &login.local_part {
                    Some(local) => self.search_one(ldap, &self.settings.user_filter, local).await,
                    None => Ok(None),
                }
            }
            _ => self.search_one(ldap, &self.settings.user_filter, login.local_part.as_deref().unwrap_or(&login.name)).await,
        }
    }

    /// The one entry `template` (with `{user}` escaped) finds.
    async fn search_one(&self, ldap: &mut Ldap, template: &str, username: &str) -> Result<Option<SearchEntry>, Failure> {
        let filter = template.replace("{user}", &ldap_escape(username));
        let (entries, result) = self.pool.search(ldap, &self.settings.base_dn, Scope::Subtree, &filter, self.account_attributes()).await?;
        if result.rc != 0 {
            return Err(Failure::answered("the user search", &result));
        }
        // Referrals (AD's DomainDnsZones etc.) come back as entries without a DN worth binding to.
        let mut users: Vec<SearchEntry> = entries.into_iter().filter(|e| !e.dn.is_empty()).collect();
        if users.len() > 1 {
            tracing::warn!(matches = users.len(), "user_filter matched more than one entry; refusing the login");
            return Ok(None);
        }
        Ok(users.pop())
    }

    /// What an account is built from (`account_of`): names, mail, mobile, groups.
    fn account_attributes(&self) -> Vec<&str> {
        let a = &self.settings.attributes;
        let mut attrs: Vec<&str> = vec![&a.username, &a.given_name, &a.surname, &a.email, &a.member_of];
        if self.settings.nested_groups {
            attrs.extend(["objectSid", "primaryGroupID"]);
        }
        attrs.extend(a.mobile.iter().map(String::as_str));
        attrs
    }

    /// The account for an entry: its id from `username_attribute`, as the directory spells it.
    fn account_of(&self, entry: SearchEntry) -> Result<Account, Failure> {
        let a = &self.settings.attributes;
        let first = |name: &str| values(&entry, name).first().filter(|v| !v.is_empty()).cloned();
        let Some(name) = first(&a.username) else {
            // Without it there is no stable key for the account; filing it under the name as
            // typed would give every spelling its own tokens and lockout.
            return Err(Failure::unusable(format!(
                "{} has no {}: set username_attribute to the attribute that names accounts",
                entry.dn, a.username
            )));
        };
        // As stored, not case-folded: AD holds `kalle` and `Kalle` (KELVIN SIGN) as two accounts.
        let id = name.trim().to_owned();
        if id.len() > MAX_ACCOUNT_ID {
            return Err(Failure::unusable(format!("{}: its {} is longer than {MAX_ACCOUNT_ID} bytes", entry.dn, a.username)));
        }
        let groups = values(&entry, &a.member_of).to_vec();
        let primary_group = if self.settings.nested_groups { groups::primary_group_sid(&entry) } else { None };
        let profile = UserProfile {
            username: name,
            given_name: first(&a.given_name),
            surname: first(&a.surname),
            email: first(&a.email),
            mobile: a.mobile.iter().find_map(|name| first(name)),
            groups,
        };
        Ok(Account { id, locator: entry.dn, profile, primary_group })
    }

    /// Whether the account may pass `required_groups`, and its groups when `with_groups` asks
    /// for them (else none): nothing is read when neither needs it.
    async fn membership(&self, account: &Account, with_groups: bool) -> Result<(bool, Vec<String>), Failure> {
        let required = &self.settings.required_groups;
        if required.is_empty() && !with_groups {
            return Ok((true, Vec::new()));
        }
        if !self.settings.nested_groups {
            let groups = &account.profile.groups;
            // Compared as the directory spells the required groups (the configuration may have
            // spaces after commas, or other case).
            let admitted = required.is_empty() || {
                let wanted = self.required_dns().await?;
                groups.iter().any(|g| wanted.contains(&g.to_ascii_lowercase()))
            };
            return Ok((admitted, if with_groups { groups.clone() } else { Vec::new() }));
        }
        let groups = self.membership_of(&account.locator, &account.profile.groups, account.primary_group.as_deref()).await?;
        let admitted = required.is_empty() || {
            let wanted = self.required_dns().await?;
            groups.all.iter().any(|dn| wanted.contains(&dn.to_ascii_lowercase()))
        };
        if !admitted || !with_groups {
            return Ok((admitted, Vec::new()));
        }
        let mut named = groups.named;
        named.sort_unstable_by_key(|dn| dn.to_ascii_lowercase());
        Ok((true, named))
    }
}

/// The values of an attribute (none if absent), its name compared without regard to case (RFC
/// 4512): `samaccountname` in the configuration finds AD's `sAMAccountName`.
fn values<'e>(entry: &'e SearchEntry, name: &str) -> &'e [String] {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map_or(&[], |(_, v)| v.as_slice())
}

#[async_trait]
impl Directory for LdapDirectory {
    async fn find(&self, login: &LoginName) -> Result<Option<Account>, DirectoryError> {
        let found = self.pool.run(Role::Service, |mut ldap| async move {
            let entry = self.find_entry(&mut ldap, login).await;
            (ldap, entry)
        });
        let Some(entry) = found.await? else { return Ok(None) };
        Ok(Some(self.account_of(entry)?))
    }

    async fn check_password(&self, account: &Account, password: &[u8], with_groups: bool) -> Result<PasswordCheck, DirectoryError> {
        // An empty password would be an anonymous bind, which AD accepts: never send one.
        let Ok(password) = std::str::from_utf8(password) else { return Ok(PasswordCheck::Denied(Denial::WrongPassword)) };
        if password.is_empty() {
            return Ok(PasswordCheck::Denied(Denial::WrongPassword));
        }
        let result = self.user_bind(&account.locator, password).await?;
        match result.rc {
            0 => {}
            49 => return Ok(PasswordCheck::Denied(ad::bind_denial(&result.text))),
            53 => return Ok(PasswordCheck::Denied(Denial::AccountDisabled)), // unwillingToPerform: disabled on some servers
            rc => return Err(DirectoryError::Busy(format!("user bind answered result {rc}"))),
        }
        let (admitted, groups) = self.membership(account, with_groups).await?;
        if !admitted {
            return Ok(PasswordCheck::Denied(Denial::NotInRequiredGroup));
        }
        Ok(PasswordCheck::Valid(UserProfile { groups, ..account.profile.clone() }))
    }

    async fn groups(&self, account: &Account) -> Result<Vec<String>, DirectoryError> {
        Ok(self.membership(account, true).await?.1)
    }

    async fn search(&self, text: &str, limit: usize) -> Result<Vec<Account>, DirectoryError> {
        Ok(self.search_accounts(text, limit).await?)
    }

    async fn member_of(&self, account: &Account, groups: &[String]) -> Result<Vec<String>, DirectoryError> {
        Ok(self.groups_among(account, groups).await?)
    }

    async fn account_status(&self, account: &Account) -> Result<AccountStatus, DirectoryError> {
        Ok(self.status_of(account).await?)
    }

    async fn warm_up(&self) {
        self.pool.warm_up().await;
    }

    fn log_totals(&self) {
        self.pool.log_totals();
    }

    fn status(&self) -> Option<crate::directory::DirectoryStatus> {
        Some(self.pool.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped_per_rfc4515() {
        assert_eq!(ldap_escape("*)(cn=*"), "\\2a\\29\\28cn=\\2a");
        assert_eq!(ldap_escape("a\\b\0"), "a\\5cb\\00");
        assert_eq!(ldap_escape("åsa"), "åsa");
    }
}
