//! The portal's settings, as the `[portal]` section gives them, and what they imply for its
//! cookies (names, `Secure`, `__Host-` prefix).

use std::net::SocketAddr;
use std::time::Duration;

use axum_extra::extract::cookie::{Cookie, SameSite};
use ipnet::IpNet;

#[derive(Debug, Clone)]
pub struct PortalSettings {
    pub listen: SocketAddr,
    /// PEM certificate chain and key: the portal serves HTTPS itself. Without them it serves
    /// plain HTTP, on loopback only, behind a TLS reverse proxy.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub public_url: String,
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
}

impl PortalSettings {
    pub(super) fn https(&self) -> bool {
        self.public_url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
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
