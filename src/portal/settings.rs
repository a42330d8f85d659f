//! `[portal]`: the file's section, its defaults and checks (plain HTTP only on loopback, an
//! https public URL unless users reach it on this machine), the settings the portal runs on,
//! and what they imply for its cookies (names, `Secure`, `__Host-` prefix).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_extra::extract::cookie::{Cookie, SameSite};
use ipnet::IpNet;
use serde::Deserialize;

use super::brand::{Brand, Localized};
use url::Url;

use crate::settings::{Invalid, Sources, parse_network};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalSection {
    #[serde(default)]
    pub(crate) enabled: bool,
    #[serde(default = "defaults::listen")]
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
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    request_timeout: Duration,
    #[serde(default = "defaults::max_connections")]
    max_connections: usize,
    #[serde(default = "defaults::max_connections_per_address")]
    max_connections_per_address: usize,
    #[serde(default = "defaults::reject_delay", with = "humantime_serde")]
    reject_delay: Duration,
    /// The organisation's look: one text for both languages, or `{ en = "...", sv = "..." }`.
    title: Option<Localized>,
    help_text: Option<Localized>,
    logo_file: Option<PathBuf>,
    accent_color: Option<String>,
    /// Members of any of these groups get the HELPDESK tab (DNs with LDAP, names with the users
    /// file); empty: no help desk.
    #[serde(default)]
    helpdesk_groups: Vec<String>,
}

/// Usable tokens per user when `max_tokens` is not set (also `token import`'s limit without a
/// portal).
pub const DEFAULT_MAX_TOKENS: usize = 5;

mod defaults {
    use std::time::Duration;
    pub fn listen() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn max_tokens() -> usize {
        super::DEFAULT_MAX_TOKENS
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
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_connections() -> usize {
        512
    }
    pub fn max_connections_per_address() -> usize {
        32
    }
    pub fn reject_delay() -> Duration {
        Duration::from_secs(1)
    }
}

/// The PEM files the portal serves HTTPS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's certificate first.
    pub chain: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PortalSettings {
    pub listen: SocketAddr,
    /// PEM certificate chain and key: the portal serves HTTPS itself. Without them it serves
    /// plain HTTP, on loopback only, behind a TLS reverse proxy.
    pub tls: Option<TlsFiles>,
    /// The address users reach the portal at (https, or http on this machine only).
    pub public_url: Url,
    pub issuer: String,
    pub max_tokens: usize,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub max_sessions: usize,
    pub enrollment_timeout: Duration,
    /// Peers whose X-Forwarded-For is believed (see `client_addr`).
    pub trusted_proxies: Vec<IpNet>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    /// A failed sign-in is answered this long after the request arrived, whatever failed and
    /// however long finding out took: the time to answer tells nothing about the account.
    pub reject_delay: Duration,
    /// Title, help text, logo and accent colour on every page.
    pub brand: Arc<Brand>,
    /// Members of any of these get the HELPDESK tab, asked of the directory (nesting resolved)
    /// at sign-in and again on every helpdesk request; empty: no help desk.
    pub helpdesk_groups: Vec<String>,
    /// The directory's `required_groups` (LDAP), shown with the helpdesk groups in the help
    /// desk's view of a user: whether they are in each explains many a refused login.
    pub required_groups: Vec<String>,
}

impl PortalSettings {
    pub(super) fn https(&self) -> bool {
        self.public_url.scheme() == "https"
    }

    /// Under https the cookies carry the `__Host-` prefix: the browser then takes them only
    /// from this exact origin, Secure and for path `/`, so a sibling subdomain cannot plant a
    /// CSRF nonce or session id.
    pub(super) fn cookie_name(&self, name: CookieName) -> &'static str {
        match (name, self.https()) {
            (CookieName::Session, true) => "__Host-radmfa_session",
            (CookieName::Session, false) => "radmfa_session",
            (CookieName::SigninCsrf, true) => "__Host-radmfa_csrf",
            (CookieName::SigninCsrf, false) => "radmfa_csrf",
        }
    }

