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

use crate::auth::{ClientPolicy, ReplyTemplate};
use crate::radius::Dictionary;
use crate::secret::Secret;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: ServerSection,
    #[serde(default)]
    client: Vec<ClientSection>,
    directory: DirectorySection,
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
    #[serde(default)]
    reply_attributes: Vec<ReplyAttributeSection>,
    group_filter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyAttributeSection {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum DirectorySection {
    File { path: PathBuf },
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
    pub server: ServerSettings,
    pub clients: Vec<ClientSettings>,
    pub directory: DirectorySettings,
    pub dictionary: Arc<Dictionary>,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorySettings {
    File { path: PathBuf },
}

/// The environment variable that overrides a client's secret: `RADMFA_CLIENT_<NAME>_SECRET`,
/// the name upper-cased with every other character turned into `_`.
pub fn client_secret_env(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    format!("RADMFA_CLIENT_{name}_SECRET")
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(path, &text, |key| std::env::var(key).ok())
    }

    /// Parses `text` as if read from `path` (relative paths resolve against its folder).
    pub fn parse(path: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: shown.clone(),
            key: key.to_owned(),
            message,
        };

        let server = &file.server;
        let listen = parse_addresses(&server.listen).map_err(|m| invalid("server.listen", m))?;
        if listen.is_empty() {
            return Err(invalid(
                "server.listen",
                "needs at least one address, e.g. [\"0.0.0.0:1812\"]".into(),
            ));
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
            dictionary
                .load_file(&base.join(extra))
                .map_err(|e| invalid("server.dictionary", e.to_string()))?;
        }

        let mut clients: Vec<ClientSettings> = Vec::new();
        for (i, section) in file.client.iter().enumerate() {
            let key = |field: &str| format!("client[{i}] ({:?}).{field}", section.name);
            let client = build_client(section, &base, &dictionary, &env).map_err(|(field, m)| invalid(&key(field), m))?;
            if let Some(other) = clients.iter().find(|c| c.policy.name == client.policy.name) {
                return Err(invalid(&key("name"), format!("{:?} is used by another client", other.policy.name)));
            }
            if let Some(other) = clients.iter().find(|c| c.network == client.network) {
                return Err(invalid(
                    &key("address"),
                    format!("{} is already client {:?}", client.network, other.policy.name),
                ));
            }
            clients.push(client);
        }

        let directory = match file.directory {
            DirectorySection::File { path } => DirectorySettings::File { path: base.join(path) },
        };

        Ok(Self {
            path: path.to_path_buf(),
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
        })
    }
}

fn parse_addresses(list: &[String]) -> Result<Vec<SocketAddr>, String> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for text in list {
        let addr: SocketAddr = text
            .parse()
            .map_err(|_| format!("{text:?} is not an IP:port address (write IPv6 as \"[::1]:1812\")"))?;
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
        (Some(from_env), _, _) => from_env.into_bytes(),
        (None, Some(_), Some(_)) => return Err(("secret", "set either secret or secret_file, not both".into())),
        (None, Some(secret), None) => secret.expose().as_bytes().to_vec(),
        (None, None, Some(file)) => {
            let path = base.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| ("secret_file", format!("{}: {e}", path.display())))?;
            text.trim_end_matches(['\r', '\n']).as_bytes().to_vec()
        }
        (None, None, None) => {
            return Err((
                "secret",
                format!(
                    "missing: set secret, secret_file, or the environment variable {}",
                    client_secret_env(&section.name)
                ),
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
        reply_attributes.push(ReplyTemplate::new(dictionary, &attr.name, &attr.value).map_err(|m| ("reply_attributes", m))?);
    }
    Ok(ClientSettings {
        network,
        secret: Secret::new(secret),
        require_message_authenticator: section.require_message_authenticator,
        policy: Arc::new(ClientPolicy {
            name: section.name.clone(),
            reply_attributes,
            group_filter,
        }),
    })
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
        assert_eq!(
            c.directory,
            DirectorySettings::File {
                path: "/etc/radmfa/users.toml".into()
            }
        );
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
            (
                MINIMAL.replace("127.0.0.1/32", "127.0.0.300"),
                "client[0] (\"netscaler-1\").address",
            ),
            (
                MINIMAL.replace("secret = \"testing123\"", ""),
                "client[0] (\"netscaler-1\").secret: missing",
            ),
            (
                MINIMAL.replace(
                    "[directory]",
                    "[[client]]\nname=\"b\"\naddress=\"127.0.0.1\"\nsecret=\"x\"\n[directory]",
                ),
                "already client",
            ),
            (MINIMAL.replace("kind = \"file\"", "kind = \"flie\""), "unknown variant `flie`"),
            (MINIMAL.replace("listen = [", "reject_delay = \"soon\"\nlisten = ["), "reject_delay"),
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
        let c = Config::parse(&dir.path().join("radmfa.toml"), &text, |k| {
            (k == "RADMFA_CLIENT_NETSCALER_1_SECRET").then(|| "from-env".into())
        })
        .unwrap();
        assert_eq!(c.clients[0].secret.expose(), b"from-env");
    }

    #[test]
    fn reply_attributes_resolve_by_dictionary_name() {
        let text = MINIMAL.replace(
            "require_message_authenticator = false",
            "reply_attributes = [{ name = \"Citrix-User-Groups\", value = \"{group}\" }, { name = \"Nope\", value = \"1\" }]",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("client[0] (\"netscaler-1\").reply_attributes: unknown attribute \"Nope\""),
            "{err}"
        );
    }
}
