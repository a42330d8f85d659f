//! `[store]`: where tokens, counters and used States are kept — an SQLite file (the embedded
//! default, one node) or a PostgreSQL database shared by every node — and the key file that
//! seals the seeds.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;
use crate::settings::{Invalid, Sources};

/// The environment variable that gives the PostgreSQL password (it wins over the file's).
pub const PASSWORD_ENV: &str = "RADMFA_STORE_PASSWORD";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    kind: StoreKind,
    key_file: PathBuf,
    // SQLite
    path: Option<PathBuf>,
    // PostgreSQL
    url: Option<String>,
    password: Option<Secret<String>>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    pool_size: Option<usize>,
    #[serde(with = "humantime_serde")]
    timeout: Option<Duration>,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            key_file: "master.key".into(),
            path: None,
            url: None,
            password: None,
            password_file: None,
            ca_file: None,
            pool_size: None,
            timeout: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    #[default]
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    pub backend: BackendSettings,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSettings {
    /// One node: a database file.
    Sqlite { path: PathBuf },
    /// Any number of nodes on one PostgreSQL database.
    Postgres(Box<PostgresSettings>),
}

impl StoreSettings {
    /// The SQLite file, when the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.backend {
            BackendSettings::Sqlite { path } => Some(path),
            BackendSettings::Postgres(_) => None,
        }
    }

    /// Where the data is, for messages: the file, or the database's URL without its password.
    pub fn shown(&self) -> String {
        match &self.backend {
            BackendSettings::Sqlite { path } => path.display().to_string(),
            BackendSettings::Postgres(pg) => pg.shown.clone(),
        }
    }
}

/// How to reach the PostgreSQL database.
#[derive(Clone)]
pub struct PostgresSettings {
    /// Host(s), port, user, database and password, as `tokio_postgres` connects with them.
    pub connection: tokio_postgres::Config,
    pub tls: TlsMode,
    /// The CA certificates the server's certificate must chain to; the system's when `None`.
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
    /// The longest a connection or one store operation may take before the request that needs it
    /// is left unanswered (the NAS fails over).
    pub timeout: Duration,
    /// The URL as given, without a password, for messages.
    pub shown: String,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config's Debug redacts the password; `shown` never held it.
        f.debug_struct("PostgresSettings")
            .field("url", &self.shown)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PartialEq for PostgresSettings {
    fn eq(&self, other: &Self) -> bool {
        // Same place, same way: what a config comparison needs (the password is not compared).
        (self.shown.as_str(), self.tls, &self.ca_file, self.pool_size, self.timeout)
            == (other.shown.as_str(), other.tls, &other.ca_file, other.pool_size, other.timeout)
    }
}

impl Eq for PostgresSettings {}

/// TLS to the database, from the URL's `sslmode`. Whenever TLS is used the server's
/// certificate is verified, host name included: `verify-ca` and `verify-full` are both the
/// latter, `require` too (libpq's `require` would take any certificate; we do not). Without an
/// `sslmode`, TLS is required unless the database is on this machine (loopback or a socket):
/// libpq's `prefer` falls back to plain text whenever the server (or whoever sits between)
/// offers no TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    /// TLS if the server offers it (libpq's default).
    Prefer,
    Require,
}

pub const DEFAULT_POOL_SIZE: usize = 16;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

impl StoreSection {
    pub fn build(self, sources: &Sources<'_>) -> Result<StoreSettings, Invalid> {
        let key_file = sources.path(&self.key_file);
        let backend = match self.kind {
            StoreKind::Sqlite => {
                self.only_for_postgres()?;
                BackendSettings::Sqlite { path: sources.path(self.path.as_deref().unwrap_or(Path::new("radmfa.db"))) }
            }
            StoreKind::Postgres => BackendSettings::Postgres(Box::new(self.postgres(sources)?)),
        };
        Ok(StoreSettings { backend, key_file })
    }

