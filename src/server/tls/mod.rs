//! The RadSec transport (RFC 6614, and RADIUS/1.1 of RFC 9765 where ALPN says so): TLS over
//! TCP, with what only a stream needs around the shared [`verify()`](super::verify()) and
//! `Handler`. The client is its certificate (verified against `ca_file`, then matched by name
//! or fingerprint, and address where given), not its source address; the shared secret is
//! `radsec` unless configured. Handshakes are bounded in number (the busiest network making room),
//! per address and in time;
//! connections per client are bounded; each connection runs in `connection`.

mod connection;
pub mod framing;
pub mod settings;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Carrier;
use super::settings::ClientSettings;
use super::udp::{LogLimiter, Shared};
use settings::{ALPN_RADIUS_1_0, ALPN_RADIUS_1_1, PeerCertificate, TlsSettings};

/// Handshakes under way at once, over all addresses: each costs a key exchange and a
/// signature. A client that never finishes would hold its place until
/// `tls_handshake_timeout`: when all are taken, one of the network holding the most is ended
/// for the newcomer.
const MAX_HANDSHAKES: usize = 256;
/// ...and from one address, refused beyond it.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 8;

/// What every TLS listener and connection of the server shares.
pub(super) struct TlsShared {
    settings: TlsSettings,
    /// For a client that can speak TLS 1.3: every version configured.
    config: Arc<rustls::ServerConfig>,
    /// For one that cannot: RADIUS/1.1 needs TLS 1.3 (RFC 9765 §3.4), so it is not offered
    /// where 1.0 is allowed — a NAS offering both then gets 1.0 rather than a closed connection.
    config_without_tls13: Arc<rustls::ServerConfig>,
    /// Open connections per client name (the limit is per client, not per connection source).
    open: Mutex<HashMap<String, usize>>,
    handshakes: Mutex<Handshakes>,
    next_connection: AtomicU64,
    unknown_client_log: LogLimiter,
    refused_log: LogLimiter,
    version_log: LogLimiter,
    over_limit_log: LogLimiter,
    handshake_log: LogLimiter,
}

#[derive(Default)]
struct Handshakes {
    by_address: HashMap<IpAddr, usize>,
    /// Oldest first, each with its network (see `network_of`) and whether its ClientHello has
    /// come. When all places are taken, one is ended for the newcomer: among those still
    /// without a ClientHello if there are any (a flood of silent connections; a NAS sends its
    /// ClientHello one round trip after connecting), the oldest of the network that holds the
    /// most. A flood needs many places, a NAS one; a NAS's handshake over a slow link may take
    /// longer than a flood needs to fill them all, so age alone would pick the NAS.
    under_way: std::collections::VecDeque<UnderWay>,
    next: u64,
}

struct UnderWay {
    id: u64,
    network: IpAddr,
    hello: Arc<std::sync::atomic::AtomicBool>,
    evicted: CancellationToken,
}

/// The network an address is counted with when places are taken back: its /24 (IPv4) or /56
/// (IPv6, where one customer commonly has a /56 or more).
fn network_of(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) & 0xffff_ff00)),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 72) - 1))),
    }
}

impl Handshakes {
    /// Ends a handshake for a newcomer: one still without its ClientHello if any, the oldest of
    /// the network with the most of them under way.
    fn make_room(&mut self) {
        let silent = |u: &UnderWay| !u.hello.load(Ordering::Relaxed);
        let among_silent = self.under_way.iter().any(silent);
        let candidate = |u: &UnderWay| !among_silent || silent(u);
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for under_way in self.under_way.iter().filter(|u| candidate(u)) {
            *counts.entry(under_way.network).or_default() += 1;
        }
        // The first network in age order with the highest count: ties go to the older.
        let Some(most) = counts.values().copied().max() else { return };
        let Some(victim) = self.under_way.iter().position(|u| candidate(u) && counts.get(&u.network) == Some(&most)) else { return };
        if let Some(under_way) = self.under_way.remove(victim) {
            under_way.evicted.cancel();
        }
    }
}

