//! One RadSec connection: packets read one after another (RFC 6614 framing), many requests in
//! flight at once, answers written by one writer as they are decided, in whatever order.
//!
//! - A malformed or unauthentic packet closes the connection (RFC 6613 §2.6.4); a well-formed
//!   one of a code we do not serve is only dropped.
//! - `tls_outstanding_per_connection` bounds the requests in flight: at the limit the next
//!   packet is not read, so TCP itself slows the client down rather than packets being lost.
//! - Retransmissions never come on the same connection; the response cache still takes each
//!   request under this connection's own number, which no later connection has, so a
//!   connection's answers die with it (RFC 6613 §2.6.1). A RADIUS/1.1 Token reused while its
//!   request is outstanding closes the connection (RFC 9765 §4.2.2).
//! - No packet for `tls_idle_timeout` with nothing outstanding closes it; Status-Server
//!   (answered at once, without the cache) is what keeps a watched connection open.
//! - When the connection ends, the decisions in flight still finish (their codes and lockouts
//!   are then consistent, and a retry on a new connection finds the answer kept for it); on
//!   shutdown they are answered first, for at most the grace period. The connection's place
//!   among its client's `tls_connections_per_client` is free as soon as reading stops, so a
//!   client whose connection was cut is served again at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::super::cache::{Lookup, Source, Ticket};
use super::super::fair::Permit;
use super::super::handler::Origin;
use super::super::settings::ClientSettings;
use super::super::udp::{SHUTDOWN_GRACE, Shared, report_join};
use super::super::{Carrier, PortKind, verify};
use super::TlsShared;
use super::framing::{FrameError, FrameReader};
use super::settings::PeerCertificate;
use crate::radius::{Code, Packet};

type Stream = TlsStream<TcpStream>;

pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) tls: Arc<TlsShared>,
    /// The client as the connection was opened; a reload may change or remove it (see
    /// `current_client`).
    pub(super) client: Arc<ClientSettings>,
    /// What the client was known by, to find it again in a reloaded table.
    pub(super) certificate: PeerCertificate,
    pub(super) peer: SocketAddr,
    pub(super) carrier: Carrier,
    /// This server's number for the connection: the response cache's source.
    pub(super) id: u64,
    /// RADIUS/1.1 Tokens of the requests outstanding (RFC 9765 §4.2.2).
    pub(super) tokens: Mutex<HashSet<[u8; 4]>>,
}

/// How the reader reaches the writer: the room for requests in flight, the queue of answers,
/// and whether the writer has stopped.
#[derive(Clone, Copy)]
struct ToWriter<'a> {
    room: &'a Arc<Semaphore>,
    answers: &'a mpsc::Sender<Arc<[u8]>>,
    stopped: &'a CancellationToken,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    PeerClosed,
    Shutdown,
    Idle,
    /// The writer stopped: the peer did not read its answers for `tls_idle_timeout`, or the
    /// stream broke.
    WriterStopped,
    /// Not RADIUS framing: a Length out of bounds (RFC 6613 §2.6.4).
    Framing(FrameError),
    /// Reading failed below RADIUS: a reset, a close without TLS close_notify, or the end
    /// inside a packet — what a killed or crashed client, or the network, leaves.
    Broken(FrameError),
    BadPacket(super::super::Discard),
    TokenReused,
    /// A reload removed the client (or it no longer matches the certificate or address).
    ClientRemoved,
}

/// What one read packet becomes.
enum Admission {
    Drop,
    Send(Arc<[u8]>),
    Handle(Job),
    Close(End),
}

struct Job {
    packet: Packet,
    client: Arc<ClientSettings>,
    /// RADIUS/TLS: the response cache's entry. RADIUS/1.1 is not deduplicated over TLS (RFC
    /// 9765 §4.2.2): its Token is held instead, while the request is outstanding.
    outstanding: Outstanding,
    arrived: Instant,
}

enum Outstanding {
    Cached(Ticket),
    /// Held, not read: letting go of it frees the Token.
    Token {
        _held: TokenHeld,
    },
}

