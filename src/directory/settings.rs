//! `[directory]`: a local users file, or LDAP/Active Directory — the file's section, its
//! defaults, and its checks (no clear-text binds, no credentials in URLs, filters with `{user}`,
//! required groups given as DNs).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ldap::{AttributeMap, LdapSettings};
use crate::secret::Secret;
use crate::settings::{Invalid, Sources};

/// `[directory]` on a first reading: which kind it is. Its other keys are read by
/// [`DirectorySection::read`], into the kind's own type: serde's tagged enums buffer a section
/// and lose where a bad value stands, so an error would name neither its key nor its line.
#[derive(Debug, Deserialize)]
pub struct DirectoryKind {
    kind: Kind,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    File,
    Ldap,
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // read once at start-up; boxing buys nothing
pub enum DirectorySection {
    File(FileSection),
    Ldap(LdapSection),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSection {
    #[serde(rename = "kind")]
    _kind: serde::de::IgnoredAny,
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSection {
    #[serde(rename = "kind")]
    _kind: serde::de::IgnoredAny,
    urls: Vec<String>,
    bind_dn: String,
    bind_password: Option<Secret<String>>,
    pub(crate) bind_password_file: Option<PathBuf>,
    base_dn: String,
    #[serde(default = "defaults::user_filter")]
    user_filter: String,
    #[serde(default = "defaults::upn_filter")]
    upn_filter: String,
    #[serde(default)]
    required_groups: Vec<String>,
    #[serde(default = "defaults::yes")]
    nested_groups: bool,
    #[serde(default = "defaults::group_cache_ttl", with = "humantime_serde")]
    group_cache_ttl: Duration,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    tls_insecure_skip_verify: bool,
    #[serde(default)]
    starttls: bool,
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default = "defaults::dead_server_backoff", with = "humantime_serde")]
    dead_server_backoff: Duration,
    #[serde(default = "defaults::pool_size")]
    pool_size: usize,
    #[serde(default = "defaults::max_connections")]
    max_connections: usize,
    #[serde(default = "defaults::username")]
    username_attribute: String,
    #[serde(default = "defaults::given_name")]
    given_name_attribute: String,
    #[serde(default = "defaults::surname")]
    surname_attribute: String,
    #[serde(default = "defaults::email")]
    email_attribute: String,
    #[serde(default = "defaults::mobile")]
    mobile_attributes: Vec<String>,
    #[serde(default = "defaults::member_of")]
    member_of_attribute: String,
}

mod defaults {
    use std::time::Duration;
    pub fn user_filter() -> String {
        "(&(objectClass=user)(sAMAccountName={user}))".into()
    }
    pub fn upn_filter() -> String {
        "(&(objectClass=user)(userPrincipalName={user}))".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn dead_server_backoff() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_connections() -> usize {
        32
    }
    pub fn group_cache_ttl() -> Duration {
        Duration::from_secs(300)
    }
    pub fn pool_size() -> usize {
        4
    }
    pub fn username() -> String {
        "sAMAccountName".into()
    }
    pub fn given_name() -> String {
        "givenName".into()
    }
    pub fn surname() -> String {
        "sn".into()
    }
    pub fn email() -> String {
        "mail".into()
    }
    pub fn mobile() -> Vec<String> {
        vec!["mobile".into(), "telephoneNumber".into()]
    }
    pub fn member_of() -> String {
        "memberOf".into()
    }
}

#[derive(Debug)]
pub enum DirectorySettings {
    File { path: PathBuf },
    Ldap(Box<LdapSettings>),
}

impl DirectorySection {
    /// The `[directory]` section of the config file `text`, of the kind a first reading found;
    /// errors as [`crate::toml_error::parse`] words them (key, line and column).
    pub fn read(text: &str, first: &DirectoryKind) -> Result<Self, String> {
        /// The file again, every other section ignored (they were checked on the first reading).
        #[derive(Deserialize)]
        struct Only<T> {
            directory: T,
        }
        Ok(match first.kind {
            Kind::File => Self::File(crate::toml_error::parse::<Only<FileSection>>(text)?.directory),
            Kind::Ldap => Self::Ldap(crate::toml_error::parse::<Only<LdapSection>>(text)?.directory),
        })
    }

