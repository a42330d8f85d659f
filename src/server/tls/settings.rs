//! The RadSec listener's keys in `[server]` (`tls_listen`, `cert_file`, `key_file`, `ca_file`,
//! the `tls_` limits and the RADIUS versions offered by ALPN), and a TLS client's
//! certificate match (`certificate_name`, `certificate_fingerprint`). Everything is read and
//! checked when the configuration loads, so a wrong file is an error naming its key, not a
//! listener that fails its first handshake.

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::settings::{Invalid, Sources};

/// ALPN names of RFC 9765 §3.1.
pub const ALPN_RADIUS_1_0: &[u8] = b"radius/1.0";
pub const ALPN_RADIUS_1_1: &[u8] = b"radius/1.1";

pub mod defaults {
    use std::time::Duration;
    /// A connection with nothing outstanding for this long is closed. Clients that watch it
    /// with Status-Server (radsecproxy every 30 s by default) keep it open.
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(120)
    }
    pub fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn connections_per_client() -> usize {
        16
    }
    pub fn outstanding_per_connection() -> usize {
        256
    }
    pub fn radius_versions() -> Vec<String> {
        vec!["1.0".into(), "1.1".into()]
    }
}

/// The `[server]` keys of the TLS listener, borrowed from the section.
pub(in crate::server) struct TlsSection<'a> {
    pub listen: &'a [String],
    pub cert_file: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
    pub ca_file: Option<&'a Path>,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub connections_per_client: usize,
    pub outstanding_per_connection: usize,
    pub radius_versions: &'a [String],
}

/// Which RADIUS versions a TLS client may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RadiusVersions {
    /// RFC 6614 as it always was, shared secret and MD5 included: also what a client that
    /// offers no ALPN gets.
    pub v1_0: bool,
    /// RFC 9765: no shared secret, no MD5.
    pub v1_1: bool,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub listen: Vec<SocketAddr>,
    /// Our certificate and key, the client CAs and ALPN, ready to accept with.
    pub config: Arc<rustls::ServerConfig>,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub connections_per_client: usize,
    pub outstanding_per_connection: usize,
    pub versions: RadiusVersions,
    /// Our certificate as `check-config` and the start tell of it.
    pub certificate: OwnCertificate,
}

/// What the admin needs to know of the server's own certificate: its names and its end.
#[derive(Debug, Clone)]
pub struct OwnCertificate {
    pub names: Vec<String>,
    /// Unix time of notAfter.
    pub not_after: i64,
}

impl OwnCertificate {
    /// A warning when the certificate has ended or ends within 30 days of `now` (Unix time).
    pub fn expiry_warning(&self, now: i64) -> Option<String> {
        let days = (self.not_after - now).div_euclid(86_400);
        let names = self.names.join(", ");
        if self.not_after <= now {
            Some(format!("the RadSec certificate (cert_file: {names}) has expired: NAS will refuse to connect"))
        } else if days < 30 {
            Some(format!("the RadSec certificate (cert_file: {names}) expires in {days} day(s): renew it, then restart"))
        } else {
            None
        }
    }
}

impl TlsSection<'_> {
    pub(in crate::server) fn build(&self, sources: &Sources<'_>) -> Result<Option<TlsSettings>, Invalid> {
        let listen = super::super::settings::parse_addresses(self.listen).map_err(|m| Invalid::new("tls_listen", m))?;
        if listen.is_empty() {
            if let Some(key) = [("cert_file", self.cert_file), ("key_file", self.key_file), ("ca_file", self.ca_file)]
                .iter()
                .find_map(|(key, file)| file.is_some().then_some(*key))
            {
                return Err(Invalid::new(key, "is for the RadSec listener: set tls_listen too, e.g. [\"0.0.0.0:2083\"]"));
            }
            return Ok(None);
        }
        let need = |key: &'static str, file: Option<&Path>| {
            file.map(|f| sources.path(f)).ok_or_else(|| Invalid::new(key, "missing: tls_listen needs cert_file, key_file and ca_file"))
        };
        let (cert_file, key_file, ca_file) =
            (need("cert_file", self.cert_file)?, need("key_file", self.key_file)?, need("ca_file", self.ca_file)?);
        for (key, value) in [
            ("tls_connections_per_client", self.connections_per_client),
            ("tls_outstanding_per_connection", self.outstanding_per_connection),
        ] {
            if value == 0 {
                return Err(Invalid::new(key, "must be at least 1"));
            }
        }
        if self.outstanding_per_connection > 4096 {
            return Err(Invalid::new("tls_outstanding_per_connection", "at most 4096"));
        }
        if self.handshake_timeout.is_zero() || self.idle_timeout.is_zero() {
            let key = if self.idle_timeout.is_zero() { "tls_idle_timeout" } else { "tls_handshake_timeout" };
            return Err(Invalid::new(key, "must be more than 0s"));
        }
        let versions = parse_versions(self.radius_versions).map_err(|m| Invalid::new("tls_radius_versions", m))?;
        let (config, certificate) = server_config(&cert_file, &key_file, &ca_file, versions)?;
        Ok(Some(TlsSettings {
            certificate,
            listen,
            config,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            connections_per_client: self.connections_per_client,
            outstanding_per_connection: self.outstanding_per_connection,
            versions,
        }))
    }
}

