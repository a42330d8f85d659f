//! Active Directory (and other LDAP servers) as the directory, through the ldap3 crate.
//!
//! A service account searches (over a small pool of kept-open connections) for the entry a
//! login name denotes — a name with `@` as a UPN first, as AD itself resolves it — and its
//! `username_attribute` (sAMAccountName), exactly as AD returns it, is the account id everything
//! else is keyed on. The password is then checked by binding as the entry's DN on a
//! connection of its own, and nested groups are read only after that bind succeeded. Several servers
//! are tried in order, each operation under a timeout, and a server that failed is skipped for a
//! back-off period rather than costing every request a timeout. TLS is LDAPS or StartTLS with
//! certificate checking on (a CA file, or the system's roots). User input reaches filters only
//! through RFC 4515 escaping. AD's bind sub-codes (52e, 533, 775, ...) become audit reasons.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry, ldap_escape};

use super::{Account, Denial, Directory, DirectoryError, LoginName, MAX_ACCOUNT_ID, PasswordCheck, UserProfile};
use crate::secret::Secret;

/// AD's LDAP_MATCHING_RULE_IN_CHAIN: membership through any depth of nested groups.
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";

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
    /// Resolve nested groups with AD's in-chain matching rule; else use `memberOf` as it stands.
    pub nested_groups: bool,
    pub ca_file: Option<PathBuf>,
    pub tls_insecure_skip_verify: bool,
    pub starttls: bool,
    pub timeout: Duration,
    pub dead_server_backoff: Duration,
    pub pool_size: usize,
    /// LDAP operations in flight at once (searches and binds): more wait, one NAS at a time in
    /// turn, instead of opening a connection each and overwhelming the DC.
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

struct Server {
    url: String,
    dead_until: Mutex<Option<Instant>>,
}

pub struct LdapDirectory {
    settings: LdapSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    servers: Vec<Server>,
    /// Idle service-account connections, bound and ready.
    pool: Mutex<Vec<Ldap>>,
    /// Idle connections for user binds. A bind replaces the previous identity, so one connection
    /// serves many users' binds and each login saves a TLS handshake (the DC's biggest cost).
    /// They are only ever used to bind, never to search as whoever bound last.
    bind_pool: Mutex<Vec<Ldap>>,
    /// Bounds the operations in flight; waiting requests are let in one NAS at a time.
    gate: Arc<crate::fairness::FairGate>,
}

/// Why an LDAP operation failed (not the user's fault).
#[derive(Debug)]
struct Failure {
    message: String,
    /// The server got the operation and did not answer in time: it may still carry it out, so
    /// a bind is not sent again (AD would count a wrong password twice).
    timed_out: bool,
}

impl Failure {
    fn new(message: String) -> Self {
        Self { message, timed_out: false }
    }
}

impl From<ldap3::LdapError> for Failure {
    fn from(e: ldap3::LdapError) -> Self {
        Self::new(e.to_string())
    }
}

impl From<Failure> for DirectoryError {
    fn from(f: Failure) -> Self {
        DirectoryError::Unavailable(f.message)
    }
}

impl LdapDirectory {
    pub fn new(settings: LdapSettings) -> Result<Self, String> {
        if settings.urls.is_empty() {
            return Err("urls: at least one server is needed".into());
        }
        let tls = match &settings.ca_file {
            Some(path) if !settings.tls_insecure_skip_verify => Some(Arc::new(client_config(path)?)),
            _ => None,
        };
        if settings.tls_insecure_skip_verify {
            tracing::warn!("tls_insecure_skip_verify = true: LDAP server certificates are NOT checked; for a lab only");
        }
        let servers = settings.urls.iter().map(|url| Server { url: url.clone(), dead_until: Mutex::new(None) }).collect();
        let gate = crate::fairness::FairGate::new(settings.max_connections);
        Ok(Self { settings, tls, servers, pool: Mutex::new(Vec::new()), bind_pool: Mutex::new(Vec::new()), gate })
    }