/// A RADIUS/1.1 Token in use; free for the client's next request once answered.
struct TokenHeld {
    connection: Arc<Connection>,
    token: [u8; 4],
}

impl Drop for TokenHeld {
    fn drop(&mut self) {
        self.connection.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.token);
    }
}

impl Connection {
    /// Serves the connection until it ends. `slot`, its place among the client's
    /// `tls_connections_per_client`, is given back as soon as nothing more can be read: a
    /// client that lost its connection (killed, or the network) reconnects at once, while the
    /// decisions it left behind finish (clients retry after a refused connection only after
    /// many seconds: radsecproxy 1.9 after 30 s).
    pub(super) async fn run(self, stream: Stream, shutdown: CancellationToken, slot: super::OpenConnection) {
        let this = Arc::new(self);
        let (read, write) = tokio::io::split(stream);
        let limit = this.tls.settings.outstanding_per_connection;
        let (answers, to_write) = mpsc::channel::<Arc<[u8]>>(limit);
        let writer_stopped = CancellationToken::new();
        let writer = tokio::spawn(write_answers(write, to_write, this.tls.settings.idle_timeout, writer_stopped.clone()));
        let outstanding = Arc::new(Semaphore::new(limit));
        let mut tasks = JoinSet::new();
        let mut slot = slot;
        let to_writer = ToWriter { room: &outstanding, answers: &answers, stopped: &writer_stopped };
        let (end, frames) = this.read_requests(read, &mut slot, &to_writer, &mut tasks, &shutdown).await;
        drop(slot);
        let client = this.client.policy.name.as_str();
        match &end {
            End::BadPacket(why) => {
                tracing::warn!(peer = %this.peer, client, connection = this.id, why = %why, "RadSec: connection closed for a bad packet (RFC 6613 §2.6.4)")
            }
            End::Framing(why) => {
                tracing::warn!(peer = %this.peer, client, connection = this.id, why = %why, "RadSec: connection closed: the stream is no longer RADIUS packets")
            }
            End::TokenReused => {
                tracing::warn!(peer = %this.peer, client, connection = this.id, "RadSec: connection closed: a RADIUS/1.1 Token was reused while its request was outstanding (RFC 9765 §4.2.2)")
            }
            End::ClientRemoved => {
                tracing::warn!(peer = %this.peer, client, connection = this.id, "RadSec: connection closed: a reload removed its client (or its certificate or address no longer match one)")
            }
            End::Broken(why) => {
                tracing::info!(peer = %this.peer, client, connection = this.id, why = %why, "RadSec: connection lost")
            }
            other => tracing::info!(peer = %this.peer, client, connection = this.id, end = ?other, "RadSec: connection closed"),
        }
        // The stream closes when both halves are gone: the writer's goes last, once it has
        // written what is still being decided (or at once, after a bad packet).
        drop(frames);
        match end {
            End::BadPacket(_) | End::Framing(_) | End::TokenReused | End::ClientRemoved => {
                if matches!(end, End::BadPacket(_) | End::Framing(_)) {
                    this.shared.stats.tls_closed_bad_packet.inc();
                }
                // Closed now: what is being decided finishes, but its answer goes nowhere.
                writer.abort();
            }
            End::Idle => this.shared.stats.tls_closed_idle.inc(),
            End::PeerClosed | End::Broken(_) | End::Shutdown | End::WriterStopped => {}
        }
        drop(answers);
        // Once stopping, the answers still queued get the grace period to be written, not the
        // idle timeout a peer that reads nothing would otherwise hold the stop for; none more
        // if the decisions used it up (their answers stuck behind such a peer).
        let mut writer = writer;
        if this.finish(tasks, &shutdown).await {
            writer.abort();
        }
        tokio::select! {
            _ = &mut writer => {}
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => writer.abort(),
        }
    }

