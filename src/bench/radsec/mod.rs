//! `radmfa bench --tls`: the load over RadSec (RFC 6614) or RADIUS/1.1 (RFC 9765) instead of
//! UDP. Every worker's requests go over a few kept TLS connections, many outstanding on each
//! (`connection`), numbered by Identifier or Token (`pending`); answers are checked as the
//! version requires (`rfc9765` for RADIUS/1.1).
//!
//! A connection that closes fails its outstanding requests (counted `closed`: over TCP nothing
//! is retransmitted, and sending a used code again would only be refused as a replay) and is
//! opened anew for the next request; a failed reopening is retried after a second.

mod connection;
mod pending;
mod rfc9765;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use rustls::pki_types::ServerName;

use super::request::{Request, check_signed};
use super::{Answer, BenchOptions};
use connection::{Connection, Outcome, Setup};

/// How long a connection that could not be opened again is left before the next try.
const REOPEN_AFTER: Duration = Duration::from_secs(1);
/// Reasons connections closed, kept for the report: the first few different ones.
const CLOSE_REASONS: usize = 4;

/// The RADIUS version a connection speaks, as offered by ALPN (RFC 9765 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RadiusVersion {
    /// `radius/1.0`: RADIUS/TLS as RFC 6614 has it, MD5 with the secret included.
    V1_0,
    /// `radius/1.1`: RFC 9765, over TLS 1.3 only.
    V1_1,
}

impl RadiusVersion {
    /// Its ALPN name, which is also how the report names the transport.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "radius/1.0",
            Self::V1_1 => "radius/1.1",
        }
    }

    pub fn alpn(self) -> &'static [u8] {
        self.as_str().as_bytes()
    }
}

impl std::fmt::Display for RadiusVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `--tls` and its flags.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The NAS's client certificate (chain) and its key, PEM.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA(s) the server's certificate is verified with, PEM.
    pub ca_file: PathBuf,
    /// The name the server's certificate must carry; the server's IP address when `None`.
    pub server_name: Option<String>,
    pub version: RadiusVersion,
    /// Kept connections all requests are spread over.
    pub connections: usize,
}

/// The kept connections.
pub(super) struct Pool {
    setup: Setup,
    slots: Vec<Slot>,
    reopened: AtomicU64,
    /// Answers that matched no request, on connections since replaced.
    unmatched: AtomicU64,
    why_closed: Mutex<Vec<String>>,
}

struct Slot {
    current: Mutex<Arc<Connection>>,
    /// Held while the connection is opened anew; when the last try failed.
    reopening: tokio::sync::Mutex<Option<Instant>>,
}

impl Pool {
    /// Opens every connection: any that cannot be is an error (a wrong certificate, the
    /// version refused), before a single request.
    pub(super) async fn open(options: &BenchOptions, tls: &TlsOptions) -> std::io::Result<Self> {
        let setup = Setup {
            config: Arc::new(client_config(tls).map_err(std::io::Error::other)?),
            server: options.server,
            server_name: server_name(tls.server_name.as_deref(), options.server).map_err(std::io::Error::other)?,
            bind: options.bind,
            version: tls.version,
            timeout: options.timeout,
        };
        let mut slots = Vec::with_capacity(tls.connections);
        for _ in 0..tls.connections.max(1) {
            let connection = Connection::open(&setup).await?;
            slots.push(Slot { current: Mutex::new(Arc::new(connection)), reopening: tokio::sync::Mutex::new(None) });
        }
        Ok(Self { setup, slots, reopened: AtomicU64::new(0), unmatched: AtomicU64::new(0), why_closed: Mutex::new(Vec::new()) })
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Sends `request` on connection `slot` and checks its answer.
    pub(super) async fn ask(&self, slot: usize, request: &Request<'_>, options: &BenchOptions) -> std::io::Result<Answer> {
        let connection = match self.connection(slot).await {
            Ok(connection) => connection,
            Err(retry_at) => {
                // Not open, and not to be tried again yet: wait rather than spin through the run.
                tokio::time::sleep_until(retry_at.into()).await;
                return Ok(Answer::Closed);
            }
        };
        let answer = match self.setup.version {
            RadiusVersion::V1_0 => {
                let mut authenticator = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut authenticator);
                let secret = options.secret.expose();
                // The connection numbers 1.0 requests 0 to 255: the Identifier.
                match connection.ask(|id| request.signed(id as u8, authenticator, secret), options.timeout).await? {
                    Outcome::Answer { bytes, latency, .. } => match crate::radius::Packet::decode(&bytes) {
                        Ok(reply) => check_signed(&bytes, reply, &authenticator, secret, latency),
                        Err(_) => Answer::Invalid,
                    },
                    Outcome::Timeout => Answer::Timeout,
                    Outcome::Closed => self.closed(&connection),
                }
            }
            RadiusVersion::V1_1 => match connection.ask(|token| request.radius_1_1(token.to_be_bytes()), options.timeout).await? {
                Outcome::Answer { bytes, number, latency } => match rfc9765::check_answer(&bytes, number.to_be_bytes()) {
                    Ok(reply) => Answer::Reply(reply, latency),
                    Err(_) => Answer::Invalid,
                },
                Outcome::Timeout => Answer::Timeout,
                Outcome::Closed => self.closed(&connection),
            },
        };
        Ok(answer)
    }