impl TlsShared {
    pub(super) fn new(settings: TlsSettings) -> Self {
        let config = Arc::clone(&settings.config);
        let mut without_tls13 = (*settings.config).clone();
        if settings.versions.v1_0 {
            without_tls13.alpn_protocols.retain(|name| name.as_slice() != ALPN_RADIUS_1_1);
        }
        Self {
            settings,
            config,
            config_without_tls13: Arc::new(without_tls13),
            open: Mutex::default(),
            handshakes: Mutex::default(),
            next_connection: AtomicU64::new(1),
            unknown_client_log: LogLimiter::new(Duration::from_secs(10)),
            refused_log: LogLimiter::new(Duration::from_secs(10)),
            version_log: LogLimiter::new(Duration::from_secs(10)),
            over_limit_log: LogLimiter::new(Duration::from_secs(10)),
            handshake_log: LogLimiter::new(Duration::from_secs(10)),
        }
    }
}

impl TlsShared {
    /// Connections open now, per client name, in name order.
    pub(super) fn open_connections(&self) -> Vec<(String, usize)> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut open: Vec<(String, usize)> = open.iter().map(|(name, n)| (name.clone(), *n)).collect();
        open.sort();
        open
    }
}

/// Binds a RadSec listener: IPv6 ones v6-only, so `0.0.0.0` and `[::]` can both be listed.
pub fn bind_tls(address: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Accepts connections until `shutdown`, then waits for each to finish its requests.
pub(super) async fn serve_listener(shared: Arc<Shared>, tls: Arc<TlsShared>, listener: TcpListener, shutdown: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = HandshakeSlot::take(&tls, peer.ip()) else {
                        shared.stats.tls_handshakes_refused.inc();
                        if let Some(suppressed) = tls.refused_log.allow(Instant::now()) {
                            tracing::warn!(%peer, suppressed, "RadSec: too many TLS handshakes under way from this address; connection closed");
                        }
                        continue;
                    };
                    connections.spawn(accept(Arc::clone(&shared), Arc::clone(&tls), stream, peer, slot, shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "RadSec: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// A place among the handshakes under way; given back when dropped.
struct HandshakeSlot {
    tls: Arc<TlsShared>,
    address: IpAddr,
    id: u64,
    /// Set once the ClientHello has come.
    hello: Arc<std::sync::atomic::AtomicBool>,
    /// Cancelled when a newcomer needs the place.
    evicted: CancellationToken,
}

impl HandshakeSlot {
    /// `None` when this address has its handshakes under way already.
    fn take(tls: &Arc<TlsShared>, address: IpAddr) -> Option<Self> {
        let mut handshakes = tls.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        let from_address = handshakes.by_address.get(&address).copied().unwrap_or(0);
        if from_address >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        if handshakes.under_way.len() >= MAX_HANDSHAKES {
            handshakes.make_room();
        }
        handshakes.by_address.insert(address, from_address + 1);
        let id = handshakes.next;
        handshakes.next += 1;
        let evicted = CancellationToken::new();
        let hello = Arc::new(std::sync::atomic::AtomicBool::new(false));
        handshakes.under_way.push_back(UnderWay { id, network: network_of(address), hello: Arc::clone(&hello), evicted: evicted.clone() });
        Some(Self { tls: Arc::clone(tls), address, id, hello, evicted })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut handshakes = self.tls.handshakes.lock().unwrap_or_else(|p| p.into_inner());
        handshakes.under_way.retain(|u| u.id != self.id);
        if let Some(n) = handshakes.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                handshakes.by_address.remove(&self.address);
            }
        }
    }
}

/// The handshake, the client's identity and version, then the connection's life.
async fn accept(
    shared: Arc<Shared>,
    tls: Arc<TlsShared>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: HandshakeSlot,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let handshake = tokio::time::timeout(tls.settings.handshake_timeout, handshake(&tls, stream, &slot.hello));
    let failed = |why: &dyn std::fmt::Display| {
        shared.stats.tls_handshake_failures.inc();
        // Anyone can make handshakes fail: said once in a while, with how many were not.
        if let Some(suppressed) = tls.handshake_log.allow(Instant::now()) {
            tracing::info!(%peer, error = %why, suppressed, "RadSec: TLS handshake failed");
        }
    };
    let stream = tokio::select! {
        () = shutdown.cancelled() => return,
        () = slot.evicted.cancelled() => {
            shared.stats.tls_handshakes_refused.inc();
            return failed(&"ended to make room: every handshake place was taken");
        }
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return failed(&e),
            Err(_) => return failed(&format!("not finished within tls_handshake_timeout ({:?})", tls.settings.handshake_timeout)),
        },
    };
    drop(slot);
    let (_, session) = stream.get_ref();
    let Some(certificate) = session.peer_certificates().and_then(|chain| chain.first()).and_then(|der| PeerCertificate::parse(der)) else {
        // rustls requires and verifies a client certificate: this does not happen.
        shared.stats.tls_handshake_failures.inc();
        return;
    };
    let Some(client) = shared.clients.load().lookup_tls(peer.ip(), &certificate).cloned() else {
        shared.stats.tls_unknown_client.inc();
        if let Some(suppressed) = tls.unknown_client_log.allow(Instant::now()) {
            tracing::warn!(%peer, certificate = certificate.name(), fingerprint = certificate.fingerprint_hex(), suppressed,
                "RadSec: a certificate of ca_file that is no TLS client from this address; connection closed (add a [[client]] with transport = \"tls\" and its certificate_name or certificate_fingerprint)");
        }
        return;
    };
    let Some(carrier) = carrier_of(&tls, session.alpn_protocol(), session.protocol_version()) else {
        shared.stats.tls_version_refused.inc();
        if let Some(suppressed) = tls.version_log.allow(Instant::now()) {
            let alpn = session.alpn_protocol().map(|a| String::from_utf8_lossy(a).into_owned());
            let why = if alpn.is_none() {
                "the client offers no ALPN (historic RADIUS/TLS), and tls_radius_versions allows only \"1.1\""
            } else if tls.settings.versions.v1_0 {
                "it took RADIUS/1.1 over TLS 1.2, and RADIUS/1.1 needs TLS 1.3 (RFC 9765 §3.4): have it offer radius/1.0 only, or TLS 1.3"
            } else {
                "RADIUS/1.1 needs TLS 1.3 (RFC 9765 §3.4), and tls_radius_versions allows only \"1.1\""
            };
            tracing::warn!(%peer, client = client.policy.name.as_str(), certificate = certificate.name(), ?alpn,
                version = ?session.protocol_version(), suppressed, "RadSec: refused: {why}");
        }
        return;
    };
    let Some(open) = OpenConnection::take(&tls, &client) else {
        shared.stats.tls_over_connection_limit.inc();
        if let Some(suppressed) = tls.over_limit_log.allow(Instant::now()) {
            tracing::warn!(%peer, client = client.policy.name.as_str(), limit = tls.settings.connections_per_client, suppressed,
                "RadSec: this client has tls_connections_per_client connections open; new connection closed");
        }
        return;
    };
    shared.stats.tls_connections.inc();
    let id = tls.next_connection.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%peer, client = client.policy.name.as_str(), certificate = certificate.name(), radius = carrier.as_str(),
        tls = ?session.protocol_version(), connection = id, "RadSec: connection open");
    let connection =
        connection::Connection { shared, tls: Arc::clone(&tls), client, certificate, peer, carrier, id, tokens: Default::default() };
    connection.run(stream, shutdown, open).await;
}