    pub(super) fn cookie(&self, name: &'static str, value: String, max_age: Option<Duration>, same_site: SameSite) -> Cookie<'static> {
        let mut cookie = Cookie::new(name, value);
        cookie.set_http_only(true);
        cookie.set_same_site(same_site);
        cookie.set_path("/");
        cookie.set_secure(self.https());
        if let Some(age) = max_age {
            cookie.set_max_age(cookie::time::Duration::seconds(i64::try_from(age.as_secs()).unwrap_or(i64::MAX)));
        }
        cookie
    }

    /// A cookie telling the browser to forget `name` (same attributes, or `__Host-` ones are refused).
    pub(super) fn removal(&self, name: &'static str) -> Cookie<'static> {
        let mut cookie = self.cookie(name, String::new(), None, SameSite::Strict);
        cookie.make_removal();
        cookie
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum CookieName {
    Session,
    SigninCsrf,
}

impl PortalSection {
    /// Checked; errors name the key within the section. `default_issuer` is `[totp] issuer`.
    pub fn build(self, sources: &Sources<'_>, default_issuer: &str) -> Result<PortalSettings, Invalid> {
        let listen: SocketAddr =
            self.listen.parse().map_err(|_| Invalid::new("listen", format!("{:?} is not an IP:port address", self.listen)))?;
        let tls = self.tls_files(sources)?;
        if tls.is_none() && !listen.ip().is_loopback() {
            return Err(Invalid::new(
                "listen",
                format!(
                    "{listen} is not a loopback address: without cert_file/key_file the portal serves plain HTTP, so only on loopback behind a TLS reverse proxy"
                ),
            ));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = self.public_url.clone().unwrap_or_else(|| format!("{scheme}://{listen}"));
        let public_url = check_public_url(&public_url, tls.is_some()).map_err(|m| Invalid::new("public_url", m))?;
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|t| parse_network(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| Invalid::new("trusted_proxies", m))?;
        self.check_limits()?;
        let logo_file = self.logo_file.as_ref().map(|f| sources.path(f));
        let brand = Brand::build(self.title.clone(), self.help_text.clone(), logo_file.as_deref(), self.accent_color.as_deref())?;
        let helpdesk_groups = check_groups(self.helpdesk_groups)?;
        Ok(PortalSettings {
            brand: Arc::new(brand),
            listen,
            tls,
            public_url,
            issuer: self.issuer.unwrap_or_else(|| default_issuer.to_owned()),
            max_tokens: self.max_tokens,
            session_idle: self.session_idle,
            session_max: self.session_max,
            max_sessions: self.max_sessions,
            enrollment_timeout: self.enrollment_timeout,
            trusted_proxies,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            request_timeout: self.request_timeout,
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            reject_delay: self.reject_delay,
            helpdesk_groups,
            // The directory's own, filled in when the whole configuration is assembled.
            required_groups: Vec::new(),
        })
    }

    fn tls_files(&self, sources: &Sources<'_>) -> Result<Option<TlsFiles>, Invalid> {
        match (&self.cert_file, &self.key_file) {
            (Some(chain), Some(key)) => {
                let files = TlsFiles { chain: sources.path(chain), key: sources.path(key) };
                for (k, f) in [("cert_file", &files.chain), ("key_file", &files.key)] {
                    if !f.exists() {
                        return Err(Invalid::new(k, format!("{} does not exist", f.display())));
                    }
                }
                Ok(Some(files))
            }
            (None, None) => Ok(None),
            _ => Err(Invalid::new("cert_file", "cert_file and key_file go together")),
        }
    }

    fn check_limits(&self) -> Result<(), Invalid> {
        for (key, n) in [("max_tokens", self.max_tokens), ("max_sessions", self.max_sessions), ("max_connections", self.max_connections)] {
            if n == 0 {
                return Err(Invalid::new(key, "must be at least 1"));
            }
        }
        if self.max_connections_per_address == 0 || self.max_connections_per_address > self.max_connections {
            return Err(Invalid::new(
                "max_connections_per_address",
                format!("must be between 1 and max_connections ({})", self.max_connections),
            ));
        }
        for (key, d) in
            [("header_timeout", self.header_timeout), ("idle_timeout", self.idle_timeout), ("request_timeout", self.request_timeout)]
        {
            if d.is_zero() {
                return Err(Invalid::new(key, "must be longer than 0s"));
            }
        }
        if self.idle_timeout < self.request_timeout {
            // hyper keeps a read pending while a request runs (to see the client leave), so a
            // shorter idle timeout would cut off a request still waiting for the directory.
            return Err(Invalid::new("idle_timeout", format!("must be at least request_timeout ({:?})", self.request_timeout)));
        }
        Ok(())
    }
}

/// `helpdesk_groups`, trimmed, each named once. Whether they must be DNs depends on the
/// directory, which the whole configuration checks (`config`).
fn check_groups(groups: Vec<String>) -> Result<Vec<String>, Invalid> {
    let mut checked: Vec<String> = Vec::with_capacity(groups.len());
    for (i, group) in groups.into_iter().enumerate() {
        let group = group.trim().to_owned();
        if group.is_empty() || group.chars().any(char::is_control) {
            return Err(Invalid::new(format!("helpdesk_groups[{i}]"), "must be a group's name (or DN), without control characters"));
        }
        if checked.iter().any(|g| g.eq_ignore_ascii_case(&group)) {
            return Err(Invalid::new(format!("helpdesk_groups[{i}]"), "is listed twice"));
        }
        checked.push(group);
    }
    Ok(checked)
}

/// The address users type: https, or http for a portal only reached on this machine (the
/// session cookie would otherwise cross the network in clear).
pub fn check_public_url(text: &str, serves_tls: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let local = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if serves_tls => Err(format!("{text:?} must be https:// when the portal serves TLS")),
        "http" if local => Ok(url),
        "http" => Err(format!(
            "{text:?} is http:// on a host other than loopback: users would send their session over the network in clear; use https:// (the URL users reach, e.g. the TLS reverse proxy's)"
        )),
        other => Err(format!("{text:?}: the scheme must be https (or http on loopback), not {other}")),
    }
}