    fn only_for_postgres(&self) -> Result<(), Invalid> {
        let given = [
            ("url", self.url.is_some()),
            ("password", self.password.is_some()),
            ("password_file", self.password_file.is_some()),
            ("ca_file", self.ca_file.is_some()),
            ("pool_size", self.pool_size.is_some()),
            ("timeout", self.timeout.is_some()),
        ];
        match given.iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(Invalid::new(*key, "is a PostgreSQL setting: set kind = \"postgres\", or remove it")),
            None => Ok(()),
        }
    }

    fn postgres(self, sources: &Sources<'_>) -> Result<PostgresSettings, Invalid> {
        if self.path.is_some() {
            return Err(Invalid::new("path", "is the SQLite file: with kind = \"postgres\" the database is given by url"));
        }
        let Some(url) = self.url else {
            return Err(Invalid::new("url", "is required with kind = \"postgres\" (e.g. \"postgresql://radmfa@db1.example.test/radmfa\")"));
        };
        let (mut connection, tls, shown) = parse_url(&url).map_err(|m| Invalid::new("url", m))?;
        let password = sources.secret(self.password, self.password_file.as_deref(), PASSWORD_ENV).map_err(|m| {
            let key = if self.password_file.is_some() { "password_file" } else { "password" };
            Invalid::new(key, m)
        })?;
        if let Some(password) = password {
            connection.password(password.expose().as_bytes());
        }
        let pool_size = self.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
        if !(1..=1000).contains(&pool_size) {
            return Err(Invalid::new("pool_size", "must be between 1 and 1000 connections"));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&timeout) {
            return Err(Invalid::new("timeout", "must be between 100ms and 60s"));
        }
        connection.connect_timeout(timeout);
        connection.application_name("radmfa");
        let ca_file = self.ca_file.map(|f| sources.path(f));
        if let Some(ca) = &ca_file {
            crate::tls::client_config(ca).map_err(|m| Invalid::new("ca_file", m))?;
        }
        Ok(PostgresSettings { connection, tls, ca_file, pool_size, timeout, shown })
    }
}

/// A `postgresql://` URL (or libpq's `key=value` form): the connection, the TLS mode (taken out
/// of it, as `tokio_postgres` knows fewer modes than libpq), and the URL without a password.
fn parse_url(url: &str) -> Result<(tokio_postgres::Config, TlsMode, String), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{e} (expected e.g. \"postgresql://radmfa@db1.example.test/radmfa\")"))?;
    if !matches!(parsed.scheme(), "postgresql" | "postgres") {
        return Err(format!("{:?} is not a postgresql:// URL", parsed.scheme()));
    }
    let mut tls = None;
    let mut kept = parsed.clone();
    kept.query_pairs_mut().clear();
    for (key, value) in parsed.query_pairs() {
        if key == "sslmode" {
            tls = Some(match value.as_ref() {
                "disable" => TlsMode::Disable,
                "allow" | "prefer" => TlsMode::Prefer,
                "require" | "verify-ca" | "verify-full" => TlsMode::Require,
                other => return Err(format!("sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full")),
            });
        } else {
            kept.query_pairs_mut().append_pair(&key, &value);
        }
    }
    if kept.query() == Some("") {
        kept.set_query(None);
    }
    let config = tokio_postgres::Config::from_str(kept.as_str()).map_err(|e| e.to_string())?;
    if config.get_hosts().is_empty() {
        return Err("names no host (e.g. \"postgresql://radmfa@db1.example.test/radmfa\")".into());
    }
    if config.get_user().is_none() {
        return Err("names no user (e.g. \"postgresql://radmfa@db1.example.test/radmfa\")".into());
    }
    // `hostaddr`, when given, is where the connection goes (the host names only the certificate).
    let local = config.get_hosts().iter().all(on_this_machine) && config.get_hostaddrs().iter().all(std::net::IpAddr::is_loopback);
    let tls = tls.unwrap_or(if local { TlsMode::Prefer } else { TlsMode::Require });
    // Shown without a password, wherever the URL holds one (user info or `?password=`).
    let mut shown = parsed.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.query_pairs_mut().clear();
    for (key, value) in parsed.query_pairs() {
        shown.query_pairs_mut().append_pair(&key, if key == "password" { "***" } else { &value });
    }
    if shown.query() == Some("") {
        shown.set_query(None);
    }
    Ok((config, tls, shown.to_string()))
}