/// The handshake, with the configuration the ClientHello calls for: one that cannot do TLS 1.3
/// is not offered RADIUS/1.1.
async fn handshake(
    tls: &TlsShared,
    stream: TcpStream,
    hello: &std::sync::atomic::AtomicBool,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await?;
    hello.store(true, Ordering::Relaxed);
    let tls13 = start.client_hello().cipher_suites().iter().any(|suite| {
        use rustls::CipherSuite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256};
        matches!(suite, TLS13_AES_128_GCM_SHA256 | TLS13_AES_256_GCM_SHA384 | TLS13_CHACHA20_POLY1305_SHA256)
    });
    let config = if tls13 { &tls.config } else { &tls.config_without_tls13 };
    start.into_stream(Arc::clone(config)).await
}

/// The RADIUS version of a finished handshake (RFC 9765 §3.3), or `None` to close it.
fn carrier_of(tls: &TlsShared, alpn: Option<&[u8]>, version: Option<rustls::ProtocolVersion>) -> Option<Carrier> {
    match alpn {
        // RFC 9765 §3.4: RADIUS/1.1 only over TLS 1.3.
        Some(ALPN_RADIUS_1_1) => (version == Some(rustls::ProtocolVersion::TLSv1_3)).then_some(Carrier::Radius11),
        Some(ALPN_RADIUS_1_0) => Some(Carrier::Tls),
        // rustls refuses names it was not given (alert no_application_protocol).
        Some(_) => None,
        // No ALPN: historic RADIUS/TLS, unless only 1.1 is allowed (§3.3: "Close-S").
        None => tls.settings.versions.v1_0.then_some(Carrier::Tls),
    }
}

