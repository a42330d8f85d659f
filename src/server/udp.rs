//! The UDP transport: one receive loop per socket, and what only UDP needs around the shared
//! [`verify()`](super::verify()) and [`Handler`]: the client found by source address, the
//! retransmission cache (RFC 5080 §2.2.2: a NAS retries by resending the same datagram), and the
//! fair admission that bounds decisions in progress. Admission runs on the receive loop (cheap,
//! no awaiting); the decision runs in a spawned task.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::cache::{Lookup, ResponseCache, Source, Ticket};
use arc_swap::ArcSwap;

use super::clients::ClientTable;
use super::fair::{FairShare, Permit};
use super::handler::{Handler, Origin};
use super::settings::ClientSettings;
use super::stats::Stats;
use super::{Carrier, PortKind, verify};
use crate::radius::{Code, MAX_PACKET_LEN, Packet};

/// Everything the receive loops and their request tasks share.
pub(super) struct Shared {
    pub(super) handler: Handler,
    /// Replaced whole by a reload; a request in flight keeps the client it was admitted as.
    pub(super) clients: ArcSwap<ClientTable>,
    pub(super) cache: Arc<ResponseCache>,
    pub(super) stats: Arc<Stats>,
    pub(super) permits: Arc<FairShare>,
    pub(super) unknown_client_log: LogLimiter,
    pub(super) overload_log: LogLimiter,
    pub(super) discard_log: super::discards::DiscardLog,
}

enum Admission {
    Drop,
    /// Answer at once with these bytes (a cached response, a Status-Server reply).
    Send(Arc<[u8]>),
    Handle(Job),
}

struct Job {
    packet: Packet,
    peer: SocketAddr,
    client: Arc<ClientSettings>,
    ticket: Ticket,
    permit: Permit,
    arrived: Instant,
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

/// Serves one socket until `shutdown`, then finishes its requests in flight (for a while).
pub(super) async fn serve_socket(shared: Arc<Shared>, socket: Arc<UdpSocket>, kind: PortKind, shutdown: CancellationToken) {
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
                        tasks.spawn(handle(Arc::clone(&shared), Arc::clone(&socket), job, shutdown.clone()));
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
    drain(&shared, tasks).await;
}

/// Requests in flight are finished, but not for ever: after a flood the backlog could hold a
/// restart for minutes, while the NAS has long since retried elsewhere.
async fn drain(shared: &Shared, mut tasks: JoinSet<()>) {
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(joined) = tasks.join_next().await {
            report_join(shared, joined);
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
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Shared {
    /// What becomes of one datagram: dropped, answered at once, or handed to a task.
    fn admit(&self, datagram: &[u8], peer: SocketAddr, kind: PortKind, now: Instant) -> Admission {
        self.stats.received.inc();
        let Some(client) = self.client_of(peer, now) else { return Admission::Drop };
        let client = &client;
        let packet = match verify(datagram, client, kind, Carrier::Udp, &self.handler.dictionary()) {
            Ok(packet) => packet,
            Err(discard) => {
                discard.counter(&self.stats).inc();
                self.discard_log.note(&client.policy.name, peer, &discard, now);
                return Admission::Drop;
            }
        };
        let origin = Origin { peer, client, arrived: now, carrier: Carrier::Udp };
        self.handler.log_received(&packet, &origin);
        if packet.code == Code::StatusServer {
            // Answered without the cache (RFC 5997 §3).
            return match self.handler.status_server(&packet, client, kind, Carrier::Udp) {
                Some(bytes) => Admission::Send(bytes.into()),
                None => Admission::Drop,
            };
        }
        let ticket = match self.cache.begin((Source::Datagram(peer), u32::from(packet.identifier)), packet.authenticator, now) {
            Lookup::Replay(bytes) => {
                self.stats.duplicates_answered.inc();
                return Admission::Send(bytes);
            }
            Lookup::InFlight => {
                self.stats.duplicates_in_flight.inc();
                return Admission::Drop;
            }
            Lookup::New(ticket) => ticket,
        };
        // Dropping the ticket when no permit is had forgets the request: the NAS's retransmit
        // gets another chance.
        let Some(permit) = self.permit_for(peer, client, now) else { return Admission::Drop };
        Admission::Handle(Job { packet, peer, client: Arc::clone(client), ticket, permit, arrived: now })
    }

    /// The configured client this source address is, if any.
    fn client_of(&self, peer: SocketAddr, now: Instant) -> Option<Arc<ClientSettings>> {
        let client = self.clients.load().lookup(peer.ip()).cloned();
        if client.is_none() {
            self.stats.unknown_client.inc();
            if let Some(suppressed) = self.unknown_client_log.allow(now) {
                tracing::warn!(%peer, suppressed, "packet from an unknown client dropped (add it as a [[client]])");
            }
        }
        client
    }

    /// A share of `max_in_flight` for this NAS, if it has one left.
    pub(super) fn permit_for(&self, peer: SocketAddr, client: &ClientSettings, now: Instant) -> Option<Permit> {
        let permit = self.permits.try_acquire(crate::fairness::key_of(peer.ip()));
        if permit.is_none() {
            self.stats.overloaded.inc();
            if let Some(suppressed) = self.overload_log.allow(now) {
                tracing::warn!(%peer, client = client.policy.name.as_str(), suppressed, "this NAS has its share of max_in_flight requests being decided; request dropped");
            }
        }
        permit
    }
}

/// A request task: the answer, remembered for retransmissions, then sent.
async fn handle(shared: Arc<Shared>, socket: Arc<UdpSocket>, job: Job, shutdown: CancellationToken) {
    let Job { packet, peer, client, ticket, permit, arrived } = job;
    let origin = Origin { peer, client: &client, arrived, carrier: Carrier::Udp };
    let Some(bytes) = shared.handler.respond(&packet, &origin, permit, &shutdown).await else { return };
    ticket.complete(Arc::clone(&bytes));
    send(&socket, &bytes, peer).await;
}

pub(super) fn report_join(shared: &Shared, joined: Result<(), tokio::task::JoinError>) {
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
pub(super) struct LogLimiter {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    pub(super) fn new(period: Duration) -> Self {
        Self { period, state: Mutex::new((None, 0)) }
    }

    /// `Some(suppressed since the last line)` when a line may be written now.
    pub(super) fn allow(&self, now: Instant) -> Option<u64> {
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
