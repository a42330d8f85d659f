//! The configuration file (TOML), assembled from the sections each subsystem owns.
//!
//! Every section's type, defaults and checks live beside its subsystem (`server::settings`,
//! `directory::settings`, `store::settings`, `otp::settings`, `sms::settings`,
//! `auth::settings`, `portal::settings`, `metrics::settings`); this module reads the file, hands each section its
//! sources (the file's folder, the environment), checks what spans sections, and names the
//! file and key in every error. Sections are `deny_unknown_fields`, so a typo is an error
//! naming the key. Only the command line (`cli`) uses it; nothing here starts anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::audit::{AuditSection, AuditSettings};
use crate::auth::AuthSettings;
use crate::auth::messages::MessagesSection;
use crate::auth::settings::{HelpdeskSection, LockoutSection, Sections, UsernamesSection};
use crate::directory::settings::{DirectoryKind, DirectorySection, DirectorySettings};
use crate::metrics::{MetricsSection, MetricsSettings};
use crate::otp::settings::{TotpSection, TotpSettings};
use crate::portal::{PortalSection, PortalSettings};
use crate::radius::Dictionary;
use crate::server::settings::{ClientSection, ClientSettings, ServerSection, ServerSettings, build_clients};
use crate::settings::{Invalid, Sources};
use crate::sms::settings::{GatewaySettings, SmsSection};
use crate::store::settings::{StoreSection, StoreSettings};

pub use crate::server::settings::client_secret_env;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: ServerSection,
    #[serde(default)]
    client: Vec<ClientSection>,
    directory: DirectoryKind,
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
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    helpdesk: HelpdeskSection,
    #[serde(default)]
    audit: AuditSection,
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
    pub portal: Option<PortalSettings>,
    /// The Prometheus endpoint, when `[metrics] listen` is set.
    pub metrics: Option<MetricsSettings>,
    /// How long the audit trail is kept.
    pub audit: AuditSettings,
    /// The `conf.d/*.toml` files whose `[[client]]`s were added, in the order read.
    pub drop_ins: Vec<PathBuf>,
    /// The sections a reload cannot apply (sockets, the store, the portal, the metrics
    /// endpoint), as written: a reload compares them with the running ones to say which need a
    /// restart.
    pub restart_only: BTreeMap<String, toml::Value>,
}

/// `[[client]]` sections in a `conf.d/*.toml` file: nothing else may be there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DropIn {
    #[serde(default)]
    client: Vec<ClientSection>,
}

/// What a reload cannot change while the server runs: the `[server]` keys but `dictionary`,
/// and these sections whole.
const RESTART_ONLY: &[&str] = &["server", "store", "portal", "metrics"];

