//! `[server]` and `[[client]]`: where RADIUS is served, its limits, the extra dictionary, and
//! the NAS clients — each one's network, shared secret (inline, from a file, or the
//! environment) and policy (mode, `no_token`, reply attributes resolved by dictionary name).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::auth::{ClientPolicy, Mode, NoToken, PasswordEncoding, ReplyTemplate};
use crate::radius::Dictionary;
use crate::secret::Secret;
use crate::settings::{Invalid, Sources, one_line, parse_network, read_secret_file};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    name: String,
    address: String,
    secret: Option<Secret<String>>,
    pub(crate) secret_file: Option<PathBuf>,
    #[serde(default = "defaults::yes")]
    require_message_authenticator: bool,
    /// Unset: `auto`, or `append` for a NAS that cannot answer challenges.
    mode: Option<Mode>,
    /// Unset: `sms`, or `reject` for a NAS that cannot answer challenges.
    no_token: Option<NoToken>,
    /// Whether the NAS can answer an Access-Challenge. OpenVPN's radiusplugin takes any
    /// challenge as a denial (pam_radius 2.0 answers them: docs/nas/pam_radius.md): false gives
    /// it append only, and never sends an SMS for a login that could not be finished.
    #[serde(default = "defaults::yes")]
    challenges: bool,
    #[serde(default = "defaults::password_encoding")]
    password_encoding: PasswordEncoding,
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
    pub fn password_encoding() -> crate::auth::PasswordEncoding {
        crate::auth::PasswordEncoding::Utf8
    }
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

/// The environment variable that overrides a client's secret: `RADMFA_CLIENT_<NAME>_SECRET`,
/// the name upper-cased with every other character turned into `_`.
pub fn client_secret_env(name: &str) -> String {
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("RADMFA_CLIENT_{name}_SECRET")
}

impl ServerSection {
    /// How long a request may take, at most (other sections' timeouts are checked against it).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Checked, with the built-in dictionary and the admin's extra one loaded. Errors name the
    /// key within the section.
    pub fn build(&self, sources: &Sources<'_>) -> Result<(ServerSettings, Dictionary), Invalid> {
        let listen = parse_addresses(&self.listen).map_err(|m| Invalid::new("listen", m))?;
        if listen.is_empty() {
            return Err(Invalid::new("listen", "needs at least one address, e.g. [\"0.0.0.0:1812\"]"));
        }
        let accounting_listen = parse_addresses(&self.accounting_listen).map_err(|m| Invalid::new("accounting_listen", m))?;
        if self.max_in_flight == 0 {
            return Err(Invalid::new("max_in_flight", "must be at least 1"));
        }
        if self.cache_entries == 0 {
            return Err(Invalid::new("cache_entries", "must be at least 1"));
        }
        let mut dictionary = Dictionary::builtin().map_err(|e| Invalid::new("dictionary", e.to_string()))?;
        if let Some(extra) = &self.dictionary {
            dictionary.load_file(&sources.path(extra)).map_err(|e| Invalid::new("dictionary", e.to_string()))?;
        }
        let settings = ServerSettings {
            listen,
            accounting_listen,
            reject_delay: self.reject_delay,
            max_in_flight: self.max_in_flight,
            request_timeout: self.request_timeout,
            cache_ttl: self.cache_ttl,
            cache_entries: self.cache_entries,
        };
        Ok((settings, dictionary))
    }
}

/// Every `[[client]]`, checked; errors name the client by position and name
/// (`client[0] ("netscaler-1").secret`). Names and networks must be unique.
pub fn build_clients(sections: &[ClientSection], sources: &Sources<'_>, dictionary: &Dictionary) -> Result<Vec<ClientSettings>, Invalid> {
    let mut clients: Vec<ClientSettings> = Vec::new();
    for (i, section) in sections.iter().enumerate() {
        let key = |field: &str| format!("client[{i}] ({:?}).{field}", section.name);
        let client = section.build(sources, dictionary).map_err(|(field, m)| Invalid::new(key(field), m))?;
        if let Some(other) = clients.iter().find(|c| c.policy.name == client.policy.name) {
            return Err(Invalid::new(key("name"), format!("{:?} is used by another client", other.policy.name)));
        }
        if let Some(other) = clients.iter().find(|c| c.network == client.network) {
            return Err(Invalid::new(key("address"), format!("{} is already client {:?}", client.network, other.policy.name)));
        }
        clients.push(client);
    }
    Ok(clients)
}