fn parse_versions(list: &[String]) -> Result<RadiusVersions, String> {
    let mut versions = RadiusVersions { v1_0: false, v1_1: false };
    for version in list {
        match version.as_str() {
            "1.0" => versions.v1_0 = true,
            "1.1" => versions.v1_1 = true,
            other => return Err(format!("{other:?} is not a RADIUS version: \"1.0\" (RFC 6614) or \"1.1\" (RFC 9765)")),
        }
    }
    if !versions.v1_0 && !versions.v1_1 {
        return Err("needs \"1.0\", \"1.1\" or both".into());
    }
    Ok(versions)
}

/// The rustls server: TLS 1.2 and 1.3 (RFC 6614 §2.3 asks for 1.2 or later), client
/// certificates required and verified against `ca_file`, and the ALPN names of `versions`.
fn server_config(
    cert_file: &Path,
    key_file: &Path,
    ca_file: &Path,
    versions: RadiusVersions,
) -> Result<(Arc<rustls::ServerConfig>, OwnCertificate), Invalid> {
    // Regular files of bounded size only: a FIFO would hang the start, /dev/zero fill memory.
    let read = |key: &'static str, path: &Path| {
        crate::settings::read_text_file(path, 1024 * 1024)
            .map(|pem| BufReader::new(std::io::Cursor::new(pem)))
            .map_err(|e| Invalid::new(key, format!("{}: {e}", path.display())))
    };
    let certs = |key: &'static str, path: &Path| {
        let chain = rustls_pemfile::certs(&mut read(key, path)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Invalid::new(key, format!("{}: {e}", path.display())))?;
        if chain.is_empty() {
            return Err(Invalid::new(key, format!("{}: no PEM certificate in it", path.display())));
        }
        Ok(chain)
    };
    let chain = certs("cert_file", cert_file)?;
    let own = chain
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| OwnCertificate {
            names: PeerCertificate::parse(cert.as_ref()).map(|c| c.names).unwrap_or_default(),
            not_after: cert.validity().not_after.timestamp(),
        })
        .ok_or_else(|| Invalid::new("cert_file", format!("{}: the first certificate is not X.509", cert_file.display())))?;
    let private_key = rustls_pemfile::private_key(&mut read("key_file", key_file)?)
        .map_err(|e| Invalid::new("key_file", format!("{}: {e}", key_file.display())))?
        .ok_or_else(|| Invalid::new("key_file", format!("{}: no PEM private key in it", key_file.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs("ca_file", ca_file)? {
        roots.add(ca).map_err(|e| Invalid::new("ca_file", format!("{}: {e}", ca_file.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| Invalid::new("ca_file", format!("{}: {e}", ca_file.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Invalid::new("cert_file", e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                Invalid::new("key_file", format!("{} is not the key of {} (cert_file)", key_file.display(), cert_file.display()))
            }
            rustls::Error::InvalidCertificate(why) => Invalid::new(
                "cert_file",
                format!(
                    "{}: {why:?} (an X.509 v3 certificate is needed: openssl x509 -req ... -extfile with subjectAltName)",
                    cert_file.display()
                ),
            ),
            other => Invalid::new("key_file", format!("{} with {}: {other}", key_file.display(), cert_file.display())),
        })?;
    // Our preference first: 1.1 where both sides can.
    if versions.v1_1 {
        config.alpn_protocols.push(ALPN_RADIUS_1_1.to_vec());
    }
    if versions.v1_0 {
        config.alpn_protocols.push(ALPN_RADIUS_1_0.to_vec());
    }
    // No resumption: a NAS holds a few long connections, and a resumed session would have to
    // keep its RADIUS version (RFC 9765 §3.5).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok((Arc::new(config), own))
}

/// `certificate_fingerprint`: one value or a list (the old and the new certificate while a
/// NAS's is being renewed).
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> &[String] {
        match self {
            Self::None => &[],
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many,
        }
    }
}

/// Which certificates are a TLS client: all that is set must match.
#[derive(Debug, Clone, Default)]
pub struct CertificateMatch {
    /// Lower case, without a final dot.
    name: Option<String>,
    fingerprints: Vec<[u8; 32]>,
}

impl CertificateMatch {
    pub(in crate::server) fn new(name: Option<&str>, fingerprints: &OneOrMany) -> Result<Self, (&'static str, String)> {
        let name = match name {
            Some(name) if name.trim().is_empty() || name.chars().any(char::is_control) => {
                return Err(("certificate_name", "must be a name such as \"nas1.example.test\"".into()));
            }
            Some(name) => Some(normalize_name(name)),
            None => None,
        };
        let fingerprints = fingerprints.values().iter().map(|f| parse_fingerprint(f)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { name, fingerprints })
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.fingerprints.is_empty()
    }

    /// Whether `certificate` is this client's.
    pub fn matches(&self, certificate: &PeerCertificate) -> bool {
        let name_ok = self.name.as_ref().is_none_or(|name| certificate.names.iter().any(|n| n == name));
        let fingerprint_ok = self.fingerprints.is_empty()
            || self
                .fingerprints
                .iter()
                .any(|f| bool::from(subtle::ConstantTimeEq::ct_eq(f.as_slice(), certificate.fingerprint.as_slice())));
        name_ok && fingerprint_ok
    }

    /// How narrowly it names a certificate: a fingerprint names one, a name those issued to it,
    /// nothing every certificate of the CA.
    pub fn specificity(&self) -> u8 {
        u8::from(!self.fingerprints.is_empty()) * 2 + u8::from(self.name.is_some())
    }
}

fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn parse_fingerprint(text: &str) -> Result<[u8; 32], (&'static str, String)> {
    let hex: String = text.trim().trim_start_matches("sha256:").trim_start_matches("SHA256:").chars().filter(|c| *c != ':').collect();
    let bytes = data_encoding::HEXLOWER_PERMISSIVE.decode(hex.as_bytes()).ok();
    bytes.and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
        (
            "certificate_fingerprint",
            format!("{text:?} is not a SHA-256 fingerprint: 64 hex digits, colons allowed (openssl x509 -noout -fingerprint -sha256)"),
        )
    })
}

/// What a client's certificate is known by: its SHA-256, and the names it was issued to.
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    pub fingerprint: [u8; 32],
    /// subjectAltName DNS names and URIs, or where there are none the subject's common names;
    /// lower case.
    pub names: Vec<String>,
}

impl PeerCertificate {
    /// `None` for DER that is not an X.509 certificate (rustls verified the chain already, so
    /// this does not happen with a handshake's certificate).
    pub fn parse(der: &[u8]) -> Option<Self> {
        use sha2::Digest;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => names.push(normalize_name(dns)),
                    x509_parser::extensions::GeneralName::URI(uri) => names.push(normalize_name(uri)),
                    _ => {}
                }
            }
        }
        // RFC 6614 §2.3: a subjectAltName DNS name takes precedence over the CN, so the CN
        // names the certificate only where it has none.
        if names.is_empty() {
            for cn in cert.subject().iter_common_name() {
                if let Ok(cn) = cn.as_str() {
                    names.push(normalize_name(cn));
                }
            }
        }
        Some(Self { fingerprint: sha2::Sha256::digest(der).into(), names })
    }

    /// The fingerprint as `openssl x509 -fingerprint -sha256` shows it, for the log.
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
    }

    /// The first name, for the log.
    pub fn name(&self) -> &str {
        self.names.first().map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_take_colons_case_and_a_prefix() {
        let hex = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        for text in [hex.clone(), colons, format!("sha256:{hex}")] {
            assert_eq!(parse_fingerprint(&text).unwrap(), [0xab; 32], "{text}");
        }
        for bad in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_ending_certificate_is_said() {
        let cert = OwnCertificate { names: vec!["radius.example.test".into()], not_after: 100 * 86_400 };
        assert!(cert.expiry_warning(0).is_none());
        assert!(cert.expiry_warning(80 * 86_400).unwrap().contains("expires in 20 day(s)"));
        assert!(cert.expiry_warning(100 * 86_400).unwrap().contains("has expired"));
    }

    #[test]
    fn versions_are_checked() {
        assert_eq!(parse_versions(&["1.1".into()]).unwrap(), RadiusVersions { v1_0: false, v1_1: true });
        assert!(parse_versions(&[]).is_err());
        assert!(parse_versions(&["2.0".into()]).is_err());
    }

    #[test]
    fn a_certificate_is_matched_by_every_criterion_given() {
        let cert = PeerCertificate { fingerprint: [7; 32], names: vec!["nas1.example.test".into(), "nas1".into()] };
        let by = |name: Option<&str>, fps: OneOrMany| CertificateMatch::new(name, &fps).unwrap();
        assert!(by(Some("NAS1.example.test."), OneOrMany::None).matches(&cert));
        assert!(!by(Some("nas2.example.test"), OneOrMany::None).matches(&cert));
        assert!(by(None, OneOrMany::Many(vec!["00".repeat(32), "07".repeat(32)])).matches(&cert));
        assert!(!by(Some("nas1"), OneOrMany::One("00".repeat(32))).matches(&cert));
        assert!(by(Some("nas1"), OneOrMany::One("07".repeat(32))).specificity() > by(Some("nas1"), OneOrMany::None).specificity());
    }
}
