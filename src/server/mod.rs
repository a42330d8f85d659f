//! The RADIUS edge: NAS clients, the RFC checks, dispatch to `auth`, and the UDP transport.
//!
//! Split as hickory-dns splits its server, transport apart from request handling: [`verify()`]
//! checks a framed packet from a known client (size, decoding, port and code, authenticators,
//! Message-Authenticator and Proxy-State rules) and `handler` answers a verified one
//! (Status-Server, accounting, an Access-Request decided by `auth` and signed). Neither knows
//! of sockets, so a RadSec (RFC 6614) listener needs only its framing and client identity.
//! `udp` is one transport: pre-bound sockets, one receive loop per socket under a
//! cancellation token, clients found by source address, the retransmission cache, fair
//! admission, request work in a `JoinSet` that survives handler panics and drains on shutdown.
//! `tls` is the other (RadSec, RFC 6614, and RADIUS/1.1, RFC 9765): clients found by
//! certificate, packets framed in a stream, the same cache, admission and handler; the
//! [`Carrier`] tells `verify` and the handler what the transport already proved.
//! The handler is a concrete type, not a trait: `auth` is the one thing that decides.

pub mod cache;
pub mod clients;
mod discards;
pub mod fair;
mod handler;
pub mod settings;
pub mod stats;
pub mod tls;
mod udp;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::radius::Dictionary;
use cache::ResponseCache;
use clients::ClientTable;
use handler::Handler;
use settings::{ClientSettings, ServerSettings};
pub use stats::Stats;
pub use tls::bind_tls;
pub use udp::bind_udp;
use udp::{LogLimiter, Shared};
pub use verify::{Discard, verify};

/// Which service a socket offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// Access-Request and Status-Server (1812).
    Auth,
    /// Accounting-Request and Status-Server (1813).
    Accounting,
    /// RadSec's one port for both (RFC 6614 §2.1: 2083); Status-Server gets an Access-Accept.
    Both,
}

impl PortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Accounting => "accounting",
            Self::Both => "radsec",
        }
    }
}

/// What carried a packet, and so what it must prove by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A datagram: the shared secret is all that authenticates it.
    Udp,
    /// RADIUS/TLS (RFC 6614, ALPN `radius/1.0` or none): the certificate names the client and
    /// TLS protects the packet, which still carries MD5 with the secret (`radsec`).
    Tls,
    /// RADIUS/1.1 (RFC 9765): TLS alone; a Token instead of Identifier and Authenticator.
    Radius11,
}

impl Carrier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tls => "radius/1.0",
            Self::Radius11 => "radius/1.1",
        }
    }
}

pub struct Server {
    shared: Arc<Shared>,
    tls: Option<Arc<tls::TlsShared>>,
}

impl Server {
    pub fn new(
        settings: ServerSettings,
        clients: Vec<ClientSettings>,
        authenticator: Arc<Authenticator>,
        dictionary: Arc<Dictionary>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let stats = Arc::new(Stats::default());
        let tls = settings.tls.clone().map(|tls| Arc::new(tls::TlsShared::new(tls)));
        let shared = Shared {
            handler: Handler::new(authenticator, dictionary, Arc::clone(&stats), metrics, &settings),
            clients: arc_swap::ArcSwap::from_pointee(ClientTable::new(clients)),
            cache: ResponseCache::new(settings.cache_ttl, settings.cache_entries),
            stats,
            permits: fair::FairShare::new(settings.max_in_flight),
            unknown_client_log: LogLimiter::new(Duration::from_secs(10)),
            overload_log: LogLimiter::new(Duration::from_secs(10)),
            discard_log: discards::DiscardLog::default(),
        };
        Self { shared: Arc::new(shared), tls }
    }

    /// Serves `clients` from now on, naming attributes with `dictionary` (a reloaded
    /// configuration). Requests already admitted finish as the client they came from.
    pub fn reload(&self, clients: Vec<ClientSettings>, dictionary: Arc<Dictionary>) {
        self.shared.clients.store(Arc::new(ClientTable::new(clients)));
        self.shared.handler.reload_dictionary(dictionary);
    }

    /// RadSec connections open now, per client name (none without a TLS listener).
    pub fn radsec_connections(&self) -> Vec<(String, usize)> {
        self.tls.as_ref().map(|tls| tls.open_connections()).unwrap_or_default()
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Serves until `shutdown` is cancelled, then finishes the requests in flight. The TLS
    /// listeners are those of `[server] tls_listen` (none without it).
    pub async fn run(&self, sockets: Vec<(UdpSocket, PortKind)>, tls_listeners: Vec<TcpListener>, shutdown: CancellationToken) {
        let mut loops = JoinSet::new();
        for (socket, kind) in sockets {
            loops.spawn(udp::serve_socket(Arc::clone(&self.shared), Arc::new(socket), kind, shutdown.clone()));
        }
        if let Some(tls) = &self.tls {
            for listener in tls_listeners {
                loops.spawn(tls::serve_listener(Arc::clone(&self.shared), Arc::clone(tls), listener, shutdown.clone()));
            }
        }
        while loops.join_next().await.is_some() {}
    }
}