    /// A new connection to the first server that answers, skipping those in back-off.
    async fn connect(&self) -> Result<Ldap, Failure> {
        let mut last_error = None;
        for server in &self.servers {
            let now = Instant::now();
            if lock(&server.dead_until).is_some_and(|until| until > now) {
                continue;
            }
            match self.connect_to(&server.url).await {
                Ok(ldap) => {
                    *lock(&server.dead_until) = None;
                    return Ok(ldap);
                }
                Err(e) => {
                    // Said once per back-off, not by every request that failed at the same time.
                    let already =
                        lock(&server.dead_until).replace(now + self.settings.dead_server_backoff).is_some_and(|until| until > now);
                    if already {
                        tracing::debug!(url = %server.url, error = %e.message, "LDAP server unreachable (again)");
                    } else {
                        tracing::warn!(url = %server.url, error = %e.message, backoff = ?self.settings.dead_server_backoff, "LDAP server unreachable; skipping it for the back-off period");
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Failure::new("every LDAP server is in its back-off period after failing".into())))
    }

    async fn connect_to(&self, url: &str) -> Result<Ldap, Failure> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.settings.timeout);
        if self.settings.starttls && url.starts_with("ldap://") {
            settings = settings.set_starttls(true);
        }
        if self.settings.tls_insecure_skip_verify {
            settings = settings.set_no_tls_verify(true);
        } else if let Some(config) = &self.tls {
            settings = settings.set_config(Arc::clone(config));
        }
        let connecting = LdapConnAsync::with_settings(settings, url);
        let (conn, ldap) = tokio::time::timeout(self.settings.timeout, connecting)
            .await
            .map_err(|_| Failure::new(format!("{url}: no connection within {:?}", self.settings.timeout)))??;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// One operation under `timeout`. (ldap3's own `with_timeout` covers only the next call on
    /// a connection, so a pooled one would wait forever.) A connection whose operation timed out
    /// is dropped by the caller, never pooled: its answer may still come.
    async fn within<T>(&self, op: impl Future<Output = Result<T, ldap3::LdapError>>) -> Result<T, Failure> {
        match tokio::time::timeout(self.settings.timeout, op).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Failure { message: format!("no answer within {:?}", self.settings.timeout), timed_out: true }),
        }
    }

    /// A bound service-account connection: from the pool, or new.
    async fn service(&self) -> Result<Ldap, Failure> {
        loop {
            let Some(mut pooled) = lock(&self.pool).pop() else { break };
            if !pooled.is_closed() {
                return Ok(pooled);
            }
        }
        let mut ldap = self.connect().await?;
        let result = self.within(ldap.simple_bind(&self.settings.bind_dn, self.settings.bind_password.expose())).await?;
        if result.rc != 0 {
            tracing::error!(rc = result.rc, bind_dn = %self.settings.bind_dn, "the service account cannot bind: check bind_dn and bind_password");
            return Err(Failure::new(format!("service account bind failed with result {}", result.rc)));
        }
        Ok(ldap)
    }

    fn give_back(&self, ldap: Ldap) {
        let mut pool = lock(&self.pool);
        if pool.len() < self.settings.pool_size {
            pool.push(ldap);
        }
    }

    /// Binds as `dn` with `password`, on a pooled bind connection when one is open. A pooled
    /// connection that fails is dropped and the bind tried once on a new one.
    async fn user_bind(&self, dn: &str, password: &str) -> Result<ldap3::LdapResult, Failure> {
        let _turn = self.gate.enter().await;
        let pooled = loop {
            let Some(mut ldap) = lock(&self.bind_pool).pop() else { break None };
            if !ldap.is_closed() {
                break Some(ldap);
            }
        };
        let attempt = match pooled {
            Some(mut ldap) => {
                let result = self.within(ldap.simple_bind(dn, password)).await;
                result.map(|result| (ldap, result))
            }
            None => Err(Failure::new("no pooled connection".into())),
        };
        let (ldap, result) = match attempt {
            Ok(done) => done,
            // Sent and unanswered: the DC may have counted it. Not sent twice.
            Err(failure) if failure.timed_out => return Err(failure),
            // The pooled connection was closed by the server: the bind never reached it.
            Err(_) => {
                let mut ldap = self.connect().await?;
                let result = self.within(ldap.simple_bind(dn, password)).await?;
                (ldap, result)
            }
        };
        let mut pool = lock(&self.bind_pool);
        if pool.len() < self.settings.pool_size {
            pool.push(ldap);
        }
        Ok(result)
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
        let a = &self.settings.attributes;
        let mut attrs: Vec<&str> = vec![&a.username, &a.given_name, &a.surname, &a.email, &a.member_of];
        attrs.extend(a.mobile.iter().map(String::as_str));
        let (entries, _) = self.within(ldap.search(&self.settings.base_dn, Scope::Subtree, &filter, attrs)).await?.success()?;
        // Referrals (AD's DomainDnsZones etc.) come back as entries without a DN worth binding to.
        let mut users: Vec<SearchEntry> = entries.into_iter().map(SearchEntry::construct).filter(|e| !e.dn.is_empty()).collect();
        if users.len() > 1 {
            tracing::warn!(matches = users.len(), "user_filter matched more than one entry; refusing the login");
            return Ok(None);
        }
        Ok(users.pop())
    }

    /// The groups (DNs) of the entry at `dn`: nested through AD's in-chain rule.
    async fn nested_groups(&self, ldap: &mut Ldap, dn: &str) -> Result<Vec<String>, Failure> {
        let filter = format!("(&(objectClass=group)(member:{IN_CHAIN}:={}))", ldap_escape(dn));
        let (entries, _) = self.within(ldap.search(&self.settings.base_dn, Scope::Subtree, &filter, vec!["cn"])).await?.success()?;
        Ok(entries.into_iter().map(SearchEntry::construct).map(|e| e.dn).filter(|dn| !dn.is_empty()).collect())
    }

    /// The account for an entry: its id from `username_attribute`, lower-cased.
    fn account_of(&self, entry: SearchEntry) -> Result<Account, Failure> {
        let a = &self.settings.attributes;
        let first = |name: &str| entry.attrs.get(name).and_then(|v| v.first()).filter(|v| !v.is_empty()).cloned();
        let Some(name) = first(&a.username) else {
            // Without it there is no stable key for the account; filing it under the name as
            // typed would give every spelling its own tokens and lockout.
            return Err(Failure::new(format!(
                "{} has no {}: set username_attribute to the attribute that names accounts",
                entry.dn, a.username
            )));
        };
        // As stored, not case-folded: AD holds `kalle` and `Kalle` (KELVIN SIGN) as two accounts.
        let id = name.trim().to_owned();
        if id.len() > MAX_ACCOUNT_ID {
            return Err(Failure::new(format!("{}: its {} is longer than {MAX_ACCOUNT_ID} bytes", entry.dn, a.username)));
        }
        let groups = if self.settings.nested_groups { Vec::new() } else { entry.attrs.get(&a.member_of).cloned().unwrap_or_default() };
        let profile = UserProfile {
            username: name,
            given_name: first(&a.given_name),
            surname: first(&a.surname),
            email: first(&a.email),
            mobile: a.mobile.iter().find_map(|name| first(name)),
            groups,
        };
        Ok(Account { id, locator: entry.dn, profile })
    }

    /// Runs a search-side operation on a service connection, retrying once on a fresh
    /// connection (a pooled one may have been closed by the server since). The operation takes
    /// the connection and hands it back with its result.
    async fn with_service<T, Op>(&self, op: impl Fn(Ldap) -> Op) -> Result<T, Failure>
    where
        Op: Future<Output = (Ldap, Result<T, Failure>)>,
    {
        let _turn = self.gate.enter().await;
        let (ldap, result) = op(self.service().await?).await;
        match result {
            Ok(value) => {
                self.give_back(ldap);
                Ok(value)
            }
            // A search the server is still working on would only be queued behind itself.
            Err(first) if first.timed_out => Err(first),
            Err(first) => {
                tracing::debug!(error = %first.message, "LDAP operation failed; retrying on a new connection");
                let (ldap, result) = op(self.service().await?).await;
                let value = result?;
                self.give_back(ldap);
                Ok(value)
            }
        }
    }

    /// The account's groups: nested through the in-chain rule, or `memberOf` as the entry had it.
    async fn account_groups(&self, account: &Account) -> Result<Vec<String>, Failure> {
        if !self.settings.nested_groups {
            return Ok(account.profile.groups.clone());
        }
        self.with_service(|mut ldap| async move {
            let groups = self.nested_groups(&mut ldap, &account.locator).await;
            (ldap, groups)
        })
        .await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The AD sub-code in a bind error's diagnostic text: "... AcceptSecurityContext error, data 52e, v4563".
fn ad_sub_code(text: &str) -> Option<&str> {
    let rest = &text[text.find("data ")? + 5..];
    let code = rest.split([',', ' ']).next()?;
    (!code.is_empty() && code.chars().all(|c| c.is_ascii_hexdigit())).then_some(code)
}

fn client_config(ca_file: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    let shown = ca_file.display();
    let pem = std::fs::read(ca_file).map_err(|e| format!("ca_file {shown}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("ca_file {shown}: {e}"))?;
        roots.add(cert).map_err(|e| format!("ca_file {shown}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("ca_file {shown}: no PEM certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[async_trait]
impl Directory for LdapDirectory {
    async fn find(&self, login: &LoginName) -> Result<Option<Account>, DirectoryError> {
        let found = self.with_service(|mut ldap| async move {
            let entry = self.find_entry(&mut ldap, login).await;
            (ldap, entry)
        });
        let Some(entry) = found.await? else { return Ok(None) };
        Ok(Some(self.account_of(entry)?))
    }

    async fn check_password(&self, account: &Account, password: &[u8]) -> Result<PasswordCheck, DirectoryError> {
        // An empty password would be an anonymous bind, which AD accepts: never send one.
        let Ok(password) = std::str::from_utf8(password) else { return Ok(PasswordCheck::Denied(Denial::WrongPassword)) };
        if password.is_empty() {
            return Ok(PasswordCheck::Denied(Denial::WrongPassword));
        }
        let result = self.user_bind(&account.locator, password).await?;
        match result.rc {
            0 => {}
            49 => return Ok(PasswordCheck::Denied(ad_sub_code(&result.text).map_or(Denial::WrongPassword, Denial::from_ad_code))),
            53 => return Ok(PasswordCheck::Denied(Denial::AccountDisabled)), // unwillingToPerform: disabled on some servers
            rc => return Err(DirectoryError::Unavailable(format!("user bind answered result {rc}"))),
        }
        let groups = self.account_groups(account).await?;
        let required = &self.settings.required_groups;
        if !required.is_empty() && !groups.iter().any(|g| required.iter().any(|r| r.eq_ignore_ascii_case(g))) {
            return Ok(PasswordCheck::Denied(Denial::NotInRequiredGroup));
        }
        Ok(PasswordCheck::Valid(UserProfile { groups, ..account.profile.clone() }))
    }

    async fn groups(&self, account: &Account) -> Result<Vec<String>, DirectoryError> {
        Ok(self.account_groups(account).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_sub_codes_are_read_from_the_diagnostic_text() {
        let text = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1";
        assert_eq!(ad_sub_code(text), Some("52e"));
        assert_eq!(ad_sub_code("... data 775, v4563").map(Denial::from_ad_code), Some(Denial::AccountLocked));
        assert_eq!(Denial::from_ad_code("533"), Denial::AccountDisabled);
        assert_eq!(Denial::from_ad_code("773"), Denial::MustChangePassword);
        assert_eq!(ad_sub_code("Invalid credentials"), None);
        assert_eq!(ad_sub_code("data , v1"), None);
    }

    #[test]
    fn filter_values_are_escaped_per_rfc4515() {
        assert_eq!(ldap_escape("*)(cn=*"), "\\2a\\29\\28cn=\\2a");
        assert_eq!(ldap_escape("a\\b\0"), "a\\5cb\\00");
        assert_eq!(ldap_escape("åsa"), "åsa");
    }
}