impl ClientSection {
    fn build(&self, sources: &Sources<'_>, dictionary: &Dictionary) -> Result<ClientSettings, (&'static str, String)> {
        if self.name.trim().is_empty() {
            return Err(("name", "must not be empty".into()));
        }
        let network = parse_network(&self.address).map_err(|m| ("address", m))?;
        let secret = self.secret(sources)?;
        if secret.expose().is_empty() {
            return Err(("secret", "must not be empty".into()));
        }
        let group_filter = match &self.group_filter {
            Some(re) => Some(regex::Regex::new(re).map_err(|e| ("group_filter", e.to_string()))?),
            None => None,
        };
        let (mode, no_token) = self.second_factor()?;
        let mut reply_attributes = Vec::new();
        for attr in &self.reply_attributes {
            let template = ReplyTemplate::with_separator(dictionary, &attr.name, &attr.value, attr.separator.as_deref());
            reply_attributes.push(template.map_err(|m| ("reply_attributes", m))?);
        }
        Ok(ClientSettings {
            network,
            secret,
            require_message_authenticator: self.require_message_authenticator,
            policy: Arc::new(ClientPolicy {
                name: self.name.clone(),
                challenges: self.challenges,
                mode,
                no_token,
                password_encoding: self.password_encoding,
                reply_attributes,
                group_filter,
            }),
        })
    }

    /// How users give their second factor here. A NAS that cannot answer challenges gets
    /// append only, and no SMS (its code could never be asked for): a setting that would need a
    /// challenge is an error rather than a login that hangs or an SMS that is never used.
    fn second_factor(&self) -> Result<(Mode, NoToken), (&'static str, String)> {
        if self.challenges {
            return Ok((self.mode.unwrap_or(Mode::Auto), self.no_token.unwrap_or(NoToken::Sms)));
        }
        let mode = match self.mode {
            None | Some(Mode::Append) => Mode::Append,
            Some(other) => {
                let other = if other == Mode::Challenge { "challenge" } else { "auto" };
                return Err((
                    "mode",
                    format!("\"{other}\" needs a NAS that answers challenges, and challenges = false here: use \"append\""),
                ));
            }
        };
        let no_token = match self.no_token {
            None | Some(NoToken::Reject) => NoToken::Reject,
            Some(NoToken::PasswordOnly) => NoToken::PasswordOnly,
            Some(NoToken::Sms) => {
                return Err((
                    "no_token",
                    "\"sms\" asks for the code in a challenge, and challenges = false here: use \"reject\" (the default then) or \"password_only\"".into(),
                ));
            }
        };
        Ok((mode, no_token))
    }

    /// The shared secret: the environment wins, then `secret` or `secret_file` (not both).
    fn secret(&self, sources: &Sources<'_>) -> Result<Secret<Vec<u8>>, (&'static str, String)> {
        let env_name = client_secret_env(&self.name);
        let text = match ((sources.env)(&env_name), &self.secret, &self.secret_file) {
            (Some(from_env), _, _) => {
                one_line(Secret::new(from_env), &format!("the environment variable {env_name}")).map_err(|m| ("secret", m))?
            }
            (None, Some(_), Some(_)) => return Err(("secret", "set either secret or secret_file, not both".into())),
            (None, Some(secret), None) => secret.clone(),
            (None, None, Some(file)) => read_secret_file(&sources.path(file)).map_err(|m| ("secret_file", m))?,
            (None, None, None) => {
                return Err(("secret", format!("missing: set secret, secret_file, or the environment variable {env_name}")));
            }
        };
        Ok(Secret::new(text.expose().as_bytes().to_vec()))
    }
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