    /// Reads and admits packets until the connection is to end; the reader is handed back so
    /// that the stream is closed only when the caller says.
    async fn read_requests(
        self: &Arc<Self>,
        read: ReadHalf<Stream>,
        slot: &mut super::OpenConnection,
        to_writer: &ToWriter<'_>,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> (End, FrameReader<ReadHalf<Stream>>) {
        let ToWriter { room: outstanding, answers, stopped: writer_stopped } = *to_writer;
        let mut frames = FrameReader::new(read);
        let idle_timeout = self.tls.settings.idle_timeout;
        let mut table = self.shared.clients.load_full();
        let mut client = Arc::clone(&self.client);
        let mut last_packet = tokio::time::Instant::now();
        let end = loop {
            // Room for one more request first: at the limit, nothing more is read.
            let room = tokio::select! {
                () = shutdown.cancelled() => break End::Shutdown,
                () = writer_stopped.cancelled() => break End::WriterStopped,
                room = Arc::clone(outstanding).acquire_owned() => match room {
                    Ok(room) => room,
                    Err(_) => break End::Shutdown,
                },
            };
            let packet = tokio::select! {
                biased;
                () = shutdown.cancelled() => break End::Shutdown,
                () = writer_stopped.cancelled() => break End::WriterStopped,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    report_join(&self.shared, joined);
                    continue;
                }
                () = tokio::time::sleep_until(last_packet + idle_timeout), if tasks.is_empty() => break End::Idle,
                read = frames.next() => match read {
                    Ok(Some(packet)) => packet,
                    Ok(None) => break End::PeerClosed,
                    Err(e) if e.is_bad_packet() => break End::Framing(e),
                    Err(e) => break End::Broken(e),
                },
            };
            last_packet = tokio::time::Instant::now();
            self.shared.stats.received.inc();
            // A reload applies to open connections from their next packet on: a client removed
            // is closed, a changed one served as it is now.
            let now_table = self.shared.clients.load();
            if !Arc::ptr_eq(&now_table, &table) {
                table = arc_swap::Guard::into_inner(now_table);
                match table.lookup_tls(self.peer.ip(), &self.certificate) {
                    Some(now) => {
                        client = Arc::clone(now);
                        slot.rename(&client.policy.name);
                    }
                    None => break End::ClientRemoved,
                }
            }
            match self.admit(&packet, &client, Instant::now()) {
                Admission::Drop => {}
                Admission::Send(bytes) => {
                    // A peer that does not read its answers fills the queue: stopping must not
                    // wait for it.
                    tokio::select! {
                        () = shutdown.cancelled() => break End::Shutdown,
                        () = writer_stopped.cancelled() => break End::WriterStopped,
                        sent = answers.send(bytes) => if sent.is_err() { break End::WriterStopped },
                    }
                }
                Admission::Handle(job) => {
                    // Over a stream a request dropped is never sent again (RFC 6613 §2.6.1):
                    // while this NAS has its share of the decisions in flight, wait, reading
                    // nothing more.
                    let permit = tokio::select! {
                        () = shutdown.cancelled() => break End::Shutdown,
                        permit = self.shared.permits.acquire(crate::fairness::key_of(self.peer.ip())) => permit,
                    };
                    tasks.spawn(handle(Arc::clone(self), job, permit, room, answers.clone(), shutdown.clone()));
                }
                Admission::Close(end) => break end,
            }
        };
        (end, frames)
    }

    /// What becomes of one packet: dropped, answered at once, handed to a task, or the end.
    fn admit(self: &Arc<Self>, bytes: &[u8], client: &Arc<ClientSettings>, now: Instant) -> Admission {
        let shared = &self.shared;
        let packet = match verify(bytes, client, PortKind::Both, self.carrier, &shared.handler.dictionary()) {
            Ok(packet) => packet,
            Err(discard) => {
                discard.counter(&shared.stats).inc();
                shared.discard_log.note(&client.policy.name, self.peer, &discard, now);
                return if discard.closes_stream() { Admission::Close(End::BadPacket(discard)) } else { Admission::Drop };
            }
        };
        let origin = Origin { peer: self.peer, client, arrived: now, carrier: self.carrier };
        shared.handler.log_received(&packet, &origin);
        if packet.code == Code::StatusServer {
            return match shared.handler.status_server(&packet, client, PortKind::Both, self.carrier) {
                Some(bytes) => Admission::Send(bytes.into()),
                None => Admission::Drop,
            };
        }
        let outstanding = if self.carrier == Carrier::Radius11 {
            // RFC 9765 §4.2.2: a Token names one outstanding request; once answered it may
            // come again, as a new request.
            let token = crate::radius::v11::token(&packet);
            if !self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(token) {
                shared.stats.tls_closed_token_reused.inc();
                return Admission::Close(End::TokenReused);
            }
            Outstanding::Token { _held: TokenHeld { connection: Arc::clone(self), token } }
        } else {
            let key = (Source::Connection(self.id), u32::from(packet.identifier));
            match shared.cache.begin(key, packet.authenticator, now) {
                Lookup::Replay(bytes) => {
                    shared.stats.duplicates_answered.inc();
                    return Admission::Send(bytes);
                }
                Lookup::InFlight => {
                    shared.stats.duplicates_in_flight.inc();
                    return Admission::Drop;
                }
                Lookup::New(ticket) => Outstanding::Cached(ticket),
            }
        };
        Admission::Handle(Job { packet, client: Arc::clone(client), outstanding, arrived: now })
    }

    /// Lets the decisions in flight finish; on shutdown, for the grace period at most. True
    /// when the grace period ran out.
    async fn finish(&self, mut tasks: JoinSet<()>, shutdown: &CancellationToken) -> bool {
        let all_done = async {
            while let Some(joined) = tasks.join_next().await {
                report_join(&self.shared, joined);
            }
        };
        let grace_over = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            () = all_done => return false,
            () = grace_over => {}
        }
        let left = tasks.len();
        tasks.abort_all();
        for _ in 0..left {
            self.shared.stats.abandoned_at_shutdown.inc();
        }
        while tasks.join_next().await.is_some() {}
        true
    }
}

