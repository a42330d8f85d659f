//! The RADIUS edge: NAS clients, the RFC checks, dispatch to `auth`, and the UDP transport.
//!
//! Split as hickory-dns splits its server, transport apart from request handling: [`verify()`]
//! checks a framed packet from a known client (size, decoding, port and code, authenticators,
//! Message-Authenticator and Proxy-State rules) and `handler` answers a verified one
//! (Status-Server, accounting, an Access-Request decided by `auth` and signed). Neither knows
//! of sockets, so a RadSec (RFC 6614) listener needs only its framing and client identity.
//! `udp` is the one transport today: pre-bound sockets, one receive loop per socket under a
//! cancellation token, clients found by source address, the retransmission cache, fair
//! admission, request work in a `JoinSet` that survives handler panics and drains on shutdown.
//! The handler is a concrete type, not a trait: `auth` is the one thing that decides.

pub mod cache;
pub mod clients;
mod discards;
pub mod fair;
mod handler;
pub mod settings;
pub mod stats;
mod udp;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
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
}

impl PortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Accounting => "accounting",
        }
    }
}

pub struct Server {
    shared: Arc<Shared>,
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
        Self { shared: Arc::new(shared) }
    }

    /// Serves `clients` from now on, naming attributes with `dictionary` (a reloaded
    /// configuration). Requests already admitted finish as the client they came from.
    pub fn reload(&self, clients: Vec<ClientSettings>, dictionary: Arc<Dictionary>) {
        self.shared.clients.store(Arc::new(ClientTable::new(clients)));
        self.shared.handler.reload_dictionary(dictionary);
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Serves until `shutdown` is cancelled, then finishes the requests in flight.
    pub async fn run(&self, sockets: Vec<(UdpSocket, PortKind)>, shutdown: CancellationToken) {
        let mut loops = JoinSet::new();
        for (socket, kind) in sockets {
            loops.spawn(udp::serve_socket(Arc::clone(&self.shared), Arc::new(socket), kind, shutdown.clone()));
        }
        while loops.join_next().await.is_some() {}
    }
}
