//! `[server]` and `[[client]]`: where RADIUS is served, its limits, the extra dictionary, and
//! the NAS clients — each one's transport (UDP, or TLS with its certificate's name or
//! fingerprint), network, shared secret (inline, from a file, or the environment; `radsec` over
//! TLS) and policy (mode, `no_token`, reply attributes resolved by dictionary name). The TLS
//! listener's own keys are `tls::settings`'.

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
    /// RadSec (RFC 6614) addresses, e.g. ["0.0.0.0:2083"]; the other `tls_` keys and the
    /// files are `tls::settings`'.
    #[serde(default)]
    tls_listen: Vec<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    #[serde(default = "super::tls::settings::defaults::idle_timeout", with = "humantime_serde")]
    tls_idle_timeout: Duration,
    #[serde(default = "super::tls::settings::defaults::handshake_timeout", with = "humantime_serde")]
    tls_handshake_timeout: Duration,
    #[serde(default = "super::tls::settings::defaults::connections_per_client")]
    tls_connections_per_client: usize,
    #[serde(default = "super::tls::settings::defaults::outstanding_per_connection")]
    tls_outstanding_per_connection: usize,
    /// Which RADIUS versions TLS clients may negotiate (RFC 9765 ALPN): "1.0", "1.1".
    #[serde(default = "super::tls::settings::defaults::radius_versions")]
    tls_radius_versions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    name: String,
    /// Required over UDP; over TLS, where the certificate names the client, optional.
    address: Option<String>,
    #[serde(default)]
    transport: Transport,
    /// Over TLS: a DNS name or URI of the certificate's subjectAltName, or (a certificate without
    /// any) its subject's CN.
    certificate_name: Option<String>,
    /// Over TLS: the SHA-256 of the certificate (hex, colons allowed); one or a list.
    #[serde(default)]
    certificate_fingerprint: super::tls::settings::OneOrMany,
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
    /// The RadSec listener, when `tls_listen` is set.
    pub tls: Option<super::tls::settings::TlsSettings>,
}

/// How a client reaches us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RADIUS/UDP (RFC 2865): the client is its source address, the secret signs each packet.
    #[default]
    Udp,
    /// RADIUS/TLS (RFC 6614, and RADIUS/1.1 where negotiated): the client is its certificate.
    Tls,
}

#[derive(Debug)]
pub struct ClientSettings {
    /// Where it may connect from; over TLS without an `address`, `::/0`: anywhere.
    pub network: IpNet,
    pub transport: Transport,
    /// Over TLS: which certificates are this client (empty over UDP).
    pub certificate: super::tls::settings::CertificateMatch,
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

    /// Files whose contents are secret: the RadSec private key.
    pub fn secret_files(&self, sources: &Sources<'_>) -> Vec<PathBuf> {
        self.key_file.iter().map(|f| sources.path(f)).collect()
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
        let tls = super::tls::settings::TlsSection {
            listen: &self.tls_listen,
            cert_file: self.cert_file.as_deref(),
            key_file: self.key_file.as_deref(),
            ca_file: self.ca_file.as_deref(),
            idle_timeout: self.tls_idle_timeout,
            handshake_timeout: self.tls_handshake_timeout,
            connections_per_client: self.tls_connections_per_client,
            outstanding_per_connection: self.tls_outstanding_per_connection,
            radius_versions: &self.tls_radius_versions,
        }
        .build(sources)?;
        let settings = ServerSettings {
            tls,
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
        if let Some(other) = clients.iter().find(|c| c.transport == Transport::Udp && c.network == client.network)
            && client.transport == Transport::Udp
        {
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
        let (network, certificate) = self.identity()?;
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
            transport: self.transport,
            certificate,
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

    /// Where the client may be, and over TLS which certificates it holds.
    fn identity(&self) -> Result<(IpNet, super::tls::settings::CertificateMatch), (&'static str, String)> {
        let network = self.address.as_deref().map(parse_network).transpose().map_err(|m| ("address", m))?;
        let certificate = super::tls::settings::CertificateMatch::new(self.certificate_name.as_deref(), &self.certificate_fingerprint)?;
        match self.transport {
            Transport::Udp => {
                if !certificate.is_empty() {
                    return Err(("transport", "certificate_name and certificate_fingerprint go with transport = \"tls\"".into()));
                }
                let network = network.ok_or(("address", "missing: the NAS's address or network, e.g. \"10.0.0.5\"".to_string()))?;
                Ok((network, certificate))
            }
            Transport::Tls => {
                if network.is_none() && certificate.is_empty() {
                    return Err((
                        "certificate_name",
                        "a TLS client needs certificate_name, certificate_fingerprint or address: otherwise every certificate of ca_file would be this client".into(),
                    ));
                }
                Ok((network.unwrap_or_else(|| IpNet::V6(ipnet::Ipv6Net::default())), certificate))
            }
        }
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
            // RFC 6614 §2.3: over TLS the secret protects nothing, and "radsec" is what every
            // implementation uses unless told otherwise.
            (None, None, None) if self.transport == Transport::Tls => Secret::new("radsec".to_string()),
            (None, None, None) => {
                return Err(("secret", format!("missing: set secret, secret_file, or the environment variable {env_name}")));
            }
        };
        Ok(Secret::new(text.expose().as_bytes().to_vec()))
    }
}

pub(super) fn parse_addresses(list: &[String]) -> Result<Vec<SocketAddr>, String> {
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