/// A request task: the answer, remembered for the (unexpected) copy, then queued to be written.
async fn handle(
    connection: Arc<Connection>,
    job: Job,
    permit: Permit,
    room: OwnedSemaphorePermit,
    answers: mpsc::Sender<Arc<[u8]>>,
    shutdown: CancellationToken,
) {
    let Job { packet, client, outstanding, arrived } = job;
    let origin = Origin { peer: connection.peer, client: &client, arrived, carrier: connection.carrier };
    let Some(bytes) = connection.shared.handler.respond(&packet, &origin, permit, &shutdown).await else { return };
    // Let go before the answer is queued: a NAS may use the Token again as soon as it reads the
    // answer, which the writer can send before this task goes on.
    match outstanding {
        Outstanding::Cached(ticket) => ticket.complete(Arc::clone(&bytes)),
        Outstanding::Token { _held } => drop(_held),
    }
    // A closed connection takes no answer: the decision stands, for a retry elsewhere.
    let _ = answers.send(bytes).await;
    drop(room);
}

/// Writes answers as they come, each packet whole, flushing when none is waiting; ends with a
/// TLS close_notify when every sender is gone, or at once when the peer stops reading.
async fn write_answers(
    mut write: WriteHalf<Stream>,
    mut answers: mpsc::Receiver<Arc<[u8]>>,
    timeout: std::time::Duration,
    stopped: CancellationToken,
) {
    let _stopped = stopped.drop_guard();
    while let Some(first) = answers.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = answers.try_recv() {
            batch.push(more);
        }
        let written = tokio::time::timeout(timeout, async {
            for bytes in &batch {
                write.write_all(bytes).await?;
            }
            write.flush().await
        });
        if !matches!(written.await, Ok(Ok(()))) {
            return;
        }
    }
    let _ = tokio::time::timeout(timeout, write.shutdown()).await;
}