    /// A request's connection closed under it: why, for the report.
    fn closed(&self, connection: &Connection) -> Answer {
        if let Some(why) = connection.why_closed() {
            self.note_closed(why);
        }
        Answer::Closed
    }

    /// Slot `slot`'s connection, opened anew if it closed; else when to try again.
    async fn connection(&self, slot: usize) -> Result<Arc<Connection>, Instant> {
        let slot = &self.slots[slot % self.slots.len()];
        let current = || Arc::clone(&slot.current.lock().unwrap_or_else(|p| p.into_inner()));
        let connection = current();
        if !connection.is_closed() {
            return Ok(connection);
        }
        let mut last_failure = slot.reopening.lock().await;
        // Another request may have opened it while this one waited.
        let connection = current();
        if !connection.is_closed() {
            return Ok(connection);
        }
        if let Some(failed) = *last_failure
            && failed.elapsed() < REOPEN_AFTER
        {
            return Err(failed + REOPEN_AFTER);
        }
        if let Some(why) = connection.why_closed() {
            self.note_closed(why);
        }
        match Connection::open(&self.setup).await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *slot.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&fresh);
                self.unmatched.fetch_add(connection.unmatched(), Ordering::Relaxed);
                *last_failure = None;
                self.reopened.fetch_add(1, Ordering::Relaxed);
                Ok(fresh)
            }
            Err(e) => {
                self.note_closed(format!("opening it again failed: {e}"));
                let now = Instant::now();
                *last_failure = Some(now);
                Err(now + REOPEN_AFTER)
            }
        }
    }

    fn note_closed(&self, why: String) {
        let mut reasons = self.why_closed.lock().unwrap_or_else(|p| p.into_inner());
        if reasons.len() < CLOSE_REASONS && !reasons.contains(&why) {
            reasons.push(why);
        }
    }

    /// Closes every connection (with a TLS close_notify) and tells what the run saw of them.
    pub(super) async fn finish(&self) -> Connections {
        let mut unmatched = self.unmatched.load(Ordering::Relaxed);
        for slot in &self.slots {
            let connection = Arc::clone(&slot.current.lock().unwrap_or_else(|p| p.into_inner()));
            if let Some(why) = connection.why_closed() {
                self.note_closed(why);
            }
            unmatched += connection.unmatched();
            connection.finish().await;
        }
        Connections {
            reopened: self.reopened.load(Ordering::Relaxed),
            unmatched,
            closed_because: std::mem::take(&mut *self.why_closed.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }
}

/// What the run saw of its connections.
#[derive(Debug, Default, Clone)]
pub struct Connections {
    /// Connections opened again after one closed.
    pub reopened: u64,
    /// Answers whose Identifier or Token matched no outstanding request.
    pub unmatched: u64,
    /// Why connections closed (or could not be opened again): the first few different reasons.
    pub closed_because: Vec<String>,
}

/// The name checked in the server's certificate: `name` given, or else the server's address.
fn server_name(name: Option<&str>, server: SocketAddr) -> Result<ServerName<'static>, String> {
    match name {
        Some(name) => ServerName::try_from(name.to_owned()).map_err(|_| format!("--server-name {name:?} is not a DNS name or IP address")),
        None => Ok(ServerName::IpAddress(server.ip().into())),
    }
}

/// The rustls client: the server verified with `ca_file`, our certificate and key, and the
/// ALPN name of the version alone; TLS 1.3 for RADIUS/1.1 (RFC 9765 §3.4), 1.2 or 1.3 for
/// RADIUS/TLS (RFC 6614 asks for at least 1.1; rustls has nothing older than 1.2).
fn client_config(tls: &TlsOptions) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certificates(&tls.ca_file)? {
        roots.add(ca).map_err(|e| format!("{}: {e}", tls.ca_file.display()))?;
    }
    let chain = read_certificates(&tls.cert_file)?;
    let key_pem = read_pem(&tls.key_file)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| format!("{}: {e}", tls.key_file.display()))?
        .ok_or_else(|| format!("{}: no PEM private key in it", tls.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = match tls.version {
        RadiusVersion::V1_1 => builder.with_protocol_versions(&[&rustls::version::TLS13]),
        RadiusVersion::V1_0 => builder.with_safe_default_protocol_versions(),
    }
    .map_err(|e| e.to_string())?;
    let mut config = builder
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("{} with {}: {e}", tls.key_file.display(), tls.cert_file.display()))?;
    config.alpn_protocols = vec![tls.version.alpn().to_vec()];
    // Every connection a full handshake, as a NAS's first of the day: no resumed sessions
    // (whose RADIUS version RFC 9765 §3.5 would have to carry over).
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

fn read_pem(path: &Path) -> Result<String, String> {
    crate::settings::read_text_file(path, 1024 * 1024).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_certificates(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let pem = read_pem(path)?;
    let certificates =
        rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| format!("{}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certificates)
}