/// Whether a database host is this machine: a loopback address, `localhost`, or a socket.
fn on_this_machine(host: &tokio_postgres::config::Host) -> bool {
    match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_required_by_default_unless_the_database_is_on_this_machine() {
        let tls = |url: &str| parse_url(url).unwrap().1;
        assert_eq!(tls("postgresql://radmfa@db1.example.test/radmfa"), TlsMode::Require);
        assert_eq!(tls("postgresql://radmfa@192.0.2.7/radmfa"), TlsMode::Require);
        assert_eq!(tls("postgresql://radmfa@127.0.0.1/radmfa"), TlsMode::Prefer);
        assert_eq!(tls("postgresql://radmfa@[::1]:5433/radmfa"), TlsMode::Prefer);
        assert_eq!(tls("postgresql://radmfa@localhost/radmfa"), TlsMode::Prefer);
        assert_eq!(tls("postgresql://radmfa@db1.example.test/radmfa?sslmode=prefer"), TlsMode::Prefer, "as the admin asked");
        assert_eq!(tls("postgresql://radmfa@127.0.0.1/radmfa?sslmode=require"), TlsMode::Require);
        assert_eq!(tls("postgresql://radmfa@localhost/radmfa?hostaddr=192.0.2.7"), TlsMode::Require, "the address it connects to");
        assert_eq!(tls("postgresql://radmfa@localhost/radmfa?hostaddr=127.0.0.3"), TlsMode::Prefer);
    }

    fn build(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<StoreSettings, Invalid> {
        let section: StoreSection = toml::from_str(text).unwrap();
        section.build(&Sources { base: Path::new("/etc/radmfa"), env })
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn sqlite_is_the_default_beside_the_config() {
        let s = build("", &no_env).unwrap();
        assert_eq!(s.sqlite_path(), Some(Path::new("/etc/radmfa/radmfa.db")));
        assert_eq!(s.key_file, Path::new("/etc/radmfa/master.key"));
        assert_eq!(build("url = \"postgresql://a@b/c\"", &no_env).unwrap_err().key, "url");
    }

    #[test]
    fn a_postgres_url_with_tls_and_a_password_from_the_environment() {
        let env = |name: &str| (name == PASSWORD_ENV).then(|| "from-env".to_owned());
        let s = build(
            "kind = \"postgres\"\nurl = \"postgresql://radmfa@db1.example.test:6432/radmfa?sslmode=verify-full&connect_timeout=9\"",
            &env,
        )
        .unwrap();
        let BackendSettings::Postgres(pg) = s.backend else { panic!("postgres") };
        assert_eq!(pg.tls, TlsMode::Require);
        assert_eq!(pg.connection.get_password(), Some(&b"from-env"[..]));
        assert_eq!(pg.connection.get_ports(), [6432]);
        assert_eq!(pg.connection.get_dbname(), Some("radmfa"));
        assert_eq!((pg.pool_size, pg.timeout), (DEFAULT_POOL_SIZE, DEFAULT_TIMEOUT));
        assert!(!format!("{pg:?}").contains("from-env"), "no password in Debug");
    }

    #[test]
    fn a_password_in_the_url_is_not_shown() {
        let s = build("kind = \"postgres\"\nurl = \"postgresql://radmfa@db1/radmfa?sslmode=disable&password=Top5ecret\"", &no_env).unwrap();
        assert!(!s.shown().contains("Top5ecret"), "{}", s.shown());
        assert!(s.shown().contains("sslmode=disable"), "{}", s.shown());
        let s = build("kind = \"postgres\"\nurl = \"postgresql://radmfa:s3cret@db1/radmfa\"", &no_env).unwrap();
        assert!(!s.shown().contains("s3cret"), "{}", s.shown());
        let BackendSettings::Postgres(pg) = s.backend else { panic!("postgres") };
        assert_eq!(pg.connection.get_password(), Some(&b"s3cret"[..]));
        assert!(!format!("{pg:?}").contains("s3cret"));
    }

    #[test]
    fn mistakes_name_their_key() {
        let bad = |text: &str| build(&format!("kind = \"postgres\"\n{text}"), &no_env).unwrap_err();
        assert_eq!(bad("").key, "url");
        assert_eq!(bad("url = \"mysql://a@b/c\"").key, "url");
        assert_eq!(bad("url = \"postgresql://a@b/c?sslmode=maybe\"").key, "url");
        assert_eq!(bad("url = \"postgresql://b/c\"").key, "url");
        assert_eq!(bad("url = \"postgresql://a@b/c\"\npath = \"x.db\"").key, "path");
        assert_eq!(bad("url = \"postgresql://a@b/c\"\npool_size = 0").key, "pool_size");
        assert_eq!(bad("url = \"postgresql://a@b/c\"\ntimeout = \"5m\"").key, "timeout");
        assert_eq!(bad("url = \"postgresql://a@b/c\"\nca_file = \"/nonexistent.pem\"").key, "ca_file");
        assert_eq!(bad("url = \"postgresql://a@b/c\"\npassword = \"x\"\npassword_file = \"y\"").key, "password_file");
    }
}