impl Config {
    /// Reads `path` and the `[[client]]` drop-ins in `conf.d/*.toml` beside it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read = |path: &Path| {
            crate::settings::read_text_file(path, crate::settings::MAX_FILE_BYTES)
                .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })
        };
        let text = read(path)?;
        let drop_ins = drop_in_files(path)?.into_iter().map(|file| Ok((read(&file)?, file))).collect::<Result<Vec<_>, ConfigError>>()?;
        let mut config = Self::parse(path, &text, |key| std::env::var(key).ok())?;
        for (text, file) in drop_ins {
            config.add_drop_in(&file, &text, |key| std::env::var(key).ok())?;
        }
        Ok(config)
    }

    /// Adds the `[[client]]`s of a drop-in file's `text`, read from `file`. Errors name the
    /// drop-in; a client's name and address must be unique across every file.
    pub fn add_drop_in(&mut self, file: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let shown = file.display().to_string();
        let drop_in: DropIn = crate::toml_error::parse(text).map_err(|message| ConfigError::Parse {
            path: shown.clone(),
            message: format!("{message} (a conf.d file holds [[client]] sections only)"),
        })?;
        let base = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let sources = Sources { base: &base, env: &env };
        let invalid = |e: Invalid| ConfigError::Invalid { path: shown.clone(), key: e.key, message: e.message };
        let clients = build_clients(&drop_in.client, &sources, &self.dictionary).map_err(invalid)?;
        for (i, client) in clients.iter().enumerate() {
            let key = |field: &str| format!("client[{i}] ({:?}).{field}", client.policy.name);
            if self.clients.iter().any(|c| c.policy.name == client.policy.name) {
                return Err(invalid(Invalid::new(
                    key("name"),
                    format!("{:?} is already a client (in {} or an earlier conf.d file)", client.policy.name, self.path.display()),
                )));
            }
            if client.transport == crate::server::settings::Transport::Udp
                && let Some(other) = self.clients.iter().find(|c| c.transport == client.transport && c.network == client.network)
            {
                return Err(invalid(Invalid::new(key("address"), format!("{} is already client {:?}", client.network, other.policy.name))));
            }
        }
        self.warnings.extend(clients.iter().filter_map(open_to_all));
        if self.server.tls.is_none() {
            self.warnings.extend(clients.iter().filter_map(unreachable_tls_client));
        }
        self.secret_files.push(file.to_path_buf());
        self.secret_files.extend(drop_in.client.iter().filter_map(|c| c.secret_file.as_ref()).map(|f| sources.path(f)));
        self.clients.extend(clients);
        self.drop_ins.push(file.to_path_buf());
        Ok(())
    }

    /// The sections whose change a reload cannot apply, by name, that differ from those
    /// `running` (another config's `restart_only`).
    pub fn needs_restart_for(&self, running: &BTreeMap<String, toml::Value>) -> Vec<String> {
        let sections: std::collections::BTreeSet<&String> = self.restart_only.keys().chain(running.keys()).collect();
        sections.into_iter().filter(|s| self.restart_only.get(*s) != running.get(*s)).map(|s| format!("[{s}]")).collect()
    }

    /// Parses `text` as if read from `path` (relative paths resolve against its folder).
    pub fn parse(path: &Path, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let parse_error = |message| ConfigError::Parse { path: shown.clone(), message };
        let file: ConfigFile = crate::toml_error::parse(text).map_err(parse_error)?;
        let directory = DirectorySection::read(text, &file.directory).map_err(parse_error)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let sources = Sources { base: &base, env: &env };
        let invalid = |e: Invalid| ConfigError::Invalid { path: shown.clone(), key: e.key, message: e.message };
        let mut config = assemble(path, file, directory, &sources).map_err(invalid)?;
        config.restart_only = restart_only(text);
        Ok(config)
    }
}

/// A warning for a client whose address is every address: anyone who learns its secret is a NAS.
fn open_to_all(client: &ClientSettings) -> Option<String> {
    (client.network.prefix_len() == 0 && client.transport == crate::server::settings::Transport::Udp).then(|| {
        format!(
            "client {:?} takes requests from any address ({}): list the NAS's own addresses instead",
            client.policy.name, client.network
        )
    })
}

/// A TLS client while no RadSec listener is configured: it could never connect.
fn unreachable_tls_client(client: &ClientSettings) -> Option<String> {
    (client.transport == crate::server::settings::Transport::Tls)
        .then(|| format!("client {:?} has transport = \"tls\", but [server] has no tls_listen: it cannot connect", client.policy.name))
}

