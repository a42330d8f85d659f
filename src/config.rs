//! The configuration file (TOML) and the validated settings built from it.
//!
//! `*Section` structs mirror the file, with `deny_unknown_fields` so a typo is an error naming
//! the key; [`Config`] is what the rest of radmfa uses: addresses parsed, paths resolved against
//! the config file's folder, secrets loaded (from the file, a `secret_file`, or the environment),
//! dictionary names resolved. Nothing here starts anything.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::auth::messages::MessagesSection;
use crate::auth::{AuthSettings, ClientPolicy, Mode, NoToken, ReplyTemplate, UsernameRules};
use crate::otp::{Algorithm, TotpParams};
use crate::radius::Dictionary;
use crate::secret::Secret;
use crate::store::{LockoutPolicy, SmsLimits};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: ServerSection,
    #[serde(default)]
    client: Vec<ClientSection>,
    directory: DirectorySection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    totp: TotpSection,
    #[serde(default)]
    lockout: LockoutSection,
    #[serde(default)]
    sms: SmsSection,
    #[serde(default)]
    messages: MessagesSection,
    #[serde(default)]
    usernames: UsernamesSection,
    portal: Option<PortalSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalSection {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "defaults::portal_listen")]
    listen: String,
    public_url: Option<String>,
    issuer: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default = "defaults::max_tokens")]
    max_tokens: usize,
    #[serde(default = "defaults::session_idle", with = "humantime_serde")]
    session_idle: Duration,
    #[serde(default = "defaults::session_max", with = "humantime_serde")]
    session_max: Duration,
    #[serde(default = "defaults::enrollment_timeout", with = "humantime_serde")]
    enrollment_timeout: Duration,
    #[serde(default = "defaults::max_sessions")]
    max_sessions: usize,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default = "defaults::header_timeout", with = "humantime_serde")]
    header_timeout: Duration,
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(default = "defaults::portal_request_timeout", with = "humantime_serde")]
    request_timeout: Duration,
    #[serde(default = "defaults::max_connections")]
    max_connections: usize,
    #[serde(default = "defaults::max_connections_per_address")]
    max_connections_per_address: usize,
    #[serde(default = "defaults::reject_delay", with = "humantime_serde")]
    reject_delay: Duration,
}

