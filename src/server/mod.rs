//! The RADIUS edge: UDP sockets, NAS clients, retransmission cache, dispatch to `auth`.
//!
//! Shaped like hickory-dns's server: it takes pre-bound sockets, runs one receive loop per
//! socket under a cancellation token, keeps request work in a `JoinSet`, survives socket errors
//! and handler panics, and drains in-flight work on shutdown.

pub mod cache;
pub mod clients;
pub mod fair;
mod handler;
pub mod settings;
pub mod stats;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::radius::{Dictionary, MAX_PACKET_LEN};
use cache::ResponseCache;
use clients::ClientTable;
use handler::Admission;
use settings::{ClientSettings, ServerSettings};
pub use stats::Stats;

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

/// Everything request handling shares.
struct Shared {
    clients: ClientTable,
    cache: Arc<ResponseCache>,
    stats: Arc<Stats>,
    authenticator: Arc<Authenticator>,
    dictionary: Arc<Dictionary>,
    permits: Arc<fair::FairShare>,
    settings: ServerSettings,
    unknown_client_log: LogLimiter,
    overload_log: LogLimiter,
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
    ) -> Self {
        let shared = Shared {
            clients: ClientTable::new(clients),
            cache: ResponseCache::new(settings.cache_ttl, settings.cache_entries),
            stats: Arc::new(Stats::default()),
            authenticator,
            dictionary,
            permits: fair::FairShare::new(settings.max_in_flight),
            settings,
            unknown_client_log: LogLimiter::new(Duration::from_secs(10)),
            overload_log: LogLimiter::new(Duration::from_secs(10)),
        };
        Self { shared: Arc::new(shared) }
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }

    /// Serves until `shutdown` is cancelled, then finishes the requests in flight.
    pub async fn run(&self, sockets: Vec<(UdpSocket, PortKind)>, shutdown: CancellationToken) {
        let mut loops = JoinSet::new();
        for (socket, kind) in sockets {
            loops.spawn(serve_socket(Arc::clone(&self.shared), Arc::new(socket), kind, shutdown.clone()));
        }
        while loops.join_next().await.is_some() {}
    }
}

/// Binds a UDP socket for the server: IPv6 sockets are v6-only so `0.0.0.0` and `[::]` can
/// both be listed, and the receive buffer is enlarged for bursts of NAS traffic.
pub fn bind_udp(address: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}

async fn serve_socket(shared: Arc<Shared>, socket: Arc<UdpSocket>, kind: PortKind, shutdown: CancellationToken) {
    let mut tasks = JoinSet::new();
    // One octet more than a packet may have, to tell an oversized datagram from a full one.
    let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => report_join(&shared, joined),
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, peer)) => match shared.admit(buf.get(..len).unwrap_or_default(), peer, kind, Instant::now()) {
                    Admission::Drop => {}
                    Admission::Send(bytes) => send(&socket, &bytes, peer).await,
                    Admission::Handle(job) => {
                        tasks.spawn(handler::handle(Arc::clone(&shared), Arc::clone(&socket), job, shutdown.clone()));
                    }
                },
                Err(e) => {
                    // ICMP errors and the like surface here on some systems; none should stop the server.
                    tracing::warn!(error = %e, "UDP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    // Requests in flight are finished, but not for ever: after a flood the backlog could hold a
    // restart for minutes, while the NAS has long since retried elsewhere.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(joined) = tasks.join_next().await {
            report_join(&shared, joined);
        }
    });
    if drained.await.is_err() {
        let left = tasks.len();
        tasks.abort_all();
        for _ in 0..left {
            shared.stats.abandoned_at_shutdown.inc();
        }
        tracing::warn!(left, grace = ?SHUTDOWN_GRACE, "stopping: requests still being decided after the grace period get no answer");
        while tasks.join_next().await.is_some() {}
    }
}

/// How long a stopping server goes on deciding the requests it has.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn report_join(shared: &Shared, joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        shared.stats.handler_panics.inc();
        tracing::error!("a request handler panicked; the request was dropped and the server carries on");
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, peer).await {
        tracing::warn!(%peer, error = %e, "UDP send failed");
    }
}

/// Lets a noisy log line through once per period, counting what it held back.
struct LogLimiter {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    fn new(period: Duration) -> Self {
        Self { period, state: Mutex::new((None, 0)) }
    }

    /// `Some(suppressed since the last line)` when a line may be written now.
    fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, suppressed) = &mut *state;
        if last.is_some_and(|at| now.duration_since(at) < self.period) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}