/// `conf.d/*.toml` beside the config file, by name; none if there is no such folder.
fn drop_in_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let folder = path.parent().unwrap_or(Path::new(".")).join("conf.d");
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfigError::Read { path: folder.display().to_string(), source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Read { path: folder.display().to_string(), source })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Editors' and package managers' leftovers (.swp, .dpkg-old, ~) are not .toml.
        if name.ends_with(".toml") && !name.starts_with('.') {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The sections a reload cannot apply, as written (the file parsed without errors already).
fn restart_only(text: &str) -> BTreeMap<String, toml::Value> {
    let Ok(mut table) = text.parse::<toml::Table>() else { return BTreeMap::new() };
    if let Some(toml::Value::Table(server)) = table.get_mut("server") {
        server.remove("dictionary");
    }
    RESTART_ONLY.iter().filter_map(|s| Some(((*s).to_owned(), table.remove(*s)?))).collect()
}

/// Each section built by its owner, in the order the file is usually read; then what spans
/// sections.
fn assemble(path: &Path, file: ConfigFile, directory: DirectorySection, sources: &Sources<'_>) -> Result<Config, Invalid> {
    let secret_files = secret_files(path, &file, &directory, sources);
    let (server, dictionary) = file.server.build(sources).map_err(|e| e.within("server"))?;
    let clients = build_clients(&file.client, sources, &dictionary)?;
    let directory = directory.build(sources).map_err(|e| e.within("directory"))?;
    let store = file.store.build(sources).map_err(|e| e.within("store"))?;
    let totp = file.totp.build().map_err(|e| e.within("totp"))?;
    let answer_within = file.sms.answer_within();
    let (sms, sms_codes) = file.sms.build(sources).map_err(|e| e.within("sms"))?;
    if file.server.request_timeout() <= answer_within {
        return Err(Invalid::new(
            "server.request_timeout",
            format!("must be longer than sms.answer_within ({answer_within:?}): a login that sends an SMS would get no answer"),
        ));
    }
    let portal = match file.portal {
        Some(p) if p.enabled => Some(with_directory_groups(p.build(sources, &totp.issuer).map_err(|e| e.within("portal"))?, &directory)?),
        _ => None,
    };
    let metrics = file.metrics.build().map_err(|e| e.within("metrics"))?;
    let audit = file.audit.build().map_err(|e| e.within("audit"))?;
    let sections = Sections {
        totp: totp.clone(),
        sms: sms_codes,
        lockout: file.lockout,
        messages: file.messages,
        usernames: file.usernames,
        helpdesk: file.helpdesk,
        // One node answers a NAS's UDP retries from its own cache; only nodes sharing a
        // database keep Accepts for one another (a write per login SQLite need not make) — and
        // a RadSec NAS, whose retry comes on a new connection the cache does not know.
        retry_window: if store.sqlite_path().is_some() && server.tls.is_none() { std::time::Duration::ZERO } else { server.cache_ttl },
    };
    let (auth, mut warnings) = sections.build()?;
    warnings.extend(clients.iter().filter_map(open_to_all));
    if server.tls.is_none() {
        warnings.extend(clients.iter().filter_map(unreachable_tls_client));
    }
    Ok(Config {
        path: path.to_path_buf(),
        warnings,
        secret_files,
        server,
        clients,
        directory,
        dictionary: Arc::new(dictionary),
        store,
        totp,
        auth,
        sms,
        portal,
        metrics,
        audit,
        drop_ins: Vec::new(),
        restart_only: BTreeMap::new(),
    })
}

/// The portal's helpdesk groups as the directory names groups (DNs with LDAP: a bare name would
/// match no entry, and nobody would get the tab), and the directory's required groups for the
/// help desk's view.
fn with_directory_groups(mut portal: PortalSettings, directory: &DirectorySettings) -> Result<PortalSettings, Invalid> {
    if let DirectorySettings::Ldap(ldap) = directory {
        if let Some(i) = portal.helpdesk_groups.iter().position(|g| !g.contains('=')) {
            return Err(Invalid::new(
                format!("portal.helpdesk_groups[{i}]"),
                "must be a group's DN with an LDAP directory, e.g. \"CN=Helpdesk,OU=Groups,DC=example,DC=test\"",
            ));
        }
        portal.required_groups = ldap.required_groups.clone();
    }
    Ok(portal)
}

/// Every file that holds a secret: the config itself and those it names.
fn secret_files(path: &Path, file: &ConfigFile, directory: &DirectorySection, sources: &Sources<'_>) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    files.extend(file.client.iter().filter_map(|c| c.secret_file.as_ref()).map(|f| sources.path(f)));
    files.extend(directory.secret_files(sources));
    files.extend(file.sms.secret_files(sources));
    files.extend(file.server.secret_files(sources));
    files
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::{Mode, NoToken};
    use crate::otp::TotpParams;
    use crate::store::settings::BackendSettings;

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

    /// A CA, a server certificate and key in `dir`, as PEM files radsec.{ca,pem,key}.
    fn radsec_files(dir: &Path) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["radius.example.test".to_owned()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("radsec.ca"), ca.pem()).unwrap();
        std::fs::write(dir.join("radsec.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("radsec.key"), key.serialize_pem()).unwrap();
    }

    #[test]
    fn radsec_keys_and_tls_clients_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        radsec_files(dir.path());
        let tls_keys = "listen = [\"127.0.0.1:18120\"]\ntls_listen = [\"127.0.0.1:2083\"]\ncert_file = \"radsec.pem\"\nkey_file = \"radsec.key\"\nca_file = \"radsec.ca\"\n";
        let tls_client = "[[client]]\nname = \"fw\"\ntransport = \"tls\"\ncertificate_name = \"fw.example.test\"\n[directory]";
        let text = MINIMAL.replace("listen = [\"127.0.0.1:18120\"]\n", tls_keys).replace("[directory]", tls_client);
        let config = |text: &str| Config::parse(&dir.path().join("radmfa.toml"), text, |_| None);
        let c = config(&text).unwrap();
        let tls = c.server.tls.as_ref().unwrap();
        assert_eq!(tls.listen, vec!["127.0.0.1:2083".parse().unwrap()]);
        assert_eq!(tls.config.alpn_protocols, [b"radius/1.1".to_vec(), b"radius/1.0".to_vec()]);
        let fw = &c.clients[1];
        assert_eq!(fw.secret.expose(), b"radsec", "RFC 6614's secret unless configured");
        assert_eq!(fw.network.prefix_len(), 0, "from anywhere unless an address is given");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.auth.retry_window, c.server.cache_ttl, "a RadSec retry comes on a new connection: Accepts are kept");

        let cases = [
            (text.replace("cert_file = \"radsec.pem\"\n", ""), "server.cert_file: missing"),
            (text.replace("radsec.ca", "nowhere.ca"), "server.ca_file"),
            (text.replace("key_file = \"radsec.key\"", "key_file = \"radsec.ca\""), "server.key_file"),
            (text.replace("tls_listen = [\"127.0.0.1:2083\"]\n", ""), "server.cert_file: is for the RadSec listener"),
            (
                text.replace("listen = [\"127.0.0.1:18120\"]", "listen = [\"127.0.0.1:18120\"]\ntls_radius_versions = [\"2\"]"),
                "server.tls_radius_versions",
            ),
            (text.replace("certificate_name = \"fw.example.test\"", ""), "client[1] (\"fw\").certificate_name: a TLS client needs"),
            (
                text.replace("certificate_name = \"fw.example.test\"", "certificate_fingerprint = \"12:34\""),
                "client[1] (\"fw\").certificate_fingerprint",
            ),
            (
                MINIMAL.replace("secret = \"testing123\"", "secret = \"x\"\ncertificate_name = \"a\""),
                "client[0] (\"netscaler-1\").transport",
            ),
            (MINIMAL.replace("address = \"127.0.0.1/32\"\n", ""), "client[0] (\"netscaler-1\").address: missing"),
        ];
        for (text, expected) in cases {
            let err = config(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err}");
        }
        // A TLS client beside a UDP client of the same address is no clash.
        let both =
            text.replace("certificate_name = \"fw.example.test\"", "certificate_name = \"fw.example.test\"\naddress = \"127.0.0.1/32\"");
        assert!(config(&both).is_ok());
        // Without a listener, a TLS client could never connect: said.
        let no_listener = MINIMAL.replace("[directory]", tls_client);
        assert!(config(&no_listener).unwrap().warnings.iter().any(|w| w.contains("no tls_listen")));
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
        assert_eq!(
            c.store,
            StoreSettings {
                backend: BackendSettings::Sqlite { path: "/etc/radmfa/radmfa.db".into() },
                key_file: "/etc/radmfa/master.key".into()
            }
        );
        assert_eq!(c.totp.issuer, "Example Region");
        assert_eq!(c.totp.params, TotpParams::default());
        assert_eq!(c.auth.totp_window, 1);
        assert!(matches!(c.sms, GatewaySettings::Http(ref http) if http.url == "http://127.0.0.1:9999/send"));
        let defaults = parse(MINIMAL).unwrap();
        assert!(matches!(defaults.sms, GatewaySettings::Log), "the embedded default writes SMS to the log");
        assert_eq!(defaults.auth.lockout.max_failures, 5);
        assert_eq!(defaults.auth.sms_limits.per_user, 3);
    }

    #[test]
    fn helpdesk_and_audit_settings_have_defaults_and_bounds() {
        let defaults = parse(MINIMAL).unwrap();
        assert_eq!(defaults.audit.retention, Duration::from_secs(90 * 86_400));
        assert_eq!(defaults.auth.helpdesk.max_temporary_code_validity, Duration::from_secs(3 * 86_400));
        assert_eq!(defaults.auth.helpdesk.max_temporary_code_uses, 20);
        let c = parse(&format!("{MINIMAL}\n[audit]\nretention = \"400d\"\n[helpdesk]\nmax_temporary_code_validity = \"12h\"\n")).unwrap();
        assert_eq!(c.audit.retention, Duration::from_secs(400 * 86_400));
        assert_eq!(c.auth.helpdesk.max_temporary_code_validity, Duration::from_secs(12 * 3600));
        let err = |extra: &str| parse(&format!("{MINIMAL}\n{extra}\n")).unwrap_err().to_string();
        assert!(err("[audit]\nretention = \"1h\"").contains("audit.retention: must be at least 1d"));
        assert!(err("[audit]\nretention = \"soon\"").contains("audit.retention"));
        assert!(err("[helpdesk]\nmax_temporary_code_validity = \"90d\"").contains("helpdesk.max_temporary_code_validity"));
        assert!(err("[helpdesk]\nmax_temporary_code_uses = 0").contains("helpdesk.max_temporary_code_uses"));
        assert!(err("[helpdesk]\nmax_uses = 3").contains("unknown field `max_uses`"));
    }

    #[test]
    fn sms_settings_are_checked_per_gateway() {
        let sms = |body: &str| parse(&format!("{MINIMAL}\n[sms]\n{body}\n")).map(|c| c.sms).map_err(|e| e.to_string());
        assert!(sms("gateway = \"log\"\nurl = \"http://x\"").unwrap_err().contains("sms.gateway: url is not used by the log gateway"));
        assert!(sms("gateway = \"46elks\"\nusername = \"u\"\nfrom = \"radmfa\"").unwrap_err().contains("sms.password: required"));
        assert!(sms("gateway = \"twilio\"\naccount_sid = \"AC1\"\nauth_token = \"t\"").unwrap_err().contains("sms.from: required"));
        assert!(sms("gateway = \"exec\"").unwrap_err().contains("sms.command"));
        assert!(sms("gateway = \"http\"\nurl = \"ftp://x\"").unwrap_err().contains("sms.url"));
        // Checked with the rest of the file, not first when the server starts sending.
        let method = sms("gateway = \"http\"\nurl = \"https://x\"\nmethod = \"PO ST\"").unwrap_err();
        assert!(method.contains("sms.method: \"PO ST\" is not an HTTP method"), "{method}");
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
    fn errors_inside_a_directory_kind_and_in_messages_name_their_key_once() {
        let ldap = "[directory]\nkind = \"ldap\"\nurls = [\"ldaps://dc1.example.test\"]\nbind_dn = \"CN=svc\"\nbind_password = \"x\"\nbase_dn = \"DC=example,DC=test\"\ntimeout = \"5 parsecs\"\n";
        let text = MINIMAL.replace("[directory]\nkind = \"file\"\npath = \"users.toml\"\n", ldap);
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("line 17, column 11: directory.timeout: invalid value"), "{err}");
        let typo = parse(&MINIMAL.replace("path =", "pth =")).unwrap_err().to_string();
        assert!(typo.contains("line 13, column 1") && typo.contains("unknown field `pth`"), "{typo}");
        let sms_text = parse(&format!("{MINIMAL}\n[messages]\nsms_text = \"no code here\"\n")).unwrap_err().to_string();
        assert!(sms_text.ends_with("messages.sms_text: must contain {code}"), "{sms_text}");
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
    fn helpdesk_groups_are_names_with_the_users_file_and_dns_with_ldap() {
        let portal = "\n[portal]\nenabled = true\nlisten = \"127.0.0.1:8080\"\npublic_url = \"http://127.0.0.1:8080\"\n";
        let with = |text: &str, groups: &str| parse(&format!("{text}{portal}helpdesk_groups = {groups}\n"));
        let p = with(MINIMAL, "[\" Helpdesk \"]").unwrap().portal.unwrap();
        assert_eq!((p.helpdesk_groups, p.required_groups), (vec!["Helpdesk".to_owned()], Vec::<String>::new()));
        assert!(parse(&format!("{MINIMAL}{portal}")).unwrap().portal.unwrap().helpdesk_groups.is_empty(), "no help desk by default");
        let twice = with(MINIMAL, "[\"Helpdesk\", \"HELPDESK\"]").unwrap_err().to_string();
        assert!(twice.contains("portal.helpdesk_groups[1]: is listed twice"), "{twice}");
        assert!(with(MINIMAL, "[\"\"]").unwrap_err().to_string().contains("portal.helpdesk_groups[0]"));
        let ldap = "[directory]\nkind = \"ldap\"\nurls = [\"ldaps://dc1.example.test\"]\nbind_dn = \"CN=svc\"\nbind_password = \"x\"\nbase_dn = \"DC=example,DC=test\"\nrequired_groups = [\"CN=VPN-Users,DC=example,DC=test\"]\n";
        let ldap = MINIMAL.replace("[directory]\nkind = \"file\"\npath = \"users.toml\"\n", ldap);
        let bare = with(&ldap, "[\"CN=Helpdesk,DC=example,DC=test\", \"Helpdesk\"]").unwrap_err().to_string();
        assert!(bare.contains("portal.helpdesk_groups[1]: must be a group's DN"), "{bare}");
        let p = with(&ldap, "[\"CN=Helpdesk,OU=Groups,DC=example,DC=test\"]").unwrap().portal.unwrap();
        assert_eq!(p.required_groups, ["CN=VPN-Users,DC=example,DC=test"], "shown in the help desk's view");
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

    const DROP_IN: &str = r#"
[[client]]
name = "vpn-1"
address = "192.0.2.10"
secret = "vpn-shared-secret-1"
mode = "append"
"#;

    #[test]
    fn drop_ins_add_clients_and_name_their_file_in_errors() {
        let mut c = parse(MINIMAL).unwrap();
        let file = Path::new("/etc/radmfa/conf.d/10-vpn.toml");
        c.add_drop_in(file, DROP_IN, |_| None).unwrap();
        assert_eq!(c.clients.len(), 2);
        assert_eq!(c.clients[1].policy.name, "vpn-1");
        assert_eq!(c.clients[1].policy.mode, Mode::Append);
        assert!(c.secret_files.iter().any(|f| f == file), "a drop-in holds secrets: its mode is checked");
        assert_eq!(c.drop_ins, [file]);

        let again = c.add_drop_in(Path::new("/etc/radmfa/conf.d/20-copy.toml"), DROP_IN, |_| None).unwrap_err().to_string();
        assert!(again.starts_with("/etc/radmfa/conf.d/20-copy.toml: client[0] (\"vpn-1\").name"), "{again}");
        let same_address = DROP_IN.replace("vpn-1", "vpn-2");
        let err = c.add_drop_in(Path::new("/etc/radmfa/conf.d/30.toml"), &same_address, |_| None).unwrap_err().to_string();
        assert!(err.contains("30.toml: client[0] (\"vpn-2\").address: 192.0.2.10/32 is already client \"vpn-1\""), "{err}");
        let other_section = "[server]\nlisten = [\"0.0.0.0:1812\"]\n";
        let err = c.add_drop_in(Path::new("/etc/radmfa/conf.d/40.toml"), other_section, |_| None).unwrap_err().to_string();
        assert!(err.starts_with("/etc/radmfa/conf.d/40.toml:") && err.contains("[[client]] sections only"), "{err}");
        let bad_secret =
            DROP_IN.replace("secret = \"vpn-shared-secret-1\"", "").replace("vpn-1", "vpn-3").replace("192.0.2.10", "192.0.2.11");
        let err = c.add_drop_in(Path::new("/etc/radmfa/conf.d/50.toml"), &bad_secret, |_| None).unwrap_err().to_string();
        assert!(err.contains("50.toml: client[0] (\"vpn-3\").secret: missing"), "{err}");
        assert_eq!(c.clients.len(), 2, "a refused drop-in adds nothing");
    }

    #[test]
    fn drop_ins_are_read_from_conf_d_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("radmfa.toml");
        std::fs::write(&config, MINIMAL).unwrap();
        std::fs::write(dir.path().join("users.toml"), "").unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/20-b.toml"), DROP_IN.replace("vpn-1", "b").replace("192.0.2.10", "192.0.2.20")).unwrap();
        std::fs::write(dir.path().join("conf.d/10-a.toml"), DROP_IN.replace("vpn-1", "a")).unwrap();
        // Not .toml: an editor's swap file, a package manager's leftover.
        std::fs::write(dir.path().join("conf.d/10-a.toml.dpkg-old"), "not toml at all").unwrap();
        std::fs::write(dir.path().join("conf.d/.10-a.toml.swp"), "not toml at all").unwrap();
        let c = Config::load(&config).unwrap();
        let names: Vec<&str> = c.clients.iter().map(|c| c.policy.name.as_str()).collect();
        assert_eq!(names, ["netscaler-1", "a", "b"]);
    }

    #[test]
    fn a_reload_tells_which_changed_sections_need_a_restart() {
        let running = parse(MINIMAL).unwrap();
        let same = parse(&MINIMAL.replace("netscaler-1", "netscaler-2")).unwrap();
        assert!(same.needs_restart_for(&running.restart_only).is_empty(), "clients reload");
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("dictionary.local");
        std::fs::write(&extra, "# no attributes\n").unwrap();
        let with_dictionary = format!("listen = [\"127.0.0.1:18120\"]\ndictionary = \"{}\"", extra.display());
        let dictionary = parse(&MINIMAL.replace("listen = [\"127.0.0.1:18120\"]", &with_dictionary)).unwrap();
        assert!(dictionary.needs_restart_for(&running.restart_only).is_empty(), "the dictionary reloads");
        let moved = parse(&MINIMAL.replace("127.0.0.1:18120", "127.0.0.1:18121")).unwrap();
        assert_eq!(moved.needs_restart_for(&running.restart_only), ["[server]"]);
        let metrics = parse(&format!("{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:9812\"\n")).unwrap();
        assert_eq!(metrics.needs_restart_for(&running.restart_only), ["[metrics]"]);
    }

    #[test]
    fn a_nas_that_cannot_answer_challenges_gets_append_and_no_sms() {
        let with = |keys: &str| {
            parse(&MINIMAL.replace("require_message_authenticator = false", &format!("require_message_authenticator = false\n{keys}")))
        };
        let c = with("challenges = false").unwrap();
        assert_eq!((c.clients[0].policy.mode, c.clients[0].policy.no_token), (Mode::Append, NoToken::Reject));
        let c = with("challenges = false\nno_token = \"password_only\"").unwrap();
        assert_eq!(c.clients[0].policy.no_token, NoToken::PasswordOnly);
        let err = with("challenges = false\nno_token = \"sms\"").unwrap_err().to_string();
        assert!(err.contains("client[0] (\"netscaler-1\").no_token: \"sms\" asks for the code in a challenge"), "{err}");
        let err = with("challenges = false\nmode = \"challenge\"").unwrap_err().to_string();
        assert!(err.contains(".mode: \"challenge\" needs a NAS that answers challenges"), "{err}");
        let err = with("challenges = false\nmode = \"auto\"").unwrap_err().to_string();
        assert!(err.contains(".mode: \"auto\" needs"), "{err}");
        let c = with("").unwrap();
        assert_eq!((c.clients[0].policy.mode, c.clients[0].policy.no_token), (Mode::Auto, NoToken::Sms), "the defaults otherwise");
    }

    #[test]
    fn a_client_open_to_every_address_is_warned_about() {
        let c = parse(&MINIMAL.replace("127.0.0.1/32", "0.0.0.0/0")).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("client \"netscaler-1\" takes requests from any address")), "{:?}", c.warnings);
        assert!(!parse(MINIMAL).unwrap().warnings.iter().any(|w| w.contains("any address")));
    }

    #[test]
    fn portal_branding_is_read_with_its_logo_beside_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logo.png"), b"\x89PNG\r\n\x1a\nrest-of-a-png").unwrap();
        let portal = "\n[portal]\nenabled = true\nlisten = \"127.0.0.1:8080\"\ntitle = { en = \"Example sign-in\", sv = \"Exempel inloggning\" }\nhelp_text = \"010-123 45 67\"\nlogo_file = \"logo.png\"\naccent_color = \"#123abc\"\n";
        let c = Config::parse(&dir.path().join("radmfa.toml"), &format!("{MINIMAL}{portal}"), |_| None).unwrap();
        let brand = &c.portal.unwrap().brand;
        assert_eq!(brand.title(crate::portal::i18n::Lang::Sv, "x"), "Exempel inloggning");
        assert_eq!(brand.logo.as_ref().unwrap().content_type, "image/png");
        let err = Config::parse(&dir.path().join("radmfa.toml"), &format!("{MINIMAL}{}", portal.replace("#123abc", "blue")), |_| None)
            .unwrap_err();
        assert!(err.to_string().contains("portal.accent_color"), "{err}");
    }
}