// Sections with `#[serde(default)]` take every missing key from their `Default` impl, so each
// default value is written once, there.

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StoreSection {
    kind: StoreKind,
    path: PathBuf,
    key_file: PathBuf,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self { kind: StoreKind::Sqlite, path: "radmfa.db".into(), key_file: "master.key".into() }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    Sqlite,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TotpSection {
    issuer: String,
    digits: u32,
    period: u64,
    window: u64,
    algorithm: Algorithm,
    #[serde(with = "humantime_serde")]
    challenge_timeout: Duration,
}

impl Default for TotpSection {
    fn default() -> Self {
        let app = TotpParams::default();
        Self {
            issuer: "radmfa".into(),
            digits: app.digits,
            period: app.period,
            window: 1,
            algorithm: app.algorithm,
            challenge_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LockoutSection {
    max_failures: u32,
    #[serde(with = "humantime_serde")]
    duration: Duration,
    #[serde(with = "humantime_serde")]
    max_duration: Duration,
    password_max_failures: u32,
    #[serde(with = "humantime_serde")]
    password_duration: Duration,
    #[serde(with = "humantime_serde")]
    password_max_duration: Duration,
}

impl Default for LockoutSection {
    fn default() -> Self {
        Self {
            max_failures: 5,
            duration: Duration::from_secs(300),
            max_duration: Duration::from_secs(3600),
            // Below the 5 to 10 wrong passwords AD domains are commonly set to lock at, so a
            // spray through radmfa stops here first.
            password_max_failures: 4,
            password_duration: Duration::from_secs(15 * 60),
            password_max_duration: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum GatewayKind {
    Log,
    Http,
    #[serde(rename = "46elks")]
    Elks46,
    Twilio,
    Exec,
}

/// `[sms]` is flat (one gateway at a time); keys the chosen gateway does not use are errors.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SmsSection {
    gateway: GatewayKind,
    url: Option<String>,
    method: Option<String>,
    body: Option<String>,
    content_type: Option<String>,
    headers: std::collections::BTreeMap<String, Secret<String>>,
    username: Option<String>,
    password: Option<Secret<String>>,
    password_file: Option<PathBuf>,
    from: Option<String>,
    account_sid: Option<String>,
    auth_token: Option<Secret<String>>,
    auth_token_file: Option<PathBuf>,
    command: Vec<String>,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    #[serde(with = "humantime_serde")]
    answer_within: Duration,
    default_country_code: String,
    #[serde(with = "humantime_serde")]
    code_validity: Duration,
    max_tries: u8,
    per_user_limit: u32,
    #[serde(with = "humantime_serde")]
    per_user_window: Duration,
    global_per_minute: u32,
}

impl Default for SmsSection {
    fn default() -> Self {
        Self {
            gateway: GatewayKind::Log,
            url: None,
            method: None,
            body: None,
            content_type: None,
            headers: Default::default(),
            username: None,
            password: None,
            password_file: None,
            from: None,
            account_sid: None,
            auth_token: None,
            auth_token_file: None,
            command: Vec::new(),
            timeout: Duration::from_secs(10),
            answer_within: Duration::from_secs(2),
            default_country_code: "46".into(),
            code_validity: Duration::from_secs(300),
            max_tries: 3,
            per_user_limit: 3,
            per_user_window: Duration::from_secs(900),
            global_per_minute: 30,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsernamesSection {
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    realms: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Vec<String>,
    #[serde(default)]
    accounting_listen: Vec<String>,
    #[serde(default = "defaults::reject_delay", with = "humantime_serde")]
    reject_delay: Duration,
    #[serde(default = "defaults::max_in_flight")]
    max_in_flight: usize,
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    request_timeout: Duration,
    #[serde(default = "defaults::cache_ttl", with = "humantime_serde")]
    cache_ttl: Duration,
    #[serde(default = "defaults::cache_entries")]
    cache_entries: usize,
    dictionary: Option<PathBuf>,
}

mod defaults {
    use std::time::Duration;
    pub fn reject_delay() -> Duration {
        Duration::from_secs(1)
    }
    pub fn max_in_flight() -> usize {
        256
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(20)
    }
    pub fn cache_ttl() -> Duration {
        Duration::from_secs(30)
    }
    pub fn cache_entries() -> usize {
        65_536
    }
    pub fn yes() -> bool {
        true
    }
    pub fn mode() -> crate::auth::Mode {
        crate::auth::Mode::Auto
    }
    pub fn no_token() -> crate::auth::NoToken {
        crate::auth::NoToken::Sms
    }
    pub fn user_filter() -> String {
        "(&(objectClass=user)(sAMAccountName={user}))".into()
    }
    pub fn upn_filter() -> String {
        "(&(objectClass=user)(userPrincipalName={user}))".into()
    }
    pub fn ldap_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn dead_server_backoff() -> Duration {
        Duration::from_secs(30)
    }
    pub fn ldap_max_connections() -> usize {
        32
    }
    pub fn group_cache_ttl() -> Duration {
        Duration::from_secs(300)
    }
    pub fn pool_size() -> usize {
        4
    }
    pub fn attr_username() -> String {
        "sAMAccountName".into()
    }
    pub fn attr_given_name() -> String {
        "givenName".into()
    }
    pub fn attr_surname() -> String {
        "sn".into()
    }
    pub fn attr_email() -> String {
        "mail".into()
    }
    pub fn attr_mobile() -> Vec<String> {
        vec!["mobile".into(), "telephoneNumber".into()]
    }
    pub fn attr_member_of() -> String {
        "memberOf".into()
    }
    pub fn portal_listen() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn max_tokens() -> usize {
        5
    }
    pub fn session_idle() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn session_max() -> Duration {
        Duration::from_secs(8 * 3600)
    }
    pub fn enrollment_timeout() -> Duration {
        Duration::from_secs(10 * 60)
    }
    pub fn max_sessions() -> usize {
        10_000
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn portal_request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_connections() -> usize {
        512
    }
    pub fn max_connections_per_address() -> usize {
        32
    }
    pub fn password_encoding() -> crate::auth::PasswordEncoding {
        crate::auth::PasswordEncoding::Utf8
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientSection {
    name: String,
    address: String,
    secret: Option<Secret<String>>,
    secret_file: Option<PathBuf>,
    #[serde(default = "defaults::yes")]
    require_message_authenticator: bool,
    #[serde(default = "defaults::mode")]
    mode: Mode,
    #[serde(default = "defaults::no_token")]
    no_token: NoToken,
    #[serde(default = "defaults::password_encoding")]
    password_encoding: crate::auth::PasswordEncoding,
    #[serde(default)]
    reply_attributes: Vec<ReplyAttributeSection>,
    group_filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyAttributeSection {
    name: String,
    value: String,
    /// For a `{groups}` value: what goes between the groups (default ",").
    separator: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up; boxing buys nothing
enum DirectorySection {
    File {
        path: PathBuf,
    },
    Ldap {
        urls: Vec<String>,
        bind_dn: String,
        bind_password: Option<Secret<String>>,
        bind_password_file: Option<PathBuf>,
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
        #[serde(default = "defaults::ldap_timeout", with = "humantime_serde")]
        timeout: Duration,
        #[serde(default = "defaults::dead_server_backoff", with = "humantime_serde")]
        dead_server_backoff: Duration,
        #[serde(default = "defaults::pool_size")]
        pool_size: usize,
        #[serde(default = "defaults::ldap_max_connections")]
        max_connections: usize,
        #[serde(default = "defaults::attr_username")]
        username_attribute: String,
        #[serde(default = "defaults::attr_given_name")]
        given_name_attribute: String,
        #[serde(default = "defaults::attr_surname")]
        surname_attribute: String,
        #[serde(default = "defaults::attr_email")]
        email_attribute: String,
        #[serde(default = "defaults::attr_mobile")]
        mobile_attributes: Vec<String>,
        #[serde(default = "defaults::attr_member_of")]
        member_of_attribute: String,
    },
}

/// A configuration problem: the file, the key, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    /// The TOML is malformed or has an unknown or mistyped key (the message names it).
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// A key's value is not acceptable.
    #[error("{path}: {key}: {message}")]
    Invalid { path: String, key: String, message: String },
}

#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    /// Things that work but deserve the admin's attention: logged at start, printed by check-config.
    pub warnings: Vec<String>,
    /// Files that hold secrets (this file, secret files, the users file): their modes are checked.
    pub secret_files: Vec<PathBuf>,
    pub server: ServerSettings,
    pub clients: Vec<ClientSettings>,
    pub directory: DirectorySettings,
    pub dictionary: Arc<Dictionary>,
    pub store: StoreSettings,
    pub totp: TotpSettings,
    pub auth: AuthSettings,
    pub sms: GatewaySettings,
    /// The self-service portal, when enabled.
    pub portal: Option<crate::portal::PortalSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub path: PathBuf,
    pub key_file: PathBuf,
}

/// How new tokens are made and shown.
#[derive(Debug, Clone)]
pub struct TotpSettings {
    pub issuer: String,
    pub params: TotpParams,
}

/// Which SMS gateway, with its credentials loaded.
#[derive(Debug)]
pub enum GatewaySettings {
    Log,
    Http {
        url: String,
        method: String,
        body: Option<String>,
        content_type: Option<String>,
        headers: Vec<(String, Secret<String>)>,
        basic_auth: Option<(String, Secret<String>)>,
        timeout: Duration,
    },
    Elks46 {
        url: Option<String>,
        username: String,
        password: Secret<String>,
        from: String,
        timeout: Duration,
    },
    Twilio {
        url: Option<String>,
        account_sid: String,
        auth_token: Secret<String>,
        from: String,
        timeout: Duration,
    },
    Exec {
        command: Vec<String>,
        timeout: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub accounting_listen: Vec<SocketAddr>,
    pub reject_delay: Duration,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub cache_ttl: Duration,
    pub cache_entries: usize,
}

#[derive(Debug)]
pub struct ClientSettings {
    pub network: IpNet,
    pub secret: Secret<Vec<u8>>,
    pub require_message_authenticator: bool,
    pub policy: Arc<ClientPolicy>,
}

#[derive(Debug)]
pub enum DirectorySettings {
    File { path: PathBuf },
    Ldap(Box<crate::directory::ldap::LdapSettings>),
}

/// The environment variable that overrides a client's secret: `RADMFA_CLIENT_<NAME>_SECRET`,
/// the name upper-cased with every other character turned into `_`.
pub fn client_secret_env(name: &str) -> String {
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("RADMFA_CLIENT_{name}_SECRET")
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(path, &text, |key| std::env::var(key).ok())
    }

    /// Parses `text` as if read from `path` (relative paths resolve against its folder).
    pub fn parse(path: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let file: ConfigFile = crate::toml_error::parse(text).map_err(|message| ConfigError::Parse { path: shown.clone(), message })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let secret_files = secret_files(path, &base, &file);
        let invalid = |key: &str, message: String| ConfigError::Invalid { path: shown.clone(), key: key.to_owned(), message };

        let server = &file.server;
        let listen = parse_addresses(&server.listen).map_err(|m| invalid("server.listen", m))?;
        if listen.is_empty() {
            return Err(invalid("server.listen", "needs at least one address, e.g. [\"0.0.0.0:1812\"]".into()));
        }
        let accounting_listen = parse_addresses(&server.accounting_listen).map_err(|m| invalid("server.accounting_listen", m))?;
        if server.max_in_flight == 0 {
            return Err(invalid("server.max_in_flight", "must be at least 1".into()));
        }
        if server.cache_entries == 0 {
            return Err(invalid("server.cache_entries", "must be at least 1".into()));
        }
        let mut dictionary = Dictionary::builtin().map_err(|e| invalid("server.dictionary", e.to_string()))?;
        if let Some(extra) = &server.dictionary {
            dictionary.load_file(&base.join(extra)).map_err(|e| invalid("server.dictionary", e.to_string()))?;
        }

        let mut clients: Vec<ClientSettings> = Vec::new();
        for (i, section) in file.client.iter().enumerate() {
            let key = |field: &str| format!("client[{i}] ({:?}).{field}", section.name);
            let client = build_client(section, &base, &dictionary, &env).map_err(|(field, m)| invalid(&key(field), m))?;
            if let Some(other) = clients.iter().find(|c| c.policy.name == client.policy.name) {
                return Err(invalid(&key("name"), format!("{:?} is used by another client", other.policy.name)));
            }
            if let Some(other) = clients.iter().find(|c| c.network == client.network) {
                return Err(invalid(&key("address"), format!("{} is already client {:?}", client.network, other.policy.name)));
            }
            clients.push(client);
        }

        let directory = match file.directory {
            DirectorySection::File { path } => DirectorySettings::File { path: base.join(path) },
            DirectorySection::Ldap {
                urls,
                bind_dn,
                bind_password,
                bind_password_file,
                base_dn,
                user_filter,
                upn_filter,
                required_groups,
                nested_groups,
                group_cache_ttl,
                ca_file,
                tls_insecure_skip_verify,
                starttls,
                timeout,
                dead_server_backoff,
                pool_size,
                max_connections,
                username_attribute,
                given_name_attribute,
                surname_attribute,
                email_attribute,
                mobile_attributes,
                member_of_attribute,
            } => {
                if urls.is_empty() {
                    return Err(invalid("directory.urls", "needs at least one server, e.g. [\"ldaps://dc1.example.test:636\"]".into()));
                }
                if let Some(i) = required_groups.iter().position(|g| !g.contains('=')) {
                    // A bare name ("VPN-Users") names no entry: every login would be refused.
                    return Err(invalid(
                        &format!("directory.required_groups[{i}]"),
                        "must be a group's DN, e.g. \"CN=VPN-Users,OU=Groups,DC=example,DC=test\"".into(),
                    ));
                }
                for (i, raw) in urls.iter().enumerate() {
                    // Named by position, never quoted: a URL may carry a password.
                    let key = format!("directory.urls[{i}]");
                    let url = url::Url::parse(raw).map_err(|e| invalid(&key, format!("not a URL ({e})")))?;
                    if !url.username().is_empty() || url.password().is_some() {
                        return Err(invalid(
                            &key,
                            "holds a user or password: give them as bind_dn and bind_password (URLs are shown in logs)".into(),
                        ));
                    }
                    if !matches!(url.scheme(), "ldaps" | "ldap") || url.host_str().is_none_or(str::is_empty) {
                        return Err(invalid(&key, "is not an ldaps://host[:port] or ldap://host[:port] URL".into()));
                    }
                    if url.scheme() == "ldap" && !starttls {
                        return Err(invalid(&key, "ldap:// would send passwords in clear: use ldaps://, or set starttls = true".into()));
                    }
                }
                for (key, filter) in [("directory.user_filter", &user_filter), ("directory.upn_filter", &upn_filter)] {
                    if !filter.contains("{user}") {
                        return Err(invalid(key, "must contain {user}".into()));
                    }
                }
                let bind_password = load_secret(bind_password, bind_password_file, "RADMFA_LDAP_BIND_PASSWORD", &base, &env)
                    .map_err(|m| invalid("directory.bind_password", m))?
                    .ok_or_else(|| {
                        invalid(
                            "directory.bind_password",
                            "missing: set bind_password, bind_password_file or RADMFA_LDAP_BIND_PASSWORD".into(),
                        )
                    })?;
                let ca_file = ca_file.map(|f| base.join(f));
                if let Some(ca) = &ca_file
                    && !ca.exists()
                {
                    return Err(invalid("directory.ca_file", format!("{} does not exist", ca.display())));
                }
                DirectorySettings::Ldap(Box::new(crate::directory::ldap::LdapSettings {
                    urls,
                    bind_dn,
                    bind_password,
                    base_dn,
                    user_filter,
                    upn_filter: Some(upn_filter),
                    required_groups,
                    nested_groups,
                    group_cache_ttl,
                    ca_file,
                    tls_insecure_skip_verify,
                    starttls,
                    timeout,
                    dead_server_backoff,
                    pool_size: pool_size.max(1),
                    max_connections: max_connections.max(1),
                    attributes: crate::directory::ldap::AttributeMap {
                        username: username_attribute,
                        given_name: given_name_attribute,
                        surname: surname_attribute,
                        email: email_attribute,
                        mobile: mobile_attributes,
                        member_of: member_of_attribute,
                    },
                }))
            }
        };
        let StoreSection { kind: StoreKind::Sqlite, path: store_path, key_file } = file.store;
        let store = StoreSettings { path: base.join(store_path), key_file: base.join(key_file) };

        let t = &file.totp;
        if !(6..=8).contains(&t.digits) {
            return Err(invalid("totp.digits", "must be 6, 7 or 8".into()));
        }
        if t.period == 0 || t.period > 300 {
            return Err(invalid("totp.period", "must be 1..=300 seconds".into()));
        }
        if t.window > 10 {
            return Err(invalid("totp.window", "more than 10 steps either side accepts too many codes".into()));
        }
        let totp =
            TotpSettings { issuer: t.issuer.clone(), params: TotpParams { algorithm: t.algorithm, digits: t.digits, period: t.period } };
        if file.lockout.max_failures == 0 {
            return Err(invalid("lockout.max_failures", "must be at least 1".into()));
        }
        let sms = &file.sms;
        if sms.max_tries == 0 {
            return Err(invalid("sms.max_tries", "must be at least 1".into()));
        }
        if !sms.default_country_code.trim_start_matches('+').bytes().all(|b| b.is_ascii_digit()) || sms.default_country_code.is_empty() {
            return Err(invalid("sms.default_country_code", "must be digits, e.g. \"46\"".into()));
        }
        let mut warnings = Vec::new();
        let (messages, retired) = file.messages.build().map_err(|m| invalid("messages", m))?;
        for key in retired {
            warnings.push(format!(
                "messages.{key} is no longer sent: every Access-Reject says messages.rejected, so the NAS learns nothing from the reason"
            ));
        }
        if file.lockout.password_max_failures == 0 {
            return Err(invalid("lockout.password_max_failures", "must be at least 1".into()));
        }
        if sms.answer_within.is_zero() {
            return Err(invalid("sms.answer_within", "must be more than 0s, e.g. \"2s\"".into()));
        }
        if file.server.request_timeout <= sms.answer_within {
            return Err(invalid(
                "server.request_timeout",
                format!("must be longer than sms.answer_within ({:?}): a login that sends an SMS would get no answer", sms.answer_within),
            ));
        }
        let auth = AuthSettings {
            totp: TotpParams { algorithm: t.algorithm, digits: t.digits, period: t.period },
            totp_window: t.window,
            lockout: LockoutPolicy {
                max_failures: file.lockout.max_failures,
                duration: file.lockout.duration,
                max_duration: file.lockout.max_duration,
                forget_after: None,
            },
            password_lockout: LockoutPolicy {
                max_failures: file.lockout.password_max_failures,
                duration: file.lockout.password_duration,
                max_duration: file.lockout.password_max_duration,
                forget_after: Some(file.lockout.password_duration),
            },
            challenge_ttl: t.challenge_timeout,
            sms_validity: sms.code_validity,
            sms_tries: sms.max_tries,
            sms_limits: SmsLimits {
                per_user: sms.per_user_limit,
                per_user_window: sms.per_user_window,
                global_per_minute: sms.global_per_minute,
            },
            sms_answer_within: sms.answer_within,
            default_country_code: sms.default_country_code.trim_start_matches('+').to_owned(),
            messages,
            usernames: UsernameRules { domains: file.usernames.domains.clone(), realms: file.usernames.realms.clone() },
        };
        let gateway = build_gateway(file.sms, &base, &env).map_err(|(key, m)| invalid(&format!("sms.{key}"), m))?;
        let portal = match file.portal {
            Some(p) if p.enabled => Some(build_portal(p, &base, &totp.issuer).map_err(|(key, m)| invalid(&format!("portal.{key}"), m))?),
            _ => None,
        };

        Ok(Self {
            path: path.to_path_buf(),
            warnings,
            secret_files,
            server: ServerSettings {
                listen,
                accounting_listen,
                reject_delay: server.reject_delay,
                max_in_flight: server.max_in_flight,
                request_timeout: server.request_timeout,
                cache_ttl: server.cache_ttl,
                cache_entries: server.cache_entries,
            },
            clients,
            directory,
            dictionary: Arc::new(dictionary),
            store,
            totp,
            auth,
            sms: gateway,
            portal,
        })
    }
}

/// A secret given inline, in a file, or in the environment (which wins).
fn load_secret(
    inline: Option<Secret<String>>,
    file: Option<PathBuf>,
    env_name: &str,
    base: &Path,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret<String>>, String> {
    if let Some(value) = env(env_name) {
        return one_line(Secret::new(value), &format!("the environment variable {env_name}")).map(Some);
    }
    match (inline, file) {
        (Some(_), Some(_)) => Err("set the value or its _file, not both".into()),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(file)) => read_secret_file(&base.join(file)).map(Some),
        (None, None) => Ok(None),
    }
}

/// A secret file: its one line, the line break after it dropped. More lines are an error (a
/// key file or a certificate named by mistake), and so is an empty file.
fn read_secret_file(path: &Path) -> Result<Secret<String>, String> {
    let text = Secret::new(std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?);
    one_line(text, &path.display().to_string())
}

/// A secret's one line (a line break after it dropped), from a file or the environment alike.
fn one_line(text: Secret<String>, from: &str) -> Result<Secret<String>, String> {
    let value = text.expose().strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(text.expose());
    if value.contains(['\n', '\r']) {
        return Err(format!("{from}: holds more than one line; a secret is given alone, on one line"));
    }
    if value.trim().is_empty() {
        return Err(format!("{from}: is empty"));
    }
    Ok(Secret::new(value.to_owned()))
}

/// Every file named in the config that holds a secret (the config itself included).
fn secret_files(path: &Path, base: &Path, file: &ConfigFile) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    files.extend(file.client.iter().filter_map(|c| c.secret_file.as_ref()).map(|f| base.join(f)));
    match &file.directory {
        DirectorySection::File { path } => files.push(base.join(path)),
        DirectorySection::Ldap { bind_password_file, .. } => files.extend(bind_password_file.iter().map(|f| base.join(f))),
    }
    files.extend([&file.sms.password_file, &file.sms.auth_token_file].into_iter().flatten().map(|f| base.join(f)));
    files
}

fn build_gateway(s: SmsSection, base: &Path, env: &impl Fn(&str) -> Option<String>) -> Result<GatewaySettings, (&'static str, String)> {
    let set: Vec<&'static str> = [
        ("url", s.url.is_some()),
        ("method", s.method.is_some()),
        ("body", s.body.is_some()),
        ("content_type", s.content_type.is_some()),
        ("headers", !s.headers.is_empty()),
        ("username", s.username.is_some()),
        ("password", s.password.is_some() || s.password_file.is_some()),
        ("from", s.from.is_some()),
        ("account_sid", s.account_sid.is_some()),
        ("auth_token", s.auth_token.is_some() || s.auth_token_file.is_some()),
        ("command", !s.command.is_empty()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();
    let (name, allowed): (&str, &[&str]) = match s.gateway {
        GatewayKind::Log => ("log", &[]),
        GatewayKind::Http => ("http", &["url", "method", "body", "content_type", "headers", "username", "password"]),
        GatewayKind::Elks46 => ("46elks", &["url", "username", "password", "from"]),
        GatewayKind::Twilio => ("twilio", &["url", "account_sid", "auth_token", "from"]),
        GatewayKind::Exec => ("exec", &["command"]),
    };
    if let Some(extra) = set.iter().find(|key| !allowed.contains(key)) {
        return Err(("gateway", format!("{extra} is not used by the {name} gateway")));
    }
    let required = |key: &'static str, value: Option<String>| value.ok_or((key, format!("required by the {name} gateway")));
    let password = load_secret(s.password, s.password_file, "RADMFA_SMS_PASSWORD", base, env).map_err(|m| ("password", m))?;
    let timeout = s.timeout;
    Ok(match s.gateway {
        GatewayKind::Log => GatewaySettings::Log,
        GatewayKind::Http => {
            let url = required("url", s.url)?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(("url", "must start with https:// (or http:// on a trusted network)".into()));
            }
            let basic_auth = match (s.username, password) {
                (Some(user), Some(password)) => Some((user, password)),
                (None, None) => None,
                _ => return Err(("username", "username and password go together (HTTP basic auth)".into())),
            };
            GatewaySettings::Http {
                url,
                method: s.method.unwrap_or_else(|| "POST".into()),
                body: s.body,
                content_type: s.content_type,
                headers: s.headers.into_iter().collect(),
                basic_auth,
                timeout,
            }
        }
        GatewayKind::Elks46 => GatewaySettings::Elks46 {
            url: s.url,
            username: required("username", s.username)?,
            password: password.ok_or(("password", "required by the 46elks gateway (or RADMFA_SMS_PASSWORD)".into()))?,
            from: required("from", s.from)?,
            timeout,
        },
        GatewayKind::Twilio => GatewaySettings::Twilio {
            url: s.url,
            account_sid: required("account_sid", s.account_sid)?,
            auth_token: load_secret(s.auth_token, s.auth_token_file, "RADMFA_SMS_AUTH_TOKEN", base, env)
                .map_err(|m| ("auth_token", m))?
                .ok_or(("auth_token", "required by the twilio gateway (or RADMFA_SMS_AUTH_TOKEN)".into()))?,
            from: required("from", s.from)?,
            timeout,
        },
        GatewayKind::Exec => {
            if s.command.is_empty() {
                return Err(("command", "required by the exec gateway, e.g. [\"/usr/local/bin/send-sms\"]".into()));
            }
            GatewaySettings::Exec { command: s.command, timeout }
        }
    })
}

fn parse_addresses(list: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for text in list {
        let addr: SocketAddr = text.parse().map_err(|_| format!("{text:?} is not an IP:port address (write IPv6 as \"[::1]:1812\")"))?;
        if out.contains(&addr) {
            return Err(format!("{addr} is listed twice"));
        }
        out.push(addr);
    }
    Ok(out)
}

fn build_client(
    section: &ClientSection,
    base: &Path,
    dictionary: &Dictionary,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<ClientSettings, (&'static str, String)> {
    if section.name.trim().is_empty() {
        return Err(("name", "must not be empty".into()));
    }
    let network = parse_network(&section.address).map_err(|m| ("address", m))?;
    let secret = match (env(&client_secret_env(&section.name)), &section.secret, &section.secret_file) {
        (Some(from_env), _, _) => {
            let name = client_secret_env(&section.name);
            one_line(Secret::new(from_env), &format!("the environment variable {name}"))
                .map_err(|m| ("secret", m))?
                .expose()
                .as_bytes()
                .to_vec()
        }
        (None, Some(_), Some(_)) => return Err(("secret", "set either secret or secret_file, not both".into())),
        (None, Some(secret), None) => secret.expose().as_bytes().to_vec(),
        (None, None, Some(file)) => read_secret_file(&base.join(file)).map_err(|m| ("secret_file", m))?.expose().as_bytes().to_vec(),
        (None, None, None) => {
            return Err((
                "secret",
                format!("missing: set secret, secret_file, or the environment variable {}", client_secret_env(&section.name)),
            ));
        }
    };
    if secret.is_empty() {
        return Err(("secret", "must not be empty".into()));
    }
    let group_filter = match &section.group_filter {
        Some(re) => Some(regex::Regex::new(re).map_err(|e| ("group_filter", e.to_string()))?),
        None => None,
    };
    let mut reply_attributes = Vec::new();
    for attr in &section.reply_attributes {
        let template = ReplyTemplate::with_separator(dictionary, &attr.name, &attr.value, attr.separator.as_deref());
        reply_attributes.push(template.map_err(|m| ("reply_attributes", m))?);
    }
    Ok(ClientSettings {
        network,
        secret: Secret::new(secret),
        require_message_authenticator: section.require_message_authenticator,
        policy: Arc::new(ClientPolicy {
            name: section.name.clone(),
            mode: section.mode,
            no_token: section.no_token,
            password_encoding: section.password_encoding,
            reply_attributes,
            group_filter,
        }),
    })
}

/// `[portal]`, checked; errors name the key (without the `portal.` prefix).
fn build_portal(p: PortalSection, base: &Path, default_issuer: &str) -> Result<crate::portal::PortalSettings, (&'static str, String)> {
    let listen: SocketAddr = p.listen.parse().map_err(|_| ("listen", format!("{:?} is not an IP:port address", p.listen)))?;
    let tls = match (p.cert_file, p.key_file) {
        (Some(cert), Some(key)) => {
            let (cert, key) = (base.join(cert), base.join(key));
            for (k, f) in [("cert_file", &cert), ("key_file", &key)] {
                if !f.exists() {
                    return Err((k, format!("{} does not exist", f.display())));
                }
            }
            Some((cert, key))
        }
        (None, None) => None,
        _ => return Err(("cert_file", "cert_file and key_file go together".into())),
    };
    if tls.is_none() && !listen.ip().is_loopback() {
        return Err((
            "listen",
            format!(
                "{listen} is not a loopback address: without cert_file/key_file the portal serves plain HTTP, so only on loopback behind a TLS reverse proxy"
            ),
        ));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = p.public_url.unwrap_or_else(|| format!("{scheme}://{listen}"));
    check_public_url(&public_url, tls.is_some()).map_err(|m| ("public_url", m))?;
    let trusted_proxies =
        p.trusted_proxies.iter().map(|t| parse_network(t)).collect::<Result<Vec<_>, _>>().map_err(|m| ("trusted_proxies", m))?;
    for (key, n) in [("max_tokens", p.max_tokens), ("max_sessions", p.max_sessions), ("max_connections", p.max_connections)] {
        if n == 0 {
            return Err((key, "must be at least 1".into()));
        }
    }
    if p.max_connections_per_address == 0 || p.max_connections_per_address > p.max_connections {
        return Err(("max_connections_per_address", format!("must be between 1 and max_connections ({})", p.max_connections)));
    }
    for (key, d) in [("header_timeout", p.header_timeout), ("idle_timeout", p.idle_timeout), ("request_timeout", p.request_timeout)] {
        if d.is_zero() {
            return Err((key, "must be longer than 0s".into()));
        }
    }
    if p.idle_timeout < p.request_timeout {
        // hyper keeps a read pending while a request runs (to see the client leave), so a
        // shorter idle timeout would cut off a request still waiting for the directory.
        return Err(("idle_timeout", format!("must be at least request_timeout ({:?})", p.request_timeout)));
    }
    Ok(crate::portal::PortalSettings {
        listen,
        tls,
        public_url,
        issuer: p.issuer.unwrap_or_else(|| default_issuer.to_owned()),
        max_tokens: p.max_tokens,
        session_idle: p.session_idle,
        session_max: p.session_max,
        max_sessions: p.max_sessions,
        enrollment_timeout: p.enrollment_timeout,
        trusted_proxies,
        header_timeout: p.header_timeout,
        idle_timeout: p.idle_timeout,
        request_timeout: p.request_timeout,
        max_connections: p.max_connections,
        max_connections_per_address: p.max_connections_per_address,
        reject_delay: p.reject_delay,
    })
}

/// The address users type: https, or http for a portal only reached on this machine (the
/// session cookie would otherwise cross the network in clear).
fn check_public_url(text: &str, serves_tls: bool) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let local = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if serves_tls => Err(format!("{text:?} must be https:// when the portal serves TLS")),
        "http" if local => Ok(()),
        "http" => Err(format!(
            "{text:?} is http:// on a host other than loopback: users would send their session over the network in clear; use https:// (the URL users reach, e.g. the TLS reverse proxy's)"
        )),
        other => Err(format!("{text:?}: the scheme must be https (or http on loopback), not {other}")),
    }
}

fn parse_network(text: &str) -> Result<IpNet, String> {
    let bad = || format!("{text:?} is not an IP address or CIDR network (e.g. \"10.0.0.5\" or \"10.0.0.0/24\")");
    if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| bad())?;
        Ok(net.trunc())
    } else {
        text.parse::<IpAddr>().map(IpNet::from).map_err(|_| bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
listen = ["127.0.0.1:18120"]

[[client]]
name = "netscaler-1"
address = "127.0.0.1/32"
secret = "testing123"
require_message_authenticator = false

[directory]
kind = "file"
path = "users.toml"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/radmfa/radmfa.toml"), text, |_| None)
    }

    #[test]
    fn the_documented_minimal_config_works() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:18120".parse().unwrap()]);
        assert_eq!(c.server.reject_delay, Duration::from_secs(1));
        assert_eq!(c.clients[0].secret.expose(), b"testing123");
        assert!(!c.clients[0].require_message_authenticator);
        assert!(matches!(&c.directory, DirectorySettings::File { path } if path == Path::new("/etc/radmfa/users.toml")));
        assert!(!format!("{c:?}").contains("testing123"), "Debug output must not reveal the secret");
    }

    #[test]
    fn a_misspelled_key_is_named() {
        let err = parse(&MINIMAL.replace("listen =", "lisen =")).unwrap_err().to_string();
        assert!(err.contains("unknown field `lisen`"), "{err}");
        let err = parse(&MINIMAL.replace("secret =", "secert =")).unwrap_err().to_string();
        assert!(err.contains("unknown field `secert`"), "{err}");
        let err = parse(&MINIMAL.replace("path =", "pth =")).unwrap_err().to_string();
        assert!(err.contains("pth"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (MINIMAL.replace("127.0.0.1:18120", "localhost:1812"), "server.listen"),
            (MINIMAL.replace("127.0.0.1/32", "127.0.0.300"), "client[0] (\"netscaler-1\").address"),
            (MINIMAL.replace("secret = \"testing123\"", ""), "client[0] (\"netscaler-1\").secret: missing"),
            (MINIMAL.replace("[directory]", "[[client]]\nname=\"b\"\naddress=\"127.0.0.1\"\nsecret=\"x\"\n[directory]"), "already client"),
            (
                MINIMAL.replace("kind = \"file\"", "kind = \"flie\""),
                "line 12, column 8: directory.kind: unknown variant `…`, expected `file` or `ldap`",
            ),
            (MINIMAL.replace("listen = [", "reject_delay = \"soon\"\nlisten = ["), "line 3, column 16: server.reject_delay: invalid value"),
        ];
        for (text, expected) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err}");
        }
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nas.secret"), "from-file\n").unwrap();
        let text = MINIMAL.replace("secret = \"testing123\"", "secret_file = \"nas.secret\"");
        let c = Config::parse(&dir.path().join("radmfa.toml"), &text, |_| None).unwrap();
        assert_eq!(c.clients[0].secret.expose(), b"from-file");
        let c =
            Config::parse(&dir.path().join("radmfa.toml"), &text, |k| (k == "RADMFA_CLIENT_NETSCALER_1_SECRET").then(|| "from-env".into()))
                .unwrap();
        assert_eq!(c.clients[0].secret.expose(), b"from-env");
        // The environment's value follows the rules of a secret file: one line, not blank.
        for bad in ["two\nlines", "   ", ""] {
            let env = |k: &str| (k == "RADMFA_CLIENT_NETSCALER_1_SECRET").then(|| bad.to_owned());
            let err = Config::parse(&dir.path().join("radmfa.toml"), &text, env).unwrap_err().to_string();
            assert!(err.contains("RADMFA_CLIENT_NETSCALER_1_SECRET") && !err.contains("two"), "{err}");
        }
    }

    #[test]
    fn the_second_factor_contract_config_works() {
        let text = format!(
            "{}{}",
            MINIMAL.replace("require_message_authenticator = false", "require_message_authenticator = false\nmode = \"challenge\""),
            r#"
[store]
kind = "sqlite"
path = "radmfa.db"
key_file = "master.key"

[totp]
issuer = "Example Region"

[sms]
gateway = "http"
url = "http://127.0.0.1:9999/send"
method = "POST"
body = '{"to":"{to}","message":"{message}"}'
content_type = "application/json"
"#
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.clients[0].policy.mode, Mode::Challenge);
        assert_eq!(c.clients[0].policy.no_token, NoToken::Sms);
        assert_eq!(c.store, StoreSettings { path: "/etc/radmfa/radmfa.db".into(), key_file: "/etc/radmfa/master.key".into() });
        assert_eq!(c.totp.issuer, "Example Region");
        assert_eq!(c.totp.params, TotpParams::default());
        assert_eq!(c.auth.totp_window, 1);
        assert!(matches!(c.sms, GatewaySettings::Http { ref url, .. } if url == "http://127.0.0.1:9999/send"));
        let defaults = parse(MINIMAL).unwrap();
        assert!(matches!(defaults.sms, GatewaySettings::Log), "the embedded default writes SMS to the log");
        assert_eq!(defaults.auth.lockout.max_failures, 5);
        assert_eq!(defaults.auth.sms_limits.per_user, 3);
    }

    #[test]
    fn sms_settings_are_checked_per_gateway() {
        let sms = |body: &str| parse(&format!("{MINIMAL}\n[sms]\n{body}\n")).map(|c| c.sms).map_err(|e| e.to_string());
        assert!(sms("gateway = \"log\"\nurl = \"http://x\"").unwrap_err().contains("sms.gateway: url is not used by the log gateway"));
        assert!(sms("gateway = \"46elks\"\nusername = \"u\"\nfrom = \"radmfa\"").unwrap_err().contains("sms.password: required"));
        assert!(sms("gateway = \"twilio\"\naccount_sid = \"AC1\"\nauth_token = \"t\"").unwrap_err().contains("sms.from: required"));
        assert!(sms("gateway = \"exec\"").unwrap_err().contains("sms.command"));
        assert!(sms("gateway = \"http\"\nurl = \"ftp://x\"").unwrap_err().contains("sms.url"));
        assert!(sms("gateway = \"smoke-signals\"").unwrap_err().contains("unknown variant"));
        assert!(matches!(sms("gateway = \"exec\"\ncommand = [\"/bin/send\"]").unwrap(), GatewaySettings::Exec { .. }));
        let elks = sms("gateway = \"46elks\"\nusername = \"u\"\npassword = \"p\"\nfrom = \"radmfa\"").unwrap();
        assert!(!format!("{elks:?}").contains("\"p\""), "credentials are redacted in Debug");
    }

    #[test]
    fn the_ldap_contract_config_works_and_refuses_clear_passwords() {
        let ldap = r#"[directory]
kind = "ldap"
urls = ["ldaps://dc1.example.test:636", "ldaps://dc2.example.test:636"]
bind_dn = "CN=svc-radmfa,CN=Users,DC=example,DC=test"
bind_password = "s3rvice"
base_dn = "DC=example,DC=test"
required_groups = ["CN=VPN-Users,CN=Users,DC=example,DC=test"]
tls_insecure_skip_verify = true
"#;
        let file_dir = "[directory]\nkind = \"file\"\npath = \"users.toml\"\n";
        let text = MINIMAL.replace(file_dir, ldap).replace(
            "require_message_authenticator = false",
            "require_message_authenticator = false\ngroup_filter = \"^(VPN|Citrix)-\"\nreply_attributes = [ { name = \"Citrix-User-Groups\", value = \"{group}\" } ]",
        );
        let c = parse(&text).unwrap();
        let DirectorySettings::Ldap(s) = &c.directory else { panic!("{:?}", c.directory) };
        assert_eq!(s.urls.len(), 2);
        assert_eq!(s.user_filter, "(&(objectClass=user)(sAMAccountName={user}))");
        assert_eq!(s.required_groups, ["CN=VPN-Users,CN=Users,DC=example,DC=test"]);
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert!(!format!("{c:?}").contains("s3rvice"), "the bind password stays out of Debug");
        let clear = parse(&text.replace("ldaps://dc1.example.test:636", "ldap://dc1.example.test:389")).unwrap_err().to_string();
        assert!(clear.contains("directory.urls") && clear.contains("starttls"), "{clear}");
        for (url, said) in [
            ("ldaps://admin:S3cret@dc1.example.test", "user or password"),
            ("ldaps://dc1.example.test:bad", "not a URL"),
            ("http://dc1", "not an ldaps"),
        ] {
            let err = parse(&text.replace("ldaps://dc1.example.test:636", url)).unwrap_err().to_string();
            assert!(err.contains("directory.urls[0]") && err.contains(said) && !err.contains("S3cret") && !err.contains(":bad"), "{err}");
        }
        let bare = parse(&text.replace("[\"CN=VPN-Users,CN=Users,DC=example,DC=test\"]", "[\"VPN-Users\"]")).unwrap_err().to_string();
        assert!(bare.contains("directory.required_groups[0]") && bare.contains("DN"), "{bare}");
        assert_eq!(s.group_cache_ttl, Duration::from_secs(300));
        let missing = parse(&text.replace("bind_password = \"s3rvice\"\n", "")).unwrap_err().to_string();
        assert!(missing.contains("directory.bind_password: missing"), "{missing}");
        let typo = parse(&text.replace("base_dn", "basedn")).unwrap_err().to_string();
        assert!(typo.contains("basedn"), "{typo}");
    }

    #[test]
    fn the_portal_contract_config_works_and_plain_http_stays_on_loopback() {
        let portal = "\n[portal]\nenabled = true\nlisten = \"127.0.0.1:8080\"\npublic_url = \"http://127.0.0.1:8080\"\nissuer = \"Example Region\"\n";
        let c = parse(&format!("{MINIMAL}{portal}")).unwrap();
        let p = c.portal.unwrap();
        assert_eq!((p.listen.port(), p.issuer.as_str(), p.max_tokens, p.tls.is_none()), (8080, "Example Region", 5, true));
        let open =
            parse(&format!("{MINIMAL}{}", portal.replace("127.0.0.1:8080\"\npublic", "0.0.0.0:8080\"\npublic"))).unwrap_err().to_string();
        assert!(open.contains("portal.listen") && open.contains("loopback"), "{open}");
        let half = parse(&format!("{MINIMAL}{portal}cert_file = \"/etc/hosts\"\n")).unwrap_err().to_string();
        assert!(half.contains("cert_file and key_file go together"), "{half}");
        assert!(parse(&format!("{MINIMAL}\n[portal]\nenabled = false\n")).unwrap().portal.is_none());
    }

    #[test]
    fn portal_limits_have_site_defaults_and_are_checked() {
        let portal = "\n[portal]\nenabled = true\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://mfa.example.test\"\n";
        let p = parse(&format!("{MINIMAL}{portal}")).unwrap().portal.unwrap();
        assert_eq!(
            (p.header_timeout, p.idle_timeout, p.request_timeout),
            (Duration::from_secs(10), Duration::from_secs(60), Duration::from_secs(30))
        );
        assert_eq!((p.max_connections, p.max_connections_per_address, p.max_sessions), (512, 32, 10_000));
        assert!(p.trusted_proxies.is_empty(), "nobody's X-Forwarded-For is believed unless configured");
        let proxies = parse(&format!("{MINIMAL}{portal}trusted_proxies = [\"127.0.0.1\", \"::1\", \"10.1.0.0/16\"]\n")).unwrap();
        let nets: Vec<String> = proxies.portal.unwrap().trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["127.0.0.1/32", "::1/128", "10.1.0.0/16"]);
        let error = |extra: &str| parse(&format!("{MINIMAL}{portal}{extra}\n")).unwrap_err().to_string();
        let bad_proxy = error("trusted_proxies = [\"proxy.example.test\"]");
        assert!(bad_proxy.contains("portal.trusted_proxies") && bad_proxy.contains("not an IP address"), "{bad_proxy}");
        assert!(error("idle_timeout = \"0s\"").contains("portal.idle_timeout: must be longer than 0s"));
        assert!(error("idle_timeout = \"10s\"").contains("portal.idle_timeout: must be at least request_timeout"));
        assert!(error("max_connections_per_address = 600").contains("portal.max_connections_per_address"));
        assert!(error("max_sessions = 0").contains("portal.max_sessions: must be at least 1"));
    }

    #[test]
    fn an_http_public_url_must_stay_on_loopback() {
        let portal = |url: &str| format!("{MINIMAL}\n[portal]\nenabled = true\nlisten = \"127.0.0.1:8080\"\npublic_url = \"{url}\"\n");
        for fine in ["http://127.0.0.1:8080", "http://localhost:8080/", "http://[::1]:8080", "https://mfa.example.test"] {
            assert!(parse(&portal(fine)).is_ok(), "{fine}");
        }
        for (bad, says) in [
            ("http://mfa.example.test", "http:// on a host other than loopback"),
            ("http://192.0.2.10:8080", "http:// on a host other than loopback"),
            ("http://localhost.example.test", "http:// on a host other than loopback"),
            ("ftp://127.0.0.1", "the scheme must be https"),
            ("mfa.example.test", "is not a URL"),
        ] {
            let e = parse(&portal(bad)).unwrap_err().to_string();
            assert!(e.contains("portal.public_url") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn reply_attributes_resolve_by_dictionary_name() {
        let text = MINIMAL.replace(
            "require_message_authenticator = false",
            "reply_attributes = [{ name = \"Citrix-User-Groups\", value = \"{group}\" }, { name = \"Nope\", value = \"1\" }]",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("client[0] (\"netscaler-1\").reply_attributes: unknown attribute \"Nope\""), "{err}");
    }
}