    /// Files among this section that hold secrets (the users file, the bind password file).
    pub fn secret_files(&self, sources: &Sources<'_>) -> Vec<PathBuf> {
        match self {
            Self::File(file) => vec![sources.path(&file.path)],
            Self::Ldap(ldap) => ldap.bind_password_file.iter().map(|f| sources.path(f)).collect(),
        }
    }

    /// Checked; errors name the key within the section (`urls[0]`, not `directory.urls[0]`).
    pub fn build(self, sources: &Sources<'_>) -> Result<DirectorySettings, Invalid> {
        match self {
            Self::File(file) => Ok(DirectorySettings::File { path: sources.path(file.path) }),
            Self::Ldap(ldap) => ldap.build(sources).map(|s| DirectorySettings::Ldap(Box::new(s))),
        }
    }
}

impl LdapSection {
    fn build(self, sources: &Sources<'_>) -> Result<LdapSettings, Invalid> {
        self.check()?;
        let bind_password = sources
            .secret(self.bind_password, self.bind_password_file.as_deref(), "RADMFA_LDAP_BIND_PASSWORD")
            .map_err(|m| Invalid::new("bind_password", m))?
            .ok_or_else(|| Invalid::new("bind_password", "missing: set bind_password, bind_password_file or RADMFA_LDAP_BIND_PASSWORD"))?;
        let ca_file = self.ca_file.map(|f| sources.path(f));
        if let Some(ca) = &ca_file
            && !ca.exists()
        {
            return Err(Invalid::new("ca_file", format!("{} does not exist", ca.display())));
        }
        Ok(LdapSettings {
            urls: self.urls,
            bind_dn: self.bind_dn,
            bind_password,
            base_dn: self.base_dn,
            user_filter: self.user_filter,
            upn_filter: Some(self.upn_filter),
            required_groups: self.required_groups,
            nested_groups: self.nested_groups,
            group_cache_ttl: self.group_cache_ttl,
            ca_file,
            tls_insecure_skip_verify: self.tls_insecure_skip_verify,
            starttls: self.starttls,
            timeout: self.timeout,
            dead_server_backoff: self.dead_server_backoff,
            pool_size: self.pool_size.max(1),
            max_connections: self.max_connections.max(1),
            attributes: AttributeMap {
                username: self.username_attribute,
                given_name: self.given_name_attribute,
                surname: self.surname_attribute,
                email: self.email_attribute,
                mobile: self.mobile_attributes,
                member_of: self.member_of_attribute,
            },
        })
    }

    fn check(&self) -> Result<(), Invalid> {
        if self.urls.is_empty() {
            return Err(Invalid::new("urls", "needs at least one server, e.g. [\"ldaps://dc1.example.test:636\"]"));
        }
        if let Some(i) = self.required_groups.iter().position(|g| !g.contains('=')) {
            // A bare name ("VPN-Users") names no entry: every login would be refused.
            return Err(Invalid::new(
                format!("required_groups[{i}]"),
                "must be a group's DN, e.g. \"CN=VPN-Users,OU=Groups,DC=example,DC=test\"",
            ));
        }
        for (i, raw) in self.urls.iter().enumerate() {
            // Named by position, never quoted: a URL may carry a password.
            check_url(raw, self.starttls).map_err(|m| Invalid::new(format!("urls[{i}]"), m))?;
        }
        for (key, filter) in [("user_filter", &self.user_filter), ("upn_filter", &self.upn_filter)] {
            if !filter.contains("{user}") {
                return Err(Invalid::new(key, "must contain {user}"));
            }
        }
        Ok(())
    }
}

fn check_url(raw: &str, starttls: bool) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("holds a user or password: give them as bind_dn and bind_password (URLs are shown in logs)".into());
    }
    if !matches!(url.scheme(), "ldaps" | "ldap") || url.host_str().is_none_or(str::is_empty) {
        return Err("is not an ldaps://host[:port] or ldap://host[:port] URL".into());
    }
    if url.scheme() == "ldap" && !starttls {
        return Err("ldap:// would send passwords in clear: use ldaps://, or set starttls = true".into());
    }
    Ok(())
}