/// One of a client's `tls_connections_per_client`; given back when dropped.
pub(super) struct OpenConnection {
    tls: Arc<TlsShared>,
    name: String,
}

impl OpenConnection {
    fn take(tls: &Arc<TlsShared>, client: &ClientSettings) -> Option<Self> {
        let name = client.policy.name.clone();
        let mut open = tls.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(name.clone()).or_default();
        if *n >= tls.settings.connections_per_client {
            return None;
        }
        *n += 1;
        Some(Self { tls: Arc::clone(tls), name })
    }
}

impl OpenConnection {
    /// Counts the connection under the name a reload gave its client from now on, so a rename
    /// opens no room beyond `tls_connections_per_client`.
    fn rename(&mut self, name: &str) {
        if self.name == name {
            return;
        }
        let mut open = self.tls.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.name);
            }
        }
        *open.entry(name.to_owned()).or_default() += 1;
        self.name = name.to_owned();
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let mut open = self.tls.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(handshakes: &mut Handshakes, address: IpAddr, hello: bool) -> (CancellationToken, Arc<std::sync::atomic::AtomicBool>) {
        let evicted = CancellationToken::new();
        let seen = Arc::new(std::sync::atomic::AtomicBool::new(hello));
        handshakes.under_way.push_back(UnderWay {
            id: handshakes.next,
            network: network_of(address),
            hello: Arc::clone(&seen),
            evicted: evicted.clone(),
        });
        handshakes.next += 1;
        (evicted, seen)
    }

    #[test]
    fn room_is_made_in_the_network_holding_the_most_places() {
        let mut handshakes = Handshakes::default();
        let (nas, _) = push(&mut handshakes, "192.0.2.10".parse().unwrap(), false);
        let flood: Vec<_> = (1..=3u8).map(|host| push(&mut handshakes, IpAddr::from([198, 51, 100, host]), false).0).collect();
        let (v6_a, _) = push(&mut handshakes, "2001:db8::1".parse().unwrap(), false);
        let (v6_b, _) = push(&mut handshakes, "2001:db8:0:ff::2".parse().unwrap(), false);
        handshakes.make_room();
        assert!(flood[0].is_cancelled() && !flood[1].is_cancelled(), "the /24 with three, its oldest");
        handshakes.make_room();
        assert!(flood[1].is_cancelled(), "2 in the /24 against 2 in the /56: the older");
        handshakes.make_room();
        assert!(v6_a.is_cancelled() && !v6_b.is_cancelled(), "two /64s of one /56 are one network");
        assert!(!nas.is_cancelled(), "never the lone NAS while others hold more");
    }

    #[test]
    fn a_handshake_whose_client_hello_came_is_ended_only_when_none_is_silent() {
        let mut handshakes = Handshakes::default();
        // A NAS mid-handshake in the very /24 of a flood of silent connections.
        let (nas, nas_hello) = push(&mut handshakes, "198.51.100.200".parse().unwrap(), true);
        let flood: Vec<_> = (1..=8u8).map(|host| push(&mut handshakes, IpAddr::from([198, 51, 100, host]), false).0).collect();
        for _ in 0..8 {
            handshakes.make_room();
        }
        assert!(flood.iter().all(CancellationToken::is_cancelled));
        assert!(!nas.is_cancelled(), "its ClientHello came: the silent ones go first");
        nas_hello.store(true, Ordering::Relaxed);
        handshakes.make_room();
        assert!(nas.is_cancelled(), "with none silent left, the busiest network's oldest");
    }
}
